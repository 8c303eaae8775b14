//! `xdrsync status` (what the store knows about each tenant's streams) and `xdrsync reconcile`
//! (what the API holds against what the store has, per stream).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use xdrsync_model::{StreamKind, Timestamp};
use xdrsync_pipeline::Pipeline;
use xdrsync_store::SqliteStore;

use crate::cli::ReconcileArgs;

pub(crate) fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let (config, configured_sinks) = super::load_config_and_sinks(config_path)?;
    let store = SqliteStore::open(&config.store_path)?;
    let now = Timestamp::now();
    let health = store.health()?;
    let mut degraded = 0;
    let mut rows = Vec::new();
    let streams = config
        .tenants
        .iter()
        .filter(|t| t.enabled)
        .flat_map(|t| t.streams.iter().map(move |s| (t, *s)));
    for (t, stream) in streams {
        let Some(h) = health
            .iter()
            .find(|h| h.tenant_id == t.tenant_id && h.stream == stream.as_str())
        else {
            rows.push(vec![
                t.name.clone(),
                stream.to_string(),
                "never".into(),
                "-".into(),
                "0".into(),
                "0".into(),
                "0".into(),
                "not pulled yet".into(),
            ]);
            continue;
        };
        let lag = h
            .cursor
            .map(|c| human(now.ticks() - c.ticks()))
            .unwrap_or_else(|| "-".into());
        let status = match &h.degraded {
            Some(reason) => {
                degraded += 1;
                format!("DEGRADED ({} failed pulls in a row): {reason}", h.failures)
            }
            None => match &h.partial {
                Some(w) => format!("ok, last answer partial (206 Warning: {w})"),
                None => "ok".into(),
            },
        };
        rows.push(vec![
            t.name.clone(),
            h.stream.clone(),
            h.last_success
                .map(|s| s.to_string())
                .unwrap_or_else(|| "never".into()),
            lag,
            h.items.to_string(),
            h.versions.to_string(),
            h.poison.to_string(),
            status,
        ]);
    }
    print!(
        "{}",
        crate::table::render(
            &[
                "TENANT",
                "STREAM",
                "LAST SUCCESS",
                "LAG",
                "ITEMS",
                "VERSIONS",
                "UNREADABLE",
                "STATUS"
            ],
            &rows
        )
    );
    let mut sinks = store.sink_positions()?;
    // A configured sink that never delivered has no position yet: all of the outbox is its
    // backlog, and that is exactly what an operator needs to see.
    for v in configured_sinks {
        if v.enabled && !sinks.iter().any(|(n, _, _)| *n == v.common.name) {
            sinks.push((v.common.name.clone(), 0, "never".into()));
        }
    }
    if !sinks.is_empty() {
        println!();
        let mut rows: Vec<Vec<String>> = Vec::new();
        for (name, seq, at) in &sinks {
            // Counted, not `last seq − position`: seq has gaps.
            let backlog = store.count_after(*seq)?;
            rows.push(vec![
                name.clone(),
                seq.to_string(),
                backlog.to_string(),
                at.clone(),
            ]);
        }
        print!(
            "{}",
            crate::table::render(&["SINK", "POSITION", "BACKLOG", "UPDATED"], &rows)
        );
    }
    Ok(if degraded > 0 {
        ExitCode::from(crate::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

/// `1h 05m`, `3m 12s`, `40s` from 100 ns ticks.
fn human(ticks: i64) -> String {
    let s = (ticks / 10_000_000).max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

pub(crate) async fn reconcile(args: ReconcileArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let since = super::since(&args.since)?;
    let config = super::load_config(config_path)?;
    let store = Arc::new(SqliteStore::open(&config.store_path)?);
    let tenants: Vec<_> = config
        .tenants
        .iter()
        .filter(|t| t.enabled)
        .cloned()
        .collect();
    let pipeline = Pipeline::new(config, store)?;
    let mut bad = false;
    let mut rows = Vec::new();
    let mut details = String::new();
    for (t, stream) in tenants
        .iter()
        .flat_map(|t| t.streams.iter().map(move |s| (t, *s)))
    {
        let r = pipeline.reconcile(t, stream, since).await;
        bad |= r.error.is_some() || !r.missing.is_empty() || !r.extra.is_empty();
        let item = match stream {
            StreamKind::Incidents => "incident",
            StreamKind::Alerts => "alert",
            StreamKind::Detections => "detection",
        };
        for (id, api, stored) in &r.missing {
            details.push_str(&format!(
                "{}: MISSING {item} {id} at {api} (store has {})\n",
                r.name,
                stored
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "nothing".into())
            ));
        }
        for (id, stored) in &r.extra {
            details.push_str(&format!(
                "{}: EXTRA {item} {id} at {stored} (the API does not list it at that version)\n",
                r.name
            ));
        }
        rows.push(vec![
            r.name.clone(),
            stream.to_string(),
            r.matched.to_string(),
            r.missing.len().to_string(),
            r.extra.len().to_string(),
            r.pending.to_string(),
            r.compared_from
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
            r.error
                .clone()
                .map(|e| format!("FAILED: {e}"))
                .unwrap_or_else(|| {
                    if r.missing.is_empty() && r.extra.is_empty() {
                        "ok".into()
                    } else {
                        "DIFFERS".into()
                    }
                }),
        ]);
    }
    print!(
        "{}",
        crate::table::render(
            &[
                "TENANT",
                "STREAM",
                "MATCHED",
                "MISSING",
                "EXTRA",
                "NOT PULLED YET",
                "FROM",
                "STATUS"
            ],
            &rows
        )
    );
    if !details.is_empty() {
        println!();
        print!("{details}");
    }
    Ok(if bad {
        ExitCode::from(crate::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
