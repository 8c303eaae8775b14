//! The sink conformance suite (`xdrsync_test_utils::conformance`) against every sink and its
//! real receiver: files, stdout, rsyslog (TCP, TLS, UDP; CEF, LEEF, JSON; RFC 5424 and 3164),
//! an HEC receiver (with and without indexer acknowledgement), a webhook receiver, a private
//! nats-server, and the machine's PostgreSQL behind a fault proxy.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use xdrsync_sinks::{Sink, fixtures};
use xdrsync_test_utils::conformance::{self, Capabilities, Receiver, event_id_of};
use xdrsync_test_utils::receivers::hec::{Hec, HecOptions};
use xdrsync_test_utils::receivers::nats::{Access, NatsServer, read_stream};
use xdrsync_test_utils::receivers::postgres as pg;
use xdrsync_test_utils::receivers::proxy::Proxy;
use xdrsync_test_utils::receivers::rsyslog::Rsyslog;
use xdrsync_test_utils::receivers::webhook::Webhook;

/// How many versions the shared fixtures hold (one of each API shape and a hunt row).
const FIXTURES: usize = 6;

/// A sink from its TOML, as the config file would build it.
fn build_sink(toml: &str, dir: &Path) -> Arc<dyn Sink> {
    let v = xdrsync_sinks::config::validate_toml(toml, &dir.join("xdrsync.toml"), &[], true)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    xdrsync_sinks::build(&v).unwrap()
}

fn lines_ids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            event_id_of(&v).expect("every line carries its event id")
        })
        .collect()
}

// ---- files ----

struct FileReceiver {
    dir: tempfile::TempDir,
    format: &'static str,
}

impl FileReceiver {
    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
}

impl Receiver for FileReceiver {
    fn sink_table(&self) -> String {
        std::fs::create_dir_all(self.out()).unwrap();
        format!(
            "format = \"{}\"\n[file]\npath = \"{}\"",
            self.format,
            self.out().join("events.ndjson").display()
        )
    }
    async fn event_ids(&self, _: usize) -> Vec<String> {
        lines_ids(&self.out().join("events.ndjson"))
    }
    /// The folder is swapped for a plain file: opening the NDJSON file fails (ENOTDIR),
    /// even for root, like an unmounted share.
    async fn stop(&self) {
        std::fs::rename(self.out(), self.dir.path().join("away")).unwrap();
        std::fs::write(self.out(), b"").unwrap();
    }
    async fn restart(&self) {
        std::fs::remove_file(self.out()).unwrap();
        std::fs::rename(self.dir.path().join("away"), self.out()).unwrap();
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            restart: true,
            acknowledges: true,
            dedups: false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_ndjson_conforms() {
    for format in ["xdrsync", "ocsf", "ecs"] {
        conformance::run(&FileReceiver {
            dir: tempfile::tempdir().unwrap(),
            format,
        })
        .await;
    }
}

// ---- stdout ----

struct StdoutReceiver {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver for StdoutReceiver {
    fn sink_table(&self) -> String {
        "[stdout]".into()
    }
    fn build(&self, toml: &str, dir: &Path) -> Arc<dyn Sink> {
        let v = xdrsync_sinks::config::validate_toml(toml, &dir.join("x.toml"), &[], true).unwrap();
        if v.kind() != "stdout" {
            return xdrsync_sinks::build(&v).unwrap();
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .unwrap();
        xdrsync_sinks::stdout::sink_to(v.common.clone(), Box::new(f))
    }
    async fn event_ids(&self, _: usize) -> Vec<String> {
        lines_ids(&self.path)
    }
    async fn stop(&self) {}
    async fn restart(&self) {}
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            restart: false,
            acknowledges: true,
            dedups: false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(&StdoutReceiver {
        path: dir.path().join("stdout.ndjson"),
        _dir: dir,
    })
    .await;
}

#[test]
fn a_closed_pipe_fails_the_delivery_without_moving_the_position() {
    struct Closed;
    impl std::io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(fixtures::store_with(&fixtures::new_versions()));
    let sink =
        xdrsync_sinks::stdout::sink_to(xdrsync_sinks::Common::named("out"), Box::new(Closed));
    let e = fixtures::deliver_now(&sink, &store).unwrap_err();
    assert!(e.to_string().contains("not retriable"), "{e}");
    assert_eq!(store.sink_position("out").unwrap(), 0);
    let _ = std::io::stderr().flush();
}

// ---- syslog ----

struct SyslogReceiver {
    rsyslog: Rsyslog,
    table: String,
    udp: bool,
}

/// The event id of one message as rsyslog parsed it: RFC 5424 structured data, else the
/// CEF `cs2`, the LEEF `eventId`, or the JSON message's own.
fn syslog_event_id(m: &serde_json::Value) -> String {
    let sd = m["sd"].as_str().unwrap_or("");
    if let Some(i) = sd.find("event_id=\"") {
        return sd[i + 10..].split('"').next().unwrap().to_owned();
    }
    let msg = m["msg"].as_str().unwrap_or("").trim_start();
    for key in ["cs2=", "^eventId="] {
        if let Some(i) = msg.find(key) {
            return msg[i + key.len()..]
                .split([' ', '^'])
                .next()
                .unwrap()
                .to_owned();
        }
    }
    let v: serde_json::Value = serde_json::from_str(msg).unwrap_or_else(|e| panic!("{msg}: {e}"));
    event_id_of(&v).unwrap()
}

impl Receiver for SyslogReceiver {
    fn sink_table(&self) -> String {
        self.table.clone()
    }
    async fn event_ids(&self, expect: usize) -> Vec<String> {
        self.rsyslog
            .wait_for(expect, Duration::from_secs(10))
            .await
            .iter()
            .map(syslog_event_id)
            .collect()
    }
    async fn stop(&self) {
        self.rsyslog.stop().await;
    }
    async fn restart(&self) {
        self.rsyslog.restart().await;
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            restart: true,
            acknowledges: !self.udp,
            dedups: false,
        }
    }
}

async fn syslog(transport: &str, protocol: &str, message: &str, extra: &str) -> SyslogReceiver {
    let rsyslog = Rsyslog::start().await;
    let port = match transport {
        "udp" => rsyslog.udp_port,
        "tls" => rsyslog.tls_port,
        _ => rsyslog.tcp_port,
    };
    let ca = if transport == "tls" {
        format!(
            "ca_file = \"{}\"\nserver_name = \"localhost\"\n",
            rsyslog.ca_file.display()
        )
    } else {
        String::new()
    };
    let table = format!(
        "{extra}\n[syslog]\naddress = \"127.0.0.1:{port}\"\ntransport = \"{transport}\"\nprotocol = \"{protocol}\"\nmessage = \"{message}\"\nhostname = \"xdrsync-test\"\n{ca}"
    );
    SyslogReceiver {
        rsyslog,
        table,
        udp: transport == "udp",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_tcp_rfc5424_cef_conforms() {
    let r = syslog("tcp", "rfc5424", "cef", "").await;
    conformance::run(&r).await;
    // rsyslog parsed the RFC 5424 header and the structured data it carries.
    let m = &r.rsyslog.messages()[0];
    assert_eq!(m["host"], "xdrsync-test");
    assert_eq!(m["app"], "xdrsync");
    assert!(
        ["incident", "alert", "detection"].contains(&m["msgid"].as_str().unwrap()),
        "{m}"
    );
    assert!(
        m["sd"]
            .as_str()
            .unwrap()
            .starts_with("[xdrsync@32473 tenant=\""),
        "{m}"
    );
    assert!(
        m["msg"]
            .as_str()
            .unwrap()
            .starts_with("CEF:0|Microsoft|Defender XDR|"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_tls_rfc5424_json_conforms() {
    let r = syslog("tls", "rfc5424", "json", "format = \"ocsf\"").await;
    conformance::run(&r).await;
    let m = &r.rsyslog.messages()[0];
    let doc: serde_json::Value = serde_json::from_str(m["msg"].as_str().unwrap()).unwrap();
    assert!(
        doc["class_uid"] == 2005 || doc["class_uid"] == 2004,
        "{doc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_tcp_newline_rfc3164_leef_conforms() {
    let r = syslog("tcp", "rfc3164", "leef", "").await;
    let mut table = r.table.clone();
    table.push_str("framing = \"newline\"\n");
    let r = SyslogReceiver { table, ..r };
    conformance::run(&r).await;
    let m = &r.rsyslog.messages()[0];
    assert_eq!(m["host"], "xdrsync-test");
    assert!(
        m["msg"]
            .as_str()
            .unwrap()
            .trim_start()
            .starts_with("LEEF:2.0|Microsoft|Defender XDR|"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_udp_rfc3164_cef_conforms() {
    let r = syslog("udp", "rfc3164", "cef", "").await;
    conformance::run(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_tls_with_an_unknown_ca_fails_without_retrying() {
    let r = syslog("tls", "rfc5424", "cef", "").await;
    // The system roots do not know the test CA.
    let table = r.table.replace(
        &format!("ca_file = \"{}\"\n", r.rsyslog.ca_file.display()),
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(fixtures::store_with(&fixtures::new_versions()));
    let sink = build_sink(&format!("name = \"s\"\n{table}"), dir.path());
    let e = conformance::deliver(&sink, &store).await.unwrap_err();
    assert!(e.to_string().contains("not retriable"), "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}

// ---- Splunk HEC ----

struct HecReceiver(Hec, &'static str);

impl Receiver for HecReceiver {
    fn sink_table(&self) -> String {
        format!(
            "[splunk_hec]\nurl = \"{}\"\ntoken = {{ value = \"{}\" }}\nindex = \"mssp\"\n{}",
            self.0.url(),
            self.0.token(),
            self.1
        )
    }
    async fn event_ids(&self, _: usize) -> Vec<String> {
        self.0
            .events()
            .iter()
            .map(|e| event_id_of(e).unwrap())
            .collect()
    }
    async fn stop(&self) {
        self.0.stop();
    }
    async fn restart(&self) {
        self.0.restart();
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            restart: true,
            acknowledges: true,
            dedups: false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_conforms() {
    let r = HecReceiver(Hec::start(HecOptions::default()), "");
    conformance::run(&r).await;
    let reqs = r.0.requests();
    assert!(reqs.iter().all(|q| q.gzip && q.channel.is_none()));
    assert!(reqs.iter().all(|q| q.events <= 16));
    assert!(r.0.refusals().is_empty(), "{:?}", r.0.refusals());
    let e = &r.0.events()[0];
    assert_eq!(e["index"], "mssp");
    assert_eq!(e["source"], "xdrsync");
    assert!(
        e["time"].is_f64() && e["event"]["event_id"].is_string(),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_with_indexer_acknowledgement_conforms() {
    let r = HecReceiver(
        Hec::start(HecOptions {
            ack: true,
            ..HecOptions::default()
        }),
        "gzip = false\nack = true\nack_poll_ms = 50",
    );
    conformance::run(&r).await;
    let reqs = r.0.requests();
    assert!(reqs.iter().all(|q| !q.gzip));
    let channels: std::collections::HashSet<_> =
        reqs.iter().map(|q| q.channel.clone().unwrap()).collect();
    assert_eq!(
        channels.len(),
        2,
        "one channel per sink instance that delivered (s1, s2)"
    );
}

/// One delivery of the fixtures to a receiver set up with `options`, by a sink with the
/// default receiver's token.
async fn hec_delivery(
    options: HecOptions,
    table_extra: &str,
) -> (
    Hec,
    Result<xdrsync_sinks::Delivered, xdrsync_sinks::SinkError>,
) {
    let hec = Hec::start(options);
    let r = HecReceiver(hec, "");
    let table = r
        .sink_table()
        .replace(r.0.token(), &HecOptions::default().token);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(fixtures::store_with(&fixtures::new_versions()));
    let sink = build_sink(
        &format!("name = \"s\"\nretry_attempts = 3\nretry_base_ms = 10\n{table}\n{table_extra}"),
        dir.path(),
    );
    let d = conformance::deliver(&sink, &store).await;
    (r.0, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_busy_is_retried_and_a_bad_token_or_index_is_not() {
    // 503 "Server is busy" twice, then accepted.
    let hec = Hec::start(HecOptions::default());
    hec.fail_next(2);
    let r = HecReceiver(hec, "");
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(fixtures::store_with(&fixtures::new_versions()));
    let sink = build_sink(
        &format!("name = \"s\"\nretry_base_ms = 10\n{}", r.sink_table()),
        dir.path(),
    );
    assert_eq!(
        conformance::deliver(&sink, &store).await.unwrap().events,
        FIXTURES as u64
    );
    assert_eq!(sink.metrics().send_retries, 2);
    assert_eq!(r.0.refusals(), [(503, 9), (503, 9)]);

    // A wrong token: 403 code 4, not retried, position kept, token not in the message.
    let (hec, d) = hec_delivery(
        HecOptions {
            token: "another-token".into(),
            ..HecOptions::default()
        },
        "",
    )
    .await;
    let e = d.unwrap_err().to_string();
    assert!(
        e.contains("HTTP 403") && e.contains("check the HEC token") && e.contains("not retriable"),
        "{e}"
    );
    assert!(!e.contains("11111111-2222"), "the token never appears: {e}");
    assert_eq!(hec.refusals(), [(403, 4)]);

    // An index the token may not write: 400 code 7.
    let (hec, d) = hec_delivery(
        HecOptions {
            indexes: Some(vec!["main".into()]),
            ..HecOptions::default()
        },
        "",
    )
    .await;
    assert!(
        d.unwrap_err()
            .to_string()
            .contains("may not write to this index")
    );
    assert_eq!(hec.refusals(), [(400, 7)]);

    // Acknowledgement expected by the token but not sent by the sink: 400 code 10.
    let (hec, d) = hec_delivery(
        HecOptions {
            ack: true,
            ..HecOptions::default()
        },
        "",
    )
    .await;
    assert!(d.unwrap_err().to_string().contains("set ack = true"));
    assert_eq!(hec.refusals(), [(400, 10)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_places_each_tenant_in_its_own_index() {
    let hec = Hec::start(HecOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(fixtures::store_with(&fixtures::many(30, 3)));
    let t0 = "00000000-0000-4000-8000-000000000000";
    let toml = format!(
        "name = \"s\"\n[splunk_hec]\nurl = \"{}\"\ntoken = {{ value = \"{}\" }}\nindex = \"shared\"\n[splunk_hec.tenants.\"{t0}\"]\nindex = \"customer0\"\nsourcetype = \"c0:defender\"\nhost = \"customer0\"",
        hec.url(),
        hec.token()
    );
    let sink = build_sink(&toml, dir.path());
    assert_eq!(
        conformance::deliver(&sink, &store).await.unwrap().events,
        30
    );
    for e in hec.events() {
        let mine = e["fields"]["tenant_id"] == t0;
        assert_eq!(e["index"], if mine { "customer0" } else { "shared" }, "{e}");
        if mine {
            assert_eq!(
                (&e["host"], &e["sourcetype"]),
                (&"customer0".into(), &"c0:defender".into())
            );
        } else {
            assert_eq!(
                e["host"], e["fields"]["tenant_id"],
                "host defaults to the tenant"
            );
            assert!(e["sourcetype"].as_str().unwrap().starts_with("xdrsync:"));
        }
    }
}

// ---- webhook ----

struct WebhookReceiver(Webhook);

const HOOK_SECRET: &str = "whsec-test-0123456789";

impl Receiver for WebhookReceiver {
    fn sink_table(&self) -> String {
        format!(
            "[webhook]\nurl = \"{}\"\nsecret = {{ value = \"{HOOK_SECRET}\" }}",
            self.0.url("events")
        )
    }
    async fn event_ids(&self, _: usize) -> Vec<String> {
        self.0
            .events()
            .iter()
            .map(|(_, e)| event_id_of(e).unwrap())
            .collect()
    }
    async fn stop(&self) {
        self.0.stop();
    }
    async fn restart(&self) {
        self.0.restart();
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            restart: true,
            acknowledges: true,
            dedups: true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_conforms() {
    let r = WebhookReceiver(Webhook::start(HOOK_SECRET));
    conformance::run(&r).await;
    assert_eq!(
        r.0.repeats(),
        100,
        "the re-sent events were recognised by their id"
    );
    assert_eq!(r.0.refused(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_signature_per_tenant_urls_and_server_errors() {
    let hook = Webhook::start(HOOK_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(fixtures::store_with(&fixtures::many(30, 3)));
    let t1 = "00000000-0000-4000-8000-000000000001";
    // 500 twice, then accepted; tenant 1 to its own URL.
    hook.fail_next(2);
    let sink = build_sink(
        &format!(
            "name = \"s\"\nretry_base_ms = 10\n[webhook]\nurl = \"{}\"\nsecret = {{ value = \"{HOOK_SECRET}\" }}\n[webhook.tenants.\"{t1}\"]\nurl = \"{}\"",
            hook.url("all"),
            hook.url("tenant1")
        ),
        dir.path(),
    );
    assert_eq!(
        conformance::deliver(&sink, &store).await.unwrap().events,
        30
    );
    assert_eq!(sink.metrics().send_retries, 2);
    let events = hook.events();
    assert_eq!(events.len(), 30);
    for (path, e) in &events {
        let tenant = e["tenant_id"].as_str().unwrap();
        assert_eq!(
            path,
            if tenant == t1 { "/tenant1" } else { "/all" },
            "{tenant}"
        );
    }
    // A wrong secret: 401, not retried.
    let sink = build_sink(
        &format!(
            "name = \"wrong\"\n[webhook]\nurl = \"{}\"\nsecret = {{ value = \"not-the-secret\" }}",
            hook.url("all")
        ),
        dir.path(),
    );
    let e = conformance::deliver(&sink, &store)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 401") && e.contains("not retriable"), "{e}");
    assert!(!e.contains("not-the-secret"));
    assert_eq!(hook.refused(), 1);
}

// ---- NATS JetStream ----

struct NatsReceiver {
    server: NatsServer,
}

impl Receiver for NatsReceiver {
    fn sink_table(&self) -> String {
        format!(
            "[nats]\nurl = \"nats://{}\"\nstream = \"XDRSYNC_TEST\"\nsubject_prefix = \"xdrsync.test\"",
            self.server.address()
        )
    }
    async fn event_ids(&self, _: usize) -> Vec<String> {
        read_stream(&self.server.address(), "XDRSYNC_TEST")
            .await
            .into_iter()
            .map(|m| {
                let id = m.msg_id.expect("Nats-Msg-Id");
                assert_eq!(event_id_of(&m.data).as_deref(), Some(id.as_str()));
                id
            })
            .collect()
    }
    async fn stop(&self) {
        self.server.stop().await;
    }
    async fn restart(&self) {
        self.server.restart().await;
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            restart: true,
            acknowledges: true,
            dedups: true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream_conforms() {
    let r = NatsReceiver {
        server: NatsServer::start().await,
    };
    conformance::run(&r).await;
    let msgs = read_stream(&r.server.address(), "XDRSYNC_TEST").await;
    for m in &msgs {
        let parts: Vec<&str> = m.subject.split('.').collect();
        assert_eq!(parts.len(), 5, "{}", m.subject);
        assert_eq!(parts[2], m.data["tenant_id"].as_str().unwrap());
        assert_eq!(parts[3], m.data["stream"].as_str().unwrap());
        assert_eq!(parts[4], m.data["change"].as_str().unwrap());
    }
}

/// Against the machine's own nats-server (`XDRSYNC_TEST_NATS`, started by scripts/services):
/// a stream of our own, repeats dropped by the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_on_the_shared_server_drops_repeats() {
    let address = xdrsync_test_utils::receivers::nats::shared_address();
    let stream = format!("XDRSYNC_{}", uuid::Uuid::new_v4().simple());
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(fixtures::store_with(&fixtures::new_versions()));
    let toml = |name: &str| {
        format!(
            "name = \"{name}\"\n[nats]\nurl = \"nats://{address}\"\nstream = \"{stream}\"\nsubject_prefix = \"{prefix}\""
        )
    };
    let n = FIXTURES;
    assert_eq!(fixtures::new_versions().len(), n);
    for name in ["a", "b"] {
        let sink = build_sink(&toml(name), dir.path());
        assert_eq!(
            conformance::deliver(&sink, &store).await.unwrap().events,
            n as u64
        );
    }
    let msgs = read_stream(&address, &stream).await;
    assert_eq!(
        msgs.len(),
        n,
        "the second sink's events were all duplicates"
    );
    // Clean up the shared server.
    xdrsync_test_utils::receivers::nats::delete_stream(&address, &stream).await;
}

// ---- PostgreSQL ----

struct PgReceiver {
    proxy: Proxy,
    schema: String,
}

impl Receiver for PgReceiver {
    fn sink_table(&self) -> String {
        format!(
            "[postgres]\nurl = {{ value = \"{}\" }}\nschema = \"{}\"",
            pg::url(&self.proxy.addr.to_string()),
            self.schema
        )
    }
    async fn event_ids(&self, _: usize) -> Vec<String> {
        pg::event_ids(&self.schema).await
    }
    async fn stop(&self) {
        self.proxy.down();
    }
    async fn restart(&self) {
        self.proxy.up();
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            restart: true,
            acknowledges: true,
            dedups: true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conforms() {
    let r = PgReceiver {
        proxy: Proxy::start(&pg::address()),
        schema: pg::fresh_schema("xdrsync_t"),
    };
    conformance::run(&r).await;
    let c = pg::client().await;
    let row = c
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT tenant_id), min(last_update) > '2026-01-01'::timestamptz,
                        bool_and(document->>'event_id' = event_id)
                 FROM {}.xdrsync_incidents",
                r.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let (n, tenants, dated, keyed): (i64, i64, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert!(
        n > 0 && tenants == 3 && dated && keyed,
        "{n} {tenants} {dated} {keyed}"
    );
    c.batch_execute(&format!("DROP SCHEMA {} CASCADE", r.schema))
        .await
        .unwrap();
}

/// A receiver answering 503 with `Retry-After` of a year is waited for at most the sink's
/// `retry_max_secs`, so a pass (or a SIGTERM's drain) never stalls for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_retry_after_of_a_year_waits_at_most_retry_max() {
    let hook = Webhook::start(HOOK_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(fixtures::store_with(&fixtures::many(10, 1)));
    hook.throttle_next(2, 31_536_000);
    let sink = build_sink(
        &format!(
            "name = \"s\"\nretry_base_ms = 10\nretry_max_secs = 1\n[webhook]\nurl = \"{}\"\nsecret = {{ value = \"{HOOK_SECRET}\" }}",
            hook.url("all"),
        ),
        dir.path(),
    );
    let started = std::time::Instant::now();
    let delivered = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        conformance::deliver(&sink, &store),
    )
    .await
    .expect("the delivery does not sleep for the receiver's year");
    assert_eq!(delivered.unwrap().events, 10);
    assert_eq!(sink.metrics().send_retries, 2);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// A PostgreSQL sink over TLS to `url` with `tls` and `ca_file`; what one delivery of the
/// fixtures did, and whether the sink's session (named `app`) was encrypted.
async fn pg_tls_delivery(
    url: &str,
    app: &str,
    tls: &str,
    ca: &Path,
) -> (
    Result<xdrsync_sinks::Delivered, xdrsync_sinks::SinkError>,
    bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let schema = pg::fresh_schema("xdrsync_tls");
    let sep = if url.contains('?') { '&' } else { '?' };
    let sink = build_sink(
        &format!(
            "name = \"pg\"\nretry_attempts = 1\n[postgres]\nurl = {{ value = \"{url}{sep}application_name={app}\" }}\nschema = \"{schema}\"\ntls = \"{tls}\"\nca_file = \"{}\"",
            ca.display()
        ),
        dir.path(),
    );
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(fixtures::store_with(&fixtures::new_versions()));
    let d = conformance::deliver(&sink, &store).await;
    let (encrypted, sessions) = pg::sessions_encrypted(app).await;
    if d.is_ok() {
        assert_eq!(pg::event_ids(&schema).await.len(), FIXTURES);
        assert!(sessions >= 1, "the sink's session is open");
        pg::drop_schema(&schema).await;
    }
    (d, encrypted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_verify_full_delivers_encrypted_to_the_named_server() {
    let app = format!("xdrsync_full_{}", uuid::Uuid::new_v4().simple());
    let (d, encrypted) = pg_tls_delivery(
        "postgres://postgres@localhost/test?hostaddr=127.0.0.1",
        &app,
        "verify-full",
        &pg::tls_ca(),
    )
    .await;
    assert_eq!(d.unwrap().events, FIXTURES as u64);
    assert!(encrypted, "the sink's session is TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_verify_ca_checks_the_chain_and_verify_full_the_name() {
    let url = pg::url(&pg::address());
    // The certificate names `localhost`, not 127.0.0.1: the chain is good, the name is not.
    let app = format!("xdrsync_ca_{}", uuid::Uuid::new_v4().simple());
    let (d, encrypted) = pg_tls_delivery(&url, &app, "verify-ca", &pg::tls_ca()).await;
    assert_eq!(d.unwrap().events, FIXTURES as u64);
    assert!(encrypted);
    let app = format!("xdrsync_name_{}", uuid::Uuid::new_v4().simple());
    let (d, _) = pg_tls_delivery(&url, &app, "verify-full", &pg::tls_ca()).await;
    let e = d.unwrap_err().to_string();
    assert!(e.contains("certificate"), "{e}");
    // Another CA's trust: refused by both levels.
    let other = tempfile::tempdir().unwrap();
    let other = xdrsync_emulator::tls::ensure(other.path()).unwrap().ca_cert;
    for level in ["verify-ca", "require"] {
        let app = format!("xdrsync_other_{}", uuid::Uuid::new_v4().simple());
        let (d, _) = pg_tls_delivery(&url, &app, level, &other).await;
        let e = d.unwrap_err().to_string();
        assert!(e.contains("certificate"), "{level}: {e}");
    }
}

/// A server (or a fake one) that answers the TLS request with "no" gets nothing more: the
/// password is never sent in clear (a fake server captured it before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_required_never_sends_the_password_to_a_server_without_tls() {
    // The server answers the 8-byte SSLRequest with `N` (no TLS here).
    let (addr, captured) = fake_server(|_| Vec::new(), Some((8, b"N"))).await;
    let (e, store) = fail_once(&format!(
        "name = \"pg\"\nretry_attempts = 1\n[postgres]\nurl = {{ value = \"postgres://u:SeCrEt-pw@{addr}/test\" }}\ntls = \"require\""
    ))
    .await;
    let seen = captured.await.unwrap();
    // Only the 8-byte SSLRequest (length 8, code 80877103) crossed the wire.
    assert_eq!(seen, [0, 0, 0, 8, 4, 210, 22, 47], "{e}");
    assert!(!e.to_string().contains("SeCrEt-pw"), "{e}");
    assert_eq!(store.sink_position("pg").unwrap(), 0);
}

/// A fake server for one connection on loopback: writes `greeting(its address)`, answers the
/// first `answer.0` bytes it reads with `answer.1`, and records every byte it received until
/// the client is quiet for half a second or closes. Its address, and what it recorded.
async fn fake_server(
    greeting: impl FnOnce(std::net::SocketAddr) -> Vec<u8> + Send + 'static,
    answer: Option<(usize, &'static [u8])>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let captured = tokio::spawn(async move {
        let mut seen = Vec::new();
        let (mut sock, _) = listener.accept().await.unwrap();
        sock.write_all(&greeting(addr)).await.unwrap();
        if let Some((n, reply)) = answer {
            let mut first = vec![0u8; n];
            sock.read_exact(&mut first).await.unwrap();
            seen.extend_from_slice(&first);
            sock.write_all(reply).await.unwrap();
        }
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), sock.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    (addr, captured)
}

/// One delivery of the fixtures by the sink of `toml`, which must fail: the error and the store.
async fn fail_once(toml: &str) -> (xdrsync_sinks::SinkError, Arc<dyn xdrsync_store::Store>) {
    let dir = tempfile::tempdir().unwrap();
    let sink = build_sink(toml, dir.path());
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(fixtures::store_with(&fixtures::new_versions()));
    let e = conformance::deliver(&sink, &store).await.unwrap_err();
    (e, store)
}

/// Plaintext to a server that is not on this machine is refused unless the config says so;
/// libpq's silent fallback (`sslmode=prefer`) is refused everywhere.
#[test]
fn postgres_plaintext_to_a_remote_server_needs_tls_disable() {
    let dir = tempfile::tempdir().unwrap();
    let build = |url: &str, extra: &str| {
        let toml = format!("name = \"pg\"\n[postgres]\nurl = {{ value = \"{url}\" }}\n{extra}");
        let v = xdrsync_sinks::config::validate_toml(
            &toml,
            &dir.path().join("xdrsync.toml"),
            &[],
            true,
        )
        .unwrap();
        xdrsync_sinks::build(&v)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let remote = "postgres://u:pw@db.example.com/siem";
    let e = build(&format!("{remote}?sslmode=disable"), "").unwrap_err();
    assert!(e.contains("tls = \"disable\""), "{e}");
    assert!(
        !e.contains("pw@"),
        "the password stays out of the message: {e}"
    );
    let e = build(&format!("{remote}?sslmode=prefer"), "").unwrap_err();
    assert!(e.contains("prefer"), "{e}");
    let e = build("postgres://u:pw@127.0.0.1/test?sslmode=prefer", "").unwrap_err();
    assert!(e.contains("prefer"), "{e}");
    let e = build(remote, "tls = \"disable\"\nca_file = \"/etc/hosts\"").unwrap_err();
    assert!(e.contains("ca_file"), "{e}");
    let e = build(
        &format!("{remote}?sslmode=verify-full"),
        "tls = \"require\"",
    )
    .unwrap_err();
    assert!(e.contains("disagree"), "{e}");
    // Accepted: explicit plaintext, TLS (checked at connect), loopback without TLS.
    build(remote, "tls = \"disable\"").unwrap();
    build(remote, "").unwrap();
    build(&format!("{remote}?sslmode=verify-ca"), "").unwrap();
    build("postgres://u:pw@127.0.0.1/test", "").unwrap();
    build("postgres://u:pw@localhost/test?sslmode=disable", "").unwrap();
    build("host=/run/postgresql user=u dbname=test", "").unwrap();
}

/// TLS with each way of proving who the sink is: token, user/password, NKey, `.creds`
/// (operator mode, JWTs). Every event arrives once, with its `Nats-Msg-Id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_tls_with_token_user_nkey_and_creds_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let accesses = [
        Access::Token("t0ken-s3cret".into()),
        Access::User("xdrsync".into(), "pa55-s3cret".into()),
        Access::new_nkey(),
        Access::new_creds(dir.path()),
    ];
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(fixtures::store_with(&fixtures::new_versions()));
    for (i, access) in accesses.into_iter().enumerate() {
        let what = format!("{access:?}");
        let server = NatsServer::start_with(access, true).await;
        let sink = build_sink(
            &format!(
                "name = \"bus{i}\"\nretry_attempts = 2\n[nats]\nurl = \"tls://localhost:{}\"\nca_file = \"{}\"\n{}",
                server.port,
                server.tls_ca.as_ref().unwrap().display(),
                server.access.sink_conf()
            ),
            dir.path(),
        );
        let d = conformance::deliver(&sink, &store).await;
        assert_eq!(
            d.unwrap_or_else(|e| panic!("{what}: {e}")).events,
            FIXTURES as u64
        );
        let msgs = server.read_stream("XDRSYNC").await;
        let mut ids: Vec<String> = msgs.iter().filter_map(|m| m.msg_id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!((msgs.len(), ids.len()), (FIXTURES, FIXTURES), "{what}");
        server.stop().await;
    }
}

/// Wrong credentials fail at once, not retried, and the message names no secret; a server
/// whose certificate the sink does not trust gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_wrong_credentials_or_an_untrusted_server_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(fixtures::store_with(&fixtures::new_versions()));
    let server = NatsServer::start_with(Access::Token("right-t0ken".into()), true).await;
    let ca = server.tls_ca.clone().unwrap();
    let sink = build_sink(
        &format!(
            "name = \"bus\"\n[nats]\nurl = \"tls://localhost:{}\"\nca_file = \"{}\"\ntoken = {{ value = \"wr0ng-t0ken\" }}",
            server.port,
            ca.display()
        ),
        dir.path(),
    );
    let e = conformance::deliver(&sink, &store)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not retriable") && e.contains("authorization"),
        "{e}"
    );
    assert!(!e.contains("wr0ng-t0ken"), "{e}");
    // The system's roots do not know the emulator's CA.
    let sink = build_sink(
        &format!(
            "name = \"bus2\"\n[nats]\nurl = \"tls://localhost:{}\"\ntoken = {{ value = \"right-t0ken\" }}",
            server.port
        ),
        dir.path(),
    );
    let e = conformance::deliver(&sink, &store)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.to_lowercase().contains("certificate") || e.contains("tls"),
        "{e}"
    );
    assert!(server.read_stream("XDRSYNC").await.is_empty());
    assert_eq!(store.sink_position("bus").unwrap(), 0);
}

/// With TLS required, a server that offers no TLS never sees the token: what reaches it is a
/// TLS handshake, never a `CONNECT` with credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_credentials_never_cross_in_clear_when_tls_is_required() {
    let info = |addr: std::net::SocketAddr| {
        format!(
            "INFO {{\"server_id\":\"fake\",\"version\":\"2.10.0\",\"proto\":1,\"host\":\"127.0.0.1\",\"port\":{},\"max_payload\":1048576,\"headers\":true}}\r\n",
            addr.port()
        )
        .into_bytes()
    };
    let (addr, captured) = fake_server(info, None).await;
    let (e, _) = fail_once(&format!(
        "name = \"bus\"\nretry_attempts = 1\n[nats]\nurl = \"nats://{addr}\"\ntls = true\ntoken = {{ value = \"cl3ar-t0ken\" }}"
    ))
    .await;
    let seen = captured.await.unwrap();
    let text = String::from_utf8_lossy(&seen);
    assert!(
        !text.contains("cl3ar-t0ken") && !text.contains("CONNECT"),
        "{text}"
    );
    assert_eq!(seen.first(), Some(&0x16), "a TLS handshake record: {e}");
}

/// A NATS server that speaks the protocol up to the first publish, then answers its
/// acknowledgement inbox with a `MSG` whose declared length is `length` and never sends the
/// payload. Returns its address and how many connections it accepted.
async fn hostile_nats(length: &'static str) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (read, mut write) = sock.into_split();
                let info = format!(
                    "INFO {{\"server_id\":\"hostile\",\"version\":\"2.10.0\",\"proto\":1,\"host\":\"127.0.0.1\",\"port\":{},\"max_payload\":1048576,\"headers\":true,\"jetstream\":true}}\r\n",
                    addr.port()
                );
                if write.write_all(info.as_bytes()).await.is_err() {
                    return;
                }
                let mut lines = BufReader::new(read).lines();
                let mut inbox_sid = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let reply = match words.as_slice() {
                        ["PING"] => "PONG\r\n".to_owned(),
                        ["SUB", _subject, sid] => {
                            inbox_sid = Some(sid.to_string());
                            continue;
                        }
                        ["HPUB", _, reply, _, _] | ["PUB", _, reply, _] => {
                            // The headers and payload follow on the next line.
                            let _ = lines.next_line().await;
                            let sid = inbox_sid.clone().unwrap_or_else(|| "1".into());
                            format!("MSG {reply} {sid} {length}\r\nonly a few bytes")
                        }
                        _ => continue,
                    };
                    if write.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// A hostile server that announces a message of absurd size on the acknowledgement inbox
/// (one that would take terabytes, one past what a length can hold, garbage) gets no memory
/// and no hang from the sink, whether it answers the stream lookup or the publish: the
/// delivery fails with a message naming the server, within its timeout and retries, nothing
/// is acknowledged, and the next delivery connects afresh instead of reusing a dead client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_hostile_message_length_fails_cleanly() {
    for create_stream in [true, false] {
        for length in ["1099511627776", "18446744073709551615", "-1", "12x"] {
            let what = format!("{length} create_stream={create_stream}");
            let (addr, accepted) = hostile_nats(length).await;
            let dir = tempfile::tempdir().unwrap();
            let sink = build_sink(
                &format!(
                    "name = \"bus\"\nretry_attempts = 2\nretry_base_ms = 10\n[nats]\nurl = \"nats://{addr}\"\ntimeout_secs = 1\ncreate_stream = {create_stream}"
                ),
                dir.path(),
            );
            let store: Arc<dyn xdrsync_store::Store> =
                Arc::new(fixtures::store_with(&fixtures::new_versions()));
            let started = std::time::Instant::now();
            let e = conformance::deliver(&sink, &store)
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("nats"), "{what}: {e}");
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{what}: took {:?}",
                started.elapsed()
            );
            assert_eq!(store.sink_position("bus").unwrap(), 0, "{what}");
            let first = accepted.load(Ordering::SeqCst);
            assert!(first >= 1, "{what}");
            conformance::deliver(&sink, &store).await.unwrap_err();
            assert!(
                accepted.load(Ordering::SeqCst) > first,
                "{what}: the second delivery reused the first connection"
            );
            assert_eq!(store.sink_position("bus").unwrap(), 0, "{what}");
        }
    }
}
