//! `run` as a worker of a cluster on the PostgreSQL store (issue 18).
//!
//! Every `run` on a PostgreSQL store is a worker: it renews its leases every third of
//! `[cluster] lease_secs` in a task of its own (so a long pass never lets them lapse), pulls
//! only the (tenant, stream) pairs it holds and delivers only the sinks it holds. The store
//! decides who holds what, by its own clock, in one transaction per renewal
//! ([`xdrsync_store::Cluster`]); every commit and sink position is fenced by its lease, so a
//! worker that was paused past its leases cannot write over its successor. When renewals
//! keep failing for a whole lease length the worker holds nothing (its leases have expired)
//! until one succeeds. A clean exit (SIGTERM) gives every lease back at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use xdrsync_model::{StreamKind, TenantId};
use xdrsync_pipeline::cluster::Leases;
use xdrsync_sinks::Sink;
use xdrsync_store::Store;

/// How long a starting worker waits between announcing itself and taking leases.
const JOIN_SETTLE: Duration = Duration::from_secs(2);

/// What the cluster is asked to share: every enabled (tenant, stream) and every sink.
#[derive(Debug, Clone, Default)]
struct Wanted {
    streams: Vec<(TenantId, StreamKind)>,
    sinks: Vec<String>,
}

impl Wanted {
    fn of(config: &xdrsync_config::Config, sinks: &[Arc<dyn Sink>]) -> Self {
        Wanted {
            streams: config
                .tenants
                .iter()
                .filter(|t| t.enabled)
                .flat_map(|t| t.streams.iter().map(|s| (t.tenant_id.clone(), *s)))
                .collect(),
            sinks: sinks.iter().map(|s| s.name().to_owned()).collect(),
        }
    }
}

/// A running worker's lease keeping.
pub(crate) struct Worker {
    /// What it holds, shared with the pipeline.
    pub(crate) leases: Arc<Leases>,
    wanted: Arc<Mutex<Wanted>>,
    /// Signalled when a renewal brings leases this worker did not hold (a takeover or a share
    /// handed over): the next pass starts at once.
    gained: Arc<tokio::sync::Notify>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    store: Arc<dyn Store>,
}

/// This machine's name and the process id: a worker name unique on the cluster.
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}:{}", std::process::id())
}

/// Runs `f` on the store's cluster off the async threads (`T::default()` on a store without
/// one, which `Worker::start` rules out).
async fn on_cluster<T: Default + Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn xdrsync_store::Cluster) -> Result<T, xdrsync_store::StoreError> + Send + 'static,
) -> Result<T, xdrsync_store::StoreError> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.cluster().map_or(Ok(T::default()), f)).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

async fn renew(
    store: &Arc<dyn Store>,
    worker: &str,
    wanted: Wanted,
    lease: Duration,
) -> Result<xdrsync_store::Held, xdrsync_store::StoreError> {
    let worker = worker.to_owned();
    on_cluster(store, move |c| {
        c.renew(&worker, &wanted.streams, &wanted.sinks, lease)
    })
    .await
}

fn record(held: &xdrsync_store::Held, leases: &Leases) {
    let (streams, sinks) = leases.counts();
    metrics::gauge!("xdrsync_cluster_leases", "kind" => "stream").set(streams as f64);
    metrics::gauge!("xdrsync_cluster_leases", "kind" => "sink").set(sinks as f64);
    metrics::gauge!("xdrsync_cluster_workers").set(held.live_workers as f64);
    metrics::counter!("xdrsync_cluster_takeovers_total").increment(held.taken_over);
}

impl Worker {
    /// Joins the cluster when `store` is shared by one: the first renewal happens here (an
    /// error ends `run`), the next ones in a task. `None` on a SQLite store.
    pub(crate) async fn start(
        store: &Arc<dyn Store>,
        config: &xdrsync_config::Config,
        sinks: &[Arc<dyn Sink>],
    ) -> anyhow::Result<Option<Worker>> {
        if store.cluster().is_none() {
            return Ok(None);
        }
        let name = config.cluster.worker.clone().unwrap_or_else(default_name);
        let lease = config.cluster.lease;
        let leases = Arc::new(Leases::new(name.clone()));
        let wanted = Wanted::of(config, sinks);
        // Register first, take leases a moment later: workers started together then see each
        // other and each takes its fair share at once, instead of the first taking everything
        // and handing most of it over mid-pass.
        renew(store, &name, Wanted::default(), lease)
            .await
            .map_err(|e| anyhow::anyhow!("cannot join the cluster: {e}"))?;
        tokio::time::sleep(JOIN_SETTLE.min(lease / 3)).await;
        let held = renew(store, &name, wanted.clone(), lease)
            .await
            .map_err(|e| anyhow::anyhow!("cannot join the cluster: {e}"))?;
        leases.set(&held);
        record(&held, &leases);
        let taken = if held.taken_over > 0 {
            format!(", {} taken over from a stopped worker", held.taken_over)
        } else {
            String::new()
        };
        eprintln!(
            "xdrsync run: worker {name} of a cluster of {} on {}: holds {} of {} and {} of {}{taken} (leases of {}s, renewed every {:.1}s).",
            held.live_workers,
            store.location(),
            crate::text::plural(held.streams.len() as u64, "stream"),
            wanted.streams.len(),
            crate::text::plural(held.sinks.len() as u64, "sink"),
            wanted.sinks.len(),
            lease.as_secs(),
            (lease / 3).as_secs_f64(),
        );
        let wanted = Arc::new(Mutex::new(wanted));
        let gained = Arc::new(tokio::sync::Notify::new());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(keep(
            store.clone(),
            leases.clone(),
            wanted.clone(),
            gained.clone(),
            lease,
            stopped,
        ));
        Ok(Some(Worker {
            leases,
            wanted,
            gained,
            stop,
            task,
            store: store.clone(),
        }))
    }

    /// A reloaded config: its tenants and sinks are what the cluster shares from the next
    /// renewal on.
    pub(crate) fn set_wanted(&self, config: &xdrsync_config::Config, sinks: &[Arc<dyn Sink>]) {
        *self.wanted.lock().unwrap_or_else(|e| e.into_inner()) = Wanted::of(config, sinks);
    }

    /// The sinks of `sinks` this worker delivers.
    pub(crate) fn held_sinks(&self, sinks: &[Arc<dyn Sink>]) -> Vec<Arc<dyn Sink>> {
        sinks
            .iter()
            .filter(|s| self.leases.holds_sink(s.name()))
            .cloned()
            .collect()
    }

    /// Resolves when a renewal brought new leases.
    pub(crate) async fn gained(&self) {
        self.gained.notified().await;
    }

    /// Stops renewing and gives every lease back (a clean exit).
    pub(crate) async fn leave(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let name = self.leases.worker().to_owned();
        match on_cluster(&self.store, move |c| c.release(&name)).await {
            Ok(()) => eprintln!(
                "xdrsync run: worker {} gave its leases back.",
                self.leases.worker()
            ),
            Err(e) => eprintln!(
                "warning: worker {} could not give its leases back ({e}); the others take them over once they expire.",
                self.leases.worker()
            ),
        }
    }
}

/// Renews every third of `lease` until `stopped`.
async fn keep(
    store: Arc<dyn Store>,
    leases: Arc<Leases>,
    wanted: Arc<Mutex<Wanted>>,
    gained: Arc<tokio::sync::Notify>,
    lease: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let every = lease / 3;
    let mut last_ok = tokio::time::Instant::now();
    let mut cleared = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.changed() => return,
        }
        let want = wanted.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match renew(&store, leases.worker(), want, lease).await {
            Ok(held) => {
                last_ok = tokio::time::Instant::now();
                cleared = false;
                let before = leases.counts();
                let new = leases.set(&held);
                record(&held, &leases);
                if held.taken_over > 0 {
                    tracing::warn!(
                        worker = leases.worker(),
                        taken_over = held.taken_over,
                        "Took over leases another worker stopped renewing."
                    );
                }
                if new > 0 || leases.counts().1 > before.1 {
                    eprintln!(
                        "cluster: worker {} now holds {} and {} ({} new, {} taken over from a stopped worker; {} live).",
                        leases.worker(),
                        crate::text::plural(leases.counts().0 as u64, "stream"),
                        crate::text::plural(leases.counts().1 as u64, "sink"),
                        new,
                        held.taken_over,
                        crate::text::plural(held.live_workers, "worker"),
                    );
                    gained.notify_one();
                }
            }
            Err(e) => {
                metrics::counter!("xdrsync_cluster_renewals_failed_total").increment(1);
                tracing::warn!(worker = leases.worker(), error = %e, "Cannot renew the leases; trying again.");
                if !cleared && last_ok.elapsed() >= lease {
                    cleared = true;
                    leases.clear();
                    record(&xdrsync_store::Held::default(), &leases);
                    eprintln!(
                        "cluster: worker {} could not renew for {}s: its leases have expired; it pulls nothing until it renews ({e}).",
                        leases.worker(),
                        lease.as_secs()
                    );
                }
            }
        }
    }
}
