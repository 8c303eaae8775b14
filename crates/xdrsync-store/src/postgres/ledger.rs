//! The rate-budget ledger in the PostgreSQL store: the same protocol as the SQLite ledger file
//! ([`crate::ledger`]) in unlogged tables every worker of a cluster shares (migration
//! `0004_budget`), on a session of its own so API calls never wait for commits.
//!
//! A reservation's id must order it after every call of its key already visible, as SQLite's
//! row ids do: the insert takes a transaction-scoped advisory lock on the key, so ids of one
//! key are handed out and committed one at a time.

use std::sync::Arc;
use std::time::Duration;

use super::conn::Connection;
use super::store::run_on;
use crate::StoreError;

/// One process's view of the cluster's ledger.
#[derive(Debug)]
pub(super) struct PgLedger {
    session: Arc<Connection>,
    process: String,
    location: String,
}

impl PgLedger {
    pub(super) fn new(session: Arc<Connection>, process: &str, location: &str) -> Self {
        PgLedger {
            session,
            process: process.to_owned(),
            location: location.to_owned(),
        }
    }
}

impl crate::Ledger for PgLedger {
    fn reserve(&self, key: &str, at_ms: i64) -> Result<i64, StoreError> {
        let (key, process) = (key.to_owned(), self.process.clone());
        run_on(&self.session, &self.location, move |rt, c| {
            let row = rt.block_on(c.query_one(
                "WITH l AS (SELECT pg_advisory_xact_lock(hashtextextended($1, 0)))
                 INSERT INTO budget_calls (key, process, at) SELECT $1, $2, $3 FROM l RETURNING id",
                &[&key, &process, &at_ms],
            ))?;
            Ok(row.try_get(0)?)
        })
    }

    fn withdraw(&self, row: i64) -> Result<(), StoreError> {
        run_on(&self.session, &self.location, move |rt, c| {
            rt.block_on(c.execute("DELETE FROM budget_calls WHERE id = $1", &[&row]))?;
            Ok(())
        })
    }

    fn moved(&self, row: i64, to_ms: i64) -> Result<(), StoreError> {
        run_on(&self.session, &self.location, move |rt, c| {
            rt.block_on(c.execute(
                "UPDATE budget_calls SET at = $2 WHERE id = $1",
                &[&row, &to_ms],
            ))?;
            Ok(())
        })
    }

    fn others(
        &self,
        key: &str,
        since_ms: i64,
        before: Option<i64>,
    ) -> Result<(Vec<i64>, Option<i64>), StoreError> {
        let (key, process) = (key.to_owned(), self.process.clone());
        let before = before.unwrap_or(i64::MAX);
        run_on(&self.session, &self.location, move |rt, c| {
            rt.block_on(async {
                let calls = c
                    .query(
                        "SELECT at FROM budget_calls
                         WHERE key = $1 AND at >= $2 AND process <> $3 AND id < $4 ORDER BY at",
                        &[&key, &since_ms, &process, &before],
                    )
                    .await?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect::<Result<Vec<i64>, _>>()?;
                let pause = c
                    .query_opt("SELECT until FROM budget_pauses WHERE key = $1", &[&key])
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                // Rows older than every window are of no use to anyone.
                if since_ms % 64 == 0 {
                    c.execute(
                        "DELETE FROM budget_calls WHERE key = $1 AND at < $2",
                        &[&key, &since_ms],
                    )
                    .await?;
                }
                Ok((calls, pause))
            })
        })
    }

    fn pause(&self, key: &str, until_ms: i64) -> Result<(), StoreError> {
        let key = key.to_owned();
        run_on(&self.session, &self.location, move |rt, c| {
            rt.block_on(c.execute(
                "INSERT INTO budget_pauses (key, until) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET until = GREATEST(budget_pauses.until, EXCLUDED.until)",
                &[&key, &until_ms],
            ))?;
            Ok(())
        })
    }

    fn take(&self, key: &str, capacity: f64, per_sec: f64, n: f64) -> Result<Duration, StoreError> {
        let key = key.to_owned();
        let left: f64 = run_on(&self.session, &self.location, move |rt, c| {
            let row = rt.block_on(c.query_one(
                "INSERT INTO rate_buckets AS b (key, tokens, refreshed_at) VALUES ($1, $2::float8 - $4::float8, now())
                 ON CONFLICT (key) DO UPDATE SET
                     tokens = LEAST($2::float8, b.tokens
                         + EXTRACT(EPOCH FROM (now() - b.refreshed_at))::float8 * $3::float8)
                         - $4::float8,
                     refreshed_at = now()
                 RETURNING tokens",
                &[&key, &capacity, &per_sec, &n],
            ))?;
            Ok(row.try_get(0)?)
        })?;
        Ok(crate::ledger::bucket_wait(left, per_sec))
    }
}
