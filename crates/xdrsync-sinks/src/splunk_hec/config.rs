//! `[sinks.splunk_hec]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use url::Url;
use xdrsync_config::{ConfigError, SecretSource};
use xdrsync_model::TenantId;

use crate::config::Ctx;

/// `[sinks.splunk_hec]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HecConfig {
    /// The collector's base URL, e.g. `https://splunk.example.com:8088`.
    pub url: String,
    /// The HEC token (sent as `Authorization: Splunk <token>`; never logged).
    pub token: SecretSource,
    /// The index (default: the token's default index).
    pub index: Option<String>,
    /// The sourcetype (default: `xdrsync:incident`, `xdrsync:alert`, `xdrsync:detection`).
    pub sourcetype: Option<String>,
    /// The `source` field.
    #[serde(default = "default_source")]
    pub source: String,
    /// The `host` field (default: the tenant's name).
    pub host: Option<String>,
    /// Compress requests with gzip.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Wait for indexer acknowledgement (the token must have it enabled).
    #[serde(default)]
    pub ack: bool,
    /// How long to wait for an acknowledgement before sending the batch again.
    #[serde(default = "default_ack_timeout_secs")]
    pub ack_timeout_secs: u64,
    /// How often to ask.
    #[serde(default = "default_ack_poll_ms")]
    pub ack_poll_ms: u64,
    /// Request timeout.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Extra CA certificate (PEM) to trust, relative to the config file.
    pub ca_file: Option<PathBuf>,
    /// Per-tenant index, sourcetype and host, by tenant name or id.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantHec>,
}

/// `[sinks.splunk_hec.tenants.<tenant>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantHec {
    /// This tenant's index.
    pub index: Option<String>,
    /// This tenant's sourcetype.
    pub sourcetype: Option<String>,
    /// This tenant's host.
    pub host: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_source() -> String {
    "xdrsync".into()
}
fn default_ack_timeout_secs() -> u64 {
    120
}
fn default_ack_poll_ms() -> u64 {
    500
}
fn default_timeout_secs() -> u64 {
    30
}

/// The fields one event's envelope takes from its tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) index: Option<String>,
    pub(crate) sourcetype: Option<String>,
    pub(crate) host: Option<String>,
}

/// Validated `[sinks.splunk_hec]`.
#[derive(Debug, Clone)]
pub struct Validated {
    pub(crate) url: Url,
    pub(crate) token: SecretSource,
    pub(crate) source: String,
    pub(crate) default: Placement,
    pub(crate) tenants: Vec<(TenantId, Placement)>,
    /// Tenant names, for the default `host`.
    pub(crate) names: Vec<(TenantId, String)>,
    pub(crate) gzip: bool,
    pub(crate) ack: bool,
    pub(crate) ack_timeout_secs: u64,
    pub(crate) ack_poll_ms: u64,
    pub(crate) timeout_secs: u64,
    pub(crate) ca_file: Option<PathBuf>,
}

impl HecConfig {
    pub(crate) fn validate(self, ctx: &Ctx<'_>) -> Result<Validated, ConfigError> {
        let mut url = ctx.http_url("splunk_hec.url", &self.url)?;
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        let token = ctx.secret("splunk_hec.token", &self.token)?;
        let mut tenants = Vec::new();
        for (name, t) in &self.tenants {
            let id = ctx.tenant(&format!("splunk_hec.tenants.{name}"), name)?;
            tenants.push((
                id,
                Placement {
                    index: t.index.clone(),
                    sourcetype: t.sourcetype.clone(),
                    host: t.host.clone(),
                },
            ));
        }
        if self.timeout_secs == 0 || self.ack_timeout_secs == 0 || self.ack_poll_ms == 0 {
            return Err(ctx.invalid(
                "splunk_hec",
                "timeout_secs, ack_timeout_secs and ack_poll_ms must be at least 1",
            ));
        }
        Ok(Validated {
            url,
            token,
            source: self.source,
            default: Placement {
                index: self.index,
                sourcetype: self.sourcetype,
                host: self.host,
            },
            tenants,
            names: ctx
                .tenants
                .iter()
                .map(|t| (t.tenant_id.clone(), t.name.clone()))
                .collect(),
            gzip: self.gzip,
            ack: self.ack,
            ack_timeout_secs: self.ack_timeout_secs,
            ack_poll_ms: self.ack_poll_ms,
            timeout_secs: self.timeout_secs,
            ca_file: self.ca_file.as_deref().map(|p| ctx.resolve(p)),
        })
    }
}
