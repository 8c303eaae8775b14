//! A real nats-server with JetStream, run privately by the test (its own port and store
//! folder, so it can be stopped and restarted with its data, like a broker restart), and a
//! reader of a stream's messages through the JetStream API.
//!
//! Missing nats-server is a failure, not a skip (`XDRSYNC_NATS_SERVER` overrides the path).
//! `XDRSYNC_TEST_NATS` (default `127.0.0.1:4222`) names the machine's shared server, for tests
//! that need no restart.

use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use xdrsync_sinks::nats::{Auth, Connection};

/// The env var naming the nats-server binary.
pub const NATS_SERVER_ENV: &str = "XDRSYNC_NATS_SERVER";
/// The env var naming the shared server's address.
pub const TEST_NATS_ENV: &str = "XDRSYNC_TEST_NATS";

/// The shared server's `host:port`.
pub fn shared_address() -> String {
    std::env::var(TEST_NATS_ENV).unwrap_or_else(|_| "127.0.0.1:4222".into())
}

/// One private nats-server.
#[derive(Debug)]
pub struct NatsServer {
    dir: tempfile::TempDir,
    /// Its client port.
    pub port: u16,
    child: Mutex<Option<tokio::process::Child>>,
}

/// One message read back from a stream.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Its subject.
    pub subject: String,
    /// Its `Nats-Msg-Id` header.
    pub msg_id: Option<String>,
    /// Its payload, as JSON.
    pub data: Value,
}

impl NatsServer {
    /// Starts a JetStream server on a free port.
    pub async fn start() -> NatsServer {
        let s = NatsServer {
            dir: tempfile::tempdir().unwrap(),
            port: super::free_port(),
            child: Mutex::new(None),
        };
        s.restart().await;
        s
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, with the same store).
    pub async fn restart(&self) {
        let bin = std::env::var(NATS_SERVER_ENV).unwrap_or_else(|_| "/usr/sbin/nats-server".into());
        assert!(
            std::path::Path::new(&bin).exists(),
            "nats-server not found at {bin}: install Debian's nats-server or set {NATS_SERVER_ENV}"
        );
        let child = tokio::process::Command::new(&bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        *self.child.lock().unwrap() = Some(child);
        for _ in 0..200 {
            if let Ok(mut c) = Connection::connect(&self.address(), &Auth::default()).await {
                // JetStream answers once it has recovered its store.
                let r = c
                    .request_all(
                        &[("$JS.API.INFO".into(), vec![], b"")],
                        Duration::from_secs(2),
                    )
                    .await;
                if r.is_ok_and(|r| r[0].status.is_none()) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not start on {}", self.address());
    }

    /// Stops the server (SIGTERM; JetStream flushes its store).
    pub async fn stop(&self) {
        let child = self.child.lock().unwrap().take();
        super::terminate(child).await;
    }
}

/// Every message of `stream` on the server at `address`, in stream order.
pub async fn read_stream(address: &str, stream: &str) -> Vec<StoredMessage> {
    let mut c = Connection::connect(address, &Auth::default())
        .await
        .expect("connect to read the stream");
    let t = Duration::from_secs(5);
    let info = c
        .request_all(&[(format!("$JS.API.STREAM.INFO.{stream}"), vec![], b"")], t)
        .await
        .unwrap();
    let info: Value = serde_json::from_slice(&info[0].payload).unwrap();
    if info.get("error").is_some() {
        return Vec::new();
    }
    let (first, last) = (
        info["state"]["first_seq"].as_u64().unwrap_or(0),
        info["state"]["last_seq"].as_u64().unwrap_or(0),
    );
    let mut out = Vec::new();
    for seq in first.max(1)..=last {
        let body = serde_json::json!({ "seq": seq }).to_string();
        let r = c
            .request_all(
                &[(
                    format!("$JS.API.STREAM.MSG.GET.{stream}"),
                    vec![],
                    body.as_bytes(),
                )],
                t,
            )
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&r[0].payload).unwrap();
        let m = &v["message"];
        if m.is_null() {
            continue; // deleted
        }
        let b64 = |k: &str| {
            m[k].as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .unwrap_or_default()
        };
        let hdrs = String::from_utf8_lossy(&b64("hdrs")).into_owned();
        let msg_id = hdrs
            .lines()
            .find_map(|l| l.strip_prefix("Nats-Msg-Id:"))
            .map(|v| v.trim().to_owned());
        out.push(StoredMessage {
            subject: m["subject"].as_str().unwrap_or("").to_owned(),
            msg_id,
            data: serde_json::from_slice(&b64("data")).unwrap_or(Value::Null),
        });
    }
    out
}
