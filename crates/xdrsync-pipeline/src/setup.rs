//! Set-up from the config: the HTTP client, each tenant's credential and API target, the
//! token vault. Nothing here talks to a server.

use std::sync::Arc;

use std::time::Duration;

use xdrsync_api_client::{ApiClient, RateBudgets, RetryPolicy, SiemFilter, Source, Target};
use xdrsync_auth::vault::{Vault, VaultKey};
use xdrsync_auth::{CertificateCredential, Credential, RefreshSource, TokenCache, TokenRequest};
use xdrsync_config::{
    AssertionAlgorithm, CertificateFiles, Config, ConfigError, CredentialSource, SecretMethod,
    Tenant,
};
use xdrsync_model::{ApiKind, StreamKind, Timestamp};

use crate::ledger::StoreLedger;

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
        // Hunt rows are never listed (a tenant cannot pull `hunts`); the hunting API lives
        // beside the incidents.
        StreamKind::Incidents | StreamKind::Hunts => Source::Incidents,
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
    if let Some(addr) = config.connect_to {
        // Every Microsoft host the tenants use, reached at one address (curl's --connect-to).
        // The managed-identity endpoint is not among them: it is never redirected.
        let mut hosts = std::collections::BTreeSet::new();
        for t in &config.tenants {
            let e = &t.endpoints;
            for url in [&e.authority, &e.graph, &e.xdr, &e.mde]
                .into_iter()
                .chain(e.siem.as_ref())
            {
                if let Some(h) = url.host_str() {
                    hosts.insert(h.to_owned());
                }
            }
        }
        for h in hosts {
            builder = builder.resolve(&h, addr);
        }
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
pub(crate) fn target_with(
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
        // Advanced hunting is served beside the incidents, with the same token.
        (StreamKind::Incidents | StreamKind::Hunts, ApiKind::Graph) => (
            e.graph.clone(),
            e.graph_resource.clone(),
            config.sync.graph_page_size,
        ),
        (StreamKind::Incidents | StreamKind::Hunts, ApiKind::Xdr) => (
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
    api_client_with_ledger(config, StoreLedger::open(config))
}

/// [`api_client`] pacing with every process on `store`: through the store's own ledger when
/// it has one (PostgreSQL: every worker of a cluster), else the file beside the SQLite store.
pub fn api_client_on(
    config: &Config,
    store: &dyn xdrsync_store::Store,
) -> Result<ApiClient, ConfigError> {
    let ledger = StoreLedger::in_store(store).or_else(|| StoreLedger::open(config));
    api_client_with_ledger(config, ledger)
}

fn api_client_with_ledger(
    config: &Config,
    ledger: Option<StoreLedger>,
) -> Result<ApiClient, ConfigError> {
    let http = http_client(config)?;
    let tokens = Arc::new(TokenCache::new(http.clone()));
    let retry = RetryPolicy {
        max_attempts: config.sync.retry_attempts,
        base: config.sync.retry_base,
        max_wait: config.sync.retry_max,
        max_body: config.sync.max_response_bytes,
    };
    let mut budgets = RateBudgets::new(config.sync.rate_budget, config.sync.quota_time_scale);
    if let Some(ledger) = ledger {
        budgets = budgets.with_ledger(Arc::new(ledger));
    }
    let budgets = Arc::new(budgets);
    Ok(ApiClient::with_budgets(http, tokens, retry, budgets))
}
