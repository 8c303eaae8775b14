//! Events per second delivered by each sink to its receiver on loopback.
//!
//! ```sh
//! cargo run --release -p xdrsync-test-utils --example sink_bench -- 20000            # every sink
//! cargo run --release -p xdrsync-test-utils --example sink_bench -- 20000 hec nats   # some
//! ```
//!
//! Each run fills a fresh SQLite store with N versions (10 tenants, every stream), builds the
//! sink from its TOML like the config would, and times one delivery of all N (default
//! batch sizes, `xdrsync` format unless the name says otherwise). The receivers are the test
//! suite's: files in a temp folder, a private rsyslogd, the HEC and webhook receivers
//! in-process, a private nats-server, the machine's PostgreSQL.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]
#![allow(clippy::print_stdout, missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use xdrsync_sinks::{Sink, fixtures};
use xdrsync_store::SqliteStore;
use xdrsync_test_utils::conformance::deliver;
use xdrsync_test_utils::receivers::{hec, nats, postgres as pg, rsyslog, webhook};

fn build(toml: &str, dir: &std::path::Path) -> Arc<dyn Sink> {
    let v = xdrsync_sinks::config::validate_toml(toml, &dir.join("x.toml"), &[], true)
        .unwrap_or_else(|e| panic!("{e}"));
    xdrsync_sinks::build(&v).unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let all = [
        "file",
        "file-ocsf",
        "file-ecs",
        "stdout",
        "syslog-tcp-cef",
        "syslog-tls-leef",
        "syslog-udp-cef",
        "hec",
        "hec-ack",
        "webhook",
        "nats",
        "postgres",
    ];
    let chosen: Vec<&str> = if args.len() > 1 {
        all.iter()
            .copied()
            .filter(|k| args[1..].iter().any(|a| k.starts_with(a.as_str())))
            .collect()
    } else {
        all.to_vec()
    };
    let dir = tempfile::tempdir().unwrap();
    let versions = fixtures::many(n, 10);
    println!(
        "{:<18} {:>8} {:>9} {:>12}",
        "sink", "events", "seconds", "events/s"
    );
    for kind in chosen {
        let store: Arc<dyn xdrsync_store::Store> =
            Arc::new(SqliteStore::open(&dir.path().join(format!("{kind}.db"))).unwrap());
        fixtures::commit(&*store, &versions);
        let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
        let mut pg_schema: Option<String> = None;
        let table = match kind {
            "file" | "file-ocsf" | "file-ecs" => {
                let format = kind.strip_prefix("file-").unwrap_or("xdrsync");
                format!(
                    "format = \"{format}\"\n[file]\npath = \"{}/{kind}.ndjson\"",
                    dir.path().display()
                )
            }
            "stdout" => String::new(),
            k if k.starts_with("syslog") => {
                let r = rsyslog::Rsyslog::start().await;
                let (transport, port, message) = match k {
                    "syslog-tcp-cef" => ("tcp", r.tcp_port, "cef"),
                    "syslog-tls-leef" => ("tls", r.tls_port, "leef"),
                    _ => ("udp", r.udp_port, "cef"),
                };
                let t = format!(
                    "[syslog]\naddress = \"127.0.0.1:{port}\"\ntransport = \"{transport}\"\nmessage = \"{message}\"\nca_file = \"{}\"\nserver_name = \"localhost\"",
                    r.ca_file.display()
                );
                keep.push(Box::new(r));
                if transport == "tls" {
                    t
                } else {
                    t.lines()
                        .filter(|l| !l.starts_with("ca_file") && !l.starts_with("server_name"))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            }
            "hec" | "hec-ack" => {
                let ack = kind == "hec-ack";
                let h = hec::Hec::start(hec::HecOptions {
                    ack,
                    ack_delay: std::time::Duration::ZERO,
                    ..Default::default()
                });
                let t = format!(
                    "[splunk_hec]\nurl = \"{}\"\ntoken = {{ value = \"{}\" }}\nack = {ack}\nack_poll_ms = 20",
                    h.url(),
                    h.token()
                );
                keep.push(Box::new(h));
                t
            }
            "webhook" => {
                let w = webhook::Webhook::start("bench-secret");
                let t = format!(
                    "[webhook]\nurl = \"{}\"\nsecret = {{ value = \"bench-secret\" }}",
                    w.url("e")
                );
                keep.push(Box::new(w));
                t
            }
            "nats" => {
                let s = nats::NatsServer::start().await;
                let t = format!("[nats]\nurl = \"nats://{}\"", s.address());
                keep.push(Box::new(s));
                t
            }
            "postgres" => {
                let schema = pg::fresh_schema("xdrsync_bench");
                let t = format!(
                    "[postgres]\nurl = {{ value = \"{}\" }}\nschema = \"{schema}\"",
                    pg::url(&pg::address())
                );
                pg_schema = Some(schema);
                t
            }
            _ => unreachable!(),
        };
        let sink: Arc<dyn Sink> = if kind == "stdout" {
            let file = std::fs::File::create("/dev/null").unwrap();
            xdrsync_sinks::stdout::sink_to(
                xdrsync_sinks::Common::named("bench"),
                Box::new(std::io::BufWriter::new(file)),
            )
        } else {
            build(&format!("name = \"bench\"\n{table}"), dir.path())
        };
        let start = Instant::now();
        let d = deliver(&sink, &store)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{kind:<18} {:>8} {secs:>9.2} {:>12.0}",
            d.events,
            d.events as f64 / secs
        );
        if let Some(schema) = pg_schema.take() {
            pg::drop_schema(&schema).await;
        }
        drop(keep);
    }
}
