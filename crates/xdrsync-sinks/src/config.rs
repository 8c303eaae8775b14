//! `[[sinks]]`: parsed, then validated (no I/O: `xdrsync check-config` runs it), then built
//! (secrets read, clients made).
//!
//! ```toml
//! [[sinks]]
//! name = "splunk"                 # unique; the key of the sink's position in the store
//! format = "xdrsync"              # raw | xdrsync | ocsf | ecs
//! tenants = ["contoso"]           # tenant names or ids (default: all)
//! streams = ["incidents"]         # incidents | alerts | detections (default: all)
//! min_severity = "medium"         # informational | low | medium | high
//! changes = ["created", "redirected"]  # created | updated | alert_added | redirected
//! [sinks.splunk_hec]              # exactly one of: file, stdout, syslog, splunk_hec,
//! url = "https://splunk:8088"     #   webhook, nats, postgres
//! token = { env = "HEC_TOKEN" }
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use xdrsync_config::{Config, ConfigError, SecretSource, Tenant};
use xdrsync_model::{ChangeKind, Severity, StreamKind, TenantId};

use crate::Sink;
use crate::file::{FileConfig, FileMode};
use crate::outbox::{Common, OutboxSink, WhenFull};
use crate::route::Route;
use crate::schema::Format;
use crate::stdout::StdoutConfig;

/// One `[[sinks]]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    /// A unique name: the key of the sink's delivery position in the store. Renaming a sink
    /// starts it again from the beginning of the outbox.
    pub name: String,
    /// The documents' schema: `raw`, `xdrsync` (default), `ocsf` or `ecs`. (The file sink's
    /// `json_array` mode defaults to `raw`, the Hello World seed's output.)
    pub format: Option<Format>,
    /// Whether the sink delivers.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Only these tenants, by name or tenant id (default: all).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Only these streams: `incidents`, `alerts`, `detections` (default: all).
    #[serde(default)]
    pub streams: Vec<String>,
    /// Only events at least this severe: `informational`, `low`, `medium`, `high`.
    pub min_severity: Option<String>,
    /// Only these change kinds: `created`, `updated`, `alert_added`, `redirected`.
    #[serde(default)]
    pub changes: Vec<String>,
    /// Events per request or write (default per sink).
    pub batch_max_events: Option<usize>,
    /// Bytes of documents per request or write (default 4 MiB; Splunk's own default limit
    /// is 1 MB, which the HEC sink uses).
    pub batch_max_bytes: Option<usize>,
    /// Attempts per batch before a delivery fails (it is retried on the next delivery).
    #[serde(default = "default_retry_attempts")]
    pub retry_attempts: u32,
    /// First retry wait, doubled per attempt with jitter.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Longest retry wait.
    #[serde(default = "default_retry_max_secs")]
    pub retry_max_secs: u64,
    /// The most events the sink may fall behind before the loud error (and, with
    /// `when_full = "drop_oldest"`, before its oldest are skipped).
    #[serde(default = "default_backlog_max_events")]
    pub backlog_max_events: u64,
    /// `keep` (default: nothing is lost, the outbox grows) or `drop_oldest`.
    #[serde(default)]
    pub when_full: WhenFull,
    /// The sink counts as stalled (`status` exits 1, `/readyz` answers 503) when its oldest
    /// undelivered event was stored longer ago than this.
    #[serde(default = "default_stall_after_secs")]
    pub stall_after_secs: u64,
}

/// What a sink is, as its one sub-table names it (`[sinks.file]`, `[sinks.nats]`, …).
///
/// Deserialized from that one entry (see `validate_table`), so the section's own keys keep
/// `deny_unknown_fields` (serde cannot combine it with a flattened enum).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
// Read once per sink at start-up and consumed by validation: the size of the largest variant
// costs nothing that boxing would save.
#[allow(clippy::large_enum_variant)]
pub enum KindConfig {
    /// Files: NDJSON with rotation, or `Latest Incidents <timestamp>.json`.
    File(FileConfig),
    /// Standard output, one document per line.
    Stdout(StdoutConfig),
    /// Syslog (RFC 5424/3164) over UDP, TCP or TLS, with CEF, LEEF or JSON messages.
    Syslog(crate::syslog::SyslogConfig),
    /// Splunk HTTP Event Collector.
    SplunkHec(crate::splunk_hec::HecConfig),
    /// JSON batches POSTed to a URL, signed with HMAC-SHA256.
    Webhook(crate::webhook::WebhookConfig),
    /// NATS JetStream.
    Nats(crate::nats::NatsConfig),
    /// PostgreSQL tables, upserted by event id.
    Postgres(crate::postgres::PostgresConfig),
}

/// The sub-table names of [`KindConfig`].
const KINDS: &[&str] = &[
    "file",
    "stdout",
    "syslog",
    "splunk_hec",
    "webhook",
    "nats",
    "postgres",
];

fn default_true() -> bool {
    true
}
fn default_retry_attempts() -> u32 {
    5
}
fn default_retry_base_ms() -> u64 {
    500
}
fn default_retry_max_secs() -> u64 {
    60
}
fn default_stall_after_secs() -> u64 {
    900
}
fn default_backlog_max_events() -> u64 {
    10_000_000
}

/// What validation knows about the rest of the file.
pub(crate) struct Ctx<'a> {
    /// The config file.
    pub(crate) path: &'a Path,
    /// `sinks[i]`.
    pub(crate) prefix: String,
    pub(crate) tenants: &'a [Tenant],
    pub(crate) allow_inline: bool,
}

impl Ctx<'_> {
    /// An error at `sinks[i].<field>`.
    pub(crate) fn invalid(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            field: if field.is_empty() {
                self.prefix.clone()
            } else {
                format!("{}.{field}", self.prefix)
            },
            message: message.into(),
        }
    }

    /// A tenant by name, or by id (a tenant id need not be in `[[tenants]]`: a delegated or
    /// newly consented tenant may not be listed yet).
    pub(crate) fn tenant(&self, field: &str, name: &str) -> Result<TenantId, ConfigError> {
        if let Some(t) = self
            .tenants
            .iter()
            .find(|t| t.name == name || t.tenant_id.as_str().eq_ignore_ascii_case(name))
        {
            return Ok(t.tenant_id.clone());
        }
        if uuid::Uuid::parse_str(name).is_ok() {
            return Ok(TenantId::canonical(name));
        }
        Err(self.invalid(
            field,
            format!("no tenant named `{name}` in [[tenants]] (give its name or its tenant id)"),
        ))
    }

    /// An https URL, or plain http to a loopback receiver.
    pub(crate) fn http_url(&self, field: &str, raw: &str) -> Result<url::Url, ConfigError> {
        xdrsync_config::https_or_loopback(raw).map_err(|m| self.invalid(field, m))
    }

    /// A path relative to the config file's folder.
    pub(crate) fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.path.parent().unwrap_or(Path::new("")).join(p)
        }
    }

    /// A secret source, checked (not read).
    pub(crate) fn secret(
        &self,
        field: &str,
        src: &SecretSource,
    ) -> Result<SecretSource, ConfigError> {
        src.validated(
            &format!("{}.{field}", self.prefix),
            self.path,
            self.allow_inline,
        )
    }
}

impl ValidatedSink {
    /// This sink set up to send stored events again (`xdrsync replay`): under its own
    /// temporary name `name` (its position starts at 0 and is forgotten afterwards, so the
    /// sink's real position never moves), narrowed to `tenants`/`streams` (empty: the
    /// sink's own route) and versions last updated at or after `since`, every document
    /// marked as a replay. Event ids are the stored ones. A selection the sink's own route
    /// never takes is an error that says so.
    pub fn for_replay(
        &self,
        name: &str,
        tenants: &[xdrsync_model::TenantId],
        streams: &[xdrsync_model::StreamKind],
        since: xdrsync_model::Timestamp,
    ) -> Result<ValidatedSink, String> {
        let mut v = self.clone();
        v.common.name = name.to_owned();
        v.common.replay = true;
        // No backlog bound: a replay delivers exactly the window it was asked for.
        v.common.backlog_max_events = u64::MAX;
        let route = &mut v.common.route;
        if !tenants.is_empty() {
            let chosen: std::collections::HashSet<_> = tenants
                .iter()
                .filter(|t| route.tenants.is_empty() || route.tenants.contains(*t))
                .cloned()
                .collect();
            if chosen.is_empty() {
                return Err(format!(
                    "sink `{}` does not take the selected tenants (its `tenants` route)",
                    self.common.name
                ));
            }
            route.tenants = chosen;
        }
        if !streams.is_empty() {
            let chosen: Vec<_> = streams
                .iter()
                .filter(|s| route.streams.is_empty() || route.streams.contains(*s))
                .copied()
                .collect();
            if chosen.is_empty() {
                return Err(format!(
                    "sink `{}` does not take the selected streams (its `streams` route)",
                    self.common.name
                ));
            }
            route.streams = chosen;
        }
        route.since = Some(route.since.map_or(since, |s| s.max(since)));
        Ok(v)
    }
}

/// Configured tenant names by tenant id (what events carry as `tenant`).
pub fn names(tenants: &[Tenant]) -> std::sync::Arc<std::collections::BTreeMap<String, String>> {
    std::sync::Arc::new(
        tenants
            .iter()
            .map(|t| (t.tenant_id.as_str().to_owned(), t.name.clone()))
            .collect(),
    )
}

/// A sink's validated settings.
#[derive(Debug, Clone)]
pub struct ValidatedSink {
    /// What every sink shares.
    pub common: Common,
    /// Whether it delivers.
    pub enabled: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
// A variant's settings go unread in a build without that sink's feature.
#[cfg_attr(
    not(all(
        feature = "sink-syslog",
        feature = "sink-splunk-hec",
        feature = "sink-webhook",
        feature = "sink-nats",
        feature = "sink-postgres"
    )),
    allow(dead_code)
)]
enum Kind {
    File(crate::file::Validated),
    Stdout,
    Syslog(crate::syslog::Validated),
    SplunkHec(crate::splunk_hec::Validated),
    Webhook(crate::webhook::Validated),
    Nats(crate::nats::Validated),
    Postgres(crate::postgres::Validated),
}

impl ValidatedSink {
    /// The sink's type, as its table is named.
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::File(_) => "file",
            Kind::Stdout => "stdout",
            Kind::Syslog(_) => "syslog",
            Kind::SplunkHec(_) => "splunk_hec",
            Kind::Webhook(_) => "webhook",
            Kind::Nats(_) => "nats",
            Kind::Postgres(_) => "postgres",
        }
    }

    /// Whether it writes to standard output (the binary then prints its summaries to stderr).
    pub fn is_stdout(&self) -> bool {
        matches!(self.kind, Kind::Stdout)
    }
}

/// The error for a sink this build was compiled without.
#[allow(dead_code)] // only with a sink feature off
fn not_built(kind: &str, feature: &str) -> ConfigError {
    ConfigError::Secret {
        field: format!("[sinks.{kind}]"),
        message: format!("this xdrsync was built without the `{feature}` feature"),
    }
}

/// Parses and validates one `[[sinks]]` table given as TOML text, against `tenants`, as if it
/// were the only sink of the config file at `path` (tests, benchmarks, tools).
pub fn validate_toml(
    text: &str,
    path: &Path,
    tenants: &[Tenant],
    allow_inline_secrets: bool,
) -> Result<ValidatedSink, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let ctx = Ctx {
        path,
        prefix: "sinks[0]".into(),
        tenants,
        allow_inline: allow_inline_secrets,
    };
    validate_table(table, &ctx)
}

/// Validates every `[[sinks]]` section of `config`.
pub fn validate(config: &Config) -> Result<Vec<ValidatedSink>, ConfigError> {
    let mut out: Vec<ValidatedSink> = Vec::new();
    for (i, table) in config.sinks.iter().enumerate() {
        let ctx = Ctx {
            path: &config.path,
            prefix: format!("sinks[{i}]"),
            tenants: &config.tenants,
            allow_inline: config.allow_inline_secrets,
        };
        let v = validate_table(table.clone(), &ctx)?;
        if out.iter().any(|o| o.common.name == v.common.name) {
            return Err(ctx.invalid(
                "name",
                format!(
                    "two sinks are named `{}`: names must be unique (each keeps its own position)",
                    v.common.name
                ),
            ));
        }
        out.push(v);
    }
    Ok(out)
}

/// Parses each of `values` with `parse`, dropping repeats; an unknown one is an error at
/// `field[j]` listing `expected`.
fn parse_list<T: PartialEq>(
    ctx: &Ctx<'_>,
    field: &str,
    values: &[String],
    parse: fn(&str) -> Option<T>,
    expected: &str,
) -> Result<Vec<T>, ConfigError> {
    let mut out = Vec::new();
    for (j, v) in values.iter().enumerate() {
        let k = parse(v).ok_or_else(|| {
            ctx.invalid(
                &format!("{field}[{j}]"),
                format!("`{v}`: expected {expected}"),
            )
        })?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(out)
}

/// One `[[sinks]]` table: its one kind sub-table, its keys (an unknown one is named), then
/// its values.
fn validate_table(mut table: toml::Table, ctx: &Ctx<'_>) -> Result<ValidatedSink, ConfigError> {
    let present: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| table.contains_key(*k))
        .collect();
    let (Some(name), Some(value)) = (
        present.first().filter(|_| present.len() == 1),
        present.first().and_then(|k| table.remove(*k)),
    ) else {
        return Err(ctx.invalid(
            "",
            "give exactly one of [sinks.file], [sinks.stdout], [sinks.syslog], [sinks.splunk_hec], [sinks.webhook], [sinks.nats], [sinks.postgres]",
        ));
    };
    let kind: KindConfig = toml::Table::from_iter([(name.to_string(), value)])
        .try_into()
        .map_err(|e: toml::de::Error| ctx.invalid(name, e.message().trim_end().to_owned()))?;
    let section: SinkSection = table
        .try_into()
        .map_err(|e: toml::de::Error| ctx.invalid("", e.message().trim_end().to_owned()))?;
    validate_one(section, kind, ctx)
}

fn validate_one(
    s: SinkSection,
    kind: KindConfig,
    ctx: &Ctx<'_>,
) -> Result<ValidatedSink, ConfigError> {
    if s.name.is_empty()
        || !s
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ctx.invalid(
            "name",
            format!("`{}`: use letters, digits, `-`, `_` and `.`", s.name),
        ));
    }
    let mut route = Route::default();
    let mut tenants = HashSet::new();
    for (j, t) in s.tenants.iter().enumerate() {
        tenants.insert(ctx.tenant(&format!("tenants[{j}]"), t)?);
    }
    route.tenants = tenants;
    route.streams = parse_list(
        ctx,
        "streams",
        &s.streams,
        StreamKind::parse,
        "incidents, alerts or detections",
    )?;
    route.changes = parse_list(
        ctx,
        "changes",
        &s.changes,
        ChangeKind::parse,
        "created, updated, alert_added or redirected",
    )?;
    if let Some(m) = &s.min_severity {
        route.min_severity = Some(match m.to_ascii_lowercase().as_str() {
            "informational" => Severity::Informational,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            _ => {
                return Err(ctx.invalid(
                    "min_severity",
                    format!("`{m}`: expected informational, low, medium or high"),
                ));
            }
        });
    }
    let mut common = Common::named(&s.name);
    common.route = route;
    common.retry_attempts = s.retry_attempts.max(1);
    common.retry_base = Duration::from_millis(s.retry_base_ms);
    common.retry_max = Duration::from_secs(s.retry_max_secs);
    common.backlog_max_events = s.backlog_max_events;
    common.when_full = s.when_full;
    common.stall_after = Duration::from_secs(s.stall_after_secs);
    common.tenant_names = names(ctx.tenants);
    if s.stall_after_secs == 0 {
        return Err(ctx.invalid("stall_after_secs", "must be at least 1"));
    }
    if s.backlog_max_events == 0 {
        return Err(ctx.invalid("backlog_max_events", "must be at least 1"));
    }
    let mut default_batch = 500;
    let mut default_format = Format::Xdrsync;
    let kind = match kind {
        KindConfig::File(f) => {
            let f = f.validate(ctx)?;
            default_batch = 1000;
            if f.mode == FileMode::JsonArray {
                default_format = Format::Raw;
                // One file per run holds the run's events (the Hello World output).
                default_batch = 100_000;
            }
            Kind::File(f)
        }
        KindConfig::Stdout(_) => Kind::Stdout,
        KindConfig::Syslog(c) => {
            default_batch = 200;
            Kind::Syslog(c.validate(ctx)?)
        }
        KindConfig::SplunkHec(c) => {
            common.batch_max_bytes = 1 << 20;
            Kind::SplunkHec(c.validate(ctx)?)
        }
        KindConfig::Webhook(c) => {
            default_batch = 100;
            Kind::Webhook(c.validate(ctx)?)
        }
        KindConfig::Nats(c) => {
            default_batch = 256;
            Kind::Nats(c.validate(ctx)?)
        }
        KindConfig::Postgres(c) => {
            default_batch = 500;
            Kind::Postgres(c.validate(ctx)?)
        }
    };
    common.format = s.format.unwrap_or(default_format);
    common.batch_max_events = s.batch_max_events.unwrap_or(default_batch);
    if common.batch_max_events == 0 {
        return Err(ctx.invalid("batch_max_events", "must be at least 1"));
    }
    if let Some(b) = s.batch_max_bytes {
        if b < 1024 {
            return Err(ctx.invalid("batch_max_bytes", "must be at least 1024"));
        }
        common.batch_max_bytes = b;
    }
    if let Kind::Syslog(v) = &kind {
        v.check_format(common.format, ctx)?;
    }
    Ok(ValidatedSink {
        common,
        enabled: s.enabled,
        kind,
    })
}

/// Builds a validated sink: reads its secrets and makes its client (no connection is opened:
/// a receiver that is down fails the first delivery, not the start).
pub fn build(v: &ValidatedSink) -> Result<Arc<dyn Sink>, ConfigError> {
    let common = v.common.clone();
    Ok(match &v.kind {
        Kind::File(f) => Arc::new(crate::file::FileSink::build(common, f.clone())),
        Kind::Stdout => Arc::new(OutboxSink::new(
            common,
            crate::stdout::StdoutTransport::new(Box::new(std::io::stdout())),
        )),
        #[cfg(feature = "sink-syslog")]
        Kind::Syslog(s) => crate::syslog::build(common, s)?,
        #[cfg(not(feature = "sink-syslog"))]
        Kind::Syslog(_) => return Err(not_built("syslog", "sink-syslog")),
        #[cfg(feature = "sink-splunk-hec")]
        Kind::SplunkHec(s) => crate::splunk_hec::build(common, s)?,
        #[cfg(not(feature = "sink-splunk-hec"))]
        Kind::SplunkHec(_) => return Err(not_built("splunk_hec", "sink-splunk-hec")),
        #[cfg(feature = "sink-webhook")]
        Kind::Webhook(s) => crate::webhook::build(common, s)?,
        #[cfg(not(feature = "sink-webhook"))]
        Kind::Webhook(_) => return Err(not_built("webhook", "sink-webhook")),
        #[cfg(feature = "sink-nats")]
        Kind::Nats(s) => crate::nats::build(common, s)?,
        #[cfg(not(feature = "sink-nats"))]
        Kind::Nats(_) => return Err(not_built("nats", "sink-nats")),
        #[cfg(feature = "sink-postgres")]
        Kind::Postgres(s) => crate::postgres::build(common, s)?,
        #[cfg(not(feature = "sink-postgres"))]
        Kind::Postgres(_) => return Err(not_built("postgres", "sink-postgres")),
    })
}

/// Validates and builds every enabled sink of `config`.
pub fn build_all(config: &Config) -> Result<Vec<Arc<dyn Sink>>, ConfigError> {
    validate(config)?
        .iter()
        .filter(|v| v.enabled)
        .map(build)
        .collect()
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
