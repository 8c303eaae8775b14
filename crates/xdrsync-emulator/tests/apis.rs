//! Write-back, alerts, the MDE and SIEM APIs and advanced hunting over loopback HTTP.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use serde_json::{Value, json};
use xdrsync_emulator::{Behaviour, Directory, Emulator, EmulatorConfig, Resource};

struct Env {
    emu: Emulator,
    http: reqwest::Client,
    tenant: String,
}

async fn env() -> Env {
    env_with(Behaviour {
        rate_limits: false,
        ..Default::default()
    })
    .await
}

async fn env_with(behaviour: Behaviour) -> Env {
    let config = EmulatorConfig {
        directory: Directory::demo(21),
        behaviour,
        ..Default::default()
    };
    let emu = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let tenant = emu.contract().tenants[1].id.clone();
    // Write roles on top of the demo's read roles.
    let t = tenant.clone();
    emu.state().update_directory(|d| {
        let c = d.apps[0].consents.get_mut(&t).unwrap();
        c.get_mut(&Resource::Xdr)
            .unwrap()
            .push("Incident.ReadWrite.All".into());
        let g = c.get_mut(&Resource::Graph).unwrap();
        g.push("SecurityIncident.ReadWrite.All".into());
        g.push("SecurityAlert.ReadWrite.All".into());
    });
    Env {
        emu,
        http: reqwest::Client::new(),
        tenant,
    }
}

impl Env {
    async fn token(&self, resource: &str) -> String {
        let c = self.emu.contract();
        let v: Value = self
            .http
            .post(format!(
                "{}/{}/oauth2/token",
                self.emu.base_url(),
                self.tenant
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", c.apps[0].client_id.as_str()),
                ("client_secret", c.apps[0].secret.as_str()),
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

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.emu.base_url()))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }
}

const XDR: &str = "https://api.security.microsoft.com";
const GRAPH: &str = "https://graph.microsoft.com";

#[tokio::test]
async fn xdr_patch_is_a_new_version() {
    let e = env().await;
    let token = e.token(XDR).await;
    let inc = &e.emu.state().incidents(&e.tenant, |_| true)[0];
    let path = format!("/api/incidents/{}", inc.id);
    let (status, body) = e
        .call(reqwest::Method::PATCH, &path, &token, Some(json!({"status": "Resolved", "assignedTo": "secop2@contoso.com", "classification": "TruePositive", "determination": "Malware", "tags": ["pen test"], "comment": "pen testing"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["determination"].as_str()),
        (Some("Resolved"), Some("Malware"))
    );
    assert_eq!(
        body["comments"].as_array().unwrap().last().unwrap()["comment"],
        "pen testing"
    );
    let t: xdrsync_model::Timestamp = body["lastUpdateTime"].as_str().unwrap().parse().unwrap();
    assert!(t > inc.last_update);
    let gt: Vec<_> = e
        .emu
        .state()
        .ground_truth(&e.tenant)
        .into_iter()
        .filter(|v| v.incident_id == inc.id)
        .collect();
    assert!(gt.iter().any(|v| v.last_update == t), "{t} not in {gt:?}");
    // Determination needs TruePositive.
    let (status, body) = e
        .call(
            reqwest::Method::PATCH,
            &path,
            &token,
            Some(json!({"classification": "FalsePositive", "determination": "Malware"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = e
        .call(
            reqwest::Method::PATCH,
            &path,
            &token,
            Some(json!({"severity": "High"})),
        )
        .await;
    assert_eq!(status, 400, "severity is not updatable");
    let (status, _) = e
        .call(
            reqwest::Method::PATCH,
            "/api/incidents/1",
            &token,
            Some(json!({"status": "Active"})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn writes_need_the_write_role() {
    let e = env().await;
    let t = e.tenant.clone();
    e.emu.state().update_directory(|d| {
        d.apps[0]
            .consents
            .get_mut(&t)
            .unwrap()
            .insert(Resource::Xdr, vec!["Incident.Read.All".into()]);
    });
    let token = e.token(XDR).await;
    let id = e.emu.state().incidents(&e.tenant, |_| true)[0].id;
    let (status, body) = e
        .call(
            reqwest::Method::PATCH,
            &format!("/api/incidents/{id}"),
            &token,
            Some(json!({"status": "Active"})),
        )
        .await;
    assert_eq!(status, 403);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Incident.ReadWrite.All")
    );
}

#[tokio::test]
async fn graph_patch_and_comments() {
    let e = env().await;
    let token = e.token(GRAPH).await;
    let id = e.emu.state().incidents(&e.tenant, |_| true)[0].id;
    let (status, body) = e.call(reqwest::Method::PATCH, &format!("/v1.0/security/incidents/{id}"), &token, Some(json!({"status": "inProgress", "customTags": ["Demo"], "classification": "truePositive", "determination": "multiStagedAttack"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["customTags"][0].as_str()),
        (Some("inProgress"), Some("Demo"))
    );
    // As on GET: the entity's context.
    assert_eq!(
        body["@odata.context"],
        format!(
            "{}/v1.0/$metadata#security/incidents/$entity",
            e.emu.base_url()
        )
    );
    let (status, body) = e.call(reqwest::Method::POST, &format!("/v1.0/security/incidents/{id}/comments"), &token, Some(json!({"@odata.type": "microsoft.graph.security.alertComment", "comment": "looking"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["value"].as_array().unwrap().last().unwrap()["comment"],
        "looking"
    );
}

#[tokio::test]
async fn alerts_v2_lists_typed_evidence_and_refuses_unfilterable_props() {
    let e = env().await;
    let token = e.token(GRAPH).await;
    let (status, body) = e
        .call(
            reqwest::Method::GET,
            "/v1.0/security/alerts_v2?$top=5000&$count=true",
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let alerts = body["value"].as_array().unwrap();
    assert!(alerts.len() <= 1000 && !alerts.is_empty());
    assert_eq!(
        body["@odata.count"].as_u64().unwrap() as usize,
        alerts
            .len()
            .max(body["@odata.count"].as_u64().unwrap() as usize)
    );
    let evidence: Vec<&str> = alerts
        .iter()
        .flat_map(|a| a["evidence"].as_array().unwrap())
        .map(|ev| ev["@odata.type"].as_str().unwrap())
        .collect();
    assert!(
        evidence
            .iter()
            .all(|t| t.starts_with("#microsoft.graph.security.") && t.ends_with("Evidence")),
        "{evidence:?}"
    );
    let (status, _) = e
        .call(
            reqwest::Method::GET,
            "/v1.0/security/alerts_v2?$filter=investigationState+eq+'running'",
            &token,
            None,
        )
        .await;
    assert_eq!(status, 400);
    let (status, body) = e
        .call(
            reqwest::Method::GET,
            "/v1.0/security/alerts_v2?$top=3",
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200);
    // As the service writes it: `$skip=` literally (R47), never `%24skip=`.
    let link = body["@odata.nextLink"].as_str().unwrap();
    assert!(
        link.ends_with("/v1.0/security/alerts_v2?$top=3&$skip=3"),
        "{link}"
    );
    let id = alerts[0]["id"].as_str().unwrap();
    let (status, one) = e
        .call(
            reqwest::Method::GET,
            &format!("/v1.0/security/alerts_v2/{id}"),
            &token,
            None,
        )
        .await;
    assert_eq!((status, one["id"].as_str()), (200, Some(id)));
    let (status, patched) = e.call(reqwest::Method::PATCH, &format!("/v1.0/security/alerts_v2/{id}"), &token, Some(json!({"status": "resolved", "classification": "falsePositive", "determination": "notMalicious"}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["@odata.context"],
        format!(
            "{}/v1.0/$metadata#security/alerts_v2/$entity",
            e.emu.base_url()
        )
    );
    assert_eq!(
        (
            patched["status"].as_str(),
            patched["classification"].as_str()
        ),
        (Some("resolved"), Some("falsePositive"))
    );
    let (status, c) = e
        .call(
            reqwest::Method::POST,
            &format!("/v1.0/security/alerts_v2/{id}/comments"),
            &token,
            Some(json!({"comment": "benign"})),
        )
        .await;
    assert_eq!(
        (status, c["value"][0]["comment"].as_str()),
        (200, Some("benign"))
    );
}

#[tokio::test]
async fn mde_alerts_page_without_next_link() {
    let e = env().await;
    let token = e.token("https://api.securitycenter.microsoft.com").await;
    let (status, body) = e
        .call(
            reqwest::Method::GET,
            "/api/alerts?$top=3&$expand=evidence&$filter=alertCreationTime+ge+2020-01-01T00:00:00Z",
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("@odata.nextLink").is_none());
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#Alerts")
    );
    let alerts = body["value"].as_array().unwrap();
    assert_eq!(alerts.len(), 3);
    assert!(
        alerts[0]["evidence"].is_array()
            && alerts[0]["machineId"].is_string()
            && alerts[0]["incidentId"].is_u64()
    );
    let (status, _) = e
        .call(reqwest::Method::GET, "/api/alerts?$top=10001", &token, None)
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn siem_api_detections() {
    let e = env().await;
    let token = e.token("https://graph.windows.net").await;
    let (status, body) = e
        .call(
            reqwest::Method::GET,
            "/alertexporter/api/alerts?ago=P7D",
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let all = body.as_array().unwrap();
    assert!(!all.is_empty());
    for k in [
        "AlertTime",
        "ComputerDnsName",
        "AlertTitle",
        "Severity",
        "AlertId",
        "LastProcessedTimeUtc",
        "MachineGroup",
        "DeviceID",
        "IncidentLinkToMTP",
    ] {
        assert!(all[0].get(k).is_some(), "{k}");
    }
    let group = all[0]["MachineGroup"].as_str().unwrap().to_owned();
    let (_, some) = e
        .call(
            reqwest::Method::GET,
            &format!(
                "/alertexporter/api/alerts?ago=P7D&machinegroups={group}&machinegroups=Nowhere"
            ),
            &token,
            None,
        )
        .await;
    assert!(
        some.as_array()
            .unwrap()
            .iter()
            .all(|d| d["MachineGroup"] == group.as_str())
    );
    let (_, limited) = e
        .call(
            reqwest::Method::GET,
            "/alertexporter/api/alerts?ago=P7D&limit=2",
            &token,
            None,
        )
        .await;
    assert_eq!(limited.as_array().unwrap().len(), 2);
    let (status, _) = e
        .call(
            reqwest::Method::GET,
            "/alertexporter/api/alerts",
            "bad-token",
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = e
        .call(
            reqwest::Method::GET,
            "/alertexporter/api/alerts?ago=yesterday",
            &token,
            None,
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn advanced_hunting_kql_subset() {
    let e = env().await;
    let xdr = e.token(XDR).await;
    let (status, body) = e.call(reqwest::Method::POST, "/api/advancedhunting/run", &xdr, Some(json!({"Query": "AlertInfo | where Timestamp > ago(30d) | summarize count() by Severity | order by count_ desc"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["Schema"],
        json!([{"Name": "Severity", "Type": "String"}, {"Name": "count_", "Type": "Int64"}])
    );
    let counts: Vec<i64> = body["Results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count_"].as_i64().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]) && !counts.is_empty());
    let graph = e.token(GRAPH).await;
    let (status, body) = e.call(reqwest::Method::POST, "/v1.0/security/runHuntingQuery", &graph, Some(json!({"Query": "AlertEvidence | where EntityType == 'User' and AccountUpn contains \"@\" | project AlertId, AccountUpn | take 3", "Timespan": "P30D"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["schema"].as_array().unwrap().len(), 2);
    assert!(body["results"].as_array().unwrap().len() <= 3);
    for bad in [
        "AlertInfo | join DeviceInfo on DeviceId",
        "Nope | take 1",
        "AlertInfo | where Severity == 'High' or Severity == 'Low'",
        "AlertInfo | where Nope == 1",
    ] {
        let (status, body) = e
            .call(
                reqwest::Method::POST,
                "/api/advancedhunting/run",
                &xdr,
                Some(json!({"Query": bad})),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Query could not be executed: "),
            "{body}"
        );
    }
}

/// `/api/v1.0/alerts` is the same list as `/api/alerts` (no version is the latest);
/// `InvestigationId` (as the documentation writes it) and `incidentId` filter as numbers; doc
/// bodies carry every documented evidence key (null where empty) and nothing else, live
/// bodies omit null keys and add the device's `deviceId`.
#[tokio::test]
async fn mde_v1_route_investigation_filter_and_evidence_shapes() {
    let e = env().await;
    let token = e.token("https://api.securitycenter.microsoft.com").await;
    let get = |path: String| {
        let e = &e;
        let token = &token;
        async move { e.call(reqwest::Method::GET, &path, token, None).await }
    };
    let (s1, latest) = get("/api/alerts?$top=20&$expand=evidence".into()).await;
    let (s2, v1) = get("/api/v1.0/alerts?$top=20&$expand=evidence".into()).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(latest["value"], v1["value"]);
    let alerts = latest["value"].as_array().unwrap();
    let with_investigation = alerts
        .iter()
        .find(|a| a["investigationId"].is_u64())
        .expect("an alert with an investigation");
    let inv = with_investigation["investigationId"].as_u64().unwrap();
    let (status, body) = get(format!("/api/alerts?$filter=InvestigationId+eq+{inv}")).await;
    assert_eq!(status, 200, "{body}");
    let found = body["value"].as_array().unwrap();
    assert!(!found.is_empty());
    assert!(found.iter().all(|a| a["investigationId"] == inv));
    let incident = with_investigation["incidentId"].as_u64().unwrap();
    let (status, body) = get(format!("/api/alerts?$filter=incidentId+eq+{incident}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["incidentId"] == incident)
    );
    let (status, _) = get("/api/alerts?$filter=InvestigationId+eq+'x'".into()).await;
    assert_eq!(status, 400);
    // Doc style (the default): exactly the documented keys.
    const DOCUMENTED: usize = 25;
    for a in alerts {
        for ev in a["evidence"].as_array().unwrap() {
            let o = ev.as_object().unwrap();
            assert_eq!(o.len(), DOCUMENTED, "{ev}");
            assert!(o.get("deviceId").is_none());
        }
    }
}

/// The live body style: MDE evidence omits null keys and carries `deviceId` where the
/// evidence is on a device.
#[tokio::test]
async fn mde_live_evidence_omits_nulls_and_adds_device_id() {
    let config = EmulatorConfig {
        directory: Directory::demo(21),
        behaviour: Behaviour {
            rate_limits: false,
            body_style: xdrsync_emulator::BodyStyle::Live,
            ..Default::default()
        },
        ..Default::default()
    };
    let emu = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let e = Env {
        tenant: emu.contract().tenants[1].id.clone(),
        emu,
        http: reqwest::Client::new(),
    };
    let token = e.token("https://api.securitycenter.microsoft.com").await;
    let (status, body) = e
        .call(
            reqwest::Method::GET,
            "/api/alerts?$top=50&$expand=evidence",
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut with_device = 0;
    for a in body["value"].as_array().unwrap() {
        for ev in a["evidence"].as_array().unwrap() {
            let o = ev.as_object().unwrap();
            assert!(o.values().all(|v| !v.is_null()), "{ev}");
            if o.contains_key("deviceId") {
                assert_eq!(o["deviceId"], a["machineId"], "{ev}");
                with_device += 1;
            }
        }
    }
    assert!(with_device > 0);
}

/// The documented hunting result limits: at most 100,000 rows (a join that makes more is cut
/// there, on both APIs), and on Graph at most 50 MB of rows (here made small): a larger result
/// answers 400 with the service's wording, not rows.
#[tokio::test]
async fn hunting_results_stop_at_the_documented_limits() {
    let e = env_with(Behaviour {
        rate_limits: false,
        hunting_max_result_bytes: 200_000,
        ..Default::default()
    })
    .await;
    let (xdr, graph) = (e.token(XDR).await, e.token(GRAPH).await);
    // Every piece of evidence paired with every other of its kind: far more than 100,000.
    let big = "AlertEvidence | project EntityType, AlertId | join kind=inner (AlertEvidence | project EntityType, Title) on EntityType";
    let (status, body) = e
        .call(
            reqwest::Method::POST,
            "/api/advancedhunting/run",
            &xdr,
            Some(json!({"Query": big})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let n = body["Results"].as_array().unwrap().len();
    assert_eq!(n, 100_000, "cut at the documented row limit");
    // Graph: the same rows are far over the (lowered) size limit.
    let (status, body) = e
        .call(
            reqwest::Method::POST,
            "/v1.0/security/runHuntingQuery",
            &graph,
            Some(json!({"Query": big})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Query execution has exceeded the allowed result size"),
        "{body}"
    );
    // A result under both limits is answered whole.
    let (status, body) = e
        .call(
            reqwest::Method::POST,
            "/v1.0/security/runHuntingQuery",
            &graph,
            Some(json!({"Query": "AlertInfo | take 10"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 10);
}
