//! A TCP proxy in front of a real server, to take the server "down" for one test without
//! stopping the machine's shared instance: while down it refuses connections and has cut
//! every open one, exactly what a client sees of a server restart.

use std::net::SocketAddr;
use std::sync::Mutex;

/// The proxy.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    upstream: String,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Proxy {
    /// Proxies a free loopback port to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let p = Proxy {
            addr: SocketAddr::from(([127, 0, 0, 1], super::free_port())),
            upstream: upstream.to_owned(),
            task: Mutex::new(None),
        };
        p.up();
        p
    }

    /// Accepts and forwards (again).
    pub fn up(&self) {
        let listener = super::listen(self.addr);
        let upstream = self.upstream.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let upstream = upstream.clone();
                conns.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    /// Cuts every connection and refuses new ones.
    pub fn down(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
    }
}
