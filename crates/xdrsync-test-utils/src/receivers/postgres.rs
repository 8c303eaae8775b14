//! The machine's PostgreSQL (`XDRSYNC_TEST_POSTGRES`, default `127.0.0.1:5432`, trust auth,
//! database `test`, started by `scripts/services`): a client for reading back what a sink
//! wrote, and a schema of its own per test so parallel tests never meet.

/// The env var naming the server's `host:port`.
pub const TEST_POSTGRES_ENV: &str = "XDRSYNC_TEST_POSTGRES";

/// The server's `host:port`.
pub fn address() -> String {
    std::env::var(TEST_POSTGRES_ENV).unwrap_or_else(|_| "127.0.0.1:5432".into())
}

/// The URL a sink connects with (to `address`, or to a proxy in front of it).
pub fn url(address: &str) -> String {
    format!("postgres://postgres@{address}/test")
}

/// A client of the server; missing PostgreSQL fails the test.
pub async fn client() -> tokio_postgres::Client {
    let a = address();
    let (c, conn) = tokio_postgres::connect(&url(&a), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {a} (scripts/services starts it): {e}"));
    tokio::spawn(conn);
    c
}

/// A schema name no other test uses.
pub fn fresh_schema(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Every event id in the sink's tables (one per stream) of `schema`.
pub async fn event_ids(schema: &str) -> Vec<String> {
    let c = client().await;
    let mut ids = Vec::new();
    for t in ["incidents", "alerts", "detections", "hunts"] {
        for row in c
            .query(&format!("SELECT event_id FROM {schema}.xdrsync_{t}"), &[])
            .await
            .unwrap()
        {
            ids.push(row.get(0));
        }
    }
    ids
}

/// Drops `schema` and what the test put in it.
pub async fn drop_schema(schema: &str) {
    client()
        .await
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// The CA that signed the machine's PostgreSQL server certificate (`scripts/services` makes
/// it: the certificate names `localhost` only); a missing file fails the test.
pub fn tls_ca() -> std::path::PathBuf {
    let dir = std::env::var("XDRSYNC_TEST_POSTGRES_TLS_DIR")
        .unwrap_or_else(|_| "/var/lib/xdrsync-test/postgres-tls".into());
    let ca = std::path::Path::new(&dir).join("ca.pem");
    assert!(
        ca.exists(),
        "{} is missing: scripts/services turns on TLS for the test PostgreSQL",
        ca.display()
    );
    ca
}

/// Whether the server's sessions named `application_name` are all encrypted, and how many
/// there are.
pub async fn sessions_encrypted(application_name: &str) -> (bool, i64) {
    let row = client()
        .await
        .query_one(
            "SELECT coalesce(bool_and(s.ssl), false), count(*)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = $1",
            &[&application_name],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A PostgreSQL server of one test's own (`initdb` in a temporary folder, on a free loopback
/// port), so the test can stop and restart a real server without disturbing the others that
/// share the machine's. Run as the `postgres` user when the test runs as root (the server
/// refuses root). Stopped when dropped.
#[derive(Debug)]
pub struct PrivateServer {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl PrivateServer {
    /// Makes and starts the server; a machine without PostgreSQL's binaries fails the test.
    pub fn start() -> PrivateServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect(
                "PostgreSQL's binaries under /usr/lib/postgresql (scripts/services installs them)",
            )
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::Builder::new()
            .prefix("xdrsync-pg-")
            .tempdir()
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PrivateServer { dir, bin, port };
        if server.as_root() {
            let ok = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(server.dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown the data folder to postgres");
        }
        server.run(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        server.up();
        server
    }

    fn as_root(&self) -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// `tool` of the server's binaries, as the user the server runs as.
    fn command(&self, tool: &str) -> std::process::Command {
        let exe = self.bin.join(tool);
        if self.as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server (fast: sessions are ended, as a restart ends them).
    pub fn down(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// The server's `host:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@{}/postgres", self.address())
    }

    /// When the server last started (`pg_postmaster_start_time()`), as text.
    pub async fn started_at(&self) -> String {
        let (c, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.query_one("SELECT pg_postmaster_start_time()::text", &[])
            .await
            .unwrap()
            .get(0)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}
