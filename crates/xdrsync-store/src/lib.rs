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

pub mod ledger;
pub use ledger::BudgetLedger;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
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
        Ok(SqliteStore {
            path,
            conn: Mutex::new(conn),
            reader: None,
        })
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

    /// The schema version.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.read_conn()
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .map_err(self.err())
    }

    /// The cursor of `(tenant, stream)`, if any pull has committed one.
    pub fn cursor(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<Timestamp>, StoreError> {
        let text: Option<String> = self
            .read_conn()
            .query_row(
                "SELECT high_water FROM cursors WHERE tenant_id = ?1 AND stream = ?2",
                params![tenant.as_str(), stream.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        text.map(|t| {
            t.parse().map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("cursor {tenant}/{}", stream.as_str()),
                message: format!("{e}"),
            })
        })
        .transpose()
    }

    /// Stores new versions and, in the same transaction, moves the cursor forward to `cursor`
    /// (never backward). Versions already stored are counted, not stored again.
    pub fn commit(
        &self,
        tenant: &TenantId,
        versions: &[NewVersion],
        cursor: Option<(StreamKind, Timestamp)>,
    ) -> Result<CommitStats, StoreError> {
        self.commit_alone(&mut self.conn(), tenant, versions, &[], cursor)
    }

    /// One request's writes in a transaction of their own.
    fn commit_alone(
        &self,
        conn: &mut Connection,
        tenant: &TenantId,
        versions: &[NewVersion],
        poison: &[PoisonRecord],
        cursor: Option<(StreamKind, Timestamp)>,
    ) -> Result<CommitStats, StoreError> {
        let tx = write_transaction(conn).map_err(self.err())?;
        let stats = self.apply(&tx, tenant, versions, poison, cursor)?;
        tx.commit().map_err(self.err())?;
        Ok(stats)
    }

    /// Commits several requests (of any tenants and streams) in **one** transaction, in order:
    /// one lock hold and one WAL sync for all of them. If the transaction fails, each request
    /// is retried in a transaction of its own, so one bad request fails alone. The results are
    /// in the order of `group`.
    pub fn commit_group(&self, group: &[CommitRequest]) -> Vec<Result<CommitStats, StoreError>> {
        let mut conn = self.conn();
        let together = (|| {
            let tx = write_transaction(&mut conn).map_err(self.err())?;
            let mut stats = Vec::with_capacity(group.len());
            for r in group {
                stats.push(self.apply(&tx, &r.tenant, &r.versions, &r.poison, r.cursor)?);
            }
            tx.commit().map_err(self.err())?;
            Ok::<_, StoreError>(stats)
        })();
        match together {
            Ok(stats) => stats.into_iter().map(Ok).collect(),
            Err(e) if group.len() == 1 => vec![Err(e)],
            Err(e) => {
                tracing::warn!(error = %e, requests = group.len(), "A group commit failed; committing its requests one by one.");
                group
                    .iter()
                    .map(|r| {
                        self.commit_alone(&mut conn, &r.tenant, &r.versions, &r.poison, r.cursor)
                    })
                    .collect()
            }
        }
    }

    /// One request's writes inside `tx`.
    fn apply(
        &self,
        tx: &rusqlite::Transaction<'_>,
        tenant: &TenantId,
        versions: &[NewVersion],
        poison: &[PoisonRecord],
        cursor: Option<(StreamKind, Timestamp)>,
    ) -> Result<CommitStats, StoreError> {
        let err = self.err();
        let now = Timestamp::now().to_string();
        if !poison.is_empty() {
            record_poison_in(tx, tenant, poison, &now).map_err(&err)?;
        }
        let mut stats = CommitStats::default();
        {
            let mut previous = tx
                .prepare_cached(
                    "SELECT seq, normalized FROM versions
                     WHERE tenant_id = ?1 AND stream = ?2 AND item_id = ?3 AND last_update < ?4
                     ORDER BY last_update DESC LIMIT 1",
                )
                .map_err(&err)?;
            let mut insert = tx
                .prepare_cached(
                    // A version already stored (re-read through the overlap) is left alone.
                    "INSERT INTO versions
                     (tenant_id, stream, item_id, last_update, event_id, change, changes, api, normalized, raw, fetched_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (tenant_id, stream, item_id, last_update) DO NOTHING",
                )
                .map_err(&err)?;
            for v in versions {
                let r = &v.record;
                debug_assert_eq!(r.tenant(), tenant);
                let stream = r.stream();
                let item = r.item_id();
                let last_update = r.last_update().to_string();
                let key = params![tenant.as_str(), stream.as_str(), item, last_update];
                let prev: Option<(i64, String)> = previous
                    .query_row(key, |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
                    .map_err(&err)?;
                let prev = match prev {
                    Some((seq, json)) => {
                        Some(
                            Record::from_json(stream, &json).map_err(|e| StoreError::Corrupt {
                                path: self.path.clone(),
                                what: format!("seq {seq}"),
                                message: e.to_string(),
                            })?,
                        )
                    }
                    None => None,
                };
                let (kind, changes) = r.classify(prev.as_ref());
                let changes_json = serde_json::to_string(&changes).unwrap_or_default();
                let inserted = insert
                    .execute(params![
                        tenant.as_str(),
                        stream.as_str(),
                        item,
                        last_update,
                        r.event_id().as_str(),
                        kind.as_str(),
                        changes_json,
                        r.api(),
                        r.to_json(),
                        v.raw,
                        now,
                    ])
                    .map_err(&err)?;
                if inserted == 0 {
                    stats.unchanged += 1;
                    continue;
                }
                match kind {
                    ChangeKind::Created => stats.created += 1,
                    ChangeKind::Updated => stats.updated += 1,
                    ChangeKind::AlertAdded => {
                        stats.updated += 1;
                        stats.alert_added += 1;
                    }
                    ChangeKind::Redirected => {
                        stats.updated += 1;
                        stats.redirected += 1;
                    }
                }
            }
        }
        if let Some((stream, high_water)) = cursor {
            tx.execute(
                "INSERT INTO cursors (tenant_id, stream, high_water, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant_id, stream) DO UPDATE SET
                    high_water = MAX(high_water, excluded.high_water), updated_at = excluded.updated_at",
                params![tenant.as_str(), stream.as_str(), high_water.to_string(), now],
            )
            .map_err(&err)?;
        }
        Ok(stats)
    }

    /// Records items that could not be read (counted again when seen again).
    pub fn record_poison(
        &self,
        tenant: &TenantId,
        items: &[PoisonRecord],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let err = self.err();
        let tx = write_transaction(&mut conn).map_err(&err)?;
        record_poison_in(&tx, tenant, items, &Timestamp::now().to_string()).map_err(&err)?;
        tx.commit().map_err(err)
    }

    /// Number of distinct poison items recorded for `tenant`.
    pub fn poison_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        self.read_conn()
            .query_row(
                "SELECT COUNT(*) FROM poison WHERE tenant_id = ?1",
                [tenant.as_str()],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// Records how a pull of `(tenant, stream)` went.
    pub fn record_outcome(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
        o: &PullOutcome,
    ) -> Result<(), StoreError> {
        let now = Timestamp::now().to_string();
        let ok = o.error.is_none();
        self.conn()
            .execute(
                "INSERT INTO stream_health (tenant_id, stream, tenant_name, last_attempt, last_success, degraded, failures, partial, covered_from)
                 VALUES (?1, ?2, ?3, ?4, CASE WHEN ?5 THEN ?4 END, ?6, CASE WHEN ?5 THEN 0 ELSE 1 END, ?7, CASE WHEN ?5 THEN ?8 END)
                 ON CONFLICT (tenant_id, stream) DO UPDATE SET
                    tenant_name = excluded.tenant_name,
                    last_attempt = excluded.last_attempt,
                    last_success = COALESCE(excluded.last_success, last_success),
                    degraded = excluded.degraded,
                    failures = CASE WHEN ?5 THEN 0 ELSE failures + 1 END,
                    partial = excluded.partial,
                    covered_from = CASE WHEN excluded.covered_from IS NULL THEN covered_from
                                        WHEN covered_from IS NULL THEN excluded.covered_from
                                        ELSE MIN(covered_from, excluded.covered_from) END",
                params![
                    tenant.as_str(),
                    stream.as_str(),
                    o.tenant_name,
                    now,
                    ok,
                    o.error,
                    o.partial,
                    o.since.map(|t| t.to_string()),
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Every (tenant, stream) that has been pulled, with its counts.
    pub fn health(&self) -> Result<Vec<StreamHealth>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn
            .prepare(
                "SELECT h.tenant_id, h.stream, h.tenant_name, h.last_attempt, h.last_success, h.degraded, h.failures, h.partial, h.covered_from,
                        c.high_water,
                        (SELECT COUNT(*) FROM versions v WHERE v.tenant_id = h.tenant_id AND v.stream = h.stream),
                        (SELECT COUNT(DISTINCT item_id) FROM versions v WHERE v.tenant_id = h.tenant_id AND v.stream = h.stream),
                        (SELECT COUNT(*) FROM poison p WHERE p.tenant_id = h.tenant_id AND p.stream = h.stream)
                 FROM stream_health h LEFT JOIN cursors c ON c.tenant_id = h.tenant_id AND c.stream = h.stream
                 ORDER BY h.tenant_name, h.stream",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                let ts = |i: usize| -> rusqlite::Result<Option<Timestamp>> {
                    Ok(r.get::<_, Option<String>>(i)?.and_then(|t| t.parse().ok()))
                };
                Ok(StreamHealth {
                    tenant_id: TenantId::canonical(&r.get::<_, String>(0)?),
                    stream: r.get(1)?,
                    tenant_name: r.get(2)?,
                    last_attempt: ts(3)?.unwrap_or_else(Timestamp::now),
                    last_success: ts(4)?,
                    degraded: r.get(5)?,
                    failures: r.get(6)?,
                    partial: r.get(7)?,
                    covered_from: ts(8)?,
                    cursor: ts(9)?,
                    versions: r.get::<_, i64>(10)? as u64,
                    items: r.get::<_, i64>(11)? as u64,
                    poison: r.get::<_, i64>(12)? as u64,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The newest stored version of each item of `(tenant, stream)` whose last update is at or
    /// after `since`: item id → last update (for `reconcile`).
    pub fn latest_since_by_id(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
        since: Timestamp,
    ) -> Result<std::collections::BTreeMap<String, Timestamp>, StoreError> {
        let rows = self.item_times(
            "SELECT item_id, MAX(last_update) FROM versions WHERE tenant_id = ?1 AND stream = ?2
             GROUP BY item_id HAVING MAX(last_update) >= ?3",
            (tenant, stream, Some(since)),
        )?;
        Ok(rows.into_iter().collect())
    }

    /// The last-update time from which the store is complete for `(tenant, stream)`.
    pub fn covered_from(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.health_time(tenant, stream, "covered_from")
    }

    /// When a pull of `(tenant, stream)` last succeeded.
    pub fn last_success(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.health_time(tenant, stream, "last_success")
    }

    /// One time column of `stream_health` (`column` is one of ours, never user input).
    fn health_time(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
        column: &str,
    ) -> Result<Option<Timestamp>, StoreError> {
        let text: Option<Option<String>> = self
            .read_conn()
            .query_row(
                &format!("SELECT {column} FROM stream_health WHERE tenant_id = ?1 AND stream = ?2"),
                params![tenant.as_str(), stream.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        Ok(text.flatten().and_then(|t| t.parse().ok()))
    }

    /// Every sink's position: `(sink, seq, updated at)`.
    pub fn sink_positions(&self) -> Result<Vec<(String, i64, String)>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn
            .prepare("SELECT sink, seq, updated_at FROM sink_positions ORDER BY sink")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The last `seq` that `sink` acknowledged (0 if none).
    pub fn sink_position(&self, sink: &str) -> Result<i64, StoreError> {
        let seq: Option<i64> = self
            .read_conn()
            .query_row(
                "SELECT seq FROM sink_positions WHERE sink = ?1",
                [sink],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        Ok(seq.unwrap_or(0))
    }

    /// Records that `sink` has delivered everything up to `seq` (never moves back).
    pub fn set_sink_position(&self, sink: &str, seq: i64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO sink_positions (sink, seq, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (sink) DO UPDATE SET seq = MAX(seq, excluded.seq), updated_at = excluded.updated_at",
                params![sink, seq, Timestamp::now().to_string()],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// A sink's position and its recovery state (see [`SqliteStore::set_sink_state`]).
    pub fn sink_state(&self, sink: &str) -> Result<(i64, Option<String>), StoreError> {
        let row: Option<(i64, Option<String>)> = self
            .read_conn()
            .query_row(
                "SELECT seq, state FROM sink_positions WHERE sink = ?1",
                [sink],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())?;
        Ok(row.unwrap_or((0, None)))
    }

    /// Records `sink`'s position (never moving it back) and replaces its recovery state in one
    /// transaction: a sink writes "about to write this" before a write and "done, position
    /// N, nothing in flight" after it, so a crash in between can be told apart on restart.
    pub fn set_sink_state(
        &self,
        sink: &str,
        seq: i64,
        state: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO sink_positions (sink, seq, updated_at, state) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (sink) DO UPDATE SET seq = MAX(seq, excluded.seq),
                     updated_at = excluded.updated_at, state = excluded.state",
                params![sink, seq, Timestamp::now().to_string(), state],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records how a delivery of `sink` went: `Ok(events)` (moved `events`, maybe none) or
    /// `Err(reason)`.
    pub fn record_sink_outcome(
        &self,
        sink: &str,
        outcome: Result<u64, &str>,
    ) -> Result<(), StoreError> {
        let now = Timestamp::now().to_string();
        let (moved, error) = match outcome {
            Ok(n) => (n > 0, None),
            Err(e) => (false, Some(e)),
        };
        self.conn()
            .execute(
                "INSERT INTO sink_health (sink, last_delivery, last_error, last_error_at, failures)
                 VALUES (?1, CASE WHEN ?2 THEN ?3 END, ?4, CASE WHEN ?4 IS NOT NULL THEN ?3 END,
                         CASE WHEN ?4 IS NOT NULL THEN 1 ELSE 0 END)
                 ON CONFLICT (sink) DO UPDATE SET
                    last_delivery = COALESCE(excluded.last_delivery, last_delivery),
                    last_error = excluded.last_error,
                    last_error_at = excluded.last_error_at,
                    failures = CASE WHEN excluded.last_error IS NOT NULL THEN failures + 1 ELSE 0 END",
                params![sink, moved, now, error],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Everything the store knows of `sink`'s deliveries (a sink that never ran is at
    /// position 0 with the whole outbox as its backlog).
    pub fn sink_health(&self, sink: &str) -> Result<SinkHealth, StoreError> {
        let conn = self.read_conn();
        let ts = |t: Option<String>| t.and_then(|t| t.parse::<Timestamp>().ok());
        let (position, updated_at): (i64, Option<String>) = conn
            .query_row(
                "SELECT seq, updated_at FROM sink_positions WHERE sink = ?1",
                [sink],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())?
            .unwrap_or((0, None));
        type Row = (Option<String>, Option<String>, Option<String>, u32);
        let row: Option<Row> = conn
            .query_row(
                "SELECT last_delivery, last_error, last_error_at, failures FROM sink_health WHERE sink = ?1",
                [sink],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(self.err())?;
        let (last_delivery, last_error, last_error_at, failures) =
            row.unwrap_or((None, None, None, 0));
        let (backlog, oldest): (i64, Option<String>) = conn
            .query_row(
                "SELECT COUNT(*), (SELECT fetched_at FROM versions WHERE seq > ?1 ORDER BY seq LIMIT 1)
                 FROM versions WHERE seq > ?1",
                [position],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.err())?;
        Ok(SinkHealth {
            sink: sink.to_owned(),
            position,
            updated_at: ts(updated_at),
            last_delivery: ts(last_delivery),
            last_error,
            last_error_at: ts(last_error_at),
            failures,
            backlog: u64::try_from(backlog).unwrap_or(0),
            oldest_undelivered: ts(oldest),
        })
    }

    /// One step of retention: among the versions with `seq` in `(from, min(upto, from +
    /// span)]`, deletes those whose last update is before `cutoff` and that are not the
    /// newest version of their item (the newest is always kept, so the current state of
    /// every incident and alert survives). Returns how many were deleted and where the next
    /// step starts. The caller passes as `upto` the lowest position of every enabled sink, so
    /// nothing undelivered is ever pruned. One short transaction per step: a pull's commits
    /// wait at most for one step.
    pub fn prune_step(
        &self,
        cutoff: Timestamp,
        from: i64,
        upto: i64,
        span: i64,
    ) -> Result<(u64, i64), StoreError> {
        let end = upto.min(from.saturating_add(span.max(1)));
        if end <= from {
            return Ok((0, from));
        }
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn).map_err(self.err())?;
        let deleted = tx
            .execute(
                "DELETE FROM versions WHERE seq IN (
                    SELECT v.seq FROM versions v
                    WHERE v.seq > ?1 AND v.seq <= ?2 AND v.last_update < ?3
                      AND EXISTS (SELECT 1 FROM versions w
                                  WHERE w.tenant_id = v.tenant_id AND w.stream = v.stream
                                    AND w.item_id = v.item_id AND w.last_update > v.last_update))",
                params![from, end, cutoff.to_string()],
            )
            .map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok((deleted as u64, end))
    }

    /// Gives up to `pages` free pages back to the file system (a store created with
    /// incremental auto-vacuum; elsewhere free pages are reused and this does nothing).
    /// Returns how many free pages remain.
    pub fn vacuum_step(&self, pages: u32) -> Result<u64, StoreError> {
        let conn = self.conn();
        {
            // Each step of the statement frees one page: run it to the end.
            let mut stmt = conn
                .prepare(&format!("PRAGMA incremental_vacuum({})", pages.max(1)))
                .map_err(self.err())?;
            let mut rows = stmt.query([]).map_err(self.err())?;
            while rows.next().map_err(self.err())?.is_some() {}
        }
        conn.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(self.err())
    }

    /// Number of stored versions.
    pub fn version_count(&self) -> Result<u64, StoreError> {
        self.read_conn()
            .query_row("SELECT COUNT(*) FROM versions", [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(self.err())
    }

    /// Forgets a sink: its position, recovery state and delivery health (a replay's own
    /// temporary sink, once it has delivered).
    pub fn forget_sink(&self, sink: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn).map_err(self.err())?;
        tx.execute("DELETE FROM sink_positions WHERE sink = ?1", [sink])
            .map_err(self.err())?;
        tx.execute("DELETE FROM sink_health WHERE sink = ?1", [sink])
            .map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    /// Renames a sink's position, recovery state and health (when `to` has none yet).
    pub fn rename_sink(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn).map_err(self.err())?;
        tx.execute(
            "UPDATE sink_positions SET sink = ?2 WHERE sink = ?1
             AND NOT EXISTS (SELECT 1 FROM sink_positions WHERE sink = ?2)",
            [from, to],
        )
        .map_err(self.err())?;
        tx.execute(
            "UPDATE sink_health SET sink = ?2 WHERE sink = ?1
             AND NOT EXISTS (SELECT 1 FROM sink_health WHERE sink = ?2)",
            [from, to],
        )
        .map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    /// Whether the store has a position for `sink`.
    pub fn has_sink(&self, sink: &str) -> Result<bool, StoreError> {
        self.read_conn()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sink_positions WHERE sink = ?1)",
                [sink],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// The store's size on disk: the database file and its WAL, in bytes.
    pub fn size_bytes(&self) -> u64 {
        ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                std::fs::metadata(p).ok().map(|m| m.len())
            })
            .sum()
    }

    /// Whether the store can take a write now: takes the write lock (waiting for another
    /// writer as a commit would) and releases it without writing.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn).map_err(self.err())?;
        tx.rollback().map_err(self.err())
    }

    /// How many versions lie past `seq`: a sink's backlog.
    pub fn count_after(&self, seq: i64) -> Result<u64, StoreError> {
        self.read_conn()
            .query_row("SELECT COUNT(*) FROM versions WHERE seq > ?1", [seq], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(self.err())
    }

    /// The `seq` after which exactly `n` versions remain (0 if there are `n` or fewer): where a
    /// sink that keeps only the newest `n` events of its backlog skips to.
    pub fn seq_before_newest(&self, n: u64) -> Result<i64, StoreError> {
        let seq: Option<i64> = self
            .read_conn()
            .query_row(
                "SELECT seq FROM versions ORDER BY seq DESC LIMIT 1 OFFSET ?1",
                [n as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        Ok(seq.unwrap_or(0))
    }

    /// Up to `limit` versions with `seq > after`, in `seq` order.
    pub fn versions_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        self.read_versions(
            "SELECT seq, event_id, stream, change, changes, normalized, raw FROM versions
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            params![after, limit as i64],
        )
    }

    /// [`SqliteStore::versions_after`] without the raw JSON (`raw` is empty), for sinks that
    /// deliver the normalized record only: a third of the bytes.
    pub fn versions_after_without_raw(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        self.read_versions(
            "SELECT seq, event_id, stream, change, changes, normalized, '' FROM versions
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            params![after, limit as i64],
        )
    }

    /// Runs `sql` (one of ours, selecting `seq, event_id, stream, change, changes, normalized,
    /// raw`) and decodes its rows.
    fn read_versions(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(sql).map_err(self.err())?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, event_id, stream, change, changes, normalized, raw) =
                row.map_err(self.err())?;
            let corrupt = |message: String| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("seq {seq}"),
                message,
            };
            let stream = StreamKind::parse(&stream)
                .ok_or_else(|| corrupt(format!("unknown stream {stream:?}")))?;
            let record =
                Record::from_json(stream, &normalized).map_err(|e| corrupt(e.to_string()))?;
            let change = ChangeKind::parse(&change)
                .ok_or_else(|| corrupt(format!("unknown change kind {change:?}")))?;
            let changes = serde_json::from_str(&changes).map_err(|e| corrupt(e.to_string()))?;
            out.push(StoredVersion {
                seq,
                event_id,
                stream,
                change,
                changes,
                record,
                raw,
                tenant_name: None,
                replay: false,
            });
        }
        Ok(out)
    }

    /// The highest `seq` stored (0 if empty).
    pub fn last_seq(&self) -> Result<i64, StoreError> {
        self.read_conn()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM versions", [], |r| {
                r.get(0)
            })
            .map_err(self.err())
    }

    /// The newest stored version of every incident whose last update is at or after `since`,
    /// newest first: the Hello World's "incidents last updated within the past 48 hours".
    pub fn latest_since(&self, since: Timestamp) -> Result<Vec<StoredVersion>, StoreError> {
        // One query, not one per incident.
        self.read_versions(
            "SELECT v.seq, v.event_id, v.stream, v.change, v.changes, v.normalized, v.raw
             FROM versions v
             WHERE v.stream = 'incidents' AND v.last_update >= ?1
               AND v.last_update = (SELECT MAX(w.last_update) FROM versions w
                                    WHERE w.tenant_id = v.tenant_id AND w.stream = v.stream
                                      AND w.item_id = v.item_id)
             ORDER BY v.last_update DESC, v.seq DESC",
            [since.to_string()],
        )
    }

    /// Every stored version key of `(tenant, stream)` as `(item id, last update)`, sorted.
    pub fn version_keys(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Vec<(String, Timestamp)>, StoreError> {
        self.item_times(
            "SELECT item_id, last_update FROM versions WHERE tenant_id = ?1 AND stream = ?2
             ORDER BY item_id, last_update",
            (tenant, stream, None),
        )
    }

    /// Runs `sql` (one of ours) over `?1` tenant, `?2` stream and, if given, `?3` a time, and
    /// reads its `(item id, time)` rows.
    fn item_times(
        &self,
        sql: &str,
        (tenant, stream, time): (&TenantId, StreamKind, Option<Timestamp>),
    ) -> Result<Vec<(String, Timestamp)>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(sql).map_err(self.err())?;
        let mut args = vec![tenant.as_str().to_owned(), stream.as_str().to_owned()];
        args.extend(time.map(|t| t.to_string()));
        let rows = stmt
            .query_map(rusqlite::params_from_iter(&args), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (id, t) = row.map_err(self.err())?;
            let t = t.parse().map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("{stream} {id}"),
                message: format!("{e}"),
            })?;
            out.push((id, t));
        }
        Ok(out)
    }
}

fn record_poison_in(
    tx: &rusqlite::Transaction<'_>,
    tenant: &TenantId,
    items: &[PoisonRecord],
    now: &str,
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO poison (tenant_id, raw_hash, incident_id, reason, raw, first_seen, last_seen, times_seen, stream)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 1, ?7)
         ON CONFLICT (tenant_id, raw_hash) DO UPDATE SET last_seen = excluded.last_seen, times_seen = times_seen + 1",
    )?;
    for p in items {
        let hash = format!("{:x}", fxhash(p.raw.as_bytes()));
        insert.execute(params![
            tenant.as_str(),
            hash,
            p.item_id,
            p.reason,
            p.raw,
            now,
            p.stream.as_str()
        ])?;
    }
    Ok(())
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
mod tests;
