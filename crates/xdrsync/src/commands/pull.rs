//! `xdrsync pull` (one pass over every enabled tenant) and `xdrsync backfill --since`.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use xdrsync_pipeline::{Pipeline, PullMode, TenantReport};
use xdrsync_sinks::{Delivered, NdjsonSink, Sink, SinkError};
use xdrsync_store::Store;

use crate::cli::{BackfillArgs, PullArgs};

pub(crate) async fn run(args: PullArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    one_pass(
        config_path,
        &args.select,
        PullMode::Incremental,
        args.ndjson,
    )
    .await
}

pub(crate) async fn backfill(args: BackfillArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let since = super::since(&args.since)?;
    one_pass(
        config_path,
        &args.select,
        PullMode::Since(since),
        args.ndjson,
    )
    .await
}

async fn one_pass(
    config_path: &Path,
    select: &crate::cli::Selection,
    mode: PullMode,
    ndjson: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let (config, validated) = super::load_selected(config_path, select)?;
    let store = super::open_store(&config)?;
    let (sinks, stdout_used) = sinks(&config, &validated, ndjson, store.as_ref())?;
    let pipeline = Pipeline::new(config, store)?;
    let (reports, delivered) = pass(&pipeline, mode, &sinks).await;
    if stdout_used {
        // Standard output carries the events.
        eprint!("{}", summary(&reports));
    } else {
        crate::text::out!("{}", summary(&reports));
    }
    Ok(if delivered {
        exit_code(&reports)
    } else {
        ExitCode::from(crate::EXIT_FAILURE)
    })
}

/// The config's enabled `[[sinks]]`, then the one named by `--ndjson`; and whether one of
/// them writes to standard output.
///
/// `--ndjson PATH`'s sink is named after the file (`ndjson:/abs/path`), so a second path is a
/// second file with every event, not an empty one. A store from before that kept one position
/// named `ndjson`: an existing, non-empty file takes it over (it is the file that sink wrote),
/// so upgrading never writes a file's events twice.
pub(crate) fn sinks(
    config: &xdrsync_config::Config,
    validated: &[xdrsync_sinks::ValidatedSink],
    ndjson: Option<PathBuf>,
    store: &dyn Store,
) -> anyhow::Result<(Vec<Arc<dyn Sink>>, bool)> {
    let stdout_used = validated.iter().any(|v| v.enabled && v.is_stdout());
    let mut sinks = Vec::new();
    for v in validated.iter().filter(|v| v.enabled) {
        sinks.push(xdrsync_sinks::build(v)?);
    }
    if let Some(p) = ndjson {
        let name = ndjson_sink_name(&p);
        if sinks.iter().any(|s| s.name() == name) {
            anyhow::bail!(xdrsync_config::ConfigError::Invalid {
                path: config.path.clone(),
                field: "sinks".into(),
                message: format!("a sink is named `{name}`, the name --ndjson uses: rename it"),
            });
        }
        const LEGACY: &str = "ndjson";
        if !store.has_sink(&name)?
            && store.has_sink(LEGACY)?
            && std::fs::metadata(&p).is_ok_and(|m| m.len() > 0)
        {
            store.rename_sink(LEGACY, &name)?;
            tracing::info!(sink = %name, "The --ndjson file takes over the position of the sink `ndjson`.");
        }
        sinks.push(Arc::new(
            NdjsonSink::new(name, p)
                .with_tenant_names(xdrsync_sinks::tenant_names(&config.tenants)),
        ) as Arc<dyn Sink>);
    }
    Ok((sinks, stdout_used))
}

/// The name of `--ndjson PATH`'s sink: `ndjson:` and the absolute path.
pub(crate) fn ndjson_sink_name(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    format!("ndjson:{}", abs.display())
}

/// One pull pass with progress on stderr (bars on a terminal, lines otherwise: logs, CI,
/// systemd; see [`crate::progress`]) while `sinks` deliver what each commit stored. Returns
/// the reports and whether every sink delivered. A sink failure is reported, not fatal: the
/// pull is stored and the sink catches up from its position next time.
pub(crate) async fn pass(
    pipeline: &Pipeline,
    mode: PullMode,
    sinks: &[Arc<dyn Sink>],
) -> (Vec<TenantReport>, bool) {
    let (reports, _, ok) = pass_hunting(pipeline, mode, sinks, false).await;
    (reports, ok)
}

/// [`pass`], and with `hunts` the scheduled hunts that are due run beside it (`run`); each
/// hunt run is reported on stderr.
pub(crate) async fn pass_hunting(
    pipeline: &Pipeline,
    mode: PullMode,
    sinks: &[Arc<dyn Sink>],
    hunts: bool,
) -> (Vec<TenantReport>, Vec<xdrsync_store::HuntRun>, bool) {
    let view =
        crate::progress::View::new(pipeline.enabled_streams(), std::io::stderr().is_terminal());
    let mut pipeline = pipeline.clone();
    pipeline.set_progress(view.hook());
    let (reports, hunted, delivered) = if hunts {
        pipeline
            .pass_with_hunts(mode, sinks, |r| view.finished(r))
            .await
    } else {
        let (r, d) = pipeline
            .pull_all_delivering(mode, sinks, |r| view.finished(r))
            .await;
        (r, Vec::new(), d)
    };
    drop(view);
    for h in &hunted {
        let name = pipeline
            .tenant_name(&h.tenant_id)
            .unwrap_or(h.tenant_id.as_str());
        match &h.error {
            None => eprintln!(
                "hunt {} in {name}: {}, {} new{}",
                h.hunt,
                crate::text::plural(h.rows, "row"),
                h.new_rows,
                if h.truncated {
                    " (TRUNCATED at the service's row limit: narrow the query or the timespan)"
                } else {
                    ""
                }
            ),
            Some(e) => eprintln!(
                "hunt {} in {name}: FAILED: {} (it runs again next pass)",
                h.hunt,
                crate::text::escape(e)
            ),
        }
    }
    let ok = report_deliveries(sinks, delivered);
    (reports, hunted, ok)
}

/// Prints what each sink delivered or why it failed; whether all delivered. A sink failure is
/// reported, not fatal: the pulled versions are stored and the sink catches up next time.
pub(crate) fn report_deliveries(
    sinks: &[Arc<dyn Sink>],
    delivered: Vec<Result<Delivered, SinkError>>,
) -> bool {
    let mut ok = true;
    for (sink, d) in sinks.iter().zip(delivered) {
        match d {
            Ok(d) => {
                let m = sink.metrics();
                let mut extra = String::new();
                if m.send_retries > 0 {
                    extra.push_str(&format!(
                        ", {} retried",
                        crate::text::plural(m.send_retries, "send")
                    ));
                }
                if m.events_dropped > 0 {
                    extra.push_str(&format!(
                        ", {} DROPPED (backlog over its bound)",
                        m.events_dropped
                    ));
                }
                eprintln!(
                    "Delivered {} to sink {} (position {}{extra}).",
                    crate::text::plural(d.events, "event"),
                    sink.name(),
                    d.position
                );
            }
            Err(e) => {
                ok = false;
                eprintln!(
                    "error: {e} (the pulled versions are stored; the sink resumes from its position on the next run)"
                );
            }
        }
    }
    ok
}

/// The per-tenant summary table.
pub(crate) fn summary(reports: &[TenantReport]) -> String {
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let mut notes = Vec::new();
            if r.poison > 0 {
                notes.push(format!("{} unreadable (see store poison table)", r.poison));
            }
            if r.expand_fallbacks > 0 {
                notes.push(format!(
                    "{} pages read without $expand=alerts (incidents read one by one, {} of them in $batch)",
                    r.expand_fallbacks, r.batched_reads
                ));
            }
            if let Some(w) = r.partial.last() {
                notes.push(format!(
                    "PARTIAL results (206 Warning: {w}); re-read next pass"
                ));
            }
            vec![
                r.name.clone(),
                r.stream.to_string(),
                r.api.to_string(),
                r.stats.created.to_string(),
                r.stats.updated.to_string(),
                r.last_update
                    .or(r.cursor)
                    .map(crate::text::time)
                    .unwrap_or_else(|| "-".into()),
                // Short: the full reason is logged once by the pull (and kept for `status`).
                match &r.error {
                    Some(e) => format!("FAILED: {}", crate::text::short_error(e)),
                    None if notes.is_empty() => "ok".into(),
                    None => format!("ok, {}", notes.join("; ")),
                },
            ]
        })
        .collect();
    crate::table::render(
        &[
            "TENANT",
            "STREAM",
            "API",
            "NEW",
            "UPDATED",
            "LAST UPDATE",
            "STATUS",
        ],
        &rows,
    )
}

/// 0 when every tenant succeeded, else 1.
pub(crate) fn exit_code(reports: &[TenantReport]) -> ExitCode {
    if reports.iter().any(|r| r.error.is_some()) {
        ExitCode::from(crate::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}
