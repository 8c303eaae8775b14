//! `[sinks.postgres]`.

use serde::Deserialize;
use xdrsync_config::{ConfigError, SecretSource};

use crate::config::Ctx;

/// `[sinks.postgres]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// The connection URL (`postgres://user:password@host:5432/db`), from a secret source:
    /// it usually carries a password.
    pub url: SecretSource,
    /// The schema the tables live in.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// The tables' name prefix.
    #[serde(default = "default_prefix")]
    pub table_prefix: String,
    /// Create the tables and index if they do not exist.
    #[serde(default = "default_true")]
    pub create_tables: bool,
    /// Connect and statement timeout.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// TLS to the server: `disable`, `require`, `verify-ca` or `verify-full` (libpq's
    /// `sslmode` levels). Unset: the URL's `sslmode` if it has one, else `verify-full` for a
    /// remote server and no TLS over loopback or a Unix socket. Plaintext to a remote server
    /// needs `tls = "disable"` here, and `prefer` (which falls back to plaintext silently) is
    /// not offered.
    pub tls: Option<PgTls>,
    /// The CA certificate(s), PEM, that signed the server's certificate (default: the
    /// system's roots).
    pub ca_file: Option<std::path::PathBuf>,
}

/// `postgres.tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PgTls {
    /// No TLS.
    Disable,
    /// TLS, the server's certificate not checked.
    Require,
    /// TLS, the certificate's chain checked (not its name).
    VerifyCa,
    /// TLS, the certificate's chain and name checked.
    VerifyFull,
}

fn default_schema() -> String {
    "public".into()
}
fn default_prefix() -> String {
    "xdrsync_".into()
}
fn default_true() -> bool {
    true
}
fn default_timeout_secs() -> u64 {
    30
}

/// Validated `[sinks.postgres]`.
#[derive(Debug, Clone)]
pub struct Validated {
    pub(crate) url: SecretSource,
    pub(crate) schema: String,
    pub(crate) table_prefix: String,
    pub(crate) create_tables: bool,
    pub(crate) timeout_secs: u64,
    pub(crate) tls: Option<PgTls>,
    pub(crate) ca_file: Option<std::path::PathBuf>,
}

/// An unquoted SQL identifier we are willing to splice into statements.
fn ident_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 48
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

impl PostgresConfig {
    pub(crate) fn validate(self, ctx: &Ctx<'_>) -> Result<Validated, ConfigError> {
        if !ident_ok(&self.schema) {
            return Err(ctx.invalid(
                "postgres.schema",
                "lowercase letters, digits and `_`, at most 48, not starting with a digit",
            ));
        }
        if !self.table_prefix.is_empty() && !ident_ok(&self.table_prefix) {
            return Err(ctx.invalid(
                "postgres.table_prefix",
                "lowercase letters, digits and `_`, at most 48, not starting with a digit",
            ));
        }
        if self.timeout_secs == 0 {
            return Err(ctx.invalid("postgres.timeout_secs", "must be at least 1"));
        }
        Ok(Validated {
            url: ctx.secret("postgres.url", &self.url)?,
            schema: self.schema,
            table_prefix: self.table_prefix,
            create_tables: self.create_tables,
            timeout_secs: self.timeout_secs,
            tls: self.tls,
            ca_file: self.ca_file.as_deref().map(|p| ctx.resolve(p)),
        })
    }
}
