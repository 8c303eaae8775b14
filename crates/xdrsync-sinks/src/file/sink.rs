//! The file sink's delivery (see the module doc for how it stays exactly once).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use xdrsync_model::Timestamp;
use xdrsync_store::{Store, StoredVersion};

use super::config::{FileMode, Validated};
use crate::metrics::{self, SinkMetrics};
use crate::outbox::{Common, Event};
use crate::schema::Format;
use crate::{Delivered, MetricsSnapshot, Sink, SinkError};

/// The batch being written, recorded in the store before the write.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    file: PathBuf,
    /// The file's length before the batch (NDJSON).
    offset: u64,
    /// Its length once the batch is written (NDJSON).
    end_len: u64,
    /// The batch's last `seq`.
    end_seq: i64,
}

/// The sink's state beside its position.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// When the active NDJSON file was started (for age rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    opened_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Pending>,
}

/// Writes events to files: NDJSON (rotated) or JSON arrays.
#[derive(Debug)]
pub struct FileSink {
    common: Common,
    /// Mode, path (NDJSON: the active file; JSON array: the folder) and rotation.
    settings: Validated,
    metrics: SinkMetrics,
    /// One delivery at a time: two at once would both append what lies past the same position.
    delivering: Mutex<()>,
}

/// The NDJSON file sink with default settings (the `--ndjson` flag, the demo).
pub type NdjsonSink = FileSink;

/// Where one delivery writes: the open NDJSON file, or the arrays' folder.
enum Target {
    Ndjson(fs_err::File),
    Arrays,
}

impl FileSink {
    /// The same sink with its events carrying the configured tenant names (see
    /// [`crate::tenant_names`]).
    pub fn with_tenant_names(
        mut self,
        names: std::sync::Arc<std::collections::BTreeMap<String, String>>,
    ) -> Self {
        self.common.tenant_names = names;
        self
    }

    /// Narrows this sink to a replay's window (see [`crate::ValidatedSink::for_replay`]).
    pub fn narrow_for_replay(
        &mut self,
        tenants: &[xdrsync_model::TenantId],
        streams: &[xdrsync_model::StreamKind],
        since: xdrsync_model::Timestamp,
    ) {
        let c = &mut self.common;
        c.replay = true;
        c.backlog_max_events = u64::MAX;
        c.route.tenants = tenants.iter().cloned().collect();
        c.route.streams = streams.to_vec();
        c.route.since = Some(since);
    }

    /// An NDJSON sink named `name` appending `xdrsync` documents to `path`, never rotating.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        let mut common = Common::named(name);
        common.batch_max_events = 1000;
        Self::build(
            common,
            Validated {
                mode: FileMode::Ndjson,
                path: path.into(),
                rotate_max_bytes: 0,
                rotate_max_age_secs: 0,
                keep_rotated: 0,
            },
        )
    }

    /// A file sink from validated settings.
    pub(crate) fn build(common: Common, settings: Validated) -> Self {
        FileSink {
            common,
            settings,
            metrics: SinkMetrics::default(),
            delivering: Mutex::new(()),
        }
    }

    fn io_at(&self, path: &Path, source: std::io::Error) -> SinkError {
        SinkError::Io {
            sink: self.common.name.clone(),
            path: path.to_owned(),
            source,
        }
    }

    fn load_state(&self, store: &dyn Store) -> Result<(i64, State), SinkError> {
        let (position, state) = store.sink_state(&self.common.name)?;
        let state = match state {
            Some(s) => serde_json::from_str(&s).unwrap_or_else(|e| {
                tracing::warn!(sink = %self.common.name, error = %e, "Ignoring an unreadable file sink state.");
                State::default()
            }),
            None => State::default(),
        };
        Ok((position, state))
    }

    fn save_state(&self, store: &dyn Store, position: i64, state: &State) -> Result<(), SinkError> {
        let text = serde_json::to_string(state).map_err(|e| SinkError::Encode {
            sink: self.common.name.clone(),
            seq: position,
            message: format!("the file sink's state: {e}"),
        })?;
        store.set_sink_state(&self.common.name, position, Some(&text))?;
        Ok(())
    }

    /// Settles a batch a crash left in flight; returns the position.
    fn recover(
        &self,
        store: &dyn Store,
        mut position: i64,
        state: &mut State,
    ) -> Result<i64, SinkError> {
        let Some(p) = state.pending.take() else {
            return Ok(position);
        };
        let len = match std::fs::metadata(&p.file) {
            Ok(m) => Some(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.io_at(&p.file, e)),
        };
        match (self.settings.mode, len) {
            (FileMode::Ndjson, Some(len)) if len >= p.end_len => position = position.max(p.end_seq),
            (FileMode::JsonArray, Some(_)) => position = position.max(p.end_seq),
            (FileMode::Ndjson, Some(len)) if len > p.offset => {
                tracing::warn!(sink = %self.common.name, path = %p.file.display(), bytes = len - p.offset,
                    "Removing a partly written batch left by an interrupted run; it is written again.");
                let f = fs_err::OpenOptions::new()
                    .write(true)
                    .open(&p.file)
                    .map_err(|e| self.io_at(&p.file, e))?;
                f.set_len(p.offset).map_err(|e| self.io_at(&p.file, e))?;
                f.sync_all().map_err(|e| self.io_at(&p.file, e))?;
            }
            _ => {}
        }
        self.save_state(store, position, state)?;
        Ok(position)
    }

    /// Cuts a half-written last line (a file written without a pending record: an older
    /// xdrsync, or another program), so what follows starts on a line of its own.
    fn cut_torn_tail(&self, file: &mut std::fs::File) -> Result<(), SinkError> {
        let io = |e| self.io_at(&self.settings.path, e);
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            return Ok(());
        }
        let tail_len = len.min(1 << 20);
        file.seek(SeekFrom::Start(len - tail_len)).map_err(io)?;
        let mut tail = Vec::with_capacity(tail_len as usize);
        file.read_to_end(&mut tail).map_err(io)?;
        let complete = match tail.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None if tail_len == len => 0,
            None => {
                return Err(io(std::io::Error::other(
                    "last line is longer than 1 MiB; the file is not NDJSON",
                )));
            }
        };
        if complete < tail.len() {
            let keep = len - tail_len + complete as u64;
            tracing::warn!(sink = %self.common.name, path = %self.settings.path.display(), bytes = tail.len() - complete,
                "Removing a half-written last line left by an interrupted run.");
            file.set_len(keep).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        Ok(())
    }

    /// The active file's folder, stem and extension (with its dot): rotated files are
    /// `<stem>-<UTC time>[-n]<ext>` beside it.
    fn name_parts(&self) -> (PathBuf, String, String) {
        let path = &self.settings.path;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = path
            .extension()
            .map(|s| format!(".{}", s.to_string_lossy()))
            .unwrap_or_default();
        (dir, stem, ext)
    }

    /// The name the active file is renamed to: `<stem>-<UTC time>.<ext>`, unique.
    fn rotated_name(&self) -> PathBuf {
        let (dir, stem, ext) = self.name_parts();
        let at = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let mut path = dir.join(format!("{stem}-{at}{ext}"));
        for n in 1u32.. {
            if !path.exists() {
                break;
            }
            path = dir.join(format!("{stem}-{at}-{n}{ext}"));
        }
        path
    }

    /// Rotated files of this sink, oldest first.
    fn rotated_files(&self) -> Vec<PathBuf> {
        let (dir, stem, ext) = self.name_parts();
        let prefix = format!("{stem}-");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                name.starts_with(&prefix) && name.ends_with(&ext) && *p != self.settings.path
            })
            .collect();
        files.sort();
        files
    }

    fn rotate(&self, state: &mut State) -> Result<(), SinkError> {
        let to = self.rotated_name();
        fs_err::rename(&self.settings.path, &to).map_err(|e| self.io_at(&self.settings.path, e))?;
        sync_dir(&self.settings.path);
        tracing::info!(sink = %self.common.name, from = %self.settings.path.display(), to = %to.display(), "Rotated the output file.");
        state.opened_at = None;
        if self.settings.keep_rotated > 0 {
            let files = self.rotated_files();
            let extra = files.len().saturating_sub(self.settings.keep_rotated);
            for old in files.iter().take(extra) {
                if let Err(e) = std::fs::remove_file(old) {
                    tracing::warn!(sink = %self.common.name, path = %old.display(), error = %e, "Cannot remove an old rotated file.");
                }
            }
        }
        Ok(())
    }

    fn needs_rotation(&self, len: u64, adding: u64, state: &State) -> bool {
        if len == 0 {
            return false;
        }
        let by_size =
            self.settings.rotate_max_bytes > 0 && len + adding > self.settings.rotate_max_bytes;
        let by_age = self.settings.rotate_max_age_secs > 0
            && state.opened_at.is_some_and(|t| {
                Timestamp::now().ticks() - t.ticks()
                    >= self.settings.rotate_max_age_secs as i64 * 10_000_000
            });
        by_size || by_age
    }

    fn open_ndjson(&self) -> Result<fs_err::File, SinkError> {
        let path = &self.settings.path;
        let mut options = std::fs::OpenOptions::new();
        options.read(true).append(true).create(true);
        // Incidents are sensitive: a new file is readable by its owner only.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(path)
            .map(|f| fs_err::File::from_parts(f, path))
            .map_err(|e| self.io_at(path, e))
    }

    fn open_target(&self) -> Result<Target, SinkError> {
        Ok(match self.settings.mode {
            FileMode::Ndjson => {
                let mut file = self.open_ndjson()?;
                self.cut_torn_tail(file.file_mut())?;
                Target::Ndjson(file)
            }
            FileMode::JsonArray => {
                let dir = &self.settings.path;
                private_dir(dir).map_err(|e| self.io_at(dir, e))?;
                Target::Arrays
            }
        })
    }

    /// The bytes of a batch and where they go (rotating the NDJSON file first when due).
    fn prepare(
        &self,
        target: &mut Target,
        state: &mut State,
        events: &[Event],
        end_seq: i64,
    ) -> Result<(Pending, Vec<u8>), SinkError> {
        match target {
            Target::Ndjson(file) => {
                let path = &self.settings.path;
                let mut body = Vec::with_capacity(events.iter().map(|e| e.doc.len() + 1).sum());
                for e in events {
                    body.extend_from_slice(&e.doc);
                    body.push(b'\n');
                }
                let mut len = file.metadata().map_err(|e| self.io_at(path, e))?.len();
                if self.needs_rotation(len, body.len() as u64, state) {
                    self.rotate(state)?;
                    *file = self.open_ndjson()?;
                    len = 0;
                }
                if len == 0 || state.opened_at.is_none() {
                    state.opened_at = Some(Timestamp::now());
                }
                let pending = Pending {
                    file: path.clone(),
                    offset: len,
                    end_len: len + body.len() as u64,
                    end_seq,
                };
                Ok((pending, body))
            }
            Target::Arrays => {
                let docs: Vec<&[u8]> = events.iter().map(|e| e.doc.as_slice()).collect();
                let body = json_array_bytes(&docs);
                let file = unique(
                    self.settings
                        .path
                        .join(latest_incidents_file_name(Timestamp::now())),
                );
                let pending = Pending {
                    file,
                    offset: 0,
                    end_len: body.len() as u64,
                    end_seq,
                };
                Ok((pending, body))
            }
        }
    }

    /// Makes `body` durable at `p.file`.
    fn write(&self, target: &mut Target, p: &Pending, body: &[u8]) -> Result<(), SinkError> {
        let io = |e| self.io_at(&p.file, e);
        match target {
            Target::Ndjson(file) => {
                file.write_all(body).map_err(io)?;
                file.sync_data().map_err(io)
            }
            Target::Arrays => write_atomic(&p.file, body).map_err(io),
        }
    }

    /// The loop: each batch is recorded as pending, written, then recorded as done.
    fn deliver_from(
        &self,
        store: &dyn Store,
        mut position: i64,
        mut state: State,
    ) -> Result<Delivered, SinkError> {
        let c = &self.common;
        let mut target = self.open_target()?;
        let mut sent = 0;
        while let Some((events, end, filtered)) =
            c.next_batch(store, position, c.batch_max_events.max(1), true)?
        {
            if !events.is_empty() {
                let (pending, body) = self.prepare(&mut target, &mut state, &events, end)?;
                state.pending = Some(pending.clone());
                self.save_state(store, position, &state)?;
                self.write(&mut target, &pending, &body)?;
                state.pending = None;
                metrics::BatchSent {
                    sink: &c.name,
                    events: events.len() as u64,
                    bytes: body.len() as u64,
                    position: end,
                }
                .emit(&self.metrics);
                sent += events.len() as u64;
            }
            self.save_state(store, end, &state)?;
            metrics::EventsFiltered {
                sink: &c.name,
                events: filtered,
                position: end,
            }
            .emit(&self.metrics);
            position = end;
        }
        Ok(Delivered {
            events: sent,
            position,
        })
    }
}

/// `path`, or `path` with ` (2)`, ` (3)` … before its extension when it exists.
fn unique(path: PathBuf) -> PathBuf {
    if !path.exists() {
        return path;
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut candidate = path;
    for n in 2u32.. {
        if !candidate.exists() {
            break;
        }
        candidate = dir.join(format!("{stem} ({n}).json"));
    }
    candidate
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.common.name
    }

    /// File I/O and the store's reads block: the whole delivery runs on a blocking thread.
    fn deliver(
        self: std::sync::Arc<Self>,
        store: std::sync::Arc<dyn Store>,
    ) -> crate::BoxFuture<'static, crate::DeliveryResult> {
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || self.deliver_blocking(store.as_ref())).await {
                Ok(r) => r,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        })
    }

    fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// `Latest Incidents <time>.json` is one file per run, as the Hello World script writes.
    fn follows_commits(&self) -> bool {
        self.settings.mode == FileMode::Ndjson
    }
}

impl FileSink {
    /// One delivery, on the calling (blocking) thread.
    fn deliver_blocking(&self, store: &dyn Store) -> Result<Delivered, SinkError> {
        let _one = self.delivering.lock().unwrap_or_else(|e| e.into_inner());
        let once = || {
            let (position, mut state) = self.load_state(store)?;
            let position = self.recover(store, position, &mut state)?;
            let position = self.common.check_backlog(store, position, &self.metrics)?;
            self.deliver_from(store, position, state)
        };
        // An I/O error (a full disk, an unmounted share coming back) is retried like a
        // receiver's transient failure; each attempt starts from the recorded state, so a
        // partial write is settled first.
        let mut attempt = 1;
        let r = loop {
            match once() {
                Err(SinkError::Io { source, .. })
                    if attempt < self.common.retry_attempts.max(1) =>
                {
                    let wait =
                        self.common
                            .retrying(attempt, None, &source.to_string(), &self.metrics);
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                r => break r,
            }
        };
        if let Err(e) = &r {
            metrics::DeliveryFailed {
                sink: &self.common.name,
                error: e,
            }
            .emit(&self.metrics);
        }
        r
    }
}

/// The NDJSON line of one stored version in the `xdrsync` schema (see [`Format::Xdrsync`]).
pub fn ndjson_line(v: &StoredVersion) -> Result<String, serde_json::Error> {
    Format::Xdrsync.to_string(v)
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
    let docs: Vec<&[u8]> = raws.iter().map(|r| r.as_bytes()).collect();
    String::from_utf8_lossy(&json_array_bytes(&docs)).into_owned()
}

fn json_array_bytes(docs: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::with_capacity(docs.iter().map(|d| d.len() + 4).sum::<usize>() + 4);
    body.push(b'[');
    for (i, d) in docs.iter().enumerate() {
        body.extend_from_slice(if i == 0 { b"\n  " } else { b",\n  " });
        body.extend_from_slice(d);
    }
    body.extend_from_slice(if docs.is_empty() { b"]\n" } else { b"\n]\n" });
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
    // A fresh, unpredictable name created exclusively (no symlink followed) and private
    // (0600) from its first byte; the rename keeps that mode.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(path);
    Ok(())
}

/// Creates `dir` (and its parents) readable by its owner only (0700).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Makes a rename in `path`'s folder durable (best effort: not every filesystem allows it).
fn sync_dir(path: &Path) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
