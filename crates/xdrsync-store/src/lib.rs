//! The durable store: versions of incidents, alerts and detections, cursors and sink delivery
//! positions.
//!
//! It is the outbox of the sync. A pull writes new versions and advances the stream's
//! cursor **in one transaction**, so a crash can never leave a cursor ahead of the data it
//! covers. Each sink keeps its own delivery position (the last `seq` it acknowledged), so a sink
//! that is down holds back nothing but itself, and a restart resumes each sink where it stopped.
//!
//! The embedded default is SQLite in WAL mode with `synchronous = FULL`: a committed transaction
//! survives a process kill and a power cut. Migrations are forward-only and each runs in its own
//! transaction; a database written by a newer xdrsync is refused rather than misread.

mod actions;
mod backend;
pub mod cluster;
mod commit;
pub mod copy;
mod health;
mod hunts;
pub mod ledger;
mod payload;
mod positions;
pub mod postgres;
mod read;
mod retention;

pub use actions::{ActionOutcome, ActionRecord};
pub use backend::Store;
pub use cluster::{Cluster, Held, Lease, LeaseRow, SinkLease, WorkerRow};
pub use hunts::HuntRun;
pub use ledger::{BudgetLedger, Ledger};

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, params};
use xdrsync_model::{ChangeKind, Changes, Record, StreamKind, TenantId, Timestamp};

/// Forward-only migrations, in order; the schema version is the number applied.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        "0002_change_events",
        include_str!("../migrations/sqlite/0002_change_events.sql"),
    ),
    (
        "0003_streams",
        include_str!("../migrations/sqlite/0003_streams.sql"),
    ),
    (
        "0004_sink_state",
        include_str!("../migrations/sqlite/0004_sink_state.sql"),
    ),
    (
        "0005_sink_health",
        include_str!("../migrations/sqlite/0005_sink_health.sql"),
    ),
    (
        "0006_actions",
        include_str!("../migrations/sqlite/0006_actions.sql"),
    ),
    (
        "0007_hunts",
        include_str!("../migrations/sqlite/0007_hunts.sql"),
    ),
    (
        "0008_dictionaries",
        include_str!("../migrations/sqlite/0008_dictionaries.sql"),
    ),
];

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer xdrsync.
    #[error(
        "store {path} has schema version {found}, newer than this xdrsync understands ({known}); upgrade xdrsync"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// A commit made under a lease that has moved on: another worker holds it now.
    #[error(
        "store {location}: the lease of {tenant} {stream} moved on (this worker's generation {generation} is stale); the commit is refused"
    )]
    Fenced {
        /// The store.
        location: String,
        /// The tenant.
        tenant: String,
        /// The stream.
        stream: String,
        /// The stale generation.
        generation: i64,
    },
    /// A sink position written by a worker that does not hold the sink's delivery lease (it
    /// expired while the worker was paused, or another worker took it over).
    #[error(
        "store {location}: this worker does not hold the delivery lease of sink {sink} (another worker delivers it now); its position is not moved"
    )]
    SinkFenced {
        /// The store.
        location: String,
        /// The sink.
        sink: String,
    },
    /// `store copy` into a store that already holds versions or sink positions.
    #[error(
        "store {location} is not empty: `store copy` only fills a new store (drop its tables or use another database)"
    )]
    NotEmpty {
        /// The target store.
        location: String,
    },
    /// `store copy` ended with the target not holding what the source holds.
    #[error("store {location}: the copy is incomplete: {message}")]
    CopyMismatch {
        /// The target store.
        location: String,
        /// What differs.
        message: String,
    },
    /// PostgreSQL failed (or could not be reached).
    #[error("store {location}: {message}")]
    Postgres {
        /// The database's address, without its password.
        location: String,
        /// What went wrong, with the server's detail.
        message: String,
    },
    /// The thread that writes the store stopped (it panicked); nothing more can be stored.
    #[error("{0}")]
    WriterStopped(String),
    /// A stored row could not be decoded.
    #[error("store {path}: corrupt row {what}: {message}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Which row.
        what: String,
        /// What is wrong.
        message: String,
    },
}

/// One version (of an incident, alert or detection) to store.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// The normalized record.
    pub record: Record,
    /// The API's JSON as received.
    pub raw: String,
}

/// A request's payloads compressed ahead of its commit ([`SqliteStore::encode`]), on the
/// caller's thread: the writer thread is where every write is serialized, and compressing there
/// made it the pull's critical path (bench-pull). Made with the dictionary current then; if the
/// store trained a newer one by the time of the commit, the commit compresses again itself.
#[derive(Debug, Default)]
pub struct Encoded {
    dictionary: u32,
    items: Vec<EncodedVersion>,
}

#[derive(Debug)]
struct EncodedVersion {
    stored_normalized: rusqlite::types::Value,
    stored_raw: rusqlite::types::Value,
}

/// One (tenant, stream)'s share of a group commit ([`SqliteStore::commit_group`]).
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// The tenant whose versions these are.
    pub tenant: TenantId,
    /// New versions (already stored ones are counted, not stored again).
    pub versions: Vec<NewVersion>,
    /// Items that could not be read, recorded in the same transaction.
    pub poison: Vec<PoisonRecord>,
    /// The stream's cursor to move forward to, in the same transaction.
    pub cursor: Option<(StreamKind, Timestamp)>,
    /// The lease this commit is made under (a cluster worker's): the commit is refused, in its
    /// own transaction, once the lease has moved on. `None` on one machine; the SQLite store
    /// has one writer and no leases, and does not look at it.
    pub fence: Option<Fence>,
}

/// A worker's lease of one (tenant, stream), as a commit names it (see [`CommitRequest::fence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The worker holding the lease.
    pub worker: String,
    /// The stream leased (with the request's tenant).
    pub stream: StreamKind,
    /// The lease's generation when the worker took it.
    pub generation: i64,
}

/// What a commit did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    /// Versions of items the store had never seen.
    pub created: u64,
    /// New versions of items it already had (of any later kind: updated, alert added,
    /// redirected).
    pub updated: u64,
    /// Versions it already had (re-read through the overlap window or a re-run).
    pub unchanged: u64,
    /// Of `updated`: versions that added alerts.
    pub alert_added: u64,
    /// Of `updated`: versions that merged the incident into another one.
    pub redirected: u64,
}

impl CommitStats {
    /// Counts one stored version of `kind` (an added alert and a redirect are updates too).
    pub(crate) fn count(&mut self, kind: ChangeKind) {
        match kind {
            ChangeKind::Created => self.created += 1,
            ChangeKind::Updated => self.updated += 1,
            ChangeKind::AlertAdded => {
                self.updated += 1;
                self.alert_added += 1;
            }
            ChangeKind::Redirected => {
                self.updated += 1;
                self.redirected += 1;
            }
        }
    }
}

impl std::ops::AddAssign for CommitStats {
    fn add_assign(&mut self, o: Self) {
        self.created += o.created;
        self.updated += o.updated;
        self.unchanged += o.unchanged;
        self.alert_added += o.alert_added;
        self.redirected += o.redirected;
    }
}

/// A stored version, as sinks read it.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    /// Delivery order.
    pub seq: i64,
    /// Stable event id.
    pub event_id: String,
    /// The stream it belongs to.
    pub stream: StreamKind,
    /// What kind of change this version is.
    pub change: ChangeKind,
    /// What it changed, compared with the version before it.
    pub changes: Changes,
    /// The normalized record.
    pub record: Record,
    /// The API's JSON as received.
    pub raw: String,
    /// The tenant's configured name. The store does not know names (a renamed tenant keeps
    /// its versions): sinks fill it from the config as they read.
    pub tenant_name: Option<String>,
    /// Sent again by `xdrsync replay` (the documents say so); false as stored.
    pub replay: bool,
    /// The action of ours whose write produced this version (`None`: pulled from Defender):
    /// sinks put it in the event so a mirroring SOAR can drop its own echoes.
    pub origin_action: Option<String>,
}

/// An item the API returned that could not be read.
#[derive(Debug, Clone)]
pub struct PoisonRecord {
    /// The stream it was read for.
    pub stream: StreamKind,
    /// The item's id, if known.
    pub item_id: Option<String>,
    /// Why it was rejected.
    pub reason: String,
    /// The raw JSON.
    pub raw: String,
}

/// The outcome of one pull of one (tenant, stream), for `xdrsync status`.
#[derive(Debug, Clone, Default)]
pub struct PullOutcome {
    /// The tenant's name in the config.
    pub tenant_name: String,
    /// Why it failed, in plain words (`None`: it succeeded).
    pub error: Option<String>,
    /// The last `Warning` header of a partial (206) answer.
    pub partial: Option<String>,
    /// Where the pull started reading (last-update time).
    pub since: Option<Timestamp>,
}

/// One row of `xdrsync status`.
#[derive(Debug, Clone)]
pub struct StreamHealth {
    /// Tenant id.
    pub tenant_id: TenantId,
    /// Stream name.
    pub stream: String,
    /// Tenant name when last pulled.
    pub tenant_name: String,
    /// The last pull attempt.
    pub last_attempt: Timestamp,
    /// The last successful pull.
    pub last_success: Option<Timestamp>,
    /// Why the tenant is degraded (the last pull failed), if it is.
    pub degraded: Option<String>,
    /// Pulls failed in a row.
    pub failures: u32,
    /// The cursor (newest last-update time stored).
    pub cursor: Option<Timestamp>,
    /// Versions stored for the tenant's stream, all time.
    pub versions: u64,
    /// Distinct items (incidents, alerts, detections) stored.
    pub items: u64,
    /// Unreadable items recorded.
    pub poison: u64,
    /// The last partial (206) warning, if the last pull had one.
    pub partial: Option<String>,
    /// The store is complete from this last-update time on.
    pub covered_from: Option<Timestamp>,
}

/// What the store knows of one sink's deliveries, for `status`, `/metrics` and `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct SinkHealth {
    /// The sink's name.
    pub sink: String,
    /// The last `seq` it acknowledged (0: never delivered).
    pub position: i64,
    /// When its position last moved or was written (`None`: never).
    pub updated_at: Option<Timestamp>,
    /// When a delivery last moved events (`None`: never).
    pub last_delivery: Option<Timestamp>,
    /// The error of the last delivery, if it failed.
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_at: Option<Timestamp>,
    /// Deliveries failed in a row.
    pub failures: u32,
    /// Versions past its position (counted: `seq` has gaps).
    pub backlog: u64,
    /// When the oldest version it has not delivered was stored (`None`: nothing waiting).
    pub oldest_undelivered: Option<Timestamp>,
}

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// The one writing connection; every write is a short transaction, so a mutex is all the
    /// concurrency control needed.
    conn: Mutex<Connection>,
    /// A second, read-only connection for the reads sinks and `status` make while a pull
    /// writes (WAL lets it read the last committed state without waiting for the writer).
    /// `None` in memory, where a second connection would see another database.
    reader: Option<Mutex<Connection>>,
    /// The payloads' compression dictionaries (see [`payload`]).
    dictionaries: Mutex<payload::Dictionaries>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        create_private(path);
        let err = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        // First, so that even switching to WAL waits for another process's lock.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // A new store gives the pages retention frees back to the file system a little at a
        // time (see `SqliteStore::vacuum_step`); on an existing one this is a no-op and freed
        // pages are reused by later versions.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        let mut store = Self::init(path.to_owned(), conn)?;
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        store.reader = Some(Mutex::new(reader));
        Ok(store)
    }

    /// An in-memory store, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        Self::init(path, conn)
    }

    fn init(path: PathBuf, mut conn: Connection) -> Result<Self, StoreError> {
        migrate(&path, &mut conn)?;
        let dictionaries =
            payload::Dictionaries::load(&conn).map_err(|source| StoreError::Sqlite {
                path: path.clone(),
                source,
            })?;
        Ok(SqliteStore {
            path,
            conn: Mutex::new(conn),
            reader: None,
            dictionaries: Mutex::new(dictionaries),
        })
    }

    /// The payloads' dictionaries (a poisoned lock is taken over: it holds no invariant a
    /// panic could break).
    fn dictionaries(&self) -> std::sync::MutexGuard<'_, payload::Dictionaries> {
        self.dictionaries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection for reads that need not see the writer's open transaction.
    fn read_conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        match &self.reader {
            Some(r) => r.lock().unwrap_or_else(|e| e.into_inner()),
            None => self.conn(),
        }
    }

    pub(crate) fn schema_version(&self) -> Result<i64, StoreError> {
        self.read_conn()
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .map_err(self.err())
    }

    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn).map_err(self.err())?;
        tx.rollback().map_err(self.err())
    }
}

/// Creates `path`'s folder (0700) and an empty `path` (0600) when they do not exist, so the
/// store, and the WAL and shared-memory files SQLite gives the same mode, are private from
/// their first byte. An existing file keeps its mode.
pub(crate) fn create_private(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        let _ = b.create(parent);
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let _ = options.open(path);
}

/// How long a statement waits for another connection's (or process's) write lock before it
/// fails with "database is locked". Every write transaction here is short (a group of pages,
/// a position, an outcome), so a wait this long means something is wrong, not busy.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A transaction that takes the write lock when it begins (`BEGIN IMMEDIATE`). A deferred
/// transaction that reads first and writes later cannot wait for the lock when another
/// process (a `backfill` beside `run`) committed in between: SQLite fails it at once with
/// "database is locked" instead of calling the busy handler. Taking the lock up front makes
/// every writer wait its turn under [`BUSY_TIMEOUT`].
fn write_transaction(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

fn migrate(path: &Path, conn: &mut Connection) -> Result<(), StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)", [])
        .map_err(err)?;
    let known = MIGRATIONS.len() as i64;
    // Each migration reads the version and applies the next step under the write lock, so two
    // processes opening a new store at once (a `backfill` beside a `pull`) apply each step
    // once: the second waits, then finds it done.
    loop {
        let tx = write_transaction(conn).map_err(err)?;
        let current: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if current > known {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: current,
                known,
            });
        }
        let Some((name, sql)) = usize::try_from(current)
            .ok()
            .and_then(|c| MIGRATIONS.get(c))
        else {
            break;
        };
        tx.execute_batch(sql).map_err(err)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            params![current + 1, Timestamp::now().to_string()],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::info!(migration = name, "Applied store migration.");
    }
    Ok(())
}

/// FNV-1a: a stable, dependency-free hash to key poison items by content.
fn fxhash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01B3)
    })
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;
