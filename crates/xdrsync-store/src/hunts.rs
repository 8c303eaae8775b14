//! Scheduled hunts' runs: when each (hunt, tenant) last ran and how it went, so `run` knows
//! when a hunt is due again (across restarts) and `status` can show it. The rows a run found
//! are versions of the `hunts` stream, committed like any page before the run is recorded: a
//! crash in between only runs the hunt again, and its rows are found already stored.

use rusqlite::params;
use xdrsync_model::{TenantId, Timestamp};

use crate::{SqliteStore, StoreError};

/// One run of a hunt in one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuntRun {
    /// The hunt's configured name.
    pub hunt: String,
    /// The tenant it ran in.
    pub tenant_id: TenantId,
    /// When the run started (the next is due `interval` after it).
    pub started_at: Timestamp,
    /// When it finished.
    pub finished_at: Timestamp,
    /// Rows the query returned.
    pub rows: u64,
    /// Of them, rows no earlier run had returned (stored and delivered).
    pub new_rows: u64,
    /// The service stopped at its row limit: there may be more.
    pub truncated: bool,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The last run that succeeded (kept across failures).
    pub last_success: Option<Timestamp>,
}

impl SqliteStore {
    pub(crate) fn record_hunt_run(&self, run: &HuntRun) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO hunt_runs (hunt, tenant_id, started_at, finished_at, rows, new_rows, truncated, error, last_success)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, CASE WHEN ?8 IS NULL THEN ?4 END)
                 ON CONFLICT (hunt, tenant_id) DO UPDATE SET
                    started_at = excluded.started_at, finished_at = excluded.finished_at,
                    rows = excluded.rows, new_rows = excluded.new_rows,
                    truncated = excluded.truncated, error = excluded.error,
                    last_success = COALESCE(excluded.last_success, last_success)",
                params![
                    run.hunt,
                    run.tenant_id.as_str(),
                    run.started_at.to_string(),
                    run.finished_at.to_string(),
                    i64::try_from(run.rows).unwrap_or(i64::MAX),
                    i64::try_from(run.new_rows).unwrap_or(i64::MAX),
                    run.truncated,
                    run.error,
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    pub(crate) fn hunt_runs(&self) -> Result<Vec<HuntRun>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn
            .prepare(
                "SELECT hunt, tenant_id, started_at, finished_at, rows, new_rows, truncated, error, last_success
                 FROM hunt_runs ORDER BY hunt, tenant_id",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, bool>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (hunt, tenant, started, finished, n, new, truncated, error, success) =
                row.map_err(self.err())?;
            out.push(HuntRun {
                hunt,
                tenant_id: TenantId::new(tenant),
                started_at: self.parse_time(&started, "hunt_runs.started_at")?,
                finished_at: self.parse_time(&finished, "hunt_runs.finished_at")?,
                rows: u64::try_from(n).unwrap_or(0),
                new_rows: u64::try_from(new).unwrap_or(0),
                truncated,
                error,
                last_success: success
                    .map(|t| self.parse_time(&t, "hunt_runs.last_success"))
                    .transpose()?,
            });
        }
        Ok(out)
    }

    fn parse_time(&self, text: &str, what: &str) -> Result<Timestamp, StoreError> {
        text.parse().map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            what: what.to_owned(),
            message: format!("{e}"),
        })
    }
}
