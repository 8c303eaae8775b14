//! Hunting across customers: one KQL query run in every chosen tenant side by side, within
//! each tenant's hunting quota (the shared rate budget), every row tagged with its tenant, and
//! one tenant's failure kept to that tenant.

use std::sync::Arc;

use xdrsync_api_client::{ApiClient, HuntResult, Quota};
use xdrsync_auth::vault::Vault;
use xdrsync_config::{Config, Tenant};
use xdrsync_model::{StreamKind, TenantId};

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
