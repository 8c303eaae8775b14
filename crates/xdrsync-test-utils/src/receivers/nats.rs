//! A real nats-server with JetStream, run privately by the test (its own port and store
//! folder, so it can be stopped and restarted with its data, like a broker restart), and a
//! reader of a stream's messages through the JetStream API.
//!
//! Missing nats-server is a failure, not a skip (`XDRSYNC_NATS_SERVER` overrides the path).
//! `XDRSYNC_TEST_NATS` (default `127.0.0.1:4222`) names the machine's shared server, for tests
//! that need no restart.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

/// The env var naming the nats-server binary.
pub const NATS_SERVER_ENV: &str = "XDRSYNC_NATS_SERVER";
/// The env var naming the shared server's address.
pub const TEST_NATS_ENV: &str = "XDRSYNC_TEST_NATS";

/// The shared server's `host:port`.
pub fn shared_address() -> String {
    std::env::var(TEST_NATS_ENV).unwrap_or_else(|_| "127.0.0.1:4222".into())
}

/// Who may connect to a private server.
#[derive(Debug, Clone, Default)]
pub enum Access {
    /// Anyone.
    #[default]
    Open,
    /// `authorization { token }`.
    Token(String),
    /// `authorization { user, password }`.
    User(String, String),
    /// An NKey user; the seed is the client's.
    NKey {
        /// The user's seed (`SU…`).
        seed: String,
    },
    /// Operator mode (JWTs, a memory resolver); the `.creds` file is the client's.
    Creds {
        /// The user's `.creds` file.
        file: PathBuf,
        /// The server's `operator`/`resolver` settings.
        server_conf: String,
    },
}

impl Access {
    /// A fresh NKey user.
    pub fn new_nkey() -> Access {
        Access::NKey {
            seed: nkeys::KeyPair::new_user().seed().unwrap(),
        }
    }

    /// A fresh operator, account (JetStream on) and user; the user's `.creds` file in `dir`.
    pub fn new_creds(dir: &std::path::Path) -> Access {
        let operator = nkeys::KeyPair::new_operator();
        let account = nkeys::KeyPair::new_account();
        // JetStream in operator mode needs a system account.
        let system = nkeys::KeyPair::new_account();
        let sys_jwt = jwt(
            &operator,
            &system.public_key(),
            json!({ "type": "account", "version": 2 }),
        );
        let user = nkeys::KeyPair::new_user();
        let op_jwt = jwt(
            &operator,
            &operator.public_key(),
            json!({ "type": "operator", "version": 2 }),
        );
        let acct_jwt = jwt(
            &operator,
            &account.public_key(),
            json!({ "type": "account", "version": 2, "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1,
                "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
            }}),
        );
        let user_jwt = jwt(
            &account,
            &user.public_key(),
            json!({ "type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1 }),
        );
        let file = dir.join("user.creds");
        std::fs::write(
            &file,
            format!(
                "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
                 ************************* IMPORTANT *************************\n\n\
                 -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
                user.seed().unwrap()
            ),
        )
        .unwrap();
        let server_conf = format!(
            "operator: \"{op_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{acct_jwt}\"\n  {sys}: \"{sys_jwt}\"\n}}\n",
            account.public_key(),
            sys = system.public_key()
        );
        Access::Creds { file, server_conf }
    }

    /// The server's `authorization` (or operator) settings.
    fn server_conf(&self) -> String {
        match self {
            Access::Open => String::new(),
            Access::Token(t) => format!("authorization {{ token: \"{t}\" }}\n"),
            Access::User(u, p) => {
                format!("authorization {{ user: \"{u}\", password: \"{p}\" }}\n")
            }
            Access::NKey { seed } => {
                let public = nkeys::KeyPair::from_seed(seed).unwrap().public_key();
                format!("authorization {{ users: [ {{ nkey: \"{public}\" }} ] }}\n")
            }
            Access::Creds { server_conf, .. } => server_conf.clone(),
        }
    }

    /// What the sink's `[nats]` table says for this access.
    pub fn sink_conf(&self) -> String {
        match self {
            Access::Open => String::new(),
            Access::Token(t) => format!("token = {{ value = \"{t}\" }}\n"),
            Access::User(u, p) => format!("user = \"{u}\"\npassword = {{ value = \"{p}\" }}\n"),
            Access::NKey { seed } => format!("nkey = {{ value = \"{seed}\" }}\n"),
            Access::Creds { file, .. } => format!("credentials_file = \"{}\"\n", file.display()),
        }
    }
}

/// A NATS JWT (`ed25519-nkey`) for `subject`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, nats: Value) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = json!({ "typ": "JWT", "alg": "ed25519-nkey" });
    let claims = json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": chrono::Utc::now().timestamp(),
        "iss": issuer.public_key(),
        "name": "xdrsync-test",
        "sub": subject,
        "nats": nats,
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = issuer.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(&sig))
}

/// One private nats-server.
#[derive(Debug)]
pub struct NatsServer {
    dir: tempfile::TempDir,
    /// Its client port.
    pub port: u16,
    /// Who may connect.
    pub access: Access,
    /// Its CA when it speaks TLS.
    pub tls_ca: Option<PathBuf>,
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
    /// Starts a JetStream server on a free port, open to anyone, without TLS.
    pub async fn start() -> NatsServer {
        Self::start_with(Access::Open, false).await
    }

    /// Starts a JetStream server with `access`, TLS-only when `tls` (a certificate from the
    /// emulator's local CA, for 127.0.0.1 and localhost).
    pub async fn start_with(access: Access, tls: bool) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let mut conf = format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: \"{}\" }}\n",
            dir.path().join("js").display()
        );
        conf.push_str(&access.server_conf());
        let tls_ca = if tls {
            let files = xdrsync_emulator::tls::ensure(&dir.path().join("tls")).unwrap();
            conf.push_str(&format!(
                "tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n",
                files.server_cert.display(),
                files.server_key.display()
            ));
            Some(files.ca_cert)
        } else {
            None
        };
        std::fs::write(dir.path().join("nats.conf"), conf).unwrap();
        let s = NatsServer {
            dir,
            port,
            access,
            tls_ca,
            child: Mutex::new(None),
        };
        s.restart().await;
        s
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A client of this server, with its access and TLS.
    pub async fn client(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        let mut o = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2));
        if let Some(ca) = &self.tls_ca {
            o = o.require_tls(true).add_root_certificates(ca.clone());
        }
        o = match &self.access {
            Access::Open => o,
            Access::Token(t) => o.token(t.clone()),
            Access::User(u, p) => o.user_and_password(u.clone(), p.clone()),
            Access::NKey { seed } => o.nkey(seed.clone()),
            Access::Creds { file, .. } => o.credentials_file(file).await.unwrap(),
        };
        o.connect(self.address()).await
    }

    /// Starts the server (again, with the same store).
    pub async fn restart(&self) {
        let bin = std::env::var(NATS_SERVER_ENV).unwrap_or_else(|_| "/usr/sbin/nats-server".into());
        assert!(
            std::path::Path::new(&bin).exists(),
            "nats-server not found at {bin}: install Debian's nats-server or set {NATS_SERVER_ENV}"
        );
        let log = self.dir.path().join("nats.log");
        let child = tokio::process::Command::new(&bin)
            .arg("-c")
            .arg(self.dir.path().join("nats.conf"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        *self.child.lock().unwrap() = Some(child);
        for _ in 0..200 {
            if let Ok(c) = self.client().await {
                // JetStream answers once it has recovered its store.
                // (`$JS.API.INFO` raw: async-nats's account model is newer than Debian's
                // nats-server 2.9.)
                if c.request("$JS.API.INFO", "".into()).await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        panic!(
            "nats-server did not start on {}; its log ends:\n{}",
            self.address(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    /// Stops the server (SIGTERM; JetStream flushes its store).
    pub async fn stop(&self) {
        let child = self.child.lock().unwrap().take();
        super::terminate(child).await;
    }

    /// Every message of `stream` on this server, in stream order.
    pub async fn read_stream(&self, stream: &str) -> Vec<StoredMessage> {
        read_messages(
            self.client().await.expect("connect to read the stream"),
            stream,
        )
        .await
    }
}

/// Every message of `stream` on the (open, plaintext) server at `address`, in stream order.
pub async fn read_stream(address: &str, stream: &str) -> Vec<StoredMessage> {
    let c = async_nats::connect(address)
        .await
        .expect("connect to read the stream");
    read_messages(c, stream).await
}

async fn read_messages(client: async_nats::Client, stream: &str) -> Vec<StoredMessage> {
    let js = async_nats::jetstream::new(client);
    let Ok(mut s) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let info = s.info().await.unwrap();
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut out = Vec::new();
    for seq in first.max(1)..=last {
        let Ok(m) = s.get_raw_message(seq).await else {
            continue; // deleted
        };
        out.push(StoredMessage {
            subject: m.subject.to_string(),
            msg_id: m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()),
            data: serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
        });
    }
    out
}

/// Deletes `stream` on the (open) server at `address`.
pub async fn delete_stream(address: &str, stream: &str) {
    let c = async_nats::connect(address).await.unwrap();
    async_nats::jetstream::new(c)
        .delete_stream(stream)
        .await
        .unwrap();
}
