//! Every fault and limit of the emulator, triggered over loopback HTTP.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use serde_json::{Value, json};
use xdrsync_emulator::{Directory, Emulator, EmulatorConfig};

struct Env {
    emu: Emulator,
    http: reqwest::Client,
    base: String,
    tenant: String,
    xdr: String,
    graph: String,
}

async fn env(rate_limits: bool, time_scale: f64) -> Env {
    let mut config = EmulatorConfig {
        directory: Directory::demo(5),
        time_scale,
        ..Default::default()
    };
    config.behaviour.rate_limits = rate_limits;
    let emu = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let c = emu.contract();
    let base = emu.base_url();
    let http = reqwest::Client::new();
    let tenant = c.tenants[1].id.clone();
    let token = |resource: &'static str| {
        let (http, base, tenant, id, secret) = (
            http.clone(),
            base.clone(),
            tenant.clone(),
            c.apps[0].client_id.clone(),
            c.apps[0].secret.clone(),
        );
        async move {
            let v: Value = http
                .post(format!("{base}/{tenant}/oauth2/token"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", &id),
                    ("client_secret", &secret),
                    ("resource", resource),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["access_token"].as_str().unwrap().to_owned()
        }
    };
    let xdr = token("https://api.security.microsoft.com").await;
    let graph = token("https://graph.microsoft.com").await;
    Env {
        emu,
        http,
        base,
        tenant,
        xdr,
        graph,
    }
}

impl Env {
    async fn fault(&self, rule: Value) {
        let resp = self
            .http
            .post(format!("{}/_emulator/faults", self.base))
            .json(&rule)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            201,
            "{}",
            resp.text().await.unwrap()
        );
    }

    async fn get(&self, path: &str, token: &str) -> Result<reqwest::Response, reqwest::Error> {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
    }
}

#[tokio::test]
async fn scripted_statuses_in_each_services_shape() {
    let e = env(false, 1.0).await;
    e.fault(json!({"route": "GET /api/incidents", "sequence": [
        {"type": "status", "status": 500}, {"type": "status", "status": 503, "retry_after_secs": 7}, {"type": "ok"}
    ]}))
    .await;
    let r = e.get("/api/incidents?$top=1", &e.xdr).await.unwrap();
    assert_eq!(r.status().as_u16(), 500);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "InternalServerError"
    );
    let r = e.get("/api/incidents?$top=1", &e.xdr).await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(
        e.get("/api/incidents?$top=1", &e.xdr)
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        e.get("/api/incidents?$top=1", &e.xdr)
            .await
            .unwrap()
            .status()
            .as_u16(),
        200,
        "the script is over"
    );

    e.fault(json!({"route": "/v1.0/security/*", "sequence": [{"type": "status", "status": 429, "retry_after_secs": 2}]})).await;
    let r = e
        .get("/v1.0/security/incidents?$top=1", &e.graph)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert!(body["error"]["innerError"]["request-id"].is_string());

    // A token endpoint outage.
    e.fault(json!({"route": "POST /*/oauth2/*", "sequence": [{"type": "status", "status": 503}]}))
        .await;
    let r = e
        .http
        .post(format!("{}/{}/oauth2/token", e.base, e.tenant))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "temporarily_unavailable"
    );
    let stats: Value = e
        .http
        .get(format!("{}/_emulator/stats", e.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["faults_injected"], 4);
}

#[tokio::test]
async fn resets_truncation_latency_and_partial_results() {
    let e = env(false, 1.0).await;
    e.fault(json!({"route": "GET /api/incidents", "sequence": [{"type": "reset"}, {"type": "truncate"}]})).await;
    let r = e.get("/api/incidents?$top=5", &e.xdr).await;
    let failed = match r {
        Err(_) => true,
        Ok(resp) => resp.bytes().await.is_err(),
    };
    assert!(failed, "a reset connection cannot be read");
    let truncated = match e.get("/api/incidents?$top=5", &e.xdr).await {
        Err(_) => true,
        Ok(resp) => resp.bytes().await.is_err(),
    };
    assert!(truncated, "a truncated body ends early");

    e.fault(json!({"route": "GET /v1.0/security/incidents", "sequence": [{"type": "partial"}, {"type": "latency", "ms": 300}]})).await;
    let r = e
        .get("/v1.0/security/incidents?$top=2", &e.graph)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert!(
        r.headers()["warning"]
            .to_str()
            .unwrap()
            .starts_with("199 - ")
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["value"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let started = std::time::Instant::now();
    assert_eq!(
        e.get("/v1.0/security/incidents?$top=2", &e.graph)
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}

#[tokio::test]
async fn probabilistic_faults_hit_about_that_often() {
    let e = env(false, 1.0).await;
    e.fault(json!({"route": "GET /api/incidents", "fault": {"type": "status", "status": 500}, "probability": 0.5})).await;
    let mut failures = 0;
    for _ in 0..60 {
        if e.get("/api/incidents?$top=1", &e.xdr)
            .await
            .unwrap()
            .status()
            .as_u16()
            == 500
        {
            failures += 1;
        }
    }
    assert!((15..=45).contains(&failures), "{failures} of 60");
    assert_eq!(
        e.http
            .delete(format!("{}/_emulator/faults", e.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    assert_eq!(
        e.get("/api/incidents?$top=1", &e.xdr)
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn xdr_list_quota_is_50_a_minute_per_app_and_tenant() {
    let e = env(true, 1.0).await;
    for i in 0..50 {
        assert_eq!(
            e.get("/api/incidents?$top=1", &e.xdr)
                .await
                .unwrap()
                .status()
                .as_u16(),
            200,
            "call {i}"
        );
    }
    let r = e.get("/api/incidents?$top=1", &e.xdr).await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Maximum admitted 50 per 1 minute")
    );
    // Get-by-id has its own quota; Graph its own.
    assert_eq!(
        e.get("/v1.0/security/incidents?$top=1", &e.graph)
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // A minute later the window has moved on.
    e.emu.state().clock().advance(chrono::Duration::seconds(61));
    assert_eq!(
        e.get("/api/incidents?$top=1", &e.xdr)
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn time_scale_shortens_retry_after() {
    let e = env(true, 60.0).await;
    let mut last = None;
    for _ in 0..60 {
        let r = e.get("/api/incidents?$top=1", &e.xdr).await.unwrap();
        if r.status().as_u16() == 429 {
            last = Some(
                r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            );
            break;
        }
    }
    // 60 emulator seconds at 60× are one real second.
    assert_eq!(last, Some(1));
}

#[tokio::test]
async fn admin_api_changes_the_world() {
    let e = env(false, 1.0).await;
    let c = e.emu.contract();
    let app = c.apps[0].client_id.clone();
    // Revoke consent: tokens for that tenant fail with AADSTS700016.
    let r = e
        .http
        .delete(format!(
            "{}/_emulator/apps/{app}/consents/{}",
            e.base, e.tenant
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = e
        .http
        .post(format!("{}/{}/oauth2/token", e.base, e.tenant))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app.as_str()),
            ("client_secret", c.apps[0].secret.as_str()),
            ("resource", "https://graph.microsoft.com"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error_codes"][0], 700016);
    // Grant again with only the XDR role: a Graph token without roles gets 403.
    let r = e
        .http
        .put(format!(
            "{}/_emulator/apps/{app}/consents/{}",
            e.base, e.tenant
        ))
        .json(&json!({"xdr": ["Incident.Read.All"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let v: Value = e
        .http
        .post(format!("{}/{}/oauth2/token", e.base, e.tenant))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app.as_str()),
            ("client_secret", c.apps[0].secret.as_str()),
            ("resource", "https://graph.microsoft.com"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = v["access_token"].as_str().unwrap();
    assert_eq!(
        e.get("/v1.0/security/incidents", token)
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    // New tenant, new incidents, ground truth.
    let r = e
        .http
        .post(format!("{}/_emulator/tenants", e.base))
        .json(&json!({"name": "Woodgrove Bank", "incidents_per_hour": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r: Value = e
        .http
        .post(format!(
            "{}/_emulator/tenants/{}/incidents",
            e.base, e.tenant
        ))
        .json(&json!({"count": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids = r["incident_ids"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 3);
    let truth: Value = e
        .http
        .get(format!("{}/_emulator/ground-truth/{}", e.base, e.tenant))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for id in &ids {
        assert!(
            truth["versions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| &v["incident_id"] == id)
        );
    }
    let r: Value = e
        .http
        .get(format!("{}/api/incidents/{}", e.base, ids[0]))
        .bearer_auth(&e.xdr)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(&r["incidentId"], &ids[0]);
    // Clock and keys.
    let before = e.emu.state().clock().now();
    let r: Value = e
        .http
        .post(format!("{}/_emulator/clock/advance", e.base))
        .json(&json!({"seconds": 3600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["now"].as_str().unwrap() > before.to_string().as_str());
    let r: Value = e
        .http
        .post(format!("{}/_emulator/keys/rotate", e.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["kid"].is_string());
}

/// A token for tenant A only ever reads tenant A's incidents.
#[tokio::test]
async fn tenant_isolation() {
    let e = env(false, 1.0).await;
    let other = &e.emu.contract().tenants[2].id;
    let a: Value = e
        .get("/v1.0/security/incidents?$top=50", &e.graph)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for i in a["value"].as_array().unwrap() {
        assert_eq!(i["tenantId"], e.tenant.as_str());
    }
    // An incident id that exists only in another tenant is not found with A's token.
    let theirs = e.emu.state().create_incidents(other, 1).unwrap()[0];
    let r = e
        .get(&format!("/api/incidents/{theirs}"), &e.xdr)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
