//! The sinks' side of the outbox: delivery positions, their state, their health.

use rusqlite::{OptionalExtension, params};
use xdrsync_model::Timestamp;

use crate::{SinkHealth, SqliteStore, StoreError, write_transaction};

impl SqliteStore {
    pub(crate) fn sink_positions(&self) -> Result<Vec<(String, i64, String)>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn
            .prepare("SELECT sink, seq, updated_at FROM sink_positions ORDER BY sink")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    pub(crate) fn sink_position(&self, sink: &str) -> Result<i64, StoreError> {
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

    pub(crate) fn set_sink_position(&self, sink: &str, seq: i64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO sink_positions (sink, seq, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (sink) DO UPDATE SET seq = MAX(seq, excluded.seq), updated_at = excluded.updated_at",
                params![sink, seq, Timestamp::now().to_string()],
            )
            .map_err(self.err())?;
        Ok(())
    }

    pub(crate) fn sink_state(&self, sink: &str) -> Result<(i64, Option<String>), StoreError> {
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

    pub(crate) fn set_sink_state(
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

    pub(crate) fn record_sink_outcome(
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

    pub(crate) fn sink_health(&self, sink: &str) -> Result<SinkHealth, StoreError> {
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

    pub(crate) fn forget_sink(&self, sink: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn).map_err(self.err())?;
        tx.execute("DELETE FROM sink_positions WHERE sink = ?1", [sink])
            .map_err(self.err())?;
        tx.execute("DELETE FROM sink_health WHERE sink = ?1", [sink])
            .map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    pub(crate) fn rename_sink(&self, from: &str, to: &str) -> Result<(), StoreError> {
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

    pub(crate) fn has_sink(&self, sink: &str) -> Result<bool, StoreError> {
        self.read_conn()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sink_positions WHERE sink = ?1)",
                [sink],
                |r| r.get(0),
            )
            .map_err(self.err())
    }
}
