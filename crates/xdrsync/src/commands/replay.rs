//! `xdrsync replay`: stored events sent again to one sink.
//!
//! The way an analyst rebuilds a SIEM index after an outage: the versions of the window (and of
//! the chosen tenants and streams) go out again with their stored event ids, each document
//! marked as a replay (`"replay": true` in the xdrsync schema, a `replay` label or tag in OCSF
//! and ECS, `replay` in HEC fields and syslog structured data, CEF/LEEF `reason=replay`), so
//! receivers that deduplicate by event id recognise them and people can tell them apart.
//!
//! The replay delivers through a temporary copy of the sink with its own position, which is
//! forgotten afterwards: the sink's real position (what `run` delivers from) never moves, and
//! a replay interrupted by a crash simply leaves a temporary position that the next replay
//! does not reuse.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use xdrsync_sinks::{NdjsonSink, Sink};

use crate::cli::{ReplayArgs, UsageError};

pub(crate) async fn run(args: ReplayArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let since = super::since(&args.since)?;
    let (config, validated) = super::load_config_and_sinks(config_path)?;
    let tenants: Vec<_> = super::select_tenants(&config, &args.select.tenants)?
        .into_iter()
        .map(|t| t.tenant_id.clone())
        .collect();
    let tenants = if args.select.tenants.is_empty() {
        Vec::new()
    } else {
        tenants
    };
    let streams = xdrsync_config::parse_streams(&args.select.streams)?;
    let store = super::open_store(&config)?;
    let temp = format!(
        "replay:{}:{}",
        args.sink.as_deref().unwrap_or("ndjson"),
        uuid::Uuid::new_v4().simple()
    );
    let (label, sink): (String, Arc<dyn Sink>) = match (&args.sink, &args.ndjson) {
        (Some(name), _) => {
            let Some(v) = validated.iter().find(|v| v.common.name == *name) else {
                let names: Vec<&str> = validated.iter().map(|v| v.common.name.as_str()).collect();
                anyhow::bail!(UsageError(format!(
                    "--sink: no sink named `{name}` in {}; configured: {}",
                    config.path.display(),
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                )));
            };
            let replay = v
                .for_replay(&temp, &tenants, &streams, since)
                .map_err(|e| UsageError(format!("--sink: {e}")))?;
            (name.clone(), xdrsync_sinks::build(&replay)?)
        }
        (None, Some(path)) => {
            let mut sink = NdjsonSink::new(&temp, path)
                .with_tenant_names(xdrsync_sinks::tenant_names(&config.tenants));
            sink.narrow_for_replay(&tenants, &streams, since);
            (path.display().to_string(), Arc::new(sink))
        }
        (None, None) => anyhow::bail!(UsageError("give --sink NAME or --ndjson PATH".into())),
    };
    let delivered = xdrsync_pipeline::deliver::once(&sink, &store).await;
    // The temporary position goes whatever happened: a replay is run again from the start.
    let forget = {
        let (store, temp) = (store.clone(), temp.clone());
        tokio::task::spawn_blocking(move || store.forget_sink(&temp)).await
    };
    if let Ok(Err(e)) = forget {
        tracing::warn!(error = %e, "Cannot forget the replay's temporary position.");
    }
    match delivered {
        Ok(d) => {
            eprintln!(
                "Replayed {} last updated since {} to {label} (same event ids, marked as replays).",
                crate::text::plural(d.events, "event"),
                crate::text::time(since)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "error: the replay to {label} failed: {} (run it again; receivers that deduplicate by event id keep each event once)",
                crate::text::escape(&e.to_string())
            );
            Ok(ExitCode::from(crate::EXIT_FAILURE))
        }
    }
}
