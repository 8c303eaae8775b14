//! The `xdrsync` command: pulls Microsoft Defender XDR incidents for one tenant or hundreds and
//! delivers them once into the systems a security team already runs.
//!
//! This binary is thin: it parses the command line, sets up logging, runs a command from
//! [`commands`], and maps errors to exit codes in one place (0 success, 1 a run that failed,
//! 2 bad configuration or usage). It is the only crate that prints to stdout.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod inbound;
mod progress;
mod server;
mod table;
mod text;

use cli::{Cli, Command};

/// Parsing API pages is many small allocations; mimalloc makes them cheap (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code of a run that failed.
const EXIT_FAILURE: u8 = 1;
/// Exit code of a configuration or usage error (clap uses 2 for usage errors too).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref(), cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(code) => code,
        Err(err) if err.chain().any(|c| c.is::<text::StdoutClosed>()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", text::escape_keep_lines(&format!("{err:#}")));
            if err
                .chain()
                .any(|c| c.is::<xdrsync_config::ConfigError>() || c.is::<cli::UsageError>())
            {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // `--config` names the file of the command at hand: the xdrsync config, or for
    // `emulator serve` the emulator's fixture.
    let fixture = cli.config.clone();
    let config_path = cli.config.clone().unwrap_or_else(|| "xdrsync.toml".into());
    match cli.command {
        Command::Demo(args) => commands::demo::run(args).await,
        Command::Incidents(cmd) => commands::incidents::run(cmd, &config_path).await,
        Command::Alerts(cmd) => commands::actions::alerts(cmd, &config_path).await,
        Command::Actions(cmd) => commands::actions::run(cmd, &config_path).await,
        Command::Hunt(args) => commands::hunt::run(args, &config_path).await,
        Command::Pull(args) => commands::pull::run(args, &config_path).await,
        Command::Backfill(args) => commands::pull::backfill(args, &config_path).await,
        Command::Run(args) => commands::run::run(args, &config_path).await,
        Command::Status(args) => commands::status::run(args, &config_path),
        Command::Reconcile(args) => commands::status::reconcile(args, &config_path).await,
        Command::Generate(args) => commands::generate::run(args),
        Command::Replay(args) => commands::replay::run(args, &config_path).await,
        Command::CheckConfig(args) => commands::check_config::run(args, &config_path),
        Command::Emulator(cmd) => commands::emulator::run(cmd, fixture).await,
        Command::Init(args) => commands::init::run(args),
        Command::Auth(cmd) => commands::auth::run(cmd, &config_path).await,
        Command::Store(cmd) => commands::store::run(cmd, &config_path),
    }
}

/// Logs go to standard error: human lines (coloured only on a terminal, never with
/// `NO_COLOR` set), or one JSON object per line for log shippers (`--log-format json`).
fn init_logging(level: Option<&str>, format: cli::LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = level
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_env(xdrsync_config::env::XDRSYNC_LOG).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        cli::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        cli::LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init()
        }
    }
}
