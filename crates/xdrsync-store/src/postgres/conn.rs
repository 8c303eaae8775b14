//! One PostgreSQL session on a thread of its own.
//!
//! The [`crate::Store`] trait is synchronous (SQLite's calls block, and async callers already
//! run them on blocking threads), while the maintained PostgreSQL client, `tokio-postgres`, is
//! async. Blocking on a runtime from inside another runtime panics, and some callers are on a
//! runtime's worker, so the session lives on its own thread with a current-thread runtime,
//! and each call is a job sent to it and waited for: it works from any thread, and calls on one
//! session are serialized as SQLite's writes are. A session that broke (the server restarted,
//! the network dropped) is opened again by the next call, which fails only if that fails.
//! A session left inside a transaction by a stopped process is ended by the server
//! ([`IDLE_IN_TRANSACTION`]).

use std::sync::mpsc;
use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};

/// How long the server lets a session sit inside a transaction waiting for its next statement
/// before it ends the session. Ours never wait between statements (payloads are compressed
/// before the transaction begins), so only a worker that stopped mid-transaction (SIGSTOP, a
/// frozen VM, a partition) reaches it: its locks (the commit lock, a lease row) are then freed
/// for the others instead of stalling the whole cluster until it comes back. Well under the
/// shortest lease (`[cluster] lease_secs` ≥ 3 s is checked beside it: a takeover skips rows
/// such a transaction holds, so it waits at most this long for them).
pub(crate) const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(2);

/// A job run on the session's thread with its client and runtime.
type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// What the session thread holds.
pub(crate) struct Session {
    runtime: tokio::runtime::Runtime,
    config: Config,
    /// TLS to the server (`None`: plaintext, which the caller allowed: loopback, or asked for).
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    client: Option<Client>,
    /// When the client was last handed out.
    last_used: std::time::Instant,
}

/// A session idle this long is checked (one empty query) before it is used: the session's
/// runtime runs only inside a job, so a connection the server ended meanwhile (a restart, a
/// failover) is not noticed until it is used, and the first job after would fail.
const PROBE_AFTER_IDLE: Duration = Duration::from_secs(1);

impl Session {
    /// The open client and the runtime to drive it on, connecting (again) first if there is no
    /// client or it broke.
    pub(crate) fn client(
        &mut self,
    ) -> Result<(&tokio::runtime::Runtime, &mut Client), tokio_postgres::Error> {
        let idle = self.last_used.elapsed() >= PROBE_AFTER_IDLE;
        self.last_used = std::time::Instant::now();
        let alive = self.client.take().filter(|c| {
            !c.is_closed() && (!idle || self.runtime.block_on(c.simple_query("")).is_ok())
        });
        let client = match alive {
            Some(c) => c,
            None => {
                let client = match &self.tls {
                    Some(tls) => {
                        let (client, connection) =
                            self.runtime.block_on(self.config.connect(tls.clone()))?;
                        self.runtime.spawn(ended(connection));
                        client
                    }
                    None => {
                        let (client, connection) =
                            self.runtime.block_on(self.config.connect(NoTls))?;
                        self.runtime.spawn(ended(connection));
                        client
                    }
                };
                self.runtime.block_on(client.batch_execute(&format!(
                    "SET idle_in_transaction_session_timeout = {}",
                    IDLE_IN_TRANSACTION.as_millis()
                )))?;
                client
            }
        };
        Ok((&self.runtime, self.client.insert(client)))
    }
}

/// Drives a session's connection until it ends, saying why if it failed.
async fn ended<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::warn!(error = %e, "The PostgreSQL store's connection ended.");
    }
}

/// The handle to a session thread; dropping it ends the thread.
#[derive(Debug)]
pub(crate) struct Connection {
    jobs: mpsc::Sender<Job>,
}

impl Connection {
    /// Starts the session thread for `config` (connecting lazily, on the first call).
    pub(crate) fn start(
        mut config: Config,
        tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    ) -> std::io::Result<Self> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (jobs, incoming) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("xdrsync-postgres".into())
            .spawn(move || {
                let mut session = Session {
                    runtime,
                    config,
                    tls,
                    client: None,
                    last_used: std::time::Instant::now(),
                };
                while let Ok(job) = incoming.recv() {
                    job(&mut session);
                }
            })?;
        Ok(Connection { jobs })
    }

    /// Runs `f` on the session thread and waits for its result. `None` if the thread is gone
    /// (it panicked), which the caller reports as the store being unusable.
    pub(crate) fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session) -> T + Send + 'static,
    ) -> Option<T> {
        let (done, result) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |session| {
            // The caller may have given up waiting; the result is then dropped.
            let _ = done.send(f(session));
        });
        self.jobs.send(job).ok()?;
        result.recv().ok()
    }
}
