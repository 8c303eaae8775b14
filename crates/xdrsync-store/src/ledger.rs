//! The rate-budget ledger: the API calls every xdrsync process on this store has made, so that
//! all of them pace inside one Microsoft quota.
//!
//! Microsoft counts calls per (app, tenant, API), whichever process makes them. A `backfill`
//! started beside `run` (or right after a `pull`) that only knew its own calls would overrun the
//! quota and meet a 429 with a long `Retry-After`. Each process records the time of every call
//! it counts here and reads the others' calls (and any 429 pause) before it sends.
//!
//! The ledger is its own SQLite file beside the store (`<store>-budget`), not a table of the
//! store: it is written on every API call, and sharing the store's single write lock would make
//! API calls wait for the pipeline's group commits. It needs no durability either (a lost
//! ledger only forgets calls older than a quota window soon anyway), so it is written with
//! `synchronous = OFF`. Times are wall-clock milliseconds: processes share no monotonic clock.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, params};

use crate::StoreError;

/// A ledger every process on one store shares (see the module docs and
/// `xdrsync_api_client::budget::SharedLedger`, which the pipeline builds on it): the SQLite
/// store's file beside it ([`BudgetLedger`]), or tables of the PostgreSQL store that every
/// worker of a cluster shares, so a tenant's budget follows its lease.
pub trait Ledger: Send + Sync + std::fmt::Debug {
    /// Reserves a call of `key` at `at_ms`; its row id orders it among every process's calls.
    fn reserve(&self, key: &str, at_ms: i64) -> Result<i64, StoreError>;
    /// Gives back a reservation that did not fit.
    fn withdraw(&self, row: i64) -> Result<(), StoreError>;
    /// The call of `row` now counts from `to_ms`.
    fn moved(&self, row: i64, to_ms: i64) -> Result<(), StoreError>;
    /// Other processes' calls of `key` at or after `since_ms` (written before row `before`,
    /// when given), and the latest pause of `key`.
    fn others(
        &self,
        key: &str,
        since_ms: i64,
        before: Option<i64>,
    ) -> Result<(Vec<i64>, Option<i64>), StoreError>;
    /// Nobody calls `key` before `until_ms`.
    fn pause(&self, key: &str, until_ms: i64) -> Result<(), StoreError>;
    /// Takes `n` tokens from the bucket `key` (holding at most `capacity`, refilled at
    /// `per_sec`), shared by every process: how long to wait before the call they pay for
    /// (zero when they were there). Tokens taken while the bucket is empty are owed, so
    /// waiting callers queue in the order they took them.
    fn take(&self, key: &str, capacity: f64, per_sec: f64, n: f64) -> Result<Duration, StoreError>;
}

/// The wait a bucket left at `tokens` (negative: owed) asks for at `per_sec`.
pub(crate) fn bucket_wait(tokens: f64, per_sec: f64) -> Duration {
    if tokens >= 0.0 || per_sec <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(-tokens / per_sec).unwrap_or(Duration::from_secs(3600))
    }
}

impl Ledger for BudgetLedger {
    /// This process reserves a call of `key` at `at_ms`; the row id orders it among every
    /// process's calls (row ids grow in the order the rows were written).
    fn reserve(&self, key: &str, at_ms: i64) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.prepare_cached("INSERT INTO calls (key, process, at) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![key, self.process, at_ms]))
            .map_err(self.err())?;
        Ok(conn.last_insert_rowid())
    }

    /// Gives back a reservation that did not fit.
    fn withdraw(&self, row: i64) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("DELETE FROM calls WHERE rowid = ?1")
            .and_then(|mut s| s.execute([row]))
            .map(drop)
            .map_err(self.err())
    }

    /// The call of row `row` now counts from `to_ms` (its answer).
    fn moved(&self, row: i64, to_ms: i64) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("UPDATE calls SET at = ?2 WHERE rowid = ?1")
            .and_then(|mut s| s.execute(params![row, to_ms]))
            .map(drop)
            .map_err(self.err())
    }

    /// The calls of `key` other processes counted at or after `since_ms` (only those
    /// written before row `before`, when given), and the latest pause any process recorded
    /// for it. Drops calls older than `since_ms` now and then.
    fn others(
        &self,
        key: &str,
        since_ms: i64,
        before: Option<i64>,
    ) -> Result<(Vec<i64>, Option<i64>), StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT at FROM calls WHERE key = ?1 AND at >= ?2 AND process <> ?3 AND rowid < ?4
                 ORDER BY at",
            )
            .map_err(self.err())?;
        let calls = stmt
            .query_map(
                params![key, since_ms, self.process, before.unwrap_or(i64::MAX)],
                |r| r.get(0),
            )
            .map_err(self.err())?
            .collect::<Result<Vec<i64>, _>>()
            .map_err(self.err())?;
        let pause: Option<i64> = conn
            .prepare_cached("SELECT until FROM pauses WHERE key = ?1")
            .and_then(|mut s| {
                s.query_row([key], |r| r.get(0))
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })
            })
            .map_err(self.err())?;
        // Rows older than every window are of no use to anyone.
        if since_ms % 64 == 0 {
            conn.execute(
                "DELETE FROM calls WHERE key = ?1 AND at < ?2",
                params![key, since_ms],
            )
            .map_err(self.err())?;
        }
        Ok((calls, pause))
    }

    /// A 429 told this process to leave `key` alone until `until_ms`: every process will.
    fn pause(&self, key: &str, until_ms: i64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO pauses (key, until) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET until = MAX(until, excluded.until)",
                params![key, until_ms],
            )
            .map(drop)
            .map_err(self.err())
    }

    fn take(&self, key: &str, capacity: f64, per_sec: f64, n: f64) -> Result<Duration, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.err())?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as f64)
            .unwrap_or(0.0);
        let row: Option<(f64, f64)> = tx
            .query_row(
                "SELECT tokens, at FROM buckets WHERE key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(self.err())?;
        let (tokens, at) = row.unwrap_or((capacity, now_ms));
        let refilled = (tokens + (now_ms - at).max(0.0) / 1000.0 * per_sec).min(capacity);
        let left = refilled - n;
        tx.execute(
            "INSERT INTO buckets (key, tokens, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
            params![key, left, now_ms],
        )
        .map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok(bucket_wait(left, per_sec))
    }
}

/// The calls and pauses of every process on one store.
#[derive(Debug)]
pub struct BudgetLedger {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// This process's id in the ledger (random: process ids are reused).
    process: String,
}

impl BudgetLedger {
    /// The ledger file of the store at `store`.
    pub fn path_for(store: &Path) -> PathBuf {
        let mut p = store.as_os_str().to_owned();
        p.push("-budget");
        PathBuf::from(p)
    }

    /// Opens (creating if needed) the ledger at `path` for a process called `process`.
    pub fn open(path: &Path, process: &str) -> Result<Self, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        crate::create_private(path);
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "OFF")
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS calls (key TEXT NOT NULL, process TEXT NOT NULL, at INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS calls_by_key ON calls (key, at);
             CREATE TABLE IF NOT EXISTS pauses (key TEXT PRIMARY KEY, until INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tokens REAL NOT NULL, at REAL NOT NULL);",
        )
        .map_err(err)?;
        Ok(BudgetLedger {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            process: process.to_owned(),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn processes_on_one_file_share_one_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db-budget");
        let (a, b) = (
            BudgetLedger::open(&path, "a").unwrap(),
            BudgetLedger::open(&path, "b").unwrap(),
        );
        let (a, b): (&dyn Ledger, &dyn Ledger) = (&a, &b);
        assert!(a.take("k", 10.0, 10.0, 10.0).unwrap().is_zero());
        let wait_b = b.take("k", 10.0, 10.0, 5.0).unwrap();
        let wait_a = a.take("k", 10.0, 10.0, 5.0).unwrap();
        assert!((0.3..=0.55).contains(&wait_b.as_secs_f64()), "{wait_b:?}");
        assert!((0.8..=1.05).contains(&wait_a.as_secs_f64()), "{wait_a:?}");
        // Refilled over time, never past the capacity.
        assert!(a.take("other", 3.0, 1000.0, 3.0).unwrap().is_zero());
        std::thread::sleep(Duration::from_millis(50));
        assert!(a.take("other", 3.0, 1000.0, 3.0).unwrap().is_zero());
        assert!(!a.take("other", 3.0, 1000.0, 3.0).unwrap().is_zero());
    }
}
