//! The API client against the real emulator over loopback HTTP.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use xdrsync_api_client::{ApiClient, ApiError, RetryPolicy, Target};
use xdrsync_auth::{TokenCache, TokenRequest};
use xdrsync_emulator::Emulator;
use xdrsync_model::{ApiKind, SecretString, TenantId, Timestamp, TokenVersion};
use xdrsync_test_utils as tu;

fn client() -> ApiClient {
    let http = reqwest::Client::new();
    // The emulator's quotas are off here (these tests page hard); pacing is tested on its own.
    ApiClient::with_budgets(
        http.clone(),
        Arc::new(TokenCache::new(http)),
        RetryPolicy::default(),
        Arc::new(xdrsync_api_client::RateBudgets::new(false, 1.0)),
    )
}

fn target(emu: &Emulator, api: ApiKind, page_size: u32, version: TokenVersion) -> Target {
    let c = emu.contract();
    let tenant = TenantId::canonical(&c.tenants[0].id);
    let base = emu.base_url().parse().unwrap();
    Target {
        tenant: tenant.clone(),
        name: "contoso".into(),
        stream: xdrsync_model::StreamKind::Incidents,
        api,
        base_url: emu.base_url().parse().unwrap(),
        token: TokenRequest {
            authority: base,
            tenant,
            client_id: c.apps[0].client_id.clone(),
            credential: xdrsync_auth::Credential::Secret(SecretString::new(
                c.apps[0].secret.clone(),
            )),
            resource: match api {
                ApiKind::Graph => "https://graph.microsoft.com".into(),
                ApiKind::Xdr => "https://api.security.microsoft.com".into(),
            },
            version,
            refresh: None,
        },
        page_size,
    }
}

/// `(id, last update)` of the emulator's incidents updated at or after `since`.
fn truth(emu: &Emulator, since: Timestamp) -> BTreeSet<(String, Timestamp)> {
    let tenant = &emu.contract().tenants[0].id;
    emu.state()
        .incidents(tenant, |i| i.last_update >= since)
        .iter()
        .map(|i| (i.id.to_string(), i.last_update))
        .collect()
}

#[tokio::test]
async fn paging_reads_every_incident_on_both_apis() {
    let emu = tu::start(tu::one_tenant("Contoso", 6.0, tu::ALL_READ_ROLES)).await;
    let since = Timestamp::now().sub(chrono::Duration::hours(48));
    for (api, version) in [
        (ApiKind::Graph, TokenVersion::V2),
        (ApiKind::Xdr, TokenVersion::V1),
    ] {
        // The world runs on the real clock: an incident may change while the pages are read.
        // What was the same before and after the listing must be read exactly; what changed
        // during it, in one of its two versions.
        let before = truth(&emu, since);
        let listing = client()
            .list_incidents(&target(&emu, api, 17, version), since, None)
            .await
            .unwrap();
        let expected = truth(&emu, since);
        assert!(
            expected.len() > 200,
            "fixture too small: {}",
            expected.len()
        );
        let got: BTreeSet<(String, Timestamp)> = listing
            .records
            .iter()
            .map(|f| (f.record.item_id(), f.record.last_update()))
            .collect();
        let steady: BTreeSet<_> = before.intersection(&expected).cloned().collect();
        let missing: Vec<_> = steady.difference(&got).collect();
        assert!(missing.is_empty(), "{api}: not read: {missing:?}");
        let invented: Vec<_> = got
            .iter()
            .filter(|k| !before.contains(*k) && !expected.contains(*k))
            .collect();
        assert!(
            invented.is_empty(),
            "{api}: never listed by the emulator: {invented:?}"
        );
        let changed = expected.len() - steady.len();
        assert!(
            changed <= 3,
            "{api}: {changed} incidents changed while listing"
        );
        let ids: BTreeSet<&String> = got.iter().map(|(id, _)| id).collect();
        assert_eq!(
            ids.len(),
            got.len(),
            "{api}: an incident read in two versions"
        );
        assert_eq!(
            listing.records.len(),
            got.len(),
            "{api}: no incident read twice"
        );
        assert!(
            listing.paging.pages as usize >= expected.len() / 17,
            "{api}: {} pages",
            listing.paging.pages
        );
        assert!(listing.poison.is_empty());
        assert!(!listing.paging.fell_back_to_offset);
        // The raw JSON is the API's own shape.
        let raw: Value = serde_json::from_str(&listing.records[0].raw).unwrap();
        match api {
            ApiKind::Graph => assert!(raw["id"].is_string() && raw["alerts"].is_array()),
            ApiKind::Xdr => assert!(raw["incidentId"].is_u64() && raw["alerts"].is_array()),
        }
    }
}

#[tokio::test]
async fn the_same_incident_has_one_identity_through_both_apis() {
    let emu = tu::start(tu::one_tenant("Contoso", 3.0, tu::ALL_READ_ROLES)).await;
    let since = Timestamp::now().sub(chrono::Duration::hours(12));
    let keys = |l: &xdrsync_api_client::Listing| -> BTreeSet<_> {
        l.records.iter().map(|f| f.record.event_id()).collect()
    };
    let graph = client()
        .list_incidents(
            &target(&emu, ApiKind::Graph, 50, TokenVersion::V2),
            since,
            None,
        )
        .await
        .unwrap();
    let xdr = client()
        .list_incidents(
            &target(&emu, ApiKind::Xdr, 100, TokenVersion::V2),
            since,
            None,
        )
        .await
        .unwrap();
    assert!(!graph.records.is_empty());
    assert_eq!(keys(&graph), keys(&xdr));
}

/// Offset paging loses an incident whenever one above it is updated mid-listing (peers.md
/// §10.1). Here the emulator's clock moves nine minutes before every page the client reads in
/// threes (an `advance` fault: deterministic, no race with a timer), so incidents keep jumping
/// to the top. An incident updated after the listing began moves above the paging
/// boundary and is read by the next pass, which starts at the newest time the first pass saw;
/// together the two passes must have read every incident that existed at the start.
#[tokio::test]
async fn updates_during_paging_lose_nothing() {
    let emu = tu::start(tu::one_tenant("Contoso", 12.0, tu::ALL_READ_ROLES)).await;
    let since = Timestamp::now().sub(chrono::Duration::hours(24));
    let before: BTreeSet<String> = truth(&emu, since).into_iter().map(|(id, _)| id).collect();
    emu.state().add_fault(xdrsync_emulator::faults::FaultRule {
        route: "GET /api/incidents".into(),
        sequence: Vec::new(),
        fault: Some(xdrsync_emulator::faults::Fault::Advance { secs: 540 }),
        probability: None,
    });
    let t = target(&emu, ApiKind::Xdr, 3, TokenVersion::V2);
    let first = client().list_incidents(&t, since, None).await.unwrap();
    emu.state().clear_faults();
    let cursor = first
        .records
        .iter()
        .map(|f| f.record.last_update())
        .max()
        .unwrap();
    let second = client().list_incidents(&t, cursor, None).await.unwrap();
    let seen: BTreeSet<String> = first
        .records
        .iter()
        .chain(&second.records)
        .map(|f| f.record.item_id())
        .collect();
    let missed: Vec<&String> = before.difference(&seen).collect();
    assert!(
        missed.is_empty(),
        "missed {} of {}: {missed:?}",
        missed.len(),
        before.len()
    );
    let moved = before
        .iter()
        .filter(|id| !first.records.iter().any(|f| f.record.item_id() == **id))
        .count();
    assert!(
        moved > 0,
        "the race did not move any incident; the test proves nothing"
    );
}

#[tokio::test]
async fn a_token_without_the_role_gets_403_with_the_missing_roles_named() {
    let emu = tu::start(tu::one_tenant("Contoso", 1.0, &[])).await;
    for api in [ApiKind::Graph, ApiKind::Xdr] {
        let err = client()
            .list_incidents(
                &target(&emu, api, 10, TokenVersion::V2),
                Timestamp::now(),
                None,
            )
            .await
            .unwrap_err();
        let ApiError::Status {
            status,
            code,
            message,
            ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!((*status, code.as_str()), (403, "Forbidden"), "{api}");
        let role = if api == ApiKind::Graph {
            "SecurityIncident.Read.All"
        } else {
            "Incident.Read.All"
        };
        assert!(message.contains(role), "{api}: {message}");
    }
}

#[tokio::test]
async fn a_wrong_secret_is_an_entra_error_with_guidance_and_no_secret() {
    let emu = tu::start(tu::one_tenant("Contoso", 1.0, tu::ALL_READ_ROLES)).await;
    let mut t = target(&emu, ApiKind::Graph, 10, TokenVersion::V2);
    t.token.credential = xdrsync_auth::Credential::Secret(SecretString::new("wrong~secret~value"));
    let err = client()
        .list_incidents(&t, Timestamp::now(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("AADSTS7000215"), "{err}");
    assert!(err.contains("the client secret is wrong"), "{err}");
    assert!(!err.contains("wrong~secret~value"), "{err}");
    assert!(!err.contains("test~secret.value-1"), "{err}");
}

/// Raw HTTP: the APIs refuse bad tokens with 401 and Microsoft's error bodies.
#[tokio::test]
async fn bad_tokens_get_401() {
    let emu = tu::start(tu::one_tenant("Contoso", 1.0, tu::ALL_READ_ROLES)).await;
    let http = reqwest::Client::new();
    let base = emu.base_url();
    let good_graph = TokenCache::new(http.clone())
        .token(&target(&emu, ApiKind::Graph, 1, TokenVersion::V2).token)
        .await
        .unwrap();
    let good_xdr = TokenCache::new(http.clone())
        .token(&target(&emu, ApiKind::Xdr, 1, TokenVersion::V1).token)
        .await
        .unwrap();
    let mut parts: Vec<String> = good_graph.expose().split('.').map(str::to_owned).collect();
    parts[1] = xdrsync_jwt_b64(
        r#"{"aud":"https://graph.microsoft.com","roles":["SecurityIncident.ReadWrite.All"]}"#,
    );
    let tampered = parts.join(".");
    let none = format!(
        "{}.{}.",
        xdrsync_jwt_b64(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let cases = [
        ("garbage", "v1.0/security/incidents", "not-a-jwt".to_owned()),
        ("tampered", "v1.0/security/incidents", tampered),
        ("alg none", "v1.0/security/incidents", none),
        (
            "wrong audience",
            "v1.0/security/incidents",
            good_xdr.expose().to_owned(),
        ),
        (
            "wrong audience",
            "api/incidents",
            good_graph.expose().to_owned(),
        ),
        ("garbage", "api/incidents", "x.y.z".to_owned()),
    ];
    for (what, path, token) in cases {
        let resp = http
            .get(format!("{base}/{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{what} on {path}");
        let body: Value = resp.json().await.unwrap();
        let code = body["error"]["code"].as_str().unwrap();
        if path.starts_with("api") {
            assert_eq!(code, "Unauthorized");
            assert!(body["error"]["target"].is_string());
        } else {
            assert_eq!(code, "InvalidAuthenticationToken");
            assert!(body["error"]["innerError"]["request-id"].is_string());
        }
    }
    let resp = http
        .get(format!("{base}/api/incidents"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "no token");
    // An expired token: move the emulator two hours ahead.
    emu.state().clock().advance(chrono::Duration::hours(2));
    let resp = http
        .get(format!("{base}/api/incidents"))
        .bearer_auth(good_xdr.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "expired");
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

fn xdrsync_jwt_b64(s: &str) -> String {
    use std::fmt::Write as _;
    // base64url without padding, by hand to keep the test independent of the crate under test.
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, x)| acc | (u32::from(*x) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            let _ = out.write_char(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[tokio::test]
async fn graph_top_above_50_is_refused_verbatim() {
    let emu = tu::start(tu::one_tenant("Contoso", 1.0, tu::ALL_READ_ROLES)).await;
    let err = client()
        .list_incidents(
            &target(&emu, ApiKind::Graph, 100, TokenVersion::V2),
            Timestamp::now(),
            None,
        )
        .await
        .unwrap_err();
    let ApiError::Status {
        status, message, ..
    } = err
    else {
        panic!()
    };
    assert_eq!(status, 400);
    assert_eq!(
        message,
        "The query specified in the URI is not valid. The limit of '50' for Top query has been exceeded. The value from the incoming request is '100'."
    );
}

/// A storm of 5xx, 429, resets and truncated bodies on the list and token endpoints, and an
/// access token that expires mid-paging: the listing still equals the emulator's state.
#[tokio::test]
async fn faults_and_token_expiry_mid_paging_lose_nothing() {
    use xdrsync_emulator::faults::{Fault, FaultRule};
    let emu = tu::start(tu::one_tenant("Contoso", 6.0, tu::ALL_READ_ROLES)).await;
    let since = Timestamp::now().sub(chrono::Duration::hours(24));
    let expected = truth(&emu, since);
    let status = |status, retry_after_secs| Fault::Status {
        status,
        retry_after_secs,
    };
    emu.state().add_fault(FaultRule {
        route: "GET /api/incidents".into(),
        sequence: vec![
            Fault::Ok,
            status(500, Some(0)),
            Fault::Reset,
            Fault::Ok,
            Fault::Truncate,
            status(429, Some(1)),
            Fault::Ok,
            status(503, Some(0)),
            Fault::Ok,
        ],
        fault: None,
        probability: None,
    });
    emu.state().add_fault(FaultRule {
        route: "POST /*/oauth2/*".into(),
        sequence: vec![Fault::Ok, status(503, Some(0)), status(500, Some(0))],
        fault: None,
        probability: None,
    });
    let client = client();
    let t = target(&emu, ApiKind::Xdr, 20, TokenVersion::V2);
    // Take a token, then let it expire: the API's 401 makes the client fetch a new one (through
    // the token endpoint's own outage).
    client.tokens().token(&t.token).await.unwrap();
    emu.state().clock().advance(chrono::Duration::hours(2));
    let listing = client.list_incidents(&t, since, None).await.unwrap();
    let got: BTreeSet<(String, Timestamp)> = listing
        .records
        .iter()
        .map(|f| (f.record.item_id(), f.record.last_update()))
        .collect();
    // Two hours passed: the expected set grew; everything that was there is still read.
    assert!(
        expected
            .iter()
            .all(|(id, _)| got.iter().any(|(g, _)| g == id)),
        "an incident was lost"
    );
    assert_eq!(got, truth(&emu, since));
    // Every scripted fault was met: five on the list, two on the token refresh after the 401.
    assert_eq!(emu.state().stats().faults_injected, 7);
}

#[tokio::test]
async fn graph_partial_results_are_surfaced() {
    use xdrsync_emulator::faults::{Fault, FaultRule};
    let emu = tu::start(tu::one_tenant("Contoso", 2.0, tu::ALL_READ_ROLES)).await;
    emu.state().add_fault(FaultRule {
        route: "GET /v1.0/security/incidents".into(),
        sequence: vec![Fault::Partial],
        fault: None,
        probability: None,
    });
    let listing = client()
        .list_incidents(
            &target(&emu, ApiKind::Graph, 50, TokenVersion::V2),
            Timestamp::now().sub(chrono::Duration::hours(6)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(listing.paging.partial.len(), 1);
    assert!(
        listing.paging.partial[0].starts_with("199 - "),
        "{:?}",
        listing.paging.partial
    );
    assert!(!listing.records.is_empty());
}

/// Tie groups larger than a page: every incident of every group is read once.
#[tokio::test]
async fn tie_groups_larger_than_a_page() {
    let emu = tu::start_with(tu::one_tenant("Contoso", 6.0, tu::ALL_READ_ROLES), |b| {
        b.tie_probability = 0.9
    })
    .await;
    let since = Timestamp::now().sub(chrono::Duration::hours(48));
    let expected = truth(&emu, since);
    for api in [ApiKind::Xdr, ApiKind::Graph] {
        let listing = client()
            .list_incidents(&target(&emu, api, 4, TokenVersion::V2), since, None)
            .await
            .unwrap();
        let got: BTreeSet<(String, Timestamp)> = listing
            .records
            .iter()
            .map(|f| (f.record.item_id(), f.record.last_update()))
            .collect();
        assert_eq!(got, expected, "{api}");
        assert_eq!(listing.records.len(), expected.len());
    }
}

/// The client parses only the fields each normalizer reads (`xdrsync_model::sparse`); over
/// everything the emulator renders, in both body styles, that gives the same record as
/// normalizing the whole payload. A field a normalizer starts reading without being listed
/// fails this test.
#[tokio::test]
async fn parsing_only_the_read_fields_normalizes_like_the_whole_payload() {
    use xdrsync_api_client::Source;
    use xdrsync_model::{Record, normalize_graph_alert, normalize_mde_alert};
    use xdrsync_model::{normalize_graph_incident, normalize_xdr_incident};
    for style in [
        xdrsync_emulator::BodyStyle::Doc,
        xdrsync_emulator::BodyStyle::Live,
    ] {
        let mut config = xdrsync_emulator::EmulatorConfig {
            directory: tu::one_tenant("Contoso", 4.0, tu::ALL_READ_ROLES),
            ..Default::default()
        };
        config.behaviour.rate_limits = false;
        config.behaviour.body_style = style;
        let emu = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let since = Timestamp::now().sub(chrono::Duration::hours(48));
        let mut checked = 0;
        for (api, source, resource) in [
            (
                ApiKind::Graph,
                Source::Incidents,
                "https://graph.microsoft.com",
            ),
            (
                ApiKind::Xdr,
                Source::Incidents,
                "https://api.security.microsoft.com",
            ),
            (
                ApiKind::Graph,
                Source::Alerts,
                "https://graph.microsoft.com",
            ),
            (
                ApiKind::Xdr,
                Source::Alerts,
                "https://api.securitycenter.microsoft.com",
            ),
        ] {
            let mut t = target(&emu, api, 50, TokenVersion::V2);
            t.token.resource = resource.into();
            let listing = client().list(&t, &source, since, None).await.unwrap();
            assert!(listing.records.len() > 50, "{api:?} {source:?}: too few");
            assert!(listing.poison.is_empty());
            for f in &listing.records {
                let whole: Value = serde_json::from_str(&f.raw).unwrap();
                let full = match (&source, api) {
                    (Source::Incidents, ApiKind::Graph) => {
                        Record::Incident(normalize_graph_incident(&t.tenant, &whole).unwrap())
                    }
                    (Source::Incidents, ApiKind::Xdr) => {
                        Record::Incident(normalize_xdr_incident(&t.tenant, &whole).unwrap())
                    }
                    (_, ApiKind::Graph) => {
                        Record::Alert(normalize_graph_alert(&t.tenant, &whole).unwrap())
                    }
                    (_, ApiKind::Xdr) => {
                        Record::Alert(normalize_mde_alert(&t.tenant, &whole).unwrap())
                    }
                };
                assert_eq!(f.record, full, "{api:?} {source:?} {style:?}: {}", f.raw);
                checked += 1;
            }
        }
        assert!(checked > 400, "{checked}");
    }
}

/// Graph's nextLinks carry `$skip=` literally (R47); links rewritten with `$` as `%24` occur
/// too (the emulator's `next_link_encoded_dollar`). Following either form reads every incident
/// once, the same set as the emulator holds. (A small, slow tenant read in well under a
/// second: offset paging is only exact while nothing changes, which is why the sync itself
/// pages by time boundary.)
#[tokio::test]
async fn next_links_in_either_form_are_followed_to_the_end() {
    for encoded in [false, true] {
        let emu = tu::start_with(tu::one_tenant("Contoso", 1.0, tu::ALL_READ_ROLES), |b| {
            b.next_link_encoded_dollar = encoded;
        })
        .await;
        let t = target(&emu, ApiKind::Graph, 10, TokenVersion::V2);
        let mut url: url::Url = format!("{}/v1.0/security/incidents?$top=10", emu.base_url())
            .parse()
            .unwrap();
        let mut ids = Vec::new();
        let mut links = Vec::new();
        loop {
            let body = client().get(&t, &url).await.unwrap();
            let page: Value = serde_json::from_slice(&body.bytes).unwrap();
            for i in page["value"].as_array().unwrap() {
                ids.push(i["id"].as_str().unwrap().to_owned());
            }
            let Some(next) = page["@odata.nextLink"].as_str() else {
                break;
            };
            links.push(next.to_owned());
            url = next.parse().unwrap();
        }
        let tenant = &emu.contract().tenants[0].id;
        let all: BTreeSet<String> = emu
            .state()
            .incidents(tenant, |_| true)
            .iter()
            .map(|i| i.id.to_string())
            .collect();
        let unique: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "encoded = {encoded}: an incident twice"
        );
        assert_eq!(unique, all, "encoded = {encoded}");
        assert!(links.len() >= 2, "several pages");
        let form = if encoded { "%24skip=" } else { "$skip=" };
        assert!(links.iter().all(|l| l.contains(form)), "{links:?}");
    }
}

/// Every v1.0 evidence type of the SDK models reaches the normalized alert with a value that
/// says what it points at — the types the normalizer has rules for and the ones it meets
/// without (a Kubernetes pod, a SAS token, a GitHub repository).
#[tokio::test]
async fn every_evidence_type_is_normalized_with_a_value() {
    use xdrsync_api_client::Source;
    use xdrsync_model::Record;
    let mut config = xdrsync_emulator::EmulatorConfig {
        directory: tu::one_tenant("Contoso", 8.0, tu::ALL_READ_ROLES),
        ..Default::default()
    };
    config.behaviour.rate_limits = false;
    let emu = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let t = target(&emu, ApiKind::Graph, 50, TokenVersion::V2);
    let since = Timestamp::now().sub(chrono::Duration::days(30));
    let listing = client()
        .list(&t, &Source::Alerts, since, None)
        .await
        .unwrap();
    let mut kinds = BTreeSet::new();
    for f in &listing.records {
        let Record::Alert(a) = &f.record else {
            panic!("not an alert: {}", f.raw);
        };
        for e in &a.evidence {
            assert!(!e.value.is_empty(), "{} has no value: {}", e.kind, f.raw);
            kinds.insert(e.kind.clone());
        }
    }
    // The normalizer's own names for the types it has rules for, the API's for the rest.
    let expected: BTreeSet<String> = xdrsync_emulator::evidence_types::ALL
        .iter()
        .map(|t| match *t {
            "mailboxEvidence" => "mailbox".to_owned(),
            "analyzedMessageEvidence" => "message".to_owned(),
            other => other.trim_end_matches("Evidence").to_owned(),
        })
        .collect();
    let missing: Vec<_> = expected.difference(&kinds).collect();
    assert!(missing.is_empty(), "never normalized: {missing:?}");
}
