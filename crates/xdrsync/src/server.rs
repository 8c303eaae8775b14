//! `run`'s HTTP server: `/metrics` (Prometheus), `/healthz`, `/readyz` and `/`, a read-only
//! status page.
//!
//! Why in the daemon and not a separate exporter: the daemon is the one process that knows
//! what its passes and sinks are doing right now. Metrics are recorded through the `metrics`
//! facade wherever they happen (API calls and rate-budget waits in the API client, token
//! requests in auth, pulls in the pipeline) and rendered by `metrics-exporter-prometheus`;
//! what is cheaper to read than to track (a sink's backlog and the age of its oldest
//! undelivered event, the seconds since each stream's last success) is set at scrape time.
//! Everything here reads; nothing a request does can change what is pulled or delivered.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use xdrsync_model::Timestamp;
use xdrsync_sinks::{Sink, ValidatedSink};
use xdrsync_store::Store;

use crate::commands::status::{Report, SinkRow};

/// How many finished passes the status page lists.
const PASSES_KEPT: usize = 20;

/// Installs the process's Prometheus recorder (once; later calls reuse it).
pub(crate) fn recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let seconds = [
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("xdrsync_pass_duration_seconds".into()),
            &seconds,
        )?
        .set_buckets_for_metric(
            Matcher::Full("xdrsync_rate_budget_wait_seconds".into()),
            &seconds,
        )?
        .install_recorder()?;
    describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// HELP lines for every metric xdrsync records.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "xdrsync_versions_pulled_total",
        "Versions stored by pulls, per tenant, stream and change kind."
    );
    describe_counter!(
        "xdrsync_pages_total",
        "API pages read, per tenant and stream."
    );
    describe_counter!(
        "xdrsync_pulls_total",
        "Pulls per stream by outcome (ok, failed)."
    );
    describe_counter!(
        "xdrsync_poison_items_total",
        "Items the API returned that could not be read (kept in the store's poison table)."
    );
    describe_counter!(
        "xdrsync_api_calls_total",
        "API calls per tenant and stream by answer class (2xx, 4xx, 429, 5xx, transport)."
    );
    describe_counter!(
        "xdrsync_rate_budget_wait_milliseconds_total",
        "Time API calls of a (tenant, stream) waited on the rate budget before being sent."
    );
    describe_histogram!(
        "xdrsync_rate_budget_wait_seconds",
        "Waits on the rate budget per quota family (xdr-list, graph, mde, …)."
    );
    describe_counter!(
        "xdrsync_token_requests_total",
        "Token requests to Entra ID per tenant id, by outcome and AADSTS code."
    );
    describe_gauge!(
        "xdrsync_seconds_since_last_success",
        "Seconds since the last successful pull of a (tenant, stream), at scrape time."
    );
    describe_counter!(
        "xdrsync_sink_events_delivered_total",
        "Events a sink's receiver accepted since the daemon started."
    );
    describe_counter!(
        "xdrsync_sink_delivery_failures_total",
        "Deliveries of a sink that ended in an error since the daemon started."
    );
    describe_counter!(
        "xdrsync_sink_send_retries_total",
        "Sends to a sink's receiver that failed and were retried."
    );
    describe_gauge!(
        "xdrsync_sink_backlog_events",
        "Stored versions past a sink's position, at scrape time."
    );
    describe_gauge!(
        "xdrsync_sink_oldest_undelivered_age_seconds",
        "Age of the oldest version a sink has not delivered (0 when none waits)."
    );
    describe_gauge!(
        "xdrsync_sink_stalled",
        "1 when a sink counts as stalled (its oldest undelivered event is older than stall_after_secs, or it never delivered)."
    );
    describe_histogram!(
        "xdrsync_pass_duration_seconds",
        "Duration of `run`'s passes."
    );
    describe_counter!(
        "xdrsync_versions_pruned_total",
        "Versions deleted by retention ([store] retention_days)."
    );
    describe_counter!(
        "xdrsync_passes_total",
        "`run` passes, by outcome (ok, degraded)."
    );
    describe_counter!(
        "xdrsync_hunt_runs_total",
        "Scheduled hunt runs per hunt and tenant, by outcome (ok, failed)."
    );
    describe_counter!(
        "xdrsync_hunt_rows_total",
        "Rows scheduled hunts found that no earlier run had (stored and delivered), per hunt and tenant."
    );
    describe_gauge!(
        "xdrsync_store_bytes",
        "Size of the SQLite store with its WAL, at scrape time."
    );
}

/// One finished pass, for the status page.
#[derive(Debug, Clone)]
pub(crate) struct PassSummary {
    pub(crate) number: u64,
    pub(crate) started: Timestamp,
    pub(crate) seconds: f64,
    pub(crate) streams: usize,
    pub(crate) degraded: usize,
    pub(crate) stored: u64,
}

/// What the daemon tells the server; replaced as a whole on a reload.
pub(crate) struct Daemon {
    pub(crate) config: xdrsync_config::Config,
    pub(crate) validated: Vec<ValidatedSink>,
    pub(crate) sinks: Vec<Arc<dyn Sink>>,
    pub(crate) interval: Duration,
}

/// The server's view of the daemon.
pub(crate) struct ServerState {
    pub(crate) daemon: RwLock<Daemon>,
    pub(crate) store: Arc<dyn Store>,
    /// `None` without a server: no recorder is installed and the `metrics` macros do
    /// nothing at all.
    prometheus: Option<PrometheusHandle>,
    started: Instant,
    /// Finished passes, newest last.
    passes: RwLock<VecDeque<PassSummary>>,
    /// When the pass in flight started, if one is.
    running: RwLock<Option<Timestamp>>,
    /// The last success of each (tenant, stream), for `xdrsync_seconds_since_last_success`.
    last_success: RwLock<BTreeMap<(String, String), Timestamp>>,
    /// `POST /actions`, when `[server]` turns it on.
    actions: RwLock<Option<Arc<crate::inbound::ActionsEndpoint>>>,
}

impl ServerState {
    /// The state for `daemon` over `store`; last successes are seeded from the store.
    pub(crate) fn new(
        daemon: Daemon,
        store: Arc<dyn Store>,
        prometheus: Option<PrometheusHandle>,
    ) -> anyhow::Result<Arc<Self>> {
        let mut last = BTreeMap::new();
        for h in store.health()? {
            if let Some(t) = h.last_success {
                last.insert((h.tenant_name.clone(), h.stream.clone()), t);
            }
        }
        Ok(Arc::new(ServerState {
            daemon: RwLock::new(daemon),
            store,
            prometheus,
            started: Instant::now(),
            passes: RwLock::new(VecDeque::new()),
            running: RwLock::new(None),
            last_success: RwLock::new(last),
            actions: RwLock::new(None),
        }))
    }

    /// Turns `POST /actions` on (or off with `None`), e.g. after a reload.
    pub(crate) fn set_actions(&self, actions: Option<Arc<crate::inbound::ActionsEndpoint>>) {
        *write(&self.actions) = actions;
    }

    pub(crate) fn pass_started(&self) {
        *write(&self.running) = Some(Timestamp::now());
    }

    /// Records a finished pass: its summary, each stream's success, the pass metrics.
    pub(crate) fn pass_finished(
        &self,
        summary: PassSummary,
        reports: &[xdrsync_pipeline::TenantReport],
    ) {
        *write(&self.running) = None;
        {
            let mut last = write(&self.last_success);
            for r in reports.iter().filter(|r| r.error.is_none()) {
                last.insert((r.name.clone(), r.stream.to_string()), Timestamp::now());
            }
        }
        metrics::histogram!("xdrsync_pass_duration_seconds").record(summary.seconds);
        metrics::counter!(
            "xdrsync_passes_total",
            "outcome" => if summary.degraded == 0 { "ok" } else { "degraded" },
        )
        .increment(1);
        let mut passes = write(&self.passes);
        passes.push_back(summary);
        while passes.len() > PASSES_KEPT {
            passes.pop_front();
        }
        drop(passes);
        if let Some(p) = &self.prometheus {
            p.run_upkeep();
        }
    }

    /// Counts a pass's scheduled hunt runs (the runs themselves are in the store).
    pub(crate) fn hunts_finished(&self, runs: &[xdrsync_store::HuntRun]) {
        let names = xdrsync_sinks::tenant_names(&read(&self.daemon).config.tenants);
        for r in runs {
            let tenant = names
                .get(r.tenant_id.as_str())
                .cloned()
                .unwrap_or_else(|| r.tenant_id.as_str().to_owned());
            metrics::counter!(
                "xdrsync_hunt_runs_total",
                "hunt" => r.hunt.clone(),
                "tenant" => tenant.clone(),
                "outcome" => if r.error.is_none() { "ok" } else { "failed" },
            )
            .increment(1);
            metrics::counter!(
                "xdrsync_hunt_rows_total",
                "hunt" => r.hunt.clone(),
                "tenant" => tenant,
            )
            .increment(r.new_rows);
        }
    }

    /// Sets what is read at scrape time and renders the exposition.
    fn scrape(&self) -> anyhow::Result<String> {
        let started = Instant::now();
        let sinks = self.sink_rows()?;
        let counters: Vec<(String, xdrsync_sinks::MetricsSnapshot)> = read(&self.daemon)
            .sinks
            .iter()
            .map(|s| (s.name().to_owned(), s.metrics()))
            .collect();
        for row in &sinks {
            let name = row.health.sink.clone();
            if let Some((_, m)) = counters.iter().find(|(n, _)| *n == name) {
                metrics::counter!("xdrsync_sink_events_delivered_total", "sink" => name.clone())
                    .absolute(m.events_sent);
                metrics::counter!("xdrsync_sink_delivery_failures_total", "sink" => name.clone())
                    .absolute(m.deliveries_failed);
                metrics::counter!("xdrsync_sink_send_retries_total", "sink" => name.clone())
                    .absolute(m.send_retries);
            }
            metrics::gauge!("xdrsync_sink_backlog_events", "sink" => name.clone())
                .set(row.health.backlog as f64);
            metrics::gauge!("xdrsync_sink_oldest_undelivered_age_seconds", "sink" => name.clone())
                .set(row.oldest_age_secs().unwrap_or(0).max(0) as f64);
            metrics::gauge!("xdrsync_sink_stalled", "sink" => name)
                .set(if row.stalled().is_some() { 1.0 } else { 0.0 });
        }
        for ((tenant, stream), at) in read(&self.last_success).iter() {
            metrics::gauge!(
                "xdrsync_seconds_since_last_success",
                "tenant" => tenant.clone(),
                "stream" => stream.clone(),
            )
            .set(crate::text::age_secs(*at).max(0) as f64);
        }
        metrics::gauge!("xdrsync_store_bytes").set(self.store.size_bytes() as f64);
        let Some(p) = &self.prometheus else {
            anyhow::bail!("no metrics recorder (internal error: the server runs without one)");
        };
        p.run_upkeep();
        let set = started.elapsed();
        let text = p.render();
        tracing::debug!(
            set_ms = set.as_secs_f64() * 1e3,
            render_ms = (started.elapsed() - set).as_secs_f64() * 1e3,
            bytes = text.len(),
            "Scraped."
        );
        Ok(text)
    }

    /// Every configured sink's health (and those only in the store).
    fn sink_rows(&self) -> anyhow::Result<Vec<SinkRow>> {
        let (validated, live) = self.sinks_known();
        SinkRow::collect(self.store.as_ref(), &validated, &live)
    }

    /// The configured sinks and the names of those delivering now (`--ndjson`'s too).
    fn sinks_known(&self) -> (Vec<ValidatedSink>, Vec<String>) {
        let d = read(&self.daemon);
        let live = d.sinks.iter().map(|s| s.name().to_owned()).collect();
        (d.validated.clone(), live)
    }

    /// Why the daemon is not ready (empty: ready).
    fn not_ready(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Err(e) = self.store.check_writable() {
            reasons.push(format!("the store is not writable: {e}"));
        }
        let interval = read(&self.daemon).interval;
        let limit = interval * 2 + Duration::from_secs(1);
        let last_end = read(&self.passes).back().map(|p| {
            p.started
                .add(chrono::Duration::milliseconds((p.seconds * 1000.0) as i64))
        });
        match last_end {
            Some(end) => {
                let age = crate::text::age_secs(end);
                if age > i64::try_from(limit.as_secs()).unwrap_or(i64::MAX) {
                    reasons.push(format!(
                        "the last pass ended {} ago, more than two intervals ({})",
                        crate::text::duration(age),
                        crate::text::duration(
                            i64::try_from(interval.as_secs() * 2).unwrap_or(i64::MAX)
                        )
                    ));
                }
            }
            None if self.started.elapsed() > limit => reasons.push(format!(
                "no pass has finished in {} since the start",
                crate::text::duration(
                    i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX)
                )
            )),
            None => {}
        }
        match self.sink_rows() {
            Ok(rows) => {
                for r in rows {
                    if let Some(why) = r.stalled() {
                        reasons.push(format!("sink {} is stalled: {why}", r.health.sink));
                    }
                }
            }
            Err(e) => reasons.push(format!("cannot read the sinks' positions: {e}")),
        }
        reasons
    }

    /// The status page.
    fn page(&self) -> anyhow::Result<String> {
        let (validated, live) = self.sinks_known();
        let (config, interval) = {
            let d = read(&self.daemon);
            (d.config.clone(), d.interval)
        };
        let report = Report::read(&config, &validated, &live, self.store.as_ref())?;
        let reasons = self.not_ready();
        let mut h = String::with_capacity(16 * 1024);
        let _ = write!(
            h,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"10\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>xdrsync status</title><style>{STYLE}</style></head><body>\
             <h1>xdrsync <small>{}</small></h1>",
            env!("CARGO_PKG_VERSION")
        );
        let _ = write!(
            h,
            "<p id=\"readiness\" class=\"{}\">{}</p>",
            if reasons.is_empty() { "ok" } else { "bad" },
            if reasons.is_empty() {
                "Ready".to_owned()
            } else {
                format!("Not ready: {}", esc(&reasons.join("; ")))
            }
        );
        let running = *read(&self.running);
        let _ = write!(
            h,
            "<p>A pass every {}; {}. Page refreshes every 10 s; generated {}.</p>",
            crate::text::duration(i64::try_from(interval.as_secs()).unwrap_or(i64::MAX)),
            match running {
                Some(t) => format!("a pass is running since {}", crate::text::time(t)),
                None => "no pass running".into(),
            },
            crate::text::time(Timestamp::now())
        );
        h.push_str("<h2>Tenants</h2><table id=\"streams\"><thead><tr><th>Tenant</th><th>Stream</th><th>Health</th><th>Last success</th><th>Lag</th><th>Newest item</th><th>Items</th><th>Last error</th></tr></thead><tbody>");
        for r in &report.streams {
            let hl = r.health.as_ref();
            let _ = write!(
                h,
                "<tr data-tenant=\"{t}\" data-stream=\"{s}\" class=\"{state}\"><td>{t}</td><td>{s}</td><td class=\"health\">{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"error\" title=\"{}\">{}</td></tr>",
                hl.and_then(|h| h.last_success)
                    .map(crate::text::time)
                    .unwrap_or_else(|| "never".into()),
                r.lag_secs()
                    .map(crate::text::duration)
                    .unwrap_or_else(|| "-".into()),
                r.newest_age_secs()
                    .map(crate::text::duration)
                    .map(|d| format!("{d} ago"))
                    .unwrap_or_else(|| "-".into()),
                hl.map_or(0, |h| h.items),
                esc(hl.and_then(|h| h.degraded.as_deref()).unwrap_or("")),
                esc(&hl
                    .and_then(|h| h.degraded.as_deref())
                    .map(crate::text::short_error)
                    .unwrap_or_default()),
                t = esc(&r.tenant),
                s = r.stream,
                state = r.state().replace(' ', "-"),
            );
        }
        h.push_str("</tbody></table>");
        if !report.hunts.is_empty() {
            h.push_str("<h2>Scheduled hunts</h2><table id=\"hunts\"><thead><tr><th>Hunt</th><th>Tenant</th><th>Health</th><th>Last run</th><th>Next run</th><th>Rows</th><th>New</th><th>Last error</th></tr></thead><tbody>");
            for r in &report.hunts {
                let last = r.last.as_ref();
                let error = last.and_then(|l| l.error.as_deref()).unwrap_or("");
                let _ = write!(
                    h,
                    "<tr data-hunt=\"{n}\" data-tenant=\"{t}\" class=\"{state}\"><td>{n}</td><td>{t}</td><td class=\"health\">{state}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"new\">{}</td><td class=\"error\" title=\"{}\">{}</td></tr>",
                    last.map(|l| crate::text::time(l.started_at))
                        .unwrap_or_else(|| "never".into()),
                    r.next_due()
                        .map(crate::text::time)
                        .unwrap_or_else(|| "next pass".into()),
                    last.map_or(0, |l| l.rows),
                    last.map_or(0, |l| l.new_rows),
                    esc(error),
                    esc(&crate::text::short_error(error)),
                    n = esc(&r.hunt),
                    t = esc(&r.tenant),
                    state = if r.state() == "failed" {
                        "degraded"
                    } else {
                        r.state()
                    }
                    .replace(' ', "-"),
                );
            }
            h.push_str("</tbody></table>");
        }
        h.push_str("<h2>Sinks</h2><table id=\"sinks\"><thead><tr><th>Sink</th><th>Health</th><th>Backlog</th><th>Oldest waiting</th><th>Last delivery</th><th>Last error</th></tr></thead><tbody>");
        for s in &report.sinks {
            let state = s.state();
            let _ = write!(
                h,
                "<tr data-sink=\"{n}\" class=\"{state}\"><td>{n}</td><td class=\"health\">{state}</td><td class=\"backlog\">{}</td><td>{}</td><td>{}</td><td class=\"error\" title=\"{}\">{}</td></tr>",
                s.health.backlog,
                s.oldest_age_secs()
                    .map(crate::text::duration)
                    .unwrap_or_else(|| "-".into()),
                s.health
                    .last_delivery
                    .map(crate::text::time)
                    .unwrap_or_else(|| "never".into()),
                esc(s.health.last_error.as_deref().unwrap_or("")),
                esc(&s
                    .health
                    .last_error
                    .as_deref()
                    .map(crate::text::short_error)
                    .unwrap_or_default()),
                n = esc(&s.health.sink),
            );
        }
        h.push_str("</tbody></table>");
        if let Some(c) = &report.cluster {
            h.push_str("<h2>Cluster</h2><table id=\"workers\"><thead><tr><th>Worker</th><th>State</th><th>Last renewal</th><th>Streams</th><th>Sinks</th></tr></thead><tbody>");
            for w in &c.workers {
                let (streams, sinks) = c.held_by(&w.worker);
                let _ = write!(
                    h,
                    "<tr data-worker=\"{n}\"><td>{n}</td><td>{}</td><td>{}</td><td class=\"streams\">{streams}</td><td class=\"sinks\">{sinks}</td></tr>",
                    if w.alive { "alive" } else { "gone" },
                    esc(&w.seen_at),
                    n = esc(&w.worker),
                );
            }
            h.push_str("</tbody></table><table id=\"leases\"><thead><tr><th>Lease</th><th>Worker</th><th>Generation</th><th>Renewed</th><th>State</th></tr></thead><tbody>");
            for (l, name) in &c.leases {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=\"worker\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&crate::commands::status::ClusterView::label(
                        l,
                        name.as_deref()
                    )),
                    esc(l.worker.as_deref().unwrap_or("-")),
                    l.generation,
                    esc(l.renewed_at.as_deref().unwrap_or("never")),
                    crate::commands::status::ClusterView::state(l),
                );
            }
            h.push_str("</tbody></table>");
        }
        h.push_str("<h2>Last passes</h2><table id=\"passes\"><thead><tr><th>Pass</th><th>Started</th><th>Duration</th><th>Streams</th><th>Degraded</th><th>Versions stored</th></tr></thead><tbody>");
        for p in read(&self.passes).iter().rev() {
            let _ = write!(
                h,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{:.1} s</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if p.degraded == 0 { "ok" } else { "degraded" },
                p.number,
                crate::text::time(p.started),
                p.seconds,
                p.streams,
                p.degraded,
                p.stored
            );
        }
        let _ = writeln!(
            h,
            "</tbody></table><p>Store {}: {:.1} MB. <a href=\"/metrics\">/metrics</a> · <a href=\"/readyz\">/readyz</a></p></body></html>",
            esc(&report.store_path.display().to_string()),
            report.store_bytes as f64 / 1e6
        );
        Ok(h)
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}\
table{border-collapse:collapse;margin-bottom:1rem}th,td{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left}\
th{background:#f4f4f4}.ok .health,p.ok{color:#17693a}.degraded .health,.stalled .health,.failing .health,p.bad{color:#b00020;font-weight:600}\
td.error{max-width:28rem;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}small{color:#777}";

/// HTML-escapes text (tenant names, errors from servers).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in crate::text::escape(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Binds `addr` (a clear error when it is taken) and serves until the process ends.
pub(crate) async fn serve(
    addr: std::net::SocketAddr,
    state: Arc<ServerState>,
    config_path: &std::path::Path,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        xdrsync_config::ConfigError::Invalid {
            path: config_path.to_owned(),
            field: "server.listen".into(),
            message: format!(
                "cannot listen on {addr}: {e}; set [server] listen to a free address, or \"\" to turn the server off"
            ),
        }
    })?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_handler))
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .route("/", axum::routing::get(page))
        .route("/actions", axum::routing::post(actions))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "The status server stopped.");
        }
    });
    Ok(bound)
}

/// Runs `f` off the async threads (it reads the store).
async fn blocking<T: Send + 'static>(
    state: Arc<ServerState>,
    f: impl FnOnce(&ServerState) -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .map_err(|e| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: {e}\n"),
            )
                .into_response()
        })
}

async fn metrics_handler(State(state): State<Arc<ServerState>>) -> Response {
    match blocking(state, |s| s.scrape()).await {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the store: {e:#}\n"),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// `POST /actions`: write-back from a SOAR (404 while `[server]` does not turn it on).
async fn actions(
    State(state): State<Arc<ServerState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let endpoint = read(&state.actions).clone();
    match endpoint {
        Some(e) => e.handle(&state.store, &headers, &body).await,
        None => (
            axum::http::StatusCode::NOT_FOUND,
            "POST /actions is off: set [server] actions_hmac_secret or actions_token\n",
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<ServerState>>) -> Response {
    match blocking(state, |s| s.not_ready()).await {
        Ok(reasons) if reasons.is_empty() => "ready\n".into_response(),
        Ok(reasons) => {
            let mut body = String::from("not ready:\n");
            for r in reasons {
                let _ = writeln!(body, "- {}", crate::text::escape(&r));
            }
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
        Err(r) => r,
    }
}

async fn page(State(state): State<Arc<ServerState>>) -> Response {
    match blocking(state, |s| s.page()).await {
        Ok(Ok(html)) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "cannot read the store: {}\n",
                crate::text::escape(&format!("{e:#}"))
            ),
        )
            .into_response(),
        Err(r) => r,
    }
}
