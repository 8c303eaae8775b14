//! The file as written: one serde type per section, `deny_unknown_fields`, every key
//! documented (these docs are the user reference).

use std::path::PathBuf;

use serde::Deserialize;
use xdrsync_model::{ApiKind, TokenVersion};

use crate::cloud::Cloud;
use crate::secret::{CertificateSource, ManagedIdentitySource, SecretSource};

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
    /// A cluster of `run` workers sharing the PostgreSQL store (`[store] url`).
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
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
    /// Scheduled hunts (`[[hunts]]`), run by `xdrsync run`.
    #[serde(default)]
    pub hunts: Vec<HuntSection>,
    /// Allow `client_secret = { value = "…" }` in this file. Off by default: a secret in a
    /// config file ends up in backups, tickets and version control.
    #[serde(default)]
    pub allow_inline_secrets: bool,
}

/// `[cluster]`: how `run` workers sharing a PostgreSQL store split the tenants. Every `run`
/// on a PostgreSQL store is a worker of its cluster (one alone holds every lease); this
/// section only tunes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// How long a (tenant, stream) or sink lease lasts without renewal, in seconds (default
    /// 30). Workers renew every third of it; a worker that stops renewing loses its leases
    /// after this long, and the others take them over at their next renewal.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// This worker's name in the store's leases and in `status` (default: the host name and
    /// the process id). Each worker's must be unique.
    pub worker: Option<String>,
}

pub(crate) fn default_lease_secs() -> u64 {
    30
}

/// `[store]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// SQLite database file, relative to the config file's folder.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// A PostgreSQL store instead of the SQLite file: the database a cluster of `run` workers
    /// shares (`postgres://user:password@host:5432/db`), from a secret source since it
    /// usually carries a password, e.g. `url = { env = "XDRSYNC_STORE_URL" }`.
    pub url: Option<crate::secret::SecretSource>,
    /// The CA certificate(s), PEM, that signed the PostgreSQL server's certificate (default:
    /// the system's roots), relative to the config file. TLS follows the URL's `sslmode`
    /// (`verify-full` unless the server is on this machine).
    pub ca_file: Option<PathBuf>,
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
            url: None,
            ca_file: None,
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
    /// Turns on `POST /actions` (write-back from a SOAR), signed like the webhook sink:
    /// `X-Xdrsync-Timestamp` and `X-Xdrsync-Signature: sha256=<hex HMAC-SHA256(secret,
    /// "<timestamp>.<body>")>`. Without it and `actions_token`, `/actions` is off.
    pub actions_hmac_secret: Option<crate::SecretSource>,
    /// Or a bearer token the SOAR sends as `Authorization: Bearer <token>`.
    pub actions_token: Option<crate::SecretSource>,
    /// How old (or early) a signed request may be, in seconds (default 300); within it, a
    /// signature is accepted once (a replay is refused).
    #[serde(default = "default_replay_secs")]
    pub actions_replay_secs: u64,
}

fn default_replay_secs() -> u64 {
    300
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
            actions_hmac_secret: None,
            actions_token: None,
            actions_replay_secs: default_replay_secs(),
        }
    }
}

pub(crate) fn default_store_path() -> PathBuf {
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
    /// Connect to this `address:port` for every Microsoft host the config names (login, Graph,
    /// Defender, MDE, SIEM), keeping the host name in TLS and `Host`, as curl's
    /// `--connect-to` does: a fixed egress address, or the emulator answering as Microsoft's
    /// own hosts (`emulator serve --tls` certifies them; trust its CA with `ca_file`). Not with
    /// `proxy` (a proxy resolves the names itself). Never applied to the managed-identity
    /// endpoint.
    pub connect_to: Option<String>,
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

/// `[[hunts]]`: an advanced hunting query `xdrsync run` runs in many tenants every `interval`.
/// Each row it returns is an event of the `hunts` stream, delivered to the sinks once (a row
/// returned again by a later run is recognised by its content and not delivered again).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuntSection {
    /// A short unique name (letters, digits, `-`, `_`, `.`): it names the rows' hunt in every
    /// event.
    pub name: String,
    /// The KQL query.
    pub query: String,
    /// The tenants (by name) to run it in; empty or absent: every enabled tenant.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// How often it runs, e.g. `15m`, `1h` (default `1h`).
    #[serde(default = "default_hunt_interval")]
    pub interval: String,
    /// How far back it looks (Graph's `Timespan`), e.g. `1d` (default `1d`, at most `30d`,
    /// the data advanced hunting keeps). The legacy API (`api = "xdr"` tenants) takes the range
    /// from the query alone: a hunt without `ago(…)` or `datetime(…)` in its query that runs
    /// in such a tenant is warned about.
    #[serde(default = "default_hunt_timespan")]
    pub timespan: String,
    /// The severity its rows carry for routes and SIEM formats: `informational`, `low`,
    /// `medium` (default) or `high`.
    #[serde(default = "default_hunt_severity")]
    pub severity: String,
    /// `false` keeps the section without running it.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_hunt_interval() -> String {
    "1h".into()
}

fn default_hunt_timespan() -> String {
    "1d".into()
}

fn default_hunt_severity() -> String {
    "medium".into()
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
