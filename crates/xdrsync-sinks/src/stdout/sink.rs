//! Writing lines to a stream.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::outbox::{BoxFuture, Event, SendError, Transport};

/// Writes each event as a line to a stream (standard output in production; any writer in
/// tests).
pub struct StdoutTransport {
    /// Shared with the blocking thread each write runs on (a pipe's reader may be slow).
    out: Arc<Mutex<Box<dyn Write + Send>>>,
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
            out: Arc::new(Mutex::new(out)),
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
            let out = self.out.clone();
            let written = tokio::task::spawn_blocking(move || {
                let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                out.write_all(&buf).and_then(|()| out.flush())?;
                Ok::<_, std::io::Error>(buf.len() as u64)
            })
            .await
            .map_err(|e| SendError::permanent(format!("cannot write to stdout: {e}")))?;
            // A closed pipe (`| head`) is permanent: nobody will read what follows.
            written.map_err(|e| SendError::permanent(format!("cannot write to stdout: {e}")))
        })
    }
}
