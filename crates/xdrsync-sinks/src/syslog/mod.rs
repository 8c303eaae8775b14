//! The syslog sink (ArcSight, QRadar and any syslog collector): RFC 5424 or RFC 3164 headers,
//! CEF, LEEF or JSON messages, over UDP, TCP (RFC 6587 octet counting, or newline framing) or
//! TLS (RFC 5425).
//!
//! Acknowledgement: syslog has none in the protocol. Over TCP and TLS the sink writes a chunk
//! on a connection of its own, half-closes it, and counts the chunk delivered only when the
//! receiver has read everything and closed its side (a receiver that dies mid-chunk resets the
//! connection instead, and the chunk is sent again). A receiver that reads a message and then
//! loses it before writing it (a `kill -9` of rsyslog with an in-memory queue) is beyond what
//! plain syslog can tell; RELP would be needed. UDP is fire-and-forget: use it only where a
//! lost datagram is acceptable.

mod config;
pub mod encoder;
#[cfg(feature = "sink-syslog")]
mod sink;

pub use config::{Framing, Message, Protocol, SyslogConfig, SyslogTransport, Validated};

use std::sync::Arc;

use xdrsync_config::ConfigError;

use crate::Sink;
use crate::outbox::Common;

/// Builds the sink.
pub(crate) fn build(common: Common, v: &Validated) -> Result<Arc<dyn Sink>, ConfigError> {
    #[cfg(feature = "sink-syslog")]
    {
        sink::build(common, v)
    }
    #[cfg(not(feature = "sink-syslog"))]
    {
        let _ = (common, v);
        Err(crate::config::not_built("syslog", "sink-syslog"))
    }
}

#[cfg(test)]
mod tests;
