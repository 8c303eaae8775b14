//! Sync benchmarks against the in-process emulator over loopback (release build).
//!
//! ```sh
//! cargo run --release -p xdrsync-pipeline --example sync_bench -- throughput [TENANTS] [PER_HOUR]
//! cargo run --release -p xdrsync-pipeline --example sync_bench -- ratelimit [INCIDENTS] [SCALE] [graph|xdr]
//! cargo run --release -p xdrsync-pipeline --example sync_bench -- commit [BATCH]
//! cargo run --release -p xdrsync-pipeline --example sync_bench -- prune [VERSIONS]
//! ```
//!
//! `throughput`: emulator limits off; one pull of every tenant's 30-day history (incidents with
//! several alerts and their entities) into SQLite with the NDJSON sink delivering alongside (as
//! `xdrsync pull --ndjson` does); versions per second end to end, until the last is in the file
//! — once against the emulator cold (its rendering shares our two cores) and once warm
//! (it answers from its render cache, as a remote server would), each into a fresh store.
//!
//! `ratelimit`: the emulator enforces the documented quotas with its clock `SCALE` times faster;
//! the client paces with the same scale. A backfill of `INCIDENTS` incidents; reports the
//! elapsed time against the theoretical minimum the quota allows for the calls made, and the
//! 429s the emulator answered.
//!
//! `commit`: the store alone, one tenant's versions in commits of `BATCH`.
//!
//! `prune`: retention beside a pass. A store holding `VERSIONS` (default 1,000,000) versions
//! that retention may prune (200 days old, each superseded by a newer version of its
//! incident), then a backfill pass of 4 tenants into the same store, alone and while
//! retention prunes all of them; the pass's duration both ways.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use xdrsync_emulator::{
    AppSecret, AppSpec, Directory, Emulator, EmulatorConfig, Resource, TenantSpec,
};
use xdrsync_model::Timestamp;
use xdrsync_pipeline::{Pipeline, PullMode};
use xdrsync_sinks::{NdjsonSink, Sink};
use xdrsync_store::{SqliteStore, Store};

/// The allocator of the `xdrsync` binary, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn directory(tenants: usize, per_hour: f64) -> Directory {
    let specs: Vec<TenantSpec> = (0..tenants)
        .map(|i| TenantSpec::named(&format!("Customer {i}"), per_hour))
        .collect();
    let consents = specs
        .iter()
        .map(|t| {
            (
                t.id.clone(),
                Resource::ALL
                    .into_iter()
                    .map(|r| {
                        (
                            r,
                            vec![
                                "SecurityIncident.Read.All".to_owned(),
                                "Incident.Read.All".to_owned(),
                            ],
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    let app = AppSpec {
        client_id: "00000000-0000-4000-8000-00000000be0c".into(),
        name: "bench".into(),
        home_tenant: specs[0].id.clone(),
        multi_tenant: true,
        secrets: vec![AppSecret {
            value: "bench~secret".into(),
            expires: None,
        }],
        consents,
        certificates: Vec::new(),
        redirect_uris: vec![],
        required_roles: Default::default(),
        managed_identity: false,
    };
    Directory::new(specs, vec![app])
}

fn config(dir: &std::path::Path, emu: &Emulator, api: &str, sync: &str) -> xdrsync_config::Config {
    let c = emu.contract();
    std::fs::write(dir.join("secret"), "bench~secret").unwrap();
    let base = emu.base_url();
    let mut toml = format!(
        "[sync]\n{sync}\n[store]\npath = \"bench.db\"\n[cloud]\nauthority_url = \"{base}\"\ngraph_url = \"{base}\"\nxdr_url = \"{base}\"\n\
         [[apps]]\nname = \"app\"\nclient_id = \"{}\"\nclient_secret = {{ file = \"secret\" }}\n",
        c.apps[0].client_id
    );
    for (i, t) in c.tenants.iter().enumerate() {
        toml.push_str(&format!(
            "[[tenants]]\nname = \"t{i}\"\ntenant_id = \"{}\"\napp = \"app\"\napi = \"{api}\"\n",
            t.id
        ));
    }
    std::fs::write(dir.join("xdrsync.toml"), toml).unwrap();
    xdrsync_config::Config::load(&dir.join("xdrsync.toml")).unwrap()
}

/// The emulator on a loopback port, its clock `time_scale` times faster, quotas on or off.
async fn start(directory: Directory, time_scale: f64, rate_limits: bool) -> Emulator {
    let mut ec = EmulatorConfig {
        directory,
        time_scale,
        ..EmulatorConfig::default()
    };
    ec.behaviour.rate_limits = rate_limits;
    Emulator::start(ec, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Graph, a 30-day first pull, no client-side pacing.
fn unlimited_config(dir: &std::path::Path, emu: &Emulator) -> xdrsync_config::Config {
    config(
        dir,
        emu,
        "graph",
        "initial_lookback_hours = 720\nrate_budget = false\n",
    )
}

/// The first tenant's last 30 days, listed once.
async fn list_first_tenant(config: &xdrsync_config::Config) -> xdrsync_api_client::Listing {
    let target = xdrsync_pipeline::target(&config.tenants[0], config, None).unwrap();
    let client = xdrsync_pipeline::api_client(config).unwrap();
    let since = Timestamp::now().sub(chrono::Duration::days(30));
    client.list_incidents(&target, since, None).await.unwrap()
}

async fn throughput(tenants: usize, per_hour: f64) {
    let emu = start(directory(tenants, per_hour), 1.0, false).await;
    let tmp = tempfile::tempdir().unwrap();
    // XDRSYNC_BENCH_KEEP=1 keeps the stores and files for a look inside.
    if std::env::var_os("XDRSYNC_BENCH_KEEP").is_some() {
        println!("  keeping {}", tmp.path().display());
    }
    let config = unlimited_config(tmp.path(), &emu);
    // Where the time goes, for one tenant: listing (HTTP, the emulator, JSON, normalizing).
    {
        let t0 = Instant::now();
        let listing = list_first_tenant(&config).await;
        let cold = t0.elapsed();
        let t0 = Instant::now();
        let listing2 = list_first_tenant(&config).await;
        let listed = t0.elapsed();
        println!(
            "  one tenant, emulator cold: {} listed in {:.2}s; warm (renders cached): {:.2}s",
            listing2.records.len(),
            cold.as_secs_f64(),
            listed.as_secs_f64()
        );
        println!(
            "  one tenant: {} versions listed warm at {:.0}/s (the store alone: `commit 50`)",
            listing.records.len(),
            listing.records.len() as f64 / listed.as_secs_f64(),
        );
    }
    // Pass 1 meets the emulator cold (it renders every incident's JSON for the first time, on
    // the same two cores); pass 2 pulls the same history into a fresh store and file while the
    // emulator answers from its render cache, as a server whose CPU is not ours would.
    for (pass, what) in [(1, "emulator cold"), (2, "emulator warm")] {
        let mut c = config.clone();
        c.store_path = tmp.path().join(format!("pass{pass}.db"));
        let store: Arc<dyn xdrsync_store::Store> =
            Arc::new(SqliteStore::open(&c.store_path).unwrap());
        let out = tmp.path().join(format!("pass{pass}.ndjson"));
        measure(&format!("{tenants} tenants, {what}"), c, store, &out).await;
    }
    if std::env::var_os("XDRSYNC_BENCH_KEEP").is_some() {
        let _ = tmp.keep();
    }
}

/// One timed pull of every tenant into `store` with the NDJSON sink delivering into `out` as
/// pages are committed (as `xdrsync pull --ndjson` does); end to end is until the last version
/// is in the file.
async fn measure(
    label: &str,
    config: xdrsync_config::Config,
    store: Arc<dyn Store>,
    out: &std::path::Path,
) {
    let pipeline = Pipeline::new(config, store.clone()).unwrap();
    let sink: Arc<dyn Sink> = Arc::new(NdjsonSink::new("ndjson", out));
    let started = Instant::now();
    let mut pulled = None;
    let (reports, delivered) = pipeline
        .pull_all_delivering(PullMode::Incremental, &[sink], |_| {
            pulled = Some(started.elapsed());
        })
        .await;
    let total = started.elapsed();
    let pulled = pulled.unwrap_or(total);
    let delivered = delivered.into_iter().next().unwrap().unwrap();
    let versions: u64 = reports
        .iter()
        .map(|r| r.stats.created + r.stats.updated)
        .sum();
    assert_eq!(delivered.events, versions, "every version delivered once");
    let alerts: usize = store
        .versions_after(0, 200)
        .unwrap()
        .iter()
        .map(|v| v.record.incident().map_or(0, |i| i.alerts.len()))
        .sum();
    let bytes = std::fs::metadata(out).unwrap().len();
    println!(
        "throughput ({label}): {versions} versions (avg {:.1} alerts each in the first 200), {} pages",
        alerts as f64 / 200.0,
        reports.iter().map(|r| r.pages).sum::<u32>()
    );
    println!(
        "  pull into SQLite: {:.2}s = {:.0} versions/s; NDJSON sink alongside: {} events, {:.1} MB",
        pulled.as_secs_f64(),
        versions as f64 / pulled.as_secs_f64(),
        delivered.events,
        bytes as f64 / 1e6,
    );
    println!(
        "  end to end (last version in the file): {:.2}s = {:.0} versions/s",
        total.as_secs_f64(),
        versions as f64 / total.as_secs_f64()
    );
    store.checkpoint();
    let size = store.size_bytes();
    // The JSON the store holds, uncompressed: what each version cost before compression.
    let (mut json, mut after) = (0usize, 0i64);
    loop {
        let page = store.versions_after(after, 5000).unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        json += page
            .iter()
            .map(|v| v.raw.len() + v.record.to_json().len())
            .sum::<usize>();
    }
    println!(
        "  store: {:.1} MB = {:.2} KB per version on disk (its raw + normalized JSON: {:.2} KB per version)",
        size as f64 / 1e6,
        size as f64 / 1e3 / versions.max(1) as f64,
        json as f64 / 1e3 / versions.max(1) as f64
    );
}

async fn ratelimit(incidents: usize, scale: f64, api: &str) {
    // One tenant whose 7-day history holds about `incidents` incidents.
    let per_hour = incidents as f64 / (7.0 * 24.0);
    let emu = start(directory(1, per_hour), scale, true).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = config(
        tmp.path(),
        &emu,
        api,
        &format!("initial_lookback_hours = 720\nrate_budget = true\nquota_time_scale = {scale}\n"),
    );
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let pipeline = Pipeline::new(config, store.clone()).unwrap();
    let before = emu.state().stats();
    let started = Instant::now();
    let since = Timestamp::now().sub(chrono::Duration::days(30));
    let reports = pipeline.pull_all_with(PullMode::Since(since), |_| {}).await;
    let elapsed = started.elapsed();
    let r = &reports[0];
    assert!(r.error.is_none(), "{:?}", r.error);
    let after = emu.state().stats();
    let calls = after.pages_served - before.pages_served;
    let (per_window, window) = if api == "graph" {
        (150u64, 60.0)
    } else {
        (50u64, 60.0)
    };
    // The first `per_window` calls go at once; each further `per_window` needs a new window.
    let windows = calls.saturating_sub(1) / per_window;
    let minimum = windows as f64 * window / scale;
    let throttled = after.throttled - before.throttled;
    println!(
        "ratelimit ({api}, time scale {scale}): {} incidents stored, {} list calls, {:.2}s elapsed; theoretical minimum {:.2}s ({} full quota windows of {per_window} calls) → {:.3}×; 429 answers: {throttled}",
        r.stats.created,
        calls,
        elapsed.as_secs_f64(),
        minimum,
        windows,
        elapsed.as_secs_f64() / minimum.max(1e-9),
    );
}

/// Fills `store` with `n` prunable versions: incidents of a tenant of their own, four old
/// versions each (200 days ago) and a fifth, newer one that is kept.
fn fill_prunable(store: &dyn Store, n: usize) {
    use xdrsync_model::{ApiKind, Incident, IncidentId, Record, Severity, TenantId};
    let tenant = TenantId::canonical("00000000-0000-4000-8000-0000000000ff");
    let old = Timestamp::now().sub(chrono::Duration::days(200));
    let items = n.div_ceil(4);
    let mut batch = Vec::with_capacity(5_000);
    for i in 0..items {
        for v in 0..5 {
            let at = if v < 4 {
                old.add(chrono::Duration::minutes(v))
            } else {
                Timestamp::now().sub(chrono::Duration::days(10))
            };
            let record = Record::Incident(Incident {
                tenant_id: tenant.clone(),
                incident_id: IncidentId::new(i.to_string()),
                api: ApiKind::Graph,
                title: format!("Synthetic incident {i} for the retention benchmark"),
                created: old,
                last_update: at,
                status: if v < 4 { "active" } else { "resolved" }.into(),
                severity: Severity::Medium,
                classification: "unknown".into(),
                determination: "unknown".into(),
                assigned_to: Some(format!("analyst{v}@contoso.com")),
                redirect_incident_id: None,
                web_url: None,
                tags: vec![],
                alerts: vec![],
            });
            let raw = format!(
                r#"{{"id":"{i}","lastUpdateDateTime":"{at}","status":"active","displayName":"Synthetic incident {i}"}}"#
            );
            batch.push(xdrsync_store::NewVersion { record, raw });
        }
        if batch.len() >= 5_000 {
            store.commit(&tenant, &batch, None).unwrap();
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.commit(&tenant, &batch, None).unwrap();
    }
}

/// Retention beside a pass: the pass alone, then beside a prune of `n` versions.
async fn prune(n: usize) {
    let emu = start(directory(4, 60.0), 1.0, false).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = unlimited_config(tmp.path(), &emu);
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let t = Instant::now();
    fill_prunable(&*store, n);
    println!(
        "prune: {} versions stored in {:.1}s ({:.0} MB)",
        store.version_count().unwrap(),
        t.elapsed().as_secs_f64(),
        std::fs::metadata(&config.store_path).unwrap().len() as f64 / 1e6
    );
    let pipeline = Pipeline::new(config, store.clone()).unwrap();
    let since = Timestamp::now().sub(chrono::Duration::days(30));
    // The first pass stores the tenants' versions; the measured ones re-read the same 30 days
    // (the same calls, parsing and dedup work; nothing new to insert).
    let _ = pipeline.pull_all_with(PullMode::Since(since), |_| {}).await;
    let pass = || async {
        let t = Instant::now();
        let reports = pipeline.pull_all_with(PullMode::Since(since), |_| {}).await;
        assert!(reports.iter().all(|r| r.error.is_none()));
        t.elapsed().as_secs_f64()
    };
    let alone: Vec<f64> = vec![pass().await, pass().await, pass().await];
    let mut retention = xdrsync_pipeline::retention::Retention::new(90);
    let pruning = {
        let store = store.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = retention.prune(&store, &[]).await.unwrap();
            (r.deleted, t.elapsed().as_secs_f64())
        })
    };
    let mut beside = Vec::new();
    while !pruning.is_finished() {
        beside.push(pass().await);
    }
    let (deleted, took) = pruning.await.unwrap();
    let mut sorted = alone.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[1];
    let mean_beside = beside.iter().sum::<f64>() / beside.len().max(1) as f64;
    let max_beside = beside.iter().copied().fold(0.0, f64::max);
    println!(
        "prune: {deleted} versions pruned in {took:.1}s; a 4-tenant 30-day pass alone {alone:.2?} s (median {median:.2}), {} passes beside the prune: mean {mean_beside:.2} s, max {max_beside:.2} s: {:+.1} %",
        beside.len(),
        (mean_beside - median) / median * 100.0
    );
    println!(
        "prune: {} versions left, store {:.0} MB",
        store.version_count().unwrap(),
        store.size_bytes() as f64 / 1e6
    );
}

/// Only the store: one tenant's 30-day listing committed in commits of `batch` versions, three
/// times, each into a fresh store.
async fn commit(batch: usize) {
    let emu = start(directory(1, 60.0), 1.0, false).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = unlimited_config(tmp.path(), &emu);
    let versions: Vec<_> = list_first_tenant(&config)
        .await
        .records
        .into_iter()
        .map(|f| xdrsync_store::NewVersion {
            record: f.record,
            raw: f.raw,
        })
        .collect();
    for pass in 0..3 {
        let store = SqliteStore::open(&tmp.path().join(format!("c{pass}.db"))).unwrap();
        let t = Instant::now();
        for chunk in versions.chunks(batch) {
            store
                .commit(&config.tenants[0].tenant_id, chunk, None)
                .unwrap();
        }
        println!(
            "commit: {} versions in commits of {batch}: {:.2}s = {:.0}/s",
            versions.len(),
            t.elapsed().as_secs_f64(),
            versions.len() as f64 / t.elapsed().as_secs_f64()
        );
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("commit") => {
            let batch = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50usize);
            commit(batch).await;
        }
        Some("prune") => {
            let n = args
                .get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000usize);
            prune(n).await;
        }
        Some("ratelimit") => {
            let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
            let scale = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(60.0);
            let api = args.get(3).cloned().unwrap_or_else(|| "graph".into());
            ratelimit(n, scale, &api).await;
        }
        _ => {
            let tenants = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4);
            let per_hour = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(60.0);
            throughput(tenants, per_hour).await;
        }
    }
}
