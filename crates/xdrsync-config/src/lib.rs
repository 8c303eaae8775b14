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

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;
pub use xdrsync_model::TokenVersion;
use xdrsync_model::{ApiKind, SecretString, StreamKind, TenantId};

mod cloud;
pub mod env;

pub use cloud::{Cloud, Endpoints};

/// A configuration problem. Every variant names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line, column and the offending key.
        message: String,
    },
    /// A value is well-formed TOML but not acceptable.
    #[error("invalid config file {path}: `{field}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted path of the field, e.g. `tenants[1].tenant_id`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A command-line value names nothing the config has (an unknown `--tenant` or
    /// `--stream`): a usage error, not a fault of the file.
    #[error("{flag}: {message}")]
    Usage {
        /// The flag, e.g. `--tenant`.
        flag: String,
        /// What is wrong and what would be accepted.
        message: String,
    },
    /// A secret could not be resolved.
    #[error("`{field}`: {message}")]
    Secret {
        /// The dotted path of the field.
        field: String,
        /// What is wrong (never the secret itself).
        message: String,
    },
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Where incident versions, cursors and delivery positions are kept.
    #[serde(default)]
    pub store: StoreSection,
    /// How incidents are pulled.
    #[serde(default)]
    pub sync: SyncSection,
    /// Which Microsoft cloud, and optional endpoint overrides (e.g. the emulator).
    #[serde(default)]
    pub cloud: CloudSection,
    /// Where delegated sign-ins (`xdrsync auth login`) are kept, encrypted.
    #[serde(default)]
    pub auth: AuthSection,
    /// `run`'s HTTP server: `/metrics`, `/healthz`, `/readyz` and the status page.
    #[serde(default)]
    pub server: ServerSection,
    /// App registrations shared by several tenants (the MSSP's multi-tenant app).
    #[serde(default)]
    pub apps: Vec<AppSection>,
    /// The tenants to pull.
    #[serde(default)]
    pub tenants: Vec<TenantSection>,
    /// Where events are delivered (`[[sinks]]`). Each section is parsed and validated by the
    /// sinks crate, which owns every sink's settings (`xdrsync_sinks::config`).
    #[serde(default)]
    pub sinks: Vec<toml::Table>,
    /// Allow `client_secret = { value = "…" }` in this file. Off by default: a secret in a
    /// config file ends up in backups, tickets and version control.
    #[serde(default)]
    pub allow_inline_secrets: bool,
}

/// `[store]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// SQLite database file, relative to the config file's folder.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Versions older than this many days, and delivered to every enabled sink, are pruned
    /// by `run`; the latest version of every incident and alert is always kept. 0 keeps
    /// everything.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

fn default_retention_days() -> u32 {
    90
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            path: default_store_path(),
            retention_days: default_retention_days(),
        }
    }
}

/// `[server]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Where `run` serves `/metrics`, `/healthz`, `/readyz` and its status page
    /// (`host:port`; `""` turns the server off). Default `127.0.0.1:9464`.
    #[serde(default = "default_listen")]
    pub listen: String,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}

/// `run`'s HTTP server's default address (Prometheus' registry lists 9464 for exporters).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
        }
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("xdrsync.db")
}

/// `[sync]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// On the first pull of a tenant, how far back to start, in hours.
    #[serde(default = "default_initial_lookback_hours")]
    pub initial_lookback_hours: u32,
    /// Each pull re-reads this many seconds before the stored cursor, to catch incidents that
    /// became visible late (ingestion lag). Re-read versions are recognised and not stored twice.
    #[serde(default = "default_overlap_secs")]
    pub overlap_secs: u32,
    /// Page size for Graph (`$top`, at most 50).
    #[serde(default = "default_graph_page_size")]
    pub graph_page_size: u32,
    /// Page size for the legacy XDR API (`$top`, at most 100).
    #[serde(default = "default_xdr_page_size")]
    pub xdr_page_size: u32,
    /// Page size of the alert streams (`$top` of alerts_v2 and MDE, `limit` of the SIEM API;
    /// at most 1000, where alerts_v2 silently clamps).
    #[serde(default = "default_alert_page_size")]
    pub alert_page_size: u32,
    /// Most attempts per request before a tenant's pull fails (429/5xx/timeouts/resets).
    #[serde(default = "default_retry_attempts")]
    pub retry_attempts: u32,
    /// First retry wait in milliseconds; it doubles per attempt, with jitter.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Longest single retry wait in seconds (a longer `Retry-After` is still honoured).
    #[serde(default = "default_retry_max_secs")]
    pub retry_max_secs: u64,
    /// Pace requests to stay inside Microsoft's documented quotas per (app, tenant, API), so
    /// xdrsync does not cause 429s itself.
    #[serde(default = "default_true")]
    pub rate_budget: bool,
    /// Quota windows run this many times faster: only for an emulator started with the same
    /// `--time-scale`.
    #[serde(default = "default_quota_time_scale")]
    pub quota_time_scale: f64,
    /// How many tenants are pulled at once.
    #[serde(default = "default_concurrent_tenants")]
    pub concurrent_tenants: u32,
    /// `xdrsync run`: seconds between passes.
    #[serde(default = "default_interval_secs")]
    pub interval_secs: u64,
    /// The largest API response body read, in MiB (default 64): a larger page fails with a
    /// clear message instead of taking the memory it claims.
    #[serde(default = "default_max_response_mib")]
    pub max_response_mib: f64,
}

impl Default for SyncSection {
    fn default() -> Self {
        SyncSection {
            initial_lookback_hours: default_initial_lookback_hours(),
            overlap_secs: default_overlap_secs(),
            graph_page_size: default_graph_page_size(),
            xdr_page_size: default_xdr_page_size(),
            alert_page_size: default_alert_page_size(),
            retry_attempts: default_retry_attempts(),
            retry_base_ms: default_retry_base_ms(),
            retry_max_secs: default_retry_max_secs(),
            rate_budget: true,
            quota_time_scale: default_quota_time_scale(),
            concurrent_tenants: default_concurrent_tenants(),
            interval_secs: default_interval_secs(),
            max_response_mib: default_max_response_mib(),
        }
    }
}

fn default_retry_attempts() -> u32 {
    6
}
fn default_retry_base_ms() -> u64 {
    500
}
fn default_retry_max_secs() -> u64 {
    120
}
fn default_true() -> bool {
    true
}
fn default_quota_time_scale() -> f64 {
    1.0
}
fn default_concurrent_tenants() -> u32 {
    16
}
fn default_max_response_mib() -> f64 {
    64.0
}
fn default_interval_secs() -> u64 {
    300
}

fn default_initial_lookback_hours() -> u32 {
    48
}
fn default_overlap_secs() -> u32 {
    600
}
fn default_graph_page_size() -> u32 {
    50
}
fn default_xdr_page_size() -> u32 {
    100
}
fn default_alert_page_size() -> u32 {
    1000
}
fn default_streams() -> Vec<String> {
    vec!["incidents".into()]
}

/// `[auth]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// The encrypted token vault, relative to the config file.
    #[serde(default = "default_vault_file")]
    pub vault_file: PathBuf,
    /// A file holding the vault key (32 bytes, base64); the env var `XDRSYNC_VAULT_KEY` wins.
    pub vault_key_file: Option<PathBuf>,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            vault_file: default_vault_file(),
            vault_key_file: None,
        }
    }
}

fn default_vault_file() -> PathBuf {
    PathBuf::from("tokens.vault")
}

/// `[cloud]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSection {
    /// `public` (default), `gcc`, `gcc-high` or `dod`.
    #[serde(default)]
    pub name: Cloud,
    /// A Defender XDR regional host (public cloud): `us`, `eu`, `uk`, `au`, `swa`, `ina`, `aea`
    /// → `https://<region>.api.security.microsoft.com`. Tokens keep the global audience.
    pub region: Option<String>,
    /// Overrides the login authority (e.g. `https://127.0.0.1:8443` for the emulator).
    pub authority_url: Option<String>,
    /// Overrides the Microsoft Graph base URL.
    pub graph_url: Option<String>,
    /// Overrides the Defender XDR API base URL (e.g. a regional host).
    pub xdr_url: Option<String>,
    /// A PEM bundle of CA certificates to trust in addition to the system's (a TLS-inspecting
    /// proxy's CA, or the emulator's), relative to this file.
    pub ca_file: Option<PathBuf>,
    /// An HTTP proxy for every call, token endpoint included, e.g.
    /// `http://user:password@proxy.corp:3128` (without it, `HTTPS_PROXY`/`NO_PROXY` apply).
    /// Its password never appears in logs or errors.
    pub proxy: Option<String>,
    /// Defender for Endpoint API host override (the MDE alerts API; default
    /// `https://api.securitycenter.microsoft.com`, regional for `region` us/eu/uk/au).
    pub mde_url: Option<String>,
    /// SIEM API host override (default: `https://wdatp-alertexporter-{region}.windows.com` for
    /// `region` us (default), eu or uk).
    pub siem_url: Option<String>,
}

/// Where a secret comes from: exactly one of `env`, `file`, `command`, `value`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Name of an environment variable holding the secret.
    pub env: Option<String>,
    /// A file holding the secret (trailing newline ignored), relative to the config file.
    pub file: Option<PathBuf>,
    /// A command (program and arguments, no shell) whose standard output is the secret, e.g.
    /// `["vault", "kv", "get", "-field=secret", "siem/contoso"]`.
    pub command: Option<Vec<String>>,
    /// The secret itself; refused unless `allow_inline_secrets = true`.
    pub value: Option<String>,
    /// Seconds a secret `command` may take before it is stopped and the secret counts as
    /// unreadable (default 30): a hung vault CLI must not hang a pass.
    pub timeout_secs: Option<u64>,
    /// When the secret expires (as shown in the app registration); `xdrsync auth status`
    /// warns 30 days ahead.
    pub expires: Option<xdrsync_model::Timestamp>,
    /// How a client secret reaches the token endpoint: `post` (default, in the form body) or
    /// `basic` (an HTTP Basic `Authorization` header).
    pub method: Option<SecretMethod>,
}

/// `client_secret_post` or `client_secret_basic`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretMethod {
    /// In the form body.
    #[default]
    Post,
    /// HTTP Basic.
    Basic,
}

/// `client_certificate = { cert_file = "…", key_file = "…", algorithm = "ps256" }` (PEM) or
/// `client_certificate = { pfx_file = "app.pfx", password = { env = "PFX_PASSWORD" } }`
/// (PKCS#12): a certificate registered on the app, and its RSA private key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSource {
    /// The certificate, PEM, relative to the config file.
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8 or PKCS#1), relative to the config file.
    pub key_file: Option<PathBuf>,
    /// Or both in one PKCS#12 file (`.pfx`/`.p12`), relative to the config file.
    pub pfx_file: Option<PathBuf>,
    /// The PKCS#12 file's password, given like a secret (`env`, `file`, `command`); none for a
    /// file without one.
    pub password: Option<SecretSource>,
    /// `ps256` (default; `x5t#S256`, Entra's current documentation) or `rs256` (`x5t`).
    #[serde(default)]
    pub algorithm: AssertionAlgorithm,
}

/// A validated certificate credential.
#[derive(Clone, Debug)]
pub struct Certificate {
    /// Where the certificate and key are.
    pub files: CertificateFiles,
    /// The client-assertion algorithm.
    pub algorithm: AssertionAlgorithm,
}

/// Where a certificate and its key are stored.
#[derive(Clone, Debug)]
pub enum CertificateFiles {
    /// A PEM certificate and a PEM key.
    Pem {
        /// The certificate.
        cert_file: PathBuf,
        /// The key.
        key_file: PathBuf,
    },
    /// One PKCS#12 file.
    Pkcs12 {
        /// The file.
        pfx_file: PathBuf,
        /// Its password (none: empty).
        password: Option<SecretSource>,
    },
}

/// The client-assertion signature algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssertionAlgorithm {
    /// RSASSA-PSS with SHA-256 and the SHA-256 thumbprint.
    #[default]
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and the SHA-1 thumbprint.
    Rs256,
}

/// `managed_identity = {}`: tokens from the Azure instance metadata endpoint, for collectors
/// that run in Azure (the identity's `client_id` is the tenant's or app's `client_id`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedIdentitySource {
    /// The metadata endpoint (default `http://169.254.169.254/metadata/identity/oauth2/token`).
    pub endpoint: Option<String>,
}

/// Azure's instance metadata token endpoint.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// How a tenant's app authenticates.
#[derive(Clone, Debug)]
pub enum CredentialSource {
    /// A managed identity.
    ManagedIdentity(Url),
    /// A client secret.
    Secret(SecretSource),
    /// A certificate.
    Certificate(Certificate),
}

impl SecretSource {
    /// Checks the source as written in the config file at `config_path` (exactly one of
    /// `env`, `file`, `command`, `value`; `value` only with `allow_inline`) and resolves a
    /// relative `file` against the file's folder. Reads nothing.
    pub fn validated(
        &self,
        field: &str,
        config_path: &Path,
        allow_inline: bool,
    ) -> Result<SecretSource, ConfigError> {
        let invalid = |message: &str| ConfigError::Invalid {
            path: config_path.to_owned(),
            field: field.to_owned(),
            message: message.to_owned(),
        };
        let set = [
            self.env.is_some(),
            self.file.is_some(),
            self.command.is_some(),
            self.value.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            return Err(invalid(
                "give exactly one of `env`, `file`, `command` or `value`",
            ));
        }
        if self.value.is_some() && !allow_inline {
            return Err(invalid(
                "inline secrets are refused: use `env` or `file`, or set `allow_inline_secrets = true` at the top of the file",
            ));
        }
        let base = config_path.parent().unwrap_or(Path::new(""));
        let mut out = self.clone();
        out.file = self.file.as_deref().map(|p| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        });
        Ok(out)
    }

    /// Reads the secret. `field` names it in errors; the value never appears in them.
    pub fn resolve(&self, field: &str) -> Result<SecretString, ConfigError> {
        let err = |message: String| ConfigError::Secret {
            field: field.to_owned(),
            message,
        };
        let secret = if let Some(var) = &self.env {
            std::env::var(var).map_err(|_| err(format!("environment variable {var} is not set")))?
        } else if let Some(path) = &self.file {
            let text = fs_err::read_to_string(path)
                .map_err(|e| err(format!("cannot read secret file: {e}")))?;
            text.trim_end_matches(['\r', '\n']).to_owned()
        } else if let Some(command) = &self.command {
            let timeout = std::time::Duration::from_secs(
                self.timeout_secs
                    .unwrap_or(DEFAULT_SECRET_COMMAND_TIMEOUT_SECS),
            );
            run_secret_command(command, timeout).map_err(err)?
        } else if let Some(value) = &self.value {
            value.clone()
        } else {
            return Err(err(
                "no secret source: set `env`, `file` or `command`".into()
            ));
        };
        if secret.is_empty() {
            return Err(err("the secret is empty".into()));
        }
        Ok(SecretString::new(secret))
    }
}

impl SecretSource {
    /// Checks, without reading the secret or running anything, that it can be read: the
    /// environment variable is set and not empty, the file is readable, the command's program
    /// is on `PATH` (or is an executable path). `field` names it in errors.
    pub fn check(&self, field: &str) -> Result<(), ConfigError> {
        let err = |message: String| ConfigError::Secret {
            field: field.to_owned(),
            message,
        };
        if let Some(var) = &self.env {
            match std::env::var_os(var) {
                None => return Err(err(format!("environment variable {var} is not set"))),
                Some(v) if v.is_empty() => {
                    return Err(err(format!("environment variable {var} is empty")));
                }
                Some(_) => {}
            }
        } else if let Some(path) = &self.file {
            readable(path).map_err(|e| err(format!("secret file {}: {e}", path.display())))?;
        } else if let Some(command) = &self.command {
            let program = command
                .first()
                .ok_or_else(|| err("`command` is empty".into()))?;
            if find_program(program).is_none() {
                return Err(err(format!(
                    "`{program}` is not an executable file nor found on PATH"
                )));
            }
        }
        Ok(())
    }
}

/// Opens `path` for reading (and reads nothing): whether this process could read it.
pub fn readable(path: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    if f.metadata()?.is_dir() {
        return Err(std::io::Error::other("is a folder, not a file"));
    }
    Ok(())
}

/// Where `program` would run from: itself when it names a path, else the first executable
/// of that name on `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

impl Config {
    /// Every problem `check-config` can find without contacting anything: secret environment
    /// variables unset, secret, certificate and CA files unreadable, secret commands missing.
    /// With `resolve`, secrets are also read (commands run) to prove they produce a value.
    /// Each problem names the file and the field; nothing secret is in them.
    pub fn check_sources(&self, resolve: bool) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        let check = |problems: &mut Vec<ConfigError>, field: String, source: &SecretSource| {
            let r = if resolve {
                source
                    .check(&field)
                    .and_then(|()| source.resolve(&field).map(drop))
            } else {
                source.check(&field)
            };
            if let Err(e) = r {
                problems.push(e);
            }
        };
        let mut seen = BTreeSet::new();
        for t in &self.tenants {
            // Tenants sharing an `[[apps]]` entry share its credential: check it once.
            if !seen.insert(t.credential_field.clone()) {
                continue;
            }
            match &t.credential {
                CredentialSource::Secret(s) => check(&mut problems, t.credential_field.clone(), s),
                CredentialSource::Certificate(c) => match &c.files {
                    CertificateFiles::Pem {
                        cert_file,
                        key_file,
                    } => {
                        for (name, f) in [("cert_file", cert_file), ("key_file", key_file)] {
                            if let Err(e) = readable(f) {
                                problems.push(ConfigError::Invalid {
                                    path: self.path.clone(),
                                    field: format!("{}.{name}", t.credential_field),
                                    message: format!("{}: {e}", f.display()),
                                });
                            }
                        }
                    }
                    CertificateFiles::Pkcs12 { pfx_file, password } => {
                        if let Err(e) = readable(pfx_file) {
                            problems.push(ConfigError::Invalid {
                                path: self.path.clone(),
                                field: format!("{}.pfx_file", t.credential_field),
                                message: format!("{}: {e}", pfx_file.display()),
                            });
                        }
                        if let Some(p) = password {
                            check(&mut problems, format!("{}.password", t.credential_field), p);
                        }
                    }
                },
                CredentialSource::ManagedIdentity(_) => {}
            }
        }
        if let Some(ca) = &self.ca_file
            && let Err(e) = readable(ca)
        {
            problems.push(ConfigError::Invalid {
                path: self.path.clone(),
                field: "cloud.ca_file".into(),
                message: format!("{}: {e}", ca.display()),
            });
        }
        if let Some(key) = &self.vault_key_file
            && self.tenants.iter().any(|t| t.delegated)
            && let Err(e) = readable(key)
        {
            problems.push(ConfigError::Invalid {
                path: self.path.clone(),
                field: "auth.vault_key_file".into(),
                message: format!("{}: {e}", key.display()),
            });
        }
        problems
    }
}

/// How long a secret command may run by default.
pub const DEFAULT_SECRET_COMMAND_TIMEOUT_SECS: u64 = 30;

/// A secret never shows in `Debug`: only which source it comes from.
impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSource")
            .field("env", &self.env)
            .field("file", &self.file)
            .field("command", &self.command)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("timeout_secs", &self.timeout_secs)
            .field("expires", &self.expires)
            .field("method", &self.method)
            .finish()
    }
}

/// Runs a secret command; its trimmed standard output (at most 64 KiB) is the secret. It is
/// stopped after `timeout`. Its standard error is not repeated in errors (a vault CLI may print
/// sensitive context there).
fn run_secret_command(command: &[String], timeout: std::time::Duration) -> Result<String, String> {
    use std::io::Read as _;
    const MAX_OUTPUT: u64 = 64 * 1024;
    let (program, args) = command.split_first().ok_or("`command` is empty")?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let stdout = child.stdout.take().ok_or("no standard output")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout
            .take(MAX_OUTPUT + 1)
            .read_to_end(&mut out)
            .map(|_| out)
    });
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{program}` did not finish within {}s (timeout_secs); it was stopped",
                    timeout.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for `{program}`: {e}")),
        }
    };
    let out = reader
        .join()
        .map_err(|_| format!("reading `{program}`'s output stopped"))?
        .map_err(|e| format!("reading `{program}`'s output: {e}"))?;
    if !status.success() {
        return Err(format!("`{program}` failed with {status}"));
    }
    if out.len() as u64 > MAX_OUTPUT {
        return Err(format!("`{program}` printed more than 64 KiB"));
    }
    let text = String::from_utf8(out)
        .map_err(|_| format!("`{program}` printed something that is not UTF-8"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// `[[apps]]`: an app registration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    /// A name tenants refer to with `app = "…"`.
    pub name: String,
    /// Application (client) id.
    pub client_id: String,
    /// The client secret (or give `client_certificate`).
    pub client_secret: Option<SecretSource>,
    /// A certificate credential (or give `client_secret`).
    pub client_certificate: Option<CertificateSource>,
    /// A managed identity (instead of a secret or certificate).
    pub managed_identity: Option<ManagedIdentitySource>,
}

/// `[[tenants]]`: one tenant to pull.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    /// A short unique name used on the command line and in reports.
    pub name: String,
    /// Directory (tenant) id: a GUID, or a verified domain such as `contoso.onmicrosoft.com`.
    pub tenant_id: String,
    /// The customer's other verified domains (e.g. `contoso.com`), so `--tenant contoso.com`
    /// finds it; informational otherwise.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Name of an `[[apps]]` entry to authenticate with; or give `client_id` and
    /// `client_secret` here.
    pub app: Option<String>,
    /// Application (client) id, when not using `app`.
    pub client_id: Option<String>,
    /// The client secret, when not using `app`.
    pub client_secret: Option<SecretSource>,
    /// A certificate credential, when not using `app` (instead of `client_secret`).
    pub client_certificate: Option<CertificateSource>,
    /// A managed identity, when not using `app`.
    pub managed_identity: Option<ManagedIdentitySource>,
    /// `graph` (default; Microsoft Graph security API) or `xdr` (legacy Defender XDR API,
    /// retiring 2027-02-01).
    #[serde(default = "default_api")]
    pub api: ApiName,
    /// What to pull: any of `incidents` (default), `alerts` (Graph alerts_v2, or the MDE alerts
    /// API when `api = "xdr"`), `detections` (the retired SIEM API).
    #[serde(default = "default_streams")]
    pub streams: Vec<String>,
    /// SIEM API filters for the `detections` stream.
    #[serde(default)]
    pub siem: SiemSection,
    /// Token endpoint version: `v2` (default, `scope=…/.default`) or `v1` (`resource=…`).
    #[serde(default)]
    pub token_version: TokenVersion,
    /// Use the delegated sign-in stored by `xdrsync auth login` (the MSSP flow of Microsoft's
    /// fetch-incidents guide) instead of app-only tokens; the app's credential still
    /// authenticates the client.
    #[serde(default)]
    pub delegated: bool,
    /// Set to false to keep a tenant configured but not pulled.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// `[tenants.siem]`: the SIEM API's own filters (the SIEM seed's parameters).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiemSection {
    /// `machinegroups`: only these machine groups (all when empty).
    #[serde(default)]
    pub machine_groups: Vec<String>,
    /// `DeviceCreatedMachineTags`: only devices with this registry tag.
    pub device_tag: Option<String>,
    /// `CloudCreatedMachineTags`: only devices with this portal tag.
    pub cloud_tag: Option<String>,
}

fn default_api() -> ApiName {
    ApiName::Graph
}

/// The API a tenant is pulled from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiName {
    /// Microsoft Graph.
    Graph,
    /// Legacy Defender XDR.
    Xdr,
}

impl From<ApiName> for ApiKind {
    fn from(a: ApiName) -> Self {
        match a {
            ApiName::Graph => ApiKind::Graph,
            ApiName::Xdr => ApiKind::Xdr,
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[store] retention_days` (0: keep everything).
    pub retention_days: u32,
    /// `[server] listen` (`None`: no server).
    pub server_listen: Option<std::net::SocketAddr>,
    /// The file it was read from.
    pub path: PathBuf,
    /// The SQLite store file (absolute or relative to the working directory).
    pub store_path: PathBuf,
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
    /// The `[[sinks]]` sections as written; `xdrsync_sinks::config::validate` checks them.
    pub sinks: Vec<toml::Table>,
    /// Whether inline secrets (`{ value = "…" }`) are allowed.
    pub allow_inline_secrets: bool,
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
        validate(file, path)
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
        let kind =
            StreamKind::parse(&s.to_ascii_lowercase()).ok_or_else(|| ConfigError::Usage {
                flag: "--stream".into(),
                message: format!(
                    "unknown stream `{s}`; streams are {}",
                    StreamKind::ALL.map(|k| k.as_str()).join(", ")
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

fn validate(file: ConfigFile, path: &Path) -> Result<Config, ConfigError> {
    let invalid = |field: String, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        field,
        message,
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };

    let s = &file.sync;
    if s.graph_page_size == 0 || s.graph_page_size > 50 {
        return Err(invalid(
            "sync.graph_page_size".into(),
            format!(
                "must be 1..=50 (Graph refuses $top above 50), got {}",
                s.graph_page_size
            ),
        ));
    }
    if s.xdr_page_size == 0 || s.xdr_page_size > 100 {
        return Err(invalid(
            "sync.xdr_page_size".into(),
            format!(
                "must be 1..=100 (the XDR API refuses $top above 100), got {}",
                s.xdr_page_size
            ),
        ));
    }
    if s.alert_page_size == 0 || s.alert_page_size > 1000 {
        return Err(invalid(
            "sync.alert_page_size".into(),
            format!(
                "must be 1..=1000 (alerts_v2 silently clamps $top to 1000), got {}",
                s.alert_page_size
            ),
        ));
    }
    if s.retry_attempts == 0 || s.retry_attempts > 50 {
        return Err(invalid(
            "sync.retry_attempts".into(),
            format!("must be 1..=50, got {}", s.retry_attempts),
        ));
    }
    if !(s.quota_time_scale.is_finite() && s.quota_time_scale >= 1.0) {
        return Err(invalid(
            "sync.quota_time_scale".into(),
            format!(
                "must be at least 1 (Microsoft's own quota windows), got {}",
                s.quota_time_scale
            ),
        ));
    }
    if s.concurrent_tenants == 0 || s.concurrent_tenants > 256 {
        return Err(invalid(
            "sync.concurrent_tenants".into(),
            format!("must be 1..=256, got {}", s.concurrent_tenants),
        ));
    }
    if s.interval_secs == 0 {
        return Err(invalid(
            "sync.interval_secs".into(),
            "must be at least 1".into(),
        ));
    }
    if !(s.max_response_mib.is_finite() && s.max_response_mib > 0.0 && s.max_response_mib <= 4096.0)
    {
        return Err(invalid(
            "sync.max_response_mib".into(),
            format!(
                "must be more than 0 and at most 4096, got {}",
                s.max_response_mib
            ),
        ));
    }
    if s.initial_lookback_hours == 0 || s.initial_lookback_hours > 180 * 24 {
        return Err(invalid(
            "sync.initial_lookback_hours".into(),
            format!(
                "must be 1..=4320 (Defender keeps 180 days), got {}",
                s.initial_lookback_hours
            ),
        ));
    }
    let endpoints =
        cloud::endpoints(&file.cloud).map_err(|(field, message)| invalid(field, message))?;
    let proxy = match &file.cloud.proxy {
        None => None,
        Some(raw) => {
            let url = Url::parse(raw).map_err(|_| {
                invalid(
                    "cloud.proxy".into(),
                    "is not a URL (e.g. http://proxy.corp:3128)".into(),
                )
            })?;
            if !["http", "https"].contains(&url.scheme()) || url.host_str().is_none() {
                return Err(invalid(
                    "cloud.proxy".into(),
                    format!(
                        "must be an http(s) proxy URL, got {}",
                        xdrsync_model::SafeUrl::new(url)
                    ),
                ));
            }
            Some(xdrsync_model::SafeUrl::new(url))
        }
    };

    let warnings = std::cell::RefCell::new(Vec::new());
    let check_secret = |field: &str, src: &SecretSource| -> Result<SecretSource, ConfigError> {
        let out = src.validated(field, path, file.allow_inline_secrets)?;
        if src.value.is_some() {
            warnings.borrow_mut().push(format!(
                "`{field}` is written inline in the config file; prefer `env`, `file` or `command`"
            ));
        }
        Ok(out)
    };
    // `prefix` is `apps[i]` or `tenants[i]`; exactly one of secret and certificate.
    let check_credential = |prefix: &str,
                            secret: Option<&SecretSource>,
                            cert: Option<&CertificateSource>,
                            mi: Option<&ManagedIdentitySource>|
     -> Result<(CredentialSource, String), ConfigError> {
        if let Some(mi) = mi {
            let field = format!("{prefix}.managed_identity");
            if secret.is_some() || cert.is_some() {
                return Err(invalid(field, "give one credential: `client_secret`, `client_certificate` or `managed_identity`".into()));
            }
            let raw = mi.endpoint.as_deref().unwrap_or(IMDS_ENDPOINT);
            let url = Url::parse(raw).map_err(|e| {
                invalid(
                    format!("{field}.endpoint"),
                    format!("`{raw}` is not a URL: {e}"),
                )
            })?;
            let link_local = url.host_str() == Some("169.254.169.254");
            if url.scheme() != "https" && !link_local && !url.host_str().is_some_and(is_loopback) {
                return Err(invalid(
                    format!("{field}.endpoint"),
                    "must be the link-local metadata address, https, or loopback".into(),
                ));
            }
            return Ok((CredentialSource::ManagedIdentity(url), field));
        }
        match (secret, cert) {
            (Some(s), None) => {
                let field = format!("{prefix}.client_secret");
                Ok((CredentialSource::Secret(check_secret(&field, s)?), field))
            }
            (None, Some(c)) => {
                let field = format!("{prefix}.client_certificate");
                let files = match (&c.cert_file, &c.key_file, &c.pfx_file, &c.password) {
                    (Some(cert), Some(key), None, None) => CertificateFiles::Pem {
                        cert_file: resolve(cert),
                        key_file: resolve(key),
                    },
                    (None, None, Some(pfx), password) => CertificateFiles::Pkcs12 {
                        pfx_file: resolve(pfx),
                        password: match password {
                            Some(p) if p.method.is_some() => {
                                return Err(invalid(
                                    format!("{field}.password.method"),
                                    "`method` is for `client_secret` only".into(),
                                ));
                            }
                            Some(p) => Some(check_secret(&format!("{field}.password"), p)?),
                            None => None,
                        },
                    },
                    _ => {
                        return Err(invalid(
                            field,
                            "give `cert_file` and `key_file` (PEM), or `pfx_file` with an optional `password` (PKCS#12)".into(),
                        ));
                    }
                };
                let c = Certificate {
                    files,
                    algorithm: c.algorithm,
                };
                Ok((CredentialSource::Certificate(c), field))
            }
            (Some(_), Some(_)) => Err(invalid(
                format!("{prefix}.client_certificate"),
                "give either `client_secret` or `client_certificate`, not both".into(),
            )),
            (None, None) => Err(invalid(
                format!("{prefix}.client_secret"),
                "missing: give `client_secret`, `client_certificate` or `managed_identity`".into(),
            )),
        }
    };

    let mut app_names = BTreeSet::new();
    for (i, app) in file.apps.iter().enumerate() {
        if !app_names.insert(app.name.as_str()) {
            return Err(invalid(
                format!("apps[{i}].name"),
                format!("`{}` is used twice", app.name),
            ));
        }
        if !is_guid(&app.client_id) {
            return Err(invalid(
                format!("apps[{i}].client_id"),
                format!("must be a GUID, got `{}`", app.client_id),
            ));
        }
        check_credential(
            &format!("apps[{i}]"),
            app.client_secret.as_ref(),
            app.client_certificate.as_ref(),
            app.managed_identity.as_ref(),
        )?;
    }

    let mut names = BTreeSet::new();
    let mut tenants = Vec::with_capacity(file.tenants.len());
    for (i, t) in file.tenants.iter().enumerate() {
        let f = |name: &str| format!("tenants[{i}].{name}");
        if t.name.trim().is_empty() || t.name.contains(char::is_whitespace) {
            return Err(invalid(
                f("name"),
                format!("must be a non-empty name without spaces, got `{}`", t.name),
            ));
        }
        if !names.insert(t.name.as_str()) {
            return Err(invalid(f("name"), format!("`{}` is used twice", t.name)));
        }
        let lowered = t.tenant_id.to_ascii_lowercase();
        if ["common", "organizations", "consumers"].contains(&lowered.as_str()) {
            return Err(invalid(
                f("tenant_id"),
                format!(
                    "`{}` is not a tenant: app-only tokens need the customer's own tenant id",
                    t.tenant_id
                ),
            ));
        }
        if !is_guid(&t.tenant_id) && !is_domain(&t.tenant_id) {
            return Err(invalid(
                f("tenant_id"),
                format!(
                    "must be a GUID or a domain such as contoso.onmicrosoft.com, got `{}`",
                    t.tenant_id
                ),
            ));
        }
        let has_own = t.client_secret.is_some()
            || t.client_certificate.is_some()
            || t.managed_identity.is_some();
        let (client_id, (credential, credential_field)) = match (&t.app, &t.client_id, has_own) {
            (Some(app), None, false) => {
                let Some((j, a)) = file.apps.iter().enumerate().find(|(_, a)| &a.name == app)
                else {
                    return Err(invalid(
                        f("app"),
                        format!("no [[apps]] entry is named `{app}`"),
                    ));
                };
                (
                    a.client_id.clone(),
                    check_credential(
                        &format!("apps[{j}]"),
                        a.client_secret.as_ref(),
                        a.client_certificate.as_ref(),
                        a.managed_identity.as_ref(),
                    )?,
                )
            }
            (None, Some(id), true) => {
                if !is_guid(id) {
                    return Err(invalid(
                        f("client_id"),
                        format!("must be a GUID, got `{id}`"),
                    ));
                }
                (
                    id.clone(),
                    check_credential(
                        &format!("tenants[{i}]"),
                        t.client_secret.as_ref(),
                        t.client_certificate.as_ref(),
                        t.managed_identity.as_ref(),
                    )?,
                )
            }
            (Some(_), _, _) => {
                return Err(invalid(
                    f("app"),
                    "give either `app` or `client_id` + a credential, not both".into(),
                ));
            }
            (None, None, _) => {
                return Err(invalid(f("client_id"), "missing: give `client_id` + `client_secret` (or `client_certificate`), or `app`".into()));
            }
            (None, Some(_), false) => {
                return Err(invalid(f("client_secret"), "missing: give `{ env = \"VAR\" }`, `{ file = \"path\" }` or `{ command = [...] }`, or a `client_certificate`".into()));
            }
        };
        let mut streams = Vec::new();
        for name in &t.streams {
            let Some(k) = StreamKind::parse(name) else {
                return Err(invalid(
                    f("streams"),
                    format!("`{name}` is not a stream; use incidents, alerts or detections"),
                ));
            };
            if streams.contains(&k) {
                return Err(invalid(f("streams"), format!("`{name}` is listed twice")));
            }
            streams.push(k);
        }
        if streams.is_empty() {
            return Err(invalid(
                f("streams"),
                "is empty: list at least one of incidents, alerts, detections (or set enabled = false)".into(),
            ));
        }
        streams.sort();
        if streams.contains(&StreamKind::Detections) && endpoints.siem.is_none() {
            return Err(invalid(
                f("streams"),
                "`detections` reads the SIEM API, which had hosts only in the public cloud's us, eu and uk regions; set cloud.siem_url".into(),
            ));
        }
        tenants.push(Tenant {
            name: t.name.clone(),
            tenant_id: TenantId::canonical(&t.tenant_id),
            domains: t.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            api: t.api.into(),
            client_id: client_id.to_ascii_lowercase(),
            credential,
            credential_field,
            token_version: t.token_version,
            endpoints: endpoints.clone(),
            enabled: t.enabled,
            delegated: t.delegated,
            streams,
            siem: t.siem.clone(),
        });
    }
    let listen = file.server.listen.trim();
    let server_listen = if listen.is_empty() {
        None
    } else {
        Some(listen.parse::<std::net::SocketAddr>().map_err(|e| {
            ConfigError::Invalid {
                path: path.to_owned(),
                field: "server.listen".into(),
                message: format!("`{listen}` is not an address and port such as 127.0.0.1:9464 ({e}); \"\" turns the server off"),
            }
        })?)
    };
    Ok(Config {
        path: path.to_owned(),
        store_path: resolve(&file.store.path),
        retention_days: file.store.retention_days,
        server_listen,
        sync: SyncSettings {
            initial_lookback: chrono::Duration::hours(i64::from(s.initial_lookback_hours)),
            overlap: chrono::Duration::seconds(i64::from(s.overlap_secs)),
            graph_page_size: s.graph_page_size,
            xdr_page_size: s.xdr_page_size,
            alert_page_size: s.alert_page_size,
            retry_attempts: s.retry_attempts,
            retry_base: std::time::Duration::from_millis(s.retry_base_ms),
            retry_max: std::time::Duration::from_secs(s.retry_max_secs),
            rate_budget: s.rate_budget,
            quota_time_scale: s.quota_time_scale,
            concurrent_tenants: s.concurrent_tenants as usize,
            interval: std::time::Duration::from_secs(s.interval_secs),
            max_response_bytes: (s.max_response_mib * f64::from(1u32 << 20)) as usize,
        },
        tenants,
        ca_file: file.cloud.ca_file.as_deref().map(resolve),
        vault_file: resolve(&file.auth.vault_file),
        vault_key_file: file.auth.vault_key_file.as_deref().map(resolve),
        warnings: warnings.into_inner(),
        proxy,
        sinks: file.sinks,
        allow_inline_secrets: file.allow_inline_secrets,
    })
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

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
        || host == "[::1]"
}

#[cfg(test)]
mod tests;
