//! The alert streams against the emulator's ground truth: Graph `alerts_v2`, the MDE alerts API
//! and the SIEM API's detections, with ties, merges, ingestion lag, small pages and fault storms.
//! After each scenario the store holds every alert version (and detection) that was observable,
//! nothing the emulator never had, and nothing twice.
//!
//! An alert version is observable from the moment the incident version that first carried it is
//! visible (ingestion lag applies to the incident) until the alert's next version is: the same
//! "current for a whole poll" rule as the incident scenarios in `sync.rs`.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::run;
use xdrsync_config::Config;
use xdrsync_emulator::{Behaviour, Emulator};
use xdrsync_model::{ApiKind, StreamKind};
use xdrsync_pipeline::Pipeline;
use xdrsync_store::{SqliteStore, Store};
use xdrsync_test_utils as tu;

use tu::truth::{Poll, Truth, check, observable};

/// Tenant 0: Graph incidents + alerts_v2; tenant 1: MDE alerts + SIEM detections (legacy);
/// tenant 2: alerts_v2 only. Small alert pages so tie groups straddle pages.
fn config(dir: &std::path::Path, emu: &Emulator, page: u32) -> Config {
    let config = tu::write_config(
        dir,
        emu,
        &[ApiKind::Graph, ApiKind::Xdr, ApiKind::Graph],
        &format!("[sync]\ninitial_lookback_hours = 48\nalert_page_size = {page}\n"),
    );
    tu::set_streams(
        &config,
        &[
            r#"["incidents", "alerts"]"#,
            r#"["alerts", "detections"]"#,
            r#"["alerts"]"#,
        ],
    )
}

fn check_all(
    emu: &Emulator,
    store: &dyn Store,
    config: &Config,
    polls: &[Poll],
    lag: i64,
) -> usize {
    let mut total = 0;
    // The first pull reads 48 hours back (an hour's margin for the client's clock).
    let from = polls[0].0.sub(chrono::Duration::hours(47));
    for (i, t) in config.tenants.iter().enumerate() {
        let id = t.tenant_id.as_str();
        let (alerts, detections) = tu::truth::alerts(emu, id, t.api == ApiKind::Xdr);
        total += check(
            store,
            id,
            StreamKind::Alerts,
            (&alerts, &tu::truth::since(&alerts, from)),
            polls,
            lag,
        );
        if i == 1 {
            let n = check(
                store,
                id,
                StreamKind::Detections,
                (&detections, &tu::truth::since(&detections, from)),
                polls,
                lag,
            );
            assert!(n > 20, "{}: only {n} observable detections", t.name);
            total += n;
        }
    }
    total
}

#[tokio::test]
async fn alert_streams_with_ties_merges_and_lag_match_the_ground_truth() {
    let emu = tu::start_with(tu::demo_directory(), |b: &mut Behaviour| {
        b.tie_probability = 0.35;
        b.merge_probability = 0.25;
        b.ingestion_lag_secs = 240;
        b.ingestion_lag_varies = true;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &emu, 3);
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let pipeline = Pipeline::new(config.clone(), store.clone()).unwrap();
    let polls = run(&emu, &pipeline, 40, chrono::Duration::minutes(11)).await;
    let observable = check_all(&emu, &*store, &config, &polls, 240);
    assert!(observable > 500, "only {observable} observable versions");
    // Alerts were updated (resolved, moved by a merge), not only created.
    let updated = store
        .versions_after(0, 1_000_000)
        .unwrap()
        .iter()
        .filter(|v| {
            v.stream == StreamKind::Alerts && v.change == xdrsync_model::ChangeKind::Updated
        })
        .count();
    assert!(updated > 10, "only {updated} alert updates");
}

#[tokio::test]
async fn alert_streams_survive_fault_storms_and_token_expiry() {
    let emu = tu::start_with(tu::demo_directory(), |b: &mut Behaviour| {
        b.tie_probability = 0.2;
        b.merge_probability = 0.1;
    })
    .await;
    tu::truth::fault_storm(
        &emu,
        &[
            "GET /v1.0/security/alerts_v2",
            "GET /api/alerts",
            "GET /alertexporter/api/alerts",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &emu, 4);
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let pipeline = Pipeline::new(config.clone(), store.clone()).unwrap();
    // Steps of 70 minutes: every pull starts with a token the emulator considers expired.
    let polls = run(&emu, &pipeline, 12, chrono::Duration::minutes(70)).await;
    check_all(&emu, &*store, &config, &polls, 0);
    let stats = emu.state().stats();
    assert!(stats.faults_injected > 20, "{stats:?}");
}

/// A tenant's alerts moved from the MDE API to Graph alerts_v2: the alerts already stored are
/// not stored again, and Graph adds only the alerts MDE never listed (other products').
#[tokio::test]
async fn switching_alerts_from_mde_to_graph_has_no_duplicate_or_gap() {
    let emu = tu::start_with(tu::demo_directory(), |b: &mut Behaviour| {
        b.tie_probability = 0.2;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = tu::write_config(
        dir.path(),
        &emu,
        &[ApiKind::Xdr],
        "[sync]\ninitial_lookback_hours = 48\nalert_page_size = 5\n",
    );
    let config = tu::set_streams(&config, &[r#"["alerts"]"#]);
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let legacy = Pipeline::new(config.clone(), store.clone()).unwrap();
    let mut polls = run(&emu, &legacy, 6, chrono::Duration::minutes(20)).await;
    let mde_ids: BTreeSet<(String, String)> = store
        .versions_after(0, 1_000_000)
        .unwrap()
        .iter()
        .map(|v| (v.record.tenant().to_string(), v.record.item_id()))
        .collect();
    assert!(mde_ids.len() > 20, "only {} MDE alerts", mde_ids.len());
    let before = store.last_seq().unwrap();

    let text = std::fs::read_to_string(&config.path)
        .unwrap()
        .replace("api = \"xdr\"", "api = \"graph\"");
    std::fs::write(&config.path, text).unwrap();
    let graph_config = Config::load(&config.path).unwrap();
    let graph = Pipeline::new(graph_config.clone(), store.clone()).unwrap();
    // The same instant: nothing changed, so every MDE alert is already stored.
    polls.extend(run(&emu, &graph, 1, chrono::Duration::zero()).await);
    let switched = store.versions_after(before, 1_000_000).unwrap();
    let repeated: Vec<_> = switched
        .iter()
        .filter(|v| mde_ids.contains(&(v.record.tenant().to_string(), v.record.item_id())))
        .map(|v| v.record.item_id())
        .collect();
    assert!(
        repeated.is_empty(),
        "re-stored after the switch: {repeated:?}"
    );
    assert!(
        switched.iter().all(|v| v.record.api() == "graph"),
        "new versions come from Graph"
    );
    polls.extend(run(&emu, &graph, 10, chrono::Duration::minutes(30)).await);
    let mut after_switch = 0;
    for t in &graph_config.tenants {
        let id = t.tenant_id.as_str();
        let (mut all, _) = tu::truth::alerts(&emu, id, false);
        let (mde, _) = tu::truth::alerts(&emu, id, true);
        // From the switch on every alert is listed; before it, MDE's (endpoint) alerts only.
        // Other products' alerts last changed before the switch are not in the stream's past
        // (`xdrsync backfill --since` reads them); everything changed since is.
        let switched_at = polls[6].0;
        let all_versions: Truth = all.clone();
        all.retain(|(_, t, _)| *t >= switched_at);
        after_switch += all.len();
        check(
            store.as_ref(),
            id,
            StreamKind::Alerts,
            (&all_versions, &all),
            &polls[6..],
            0,
        );
        let stored: BTreeSet<_> = store
            .version_keys(&t.tenant_id, StreamKind::Alerts)
            .unwrap()
            .into_iter()
            .collect();
        let from = polls[0].0.sub(chrono::Duration::hours(47));
        let mde: Truth = tu::truth::since(&mde, from);
        let early = observable(&mde, &polls[..6], 0);
        assert!(
            early.len() > 20,
            "only {} observable MDE versions",
            early.len()
        );
        let lost: Vec<_> = early.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "lost {} before the switch: {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }
    assert!(
        after_switch > 30,
        "only {after_switch} versions after the switch"
    );
}

/// The emulator answers as Microsoft's own hosts: with `[cloud] region = "eu"` and
/// `connect_to` its address (no URL overrides), every call goes to the EU regional names —
/// `eu.api.security.microsoft.com`, `api-eu.securitycenter.microsoft.com`,
/// `wdatp-alertexporter-eu.windows.com` — plus login and Graph, over TLS certified for those
/// names, and the alerts and detections equal the truth.
#[tokio::test]
async fn regional_hosts_by_name_through_connect_to() {
    let dir = tempfile::tempdir().unwrap();
    let emu = tu::start_tls(tu::demo_directory(), dir.path(), |_| {}).await;
    let config = tu::write_config(
        dir.path(),
        &emu,
        &[ApiKind::Graph, ApiKind::Xdr, ApiKind::Graph],
        "[sync]\ninitial_lookback_hours = 48\nalert_page_size = 50\n",
    );
    let text = std::fs::read_to_string(&config.path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if [
            "authority_url",
            "graph_url",
            "xdr_url",
            "mde_url",
            "siem_url",
        ]
        .iter()
        .any(|k| line.starts_with(k))
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line == "[cloud]" {
            out.push_str(&format!(
                "region = \"eu\"\nconnect_to = \"{}\"\n",
                emu.addr()
            ));
        }
    }
    std::fs::write(&config.path, out).unwrap();
    let config = tu::set_streams(
        &Config::load(&config.path).unwrap(),
        &[
            r#"["incidents", "alerts"]"#,
            r#"["incidents", "alerts", "detections"]"#,
            r#"["alerts"]"#,
        ],
    );
    assert_eq!(
        config.tenants[1].endpoints.xdr.as_str(),
        "https://eu.api.security.microsoft.com/"
    );
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let pipeline = Pipeline::new(config.clone(), store.clone()).unwrap();
    let polls = run(&emu, &pipeline, 2, chrono::Duration::minutes(10)).await;
    let n = check_all(&emu, &*store, &config, &polls, 0);
    assert!(n > 50, "{n}");
    let hosts: BTreeSet<String> = emu.state().hosts_seen().into_keys().collect();
    let want: BTreeSet<String> = [
        "login.microsoftonline.com",
        "graph.microsoft.com",
        "eu.api.security.microsoft.com",
        "api-eu.securitycenter.microsoft.com",
        "wdatp-alertexporter-eu.windows.com",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(hosts, want);
}
