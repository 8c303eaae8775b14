//! Client-side rate budgets at Microsoft's documented quotas.
//!
//! Microsoft counts calls per (app, tenant, API) and answers 429 once a quota is spent; refused
//! calls count too, so a client that simply retries keeps the computed rate high for longer
//! (peers.md §10.6, §12.4). Every peer throttles per input, after the 429. xdrsync keeps one
//! budget per (client id, tenant, quota family) for the whole process: every stream, command
//! and tenant task that calls that API with that app waits for a slot *before* sending, so
//! xdrsync does not cause 429s itself. A 429 that still arrives (another process shares the app,
//! or the service is stricter than documented) pauses the whole budget for `Retry-After`.
//!
//! | family | windows | source (defender-api.md) |
//! |---|---|---|
//! | XDR list incidents | 50/min, 1,500/h | §1.5 |
//! | XDR get incident | 100/min, 1,500/h | §1.5 |
//! | MDE alerts | 100/min, 1,500/h | §3.2 |
//! | advanced hunting | 45/min, 1,500/h | §4 |
//! | Graph `/security` | 150/min | §2.4 |
//! | SIEM API | counted with MDE alerts (same platform; no own figure documented) | §3.1 |
//!
//! Other xdrsync processes on the same store (a `backfill` beside `run`) spend the same quota:
//! with a [`SharedLedger`] each budget also counts the calls the others recorded there, and a
//! 429 pause one of them met, so every process paces inside one quota.
//!
//! Windows slide. The server counts a call when it arrives, somewhere between our send and its
//! answer, so a call is counted here from when it is sent (in flight, it holds its slot) and,
//! once answered, from the answer's time ([`Ticket`]): the window then never closes early
//! however long the request took to arrive. A small safety margin (2 % of the window plus
//! 25 ms) covers the rest (clock steps, scheduling).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

/// Where processes sharing a store record their calls (wall-clock milliseconds), so each can
/// count the others'. Implementations swallow their own errors (logging them): a ledger that
/// fails leaves each process with its own budget, as before.
///
/// Checking and recording cannot be one step across processes, so a call is *reserved* first
/// (a row whose id orders it among every process's calls), then checked against the calls
/// written before it; one that no longer fits is withdrawn and waits. Two processes that
/// race for the last slot therefore never both take it.
pub trait SharedLedger: Send + Sync + std::fmt::Debug {
    /// Reserves a call of `key` at `at_ms`; its row (`None`: the ledger failed).
    fn reserve(&self, key: &str, at_ms: i64) -> Option<i64>;
    /// Gives back a reservation that did not fit.
    fn withdraw(&self, row: i64);
    /// The call of `row` now counts from `to_ms`.
    fn moved(&self, row: i64, to_ms: i64);
    /// Other processes' calls of `key` at or after `since_ms` (only those written before
    /// `before`, when given), and the latest pause of `key`.
    fn others(&self, key: &str, since_ms: i64, before: Option<i64>) -> (Vec<i64>, Option<i64>);
    /// Nobody calls `key` before `until_ms`.
    fn pause(&self, key: &str, until_ms: i64);
    /// Takes `n` tokens from the shared bucket `key` (at most `capacity`, refilled at
    /// `per_sec`): how long to wait before spending them (`None`: the ledger has no buckets,
    /// or failed).
    fn take(&self, _key: &str, _capacity: f64, _per_sec: f64, _n: f64) -> Option<Duration> {
        None
    }
}

/// Graph's limit per app across all its tenants: 130,000 requests per 10 seconds
/// (defender-api.md §2.4, R49b), shared by every process of a cluster through the ledger's
/// token bucket.
pub const GRAPH_PER_APP: (Duration, usize) = (Duration::from_secs(10), 130_000);

/// Tokens of [`GRAPH_PER_APP`] a process takes from the shared bucket at once (one ledger
/// round trip per this many Graph calls; a process holds at most this many unspent).
const GRAPH_PER_APP_PREPAID: f64 = 100.0;

/// Milliseconds since the Unix epoch (the ledger's clock).
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The ledger key of a budget.
fn ledger_key(app: &str, tenant: &str, quota: Quota) -> String {
    format!("{}|{tenant}|{}", app.to_ascii_lowercase(), quota.as_str())
}

/// A quota family: calls that Microsoft counts together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quota {
    /// `GET /api/incidents`.
    XdrList,
    /// `GET /api/incidents/{id}`.
    XdrGet,
    /// `PATCH /api/incidents/{id}` (the update API's own quota).
    XdrUpdate,
    /// `GET /api/alerts` (MDE).
    Mde,
    /// Advanced hunting (`/api/advancedhunting/run`, Graph `runHuntingQuery`).
    Hunting,
    /// Graph `/security/*`.
    Graph,
}

impl Quota {
    /// The quota family of a request, from its path (`None`: no documented quota).
    pub fn of(url: &Url) -> Option<Quota> {
        let path = url.path().trim_end_matches('/');
        if path.contains("/security/runHuntingQuery") || path.contains("/advancedhunting/") {
            Some(Quota::Hunting)
        } else if path.contains("/v1.0/security/") || path.contains("/beta/security/") {
            Some(Quota::Graph)
        } else if path.ends_with("/api/incidents") {
            Some(Quota::XdrList)
        } else if path.contains("/api/incidents/") {
            Some(Quota::XdrGet)
        } else if path.ends_with("/api/alerts") || path.contains("/api/alerts/") {
            Some(Quota::Mde)
        } else {
            None
        }
    }

    /// `(window, calls allowed in it)`, at Microsoft's clock.
    pub fn windows(self) -> &'static [(Duration, usize)] {
        const MIN: Duration = Duration::from_secs(60);
        const HOUR: Duration = Duration::from_secs(3600);
        match self {
            Quota::XdrList | Quota::XdrUpdate => &[(MIN, 50), (HOUR, 1500)],
            Quota::XdrGet | Quota::Mde => &[(MIN, 100), (HOUR, 1500)],
            Quota::Hunting => &[(MIN, 45), (HOUR, 1500)],
            Quota::Graph => &[(MIN, 150)],
        }
    }

    /// A short name for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::XdrList => "xdr-list",
            Quota::XdrGet => "xdr-get",
            Quota::XdrUpdate => "xdr-update",
            Quota::Mde => "mde",
            Quota::Hunting => "hunting",
            Quota::Graph => "graph",
        }
    }
}

#[derive(Debug, Default)]
struct Window {
    /// When the calls still inside the longest window were sent (answered, once they were),
    /// oldest first.
    sent: VecDeque<Instant>,
    /// A 429 told us to wait until then.
    paused_until: Option<Instant>,
}

/// One (app, tenant, quota) budget. The async mutex queues callers in order, so the waiting is
/// fair across the streams and tenants that share it.
type Budget = tokio::sync::Mutex<Window>;

/// One counted call: handed back with [`RateBudgets::answered`].
#[derive(Debug)]
#[must_use = "hand the ticket back with `RateBudgets::answered` once the call is answered"]
pub struct Ticket {
    budget: Arc<Budget>,
    at: Instant,
    /// The call's row in the ledger.
    shared: Option<i64>,
}

/// Every budget of the process.
#[derive(Debug)]
pub struct RateBudgets {
    enabled: bool,
    /// Quota windows run this many times faster (an emulator's `--time-scale`).
    time_scale: f64,
    budgets: Mutex<HashMap<(String, String, Quota), Arc<Budget>>>,
    /// The calls of other processes on the same store.
    ledger: Option<Arc<dyn SharedLedger>>,
    /// Tokens of each app's [`GRAPH_PER_APP`] bucket taken and not yet spent.
    prepaid: Mutex<HashMap<String, f64>>,
}

impl RateBudgets {
    /// Budgets at the documented quotas (`enabled = false`: no pacing, 429s still pause).
    pub fn new(enabled: bool, time_scale: f64) -> Self {
        RateBudgets {
            enabled,
            time_scale: if time_scale.is_finite() && time_scale >= 1.0 {
                time_scale
            } else {
                1.0
            },
            budgets: Mutex::new(HashMap::new()),
            ledger: None,
            prepaid: Mutex::new(HashMap::new()),
        }
    }

    /// These budgets, also counting (and recording) the calls of every process on `ledger`.
    pub fn with_ledger(mut self, ledger: Arc<dyn SharedLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    fn budget(&self, app: &str, tenant: &str, quota: Quota) -> Arc<Budget> {
        self.budgets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((app.to_ascii_lowercase(), tenant.to_owned(), quota))
            .or_default()
            .clone()
    }

    fn scaled(&self, d: Duration) -> Duration {
        d.div_f64(self.time_scale)
    }

    /// How long a Graph call of `app` waits for the app's share of [`GRAPH_PER_APP`], taken
    /// from the ledger's shared bucket [`GRAPH_PER_APP_PREPAID`] tokens at a time (`None`: no
    /// wait, or no shared bucket: one process alone cannot reach the limit).
    fn graph_per_app(&self, app: &str) -> Option<Duration> {
        let ledger = self.ledger.as_ref()?;
        let app = app.to_ascii_lowercase();
        let mut prepaid = self.prepaid.lock().unwrap_or_else(|e| e.into_inner());
        let left = prepaid.entry(app.clone()).or_insert(0.0);
        if *left >= 1.0 {
            *left -= 1.0;
            return None;
        }
        let (window, limit) = GRAPH_PER_APP;
        let per_sec = limit as f64 / self.scaled(window).as_secs_f64().max(0.001);
        let wait = ledger.take(
            &format!("{app}|*|graph-app"),
            limit as f64,
            per_sec,
            GRAPH_PER_APP_PREPAID,
        )?;
        *left = GRAPH_PER_APP_PREPAID - 1.0;
        (!wait.is_zero()).then_some(wait)
    }

    /// Waits until a call of `quota` by `app` in `tenant` fits the budget, then counts it; hand
    /// the ticket back with [`RateBudgets::answered`] when the server has answered.
    pub async fn acquire(&self, app: &str, tenant: &str, quota: Quota) -> Ticket {
        if self.enabled
            && quota == Quota::Graph
            && let Some(wait) = self.graph_per_app(app)
        {
            tracing::info!(
                app,
                wait_ms = wait.as_millis() as u64,
                "Waiting for the app's Graph limit across all tenants (shared by every worker)."
            );
            tokio::time::sleep(wait).await;
        }
        let budget = self.budget(app, tenant, quota);
        let mut w = budget.lock().await;
        let started = Instant::now();
        let key = self.ledger.as_ref().map(|_| ledger_key(app, tenant, quota));
        let mut reserved = None;
        let longest = self.scaled(
            quota
                .windows()
                .iter()
                .map(|w| w.0)
                .max()
                .unwrap_or_default(),
        );
        loop {
            let now = Instant::now();
            // What other processes spent (and a pause one of them met), as instants of ours.
            let mut others: Vec<Instant> = Vec::new();
            if let (Some(ledger), Some(key)) = (&self.ledger, &key) {
                let now_ms = wall_ms();
                let since = now_ms - i64::try_from(longest.as_millis()).unwrap_or(i64::MAX);
                let (calls, pause) = ledger.others(key, since, None);
                let at = |ms: i64| {
                    now.checked_sub(Duration::from_millis(
                        u64::try_from(now_ms - ms).unwrap_or(0),
                    ))
                    .unwrap_or(now)
                };
                if self.enabled {
                    others = calls.into_iter().map(at).collect();
                }
                if let Some(until) = pause.filter(|u| *u > now_ms) {
                    let until = now
                        + Duration::from_millis(u64::try_from(until - now_ms).unwrap_or(0))
                            .min(xdrsync_http::MAX_RETRY_AFTER);
                    w.paused_until = Some(w.paused_until.map_or(until, |u| u.max(until)));
                }
            }
            if let Some(until) = w.paused_until {
                if until > now {
                    tokio::time::sleep_until(until).await;
                    continue;
                }
                w.paused_until = None;
            }
            if !self.enabled {
                break;
            }
            let windows = quota.windows();
            while w
                .sent
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= longest)
            {
                w.sent.pop_front();
            }
            // This process's calls and the others', oldest first.
            let mut counted: Vec<Instant> = w.sent.iter().copied().chain(others).collect();
            counted.sort_unstable();
            let mut wait_until = None;
            for &(window, limit) in windows {
                let window = self.scaled(window);
                let inside = counted
                    .iter()
                    .filter(|t| now.saturating_duration_since(**t) < window)
                    .count();
                if inside >= limit {
                    // The call that frees a slot is the oldest one still counted (every call
                    // inside the window is among the last `inside`).
                    let Some(&oldest) = counted.get(counted.len() - limit) else {
                        break;
                    };
                    let margin = window.mul_f64(0.02) + Duration::from_millis(25);
                    let at = oldest + window + margin;
                    wait_until = Some(wait_until.map_or(at, |u: Instant| u.max(at)));
                }
            }
            if let Some(at) = wait_until {
                tokio::time::sleep_until(at).await;
                continue;
            }
            // It fits by what this process knows: reserve it in the ledger, then check the
            // calls written before the reservation; one that no longer fits is given back.
            // Without pacing nothing counts calls, so there is nothing to reserve.
            if let (true, Some(ledger), Some(key)) = (self.enabled, &self.ledger, &key) {
                let now_ms = wall_ms();
                if let Some(row) = ledger.reserve(key, now_ms) {
                    let since = now_ms - i64::try_from(longest.as_millis()).unwrap_or(i64::MAX);
                    let (before, _) = ledger.others(key, since, Some(row));
                    let now = Instant::now();
                    let earlier: Vec<Instant> = before
                        .into_iter()
                        .map(|ms| {
                            now.checked_sub(Duration::from_millis(
                                u64::try_from(now_ms - ms).unwrap_or(0),
                            ))
                            .unwrap_or(now)
                        })
                        .collect();
                    let fits = windows.iter().all(|&(window, limit)| {
                        let window = self.scaled(window);
                        let inside = w
                            .sent
                            .iter()
                            .chain(&earlier)
                            .filter(|t| now.saturating_duration_since(**t) < window)
                            .count();
                        inside < limit
                    });
                    if !fits {
                        ledger.withdraw(row);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    reserved = Some(row);
                }
            }
            break;
        }
        let at = Instant::now();
        w.sent.push_back(at);
        drop(w);
        let shared = reserved;
        let waited = started.elapsed();
        if waited > Duration::from_millis(1) {
            tracing::debug!(
                tenant,
                quota = quota.as_str(),
                waited_ms = waited.as_millis() as u64,
                "Waited for the rate budget."
            );
        }
        Ticket { budget, at, shared }
    }

    /// The call of `ticket` was answered (or failed): count it from now, the latest moment the
    /// server can have counted it.
    pub async fn answered(&self, ticket: Ticket) {
        let mut w = ticket.budget.lock().await;
        if let Some(i) = w.sent.iter().rposition(|t| *t == ticket.at) {
            w.sent.remove(i);
        }
        let now = Instant::now();
        let pos = w.sent.partition_point(|t| *t <= now);
        w.sent.insert(pos, now);
        drop(w);
        if let (Some(ledger), Some(row)) = (&self.ledger, ticket.shared) {
            ledger.moved(row, wall_ms());
        }
    }

    /// How much of `quota`'s shortest window `app` has used in `tenant` by this process:
    /// `(calls in the window, calls allowed)`, e.g. `(3, 45)` for hunting.
    pub async fn used(&self, app: &str, tenant: &str, quota: Quota) -> (usize, usize) {
        let Some(&(window, allowed)) = quota.windows().first() else {
            return (0, 0);
        };
        let budget = self.budget(app, tenant, quota);
        let w = budget.lock().await;
        let since = Instant::now().checked_sub(self.scaled(window));
        let n = w
            .sent
            .iter()
            .filter(|t| since.is_none_or(|s| **t >= s))
            .count();
        (n, allowed)
    }

    /// A 429 arrived: nobody calls `quota` for `(app, tenant)` for `after`.
    pub async fn pause(&self, app: &str, tenant: &str, quota: Quota, after: Duration) {
        let budget = self.budget(app, tenant, quota);
        let mut w = budget.lock().await;
        let after = after.min(xdrsync_http::MAX_RETRY_AFTER);
        let until = Instant::now() + after;
        w.paused_until = Some(w.paused_until.map_or(until, |u| u.max(until)));
        if let Some(ledger) = &self.ledger {
            let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
            ledger.pause(
                &ledger_key(app, tenant, quota),
                wall_ms().saturating_add(after_ms),
            );
        }
        tracing::warn!(
            tenant,
            quota = quota.as_str(),
            wait_secs = after.as_secs_f64(),
            "Throttled (429): pausing every call of this quota for the app in this tenant."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_families_by_path() {
        let q = |u: &str| Quota::of(&u.parse().unwrap());
        assert_eq!(
            q("https://api.security.microsoft.com/api/incidents?$top=100"),
            Some(Quota::XdrList)
        );
        assert_eq!(
            q("https://api.security.microsoft.com/api/incidents/42"),
            Some(Quota::XdrGet)
        );
        assert_eq!(
            q("https://graph.microsoft.com/v1.0/security/alerts_v2"),
            Some(Quota::Graph)
        );
        assert_eq!(
            q("https://graph.microsoft.com/v1.0/security/runHuntingQuery"),
            Some(Quota::Hunting)
        );
        assert_eq!(
            q("https://api.securitycenter.microsoft.com/api/alerts"),
            Some(Quota::Mde)
        );
        assert_eq!(
            q("https://wdatpprd-eus.securitycenter.windows.com/api/alerts/x"),
            Some(Quota::Mde)
        );
        // The SIEM API runs on the MDE platform and is counted with its alerts.
        assert_eq!(
            q("https://wdatp-alertexporter-eu.securitycenter.windows.com/api/alerts?ago=PT1H"),
            Some(Quota::Mde)
        );
        assert_eq!(
            q("https://login.microsoftonline.com/t/oauth2/v2.0/token"),
            None
        );
    }

    /// The server counts a call when it arrives, which can be as late as its answer: a slow
    /// call keeps its slot until a window after it was answered.
    #[tokio::test(start_paused = true)]
    async fn a_slow_call_counts_from_its_answer() {
        let b = RateBudgets::new(true, 1.0);
        let t0 = Instant::now();
        let mut tickets = Vec::new();
        for _ in 0..50 {
            tickets.push(b.acquire("app", "t", Quota::XdrList).await);
        }
        // Fifty calls that take 5 s to be answered: the server may have counted them late.
        tokio::time::sleep(Duration::from_secs(5)).await;
        for t in tickets {
            b.answered(t).await;
        }
        let _ = b.acquire("app", "t", Quota::XdrList).await;
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(65) && waited < Duration::from_secs(67),
            "the 51st waits for the answers + 60 s, not the sends + 60 s: {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_fifty_first_list_call_waits_for_the_window() {
        let b = RateBudgets::new(true, 1.0);
        let t0 = Instant::now();
        for _ in 0..50 {
            let _ = b.acquire("app", "t", Quota::XdrList).await;
        }
        assert!(t0.elapsed() < Duration::from_millis(1));
        let _ = b.acquire("app", "t", Quota::XdrList).await;
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(60) && waited < Duration::from_secs(62),
            "{waited:?}"
        );
        // Another tenant has its own budget; another quota family too.
        let t1 = Instant::now();
        let _ = b.acquire("app", "other", Quota::XdrList).await;
        let _ = b.acquire("app", "t", Quota::Graph).await;
        assert!(t1.elapsed() < Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_hourly_quota_holds_too() {
        let b = RateBudgets::new(true, 1.0);
        let t0 = Instant::now();
        for _ in 0..1501 {
            let _ = b.acquire("app", "t", Quota::XdrList).await;
        }
        // 1,500 fit in the hour (50 per minute for 30 minutes); the 1,501st waits for the
        // first hour to end.
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_secs(3600), "{waited:?}");
        assert!(waited < Duration::from_secs(3700), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_everyone_sharing_the_budget() {
        let b = Arc::new(RateBudgets::new(true, 1.0));
        b.pause("app", "t", Quota::Graph, Duration::from_secs(7))
            .await;
        let t0 = Instant::now();
        let other = {
            let b = b.clone();
            tokio::spawn(async move { drop(b.acquire("APP", "t", Quota::Graph).await) })
        };
        let _ = b.acquire("app", "t", Quota::Graph).await;
        other.await.unwrap();
        assert!(t0.elapsed() >= Duration::from_secs(7));
        // Disabled pacing still honours a pause.
        let off = RateBudgets::new(false, 1.0);
        off.pause("app", "t", Quota::XdrList, Duration::from_secs(3))
            .await;
        let t1 = Instant::now();
        let _ = off.acquire("app", "t", Quota::XdrList).await;
        assert!(t1.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn time_scale_shrinks_the_windows() {
        let b = RateBudgets::new(true, 60.0);
        let t0 = Instant::now();
        for _ in 0..151 {
            let _ = b.acquire("app", "t", Quota::Graph).await;
        }
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1100),
            "{waited:?}"
        );
    }
}
