//! An offline emulator of Entra ID, Microsoft Defender XDR and the Microsoft Graph security API.
//!
//! It is the test double of every other part of xdrsync and a product of its own: a security team
//! can build and test a SIEM integration against it without a Microsoft tenant. It follows
//! Microsoft's documented behaviour (`shared/docs/defender-api.md`, `entra-oauth.md`), never the
//! client's convenience.
//!
//! # Layout
//! - [`directory`]: tenants, app registrations, consents and roles.
//! - `entra`: token endpoints, discovery and signing keys.
//! - `api`: the XDR `/api/incidents` and Graph `/v1.0/security/incidents` endpoints.
//! - [`world`]: the deterministic, time-evolving incident history of each tenant.
//! - `render`: the legacy and Graph JSON shapes of the one incident model.
//! - [`odata`]: the `$filter` subset the list APIs accept.
//!
//! [`router`] builds the axum router, so unit tests need no socket; [`Emulator::start`] binds it
//! to a loopback port for tests that talk real HTTP.

// The SIEM detection literal in `alerts.rs` is a large `json!` object.
#![recursion_limit = "256"]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Serialize;
use xdrsync_jwt::SigningKey;
use xdrsync_model::Timestamp;

/// Declares an endpoint's gate (see [`api::Admitted`]): `gate!(Name, family, needs, quota)`.
macro_rules! gate {
    ($name:ident, $family:expr, $needs:expr, $quota:expr) => {
        /// An endpoint gate (family, roles or scopes, quota).
        pub(crate) struct $name;
        impl $crate::api::Gate for $name {
            const FAMILY: $crate::api::Family = $family;
            const NEEDS: &'static $crate::api::Needs = $needs;
            const QUOTA: Option<$crate::limits::Quota> = $quota;
        }
    };
}

mod admin;
mod alerts;
mod api;
mod authorize;
mod batch;
pub mod behaviour;
pub mod certs;
pub mod clock;
pub mod directory;
mod discovery;
mod entra;
mod errors;
pub mod evidence_types;
pub mod faults;
pub mod fixture;
mod hunting;
mod limits;
mod mutate;
pub mod odata;
mod render;
mod rng;
mod sessions;
pub mod tls;
pub mod world;

pub use behaviour::Behaviour;
pub use clock::Clock;
pub use directory::{AppSecret, AppSpec, Cloud, Directory, Resource, TenantSpec};
pub use render::BodyStyle;
use world::{EmuIncident, TenantData};

/// How the emulator is set up.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Tenants, apps and consents.
    pub directory: Directory,
    /// Realism switches and protocol alternatives.
    pub behaviour: Behaviour,
    /// How far back each tenant's incident history reaches from start-up.
    pub history: chrono::Duration,
    /// Lifetime of issued access tokens, in seconds.
    pub token_lifetime_secs: i64,
    /// Emulator seconds per real second (`--time-scale`).
    pub time_scale: f64,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            directory: Directory::demo(rand_seed()),
            behaviour: Behaviour::default(),
            history: chrono::Duration::days(7),
            token_lifetime_secs: 3599,
            time_scale: 1.0,
        }
    }
}

fn rand_seed() -> u64 {
    let u = uuid::Uuid::new_v4();
    let b = u.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// The emulator's shared state. Cloning is cheap (an `Arc`).
#[derive(Clone)]
pub struct EmulatorState(Arc<Inner>);

struct Inner {
    /// Read on every token request and API call; written only by admin operations.
    /// Copy-on-write: readers take a cheap `Arc` snapshot; admin changes replace it.
    directory: RwLock<Arc<Directory>>,
    clock: Clock,
    /// Signing keys, newest (the one that signs) first; older ones still verify until
    /// dropped by the next rotation, as Entra publishes old and new keys side by side.
    keys: RwLock<Vec<SigningKey>>,
    /// Authorization codes, refresh tokens and device codes.
    sessions: Mutex<sessions::Sessions>,
    /// Per-(app, tenant, API) call history for rate limits.
    limits: Mutex<limits::Limiter>,
    behaviour: Behaviour,
    history: chrono::Duration,
    token_lifetime_secs: i64,
    started: Timestamp,
    /// Tenant id → its incident history. One lock: requests are short and the emulator must
    /// never be the bottleneck, but correctness over a consistent snapshot matters more.
    world: Mutex<HashMap<String, TenantData>>,
    /// Set once the listener is bound, so links in bodies point at it.
    base_url: RwLock<String>,
    tokens_issued: AtomicU64,
    pages_served: AtomicU64,
    faults_injected: AtomicU64,
    basic_client_secrets: AtomicU64,
    throttled: AtomicU64,
    batches: AtomicU64,
    hosts: Mutex<BTreeMap<String, u64>>,
    /// Rendered JSON per incident version and shape: a version never changes, so it is
    /// rendered once however many pages carry it (the emulator must not be the bottleneck).
    rendered: Mutex<HashMap<RenderKey, Arc<str>>>,
    /// Injected faults; read by the middleware on every request.
    faults: faults::Faults,
}

/// (tenant, incident id, last-update ticks, shape): one rendered incident version.
type RenderKey = (String, u64, i64, RenderKind);

fn render_key(tenant: &str, inc: &EmuIncident, kind: RenderKind) -> RenderKey {
    (tenant.to_owned(), inc.id, inc.last_update.ticks(), kind)
}

/// One entry of a page read under the world lock ([`EmulatorState::cached`]).
#[derive(Debug)]
pub(crate) enum Cached {
    /// Rendered before.
    Hit(Arc<str>),
    /// Not yet: the incident version to render.
    Miss(Box<EmuIncident>),
}

/// Which shape an incident is rendered in (a key of the render cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RenderKind {
    /// Legacy XDR.
    Xdr,
    /// Graph, with or without alerts and unknown enum members.
    Graph {
        /// `$expand=alerts`.
        expand: bool,
        /// How the caller sees enum members.
        view: crate::render::GraphView,
    },
}

/// Counters of what the emulator has served.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stats {
    /// Access tokens issued.
    pub tokens_issued: u64,
    /// List pages served.
    pub pages_served: u64,
    /// Faults injected.
    pub faults_injected: u64,
    /// Client secrets received in an HTTP Basic `Authorization` header (`client_secret_basic`)
    /// rather than the form body.
    pub basic_client_secrets: u64,
    /// Calls refused with 429 because a quota was spent.
    pub throttled: u64,
    /// Requests held now by a `hold` fault.
    pub requests_held: u64,
    /// Graph `$batch` requests answered (each request inside is counted as itself too).
    pub batches: u64,
}

impl EmulatorState {
    /// Builds the state; generates a fresh 2048-bit signing key.
    pub fn new(config: EmulatorConfig) -> Self {
        let key = certs::token_signing_key()
            .unwrap_or_else(|e| panic!("signing key generation failed: {e}"));
        let clock = Clock::new(config.time_scale);
        let started = clock.now();
        EmulatorState(Arc::new(Inner {
            directory: RwLock::new(Arc::new(config.directory)),
            clock,
            keys: RwLock::new(vec![key]),
            sessions: Mutex::new(sessions::Sessions::default()),
            limits: Mutex::new(limits::Limiter::default()),
            behaviour: config.behaviour,
            history: config.history,
            token_lifetime_secs: config.token_lifetime_secs,
            started,
            world: Mutex::new(HashMap::new()),
            base_url: RwLock::new("http://127.0.0.1".into()),
            tokens_issued: AtomicU64::new(0),
            basic_client_secrets: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            hosts: Mutex::new(BTreeMap::new()),
            pages_served: AtomicU64::new(0),
            faults_injected: AtomicU64::new(0),
            rendered: Mutex::new(HashMap::new()),
            faults: faults::Faults::default(),
        }))
    }

    /// The emulator clock.
    pub fn clock(&self) -> &Clock {
        &self.0.clock
    }

    /// A snapshot of the directory.
    pub fn directory(&self) -> Arc<Directory> {
        self.0
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the directory (add tenants or apps, grant or revoke roles).
    pub fn update_directory(&self, f: impl FnOnce(&mut Directory)) {
        let mut guard = self.0.directory.write().unwrap_or_else(|e| e.into_inner());
        let dir = Arc::make_mut(&mut guard);
        f(dir);
        dir.reindex();
    }

    /// The key that signs new tokens.
    pub(crate) fn signing_key(&self) -> SigningKey {
        let keys = self.0.keys.read().unwrap_or_else(|e| e.into_inner());
        // Never empty: built with one key, and rotation inserts the new one before it
        // truncates to two.
        #[allow(clippy::indexing_slicing)]
        keys[0].clone()
    }

    /// The public key with id `kid`, if it still verifies tokens.
    pub(crate) fn verifier(&self, kid: &str) -> Option<rsa::RsaPublicKey> {
        self.0
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|k| k.kid() == kid)
            .map(SigningKey::public_key)
    }

    /// Every key that still verifies tokens.
    pub(crate) fn verification_keys(&self) -> Vec<SigningKey> {
        self.0
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Rotates the signing key: a new key signs from now on; the previous one still verifies
    /// (until the next rotation). Returns the new key id.
    pub fn rotate_signing_key(&self) -> String {
        let key = certs::token_signing_key()
            .unwrap_or_else(|e| panic!("signing key generation failed: {e}"));
        let kid = key.kid().to_owned();
        let mut keys = self.0.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.insert(0, key);
        keys.truncate(2);
        kid
    }

    pub(crate) fn sessions(&self) -> std::sync::MutexGuard<'_, sessions::Sessions> {
        self.0.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn limiter(&self) -> std::sync::MutexGuard<'_, limits::Limiter> {
        self.0.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Revokes every refresh token of `client_id` in `tenant` (as an admin would).
    pub fn revoke_refresh_tokens(&self, client_id: &str, tenant: &str) -> usize {
        let mut s = self.sessions();
        let mut n = 0;
        for r in s.refresh.values_mut() {
            if r.grant.client_id.eq_ignore_ascii_case(client_id)
                && r.grant.user.tenant.eq_ignore_ascii_case(tenant)
                && !r.revoked
            {
                r.revoked = true;
                n += 1;
            }
        }
        n
    }

    pub(crate) fn body_style(&self) -> BodyStyle {
        self.0.behaviour.body_style
    }

    /// The behaviour switches.
    pub fn behaviour(&self) -> &Behaviour {
        &self.0.behaviour
    }

    pub(crate) fn token_lifetime_secs(&self) -> i64 {
        self.0.token_lifetime_secs
    }

    /// The base URL links in bodies point at.
    pub fn base_url(&self) -> String {
        self.0
            .base_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_base_url(&self, url: String) {
        *self.0.base_url.write().unwrap_or_else(|e| e.into_inner()) = url;
    }

    pub(crate) fn count_token_issued(&self) {
        self.0.tokens_issued.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_basic_client_secret(&self) {
        self.0.basic_client_secrets.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_fault(&self) {
        self.0.faults_injected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn faults(&self) -> &faults::Faults {
        &self.0.faults
    }

    /// Lets every request held by a `hold` fault go on (as `POST /_emulator/faults/release`).
    pub fn release_held(&self) {
        self.0.faults.release();
    }

    /// Removes every fault rule (as `DELETE /_emulator/faults` does).
    pub fn clear_faults(&self) {
        self.0.faults.clear();
    }

    /// Adds a fault rule (as `POST /_emulator/faults` does).
    pub fn add_fault(&self, rule: faults::FaultRule) {
        self.0.faults.add(rule);
    }

    pub(crate) fn count_page_served(&self) {
        self.0.pages_served.fetch_add(1, Ordering::Relaxed);
    }

    /// What the emulator has served so far.
    pub fn stats(&self) -> Stats {
        Stats {
            tokens_issued: self.0.tokens_issued.load(Ordering::Relaxed),
            pages_served: self.0.pages_served.load(Ordering::Relaxed),
            faults_injected: self.0.faults_injected.load(Ordering::Relaxed),
            basic_client_secrets: self.0.basic_client_secrets.load(Ordering::Relaxed),
            throttled: self.0.throttled.load(Ordering::Relaxed),
            requests_held: self.0.faults.held(),
            batches: self.0.batches.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn count_host(&self, host: String) {
        let mut hosts = self.0.hosts.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a client sending random names cannot grow it without end.
        if hosts.len() < 1000 || hosts.contains_key(&host) {
            *hosts.entry(host).or_insert(0) += 1;
        }
    }

    /// Requests received per `Host` name (without port): which names clients called the
    /// emulator by (`graph.microsoft.com` through `[cloud] connect_to`, else `127.0.0.1`).
    pub fn hosts_seen(&self) -> BTreeMap<String, u64> {
        self.0
            .hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn count_batch(&self) {
        self.0.batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_throttled(&self) {
        self.0.throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `f` on a tenant's data brought up to the current emulator time.
    fn with_tenant<R>(&self, tenant: &str, f: impl FnOnce(&mut TenantData) -> R) -> Option<R> {
        let spec = self.directory().tenant(tenant).cloned()?;
        let now = self.clock().now();
        let mut tenants = self.0.world.lock().unwrap_or_else(|e| e.into_inner());
        let data = tenants.entry(spec.id.clone()).or_insert_with(|| {
            let b = &self.0.behaviour;
            let realism = world::Realism {
                tie_probability: b.tie_probability,
                merge_probability: b.merge_probability,
                enum_drift: b.enum_drift,
                keep_history: b.ingestion_lag_secs > 0,
                lag_varies: b.ingestion_lag_varies,
            };
            TenantData::with_realism(spec, self.0.started.sub(self.0.history), realism)
        });
        data.advance_to(now);
        Some(f(data))
    }

    /// The tenant's incidents as the list APIs see them now (after ingestion lag, within
    /// retention) that satisfy `pred`.
    pub fn incidents(&self, tenant: &str, pred: impl Fn(&EmuIncident) -> bool) -> Vec<EmuIncident> {
        self.visible_filter_map(tenant, |i| pred(i).then(|| i.clone()))
    }

    /// What `f` makes of each of the tenant's incidents as the list APIs see them now, where
    /// it makes something: `f` runs under the world lock and decides what is copied out.
    pub(crate) fn visible_filter_map<T>(
        &self,
        tenant: &str,
        f: impl FnMut(&EmuIncident) -> Option<T>,
    ) -> Vec<T> {
        let now = self.clock().now();
        let lag = chrono::Duration::seconds(self.0.behaviour.ingestion_lag_secs as i64);
        let retention = chrono::Duration::days(i64::from(self.0.behaviour.retention_days));
        self.with_tenant(tenant, |d| {
            d.visible(now, lag, retention)
                .into_iter()
                .filter_map(f)
                .collect()
        })
        .unwrap_or_default()
    }

    /// Runs `f` on one page of the tenant's visible incidents that satisfy `pred`, sorted by
    /// last update (newest first, or oldest first with `ascending`), without copying the rest.
    /// `range` is the last-update range the filter allows (a superset; `pred` decides).
    /// Also returns how many matched: exactly with `count`, else at least enough to tell
    /// whether more follow the page (`skip + page + 1` when they do). `None` if there is no
    /// such tenant.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn page<R>(
        &self,
        tenant: &str,
        pred: impl Fn(&EmuIncident) -> bool,
        range: (Option<Timestamp>, Option<Timestamp>),
        ascending: bool,
        (skip, top, count): (usize, usize, bool),
        f: impl FnOnce(&[&EmuIncident]) -> R,
    ) -> Option<(usize, R)> {
        let now = self.clock().now();
        let lag = chrono::Duration::seconds(self.0.behaviour.ingestion_lag_secs as i64);
        let retention = chrono::Duration::days(i64::from(self.0.behaviour.retention_days));
        self.with_tenant(tenant, |d| {
            // The visible versions in order, read only as far as the page (and the one
            // after it) needs (see `TenantData::visible_in`).
            let oldest = now.sub(retention);
            let from = range.0.map_or(oldest, |t| t.max(oldest));
            let mut matching = d
                .visible_in(now, lag, (from, range.1), ascending)
                .filter(|i| pred(i));
            let wanted = skip.saturating_add(top);
            let mut seen = 0;
            let page: Vec<&EmuIncident> = matching
                .by_ref()
                .take(wanted)
                .inspect(|_| seen += 1)
                .skip(skip)
                .collect();
            let total = if count {
                seen + matching.count()
            } else {
                seen + usize::from(matching.next().is_some())
            };
            (total, f(&page))
        })
    }

    /// The rendered JSON of one incident version, from the cache or `render`.
    /// Called under the world lock (in a [`EmulatorState::page`] closure): the cached
    /// rendering of `inc`, or a copy of it to render with [`EmulatorState::render_misses`]
    /// once the lock is released, so one request's rendering does not hold up every other.
    pub(crate) fn cached(&self, tenant: &str, inc: &EmuIncident, kind: RenderKind) -> Cached {
        let key = render_key(tenant, inc, kind);
        match self
            .0
            .rendered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            Some(hit) => Cached::Hit(hit.clone()),
            None => Cached::Miss(Box::new(inc.clone())),
        }
    }

    /// Renders the misses of [`EmulatorState::cached`] (outside the world lock) and caches
    /// them; the page's texts in order.
    pub(crate) fn render_misses(
        &self,
        tenant: &str,
        page: Vec<Cached>,
        kind: RenderKind,
        render: impl Fn(&EmuIncident) -> serde_json::Value,
    ) -> Vec<Arc<str>> {
        page.into_iter()
            .map(|c| match c {
                Cached::Hit(text) => text,
                Cached::Miss(inc) => {
                    let text: Arc<str> = Arc::from(render(&inc).to_string());
                    let key = render_key(tenant, &inc, kind);
                    let mut cache = self.0.rendered.lock().unwrap_or_else(|e| e.into_inner());
                    if cache.len() > 200_000 {
                        cache.clear();
                    }
                    cache.insert(key, text.clone());
                    text
                }
            })
            .collect()
    }

    /// Changes one incident now (a PATCH); `None` when tenant or incident do not exist.
    pub(crate) fn patch_incident(
        &self,
        tenant: &str,
        id: u64,
        f: impl FnOnce(&mut EmuIncident) -> Result<(), String>,
    ) -> Option<Result<EmuIncident, String>> {
        let now = self.clock().now();
        self.with_tenant(tenant, |d| d.patch(id, now, f)).flatten()
    }

    /// A portal bulk action: the `count` most recently updated incidents of `tenant` are
    /// assigned to `who` at one instant, so they share one last-update time (a tie group no
    /// time boundary can split). Returns their ids (`None` if there is no such tenant).
    pub fn bulk_assign(&self, tenant: &str, count: usize, who: &str) -> Option<Vec<u64>> {
        let now = self.clock().now();
        let ids: Vec<u64> = {
            let mut all = self.incidents(tenant, |i| i.redirect.is_none());
            all.sort_by_key(|i| std::cmp::Reverse(i.last_update));
            all.iter().take(count).map(|i| i.id).collect()
        };
        self.with_tenant(tenant, |d| {
            for id in &ids {
                d.patch(*id, now, |i| {
                    i.assigned_to = Some(who.to_owned());
                    Ok(())
                });
            }
        })?;
        Some(ids)
    }

    /// Creates `count` new incidents in `tenant` now (`None` if there is no such tenant).
    pub fn create_incidents(&self, tenant: &str, count: u32) -> Option<Vec<u64>> {
        let now = self.clock().now();
        self.with_tenant(tenant, |d| d.create_now(now, count))
    }

    /// The ground truth: every incident version the tenant has had, oldest first.
    pub fn ground_truth(&self, tenant: &str) -> Vec<world::VersionRecord> {
        self.with_tenant(tenant, |d| d.versions.clone())
            .unwrap_or_default()
    }

    /// Every alert version of `tenant` that ever existed, in the order they happened.
    pub fn alert_ground_truth(&self, tenant: &str) -> Vec<world::AlertVersionRecord> {
        self.with_tenant(tenant, |d| d.alert_versions.clone())
            .unwrap_or_default()
    }
}

/// Builds the emulator's router over `state`.
pub fn router(state: EmulatorState) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/token", post(entra::token_v1))
        .route("/{tenant}/oauth2/v2.0/token", post(entra::token_v2))
        .route("/{tenant}/oauth2/devicecode", post(entra::devicecode_v1))
        .route(
            "/{tenant}/oauth2/v2.0/devicecode",
            post(entra::devicecode_v2),
        )
        .route("/{tenant}/oauth2/authorize", get(authorize::authorize_v1))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(authorize::authorize_v2),
        )
        .route("/{tenant}/adminconsent", get(authorize::adminconsent_v1))
        .route(
            "/{tenant}/v2.0/adminconsent",
            get(authorize::adminconsent_v2),
        )
        .route(
            "/devicelogin",
            get(authorize::devicelogin_page).post(authorize::devicelogin_submit),
        )
        .route("/_emulator/authorize", post(authorize::decision))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery::openid_v2),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(discovery::openid_v1),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(discovery::jwks))
        .route("/{tenant}/discovery/keys", get(discovery::jwks))
        .route("/{tenant}/discovery/instance", get(discovery::instance))
        .route("/metadata/identity/oauth2/token", get(entra::imds))
        .route("/api/incidents", get(api::xdr_list))
        .route(
            "/api/incidents/{id}",
            get(api::xdr_get).patch(mutate::xdr_patch),
        )
        .route("/api/alerts", get(alerts::mde_alerts))
        .route("/api/v1.0/alerts", get(alerts::mde_alerts))
        .route("/alertexporter/api/alerts", get(alerts::siem_alerts))
        .route("/api/advancedhunting/run", post(hunting::xdr_run))
        .route("/v1.0/security/runHuntingQuery", post(hunting::graph_run))
        .route("/v1.0/security/alerts_v2", get(alerts::alerts_v2))
        .route(
            "/v1.0/security/alerts_v2/{id}",
            get(alerts::alert_v2).patch(mutate::graph_alert_patch),
        )
        .route(
            "/v1.0/security/alerts_v2/{id}/comments",
            post(mutate::graph_alert_comment),
        )
        .route(
            "/v1.0/security/incidents/{id}/comments",
            post(mutate::graph_incident_comment),
        )
        .route("/v1.0/$batch", post(batch::graph_batch))
        .route("/v1.0/security/incidents", get(api::graph_list))
        .route("/v1.0/security/incidents/$count", get(api::graph_count))
        .route(
            "/v1.0/security/incidents/{id}",
            get(api::graph_get).patch(mutate::graph_patch),
        )
        .route("/_emulator/health", get(|| async { "ok" }))
        .route("/_emulator/stats", get(admin::stats))
        .route("/_emulator/directory", get(admin::directory))
        .route("/_emulator/tenants", post(admin::add_tenant))
        .route(
            "/_emulator/tenants/{tenant}/incidents",
            post(admin::add_incidents),
        )
        .route("/_emulator/apps", post(admin::add_app))
        .route(
            "/_emulator/apps/{client}/consents/{tenant}",
            axum::routing::put(admin::grant).delete(admin::revoke),
        )
        .route(
            "/_emulator/apps/{client}/revoke-refresh-tokens/{tenant}",
            post(admin::revoke_refresh),
        )
        .route("/_emulator/ground-truth/{tenant}", get(admin::ground_truth))
        .route(
            "/_emulator/faults",
            post(admin::add_fault)
                .get(admin::list_faults)
                .delete(admin::clear_faults),
        )
        .route(
            "/_emulator/faults/release",
            post(
                |axum::extract::State(state): axum::extract::State<EmulatorState>| async move {
                    state.release_held();
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route("/_emulator/clock/advance", post(admin::advance_clock))
        .route("/_emulator/keys/rotate", post(admin::rotate_keys))
        .fallback(unknown_route)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            faults::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            service_headers,
        ))
        .with_state(state)
}

/// The name of a `Host` header, without its port (`[::1]:8443` → `[::1]`).
fn host_name(host: &str) -> String {
    match host.strip_prefix('[') {
        Some(rest) => format!("[{}]", rest.split(']').next().unwrap_or_default()),
        None => host.split(':').next().unwrap_or_default().to_owned(),
    }
}

/// A request to a `wdatp-alertexporter-*` host (reached through `[cloud] connect_to`) is the SIEM
/// API: its `/api/alerts` is routed to the emulator's `/alertexporter/api/alerts`.
fn siem_by_host<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    let siem = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.starts_with("wdatp-alertexporter-"));
    if siem && req.uri().path().starts_with("/api/") {
        let rewritten = match req.uri().query() {
            Some(q) => format!("/alertexporter{}?{q}", req.uri().path()),
            None => format!("/alertexporter{}", req.uri().path()),
        };
        if let Ok(uri) = rewritten.parse() {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// A route the emulator does not serve, answered in the shape of the service the path belongs
/// to: Graph's `BadRequest` naming the segment for `/v1.0/…` and `/beta/…`, the XDR shape
/// otherwise.
async fn unknown_route(
    axum::extract::State(state): axum::extract::State<EmulatorState>,
    uri: axum::http::Uri,
) -> axum::response::Response {
    let path = uri.path();
    if path.starts_with("/v1.0/") || path.starts_with("/beta/") {
        let segment = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or_default();
        return errors::graph(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{segment}'."),
            state.clock().now(),
            None,
        );
    }
    errors::xdr(
        StatusCode::NOT_FOUND,
        "NotFound",
        "The requested resource was not found.",
    )
}

/// The headers Graph and Entra put on every answer: Graph's `request-id`, `client-request-id`
/// (the caller's, echoed, else the request id) and `x-ms-ags-diagnostic`; Entra's
/// `x-ms-request-id` and the caller's `client-request-id` echoed (MSAL.NET checks the
/// correlation id it sent comes back).
async fn service_headers(
    axum::extract::State(state): axum::extract::State<EmulatorState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::HeaderValue;
    let path = req.uri().path().to_owned();
    if let Some(host) = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        state.count_host(host_name(host));
    }
    let sent = req.headers().get("client-request-id").cloned();
    let mut resp = next.run(req).await;
    let graph = path.starts_with("/v1.0/") || path.starts_with("/beta/");
    let entra = path.contains("/oauth2/");
    if !graph && !entra {
        return resp;
    }
    let fresh = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).ok();
    let h = resp.headers_mut();
    if graph {
        if !h.contains_key("request-id")
            && let Some(v) = fresh.clone()
        {
            h.insert("request-id", v);
        }
        let echo = sent.clone().or_else(|| h.get("request-id").cloned());
        if let Some(v) = echo {
            h.insert("client-request-id", v);
        }
        h.insert(
            "x-ms-ags-diagnostic",
            HeaderValue::from_static(
                r#"{"ServerInfo":{"DataCenter":"West Europe","Slice":"E","Ring":"5","ScaleUnit":"003","RoleInstance":"AM1PEPF00000000"}}"#,
            ),
        );
    } else {
        if let Some(v) = fresh {
            h.insert("x-ms-request-id", v);
        }
        if let Some(v) = sent {
            h.insert("client-request-id", v);
        }
    }
    resp
}

/// The contract other tools read (`emulator.json`).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Contract {
    /// Where everything is served.
    pub base_url: String,
    /// The CA certificate to trust, when serving TLS.
    pub ca_cert: Option<PathBuf>,
    /// Tenants.
    pub tenants: Vec<ContractTenant>,
    /// App registrations.
    pub apps: Vec<ContractApp>,
}

/// A tenant in the contract.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ContractTenant {
    /// GUID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Domain.
    pub domain: String,
    /// The Microsoft cloud the tenant lives in (`init` writes it as `[cloud] name`).
    #[serde(default)]
    pub cloud: Cloud,
}

/// An app in the contract.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ContractApp {
    /// Client id.
    pub client_id: String,
    /// Display name.
    pub name: String,
    /// Home tenant.
    pub home_tenant: String,
    /// Multi-tenant.
    pub multi_tenant: bool,
    /// The first valid secret.
    pub secret: String,
    /// The first generated certificate, if any.
    pub certificate: Option<ContractCertificate>,
    /// Tenant → granted roles (all resources).
    pub consented_tenants: BTreeMap<String, Vec<String>>,
}

/// A generated app certificate in the contract.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ContractCertificate {
    /// Certificate PEM file.
    pub cert_pem: PathBuf,
    /// Private key PEM file (PKCS#8).
    pub key_pem: PathBuf,
    /// SHA-1 thumbprint, hex.
    pub thumbprint_sha1: String,
    /// SHA-256 thumbprint, hex.
    pub thumbprint_sha256: String,
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The behaviour switches cannot be served.
    #[error("{0}")]
    Behaviour(String),
}

/// A running emulator on a loopback port.
pub struct Emulator {
    state: EmulatorState,
    addr: SocketAddr,
    tls: Option<tls::TlsFiles>,
    cert_paths: fixture::CertPaths,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Emulator {
    /// Binds `bind` (use `127.0.0.1:0` for a free port) and serves plain HTTP in the background.
    pub async fn start(config: EmulatorConfig, bind: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(config, bind, None)
            .await
            .map_err(|e| match e {
                StartError::Bind { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            })
    }

    /// Binds `bind` and serves, over TLS with `tls` when given.
    pub async fn start_with(
        config: EmulatorConfig,
        bind: SocketAddr,
        tls: Option<tls::TlsFiles>,
    ) -> Result<Self, StartError> {
        config.behaviour.validate().map_err(StartError::Behaviour)?;
        let acceptor = tls.as_ref().map(tls::acceptor).transpose()?;
        let state = EmulatorState::new(config);
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|source| StartError::Bind { addr: bind, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr: bind, source })?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        state.set_base_url(format!("{scheme}://{addr}"));
        // The SIEM exporter's path is `/api/alerts` on its own host, which the router serves
        // at `/alertexporter/api/alerts` (`/api/alerts` is MDE's): chosen by `Host`.
        let app = tower::ServiceExt::map_request(
            router(state.clone()),
            siem_by_host::<hyper::body::Incoming>,
        );
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = rx.changed() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                let app = app.clone();
                let acceptor = acceptor.clone();
                let mut conn_rx = rx.clone();
                tokio::spawn(async move {
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let result = match acceptor {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls) => {
                                let conn = builder
                                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                                tokio::select! { r = conn => r, _ = conn_rx.changed() => Ok(()) }
                            }
                            Err(error) => {
                                tracing::debug!(%error, "TLS handshake failed.");
                                Ok(())
                            }
                        },
                        None => {
                            let conn = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                            tokio::select! { r = conn => r, _ = conn_rx.changed() => Ok(()) }
                        }
                    };
                    if let Err(error) = result {
                        tracing::debug!(%error, "Connection ended with an error.");
                    }
                });
            }
        });
        Ok(Emulator {
            state,
            addr,
            tls,
            cert_paths: fixture::CertPaths::new(),
            shutdown: Some(tx),
            task,
        })
    }

    /// Records where generated app certificates were written, for the contract.
    pub fn with_cert_paths(mut self, paths: fixture::CertPaths) -> Self {
        self.cert_paths = paths;
        self
    }

    /// The base URL (`http(s)://127.0.0.1:PORT`).
    pub fn base_url(&self) -> String {
        self.state.base_url()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state, for inspecting or changing the emulator from a test.
    pub fn state(&self) -> &EmulatorState {
        &self.state
    }

    /// The `emulator.json` contract.
    pub fn contract(&self) -> Contract {
        let dir = self.state.directory();
        Contract {
            base_url: self.base_url(),
            ca_cert: self.tls.as_ref().map(|t| t.ca_cert.clone()),
            tenants: dir
                .tenants
                .iter()
                .map(|t| ContractTenant {
                    id: t.id.clone(),
                    name: t.name.clone(),
                    domain: t.domain.clone(),
                    cloud: t.cloud,
                })
                .collect(),
            apps: dir
                .apps
                .iter()
                .map(|a| ContractApp {
                    client_id: a.client_id.clone(),
                    name: a.name.clone(),
                    home_tenant: a.home_tenant.clone(),
                    multi_tenant: a.multi_tenant,
                    secret: a
                        .secrets
                        .first()
                        .map(|s| s.value.clone())
                        .unwrap_or_default(),
                    certificate: self
                        .cert_paths
                        .get(&a.client_id)
                        .and_then(|v| v.first())
                        .and_then(|(_, cert, key)| {
                            let c = a.certificates.first()?;
                            Some(ContractCertificate {
                                cert_pem: cert.clone(),
                                key_pem: key.clone(),
                                thumbprint_sha1: c.thumbprint_sha1.clone(),
                                thumbprint_sha256: c.thumbprint_sha256.clone(),
                            })
                        }),
                    consented_tenants: a
                        .consents
                        .iter()
                        .map(|(t, by_res)| {
                            let mut roles: Vec<String> =
                                by_res.values().flatten().cloned().collect();
                            roles.sort();
                            roles.dedup();
                            (t.clone(), roles)
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Stops accepting, ends open connections and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
    }
}
