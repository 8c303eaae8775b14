//! `xdrsync check-config`: everything that can be checked without contacting anything.
//!
//! The file is parsed and validated (every field, every `[[sinks]]`), then each credential
//! source is checked where it lives: secret environment variables set, secret, certificate,
//! CA and vault key files readable, secret commands present on `PATH`. `--resolve` also reads
//! the secrets (running the commands) to prove each produces a value; none is printed.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::cli::{CheckConfigArgs, OutputFormat};
use crate::text::outln;

pub(crate) fn run(args: CheckConfigArgs, path: &Path) -> anyhow::Result<ExitCode> {
    let (config, sinks) = super::load_config_and_sinks(path)?;
    let problems: Vec<String> = config
        .check_sources(args.resolve)
        .iter()
        .map(|p| format!("{}: {p}", path.display()))
        .collect();
    let enabled = config.tenants.iter().filter(|t| t.enabled).count();
    match args.output {
        OutputFormat::Json => {
            let doc = json!({
                "path": path.display().to_string(),
                "valid": problems.is_empty(),
                "tenants": config.tenants.iter().map(|t| json!({
                    "name": t.name,
                    "tenant_id": t.tenant_id.as_str(),
                    "api": t.api.to_string(),
                    "enabled": t.enabled,
                    "streams": t.streams.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "sinks": sinks.iter().map(|s| json!({
                    "name": s.common.name,
                    "kind": s.kind(),
                    "format": s.common.format.as_str(),
                    "enabled": s.enabled,
                })).collect::<Vec<_>>(),
                "hunts": config.hunts.iter().map(|h| json!({
                    "name": h.name,
                    "enabled": h.enabled,
                    "tenants": config.hunt_tenants(h).map(|t| t.name.as_str()).collect::<Vec<_>>(),
                    "interval_secs": h.interval.as_secs(),
                    "timespan_secs": h.timespan.num_seconds(),
                    "severity": h.severity.as_str(),
                })).collect::<Vec<_>>(),
                "store": config.store_path.display().to_string(),
                "problems": problems,
                "warnings": config.warnings,
            });
            outln!("{doc:#}");
        }
        OutputFormat::Table => {
            outln!(
                "{}: {} ({}, {enabled} enabled; {}; store {})",
                path.display(),
                if problems.is_empty() {
                    "valid"
                } else {
                    "INVALID"
                },
                crate::text::plural(config.tenants.len() as u64, "tenant"),
                crate::text::plural(sinks.len() as u64, "sink"),
                config.store_path.display()
            );
            for s in &sinks {
                outln!(
                    "  sink {} ({}, format {}){}",
                    s.common.name,
                    s.kind(),
                    s.common.format.as_str(),
                    if s.enabled { "" } else { ", disabled" }
                );
            }
            for h in &config.hunts {
                outln!(
                    "  hunt {} every {} over {} in {}{}",
                    h.name,
                    crate::text::duration(i64::try_from(h.interval.as_secs()).unwrap_or(i64::MAX)),
                    crate::text::duration(h.timespan.num_seconds()),
                    crate::text::plural(config.hunt_tenants(h).count() as u64, "tenant"),
                    if h.enabled { "" } else { ", disabled" }
                );
            }
            for p in &problems {
                outln!("PROBLEM: {p}");
            }
            if !args.resolve && problems.is_empty() {
                outln!("(secrets were not read; `--resolve` reads them and runs secret commands)");
            }
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_CONFIG)
    })
}
