//! Retention: `[store] retention_days` of versions, pruned by `run` between passes.
//!
//! A version is pruned when its last update is older than the retention window, every enabled
//! sink has delivered it (its `seq` is at or below the lowest sink position), and it is not the
//! newest version of its item: the current state of every incident and alert is kept whatever
//! its age, so `reconcile`, `incidents list` and change classification keep working. The work
//! is done in short steps (one transaction over a range of `seq` each) with pauses between
//! them, so a pass running beside it waits at most for one step.
//!
//! A pruned version can no longer be replayed to a sink; the newest version of its item can.

use std::sync::Arc;
use std::time::{Duration, Instant};

use xdrsync_model::Timestamp;
use xdrsync_store::{Store, StoreError};

use crate::blocking;

/// `seq` values examined per step (one transaction).
const SPAN: i64 = 1_000;
/// The shortest pause between steps, for the writer of a running pass.
const PAUSE: Duration = Duration::from_millis(5);
/// Each step is followed by a pause this many times as long as the step took: retention
/// takes at most a tenth of the store's write lock and of a core, so a pass beside it keeps
/// its pace (measured: `sync_bench prune`). Pruning is never urgent; passes are.
const IDLE_FACTOR: u32 = 9;
/// Free pages given back per vacuum step.
const VACUUM_PAGES: u32 = 512;
/// How often the prune starts again from the first `seq` (versions it kept because they were
/// the newest of their item can become prunable when a newer version arrives).
const FULL_SCAN_EVERY: Duration = Duration::from_secs(24 * 3600);

/// What one prune did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Versions deleted.
    pub deleted: u64,
    /// The `seq` range examined ended here.
    pub upto: i64,
    /// Free pages given back to the file system.
    pub vacuumed: bool,
    /// How long it took.
    pub elapsed: Duration,
}

/// Retention state kept by the daemon between passes.
#[derive(Debug)]
pub struct Retention {
    days: u32,
    from: i64,
    last_full: Option<Instant>,
}

impl Retention {
    /// `days` of retention (0 keeps everything: [`Retention::prune`] does nothing).
    pub fn new(days: u32) -> Self {
        Retention {
            days,
            from: 0,
            last_full: None,
        }
    }

    /// Prunes what the window and `sinks`' positions allow (the names of every enabled sink;
    /// none: the outbox is delivered to nobody, so age alone decides).
    pub async fn prune(
        &mut self,
        store: &Arc<dyn Store>,
        sinks: &[String],
    ) -> Result<PruneReport, StoreError> {
        let started = Instant::now();
        let mut report = PruneReport::default();
        if self.days == 0 {
            return Ok(report);
        }
        if self.last_full.is_none_or(|t| t.elapsed() > FULL_SCAN_EVERY) {
            self.from = 0;
            self.last_full = Some(Instant::now());
        }
        let cutoff = Timestamp::now().sub(chrono::Duration::days(i64::from(self.days)));
        let upto = {
            let (store, sinks) = (store.clone(), sinks.to_vec());
            blocking(move || {
                let mut upto = store.last_seq()?;
                for s in &sinks {
                    upto = upto.min(store.sink_position(s)?);
                }
                Ok(upto)
            })
            .await?
        };
        let mut from = self.from;
        while from < upto {
            let st = store.clone();
            let step = Instant::now();
            let (deleted, next) = blocking(move || st.prune_step(cutoff, from, upto, SPAN)).await?;
            report.deleted += deleted;
            from = next;
            tokio::time::sleep((step.elapsed() * IDLE_FACTOR).max(PAUSE)).await;
        }
        self.from = from;
        report.upto = from;
        if report.deleted > 0 {
            for _ in 0..64 {
                let st = store.clone();
                let step = Instant::now();
                let left = blocking(move || st.vacuum_step(VACUUM_PAGES)).await?;
                report.vacuumed = true;
                if left == 0 {
                    break;
                }
                tokio::time::sleep((step.elapsed() * IDLE_FACTOR).max(PAUSE)).await;
            }
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }
}
