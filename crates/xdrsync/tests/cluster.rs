//! The PostgreSQL store end to end (issue 18): the built binary with `[store] url` against the
//! emulator and the machine's PostgreSQL, each test in a schema of its own.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::collections::BTreeSet;

use xdrsync_model::{ApiKind, StreamKind};
use xdrsync_store::Store as _;
use xdrsync_store::postgres::PgStore;
use xdrsync_test_utils as tu;
use xdrsync_test_utils::receivers::postgres as pg;

mod common;
use common::{command, scratch, text, use_postgres, xdrsync};

fn ndjson_event_ids(path: &std::path::Path) -> Vec<String> {
    fs_err::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["event_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_into_postgres_stores_the_truth_and_delivers_each_version_once() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Back far enough to hold the emulator's whole history: every version is due.
    tu::write_config(
        dir,
        &emu,
        &[ApiKind::Graph, ApiKind::Xdr],
        "[sync]\ninitial_lookback_hours = 720\n",
    );
    let (schema, url) = scratch().await;
    let config = use_postgres(dir, &url);

    let migrate = xdrsync(&["store", "migrate"], dir).await;
    assert_eq!(migrate.status.code(), Some(0), "{}", text(&migrate));
    assert!(
        text(&migrate).contains("schema version 4, up to date"),
        "{}",
        text(&migrate)
    );
    assert!(!dir.join("xdrsync.db").exists(), "no SQLite store made");

    let start = emu.state().clock().now();
    let pull = xdrsync(&["pull", "--ndjson", "out.ndjson"], dir).await;
    assert_eq!(pull.status.code(), Some(0), "{}", text(&pull));
    let polls = vec![(start, emu.state().clock().now())];

    let store = PgStore::connect(&url).unwrap();
    let mut checked = 0;
    for t in &config.tenants {
        let tenant = t.tenant_id.as_str();
        let truth = tu::truth::incidents(&emu, tenant);
        checked += tu::truth::check(
            &store,
            tenant,
            StreamKind::Incidents,
            (&truth, &truth),
            &polls,
            0,
        );
    }
    assert!(checked > 200, "only {checked} versions checked");

    // Every stored version delivered once, under its stored event id.
    let stored: Vec<String> = store
        .versions_after(0, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|v| v.event_id)
        .collect();
    let delivered = ndjson_event_ids(&dir.join("out.ndjson"));
    assert_eq!(delivered.len(), stored.len());
    assert_eq!(
        delivered.iter().collect::<BTreeSet<_>>(),
        stored.iter().collect::<BTreeSet<_>>()
    );

    // Again: nothing new stored, nothing delivered twice.
    let again = xdrsync(&["pull", "--ndjson", "out.ndjson"], dir).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let delivered = ndjson_event_ids(&dir.join("out.ndjson"));
    let unique: BTreeSet<&String> = delivered.iter().collect();
    assert_eq!(unique.len(), delivered.len(), "a version delivered twice");
    assert_eq!(store.version_count().unwrap(), delivered.len() as u64);

    // `status` reads the same store and names it.
    let status = xdrsync(&["status"], dir).await;
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(
        text(&status).contains("127.0.0.1:5432/test"),
        "{}",
        text(&status)
    );
    pg::drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_store_is_a_clear_error_and_exit_1() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    tu::write_config(dir, &emu, &[ApiKind::Graph], "");
    // Nothing listens on port 1.
    use_postgres(
        dir,
        "postgres://xdrsync:hunter2@127.0.0.1:1/test?connect_timeout=3",
    );
    // A worker too: `run` does not start without its store.
    for args in [
        &["pull"][..],
        &["store", "migrate"],
        &["status"],
        &["run", "--passes", "1"],
    ] {
        let out = xdrsync(args, dir).await;
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(
            said.contains("127.0.0.1:1"),
            "{args:?} names the server: {said}"
        );
        assert!(!said.contains("hunter2"), "{args:?}: {said}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_path_and_url_together_are_refused() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    tu::write_config(dir, &emu, &[ApiKind::Graph], "");
    let path = dir.join("xdrsync.toml");
    let text_before = fs_err::read_to_string(&path).unwrap();
    fs_err::write(
        &path,
        text_before.replacen(
            "[store]\npath = \"xdrsync.db\"\n",
            "[store]\npath = \"other.db\"\nurl = { env = \"XDRSYNC_STORE_URL\" }\n",
            1,
        ),
    )
    .unwrap();
    let out = xdrsync(&["check-config"], dir).await;
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("store.url"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_a_single_machine_to_postgres_and_every_sink_resumes() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sqlite_config = tu::write_config(
        dir,
        &emu,
        &[ApiKind::Graph, ApiKind::Xdr],
        "[sync]\ninitial_lookback_hours = 720\n",
    );
    let pull = xdrsync(&["pull", "--ndjson", "out.ndjson"], dir).await;
    assert_eq!(pull.status.code(), Some(0), "{}", text(&pull));
    let delivered = ndjson_event_ids(&dir.join("out.ndjson"));
    assert!(delivered.len() > 200, "{}", delivered.len());

    let (schema, url) = scratch().await;
    // The target's address from the environment, off the command line.
    let copy = |dir: std::path::PathBuf, url: String| async move {
        let mut c = command(
            &[
                "store",
                "copy",
                "--from",
                "sqlite:xdrsync.db",
                "--to-env",
                "TARGET",
            ],
            &dir,
        );
        c.env("TARGET", url);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    };
    let out = copy(dir.to_owned(), url.clone()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("Copied {} versions", delivered.len())),
        "{}",
        text(&out)
    );

    // The same versions, seqs, event ids and sink positions.
    let sqlite = xdrsync_store::SqliteStore::open(&sqlite_config.store_path).unwrap();
    let postgres = PgStore::connect(&url).unwrap();
    let keys = |s: &dyn xdrsync_store::Store| -> Vec<(i64, String)> {
        s.versions_after(0, 1_000_000)
            .unwrap()
            .into_iter()
            .map(|v| (v.seq, v.event_id))
            .collect()
    };
    assert_eq!(keys(&postgres), keys(&sqlite));
    assert_eq!(postgres.sink_positions().unwrap().len(), 1);
    assert_eq!(
        postgres.sink_positions().unwrap()[0].1,
        sqlite.sink_positions().unwrap()[0].1
    );
    for t in &sqlite_config.tenants {
        assert_eq!(
            postgres
                .cursor(&t.tenant_id, StreamKind::Incidents)
                .unwrap(),
            sqlite.cursor(&t.tenant_id, StreamKind::Incidents).unwrap()
        );
    }

    // The install moves to PostgreSQL: the next pull delivers nothing again.
    use_postgres(dir, &url);
    let again = xdrsync(&["pull", "--ndjson", "out.ndjson"], dir).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let after = ndjson_event_ids(&dir.join("out.ndjson"));
    let unique: BTreeSet<&String> = after.iter().collect();
    assert_eq!(
        unique.len(),
        after.len(),
        "an event delivered twice after the move"
    );
    assert!(after.len() >= delivered.len());

    // A second copy into the filled store is refused.
    let out = copy(dir.to_owned(), url.clone()).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
    pg::drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_speaks_tls_by_the_urls_sslmode_and_checks_the_servers_name() {
    let (schema, _) = scratch().await;
    let app = format!("xdrsync_store_tls_{}", &schema[schema.len() - 8..]);
    let url = |host: &str, mode: &str| {
        format!(
            "postgres://postgres@{host}/test?hostaddr=127.0.0.1&sslmode={mode}&application_name={app}&options=-csearch_path%3D{schema}"
        )
    };
    let ca = pg::tls_ca();
    // verify-full to the name the certificate holds: a TLS session.
    let (config, tls) = xdrsync_sinks::postgres::connection(
        &url("localhost", "verify-full"),
        None,
        Some(&ca),
        None,
    )
    .unwrap();
    assert!(tls.is_some());
    let store = tokio::task::spawn_blocking(move || {
        PgStore::connect_with(config, tls, "postgres://localhost/test").unwrap()
    })
    .await
    .unwrap();
    let (encrypted, sessions) = pg::sessions_encrypted(&app).await;
    assert!(sessions >= 1 && encrypted, "the store's sessions are TLS");
    let version = tokio::task::spawn_blocking(move || store.schema_version().unwrap())
        .await
        .unwrap();
    assert!(version >= 2);
    // The certificate names localhost only: the address as the name is refused.
    let (config, tls) = xdrsync_sinks::postgres::connection(
        &url("127.0.0.1", "verify-full"),
        None,
        Some(&ca),
        None,
    )
    .unwrap();
    let e = tokio::task::spawn_blocking(move || {
        PgStore::connect_with(config, tls, "postgres://127.0.0.1/test")
            .unwrap_err()
            .to_string()
    })
    .await
    .unwrap();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // A remote server in plaintext is refused before anything is sent.
    let Err(e) = xdrsync_sinks::postgres::connection(
        "postgres://xdrsync:hunter2@db.example.invalid/soc?sslmode=disable",
        None,
        None,
        None,
    ) else {
        panic!("plaintext to a remote server was accepted")
    };
    assert!(e.contains("in clear") && !e.contains("hunter2"), "{e}");
    pg::drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_mid_pull_loses_and_repeats_nothing() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Small pages: many commits, so the server goes away in the middle of the pass.
    let config = tu::write_config(
        dir,
        &emu,
        &[ApiKind::Graph, ApiKind::Xdr],
        "[sync]\ninitial_lookback_hours = 720\ngraph_page_size = 5\nxdr_page_size = 5\n",
    );
    let (schema, _) = scratch().await;
    // The store reaches PostgreSQL through a proxy that can play a server restart.
    let proxy = xdrsync_test_utils::receivers::proxy::Proxy::start(&pg::address());
    let url = format!(
        "{}?options=-csearch_path%3D{schema}",
        pg::url(&proxy.addr.to_string())
    );
    use_postgres(dir, &url);
    let migrate = xdrsync(&["store", "migrate"], dir).await;
    assert_eq!(migrate.status.code(), Some(0), "{}", text(&migrate));

    let start = emu.state().clock().now();
    let child = command(&["pull", "--ndjson", "out.ndjson"], dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    proxy.down();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    proxy.up();
    let pid = child.id();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(20));
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status();
    });
    let first = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let end = emu.state().clock().now();
    // It either rode through or failed the tenants it could not store, saying so — and it
    // ended: a failed commit once left the listing waiting on a full channel for ever.
    if first.status.code() != Some(0) {
        assert_eq!(first.status.code(), Some(1), "{}", text(&first));
        assert!(text(&first).contains("connection"), "{}", text(&first));
    }
    let second = xdrsync(&["pull", "--ndjson", "out.ndjson"], dir).await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let polls = vec![(start, end), (end, emu.state().clock().now())];

    let store = PgStore::connect(&url).unwrap();
    for t in &config.tenants {
        let tenant = t.tenant_id.as_str();
        let truth = tu::truth::incidents(&emu, tenant);
        tu::truth::check(
            &store,
            tenant,
            StreamKind::Incidents,
            (&truth, &truth),
            &polls,
            0,
        );
    }
    let stored: BTreeSet<String> = store
        .versions_after(0, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|v| v.event_id)
        .collect();
    let delivered = ndjson_event_ids(&dir.join("out.ndjson"));
    let unique: BTreeSet<String> = delivered.iter().cloned().collect();
    assert_eq!(unique.len(), delivered.len(), "an event delivered twice");
    assert_eq!(unique, stored, "every stored version delivered");
    drop(proxy);
    pg::drop_schema(&schema).await;
}

/// Processes on one PostgreSQL store share one quota through the store's ledger (not a file
/// of each machine): a `backfill` and a `pull` of the same tenant at once, against the
/// emulator's enforced quotas (time scaled 60×), get no 429 at all; the calls they counted
/// are in the store, where whichever worker holds the tenant next reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_on_a_postgres_store_pace_inside_one_quota() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let emu = common::quota_scenario(&dir).await;
    let (schema, url) = scratch().await;
    use_postgres(&dir, &url);
    common::backfill_beside_pull_without_a_429(&dir, &emu).await;
    assert!(
        !dir.join("xdrsync.db-budget").exists(),
        "no ledger file beside a PostgreSQL store"
    );
    let counted: i64 = pg::client()
        .await
        .query_one(
            &format!("SELECT COUNT(DISTINCT process) FROM {schema}.budget_calls"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        counted, 2,
        "both processes counted their calls in the store"
    );
    pg::drop_schema(&schema).await;
}
