//! Validation: the file as written ([`ConfigFile`]) → the checked [`Config`], one section at
//! a time, each refusal naming the field (`tenants[2].client_id`) and what is wrong with it.
//! Nothing here reads a secret or opens a connection.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use url::Url;
use xdrsync_model::{SafeUrl, StreamKind, TenantId};

use crate::cloud::{self, Endpoints};
use crate::{
    AppSection, Certificate, CertificateFiles, CertificateSource, CloudSection, ClusterSection,
    Config, ConfigError, ConfigFile, CredentialSource, IMDS_ENDPOINT, ManagedIdentitySource,
    SecretSource, ServerSection, SyncSection, SyncSettings, Tenant, TenantSection, is_domain,
    is_guid, is_loopback,
};

/// What validating one file needs: where it is (relative paths are relative to it), whether
/// inline secrets are allowed, and the warnings gathered on the way.
struct Check<'a> {
    path: &'a Path,
    base: PathBuf,
    allow_inline: bool,
    warnings: RefCell<Vec<String>>,
}

/// Validates a parsed file.
pub(crate) fn validate(file: ConfigFile, path: &Path) -> Result<Config, ConfigError> {
    let c = Check {
        path,
        base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        allow_inline: file.allow_inline_secrets,
        warnings: RefCell::new(Vec::new()),
    };
    let sync = c.sync(&file.sync)?;
    let endpoints =
        cloud::endpoints(&file.cloud).map_err(|(field, message)| c.invalid(field, message))?;
    let proxy = c.proxy(&file.cloud)?;
    let connect_to = c.connect_to(&file.cloud)?;
    c.apps(&file.apps)?;
    let mut names = BTreeSet::new();
    let mut tenants = Vec::with_capacity(file.tenants.len());
    for (i, t) in file.tenants.iter().enumerate() {
        if !names.insert(t.name.as_str()) {
            return Err(c.invalid(
                format!("tenants[{i}].name"),
                format!("`{}` is used twice", t.name),
            ));
        }
        tenants.push(c.tenant(i, t, &file.apps, &endpoints)?);
    }
    let hunts = c.hunts(&file.hunts, &names, &tenants)?;
    let server_listen = c.listen(&file.server)?;
    let inbound_actions = match (&file.server.actions_hmac_secret, &file.server.actions_token) {
        (None, None) => None,
        (hmac, token) => Some(crate::InboundActions {
            hmac_secret: hmac
                .as_ref()
                .map(|s| c.secret("server.actions_hmac_secret", s))
                .transpose()?,
            token: token
                .as_ref()
                .map(|s| c.secret("server.actions_token", s))
                .transpose()?,
            replay_window: std::time::Duration::from_secs(file.server.actions_replay_secs.max(1)),
        }),
    };
    if file.store.url.is_some() && file.store.path != crate::file::default_store_path() {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            field: "store.url".into(),
            message: "give one of `path` (a SQLite file) and `url` (a PostgreSQL database)".into(),
        });
    }
    let cluster = c.cluster(file.cluster.as_ref(), file.store.url.is_some())?;
    let store_url = file
        .store
        .url
        .as_ref()
        .map(|s| c.secret("store.url", s))
        .transpose()?;
    Ok(Config {
        path: path.to_owned(),
        store_path: c.resolve(&file.store.path),
        store_url,
        store_ca_file: file.store.ca_file.as_deref().map(|p| c.resolve(p)),
        cluster,
        retention_days: file.store.retention_days,
        server_listen,
        inbound_actions,
        sync,
        tenants,
        ca_file: file.cloud.ca_file.as_deref().map(|p| c.resolve(p)),
        vault_file: c.resolve(&file.auth.vault_file),
        vault_key_file: file.auth.vault_key_file.as_deref().map(|p| c.resolve(p)),
        warnings: c.warnings.into_inner(),
        proxy,
        connect_to,
        sinks: file.sinks,
        allow_inline_secrets: file.allow_inline_secrets,
        hunts,
    })
}

impl Check<'_> {
    fn invalid(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// `p` relative to the config file's folder (absolute paths as they are).
    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// `[cluster]`: only beside a PostgreSQL store; a lease long enough to renew.
    fn cluster(
        &self,
        s: Option<&ClusterSection>,
        postgres: bool,
    ) -> Result<crate::ClusterSettings, ConfigError> {
        let Some(s) = s else {
            return Ok(crate::ClusterSettings {
                lease: std::time::Duration::from_secs(crate::file::default_lease_secs()),
                worker: None,
            });
        };
        if !postgres {
            return Err(self.invalid(
                "cluster",
                "a cluster needs the PostgreSQL store its workers share: set `[store] url`",
            ));
        }
        if !(3..=3600).contains(&s.lease_secs) {
            return Err(self.invalid(
                "cluster.lease_secs",
                format!(
                    "must be 3..=3600 seconds (workers renew every third of it), got {}",
                    s.lease_secs
                ),
            ));
        }
        if let Some(w) = &s.worker
            && (w.trim().is_empty() || w.len() > 200 || w.chars().any(|c| c.is_control()))
        {
            return Err(self.invalid(
                "cluster.worker",
                "must be a name of 1 to 200 printable characters",
            ));
        }
        Ok(crate::ClusterSettings {
            lease: std::time::Duration::from_secs(s.lease_secs),
            worker: s.worker.clone(),
        })
    }

    /// `[sync]`: page sizes within what each API accepts, bounded retries and sizes.
    fn sync(&self, s: &SyncSection) -> Result<SyncSettings, ConfigError> {
        if s.graph_page_size == 0 || s.graph_page_size > 50 {
            return Err(self.invalid(
                "sync.graph_page_size",
                format!(
                    "must be 1..=50 (Graph refuses $top above 50), got {}",
                    s.graph_page_size
                ),
            ));
        }
        if s.xdr_page_size == 0 || s.xdr_page_size > 100 {
            return Err(self.invalid(
                "sync.xdr_page_size",
                format!(
                    "must be 1..=100 (the XDR API refuses $top above 100), got {}",
                    s.xdr_page_size
                ),
            ));
        }
        if s.alert_page_size == 0 || s.alert_page_size > 1000 {
            return Err(self.invalid(
                "sync.alert_page_size",
                format!(
                    "must be 1..=1000 (alerts_v2 silently clamps $top to 1000), got {}",
                    s.alert_page_size
                ),
            ));
        }
        if s.retry_attempts == 0 || s.retry_attempts > 50 {
            return Err(self.invalid(
                "sync.retry_attempts",
                format!("must be 1..=50, got {}", s.retry_attempts),
            ));
        }
        if !(s.quota_time_scale.is_finite() && s.quota_time_scale >= 1.0) {
            return Err(self.invalid(
                "sync.quota_time_scale",
                format!(
                    "must be at least 1 (Microsoft's own quota windows), got {}",
                    s.quota_time_scale
                ),
            ));
        }
        if s.concurrent_tenants == 0 || s.concurrent_tenants > 256 {
            return Err(self.invalid(
                "sync.concurrent_tenants",
                format!("must be 1..=256, got {}", s.concurrent_tenants),
            ));
        }
        if s.interval_secs == 0 {
            return Err(self.invalid("sync.interval_secs", "must be at least 1"));
        }
        if !(s.max_response_mib.is_finite()
            && s.max_response_mib > 0.0
            && s.max_response_mib <= 4096.0)
        {
            return Err(self.invalid(
                "sync.max_response_mib",
                format!(
                    "must be more than 0 and at most 4096, got {}",
                    s.max_response_mib
                ),
            ));
        }
        if s.initial_lookback_hours == 0 || s.initial_lookback_hours > 180 * 24 {
            return Err(self.invalid(
                "sync.initial_lookback_hours",
                format!(
                    "must be 1..=4320 (Defender keeps 180 days), got {}",
                    s.initial_lookback_hours
                ),
            ));
        }
        Ok(SyncSettings {
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
        })
    }

    /// `[cloud] proxy`: an http(s) proxy URL (printed without its credentials).
    fn proxy(&self, cloud: &CloudSection) -> Result<Option<SafeUrl>, ConfigError> {
        Ok(match &cloud.proxy {
            None => None,
            Some(raw) => {
                let url = Url::parse(raw).map_err(|_| {
                    self.invalid("cloud.proxy", "is not a URL (e.g. http://proxy.corp:3128)")
                })?;
                if !["http", "https"].contains(&url.scheme()) || url.host_str().is_none() {
                    return Err(self.invalid(
                        "cloud.proxy",
                        format!(
                            "must be an http(s) proxy URL, got {}",
                            xdrsync_model::SafeUrl::new(url)
                        ),
                    ));
                }
                Some(xdrsync_model::SafeUrl::new(url))
            }
        })
    }

    /// `[cloud] connect_to`: `address:port`, and not beside a proxy.
    fn connect_to(
        &self,
        cloud: &CloudSection,
    ) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let Some(raw) = &cloud.connect_to else {
            return Ok(None);
        };
        if cloud.proxy.is_some() {
            return Err(self.invalid(
                "cloud.connect_to",
                "cannot be used with `proxy`: the proxy resolves the host names itself",
            ));
        }
        raw.parse().map(Some).map_err(|_| {
            self.invalid(
                "cloud.connect_to",
                format!("`{raw}` is not an address:port (e.g. 127.0.0.1:8443)"),
            )
        })
    }

    /// A secret source: its form checked (inline only when allowed, with a warning).
    fn secret(&self, field: &str, src: &SecretSource) -> Result<SecretSource, ConfigError> {
        let out = src.validated(field, self.path, self.allow_inline)?;
        if src.value.is_some() {
            self.warnings.borrow_mut().push(format!(
                "`{field}` is written inline in the config file; prefer `env`, `file` or `command`"
            ));
        }
        Ok(out)
    }

    /// The one credential of `prefix` (`apps[i]` or `tenants[i]`): a secret, a certificate or
    /// a managed identity; with the field it was read from.
    fn credential(
        &self,
        prefix: &str,
        secret: Option<&SecretSource>,
        cert: Option<&CertificateSource>,
        mi: Option<&ManagedIdentitySource>,
    ) -> Result<(CredentialSource, String), ConfigError> {
        if let Some(mi) = mi {
            let field = format!("{prefix}.managed_identity");
            if secret.is_some() || cert.is_some() {
                return Err(self.invalid(field, "give one credential: `client_secret`, `client_certificate` or `managed_identity`"));
            }
            let raw = mi.endpoint.as_deref().unwrap_or(IMDS_ENDPOINT);
            let url = Url::parse(raw).map_err(|e| {
                self.invalid(
                    format!("{field}.endpoint"),
                    format!("`{raw}` is not a URL: {e}"),
                )
            })?;
            let link_local = url.host_str() == Some("169.254.169.254");
            if url.scheme() != "https" && !link_local && !url.host_str().is_some_and(is_loopback) {
                return Err(self.invalid(
                    format!("{field}.endpoint"),
                    "must be the link-local metadata address, https, or loopback",
                ));
            }
            return Ok((CredentialSource::ManagedIdentity(url), field));
        }
        match (secret, cert) {
            (Some(s), None) => {
                let field = format!("{prefix}.client_secret");
                Ok((CredentialSource::Secret(self.secret(&field, s)?), field))
            }
            (None, Some(c)) => {
                let field = format!("{prefix}.client_certificate");
                let files = match (&c.cert_file, &c.key_file, &c.pfx_file, &c.password) {
                    (Some(cert), Some(key), None, None) => CertificateFiles::Pem {
                        cert_file: self.resolve(cert),
                        key_file: self.resolve(key),
                    },
                    (None, None, Some(pfx), password) => CertificateFiles::Pkcs12 {
                        pfx_file: self.resolve(pfx),
                        password: match password {
                            Some(p) if p.method.is_some() => {
                                return Err(self.invalid(
                                    format!("{field}.password.method"),
                                    "`method` is for `client_secret` only",
                                ));
                            }
                            Some(p) => Some(self.secret(&format!("{field}.password"), p)?),
                            None => None,
                        },
                    },
                    _ => {
                        return Err(self.invalid(
                            field,
                            "give `cert_file` and `key_file` (PEM), or `pfx_file` with an optional `password` (PKCS#12)",
                        ));
                    }
                };
                let c = Certificate {
                    files,
                    algorithm: c.algorithm,
                };
                Ok((CredentialSource::Certificate(c), field))
            }
            (Some(_), Some(_)) => Err(self.invalid(
                format!("{prefix}.client_certificate"),
                "give either `client_secret` or `client_certificate`, not both",
            )),
            (None, None) => Err(self.invalid(
                format!("{prefix}.client_secret"),
                "missing: give `client_secret`, `client_certificate` or `managed_identity`",
            )),
        }
    }

    /// `[[apps]]`: unique names, GUID client ids, one credential each.
    fn apps(&self, apps: &[AppSection]) -> Result<(), ConfigError> {
        let mut app_names = BTreeSet::new();
        for (i, app) in apps.iter().enumerate() {
            if !app_names.insert(app.name.as_str()) {
                return Err(self.invalid(
                    format!("apps[{i}].name"),
                    format!("`{}` is used twice", app.name),
                ));
            }
            if !is_guid(&app.client_id) {
                return Err(self.invalid(
                    format!("apps[{i}].client_id"),
                    format!("must be a GUID, got `{}`", app.client_id),
                ));
            }
            self.credential(
                &format!("apps[{i}]"),
                app.client_secret.as_ref(),
                app.client_certificate.as_ref(),
                app.managed_identity.as_ref(),
            )?;
        }

        Ok(())
    }

    /// One `[[tenants]]` entry: its name and id, its app or own credential, its streams.
    fn tenant(
        &self,
        i: usize,
        t: &TenantSection,
        apps: &[AppSection],
        endpoints: &Endpoints,
    ) -> Result<Tenant, ConfigError> {
        let f = |name: &str| format!("tenants[{i}].{name}");
        if t.name.trim().is_empty() || t.name.contains(char::is_whitespace) {
            return Err(self.invalid(
                f("name"),
                format!("must be a non-empty name without spaces, got `{}`", t.name),
            ));
        }
        let lowered = t.tenant_id.to_ascii_lowercase();
        if ["common", "organizations", "consumers"].contains(&lowered.as_str()) {
            return Err(self.invalid(
                f("tenant_id"),
                format!(
                    "`{}` is not a tenant: app-only tokens need the customer's own tenant id",
                    t.tenant_id
                ),
            ));
        }
        if !is_guid(&t.tenant_id) && !is_domain(&t.tenant_id) {
            return Err(self.invalid(
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
                let Some((j, a)) = apps.iter().enumerate().find(|(_, a)| &a.name == app) else {
                    return Err(
                        self.invalid(f("app"), format!("no [[apps]] entry is named `{app}`"))
                    );
                };
                (
                    a.client_id.clone(),
                    self.credential(
                        &format!("apps[{j}]"),
                        a.client_secret.as_ref(),
                        a.client_certificate.as_ref(),
                        a.managed_identity.as_ref(),
                    )?,
                )
            }
            (None, Some(id), true) => {
                if !is_guid(id) {
                    return Err(self.invalid(f("client_id"), format!("must be a GUID, got `{id}`")));
                }
                (
                    id.clone(),
                    self.credential(
                        &format!("tenants[{i}]"),
                        t.client_secret.as_ref(),
                        t.client_certificate.as_ref(),
                        t.managed_identity.as_ref(),
                    )?,
                )
            }
            (Some(_), _, _) => {
                return Err(self.invalid(
                    f("app"),
                    "give either `app` or `client_id` + a credential, not both",
                ));
            }
            (None, None, _) => {
                return Err(self.invalid(f("client_id"), "missing: give `client_id` + `client_secret` (or `client_certificate`), or `app`"));
            }
            (None, Some(_), false) => {
                return Err(self.invalid(f("client_secret"), "missing: give `{ env = \"VAR\" }`, `{ file = \"path\" }` or `{ command = [...] }`, or a `client_certificate`"));
            }
        };
        let mut streams = Vec::new();
        for name in &t.streams {
            let Some(k) = StreamKind::parse(name).filter(StreamKind::is_pulled) else {
                return Err(self.invalid(
                    f("streams"),
                    format!("`{name}` is not a stream a tenant pulls; use incidents, alerts or detections (scheduled hunts are `[[hunts]]` sections)"),
                ));
            };
            if streams.contains(&k) {
                return Err(self.invalid(f("streams"), format!("`{name}` is listed twice")));
            }
            streams.push(k);
        }
        if streams.is_empty() {
            return Err(self.invalid(
                f("streams"),
                "is empty: list at least one of incidents, alerts, detections (or set enabled = false)",
            ));
        }
        streams.sort();
        if streams.contains(&StreamKind::Detections) && endpoints.siem.is_none() {
            return Err(self.invalid(
                f("streams"),
                "`detections` reads the SIEM API, which had hosts only in the public cloud's us, eu and uk regions; set cloud.siem_url",
            ));
        }
        Ok(Tenant {
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
        })
    }

    /// `[server] listen`: an address and port, or "" for no server.
    /// `[[hunts]]`: unique names that can key a row, known tenants, intervals and timespans
    /// within what advanced hunting serves.
    fn hunts(
        &self,
        hunts: &[crate::HuntSection],
        tenants: &BTreeSet<&str>,
        validated: &[crate::Tenant],
    ) -> Result<Vec<crate::Hunt>, ConfigError> {
        let mut names = BTreeSet::new();
        let mut out = Vec::with_capacity(hunts.len());
        for (i, h) in hunts.iter().enumerate() {
            let f = |k: &str| format!("hunts[{i}].{k}");
            if h.name.is_empty()
                || h.name.len() > 64
                || !h
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(self.invalid(
                    f("name"),
                    format!(
                        "`{}` is not a hunt name: use 1 to 64 letters, digits, `-`, `_` or `.`",
                        xdrsync_model::printable(&h.name)
                    ),
                ));
            }
            if !names.insert(h.name.as_str()) {
                return Err(self.invalid(f("name"), format!("`{}` is used twice", h.name)));
            }
            if h.query.trim().is_empty() {
                return Err(self.invalid(f("query"), "is empty"));
            }
            for t in &h.tenants {
                if !tenants.contains(t.as_str()) {
                    return Err(self.invalid(
                        f("tenants"),
                        format!(
                            "`{}` is not the name of a [[tenants]] entry",
                            xdrsync_model::printable(t)
                        ),
                    ));
                }
            }
            let interval = xdrsync_model::parse_duration(&h.interval)
                .map_err(|e| self.invalid(f("interval"), e.to_string()))?;
            if interval < chrono::Duration::seconds(1) {
                return Err(self.invalid(f("interval"), "must be at least 1s"));
            }
            let timespan = xdrsync_model::parse_duration(&h.timespan)
                .map_err(|e| self.invalid(f("timespan"), e.to_string()))?;
            if timespan < chrono::Duration::seconds(1) || timespan > chrono::Duration::days(30) {
                return Err(self.invalid(
                    f("timespan"),
                    "must be between 1s and 30d (advanced hunting keeps 30 days of data)",
                ));
            }
            let severity = match h.severity.as_str() {
                "informational" | "low" | "medium" | "high" => {
                    xdrsync_model::Severity::parse(&h.severity)
                }
                other => {
                    return Err(self.invalid(
                        f("severity"),
                        format!(
                            "`{}` is not a severity: use informational, low, medium or high",
                            xdrsync_model::printable(other)
                        ),
                    ));
                }
            };
            // The legacy API takes the time range from the query alone.
            let legacy: Vec<&str> = validated
                .iter()
                .filter(|t| {
                    t.enabled
                        && t.api == xdrsync_model::ApiKind::Xdr
                        && (h.tenants.is_empty() || h.tenants.contains(&t.name))
                })
                .map(|t| t.name.as_str())
                .collect();
            if h.enabled
                && !legacy.is_empty()
                && !h.query.contains("ago(")
                && !h.query.contains("datetime(")
            {
                self.warnings.borrow_mut().push(format!(
                    "{}: tenants {} use the legacy API, which ignores `timespan` and searches its 30 days: put the range in the query (e.g. `| where Timestamp > ago({})`)",
                    f("query"),
                    legacy.join(", "),
                    h.timespan
                ));
            }
            out.push(crate::Hunt {
                name: h.name.clone(),
                query: h.query.clone(),
                tenants: h.tenants.clone(),
                interval: interval.to_std().unwrap_or_default(),
                timespan,
                severity,
                enabled: h.enabled,
            });
        }
        Ok(out)
    }

    fn listen(&self, server: &ServerSection) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let listen = server.listen.trim();
        Ok(if listen.is_empty() {
            None
        } else {
            Some(listen.parse::<std::net::SocketAddr>().map_err(|e| {
            ConfigError::Invalid {
                path: self.path.to_owned(),
                field: "server.listen".into(),
                message: format!("`{listen}` is not an address and port such as 127.0.0.1:9464 ({e}); \"\" turns the server off"),
            }
        })?)
        })
    }
}
