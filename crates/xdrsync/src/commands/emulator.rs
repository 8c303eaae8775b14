//! `xdrsync emulator serve`

use std::process::ExitCode;

use anyhow::Context as _;
use xdrsync_emulator::{Emulator, EmulatorConfig};

use crate::cli::{EmulatorCommand, ServeArgs};

pub(crate) async fn run(cmd: EmulatorCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EmulatorCommand::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let emulator = Emulator::start(EmulatorConfig::default(), args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    fs_err::create_dir_all(&args.state_dir)?;
    let contract_path = args.state_dir.join("emulator.json");
    let contract = serde_json::to_string_pretty(&emulator.contract())?;
    xdrsync_sinks::write_atomic(&contract_path, contract.as_bytes())?;
    println!(
        "Emulator listening on {} (contract: {})",
        emulator.base_url(),
        contract_path.display()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    emulator.stop().await;
    Ok(ExitCode::SUCCESS)
}
