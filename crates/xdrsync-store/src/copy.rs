//! What `xdrsync store copy` moves between backends: every version with its own `seq` and
//! event id, and every row of the small tables (cursors, sink positions, poison, health, the
//! write-back audit, hunt runs), so that a single-machine install becomes a cluster's store
//! without losing or repeating anything: each sink resumes from the same position.
//!
//! Payloads travel as their text and are compressed again by the target (with its own
//! dictionary); everything else as text, which each backend converts to its column's type.

use rusqlite::params_from_iter;

use crate::{SqliteStore, StoreError, write_transaction};

/// One stored version, every column as it is kept (payloads decoded).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedVersion {
    /// Its delivery position, kept by the copy.
    pub seq: i64,
    /// The tenant.
    pub tenant_id: String,
    /// The stream.
    pub stream: String,
    /// The incident, alert or detection id.
    pub item_id: String,
    /// Its last-update time as stored.
    pub last_update: String,
    /// The stable event id.
    pub event_id: String,
    /// The change kind.
    pub change: String,
    /// What changed (JSON).
    pub changes: String,
    /// The API it came from.
    pub api: String,
    /// The normalized record (JSON).
    pub normalized: String,
    /// The API's JSON as received.
    pub raw: String,
    /// When it was stored.
    pub fetched_at: String,
    /// The write-back action that produced it.
    pub origin: Option<String>,
}

/// Every row of one small table, each column as text (`None`: NULL), in [`TABLES`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedTable {
    /// The table.
    pub name: &'static str,
    /// Its rows.
    pub rows: Vec<Vec<Option<String>>>,
}

/// The small tables `store copy` moves, with the columns both backends have.
pub const TABLES: &[(&str, &[&str])] = &[
    (
        "cursors",
        &["tenant_id", "stream", "high_water", "updated_at"],
    ),
    ("sink_positions", &["sink", "seq", "updated_at", "state"]),
    (
        "poison",
        &[
            "tenant_id",
            "raw_hash",
            "incident_id",
            "reason",
            "raw",
            "first_seen",
            "last_seen",
            "times_seen",
            "stream",
        ],
    ),
    (
        "stream_health",
        &[
            "tenant_id",
            "stream",
            "tenant_name",
            "last_attempt",
            "last_success",
            "degraded",
            "failures",
            "partial",
            "covered_from",
        ],
    ),
    (
        "sink_health",
        &[
            "sink",
            "last_delivery",
            "last_error",
            "last_error_at",
            "failures",
        ],
    ),
    (
        "actions",
        &[
            "id",
            "created_at",
            "actor",
            "tenant_id",
            "tenant_name",
            "target",
            "item_id",
            "request",
            "outcome",
            "answer",
            "produced",
        ],
    ),
    (
        "hunt_runs",
        &[
            "hunt",
            "tenant_id",
            "started_at",
            "finished_at",
            "rows",
            "new_rows",
            "truncated",
            "error",
            "last_success",
        ],
    ),
];

/// The columns of `versions` in [`ExportedVersion`] order.
pub(crate) const VERSION_COLUMNS: &str = "seq, tenant_id, stream, item_id, last_update, event_id, change, changes, api, normalized, raw, fetched_at, origin";

impl SqliteStore {
    pub(crate) fn export_versions(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ExportedVersion>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))
            .map_err(self.err())?;
        let rows = stmt
            .query_map(rusqlite::params![after, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    [
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, String>(7)?,
                        r.get::<_, String>(8)?,
                    ],
                    r.get::<_, rusqlite::types::Value>(9)?,
                    r.get::<_, rusqlite::types::Value>(10)?,
                    r.get::<_, String>(11)?,
                    r.get::<_, Option<String>>(12)?,
                ))
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        drop(stmt);
        let mut out = Vec::with_capacity(rows.len());
        for (
            seq,
            [
                tenant_id,
                stream,
                item_id,
                last_update,
                event_id,
                change,
                changes,
                api,
            ],
            n,
            r,
            fetched_at,
            origin,
        ) in rows
        {
            let decode = |stored: &rusqlite::types::Value, what: &str| {
                crate::payload::decode(stored.into(), |id| self.dictionaries().get(id, &conn))
                    .map_err(|message| StoreError::Corrupt {
                        path: self.path().to_owned(),
                        what: format!("seq {seq} ({what})"),
                        message,
                    })
            };
            out.push(ExportedVersion {
                normalized: decode(&n, "normalized")?,
                raw: decode(&r, "raw")?,
                seq,
                tenant_id,
                stream,
                item_id,
                last_update,
                event_id,
                change,
                changes,
                api,
                fetched_at,
                origin,
            });
        }
        Ok(out)
    }

    pub(crate) fn import_versions(&self, rows: &[ExportedVersion]) -> Result<(), StoreError> {
        let dictionary = self.dictionaries().current();
        let encoded: Vec<_> = rows
            .iter()
            .map(|v| {
                let e = crate::payload::encode_version(
                    &self.dictionaries,
                    dictionary.as_ref(),
                    &v.normalized,
                    &v.raw,
                );
                (e.stored_normalized, e.stored_raw)
            })
            .collect();
        let mut conn = self.conn();
        self.train_dictionary(&mut conn);
        let tx = write_transaction(&mut conn).map_err(self.err())?;
        {
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT INTO versions ({VERSION_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ))
                .map_err(self.err())?;
            for (v, (n, r)) in rows.iter().zip(encoded) {
                insert
                    .execute(rusqlite::params![
                        v.seq,
                        v.tenant_id,
                        v.stream,
                        v.item_id,
                        v.last_update,
                        v.event_id,
                        v.change,
                        v.changes,
                        v.api,
                        n,
                        r,
                        v.fetched_at,
                        v.origin
                    ])
                    .map_err(self.err())?;
            }
        }
        tx.commit().map_err(self.err())
    }

    pub(crate) fn export_tables(&self) -> Result<Vec<ExportedTable>, StoreError> {
        let conn = self.read_conn();
        let mut out = Vec::with_capacity(TABLES.len());
        for (name, columns) in TABLES {
            let select = columns
                .iter()
                .map(|c| format!("CAST({c} AS TEXT)"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut stmt = conn
                .prepare(&format!("SELECT {select} FROM {name} ORDER BY rowid"))
                .map_err(self.err())?;
            let rows = stmt
                .query_map([], |r| {
                    (0..columns.len())
                        .map(|i| r.get::<_, Option<String>>(i))
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(self.err())?
                .collect::<Result<Vec<_>, _>>()
                .map_err(self.err())?;
            out.push(ExportedTable { name, rows });
        }
        Ok(out)
    }

    pub(crate) fn import_tables(&self, tables: &[ExportedTable]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn).map_err(self.err())?;
        for table in tables {
            let Some((name, columns)) = TABLES.iter().find(|(n, _)| *n == table.name) else {
                continue;
            };
            let marks = (1..=columns.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            // SQLite's column affinity turns the text of a number back into the number.
            let mut insert = tx
                .prepare(&format!(
                    "INSERT INTO {name} ({}) VALUES ({marks})",
                    columns.join(", ")
                ))
                .map_err(self.err())?;
            for row in &table.rows {
                insert.execute(params_from_iter(row)).map_err(self.err())?;
            }
        }
        tx.commit().map_err(self.err())
    }
}

/// What [`copy`] moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Versions.
    pub versions: u64,
    /// Rows of the small tables.
    pub rows: u64,
}

/// Moves everything `from` holds into `to`, which must be empty (no versions, no sink
/// positions: copying into a store in use would mix two histories). Versions go in batches of
/// `batch`, each batch one transaction; `progress` hears the versions copied so far. Checks at
/// the end that `to` holds as many versions, up to the same `seq`.
pub fn copy(
    from: &dyn crate::Store,
    to: &dyn crate::Store,
    batch: usize,
    mut progress: impl FnMut(u64),
) -> Result<Copied, StoreError> {
    if to.last_seq()? > 0 || !to.sink_positions()?.is_empty() {
        return Err(StoreError::NotEmpty {
            location: to.location(),
        });
    }
    let mut copied = Copied::default();
    let mut after = 0;
    loop {
        let rows = from.export_versions(after, batch.max(1))?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        to.import_versions(&rows)?;
        copied.versions += rows.len() as u64;
        progress(copied.versions);
    }
    let tables = from.export_tables()?;
    copied.rows = tables.iter().map(|t| t.rows.len() as u64).sum();
    to.import_tables(&tables)?;
    let (want, got) = (from.version_count()?, to.version_count()?);
    if want != got || from.last_seq()? != to.last_seq()? {
        return Err(StoreError::CopyMismatch {
            location: to.location(),
            message: format!("{got} versions arrived of {want}"),
        });
    }
    Ok(copied)
}
