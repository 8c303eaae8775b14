//! The store as the rate budget's shared ledger: every process on one store paces inside one
//! quota (see `xdrsync_store::BudgetLedger`).

use xdrsync_config::Config;
use xdrsync_model::Timestamp;

/// The store's budget ledger as the API client's [`xdrsync_api_client::budget::SharedLedger`]:
/// every process on one store paces inside one quota.
#[derive(Debug)]
pub(crate) struct StoreLedger(Box<dyn xdrsync_store::Ledger>);

/// This process's name in the ledger (random: process ids are reused).
fn process() -> String {
    format!("{}-{}", std::process::id(), Timestamp::now().ticks())
}

impl StoreLedger {
    /// The ledger in `store` itself when it has one (the PostgreSQL store every worker of a
    /// cluster shares, so a tenant's budget follows its lease).
    pub(crate) fn in_store(store: &dyn xdrsync_store::Store) -> Option<Self> {
        store.ledger(&process()).map(StoreLedger)
    }

    /// The ledger beside `config`'s SQLite store (`None`, with a warning, when it cannot be
    /// opened: the process then paces on its own calls only; `None` for a PostgreSQL store,
    /// whose ledger is [`StoreLedger::in_store`]).
    pub(crate) fn open(config: &Config) -> Option<Self> {
        if config.store_path.as_os_str() == ":memory:" || config.store_url.is_some() {
            return None;
        }
        let path = xdrsync_store::BudgetLedger::path_for(&config.store_path);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(parent);
        }
        match xdrsync_store::BudgetLedger::open(&path, &process()) {
            Ok(l) => Some(StoreLedger(Box::new(l))),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot open the rate-budget ledger; this process paces on its own calls only.");
                None
            }
        }
    }

    fn warn(e: &xdrsync_store::StoreError) {
        tracing::warn!(error = %e, "The rate-budget ledger failed; pacing on this process's own calls.");
    }
}

impl xdrsync_api_client::budget::SharedLedger for StoreLedger {
    fn reserve(&self, key: &str, at_ms: i64) -> Option<i64> {
        self.0.reserve(key, at_ms).map_err(|e| Self::warn(&e)).ok()
    }

    fn withdraw(&self, row: i64) {
        if let Err(e) = self.0.withdraw(row) {
            Self::warn(&e);
        }
    }

    fn moved(&self, row: i64, to_ms: i64) {
        if let Err(e) = self.0.moved(row, to_ms) {
            Self::warn(&e);
        }
    }

    fn others(&self, key: &str, since_ms: i64, before: Option<i64>) -> (Vec<i64>, Option<i64>) {
        self.0.others(key, since_ms, before).unwrap_or_else(|e| {
            Self::warn(&e);
            (Vec::new(), None)
        })
    }

    fn pause(&self, key: &str, until_ms: i64) {
        if let Err(e) = self.0.pause(key, until_ms) {
            Self::warn(&e);
        }
    }

    fn take(&self, key: &str, capacity: f64, per_sec: f64, n: f64) -> Option<std::time::Duration> {
        self.0
            .take(key, capacity, per_sec, n)
            .map_err(|e| Self::warn(&e))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use xdrsync_api_client::budget::{Quota, RateBudgets};
    use xdrsync_test_utils::receivers::postgres as pg;

    use super::StoreLedger;

    /// Two workers on one PostgreSQL store draw Graph's per-app limit (all tenants together)
    /// from one bucket row: what the cluster owes, each of them waits for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workers_draw_graphs_per_app_limit_from_one_bucket_in_the_store() {
        let schema = pg::fresh_schema("xdrsync_ledger");
        let admin = pg::client().await;
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let url = format!(
            "{}?options=-csearch_path%3D{schema}",
            pg::url(&pg::address())
        );
        let stores = tokio::task::spawn_blocking(move || {
            (
                xdrsync_store::postgres::PgStore::connect(&url).unwrap(),
                xdrsync_store::postgres::PgStore::connect(&url).unwrap(),
            )
        })
        .await
        .unwrap();
        let budgets = |s: &xdrsync_store::postgres::PgStore| {
            RateBudgets::new(true, 1.0).with_ledger(Arc::new(StoreLedger::in_store(s).unwrap()))
        };
        let (w1, w2) = (budgets(&stores.0), budgets(&stores.1));
        for (w, tenant) in [(&w1, "t1"), (&w2, "t2")] {
            let t = w.acquire("App", tenant, Quota::Graph).await;
            w.answered(t).await;
        }
        let sql = format!("SELECT tokens FROM {schema}.rate_buckets WHERE key = 'app|*|graph-app'");
        let left: f64 = admin.query_one(&sql, &[]).await.unwrap().get(0);
        assert!(left < 130_000.0 - 99.0, "each worker took a block: {left}");
        // w1's block still holds 99 calls: they do not go to the bucket.
        let started = Instant::now();
        for _ in 0..99 {
            let t = w1.acquire("app", "t1", Quota::Graph).await;
            w1.answered(t).await;
        }
        assert!(
            started.elapsed() < Duration::from_millis(800),
            "{:?}",
            started.elapsed()
        );
        // Now the cluster owes a second of the limit (13,000 calls).
        admin
            .batch_execute(&format!(
                "UPDATE {schema}.rate_buckets SET tokens = -13000, refreshed_at = now()"
            ))
            .await
            .unwrap();
        // The next one takes a block from the owing bucket: it waits for the debt to clear.
        let started = Instant::now();
        let t = w1.acquire("app", "t1", Quota::Graph).await;
        w1.answered(t).await;
        let waited = started.elapsed().as_secs_f64();
        assert!((0.8..=2.5).contains(&waited), "waited {waited:.2}s");
        let left: f64 = admin.query_one(&sql, &[]).await.unwrap().get(0);
        assert!(
            left < 13_000.0,
            "the block was taken from the owing bucket: {left}"
        );
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}
