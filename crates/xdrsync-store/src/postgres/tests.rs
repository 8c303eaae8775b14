//! Against the machine's PostgreSQL (127.0.0.1:5432, database `test`, trust auth; `.ci/run`
//! starts it): each test works in a schema of its own, dropped at its end.

use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// The server every test uses; `XDRSYNC_TEST_POSTGRES_URL` may point elsewhere.
fn server() -> String {
    std::env::var("XDRSYNC_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Runs `sql` on the server outside any store (as an operator would in psql).
fn admin(sql: &str) {
    try_admin(sql).unwrap();
}

/// [`admin`], its failure returned (a guard's drop must not panic while a test unwinds).
fn try_admin(sql: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&server(), tokio_postgres::NoTls)
            .await
            .map_err(|e| {
                format!("the test PostgreSQL must be running (scripts/services starts it): {e}")
            })?;
        let task = tokio::spawn(connection);
        // A session left in a transaction by a failed test must not hang the cleanup.
        let done = client
            .batch_execute(&format!("SET lock_timeout = '20s'; {sql}"))
            .await
            .map_err(|e| e.to_string());
        drop(client);
        let _ = task.await;
        done
    })
}

/// A fresh schema; dropped with everything in it when the guard goes.
pub(crate) struct Scratch {
    schema: String,
}

impl Scratch {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let schema = format!(
            "xdrsync_store_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        admin(&format!("CREATE SCHEMA {schema}"));
        Scratch { schema }
    }

    /// The store's URL: the server with this schema as its search path.
    pub(crate) fn url(&self) -> String {
        format!("{}?options=-csearch_path%3D{}", server(), self.schema)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = try_admin(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)) {
            eprintln!("could not drop the test schema {}: {e}", self.schema);
        }
    }
}

#[test]
fn workers_starting_together_on_a_new_database_migrate_it_once() {
    let scratch = Scratch::new();
    let url = scratch.url();
    let versions: Vec<i64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|_| s.spawn(|| PgStore::connect(&url).unwrap().schema_version().unwrap()))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let known = MIGRATIONS.len() as i64;
    assert_eq!(versions, vec![known; 3]);
    // One row per step, not one per worker.
    let store = PgStore::connect(&url).unwrap();
    let steps = store
        .call(|s| {
            let (rt, c) = s.client()?;
            rt.block_on(c.query_one("SELECT COUNT(*) FROM schema_version", &[]))?
                .try_get::<_, i64>(0)
        })
        .unwrap();
    assert_eq!(steps, known);
    // The schema holds the store's tables.
    let tables = store
        .call(|s| {
            let (rt, c) = s.client()?;
            let rows = rt.block_on(c.query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = current_schema() ORDER BY 1",
                &[],
            ))?;
            rows.iter()
                .map(|r| r.try_get::<_, String>(0))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap();
    for t in [
        "cursors",
        "dictionaries",
        "poison",
        "sink_positions",
        "versions",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} in {tables:?}");
    }
}

#[test]
fn a_database_written_by_a_newer_xdrsync_is_refused() {
    let scratch = Scratch::new();
    drop(PgStore::connect(&scratch.url()).unwrap());
    let newer = MIGRATIONS.len() + 1;
    admin(&format!(
        "INSERT INTO {}.schema_version (version, applied_at) VALUES ({newer}, 'later')",
        scratch.schema
    ));
    let e = PgStore::connect(&scratch.url()).unwrap_err().to_string();
    assert!(
        e.contains(&format!("schema version {newer}")) && e.contains("upgrade xdrsync"),
        "{e}"
    );
}

#[test]
fn an_unreachable_server_is_a_clear_error_without_the_password() {
    // Nothing listens on port 1.
    let started = std::time::Instant::now();
    let e = PgStore::connect("postgres://xdrsync:hunter2@127.0.0.1:1/test?connect_timeout=3")
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(e.contains("127.0.0.1:1"), "names the server: {e}");
    assert!(
        e.to_lowercase().contains("connect"),
        "says what failed: {e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    let e = PgStore::connect("postgres://127.0.0.1:1/test?connect_timeout=3&password=hunter2")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
    let e = PgStore::connect("not a url").unwrap_err().to_string();
    assert!(e.contains("not a PostgreSQL address"), "{e}");
}

#[test]
fn the_location_hides_the_password() {
    let shown =
        redacted("postgres://xdrsync:s3cret@db.example:5432/soc?password=p4ss&sslmode=require");
    assert!(
        !shown.contains("s3cret") && !shown.contains("p4ss"),
        "{shown}"
    );
    assert!(
        shown.contains("db.example:5432/soc") && shown.contains("sslmode=require"),
        "{shown}"
    );
    assert_eq!(
        redacted("host=db password=x"),
        "postgres://(an address that is not a URL)"
    );
}

#[test]
fn a_session_the_server_ended_is_opened_again() {
    let scratch = Scratch::new();
    let app = format!("xdrsync_reconnect_{}", scratch.schema);
    let url = format!("{}&application_name={app}", scratch.url());
    let store = PgStore::connect(&url).unwrap();
    let backend = |store: &PgStore| {
        store.call(|s| {
            let (rt, c) = s.client()?;
            rt.block_on(c.query_one("SELECT pg_backend_pid()", &[]))?
                .try_get::<_, i32>(0)
        })
    };
    let before = backend(&store).unwrap();
    // As when PostgreSQL restarts: the server ends the session.
    admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{app}'"
    ));
    // The call that meets the dead session may fail, clearly; the next one reconnects.
    if let Err(e) = store.schema_version() {
        assert!(
            e.to_string().contains(&scratch.schema),
            "names the store: {e}"
        );
    }
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
    assert_ne!(backend(&store).unwrap(), before, "a new session");
}

#[test]
fn the_session_is_usable_from_inside_an_async_runtime() {
    // Some callers hold the store on a runtime's worker thread, where blocking on another
    // runtime would panic: the session's own thread makes that safe.
    let scratch = Scratch::new();
    let url = scratch.url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let version = rt.block_on(async move { PgStore::connect(&url).unwrap().schema_version() });
    assert_eq!(version.unwrap(), MIGRATIONS.len() as i64);
}

#[test]
fn a_failed_commit_leaves_no_lock_behind_for_the_other_workers() {
    use crate::Store as _;
    use crate::conformance::version;
    let scratch = Scratch::new();
    let (a, b) = (
        PgStore::connect(&scratch.url()).unwrap(),
        PgStore::connect(&scratch.url()).unwrap(),
    );
    let t = xdrsync_model::TenantId::canonical("a");
    a.commit(&t, &[version("a", "1", "2026-11-01T00:00:01Z")], None)
        .unwrap();
    admin(&format!(
        "UPDATE {}.versions SET normalized = convert_to('not json', 'UTF8')",
        scratch.schema
    ));
    // The next version of the item is classified against the damaged one: the commit fails
    // inside its transaction, which holds the commit lock.
    let e = a
        .commit(&t, &[version("a", "1", "2026-11-01T00:00:02Z")], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("corrupt row"), "{e}");
    // Another worker commits at once: had the failed transaction stayed open, it would wait
    // for the lock for as long as `a` sat idle.
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let t = xdrsync_model::TenantId::canonical("b");
        let _ = done.send(b.commit(&t, &[version("b", "1", "2026-11-01T00:00:03Z")], None));
    });
    let stats = result
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the other worker's commit waited on a lock the failed one left")
        .unwrap();
    assert_eq!(stats.created, 1);
}

#[test]
fn a_remote_server_is_refused_without_tls_unless_plaintext_is_asked_for_by_name() {
    // Refused before any connection is tried (nothing listens there, and nothing is sent).
    for url in [
        "postgres://xdrsync:hunter2@db.example.invalid:5432/soc",
        "postgres://xdrsync:hunter2@192.0.2.10/soc?sslmode=prefer",
        "postgres://xdrsync:hunter2@db.example.invalid/soc?sslmode=require",
    ] {
        let e = PgStore::connect(url).unwrap_err().to_string();
        assert!(e.contains("does not speak TLS yet"), "{url}: {e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
    // Asked for by name: tried (and here fails to connect, which says so).
    let e = PgStore::connect(
        "postgres://xdrsync:hunter2@192.0.2.10/soc?sslmode=disable&connect_timeout=1",
    )
    .unwrap_err()
    .to_string();
    assert!(!e.contains("does not speak TLS yet"), "{e}");
    // Loopback, by name or address, needs nothing.
    let scratch = Scratch::new();
    PgStore::connect(&scratch.url()).unwrap();
    PgStore::connect(&scratch.url().replace("127.0.0.1", "localhost")).unwrap();
}

/// `n` (tenant, stream) pairs the cluster pulls.
fn pairs(n: usize) -> Vec<(xdrsync_model::TenantId, xdrsync_model::StreamKind)> {
    (0..n)
        .map(|i| {
            (
                xdrsync_model::TenantId::canonical(&format!("t{i:03}")),
                xdrsync_model::StreamKind::Incidents,
            )
        })
        .collect()
}

#[test]
fn live_workers_share_the_leases_evenly_and_a_new_one_takes_its_share() {
    let scratch = Scratch::new();
    let store = PgStore::connect(&scratch.url()).unwrap();
    let wanted = pairs(30);
    let lease = std::time::Duration::from_secs(30);
    // Alone, a worker takes everything.
    assert_eq!(store.renew_leases("a", &wanted, lease).unwrap().len(), 30);
    // Two more join: the first renewal of each counts the live workers.
    let b = store.renew_leases("b", &wanted, lease).unwrap();
    assert!(b.is_empty(), "nothing free until a gives some back");
    store.renew_leases("c", &wanted, lease).unwrap();
    // a gives back its extras, then b and c take their share.
    assert_eq!(store.renew_leases("a", &wanted, lease).unwrap().len(), 10);
    let b = store.renew_leases("b", &wanted, lease).unwrap();
    let c = store.renew_leases("c", &wanted, lease).unwrap();
    let a = store.renew_leases("a", &wanted, lease).unwrap();
    assert_eq!((a.len(), b.len(), c.len()), (10, 10, 10));
    let mut all: Vec<_> = a
        .iter()
        .chain(&b)
        .chain(&c)
        .map(|l| l.tenant.clone())
        .collect();
    all.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    all.dedup();
    assert_eq!(all.len(), 30, "every pair held once");
    // A renewal keeps what is held, generation unchanged.
    assert_eq!(store.renew_leases("b", &wanted, lease).unwrap(), b);
}

#[test]
fn a_stopped_worker_loses_its_leases_and_its_late_commit_is_refused() {
    use crate::Store as _;
    use crate::conformance::version;
    let scratch = Scratch::new();
    let (old, new) = (
        PgStore::connect(&scratch.url()).unwrap(),
        PgStore::connect(&scratch.url()).unwrap(),
    );
    let wanted = pairs(4);
    let short = std::time::Duration::from_millis(700);
    let held = old.renew_leases("old", &wanted, short).unwrap();
    assert_eq!(held.len(), 4);
    let first = held[0].clone();
    let request = |fence: crate::Fence, at: &str| crate::CommitRequest {
        tenant: first.tenant.clone(),
        versions: vec![version(first.tenant.as_str(), "1", at)],
        poison: vec![],
        cursor: Some((first.stream, at.parse().unwrap())),
        fence: Some(fence),
    };
    let fence = |worker: &str, generation| crate::Fence {
        worker: worker.into(),
        stream: first.stream,
        generation,
    };
    // Under its lease, the commit goes in.
    let r = old.commit_group(&[request(
        fence("old", first.generation),
        "2026-11-01T00:00:01Z",
    )]);
    assert_eq!(r[0].as_ref().unwrap().created, 1);
    // `old` stops renewing (SIGSTOP, a long pause); its leases expire and `new` takes them.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let taken = new
        .renew_leases("new", &wanted, std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!(taken.len(), 4, "the stopped worker is not live: all of it");
    let successor = taken.iter().find(|l| l.tenant == first.tenant).unwrap();
    assert_eq!(successor.generation, first.generation + 1);
    // `old` comes back and commits under its stale lease: refused, nothing stored.
    let late = old.commit_group(&[request(
        fence("old", first.generation),
        "2026-11-01T00:00:02Z",
    )]);
    let e = late[0].as_ref().unwrap_err().to_string();
    assert!(e.contains("moved on") && e.contains("is stale"), "{e}");
    assert_eq!(old.version_count().unwrap(), 1);
    assert_eq!(
        old.cursor(&first.tenant, first.stream).unwrap(),
        Some("2026-11-01T00:00:01Z".parse().unwrap()),
        "the cursor did not move either"
    );
    // Its next renewal finds nothing held: it rejoins as a newcomer.
    assert!(old.renew_leases("old", &wanted, short).unwrap().is_empty());
    // The successor commits under the new generation.
    let r = new.commit_group(&[request(
        fence("new", successor.generation),
        "2026-11-01T00:00:03Z",
    )]);
    assert_eq!(
        r[0].as_ref().unwrap().created + r[0].as_ref().unwrap().updated,
        1
    );
}

#[test]
fn a_worker_that_exits_cleanly_hands_its_leases_over_at_once() {
    let scratch = Scratch::new();
    let store = PgStore::connect(&scratch.url()).unwrap();
    let wanted = pairs(6);
    let lease = std::time::Duration::from_secs(300);
    store.renew_leases("a", &wanted, lease).unwrap();
    store.renew_leases("b", &wanted, lease).unwrap();
    assert_eq!(store.renew_leases("a", &wanted, lease).unwrap().len(), 3);
    assert_eq!(store.renew_leases("b", &wanted, lease).unwrap().len(), 3);
    store.release_leases("a").unwrap();
    // Without waiting for a's five-minute leases: b alone now, it takes them all.
    assert_eq!(store.renew_leases("b", &wanted, lease).unwrap().len(), 6);
}

#[test]
fn each_sink_is_delivered_by_one_worker_and_a_position_outside_its_lease_is_refused() {
    use crate::{Cluster as _, Store as _};
    let scratch = Scratch::new();
    let (a, b) = (
        PgStore::connect(&scratch.url()).unwrap(),
        PgStore::connect(&scratch.url()).unwrap(),
    );
    // A store no worker renewed through is not fenced (`status`, `store copy`, `pull`).
    a.set_sink_position("pg", 3).unwrap();
    let wanted = pairs(2);
    let sinks: Vec<String> = ["nats", "pg", "webhook"].map(String::from).to_vec();
    let short = std::time::Duration::from_millis(700);
    let held_a = a.renew("a", &wanted, &sinks, short).unwrap();
    assert_eq!(held_a.sinks.len(), 3, "alone, a worker delivers every sink");
    let held_b = b.renew("b", &wanted, &sinks, short).unwrap();
    assert!(
        held_b.sinks.is_empty(),
        "nothing free until a gives some back"
    );
    // b may not move a sink it does not hold, and nothing is written.
    let refused = b.set_sink_position("pg", 10).unwrap_err();
    assert!(
        matches!(refused, StoreError::SinkFenced { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("sink pg"), "{refused}");
    assert_eq!(a.sink_position("pg").unwrap(), 3);
    // a gives back its extras; b takes its share (one of the three, then two of them stay a's).
    let held_a = a.renew("a", &wanted, &sinks, short).unwrap();
    assert_eq!(held_a.sinks.len(), 2);
    let held_b = b.renew("b", &wanted, &sinks, short).unwrap();
    assert_eq!(held_b.sinks.len(), 1);
    let bs = held_b.sinks[0].sink.clone();
    assert!(
        held_a.sinks.iter().all(|s| s.sink != bs),
        "one worker per sink"
    );
    b.set_sink_state(&bs, 5, Some("{}")).unwrap();
    assert!(matches!(
        a.set_sink_position(&bs, 6),
        Err(StoreError::SinkFenced { .. })
    ));
    // a stops renewing (paused): once its leases expire, b takes its sinks over, and a's late
    // write is refused by the store itself even though a still believes it holds them.
    std::thread::sleep(short + std::time::Duration::from_millis(200));
    let held_b = b.renew("b", &wanted, &sinks, short).unwrap();
    assert_eq!(held_b.sinks.len(), 3, "{held_b:?}");
    assert!(held_b.taken_over >= 2, "{held_b:?}");
    let late = held_a.sinks[0].sink.clone();
    let before = b.sink_position(&late).unwrap();
    assert!(matches!(
        a.set_sink_position(&late, 99),
        Err(StoreError::SinkFenced { .. })
    ));
    assert_eq!(b.sink_position(&late).unwrap(), before);
    // `status` sees who holds what.
    let rows = a.leases().unwrap();
    let sink_rows: Vec<_> = rows
        .iter()
        .filter(|r| r.what.starts_with("sink:"))
        .collect();
    assert_eq!(sink_rows.len(), 3);
    assert!(
        sink_rows
            .iter()
            .all(|r| r.worker.as_deref() == Some("b") && !r.expired)
    );
    assert!(
        rows.iter()
            .any(|r| r.tenant.is_some() && r.renewed_at.is_some())
    );
    let workers = a.workers().unwrap();
    assert_eq!(
        workers
            .iter()
            .map(|w| (w.worker.as_str(), w.alive))
            .collect::<Vec<_>>(),
        [("a", false), ("b", true)]
    );
    // A clean exit hands everything over.
    b.release("b").unwrap();
    assert!(a.leases().unwrap().iter().all(|r| r.worker.is_none()));
}

#[test]
fn the_rate_ledger_is_shared_by_every_worker_and_its_bucket_paces_them_together() {
    use crate::Store as _;
    let scratch = Scratch::new();
    let (a, b) = (
        PgStore::connect(&scratch.url()).unwrap(),
        PgStore::connect(&scratch.url()).unwrap(),
    );
    let (la, lb) = (a.ledger("worker-a").unwrap(), b.ledger("worker-b").unwrap());
    let key = "app|tenant|graph";
    // A call a reserved is one b counts (a tenant's budget follows its lease), not a itself.
    let r1 = la.reserve(key, 1_000).unwrap();
    let r2 = lb.reserve(key, 1_010).unwrap();
    assert!(r2 > r1, "ids order the reservations");
    assert_eq!(lb.others(key, 0, None).unwrap().0, [1_000]);
    assert_eq!(la.others(key, 0, None).unwrap().0, [1_010]);
    // Only the calls written before a reservation count against it.
    assert!(la.others(key, 0, Some(r2)).unwrap().0.is_empty());
    la.moved(r1, 1_500).unwrap();
    assert_eq!(lb.others(key, 0, None).unwrap().0, [1_500]);
    la.withdraw(r1).unwrap();
    assert!(lb.others(key, 0, None).unwrap().0.is_empty());
    // A 429 one worker met pauses the others.
    lb.pause(key, 9_000).unwrap();
    lb.pause(key, 5_000).unwrap();
    assert_eq!(la.others(key, 0, None).unwrap().1, Some(9_000));
    // The bucket (10 tokens, 10 a second) is one for both: what one takes, the other waits for.
    let bucket = "app|*|graph-app";
    assert!(la.take(bucket, 10.0, 10.0, 10.0).unwrap().is_zero());
    let wait_b = lb.take(bucket, 10.0, 10.0, 5.0).unwrap();
    let wait_a = la.take(bucket, 10.0, 10.0, 5.0).unwrap();
    assert!(
        (0.3..=0.55).contains(&wait_b.as_secs_f64()),
        "b owes about 5 tokens: {wait_b:?}"
    );
    assert!(
        (0.8..=1.05).contains(&wait_a.as_secs_f64()),
        "a queues behind b: {wait_a:?}"
    );
}
