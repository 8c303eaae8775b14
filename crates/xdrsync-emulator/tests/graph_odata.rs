//! Graph fidelity over loopback HTTP: enum members as Microsoft's generated SDK models declare
//! them (emitted and accepted), `$filter` with `or`/`in`/`not`/parentheses and enums compared by
//! member order, `$select` on incidents and alerts_v2, `$expand=alerts($select=…)`, JSON
//! batching (`$batch`).

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use serde_json::{Value, json};
use xdrsync_emulator::world::graph_enums as sdk;
use xdrsync_emulator::{Behaviour, Directory, Emulator, EmulatorConfig, Resource};

struct Env {
    emu: Emulator,
    http: reqwest::Client,
    tenant: String,
    token: String,
}

async fn env(behaviour: Behaviour) -> Env {
    env_as_is(Behaviour {
        rate_limits: false,
        ..behaviour
    })
    .await
}

/// [`env`] with the behaviour exactly as given (quotas included).
async fn env_as_is(behaviour: Behaviour) -> Env {
    let config = EmulatorConfig {
        directory: Directory::demo(33),
        behaviour,
        ..Default::default()
    };
    let emu = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // Contoso: the busiest demo tenant.
    let tenant = emu.contract().tenants[1].id.clone();
    let t = tenant.clone();
    emu.state().update_directory(|d| {
        let g = d.apps[0]
            .consents
            .get_mut(&t)
            .unwrap()
            .get_mut(&Resource::Graph)
            .unwrap();
        g.push("SecurityIncident.ReadWrite.All".into());
        g.push("SecurityAlert.ReadWrite.All".into());
    });
    let http = reqwest::Client::new();
    let c = emu.contract();
    let v: Value = http
        .post(format!("{}/{tenant}/oauth2/v2.0/token", emu.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", c.apps[0].client_id.as_str()),
            ("client_secret", c.apps[0].secret.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = v["access_token"].as_str().unwrap().to_owned();
    Env {
        emu,
        http,
        tenant,
        token,
    }
}

impl Env {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.emu.base_url()))
            .header("Prefer", "include-unknown-enum-members")
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Every page of a Graph collection, by nextLink (the world must be read with
    /// `graph_max_skip = None`: nextLinks grow `$skip`).
    async fn all(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut next = Some(format!("{}{path}", self.emu.base_url()));
        while let Some(url) = next {
            let path = url
                .strip_prefix(self.emu.base_url().as_str())
                .unwrap()
                .to_owned();
            let (status, body) = self.get(&path).await;
            assert_eq!(status, 200, "{path}: {body}");
            out.extend(body["value"].as_array().unwrap().iter().cloned());
            next = body["@odata.nextLink"].as_str().map(str::to_owned);
        }
        out
    }

    fn first_incident(&self) -> u64 {
        self.emu.state().incidents(&self.tenant, |_| true)[0].id
    }
}

fn member(list: &[&str], v: &Value, what: &str) {
    let s = v.as_str().unwrap_or_else(|| panic!("{what}: {v}"));
    assert!(list.contains(&s), "{what}: `{s}` is not an SDK member");
}

/// Every enum value the emulator emits on Graph — incident and alert status, severity,
/// classification, determination, service and detection source, evidence verdict,
/// remediation status and roles — is a member of the SDK models' enum, in a world with
/// drift, merges and resolved incidents.
#[tokio::test]
async fn every_emitted_graph_enum_value_is_an_sdk_member() {
    let e = env(Behaviour {
        enum_drift: true,
        merge_probability: 0.2,
        graph_max_skip: None,
        ..Default::default()
    })
    .await;
    let incidents = e.all("/v1.0/security/incidents?$expand=alerts").await;
    assert!(incidents.len() > 100, "{}", incidents.len());
    let mut determinations = std::collections::BTreeSet::new();
    for i in &incidents {
        member(sdk::INCIDENT_STATUS, &i["status"], "incident status");
        member(sdk::SEVERITY, &i["severity"], "incident severity");
        member(sdk::CLASSIFICATION, &i["classification"], "classification");
        member(sdk::DETERMINATION, &i["determination"], "determination");
        determinations.insert(i["determination"].as_str().unwrap().to_owned());
    }
    // Resolved incidents carry real determinations, in the SDK's spelling.
    assert!(
        determinations.len() >= 3,
        "only {determinations:?}: the world resolves nothing"
    );
    let alerts = e.all("/v1.0/security/alerts_v2").await;
    assert!(!alerts.is_empty());
    for a in &alerts {
        member(sdk::ALERT_STATUS, &a["status"], "alert status");
        member(sdk::SEVERITY, &a["severity"], "alert severity");
        member(
            sdk::CLASSIFICATION,
            &a["classification"],
            "alert classification",
        );
        member(
            sdk::DETERMINATION,
            &a["determination"],
            "alert determination",
        );
        member(sdk::SERVICE_SOURCE, &a["serviceSource"], "serviceSource");
        member(
            sdk::DETECTION_SOURCE,
            &a["detectionSource"],
            "detectionSource",
        );
        for ev in a["evidence"].as_array().unwrap() {
            member(sdk::EVIDENCE_VERDICT, &ev["verdict"], "verdict");
            member(
                sdk::EVIDENCE_REMEDIATION_STATUS,
                &ev["remediationStatus"],
                "remediationStatus",
            );
            for r in ev["roles"].as_array().unwrap() {
                member(sdk::EVIDENCE_ROLE, r, "evidence role");
            }
        }
    }
}

/// A PATCH takes every determination the SDK's `alertDetermination` has, on incidents and on
/// alerts; the doc page's spellings (`compromisedUser`, `clean`, `insufficientData`) are
/// refused with 400 — and the other way round under `determination_doc_spelling`.
#[tokio::test]
async fn patch_takes_every_sdk_determination_and_the_switch_flips_the_spelling() {
    const DOC_ONLY: [&str; 3] = ["compromisedUser", "clean", "insufficientData"];
    const SDK_ONLY: [&str; 3] = [
        "compromisedAccount",
        "notMalicious",
        "notEnoughDataToValidate",
    ];
    for doc in [false, true] {
        let e = env(Behaviour {
            determination_doc_spelling: doc,
            ..Default::default()
        })
        .await;
        let id = e.first_incident();
        let alert = e.emu.state().incidents(&e.tenant, |i| i.id == id)[0].alerts[0]
            .id
            .clone();
        let spellings: Vec<&str> = if doc {
            sdk::DETERMINATION_DOC.to_vec()
        } else {
            sdk::DETERMINATION.to_vec()
        };
        for d in spellings.iter().filter(|d| **d != "unknownFutureValue") {
            let (status, body) = e
                .call(
                    reqwest::Method::PATCH,
                    &format!("/v1.0/security/incidents/{id}"),
                    Some(json!({"classification": "truePositive", "determination": d})),
                )
                .await;
            assert_eq!(
                (status, body["determination"].as_str()),
                (200, Some(*d)),
                "{body}"
            );
            let (status, body) = e
                .call(
                    reqwest::Method::PATCH,
                    &format!("/v1.0/security/alerts_v2/{alert}"),
                    Some(json!({"classification": "truePositive", "determination": d})),
                )
                .await;
            assert_eq!(
                (status, body["determination"].as_str()),
                (200, Some(*d)),
                "{body}"
            );
            // What was written reads back in the same spelling, and filters by it.
            let (status, body) = e
                .get(&format!(
                    "/v1.0/security/incidents?$filter=determination+eq+'{d}'&$top=50"
                ))
                .await;
            assert_eq!(status, 200, "{body}");
            assert!(
                body["value"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["id"].as_str() == Some(id.to_string().as_str())),
                "{d}"
            );
        }
        let refused = if doc { SDK_ONLY } else { DOC_ONLY };
        for d in refused {
            let (status, body) = e
                .call(
                    reqwest::Method::PATCH,
                    &format!("/v1.0/security/incidents/{id}"),
                    Some(json!({"determination": d})),
                )
                .await;
            assert_eq!(status, 400, "{d}: {body}");
            assert!(
                body["error"]["message"].as_str().unwrap().contains(d),
                "{body}"
            );
            let (status, _) = e
                .get(&format!(
                    "/v1.0/security/incidents?$filter=determination+eq+'{d}'"
                ))
                .await;
            assert_eq!(status, 400, "{d}: not a member, so not filterable");
        }
    }
}

/// `or`, `in`, `not` and parentheses select what OData says they do; enums compare by member
/// order (`severity ge 'medium'` is medium and high), never alphabetically.
#[tokio::test]
async fn filter_logic_and_enum_order_over_http() {
    let e = env(Behaviour {
        graph_max_skip: None,
        ..Default::default()
    })
    .await;
    let all = e.all("/v1.0/security/incidents").await;
    let count = |pred: &dyn Fn(&Value) -> bool| all.iter().filter(|i| pred(i)).count();
    let sev = |i: &Value, s: &[&str]| s.contains(&i["severity"].as_str().unwrap());
    let cases: Vec<(&str, usize)> = vec![
        (
            "severity ge 'medium'",
            count(&|i| sev(i, &["medium", "high"])),
        ),
        (
            "severity lt 'medium'",
            count(&|i| sev(i, &["unknown", "informational", "low"])),
        ),
        (
            "severity eq 'high' or severity eq 'low'",
            count(&|i| sev(i, &["high", "low"])),
        ),
        (
            "severity in ('high','low')",
            count(&|i| sev(i, &["high", "low"])),
        ),
        ("not (severity eq 'high')", count(&|i| !sev(i, &["high"]))),
        (
            "(severity eq 'high' or severity eq 'informational') and status eq 'active'",
            count(&|i| sev(i, &["high", "informational"]) && i["status"] == "active"),
        ),
    ];
    assert!(cases.iter().all(|(_, n)| *n > 0), "{cases:?}");
    for (filter, expected) in cases {
        let got = e
            .all(&format!(
                "/v1.0/security/incidents?$filter={}",
                urlencode(filter)
            ))
            .await;
        assert_eq!(got.len(), expected, "{filter}");
        let (status, body) = e
            .get(&format!(
                "/v1.0/security/incidents/$count?$filter={}",
                urlencode(filter)
            ))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Alerts take the same grammar.
    let alerts = e.all("/v1.0/security/alerts_v2").await;
    let want = alerts
        .iter()
        .filter(|a| ["high", "medium"].contains(&a["severity"].as_str().unwrap()))
        .count();
    let got = e
        .all(&format!(
            "/v1.0/security/alerts_v2?$filter={}",
            urlencode(
                "severity ge 'medium' and status in ('new','inProgress','resolved','unknown')"
            )
        ))
        .await;
    assert_eq!(got.len(), want);
    for bad in [
        "severity ge 'severe'",
        "severity in ()",
        "(severity eq 'high'",
        "serviceSource eq 'notAProduct'",
    ] {
        for list in ["incidents", "alerts_v2"] {
            let (status, body) = e
                .get(&format!("/v1.0/security/{list}?$filter={}", urlencode(bad)))
                .await;
            if list == "incidents" && bad.starts_with("serviceSource") {
                continue;
            }
            assert_eq!(status, 400, "{list} {bad}: {body}");
            assert_eq!(body["error"]["code"], "BadRequest", "{body}");
        }
    }
}

/// `$select` returns only the selected properties plus `id`, on incidents (list and item) and
/// alerts_v2; `$expand=alerts($select=…)` cuts the expanded alerts; unknown names are 400.
#[tokio::test]
async fn select_and_nested_select() {
    let e = env(Behaviour::default()).await;
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let (status, body) = e
        .get("/v1.0/security/incidents?$select=displayName,severity&$top=5")
        .await;
    assert_eq!(status, 200, "{body}");
    for i in body["value"].as_array().unwrap() {
        assert_eq!(keys(i), ["displayName", "id", "severity"], "{i}");
    }
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#security/incidents(displayName,severity,id)"),
        "{body}"
    );
    let (status, body) = e
        .get("/v1.0/security/incidents?$select=displayName&$expand=alerts($select=title,severity)&$top=5")
        .await;
    assert_eq!(status, 200, "{body}");
    for i in body["value"].as_array().unwrap() {
        assert_eq!(keys(i), ["alerts", "displayName", "id"], "{i}");
        for a in i["alerts"].as_array().unwrap() {
            assert_eq!(keys(a), ["@odata.type", "id", "severity", "title"], "{a}");
        }
    }
    // A nested select alone keeps every incident property.
    let (status, body) = e
        .get("/v1.0/security/incidents?$expand=alerts($select=id)&$top=2")
        .await;
    assert_eq!(status, 200, "{body}");
    let i = &body["value"][0];
    assert!(
        i.get("lastUpdateDateTime").is_some() && i.get("alerts").is_some(),
        "{i}"
    );
    assert_eq!(keys(&i["alerts"][0]), ["@odata.type", "id"]);
    let id = e.first_incident();
    let (status, one) = e
        .get(&format!("/v1.0/security/incidents/{id}?$select=status"))
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(keys(&one), ["@odata.context", "id", "status"]);
    let (status, body) = e
        .get("/v1.0/security/alerts_v2?$select=title,serviceSource&$top=3")
        .await;
    assert_eq!(status, 200, "{body}");
    for a in body["value"].as_array().unwrap() {
        assert_eq!(
            keys(a),
            ["@odata.type", "id", "serviceSource", "title"],
            "{a}"
        );
    }
    for bad in [
        "/v1.0/security/incidents?$select=nope",
        "/v1.0/security/incidents?$expand=alerts($select=nope)",
        "/v1.0/security/incidents?$expand=alerts($top=1)",
        "/v1.0/security/incidents?$expand=comments",
        "/v1.0/security/alerts_v2?$select=displayName",
        "/v1.0/security/alerts_v2?$orderby=severity",
    ] {
        let (status, body) = e.get(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `$skip` up to 500 answers and above it is Graph's 400, on incidents and alerts_v2;
/// `graph_max_skip = None` lifts the ceiling.
#[tokio::test]
async fn skip_ceiling_is_500_and_switchable() {
    for ceiling in [Some(500), None] {
        let e = env(Behaviour {
            graph_max_skip: ceiling,
            ..Default::default()
        })
        .await;
        for list in ["incidents", "alerts_v2"] {
            let (status, body) = e
                .get(&format!("/v1.0/security/{list}?$top=5&$skip=500"))
                .await;
            assert_eq!(status, 200, "{list}: {body}");
            let (status, body) = e
                .get(&format!("/v1.0/security/{list}?$top=5&$skip=501"))
                .await;
            if ceiling.is_some() {
                assert_eq!(status, 400, "{list}: {body}");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("$skip (501)"),
                    "{body}"
                );
            } else {
                assert_eq!(status, 200, "{list}: {body}");
            }
        }
    }
}

/// Across the world's alerts every v1.0 evidence type of the SDK models appears, each with
/// the base `alertEvidence` properties, so clients meet the types they do not know.
#[tokio::test]
async fn every_sdk_evidence_type_is_emitted() {
    let e = env(Behaviour {
        graph_max_skip: None,
        ..Default::default()
    })
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for a in e.all("/v1.0/security/alerts_v2").await {
        for ev in a["evidence"].as_array().unwrap() {
            let t = ev["@odata.type"].as_str().unwrap();
            let name = t.strip_prefix("#microsoft.graph.security.").unwrap();
            for base in [
                "createdDateTime",
                "verdict",
                "remediationStatus",
                "roles",
                "tags",
            ] {
                assert!(ev.get(base).is_some(), "{name} lacks {base}");
            }
            seen.insert(name.to_owned());
        }
    }
    let all: std::collections::BTreeSet<String> = xdrsync_emulator::evidence_types::ALL
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(all.len(), 48);
    assert_eq!(seen, all);
}

impl Env {
    async fn batch(&self, requests: Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/v1.0/$batch",
            Some(json!({ "requests": requests })),
        )
        .await
    }
}

/// The answer to request `id` of a batch answer.
fn answer<'a>(body: &'a Value, id: &str) -> &'a Value {
    body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no answer for {id}: {body}"))
}

/// `POST /v1.0/$batch`: each request is answered on its own (200s beside a 404), the answers
/// are matched by id (not in request order), a PATCH with its `Content-Type` applies, and
/// `dependsOn` orders a read after it.
#[tokio::test]
async fn a_batch_answers_each_request_on_its_own() {
    let e = env(Behaviour::default()).await;
    let ids: Vec<u64> = e
        .emu
        .state()
        .incidents(&e.tenant, |_| true)
        .iter()
        .take(17)
        .map(|i| i.id)
        .collect();
    assert_eq!(ids.len(), 17);
    let mut requests: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            json!({"id": n.to_string(), "method": "GET",
                   "url": format!("/security/incidents/{id}?$expand=alerts")})
        })
        .collect();
    requests.push(json!({"id": "missing", "method": "GET", "url": "security/incidents/999999999"}));
    requests.push(json!({"id": "close", "method": "PATCH",
        "url": format!("/security/incidents/{}", ids[0]),
        "headers": {"Content-Type": "application/json"},
        "body": {"status": "resolved", "classification": "truePositive", "determination": "compromisedAccount"}}));
    requests.push(
        json!({"id": "after", "method": "GET", "dependsOn": ["close"],
        "url": format!("/security/incidents/{}", ids[0])}),
    );
    let (status, body) = e.batch(Value::Array(requests)).await;
    assert_eq!(status, 200, "{body}");
    let responses = body["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 20);
    assert_ne!(responses[0]["id"], "0", "answers came in request order");
    for (n, id) in ids.iter().enumerate() {
        let a = answer(&body, &n.to_string());
        assert_eq!(a["status"], 200, "{a}");
        assert_eq!(a["body"]["id"], id.to_string());
        assert!(a["body"]["alerts"].is_array(), "{a}");
        assert!(
            a["headers"]["Content-Type"]
                .as_str()
                .unwrap()
                .starts_with("application/json"),
            "{a}"
        );
    }
    let missing = answer(&body, "missing");
    assert_eq!(missing["status"], 404, "{missing}");
    assert!(missing["body"]["error"]["code"].is_string(), "{missing}");
    assert_eq!(answer(&body, "close")["status"], 200);
    let after = answer(&body, "after");
    assert_eq!(after["body"]["status"], "resolved", "{after}");
    assert_eq!(after["body"]["determination"], "compromisedAccount");
    assert_eq!(e.emu.state().stats().batches, 1);
}

/// What Graph refuses as a whole batch (400 naming the problem) and what it fails per request:
/// 424 after a failed dependency, 400 for a nested `$batch` or an absolute URL elsewhere (one on
/// this service's `/v1.0` is taken), 401 without a token.
#[tokio::test]
async fn a_bad_batch_is_refused_by_name() {
    let e = env(Behaviour::default()).await;
    let get = |id: &str| json!({"id": id, "method": "GET", "url": "/security/incidents?$top=1"});
    let too_many: Vec<Value> = (0..21).map(|n| get(&n.to_string())).collect();
    for (requests, says) in [
        (Value::Array(too_many), "exceeds the limit of 20"),
        (json!([get("a"), get("a")]), "duplicated"),
        (
            json!([{"id": "w", "method": "PATCH", "url": "/security/incidents/1", "body": {"status": "active"}}]),
            "does not contain Content-Type",
        ),
        (
            json!([{"id": "x", "method": "GET", "url": "/security/incidents", "dependsOn": ["nope"]}]),
            "not in the batch",
        ),
        (json!("not a list"), "Invalid batch payload"),
    ] {
        let (status, body) = e.batch(requests).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "BadRequest");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    let (status, body) = e
        .batch(json!([
            {"id": "bad", "method": "GET", "url": "/security/incidents/999999999"},
            {"id": "then", "method": "GET", "url": "/security/incidents?$top=1", "dependsOn": ["bad"]},
            {"id": "nested", "method": "POST", "url": "/$batch", "headers": {"Content-Type": "application/json"}, "body": {"requests": []}},
            {"id": "abs", "method": "GET", "url": "https://example.com/v1.0/security/incidents"},
            {"id": "beta", "method": "GET", "url": format!("{}/beta/security/incidents", e.emu.base_url())},
            {"id": "own", "method": "GET", "url": format!("{}/v1.0/security/incidents?$top=2", e.emu.base_url())},
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer(&body, "bad")["status"], 404);
    assert_eq!(answer(&body, "then")["status"], 424);
    assert_eq!(answer(&body, "nested")["status"], 400);
    assert_eq!(answer(&body, "abs")["status"], 400);
    assert_eq!(answer(&body, "beta")["status"], 400);
    // msgraph-sdk for Python sends full URLs; one on this service's /v1.0 is taken.
    let own = answer(&body, "own");
    assert_eq!(own["status"], 200, "{own}");
    assert_eq!(own["body"]["value"].as_array().unwrap().len(), 2);
    let resp = e
        .http
        .post(format!("{}/v1.0/$batch", e.emu.base_url()))
        .json(&json!({"requests": [get("1")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// Throttling is per request inside a batch: an injected 429 and a spent quota each answer
/// 429 with `Retry-After` for the requests they hit, 200 for the others, and the batch itself
/// 200.
#[tokio::test]
async fn requests_in_a_batch_are_throttled_each_on_their_own() {
    use xdrsync_emulator::faults::{Fault, FaultRule, ThrottleShape};
    let e = env(Behaviour::default()).await;
    e.emu.state().add_fault(FaultRule {
        route: "GET /v1.0/security/incidents/*".into(),
        sequence: vec![
            Fault::Ok,
            Fault::Throttle {
                shape: ThrottleShape::ActivityLimitReached,
                retry_after_secs: Some(7),
            },
        ],
        fault: None,
        probability: None,
    });
    let ids: Vec<u64> = e
        .emu
        .state()
        .incidents(&e.tenant, |_| true)
        .iter()
        .take(5)
        .map(|i| i.id)
        .collect();
    let requests: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| json!({"id": n.to_string(), "method": "GET", "url": format!("/security/incidents/{id}")}))
        .collect();
    let (status, body) = e.batch(Value::Array(requests)).await;
    assert_eq!(status, 200, "{body}");
    // The requests run side by side: which one meets the scripted 429 is not fixed.
    let answers = body["responses"].as_array().unwrap();
    let throttled: Vec<&Value> = answers.iter().filter(|r| r["status"] == 429).collect();
    assert_eq!(throttled.len(), 1, "{body}");
    assert_eq!(throttled[0]["headers"]["Retry-After"], "7", "{body}");
    assert_eq!(
        throttled[0]["body"]["error"]["code"],
        "activityLimitReached"
    );
    assert_eq!(
        answers.iter().filter(|r| r["status"] == 200).count(),
        4,
        "{body}"
    );

    // The Graph quota (150 calls a minute per app and tenant) counts each request of a batch.
    let e = env_as_is(Behaviour {
        rate_limits: true,
        ..Behaviour::default()
    })
    .await;
    let id = e.first_incident();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let requests: Vec<Value> = (0..20)
            .map(|n| json!({"id": n.to_string(), "method": "GET", "url": format!("/security/incidents/{id}")}))
            .collect();
        let (status, body) = e.batch(Value::Array(requests)).await;
        assert_eq!(status, 200, "{body}");
        for r in body["responses"].as_array().unwrap() {
            if r["status"] == 429 {
                assert!(r["headers"]["Retry-After"].is_string(), "{r}");
            }
            statuses.push(r["status"].as_u64().unwrap());
        }
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, throttled), (150, 10), "{statuses:?}");
}

/// Ingestion lag delays what the service detects, not what a caller writes: a PATCH is read
/// back at once, by id and in a list (msgraph-sdk's PATCH-then-GET met the old version).
#[tokio::test]
async fn a_write_is_read_back_at_once_under_ingestion_lag() {
    let e = env(Behaviour {
        ingestion_lag_secs: 600,
        ingestion_lag_varies: false,
        ..Behaviour::default()
    })
    .await;
    let id = e.first_incident();
    let (status, body) = e
        .call(
            reqwest::Method::PATCH,
            &format!("/v1.0/security/incidents/{id}"),
            Some(json!({"status": "resolved", "classification": "falsePositive", "determination": "notMalicious"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, got) = e.get(&format!("/v1.0/security/incidents/{id}")).await;
    assert_eq!(
        (&got["status"], &got["determination"]),
        (&json!("resolved"), &json!("notMalicious")),
        "{got}"
    );
    let want = id.to_string();
    let listed = e
        .all("/v1.0/security/incidents?$filter=determination+eq+'notMalicious'")
        .await;
    assert!(
        listed.iter().any(|i| i["id"] == want.as_str()),
        "the written version is not listed"
    );
}
