//! Publishing to JetStream with `async-nats`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use xdrsync_config::ConfigError;
use xdrsync_model::SecretString;

use super::config::{NatsAuth, Validated};
use crate::Sink;
use crate::outbox::{BoxFuture, Common, Event, OutboxSink, SendError, Transport};

/// The resolved credentials (secrets read once, at build).
enum Auth {
    None,
    User(String, SecretString),
    Token(SecretString),
    NKey(SecretString),
    Credentials(std::path::PathBuf),
}

struct Nats {
    /// `host:port`, for messages.
    address: String,
    /// `nats://…` or `tls://…`.
    server: String,
    require_tls: bool,
    tls: Option<async_nats::rustls::ClientConfig>,
    auth: Auth,
    prefix: String,
    stream: String,
    create_stream: bool,
    duplicate_window: Duration,
    timeout: Duration,
    /// The JetStream context of the open client (async-nats reconnects it by itself); made
    /// on the first delivery, again after a failed connect.
    js: tokio::sync::Mutex<Option<jetstream::Context>>,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `auth` holds secrets.
        f.debug_struct("Nats")
            .field("server", &self.server)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

pub(crate) fn build(common: Common, v: &Validated) -> Result<Arc<dyn Sink>, ConfigError> {
    let field = |f: &str| format!("sink {} nats.{f}", common.name);
    let auth = match &v.auth {
        NatsAuth::None => Auth::None,
        NatsAuth::User(u, p) => Auth::User(u.clone(), p.resolve(&field("password"))?),
        NatsAuth::Token(t) => Auth::Token(t.resolve(&field("token"))?),
        NatsAuth::NKey(k) => Auth::NKey(k.resolve(&field("nkey"))?),
        NatsAuth::Credentials(p) => Auth::Credentials(p.clone()),
    };
    let tls = if v.require_tls || v.ca_file.is_some() {
        Some(
            crate::tls::client_config(v.ca_file.as_deref(), crate::tls::Verify::Full).map_err(
                |message| ConfigError::Secret {
                    field: field("ca_file"),
                    message,
                },
            )?,
        )
    } else {
        None
    };
    let t = Nats {
        address: v.address.clone(),
        server: v.server.clone(),
        require_tls: v.require_tls,
        tls,
        auth,
        prefix: v.prefix.clone(),
        stream: v.stream.clone(),
        create_stream: v.create_stream,
        duplicate_window: Duration::from_secs(v.duplicate_window_secs),
        timeout: Duration::from_secs(v.timeout_secs),
        js: tokio::sync::Mutex::new(None),
    };
    Ok(Arc::new(OutboxSink::new(common, t)))
}

/// `e` with its causes (async-nats puts the server's words in the source).
fn chain(e: &dyn std::error::Error) -> String {
    crate::outbox::with_causes(&e.to_string(), e.source())
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

    async fn connect(&self) -> Result<jetstream::Context, SendError> {
        let mut o = async_nats::ConnectOptions::new()
            .name(concat!("xdrsync/", env!("CARGO_PKG_VERSION")))
            .connection_timeout(self.timeout)
            .request_timeout(Some(self.timeout))
            .require_tls(self.require_tls);
        if let Some(tls) = &self.tls {
            o = o.tls_client_config(tls.clone());
        }
        o = match &self.auth {
            Auth::None => o,
            Auth::User(u, p) => o.user_and_password(u.clone(), p.expose().to_owned()),
            Auth::Token(t) => o.token(t.expose().to_owned()),
            Auth::NKey(k) => o.nkey(k.expose().to_owned()),
            Auth::Credentials(path) => o.credentials_file(path).await.map_err(|e| {
                SendError::permanent(format!("nats: credentials_file {}: {e}", path.display()))
            })?,
        };
        let client = o.connect(self.server.as_str()).await.map_err(|e| {
            use async_nats::ConnectErrorKind as K;
            let msg = format!("nats {}: {}", self.address, chain(&e));
            match e.kind() {
                K::Authentication | K::AuthorizationViolation | K::Tls | K::ServerParse => {
                    SendError::permanent(msg)
                }
                _ => SendError::transient(msg),
            }
        })?;
        let mut js = jetstream::new(client);
        js.set_timeout(self.timeout);
        if self.create_stream {
            self.ensure_stream(&js).await?;
        }
        Ok(js)
    }

    /// Creates the stream if it does not exist.
    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<(), SendError> {
        use async_nats::jetstream::context::GetStreamErrorKind as G;
        match js.get_stream(&self.stream).await {
            Ok(_) => return Ok(()),
            Err(e) => match e.kind() {
                G::JetStream(j) if j.code() == 404 => {}
                G::Request => {
                    return Err(SendError::transient(format!(
                        "nats {}: JetStream does not answer (is it enabled on the server?): {}",
                        self.address,
                        chain(&e)
                    )));
                }
                _ => {
                    return Err(SendError::permanent(format!(
                        "nats: stream {} info: {}",
                        self.stream,
                        chain(&e)
                    )));
                }
            },
        }
        let config = jetstream::stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.>", self.prefix)],
            storage: jetstream::stream::StorageType::File,
            num_replicas: 1,
            duplicate_window: self.duplicate_window,
            ..Default::default()
        };
        match js.create_stream(config).await {
            Ok(_) => {
                tracing::info!(stream = %self.stream, subjects = %format!("{}.>", self.prefix), "Created the JetStream stream.");
                Ok(())
            }
            Err(e) => Err(SendError::permanent(format!(
                "nats: cannot create stream {}: {}",
                self.stream,
                chain(&e)
            ))),
        }
    }

    fn publish_error(&self, e: &Event, err: &jetstream::context::PublishError) -> SendError {
        let msg = match err.kind() {
            PublishErrorKind::StreamNotFound => format!(
                "nats: no stream captures {} (seq {}): create one for `{}.>` or set create_stream = true",
                self.subject(e),
                e.v.seq,
                self.prefix
            ),
            _ => format!(
                "nats: JetStream did not take seq {}: {}",
                e.v.seq,
                chain(err)
            ),
        };
        match err.kind() {
            // The message can never be taken as it is.
            PublishErrorKind::MaxPayloadExceeded
            | PublishErrorKind::WrongLastMessageId
            | PublishErrorKind::WrongLastSequence => SendError::permanent(msg),
            // No ack in time, a broken connection (async-nats reconnects), a missing stream
            // (one may be created), the server's own refusal (storage full, leader election):
            // the chunk is sent again, and `Nats-Msg-Id` drops what already arrived.
            _ => SendError::transient(msg),
        }
    }

    /// Publishes every event with `Nats-Msg-Id: <event id>` (pipelined: all are sent, then
    /// every acknowledgement awaited); `Ok` once JetStream acknowledged them all.
    async fn publish(&self, js: &jetstream::Context, events: &[Event]) -> Result<(), SendError> {
        let mut acks = Vec::with_capacity(events.len());
        for e in events {
            let message = jetstream::message::PublishMessage::build()
                .payload(bytes::Bytes::copy_from_slice(&e.doc))
                .message_id(e.v.event_id.as_str());
            let ack = js
                .send_publish(self.subject(e), message)
                .await
                .map_err(|err| self.publish_error(e, &err))?;
            acks.push((e, ack));
        }
        for (e, ack) in acks {
            let ack = ack.await.map_err(|err| self.publish_error(e, &err))?;
            if ack.stream != self.stream {
                return Err(SendError::permanent(format!(
                    "nats: seq {} went to stream {}, not {}: another stream captures `{}`",
                    e.v.seq,
                    ack.stream,
                    self.stream,
                    self.subject(e)
                )));
            }
        }
        Ok(())
    }
}

impl Transport for Nats {
    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<u64, SendError>> {
        Box::pin(async move {
            let mut slot = self.js.lock().await;
            let js = match slot.take() {
                Some(js) => slot.insert(js),
                None => slot.insert(self.connect().await?),
            };
            // async-nats reconnects by itself and would hold the publishes meanwhile; a chunk
            // sent while it is away fails as a counted, logged retry instead of waiting
            // silently for the acknowledgement timeout.
            let state = js.client().connection_state();
            if state != async_nats::connection::State::Connected {
                return Err(SendError::transient(format!(
                    "nats {}: not connected ({state:?}); the client is reconnecting",
                    self.address
                )));
            }
            if let Err(e) = self.publish(js, events).await {
                // A fresh connection for the next attempt: async-nats' own task may be gone
                // (it panics on a `MSG` length near `usize::MAX` from a hostile server, and a
                // dead client would fail every later publish with "channel closed").
                *slot = None;
                return Err(e);
            }
            Ok(events.iter().map(|e| e.doc.len() as u64).sum())
        })
    }
}
