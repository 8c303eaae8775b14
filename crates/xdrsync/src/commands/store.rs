//! `xdrsync store migrate` and `store copy`: the store itself, brought up to date on purpose
//! (before a cluster's workers start), or moved from one machine's SQLite file into the
//! PostgreSQL database of a cluster without losing or repeating an event.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use xdrsync_store::Store;

use crate::cli::{StoreCommand, StoreCopyArgs};
use crate::text::outln;

pub(crate) fn run(cmd: StoreCommand, config_path: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        StoreCommand::Migrate => {
            let config = super::load_config(config_path)?;
            // Opening migrates (each step once, under the store's lock).
            let store = super::open_store(&config)?;
            outln!(
                "Store {}: schema version {}, up to date.",
                store.location(),
                store.schema_version()?
            );
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Copy(args) => copy(args),
    }
}

fn copy(args: StoreCopyArgs) -> anyhow::Result<ExitCode> {
    let to = match (&args.to, &args.to_env) {
        (Some(to), _) => to.clone(),
        (None, Some(var)) => std::env::var(var)
            .with_context(|| format!("--to-env: environment variable {var} is not set"))?,
        (None, None) => anyhow::bail!(crate::cli::UsageError("give --to or --to-env".into())),
    };
    let from = open(&args.from, true).context("--from")?;
    let to = open(&to, false).context("--to")?;
    let started = std::time::Instant::now();
    let mut next_report = 50_000;
    let copied = xdrsync_store::copy::copy(from.as_ref(), to.as_ref(), 2_000, |n| {
        if n >= next_report {
            eprintln!("copied {n} versions");
            next_report += 50_000;
        }
    })?;
    outln!(
        "Copied {} versions and {} other rows from {} to {} in {:.1} s; every sink resumes from its position.",
        copied.versions,
        copied.rows,
        from.location(),
        to.location(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// A store named on the command line: `postgres://…`/`postgresql://…`, else `sqlite:PATH` or
/// a path. A source file must exist (opening would create an empty store).
fn open(spec: &str, must_exist: bool) -> anyhow::Result<Arc<dyn Store>> {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        return super::connect_postgres(spec, None);
    }
    let path = Path::new(spec.strip_prefix("sqlite:").unwrap_or(spec));
    if must_exist && !path.exists() {
        anyhow::bail!("{} does not exist", path.display());
    }
    Ok(Arc::new(xdrsync_store::SqliteStore::open(path)?))
}
