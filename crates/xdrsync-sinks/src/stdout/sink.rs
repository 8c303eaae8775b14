//! Writing lines to a stream.

use std::io::Write;
use std::sync::Mutex;

use crate::outbox::{BoxFuture, Event, SendError, Transport};

/// Writes each event as a line to a stream (standard output in production; any writer in
/// tests).
pub struct StdoutTransport {
    out: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for StdoutTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StdoutTransport")
    }
}

/// A stdout-style sink writing to any stream (standard output is `build`'s; tests and tools
/// give a file or a pipe).
pub fn sink_to(
    common: crate::Common,
    out: Box<dyn Write + Send>,
) -> std::sync::Arc<dyn crate::Sink> {
    std::sync::Arc::new(crate::outbox::OutboxSink::new(
        common,
        StdoutTransport::new(out),
    ))
}

impl StdoutTransport {
    /// Lines to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        StdoutTransport {
            out: Mutex::new(out),
        }
    }
}

impl Transport for StdoutTransport {
    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<u64, SendError>> {
        Box::pin(async move {
            let mut buf = Vec::with_capacity(events.iter().map(|e| e.doc.len() + 1).sum());
            for e in events {
                buf.extend_from_slice(&e.doc);
                buf.push(b'\n');
            }
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            // A closed pipe (`| head`) is permanent: nobody will read what follows.
            out.write_all(&buf)
                .and_then(|()| out.flush())
                .map_err(|e| SendError::permanent(format!("cannot write to stdout: {e}")))?;
            Ok(buf.len() as u64)
        })
    }
}
