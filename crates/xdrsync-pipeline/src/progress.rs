//! Progress of a running pull, for the progress bars and `status`.

use std::sync::Arc;

use xdrsync_model::{StreamKind, Timestamp};

/// Where a (tenant, stream) pull stands, for progress bars and progress lines.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Tenant name.
    pub tenant: String,
    /// The stream.
    pub stream: StreamKind,
    /// What happened.
    pub stage: Stage,
    /// Pages read so far.
    pub pages: u32,
    /// Items read so far (versions new or not).
    pub items: u64,
    /// Where the pull reads back to.
    pub since: Timestamp,
    /// When it started (the clock of this process).
    pub started: Timestamp,
    /// The oldest last-update time read so far: pages come newest first, so the part of
    /// `since ..= started` already covered is `oldest ..= started`.
    pub oldest: Option<Timestamp>,
}

impl Progress {
    /// The share of the time window already read, 0 to 1 (`None` before the first page).
    pub fn fraction(&self) -> Option<f64> {
        let span = (self.started.ticks() - self.since.ticks()).max(1) as f64;
        self.oldest
            .map(|o| ((self.started.ticks() - o.ticks()) as f64 / span).clamp(0.0, 1.0))
    }
}

/// The stages [`Progress`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The pull started.
    Started,
    /// A page was read.
    Page,
    /// The pull ended (its report follows through the `done` callback).
    Finished,
}

/// A callback for [`Progress`] (called on the async threads: keep it quick).
#[derive(Clone)]
pub struct ProgressHook(pub(crate) Arc<dyn Fn(&Progress) + Send + Sync>);

impl ProgressHook {
    /// Wraps `f`.
    pub fn new(f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        ProgressHook(Arc::new(f))
    }
}

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook")
    }
}
