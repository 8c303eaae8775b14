//! Delivery sinks.
//!
//! A sink reads the store's outbox from its own position, writes, makes the write durable, and
//! only then records its new position. A crash between the write and the position update would
//! re-deliver, so each sink also recovers its true position from what it wrote (the NDJSON sink
//! reads the `seq` of its last complete line), which makes file delivery exactly-once.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use xdrsync_model::{StreamKind, Timestamp};
use xdrsync_store::{SqliteStore, StoreError, StoredVersion};

/// A delivery failure.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
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
}

/// What one delivery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Events written now.
    pub events: u64,
    /// The sink's position afterwards.
    pub position: i64,
}

/// The NDJSON line of one stored version (the `xdrsync` schema with its event envelope):
/// an incident under `incident` with `incident_id`, an alert or SIEM detection under `alert`
/// with `alert_id` (`<alert id>:<part>` for a detection); `stream` says which.
pub fn ndjson_line(v: &StoredVersion) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(v.raw.len() / 2 + 512);
    write_ndjson_line(&mut out, v)?;
    // serde_json writes UTF-8 only.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// [`ndjson_line`] appended to `out`, serialized straight into it (no intermediate JSON tree).
fn write_ndjson_line(out: &mut Vec<u8>, v: &StoredVersion) -> Result<(), serde_json::Error> {
    use serde::ser::{SerializeMap, Serializer};
    let (id_key, body_key) = match v.stream {
        StreamKind::Incidents => ("incident_id", "incident"),
        StreamKind::Alerts | StreamKind::Detections => ("alert_id", "alert"),
    };
    let mut ser = serde_json::Serializer::new(out);
    let mut m = (&mut ser).serialize_map(Some(9))?;
    m.serialize_entry("event_id", &v.event_id)?;
    m.serialize_entry("seq", &v.seq)?;
    m.serialize_entry("stream", &v.stream)?;
    m.serialize_entry("change", &v.change)?;
    m.serialize_entry("changes", &v.changes)?;
    m.serialize_entry("tenant_id", v.record.tenant())?;
    m.serialize_entry(id_key, &v.record.item_id())?;
    m.serialize_entry("last_update", &v.record.last_update())?;
    m.serialize_entry(body_key, &v.record)?;
    m.end()
}

/// A destination that delivers the store's outbox from its own position.
///
/// `deliver` writes every stored version past the sink's position, makes the write durable and
/// only then records the new position; it may be called again at any time (after each commit of
/// a running pull, on the next run) and resumes where it stopped.
pub trait Sink: Send + Sync + std::fmt::Debug + 'static {
    /// The sink's name: its key in the store's delivery positions.
    fn name(&self) -> &str;
    /// Delivers every stored version past the sink's position.
    fn deliver(&self, store: &SqliteStore) -> Result<Delivered, SinkError>;
}

/// Appends one line per stored version to a file.
#[derive(Debug)]
pub struct NdjsonSink {
    name: String,
    path: PathBuf,
    /// One delivery at a time: two at once would both append what lies past the same position.
    delivering: std::sync::Mutex<()>,
}

/// How many versions are written per fsync.
const BATCH: usize = 1000;

impl NdjsonSink {
    /// A sink named `name` writing to `path`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        NdjsonSink {
            name: name.into(),
            path: path.into(),
            delivering: std::sync::Mutex::new(()),
        }
    }

    fn io(&self, source: std::io::Error) -> SinkError {
        SinkError::Io {
            sink: self.name.clone(),
            path: self.path.clone(),
            source,
        }
    }

    /// Cuts a half-written last line (a crash mid-write) and returns the `seq` of the last
    /// complete line, if any.
    fn recover(&self, file: &mut std::fs::File) -> Result<Option<i64>, SinkError> {
        let len = file.metadata().map_err(|e| self.io(e))?.len();
        if len == 0 {
            return Ok(None);
        }
        let tail_len = len.min(1 << 20);
        file.seek(SeekFrom::Start(len - tail_len))
            .map_err(|e| self.io(e))?;
        let mut tail = Vec::with_capacity(tail_len as usize);
        file.read_to_end(&mut tail).map_err(|e| self.io(e))?;
        let complete = match tail.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None if tail_len == len => 0,
            None => {
                return Err(self.io(std::io::Error::other(
                    "last line is longer than 1 MiB; the file is not xdrsync NDJSON",
                )));
            }
        };
        if complete < tail.len() {
            let keep = len - tail_len + complete as u64;
            tracing::warn!(sink = %self.name, path = %self.path.display(), bytes = tail.len() - complete,
                "Removing a half-written last line left by an interrupted run.");
            file.set_len(keep).map_err(|e| self.io(e))?;
            file.sync_data().map_err(|e| self.io(e))?;
        }
        let lines = &tail[..complete];
        let last_line = lines[..lines.len().saturating_sub(1)]
            .rsplit(|b| *b == b'\n')
            .next()
            .filter(|l| !l.is_empty());
        Ok(last_line
            .and_then(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
            .and_then(|v| v["seq"].as_i64()))
    }
}

impl Sink for NdjsonSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&self, store: &SqliteStore) -> Result<Delivered, SinkError> {
        let _one = self.delivering.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = fs_err::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        let written = self.recover(file.file_mut())?;
        let stored = store.sink_position(&self.name)?;
        let last = store.last_seq()?;
        let mut position = match written {
            Some(seq) if seq > last => {
                tracing::warn!(sink = %self.name, path = %self.path.display(), file_seq = seq, store_seq = last,
                    "The file holds events the store does not know (was the store replaced?); appending after the store's position.");
                stored
            }
            Some(seq) => seq.max(stored),
            None => stored,
        };
        if position > stored {
            // The previous run wrote these but died before recording it.
            store.set_sink_position(&self.name, position)?;
        }
        let mut events = 0;
        loop {
            // The NDJSON line is the normalized record: the raw JSON is not read.
            let batch = store.versions_after_without_raw(position, BATCH)?;
            let Some(end) = batch.last().map(|v| v.seq) else {
                break;
            };
            let mut buf = Vec::with_capacity(batch.len() * 2048);
            for v in &batch {
                write_ndjson_line(&mut buf, v)
                    .map_err(|e| self.io(std::io::Error::other(format!("seq {}: {e}", v.seq))))?;
                buf.push(b'\n');
            }
            file.write_all(&buf).map_err(|e| self.io(e))?;
            file.sync_data().map_err(|e| self.io(e))?;
            store.set_sink_position(&self.name, end)?;
            events += batch.len() as u64;
            position = end;
        }
        Ok(Delivered { events, position })
    }
}

/// The Hello World seed's file name: `Latest Incidents <time>.json`, with `:` replaced by `.`.
pub fn latest_incidents_file_name(at: Timestamp) -> String {
    format!("Latest Incidents {}.json", at.to_string().replace(':', "."))
}

/// Writes raw incident JSON objects as one JSON array, atomically (temp file, fsync, rename).
pub fn write_json_array(path: &Path, raws: &[String]) -> Result<(), SinkError> {
    let io = |source| SinkError::Io {
        sink: "file".into(),
        path: path.to_owned(),
        source,
    };
    write_atomic(path, json_array(raws).as_bytes()).map_err(io)
}

/// Joins raw JSON objects into one JSON array, one object per line, keeping their bytes.
pub fn json_array(raws: &[String]) -> String {
    let mut body = String::from("[");
    for (i, raw) in raws.iter().enumerate() {
        body.push_str(if i == 0 { "\n  " } else { ",\n  " });
        body.push_str(raw);
    }
    body.push_str(if raws.is_empty() { "]\n" } else { "\n]\n" });
    body
}

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = fs_err::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs_err::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests;
