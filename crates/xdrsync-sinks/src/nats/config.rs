//! `[sinks.nats]`.

use std::path::PathBuf;

use serde::Deserialize;
use xdrsync_config::{ConfigError, SecretSource};

use crate::config::Ctx;

/// `[sinks.nats]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// The server, `nats://host:port` or `tls://host:port` (TLS required; default
    /// `nats://127.0.0.1:4222`).
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
    /// An NKey seed (`SU…`): the server's nonce is signed, the seed never sent.
    pub nkey: Option<SecretSource>,
    /// A `.creds` file (the user's JWT and NKey seed, as `nsc` writes it).
    pub credentials_file: Option<PathBuf>,
    /// TLS to the server: `true` requires it, `false` allows plaintext even to a server not on
    /// this machine. Unset: required for `tls://` URLs and for any server not on this machine;
    /// over loopback, used when the server asks for it.
    pub tls: Option<bool>,
    /// The CA certificate(s), PEM, that signed the server's certificate (default: the
    /// system's roots).
    pub ca_file: Option<PathBuf>,
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

/// How the sink proves who it is.
#[derive(Debug, Clone)]
pub(crate) enum NatsAuth {
    None,
    User(String, SecretSource),
    Token(SecretSource),
    NKey(SecretSource),
    Credentials(PathBuf),
}

/// Validated `[sinks.nats]`.
#[derive(Debug, Clone)]
pub struct Validated {
    /// `host:port`, for messages.
    pub(crate) address: String,
    /// What async-nats connects to (`nats://…` or `tls://…`).
    pub(crate) server: String,
    pub(crate) require_tls: bool,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) auth: NatsAuth,
    pub(crate) prefix: String,
    pub(crate) stream: String,
    pub(crate) create_stream: bool,
    pub(crate) duplicate_window_secs: u64,
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
        let tls_scheme = match url.scheme() {
            "nats" => false,
            "tls" => true,
            other => {
                return Err(ctx.invalid("nats.url", format!("`{other}://`: use nats:// or tls://")));
            }
        };
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
        let loopback = xdrsync_config::is_loopback(host);
        let require_tls = match self.tls {
            Some(false) if tls_scheme => {
                return Err(ctx.invalid("nats.tls", "false, but the URL is tls://"));
            }
            Some(false) if self.ca_file.is_some() => {
                return Err(ctx.invalid("nats.ca_file", "set, but tls = false"));
            }
            Some(t) => t,
            None => tls_scheme || !loopback,
        };
        if !require_tls && !loopback {
            tracing::warn!(sink = %ctx.prefix, server = %address, "NATS without TLS to a server that is not on this machine (tls = false): credentials and events cross the network in clear.");
        }
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
        let methods = [
            self.user.is_some(),
            self.token.is_some(),
            self.nkey.is_some(),
            self.credentials_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(ctx.invalid(
                "nats",
                "give one of `user`/`password`, `token`, `nkey` or `credentials_file`",
            ));
        }
        let auth = if let (Some(u), Some(p)) = (&self.user, &self.password) {
            NatsAuth::User(u.clone(), ctx.secret("nats.password", p)?)
        } else if let Some(t) = &self.token {
            NatsAuth::Token(ctx.secret("nats.token", t)?)
        } else if let Some(k) = &self.nkey {
            NatsAuth::NKey(ctx.secret("nats.nkey", k)?)
        } else if let Some(f) = &self.credentials_file {
            NatsAuth::Credentials(ctx.resolve(f))
        } else {
            NatsAuth::None
        };
        let server = format!("{}://{address}", if tls_scheme { "tls" } else { "nats" });
        if self.timeout_secs == 0 || self.duplicate_window_secs == 0 {
            return Err(ctx.invalid(
                "nats",
                "timeout_secs and duplicate_window_secs must be at least 1",
            ));
        }
        Ok(Validated {
            address,
            server,
            require_tls,
            ca_file: self.ca_file.as_deref().map(|p| ctx.resolve(p)),
            auth,
            prefix: self.subject_prefix,
            stream: self.stream,
            create_stream: self.create_stream,
            duplicate_window_secs: self.duplicate_window_secs,
            timeout_secs: self.timeout_secs,
        })
    }
}
