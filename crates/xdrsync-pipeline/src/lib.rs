//! The pull pipeline: for each tenant and stream (incidents, alerts, SIEM detections), read what
//! changed since the stream's cursor, store the new versions and advance the cursor in one
//! transaction, then let each sink deliver from the store.
//!
//! # Invariants
//! - The cursor of a tenant moves only in the transaction that stores the versions it covers,
//!   and only forward; the next pull starts `overlap` before it, so incidents that became
//!   visible late are still read. Versions read twice are recognised by their identity
//!   `(tenant, incident, last update)` and not stored twice.
//! - One tenant's failure (bad secret, missing role, an API that keeps failing) is reported for
//!   that tenant only; the others are pulled as usual.
//! - Sinks deliver from the store, each from its own position, after the pull committed.

use std::sync::Arc;

use xdrsync_api_client::{ApiClient, Page};
use xdrsync_auth::Credential;
use xdrsync_auth::vault::Vault;
use xdrsync_config::{Config, ConfigError, Tenant};
use xdrsync_model::{StreamKind, TenantId, Timestamp};
use xdrsync_store::{
    CommitRequest, CommitStats, NewVersion, PoisonRecord, PullOutcome, Store, StoreError,
};

pub mod actions;
pub mod cluster;
pub mod deliver;
pub mod hunt;
mod ledger;
mod progress;
mod report;
pub mod retention;
mod setup;
mod writer;

pub use progress::*;
pub use report::*;
pub use setup::*;
use writer::Writer;

/// Pages of one (tenant, stream) sent to the writer and not yet committed, at most: the listing
/// runs ahead of the store by this much and no further (memory stays bounded).
const PAGES_IN_FLIGHT: usize = 4;

/// Pulls tenants into a store.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Called as pulls start, read pages and end.
    progress: Option<ProgressHook>,
    config: Arc<Config>,
    store: Arc<dyn Store>,
    /// Commits every stream's pages, grouped (see [`writer`]).
    writer: Writer,
    client: ApiClient,
    /// One vault for every delegated tenant: its lock serializes the rotations they write.
    vault: Option<Arc<Vault>>,
    /// A cluster worker's leases: only the (tenant, stream) pairs held are pulled, each
    /// commit fenced by its lease (`None`: one machine, every pair is pulled).
    leases: Option<Arc<cluster::Leases>>,
}

impl Pipeline {
    /// A pipeline over `config` and `store`.
    pub fn new(config: Config, store: Arc<dyn Store>) -> Result<Self, ConfigError> {
        let client = api_client_on(&config, store.as_ref())?;
        let vault = if config.tenants.iter().any(|t| t.enabled && t.delegated) {
            Some(open_vault(&config)?)
        } else {
            None
        };
        let writer = Writer::spawn(store.clone()).map_err(|e| ConfigError::Invalid {
            path: config.path.clone(),
            field: "store".into(),
            message: format!("cannot start the store's writer thread: {e}"),
        })?;
        Ok(Pipeline {
            progress: None,
            client,
            config: Arc::new(config),
            store,
            writer,
            vault,
            leases: None,
        })
    }

    /// Pulls only what `leases` holds, fencing every commit with its lease (a cluster worker).
    pub fn set_leases(&mut self, leases: Arc<cluster::Leases>) {
        self.leases = Some(leases);
    }

    /// The fence of `(tenant, stream)`: `Ok(None)` outside a cluster; an error when this
    /// worker does not hold its lease (any more).
    fn fence(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<xdrsync_store::Fence>, PullError> {
        match &self.leases {
            None => Ok(None),
            Some(l) => l
                .fence(tenant, stream)
                .map(Some)
                .ok_or_else(|| PullError::LeaseLost(stream.to_string())),
        }
    }

    /// Reports every pull's progress to `hook`.
    pub fn set_progress(&mut self, hook: ProgressHook) {
        self.progress = Some(hook);
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Changes after every commit of pulled versions: sinks wait on it to deliver while a pull
    /// is still running.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.writer.commits()
    }

    /// How many tenants a pass pulls.
    pub fn enabled_tenants(&self) -> usize {
        self.config.tenants.iter().filter(|t| t.enabled).count()
    }

    /// The configured name of the tenant `id`.
    pub fn tenant_name(&self, id: &xdrsync_model::TenantId) -> Option<&str> {
        self.config.tenant(id.as_str()).map(|t| t.name.as_str())
    }

    /// The API client.
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Pulls every enabled tenant once; reports come back in config order.
    pub async fn pull_all(&self) -> Vec<TenantReport> {
        self.pull_all_with(PullMode::Incremental, |_| {}).await
    }

    /// How many (tenant, stream) pulls a pass makes.
    pub fn enabled_streams(&self) -> usize {
        self.config
            .tenants
            .iter()
            .filter(|t| t.enabled)
            .map(|t| t.streams.len())
            .sum()
    }

    /// [`Pipeline::pull_all_with`] while `sinks` deliver after every commit
    /// ([`deliver::follow`]); when it returns, every sink has delivered everything the pass
    /// stored (or failed, with the error in its result, in the order of `sinks`).
    pub async fn pull_all_delivering(
        &self,
        mode: PullMode,
        sinks: &[Arc<dyn xdrsync_sinks::Sink>],
        done: impl FnMut(&TenantReport),
    ) -> (Vec<TenantReport>, Vec<Delivery>) {
        let (reports, _, delivered) = self.pass(mode, sinks, done, false).await;
        (reports, delivered)
    }

    /// `run`'s pass: [`Pipeline::pull_all_delivering`] with the scheduled hunts that are due
    /// ([`Pipeline::run_due_hunts`]) run beside the pulls, their rows delivered by the same
    /// sinks in the same pass.
    pub async fn pass_with_hunts(
        &self,
        mode: PullMode,
        sinks: &[Arc<dyn xdrsync_sinks::Sink>],
        done: impl FnMut(&TenantReport),
    ) -> (
        Vec<TenantReport>,
        Vec<xdrsync_store::HuntRun>,
        Vec<Delivery>,
    ) {
        self.pass(mode, sinks, done, true).await
    }

    async fn pass(
        &self,
        mode: PullMode,
        sinks: &[Arc<dyn xdrsync_sinks::Sink>],
        done: impl FnMut(&TenantReport),
        hunts: bool,
    ) -> (
        Vec<TenantReport>,
        Vec<xdrsync_store::HuntRun>,
        Vec<Delivery>,
    ) {
        let (finish, finished) = tokio::sync::watch::channel(false);
        let followers: Vec<_> = sinks
            .iter()
            .map(|s| {
                tokio::spawn(deliver::follow(
                    s.clone(),
                    self.store.clone(),
                    self.commits(),
                    finished.clone(),
                ))
            })
            .collect();
        let (reports, hunted) = tokio::join!(self.pull_all_with(mode, done), async {
            if hunts {
                self.run_due_hunts().await
            } else {
                Vec::new()
            }
        });
        let _ = finish.send(true);
        let mut delivered = Vec::with_capacity(followers.len());
        for f in followers {
            delivered.push(match f.await {
                Ok(r) => r,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            });
        }
        (reports, hunted, delivered)
    }

    /// Pulls every stream of every enabled tenant once from `mode`, calling `done` as each
    /// (tenant, stream) finishes (for progress output); reports come back in config order.
    /// Streams of one tenant run side by side: they draw on the same rate budgets, and one
    /// stream's failure is that stream's.
    pub async fn pull_all_with(
        &self,
        mode: PullMode,
        mut done: impl FnMut(&TenantReport),
    ) -> Vec<TenantReport> {
        let tenants: Vec<(Tenant, StreamKind)> = self
            .config
            .tenants
            .iter()
            .filter(|t| t.enabled)
            .flat_map(|t| t.streams.iter().map(move |s| (t.clone(), *s)))
            .collect();
        let limit = self.config.sync.concurrent_tenants.max(1);
        // A tenant's credential is read once per pass, by whichever of its streams starts
        // first (a secret command or a PKCS#12 file is not run or decrypted per stream).
        let mut credentials: std::collections::HashMap<String, Arc<CredentialCell>> =
            std::collections::HashMap::new();
        // Tasks are started as others finish, never more than `limit` at once: a waiting task
        // would hold its whole future (tens of KB) for nothing, and a pass has 1,000s of them.
        let mut queue = tenants.iter().cloned().enumerate();
        let mut tasks = tokio::task::JoinSet::new();
        let mut reports: Vec<Option<TenantReport>> = vec![None; tenants.len()];
        // A cluster worker pulls (and reports) only the pairs it holds when their turn comes:
        // the others, and those handed to another worker since the pass began, are not its.
        let mut handed_over = vec![false; tenants.len()];
        loop {
            while tasks.len() < limit
                && let Some((i, (tenant, stream))) = queue.next()
            {
                if let Some(l) = &self.leases
                    && l.fence(&tenant.tenant_id, stream).is_none()
                {
                    if let Some(h) = handed_over.get_mut(i) {
                        *h = true;
                    }
                    continue;
                }
                let this = self.clone();
                let cell = credentials.entry(tenant.name.clone()).or_default().clone();
                tasks.spawn(async move {
                    (
                        i,
                        this.pull_tenant_report(&tenant, stream, mode, &cell).await,
                    )
                });
            }
            match tasks.join_next().await {
                None => break,
                Some(Ok((i, report))) => {
                    done(&report);
                    if let Some(slot) = reports.get_mut(i) {
                        *slot = Some(report);
                    }
                }
                Some(Err(e)) => tracing::error!(error = %e, "A tenant task panicked."),
            }
        }
        reports
            .into_iter()
            .zip(&tenants)
            .zip(handed_over)
            .filter(|(_, handed)| !handed)
            .map(|((r, (t, stream)), _)| {
                r.unwrap_or_else(|| {
                    TenantReport::failed(
                        t,
                        *stream,
                        "internal error: the tenant's task stopped unexpectedly".into(),
                        None,
                    )
                })
            })
            .collect()
    }

    async fn pull_tenant_report(
        &self,
        tenant: &Tenant,
        stream: StreamKind,
        mode: PullMode,
        cell: &CredentialCell,
    ) -> TenantReport {
        let credential = cell
            .get_or_init(|| {
                let t = tenant.clone();
                async move {
                    match tokio::task::spawn_blocking(move || credential(&t)).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(e) => Err(format!("reading the credential stopped: {e}")),
                    }
                }
            })
            .await
            .clone();
        let pulled = match credential {
            Ok(c) => self.pull_stream_with(tenant, stream, mode, c).await,
            Err(e) => Err(PullError::Credential(e)),
        };
        let report = match pulled {
            Ok(r) => r,
            Err(e) => {
                if matches!(
                    e,
                    PullError::Store(StoreError::Fenced { .. }) | PullError::LeaseLost(_)
                ) && let Some(l) = &self.leases
                {
                    // Another worker holds it now; the next renewal agrees.
                    l.lost(&tenant.tenant_id, stream);
                    metrics::counter!("xdrsync_cluster_fenced_commits_total").increment(1);
                }
                tracing::error!(tenant = %tenant.name, %stream, error = %e, "Pull failed; other tenants and streams continue.");
                let cursor = self.store.cursor(&tenant.tenant_id, stream).ok().flatten();
                TenantReport::failed(tenant, stream, e.to_string(), cursor)
            }
        };
        record_metrics(&report);
        let outcome = PullOutcome {
            tenant_name: tenant.name.clone(),
            error: report.error.clone(),
            partial: report.partial.last().cloned(),
            since: report.since,
        };
        let store = self.store.clone();
        let id = tenant.tenant_id.clone();
        if let Err(e) = blocking(move || store.record_outcome(&id, stream, &outcome)).await {
            tracing::error!(tenant = %tenant.name, error = %e, "Cannot record the pull's outcome for `xdrsync status`.");
        }
        report
    }

    /// Compares what the API lists for a tenant's stream (last update at or after `since`)
    /// with the store's newest versions, up to the store's cursor.
    pub async fn reconcile(
        &self,
        tenant: &Tenant,
        stream: StreamKind,
        since: Timestamp,
    ) -> Reconciliation {
        let mut r = Reconciliation {
            name: tenant.name.clone(),
            stream,
            missing: Vec::new(),
            extra: Vec::new(),
            matched: 0,
            pending: 0,
            error: None,
            compared_from: None,
        };
        if let Err(e) = self.reconcile_into(tenant, stream, since, &mut r).await {
            r.error = Some(e.to_string());
        }
        r
    }

    async fn reconcile_into(
        &self,
        tenant: &Tenant,
        stream: StreamKind,
        since: Timestamp,
        r: &mut Reconciliation,
    ) -> Result<(), PullError> {
        let target = stream_target(tenant, &self.config, self.vault.as_ref(), stream)?;
        let store = self.store.clone();
        let id = tenant.tenant_id.clone();
        let (cursor, covered) =
            blocking(move || Ok((store.cursor(&id, stream)?, store.covered_from(&id, stream)?)))
                .await?;
        let (Some(cursor), Some(covered)) = (cursor, covered) else {
            return Err(PullError::NeverPulled(tenant.name.clone()));
        };
        // The store can only be held to what a successful pull has read.
        let since = since.max(covered);
        r.compared_from = Some(since);
        let listing = self
            .client
            .list(&target, &source(tenant, stream), since, None)
            .await?;
        let store = self.store.clone();
        let id = tenant.tenant_id.clone();
        let stored = blocking(move || store.latest_since_by_id(&id, stream, since)).await?;
        let mut api = std::collections::BTreeMap::new();
        for f in &listing.records {
            let t = f.record.last_update();
            let e = api.entry(f.record.item_id()).or_insert(t);
            if t > *e {
                *e = t;
            }
        }
        for (id, api_t) in &api {
            let stored_t = stored.get(id).copied();
            if *api_t > cursor {
                r.pending += 1;
            } else if stored_t == Some(*api_t) {
                r.matched += 1;
            } else {
                r.missing.push((id.clone(), *api_t, stored_t));
            }
        }
        for (id, t) in &stored {
            // Not listed, or listed at an older version than the store holds.
            if api.get(id).is_none_or(|a| a < t) {
                r.extra.push((id.clone(), *t));
            }
        }
        Ok(())
    }

    /// Pulls one stream of one tenant: reads from `cursor − overlap` (or the initial lookback,
    /// or the backfill start) and commits the versions with the advanced cursor.
    async fn pull_stream_with(
        &self,
        tenant: &Tenant,
        stream: StreamKind,
        mode: PullMode,
        credential: Credential,
    ) -> Result<TenantReport, PullError> {
        let target = target_with(
            tenant,
            &self.config,
            self.vault.as_ref(),
            stream,
            credential,
        )?;
        let fence = self.fence(&tenant.tenant_id, stream)?;
        let store = self.store.clone();
        let id = tenant.tenant_id.clone();
        let cursor = blocking(move || store.cursor(&id, stream)).await?;
        let since = match (mode, cursor) {
            (PullMode::Since(t), _) => t,
            (PullMode::Incremental, Some(c)) => c.sub(self.config.sync.overlap),
            (PullMode::Incremental, None) => {
                Timestamp::now().sub(self.config.sync.initial_lookback)
            }
        };
        let api = api_name(tenant, stream);
        tracing::info!(tenant = %tenant.name, %stream, api, %since, "Pulling.");
        // Each page goes to the writer as soon as it is read while the next one is fetched;
        // the cursor follows in a last request, after every page it covers was committed.
        let (pages, mut received) = tokio::sync::mpsc::channel::<Page>(2);
        let mut stats = CommitStats::default();
        let mut last_update: Option<Timestamp> = None;
        let mut poison_count = 0;
        let src = source(tenant, stream);
        let list = self.client.list_pages(&target, &src, since, None, pages);
        let mut progress = Progress {
            tenant: tenant.name.clone(),
            stream,
            stage: Stage::Started,
            pages: 0,
            items: 0,
            since,
            started: Timestamp::now(),
            oldest: None,
        };
        let report = |p: &Progress| {
            if let Some(h) = &self.progress {
                (h.0)(p);
            }
        };
        report(&progress);
        let store_pages = async {
            let stored = async {
                let mut pending = std::collections::VecDeque::new();
                while let Some(page) = received.recv().await {
                    progress.stage = Stage::Page;
                    progress.pages += 1;
                    progress.items += (page.records.len() + page.poison.len()) as u64;
                    progress.oldest = page
                        .records
                        .iter()
                        .map(|f| f.record.last_update())
                        .chain(progress.oldest)
                        .min();
                    report(&progress);
                    for p in &page.poison {
                        tracing::error!(tenant = %tenant.name, %stream, item = p.item_id.as_deref().unwrap_or("?"), reason = %p.reason,
                            "Skipped an item the API returned in a form that cannot be read; it is kept in the store's poison table.");
                    }
                    poison_count += page.poison.len();
                    last_update = page
                        .records
                        .iter()
                        .map(|f| f.record.last_update())
                        .chain(last_update)
                        .max();
                    pending.push_back(
                        self.writer.submit(CommitRequest {
                            tenant: tenant.tenant_id.clone(),
                            versions: page
                                .records
                                .into_iter()
                                .map(|f| NewVersion {
                                    record: f.record,
                                    raw: f.raw,
                                })
                                .collect(),
                            poison: page
                                .poison
                                .into_iter()
                                .map(|p| PoisonRecord {
                                    stream,
                                    item_id: p.item_id,
                                    reason: p.reason,
                                    raw: p.raw,
                                })
                                .collect(),
                            cursor: None,
                            fence: fence.clone(),
                        }),
                    );
                    if pending.len() > PAGES_IN_FLIGHT
                        && let Some(p) = pending.pop_front()
                    {
                        stats += Writer::wait(p).await?;
                    }
                }
                // Pages already sent are committed whether or not the listing failed later (they
                // are versions like any other; only the cursor stays where it was).
                for p in pending {
                    stats += Writer::wait(p).await?;
                }
                Ok::<(), StoreError>(())
            }
            .await;
            // A failed commit ends the storing side: stop taking pages too, so the listing's
            // next send fails and it ends, instead of waiting on a full channel for ever.
            received.close();
            stored
        };
        let (listed, stored) = tokio::join!(list, store_pages);
        progress.stage = Stage::Finished;
        report(&progress);
        // A store failure is the cause when both failed (the listing was abandoned for it).
        stored?;
        let paging = listed?;
        // With nothing new the cursor stays (the success is recorded in the stream's health).
        if let Some(t) = last_update {
            stats += self
                .writer
                .commit(CommitRequest {
                    tenant: tenant.tenant_id.clone(),
                    versions: Vec::new(),
                    poison: Vec::new(),
                    cursor: Some((stream, t)),
                    fence: fence.clone(),
                })
                .await?;
        }
        // The cursor only moves forward: what it was, or what this pull saw if that is newer.
        let cursor = cursor.max(last_update);
        tracing::info!(tenant = %tenant.name, %stream, created = stats.created, updated = stats.updated, unchanged = stats.unchanged, pages = paging.pages, "Pulled.");
        Ok(TenantReport {
            name: tenant.name.clone(),
            stream,
            api,
            stats,
            last_update,
            cursor,
            poison: poison_count,
            pages: paging.pages,
            error: None,
            partial: paging.partial,
            expand_fallbacks: paging.expand_fallbacks,
            batched_reads: paging.batched_reads,
            since: Some(since),
        })
    }
}

/// What one sink's delivery in a pass came to.
pub type Delivery = Result<xdrsync_sinks::Delivered, xdrsync_sinks::SinkError>;

/// A tenant's credential for one pass: read once, shared by its streams.
type CredentialCell = tokio::sync::OnceCell<Result<Credential, String>>;

/// Runs `f` (store work) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
