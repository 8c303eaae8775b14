//! `xdrsync run`: the daemon. Pull every interval, deliver, repeat.
//!
//! Sinks deliver while each pass runs (after every commit). SIGTERM or SIGINT stop it: a pass
//! in flight is given `--drain-timeout` to finish (stopping mid-pass loses nothing: pages are
//! committed as they are read and a stream's cursor only after all of them, so an interrupted
//! stream is simply re-read from its cursor next time), the sinks deliver what was stored, and
//! the process exits 0.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use xdrsync_pipeline::{Pipeline, PullMode, deliver};
use xdrsync_store::SqliteStore;

use crate::cli::RunArgs;

pub(crate) async fn run(args: RunArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let (config, validated) = super::load_config_and_sinks(config_path)?;
    let interval = args
        .interval
        .map(Duration::from_secs)
        .unwrap_or(config.sync.interval);
    let (sinks, _) = super::pull::sinks(&config, &validated, args.ndjson.clone())?;
    let store = Arc::new(SqliteStore::open(&config.store_path)?);
    let pipeline = Pipeline::new(config, store)?;
    let mut stop = Box::pin(shutdown_signal());
    let drain = Duration::from_secs(args.drain_timeout);
    let mut passes = 0u64;
    eprintln!(
        "xdrsync run: {} tenants ({} streams) every {}s (SIGTERM or Ctrl-C to stop)",
        pipeline.enabled_tenants(),
        pipeline.enabled_streams(),
        interval.as_secs()
    );
    loop {
        passes += 1;
        let started = tokio::time::Instant::now();
        let work = super::pull::pass(&pipeline, PullMode::Incremental, &sinks);
        tokio::pin!(work);
        let stopping = tokio::select! {
            (reports, _) = &mut work => {
                let failed = reports.iter().filter(|r| r.error.is_some()).count();
                let stored: u64 = reports.iter().map(|r| r.stats.created + r.stats.updated).sum();
                eprintln!("pass {passes}: {} tenants, {failed} degraded, {stored} versions stored in {:.1}s",
                    reports.len(), started.elapsed().as_secs_f64());
                false
            }
            _ = &mut stop => {
                eprintln!("Stopping: letting the pass in flight finish (at most {}s).", drain.as_secs());
                if tokio::time::timeout(drain, &mut work).await.is_err() {
                    eprintln!("The pass did not finish in {}s; stopping anyway (interrupted tenants are re-read next run).", drain.as_secs());
                    // What the interrupted pass stored is delivered before exiting.
                    let mut delivered = Vec::new();
                    for sink in &sinks {
                        delivered.push(deliver::once(sink, pipeline.store()).await);
                    }
                    super::pull::report_deliveries(&sinks, delivered);
                }
                true
            }
        };
        if stopping || args.passes.is_some_and(|n| passes >= n) {
            break;
        }
        let next = started + interval;
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = &mut stop => break,
        }
    }
    eprintln!("xdrsync run: stopped after {passes} passes.");
    Ok(ExitCode::SUCCESS)
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
