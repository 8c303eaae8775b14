//! The stdout sink: one document per line on standard output, for piping
//! (`xdrsync pull | jq …`). The binary prints its own summary to stderr when this sink is
//! configured, so stdout carries nothing but events.
//!
//! At least once: a pipe has no acknowledgement, so the position is recorded after each
//! chunk is written and flushed; a crash between the two repeats that chunk.

mod config;
mod sink;

pub use config::StdoutConfig;
pub use sink::{StdoutTransport, sink_to};
