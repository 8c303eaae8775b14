//! The realism switches: ingestion lag, timestamp ties, merges, retention, enum drift,
//! `$expand=alerts` failures on big incidents.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use serde_json::Value;
use xdrsync_emulator::{Behaviour, Directory, Emulator, EmulatorConfig};

async fn start(behaviour: Behaviour) -> (Emulator, String, String, String) {
    let config = EmulatorConfig {
        directory: Directory::demo(9),
        behaviour: Behaviour {
            rate_limits: false,
            ..behaviour
        },
        ..Default::default()
    };
    let emu = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (tenant, xdr, graph) = tokens(&emu).await;
    (emu, tenant, xdr, graph)
}

/// Fresh app tokens (XDR, Graph) for the first customer tenant.
async fn tokens(emu: &Emulator) -> (String, String, String) {
    let c = emu.contract();
    let tenant = c.tenants[1].id.clone();
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for resource in [
        "https://api.security.microsoft.com",
        "https://graph.microsoft.com",
    ] {
        let v: Value = http
            .post(format!("{}/{tenant}/oauth2/token", emu.base_url()))
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
        tokens.push(v["access_token"].as_str().unwrap().to_owned());
    }
    let graph = tokens.pop().unwrap();
    let xdr = tokens.pop().unwrap();
    (tenant, xdr, graph)
}

async fn get(emu: &Emulator, path: &str, token: &str, prefer: bool) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .get(format!("{}{path}", emu.base_url()))
        .bearer_auth(token);
    if prefer {
        req = req.header("Prefer", "include-unknown-enum-members");
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn ingestion_lag_hides_fresh_changes() {
    let (emu, tenant, xdr, _) = start(Behaviour {
        ingestion_lag_secs: 600,
        ..Default::default()
    })
    .await;
    let id = emu.state().create_incidents(&tenant, 1).unwrap()[0];
    let (status, _) = get(&emu, &format!("/api/incidents/{id}"), &xdr, false).await;
    assert_eq!(status, 404, "not visible before the lag has passed");
    assert!(
        emu.state()
            .ground_truth(&tenant)
            .iter()
            .any(|v| v.incident_id == id),
        "but it exists"
    );
    emu.state().clock().advance(chrono::Duration::seconds(601));
    let (status, body) = get(&emu, &format!("/api/incidents/{id}"), &xdr, false).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn ties_share_one_timestamp() {
    let (emu, tenant, xdr, _) = start(Behaviour {
        tie_probability: 0.9,
        ..Default::default()
    })
    .await;
    let mut groups = std::collections::BTreeMap::new();
    for i in emu.state().incidents(&tenant, |_| true) {
        *groups.entry(i.last_update).or_insert(0) += 1;
    }
    // Later updates move some incidents out of their group, and how many updates a world has
    // seen depends on the wall clock, so the sizes vary from run to run; with nine ties in ten
    // a run of ties survives and a good share of incidents still share their time (20% here).
    let largest = groups.values().copied().max().unwrap();
    let total: usize = groups.values().sum();
    let tied: usize = groups.values().filter(|n| **n > 1).sum();
    eprintln!("largest {largest}, tied {tied} of {total}");
    assert!(largest >= 4, "largest tie group {largest}");
    assert!(
        tied * 10 >= total,
        "only {tied} of {total} incidents share a time"
    );
    // The API returns a tie group intact under an `eq` filter.
    let (at, n) = groups.iter().find(|(_, n)| **n == largest).unwrap();
    let (_, body) = get(
        &emu,
        &format!(
            "/api/incidents?$filter=lastUpdateTime+eq+{}",
            at.to_trimmed_string()
        ),
        &xdr,
        false,
    )
    .await;
    assert_eq!(body["value"].as_array().unwrap().len(), *n);
}

#[tokio::test]
async fn merged_incidents_are_redirected() {
    let (emu, tenant, _, _) = start(Behaviour {
        merge_probability: 0.5,
        ..Default::default()
    })
    .await;
    emu.state().clock().advance(chrono::Duration::hours(6));
    let (_, xdr, graph) = tokens(&emu).await;
    let merged = emu.state().incidents(&tenant, |i| i.redirect.is_some());
    assert!(!merged.is_empty());
    let m = &merged[0];
    let target = m.redirect.unwrap();
    assert!(
        emu.state().incidents(&tenant, |i| i.id == target).len() == 1,
        "the target exists"
    );
    assert!(m.alerts.is_empty(), "the alerts moved to the target");
    let (_, legacy) = get(&emu, &format!("/api/incidents/{}", m.id), &xdr, false).await;
    assert_eq!(
        (
            legacy["status"].as_str(),
            legacy["redirectIncidentId"].as_u64()
        ),
        (Some("Redirected"), Some(target))
    );
    let (_, g) = get(
        &emu,
        &format!("/v1.0/security/incidents/{}", m.id),
        &graph,
        false,
    )
    .await;
    assert_eq!(
        (g["status"].as_str(), g["redirectIncidentId"].as_str()),
        (Some("redirected"), Some(target.to_string().as_str()))
    );
}

#[tokio::test]
async fn retention_is_180_days() {
    let (emu, _, xdr, _) = start(Behaviour::default()).await;
    assert!(
        !get(&emu, "/api/incidents?$top=5", &xdr, false).await.1["value"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Jump far ahead but ask with a filter that excludes the new incidents of the jump.
    emu.state().clock().advance(chrono::Duration::days(181));
    let (_, xdr, _) = tokens(&emu).await;
    let start = (chrono::Utc::now() - chrono::Duration::days(8)).format("%Y-%m-%dT%H:%M:%SZ");
    let end = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let (status, body) = get(
        &emu,
        &format!("/api/incidents?$filter=lastUpdateTime+ge+{start}+and+lastUpdateTime+le+{end}"),
        &xdr,
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["value"].as_array().unwrap().is_empty(),
        "incidents older than 180 days are gone"
    );
}

#[tokio::test]
async fn evolvable_enums_need_the_prefer_header() {
    let (emu, tenant, _, _) = start(Behaviour {
        enum_drift: true,
        ..Default::default()
    })
    .await;
    emu.state().clock().advance(chrono::Duration::hours(3));
    let (_, _, graph) = tokens(&emu).await;
    let awaiting = emu
        .state()
        .incidents(&tenant, |i| i.status.graph == "awaitingAction");
    assert!(!awaiting.is_empty());
    let path = format!("/v1.0/security/incidents/{}?$expand=alerts", awaiting[0].id);
    let (_, plain) = get(&emu, &path, &graph, false).await;
    assert_eq!(plain["status"], "unknownFutureValue");
    let (_, preferred) = get(&emu, &path, &graph, true).await;
    assert_eq!(preferred["status"], "awaitingAction");
    let (_, all) = get(
        &emu,
        "/v1.0/security/incidents?$expand=alerts&$top=50",
        &graph,
        true,
    )
    .await;
    let sources: Vec<&str> = all["value"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["alerts"].as_array().unwrap())
        .map(|a| a["serviceSource"].as_str().unwrap())
        .collect();
    assert!(sources.contains(&"microsoftSentinel"), "{sources:?}");
}

#[tokio::test]
async fn expand_alerts_fails_on_big_incidents() {
    let (emu, _, _, graph) = start(Behaviour {
        expand_fail_min_alerts: Some(3),
        ..Default::default()
    })
    .await;
    let (status, body) = get(
        &emu,
        "/v1.0/security/incidents?$expand=alerts&$top=50",
        &graph,
        false,
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        get(&emu, "/v1.0/security/incidents?$top=50", &graph, false)
            .await
            .0,
        200,
        "without $expand it works"
    );
}
