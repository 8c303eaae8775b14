//! `xdrsync incidents list`: the Hello World script as one command.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::{IncidentsCommand, ListArgs};

pub(crate) async fn run(cmd: IncidentsCommand, config_path: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        IncidentsCommand::List(args) => list(args, config_path).await,
        IncidentsCommand::Update(args) => {
            super::actions::update(args, xdrsync_model::action::Target::Incident, config_path).await
        }
    }
}

async fn list(args: ListArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let since = super::since(&args.since)?;
    let config = super::load_config(config_path)?;
    let tenants = super::select_tenants(&config, &args.tenants)?;
    let vault = if tenants.iter().any(|t| t.delegated) {
        Some(xdrsync_pipeline::open_vault(&config)?)
    } else {
        None
    };
    let client = super::api_client(&config)?;
    let mut raws: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for tenant in &tenants {
        let target = xdrsync_pipeline::target(tenant, &config, vault.as_ref())?;
        let listing = client
            .list_incidents(&target, since, None)
            .await
            .with_context(|| format!("listing incidents of tenant {}", tenant.name))?;
        raws.extend(listing.records.iter().map(|f| f.raw.clone()));
        for f in &listing.records {
            if let Some(i) = f.record.incident() {
                rows.push(vec![
                    tenant.name.clone(),
                    i.incident_id.to_string(),
                    crate::text::time(i.last_update),
                    i.severity.as_str().to_owned(),
                    crate::text::escape(&i.status),
                    crate::text::clip(&crate::text::escape(&i.title), 70),
                ]);
            }
        }
        raws.extend(listing.poison.iter().map(|p| p.raw.clone()));
        for p in &listing.poison {
            eprintln!(
                "warning: incident {} of tenant {} could not be normalized ({}); it is included as received",
                crate::text::escape(p.item_id.as_deref().unwrap_or("?")),
                tenant.name,
                crate::text::escape(&p.reason)
            );
        }
    }
    let names = tenants
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if args.output == Some(crate::cli::OutputFormat::Table) {
        if args.out.is_some() {
            anyhow::bail!(crate::cli::UsageError(
                "--output table prints to the terminal; --out writes the JSON array".into()
            ));
        }
        crate::text::print_stdout(&crate::table::render(
            &["TENANT", "ID", "LAST UPDATE", "SEVERITY", "STATUS", "TITLE"],
            &rows,
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    match &args.out {
        Some(path) => {
            xdrsync_sinks::write_json_array(path, &raws)?;
            eprintln!(
                "Wrote {} of tenant{} {names} updated since {since} to {}",
                crate::text::plural(raws.len() as u64, "incident"),
                if tenants.len() == 1 { "" } else { "s" },
                path.display()
            );
        }
        None => crate::text::print_stdout(&xdrsync_sinks::json_array(&raws))?,
    }
    Ok(ExitCode::SUCCESS)
}
