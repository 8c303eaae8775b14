//! A cluster worker's view of its leases (issue 18): what the last renewal left it holding.
//!
//! The pipeline pulls only the (tenant, stream) pairs held here and names each one's lease in
//! every commit ([`xdrsync_store::Fence`]), so the store refuses a commit made after the lease
//! moved on; a refused commit drops the lease here at once (the next renewal agrees). The
//! worker's renewal task ([`Leases::set`]) and `run` (which sinks to deliver) share it.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use xdrsync_model::{StreamKind, TenantId};
use xdrsync_store::{Fence, Held};

/// The leases one worker holds.
#[derive(Debug)]
pub struct Leases {
    worker: String,
    held: RwLock<Holding>,
}

#[derive(Debug, Default)]
struct Holding {
    streams: HashMap<(TenantId, StreamKind), i64>,
    sinks: HashSet<String>,
}

impl Leases {
    /// A worker named `worker`, holding nothing yet.
    pub fn new(worker: impl Into<String>) -> Self {
        Leases {
            worker: worker.into(),
            held: RwLock::new(Holding::default()),
        }
    }

    /// The worker's name.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Holds what a renewal returned (and nothing else); how many stream leases are new.
    pub fn set(&self, held: &Held) -> usize {
        let mut h = self.held.write().unwrap_or_else(|e| e.into_inner());
        let streams: HashMap<_, _> = held
            .streams
            .iter()
            .map(|l| ((l.tenant.clone(), l.stream), l.generation))
            .collect();
        let gained = streams
            .iter()
            .filter(|(k, g)| h.streams.get(*k) != Some(*g))
            .count();
        h.streams = streams;
        h.sinks = held.sinks.iter().map(|s| s.sink.clone()).collect();
        gained
    }

    /// Holds nothing (renewals failed for longer than a lease: every lease has expired).
    pub fn clear(&self) {
        *self.held.write().unwrap_or_else(|e| e.into_inner()) = Holding::default();
    }

    /// The fence of `(tenant, stream)`'s lease, if this worker holds it.
    pub fn fence(&self, tenant: &TenantId, stream: StreamKind) -> Option<Fence> {
        let h = self.held.read().unwrap_or_else(|e| e.into_inner());
        h.streams
            .get(&(tenant.clone(), stream))
            .map(|generation| Fence {
                worker: self.worker.clone(),
                stream,
                generation: *generation,
            })
    }

    /// Whether this worker delivers the sink `name`.
    pub fn holds_sink(&self, name: &str) -> bool {
        let h = self.held.read().unwrap_or_else(|e| e.into_inner());
        h.sinks.contains(name)
    }

    /// Drops `(tenant, stream)`'s lease: the store refused a commit under it.
    pub fn lost(&self, tenant: &TenantId, stream: StreamKind) {
        let mut h = self.held.write().unwrap_or_else(|e| e.into_inner());
        h.streams.remove(&(tenant.clone(), stream));
    }

    /// `(stream leases, sink leases)` held.
    pub fn counts(&self) -> (usize, usize) {
        let h = self.held.read().unwrap_or_else(|e| e.into_inner());
        (h.streams.len(), h.sinks.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdrsync_store::{Lease, SinkLease};

    fn held(pairs: &[(&str, i64)], sinks: &[&str]) -> Held {
        Held {
            streams: pairs
                .iter()
                .map(|(t, g)| Lease {
                    tenant: TenantId::canonical(t),
                    stream: StreamKind::Incidents,
                    generation: *g,
                })
                .collect(),
            sinks: sinks
                .iter()
                .map(|s| SinkLease {
                    sink: (*s).into(),
                    generation: 1,
                })
                .collect(),
            taken_over: 0,
            live_workers: 1,
        }
    }

    #[test]
    fn a_renewal_replaces_what_is_held_and_counts_what_is_new() {
        let l = Leases::new("w1");
        assert_eq!(l.set(&held(&[("a", 1), ("b", 1)], &["pg"])), 2);
        let a = TenantId::canonical("a");
        assert_eq!(l.fence(&a, StreamKind::Incidents).unwrap().generation, 1);
        assert!(l.fence(&a, StreamKind::Alerts).is_none());
        assert!(l.holds_sink("pg") && !l.holds_sink("nats"));
        // b kept, a taken again under a newer generation (it had expired), c new.
        assert_eq!(l.set(&held(&[("a", 2), ("b", 1), ("c", 1)], &[])), 2);
        assert_eq!(l.fence(&a, StreamKind::Incidents).unwrap().generation, 2);
        assert!(!l.holds_sink("pg"));
        l.lost(&a, StreamKind::Incidents);
        assert!(l.fence(&a, StreamKind::Incidents).is_none());
        assert_eq!(l.counts(), (2, 0));
        l.clear();
        assert_eq!(l.counts(), (0, 0));
    }
}
