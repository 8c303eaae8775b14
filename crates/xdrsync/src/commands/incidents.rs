//! `xdrsync incidents list`: the Hello World script as one command.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::{IncidentsCommand, ListArgs};

pub(crate) async fn run(cmd: IncidentsCommand, config_path: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        IncidentsCommand::List(args) => list(args, config_path).await,
    }
}

async fn list(args: ListArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let since = super::since(&args.since)?;
    let config = super::load_config(config_path)?;
    let tenant = config.require_tenant(&args.tenant)?;
    let vault = if tenant.delegated {
        Some(xdrsync_pipeline::open_vault(&config)?)
    } else {
        None
    };
    let target = xdrsync_pipeline::target(tenant, &config, vault.as_ref())?;
    let client = xdrsync_pipeline::api_client(&config)?;
    let listing = client
        .list_incidents(&target, since, None)
        .await
        .with_context(|| format!("listing incidents of tenant {}", tenant.name))?;
    let mut raws: Vec<String> = listing.records.iter().map(|f| f.raw.clone()).collect();
    raws.extend(listing.poison.iter().map(|p| p.raw.clone()));
    for p in &listing.poison {
        eprintln!(
            "warning: incident {} could not be normalized ({}); it is included as received",
            p.item_id.as_deref().unwrap_or("?"),
            p.reason
        );
    }
    match &args.out {
        Some(path) => {
            xdrsync_sinks::write_json_array(path, &raws)?;
            eprintln!(
                "Wrote {} incidents of tenant {} updated since {since} to {}",
                raws.len(),
                tenant.name,
                path.display()
            );
        }
        None => print!("{}", xdrsync_sinks::json_array(&raws)),
    }
    Ok(ExitCode::SUCCESS)
}
