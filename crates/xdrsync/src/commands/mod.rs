//! One module per subcommand.

pub(crate) mod actions;
pub(crate) mod auth;
pub(crate) mod check_config;
pub(crate) mod demo;
pub(crate) mod emulator;
pub(crate) mod generate;
pub(crate) mod hunt;
pub(crate) mod incidents;
pub(crate) mod init;
pub(crate) mod pull;
pub(crate) mod replay;
pub(crate) mod run;
pub(crate) mod status;
pub(crate) mod store;
pub(crate) mod worker;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use xdrsync_config::Config;
use xdrsync_store::Store;

/// The PostgreSQL store at `url`, with TLS by the PostgreSQL sink's rules: the URL's
/// `sslmode` (`verify-full` unless the server is on this machine), `ca_file` for its CA,
/// plaintext off this machine only with `sslmode=disable`.
pub(crate) fn connect_postgres(
    url: &str,
    ca_file: Option<&Path>,
) -> anyhow::Result<Arc<dyn Store>> {
    let location = xdrsync_store::postgres::redacted(url);
    let (config, tls) =
        xdrsync_sinks::postgres::connection(url, None, ca_file, None).map_err(|message| {
            xdrsync_store::StoreError::Postgres {
                location: location.clone(),
                message,
            }
        })?;
    Ok(Arc::new(xdrsync_store::postgres::PgStore::connect_with(
        config, tls, &location,
    )?))
}

/// How the config names its store, to tell whether a reloaded config names the same one:
/// the SQLite file's path, or where the PostgreSQL URL is read from (never the URL itself).
pub(crate) fn store_named(config: &Config) -> String {
    match &config.store_url {
        Some(url) => format!(
            "postgres from env {:?} file {:?} command {:?} inline {}",
            url.env,
            url.file,
            url.command,
            url.value.is_some()
        ),
        None => format!("sqlite {}", config.store_path.display()),
    }
}

/// The store the config names: the PostgreSQL database of `[store] url` (its secret read
/// now), else the SQLite file of `[store] path`; either is migrated to this release's schema.
pub(crate) fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.store_url {
        Some(url) => {
            let url = url.resolve("store.url")?;
            connect_postgres(url.expose(), config.store_ca_file.as_deref())?
        }
        None => Arc::new(xdrsync_store::SqliteStore::open(&config.store_path)?),
    })
}

/// The API client of a command that does not otherwise use the store (`hunt`, `incidents`):
/// on a PostgreSQL store it paces with the cluster through the store's ledger (a store it
/// cannot reach leaves it pacing on its own calls, with a warning); on SQLite, through the
/// ledger file beside the store.
pub(crate) fn api_client(config: &Config) -> anyhow::Result<xdrsync_api_client::ApiClient> {
    if config.store_url.is_some() {
        match open_store(config) {
            Ok(store) => return Ok(xdrsync_pipeline::api_client_on(config, store.as_ref())?),
            Err(e) => eprintln!(
                "warning: the store is out of reach ({e:#}); this command paces on its own calls only"
            ),
        }
    }
    Ok(xdrsync_pipeline::api_client(config)?)
}

/// `--since`: a duration back from now (`48h`, `7d`, `30m`) or an instant
/// (`2026-11-01T00:00:00Z`). An unreadable value, or an instant in the future, is a usage
/// error (exit 2) naming the flag.
pub(crate) fn since(text: &str) -> Result<xdrsync_model::Timestamp, xdrsync_config::ConfigError> {
    let usage = |message: String| xdrsync_config::ConfigError::Usage {
        flag: "--since".into(),
        message,
    };
    let now = xdrsync_model::Timestamp::now();
    if let Ok(period) = xdrsync_model::parse_duration(text) {
        return Ok(now.sub(period));
    }
    match text.trim().parse::<xdrsync_model::Timestamp>() {
        Ok(t) if t > now => Err(usage(format!(
            "{text} is in the future; give a time in the past or a duration such as 7d"
        ))),
        Ok(t) => Ok(t),
        Err(_) => Err(usage(format!(
            "`{text}` is neither a duration (30m, 48h, 7d, 2w) nor a time (2026-11-01T00:00:00Z)"
        ))),
    }
}

/// The tenants named by repeated `--tenant` values (name, tenant id or domain), in the
/// order given, each once; every tenant when none is given. An unknown value is a usage error
/// (exit 2) that lists the configured tenants.
pub(crate) fn select_tenants<'c>(
    config: &'c Config,
    keys: &[String],
) -> Result<Vec<&'c xdrsync_config::Tenant>, xdrsync_config::ConfigError> {
    if keys.is_empty() {
        return Ok(config.tenants.iter().collect());
    }
    let mut chosen: Vec<&xdrsync_config::Tenant> = Vec::new();
    for k in keys {
        let t = config.require_tenant(k)?;
        if !chosen.iter().any(|c| c.name == t.name) {
            chosen.push(t);
        }
    }
    Ok(chosen)
}

/// [`load_config_and_sinks`] narrowed to a command's `--tenant`/`--stream` selection.
pub(crate) fn load_selected(
    path: &Path,
    select: &crate::cli::Selection,
) -> anyhow::Result<(Config, Vec<xdrsync_sinks::ValidatedSink>)> {
    let (config, sinks) = load_config_and_sinks(path)?;
    Ok((config.select(&select.tenants, &select.streams)?, sinks))
}

/// Loads and validates the config file, with a hint when it does not exist.
pub(crate) fn load_config(path: &Path) -> anyhow::Result<Config> {
    Ok(load_config_and_sinks(path)?.0)
}

/// [`load_config`] and its validated `[[sinks]]`, for the commands that use them. The sinks
/// are validated for every command (no I/O), so a typo in one fails every command at once.
pub(crate) fn load_config_and_sinks(
    path: &Path,
) -> anyhow::Result<(Config, Vec<xdrsync_sinks::ValidatedSink>)> {
    if !path.exists() {
        return Err(xdrsync_config::ConfigError::Read {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        })
        .context("no configuration: pass --config FILE, set XDRSYNC_CONFIG, or run `xdrsync demo` to try the built-in emulator");
    }
    let config = Config::load(path)?;
    let sinks = xdrsync_sinks::validate(&config)?;
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    Ok((config, sinks))
}
