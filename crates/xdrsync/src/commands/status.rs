//! `xdrsync status` (what the store knows about each tenant's streams) and `xdrsync reconcile`
//! (what the API holds against what the store has, per stream).

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use xdrsync_model::StreamKind;
use xdrsync_pipeline::Pipeline;
use xdrsync_store::{SinkHealth, Store, StreamHealth};

use crate::cli::{OutputFormat, ReconcileArgs, StatusArgs};
use crate::text::{out, outln};

pub(crate) fn run(args: StatusArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let (config, configured_sinks) = super::load_selected(config_path, &args.select)?;
    let store = super::open_store(&config)?;
    let report = Report::read(&config, &configured_sinks, &[], store.as_ref())?;
    match args.output {
        OutputFormat::Json => outln!("{:#}", report.json()),
        OutputFormat::Table => out!("{}", report.table()),
    }
    Ok(if report.degraded() > 0 || report.stalled() > 0 {
        ExitCode::from(crate::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

/// What `status` knows: every selected (tenant, stream) and every sink.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) streams: Vec<StreamRow>,
    pub(crate) sinks: Vec<SinkRow>,
    /// Every enabled scheduled hunt in each of its tenants.
    pub(crate) hunts: Vec<HuntStatus>,
    /// The database file with its WAL, in bytes.
    pub(crate) store_bytes: u64,
    pub(crate) store_path: std::path::PathBuf,
    /// The cluster's workers and leases, on a store shared by one (PostgreSQL).
    pub(crate) cluster: Option<ClusterView>,
}

/// Who holds what in a cluster of workers, by the store.
#[derive(Debug)]
pub(crate) struct ClusterView {
    pub(crate) workers: Vec<xdrsync_store::WorkerRow>,
    /// Every lease, with the tenant's configured name where the config has the tenant.
    pub(crate) leases: Vec<(xdrsync_store::LeaseRow, Option<String>)>,
}

impl ClusterView {
    fn read(config: &xdrsync_config::Config, store: &dyn Store) -> anyhow::Result<Option<Self>> {
        let Some(cluster) = store.cluster() else {
            return Ok(None);
        };
        let leases = cluster
            .leases()?
            .into_iter()
            .map(|l| {
                let name = l
                    .tenant
                    .as_ref()
                    .and_then(|t| config.tenant(t.as_str()))
                    .map(|t| t.name.clone());
                (l, name)
            })
            .collect();
        Ok(Some(ClusterView {
            workers: cluster.workers()?,
            leases,
        }))
    }

    /// `(stream leases, sink leases)` `worker` holds unexpired.
    pub(crate) fn held_by(&self, worker: &str) -> (usize, usize) {
        let held = |sink: bool| {
            self.leases
                .iter()
                .filter(|(l, _)| {
                    !l.expired && l.worker.as_deref() == Some(worker) && l.tenant.is_none() == sink
                })
                .count()
        };
        (held(false), held(true))
    }

    /// A lease's state in one word: `held`, `expired` (free to take over) or `free`.
    pub(crate) fn state(lease: &xdrsync_store::LeaseRow) -> &'static str {
        match (&lease.worker, lease.expired) {
            (None, _) => "free",
            (Some(_), true) => "expired",
            (Some(_), false) => "held",
        }
    }

    /// What a lease is, for people: `tenant stream` or `sink NAME`.
    pub(crate) fn label(lease: &xdrsync_store::LeaseRow, name: Option<&str>) -> String {
        match (&lease.tenant, lease.stream) {
            (Some(t), Some(s)) => format!("{} {s}", name.unwrap_or(t.as_str())),
            _ => lease.what.replacen("sink:", "sink ", 1),
        }
    }
}

/// One scheduled hunt in one tenant.
#[derive(Debug)]
pub(crate) struct HuntStatus {
    pub(crate) hunt: String,
    pub(crate) tenant: String,
    pub(crate) interval: std::time::Duration,
    /// `None`: never ran.
    pub(crate) last: Option<xdrsync_store::HuntRun>,
}

impl HuntStatus {
    /// `ok`, `failed` (its last run) or `never run`.
    pub(crate) fn state(&self) -> &'static str {
        match &self.last {
            None => "never run",
            Some(r) if r.error.is_some() => "failed",
            Some(_) => "ok",
        }
    }

    /// When it runs next (a pass at or after this time runs it).
    pub(crate) fn next_due(&self) -> Option<xdrsync_model::Timestamp> {
        let last = self.last.as_ref()?;
        let interval = chrono::Duration::from_std(self.interval).ok()?;
        Some(last.started_at.add(interval))
    }
}

/// One (tenant, stream).
#[derive(Debug)]
pub(crate) struct StreamRow {
    pub(crate) tenant: String,
    pub(crate) tenant_id: String,
    pub(crate) stream: StreamKind,
    /// `None`: never pulled.
    pub(crate) health: Option<StreamHealth>,
}

impl StreamRow {
    /// Seconds since the last successful pull (`None`: never succeeded).
    pub(crate) fn lag_secs(&self) -> Option<i64> {
        self.health
            .as_ref()
            .and_then(|h| h.last_success)
            .map(crate::text::age_secs)
    }

    /// Seconds since the newest stored item's last update.
    pub(crate) fn newest_age_secs(&self) -> Option<i64> {
        self.health
            .as_ref()
            .and_then(|h| h.cursor)
            .map(crate::text::age_secs)
    }

    pub(crate) fn state(&self) -> &'static str {
        match &self.health {
            None => "never pulled",
            Some(h) if h.degraded.is_some() => "degraded",
            Some(h) if h.partial.is_some() => "partial",
            Some(_) => "ok",
        }
    }
}

/// One sink.
#[derive(Debug)]
pub(crate) struct SinkRow {
    pub(crate) health: SinkHealth,
    /// `None`: in the store only (e.g. a past `--ndjson` file), not judged.
    pub(crate) stall_after: Option<std::time::Duration>,
    pub(crate) enabled: bool,
}

impl SinkRow {
    /// Why the sink counts as stalled, if it does: it never delivered while events exist, or
    /// its oldest undelivered event is older than its `stall_after_secs`.
    pub(crate) fn stalled(&self) -> Option<String> {
        let limit = self.stall_after?;
        if !self.enabled || self.health.backlog == 0 {
            return None;
        }
        if self.health.last_delivery.is_none() && self.health.position == 0 {
            return Some(format!(
                "never delivered; {} waiting",
                crate::text::plural(self.health.backlog, "event")
            ));
        }
        let age = self.oldest_age_secs()?;
        (age > i64::try_from(limit.as_secs()).unwrap_or(i64::MAX)).then(|| {
            format!(
                "oldest undelivered event waiting {} (limit {})",
                crate::text::duration(age),
                crate::text::duration(i64::try_from(limit.as_secs()).unwrap_or(i64::MAX))
            )
        })
    }

    pub(crate) fn oldest_age_secs(&self) -> Option<i64> {
        self.health.oldest_undelivered.map(crate::text::age_secs)
    }

    /// `stalled`, `failing`, `disabled`, `not-configured` or `ok`.
    pub(crate) fn state(&self) -> &'static str {
        if self.stalled().is_some() {
            "stalled"
        } else if self.health.last_error.is_some() {
            "failing"
        } else if !self.enabled {
            "disabled"
        } else if self.stall_after.is_none() {
            "not-configured"
        } else {
            "ok"
        }
    }

    /// Every sink the store or the process knows: the configured ones (`validated`), the ones
    /// delivering in this process without a config entry (`live`, e.g. `--ndjson`'s, judged
    /// with the default stall bound), and the ones that only have a position in the store
    /// (a past `--ndjson` file: shown, not judged).
    pub(crate) fn collect(
        store: &dyn Store,
        validated: &[xdrsync_sinks::ValidatedSink],
        live: &[String],
    ) -> anyhow::Result<Vec<SinkRow>> {
        let mut rows = Vec::new();
        for v in validated {
            rows.push(SinkRow {
                health: store.sink_health(&v.common.name)?,
                stall_after: Some(v.common.stall_after),
                enabled: v.enabled,
            });
        }
        let known = |rows: &[SinkRow], n: &str| rows.iter().any(|r| r.health.sink == n);
        for name in live {
            if !known(&rows, name) {
                rows.push(SinkRow {
                    health: store.sink_health(name)?,
                    stall_after: Some(xdrsync_sinks::Common::named(name.as_str()).stall_after),
                    enabled: true,
                });
            }
        }
        for (name, _, _) in store.sink_positions()? {
            if !known(&rows, &name) {
                rows.push(SinkRow {
                    health: store.sink_health(&name)?,
                    stall_after: None,
                    enabled: true,
                });
            }
        }
        Ok(rows)
    }
}

impl Report {
    /// Reads the store's view of `config`'s enabled tenants and streams and of every sink
    /// ([`SinkRow::collect`]; `live`: sinks delivering in this process).
    pub(crate) fn read(
        config: &xdrsync_config::Config,
        configured_sinks: &[xdrsync_sinks::ValidatedSink],
        live: &[String],
        store: &dyn Store,
    ) -> anyhow::Result<Report> {
        let health = store.health()?;
        let mut streams = Vec::new();
        for t in config.tenants.iter().filter(|t| t.enabled) {
            for &stream in &t.streams {
                let h = health
                    .iter()
                    .find(|h| h.tenant_id == t.tenant_id && h.stream == stream.as_str())
                    .cloned();
                streams.push(StreamRow {
                    tenant: t.name.clone(),
                    tenant_id: t.tenant_id.to_string(),
                    stream,
                    health: h,
                });
            }
        }
        let runs = store.hunt_runs()?;
        let mut hunts = Vec::new();
        for h in config.hunts.iter().filter(|h| h.enabled) {
            for t in config.hunt_tenants(h) {
                hunts.push(HuntStatus {
                    hunt: h.name.clone(),
                    tenant: t.name.clone(),
                    interval: h.interval,
                    last: runs
                        .iter()
                        .find(|r| r.hunt == h.name && r.tenant_id == t.tenant_id)
                        .cloned(),
                });
            }
        }
        Ok(Report {
            streams,
            hunts,
            sinks: SinkRow::collect(store, configured_sinks, live)?,
            store_bytes: store.size_bytes(),
            store_path: store.location().into(),
            cluster: ClusterView::read(config, store)?,
        })
    }

    /// Streams degraded and scheduled hunts whose last run failed.
    pub(crate) fn degraded(&self) -> usize {
        self.streams
            .iter()
            .filter(|s| s.state() == "degraded")
            .count()
            + self.hunts.iter().filter(|h| h.state() == "failed").count()
    }

    pub(crate) fn stalled(&self) -> usize {
        self.sinks.iter().filter(|s| s.stalled().is_some()).count()
    }

    /// The tables for people: short cells, one time format.
    pub(crate) fn table(&self) -> String {
        use crate::text::{duration, escape, short_error, time};
        let rows: Vec<Vec<String>> = self
            .streams
            .iter()
            .map(|r| {
                let Some(h) = &r.health else {
                    return vec![
                        r.tenant.clone(),
                        r.stream.to_string(),
                        "never".into(),
                        "-".into(),
                        "-".into(),
                        "0".into(),
                        "0".into(),
                        "0".into(),
                        "not pulled yet".into(),
                    ];
                };
                let status = match (&h.degraded, &h.partial) {
                    (Some(reason), _) => format!(
                        "DEGRADED ({} in a row): {}",
                        crate::text::plural(u64::from(h.failures), "failure"),
                        short_error(reason)
                    ),
                    (None, Some(w)) => {
                        format!("ok, partial: {}", crate::text::clip(&escape(w), 40))
                    }
                    (None, None) => "ok".into(),
                };
                vec![
                    r.tenant.clone(),
                    h.stream.clone(),
                    h.last_success.map(time).unwrap_or_else(|| "never".into()),
                    r.lag_secs().map(duration).unwrap_or_else(|| "-".into()),
                    r.newest_age_secs()
                        .map(duration)
                        .unwrap_or_else(|| "-".into()),
                    h.items.to_string(),
                    h.versions.to_string(),
                    h.poison.to_string(),
                    status,
                ]
            })
            .collect();
        let mut out = crate::table::render(
            &[
                "TENANT",
                "STREAM",
                "LAST SUCCESS",
                "LAG",
                "NEWEST",
                "ITEMS",
                "VERSIONS",
                "UNREADABLE",
                "STATUS",
            ],
            &rows,
        );
        if !self.hunts.is_empty() {
            out.push('\n');
            let rows: Vec<Vec<String>> = self
                .hunts
                .iter()
                .map(|h| {
                    let r = h.last.as_ref();
                    let status = match r {
                        None => "not run yet".to_owned(),
                        Some(r) => match &r.error {
                            Some(e) => format!("FAILED: {}", short_error(e)),
                            None if r.truncated => "ok, TRUNCATED at the row limit".into(),
                            None => "ok".into(),
                        },
                    };
                    vec![
                        h.hunt.clone(),
                        h.tenant.clone(),
                        r.map(|r| time(r.started_at))
                            .unwrap_or_else(|| "never".into()),
                        r.and_then(|r| r.last_success)
                            .map(time)
                            .unwrap_or_else(|| "never".into()),
                        h.next_due().map(time).unwrap_or_else(|| "next pass".into()),
                        r.map_or(0, |r| r.rows).to_string(),
                        r.map_or(0, |r| r.new_rows).to_string(),
                        status,
                    ]
                })
                .collect();
            out.push_str(&crate::table::render(
                &[
                    "HUNT",
                    "TENANT",
                    "LAST RUN",
                    "LAST SUCCESS",
                    "NEXT RUN",
                    "ROWS",
                    "NEW",
                    "STATUS",
                ],
                &rows,
            ));
        }
        if !self.sinks.is_empty() {
            out.push('\n');
            let rows: Vec<Vec<String>> = self
                .sinks
                .iter()
                .map(|s| {
                    let h = &s.health;
                    let status = match (s.state(), s.stalled(), &h.last_error) {
                        (_, Some(why), Some(e)) => {
                            format!("STALLED: {why}; last error: {}", short_error(e))
                        }
                        (_, Some(why), None) => format!("STALLED: {why}"),
                        ("failing", _, Some(e)) => format!(
                            "failing ({}): {}",
                            crate::text::plural(u64::from(h.failures), "failure"),
                            short_error(e)
                        ),
                        ("not-configured", _, _) => "not configured".into(),
                        (state, _, _) => state.into(),
                    };
                    vec![
                        h.sink.clone(),
                        h.position.to_string(),
                        h.backlog.to_string(),
                        s.oldest_age_secs()
                            .map(duration)
                            .unwrap_or_else(|| "-".into()),
                        h.last_delivery.map(time).unwrap_or_else(|| "never".into()),
                        status,
                    ]
                })
                .collect();
            out.push_str(&crate::table::render(
                &[
                    "SINK",
                    "POSITION",
                    "BACKLOG",
                    "OLDEST WAITING",
                    "LAST DELIVERY",
                    "STATUS",
                ],
                &rows,
            ));
        }
        if let Some(c) = &self.cluster {
            out.push('\n');
            let rows: Vec<Vec<String>> = c
                .workers
                .iter()
                .map(|w| {
                    let (streams, sinks) = c.held_by(&w.worker);
                    vec![
                        w.worker.clone(),
                        if w.alive {
                            "alive"
                        } else {
                            "GONE (stopped renewing)"
                        }
                        .into(),
                        w.seen_at.clone(),
                        streams.to_string(),
                        sinks.to_string(),
                    ]
                })
                .collect();
            out.push_str(&crate::table::render(
                &["WORKER", "STATE", "LAST RENEWAL", "STREAMS", "SINKS"],
                &rows,
            ));
            out.push('\n');
            let rows: Vec<Vec<String>> = c
                .leases
                .iter()
                .map(|(l, name)| {
                    vec![
                        ClusterView::label(l, name.as_deref()),
                        l.worker.clone().unwrap_or_else(|| "-".into()),
                        l.generation.to_string(),
                        l.renewed_at.clone().unwrap_or_else(|| "never".into()),
                        match ClusterView::state(l) {
                            "expired" => "EXPIRED (free to take over)".into(),
                            state => state.into(),
                        },
                    ]
                })
                .collect();
            out.push_str(&crate::table::render(
                &["LEASE", "WORKER", "GENERATION", "RENEWED", "STATE"],
                &rows,
            ));
        }
        out.push_str(&format!(
            "\nStore {}: {:.1} MB\n",
            self.store_path.display(),
            self.store_bytes as f64 / 1e6
        ));
        out
    }

    /// Everything, in full, for scripts.
    pub(crate) fn json(&self) -> serde_json::Value {
        let streams: Vec<_> = self
            .streams
            .iter()
            .map(|r| {
                let h = r.health.as_ref();
                json!({
                    "tenant": r.tenant,
                    "tenant_id": r.tenant_id,
                    "stream": r.stream.as_str(),
                    "state": r.state(),
                    "last_attempt": h.map(|h| h.last_attempt),
                    "last_success": h.and_then(|h| h.last_success),
                    "lag_secs": r.lag_secs(),
                    "newest_item": h.and_then(|h| h.cursor),
                    "newest_item_age_secs": r.newest_age_secs(),
                    "items": h.map_or(0, |h| h.items),
                    "versions": h.map_or(0, |h| h.versions),
                    "unreadable": h.map_or(0, |h| h.poison),
                    "failures_in_a_row": h.map_or(0, |h| h.failures),
                    "error": h.and_then(|h| h.degraded.clone()),
                    "partial_warning": h.and_then(|h| h.partial.clone()),
                })
            })
            .collect();
        let sinks: Vec<_> = self
            .sinks
            .iter()
            .map(|s| {
                let h = &s.health;
                json!({
                    "name": h.sink,
                    "configured": s.stall_after.is_some(),
                    "enabled": s.enabled,
                    "position": h.position,
                    "backlog": h.backlog,
                    "oldest_undelivered": h.oldest_undelivered,
                    "oldest_undelivered_age_secs": s.oldest_age_secs(),
                    "last_delivery": h.last_delivery,
                    "last_error": h.last_error,
                    "last_error_at": h.last_error_at,
                    "failures_in_a_row": h.failures,
                    "stall_after_secs": s.stall_after.map(|d| d.as_secs()),
                    "stalled": s.stalled(),
                })
            })
            .collect();
        let hunts: Vec<_> = self
            .hunts
            .iter()
            .map(|h| {
                let r = h.last.as_ref();
                json!({
                    "hunt": h.hunt,
                    "tenant": h.tenant,
                    "state": h.state(),
                    "interval_secs": h.interval.as_secs(),
                    "last_run": r.map(|r| r.started_at),
                    "last_success": r.and_then(|r| r.last_success),
                    "next_run": h.next_due(),
                    "rows": r.map_or(0, |r| r.rows),
                    "new_rows": r.map_or(0, |r| r.new_rows),
                    "truncated": r.is_some_and(|r| r.truncated),
                    "error": r.and_then(|r| r.error.clone()),
                })
            })
            .collect();
        let cluster = self.cluster.as_ref().map(|c| {
            json!({
                "workers": c.workers.iter().map(|w| {
                    let (streams, sinks) = c.held_by(&w.worker);
                    json!({
                        "worker": w.worker,
                        "alive": w.alive,
                        "last_renewal": w.seen_at,
                        "streams": streams,
                        "sinks": sinks,
                    })
                }).collect::<Vec<_>>(),
                "leases": c.leases.iter().map(|(l, name)| json!({
                    "tenant": name,
                    "tenant_id": l.tenant.as_ref().map(|t| t.as_str()),
                    "stream": l.stream.map(|s| s.as_str()),
                    "sink": l.what.strip_prefix("sink:"),
                    "worker": l.worker,
                    "generation": l.generation,
                    "renewed_at": l.renewed_at,
                    "expired": l.expired,
                })).collect::<Vec<_>>(),
            })
        });
        json!({
            "streams": streams,
            "hunts": hunts,
            "sinks": sinks,
            "cluster": cluster,
            "store": { "path": self.store_path.display().to_string(), "bytes": self.store_bytes },
            "degraded": self.degraded(),
            "stalled": self.stalled(),
        })
    }
}

pub(crate) async fn reconcile(args: ReconcileArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let since = super::since(&args.since)?;
    let (config, _) = super::load_selected(config_path, &args.select)?;
    let store = super::open_store(&config)?;
    let tenants: Vec<_> = config
        .tenants
        .iter()
        .filter(|t| t.enabled)
        .cloned()
        .collect();
    let pipeline = Pipeline::new(config, store)?;
    let mut bad = false;
    let mut rows = Vec::new();
    let mut details = String::new();
    let mut docs = Vec::new();
    for (t, stream) in tenants
        .iter()
        .flat_map(|t| t.streams.iter().map(move |s| (t, *s)))
    {
        let r = pipeline.reconcile(t, stream, since).await;
        // The store only vouches for what it covers: a window reaching before that was not
        // checked, and saying "ok" for it would be a lie.
        let unchecked = r.compared_from.filter(|from| *from > since);
        bad |= r.error.is_some()
            || !r.missing.is_empty()
            || !r.extra.is_empty()
            || unchecked.is_some();
        let item = match stream {
            StreamKind::Incidents => "incident",
            StreamKind::Alerts => "alert",
            StreamKind::Detections => "detection",
            StreamKind::Hunts => "hunt row",
        };
        for (id, api, stored) in &r.missing {
            details.push_str(&format!(
                "{}: MISSING {item} {} at {api} (store has {})\n",
                r.name,
                crate::text::escape(id),
                stored
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "nothing".into())
            ));
        }
        for (id, stored) in &r.extra {
            details.push_str(&format!(
                "{}: EXTRA {item} {} at {stored} (the API does not list it at that version)\n",
                r.name,
                crate::text::escape(id)
            ));
        }
        if let Some(from) = unchecked {
            details.push_str(&format!(
                "{} {stream}: NOT CHECKED from {since} to {from}: the store covers this stream only from {from}; run `xdrsync backfill --since {} --tenant {} --stream {stream}` first\n",
                r.name,
                args.since,
                r.name,
            ));
        }
        let state = match (&r.error, unchecked) {
            (Some(_), _) => "failed",
            _ if !r.missing.is_empty() || !r.extra.is_empty() => "differs",
            (None, Some(_)) => "partial",
            (None, None) => "ok",
        };
        rows.push(vec![
            r.name.clone(),
            stream.to_string(),
            r.matched.to_string(),
            r.missing.len().to_string(),
            r.extra.len().to_string(),
            r.pending.to_string(),
            r.compared_from
                .map(crate::text::time)
                .unwrap_or_else(|| "-".into()),
            match (&r.error, state) {
                (Some(e), _) => format!("FAILED: {}", crate::text::short_error(e)),
                (None, "differs") => "DIFFERS".into(),
                (None, "partial") => "PARTIAL: window not covered by the store".into(),
                _ => "ok".into(),
            },
        ]);
        docs.push(json!({
            "tenant": r.name,
            "stream": stream.as_str(),
            "state": state,
            "since": since,
            "compared_from": r.compared_from,
            "not_checked": unchecked.map(|from| json!({"from": since, "to": from})),
            "matched": r.matched,
            "not_pulled_yet": r.pending,
            "missing": r.missing.iter().map(|(id, api, stored)| json!({"id": id, "api_last_update": api, "stored_last_update": stored})).collect::<Vec<_>>(),
            "extra": r.extra.iter().map(|(id, stored)| json!({"id": id, "stored_last_update": stored})).collect::<Vec<_>>(),
            "error": r.error,
        }));
    }
    match args.output {
        OutputFormat::Json => outln!("{:#}", json!({ "streams": docs, "ok": !bad })),
        OutputFormat::Table => {
            out!(
                "{}",
                crate::table::render(
                    &[
                        "TENANT",
                        "STREAM",
                        "MATCHED",
                        "MISSING",
                        "EXTRA",
                        "NOT PULLED YET",
                        "FROM",
                        "STATUS"
                    ],
                    &rows
                )
            );
            if !details.is_empty() {
                outln!();
                out!("{details}");
            }
        }
    }
    Ok(if bad {
        ExitCode::from(crate::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
