//! What the pulls did: per-stream outcomes for `status`, `/readyz` and `reconcile`.

use rusqlite::{OptionalExtension, params};
use xdrsync_model::{StreamKind, TenantId, Timestamp};

use crate::{PullOutcome, SqliteStore, StoreError, StreamHealth};

impl SqliteStore {
    pub(crate) fn record_outcome(
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

    pub(crate) fn health(&self) -> Result<Vec<StreamHealth>, StoreError> {
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

    pub(crate) fn latest_since_by_id(
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

    pub(crate) fn covered_from(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.health_time(tenant, stream, "covered_from")
    }

    pub(crate) fn last_success(
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
}
