//! `xdrsync run`: the daemon. Pull every interval, deliver, repeat.
//!
//! Sinks deliver while each pass runs (after every commit). SIGTERM or SIGINT stop it: a pass
//! in flight is given `--drain-timeout` to finish (stopping mid-pass loses nothing: pages are
//! committed as they are read and a stream's cursor only after all of them, so an interrupted
//! stream is simply re-read from its cursor next time), the sinks deliver what was stored, and
//! the process exits 0.
//!
//! SIGHUP reloads the config file: tenants and sinks added, removed or changed take effect at
//! the next pass (a pass in flight finishes with the config it started with). A new config
//! that does not load or validate is logged with its reason and the old one keeps running.
//! The store is the one thing a reload cannot move: a changed `[store] path` is refused.
//!
//! `[server] listen` (default `127.0.0.1:9464`) serves `/metrics`, `/healthz`, `/readyz` and
//! a status page (see [`crate::server`]).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use xdrsync_pipeline::{Pipeline, PullMode, deliver};
use xdrsync_sinks::Sink;
use xdrsync_store::Store;

use crate::cli::RunArgs;
use crate::server::{Daemon, PassSummary, ServerState};

/// What one config gives the daemon.
struct Loaded {
    pipeline: Pipeline,
    sinks: Vec<Arc<dyn Sink>>,
    daemon: Daemon,
}

/// Loads the config at `path` (again, on SIGHUP) into a pipeline and sinks over `store`.
fn load(path: &Path, args: &RunArgs, store: &OpenStore) -> anyhow::Result<Loaded> {
    let (config, validated) = super::load_config_and_sinks(path)?;
    build(config, validated, args, store)
}

/// The store `run` opened, and the config's words for it (a reload must name the same).
struct OpenStore {
    store: Arc<dyn Store>,
    named: String,
}

/// A loaded config as a pipeline and sinks over `store`.
fn build(
    config: xdrsync_config::Config,
    validated: Vec<xdrsync_sinks::ValidatedSink>,
    args: &RunArgs,
    open: &OpenStore,
) -> anyhow::Result<Loaded> {
    let store = &open.store;
    if super::store_named(&config) != open.named {
        anyhow::bail!(xdrsync_config::ConfigError::Invalid {
            path: config.path.clone(),
            field: "store".into(),
            message: format!(
                "the store cannot change while `run` is up (it uses {}); restart to move it",
                store.location()
            ),
        });
    }
    let interval = args
        .interval
        .map(Duration::from_secs)
        .unwrap_or(config.sync.interval);
    let (sinks, _) = super::pull::sinks(&config, &validated, args.ndjson.clone(), store.as_ref())?;
    let pipeline = Pipeline::new(config.clone(), store.clone())?;
    Ok(Loaded {
        pipeline,
        daemon: Daemon {
            config,
            validated,
            sinks: sinks.clone(),
            interval,
        },
        sinks,
    })
}

pub(crate) async fn run(args: RunArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let (config, validated) = super::load_config_and_sinks(config_path)?;
    let open = OpenStore {
        store: super::open_store(&config)?,
        named: super::store_named(&config),
    };
    let store = open.store.clone();
    let retention_days = config.retention_days;
    let listen = match &args.listen {
        Some(l) if l.trim().is_empty() => None,
        Some(l) => Some(l.parse::<std::net::SocketAddr>().map_err(|e| {
            crate::cli::UsageError(format!(
                "--listen: `{l}` is not an address and port such as 127.0.0.1:9464 ({e})"
            ))
        })?),
        None => config.server_listen,
    };
    let Loaded {
        mut pipeline,
        mut sinks,
        daemon,
    } = build(config, validated, &args, &open)?;
    let mut interval = daemon.interval;
    // On a PostgreSQL store this process is a worker of a cluster: it pulls and delivers
    // only what it leases.
    let worker = super::worker::Worker::start(&store, &daemon.config, &sinks).await?;
    if let Some(w) = &worker {
        pipeline.set_leases(w.leases.clone());
    }
    // Metrics are recorded only when something serves them.
    let recorder = match listen {
        Some(_) => Some(crate::server::recorder()?),
        None => None,
    };
    let actions = crate::inbound::ActionsEndpoint::new(&daemon.config, pipeline.client().clone())?;
    let state = ServerState::new(daemon, store.clone(), recorder)?;
    state.set_actions(actions);
    if let Some(addr) = listen {
        let bound = crate::server::serve(addr, state.clone(), config_path).await?;
        eprintln!(
            "xdrsync run: status page http://{bound}/ (metrics /metrics, health /healthz, readiness /readyz)"
        );
    }
    let mut retention = Arc::new(tokio::sync::Mutex::new(
        xdrsync_pipeline::retention::Retention::new(retention_days),
    ));
    let mut pruning: Option<tokio::task::JoinHandle<()>> = None;
    let mut stop = Box::pin(shutdown_signal());
    let mut reload = reload_signal()?;
    let drain = Duration::from_secs(args.drain_timeout);
    let mut passes = 0u64;
    eprintln!(
        "xdrsync run: {} ({}) every {}s (SIGTERM or Ctrl-C to stop, SIGHUP to reload the config)",
        crate::text::plural(pipeline.enabled_tenants() as u64, "tenant"),
        crate::text::plural(pipeline.enabled_streams() as u64, "stream"),
        interval.as_secs()
    );
    loop {
        passes += 1;
        let started = tokio::time::Instant::now();
        let started_at = xdrsync_model::Timestamp::now();
        state.pass_started();
        // A worker delivers the sinks it leases; one machine delivers all of them.
        let pass_sinks = match &worker {
            Some(w) => w.held_sinks(&sinks),
            None => sinks.clone(),
        };
        let stopping = {
            let work =
                super::pull::pass_hunting(&pipeline, PullMode::Incremental, &pass_sinks, true);
            tokio::pin!(work);
            // The pass's line on stderr and its summary for the status page and `/metrics`.
            let finished = |reports: &[xdrsync_pipeline::TenantReport]| {
                let failed = reports.iter().filter(|r| r.error.is_some()).count();
                let stored: u64 = reports
                    .iter()
                    .map(|r| r.stats.created + r.stats.updated)
                    .sum();
                let seconds = started.elapsed().as_secs_f64();
                let leased = match &worker {
                    Some(w) => format!(
                        " (worker {}: {} and {} leased)",
                        w.leases.worker(),
                        crate::text::plural(reports.len() as u64, "stream"),
                        crate::text::plural(pass_sinks.len() as u64, "sink")
                    ),
                    None => String::new(),
                };
                eprintln!(
                    "pass {passes}: {} tenants, {failed} degraded, {stored} versions stored in {seconds:.1}s{leased}",
                    pipeline.enabled_tenants()
                );
                state.pass_finished(
                    PassSummary {
                        number: passes,
                        started: started_at,
                        seconds,
                        streams: reports.len(),
                        degraded: failed,
                        stored,
                    },
                    reports,
                );
            };
            tokio::select! {
                (reports, hunts, _) = &mut work => {
                    state.hunts_finished(&hunts);
                    finished(&reports);
                    false
                }
                _ = &mut stop => {
                    eprintln!("Stopping: letting the pass in flight finish (at most {}s).", drain.as_secs());
                    if let Ok((reports, hunts, _)) = tokio::time::timeout(drain, &mut work).await {
                        state.hunts_finished(&hunts);
                        finished(&reports);
                    } else {
                        eprintln!("The pass did not finish in {}s; stopping anyway (interrupted tenants are re-read next run).", drain.as_secs());
                        // What the interrupted pass stored is delivered before exiting, within
                        // the same bound.
                        let deliveries = async {
                            let mut delivered = Vec::new();
                            for sink in &pass_sinks {
                                delivered.push(deliver::once(sink, pipeline.store()).await);
                            }
                            delivered
                        };
                        match tokio::time::timeout(drain, deliveries).await {
                            Ok(delivered) => {
                                super::pull::report_deliveries(&pass_sinks, delivered);
                            }
                            Err(_) => eprintln!("The sinks did not finish delivering in {}s; they resume from their positions next run.", drain.as_secs()),
                        }
                    }
                    true
                }
            }
        };
        if stopping {
            break;
        }
        // Retention runs beside the daemon, in short steps, never two at once.
        if pruning.as_ref().is_none_or(|p| p.is_finished()) {
            pruning = Some(tokio::spawn(prune(
                retention.clone(),
                store.clone(),
                sinks.iter().map(|s| s.name().to_owned()).collect(),
            )));
        }
        if args.passes.is_some_and(|n| passes >= n) {
            break;
        }
        let next = started + interval;
        let mut reload_now = false;
        let gained = async {
            match &worker {
                Some(w) => w.gained().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = &mut stop => break,
            _ = reload.recv() => reload_now = true,
            // Leases taken over (or handed over) are pulled now, not an interval later.
            _ = gained => continue,
        }
        // A SIGHUP during the pass is taken now; one during the wait ends the wait.
        reload_now |= reload.try_recv();
        if reload_now {
            match load(config_path, &args, &open) {
                Ok(loaded) => {
                    pipeline = loaded.pipeline;
                    if let Some(w) = &worker {
                        w.set_wanted(&loaded.daemon.config, &loaded.sinks);
                        pipeline.set_leases(w.leases.clone());
                    }
                    sinks = loaded.sinks;
                    interval = loaded.daemon.interval;
                    // A changed `retention_days` applies from the next prune.
                    // (a prune in flight finishes with the old one).
                    retention = Arc::new(tokio::sync::Mutex::new(
                        xdrsync_pipeline::retention::Retention::new(
                            loaded.daemon.config.retention_days,
                        ),
                    ));
                    eprintln!(
                        "xdrsync run: reloaded {}: {} ({}), {} every {}s.",
                        config_path.display(),
                        crate::text::plural(pipeline.enabled_tenants() as u64, "tenant"),
                        crate::text::plural(pipeline.enabled_streams() as u64, "stream"),
                        crate::text::plural(sinks.len() as u64, "sink"),
                        interval.as_secs()
                    );
                    // `POST /actions` follows the reloaded tenants and secrets.
                    match crate::inbound::ActionsEndpoint::new(
                        &loaded.daemon.config,
                        pipeline.client().clone(),
                    ) {
                        Ok(actions) => state.set_actions(actions),
                        Err(e) => {
                            tracing::error!(error = %e, "POST /actions keeps the old settings: the reloaded ones cannot be used.")
                        }
                    }
                    *state.daemon.write().unwrap_or_else(|e| e.into_inner()) = loaded.daemon;
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    tracing::error!(error = %crate::text::escape(&msg), "The reloaded config is not valid; the old one keeps running.");
                    eprintln!(
                        "error: reload refused, the old config keeps running: {}",
                        crate::text::escape_keep_lines(&msg)
                    );
                }
            }
            // Reloading does not wait for the interval to pass again.
            if tokio::time::Instant::now() < next {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = &mut stop => break,
                }
            }
        }
    }
    // A prune in flight may finish within the drain bound (each step is its own
    // transaction, so stopping it midway loses nothing either).
    if let Some(mut p) = pruning
        && tokio::time::timeout(drain, &mut p).await.is_err()
    {
        p.abort();
    }
    if let Some(w) = worker {
        w.leave().await;
    }
    eprintln!(
        "xdrsync run: stopped after {}.",
        crate::text::plural(passes, "pass")
    );
    Ok(ExitCode::SUCCESS)
}

/// One retention prune (see [`xdrsync_pipeline::retention`]), logged.
async fn prune(
    retention: Arc<tokio::sync::Mutex<xdrsync_pipeline::retention::Retention>>,
    store: Arc<dyn Store>,
    sinks: Vec<String>,
) {
    let mut r = retention.lock().await;
    match r.prune(&store, &sinks).await {
        Ok(report) if report.deleted > 0 => {
            metrics::counter!("xdrsync_versions_pruned_total").increment(report.deleted);
            tracing::info!(
                deleted = report.deleted,
                seconds = report.elapsed.as_secs_f64(),
                "Pruned versions past the retention window."
            );
            eprintln!(
                "retention: pruned {} past the window in {:.1}s.",
                crate::text::plural(report.deleted, "version"),
                report.elapsed.as_secs_f64()
            );
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "Retention could not prune; it tries again after the next pass.");
        }
    }
}

/// SIGHUP, as a stream of "reload now".
struct Reload {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

fn reload_signal() -> anyhow::Result<Reload> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Reload {
            signal: signal(SignalKind::hangup())?,
        })
    }
    #[cfg(not(unix))]
    {
        Ok(Reload {})
    }
}

impl Reload {
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            self.signal.recv().await;
        }
        #[cfg(not(unix))]
        {
            std::future::pending::<()>().await;
        }
    }

    /// Whether a SIGHUP arrived that nobody waited for.
    fn try_recv(&mut self) -> bool {
        #[cfg(unix)]
        {
            use futures_util::FutureExt as _;
            self.signal.recv().now_or_never().is_some()
        }
        #[cfg(not(unix))]
        {
            false
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
