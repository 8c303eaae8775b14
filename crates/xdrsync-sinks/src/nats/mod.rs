//! The NATS JetStream sink: each event is published to
//! `<subject_prefix>.<tenant id>.<stream>.<change>` (e.g.
//! `xdrsync.b3a7c1d2-….incidents.created`, so `xdrsync.*.incidents.>` subscribes to every
//! tenant's incidents) with the header `Nats-Msg-Id: <event id>`, and counts as delivered
//! when JetStream acknowledges it. A repeat within the stream's duplicate window is dropped by
//! the broker (`"duplicate": true`), so a re-sent chunk after a crash stores nothing twice.
//!
//! The client is a small implementation of the NATS text protocol (`INFO`, `CONNECT`,
//! `HPUB`, `SUB`, `MSG`/`HMSG`, `PING`/`PONG`) over one TCP connection with publishes
//! pipelined per chunk: all the sink needs, without a full client's dependencies.

mod client;
mod config;
#[cfg(feature = "sink-nats")]
mod sink;

pub use client::{Auth, Connection, NatsError, Reply, Request};
pub use config::{NatsConfig, Validated};

#[cfg(feature = "sink-nats")]
pub(crate) use sink::build;
