//! `xdrsync pull` (one pass over every enabled tenant) and `xdrsync backfill --since`.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use xdrsync_pipeline::{Pipeline, PullMode, TenantReport};
use xdrsync_sinks::NdjsonSink;
use xdrsync_store::SqliteStore;

use crate::cli::{BackfillArgs, PullArgs};

pub(crate) async fn run(args: PullArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    one_pass(config_path, PullMode::Incremental, args.ndjson).await
}

pub(crate) async fn backfill(args: BackfillArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let since = super::since(&args.since)?;
    one_pass(config_path, PullMode::Since(since), args.ndjson).await
}

async fn one_pass(
    config_path: &Path,
    mode: PullMode,
    ndjson: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config_path)?;
    let store = Arc::new(SqliteStore::open(&config.store_path)?);
    let pipeline = Pipeline::new(config, store.clone())?;
    let reports = pass(&pipeline, mode).await;
    let delivered = deliver(&store, ndjson).await;
    print!("{}", summary(&reports));
    Ok(if delivered {
        exit_code(&reports)
    } else {
        ExitCode::from(crate::EXIT_FAILURE)
    })
}

/// One pull pass with progress on stderr: a live line on a terminal, a line per tenant and
/// stream otherwise (logs, CI, systemd).
pub(crate) async fn pass(pipeline: &Pipeline, mode: PullMode) -> Vec<TenantReport> {
    let total = pipeline.enabled_streams();
    let live = std::io::stderr().is_terminal();
    let mut done = 0usize;
    let mut failed = 0usize;
    let reports = pipeline
        .pull_all_with(mode, |r| {
            done += 1;
            if r.error.is_some() {
                failed += 1;
            }
            let what = match &r.error {
                Some(e) => format!("FAILED: {e}"),
                None => format!(
                    "{} new, {} updated, {} pages",
                    r.stats.created, r.stats.updated, r.pages
                ),
            };
            if live {
                let width = 30;
                let filled = (done * width)
                    .checked_div(total)
                    .unwrap_or(width)
                    .min(width);
                eprint!(
                    "\r\x1b[2K[{}{}] {done}/{total} streams, {failed} failed  {} {}: {}",
                    "#".repeat(filled),
                    " ".repeat(width - filled),
                    r.name,
                    r.stream,
                    truncate(&what, 60)
                );
            } else {
                eprintln!("pulled {} {} ({done}/{total}): {what}", r.name, r.stream);
            }
        })
        .await;
    if live {
        eprintln!();
    }
    reports
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Delivers the outbox to the NDJSON file, if one is named. A sink failure is reported, not
/// fatal: the pull is stored and the sink catches up from its position next time.
pub(crate) async fn deliver(store: &Arc<SqliteStore>, ndjson: Option<PathBuf>) -> bool {
    let Some(path) = ndjson else {
        return true;
    };
    let sink = NdjsonSink::new("ndjson", path);
    let store = store.clone();
    match tokio::task::spawn_blocking(move || sink.deliver(&store)).await {
        Ok(Ok(d)) => {
            eprintln!("Delivered {} events to the NDJSON file.", d.events);
            true
        }
        Ok(Err(e)) => {
            eprintln!(
                "error: {e} (the pulled versions are stored; the sink resumes from its position on the next run)"
            );
            false
        }
        Err(e) => {
            eprintln!("error: the NDJSON sink stopped: {e}");
            false
        }
    }
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
                    "{} pages read without $expand=alerts (incidents read one by one)",
                    r.expand_fallbacks
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
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into()),
                match &r.error {
                    Some(e) => format!("FAILED: {e}"),
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
