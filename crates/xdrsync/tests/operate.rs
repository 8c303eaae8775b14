//! Running xdrsync for an MSSP, end to end with the real binary and the emulator on loopback:
//! per-customer commands (`--tenant`, `--stream`), honest health (`status` with a stalled
//! sink), output for scripts (`--output json`), a closed standard output, `check-config`'s
//! offline checks, JSON logs, and one-off commands beside the `run` daemon.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use xdrsync_model::{ApiKind, StreamKind};
use xdrsync_store::SqliteStore;
use xdrsync_test_utils as tu;

mod common;
use common::{Daemon, command, text, xdrsync};

/// (tenant id, stream) pairs that have versions in the store.
fn stored_pairs(store: &Path) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open(store).unwrap();
    let mut stmt = db
        .prepare("SELECT DISTINCT tenant_id, stream FROM versions ORDER BY 1, 2")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_and_stream_select_one_customer() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = tu::write_config(dir, &emu, &[ApiKind::Graph, ApiKind::Xdr], "");
    let config = tu::set_streams(&config, &[r#"["incidents", "alerts"]"#]);
    let [first, second, third] = [0, 1, 2].map(|i| config.tenants[i].clone());

    // By name, in another case: only that tenant is pulled.
    let pull = xdrsync(
        &[
            "pull",
            "--tenant",
            &first.name.to_uppercase(),
            "--ndjson",
            "out.ndjson",
        ],
        dir,
    )
    .await;
    assert_eq!(pull.status.code(), Some(0), "{}", text(&pull));
    // Every event names its customer, for routing in the SIEM.
    let lines = std::fs::read_to_string(dir.join("out.ndjson")).unwrap();
    assert!(!lines.is_empty());
    for l in lines.lines() {
        let e: Value = serde_json::from_str(l).unwrap();
        assert_eq!(e["tenant"], first.name.as_str(), "{e}");
        assert_eq!(e["tenant_id"], first.tenant_id.as_str(), "{e}");
    }
    let pairs = stored_pairs(&config.store_path);
    assert!(!pairs.is_empty());
    assert!(
        pairs.iter().all(|(t, _)| *t == first.tenant_id.as_str()),
        "{pairs:?}"
    );

    // By tenant id, one stream only.
    let pull = xdrsync(
        &[
            "pull",
            "--tenant",
            second.tenant_id.as_str(),
            "--stream",
            "alerts",
        ],
        dir,
    )
    .await;
    assert_eq!(pull.status.code(), Some(0), "{}", text(&pull));
    let pairs = stored_pairs(&config.store_path);
    let of_second: Vec<_> = pairs
        .iter()
        .filter(|(t, _)| *t == second.tenant_id.as_str())
        .map(|(_, s)| s.as_str())
        .collect();
    assert_eq!(of_second, ["alerts"], "{pairs:?}");
    assert!(
        !pairs.iter().any(|(t, _)| *t == third.tenant_id.as_str()),
        "{pairs:?}"
    );

    // `status` for one tenant: its rows only, JSON for scripts.
    let status = xdrsync(
        &["status", "--tenant", &first.name, "--output", "json"],
        dir,
    )
    .await;
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let doc: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let streams = doc["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{doc:#}");
    for s in streams {
        assert_eq!(s["tenant"], first.name.as_str());
        assert_eq!(s["state"], "ok");
        // LAG is the time since the last successful pull: seconds, not the newest item's age.
        assert!(s["lag_secs"].as_i64().unwrap() < 120, "{s:#}");
        assert!(s["newest_item_age_secs"].is_i64(), "{s:#}");
    }
    assert!(doc["store"]["bytes"].as_u64().unwrap() > 0);

    // Repeated --tenant on `incidents list`: one array with both tenants' incidents.
    let list = xdrsync(
        &[
            "incidents",
            "list",
            "--tenant",
            &first.name,
            "--tenant",
            third.tenant_id.as_str(),
            "--since",
            "2h",
        ],
        dir,
    )
    .await;
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    let items: Value = serde_json::from_slice(&list.stdout).unwrap();
    let expected = [&first, &third]
        .iter()
        .map(|t| {
            emu.state()
                .incidents(t.tenant_id.as_str(), |i| {
                    i.last_update >= xdrsync_model::Timestamp::now().sub(chrono::Duration::hours(2))
                })
                .len()
        })
        .sum::<usize>();
    let got = items.as_array().unwrap().len();
    assert!(
        (expected..=expected + 4).contains(&got),
        "{got} vs {expected}"
    );
    let table = xdrsync(
        &[
            "incidents",
            "list",
            "--tenant",
            &first.name,
            "--since",
            "2h",
            "--output",
            "table",
        ],
        dir,
    )
    .await;
    assert_eq!(table.status.code(), Some(0), "{}", text(&table));
    let out = String::from_utf8_lossy(&table.stdout);
    assert!(out.starts_with("TENANT"), "{out}");
    assert!(
        out.lines().skip(2).all(|l| l.starts_with(&first.name)),
        "{out}"
    );

    // Unknown values are usage errors (exit 2) that list what is configured.
    for args in [
        vec!["pull", "--tenant", "nobody"],
        vec!["backfill", "--since", "1d", "--tenant", "nobody"],
        vec!["reconcile", "--tenant", "nobody"],
        vec!["status", "--tenant", "nobody"],
        vec!["incidents", "list", "--tenant", "nobody"],
        vec!["auth", "status", "--tenant", "nobody"],
        vec!["auth", "token", "--tenant", "nobody"],
    ] {
        let out = xdrsync(&args, dir).await;
        let msg = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {msg}");
        assert!(
            msg.contains("no tenant named `nobody`")
                && msg.contains(&first.name)
                && msg.contains(third.tenant_id.as_str())
                && !msg.contains("invalid config file"),
            "{args:?}: {msg}"
        );
    }
    let out = xdrsync(&["pull", "--stream", "tickets"], dir).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("unknown stream `tickets`"),
        "{}",
        text(&out)
    );
    let out = xdrsync(&["pull", "--stream", "detections"], dir).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no selected tenant pulls detections"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_token_checks_every_stream_of_each_tenant() {
    // Consented for incidents only: the alerts stream's missing role is named.
    let emu = tu::start(tu::one_tenant(
        "contoso",
        5.0,
        &["SecurityIncident.Read.All"],
    ))
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = tu::write_config(dir, &emu, &[ApiKind::Graph], "");
    tu::set_streams(&config, &[r#"["incidents", "alerts"]"#]);
    let out = xdrsync(&["auth", "token", "--tenant", "contoso"], dir).await;
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("alerts: missing application permission SecurityAlert.Read.All"),
        "{msg}"
    );
    assert!(!msg.contains("incidents: missing"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_exits_1_for_a_stalled_sink_and_shows_its_error() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A webhook to a port nothing listens on: it never delivers.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let sinks = format!(
        "[[sinks]]\nname = \"siem\"\nretry_attempts = 1\nretry_base_ms = 10\n[sinks.webhook]\nurl = \"http://127.0.0.1:{port}/hook\"\n\n\
         [[sinks]]\nname = \"archive\"\n[sinks.file]\npath = \"archive.ndjson\"\n"
    );
    tu::write_config(dir, &emu, &[ApiKind::Graph], &sinks);
    let status = xdrsync(&["status"], dir).await;
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));

    let pull = xdrsync(&["pull"], dir).await;
    assert_eq!(pull.status.code(), Some(1), "{}", text(&pull));
    let status = xdrsync(&["status"], dir).await;
    let out = text(&status);
    assert_eq!(status.status.code(), Some(1), "{out}");
    let siem = out.lines().find(|l| l.starts_with("siem ")).expect(&out);
    assert!(
        siem.contains("STALLED: never delivered") && siem.contains("last error"),
        "{out}"
    );
    let archive = out.lines().find(|l| l.starts_with("archive ")).expect(&out);
    assert!(archive.ends_with(" ok"), "{out}");

    let json = xdrsync(&["status", "--output", "json"], dir).await;
    let doc: Value = serde_json::from_slice(&json.stdout).unwrap();
    let sink = |name: &str| {
        doc["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap()
    };
    assert!(sink("siem")["stalled"].is_string(), "{doc:#}");
    assert!(
        sink("siem")["last_error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{doc:#}"
    );
    assert!(sink("siem")["backlog"].as_u64().unwrap() > 0);
    assert!(sink("archive")["stalled"].is_null());
    assert_eq!(sink("archive")["backlog"], 0);
    assert_eq!(doc["stalled"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_quietly() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let config = tu::write_config(&dir, &emu, &[ApiKind::Graph], "");
    let tenant = config.tenants[0].name.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = command(
            &["incidents", "list", "--tenant", &tenant, "--since", "48h"],
            &dir,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        // `| head -c 10`: read a little, then close the pipe.
        let mut stdout = child.stdout.take().unwrap();
        let mut head = [0u8; 10];
        stdout.read_exact(&mut head).unwrap();
        drop(stdout);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
}

#[test]
fn check_config_finds_unreadable_credentials_without_contacting_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("xdrsync.toml"),
        "[[tenants]]\nname = \"a\"\ntenant_id = \"a.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_secret = { env = \"XDRSYNC_TEST_UNSET_SECRET\" }\n\
         [[tenants]]\nname = \"b\"\ntenant_id = \"b.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555556\"\nclient_secret = { file = \"missing.secret\" }\n\
         [[tenants]]\nname = \"c\"\ntenant_id = \"c.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555557\"\nclient_secret = { command = [\"no-such-vault-cli\", \"get\"] }\n\
         [[tenants]]\nname = \"d\"\ntenant_id = \"d.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555558\"\nclient_secret = { env = \"XDRSYNC_TEST_SET_SECRET\" }\n",
    )
    .unwrap();
    let out = command(&["check-config"], dir)
        .env_remove("XDRSYNC_TEST_UNSET_SECRET")
        .env("XDRSYNC_TEST_SET_SECRET", "s3cr3t-value")
        .output()
        .unwrap();
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(msg.contains("INVALID"), "{msg}");
    assert!(
        msg.contains("tenants[0].client_secret")
            && msg.contains("XDRSYNC_TEST_UNSET_SECRET is not set"),
        "{msg}"
    );
    assert!(
        msg.contains("tenants[1].client_secret") && msg.contains("missing.secret"),
        "{msg}"
    );
    assert!(
        msg.contains("tenants[2].client_secret") && msg.contains("no-such-vault-cli"),
        "{msg}"
    );
    assert!(!msg.contains("tenants[3]"), "{msg}");
    assert!(!msg.contains("s3cr3t-value"), "{msg}");

    let json = command(&["check-config", "--output", "json"], dir)
        .env_remove("XDRSYNC_TEST_UNSET_SECRET")
        .env("XDRSYNC_TEST_SET_SECRET", "s3cr3t-value")
        .output()
        .unwrap();
    let doc: Value =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|_| panic!("{}", text(&json)));
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["problems"].as_array().unwrap().len(), 3, "{doc:#}");
    assert_eq!(doc["tenants"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    tu::write_config(dir, &emu, &[ApiKind::Graph], "");
    let out = xdrsync(
        &[
            "--log-format",
            "json",
            "--log-level",
            "info",
            "pull",
            "--stream",
            "incidents",
        ],
        dir,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert!(!logs.is_empty(), "{err}");
    for l in &logs {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
    }
    // Not a terminal: no colour codes anywhere.
    assert!(!err.contains('\u{1b}'), "{err}");
}

/// A backfill of five tenants while the daemon runs three passes: every pass ends ok, no
/// "database is locked" anywhere, and the store matches the emulator's ground truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_beside_the_daemon_fails_no_pass() {
    // Five customer tenants consented to the MSSP app.
    let emu = tu::start(demo_with_extra_tenants(2, 20.0)).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let config = tu::write_config(&dir, &emu, &[ApiKind::Graph, ApiKind::Xdr], "");
    assert_eq!(config.tenants.len(), 5);

    let daemon = command(&["run", "--interval", "2", "--passes", "3"], &dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Once the first pass is reading pages, backfill a week of every tenant beside it.
    tokio::time::timeout(Duration::from_secs(60), async {
        while emu.state().stats().pages_served == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the first pass reads a page");
    let backfill_started = emu.state().clock().now();
    let backfill = xdrsync(&["backfill", "--since", "7d"], &dir).await;
    let backfill_ended = emu.state().clock().now();
    let status = xdrsync(&["status"], &dir).await;
    let out = tokio::task::spawn_blocking(move || daemon.wait_with_output().unwrap())
        .await
        .unwrap();
    let daemon_err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{daemon_err}");
    assert_eq!(backfill.status.code(), Some(0), "{}", text(&backfill));
    for o in [&text(&backfill), &text(&status), &daemon_err] {
        assert!(!o.contains("locked"), "{o}");
    }
    for pass in 1..=3 {
        assert!(
            daemon_err.contains(&format!("pass {pass}: 5 tenants, 0 degraded")),
            "{daemon_err}"
        );
    }
    // Nothing invented, nothing twice, every version the backfill's window could see.
    let week = backfill_started.sub(chrono::Duration::days(7));
    incidents_match_truth(
        &emu,
        &config,
        week.add(chrono::Duration::minutes(1)),
        (backfill_started, backfill_ended),
    );
}

/// Every tenant's stored incidents against the emulator's ground truth: nothing invented,
/// nothing twice, every version updated since `from` that was current during `poll`.
fn incidents_match_truth(
    emu: &xdrsync_emulator::Emulator,
    config: &xdrsync_config::Config,
    from: xdrsync_model::Timestamp,
    poll: tu::truth::Poll,
) {
    let store = SqliteStore::open(&config.store_path).unwrap();
    for t in &config.tenants {
        let tenant = t.tenant_id.as_str();
        let truth = tu::truth::incidents(emu, tenant);
        let due = tu::truth::since(&truth, from);
        let seen = tu::truth::check(
            &store,
            tenant,
            StreamKind::Incidents,
            (&truth, &due),
            &[poll],
            0,
        );
        assert!(seen > 0, "{}: nothing was due", t.name);
    }
}

/// The demo directory with `n` more customer tenants consented to the MSSP app.
fn demo_with_extra_tenants(n: usize, per_hour: f64) -> xdrsync_emulator::Directory {
    let mut directory = tu::demo_directory();
    let consent = directory.apps[0].consents.values().next().unwrap().clone();
    for i in 0..n {
        let t = xdrsync_emulator::TenantSpec::named(&format!("extra{i}"), per_hour);
        directory.apps[0]
            .consents
            .insert(t.id.clone(), consent.clone());
        directory.tenants.push(t);
    }
    directory
}

/// An emulator of `config` on loopback, its quotas enforced or not.
async fn emulator(
    mut config: xdrsync_emulator::EmulatorConfig,
    rate_limits: bool,
) -> xdrsync_emulator::Emulator {
    config.behaviour.rate_limits = rate_limits;
    xdrsync_emulator::Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect(url);
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// A config with one tenant's consent revoked (degraded) and a webhook sink nothing listens
/// on (stalled at once), beside a working file sink.
async fn degraded_world(dir: &Path) -> (xdrsync_emulator::Emulator, xdrsync_config::Config) {
    let emu = tu::start(tu::demo_directory()).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let sinks = format!(
        "[[sinks]]\nname = \"deadhook\"\nretry_attempts = 1\nstall_after_secs = 1\n[sinks.webhook]\nurl = \"http://127.0.0.1:{port}/hook\"\n\n\
         [[sinks]]\nname = \"archive\"\n[sinks.file]\npath = \"archive.ndjson\"\n"
    );
    let config = tu::write_config(dir, &emu, &[ApiKind::Graph, ApiKind::Xdr], &sinks);
    let revoked = config.tenants[1].tenant_id.to_string();
    emu.state().update_directory(|d| {
        d.apps[0].consents.remove(&revoked);
    });
    (emu, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_serves_metrics_health_readiness_and_reloads_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let (_emu, config) = degraded_world(&dir).await;
    let degraded = config.tenants[1].name.clone();
    let healthy = config.tenants[0].name.clone();
    let mut daemon = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            let mut d = Daemon::start(&dir, &["--interval", "1"]);
            d.wait_for("pass 1:");
            d
        }
    })
    .await
    .unwrap();
    let base = daemon.base.clone();

    assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok\n".into()));

    let (status, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    let sample = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{line_start}` in:\n{metrics}"))
    };
    assert!(sample("xdrsync_pulls_total{stream=\"incidents\",outcome=\"failed\"}") >= 1.0);
    // The degraded tenant never succeeded: no "seconds since" for it, one for the others.
    assert!(
        !metrics.contains(&format!(
            "xdrsync_seconds_since_last_success{{tenant=\"{degraded}\""
        )),
        "{metrics}"
    );
    assert!(
        sample(&format!(
            "xdrsync_versions_pulled_total{{tenant=\"{healthy}\",stream=\"incidents\",change=\"created\"}}"
        )) > 0.0
    );
    assert!(
        sample(&format!(
            "xdrsync_api_calls_total{{tenant=\"{healthy}\",stream=\"incidents\",class=\"2xx\"}}"
        )) > 0.0
    );
    assert!(
        sample(&format!(
            "xdrsync_seconds_since_last_success{{tenant=\"{healthy}\",stream=\"incidents\"}}"
        )) < 60.0
    );
    assert!(
        metrics.contains("xdrsync_token_requests_total{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("outcome=\"failed\",aadsts=\"700016\""),
        "{metrics}"
    );
    assert_eq!(sample("xdrsync_sink_stalled{sink=\"deadhook\"}"), 1.0);
    assert_eq!(sample("xdrsync_sink_stalled{sink=\"archive\"}"), 0.0);
    assert!(sample("xdrsync_sink_backlog_events{sink=\"deadhook\"}") > 0.0);
    assert_eq!(sample("xdrsync_sink_backlog_events{sink=\"archive\"}"), 0.0);
    assert!(sample("xdrsync_sink_events_delivered_total{sink=\"archive\"}") > 0.0);
    assert!(sample("xdrsync_pass_duration_seconds_count") >= 1.0);
    assert!(metrics.contains("# TYPE xdrsync_pass_duration_seconds histogram"));
    assert!(metrics.contains("# HELP xdrsync_sink_backlog_events"));

    let (status, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("sink deadhook is stalled"), "{body}");
    assert!(!body.contains("archive"), "{body}");

    // SIGHUP with the dead sink removed and alerts added: the next pass uses it.
    let original = std::fs::read_to_string(&config.path).unwrap();
    let start = original.find("[[sinks]]\nname = \"deadhook\"").unwrap();
    let end = original.find("[[sinks]]\nname = \"archive\"").unwrap();
    let reloaded = format!("{}{}", &original[..start], &original[end..]).replace(
        "api = \"graph\"\n",
        "api = \"graph\"\nstreams = [\"incidents\", \"alerts\"]\n",
    );
    std::fs::write(&config.path, &reloaded).unwrap();
    daemon.signal("-HUP");
    let daemon = tokio::task::spawn_blocking(move || {
        let line = daemon.wait_for("reloaded");
        assert!(line.contains("1 sink"), "{line}");
        let passes = daemon.stderr().matches("pass ").count();
        daemon.wait_for_count("pass ", passes + 1);
        daemon
    })
    .await
    .unwrap();
    let (status, body) = get(&format!("{base}/readyz")).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains(&format!(
            "xdrsync_api_calls_total{{tenant=\"{healthy}\",stream=\"alerts\",class=\"2xx\"}}"
        )),
        "{metrics}"
    );

    // An unreadable config on SIGHUP: refused with the reason, the old one keeps running.
    std::fs::write(&config.path, format!("{reloaded}\nbroken = [\n")).unwrap();
    daemon.signal("-HUP");
    let mut daemon = tokio::task::spawn_blocking(move || {
        let mut daemon = daemon;
        let line = daemon.wait_for("reload refused");
        assert!(line.contains("old config keeps running"), "{line}");
        let passes = daemon.stderr().matches("pass ").count();
        daemon.wait_for_count("pass ", passes + 1);
        daemon
    })
    .await
    .unwrap();
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    std::fs::write(&config.path, &reloaded).unwrap();

    // A second daemon on the same port: a clear error, exit 2, nothing touched.
    let addr = base.trim_start_matches("http://").to_owned();
    let second = xdrsync(&["run", "--listen", &addr, "--passes", "1"], &dir).await;
    assert_eq!(second.status.code(), Some(2), "{}", text(&second));
    assert!(
        text(&second).contains(&format!("cannot listen on {addr}")),
        "{}",
        text(&second)
    );

    let (code, err) = tokio::task::spawn_blocking(move || {
        daemon.wait_for("pass ");
        daemon.stop()
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Headless Chromium (Debian's `chromium`, installed by `scripts/services`; the path can be
/// set with `XDRSYNC_CHROMIUM`) loading `url` with `extra` flags; returns its standard output.
fn chromium(url: &str, profile: &Path, extra: &[&str]) -> String {
    let exe = std::env::var("XDRSYNC_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&exe).exists(),
        "{exe} is missing: run scripts/services (it installs Debian's chromium)"
    );
    let out = Command::new(&exe)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The status page as a person sees it: loaded in headless Chromium while the daemon runs
/// with one tenant degraded and one sink down. Set `XDRSYNC_UPDATE_SCREENSHOT=1` to refresh
/// `docs/status-page.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let (_emu, config) = degraded_world(&dir).await;
    let degraded = config.tenants[1].name.clone();
    let healthy = config.tenants[0].name.clone();
    let (dom, png, daemon) = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            let mut d = Daemon::start(&dir, &["--interval", "1"]);
            d.wait_for_count("pass ", 2);
            let url = format!("{}/", d.base);
            let dom = chromium(&url, &dir.join("profile-dom"), &["--dump-dom"]);
            let png = dir.join("status-page.png");
            chromium(
                &url,
                &dir.join("profile-shot"),
                &[
                    &format!("--screenshot={}", png.display()),
                    "--window-size=1280,900",
                ],
            );
            (dom, png, d)
        }
    })
    .await
    .unwrap();
    let (code, err) = tokio::task::spawn_blocking(move || daemon.stop())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");

    // What the browser parsed: the rows, their states and the readiness line.
    assert!(dom.contains("<title>xdrsync status</title>"), "{dom}");
    assert!(
        dom.contains(&format!(
            "<tr data-tenant=\"{degraded}\" data-stream=\"incidents\" class=\"degraded\">"
        )),
        "{dom}"
    );
    assert!(
        dom.contains(&format!(
            "<tr data-tenant=\"{healthy}\" data-stream=\"incidents\" class=\"ok\">"
        )),
        "{dom}"
    );
    assert!(
        dom.contains("AADSTS700016"),
        "the degraded tenant's short error: {dom}"
    );
    assert!(
        dom.contains("<tr data-sink=\"deadhook\" class=\"stalled\">"),
        "{dom}"
    );
    assert!(
        dom.contains("<tr data-sink=\"archive\" class=\"ok\">"),
        "{dom}"
    );
    assert!(
        dom.contains("<p id=\"readiness\" class=\"bad\">Not ready: sink deadhook is stalled"),
        "{dom}"
    );
    let passes = dom
        .split("<table id=\"passes\">")
        .nth(1)
        .unwrap()
        .matches("<tr class=")
        .count();
    assert!(passes >= 2, "{dom}");
    assert!(dom.contains("http-equiv=\"refresh\""), "{dom}");

    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000);
    if std::env::var_os("XDRSYNC_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/status-page.png");
        std::fs::copy(&png, docs).unwrap();
    }
}

/// An emulator whose Graph incident pages take 300 ms each, and a config reading 10 incidents
/// a page: a backfill of 8 h takes a few seconds.
async fn slow_world(dir: &Path) -> xdrsync_emulator::Emulator {
    let emu = tu::start(tu::one_tenant("contoso", 30.0, tu::ALL_READ_ROLES)).await;
    emu.state().add_fault(xdrsync_emulator::faults::FaultRule {
        route: "GET /v1.0/security/incidents".into(),
        sequence: vec![],
        fault: Some(xdrsync_emulator::faults::Fault::Latency { ms: 300 }),
        probability: Some(1.0),
    });
    tu::write_config(
        dir,
        &emu,
        &[ApiKind::Graph],
        "[sync]\ngraph_page_size = 10\n",
    );
    emu
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backfill_prints_progress_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let _emu = slow_world(&dir).await;
    let mut c = command(&["backfill", "--since", "8h"], &dir);
    c.env("XDRSYNC_PROGRESS_SECS", "1");
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("pulling contoso incidents since "))
        .collect();
    assert!(lines.len() >= 2, "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("% of the window") && l.contains(" left")),
        "{err}"
    );
    assert!(err.contains("pulled contoso incidents (1/1):"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_on_a_terminal_draws_progress_bars() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let _emu = slow_world(&dir).await;
    // `script` gives the command a terminal (a pseudo-terminal) and records what it drew.
    let exe = env!("CARGO_BIN_EXE_xdrsync");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("script")
            .args(["-qfec", &format!("{exe} backfill --since 8h"), "typescript"])
            .current_dir(&dir)
            .env_remove("XDRSYNC_CONFIG")
            .env("COLUMNS", "160")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}");
    assert!(screen.contains("contoso incidents"), "{screen}");
    assert!(screen.contains(" pages, "), "{screen}");
    assert!(screen.contains("% of the window"), "{screen}");
    assert!(screen.contains("streams"), "{screen}");
    assert!(screen.contains("contoso incidents: "), "{screen}");
}

/// A store with 200 days of history shrinks to the retention window: every item's newest
/// version stays, every older version inside the window stays, and `reconcile` over what
/// Defender still holds (180 days) finds the store equal to the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_shrinks_200_days_to_the_window_and_still_reconciles() {
    let ec = xdrsync_emulator::EmulatorConfig {
        directory: tu::one_tenant("contoso", 1.0, tu::ALL_READ_ROLES),
        history: chrono::Duration::days(210),
        ..Default::default()
    };
    let emu = emulator(ec, false).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let config = tu::write_config(
        &dir,
        &emu,
        &[ApiKind::Graph],
        "[[sinks]]\nname = \"archive\"\n[sinks.file]\npath = \"archive.ndjson\"\n",
    );
    let text_of = std::fs::read_to_string(&config.path).unwrap();
    std::fs::write(
        &config.path,
        text_of.replace("[store]\n", "[store]\nretention_days = 90\n"),
    )
    .unwrap();
    // 200 days of polling: the emulator's clock goes back 200 days, then forward 5 days
    // between pulls, so the store keeps the versions each pull saw, as a real store would.
    emu.state().clock().advance(chrono::Duration::days(-200));
    let first = xdrsync(&["backfill", "--since", "205d"], &dir).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    for _ in 0..40 {
        emu.state().clock().advance(chrono::Duration::days(5));
        let pull = xdrsync(&["pull"], &dir).await;
        assert_eq!(pull.status.code(), Some(0), "{}", text(&pull));
    }
    let db = || rusqlite::Connection::open(&config.store_path).unwrap();
    let cutoff = xdrsync_model::Timestamp::now()
        .sub(chrono::Duration::days(90))
        .to_string();
    let count = |sql: &str| -> i64 { db().query_row(sql, [&cutoff], |r| r.get(0)).unwrap() };
    let superseded_old = "SELECT COUNT(*) FROM versions v WHERE v.last_update < ?1 AND EXISTS (
        SELECT 1 FROM versions w WHERE w.tenant_id = v.tenant_id AND w.stream = v.stream
        AND w.item_id = v.item_id AND w.last_update > v.last_update)";
    let in_window = "SELECT COUNT(*) FROM versions WHERE last_update >= ?1";
    let items = "SELECT COUNT(DISTINCT item_id) FROM versions WHERE ?1 IS NOT NULL";
    let (old_before, window_before, items_before) =
        (count(superseded_old), count(in_window), count(items));
    assert!(old_before > 100, "{old_before} prunable versions");

    // One daemon pass delivers to the sink, then retention prunes before it exits.
    let run = xdrsync(&["run", "--passes", "1"], &dir).await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert!(
        text(&run).contains(&format!("retention: pruned {old_before} versions")),
        "{}",
        text(&run)
    );
    assert_eq!(count(superseded_old), 0);
    assert!(count(in_window) >= window_before);
    assert_eq!(
        count(items),
        items_before,
        "every item keeps its newest version"
    );

    // Defender lists only what changed within its 180-day retention: compare 170 days.
    let reconcile = xdrsync(&["reconcile", "--since", "170d"], &dir).await;
    assert_eq!(reconcile.status.code(), Some(0), "{}", text(&reconcile));
    let status = xdrsync(&["status"], &dir).await;
    assert!(text(&status).contains("Store "), "{}", text(&status));
}

fn ndjson(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_resends_a_window_to_one_sink_marked_as_replays() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let config = tu::write_config(
        &dir,
        &emu,
        &[ApiKind::Graph, ApiKind::Xdr],
        "[[sinks]]\nname = \"archive\"\n[sinks.file]\npath = \"archive.ndjson\"\n\n\
         [[sinks]]\nname = \"other\"\n[sinks.file]\npath = \"other.ndjson\"\n",
    );
    let config = tu::set_streams(&config, &[r#"["incidents", "alerts"]"#]);
    let pull = xdrsync(&["pull"], &dir).await;
    assert_eq!(pull.status.code(), Some(0), "{}", text(&pull));
    let archived = ndjson(&dir.join("archive.ndjson"));
    let other_before = ndjson(&dir.join("other.ndjson")).len();
    let position = |name: &str| -> i64 {
        rusqlite::Connection::open(&config.store_path)
            .unwrap()
            .query_row(
                "SELECT seq FROM sink_positions WHERE sink = ?1",
                [name],
                |r| r.get(0),
            )
            .unwrap()
    };
    let archive_position = position("archive");

    // One tenant's incidents of the last 6 hours, again, to the archive only.
    let tenant = &config.tenants[0];
    let since = xdrsync_model::Timestamp::now().sub(chrono::Duration::hours(6));
    let replay = xdrsync(
        &[
            "replay",
            "--sink",
            "archive",
            "--since",
            "6h",
            "--tenant",
            &tenant.name,
            "--stream",
            "incidents",
        ],
        &dir,
    )
    .await;
    assert_eq!(replay.status.code(), Some(0), "{}", text(&replay));
    let after = ndjson(&dir.join("archive.ndjson"));
    let replayed = &after[archived.len()..];
    let expected = archived
        .iter()
        .filter(|e| {
            e["tenant_id"] == tenant.tenant_id.as_str()
                && e["stream"] == "incidents"
                && e["last_update"]
                    .as_str()
                    .unwrap()
                    .parse::<xdrsync_model::Timestamp>()
                    .unwrap()
                    >= since.sub(chrono::Duration::seconds(2))
        })
        .count();
    assert!(!replayed.is_empty());
    assert!(
        (expected.saturating_sub(2)..=expected).contains(&replayed.len()),
        "{} replayed, {expected} expected",
        replayed.len()
    );
    let original: std::collections::BTreeSet<&str> = archived
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    for e in replayed {
        assert_eq!(e["replay"], true, "{e}");
        assert_eq!(e["tenant"], tenant.name.as_str());
        assert_eq!(e["stream"], "incidents");
        assert!(
            original.contains(e["event_id"].as_str().unwrap()),
            "same event ids"
        );
    }
    assert!(text(&replay).contains(&format!("Replayed {} events", replayed.len())));
    // The sink's own position did not move; the other sink got nothing; no temporary
    // position is left behind.
    assert_eq!(position("archive"), archive_position);
    assert_eq!(ndjson(&dir.join("other.ndjson")).len(), other_before);
    let left: i64 = rusqlite::Connection::open(&config.store_path)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sink_positions WHERE sink LIKE 'replay:%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);

    // To a new NDJSON file: everything in the window, marked.
    let to_file = xdrsync(
        &["replay", "--ndjson", "rebuilt.ndjson", "--since", "48h"],
        &dir,
    )
    .await;
    assert_eq!(to_file.status.code(), Some(0), "{}", text(&to_file));
    let rebuilt = ndjson(&dir.join("rebuilt.ndjson"));
    assert!(rebuilt.len() > replayed.len());
    assert!(rebuilt.iter().all(|e| e["replay"] == true));

    // Bad input: a sink that does not exist, a time in the future, a stream the sink
    // never takes.
    let out = xdrsync(&["replay", "--sink", "splunk", "--since", "1h"], &dir).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no sink named `splunk`") && text(&out).contains("archive, other"),
        "{}",
        text(&out)
    );
    let out = xdrsync(
        &[
            "replay",
            "--sink",
            "archive",
            "--since",
            "2099-01-01T00:00:00Z",
        ],
        &dir,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("in the future"), "{}", text(&out));
    let out = xdrsync(&["replay", "--sink", "archive", "--since", "soon"], &dir).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(ndjson(&dir.join("archive.ndjson")).len(), after.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ndjson_path_is_its_own_sink_and_an_upgrade_writes_nothing_twice() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let config = tu::write_config(&dir, &emu, &[ApiKind::Graph], "");
    let first = xdrsync(&["pull", "--ndjson", "a.ndjson"], &dir).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let a = ndjson(&dir.join("a.ndjson"));
    assert!(!a.is_empty());
    // A second file is a second sink: it gets every stored event, not nothing.
    let second = xdrsync(&["pull", "--ndjson", "b.ndjson"], &dir).await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let b = ndjson(&dir.join("b.ndjson"));
    assert!(b.len() >= a.len(), "{} < {}", b.len(), a.len());

    // A store from before kept one position named `ndjson`: the existing file takes it over.
    let db = rusqlite::Connection::open(&config.store_path).unwrap();
    let name = format!("ndjson:{}", dir.join("a.ndjson").display());
    db.execute(
        "UPDATE sink_positions SET sink = 'ndjson' WHERE sink = ?1",
        [&name],
    )
    .unwrap();
    db.execute("DELETE FROM sink_health WHERE sink = ?1", [&name])
        .unwrap();
    let third = xdrsync(&["pull", "--ndjson", "a.ndjson"], &dir).await;
    assert_eq!(third.status.code(), Some(0), "{}", text(&third));
    let again = ndjson(&dir.join("a.ndjson"));
    let ids: std::collections::BTreeSet<&str> = again
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), again.len(), "no event written twice");
}

/// Two processes on one store share one quota: a `backfill` and a `pull` of the same tenant at
/// once, against the emulator's enforced quotas (time scaled 60×), get no 429 at all, because
/// each counts the calls the other recorded in the store's budget ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_on_one_store_pace_inside_one_quota() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = common::quota_scenario(tmp.path()).await;
    common::backfill_beside_pull_without_a_429(tmp.path(), &emu).await;
}

/// An API answering 429 with `Retry-After` of a year: the stream fails at once with the
/// reason (longer than `retry_max_secs`), nothing sleeps for a year, nothing panics, and the
/// other tenants are pulled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_retry_after_of_a_year_fails_the_stream_not_the_pass() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let config = tu::write_config(&dir, &emu, &[ApiKind::Graph, ApiKind::Xdr], "");
    // Only the legacy tenant's listing is throttled.
    emu.state().add_fault(xdrsync_emulator::faults::FaultRule {
        route: "GET /api/incidents".into(),
        sequence: vec![],
        fault: Some(xdrsync_emulator::faults::Fault::Status {
            status: 429,
            retry_after_secs: Some(31_536_000),
        }),
        probability: Some(1.0),
    });
    let started = std::time::Instant::now();
    let pull = xdrsync(&["pull"], &dir).await;
    let out = text(&pull);
    assert!(started.elapsed() < Duration::from_secs(30), "{out}");
    assert_eq!(pull.status.code(), Some(1), "{out}");
    assert!(!out.contains("panicked"), "{out}");
    assert!(out.contains("longer than retry_max_secs"), "{out}");
    let status = xdrsync(&["status", "--output", "json"], &dir).await;
    let doc: Value = serde_json::from_slice(&status.stdout).unwrap();
    let states: Vec<(String, String)> = doc["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["tenant"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states.iter().filter(|(_, s)| s == "degraded").count(),
        1,
        "{states:?}"
    );
    assert!(
        states.contains(&(config.tenants[1].name.clone(), "degraded".into())),
        "{states:?}"
    );
}

/// A page larger than `[sync] max_response_mib` fails that stream with a clear message; it is
/// not read into memory whole, not retried, and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_page_fails_with_a_clear_message() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    // 20 KiB: a Graph page of 50 incidents with their alerts is larger.
    tu::write_config(
        &dir,
        &emu,
        &[ApiKind::Graph],
        "[sync]\nmax_response_mib = 0.02\n",
    );
    let before = emu.state().stats().pages_served;
    let pull = xdrsync(&["pull", "--stream", "incidents"], &dir).await;
    let out = text(&pull);
    assert_eq!(pull.status.code(), Some(1), "{out}");
    assert!(
        out.contains("larger than 20 KiB ([sync] max_response_mib)"),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");
    // One request per stream: the oversized page is not asked for again.
    let pages = emu.state().stats().pages_served - before;
    assert!(pages <= 3, "{pages} pages served");
    // With the default limit the same pull works.
    tu::write_config(&dir, &emu, &[ApiKind::Graph], "");
    let pull = xdrsync(&["pull", "--stream", "incidents"], &dir).await;
    assert_eq!(pull.status.code(), Some(0), "{}", text(&pull));
}

/// The store (and its WAL), the budget ledger, NDJSON and `Latest Incidents` files, secret
/// files and the emulator's contract and TLS key are created readable by their owner only.
#[test]
fn files_are_private_from_the_first_byte() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let demo = command(&["demo", "--dir", dir.to_str().unwrap()], tmp.path())
        .output()
        .unwrap();
    assert!(demo.status.success(), "{}", text(&demo));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the demo folder");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("xdrsync.db")
            || name.ends_with(".ndjson")
            || name.starts_with("Latest Incidents")
        {
            assert_eq!(mode(&p), 0o600, "{name}");
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "db, wal, shm, ledger, events, latest: {checked}"
    );

    // `emulator serve`: its folder, its contract (it holds app secrets) and its TLS key.
    let state = tmp.path().join("emu");
    let mut serve = command(
        &[
            "emulator",
            "serve",
            "--tls",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        tmp.path(),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let contract = state.join("emulator.json");
    for _ in 0..200 {
        if contract.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&contract), 0o600);
    assert_eq!(mode(&state.join("tls/server-key.pem")), 0o600);
    // `init`'s secret files.
    let init = command(
        &[
            "init",
            "--emulator",
            contract.to_str().unwrap(),
            "--out",
            tmp.path().join("x.toml").to_str().unwrap(),
        ],
        tmp.path(),
    )
    .output()
    .unwrap();
    assert!(init.status.success(), "{}", text(&init));
    let secrets = tmp.path().join("secrets");
    assert_eq!(mode(&secrets), 0o700);
    for entry in std::fs::read_dir(&secrets).unwrap() {
        assert_eq!(mode(&entry.unwrap().path()), 0o600);
    }
}

#[test]
fn emulator_refuses_a_non_loopback_bind_without_allow_remote() {
    let tmp = tempfile::tempdir().unwrap();
    let out = command(
        &[
            "emulator",
            "serve",
            "--bind",
            "0.0.0.0:0",
            "--state-dir",
            tmp.path().join("emu").to_str().unwrap(),
        ],
        tmp.path(),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--allow-remote"), "{}", text(&out));
    assert!(!tmp.path().join("emu/emulator.json").exists());
}

/// Rate limits end to end: the emulator enforces Microsoft's quotas (clock 60× faster), a
/// pull of several tenants through them gets 0 × 429 and stores exactly what the API held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_tenant_pull_through_enforced_quotas_meets_no_429_and_the_truth() {
    let ec = xdrsync_emulator::EmulatorConfig {
        directory: demo_with_extra_tenants(1, 40.0),
        time_scale: 60.0,
        ..Default::default()
    };
    let emu = emulator(ec, true).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let config = tu::write_config(
        &dir,
        &emu,
        &[ApiKind::Graph, ApiKind::Xdr],
        "[sync]\nrate_budget = true\nquota_time_scale = 60\nxdr_page_size = 10\ngraph_page_size = 10\n",
    );
    let before = emu.state().stats();
    let start = emu.state().clock().now();
    let pull = xdrsync(
        &["backfill", "--since", "3d", "--stream", "incidents"],
        &dir,
    )
    .await;
    let end = emu.state().clock().now();
    assert_eq!(pull.status.code(), Some(0), "{}", text(&pull));
    let after = emu.state().stats();
    let calls = after.pages_served - before.pages_served;
    assert!(calls > 150, "{calls} calls: too few to meet a quota");
    assert_eq!(after.throttled - before.throttled, 0, "{calls} calls");
    let since = start.sub(chrono::Duration::days(3));
    incidents_match_truth(
        &emu,
        &config,
        since.add(chrono::Duration::hours(1)),
        (start, end),
    );
}

/// Logs are coloured on a terminal, and never with `NO_COLOR` set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_colour_only_on_a_terminal_and_never_with_no_color() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    tu::write_config(&dir, &emu, &[ApiKind::Graph], "");
    let exe = env!("CARGO_BIN_EXE_xdrsync");
    let on_terminal = |no_color: bool| {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = Command::new("script");
            c.args([
                "-qfec",
                &format!("{exe} --log-level info pull --stream incidents"),
                "/dev/null",
            ])
            .current_dir(&dir)
            .env_remove("XDRSYNC_CONFIG")
            .env_remove("NO_COLOR");
            if no_color {
                c.env("NO_COLOR", "1");
            }
            let out = c.output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    // tracing-subscriber colours the level: INFO is green (ESC [32m).
    let coloured = on_terminal(false).await.unwrap();
    assert!(coloured.contains("\u{1b}[32m"), "{coloured:?}");
    let plain = on_terminal(true).await.unwrap();
    assert!(plain.contains("INFO"), "{plain:?}");
    assert!(!plain.contains("\u{1b}[32m"), "{plain:?}");
}

/// A SOAR writes back through `run`: `POST /actions` signed like the webhook sink applies the
/// actions (answered per action, changed in Defender, recorded in the audit with the SOAR as
/// actor); a bad signature, a stale timestamp, a replayed request and a wrong bearer token are
/// refused and change nothing; the bearer token works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soar_posts_signed_actions_to_run() {
    let emu = tu::start(tu::many_tenants(&["Contoso"], 6.0, tu::ALL_WRITE_ROLES)).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    std::fs::write(dir.join("soar.key"), "s3cret-hmac-key\n").unwrap();
    std::fs::write(dir.join("soar.token"), "bearer-token-123\n").unwrap();
    let config = tu::write_config(
        &dir,
        &emu,
        &[ApiKind::Graph],
        "[server]\nlisten = \"127.0.0.1:0\"\nactions_hmac_secret = { file = \"soar.key\" }\nactions_token = { file = \"soar.token\" }\n",
    );
    let tenant = config.tenants[0].tenant_id.as_str().to_owned();
    let ids = tu::newest_incidents(&emu, &tenant, 2);
    let (a, b) = (ids[0], ids[1]);
    let daemon = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            let mut d = Daemon::start(&dir, &["--interval", "3600"]);
            d.wait_for("pass 1:");
            d
        }
    })
    .await
    .unwrap();
    let url = format!("{}/actions", daemon.base);
    let http = reqwest::Client::new();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let body = serde_json::json!({"actor": "xsoar", "actions": [
        {"tenant": "contoso", "id": a.to_string(), "status": "inProgress", "comment": "from the playbook"},
        {"tenant": "contoso", "id": b.to_string(), "determination": "malware", "classification": "falsePositive"},
    ]})
    .to_string();
    let post = |ts: u64, sig: String, body: String| {
        http.post(&url)
            .header("content-type", "application/json")
            .header("x-xdrsync-timestamp", ts.to_string())
            .header("x-xdrsync-signature", sig)
            .body(body)
            .send()
    };
    let key = b"s3cret-hmac-key";
    let ts = now();
    let sig = xdrsync_sinks::webhook::sign(key, ts, body.as_bytes());
    let ok = post(ts, sig.clone(), body.clone()).await.unwrap();
    assert_eq!(ok.status(), 200);
    let answer: Value = ok.json().await.unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0]["outcome"], "applied", "{answer}");
    assert_eq!(results[1]["outcome"], "failed", "{answer}");
    assert!(
        results[1]["message"]
            .as_str()
            .unwrap()
            .contains("does not go with classification"),
        "{answer}"
    );
    let inc = emu.state().incidents(&tenant, |i| i.id == a).pop().unwrap();
    assert_eq!(inc.status.graph, "inProgress");
    assert!(
        inc.comments
            .iter()
            .any(|c| c.comment == "from the playbook")
    );
    let changed = inc.last_update;
    // Refused: the same request again (a replay), a stale one, a forged one, a wrong token.
    let replay = post(ts, sig, body.clone()).await.unwrap();
    assert_eq!(replay.status(), 409);
    let old = now() - 3600;
    let stale = post(
        old,
        xdrsync_sinks::webhook::sign(key, old, body.as_bytes()),
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(stale.status(), 401);
    assert!(stale.text().await.unwrap().contains("window"));
    let forged = post(
        now(),
        xdrsync_sinks::webhook::sign(b"guess", now(), body.as_bytes()),
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(forged.status(), 401);
    let wrong = http
        .post(&url)
        .bearer_auth("not-the-token")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let unsigned = http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    assert_eq!(
        emu.state()
            .incidents(&tenant, |i| i.id == a)
            .pop()
            .unwrap()
            .last_update,
        changed,
        "a refused request changed the incident"
    );
    // The bearer token.
    let by_token = http
        .post(&url)
        .bearer_auth("bearer-token-123")
        .body(
            serde_json::json!({"actions": [{"tenant": "contoso", "id": a.to_string(), "comment": "second look"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(by_token.status(), 200);
    let bad_body = http
        .post(&url)
        .bearer_auth("bearer-token-123")
        .body("{\"actions\": 5}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_body.status(), 400);
    let (code, err) = tokio::task::spawn_blocking(move || daemon.stop())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    let log = xdrsync(&["actions", "log"], &dir).await;
    let out = text(&log);
    assert!(out.contains("xsoar (POST /actions)"), "{out}");
    assert!(out.contains("soar (POST /actions)"), "{out}");
}

/// Scheduled hunts end to end: `run` runs each `[[hunts]]` section in its tenants when due;
/// every row becomes one `hunts` event; a row a later run returns again (in the same daemon,
/// or after a restart) is never delivered again; what was delivered is exactly what the
/// hunting API returns; a tenant without the hunting role fails alone and `status` says so;
/// a hunt that is not due is not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_hunt_rows_are_delivered_once() {
    let mut roles = tu::ALL_READ_ROLES.to_vec();
    roles.extend(["ThreatHunting.Read.All", "AdvancedHunting.Read.All"]);
    // Few incidents an hour: the world does not move during the test, so the hunting API's
    // answer afterwards is the ground truth of every run.
    let emu = tu::start(tu::many_tenants(
        &["Contoso", "Fabrikam", "Northwind"],
        0.05,
        &roles,
    ))
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let config = tu::write_config(&dir, &emu, &[ApiKind::Graph, ApiKind::Xdr], "");
    let names: Vec<String> = config.tenants.iter().map(|t| t.name.clone()).collect();
    // The third tenant (Graph) has no hunting role.
    let denied = config.tenants[2].tenant_id.as_str().to_owned();
    emu.state().update_directory(|d| {
        for roles in d.apps[0].consents.get_mut(&denied).unwrap().values_mut() {
            roles.retain(|r| !r.contains("Hunting"));
        }
    });
    let query = "DeviceProcessEvents | project Timestamp, DeviceName, FileName, ProcessCommandLine, AccountName, ReportId";
    let mut text_config = std::fs::read_to_string(&config.path).unwrap();
    text_config.push_str(&format!(
        "\n[[hunts]]\nname = \"processes\"\nquery = \"{query}\"\ninterval = \"1s\"\ntimespan = \"30d\"\nseverity = \"high\"\n\
         \n[[hunts]]\nname = \"alert-count\"\nquery = \"AlertInfo | summarize count() by Severity\"\ntenants = [\"{}\"]\ninterval = \"1d\"\n",
        names[0]
    ));
    std::fs::write(&config.path, text_config).unwrap();

    // Two passes of one daemon (the 1 s hunt runs in both, the daily one once), then a
    // restarted daemon's pass.
    let events = dir.join("events.ndjson");
    let ev = events.to_str().unwrap();
    let first = xdrsync(
        &["run", "--ndjson", ev, "--passes", "2", "--interval", "2"],
        &dir,
    )
    .await;
    let first_text = text(&first);
    assert_eq!(first.status.code(), Some(0), "{first_text}");
    // The 1 s hunt is due again when the restarted daemon starts.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = xdrsync(&["run", "--ndjson", ev, "--passes", "1"], &dir).await;
    let second_text = text(&second);
    assert_eq!(second.status.code(), Some(0), "{second_text}");
    let all_text = format!("{first_text}\n{second_text}");
    for name in &names[..2] {
        let lines: Vec<&str> = all_text
            .lines()
            .filter(|l| l.starts_with(&format!("hunt processes in {name}: ")))
            .collect();
        assert_eq!(lines.len(), 3, "three runs in {name}: {all_text}");
        assert!(
            lines[1].ends_with(", 0 new") && lines[2].ends_with(", 0 new"),
            "later runs find nothing new: {lines:?}"
        );
    }
    assert_eq!(
        all_text.matches("hunt alert-count in ").count(),
        1,
        "a daily hunt runs once: {all_text}"
    );
    assert_eq!(
        all_text
            .lines()
            .filter(
                |l| l.starts_with(&format!("hunt processes in {}: FAILED", names[2]))
                    && l.contains("ThreatHunting.Read.All")
            )
            .count(),
        3,
        "the tenant without the role fails each run, naming it: {all_text}"
    );

    // Each hunt row delivered once, and the rows are the hunting API's.
    let delivered: Vec<Value> = ndjson(&events)
        .into_iter()
        .filter(|e| e["stream"] == "hunts")
        .collect();
    let ids: std::collections::BTreeSet<&str> = delivered
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let rows: std::collections::BTreeSet<&str> = delivered
        .iter()
        .map(|e| e["row_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), delivered.len(), "no event twice");
    assert_eq!(rows.len(), delivered.len(), "no row twice");
    let db = rusqlite::Connection::open(dir.join("xdrsync.db")).unwrap();
    let stored: usize = db
        .query_row(
            "SELECT COUNT(*) FROM versions WHERE stream = 'hunts'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, delivered.len());
    for (i, name) in names.iter().enumerate() {
        let tenant_id = config.tenants[i].tenant_id.as_str();
        let mut got: Vec<Value> = delivered
            .iter()
            .filter(|e| e["tenant_id"] == tenant_id && e["hunt_row"]["hunt"] == "processes")
            .map(|e| e["hunt_row"]["row"].clone())
            .collect();
        let truth = xdrsync(
            &[
                "hunt",
                query,
                "--tenant",
                name,
                "--timespan",
                "30d",
                "--output",
                "ndjson",
            ],
            &dir,
        )
        .await;
        let mut want: Vec<Value> = String::from_utf8_lossy(&truth.stdout)
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("TenantName");
                o.remove("TenantId");
                v
            })
            .collect();
        // Compared by content, whatever the column order.
        let key = |v: &Value| xdrsync_model::HuntRow::hash_of(v.as_object().unwrap());
        got.sort_by_key(key);
        want.sort_by_key(key);
        if i == 2 {
            assert!(got.is_empty() && want.is_empty(), "{}", text(&truth));
        } else {
            assert!(!want.is_empty(), "{name} has process events");
            assert_eq!(got, want, "{name}: delivered rows = the hunting API's rows");
        }
    }
    // The other hunt's rows carry its own name, and every row the hunt's severity.
    assert!(
        delivered
            .iter()
            .any(|e| e["hunt_row"]["hunt"] == "alert-count"
                && e["hunt_row"]["row"]["count_"].is_number())
    );
    assert!(
        delivered
            .iter()
            .filter(|e| e["hunt_row"]["hunt"] == "processes")
            .all(|e| e["hunt_row"]["severity"] == "high")
    );

    // `status` shows each hunt in each tenant; the failing one makes it exit 1.
    let status = xdrsync(&["status", "--output", "json"], &dir).await;
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    let doc: Value = serde_json::from_slice(&status.stdout).unwrap();
    let hunts = doc["hunts"].as_array().unwrap();
    assert_eq!(hunts.len(), 4, "{doc:#}");
    let of = |hunt: &str, tenant: &str| {
        hunts
            .iter()
            .find(|h| h["hunt"] == hunt && h["tenant"] == tenant)
            .unwrap()
            .clone()
    };
    let ok = of("processes", &names[0]);
    assert_eq!(
        (ok["state"].as_str(), ok["new_rows"].as_u64()),
        (Some("ok"), Some(0))
    );
    assert!(ok["rows"].as_u64().unwrap() > 0);
    let bad = of("processes", &names[2]);
    assert_eq!(bad["state"], "failed");
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("ThreatHunting.Read.All"),
        "{bad}"
    );
    assert_eq!(of("alert-count", &names[0])["state"], "ok");
    let table = xdrsync(&["status"], &dir).await;
    assert!(
        text(&table).contains("HUNT") && text(&table).contains("FAILED"),
        "{}",
        text(&table)
    );
}
