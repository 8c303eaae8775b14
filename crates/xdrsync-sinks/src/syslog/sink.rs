//! Sending syslog messages over UDP, TCP and TLS.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use xdrsync_config::ConfigError;

use super::config::{Framing, Message, SyslogTransport, Validated};
use super::encoder::{Header, cef, frame, leef};
use crate::Sink;
use crate::outbox::{BoxFuture, Common, Event, OutboxSink, SendError, Transport};

struct Syslog {
    address: String,
    transport: SyslogTransport,
    message: Message,
    framing: Framing,
    header: Header,
    max_udp_bytes: usize,
    timeout: Duration,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
}

impl std::fmt::Debug for Syslog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syslog")
            .field("address", &self.address)
            .field("transport", &self.transport)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

/// This machine's name, for HOSTNAME when none is configured.
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| (33..=126).contains(&b)))
        .unwrap_or_else(|| "-".into())
}

pub(crate) fn build(common: Common, v: &Validated) -> Result<Arc<dyn Sink>, ConfigError> {
    let tls = if v.transport == SyslogTransport::Tls {
        let err = |message: String| ConfigError::Secret {
            field: format!("sink {} syslog", common.name),
            message,
        };
        let config = crate::tls::client_config(v.ca_file.as_deref(), crate::tls::Verify::Full)
            .map_err(err)?;
        let name = rustls_pki_types::ServerName::try_from(v.server_name.clone())
            .map_err(|e| err(format!("server_name `{}`: {e}", v.server_name)))?;
        Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
    } else {
        None
    };
    let t = Syslog {
        address: v.address.clone(),
        transport: v.transport,
        message: v.message,
        framing: v.framing,
        header: Header {
            protocol: v.protocol,
            facility: v.facility,
            hostname: v.hostname.clone().unwrap_or_else(local_hostname),
            app_name: v.app_name.clone(),
            sd_id: v.sd_id.clone(),
        },
        max_udp_bytes: v.max_udp_bytes,
        timeout: Duration::from_secs(v.timeout_secs),
        tls,
    };
    Ok(Arc::new(OutboxSink::new(common, t)))
}

impl Syslog {
    fn message_of(&self, e: &Event) -> String {
        let body = match self.message {
            Message::Cef => cef(&e.v),
            Message::Leef => leef(&e.v),
            // serde_json escapes C0 controls but writes U+2028/U+2029 raw; some receivers
            // split records on them. JSON's own escapes keep the document the same.
            Message::Json => String::from_utf8_lossy(&e.doc)
                .replace('\u{2028}', "\\u2028")
                .replace('\u{2029}', "\\u2029"),
        };
        self.header.message(&e.v, &body)
    }

    async fn send_udp(&self, events: &[Event]) -> Result<u64, SendError> {
        let msgs: Vec<String> = events.iter().map(|e| self.message_of(e)).collect();
        if let Some((e, m)) = events
            .iter()
            .zip(&msgs)
            .find(|(_, m)| m.len() > self.max_udp_bytes)
        {
            return Err(SendError::permanent(format!(
                "seq {}: the message is {} bytes, over max_udp_bytes = {} (UDP would cut it): use transport = \"tcp\" or \"tls\"",
                e.v.seq,
                m.len(),
                self.max_udp_bytes
            )));
        }
        let sock = UdpSocket::bind(if self.address.starts_with('[') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        })
        .await
        .map_err(|e| SendError::transient(format!("udp: {e}")))?;
        sock.connect(&self.address)
            .await
            .map_err(|e| SendError::transient(format!("udp {}: {e}", self.address)))?;
        for m in &msgs {
            sock.send(m.as_bytes())
                .await
                .map_err(|e| SendError::transient(format!("udp {}: {e}", self.address)))?;
        }
        Ok(msgs.iter().map(|m| m.len() as u64).sum())
    }

    /// Writes the chunk, half-closes, and waits until the receiver has read it all and
    /// closed its side.
    async fn send_stream<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut s: S,
        buf: &[u8],
    ) -> Result<(), std::io::Error> {
        s.write_all(buf).await?;
        s.flush().await?;
        s.shutdown().await?;
        let mut sink = [0u8; 512];
        loop {
            match s.read(&mut sink).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                // A TLS peer that closes without close_notify after reading everything.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    async fn send_tcp(&self, events: &[Event]) -> Result<u64, SendError> {
        let mut buf = Vec::with_capacity(events.len() * 1024);
        for e in events {
            frame(&mut buf, &self.message_of(e), self.framing);
        }
        let what = if self.tls.is_some() { "tls" } else { "tcp" };
        let io = |e: std::io::Error| SendError::transient(format!("{what} {}: {e}", self.address));
        let run = async {
            let tcp = TcpStream::connect(&self.address).await.map_err(io)?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                Some((connector, name)) => {
                    let tls = connector.connect(name.clone(), tcp).await.map_err(|e| {
                        // A certificate problem will not fix itself.
                        if e.kind() == std::io::ErrorKind::InvalidData {
                            SendError::permanent(format!("tls {}: {e}", self.address))
                        } else {
                            io(e)
                        }
                    })?;
                    self.send_stream(tls, &buf).await.map_err(io)
                }
                None => self.send_stream(tcp, &buf).await.map_err(io),
            }
        };
        let sent = buf.len() as u64;
        tokio::time::timeout(self.timeout, run)
            .await
            .map(|r| r.map(|()| sent))
            .unwrap_or_else(|_| {
                Err(SendError::transient(format!(
                    "{what} {}: no acknowledgement (the receiver did not close) within {}s",
                    self.address,
                    self.timeout.as_secs()
                )))
            })
    }
}

impl Transport for Syslog {
    fn uses_documents(&self) -> bool {
        self.message == Message::Json
    }

    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<u64, SendError>> {
        Box::pin(async move {
            match self.transport {
                SyslogTransport::Udp => self.send_udp(events).await,
                SyslogTransport::Tcp | SyslogTransport::Tls => self.send_tcp(events).await,
            }
        })
    }
}
