//! The sinks' side of the outbox: delivery positions, their state, their health.

use rusqlite::{OptionalExtension, params};
use xdrsync_model::Timestamp;

use crate::{SinkHealth, SqliteStore, StoreError, write_transaction};

impl SqliteStore {
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
}
