//! What the binary's end-to-end tests share: running `xdrsync` as a user would.

#![allow(dead_code)]

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `xdrsync ARGS` in `cwd`, with no config or log level from the environment.
pub(crate) fn command(args: &[&str], cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xdrsync"));
    c.args(args)
        .current_dir(cwd)
        .env_remove("XDRSYNC_CONFIG")
        .env_remove("XDRSYNC_LOG");
    c
}

/// Runs xdrsync off the async threads, so the in-process emulator keeps serving.
pub(crate) async fn xdrsync(args: &[&str], cwd: &Path) -> Output {
    let mut c = command(args, cwd);
    tokio::task::spawn_blocking(move || c.output().expect("run xdrsync"))
        .await
        .expect("the command's thread")
}

/// Standard output and standard error, as text.
pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A `run` daemon, its stderr read as it comes so a test waits for what it says.
/// A running daemon: its child process, the lines it printed on stderr so far, and the
/// address of its status server.
pub(crate) struct Daemon {
    child: std::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// The thread reading stderr; joined at exit, so nothing it read is missed.
    reader: Option<std::thread::JoinHandle<()>>,
    /// The status server's `http://host:port`.
    pub(crate) base: String,
}

impl Daemon {
    /// Starts `xdrsync run ARGS` in `dir` and waits for its status server's address.
    pub(crate) fn start(dir: &Path, args: &[&str]) -> Daemon {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        let mut child = command(&all, dir)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut d = Daemon {
            child,
            stderr,
            reader: Some(reader),
            base: String::new(),
        };
        let line = d.wait_for("status page http://");
        let addr = line
            .split("status page http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap()
            .to_owned();
        d.base = format!("http://{addr}");
        d
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (at most 60 s) until stderr has a line containing `what`; returns that line.
    pub(crate) fn wait_for(&mut self, what: &str) -> String {
        self.wait_for_count(what, 1)
    }

    /// Waits until `what` occurs `n` times on stderr; returns the last line with it.
    pub(crate) fn wait_for_count(&mut self, what: &str, n: usize) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let err = self.stderr();
            if err.matches(what).count() >= n {
                return err.lines().rfind(|l| l.contains(what)).unwrap().to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited with {status} before `{what}`: {err}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no `{what}` ×{n} in: {err}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGKILL, and waits for it to be gone.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }

    /// SIGTERM, then [`Daemon::wait`].
    pub(crate) fn stop(self) -> (Option<i32>, String) {
        self.signal("-TERM");
        self.wait()
    }

    /// Waits for the exit: its code and all it wrote to stderr (the reader joined, so nothing
    /// is missed).
    pub(crate) fn wait(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status.code(), self.stderr())
    }
}

/// A schema of its own on the test server, and the store URL that puts the store in it.
pub(crate) async fn scratch() -> (String, String) {
    let schema = xdrsync_test_utils::receivers::postgres::fresh_schema("xdrsync_store");
    xdrsync_test_utils::receivers::postgres::client()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let url = format!(
        "{}?options=-csearch_path%3D{schema}",
        xdrsync_test_utils::receivers::postgres::url(
            &xdrsync_test_utils::receivers::postgres::address()
        )
    );
    (schema, url)
}

/// Points the config in `dir` at the PostgreSQL store `url`, read from a file as a secret.
pub(crate) fn use_postgres(dir: &std::path::Path, url: &str) -> xdrsync_config::Config {
    let path = dir.join("xdrsync.toml");
    let text = fs_err::read_to_string(&path).unwrap();
    fs_err::write(dir.join("store-url"), url).unwrap();
    let text = text.replacen(
        "[store]\npath = \"xdrsync.db\"\n",
        "[store]\nurl = { file = \"store-url\" }\n",
        1,
    );
    fs_err::write(&path, text).unwrap();
    xdrsync_config::Config::load(&path).unwrap()
}

/// Two processes at once on the store `dir`'s config names: a `backfill` of 7 days and a
/// `pull` of the same tenant, against an emulator enforcing a 60×-scaled quota
/// ([`quota_scenario`]). Both succeed, with more than 100 calls and not one 429: each counted
/// the calls the other recorded in the store's ledger.
pub(crate) async fn backfill_beside_pull_without_a_429(
    dir: &Path,
    emu: &xdrsync_emulator::Emulator,
) {
    let before = emu.state().stats();
    let (a, b) = tokio::join!(
        xdrsync(&["backfill", "--since", "7d"], dir),
        xdrsync(&["pull"], dir)
    );
    assert_eq!(a.status.code(), Some(0), "{}", text(&a));
    assert_eq!(b.status.code(), Some(0), "{}", text(&b));
    let after = emu.state().stats();
    let calls = after.pages_served - before.pages_served;
    assert!(calls > 100, "{calls} calls: too few to test the quota");
    assert_eq!(
        after.throttled - before.throttled,
        0,
        "{calls} calls, 429s: {}\n{}\n{}",
        after.throttled - before.throttled,
        text(&a),
        text(&b)
    );
}

/// One legacy-API tenant with the emulator's quotas on at 60× (the list quota, 50 calls a
/// minute, becomes 50 a second), and its config in `dir` pacing at the same scale.
pub(crate) async fn quota_scenario(dir: &Path) -> xdrsync_emulator::Emulator {
    let mut ec = xdrsync_emulator::EmulatorConfig {
        directory: xdrsync_test_utils::one_tenant(
            "contoso",
            30.0,
            xdrsync_test_utils::ALL_READ_ROLES,
        ),
        time_scale: 60.0,
        ..Default::default()
    };
    ec.behaviour.rate_limits = true;
    let emu = xdrsync_emulator::Emulator::start(ec, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    xdrsync_test_utils::write_config(
        dir,
        &emu,
        &[xdrsync_model::ApiKind::Xdr],
        "[sync]\nrate_budget = true\nquota_time_scale = 60\nxdr_page_size = 25\ninitial_lookback_hours = 168\n",
    );
    emu
}
