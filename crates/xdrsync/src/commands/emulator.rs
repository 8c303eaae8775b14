//! `xdrsync emulator serve`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use xdrsync_emulator::Emulator;
use xdrsync_emulator::fixture::Fixture;

use crate::cli::{EmulatorCommand, ServeArgs};

pub(crate) async fn run(
    cmd: EmulatorCommand,
    fixture: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    match cmd {
        EmulatorCommand::Serve(args) => serve(args, fixture).await,
    }
}

async fn serve(args: ServeArgs, fixture: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    if !args.bind.ip().is_loopback() {
        if !args.allow_remote {
            anyhow::bail!(crate::cli::UsageError(format!(
                "--bind {}: the emulator serves its apps' secrets on /_emulator/…, so it listens on loopback only; add --allow-remote to serve it to other hosts anyway",
                args.bind
            )));
        }
        eprintln!(
            "warning: the emulator listens on {} (--allow-remote): anyone who can reach it can read its apps' secrets at /_emulator/…",
            args.bind
        );
    }
    // It holds app secrets (emulator.json) and TLS keys: private (0700).
    xdrsync_sinks::private_dir(&args.state_dir)?;
    // Absolute, so the paths in emulator.json work from any folder.
    let state_dir = fs_err::canonicalize(&args.state_dir)?;
    let (fixture, fixture_path) = match &fixture {
        Some(path) => (Fixture::load(path).map_err(fixture_error)?, path.clone()),
        None => (Fixture::default(), "(built-in)".into()),
    };
    let (mut config, cert_paths) = fixture
        .build(&fixture_path, &args.state_dir)
        .map_err(fixture_error)?;
    if let Some(scale) = args.time_scale {
        anyhow::ensure!(
            scale.is_finite() && scale > 0.0,
            "--time-scale must be a positive number"
        );
        config.time_scale = scale;
    }
    let tls = if args.tls {
        Some(xdrsync_emulator::tls::ensure(&state_dir.join("tls"))?)
    } else {
        None
    };
    let emulator = Emulator::start_with(config, args.bind, tls)
        .await?
        .with_cert_paths(cert_paths);
    let contract_path = state_dir.join("emulator.json");
    let contract = serde_json::to_string_pretty(&emulator.contract())?;
    xdrsync_sinks::write_atomic(&contract_path, contract.as_bytes())?;
    crate::text::outln!("Emulator listening on {}", emulator.base_url());
    crate::text::outln!(
        "Contract: {} (next: xdrsync init --emulator {})",
        contract_path.display(),
        contract_path.display()
    );
    wait_for_shutdown().await?;
    emulator.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// A fixture problem is a configuration error (exit code 2).
fn fixture_error(e: xdrsync_emulator::fixture::FixtureError) -> anyhow::Error {
    anyhow::Error::new(xdrsync_config::ConfigError::Invalid {
        path: e.path,
        field: "fixture".into(),
        message: e.message,
    })
}

async fn wait_for_shutdown() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
