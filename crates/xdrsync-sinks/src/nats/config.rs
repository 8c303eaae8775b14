//! `[sinks.nats]`.

use serde::Deserialize;
use xdrsync_config::{ConfigError, SecretSource};

use crate::config::Ctx;

/// `[sinks.nats]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// The server, `nats://host:port` (default `nats://127.0.0.1:4222`).
    #[serde(default = "default_url")]
    pub url: String,
    /// The first subject token(s).
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// The JetStream stream that captures `<subject_prefix>.>`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Create the stream if it does not exist (file storage, the duplicate window below).
    #[serde(default = "default_true")]
    pub create_stream: bool,
    /// The duplicate window of a created stream: repeats within it are dropped.
    #[serde(default = "default_duplicate_window_secs")]
    pub duplicate_window_secs: u64,
    /// A user name (with `password`).
    pub user: Option<String>,
    /// The user's password.
    pub password: Option<SecretSource>,
    /// A token (instead of a user).
    pub token: Option<SecretSource>,
    /// Connect and acknowledgement timeout.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_prefix() -> String {
    "xdrsync".into()
}
fn default_stream() -> String {
    "XDRSYNC".into()
}
fn default_true() -> bool {
    true
}
fn default_duplicate_window_secs() -> u64 {
    86_400
}
fn default_timeout_secs() -> u64 {
    10
}

/// Validated `[sinks.nats]`.
#[derive(Debug, Clone)]
pub struct Validated {
    pub(crate) address: String,
    pub(crate) prefix: String,
    pub(crate) stream: String,
    pub(crate) create_stream: bool,
    pub(crate) duplicate_window_secs: u64,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<SecretSource>,
    pub(crate) token: Option<SecretSource>,
    pub(crate) timeout_secs: u64,
}

/// A subject token: no dots, spaces, wildcards or control characters.
fn token_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b > b' ' && b != b'.' && b != b'*' && b != b'>' && b < 127)
}

impl NatsConfig {
    pub(crate) fn validate(self, ctx: &Ctx<'_>) -> Result<Validated, ConfigError> {
        let url = url::Url::parse(&self.url)
            .map_err(|e| ctx.invalid("nats.url", format!("not a URL: {e}")))?;
        if url.scheme() != "nats" {
            return Err(ctx.invalid(
                "nats.url",
                "only nats:// is supported (TLS to NATS is not built in yet)",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ctx.invalid(
                "nats.url",
                "put credentials in `user`/`password` or `token` (secret sources), not in the URL",
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| ctx.invalid("nats.url", "no host"))?;
        let address = format!("{host}:{}", url.port().unwrap_or(4222));
        if !self.subject_prefix.split('.').all(token_ok) {
            return Err(ctx.invalid(
                "nats.subject_prefix",
                "dot-separated tokens without spaces or wildcards",
            ));
        }
        if !token_ok(&self.stream) {
            return Err(ctx.invalid(
                "nats.stream",
                "a stream name without dots, spaces or wildcards",
            ));
        }
        if self.password.is_some() != self.user.is_some() {
            return Err(ctx.invalid("nats", "`user` and `password` go together"));
        }
        if self.token.is_some() && self.user.is_some() {
            return Err(ctx.invalid("nats", "give `token` or `user`/`password`, not both"));
        }
        if self.timeout_secs == 0 || self.duplicate_window_secs == 0 {
            return Err(ctx.invalid(
                "nats",
                "timeout_secs and duplicate_window_secs must be at least 1",
            ));
        }
        Ok(Validated {
            address,
            prefix: self.subject_prefix,
            stream: self.stream,
            create_stream: self.create_stream,
            duplicate_window_secs: self.duplicate_window_secs,
            user: self.user,
            password: self
                .password
                .as_ref()
                .map(|p| ctx.secret("nats.password", p))
                .transpose()?,
            token: self
                .token
                .as_ref()
                .map(|p| ctx.secret("nats.token", p))
                .transpose()?,
            timeout_secs: self.timeout_secs,
        })
    }
}
