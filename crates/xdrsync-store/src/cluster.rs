//! What a cluster of `run` workers needs of a shared store (issue 18): leases of every
//! (tenant, stream) and of every sink's delivery, renewed by each worker, with a generation
//! that fences the commits of a worker that lost them. Only the PostgreSQL store has it
//! ([`crate::Store::cluster`]); one machine on SQLite needs none of it.

use std::time::Duration;

use xdrsync_model::{StreamKind, TenantId};

use crate::StoreError;

/// A (tenant, stream) lease a worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The tenant.
    pub tenant: TenantId,
    /// The stream.
    pub stream: StreamKind,
    /// Its generation, for the fence of every commit made under it.
    pub generation: i64,
}

/// A sink's delivery lease a worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkLease {
    /// The sink's name.
    pub sink: String,
    /// Its generation: the sink's position moves only under it.
    pub generation: i64,
}

/// What one renewal left a worker with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// The (tenant, stream) leases it holds, sorted.
    pub streams: Vec<Lease>,
    /// The sinks it delivers, sorted.
    pub sinks: Vec<SinkLease>,
    /// Leases it took from a worker whose lease had expired (not handed back): takeovers.
    pub taken_over: u64,
    /// Workers alive at this renewal, itself included.
    pub live_workers: u64,
}

/// One lease as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// `tenant id/stream`, or `sink:NAME`.
    pub what: String,
    /// The tenant of a stream lease.
    pub tenant: Option<TenantId>,
    /// The stream of a stream lease.
    pub stream: Option<StreamKind>,
    /// Who holds it (`None`: free).
    pub worker: Option<String>,
    /// Its generation.
    pub generation: i64,
    /// Its last renewal (RFC 3339, the server's clock).
    pub renewed_at: Option<String>,
    /// Whether it has expired (the worker stopped renewing).
    pub expired: bool,
}

/// A worker as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRow {
    /// Its name.
    pub worker: String,
    /// Its last renewal (RFC 3339).
    pub seen_at: String,
    /// Whether it is alive (renewed within its lease length).
    pub alive: bool,
}

/// Leases in a shared store. Expiry is decided by the store's clock, never a worker's.
pub trait Cluster: Send + Sync {
    /// One renewal of `worker`'s leases among `streams` (every (tenant, stream) the cluster
    /// pulls) and `sinks` (every sink it delivers to), each lasting `lease` from now. Every
    /// worker passes the same lists. From this call on, the store refuses a sink position
    /// this worker writes for a sink it does not hold.
    fn renew(
        &self,
        worker: &str,
        streams: &[(TenantId, StreamKind)],
        sinks: &[String],
        lease: Duration,
    ) -> Result<Held, StoreError>;

    /// Gives back every lease of `worker` and leaves the cluster (a clean exit).
    fn release(&self, worker: &str) -> Result<(), StoreError>;

    /// Every lease, sorted (stream leases, then sinks).
    fn leases(&self) -> Result<Vec<LeaseRow>, StoreError>;

    /// Every worker that renewed, sorted by name.
    fn workers(&self) -> Result<Vec<WorkerRow>, StoreError>;
}
