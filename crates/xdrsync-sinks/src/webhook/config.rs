//! `[sinks.webhook]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use url::Url;
use xdrsync_config::{ConfigError, SecretSource};
use xdrsync_model::TenantId;

use crate::config::Ctx;

/// `[sinks.webhook]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where batches are POSTed (https, or http to a loopback address).
    pub url: String,
    /// The HMAC-SHA256 key the `X-Xdrsync-Signature` header is made with (recommended).
    pub secret: Option<SecretSource>,
    /// Request timeout.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Extra CA certificate (PEM) to trust, relative to the config file.
    pub ca_file: Option<PathBuf>,
    /// Per-tenant URLs, by tenant name or id: `[sinks.webhook.tenants.contoso] url = "…"`.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantWebhook>,
}

/// `[sinks.webhook.tenants.<tenant>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantWebhook {
    /// This tenant's events go here instead.
    pub url: String,
}

fn default_timeout_secs() -> u64 {
    30
}

/// Validated `[sinks.webhook]`.
#[derive(Debug, Clone)]
pub struct Validated {
    pub(crate) url: Url,
    pub(crate) secret: Option<SecretSource>,
    pub(crate) timeout_secs: u64,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) tenants: Vec<(TenantId, Url)>,
}

impl WebhookConfig {
    pub(crate) fn validate(self, ctx: &Ctx<'_>) -> Result<Validated, ConfigError> {
        let url = ctx.http_url("webhook.url", &self.url)?;
        let secret = self
            .secret
            .as_ref()
            .map(|s| ctx.secret("webhook.secret", s))
            .transpose()?;
        let mut tenants = Vec::new();
        for (name, t) in &self.tenants {
            let field = format!("webhook.tenants.{name}");
            tenants.push((
                ctx.tenant(&field, name)?,
                ctx.http_url(&format!("{field}.url"), &t.url)?,
            ));
        }
        if self.timeout_secs == 0 {
            return Err(ctx.invalid("webhook.timeout_secs", "must be at least 1"));
        }
        Ok(Validated {
            url,
            secret,
            timeout_secs: self.timeout_secs,
            ca_file: self.ca_file.as_deref().map(|p| ctx.resolve(p)),
            tenants,
        })
    }
}
