//! `xdrsync check-config`

use std::path::Path;
use std::process::ExitCode;

pub(crate) fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let (config, sinks) = super::load_config_and_sinks(path)?;
    let enabled = config.tenants.iter().filter(|t| t.enabled).count();
    println!(
        "{}: valid ({} tenants, {enabled} enabled; {} sinks; store {})",
        path.display(),
        config.tenants.len(),
        sinks.len(),
        config.store_path.display()
    );
    for s in &sinks {
        println!(
            "  sink {} ({}, format {}){}",
            s.common.name,
            s.kind(),
            s.common.format.as_str(),
            if s.enabled { "" } else { ", disabled" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
