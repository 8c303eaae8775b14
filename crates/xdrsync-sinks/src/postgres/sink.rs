//! Upserting chunks into PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use xdrsync_config::ConfigError;
use xdrsync_model::{Record, SecretString, StreamKind};

use super::config::{PgTls, Validated};
use crate::Sink;
use crate::outbox::{BoxFuture, Common, Event, OutboxSink, SendError, Transport};

struct Postgres {
    config: tokio_postgres::Config,
    /// TLS to the server (`None`: plaintext, which [`decide_tls`] allows only over loopback
    /// or when the config says `tls = "disable"`).
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    schema: String,
    prefix: String,
    create_tables: bool,
    timeout: Duration,
    /// The open client, reopened after any failure (deliveries are one at a time).
    client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password.
        f.debug_struct("Postgres")
            .field("schema", &self.schema)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

pub(crate) fn build(common: Common, v: &Validated) -> Result<Arc<dyn Sink>, ConfigError> {
    let field = format!("sink {} postgres.url", common.name);
    let url: SecretString = v.url.resolve(&field)?;
    let err = |message: String| ConfigError::Secret {
        field: field.clone(),
        message,
    };
    let (mut config, tls) = connection(
        url.expose(),
        v.tls,
        v.ca_file.as_deref(),
        Some("set `tls = \"disable\"` in [sinks.postgres]"),
    )
    .map_err(err)?;
    if tls.is_none() && !is_loopback(&config) {
        tracing::warn!(sink = %common.name, "PostgreSQL without TLS to a server that is not on this machine (tls = \"disable\"): its password and the events cross the network in clear.");
    }
    config.connect_timeout(Duration::from_secs(v.timeout_secs));
    if config.get_application_name().is_none() {
        config.application_name("xdrsync");
    }
    let t = Postgres {
        config,
        tls,
        schema: v.schema.clone(),
        prefix: v.table_prefix.clone(),
        create_tables: v.create_tables,
        timeout: Duration::from_secs(v.timeout_secs),
        client: tokio::sync::Mutex::new(None),
    };
    Ok(Arc::new(OutboxSink::new(common, t)))
}

/// A PostgreSQL connection's settings and TLS, by the rules of the sink and the store alike:
/// libpq's `sslmode` in the URL (or `tls`), a CA file for `verify-ca`/`verify-full`, plaintext
/// only over loopback or when asked for by name (`plaintext_by_name` says how, in the refusal;
/// `None`: it cannot be), and
/// `require` meaning no silent fallback to plaintext. `url` may hold a password; no error
/// repeats it.
pub fn connection(
    url: &str,
    tls: Option<PgTls>,
    ca_file: Option<&std::path::Path>,
    plaintext_by_name: Option<&str>,
) -> Result<
    (
        tokio_postgres::Config,
        Option<tokio_postgres_rustls::MakeRustlsConnect>,
    ),
    String,
> {
    let (text, url_mode) = take_sslmode(url)?;
    let mut config: tokio_postgres::Config = text
        .parse()
        // The parser's message never repeats the password.
        .map_err(|e: tokio_postgres::Error| format!("not a PostgreSQL connection string: {e}"))?;
    let loopback = is_loopback(&config);
    let mode = decide_tls(tls, url_mode, loopback, plaintext_by_name)?;
    let connector = match mode {
        PgTls::Disable => {
            if ca_file.is_some() {
                return Err("ca_file is set but TLS is disabled".into());
            }
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            None
        }
        level => {
            let verify = match level {
                PgTls::VerifyFull => crate::tls::Verify::Full,
                PgTls::VerifyCa => crate::tls::Verify::Ca,
                // libpq: `require` with a CA file checks the chain, as `verify-ca` does.
                _ if ca_file.is_some() => crate::tls::Verify::Ca,
                _ => crate::tls::Verify::Nothing,
            };
            let tls = crate::tls::client_config(ca_file, verify)?;
            // Require: a server that answers the TLS request with "no" gets nothing more (no
            // silent fallback to plaintext, so no password in clear).
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        }
    };
    Ok((config, connector))
}

/// libpq's `sslmode` as the URL gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlMode {
    /// `disable`.
    Disable,
    /// `allow` or `prefer`: TLS if the server offers it, else plaintext, silently.
    Fallback,
    /// `require`, `verify-ca` or `verify-full`.
    Tls(PgTls),
}

/// The connection string without its `sslmode` (tokio-postgres knows only `disable`, `prefer`
/// and `require`; the sink applies libpq's five itself), and that `sslmode`.
fn take_sslmode(text: &str) -> Result<(String, Option<UrlMode>), String> {
    let parse = |m: &str| match m {
        "disable" => Ok(UrlMode::Disable),
        "allow" | "prefer" => Ok(UrlMode::Fallback),
        "require" => Ok(UrlMode::Tls(PgTls::Require)),
        "verify-ca" => Ok(UrlMode::Tls(PgTls::VerifyCa)),
        "verify-full" => Ok(UrlMode::Tls(PgTls::VerifyFull)),
        other => Err(format!(
            "sslmode={other}: expected disable, require, verify-ca or verify-full"
        )),
    };
    let mut mode = None;
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        let Ok(mut url) = url::Url::parse(text) else {
            // Left to tokio-postgres, whose message is clearer about its own syntax.
            return Ok((text.to_owned(), None));
        };
        let mut kept: Vec<(String, String)> = Vec::new();
        for (k, v) in url.query_pairs() {
            if k == "sslmode" {
                mode = Some(parse(&v)?);
            } else {
                kept.push((k.into_owned(), v.into_owned()));
            }
        }
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        return Ok((url.to_string(), mode));
    }
    // `key=value` pairs.
    let mut kept = Vec::new();
    for pair in text.split_whitespace() {
        match pair.strip_prefix("sslmode=") {
            Some(m) => mode = Some(parse(m.trim_matches('\''))?),
            None => kept.push(pair),
        }
    }
    Ok((kept.join(" "), mode))
}

/// Whether every host of `config` is this machine (a Unix socket, `localhost`, a loopback
/// address); no host means the default, a local socket.
fn is_loopback(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let hosts_local = config.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => xdrsync_config::is_loopback(name),
        Host::Unix(_) => true,
    });
    let addrs_local = config.get_hostaddrs().iter().all(|a| a.is_loopback());
    hosts_local && addrs_local
}

/// The TLS level from the config's `tls`, the URL's `sslmode` and where the server is.
fn decide_tls(
    key: Option<PgTls>,
    url: Option<UrlMode>,
    loopback: bool,
    plaintext_by_name: Option<&str>,
) -> Result<PgTls, String> {
    let no_plaintext = || {
        let mut m = "the server is not on this machine and TLS is off: the password and the data would cross the network in clear. Use sslmode=verify-full (or require/verify-ca)".to_owned();
        if let Some(by_name) = plaintext_by_name {
            m.push_str(", or ");
            m.push_str(by_name);
            m.push_str(" to accept plaintext");
        }
        m
    };
    match (key, url) {
        (Some(k), Some(UrlMode::Tls(u))) if k != u => Err(format!(
            "tls = {k:?} and the URL's sslmode disagree; give one of them"
        )),
        (Some(PgTls::Disable), Some(UrlMode::Tls(_))) => {
            Err("tls = \"disable\" and the URL's sslmode asks for TLS; give one of them".into())
        }
        (Some(k), _) => Ok(k),
        (None, Some(UrlMode::Fallback)) => Err(
            "sslmode=prefer/allow falls back to plaintext without a word; use require, verify-ca or verify-full (or disable, over loopback)".into(),
        ),
        (None, Some(UrlMode::Tls(u))) => Ok(u),
        (None, Some(UrlMode::Disable)) | (None, None) if loopback => Ok(PgTls::Disable),
        (None, Some(UrlMode::Disable)) => Err(no_plaintext()),
        (None, None) => Ok(PgTls::VerifyFull),
    }
}

/// Connection-level failures (the server is down, restarting, or cut us off) are transient;
/// a refused statement (a constraint, a permission, bad JSON) is permanent.
fn pg_error(e: tokio_postgres::Error) -> SendError {
    let Some(db) = e.as_db_error() else {
        // No answer from the server: it is down, restarting or cut the connection (or the TLS
        // handshake failed: the causes say why, e.g. the certificate's name).
        let msg =
            crate::outbox::with_causes(&format!("postgres: {e}"), std::error::Error::source(&e));
        return SendError::transient(msg);
    };
    let msg = format!("postgres: {} ({})", db.message(), db.code().code());
    let c = db.code().code();
    // 08: connection exception; 40: rollback (serialization, deadlock); 53: insufficient
    // resources; 57P: operator intervention (shutdown, restart).
    if ["08", "40", "53", "57P"].iter().any(|p| c.starts_with(p)) {
        SendError::transient(msg)
    } else {
        SendError::permanent(msg)
    }
}

impl Postgres {
    fn table(&self, stream: StreamKind) -> String {
        format!("{}.{}{}", self.schema, self.prefix, stream.as_str())
    }

    async fn open(&self) -> Result<tokio_postgres::Client, SendError> {
        let client = match &self.tls {
            None => {
                let (client, conn) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(pg_error)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "PostgreSQL connection ended.");
                    }
                });
                client
            }
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await.map_err(pg_error)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "PostgreSQL connection ended.");
                    }
                });
                client
            }
        };
        if self.create_tables {
            let mut ddl = format!("CREATE SCHEMA IF NOT EXISTS {};", self.schema);
            for s in StreamKind::ALL {
                let t = self.table(s);
                let idx = format!("{}{}_item", self.prefix, s.as_str());
                ddl.push_str(&format!(
                    "CREATE TABLE IF NOT EXISTS {t} (
                        event_id     TEXT PRIMARY KEY,
                        seq          BIGINT NOT NULL,
                        tenant_id    TEXT NOT NULL,
                        tenant_name  TEXT,
                        item_id      TEXT NOT NULL,
                        last_update  TIMESTAMPTZ NOT NULL,
                        change       TEXT NOT NULL,
                        severity     TEXT NOT NULL,
                        status       TEXT NOT NULL,
                        title        TEXT NOT NULL,
                        document     JSONB NOT NULL,
                        delivered_at TIMESTAMPTZ NOT NULL DEFAULT now()
                    );
                    ALTER TABLE {t} ADD COLUMN IF NOT EXISTS tenant_name TEXT;
                    CREATE INDEX IF NOT EXISTS {idx} ON {t} (tenant_id, item_id, last_update DESC);"
                ));
            }
            client.batch_execute(&ddl).await.map_err(|e| {
                // Two sinks creating the same tables at once lose a race on the catalog
                // (23505 on pg_type, 42P07): harmless, and the retry finds them.
                let race = e
                    .code()
                    .is_some_and(|c| matches!(c.code(), "23505" | "42P07"));
                let err = pg_error(e).context("creating the tables");
                SendError {
                    retriable: err.retriable || race,
                    ..err
                }
            })?;
        }
        Ok(client)
    }

    async fn upsert(
        &self,
        client: &mut tokio_postgres::Client,
        events: &[Event],
    ) -> Result<(), SendError> {
        let tx = client.transaction().await.map_err(pg_error)?;
        for stream in StreamKind::ALL {
            let rows: Vec<&Event> = events.iter().filter(|e| e.v.stream == stream).collect();
            if rows.is_empty() {
                continue;
            }
            let mut cols: [Vec<String>; 9] = Default::default();
            let mut names: Vec<Option<String>> = Vec::with_capacity(rows.len());
            let mut seqs: Vec<i64> = Vec::with_capacity(rows.len());
            for e in &rows {
                let (severity, status, title) = match &e.v.record {
                    Record::Incident(i) => (
                        i.severity.as_str().to_owned(),
                        i.status.clone(),
                        i.title.clone(),
                    ),
                    Record::Alert(a) => (
                        a.severity.as_str().to_owned(),
                        a.status.clone(),
                        a.title.clone(),
                    ),
                    // A hunt's row: found by the hunt it is titled by.
                    Record::HuntRow(h) => (
                        h.severity.as_str().to_owned(),
                        "found".to_owned(),
                        h.hunt.clone(),
                    ),
                };
                seqs.push(e.v.seq);
                names.push(e.v.tenant_name.clone());
                cols[0].push(e.v.event_id.clone());
                cols[1].push(e.v.record.tenant().as_str().to_owned());
                cols[2].push(e.v.record.item_id());
                cols[3].push(e.v.record.last_update().to_string());
                cols[4].push(e.v.change.as_str().to_owned());
                cols[5].push(severity);
                cols[6].push(status);
                cols[7].push(title);
                cols[8].push(String::from_utf8_lossy(&e.doc).into_owned());
            }
            let sql = format!(
                "INSERT INTO {t} (event_id, seq, tenant_id, item_id, last_update, change, severity, status, title, document, tenant_name)
                 SELECT e, s, te, i, l::timestamptz, c, sv, st, ti, d::jsonb, tn
                 FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
                      AS u(e, s, te, i, l, c, sv, st, ti, d, tn)
                 ON CONFLICT (event_id) DO UPDATE SET
                     seq = EXCLUDED.seq, change = EXCLUDED.change, severity = EXCLUDED.severity,
                     tenant_name = EXCLUDED.tenant_name,
                     status = EXCLUDED.status, title = EXCLUDED.title, document = EXCLUDED.document,
                     delivered_at = now()",
                t = self.table(stream)
            );
            tx.execute(
                &sql,
                &[
                    &cols[0], &seqs, &cols[1], &cols[2], &cols[3], &cols[4], &cols[5], &cols[6],
                    &cols[7], &cols[8], &names,
                ],
            )
            .await
            .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }
}

impl Transport for Postgres {
    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<u64, SendError>> {
        Box::pin(async move {
            let mut slot = self.client.lock().await;
            let run = async {
                let client = match slot.take() {
                    Some(c) => slot.insert(c),
                    None => slot.insert(self.open().await?),
                };
                self.upsert(client, events).await
            };
            let r = match tokio::time::timeout(self.timeout, run).await {
                Ok(r) => r,
                Err(_) => Err(SendError::transient(format!(
                    "postgres: no answer within {}s",
                    self.timeout.as_secs()
                ))),
            };
            if r.is_err() {
                *slot = None;
            }
            r.map(|()| events.iter().map(|e| e.doc.len() as u64).sum())
        })
    }
}
