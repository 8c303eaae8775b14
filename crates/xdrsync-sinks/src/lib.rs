//! Delivery sinks.
//!
//! A sink reads the store's outbox from its own position, sends what its route lets through
//! in batches, and records its new position only once the receiver has accepted the batch (a
//! file: written and fsynced; syslog over TCP/TLS: read to the end by the receiver; Splunk:
//! `200` and, with indexer acknowledgement, `true` on the ack channel; NATS: the JetStream
//! publish ack; PostgreSQL: the commit). A sink that is down keeps its backlog in the outbox
//! and holds back nothing but itself.
//!
//! # Layout
//!
//! - [`config`]: the `[[sinks]]` section, parsed → validated → built; every sink's own
//!   settings live in its folder's `config.rs`.
//! - [`route`]: which tenants, streams, severities and change kinds a sink receives.
//! - [`schema`]: the documents (`raw`, `xdrsync`, `ocsf`, `ecs`), the same for every sink.
//! - [`metrics`]: per-sink counters and the named events that both log and count them.
//! - `outbox`: the one delivery loop every network sink runs (position → batch → send with
//!   the shared retry classification → acknowledge), over a `Transport` per sink.
//! - one folder per sink: [`file`], [`stdout`], [`syslog`], [`splunk_hec`], [`webhook`],
//!   [`nats`], [`postgres`].

use std::path::PathBuf;
use std::sync::Arc;

use xdrsync_store::{Store, StoreError};

pub mod config;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod http;
pub mod metrics;
mod outbox;
pub mod route;
pub mod schema;
#[cfg(feature = "tls")]
mod tls;

pub mod file;
pub mod nats;
pub mod postgres;
pub mod splunk_hec;
pub mod stdout;
pub mod syslog;
pub mod webhook;

pub use config::{ValidatedSink, build, build_all, names as tenant_names, validate};
pub use file::{
    NdjsonSink, json_array, latest_incidents_file_name, ndjson_line, private_dir, write_atomic,
    write_json_array,
};
pub use metrics::MetricsSnapshot;
pub use outbox::{Common, WhenFull};

/// A delivery failure.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing a file failed.
    #[error("sink {sink}: cannot write {path}: {source}")]
    Io {
        /// Sink name.
        sink: String,
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The receiver did not accept a batch (after the retries its failure allowed).
    #[error(
        "sink {sink}: {message} (after {attempts} attempt(s) in {elapsed_secs:.1}s; {})",
        if *retriable { "will retry on the next delivery" } else { "not retriable: fix the receiver or the sink's settings" }
    )]
    Send {
        /// Sink name.
        sink: String,
        /// What the receiver said (never a token or a credential).
        message: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent on them.
        elapsed_secs: f64,
        /// Whether the failure was transient (429, 5xx, a connection problem).
        retriable: bool,
    },
    /// A stored version could not be encoded in the sink's format.
    #[error("sink {sink}: cannot encode seq {seq}: {message}")]
    Encode {
        /// Sink name.
        sink: String,
        /// The version.
        seq: i64,
        /// Why.
        message: String,
    },
}

/// A boxed, sendable future (sinks are trait objects).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// How one delivery went.
pub type DeliveryResult = Result<Delivered, SinkError>;

/// Runs `f` on the store on a blocking thread (SQLite calls block), returning its result; a
/// panic in `f` is resumed in the caller.
pub(crate) async fn on_store<R, F>(store: &Arc<dyn Store>, f: F) -> R
where
    R: Send + 'static,
    F: FnOnce(&dyn Store) -> R + Send + 'static,
{
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// What one delivery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Events sent now.
    pub events: u64,
    /// The sink's position afterwards.
    pub position: i64,
}

/// A destination that delivers the store's outbox from its own position.
///
/// `deliver` sends every stored version past the sink's position that its route accepts,
/// and records the new position only once the receiver accepted them; it may be called again at
/// any time (after each commit of a running pull, on the next run) and resumes where it stopped.
/// One instance delivers one call at a time.
///
/// Delivery is async end to end: network transports await their receivers on the caller's
/// runtime, and the blocking parts (SQLite reads and position writes, file I/O) run on tokio's
/// blocking threads, so a delivery never stalls the threads a pull's requests run on. The
/// future owns what it uses (`Arc`s), so a caller can bound it with a timeout (`run`'s drain)
/// or drop it.
pub trait Sink: Send + Sync + std::fmt::Debug + 'static {
    /// The sink's name: its key in the store's delivery positions.
    fn name(&self) -> &str;
    /// Delivers every stored version past the sink's position.
    fn deliver(self: Arc<Self>, store: Arc<dyn Store>) -> BoxFuture<'static, DeliveryResult>;
    /// Its counters since it was built.
    fn metrics(&self) -> MetricsSnapshot;
    /// Whether it delivers after every commit of a running pull (the default), or once the
    /// pull is stored (a sink whose unit is "one file per run").
    fn follows_commits(&self) -> bool {
        true
    }
}
