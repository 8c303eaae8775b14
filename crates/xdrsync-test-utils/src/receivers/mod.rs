//! The receivers sinks are tested against: real servers where they can run here (rsyslog,
//! nats-server, PostgreSQL), and for Splunk HEC and webhooks, in-process servers that check the
//! documented protocol and answer its error codes. Each can be stopped and started again on
//! the same port, keeping what it received (a restart, not a new receiver).

pub mod hec;
pub mod nats;
pub mod postgres;
pub mod proxy;
pub mod rsyslog;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Mutex;

/// A free loopback port (bound and released; the race with another process is accepted).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Stops a receiver's process as a service manager would (SIGTERM: it flushes what it
/// received, then exits) and waits for it, at most 10 s.
pub(crate) async fn terminate(child: Option<tokio::process::Child>) {
    let Some(mut c) = child else {
        return;
    };
    if let Some(pid) = c.id() {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    // A receiver slow to stop (a loaded CI machine) is killed after ten seconds, and waited
    // for: a restart must never race the old process for its ports.
    if tokio::time::timeout(std::time::Duration::from_secs(10), c.wait())
        .await
        .is_err()
    {
        let _ = c.kill().await;
        let _ = c.wait().await;
    }
}

/// Failures to inject: the next `n` requests are refused.
#[derive(Debug, Default)]
pub(crate) struct FailNext(std::sync::atomic::AtomicUsize);

impl FailNext {
    pub(crate) fn set(&self, n: usize) {
        self.0.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether this request is one of them (and counts it).
    pub(crate) fn take(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.0
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// A listener on `addr` that can be bound again right after the previous one closed.
pub(crate) fn listen(addr: SocketAddr) -> tokio::net::TcpListener {
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.set_reuseaddr(true).expect("SO_REUSEADDR");
    s.bind(addr).expect("bind the receiver's port");
    s.listen(128).expect("listen")
}

/// An axum router served on a fixed loopback port, stoppable and restartable.
#[derive(Debug)]
pub(crate) struct Restartable {
    pub(crate) addr: SocketAddr,
    router: axum::Router,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Restartable {
    pub(crate) fn new(router: axum::Router) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let r = Restartable {
            addr,
            router,
            task: Mutex::new(None),
        };
        r.start();
        r
    }

    /// Serves (again). The connections belong to the serving task, so stopping it closes
    /// them too (a restarted receiver keeps no keep-alive connection open).
    pub(crate) fn start(&self) {
        let listener = listen(self.addr);
        let router = self.router.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let svc = hyper_util::service::TowerToHyperService::new(router.clone());
                conns.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, svc)
                    .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    /// Stops serving and drops every open connection (a crash or restart of the receiver).
    pub(crate) fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        self.stop();
    }
}
