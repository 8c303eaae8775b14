//! The NATS JetStream sink: each event is published to
//! `<subject_prefix>.<tenant id>.<stream>.<change>` (e.g.
//! `xdrsync.b3a7c1d2-….incidents.created`, so `xdrsync.*.incidents.>` subscribes to every
//! tenant's incidents) with the header `Nats-Msg-Id: <event id>`, and counts as delivered
//! when JetStream acknowledges it. A repeat within the stream's duplicate window is dropped by
//! the broker (`"duplicate": true`), so a re-sent chunk after a crash stores nothing twice.
//!
//! The client is the NATS project's own `async-nats`: TLS (rustls), token, user/password,
//! NKey and `.creds` authentication, reconnects, JetStream publish acknowledgements.
//! Credentials never cross the network in clear: TLS is required for any server not on this
//! machine unless the config says `tls = false`.

mod config;
#[cfg(feature = "sink-nats")]
mod sink;

pub use config::{NatsConfig, Validated};

#[cfg(feature = "sink-nats")]
pub(crate) use sink::build;
