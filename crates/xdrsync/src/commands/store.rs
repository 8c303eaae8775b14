//! `xdrsync store migrate`: the store's schema, brought up to date on purpose (before a
//! cluster's workers start, or to check that a database is reachable and current).

use std::path::Path;
use std::process::ExitCode;

use crate::cli::StoreCommand;
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
    }
}
