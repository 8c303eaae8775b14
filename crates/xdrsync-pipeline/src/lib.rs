//! The pull pipeline: for each tenant and stream (incidents, alerts, SIEM detections), read what
//! changed since the stream's cursor, store the new versions and advance the cursor in one
//! transaction, then let each sink deliver from the store.
//!
//! # Invariants
//! - The cursor of a tenant moves only in the transaction that stores the versions it covers,
//!   and only forward; the next pull starts `overlap` before it, so incidents that became
//!   visible late are still read. Versions read twice are recognised by their identity
//!   `(tenant, incident, last update)` and not stored twice.
//! - One tenant's failure (bad secret, missing role, an API that keeps failing) is reported for
//!   that tenant only; the others are pulled as usual.
//! - Sinks deliver from the store, each from its own position, after the pull committed.

use std::sync::Arc;
use std::time::Duration;

use xdrsync_api_client::{
    ApiClient, ApiError, Page, RateBudgets, RetryPolicy, SiemFilter, Source, Target,
};
use xdrsync_auth::vault::{Vault, VaultKey};
use xdrsync_auth::{CertificateCredential, Credential, RefreshSource, TokenCache, TokenRequest};
use xdrsync_config::{
    AssertionAlgorithm, CertificateFiles, Config, ConfigError, CredentialSource, SecretMethod,
    Tenant,
};
use xdrsync_model::{ApiKind, StreamKind, Timestamp};
use xdrsync_store::{
    CommitRequest, CommitStats, NewVersion, PoisonRecord, PullOutcome, SqliteStore, StoreError,
};

pub mod deliver;
pub mod retention;
mod writer;
use writer::Writer;

/// Pages of one (tenant, stream) sent to the writer and not yet committed, at most: the listing
/// runs ahead of the store by this much and no further (memory stays bounded).
const PAGES_IN_FLIGHT: usize = 4;

/// A tenant's pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Its credential could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The API (or Entra) refused or failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Its credential could not be read (the message of the [`ConfigError`], shared by the
    /// tenant's streams of one pass).
    #[error("{0}")]
    Credential(String),
    /// Reconcile needs a pulled tenant.
    #[error("tenant {0} has never been pulled; run `xdrsync pull` first")]
    NeverPulled(String),
}

/// How one pull of one (tenant, stream) went.
#[derive(Debug, Clone)]
pub struct TenantReport {
    /// Tenant name from the config.
    pub name: String,
    /// The stream pulled.
    pub stream: StreamKind,
    /// The API used (`graph`, `xdr`, `mde`, `siem`).
    pub api: &'static str,
    /// Versions stored, by kind.
    pub stats: CommitStats,
    /// The newest last-update time seen in this pull.
    pub last_update: Option<Timestamp>,
    /// The stream's cursor after the pull.
    pub cursor: Option<Timestamp>,
    /// Items that could not be read.
    pub poison: usize,
    /// Pages requested.
    pub pages: u32,
    /// Why the pull failed, in plain words (the tenant is then "degraded").
    pub error: Option<String>,
    /// `Warning` headers of partial (206) answers: the pull may have missed data from the
    /// providers they name; the next pull re-reads the window.
    pub partial: Vec<String>,
    /// Pages read without `$expand=alerts` (it failed), each incident then read on its own.
    pub expand_fallbacks: u32,
    /// Where the pull started reading (last-update time).
    pub since: Option<Timestamp>,
}

impl TenantReport {
    fn failed(
        tenant: &Tenant,
        stream: StreamKind,
        error: String,
        cursor: Option<Timestamp>,
    ) -> Self {
        TenantReport {
            name: tenant.name.clone(),
            stream,
            api: api_name(tenant, stream),
            stats: CommitStats::default(),
            last_update: None,
            cursor,
            poison: 0,
            pages: 0,
            error: Some(error),
            partial: Vec::new(),
            expand_fallbacks: 0,
            since: None,
        }
    }
}

/// A finished pull in the process's metrics (a no-op unless the binary installed a recorder):
/// versions stored by change kind, pages, unreadable items, and the outcome (the seconds since
/// the last success are set by the daemon at scrape time).
fn record_metrics(r: &TenantReport) {
    let labels = [("tenant", r.name.clone()), ("stream", r.stream.to_string())];
    let s = &r.stats;
    let created = s.created;
    let updated = s.updated.saturating_sub(s.alert_added + s.redirected);
    for (change, n) in [
        ("created", created),
        ("updated", updated),
        ("alert_added", s.alert_added),
        ("redirected", s.redirected),
    ] {
        if n > 0 {
            let mut l = labels.to_vec();
            l.push(("change", change.to_owned()));
            metrics::counter!("xdrsync_versions_pulled_total", &l).increment(n);
        }
    }
    metrics::counter!("xdrsync_pages_total", &labels).increment(u64::from(r.pages));
    if r.poison > 0 {
        metrics::counter!("xdrsync_poison_items_total", &labels).increment(r.poison as u64);
    }
    // Outcomes per stream only: per tenant they are `status` and the seconds since the last
    // success, and 1,000s of tenants would multiply the exposition.
    metrics::counter!(
        "xdrsync_pulls_total",
        "stream" => r.stream.as_str(),
        "outcome" => if r.error.is_some() { "failed" } else { "ok" },
    )
    .increment(1);
}

/// Where a pull starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullMode {
    /// From the stored cursor minus the overlap (the initial lookback on the first pull).
    Incremental,
    /// From this time, whatever the cursor says (`xdrsync backfill`); the cursor still only
    /// moves forward.
    Since(Timestamp),
}

/// The API a tenant's stream is read from: `graph`/`xdr` for incidents, `graph`/`mde` for
/// alerts, `siem` for detections.
pub fn api_name(tenant: &Tenant, stream: StreamKind) -> &'static str {
    match (stream, tenant.api) {
        (StreamKind::Detections, _) => "siem",
        (StreamKind::Alerts, ApiKind::Xdr) => "mde",
        (_, api) => api.as_str(),
    }
}

/// What the API client reads for a tenant's stream.
pub fn source(tenant: &Tenant, stream: StreamKind) -> Source {
    match stream {
        StreamKind::Incidents => Source::Incidents,
        StreamKind::Alerts => Source::Alerts,
        StreamKind::Detections => Source::Detections(SiemFilter {
            machine_groups: tenant.siem.machine_groups.clone(),
            device_tag: tenant.siem.device_tag.clone(),
            cloud_tag: tenant.siem.cloud_tag.clone(),
        }),
    }
}

/// How the API and the store compare for one (tenant, stream) (`xdrsync reconcile`).
#[derive(Debug, Clone)]
pub struct Reconciliation {
    /// Tenant name.
    pub name: String,
    /// The stream compared.
    pub stream: StreamKind,
    /// Items whose current version the API holds and the store does not:
    /// `(id, the API's last update, the store's newest, if any)`.
    pub missing: Vec<(String, Timestamp, Option<Timestamp>)>,
    /// Items the store holds in the window that the API no longer lists at that version:
    /// `(id, the store's newest)`.
    pub extra: Vec<(String, Timestamp)>,
    /// Items that agree.
    pub matched: usize,
    /// Items changed after the store's cursor (not pulled yet; not a discrepancy).
    pub pending: usize,
    /// Why the comparison could not be made.
    pub error: Option<String>,
    /// The comparison's start: the later of `--since` and where the store's coverage begins.
    pub compared_from: Option<Timestamp>,
}

/// Builds the HTTP client all API and token calls of `config` share.
pub fn http_client(config: &Config) -> Result<reqwest::Client, ConfigError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("xdrsync/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        // Token calls must never follow redirects; API calls have no reason to.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(proxy) = &config.proxy {
        // Every call goes through it, the token endpoint's too (peers.md §10.10).
        let p = reqwest::Proxy::all(proxy.expose().clone()).map_err(|e| ConfigError::Invalid {
            path: config.path.clone(),
            field: "cloud.proxy".into(),
            message: format!("{proxy}: {e}"),
        })?;
        builder = builder.proxy(p);
    }
    if let Some(path) = &config.ca_file {
        let invalid = |message: String| ConfigError::Invalid {
            path: config.path.clone(),
            field: "cloud.ca_file".into(),
            message,
        };
        let pem = std::fs::read(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            invalid(format!(
                "{} is not a PEM certificate bundle: {e}",
                path.display()
            ))
        })?;
        if certs.is_empty() {
            return Err(invalid(format!("{} holds no certificate", path.display())));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| ConfigError::Invalid {
        path: config.path.clone(),
        field: "cloud".into(),
        message: e.to_string(),
    })
}

/// Reads a tenant's credential: its secret from env/file/command, or its certificate and key.
pub fn credential(tenant: &Tenant) -> Result<Credential, ConfigError> {
    match &tenant.credential {
        CredentialSource::ManagedIdentity(url) => Ok(Credential::ManagedIdentity(url.clone())),
        CredentialSource::Secret(s) => {
            let secret = s.resolve(&tenant.credential_field)?;
            Ok(match s.method.unwrap_or_default() {
                SecretMethod::Post => Credential::Secret(secret),
                SecretMethod::Basic => Credential::SecretBasic(secret),
            })
        }
        CredentialSource::Certificate(c) => {
            let err = |message: String| ConfigError::Secret {
                field: tenant.credential_field.clone(),
                message,
            };
            let alg = match c.algorithm {
                AssertionAlgorithm::Ps256 => xdrsync_jwt::Algorithm::PS256,
                AssertionAlgorithm::Rs256 => xdrsync_jwt::Algorithm::RS256,
            };
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))
            };
            let text = |path: &std::path::Path| {
                String::from_utf8(read(path)?)
                    .map_err(|_| err(format!("{} is not PEM text", path.display())))
            };
            let credential = match &c.files {
                CertificateFiles::Pem {
                    cert_file,
                    key_file,
                } => CertificateCredential::from_pem(&text(cert_file)?, &text(key_file)?, alg),
                CertificateFiles::Pkcs12 { pfx_file, password } => {
                    let password = match password {
                        Some(p) => p.resolve(&format!("{}.password", tenant.credential_field))?,
                        None => xdrsync_model::SecretString::new(""),
                    };
                    CertificateCredential::from_pkcs12(&read(pfx_file)?, password.expose(), alg)
                        .map_err(|e| format!("{}: {e}", pfx_file.display()))
                }
            };
            credential
                .map(|c| Credential::Certificate(Box::new(c)))
                .map_err(err)
        }
    }
}

/// Opens the token vault of `config` (its key from `XDRSYNC_VAULT_KEY` or `[auth] vault_key_file`).
pub fn open_vault(config: &Config) -> Result<Arc<Vault>, ConfigError> {
    let err = |message: String| ConfigError::Secret {
        field: "auth.vault_key_file".into(),
        message,
    };
    let text = match (
        std::env::var(xdrsync_config::env::XDRSYNC_VAULT_KEY),
        &config.vault_key_file,
    ) {
        (Ok(v), _) => v,
        (Err(_), Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?,
        (Err(_), None) => {
            return Err(err(format!(
                "delegated sign-ins are stored encrypted: set {} to 32 random bytes in base64 (e.g. `openssl rand -base64 32`) or name a key file in [auth] vault_key_file",
                xdrsync_config::env::XDRSYNC_VAULT_KEY
            )));
        }
    };
    let key = VaultKey::from_base64(&text).map_err(|e| err(e.to_string()))?;
    Ok(Arc::new(Vault::new(&config.vault_file, key)))
}

/// The API target of a tenant's incidents.
pub fn target(
    tenant: &Tenant,
    config: &Config,
    vault: Option<&Arc<Vault>>,
) -> Result<Target, ConfigError> {
    stream_target(tenant, config, vault, StreamKind::Incidents)
}

/// The API target of a tenant's stream: host, token audience and page size.
pub fn stream_target(
    tenant: &Tenant,
    config: &Config,
    vault: Option<&Arc<Vault>>,
    stream: StreamKind,
) -> Result<Target, ConfigError> {
    target_with(tenant, config, vault, stream, credential(tenant)?)
}

/// [`stream_target`] with the tenant's credential already read.
fn target_with(
    tenant: &Tenant,
    config: &Config,
    vault: Option<&Arc<Vault>>,
    stream: StreamKind,
    credential: Credential,
) -> Result<Target, ConfigError> {
    let refresh = match (tenant.delegated, vault) {
        (false, _) => None,
        (true, Some(v)) => Some(RefreshSource {
            vault: v.clone(),
            key: xdrsync_auth::vault_key(
                &tenant.endpoints.authority,
                &tenant.tenant_id,
                &tenant.client_id,
            ),
            tenant_name: tenant.name.clone(),
        }),
        (true, None) => {
            return Err(ConfigError::Secret {
                field: "auth".into(),
                message: "a delegated tenant needs the token vault".into(),
            });
        }
    };
    let e = &tenant.endpoints;
    let alerts = config.sync.alert_page_size;
    let (base_url, resource, page_size) = match (stream, tenant.api) {
        (StreamKind::Detections, _) => {
            let siem = e.siem.clone().ok_or_else(|| ConfigError::Invalid {
                path: config.path.clone(),
                field: "cloud.siem_url".into(),
                message: "no SIEM API host for this cloud and region".into(),
            })?;
            (siem, e.siem_resource.clone(), alerts)
        }
        (StreamKind::Alerts, ApiKind::Graph) => (e.graph.clone(), e.graph_resource.clone(), alerts),
        // The MDE alerts API: its own host and token audience (roles on WindowsDefenderATP).
        (StreamKind::Alerts, ApiKind::Xdr) => (e.mde.clone(), e.mde_resource.clone(), alerts),
        (StreamKind::Incidents, ApiKind::Graph) => (
            e.graph.clone(),
            e.graph_resource.clone(),
            config.sync.graph_page_size,
        ),
        (StreamKind::Incidents, ApiKind::Xdr) => (
            e.xdr.clone(),
            e.xdr_resource.clone(),
            config.sync.xdr_page_size,
        ),
    };
    Ok(Target {
        tenant: tenant.tenant_id.clone(),
        name: tenant.name.clone(),
        stream,
        api: tenant.api,
        base_url,
        token: TokenRequest {
            authority: e.authority.clone(),
            tenant: tenant.tenant_id.clone(),
            client_id: tenant.client_id.clone(),
            credential,
            resource,
            version: tenant.token_version,
            refresh,
        },
        page_size,
    })
}

/// The API client of `config`: its HTTP settings, retry policy and rate budgets. Build one per
/// process and share it, so every command and stream draws on the same budgets.
pub fn api_client(config: &Config) -> Result<ApiClient, ConfigError> {
    let http = http_client(config)?;
    let tokens = Arc::new(TokenCache::new(http.clone()));
    let retry = RetryPolicy {
        max_attempts: config.sync.retry_attempts,
        base: config.sync.retry_base,
        max_wait: config.sync.retry_max,
        max_body: config.sync.max_response_bytes,
    };
    let mut budgets = RateBudgets::new(config.sync.rate_budget, config.sync.quota_time_scale);
    if let Some(ledger) = StoreLedger::open(config) {
        budgets = budgets.with_ledger(Arc::new(ledger));
    }
    let budgets = Arc::new(budgets);
    Ok(ApiClient::with_budgets(http, tokens, retry, budgets))
}

/// Where a (tenant, stream) pull stands, for progress bars and progress lines.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Tenant name.
    pub tenant: String,
    /// The stream.
    pub stream: StreamKind,
    /// What happened.
    pub stage: Stage,
    /// Pages read so far.
    pub pages: u32,
    /// Items read so far (versions new or not).
    pub items: u64,
    /// Where the pull reads back to.
    pub since: Timestamp,
    /// When it started (the clock of this process).
    pub started: Timestamp,
    /// The oldest last-update time read so far: pages come newest first, so the part of
    /// `since ..= started` already covered is `oldest ..= started`.
    pub oldest: Option<Timestamp>,
}

impl Progress {
    /// The share of the time window already read, 0 to 1 (`None` before the first page).
    pub fn fraction(&self) -> Option<f64> {
        let span = (self.started.ticks() - self.since.ticks()).max(1) as f64;
        self.oldest
            .map(|o| ((self.started.ticks() - o.ticks()) as f64 / span).clamp(0.0, 1.0))
    }
}

/// The stages [`Progress`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The pull started.
    Started,
    /// A page was read.
    Page,
    /// The pull ended (its report follows through the `done` callback).
    Finished,
}

/// A callback for [`Progress`] (called on the async threads: keep it quick).
#[derive(Clone)]
pub struct ProgressHook(Arc<dyn Fn(&Progress) + Send + Sync>);

impl ProgressHook {
    /// Wraps `f`.
    pub fn new(f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        ProgressHook(Arc::new(f))
    }
}

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook")
    }
}

/// The store's budget ledger as the API client's [`xdrsync_api_client::budget::SharedLedger`]:
/// every process on one store paces inside one quota.
#[derive(Debug)]
struct StoreLedger(xdrsync_store::BudgetLedger);

impl StoreLedger {
    /// The ledger beside `config`'s store (`None`, with a warning, when it cannot be opened:
    /// the process then paces on its own calls only).
    fn open(config: &Config) -> Option<Self> {
        if config.store_path.as_os_str() == ":memory:" {
            return None;
        }
        let path = xdrsync_store::BudgetLedger::path_for(&config.store_path);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(parent);
        }
        let process = format!("{}-{}", std::process::id(), Timestamp::now().ticks());
        match xdrsync_store::BudgetLedger::open(&path, &process) {
            Ok(l) => Some(StoreLedger(l)),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot open the rate-budget ledger; this process paces on its own calls only.");
                None
            }
        }
    }

    fn warn(e: &xdrsync_store::StoreError) {
        tracing::warn!(error = %e, "The rate-budget ledger failed; pacing on this process's own calls.");
    }
}

impl xdrsync_api_client::budget::SharedLedger for StoreLedger {
    fn reserve(&self, key: &str, at_ms: i64) -> Option<i64> {
        self.0.reserve(key, at_ms).map_err(|e| Self::warn(&e)).ok()
    }

    fn withdraw(&self, row: i64) {
        if let Err(e) = self.0.withdraw(row) {
            Self::warn(&e);
        }
    }

    fn moved(&self, row: i64, to_ms: i64) {
        if let Err(e) = self.0.moved(row, to_ms) {
            Self::warn(&e);
        }
    }

    fn others(&self, key: &str, since_ms: i64, before: Option<i64>) -> (Vec<i64>, Option<i64>) {
        self.0.others(key, since_ms, before).unwrap_or_else(|e| {
            Self::warn(&e);
            (Vec::new(), None)
        })
    }

    fn pause(&self, key: &str, until_ms: i64) {
        if let Err(e) = self.0.pause(key, until_ms) {
            Self::warn(&e);
        }
    }
}

/// Pulls tenants into a store.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Called as pulls start, read pages and end.
    progress: Option<ProgressHook>,
    config: Arc<Config>,
    store: Arc<SqliteStore>,
    /// Commits every stream's pages, grouped (see [`writer`]).
    writer: Writer,
    client: ApiClient,
    /// One vault for every delegated tenant: its lock serializes the rotations they write.
    vault: Option<Arc<Vault>>,
}

impl Pipeline {
    /// A pipeline over `config` and `store`.
    pub fn new(config: Config, store: Arc<SqliteStore>) -> Result<Self, ConfigError> {
        let client = api_client(&config)?;
        let vault = if config.tenants.iter().any(|t| t.enabled && t.delegated) {
            Some(open_vault(&config)?)
        } else {
            None
        };
        let writer = Writer::spawn(store.clone()).map_err(|e| ConfigError::Invalid {
            path: config.path.clone(),
            field: "store".into(),
            message: format!("cannot start the store's writer thread: {e}"),
        })?;
        Ok(Pipeline {
            progress: None,
            client,
            config: Arc::new(config),
            store,
            writer,
            vault,
        })
    }

    /// Reports every pull's progress to `hook`.
    pub fn set_progress(&mut self, hook: ProgressHook) {
        self.progress = Some(hook);
    }

    /// The store.
    pub fn store(&self) -> &Arc<SqliteStore> {
        &self.store
    }

    /// Changes after every commit of pulled versions: sinks wait on it to deliver while a pull
    /// is still running.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.writer.commits()
    }

    /// How many tenants a pass pulls.
    pub fn enabled_tenants(&self) -> usize {
        self.config.tenants.iter().filter(|t| t.enabled).count()
    }

    /// The API client.
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Pulls every enabled tenant once; reports come back in config order.
    pub async fn pull_all(&self) -> Vec<TenantReport> {
        self.pull_all_with(PullMode::Incremental, |_| {}).await
    }

    /// How many (tenant, stream) pulls a pass makes.
    pub fn enabled_streams(&self) -> usize {
        self.config
            .tenants
            .iter()
            .filter(|t| t.enabled)
            .map(|t| t.streams.len())
            .sum()
    }

    /// [`Pipeline::pull_all_with`] while `sinks` deliver after every commit
    /// ([`deliver::follow`]); when it returns, every sink has delivered everything the pass
    /// stored (or failed, with the error in its result, in the order of `sinks`).
    pub async fn pull_all_delivering(
        &self,
        mode: PullMode,
        sinks: &[Arc<dyn xdrsync_sinks::Sink>],
        done: impl FnMut(&TenantReport),
    ) -> (
        Vec<TenantReport>,
        Vec<Result<xdrsync_sinks::Delivered, xdrsync_sinks::SinkError>>,
    ) {
        let (finish, finished) = tokio::sync::watch::channel(false);
        let followers: Vec<_> = sinks
            .iter()
            .map(|s| {
                tokio::spawn(deliver::follow(
                    s.clone(),
                    self.store.clone(),
                    self.commits(),
                    finished.clone(),
                ))
            })
            .collect();
        let reports = self.pull_all_with(mode, done).await;
        let _ = finish.send(true);
        let mut delivered = Vec::with_capacity(followers.len());
        for f in followers {
            delivered.push(match f.await {
                Ok(r) => r,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            });
        }
        (reports, delivered)
    }

    /// Pulls every stream of every enabled tenant once from `mode`, calling `done` as each
    /// (tenant, stream) finishes (for progress output); reports come back in config order.
    /// Streams of one tenant run side by side: they draw on the same rate budgets, and one
    /// stream's failure is that stream's.
    pub async fn pull_all_with(
        &self,
        mode: PullMode,
        mut done: impl FnMut(&TenantReport),
    ) -> Vec<TenantReport> {
        let tenants: Vec<(Tenant, StreamKind)> = self
            .config
            .tenants
            .iter()
            .filter(|t| t.enabled)
            .flat_map(|t| t.streams.iter().map(move |s| (t.clone(), *s)))
            .collect();
        let limit = self.config.sync.concurrent_tenants.max(1);
        // A tenant's credential is read once per pass, by whichever of its streams starts
        // first (a secret command or a PKCS#12 file is not run or decrypted per stream).
        let mut credentials: std::collections::HashMap<String, Arc<CredentialCell>> =
            std::collections::HashMap::new();
        // Tasks are started as others finish, never more than `limit` at once: a waiting task
        // would hold its whole future (tens of KB) for nothing, and a pass has 1,000s of them.
        let mut queue = tenants.iter().cloned().enumerate();
        let mut tasks = tokio::task::JoinSet::new();
        let mut reports: Vec<Option<TenantReport>> = vec![None; tenants.len()];
        loop {
            while tasks.len() < limit
                && let Some((i, (tenant, stream))) = queue.next()
            {
                let this = self.clone();
                let cell = credentials.entry(tenant.name.clone()).or_default().clone();
                tasks.spawn(async move {
                    (
                        i,
                        this.pull_tenant_report(&tenant, stream, mode, &cell).await,
                    )
                });
            }
            match tasks.join_next().await {
                None => break,
                Some(Ok((i, report))) => {
                    done(&report);
                    if let Some(slot) = reports.get_mut(i) {
                        *slot = Some(report);
                    }
                }
                Some(Err(e)) => tracing::error!(error = %e, "A tenant task panicked."),
            }
        }
        reports
            .into_iter()
            .zip(&tenants)
            .map(|(r, (t, stream))| {
                r.unwrap_or_else(|| {
                    TenantReport::failed(
                        t,
                        *stream,
                        "internal error: the tenant's task stopped unexpectedly".into(),
                        None,
                    )
                })
            })
            .collect()
    }

    async fn pull_tenant_report(
        &self,
        tenant: &Tenant,
        stream: StreamKind,
        mode: PullMode,
        cell: &CredentialCell,
    ) -> TenantReport {
        let credential = cell
            .get_or_init(|| {
                let t = tenant.clone();
                async move {
                    match tokio::task::spawn_blocking(move || credential(&t)).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(e) => Err(format!("reading the credential stopped: {e}")),
                    }
                }
            })
            .await
            .clone();
        let pulled = match credential {
            Ok(c) => self.pull_stream_with(tenant, stream, mode, c).await,
            Err(e) => Err(PullError::Credential(e)),
        };
        let report = match pulled {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(tenant = %tenant.name, %stream, error = %e, "Pull failed; other tenants and streams continue.");
                let cursor = self.store.cursor(&tenant.tenant_id, stream).ok().flatten();
                TenantReport::failed(tenant, stream, e.to_string(), cursor)
            }
        };
        record_metrics(&report);
        let outcome = PullOutcome {
            tenant_name: tenant.name.clone(),
            error: report.error.clone(),
            partial: report.partial.last().cloned(),
            since: report.since,
        };
        let store = self.store.clone();
        let id = tenant.tenant_id.clone();
        if let Err(e) = blocking(move || store.record_outcome(&id, stream, &outcome)).await {
            tracing::error!(tenant = %tenant.name, error = %e, "Cannot record the pull's outcome for `xdrsync status`.");
        }
        report
    }

    /// Compares what the API lists for a tenant's stream (last update at or after `since`)
    /// with the store's newest versions, up to the store's cursor.
    pub async fn reconcile(
        &self,
        tenant: &Tenant,
        stream: StreamKind,
        since: Timestamp,
    ) -> Reconciliation {
        let mut r = Reconciliation {
            name: tenant.name.clone(),
            stream,
            missing: Vec::new(),
            extra: Vec::new(),
            matched: 0,
            pending: 0,
            error: None,
            compared_from: None,
        };
        if let Err(e) = self.reconcile_into(tenant, stream, since, &mut r).await {
            r.error = Some(e.to_string());
        }
        r
    }

    async fn reconcile_into(
        &self,
        tenant: &Tenant,
        stream: StreamKind,
        since: Timestamp,
        r: &mut Reconciliation,
    ) -> Result<(), PullError> {
        let target = stream_target(tenant, &self.config, self.vault.as_ref(), stream)?;
        let store = self.store.clone();
        let id = tenant.tenant_id.clone();
        let (cursor, covered) =
            blocking(move || Ok((store.cursor(&id, stream)?, store.covered_from(&id, stream)?)))
                .await?;
        let (Some(cursor), Some(covered)) = (cursor, covered) else {
            return Err(PullError::NeverPulled(tenant.name.clone()));
        };
        // The store can only be held to what a successful pull has read.
        let since = since.max(covered);
        r.compared_from = Some(since);
        let listing = self
            .client
            .list(&target, &source(tenant, stream), since, None)
            .await?;
        let store = self.store.clone();
        let id = tenant.tenant_id.clone();
        let stored = blocking(move || store.latest_since_by_id(&id, stream, since)).await?;
        let mut api = std::collections::BTreeMap::new();
        for f in &listing.records {
            let t = f.record.last_update();
            let e = api.entry(f.record.item_id()).or_insert(t);
            if t > *e {
                *e = t;
            }
        }
        for (id, api_t) in &api {
            let stored_t = stored.get(id).copied();
            if *api_t > cursor {
                r.pending += 1;
            } else if stored_t == Some(*api_t) {
                r.matched += 1;
            } else {
                r.missing.push((id.clone(), *api_t, stored_t));
            }
        }
        for (id, t) in &stored {
            // Not listed, or listed at an older version than the store holds.
            if api.get(id).is_none_or(|a| a < t) {
                r.extra.push((id.clone(), *t));
            }
        }
        Ok(())
    }

    /// Pulls one stream of one tenant: reads from `cursor − overlap` (or the initial lookback,
    /// or the backfill start) and commits the versions with the advanced cursor.
    async fn pull_stream_with(
        &self,
        tenant: &Tenant,
        stream: StreamKind,
        mode: PullMode,
        credential: Credential,
    ) -> Result<TenantReport, PullError> {
        let target = target_with(
            tenant,
            &self.config,
            self.vault.as_ref(),
            stream,
            credential,
        )?;
        let store = self.store.clone();
        let id = tenant.tenant_id.clone();
        let cursor = blocking(move || store.cursor(&id, stream)).await?;
        let since = match (mode, cursor) {
            (PullMode::Since(t), _) => t,
            (PullMode::Incremental, Some(c)) => c.sub(self.config.sync.overlap),
            (PullMode::Incremental, None) => {
                Timestamp::now().sub(self.config.sync.initial_lookback)
            }
        };
        let api = api_name(tenant, stream);
        tracing::info!(tenant = %tenant.name, %stream, api, %since, "Pulling.");
        // Each page goes to the writer as soon as it is read while the next one is fetched;
        // the cursor follows in a last request, after every page it covers was committed.
        let (pages, mut received) = tokio::sync::mpsc::channel::<Page>(2);
        let mut stats = CommitStats::default();
        let mut last_update: Option<Timestamp> = None;
        let mut poison_count = 0;
        let src = source(tenant, stream);
        let list = self.client.list_pages(&target, &src, since, None, pages);
        let mut progress = Progress {
            tenant: tenant.name.clone(),
            stream,
            stage: Stage::Started,
            pages: 0,
            items: 0,
            since,
            started: Timestamp::now(),
            oldest: None,
        };
        let report = |p: &Progress| {
            if let Some(h) = &self.progress {
                (h.0)(p);
            }
        };
        report(&progress);
        let store_pages = async {
            let mut pending = std::collections::VecDeque::new();
            while let Some(page) = received.recv().await {
                progress.stage = Stage::Page;
                progress.pages += 1;
                progress.items += (page.records.len() + page.poison.len()) as u64;
                progress.oldest = page
                    .records
                    .iter()
                    .map(|f| f.record.last_update())
                    .chain(progress.oldest)
                    .min();
                report(&progress);
                for p in &page.poison {
                    tracing::error!(tenant = %tenant.name, %stream, item = p.item_id.as_deref().unwrap_or("?"), reason = %p.reason,
                        "Skipped an item the API returned in a form that cannot be read; it is kept in the store's poison table.");
                }
                poison_count += page.poison.len();
                last_update = page
                    .records
                    .iter()
                    .map(|f| f.record.last_update())
                    .chain(last_update)
                    .max();
                pending.push_back(
                    self.writer.submit(CommitRequest {
                        tenant: tenant.tenant_id.clone(),
                        versions: page
                            .records
                            .into_iter()
                            .map(|f| NewVersion {
                                record: f.record,
                                raw: f.raw,
                            })
                            .collect(),
                        poison: page
                            .poison
                            .into_iter()
                            .map(|p| PoisonRecord {
                                stream,
                                item_id: p.item_id,
                                reason: p.reason,
                                raw: p.raw,
                            })
                            .collect(),
                        cursor: None,
                    }),
                );
                if pending.len() > PAGES_IN_FLIGHT
                    && let Some(p) = pending.pop_front()
                {
                    stats += Writer::wait(p).await?;
                }
            }
            // Pages already sent are committed whether or not the listing failed later (they
            // are versions like any other; only the cursor stays where it was).
            for p in pending {
                stats += Writer::wait(p).await?;
            }
            Ok::<(), StoreError>(())
        };
        let (listed, stored) = tokio::join!(list, store_pages);
        progress.stage = Stage::Finished;
        report(&progress);
        // A store failure is the cause when both failed (the listing was abandoned for it).
        stored?;
        let paging = listed?;
        // With nothing new the cursor stays (the success is recorded in the stream's health).
        if let Some(t) = last_update {
            stats += self
                .writer
                .commit(CommitRequest {
                    tenant: tenant.tenant_id.clone(),
                    versions: Vec::new(),
                    poison: Vec::new(),
                    cursor: Some((stream, t)),
                })
                .await?;
        }
        // The cursor only moves forward: what it was, or what this pull saw if that is newer.
        let cursor = cursor.max(last_update);
        tracing::info!(tenant = %tenant.name, %stream, created = stats.created, updated = stats.updated, unchanged = stats.unchanged, pages = paging.pages, "Pulled.");
        Ok(TenantReport {
            name: tenant.name.clone(),
            stream,
            api,
            stats,
            last_update,
            cursor,
            poison: poison_count,
            pages: paging.pages,
            error: None,
            partial: paging.partial,
            expand_fallbacks: paging.expand_fallbacks,
            since: Some(since),
        })
    }
}

/// A tenant's credential for one pass: read once, shared by its streams.
type CredentialCell = tokio::sync::OnceCell<Result<Credential, String>>;

/// Runs store work off the async threads.
/// Runs `f` (store work) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
