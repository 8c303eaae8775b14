//! Upserting chunks into PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use xdrsync_config::ConfigError;
use xdrsync_model::{Record, SecretString, StreamKind};

use super::config::Validated;
use crate::Sink;
use crate::outbox::{BoxFuture, Common, Event, OutboxSink, SendError, Transport};

struct Postgres {
    config: tokio_postgres::Config,
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
    let mut config: tokio_postgres::Config = url
        .expose()
        .parse()
        // The parser's message never repeats the password.
        .map_err(|e: tokio_postgres::Error| {
            err(format!("not a PostgreSQL connection string: {e}"))
        })?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err(err(
            "sslmode=require: TLS to PostgreSQL is not built in yet; connect over loopback or a Unix socket, or through a TLS-terminating proxy".into(),
        ));
    }
    config.connect_timeout(Duration::from_secs(v.timeout_secs));
    if config.get_application_name().is_none() {
        config.application_name("xdrsync");
    }
    let t = Postgres {
        config,
        schema: v.schema.clone(),
        prefix: v.table_prefix.clone(),
        create_tables: v.create_tables,
        timeout: Duration::from_secs(v.timeout_secs),
        client: tokio::sync::Mutex::new(None),
    };
    Ok(Arc::new(OutboxSink::new(common, t)))
}

/// Connection-level failures (the server is down, restarting, or cut us off) are transient;
/// a refused statement (a constraint, a permission, bad JSON) is permanent.
fn pg_error(e: tokio_postgres::Error) -> SendError {
    let Some(db) = e.as_db_error() else {
        // No answer from the server: it is down, restarting or cut the connection.
        return SendError::transient(format!("postgres: {e}"));
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
        if self.create_tables {
            let mut ddl = format!("CREATE SCHEMA IF NOT EXISTS {};", self.schema);
            for s in [
                StreamKind::Incidents,
                StreamKind::Alerts,
                StreamKind::Detections,
            ] {
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
        for stream in [
            StreamKind::Incidents,
            StreamKind::Alerts,
            StreamKind::Detections,
        ] {
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
