//! The sync engine against the emulator's realism switches and faults: after each scenario the
//! store holds exactly the incident versions the emulator's ground truth says were observable,
//! version for version, and none twice.
//!
//! "Observable": a poll can only see an incident's version that was current (after ingestion
//! lag) while the poll ran. A version replaced before any poll saw it cannot be read from any
//! Microsoft API, so the check is: every version that was current for a whole poll is stored
//! (nothing lost), and every stored version is in the ground truth (nothing invented), once
//! (the store's identity is unique; the test counts rows against distinct keys).

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::run;
use xdrsync_emulator::faults::{Fault, FaultRule};
use xdrsync_emulator::{Behaviour, Emulator};
use xdrsync_model::{ApiKind, ChangeKind, StreamKind, Timestamp};
use xdrsync_pipeline::Pipeline;
use xdrsync_store::{SqliteStore, Store};
use xdrsync_test_utils as tu;

use tu::truth::Poll;

/// Compares the store's incidents with the ground truth of `tenant` for the polls made;
/// returns how many versions were surely observable.
fn check(store: &dyn Store, emu: &Emulator, tenant: &str, polls: &[Poll], lag_secs: i64) -> usize {
    let truth = tu::truth::incidents(emu, tenant);
    tu::truth::check(
        store,
        tenant,
        StreamKind::Incidents,
        (&truth, &truth),
        polls,
        lag_secs,
    )
}

fn sync_extra(pages: (u32, u32)) -> String {
    format!(
        "[sync]\ninitial_lookback_hours = 720\ngraph_page_size = {}\nxdr_page_size = {}\n",
        pages.0, pages.1
    )
}

/// Ties, merges and ingestion lag, through both APIs, with small pages so tie groups straddle
/// page boundaries.
#[tokio::test]
async fn ties_merges_lag_and_updates_match_the_ground_truth() {
    let emu = tu::start_with(tu::demo_directory(), |b: &mut Behaviour| {
        b.tie_probability = 0.35;
        b.merge_probability = 0.25;
        b.ingestion_lag_secs = 240;
        b.ingestion_lag_varies = true;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = tu::write_config(
        dir.path(),
        &emu,
        &[ApiKind::Graph, ApiKind::Xdr],
        &sync_extra((4, 5)),
    );
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let pipeline = Pipeline::new(config.clone(), store.clone()).unwrap();
    let polls = run(&emu, &pipeline, 40, chrono::Duration::minutes(11)).await;
    let mut kinds = BTreeMap::new();
    for v in store.versions_after(0, 1_000_000).unwrap() {
        *kinds.entry(v.change).or_insert(0) += 1;
        if v.change == ChangeKind::Redirected {
            let to = v
                .changes
                .redirected_to
                .as_ref()
                .expect("a redirect names its target");
            assert_eq!(
                v.record.incident().unwrap().redirect_incident_id.as_ref(),
                Some(to)
            );
        }
        if v.change == ChangeKind::AlertAdded {
            assert!(!v.changes.alerts_added.is_empty());
        }
    }
    for t in &config.tenants {
        let o = check(&*store, &emu, t.tenant_id.as_str(), &polls, 240);
        assert!(o > 100, "{}: {} versions", t.name, o);
    }
    for k in [
        ChangeKind::Created,
        ChangeKind::Updated,
        ChangeKind::AlertAdded,
        ChangeKind::Redirected,
    ] {
        assert!(
            kinds.get(&k).copied().unwrap_or(0) > 0,
            "no {k} events: {kinds:?}"
        );
    }
}

/// Mixed 429/5xx/resets/truncated bodies, 401s and real token expiry (the emulator clock jumps
/// past the token lifetime between and during pulls): nothing lost, nothing doubled.
#[tokio::test]
async fn fault_storms_and_token_expiry_lose_nothing() {
    let emu = tu::start_with(tu::demo_directory(), |b: &mut Behaviour| {
        b.tie_probability = 0.2;
        b.merge_probability = 0.1;
    })
    .await;
    tu::truth::fault_storm(
        &emu,
        &["GET /v1.0/security/incidents", "GET /api/incidents"],
    );
    emu.state().add_fault(FaultRule {
        route: "POST /*/oauth2/*".into(),
        sequence: vec![],
        fault: Some(Fault::Status {
            status: 503,
            retry_after_secs: None,
        }),
        probability: Some(0.1),
    });
    let dir = tempfile::tempdir().unwrap();
    let config = tu::write_config(
        dir.path(),
        &emu,
        &[ApiKind::Graph, ApiKind::Xdr],
        &sync_extra((5, 7)),
    );
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let pipeline = Pipeline::new(config.clone(), store.clone()).unwrap();
    // Steps of 70 minutes: every pull starts with a token the emulator considers expired.
    let polls = run(&emu, &pipeline, 12, chrono::Duration::minutes(70)).await;
    for t in &config.tenants {
        check(&*store, &emu, t.tenant_id.as_str(), &polls, 0);
    }
    let stats = emu.state().stats();
    assert!(stats.faults_injected > 20, "{stats:?}");
    assert!(stats.tokens_issued >= 12, "{stats:?}");
}

/// A tenant moved from the legacy API to Graph mid-stream (they retire on 2027-02-01): one
/// identity, no duplicate, no gap.
#[tokio::test]
async fn switching_a_tenant_from_legacy_to_graph_has_no_duplicate_or_gap() {
    let emu = tu::start(tu::demo_directory()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = tu::write_config(dir.path(), &emu, &[ApiKind::Xdr], &sync_extra((20, 30)));
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let mut polls = run(
        &emu,
        &Pipeline::new(config.clone(), store.clone()).unwrap(),
        5,
        chrono::Duration::minutes(30),
    )
    .await;
    let before = store.last_seq().unwrap();
    for t in &mut config.tenants {
        t.api = ApiKind::Graph;
    }
    let graph = Pipeline::new(config.clone(), store.clone()).unwrap();
    let first = graph.pull_all().await;
    for r in &first {
        assert_eq!(
            (r.stats.created, r.stats.updated),
            (0, 0),
            "{}: the switch re-stored versions",
            r.name
        );
        assert!(r.stats.unchanged > 0, "{}", r.name);
    }
    assert_eq!(store.last_seq().unwrap(), before);
    emu.state().clock().advance(chrono::Duration::minutes(30));
    polls.extend(run(&emu, &graph, 5, chrono::Duration::minutes(30)).await);
    for t in &config.tenants {
        check(&*store, &emu, t.tenant_id.as_str(), &polls, 0);
    }
    let apis: BTreeSet<ApiKind> = store
        .versions_after(before, 1_000_000)
        .unwrap()
        .iter()
        .map(|v| v.record.incident().unwrap().api)
        .collect();
    assert_eq!(apis, BTreeSet::from([ApiKind::Graph]));
}

/// Big incidents make Graph's `$expand=alerts` fail for good (peers.md §10.2): the page is read
/// without it and each incident read on its own with its alerts (20 to a Graph `$batch`), the
/// cursor keeps moving, and every stored incident carries exactly the alerts the emulator holds.
#[tokio::test]
async fn failing_expand_falls_back_to_single_reads() {
    let (stats, batched, fallbacks) = expand_fallback_matches_the_truth(Vec::new()).await;
    let tenants = tu::demo_directory().tenants.len() as u32;
    assert!(
        stats.batches > 0,
        "the single reads were not batched: {stats:?}"
    );
    // Pages of 10: every incident of a full fallback page came from its page's batch (a
    // tenant's last page may be short).
    assert!(
        batched <= fallbacks * 10 && batched + tenants * 9 >= fallbacks * 10,
        "{batched} in batches for {fallbacks} pages: {stats:?}"
    );
}

/// The batched single reads survive what batching adds: requests throttled inside a batch
/// (each shape, `Retry-After: 0`), failed ones (503), and whole batches failing (500) are read
/// again on their own, and the store still equals the truth.
#[tokio::test]
async fn batched_single_reads_survive_throttled_requests_and_failed_batches() {
    use xdrsync_emulator::faults::ThrottleShape;
    let faults = vec![
        FaultRule {
            route: "GET /v1.0/security/incidents/*".into(),
            sequence: vec![],
            fault: Some(Fault::Throttle {
                shape: ThrottleShape::ActivityLimitReached,
                retry_after_secs: Some(0),
            }),
            probability: Some(0.15),
        },
        FaultRule {
            route: "GET /v1.0/security/incidents/*".into(),
            sequence: vec![],
            fault: Some(Fault::Status {
                status: 503,
                retry_after_secs: None,
            }),
            probability: Some(0.1),
        },
        FaultRule {
            route: "POST /v1.0/$batch".into(),
            sequence: [
                Fault::Ok,
                Fault::Status {
                    status: 500,
                    retry_after_secs: None,
                },
            ]
            .into_iter()
            .cycle()
            .take(40)
            .collect(),
            fault: None,
            probability: None,
        },
    ];
    let (stats, batched, fallbacks) = expand_fallback_matches_the_truth(faults).await;
    assert!(stats.batches > 0, "{stats:?}");
    assert!(
        batched > 0 && batched < fallbacks * 10,
        "{batched} of {fallbacks} pages"
    );
    assert!(stats.faults_injected > 20, "{stats:?}");
}

/// Pulls with `$expand=alerts` failing on big incidents and `faults` injected, checks the store
/// against the truth; the emulator's stats, and the incidents read in a batch and the fallback
/// pages of the first pull.
async fn expand_fallback_matches_the_truth(
    faults: Vec<FaultRule>,
) -> (xdrsync_emulator::Stats, u32, u32) {
    let emu = tu::start_with(tu::demo_directory(), |b: &mut Behaviour| {
        b.expand_fail_min_alerts = Some(3);
    })
    .await;
    for f in faults {
        emu.state().add_fault(f);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = tu::write_config(dir.path(), &emu, &[ApiKind::Graph], &sync_extra((10, 10)));
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let pipeline = Pipeline::new(config.clone(), store.clone()).unwrap();
    let reports = pipeline.pull_all().await;
    for r in &reports {
        assert!(r.error.is_none(), "{}: {:?}", r.name, r.error);
        assert!(
            r.expand_fallbacks > 0,
            "{}: no page needed the fallback",
            r.name
        );
    }
    let batched: u32 = reports.iter().map(|r| r.batched_reads).sum();
    let fallbacks: u32 = reports.iter().map(|r| r.expand_fallbacks).sum();
    let polls = run(&emu, &pipeline, 3, chrono::Duration::minutes(20)).await;
    let mut checked = 0;
    for t in &config.tenants {
        check(&*store, &emu, t.tenant_id.as_str(), &polls, 0);
        let current: BTreeMap<String, (Timestamp, Vec<String>)> = emu
            .state()
            .incidents(t.tenant_id.as_str(), |_| true)
            .iter()
            .map(|i| {
                (
                    i.id.to_string(),
                    (
                        i.last_update,
                        i.alerts.iter().map(|a| a.id.clone()).collect(),
                    ),
                )
            })
            .collect();
        for v in store.versions_after(0, 1_000_000).unwrap() {
            let Some(i) = v.record.incident() else {
                continue;
            };
            if i.tenant_id != t.tenant_id {
                continue;
            }
            let Some((lu, alerts)) = current.get(i.incident_id.as_str()) else {
                continue;
            };
            if *lu == i.last_update {
                let mut got: Vec<String> = i.alerts.iter().map(|a| a.id.clone()).collect();
                let mut want = alerts.clone();
                got.sort();
                want.sort();
                assert_eq!(got, want, "incident {}", i.incident_id);
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked}");
    (emu.state().stats(), batched, fallbacks)
}

/// Graph's 206 partial answer is surfaced in the tenant's report and its recorded health (what
/// `xdrsync status` shows), not ignored.
#[tokio::test]
async fn partial_answers_are_reported_and_recorded() {
    let emu = tu::start(tu::demo_directory()).await;
    emu.state().add_fault(FaultRule {
        route: "GET /v1.0/security/incidents".into(),
        sequence: vec![Fault::Partial],
        fault: None,
        probability: None,
    });
    let dir = tempfile::tempdir().unwrap();
    let config = tu::write_config(dir.path(), &emu, &[ApiKind::Graph], "");
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let reports = Pipeline::new(config, store.clone())
        .unwrap()
        .pull_all()
        .await;
    let partial: Vec<_> = reports.iter().filter(|r| !r.partial.is_empty()).collect();
    assert_eq!(partial.len(), 1, "{reports:?}");
    assert!(partial[0].error.is_none());
    let health = store.health().unwrap();
    let recorded: Vec<_> = health.iter().filter_map(|h| h.partial.as_deref()).collect();
    assert_eq!(recorded.len(), 1, "{health:?}");
    assert!(recorded[0].starts_with("199 "), "{recorded:?}");
}

/// Graph's 429s come in three bodies — `TooManyRequests`, `activityLimitReached` with a nested
/// `throttledRequest`, `UnknownError` with an empty message — with or without `Retry-After`:
/// each is waited out mid-paging and the store equals the ground truth. A `Retry-After` above
/// `retry_max_secs` (400 s has been seen) fails the stream at once with the wait and the
/// service's code named, instead of stalling every stream behind it.
#[tokio::test]
async fn every_graph_429_shape_is_waited_out_and_a_long_wait_is_named() {
    use xdrsync_emulator::faults::ThrottleShape;
    for shape in [
        ThrottleShape::TooManyRequests,
        ThrottleShape::ActivityLimitReached,
        ThrottleShape::UnknownError,
    ] {
        let emu = tu::start(tu::demo_directory()).await;
        let throttle = |retry_after_secs| Fault::Throttle {
            shape,
            retry_after_secs,
        };
        // The first page, then a throttled second page (twice), then the rest.
        emu.state().add_fault(FaultRule {
            route: "GET /v1.0/security/incidents".into(),
            sequence: vec![Fault::Ok, throttle(Some(1)), throttle(None), Fault::Ok],
            fault: None,
            probability: None,
        });
        let dir = tempfile::tempdir().unwrap();
        let config = tu::write_config(dir.path(), &emu, &[ApiKind::Graph], &sync_extra((10, 10)));
        let store: Arc<dyn xdrsync_store::Store> =
            Arc::new(SqliteStore::open(&config.store_path).unwrap());
        let pipeline = Pipeline::new(config.clone(), store.clone()).unwrap();
        let polls = run(&emu, &pipeline, 2, chrono::Duration::minutes(20)).await;
        for t in &config.tenants {
            let n = check(&*store, &emu, t.tenant_id.as_str(), &polls, 0);
            assert!(n > 10, "{shape:?} {}: {n}", t.name);
        }
        assert_eq!(emu.state().stats().faults_injected, 2, "{shape:?}");

        // A wait longer than retry_max_secs: named, not slept.
        emu.state().add_fault(FaultRule {
            route: "GET /v1.0/security/incidents".into(),
            sequence: vec![throttle(Some(400))],
            fault: None,
            probability: None,
        });
        emu.state().clock().advance(chrono::Duration::minutes(20));
        let started = std::time::Instant::now();
        let reports = pipeline.pull_all().await;
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        let errors: Vec<String> = reports.iter().filter_map(|r| r.error.clone()).collect();
        assert_eq!(errors.len(), 1, "{shape:?}: {errors:?}");
        let e = &errors[0];
        assert!(e.contains("asked to wait 400s") && e.contains("429"), "{e}");
        let code = match shape {
            ThrottleShape::TooManyRequests => "TooManyRequests",
            ThrottleShape::ActivityLimitReached => "activityLimitReached",
            ThrottleShape::UnknownError => "UnknownError",
        };
        assert!(e.contains(code), "{shape:?}: {e}");
    }
}

/// Graph refuses `$skip` above 500 (the emulator enforces it by default): a backfill of
/// thousands of incidents pages by time boundary and never asks past it, so the store equals
/// the truth. A tie group larger than 500 (which no time boundary can split) fails the stream
/// with the reason, and the cursor stays where it was: nothing is skipped.
#[tokio::test]
async fn graph_backlogs_page_past_500_by_time_and_a_giant_tie_is_named() {
    let emu = tu::start(tu::demo_directory()).await;
    assert_eq!(emu.state().behaviour().graph_max_skip, Some(500));
    let dir = tempfile::tempdir().unwrap();
    let config = tu::write_config(dir.path(), &emu, &[ApiKind::Graph], &sync_extra((50, 50)));
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let pipeline = Pipeline::new(config.clone(), store.clone()).unwrap();
    let polls = run(&emu, &pipeline, 1, chrono::Duration::minutes(10)).await;
    let mut biggest = 0;
    for t in &config.tenants {
        biggest = biggest.max(check(&*store, &emu, t.tenant_id.as_str(), &polls, 0));
    }
    assert!(
        biggest > 600,
        "the backlog is too small to need $skip past 500: {biggest}"
    );

    // A portal bulk action stamps 600 incidents with one instant.
    let busiest = config
        .tenants
        .iter()
        .max_by_key(|t| emu.state().incidents(t.tenant_id.as_str(), |_| true).len())
        .unwrap();
    let cursor = |store: &dyn Store| store.last_seq().unwrap();
    let ids = emu
        .state()
        .bulk_assign(busiest.tenant_id.as_str(), 600, "soc@contoso.com")
        .unwrap();
    assert_eq!(ids.len(), 600);
    let before = cursor(&*store);
    let reports = pipeline.pull_all().await;
    let errors: Vec<(&str, &String)> = reports
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| (r.name.as_str(), e)))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (name, e) = errors[0];
    assert_eq!(name, busiest.name);
    assert!(
        e.contains("share one lastUpdateDateTime") && e.contains("$skip above 500"),
        "{e}"
    );
    // The pages before the wall were stored (each is committed as it is read), but the
    // tenant's cursor did not pass the tie: the next pass meets it again, skipping nothing.
    assert!(cursor(&*store) - before <= 600);
    let again = pipeline.pull_all().await;
    assert!(
        again.iter().any(|r| r.name == busiest.name
            && r.error
                .as_ref()
                .is_some_and(|e| e.contains("$skip above 500"))),
        "{again:?}"
    );
    // Once 150 of them change again the tie is 450 wide: the pass completes and the store
    // equals the truth, the whole tie included.
    emu.state().clock().advance(chrono::Duration::seconds(5));
    emu.state()
        .bulk_assign(busiest.tenant_id.as_str(), 150, "tier2@contoso.com")
        .unwrap();
    emu.state().clock().advance(chrono::Duration::seconds(5));
    let polls = run(&emu, &pipeline, 1, chrono::Duration::minutes(1)).await;
    for t in &config.tenants {
        check(&*store, &emu, t.tenant_id.as_str(), &polls, 0);
    }
}

/// National clouds end to end. With every tenant in GCC, GCC High or DoD, the emulator issues
/// and accepts only that cloud's audiences (`https://graph.microsoft.us`,
/// `https://api-gov.security.microsoft.us`, …); `[cloud] name` makes the client ask for them,
/// and a pull over Graph and the legacy API stores exactly the truth. A commercial config
/// against GCC High tenants is refused by Entra with AADSTS500011 naming the resource, and
/// nothing is stored.
#[tokio::test]
async fn national_clouds_end_to_end_and_a_cloud_mismatch_is_named() {
    use xdrsync_emulator::Cloud;
    for (cloud, name) in [
        (Cloud::Gcc, "gcc"),
        (Cloud::GccHigh, "gcc-high"),
        (Cloud::Dod, "dod"),
    ] {
        let mut directory = tu::demo_directory();
        for t in &mut directory.tenants {
            t.cloud = cloud;
        }
        let emu = tu::start(directory).await;
        let dir = tempfile::tempdir().unwrap();
        let config = tu::write_config_in_cloud(
            dir.path(),
            &emu,
            &[ApiKind::Graph, ApiKind::Xdr],
            &sync_extra((50, 50)),
            name,
        );
        let store: Arc<dyn xdrsync_store::Store> =
            Arc::new(SqliteStore::open(&config.store_path).unwrap());
        let pipeline = Pipeline::new(config.clone(), store.clone()).unwrap();
        let polls = run(&emu, &pipeline, 2, chrono::Duration::minutes(10)).await;
        for t in &config.tenants {
            let n = check(&*store, &emu, t.tenant_id.as_str(), &polls, 0);
            assert!(n > 10, "{name} {}: {n}", t.name);
        }
        if cloud != Cloud::GccHigh {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = tu::write_config(dir.path(), &emu, &[ApiKind::Graph], &sync_extra((50, 50)));
        let store: Arc<dyn xdrsync_store::Store> =
            Arc::new(SqliteStore::open(&config.store_path).unwrap());
        let reports = Pipeline::new(config.clone(), store.clone())
            .unwrap()
            .pull_all()
            .await;
        for r in &reports {
            let e = r.error.as_deref().unwrap_or_default();
            assert!(
                e.contains("AADSTS500011") && e.contains("https://graph.microsoft.com"),
                "{}: {e}",
                r.name
            );
        }
        assert_eq!(store.last_seq().unwrap(), 0);
    }
}
