//! The store as the rate budget's shared ledger: every process on one store paces inside one
//! quota (see `xdrsync_store::BudgetLedger`).

use xdrsync_config::Config;
use xdrsync_model::Timestamp;

/// The store's budget ledger as the API client's [`xdrsync_api_client::budget::SharedLedger`]:
/// every process on one store paces inside one quota.
#[derive(Debug)]
pub(crate) struct StoreLedger(xdrsync_store::BudgetLedger);

impl StoreLedger {
    /// The ledger beside `config`'s store (`None`, with a warning, when it cannot be opened:
    /// the process then paces on its own calls only).
    pub(crate) fn open(config: &Config) -> Option<Self> {
        if config.store_path.as_os_str() == ":memory:" {
            return None;
        }
        let path = xdrsync_store::BudgetLedger::path_for(&config.store_path);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(parent);
        }
        let process = format!("{}-{}", std::process::id(), Timestamp::now().ticks());
        match xdrsync_store::BudgetLedger::open(&path, &process) {
            Ok(l) => Some(StoreLedger(l)),
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
}
