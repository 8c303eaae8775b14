//! What a pull did, per tenant and stream: the report, the error, the counters it records.

use xdrsync_api_client::ApiError;
use xdrsync_config::{ConfigError, Tenant};
use xdrsync_model::{StreamKind, Timestamp};
use xdrsync_store::{CommitStats, StoreError};

use crate::api_name;

/// A tenant's pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Its credential could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The API (or Entra) refused or failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Its credential could not be read (the message of the [`ConfigError`], shared by the
    /// tenant's streams of one pass).
    #[error("{0}")]
    Credential(String),
    /// A cluster worker no longer holds the stream's lease: another worker pulls it now.
    #[error("this worker no longer holds the lease of the {0} stream: another worker pulls it now")]
    LeaseLost(String),
    /// Reconcile needs a pulled tenant.
    #[error("tenant {0} has never been pulled; run `xdrsync pull` first")]
    NeverPulled(String),
}

/// How one pull of one (tenant, stream) went.
#[derive(Debug, Clone)]
pub struct TenantReport {
    /// Tenant name from the config.
    pub name: String,
    /// The stream pulled.
    pub stream: StreamKind,
    /// The API used (`graph`, `xdr`, `mde`, `siem`).
    pub api: &'static str,
    /// Versions stored, by kind.
    pub stats: CommitStats,
    /// The newest last-update time seen in this pull.
    pub last_update: Option<Timestamp>,
    /// The stream's cursor after the pull.
    pub cursor: Option<Timestamp>,
    /// Items that could not be read.
    pub poison: usize,
    /// Pages requested.
    pub pages: u32,
    /// Why the pull failed, in plain words (the tenant is then "degraded").
    pub error: Option<String>,
    /// `Warning` headers of partial (206) answers: the pull may have missed data from the
    /// providers they name; the next pull re-reads the window.
    pub partial: Vec<String>,
    /// Pages read without `$expand=alerts` (it failed), each incident then read on its own.
    pub expand_fallbacks: u32,
    /// Of the incidents read on their own, those read in a Graph `$batch` (20 per call).
    pub batched_reads: u32,
    /// Where the pull started reading (last-update time).
    pub since: Option<Timestamp>,
}

impl TenantReport {
    pub(crate) fn failed(
        tenant: &Tenant,
        stream: StreamKind,
        error: String,
        cursor: Option<Timestamp>,
    ) -> Self {
        TenantReport {
            name: tenant.name.clone(),
            stream,
            api: api_name(tenant, stream),
            stats: CommitStats::default(),
            last_update: None,
            cursor,
            poison: 0,
            pages: 0,
            error: Some(error),
            partial: Vec::new(),
            expand_fallbacks: 0,
            batched_reads: 0,
            since: None,
        }
    }
}

/// A finished pull in the process's metrics (a no-op unless the binary installed a recorder):
/// versions stored by change kind, pages, unreadable items, and the outcome (the seconds since
/// the last success are set by the daemon at scrape time).
pub(crate) fn record_metrics(r: &TenantReport) {
    let labels = [("tenant", r.name.clone()), ("stream", r.stream.to_string())];
    let s = &r.stats;
    let created = s.created;
    let updated = s.updated.saturating_sub(s.alert_added + s.redirected);
    for (change, n) in [
        ("created", created),
        ("updated", updated),
        ("alert_added", s.alert_added),
        ("redirected", s.redirected),
    ] {
        if n > 0 {
            let mut l = labels.to_vec();
            l.push(("change", change.to_owned()));
            metrics::counter!("xdrsync_versions_pulled_total", &l).increment(n);
        }
    }
    metrics::counter!("xdrsync_pages_total", &labels).increment(u64::from(r.pages));
    if r.poison > 0 {
        metrics::counter!("xdrsync_poison_items_total", &labels).increment(r.poison as u64);
    }
    // Outcomes per stream only: per tenant they are `status` and the seconds since the last
    // success, and 1,000s of tenants would multiply the exposition.
    metrics::counter!(
        "xdrsync_pulls_total",
        "stream" => r.stream.as_str(),
        "outcome" => if r.error.is_some() { "failed" } else { "ok" },
    )
    .increment(1);
}

/// Where a pull starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullMode {
    /// From the stored cursor minus the overlap (the initial lookback on the first pull).
    Incremental,
    /// From this time, whatever the cursor says (`xdrsync backfill`); the cursor still only
    /// moves forward.
    Since(Timestamp),
}
