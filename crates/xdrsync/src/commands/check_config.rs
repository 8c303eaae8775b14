//! `xdrsync check-config`

use std::path::Path;
use std::process::ExitCode;

pub(crate) fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = super::load_config(path)?;
    let enabled = config.tenants.iter().filter(|t| t.enabled).count();
    println!(
        "{}: valid ({} tenants, {enabled} enabled; store {})",
        path.display(),
        config.tenants.len(),
        config.store_path.display()
    );
    Ok(ExitCode::SUCCESS)
}
