//! A real rsyslog (Debian's `rsyslog` and `rsyslog-gnutls`, installed by `scripts/services`),
//! run privately by the test: plain TCP, TLS (gtls driver, a certificate from a local CA) and
//! UDP inputs on free ports, every message written as one JSON line (rsyslog's own parse of
//! it: host, app, msgid, structured data, msg) to a file the test reads back.
//!
//! Missing rsyslogd is a failure, not a skip (`XDRSYNC_RSYSLOGD` overrides the path).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

/// The env var naming the rsyslogd binary.
pub const RSYSLOGD_ENV: &str = "XDRSYNC_RSYSLOGD";

/// One private rsyslogd.
#[derive(Debug)]
pub struct Rsyslog {
    dir: tempfile::TempDir,
    /// Plain TCP port.
    pub tcp_port: u16,
    /// TLS port.
    pub tls_port: u16,
    /// UDP port.
    pub udp_port: u16,
    /// The CA that signed the server's certificate (PEM file).
    pub ca_file: PathBuf,
    child: Mutex<Option<tokio::process::Child>>,
}

fn binary() -> String {
    std::env::var(RSYSLOGD_ENV).unwrap_or_else(|_| "/usr/sbin/rsyslogd".into())
}

impl Rsyslog {
    /// Writes the config and certificates and starts rsyslogd; waits until its TCP ports
    /// accept connections.
    pub async fn start() -> Rsyslog {
        let bin = binary();
        assert!(
            std::path::Path::new(&bin).exists(),
            "rsyslogd not found at {bin}: install Debian's rsyslog and rsyslog-gnutls (scripts/services does) or set {RSYSLOGD_ENV}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        // The emulator's local CA and a server certificate for 127.0.0.1 / localhost.
        let tls = xdrsync_emulator::tls::ensure(dir.path()).expect("test certificates");
        let (tcp_port, tls_port, udp_port) =
            (super::free_port(), super::free_port(), super::free_port());
        let d = dir.path().display();
        let conf = format!(
            r#"global(workDirectory="{d}" maxMessageSize="256k"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" maxSessions="200")
module(load="imudp")
template(name="parsed" type="string"
  string="{{\"host\":\"%hostname:::json%\",\"app\":\"%app-name:::json%\",\"pri\":\"%pri%\",\"msgid\":\"%msgid:::json%\",\"sd\":\"%structured-data:::json%\",\"msg\":\"%msg:::json%\"}}\n")
ruleset(name="out") {{
  action(type="omfile" file="{d}/out.log" template="parsed" flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imtcp" port="{tcp_port}" address="127.0.0.1" ruleset="out")
input(type="imtcp" port="{tls_port}" address="127.0.0.1" ruleset="out"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imudp" port="{udp_port}" address="127.0.0.1" ruleset="out")
"#,
            ca = tls.ca_cert.display(),
            cert = tls.server_cert.display(),
            key = tls.server_key.display(),
        );
        std::fs::write(p("rsyslog.conf"), conf).unwrap();
        let r = Rsyslog {
            ca_file: tls.ca_cert.clone(),
            dir,
            tcp_port,
            tls_port,
            udp_port,
            child: Mutex::new(None),
        };
        r.restart().await;
        r
    }

    /// Starts rsyslogd (again, on the same ports and output file).
    pub async fn restart(&self) {
        let p = |n: &str| self.dir.path().join(n);
        let _ = std::fs::remove_file(p("rsyslogd.pid"));
        let child = tokio::process::Command::new(binary())
            .arg("-n")
            .arg("-f")
            .arg(p("rsyslog.conf"))
            .arg("-i")
            .arg(p("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(p("rsyslogd.stderr")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("start rsyslogd");
        *self.child.lock().unwrap() = Some(child);
        for _ in 0..200 {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.tcp_port)).await;
            let tls = tokio::net::TcpStream::connect(("127.0.0.1", self.tls_port)).await;
            // Open ports are ours only while our child runs (an older rsyslogd still holding
            // them would make this new one fail to bind and exit).
            let exited = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                break;
            }
            if tcp.is_ok() && tls.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "rsyslogd did not open its ports: {}",
            std::fs::read_to_string(p("rsyslogd.stderr")).unwrap_or_default()
        );
    }

    /// Stops rsyslogd as a service manager would (SIGTERM: it flushes what it received, then
    /// exits) and waits for it.
    pub async fn stop(&self) {
        let child = self.child.lock().unwrap().take();
        super::terminate(child).await;
    }

    /// Every message rsyslog wrote, as it parsed them.
    pub fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("out.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("rsyslog wrote {l:?}: {e}")))
            .collect()
    }

    /// Waits until at least `n` messages were written (UDP and rsyslog's queue are
    /// asynchronous), at most `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let start = std::time::Instant::now();
        loop {
            let m = self.messages();
            if m.len() >= n || start.elapsed() > timeout {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
