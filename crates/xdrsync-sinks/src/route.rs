//! Which events a sink receives: tenants, streams, a minimum severity and change kinds.
//!
//! An event the route does not take is passed over (the sink's position moves past it), so a
//! narrow route never holds a backlog of events it will never send.

use std::collections::HashSet;

use xdrsync_model::{ChangeKind, Severity, StreamKind, TenantId, Timestamp};
use xdrsync_store::StoredVersion;

/// A sink's route; the default takes everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Route {
    /// Only these tenants (empty: all).
    pub tenants: HashSet<TenantId>,
    /// Only these streams (empty: all).
    pub streams: Vec<StreamKind>,
    /// Only events at least this severe (`unknown` and values newer than this release are
    /// ranked above `high`, so a new "critical" is never filtered out).
    pub min_severity: Option<Severity>,
    /// Only these change kinds (empty: all).
    pub changes: Vec<ChangeKind>,
    /// Only versions last updated at or after this (a replay's window).
    pub since: Option<Timestamp>,
}

/// Orders severities for `min_severity`.
pub fn severity_rank(s: &Severity) -> u8 {
    match s {
        Severity::Informational => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        // Not knowing how bad it is is no reason to hide it.
        Severity::Unknown | Severity::Other(_) => 5,
    }
}

impl Route {
    /// Whether the sink receives `v`.
    pub fn accepts(&self, v: &StoredVersion) -> bool {
        (self.tenants.is_empty() || self.tenants.contains(v.record.tenant()))
            && (self.streams.is_empty() || self.streams.contains(&v.stream))
            && (self.changes.is_empty() || self.changes.contains(&v.change))
            && self.since.is_none_or(|t| v.record.last_update() >= t)
            && self
                .min_severity
                .as_ref()
                .is_none_or(|min| severity_rank(v.record.severity()) >= severity_rank(min))
    }
}
