//! Retention: pruning old versions in short steps and giving the space back.

use rusqlite::params;
use xdrsync_model::Timestamp;

use crate::{SqliteStore, StoreError, write_transaction};

impl SqliteStore {
    pub(crate) fn prune_step(
        &self,
        cutoff: Timestamp,
        from: i64,
        upto: i64,
        span: i64,
    ) -> Result<(u64, i64), StoreError> {
        let Some(end) = step_end(from, upto, span) else {
            return Ok((0, from));
        };
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

    pub(crate) fn vacuum_step(&self, pages: u32) -> Result<u64, StoreError> {
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

    pub(crate) fn version_count(&self) -> Result<u64, StoreError> {
        self.read_conn()
            .query_row("SELECT COUNT(*) FROM versions", [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(self.err())
    }

    pub(crate) fn checkpoint(&self) {
        if let Err(e) = self
            .conn()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                std::fs::metadata(p).ok().map(|m| m.len())
            })
            .sum()
    }
}

/// Where a prune step starting after `from` ends: `span` versions on, never past `upto` (the
/// lowest position of the enabled sinks); `None` when there is nothing to look at.
pub(crate) fn step_end(from: i64, upto: i64, span: i64) -> Option<i64> {
    let end = upto.min(from.saturating_add(span.max(1)));
    (end > from).then_some(end)
}
