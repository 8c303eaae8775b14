//! `xdrsync pull`: one pass over every enabled tenant.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use xdrsync_pipeline::{Pipeline, TenantReport};
use xdrsync_sinks::NdjsonSink;
use xdrsync_store::SqliteStore;

use crate::cli::PullArgs;

pub(crate) async fn run(args: PullArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config_path)?;
    let store = Arc::new(SqliteStore::open(&config.store_path)?);
    let pipeline = Pipeline::new(config, store.clone())?;
    let reports = pipeline.pull_all().await;
    if let Some(path) = args.ndjson {
        let sink = NdjsonSink::new("ndjson", path);
        let delivered = tokio::task::spawn_blocking(move || sink.deliver(&store)).await??;
        eprintln!("Delivered {} events to the NDJSON file.", delivered.events);
    }
    print!("{}", summary(&reports));
    Ok(exit_code(&reports))
}

/// The per-tenant summary table.
pub(crate) fn summary(reports: &[TenantReport]) -> String {
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.api.to_string(),
                r.stats.created.to_string(),
                r.stats.updated.to_string(),
                r.last_update
                    .or(r.cursor)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into()),
                match (&r.error, r.poison) {
                    (Some(e), _) => format!("FAILED: {e}"),
                    (None, 0) => "ok".into(),
                    (None, n) => format!("ok, {n} unreadable (see store poison table)"),
                },
            ]
        })
        .collect();
    crate::table::render(
        &["TENANT", "API", "NEW", "UPDATED", "LAST UPDATE", "STATUS"],
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
