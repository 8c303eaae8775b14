//! `xdrsync hunt 'KQL' --tenant T … | --all`: advanced hunting across customers.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{Map, Value};

use crate::cli::{HuntArgs, HuntOutput};

pub(crate) async fn run(args: HuntArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    if args.tenants.is_empty() && !args.all {
        anyhow::bail!(crate::cli::UsageError(
            "say where to hunt: --tenant T (repeatable) or --all".into()
        ));
    }
    let config = super::load_config(config_path)?;
    let tenants: Vec<&xdrsync_config::Tenant> = if args.all {
        config.tenants.iter().filter(|t| t.enabled).collect()
    } else {
        super::select_tenants(&config, &args.tenants)?
    };
    let timespan = args
        .timespan
        .as_deref()
        .map(xdrsync_model::parse_duration)
        .transpose()
        .map_err(|e| crate::cli::UsageError(format!("--timespan: {e}")))?
        .map(xdrsync_pipeline::hunt::iso_timespan);
    let vault = if tenants.iter().any(|t| t.delegated) {
        Some(xdrsync_pipeline::open_vault(&config)?)
    } else {
        None
    };
    let client = super::api_client(&config)?;
    let results = xdrsync_pipeline::hunt::hunt(
        &config,
        &client,
        vault.as_ref(),
        &tenants,
        &args.query,
        timespan.as_deref(),
    )
    .await;
    // Every row with its tenant first; the columns in the order they first appear.
    let mut columns: Vec<String> = vec!["TenantName".into(), "TenantId".into()];
    let mut rows: Vec<Map<String, Value>> = Vec::new();
    let mut failed = 0;
    for r in &results {
        match &r.result {
            Ok(h) => {
                for (c, _) in &h.columns {
                    if !columns.contains(c) {
                        columns.push(c.clone());
                    }
                }
                for row in &h.rows {
                    let mut tagged = Map::new();
                    tagged.insert("TenantName".into(), Value::String(r.name.clone()));
                    tagged.insert("TenantId".into(), Value::String(r.tenant_id.to_string()));
                    tagged.extend(row.clone());
                    rows.push(tagged);
                }
                eprintln!(
                    "{}: {}, hunting quota {} of {} calls this minute{}",
                    r.name,
                    crate::text::plural(h.rows.len() as u64, "row"),
                    r.quota.0,
                    r.quota.1,
                    if h.truncated {
                        " (TRUNCATED at the service's row limit: narrow the query or the timespan)"
                    } else {
                        ""
                    }
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!(
                    "{}: FAILED (hunting quota {} of {} calls this minute): {}",
                    r.name,
                    r.quota.0,
                    r.quota.1,
                    crate::text::escape(e)
                );
            }
        }
    }
    let cell = |v: Option<&Value>| match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    match args.output {
        HuntOutput::Ndjson => {
            let mut out = String::new();
            for r in &rows {
                out.push_str(&Value::Object(r.clone()).to_string());
                out.push('\n');
            }
            crate::text::print_stdout(&out)?;
        }
        HuntOutput::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(&columns)?;
            for r in &rows {
                w.write_record(columns.iter().map(|c| cell(r.get(c))))?;
            }
            let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
            crate::text::print_stdout(&String::from_utf8_lossy(&bytes))?;
        }
        HuntOutput::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    columns
                        .iter()
                        .map(|c| crate::text::clip(&crate::text::escape(&cell(r.get(c))), 60))
                        .collect()
                })
                .collect();
            let headers: Vec<&str> = columns.iter().map(String::as_str).collect();
            crate::text::print_stdout(&crate::table::render(&headers, &table))?;
        }
    }
    eprintln!(
        "{} from {} of {} tenants{}.",
        crate::text::plural(rows.len() as u64, "row"),
        results.len() - failed,
        results.len(),
        if failed > 0 {
            format!(" ({failed} failed; their rows are missing)")
        } else {
            String::new()
        }
    );
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
