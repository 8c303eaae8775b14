//! The xdrsync configuration file.
//!
//! Configuration is **parsed** (serde, `deny_unknown_fields`, so a typo is an error that names the
//! key and its line), then **validated** into [`Config`] (ids, URLs, references between sections,
//! exactly one secret source per credential), and secrets are **resolved** from env vars or files
//! only when a command needs them ([`SecretSource::resolve`]), so `check-config` can run without
//! any secret present. Every field is documented here; the docs double as the user reference.
//!
//! Pipeline topology (tenants, store, endpoints) lives in the file; process behaviour (log level,
//! `--dir`) is given on the command line.

use std::path::{Path, PathBuf};

use url::Url;
pub use xdrsync_model::TokenVersion;
use xdrsync_model::{ApiKind, StreamKind, TenantId};

mod cloud;
pub mod env;
mod error;
mod file;
mod secret;
mod validate;

pub use error::*;
pub use file::*;
pub use secret::*;

pub use cloud::{Cloud, Endpoints};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[store] retention_days` (0: keep everything).
    pub retention_days: u32,
    /// `[server] listen` (`None`: no server).
    pub server_listen: Option<std::net::SocketAddr>,
    /// `[server] actions_*`: how `POST /actions` is authenticated (`None`: it is off).
    pub inbound_actions: Option<InboundActions>,
    /// The file it was read from.
    pub path: PathBuf,
    /// The SQLite store file (absolute or relative to the working directory).
    pub store_path: PathBuf,
    /// `[store] url`: the PostgreSQL store, instead of the file at `store_path` (the rate
    /// ledger is then in the database too, shared by every worker).
    pub store_url: Option<SecretSource>,
    /// `[store] ca_file`: the CA of the PostgreSQL store's server.
    pub store_ca_file: Option<PathBuf>,
    /// `[cluster]`: how `run` workers on the PostgreSQL store share the work.
    pub cluster: ClusterSettings,
    /// Sync settings.
    pub sync: SyncSettings,
    /// Enabled and disabled tenants, in file order.
    pub tenants: Vec<Tenant>,
    /// Extra CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// The encrypted token vault.
    pub vault_file: PathBuf,
    /// The vault key file, if not given by env.
    pub vault_key_file: Option<PathBuf>,
    /// Things that work but deserve a warning (e.g. an allowed inline secret).
    pub warnings: Vec<String>,
    /// The HTTP proxy, if configured.
    pub proxy: Option<xdrsync_model::SafeUrl>,
    /// `[cloud] connect_to`: the address every Microsoft host of the config is reached at.
    pub connect_to: Option<std::net::SocketAddr>,
    /// The `[[sinks]]` sections as written; `xdrsync_sinks::config::validate` checks them.
    pub sinks: Vec<toml::Table>,
    /// Whether inline secrets (`{ value = "…" }`) are allowed.
    pub allow_inline_secrets: bool,
    /// Scheduled hunts (`[[hunts]]`), enabled or not, in file order.
    pub hunts: Vec<Hunt>,
}

/// A validated `[[hunts]]` section.
#[derive(Debug, Clone)]
pub struct Hunt {
    /// Its unique name.
    pub name: String,
    /// The KQL query.
    pub query: String,
    /// The names of the tenants it runs in (empty: every enabled tenant).
    pub tenants: Vec<String>,
    /// Time between runs in a tenant.
    pub interval: std::time::Duration,
    /// How far back the query looks.
    pub timespan: chrono::Duration,
    /// Its rows' severity.
    pub severity: xdrsync_model::Severity,
    /// Whether `run` runs it.
    pub enabled: bool,
}

impl Config {
    /// The enabled tenants `hunt` runs in, in config order.
    pub fn hunt_tenants<'a>(&'a self, hunt: &'a Hunt) -> impl Iterator<Item = &'a Tenant> + 'a {
        self.tenants.iter().filter(move |t| {
            t.enabled && (hunt.tenants.is_empty() || hunt.tenants.contains(&t.name))
        })
    }
}

/// How a SOAR's `POST /actions` is authenticated.
#[derive(Debug, Clone)]
pub struct InboundActions {
    /// The HMAC key of signed requests.
    pub hmac_secret: Option<SecretSource>,
    /// The bearer token.
    pub token: Option<SecretSource>,
    /// The replay window.
    pub replay_window: std::time::Duration,
}

/// Validated `[cluster]` (the defaults when it is absent).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// How long a lease lasts without renewal.
    pub lease: std::time::Duration,
    /// This worker's name (`None`: the host name and the process id).
    pub worker: Option<String>,
}

/// Validated `[sync]`.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// First-pull lookback.
    pub initial_lookback: chrono::Duration,
    /// Overlap re-read before the cursor.
    pub overlap: chrono::Duration,
    /// Graph page size.
    pub graph_page_size: u32,
    /// XDR page size.
    pub xdr_page_size: u32,
    /// Alert streams' page size.
    pub alert_page_size: u32,
    /// Most attempts per request.
    pub retry_attempts: u32,
    /// First retry wait.
    pub retry_base: std::time::Duration,
    /// Longest retry wait.
    pub retry_max: std::time::Duration,
    /// Pace requests inside the documented quotas.
    pub rate_budget: bool,
    /// Quota windows run this many times faster (emulator `--time-scale`).
    pub quota_time_scale: f64,
    /// Tenants pulled at once.
    pub concurrent_tenants: usize,
    /// `xdrsync run`: time between passes.
    pub interval: std::time::Duration,
    /// The largest API response body read, in bytes.
    pub max_response_bytes: usize,
}

/// A validated tenant.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// Its short name.
    pub name: String,
    /// Its id (canonical form).
    pub tenant_id: TenantId,
    /// Its other verified domains, lower case.
    pub domains: Vec<String>,
    /// API to pull.
    pub api: ApiKind,
    /// Client id.
    pub client_id: String,
    /// How the app authenticates.
    pub credential: CredentialSource,
    /// The field path of the credential, for error messages (e.g. `apps[0].client_secret`).
    pub credential_field: String,
    /// Token endpoint version.
    pub token_version: TokenVersion,
    /// Hosts and token audiences.
    pub endpoints: Endpoints,
    /// Whether it is pulled.
    pub enabled: bool,
    /// Whether it uses the stored delegated sign-in.
    pub delegated: bool,
    /// The streams it pulls, in a fixed order (incidents, alerts, detections).
    pub streams: Vec<StreamKind>,
    /// SIEM API filters for the `detections` stream.
    pub siem: SiemSection,
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs_err::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            source: std::io::Error::new(e.kind(), e.to_string()),
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates TOML text; relative paths resolve against `path`'s folder.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        validate::validate(file, path)
    }

    /// Finds an enabled or disabled tenant by name, tenant id (GUID) or verified domain,
    /// case-insensitively.
    pub fn tenant(&self, key: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.matches(key))
    }

    /// [`Config::tenant`] for a command-line `--tenant`: a usage error listing the configured
    /// tenants when none matches.
    pub fn require_tenant(&self, key: &str) -> Result<&Tenant, ConfigError> {
        self.tenant(key).ok_or_else(|| self.unknown_tenant(key))
    }

    fn unknown_tenant(&self, key: &str) -> ConfigError {
        let configured = self
            .tenants
            .iter()
            .map(|t| format!("{} ({})", t.name, t.tenant_id))
            .collect::<Vec<_>>();
        ConfigError::Usage {
            flag: "--tenant".into(),
            message: format!(
                "no tenant named `{key}` (by name, tenant id or domain) in {}; configured: {}",
                self.path.display(),
                if configured.is_empty() {
                    "none".to_owned()
                } else {
                    configured.join(", ")
                }
            ),
        }
    }

    /// The config narrowed to the `--tenant` and `--stream` values of a command: tenants not
    /// named are disabled, and the named ones pull only the named streams they have. Empty
    /// lists select everything enabled. A named tenant that is disabled in the file, a value
    /// that names nothing, or a selection with no (tenant, stream) left is a usage error.
    pub fn select(&self, tenants: &[String], streams: &[String]) -> Result<Config, ConfigError> {
        let wanted_streams = parse_streams(streams)?;
        let mut config = self.clone();
        if !tenants.is_empty() {
            let mut chosen = Vec::new();
            for key in tenants {
                let t = self.require_tenant(key)?;
                if !t.enabled {
                    return Err(ConfigError::Usage {
                        flag: "--tenant".into(),
                        message: format!(
                            "tenant `{}` is disabled (`enabled = false` in {}); enable it to pull it",
                            t.name,
                            self.path.display()
                        ),
                    });
                }
                chosen.push(t.name.clone());
            }
            for t in &mut config.tenants {
                t.enabled = t.enabled && chosen.contains(&t.name);
            }
        }
        if !wanted_streams.is_empty() {
            for t in &mut config.tenants {
                t.streams.retain(|s| wanted_streams.contains(s));
            }
            if !config
                .tenants
                .iter()
                .any(|t| t.enabled && !t.streams.is_empty())
            {
                return Err(ConfigError::Usage {
                    flag: "--stream".into(),
                    message: format!("no selected tenant pulls {}", streams.join(" or ")),
                });
            }
        }
        Ok(config)
    }
}

/// Command-line `--stream` values as stream kinds (each once, any case); an unknown one is a
/// usage error listing the streams.
pub fn parse_streams(streams: &[String]) -> Result<Vec<StreamKind>, ConfigError> {
    let mut kinds = Vec::new();
    for s in streams {
        let kind = StreamKind::parse(&s.to_ascii_lowercase())
            .filter(StreamKind::is_pulled)
            .ok_or_else(|| ConfigError::Usage {
                flag: "--stream".into(),
                message: format!(
                    "unknown stream `{s}`; streams are {} (scheduled hunts' rows are found by `[[hunts]]`, not pulled)",
                    StreamKind::PULLED.map(|k| k.as_str()).join(", ")
                ),
            })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

impl Tenant {
    /// Whether `key` names this tenant: its name, its tenant id or one of its domains,
    /// case-insensitively.
    pub fn matches(&self, key: &str) -> bool {
        let key = key.trim();
        self.name.eq_ignore_ascii_case(key)
            || self.tenant_id.as_str().eq_ignore_ascii_case(key)
            || self.domains.iter().any(|d| d.eq_ignore_ascii_case(key))
    }
}

/// `8-4-4-4-12` hexadecimal, the shape of every Entra tenant and application id.
pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_domain(s: &str) -> bool {
    s.contains('.')
        && s.split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// Parses a URL for a config field.
fn parse_url(field: &str, value: &str) -> Result<Url, (String, String)> {
    https_or_loopback(value).map_err(|m| (field.to_owned(), m))
}

/// Parses a URL that must be https, or plain http to a loopback address (the emulator, a local
/// receiver): anything else would send tokens and events across the network unencrypted.
/// The error says what is wrong with `value`.
pub fn https_or_loopback(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("`{value}` is not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if url.host_str().is_some_and(is_loopback) => Ok(url),
        _ => Err(format!(
            "`{value}` must be https (plain http is allowed only to a loopback address)"
        )),
    }
}

/// Whether `host` (a name, an address, a bracketed IPv6 address) is this machine:
/// `localhost` or a loopback address.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests;
