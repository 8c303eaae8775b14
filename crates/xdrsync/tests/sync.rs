//! The sync commands end to end: `status`, `reconcile`, `backfill`, the `run` daemon's drain on
//! SIGTERM, and a crash test that SIGKILLs `xdrsync pull` at random points.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::collections::BTreeSet;
use xdrsync_store::Store as _;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use xdrsync_emulator::faults::{Fault, FaultRule};
use xdrsync_model::{ApiKind, StreamKind};
use xdrsync_store::SqliteStore;
use xdrsync_test_utils as tu;

mod common;
use common::{Daemon, command, text, xdrsync};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reconcile_and_backfill() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = tu::write_config(dir, &emu, &[ApiKind::Graph, ApiKind::Xdr], "");

    let status = xdrsync(&["status"], dir).await;
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(
        text(&status).contains("not pulled yet"),
        "{}",
        text(&status)
    );

    let pull = xdrsync(&["pull", "--ndjson", "out.ndjson"], dir).await;
    assert_eq!(pull.status.code(), Some(0), "{}", text(&pull));
    // Not a terminal: one plain progress line per tenant.
    assert_eq!(
        String::from_utf8_lossy(&pull.stderr)
            .matches("pulled ")
            .count(),
        3,
        "{}",
        text(&pull)
    );

    // `auth status` shows each tenant's last successful pull.
    let auth = xdrsync(&["auth", "status"], dir).await;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(text(&auth).matches(&today).count() >= 3, "{}", text(&auth));

    let status = xdrsync(&["status"], dir).await;
    let out = text(&status);
    assert_eq!(status.status.code(), Some(0), "{out}");
    for t in &config.tenants {
        assert!(out.contains(&t.name), "{out}");
    }
    assert!(
        out.contains("LAST SUCCESS") && out.contains("LAG") && out.contains("ndjson"),
        "{out}"
    );
    assert_eq!(out.matches(" ok").count(), 3, "{out}");

    let same = xdrsync(&["reconcile", "--since", "47h"], dir).await;
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    assert_eq!(text(&same).matches("  ok").count(), 3, "{}", text(&same));

    // The store covers 48 h: a week is not "ok", the unchecked part is named, exit 1.
    let wider = xdrsync(&["reconcile", "--since", "7d"], dir).await;
    let out = text(&wider);
    assert_eq!(wider.status.code(), Some(1), "{out}");
    assert_eq!(out.matches("NOT CHECKED").count(), 3, "{out}");
    assert!(out.contains("PARTIAL") && !out.contains("  ok"), "{out}");
    let json = xdrsync(&["reconcile", "--since", "7d", "--output", "json"], dir).await;
    let doc: Value = serde_json::from_slice(&json.stdout).expect("reconcile JSON");
    assert_eq!(doc["ok"], false);
    assert!(
        doc["streams"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "partial" && s["not_checked"]["to"].is_string()),
        "{doc:#}"
    );

    // Lose the newest version of one incident behind xdrsync's back: reconcile finds it.
    let victim: (String, String) = {
        let db = rusqlite::Connection::open(&config.store_path).unwrap();
        let row = db
            .query_row(
                "SELECT tenant_id, item_id, MAX(last_update) FROM versions WHERE stream = 'incidents' GROUP BY tenant_id, item_id ORDER BY 3 DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
            )
            .unwrap();
        db.execute(
            "DELETE FROM versions WHERE stream = 'incidents' AND tenant_id = ?1 AND item_id = ?2 AND last_update = ?3",
            [&row.0, &row.1, &row.2],
        )
        .unwrap();
        (row.0, row.1)
    };
    let differs = xdrsync(&["reconcile", "--since", "47h"], dir).await;
    let out = text(&differs);
    assert_eq!(differs.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("MISSING incident {}", victim.1)),
        "{out}"
    );

    // Backfill re-reads the window and restores it; nothing else is stored twice.
    let before = SqliteStore::open(&config.store_path)
        .unwrap()
        .last_seq()
        .unwrap();
    let backfill = xdrsync(&["backfill", "--since", "30d"], dir).await;
    assert_eq!(backfill.status.code(), Some(0), "{}", text(&backfill));
    let store = SqliteStore::open(&config.store_path).unwrap();
    let restored = store.versions_after(before, 1000).unwrap();
    assert!(
        restored.iter().any(|v| v.stream == StreamKind::Incidents
            && v.record.item_id() == victim.1
            && v.record.tenant().as_str() == victim.0),
        "{restored:?}"
    );
    let again = xdrsync(&["reconcile", "--since", "7d"], dir).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));

    // A tenant whose consent is revoked is degraded, with the reason; the others are fine.
    let revoked = config.tenants[1].tenant_id.to_string();
    emu.state().update_directory(|d| {
        d.apps[0].consents.remove(&revoked);
    });
    let pull = xdrsync(&["pull"], dir).await;
    assert_eq!(pull.status.code(), Some(1), "{}", text(&pull));
    let status = xdrsync(&["status"], dir).await;
    let out = text(&status);
    assert_eq!(status.status.code(), Some(1), "{out}");
    assert!(
        out.contains("DEGRADED (1 failure in a row)") && out.contains("AADSTS700016"),
        "{out}"
    );
    assert_eq!(out.matches(" ok").count(), 2, "{out}");
    // `auth status` names the tenant's last token failure, with its AADSTS code.
    let auth = xdrsync(&["auth", "status", "--output", "json"], dir).await;
    assert_eq!(auth.status.code(), Some(1), "{}", text(&auth));
    let doc: Value = serde_json::from_slice(&auth.stdout).unwrap();
    let revoked_row = doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant_id"] == revoked.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        revoked_row["last_token_failure"]["aadsts"], "700016",
        "{doc:#}"
    );
    let table = xdrsync(
        &["auth", "status", "--tenant", &config.tenants[1].name],
        dir,
    )
    .await;
    assert!(
        text(&table).contains("token refused at") && text(&table).contains("AADSTS700016"),
        "{}",
        text(&table)
    );

    let bad = xdrsync(&["backfill", "--since", "soon"], dir).await;
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("--since"), "{}", text(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_daemon_drains_on_sigterm() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    tu::write_config(&dir, &emu, &[ApiKind::Graph], "");
    let d = dir.clone();
    // Two passes done (the daemon says so on stderr), then SIGTERM between passes.
    let (code, err) = tokio::task::spawn_blocking(move || {
        let mut daemon = Daemon::start(&d, &["--interval", "1", "--ndjson", "out.ndjson"]);
        daemon.wait_for("pass 2:");
        daemon.stop()
    })
    .await
    .unwrap();
    let ndjson = dir.join("out.ndjson");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("pass 1:") && err.contains("stopped after"),
        "{err}"
    );
    // Every line a distinct event (ndjson_ids fails on a repeat).
    assert!(ndjson_ids(&ndjson) > 0);
}

/// A `run` daemon (`--interval 60 --drain-timeout <drain> --ndjson out.ndjson`) whose first
/// incident page the emulator holds; returns once that request is held (the pass is in flight).
async fn daemon_with_a_held_page(
    drain: &'static str,
) -> (
    xdrsync_emulator::Emulator,
    tempfile::TempDir,
    std::path::PathBuf,
    Daemon,
) {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    tu::write_config(&dir, &emu, &[ApiKind::Graph], "");
    emu.state().add_fault(FaultRule {
        route: "GET /v1.0/security/incidents".into(),
        sequence: vec![Fault::Hold],
        fault: None,
        probability: None,
    });
    let d = dir.clone();
    let daemon = tokio::task::spawn_blocking(move || {
        Daemon::start(
            &d,
            &[
                "--interval",
                "60",
                "--drain-timeout",
                drain,
                "--ndjson",
                "out.ndjson",
            ],
        )
    })
    .await
    .unwrap();
    held(&emu, 1).await;
    (emu, tmp, dir, daemon)
}

/// Waits until the emulator holds `n` requests (a `hold` fault): the pass is in flight.
async fn held(emu: &xdrsync_emulator::Emulator, n: u64) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while emu.state().stats().requests_held < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a request reaches the emulator");
}

/// SIGTERM while a pass is in flight (a page request held by the emulator): the daemon lets
/// the pass finish once the page comes, delivers it, and exits 0 with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_sigterm_mid_pass_lets_the_pass_in_flight_finish() {
    let (emu, _tmp, dir, mut daemon) = daemon_with_a_held_page("60").await;
    daemon.signal("-TERM");
    let daemon = tokio::task::spawn_blocking(move || {
        daemon.wait_for("letting the pass in flight finish");
        daemon
    })
    .await
    .unwrap();
    emu.state().release_held();
    let (code, err) = tokio::task::spawn_blocking(move || daemon.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("pass 1:")
            && err.contains("stopped after 1 pass")
            && !err.contains("did not finish"),
        "{err}"
    );
    // Everything the pass stored was delivered, once.
    let store = SqliteStore::open(&dir.join("xdrsync.db")).unwrap();
    let stored = store.count_after(0).unwrap();
    assert!(stored > 0);
    assert_eq!(ndjson_ids(&dir.join("out.ndjson")), stored, "{err}");
}

/// SIGTERM while a pass hangs past `--drain-timeout`: the daemon stops anyway within the
/// bound, says what it did, delivers what was stored, and the next run completes the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_sigterm_stops_within_the_drain_timeout_when_the_pass_hangs() {
    let (emu, _tmp, dir, daemon) = daemon_with_a_held_page("1").await;
    let signalled = std::time::Instant::now();
    let (code, err) = tokio::task::spawn_blocking(move || daemon.stop())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("did not finish in 1s; stopping anyway"),
        "{err}"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "bounded by the drain timeout: {:?}",
        signalled.elapsed()
    );
    // The held request never answered; the next pull reads everything.
    emu.state().release_held();
    let pull = xdrsync(&["pull", "--ndjson", "out.ndjson"], &dir).await;
    assert_eq!(pull.status.code(), Some(0), "{}", text(&pull));
    let store = SqliteStore::open(&dir.join("xdrsync.db")).unwrap();
    let stored = store.count_after(0).unwrap();
    assert!(stored > 0);
    assert_eq!(ndjson_ids(&dir.join("out.ndjson")), stored, "{err}");
}

/// How many distinct event ids an NDJSON file holds; a repeated one fails the test.
fn ndjson_ids(path: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let ids: BTreeSet<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        ids.len(),
        text.lines().count(),
        "a repeated event in {}",
        path.display()
    );
    ids.len() as u64
}

/// One completed pull: the emulator clock when it started and ended.
use tu::truth::Poll;

/// Kills `xdrsync pull` with SIGKILL at random points (listing, committing, delivering) at
/// least 20 times while the tenants change, letting every fourth pull finish. Afterwards the
/// store holds every version a finished pull could see, nothing the emulator never had, nothing
/// twice; the NDJSON file (`xdrsync` format, `--ndjson`) and an OCSF file sink hold each stored
/// version exactly once, PostgreSQL holds each exactly once (upsert by event id), and Splunk
/// (indexer acknowledgement on) has each at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    let emu = tu::start_with(tu::demo_directory(), |b| {
        b.tie_probability = 0.3;
        b.merge_probability = 0.2;
    })
    .await;
    for route in ["GET /v1.0/security/incidents", "GET /api/incidents"] {
        emu.state().add_fault(FaultRule {
            route: route.into(),
            sequence: vec![],
            fault: Some(Fault::Latency { ms: 15 }),
            probability: None,
        });
        emu.state().add_fault(FaultRule {
            route: route.into(),
            sequence: vec![],
            fault: Some(Fault::Status {
                status: 503,
                retry_after_secs: None,
            }),
            probability: Some(0.05),
        });
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    // The receivers live in this process: they outlive every killed pull.
    let hec = tu::receivers::hec::Hec::start(tu::receivers::hec::HecOptions {
        ack: true,
        ack_delay: Duration::from_millis(30),
        ..Default::default()
    });
    std::fs::write(dir.join("hec.token"), hec.token()).unwrap();
    let pg = &tu::receivers::postgres::address();
    let pg_schema = tu::receivers::postgres::fresh_schema("xdrsync_crash");
    std::fs::write(dir.join("pg.url"), tu::receivers::postgres::url(pg)).unwrap();
    let sinks = format!(
        "[[sinks]]\nname = \"ocsf-file\"\nformat = \"ocsf\"\n[sinks.file]\npath = \"ocsf.ndjson\"\n\
         [[sinks]]\nname = \"splunk\"\nretry_base_ms = 20\n[sinks.splunk_hec]\nurl = \"{}\"\ntoken = {{ file = \"hec.token\" }}\nack = true\nack_poll_ms = 20\n\
         [[sinks]]\nname = \"warehouse\"\n[sinks.postgres]\nurl = {{ file = \"pg.url\" }}\nschema = \"{pg_schema}\"\n",
        hec.url()
    );
    let config = tu::write_config(
        &dir,
        &emu,
        &[ApiKind::Graph, ApiKind::Xdr],
        &format!(
            "[sync]\ninitial_lookback_hours = 720\ngraph_page_size = 10\nxdr_page_size = 10\nalert_page_size = 200\n{sinks}"
        ),
    );
    // Alerts (alerts_v2, MDE) and SIEM detections move through the same outbox.
    let config = tu::set_streams(
        &config,
        &[
            r#"["incidents", "alerts"]"#,
            r#"["incidents", "alerts", "detections"]"#,
        ],
    );
    let mut rng = 0x5EED_u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut polls: Vec<Poll> = Vec::new();
    // Every fourth pull runs to completion, the others are SIGKILLed at a random moment; a
    // kill counts only when it really interrupted a running pull (killed by the signal). At
    // most 64 rounds for the 24 kills asked: pulls too quick to be interrupted fail the test
    // instead of passing it untested.
    const KILLS: usize = 24;
    let mut kills = 0;
    for i in 1..=64 {
        if kills == KILLS {
            break;
        }
        emu.state().clock().advance(chrono::Duration::minutes(4));
        let start = emu.state().clock().now();
        let mut child = command(&["pull", "--ndjson", "out.ndjson"], &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if i % 4 == 0 {
            let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
                .await
                .unwrap();
            assert!(status.success(), "pull {i} failed");
            polls.push((start, emu.state().clock().now()));
            continue;
        }
        // The first pull reads ~7 days of history (seconds); later ones are short.
        let upto = if polls.is_empty() { 3000 } else { 400 };
        tokio::time::sleep(Duration::from_millis(next(upto))).await;
        child.kill().unwrap(); // SIGKILL
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        {
            use std::os::unix::process::ExitStatusExt as _;
            if status.signal() == Some(9) {
                kills += 1;
            } else {
                assert!(
                    status.success(),
                    "pull {i} ended with {status} before the kill"
                );
            }
        }
    }
    // One last pull to completion.
    let start = emu.state().clock().now();
    let last = xdrsync(&["pull", "--ndjson", "out.ndjson"], &dir).await;
    assert!(last.status.success(), "{}", text(&last));
    polls.push((start, emu.state().clock().now()));

    let store = SqliteStore::open(&config.store_path).unwrap();
    let mut stored_events = BTreeSet::new();
    for v in store.versions_after(0, 10_000_000).unwrap() {
        assert!(stored_events.insert(v.event_id.clone()));
    }
    // Every stream of every tenant against the ground truth (alerts and SIEM detections are
    // visible from the incident version that first carried them).
    for t in &config.tenants {
        let tenant = t.tenant_id.as_str();
        let (alerts, detections) = tu::truth::alerts(&emu, tenant, t.api == ApiKind::Xdr);
        for stream in &t.streams {
            let truth = match stream {
                StreamKind::Incidents => tu::truth::incidents(&emu, tenant),
                StreamKind::Alerts => alerts.clone(),
                StreamKind::Detections => detections.clone(),
                StreamKind::Hunts => panic!("a tenant cannot pull hunts"),
            };
            let surely = tu::truth::check(&store, tenant, *stream, (&truth, &truth), &polls, 0);
            let least = if *stream == StreamKind::Incidents {
                200
            } else {
                50
            };
            assert!(
                surely > least,
                "{tenant} {stream}: only {surely} versions checked"
            );
        }
    }
    // The file: whole lines only, each stored version exactly once.
    let text = std::fs::read_to_string(dir.join("out.ndjson")).unwrap();
    assert!(text.ends_with('\n'));
    let mut in_file = BTreeSet::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(
            in_file.insert(v["event_id"].as_str().unwrap().to_owned()),
            "event delivered twice: {line}"
        );
    }
    assert_eq!(in_file, stored_events);
    assert_eq!(kills, KILLS, "pulls ended before they could be killed");

    // The OCSF file: no `seq` to recover from, exactly once all the same.
    let mut in_ocsf = BTreeSet::new();
    for line in std::fs::read_to_string(dir.join("ocsf.ndjson"))
        .unwrap()
        .lines()
    {
        let v: Value = serde_json::from_str(line).unwrap();
        let id = v["metadata"]["uid"].as_str().unwrap().to_owned();
        assert!(in_ocsf.insert(id), "OCSF event delivered twice: {line}");
    }
    assert_eq!(in_ocsf, stored_events);
    // Splunk: everything, at least once (a pull killed between the ack and the position
    // update sends that chunk again; HEC cannot drop repeats).
    let in_splunk: Vec<String> = hec
        .events()
        .iter()
        .map(|e| e["fields"]["event_id"].as_str().unwrap().to_owned())
        .collect();
    let splunk_set: BTreeSet<String> = in_splunk.iter().cloned().collect();
    assert_eq!(splunk_set, stored_events);
    eprintln!(
        "splunk: {} events for {} versions ({} repeats after kills)",
        in_splunk.len(),
        stored_events.len(),
        in_splunk.len() - stored_events.len()
    );
    // PostgreSQL: each exactly once.
    let in_pg = tu::receivers::postgres::event_ids(&pg_schema).await;
    let pg_set: BTreeSet<String> = in_pg.iter().cloned().collect();
    assert_eq!(pg_set, stored_events, "the rows are the store's versions");
    assert_eq!(in_pg.len(), stored_events.len());
    // Every row names its customer as configured.
    let rows = tu::receivers::postgres::client()
        .await
        .query(
            &format!("SELECT DISTINCT tenant_id, tenant_name FROM {pg_schema}.xdrsync_incidents"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), config.tenants.len());
    for row in rows {
        let (id, name): (String, Option<String>) = (row.get(0), row.get(1));
        let t = config
            .tenants
            .iter()
            .find(|t| t.tenant_id.as_str() == id)
            .unwrap();
        assert_eq!(name.as_deref(), Some(t.name.as_str()), "{id}");
    }
    tu::receivers::postgres::drop_schema(&pg_schema).await;
}
