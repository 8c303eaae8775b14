//! The [`Store`] trait: what the pipeline, the sinks and the commands need of a store, so
//! that one machine keeps the embedded SQLite file and a cluster of workers can share a
//! PostgreSQL database behind the same calls.
//!
//! The contract every backend keeps (and `tests/conformance.rs` checks against each):
//! a commit stores a request's versions and moves its cursor in one transaction, never
//! backward; a version already stored is counted, not stored twice; `seq` orders versions for
//! delivery, and a sink's position only moves forward; every raw payload reads back byte for
//! byte. Calls block: async callers run them on a blocking thread, as they did before the
//! trait existed.

use xdrsync_model::{StreamKind, TenantId, Timestamp};

use crate::copy::{ExportedTable, ExportedVersion};
use crate::{
    ActionRecord, CommitRequest, CommitStats, Encoded, HuntRun, NewVersion, PoisonRecord,
    PullOutcome, SinkHealth, SqliteStore, StoreError, StoredVersion, StreamHealth,
};

/// A store of incident and alert versions, cursors and the sinks' outbox positions.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Where the store is, for people: the SQLite file's path, or the database's address
    /// without credentials.
    fn location(&self) -> String;

    /// The cursor of `(tenant, stream)`, if any pull has committed one.
    fn cursor(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<Timestamp>, StoreError>;

    /// Stores new versions and, in the same transaction, moves the cursor forward to `cursor`
    /// (never backward). Versions already stored are counted, not stored again.
    fn commit(
        &self,
        tenant: &TenantId,
        versions: &[NewVersion],
        cursor: Option<(StreamKind, Timestamp)>,
    ) -> Result<CommitStats, StoreError>;

    /// Commits several requests (of any tenants and streams) in **one** transaction, in order:
    /// one lock hold and one WAL sync for all of them. If the transaction fails, each request
    /// is retried in a transaction of its own, so one bad request fails alone. The results are
    /// in the order of `group`.
    fn commit_group(&self, group: &[CommitRequest]) -> Vec<Result<CommitStats, StoreError>>;

    /// The payloads of `versions` compressed with the store's current dictionary, for
    /// [`Store::commit_group_encoded`]: the CPU of a commit done on the caller's thread.
    fn encode(&self, versions: &[NewVersion]) -> Encoded;

    /// [`Store::commit_group`] with each request's payloads already compressed
    /// (`encoded[i]` for `group[i]`; a missing or out-of-date one is compressed here).
    fn commit_group_encoded(
        &self,
        group: &[CommitRequest],
        encoded: &[Encoded],
    ) -> Vec<Result<CommitStats, StoreError>>;

    /// Records items that could not be read (counted again when seen again).
    fn record_poison(&self, tenant: &TenantId, items: &[PoisonRecord]) -> Result<(), StoreError>;

    /// Number of distinct poison items recorded for `tenant`.
    fn poison_count(&self, tenant: &TenantId) -> Result<u64, StoreError>;

    /// How many versions lie past `seq`: a sink's backlog.
    fn count_after(&self, seq: i64) -> Result<u64, StoreError>;

    /// The `seq` after which exactly `n` versions remain (0 if there are `n` or fewer): where a
    /// sink that keeps only the newest `n` events of its backlog skips to.
    fn seq_before_newest(&self, n: u64) -> Result<i64, StoreError>;

    /// Up to `limit` versions with `seq > after`, in `seq` order.
    fn versions_after(&self, after: i64, limit: usize) -> Result<Vec<StoredVersion>, StoreError>;

    /// [`Store::versions_after`] without the raw JSON (`raw` is empty), for sinks that
    /// deliver the normalized record only: a third of the bytes.
    fn versions_after_without_raw(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredVersion>, StoreError>;

    /// The highest `seq` stored (0 if empty).
    fn last_seq(&self) -> Result<i64, StoreError>;

    /// The newest stored version of every incident whose last update is at or after `since`,
    /// newest first: the Hello World's "incidents last updated within the past 48 hours".
    fn latest_since(&self, since: Timestamp) -> Result<Vec<StoredVersion>, StoreError>;

    /// Every stored version key of `(tenant, stream)` as `(item id, last update)`, sorted.
    fn version_keys(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Vec<(String, Timestamp)>, StoreError>;

    /// Every sink's position: `(sink, seq, updated at)`.
    fn sink_positions(&self) -> Result<Vec<(String, i64, String)>, StoreError>;

    /// The last `seq` that `sink` acknowledged (0 if none).
    fn sink_position(&self, sink: &str) -> Result<i64, StoreError>;

    /// Records that `sink` has delivered everything up to `seq` (never moves back).
    fn set_sink_position(&self, sink: &str, seq: i64) -> Result<(), StoreError>;

    /// A sink's position and its recovery state (see [`Store::set_sink_state`]).
    fn sink_state(&self, sink: &str) -> Result<(i64, Option<String>), StoreError>;

    /// Records `sink`'s position (never moving it back) and replaces its recovery state in one
    /// transaction: a sink writes "about to write this" before a write and "done, position
    /// N, nothing in flight" after it, so a crash in between can be told apart on restart.
    fn set_sink_state(&self, sink: &str, seq: i64, state: Option<&str>) -> Result<(), StoreError>;

    /// Records how a delivery of `sink` went: `Ok(events)` (moved `events`, maybe none) or
    /// `Err(reason)`.
    fn record_sink_outcome(&self, sink: &str, outcome: Result<u64, &str>)
    -> Result<(), StoreError>;

    /// Everything the store knows of `sink`'s deliveries (a sink that never ran is at
    /// position 0 with the whole outbox as its backlog).
    fn sink_health(&self, sink: &str) -> Result<SinkHealth, StoreError>;

    /// Forgets a sink: its position, recovery state and delivery health (a replay's own
    /// temporary sink, once it has delivered).
    fn forget_sink(&self, sink: &str) -> Result<(), StoreError>;

    /// Renames a sink's position, recovery state and health (when `to` has none yet).
    fn rename_sink(&self, from: &str, to: &str) -> Result<(), StoreError>;

    /// Whether the store has a position for `sink`.
    fn has_sink(&self, sink: &str) -> Result<bool, StoreError>;

    /// Records how a pull of `(tenant, stream)` went.
    fn record_outcome(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
        o: &PullOutcome,
    ) -> Result<(), StoreError>;

    /// Every (tenant, stream) that has been pulled, with its counts.
    fn health(&self) -> Result<Vec<StreamHealth>, StoreError>;

    /// The newest stored version of each item of `(tenant, stream)` whose last update is at or
    /// after `since`: item id → last update (for `reconcile`).
    fn latest_since_by_id(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
        since: Timestamp,
    ) -> Result<std::collections::BTreeMap<String, Timestamp>, StoreError>;

    /// The last-update time from which the store is complete for `(tenant, stream)`.
    fn covered_from(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<Timestamp>, StoreError>;

    /// When a pull of `(tenant, stream)` last succeeded.
    fn last_success(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<Timestamp>, StoreError>;

    /// Records an action and, in the same transaction, the version it produced (stored like a
    /// pulled one, the cursor untouched, marked with the action's id). A version already
    /// stored (a pull got there first) is marked too.
    fn record_action(
        &self,
        action: &ActionRecord,
        produced: Option<&NewVersion>,
    ) -> Result<(), StoreError>;

    /// [`Store::record_action`] for several actions in **one** transaction (one WAL
    /// sync): a bulk apply's concurrent tenants share their commits.
    fn record_actions(
        &self,
        items: &[(ActionRecord, Option<NewVersion>)],
    ) -> Result<(), StoreError>;

    /// The audit, oldest first; of one tenant if given.
    fn actions(&self, tenant: Option<&TenantId>) -> Result<Vec<ActionRecord>, StoreError>;

    /// The newest stored version of one item.
    fn latest_of(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
        item: &str,
    ) -> Result<Option<StoredVersion>, StoreError>;

    /// Records a run of `run.hunt` in `run.tenant_id` (its `last_success` is kept when it failed).
    fn record_hunt_run(&self, run: &HuntRun) -> Result<(), StoreError>;

    /// Every recorded run, by hunt and tenant.
    fn hunt_runs(&self) -> Result<Vec<HuntRun>, StoreError>;

    /// One step of retention: among the versions with `seq` in `(from, min(upto, from +
    /// span)]`, deletes those whose last update is before `cutoff` and that are not the
    /// newest version of their item (the newest is always kept, so the current state of
    /// every incident and alert survives). Returns how many were deleted and where the next
    /// step starts. The caller passes as `upto` the lowest position of every enabled sink, so
    /// nothing undelivered is ever pruned. One short transaction per step: a pull's commits
    /// wait at most for one step.
    fn prune_step(
        &self,
        cutoff: Timestamp,
        from: i64,
        upto: i64,
        span: i64,
    ) -> Result<(u64, i64), StoreError>;

    /// Gives up to `pages` free pages back to the file system (a store created with
    /// incremental auto-vacuum; elsewhere free pages are reused and this does nothing).
    /// Returns how many free pages remain.
    fn vacuum_step(&self, pages: u32) -> Result<u64, StoreError>;

    /// Number of stored versions.
    fn version_count(&self) -> Result<u64, StoreError>;

    /// Copies the WAL into the database file and empties it (SQLite does this on its own
    /// every 1,000 pages; benchmarks call it to measure the file alone). Errors are logged.
    fn checkpoint(&self);

    /// The store's size on disk: the database file and its WAL, in bytes.
    fn size_bytes(&self) -> u64;

    /// The schema version.
    fn schema_version(&self) -> Result<i64, StoreError>;

    /// Whether the store can take a write now: takes the write lock (waiting for another
    /// writer as a commit would) and releases it without writing.
    fn check_writable(&self) -> Result<(), StoreError>;

    /// Every version after `seq` `after` (at most `limit`), payloads decoded: what
    /// `xdrsync store copy` moves.
    fn export_versions(&self, after: i64, limit: usize)
    -> Result<Vec<ExportedVersion>, StoreError>;

    /// Stores `rows` as they are, with their own `seq` and event ids, in one transaction
    /// (`xdrsync store copy`, into a store that holds none of them).
    fn import_versions(&self, rows: &[ExportedVersion]) -> Result<(), StoreError>;

    /// Every row of the small tables ([`crate::copy::TABLES`]).
    fn export_tables(&self) -> Result<Vec<ExportedTable>, StoreError>;

    /// Inserts the rows of [`Store::export_tables`] in one transaction.
    fn import_tables(&self, tables: &[ExportedTable]) -> Result<(), StoreError>;

    /// The leases of a cluster of workers, when the store is shared by one (PostgreSQL).
    fn cluster(&self) -> Option<&dyn crate::Cluster> {
        None
    }

    /// The rate-budget ledger in the store itself, for the process `process`, when the store
    /// is shared by several machines (PostgreSQL). `None`: the SQLite store's ledger is a
    /// file beside it ([`crate::BudgetLedger::path_for`]).
    fn ledger(&self, _process: &str) -> Option<Box<dyn crate::Ledger>> {
        None
    }
}

impl Store for SqliteStore {
    fn location(&self) -> String {
        self.path().display().to_string()
    }

    fn cursor(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<Timestamp>, StoreError> {
        SqliteStore::cursor(self, tenant, stream)
    }

    fn commit(
        &self,
        tenant: &TenantId,
        versions: &[NewVersion],
        cursor: Option<(StreamKind, Timestamp)>,
    ) -> Result<CommitStats, StoreError> {
        SqliteStore::commit(self, tenant, versions, cursor)
    }

    fn commit_group(&self, group: &[CommitRequest]) -> Vec<Result<CommitStats, StoreError>> {
        SqliteStore::commit_group(self, group)
    }

    fn encode(&self, versions: &[NewVersion]) -> Encoded {
        SqliteStore::encode(self, versions)
    }

    fn commit_group_encoded(
        &self,
        group: &[CommitRequest],
        encoded: &[Encoded],
    ) -> Vec<Result<CommitStats, StoreError>> {
        SqliteStore::commit_group_encoded(self, group, encoded)
    }

    fn record_poison(&self, tenant: &TenantId, items: &[PoisonRecord]) -> Result<(), StoreError> {
        SqliteStore::record_poison(self, tenant, items)
    }

    fn poison_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        SqliteStore::poison_count(self, tenant)
    }

    fn count_after(&self, seq: i64) -> Result<u64, StoreError> {
        SqliteStore::count_after(self, seq)
    }

    fn seq_before_newest(&self, n: u64) -> Result<i64, StoreError> {
        SqliteStore::seq_before_newest(self, n)
    }

    fn versions_after(&self, after: i64, limit: usize) -> Result<Vec<StoredVersion>, StoreError> {
        SqliteStore::versions_after(self, after, limit)
    }

    fn versions_after_without_raw(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        SqliteStore::versions_after_without_raw(self, after, limit)
    }

    fn last_seq(&self) -> Result<i64, StoreError> {
        SqliteStore::last_seq(self)
    }

    fn latest_since(&self, since: Timestamp) -> Result<Vec<StoredVersion>, StoreError> {
        SqliteStore::latest_since(self, since)
    }

    fn version_keys(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Vec<(String, Timestamp)>, StoreError> {
        SqliteStore::version_keys(self, tenant, stream)
    }

    fn sink_positions(&self) -> Result<Vec<(String, i64, String)>, StoreError> {
        SqliteStore::sink_positions(self)
    }

    fn sink_position(&self, sink: &str) -> Result<i64, StoreError> {
        SqliteStore::sink_position(self, sink)
    }

    fn set_sink_position(&self, sink: &str, seq: i64) -> Result<(), StoreError> {
        SqliteStore::set_sink_position(self, sink, seq)
    }

    fn sink_state(&self, sink: &str) -> Result<(i64, Option<String>), StoreError> {
        SqliteStore::sink_state(self, sink)
    }

    fn set_sink_state(&self, sink: &str, seq: i64, state: Option<&str>) -> Result<(), StoreError> {
        SqliteStore::set_sink_state(self, sink, seq, state)
    }

    fn record_sink_outcome(
        &self,
        sink: &str,
        outcome: Result<u64, &str>,
    ) -> Result<(), StoreError> {
        SqliteStore::record_sink_outcome(self, sink, outcome)
    }

    fn sink_health(&self, sink: &str) -> Result<SinkHealth, StoreError> {
        SqliteStore::sink_health(self, sink)
    }

    fn forget_sink(&self, sink: &str) -> Result<(), StoreError> {
        SqliteStore::forget_sink(self, sink)
    }

    fn rename_sink(&self, from: &str, to: &str) -> Result<(), StoreError> {
        SqliteStore::rename_sink(self, from, to)
    }

    fn has_sink(&self, sink: &str) -> Result<bool, StoreError> {
        SqliteStore::has_sink(self, sink)
    }

    fn record_outcome(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
        o: &PullOutcome,
    ) -> Result<(), StoreError> {
        SqliteStore::record_outcome(self, tenant, stream, o)
    }

    fn health(&self) -> Result<Vec<StreamHealth>, StoreError> {
        SqliteStore::health(self)
    }

    fn latest_since_by_id(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
        since: Timestamp,
    ) -> Result<std::collections::BTreeMap<String, Timestamp>, StoreError> {
        SqliteStore::latest_since_by_id(self, tenant, stream, since)
    }

    fn covered_from(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<Timestamp>, StoreError> {
        SqliteStore::covered_from(self, tenant, stream)
    }

    fn last_success(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<Timestamp>, StoreError> {
        SqliteStore::last_success(self, tenant, stream)
    }

    fn record_action(
        &self,
        action: &ActionRecord,
        produced: Option<&NewVersion>,
    ) -> Result<(), StoreError> {
        SqliteStore::record_action(self, action, produced)
    }

    fn record_actions(
        &self,
        items: &[(ActionRecord, Option<NewVersion>)],
    ) -> Result<(), StoreError> {
        SqliteStore::record_actions(self, items)
    }

    fn actions(&self, tenant: Option<&TenantId>) -> Result<Vec<ActionRecord>, StoreError> {
        SqliteStore::actions(self, tenant)
    }

    fn latest_of(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
        item: &str,
    ) -> Result<Option<StoredVersion>, StoreError> {
        SqliteStore::latest_of(self, tenant, stream, item)
    }

    fn record_hunt_run(&self, run: &HuntRun) -> Result<(), StoreError> {
        SqliteStore::record_hunt_run(self, run)
    }

    fn hunt_runs(&self) -> Result<Vec<HuntRun>, StoreError> {
        SqliteStore::hunt_runs(self)
    }

    fn prune_step(
        &self,
        cutoff: Timestamp,
        from: i64,
        upto: i64,
        span: i64,
    ) -> Result<(u64, i64), StoreError> {
        SqliteStore::prune_step(self, cutoff, from, upto, span)
    }

    fn vacuum_step(&self, pages: u32) -> Result<u64, StoreError> {
        SqliteStore::vacuum_step(self, pages)
    }

    fn version_count(&self) -> Result<u64, StoreError> {
        SqliteStore::version_count(self)
    }

    fn checkpoint(&self) {
        SqliteStore::checkpoint(self)
    }

    fn size_bytes(&self) -> u64 {
        SqliteStore::size_bytes(self)
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        SqliteStore::schema_version(self)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        SqliteStore::check_writable(self)
    }

    fn export_versions(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ExportedVersion>, StoreError> {
        SqliteStore::export_versions(self, after, limit)
    }

    fn import_versions(&self, rows: &[ExportedVersion]) -> Result<(), StoreError> {
        SqliteStore::import_versions(self, rows)
    }

    fn export_tables(&self) -> Result<Vec<ExportedTable>, StoreError> {
        SqliteStore::export_tables(self)
    }

    fn import_tables(&self, tables: &[ExportedTable]) -> Result<(), StoreError> {
        SqliteStore::import_tables(self, tables)
    }
}
