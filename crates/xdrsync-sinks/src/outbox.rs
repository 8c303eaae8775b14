//! The one delivery loop every sink runs, over a `Transport` per receiver.
//!
//! ```text
//! position ─► backlog check ─► read a batch past it ─► route ─► encode ─► chunk ─► send ─► ack
//!    ▲                                                                          (retry per   │
//!    └───────────────────────────── store.set_sink_position ◄──────────────────  SendError) ─┘
//! ```
//!
//! The position moves only past what the receiver accepted (or what the route passed over),
//! chunk by chunk, so a failure mid-batch re-sends only the chunk that failed. Retries follow
//! the shared classification (`xdrsync_http::classify` for HTTP status codes; a
//! connection that fails or is cut is transient; anything else permanent), with the jittered
//! backoff the API client uses, or the receiver's `Retry-After`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xdrsync_http::{RetryAction, classify};
use xdrsync_store::{Store, StoredVersion};

use crate::metrics::{self, SinkMetrics};
use crate::route::Route;
use crate::schema::Format;
use crate::{Delivered, SinkError, on_store};

/// A boxed future borrowed for `'a` (transports are trait objects).
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One event ready to send: the stored version and its document in the sink's format.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) v: StoredVersion,
    /// The document (one line of JSON, no newline).
    pub(crate) doc: Vec<u8>,
}

/// Why a send failed, and whether trying again can help.
#[derive(Debug, Clone)]
pub(crate) struct SendError {
    pub(crate) message: String,
    /// Whether trying again can help (429, 5xx, a connection problem).
    pub(crate) retriable: bool,
    /// The receiver's own wait (`Retry-After`), if it gave one.
    pub(crate) after: Option<Duration>,
}

impl SendError {
    /// Transient: a connection refused, reset or timed out; the receiver may be restarting.
    pub(crate) fn transient(message: impl Into<String>) -> Self {
        SendError {
            message: message.into(),
            retriable: true,
            after: None,
        }
    }

    /// Permanent: the receiver refused the data or the credentials.
    pub(crate) fn permanent(message: impl Into<String>) -> Self {
        SendError {
            message: message.into(),
            retriable: false,
            after: None,
        }
    }

    /// Classifies an HTTP answer by the shared table (401 is permanent here: a sink has no
    /// token to refresh).
    pub(crate) fn http(status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> Self {
        let body: String = body.chars().take(300).collect();
        let message = format!("HTTP {status}: {}", body.trim());
        match classify(status, headers) {
            RetryAction::Transient { after } => SendError {
                message,
                retriable: true,
                after,
            },
            RetryAction::Success | RetryAction::Unauthorized | RetryAction::Permanent => {
                SendError::permanent(message)
            }
        }
    }

    /// The same error with `what` (the request, the peer) in front of its message.
    pub(crate) fn context(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// A reqwest failure without its URL (which may carry credentials); connection-level
    /// problems are transient.
    pub(crate) fn reqwest(e: reqwest::Error) -> Self {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else if e.is_body() || e.is_request() {
            "connection failed"
        } else {
            "request failed"
        };
        SendError::transient(with_causes(what, std::error::Error::source(&e)))
    }
}

/// `head` followed by `: cause` for each error in the chain from `source` (a cause whose text
/// is already there is not repeated), made printable: client libraries put the server's words
/// and the TLS reason in the causes, and they reach logs and `status`.
pub(crate) fn with_causes(
    head: &str,
    source: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    let mut msg = head.to_owned();
    let mut src = source;
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = s.source();
    }
    xdrsync_model::printable(&msg)
}

/// A receiver: sends a chunk of events and says whether it accepted all of them.
pub(crate) trait Transport: Send + Sync + std::fmt::Debug + 'static {
    /// Sends `events`; `Ok` (with the bytes sent, before any compression) only once the
    /// receiver accepted every one of them.
    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<u64, SendError>>;

    /// Events with different destinations (a per-tenant URL) go in different chunks.
    fn destination(&self, _event: &Event) -> usize {
        0
    }

    /// Whether it sends the `format` document; a transport that builds its own message from
    /// the version (syslog CEF and LEEF) gets an empty `doc` and is chunked by count only.
    fn uses_documents(&self) -> bool {
        true
    }
}

/// What happens when a sink's backlog passes `backlog_max_events`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Keep every event in the outbox and log an error at every delivery (the default:
    /// nothing is lost, the store grows).
    #[default]
    Keep,
    /// Skip the oldest events for this sink so only the newest `backlog_max_events` remain,
    /// logging an error with the skipped range (the events stay in the store).
    DropOldest,
}

/// The settings every sink shares (the `[[sinks]]` section's common keys, validated).
#[derive(Debug, Clone)]
pub struct Common {
    /// The sink's name (its key in the store's positions).
    pub name: String,
    /// Its documents' schema.
    pub format: Format,
    /// What it receives.
    pub route: Route,
    /// Events per chunk sent.
    pub batch_max_events: usize,
    /// Bytes (of documents) per chunk sent.
    pub batch_max_bytes: usize,
    /// Attempts per chunk before the delivery fails.
    pub retry_attempts: u32,
    /// First backoff.
    pub retry_base: Duration,
    /// Longest backoff.
    pub retry_max: Duration,
    /// The backlog's bound.
    pub backlog_max_events: u64,
    /// What happens past it.
    pub when_full: WhenFull,
    /// How old its oldest undelivered event may be before it counts as stalled.
    pub stall_after: Duration,
    /// Configured tenant names by tenant id: every event carries its tenant's name, so a
    /// SIEM can route by customer.
    pub tenant_names: Arc<BTreeMap<String, String>>,
    /// Every event it sends is a replay (`xdrsync replay`), and its documents say so.
    pub replay: bool,
}

impl Common {
    /// Defaults for a sink named `name` (tests and the `--ndjson` flag).
    pub fn named(name: impl Into<String>) -> Self {
        Common {
            name: name.into(),
            format: Format::Xdrsync,
            route: Route::default(),
            batch_max_events: 500,
            batch_max_bytes: 4 << 20,
            retry_attempts: 5,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            backlog_max_events: 10_000_000,
            when_full: WhenFull::Keep,
            stall_after: Duration::from_secs(900),
            tenant_names: Arc::default(),
            replay: false,
        }
    }

    /// Records a failed attempt that will be retried (log and counter) and returns how long to
    /// wait first: the receiver's `after` if it gave one, else the jittered backoff the API
    /// client uses.
    pub(crate) fn retrying(
        &self,
        attempt: u32,
        after: Option<Duration>,
        error: &str,
        m: &SinkMetrics,
    ) -> Duration {
        // A receiver's `Retry-After` is honoured up to the sink's `retry_max_secs`: a 503
        // asking for a year must not stall the pass (or a SIGTERM's drain).
        let wait = after.map(|a| a.min(self.retry_max)).unwrap_or_else(|| {
            xdrsync_http::jittered_backoff(self.retry_base, self.retry_max, attempt)
        });
        metrics::SendRetrying {
            sink: &self.name,
            attempt,
            wait,
            error,
        }
        .emit(m);
        wait
    }

    /// Applies the backlog bound at `position`; returns the position to deliver from.
    pub(crate) fn check_backlog(
        &self,
        store: &dyn Store,
        position: i64,
        m: &SinkMetrics,
    ) -> Result<i64, SinkError> {
        let backlog = store.count_after(position)?;
        let (dropped, skipped_to) =
            if backlog > self.backlog_max_events && self.when_full == WhenFull::DropOldest {
                let to = store.seq_before_newest(self.backlog_max_events)?;
                store.set_sink_position(&self.name, to)?;
                (backlog - self.backlog_max_events, to)
            } else {
                (0, position)
            };
        metrics::Backlog {
            sink: &self.name,
            events: backlog,
            max: self.backlog_max_events,
            dropped,
            skipped_to,
        }
        .emit(m);
        Ok(skipped_to.max(position))
    }

    /// The next stored versions past `position` (at most `limit`): the routed ones (with
    /// their documents when `encode`), the batch's last `seq` and how many it passed over
    /// (`None` when there is nothing past `position`).
    pub(crate) fn next_batch(
        &self,
        store: &dyn Store,
        position: i64,
        limit: usize,
        encode: bool,
    ) -> Result<Option<(Vec<Event>, i64, u64)>, SinkError> {
        let batch = if self.format.needs_raw() {
            store.versions_after(position, limit)?
        } else {
            store.versions_after_without_raw(position, limit)?
        };
        let Some(end) = batch.last().map(|v| v.seq) else {
            return Ok(None);
        };
        let read = batch.len();
        let mut events = Vec::with_capacity(batch.len());
        for mut v in batch {
            if !self.route.accepts(&v) {
                continue;
            }
            v.tenant_name = self.tenant_names.get(v.record.tenant().as_str()).cloned();
            v.replay = self.replay;
            let mut doc = Vec::new();
            if encode {
                doc.reserve(2048);
                self.format
                    .write(&v, &mut doc)
                    .map_err(|e| SinkError::Encode {
                        sink: self.name.clone(),
                        seq: v.seq,
                        message: e.to_string(),
                    })?;
            }
            events.push(Event { v, doc });
        }
        let filtered = (read - events.len()) as u64;
        Ok(Some((events, end, filtered)))
    }
}

/// A sink over a transport: the loop of the module doc.
#[derive(Debug)]
pub(crate) struct OutboxSink<T: Transport> {
    pub(crate) common: Arc<Common>,
    pub(crate) transport: T,
    pub(crate) metrics: Arc<SinkMetrics>,
    /// One delivery at a time: two at once would both send what lies past the same position.
    delivering: tokio::sync::Mutex<()>,
}

impl<T: Transport> OutboxSink<T> {
    pub(crate) fn new(common: Common, transport: T) -> Self {
        OutboxSink {
            common: Arc::new(common),
            transport,
            metrics: Arc::default(),
            delivering: tokio::sync::Mutex::new(()),
        }
    }

    async fn send_with_retry(&self, chunk: &[Event]) -> Result<u64, SinkError> {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.transport.send(chunk).await {
                Ok(bytes) => return Ok(bytes),
                Err(e) => e,
            };
            if !err.retriable || attempt >= self.common.retry_attempts.max(1) {
                return Err(SinkError::Send {
                    sink: self.common.name.clone(),
                    message: err.message,
                    attempts: attempt,
                    elapsed_secs: start.elapsed().as_secs_f64(),
                    retriable: err.retriable,
                });
            }
            let wait = self
                .common
                .retrying(attempt, err.after, &err.message, &self.metrics);
            tokio::time::sleep(wait).await;
        }
    }

    async fn deliver_async(&self, store: &Arc<dyn Store>) -> Result<Delivered, SinkError> {
        let name = self.common.name.clone();
        let set_position = |to: i64| {
            let name = name.clone();
            on_store(store, move |s| s.set_sink_position(&name, to))
        };
        let (c, m) = (self.common.clone(), self.metrics.clone());
        let mut position = on_store(store, move |s| {
            let stored = s.sink_position(&c.name)?;
            c.check_backlog(s, stored, &m)
        })
        .await?;
        let mut sent = 0u64;
        let read = self.common.batch_max_events.max(1) * 4;
        let encode = self.transport.uses_documents();
        loop {
            // Reading and encoding a batch is SQLite and CPU work: off the async threads.
            let c = self.common.clone();
            let next = on_store(store, move |s| c.next_batch(s, position, read, encode)).await?;
            let Some((events, end, filtered)) = next else {
                break;
            };
            let mut rest = &events[..];
            while !rest.is_empty() {
                let n = self.chunk_len(rest);
                let (chunk, tail) = rest.split_at(n);
                let bytes = self.send_with_retry(chunk).await?;
                let last = match chunk.last() {
                    Some(e) if !tail.is_empty() => e.v.seq,
                    _ => end,
                };
                set_position(last).await?;
                metrics::BatchSent {
                    sink: &self.common.name,
                    events: n as u64,
                    bytes,
                    position: last,
                }
                .emit(&self.metrics);
                sent += n as u64;
                position = last;
                rest = tail;
            }
            if position < end {
                // Nothing routed past `position` in this batch.
                set_position(end).await?;
                position = end;
            }
            metrics::EventsFiltered {
                sink: &self.common.name,
                events: filtered,
                position,
            }
            .emit(&self.metrics);
        }
        Ok(Delivered {
            events: sent,
            position,
        })
    }

    /// How many of `events` go in the next chunk: up to the count and byte bounds, one
    /// destination.
    fn chunk_len(&self, events: &[Event]) -> usize {
        let Some(dest) = events.first().map(|e| self.transport.destination(e)) else {
            return 0;
        };
        let mut bytes = 0usize;
        let mut n = 0usize;
        for e in events {
            if n > 0
                && (n >= self.common.batch_max_events
                    || bytes + e.doc.len() > self.common.batch_max_bytes
                    || self.transport.destination(e) != dest)
            {
                break;
            }
            bytes += e.doc.len();
            n += 1;
        }
        n
    }
}

impl<T: Transport> crate::Sink for OutboxSink<T> {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn deliver(
        self: Arc<Self>,
        store: Arc<dyn Store>,
    ) -> crate::BoxFuture<'static, crate::DeliveryResult> {
        Box::pin(async move {
            let _one = self.delivering.lock().await;
            let r = self.deliver_async(&store).await;
            if let Err(e) = &r {
                metrics::DeliveryFailed {
                    sink: &self.common.name,
                    error: e,
                }
                .emit(&self.metrics);
            }
            r
        })
    }

    fn metrics(&self) -> crate::MetricsSnapshot {
        self.metrics.snapshot()
    }
}
