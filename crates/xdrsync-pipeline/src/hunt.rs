//! Hunting across customers: one KQL query run in every chosen tenant side by side, within
//! each tenant's hunting quota (the shared rate budget), every row tagged with its tenant, and
//! one tenant's failure kept to that tenant.
//!
//! Scheduled hunts (`[[hunts]]`, [`Pipeline::run_due_hunts`]) run the same way from `run`:
//! each (hunt, tenant) whose `interval` has passed since its last run (kept in the store, so a
//! restart does not run everything again) runs once; its rows become versions of the `hunts`
//! stream, committed through the pipeline's writer like any page so the sinks following the
//! pass deliver them; a row an earlier run returned is recognised by its content hash and not
//! stored or delivered again. The run is recorded after its rows are committed: a crash in
//! between only runs the hunt again.

use std::sync::Arc;

use futures_util::StreamExt;
use xdrsync_api_client::{ApiClient, HuntResult, Quota};
use xdrsync_auth::vault::Vault;
use xdrsync_config::{Config, Hunt, Tenant};
use xdrsync_model::{HuntRow, Record, StreamKind, TenantId, Timestamp};
use xdrsync_store::{CommitRequest, HuntRun, NewVersion};

use crate::Pipeline;

/// Rows committed in one request to the writer (a hunt returns up to 100,000).
const ROWS_PER_COMMIT: usize = 2000;

/// One tenant's share of a hunt.
#[derive(Debug)]
pub struct TenantHunt {
    /// The tenant's configured name.
    pub name: String,
    /// Its id.
    pub tenant_id: TenantId,
    /// Its rows, or why it failed.
    pub result: Result<HuntResult, String>,
    /// The hunting quota's use after the hunt: `(calls in the last minute, allowed)`.
    pub quota: (usize, usize),
}

/// Runs `query` in each of `tenants` at once; `timespan` is an ISO 8601 duration (Graph's
/// `Timespan`; the legacy API takes the time range from the query).
pub async fn hunt(
    config: &Config,
    client: &ApiClient,
    vault: Option<&Arc<Vault>>,
    tenants: &[&Tenant],
    query: &str,
    timespan: Option<&str>,
) -> Vec<TenantHunt> {
    let runs = tenants.iter().map(|t| async move {
        let result = match crate::stream_target(t, config, vault, StreamKind::Incidents) {
            Err(e) => Err(e.to_string()),
            Ok(target) => client
                .hunt(&target, query, timespan)
                .await
                .map_err(|e| e.to_string()),
        };
        let quota = client
            .budgets()
            .used(&t.client_id, t.tenant_id.as_str(), Quota::Hunting)
            .await;
        TenantHunt {
            name: t.name.clone(),
            tenant_id: t.tenant_id.clone(),
            result,
            quota,
        }
    });
    futures_util::future::join_all(runs).await
}

/// `7d` → `P7D`, `36h` → `PT129600S`: Graph's `Timespan` from a duration.
pub fn iso_timespan(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(1);
    if secs % 86_400 == 0 {
        format!("P{}D", secs / 86_400)
    } else {
        format!("PT{secs}S")
    }
}

impl Pipeline {
    /// The fence of `tenant`'s hunts in a cluster: the lease of its first stream.
    fn hunt_fence(&self, tenant: &Tenant) -> Option<xdrsync_store::Fence> {
        let l = self.leases.as_ref()?;
        l.fence(&tenant.tenant_id, *tenant.streams.first()?)
    }

    /// Runs every enabled scheduled hunt in each of its tenants where it is due, side by side
    /// (at most `concurrent_tenants` at once, each within its tenant's hunting quota), and
    /// returns what each run did, by hunt and tenant. Runs that were not due are not listed.
    pub async fn run_due_hunts(&self) -> Vec<HuntRun> {
        if !self.config.hunts.iter().any(|h| h.enabled) {
            return Vec::new();
        }
        // Every recorded run in one read: a pass asks for hundreds of (hunt, tenant) pairs.
        let store = self.store.clone();
        let last: std::collections::HashMap<(String, TenantId), Timestamp> = match crate::blocking(
            move || store.hunt_runs(),
        )
        .await
        {
            Ok(runs) => runs
                .into_iter()
                .map(|r| ((r.hunt, r.tenant_id), r.started_at))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read when the hunts last ran; running them now.");
                Default::default()
            }
        };
        let now = Timestamp::now();
        let mut due = Vec::new();
        for h in self.config.hunts.iter().filter(|h| h.enabled) {
            let interval = chrono::Duration::from_std(h.interval).unwrap_or(chrono::Duration::MAX);
            for t in self.config.hunt_tenants(h) {
                // In a cluster, a tenant's hunts run where its first stream is leased.
                if self.leases.is_some() && self.hunt_fence(t).is_none() {
                    continue;
                }
                let ran = last.get(&(h.name.clone(), t.tenant_id.clone()));
                if ran.is_none_or(|l| now.as_datetime() - l.as_datetime() >= interval) {
                    due.push((h, t));
                }
            }
        }
        let limit = self.config.sync.concurrent_tenants.max(1);
        let mut runs: Vec<HuntRun> = futures_util::stream::iter(due)
            .map(|(h, t)| self.scheduled_hunt(h, t))
            .buffer_unordered(limit)
            .collect()
            .await;
        runs.sort_by(|a, b| (&a.hunt, &a.tenant_id).cmp(&(&b.hunt, &b.tenant_id)));
        runs
    }

    /// One run of `hunt` in `tenant`: query, store the new rows, record the run.
    async fn scheduled_hunt(&self, hunt: &Hunt, tenant: &Tenant) -> HuntRun {
        let started_at = Timestamp::now();
        let outcome = async {
            let target = crate::stream_target(
                tenant,
                &self.config,
                self.vault.as_ref(),
                StreamKind::Incidents,
            )
            .map_err(|e| e.to_string())?;
            let timespan = iso_timespan(hunt.timespan);
            let result = self
                .client
                .hunt(&target, &hunt.query, Some(&timespan))
                .await
                .map_err(|e| e.to_string())?;
            let rows = result.rows.len() as u64;
            let versions: Vec<NewVersion> = result
                .rows
                .into_iter()
                .map(|row| NewVersion {
                    // Serialized from the parsed row: the service's array holds many rows, so
                    // no one row has bytes of its own to keep.
                    raw: serde_json::to_string(&row).unwrap_or_default(),
                    record: Record::HuntRow(HuntRow::new(
                        tenant.tenant_id.clone(),
                        &hunt.name,
                        hunt.severity.clone(),
                        target.api,
                        row,
                        started_at,
                    )),
                })
                .collect();
            let pending: Vec<_> = versions
                .chunks(ROWS_PER_COMMIT)
                .map(|chunk| {
                    self.writer.submit(CommitRequest {
                        tenant: tenant.tenant_id.clone(),
                        versions: chunk.to_vec(),
                        poison: Vec::new(),
                        cursor: None,
                        fence: self.hunt_fence(tenant),
                    })
                })
                .collect();
            let mut new_rows = 0;
            for p in pending {
                new_rows += crate::writer::Writer::wait(p)
                    .await
                    .map_err(|e| format!("storing its rows: {e}"))?
                    .created;
            }
            Ok::<_, String>((rows, new_rows, result.truncated))
        }
        .await;
        let (rows, new_rows, truncated, error) = match outcome {
            Ok((rows, new_rows, truncated)) => (rows, new_rows, truncated, None),
            Err(e) => (0, 0, false, Some(e)),
        };
        let run = HuntRun {
            hunt: hunt.name.clone(),
            tenant_id: tenant.tenant_id.clone(),
            started_at,
            finished_at: Timestamp::now(),
            rows,
            new_rows,
            truncated,
            error,
            last_success: None,
        };
        let store = self.store.clone();
        let record = run.clone();
        if let Err(e) = crate::blocking(move || store.record_hunt_run(&record)).await {
            tracing::warn!(hunt = %hunt.name, tenant = %tenant.name, error = %e, "Cannot record the hunt's run; it runs again next pass (its rows are not delivered twice).");
        }
        match &run.error {
            None => {
                tracing::info!(hunt = %hunt.name, tenant = %tenant.name, rows = run.rows, new_rows = run.new_rows, truncated = run.truncated, "Scheduled hunt ran.")
            }
            Some(e) => {
                tracing::warn!(hunt = %hunt.name, tenant = %tenant.name, error = %xdrsync_model::printable(e), "Scheduled hunt failed.")
            }
        }
        run
    }
}
