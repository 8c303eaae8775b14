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

#[cfg(feature = "sink-syslog")]
pub(crate) use sink::build;

#[cfg(test)]
mod tests;
