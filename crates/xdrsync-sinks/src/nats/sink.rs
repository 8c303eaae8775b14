// Replaced by `async-nats` (issue 14); its indexing is bounded by the parser above each use.
#![allow(clippy::indexing_slicing, clippy::expect_used, clippy::string_slice)]

//! Publishing to JetStream.

use std::sync::Arc;
use std::time::Duration;

use xdrsync_config::ConfigError;

use super::client::{Auth, Connection, NatsError};
use super::config::Validated;
use crate::Sink;
use crate::outbox::{BoxFuture, Common, Event, OutboxSink, SendError, Transport};

#[derive(Debug)]
struct Nats {
    address: String,
    auth: Auth,
    prefix: String,
    stream: String,
    create_stream: bool,
    duplicate_window: Duration,
    timeout: Duration,
    /// The open connection, reopened after any failure (deliveries are one at a time).
    conn: tokio::sync::Mutex<Option<Connection>>,
}

pub(crate) fn build(common: Common, v: &Validated) -> Result<Arc<dyn Sink>, ConfigError> {
    let field = |f: &str| format!("sink {} nats.{f}", common.name);
    let auth = Auth {
        user: match (&v.user, &v.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.resolve(&field("password"))?)),
            _ => None,
        },
        token: v
            .token
            .as_ref()
            .map(|t| t.resolve(&field("token")))
            .transpose()?,
    };
    let t = Nats {
        address: v.address.clone(),
        auth,
        prefix: v.prefix.clone(),
        stream: v.stream.clone(),
        create_stream: v.create_stream,
        duplicate_window: Duration::from_secs(v.duplicate_window_secs),
        timeout: Duration::from_secs(v.timeout_secs),
        conn: tokio::sync::Mutex::new(None),
    };
    Ok(Arc::new(OutboxSink::new(common, t)))
}

fn send_error(e: NatsError) -> SendError {
    match e {
        NatsError::Server { .. } => SendError::permanent(e.to_string()),
        NatsError::Io { .. } | NatsError::Protocol { .. } => SendError::transient(e.to_string()),
    }
}

/// A JetStream API error in a reply payload: `(code, err_code, description)`.
fn js_error(payload: &[u8]) -> Option<(u64, u64, String)> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let e = v.get("error")?;
    Some((
        e["code"].as_u64().unwrap_or(0),
        e["err_code"].as_u64().unwrap_or(0),
        e["description"].as_str().unwrap_or("").to_owned(),
    ))
}

impl Nats {
    /// The subject of an event.
    fn subject(&self, e: &Event) -> String {
        format!(
            "{}.{}.{}.{}",
            self.prefix,
            e.v.record.tenant().as_str(),
            e.v.stream.as_str(),
            e.v.change.as_str()
        )
    }

    async fn open(&self) -> Result<Connection, SendError> {
        let mut c =
            tokio::time::timeout(self.timeout, Connection::connect(&self.address, &self.auth))
                .await
                .map_err(|_| {
                    SendError::transient(format!("nats {}: connect timed out", self.address))
                })?
                .map_err(send_error)?;
        if self.create_stream {
            self.ensure_stream(&mut c).await?;
        }
        Ok(c)
    }

    /// Creates the stream if it does not exist.
    async fn ensure_stream(&self, c: &mut Connection) -> Result<(), SendError> {
        let info = c
            .request_all(
                &[(format!("$JS.API.STREAM.INFO.{}", self.stream), vec![], b"")],
                self.timeout,
            )
            .await
            .map_err(send_error)?;
        let reply = &info[0];
        if reply.status == Some(503) {
            return Err(SendError::transient(format!(
                "nats {}: JetStream is not enabled on the server (no responders to $JS.API)",
                self.address
            )));
        }
        match js_error(&reply.payload) {
            None => return Ok(()),
            Some((404, _, _)) => {}
            Some((code, err, d)) => {
                return Err(SendError::permanent(format!(
                    "nats: stream {} info: {d} (code {code}, err_code {err})",
                    self.stream
                )));
            }
        }
        let config = serde_json::json!({
            "name": self.stream,
            "subjects": [format!("{}.>", self.prefix)],
            "retention": "limits",
            "storage": "file",
            "num_replicas": 1,
            "duplicate_window": self.duplicate_window.as_nanos() as u64,
        })
        .to_string();
        let created = c
            .request_all(
                &[(
                    format!("$JS.API.STREAM.CREATE.{}", self.stream),
                    vec![],
                    config.as_bytes(),
                )],
                self.timeout,
            )
            .await
            .map_err(send_error)?;
        match js_error(&created[0].payload) {
            None => {
                tracing::info!(stream = %self.stream, subjects = %format!("{}.>", self.prefix), "Created the JetStream stream.");
                Ok(())
            }
            Some((code, err, d)) => Err(SendError::permanent(format!(
                "nats: cannot create stream {}: {d} (code {code}, err_code {err})",
                self.stream
            ))),
        }
    }

    async fn publish(&self, c: &mut Connection, events: &[Event]) -> Result<(), SendError> {
        let subjects: Vec<String> = events.iter().map(|e| self.subject(e)).collect();
        let requests: Vec<super::client::Request<'_>> = events
            .iter()
            .zip(subjects)
            .map(|(e, s)| {
                (
                    s,
                    vec![("Nats-Msg-Id", e.v.event_id.as_str())],
                    e.doc.as_slice(),
                )
            })
            .collect();
        let replies = c
            .request_all(&requests, self.timeout)
            .await
            .map_err(send_error)?;
        for (e, r) in events.iter().zip(&replies) {
            if r.status == Some(503) {
                return Err(SendError::transient(format!(
                    "nats: no stream captures {} (seq {}): create one for `{}.>` or set create_stream = true",
                    self.subject(e),
                    e.v.seq,
                    self.prefix
                )));
            }
            if let Some((code, err, d)) = js_error(&r.payload) {
                let msg = format!(
                    "nats: JetStream refused seq {}: {d} (code {code}, err_code {err})",
                    e.v.seq
                );
                return Err(if code == 503 || code == 0 {
                    SendError::transient(msg)
                } else {
                    SendError::permanent(msg)
                });
            }
            let ack: serde_json::Value = serde_json::from_slice(&r.payload).unwrap_or_default();
            if ack["stream"].as_str().is_none() {
                return Err(SendError::transient(format!(
                    "nats: seq {}: not a JetStream acknowledgement: {}",
                    e.v.seq,
                    String::from_utf8_lossy(&r.payload)
                        .chars()
                        .take(200)
                        .collect::<String>()
                )));
            }
        }
        Ok(())
    }
}

impl Transport for Nats {
    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<u64, SendError>> {
        Box::pin(async move {
            let mut slot = self.conn.lock().await;
            if slot.is_none() {
                *slot = Some(self.open().await?);
            }
            let c = slot.as_mut().expect("opened above");
            let r = self.publish(c, events).await;
            if r.is_err() {
                // Start clean: late replies of a failed chunk must not be taken for the next.
                *slot = None;
            }
            r.map(|()| events.iter().map(|e| e.doc.len() as u64).sum())
        })
    }
}
