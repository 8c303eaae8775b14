//! The emulator over real loopback HTTP, as any client (not only xdrsync's) sees it.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use serde_json::Value;
use xdrsync_emulator::{Directory, Emulator, EmulatorConfig};

async fn start() -> (Emulator, String, String, String) {
    let emu = Emulator::start(
        EmulatorConfig {
            directory: Directory::demo(7),
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let c = emu.contract();
    let customer = c.tenants[1].id.clone();
    (
        emu,
        customer,
        c.apps[0].client_id.clone(),
        c.apps[0].secret.clone(),
    )
}

async fn post_form(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn v1_and_v2_token_responses_have_entras_shapes() {
    let (emu, tenant, id, secret) = start().await;
    let base = emu.base_url();
    let (status, v1) = post_form(
        &format!("{base}/{tenant}/oauth2/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("resource", "https://api.security.microsoft.com"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v1}");
    assert_eq!(v1["token_type"], "Bearer");
    assert!(
        v1["expires_in"].is_string()
            && v1["expires_on"].is_string()
            && v1["not_before"].is_string(),
        "v1 numbers are strings: {v1}"
    );
    assert_eq!(v1["resource"], "https://api.security.microsoft.com");

    let (status, v2) = post_form(
        &format!("{base}/{tenant}/oauth2/v2.0/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v2}");
    assert!(
        v2["expires_in"].is_u64() && v2["ext_expires_in"].is_u64(),
        "v2 numbers are numbers: {v2}"
    );
    // The claims Entra puts in a v1 app-only token.
    let token = v2["access_token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&b64url_decode(payload)).unwrap();
    assert_eq!(claims["aud"], "https://graph.microsoft.com");
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{tenant}/"));
    assert_eq!(claims["tid"], tenant);
    assert_eq!(claims["appid"], id);
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(claims["idtyp"], "app");
    let roles: Vec<&str> = claims["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(roles.contains(&"SecurityIncident.Read.All"));
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(
        exp - iat,
        3599 + 300,
        "nbf/iat backdated five minutes, one hour lifetime"
    );
    // The JWKS holds the signing key.
    let jwks: Value = reqwest::get(format!("{base}/{tenant}/discovery/v2.0/keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header: Value =
        serde_json::from_slice(&b64url_decode(token.split('.').next().unwrap())).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert_eq!(header["alg"], "RS256");
    // As Entra publishes keys: x5t = kid = SHA-1 thumbprint of the x5c certificate.
    let key = &jwks["keys"][0];
    assert_eq!(key["x5t"], key["kid"]);
    assert_eq!(
        (key["kty"].as_str(), key["use"].as_str(), key["e"].as_str()),
        (Some("RSA"), Some("sig"), Some("AQAB"))
    );
    let der = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        key["x5c"][0].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(key["kid"].as_str().unwrap(), xdrsync_jwt::x5t_sha1(&der));
}

#[tokio::test]
async fn basic_auth_secret_is_percent_decoded() {
    let (emu, tenant, id, secret) = start().await;
    // RFC 6749 §2.3.1: form-urlencode id and secret, then base64 (Rust's form encoder writes `~` as %7E).
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let resp = reqwest::Client::new()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", emu.base_url()))
        .basic_auth(enc(&id), Some(enc(&secret)))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "https://api.security.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn token_errors_carry_aadsts_codes() {
    let (emu, tenant, id, secret) = start().await;
    let base = emu.base_url();
    let v2 = |t: &str| format!("{base}/{t}/oauth2/v2.0/token");
    let cc = |sec: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", "client_credentials".into()),
            ("client_secret", sec.into()),
            ("scope", "https://graph.microsoft.com/.default".into()),
        ]
    };
    type Case<'a> = (String, Vec<(&'a str, String)>, u16, &'a str, u32);
    let cases: Vec<Case<'_>> = vec![
        (
            v2("00000000-0000-0000-0000-00000000dead"),
            [cc("x"), vec![("client_id", id.clone())]].concat(),
            400,
            "invalid_request",
            90002,
        ),
        (
            v2(&tenant),
            [cc("wrong"), vec![("client_id", id.clone())]].concat(),
            401,
            "invalid_client",
            7000215,
        ),
        (
            v2(&tenant),
            [
                cc("x"),
                vec![("client_id", "00000000-0000-0000-0000-000000000bad".into())],
            ]
            .concat(),
            400,
            "unauthorized_client",
            700016,
        ),
        (
            v2("common"),
            [cc("x"), vec![("client_id", id.clone())]].concat(),
            400,
            "invalid_request",
            9001023,
        ),
        (
            v2(&tenant),
            vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", id.clone()),
                ("client_secret", secret.clone()),
                (
                    "scope",
                    "https://graph.microsoft.com/SecurityIncident.Read.All".into(),
                ),
            ],
            400,
            "invalid_scope",
            1002012,
        ),
        (
            v2(&tenant),
            vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", id.clone()),
                ("client_secret", secret.clone()),
                ("resource", "https://graph.microsoft.com".into()),
            ],
            400,
            "invalid_request",
            901002,
        ),
        (
            v2(&tenant),
            vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", id.clone()),
                ("client_secret", secret.clone()),
                ("scope", "https://nothing.example/.default".into()),
            ],
            400,
            "invalid_resource",
            500011,
        ),
    ];
    for (url, form, status, error, code) in cases {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (got, body) = post_form(&url, &form).await;
        assert_eq!(
            (got, body["error"].as_str().unwrap()),
            (status, error),
            "{body}"
        );
        assert_eq!(body["error_codes"][0], code, "{body}");
        let desc = body["error_description"].as_str().unwrap();
        assert!(
            desc.starts_with(&format!("AADSTS{code}: "))
                && desc.contains("\r\nTrace ID: ")
                && desc.contains("\r\nCorrelation ID: "),
            "{desc}"
        );
        assert!(
            body["trace_id"].is_string()
                && body["correlation_id"].is_string()
                && body["timestamp"].is_string()
        );
    }
}

async fn token(emu: &Emulator, tenant: &str, id: &str, secret: &str, resource: &str) -> String {
    let (_, v) = post_form(
        &format!("{}/{tenant}/oauth2/token", emu.base_url()),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
            ("resource", resource),
        ],
    )
    .await;
    v["access_token"].as_str().unwrap().to_owned()
}

/// nextLinks walk the collection with a growing `$skip` — until the security API's ceiling:
/// `$skip=500` answers, `$skip=520` is a 400 naming the limit. This is the stall peers meet
/// paging a backlog by nextLink (xdrsync pages by time boundary instead).
#[tokio::test]
async fn graph_next_links_walk_the_collection_up_to_the_skip_ceiling() {
    let (emu, tenant, id, secret) = start().await;
    let token = token(&emu, &tenant, &id, &secret, "https://graph.microsoft.com").await;
    let http = reqwest::Client::new();
    let mut url = format!(
        "{}/v1.0/security/incidents?$top=20&$count=true&$filter=createdDateTime+ge+2025-01-01T00:00:00Z",
        emu.base_url()
    );
    let mut seen = Vec::new();
    let mut count = None;
    let stalled = loop {
        let resp = http.get(&url).bearer_auth(&token).send().await.unwrap();
        let status = resp.status().as_u16();
        let page: Value = resp.json().await.unwrap();
        if status == 400 {
            break Some((url.clone(), page));
        }
        assert_eq!(status, 200, "{page}");
        count = count.or(page["@odata.count"].as_u64());
        seen.extend(
            page["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned()),
        );
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break None,
        }
    };
    let count = count.unwrap() as usize;
    assert!(
        count > 520,
        "the world is too small to reach the ceiling: {count}"
    );
    let (url, body) = stalled.expect("the walk passed $skip=500");
    assert!(url.ends_with("$skip=520"), "{url}");
    assert_eq!(seen.len(), 520);
    assert_eq!(body["error"]["code"], "BadRequest");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum of 500"),
        "{body}"
    );
}

#[tokio::test]
async fn list_query_errors_are_400_in_each_services_shape() {
    let (emu, tenant, id, secret) = start().await;
    let xdr = token(
        &emu,
        &tenant,
        &id,
        &secret,
        "https://api.security.microsoft.com",
    )
    .await;
    let graph = token(&emu, &tenant, &id, &secret, "https://graph.microsoft.com").await;
    let http = reqwest::Client::new();
    let base = emu.base_url();
    for (path, token, code) in [
        ("api/incidents?$top=101", &xdr, "ODataError"),
        (
            "api/incidents?$filter=severity eq 'High'",
            &xdr,
            "ODataError",
        ),
        ("api/incidents?$orderby=createdTime", &xdr, "ODataError"),
        (
            "v1.0/security/incidents?$filter=lastUpdateDateTime ge '2020-01-01'",
            &graph,
            "BadRequest",
        ),
        (
            "v1.0/security/incidents?$expand=evidence",
            &graph,
            "BadRequest",
        ),
    ] {
        let resp = http
            .get(format!("{base}/{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
    let resp = http
        .get(format!("{base}/api/incidents/999999999"))
        .bearer_auth(&xdr)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let resp = http
        .get(format!("{base}/api/incidents?$top=2"))
        .bearer_auth(&xdr)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["odata-version"], "4.0");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["value"].as_array().unwrap().len(), 2);
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/api/$metadata#Incidents")
    );
    assert!(
        body.get("@odata.nextLink").is_none(),
        "the legacy API pages with $skip, without nextLink"
    );
}

#[tokio::test]
async fn ground_truth_lists_every_version() {
    let (emu, tenant, _, _) = start().await;
    let before: Value = reqwest::get(format!(
        "{}/_emulator/ground-truth/{tenant}",
        emu.base_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    emu.state().clock().advance(chrono::Duration::hours(12));
    let after: Value = reqwest::get(format!(
        "{}/_emulator/ground-truth/{tenant}",
        emu.base_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let (b, a) = (
        before["versions"].as_array().unwrap().len(),
        after["versions"].as_array().unwrap().len(),
    );
    assert!(b > 100 && a > b, "{b} then {a}");
    let alerts = after["alert_versions"].as_array().unwrap();
    assert!(alerts.len() > a, "alerts: {}", alerts.len());
    assert!(
        alerts[0]["alert_id"].is_string() && alerts[0]["visible_from"].is_string(),
        "{}",
        alerts[0]
    );
    // The current incidents are the newest version of each.
    let current = emu.state().incidents(&tenant, |_| true);
    for inc in current.iter().take(20) {
        let newest = after["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["incident_id"] == inc.id)
            .map(|v| v["last_update"].as_str().unwrap().to_owned())
            .max()
            .unwrap();
        assert_eq!(newest, inc.last_update.to_string());
    }
}

fn b64url_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'-' => 62,
            _ => 63,
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, c)| acc | (val(*c) << (18 - 6 * i)));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// Graph and Entra answers carry the service's ids: Graph's `request-id`, the caller's
/// `client-request-id` echoed and `x-ms-ags-diagnostic`; Entra's `x-ms-request-id` and the
/// echoed `client-request-id`. An unknown Graph route answers in Graph's shape.
#[tokio::test]
async fn graph_and_entra_answers_carry_request_ids_and_echo_the_callers() {
    let (emu, tenant, id, secret) = start().await;
    let http = reqwest::Client::new();
    let guid = |v: Option<&reqwest::header::HeaderValue>| {
        let s = v
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(uuid::Uuid::parse_str(&s).is_ok(), "not a GUID: {s:?}");
        s
    };
    let sent = "2f1e6b0c-7d4a-4b8e-9c3d-0a1b2c3d4e5f";
    let resp = http
        .post(format!("{}/{tenant}/oauth2/v2.0/token", emu.base_url()))
        .header("client-request-id", sent)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["client-request-id"], sent);
    guid(resp.headers().get("x-ms-request-id"));
    let token = resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let get = |path: &str, client_id: Option<&str>| {
        let mut r = http
            .get(format!("{}{path}", emu.base_url()))
            .bearer_auth(&token);
        if let Some(c) = client_id {
            r = r.header("client-request-id", c);
        }
        r.send()
    };
    let resp = get("/v1.0/security/incidents?$top=1", Some(sent))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["client-request-id"], sent);
    let request_id = guid(resp.headers().get("request-id"));
    assert_ne!(request_id, sent);
    let diagnostic: Value =
        serde_json::from_str(resp.headers()["x-ms-ags-diagnostic"].to_str().unwrap()).unwrap();
    assert!(diagnostic["ServerInfo"]["DataCenter"].is_string());
    // Without one sent, the request id stands in.
    let resp = get("/v1.0/security/incidents?$top=1", None).await.unwrap();
    assert_eq!(
        resp.headers()["client-request-id"],
        resp.headers()["request-id"]
    );
    // Unknown routes under /v1.0 answer as Graph does.
    let resp = get("/v1.0/security/nonsense", Some(sent)).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["client-request-id"], sent);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "BadRequest", "{body}");
    assert_eq!(
        body["error"]["message"],
        "Resource not found for the segment 'nonsense'."
    );
    assert!(body["error"]["innerError"]["date"].is_string(), "{body}");
}

/// `/security/incidents/$count` answers the (filtered) count as text.
#[tokio::test]
async fn incidents_count_is_served_as_text() {
    let (emu, tenant, id, secret) = start().await;
    let token = token(&emu, &tenant, &id, &secret, "https://graph.microsoft.com").await;
    let http = reqwest::Client::new();
    let base = emu.base_url();
    let count = |query: &'static str| {
        http.get(format!("{base}/v1.0/security/incidents/$count{query}"))
            .bearer_auth(&token)
            .send()
    };
    let all = count("").await.unwrap();
    assert_eq!(all.status(), 200);
    assert!(
        all.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let all: usize = all.text().await.unwrap().parse().unwrap();
    assert_eq!(all, emu.state().incidents(&tenant, |_| true).len());
    let active: usize = count("?$filter=status+eq+'active'")
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    let truth = emu
        .state()
        .incidents(&tenant, |i| i.status.graph == "active")
        .len();
    assert!(active == truth && active < all, "{active} of {all}");
    let bad = count("?$filter=nope+eq+1").await.unwrap();
    assert_eq!(bad.status(), 400);
}
