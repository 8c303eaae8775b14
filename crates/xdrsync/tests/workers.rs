//! A cluster of `xdrsync run` workers on the machine's PostgreSQL (issue 18): real processes,
//! the emulator with its quotas on, and the sinks a cluster delivers to (PostgreSQL, NATS
//! JetStream, a webhook), each test in a store schema, sink schema and stream of its own.
//!
//! Each scenario ends the same way: the store against the emulator's ground truth over a
//! window in which every (tenant, stream) was pulled by some worker after the last change of
//! hands, and every sink holding each stored event once (the webhook receiver recognises a
//! repeat by its event id, as a SIEM would).

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use xdrsync_emulator::faults::{Fault, FaultRule};
use xdrsync_model::{ApiKind, StreamKind, Timestamp};
use xdrsync_store::Store as _;
use xdrsync_store::postgres::PgStore;
use xdrsync_test_utils as tu;
use xdrsync_test_utils::receivers::nats;
use xdrsync_test_utils::receivers::postgres as pg;
use xdrsync_test_utils::receivers::webhook::Webhook;

mod common;
use common::{Daemon, scratch, use_postgres};

const HOOK_SECRET: &str = "cluster-hook-secret";
const GRAPH_LIST: &str = "GET /v1.0/security/incidents";

/// An emulator, a config of its tenants on a PostgreSQL store, and the three cluster sinks.
struct Cluster {
    emu: xdrsync_emulator::Emulator,
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: xdrsync_config::Config,
    store: PgStore,
    /// The store's schema on the machine's server (`None`: a server of the test's own).
    store_schema: Option<String>,
    sink_schema: String,
    nats: String,
    stream: String,
    hook: Webhook,
    /// The emulator's clock when the cluster was made: the first pulls reach back
    /// `initial_lookback_hours` (12) from about then.
    origin: Timestamp,
}

impl Cluster {
    /// `tenants` tenants with `per_hour` incidents an hour each, quotas on in the emulator and
    /// the client, leases of `lease_secs`.
    async fn new(tenants: usize, per_hour: f64, lease_secs: u64) -> Cluster {
        Cluster::on(tenants, per_hour, lease_secs, None).await
    }

    /// [`Cluster::new`] with the store at `store` (`None`: a schema on the machine's server).
    async fn on(tenants: usize, per_hour: f64, lease_secs: u64, store: Option<String>) -> Cluster {
        let names: Vec<String> = (0..tenants).map(|i| format!("Customer {i:03}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let emu = tu::start_with(
            tu::many_tenants(&names, per_hour, tu::ALL_READ_ROLES),
            |b| b.rate_limits = true,
        )
        .await;
        let emu_now = emu.state().clock().now();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let hook = Webhook::start(HOOK_SECRET);
        fs_err::write(dir.join("hook.secret"), HOOK_SECRET).unwrap();
        fs_err::write(dir.join("pg.url"), pg::url(&pg::address())).unwrap();
        let sink_schema = pg::fresh_schema("xcs");
        let nats = nats::shared_address();
        let stream = format!("XDRSYNC_{}", uuid::Uuid::new_v4().simple());
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let sinks = format!(
            "[[sinks]]\nname = \"warehouse\"\n[sinks.postgres]\nurl = {{ file = \"pg.url\" }}\nschema = \"{sink_schema}\"\n\
             [[sinks]]\nname = \"bus\"\n[sinks.nats]\nurl = \"nats://{nats}\"\nstream = \"{stream}\"\nsubject_prefix = \"{prefix}\"\n\
             [[sinks]]\nname = \"siem\"\nretry_base_ms = 20\n[sinks.webhook]\nurl = \"{}\"\nsecret = {{ file = \"hook.secret\" }}\n",
            hook.url("events")
        );
        tu::write_config(
            &dir,
            &emu,
            &[ApiKind::Graph],
            &format!("[sync]\nrate_budget = true\ninitial_lookback_hours = 12\n\n{sinks}"),
        );
        let (store_schema, url) = match store {
            Some(url) => (None, url),
            None => {
                let (schema, url) = scratch().await;
                (Some(schema), url)
            }
        };
        use_postgres(&dir, &url);
        // A `[cluster]` section needs the PostgreSQL store: it comes after it.
        let path = dir.join("xdrsync.toml");
        let text = fs_err::read_to_string(&path).unwrap();
        fs_err::write(
            &path,
            format!("{text}\n[cluster]\nlease_secs = {lease_secs}\n"),
        )
        .unwrap();
        let config = xdrsync_config::Config::load(&path).unwrap();
        let store = tokio::task::spawn_blocking(move || PgStore::connect(&url).unwrap())
            .await
            .unwrap();
        Cluster {
            emu,
            _tmp: tmp,
            dir,
            config,
            store,
            store_schema,
            sink_schema,
            nats,
            stream,
            hook,
            origin: emu_now,
        }
    }

    /// Starts a worker (`run --interval 2`) and returns it with its name.
    async fn worker(&self) -> (Daemon, String) {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut d = Daemon::start(&dir, &["--interval", "2", "--drain-timeout", "20"]);
            let line = d.wait_for("xdrsync run: worker ");
            let name = line
                .split("xdrsync run: worker ")
                .nth(1)
                .and_then(|r| r.split(" of a cluster").next())
                .unwrap()
                .to_owned();
            (d, name)
        })
        .await
        .unwrap()
    }

    /// How many (tenant, stream) leases each worker holds unexpired.
    fn holdings(&self) -> BTreeMap<String, usize> {
        let cluster = self.store.cluster().unwrap();
        let mut out = BTreeMap::new();
        for l in cluster.leases().unwrap() {
            if l.tenant.is_some()
                && !l.expired
                && let Some(w) = l.worker
            {
                *out.entry(w).or_default() += 1;
            }
        }
        out
    }

    /// Waits (at most `secs`) until `want` holds: what each worker holds.
    async fn wait_holdings(&self, secs: u64, want: impl Fn(&BTreeMap<String, usize>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let h = self.holdings();
            if want(&h) {
                return;
            }
            if Instant::now() >= deadline {
                let activity: Vec<String> = pg::client()
                    .await
                    .query(
                        "SELECT state || ': ' || left(query, 120) FROM pg_stat_activity WHERE state IS NOT NULL AND query NOT LIKE '%pg_stat_activity%'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                panic!(
                    "leases never settled: {h:?}; leases {:?}; sessions {activity:#?}",
                    self.store.cluster().unwrap().leases().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until each worker has finished `passes` more passes.
    async fn wait_passes(&self, workers: &mut [&mut Daemon], passes: usize) {
        for w in workers.iter_mut() {
            let n = pass_lines(&w.stderr()) + passes;
            let w: &mut Daemon = w;
            tokio::task::block_in_place(|| w.wait_for_count("degraded, ", n));
        }
    }

    /// The emulator holds the next listing request until `release_held`: the worker that
    /// sent it is mid-pass. Returns once it is held (`what` names it in a failure).
    async fn hold_next_listing(&self, what: &str) {
        self.emu.state().add_fault(FaultRule {
            route: GRAPH_LIST.into(),
            sequence: vec![Fault::Hold],
            fault: None,
            probability: None,
        });
        tokio::time::timeout(Duration::from_secs(30), async {
            while self.emu.state().stats().requests_held < 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect(what);
    }

    /// The end of every scenario: two more passes of each of `workers` (every pair is pulled
    /// after the last change of hands), the sinks caught up, every worker stopped cleanly, then
    /// [`Cluster::check`] over that window. Returns the versions checked and each worker's
    /// stderr.
    async fn finish(&self, mut workers: Vec<Daemon>) -> (usize, Vec<String>) {
        let t0 = self.emu.state().clock().now();
        {
            let mut all: Vec<&mut Daemon> = workers.iter_mut().collect();
            self.wait_passes(&mut all, 2).await;
        }
        let t1 = self.emu.state().clock().now();
        self.wait_delivered().await;
        let mut errs = Vec::new();
        for w in workers {
            errs.push(stop(w).await);
        }
        (self.check(&[(t0, t1)]).await, errs)
    }

    /// Waits until every sink holds every stored event (at most 90 s).
    async fn wait_delivered(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let stored = self.store.version_count().unwrap() as usize;
            let (pg, bus, hook) = self.delivered().await;
            if stored > 0 && [pg.len(), bus.len(), hook.len()] == [stored; 3] {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sinks never caught up: {stored} stored, {} / {} / {} delivered",
                pg.len(),
                bus.len(),
                hook.len()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The event ids each sink holds (PostgreSQL, NATS, webhook), repeats included.
    async fn delivered(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        let pg = pg::event_ids(&self.sink_schema).await;
        let bus = nats::read_stream(&self.nats, &self.stream)
            .await
            .into_iter()
            .map(|m| m.data["event_id"].as_str().unwrap().to_owned())
            .collect();
        let hook = self
            .hook
            .events()
            .into_iter()
            .map(|(_, e)| e["event_id"].as_str().unwrap().to_owned())
            .collect();
        (pg, bus, hook)
    }

    /// The store against the ground truth over `polls`, and every sink holding each stored
    /// event exactly once. Returns how many versions the truth check covered.
    ///
    /// Workers stopped one after another may have stored versions after the worker holding a
    /// sink gave it back: those wait in the store for the next worker, as they would in
    /// production. One last single pass (a worker alone holds every sink) delivers them.
    async fn check(&self, polls: &[(Timestamp, Timestamp)]) -> usize {
        let last = common::xdrsync(&["run", "--passes", "1", "--listen", ""], &self.dir).await;
        assert_eq!(last.status.code(), Some(0), "{}", common::text(&last));
        let mut checked = 0;
        // What the first pulls owed: the lookback from when they started (a minute's margin).
        let owed_from = self
            .origin
            .sub(chrono::Duration::hours(12))
            .add(chrono::Duration::minutes(1));
        for t in &self.config.tenants {
            let tenant = t.tenant_id.as_str();
            let truth = tu::truth::incidents(&self.emu, tenant);
            let due = tu::truth::since(&truth, owed_from);
            checked += tu::truth::check(
                &self.store,
                tenant,
                StreamKind::Incidents,
                (&truth, &due),
                polls,
                0,
            );
        }
        let stored: BTreeSet<String> = self
            .store
            .versions_after(0, 10_000_000)
            .unwrap()
            .into_iter()
            .map(|v| v.event_id)
            .collect();
        let (pg, bus, hook) = self.delivered().await;
        for (name, ids) in [("postgres", pg), ("nats", bus), ("webhook", hook)] {
            let unique: BTreeSet<String> = ids.iter().cloned().collect();
            assert_eq!(unique.len(), ids.len(), "{name}: an event delivered twice");
            let missing: Vec<_> = stored.difference(&unique).take(5).collect();
            let extra: Vec<_> = unique.difference(&stored).take(5).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{name}: {} stored, {} delivered; missing {missing:?}, not stored {extra:?}",
                stored.len(),
                unique.len()
            );
        }
        assert_eq!(self.hook.refused(), 0);
        checked
    }

    async fn cleanup(self) {
        if let Some(schema) = &self.store_schema {
            pg::drop_schema(schema).await;
        }
        pg::drop_schema(&self.sink_schema).await;
        nats::delete_stream(&self.nats, &self.stream).await;
    }
}

/// A counter or gauge a worker's `/metrics` shows (0 when absent).
async fn metric(w: &Daemon, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", w.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |n| n.parse().unwrap())
}

/// Three workers holding 100 streams and one sink each: `status` (JSON and table), the status
/// page and `/metrics` of worker `w` show who holds what and when it was renewed.
async fn check_views(c: &Cluster, w: &Daemon) {
    let status = common::xdrsync(&["status", "--output", "json"], &c.dir).await;
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let workers = doc["cluster"]["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 3, "{doc}");
    assert!(
        workers
            .iter()
            .all(|w| w["alive"] == true && w["streams"] == 100 && w["sinks"] == 1),
        "{workers:?}"
    );
    let leases = doc["cluster"]["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 303);
    assert!(
        leases.iter().all(|l| l["worker"].is_string()
            && l["renewed_at"].is_string()
            && l["expired"] == false),
        "{leases:?}"
    );
    let table = common::text(&common::xdrsync(&["status"], &c.dir).await);
    assert!(
        table.contains("LAST RENEWAL") && table.contains("customer000 incidents"),
        "{table}"
    );
    let text = reqwest::get(format!("{}/metrics", w.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "xdrsync_cluster_leases{kind=\"stream\"} 100",
        "xdrsync_cluster_leases{kind=\"sink\"} 1",
        "xdrsync_cluster_workers 3",
    ] {
        assert!(text.contains(line), "no `{line}` in {text}");
    }
    let page = reqwest::get(format!("{}/", w.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"workers\"") && page.contains("id=\"leases\""));
}

/// Passes a worker finished (each ends with a line `pass N: … degraded, …`).
fn pass_lines(err: &str) -> usize {
    err.matches("degraded, ").count()
}

async fn stop(d: Daemon) -> String {
    let (code, err) = tokio::task::spawn_blocking(move || d.stop()).await.unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("gave its leases back"), "{err}");
    err
}

/// Three workers share 300 tenants with the emulator's quotas on: the leases spread evenly,
/// the store equals the ground truth, each sink is delivered by one worker at a time and gets
/// every event once, and nothing is throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_300_tenants_and_every_sink_gets_each_event_once() {
    let c = Cluster::new(300, 0.5, 6).await;
    let (a, _) = c.worker().await;
    c.wait_holdings(30, |h| h.values().sum::<usize>() == 300)
        .await;
    let (b, _) = c.worker().await;
    let (d, _) = c.worker().await;
    // A new worker takes its share at the next renewals: 100 each.
    c.wait_holdings(30, |h| h.len() == 3 && h.values().all(|n| *n == 100))
        .await;
    let sinks: Vec<_> = c
        .store
        .cluster()
        .unwrap()
        .leases()
        .unwrap()
        .into_iter()
        .filter(|l| l.what.starts_with("sink:"))
        .filter_map(|l| l.worker)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        sinks.len(),
        3,
        "each worker delivers one of the three sinks"
    );
    check_views(&c, &a).await;
    let (checked, errs) = c.finish(vec![a, b, d]).await;
    for err in &errs {
        assert!(err.contains("(worker "), "{err}");
    }
    assert!(checked > 300, "only {checked} versions checked");
    assert_eq!(c.emu.state().stats().throttled, 0, "a quota was exceeded");
    assert!(
        c.holdings().is_empty(),
        "a clean exit gives every lease back"
    );
    c.cleanup().await;
}

/// One of three workers is SIGKILLed while a page of its pass is in flight: the others take
/// its leases over within a lease and one renewal, and nothing is lost or delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_leases_are_taken_over_within_a_lease_and_a_renewal() {
    let lease = 6;
    let c = Cluster::new(60, 2.0, lease).await;
    let (mut a, na) = c.worker().await;
    let (mut b, nb) = c.worker().await;
    let (mut d, nd) = c.worker().await;
    c.wait_holdings(30, |h| h.len() == 3 && h.values().all(|n| *n == 20))
        .await;
    c.wait_passes(&mut [&mut a, &mut b, &mut d], 1).await;
    // The next listing request is held by the emulator: the worker that sent it is mid-pass,
    // and the only one that stops finishing passes.
    c.hold_next_listing("a worker's request is held").await;
    let counts = |ws: &[&Daemon]| {
        ws.iter()
            .map(|w| pass_lines(&w.stderr()))
            .collect::<Vec<_>>()
    };
    let before = counts(&[&a, &b, &d]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = counts(&[&a, &b, &d]);
    let stuck: Vec<usize> = (0..3).filter(|i| after[*i] == before[*i]).collect();
    assert_eq!(
        stuck.len(),
        1,
        "one worker is held mid-pass: {before:?} {after:?}"
    );
    let mut workers = vec![(a, na), (b, nb), (d, nd)];
    let (mut victim, victim_name) = workers.remove(stuck[0]);
    victim.kill();
    let killed = Instant::now();
    c.emu.state().release_held();
    // Taken over: every pair held, unexpired, by the two survivors.
    c.wait_holdings(lease * 3, |h| {
        !h.contains_key(&victim_name) && h.len() == 2 && h.values().sum::<usize>() == 60
    })
    .await;
    let takeover = killed.elapsed();
    eprintln!("takeover after SIGKILL: {:.1}s", takeover.as_secs_f64());
    let bound = Duration::from_secs(lease) + Duration::from_secs(lease) / 3;
    assert!(
        takeover <= bound + Duration::from_millis(1500),
        "taken over after {takeover:?}, more than a lease and a renewal ({bound:?})"
    );
    let (s1, _) = workers.remove(0);
    let (s2, _) = workers.remove(0);
    // The survivors count what they took over.
    let mut taken = 0.0;
    for w in [&s1, &s2] {
        taken += metric(w, "xdrsync_cluster_takeovers_total").await;
    }
    assert!(
        taken >= 20.0,
        "the victim's 20 streams were taken over: {taken}"
    );
    let (checked, errs) = c.finish(vec![s1, s2]).await;
    assert!(
        errs.iter()
            .any(|e| e.contains("taken over from a stopped worker")),
        "{errs:?}"
    );
    assert!(checked > 60, "only {checked} versions checked");
    c.cleanup().await;
}

/// A worker SIGSTOPped mid-pass past its leases: the other takes them over; once continued,
/// its late commit is refused by the fence, it says so, drops those leases and rejoins with a
/// share of its own. Nothing it read late is stored or delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_is_fenced_when_it_comes_back_and_rejoins() {
    let lease = 4;
    let c = Cluster::new(20, 2.0, lease).await;
    let (mut a, na) = c.worker().await;
    c.wait_holdings(30, |h| h.get(&na) == Some(&20)).await;
    c.wait_passes(&mut [&mut a], 1).await;
    c.hold_next_listing("a's request is held").await;
    // New versions for the page a waits on to carry.
    c.emu.state().clock().advance(chrono::Duration::hours(2));
    a.signal("-STOP");
    let (mut b, nb) = c.worker().await;
    // a's leases expire; b takes all of them over and pulls them.
    c.wait_holdings(lease * 4, |h| {
        h.get(&nb) == Some(&20) && !h.contains_key(&na)
    })
    .await;
    tokio::task::block_in_place(|| b.wait_for("taken over from a stopped worker"));
    c.wait_passes(&mut [&mut b], 1).await;
    a.signal("-CONT");
    c.emu.state().release_held();
    // a's page comes back: its commit is refused, and it says why.
    tokio::task::block_in_place(|| a.wait_for("moved on"));
    // It rejoins: b hands half over at a renewal, a takes it.
    c.wait_holdings(lease * 4, |h| {
        h.get(&na) == Some(&10) && h.get(&nb) == Some(&10)
    })
    .await;
    let (checked, errs) = c.finish(vec![a, b]).await;
    assert!(
        errs[0].contains("is stale); the commit is refused"),
        "{}",
        errs[0]
    );
    assert!(checked > 20, "only {checked} versions checked");
    c.cleanup().await;
}

/// The store's PostgreSQL server (one of the test's own) is restarted while a pass is in
/// flight: the workers' sessions are opened again, the pass in flight and the next ones
/// complete, and nothing is lost or delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_during_a_pass_loses_and_repeats_nothing() {
    let server = std::sync::Arc::new(
        tokio::task::spawn_blocking(pg::PrivateServer::start)
            .await
            .unwrap(),
    );
    let c = Cluster::on(40, 2.0, 6, Some(server.url())).await;
    let (mut a, _) = c.worker().await;
    let (mut b, _) = c.worker().await;
    c.wait_holdings(30, |h| h.len() == 2 && h.values().all(|n| *n == 20))
        .await;
    c.wait_passes(&mut [&mut a, &mut b], 1).await;
    c.hold_next_listing("a worker's request is held: a pass is in flight")
        .await;
    let first_start = server.started_at().await;
    let s = server.clone();
    tokio::task::spawn_blocking(move || {
        s.down();
        std::thread::sleep(Duration::from_secs(2));
        s.up();
    })
    .await
    .unwrap();
    assert_ne!(
        server.started_at().await,
        first_start,
        "the server restarted"
    );
    c.emu.state().release_held();
    let (checked, errs) = c.finish(vec![a, b]).await;
    assert!(
        errs.concat().contains("connection ended"),
        "the workers met the restart: {errs:?}"
    );
    assert!(checked > 40, "only {checked} versions checked");
    c.cleanup().await;
}
