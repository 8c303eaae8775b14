//! Reading versions back: for sinks (past a position), `incidents list`, reconcile.

use rusqlite::{OptionalExtension, params};
use xdrsync_model::{ChangeKind, Record, StreamKind, TenantId, Timestamp};

use crate::{SqliteStore, StoreError, StoredVersion};

impl SqliteStore {
    pub(crate) fn count_after(&self, seq: i64) -> Result<u64, StoreError> {
        self.read_conn()
            .query_row("SELECT COUNT(*) FROM versions WHERE seq > ?1", [seq], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(self.err())
    }

    pub(crate) fn seq_before_newest(&self, n: u64) -> Result<i64, StoreError> {
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

    pub(crate) fn versions_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        self.read_versions(
            "SELECT seq, event_id, stream, change, changes, normalized, raw, origin FROM versions
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            params![after, limit as i64],
        )
    }

    pub(crate) fn versions_after_without_raw(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        self.read_versions(
            "SELECT seq, event_id, stream, change, changes, normalized, '', origin FROM versions
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            params![after, limit as i64],
        )
    }

    /// Runs `sql` (one of ours, selecting `seq, event_id, stream, change, changes, normalized,
    /// raw, origin`) and decodes its rows.
    pub(crate) fn read_versions(
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
                    r.get::<_, rusqlite::types::Value>(5)?,
                    r.get::<_, rusqlite::types::Value>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        drop(stmt);
        let decode = |stored: &rusqlite::types::Value| {
            crate::payload::decode(stored.into(), |id| self.dictionaries().get(id, &conn))
        };
        let mut out = Vec::with_capacity(rows.len());
        for (seq, event_id, stream, change, changes, normalized, raw, origin) in rows {
            let (normalized, raw) = (decode(&normalized), decode(&raw));
            let corrupt = |message: String| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("seq {seq}"),
                message,
            };
            let stream = StreamKind::parse(&stream)
                .ok_or_else(|| corrupt(format!("unknown stream {stream:?}")))?;
            let normalized = normalized.map_err(|e| corrupt(format!("normalized JSON: {e}")))?;
            let raw = raw.map_err(|e| corrupt(format!("raw JSON: {e}")))?;
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
                origin_action: origin,
            });
        }
        Ok(out)
    }

    pub(crate) fn last_seq(&self) -> Result<i64, StoreError> {
        self.read_conn()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM versions", [], |r| {
                r.get(0)
            })
            .map_err(self.err())
    }

    pub(crate) fn latest_since(&self, since: Timestamp) -> Result<Vec<StoredVersion>, StoreError> {
        // One query, not one per incident.
        self.read_versions(
            "SELECT v.seq, v.event_id, v.stream, v.change, v.changes, v.normalized, v.raw, v.origin
             FROM versions v
             WHERE v.stream = 'incidents' AND v.last_update >= ?1
               AND v.last_update = (SELECT MAX(w.last_update) FROM versions w
                                    WHERE w.tenant_id = v.tenant_id AND w.stream = v.stream
                                      AND w.item_id = v.item_id)
             ORDER BY v.last_update DESC, v.seq DESC",
            [since.to_string()],
        )
    }

    pub(crate) fn version_keys(
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
    pub(crate) fn item_times(
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
