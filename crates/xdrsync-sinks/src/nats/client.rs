// Replaced by `async-nats` (issue 14); its indexing is bounded by the parser above each use.
#![allow(clippy::indexing_slicing, clippy::expect_used, clippy::string_slice)]

//! A minimal NATS client: connect, then pipelined requests (publish with a reply subject,
//! collect the replies on one wildcard subscription). Protocol: docs.nats.io, "Client
//! Protocol" (`INFO`, `CONNECT`, `PUB`/`HPUB`, `SUB`, `MSG`/`HMSG`, `PING`/`PONG`, `+OK`,
//! `-ERR`), headers as `NATS/1.0[ status]\r\nKey: Value\r\n\r\n`.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use xdrsync_model::SecretString;

/// A NATS failure.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The connection failed or was cut.
    #[error("nats {address}: {message}")]
    Io {
        /// `host:port`.
        address: String,
        /// What happened.
        message: String,
    },
    /// The server refused something (`-ERR`).
    #[error("nats {address}: the server said {message}")]
    Server {
        /// `host:port`.
        address: String,
        /// Its message.
        message: String,
    },
    /// The server broke the protocol.
    #[error("nats {address}: protocol error: {message}")]
    Protocol {
        /// `host:port`.
        address: String,
        /// What was wrong.
        message: String,
    },
}

/// One request: subject, headers, payload.
pub type Request<'a> = (String, Vec<(&'a str, &'a str)>, &'a [u8]);

/// One reply: its header status (`503` for "no responders") and payload.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The header status line's code, if the reply had headers with one.
    pub status: Option<u16>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// The longest protocol line read (an `INFO` with its cluster URLs fits many times over).
const MAX_LINE: u64 = 64 * 1024;
/// The largest message read or accepted as `max_payload` (NATS's own ceiling is 64 MiB).
const MAX_MESSAGE: usize = 64 << 20;

/// One open connection with its reply subscription.
#[derive(Debug)]
pub struct Connection {
    address: String,
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    /// `_INBOX.<random>`; replies arrive on `<inbox>.<n>`.
    inbox: String,
    next: u64,
    /// The server's `max_payload`.
    pub max_payload: usize,
}

/// Credentials.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// User and password.
    pub user: Option<(String, SecretString)>,
    /// Or a token.
    pub token: Option<SecretString>,
}

impl Connection {
    fn io(&self, e: impl std::fmt::Display) -> NatsError {
        NatsError::Io {
            address: self.address.clone(),
            message: e.to_string(),
        }
    }

    fn protocol(&self, message: impl Into<String>) -> NatsError {
        NatsError::Protocol {
            address: self.address.clone(),
            message: message.into(),
        }
    }

    /// Connects, authenticates and subscribes to its inbox.
    pub async fn connect(address: &str, auth: &Auth) -> Result<Connection, NatsError> {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| NatsError::Io {
                address: address.to_owned(),
                message: format!("cannot connect: {e}"),
            })?;
        let _ = tcp.set_nodelay(true);
        let (r, w) = tcp.into_split();
        let mut c = Connection {
            address: address.to_owned(),
            rd: BufReader::new(r),
            wr: w,
            inbox: format!("_INBOX.{}", uuid::Uuid::new_v4().simple()),
            next: 0,
            max_payload: 1 << 20,
        };
        let line = c.read_line().await?;
        let info = line
            .strip_prefix("INFO ")
            .ok_or_else(|| c.protocol(format!("expected INFO, got {line:?}")))?;
        let info: serde_json::Value =
            serde_json::from_str(info).map_err(|e| c.protocol(format!("INFO: {e}")))?;
        if let Some(m) = info["max_payload"].as_u64() {
            c.max_payload = usize::try_from(m).unwrap_or(MAX_MESSAGE).min(MAX_MESSAGE);
        }
        if info["headers"].as_bool() == Some(false) {
            return Err(
                c.protocol("the server does not support headers (NATS 2.2 or later is needed)")
            );
        }
        let mut connect = serde_json::json!({
            "verbose": false, "pedantic": false, "tls_required": false, "headers": true,
            "no_responders": true, "lang": "rust-xdrsync", "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1, "echo": false,
        });
        if let Some((u, p)) = &auth.user {
            connect["user"] = u.as_str().into();
            connect["pass"] = p.expose().into();
        }
        if let Some(t) = &auth.token {
            connect["auth_token"] = t.expose().into();
        }
        let msg = format!("CONNECT {connect}\r\nPING\r\nSUB {}.* 1\r\n", c.inbox);
        c.wr.write_all(msg.as_bytes()).await.map_err(|e| c.io(e))?;
        loop {
            let line = c.read_line().await?;
            match line.as_str() {
                "PONG" => break,
                "PING" => c.wr.write_all(b"PONG\r\n").await.map_err(|e| c.io(e))?,
                l if l.starts_with("-ERR") => {
                    return Err(NatsError::Server {
                        address: c.address.clone(),
                        message: xdrsync_model::printable(
                            l.strip_prefix("-ERR").unwrap_or(l).trim(),
                        ),
                    });
                }
                _ => {}
            }
        }
        Ok(c)
    }

    async fn read_line(&mut self) -> Result<String, NatsError> {
        use tokio::io::AsyncReadExt as _;
        let mut line = String::new();
        let n = (&mut self.rd)
            .take(MAX_LINE)
            .read_line(&mut line)
            .await
            .map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(self.io("the server closed the connection"));
        }
        if !line.ends_with('\n') {
            return Err(self.protocol(format!(
                "a protocol line longer than {} KiB",
                MAX_LINE / 1024
            )));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// Sends every `(subject, headers, payload)` with a reply subject of its own, then waits
    /// for all the replies (in request order) for at most `timeout`.
    pub async fn request_all(
        &mut self,
        requests: &[Request<'_>],
        timeout: Duration,
    ) -> Result<Vec<Reply>, NatsError> {
        let first = self.next;
        let mut buf = Vec::new();
        for (subject, headers, payload) in requests {
            if payload.len() > self.max_payload {
                return Err(self.protocol(format!(
                    "a message of {} bytes is over the server's max_payload of {}",
                    payload.len(),
                    self.max_payload
                )));
            }
            let reply = format!("{}.{}", self.inbox, self.next);
            self.next += 1;
            if headers.is_empty() {
                buf.extend_from_slice(
                    format!("PUB {subject} {reply} {}\r\n", payload.len()).as_bytes(),
                );
            } else {
                let mut h = String::from("NATS/1.0\r\n");
                for (k, v) in headers {
                    h.push_str(&format!("{k}: {v}\r\n"));
                }
                h.push_str("\r\n");
                buf.extend_from_slice(
                    format!(
                        "HPUB {subject} {reply} {} {}\r\n",
                        h.len(),
                        h.len() + payload.len()
                    )
                    .as_bytes(),
                );
                buf.extend_from_slice(h.as_bytes());
            }
            buf.extend_from_slice(payload);
            buf.extend_from_slice(b"\r\n");
        }
        self.wr.write_all(&buf).await.map_err(|e| self.io(e))?;
        let mut replies: Vec<Option<Reply>> = vec![None; requests.len()];
        let mut missing = requests.len();
        let collect = async {
            while missing > 0 {
                let (n, reply) = self.read_reply().await?;
                let Some(i) = n.checked_sub(first).map(|i| i as usize) else {
                    continue; // a late reply to an earlier, timed-out request
                };
                if let Some(slot) = replies.get_mut(i)
                    && slot.is_none()
                {
                    *slot = Some(reply);
                    missing -= 1;
                }
            }
            Ok::<(), NatsError>(())
        };
        match tokio::time::timeout(timeout, collect).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(NatsError::Io {
                    address: self.address.clone(),
                    message: format!(
                        "{missing} of {} replies did not arrive within {}s",
                        requests.len(),
                        timeout.as_secs()
                    ),
                });
            }
        }
        Ok(replies
            .into_iter()
            .map(|r| r.expect("all arrived"))
            .collect())
    }

    /// Reads until the next message on the inbox; answers PINGs on the way.
    async fn read_reply(&mut self) -> Result<(u64, Reply), NatsError> {
        loop {
            let line = self.read_line().await?;
            let mut parts = line.split_ascii_whitespace();
            match parts.next() {
                Some("MSG") | Some("HMSG") => {
                    let with_headers = line.starts_with('H');
                    let args: Vec<&str> = parts.collect();
                    // MSG <subject> <sid> [reply] <len>; HMSG <subject> <sid> [reply] <hlen> <len>
                    let nums = if with_headers { 2 } else { 1 };
                    if args.len() < 2 + nums {
                        return Err(self.protocol(format!("bad message line {line:?}")));
                    }
                    let subject = args[0].to_owned();
                    let parse = |s: &str| s.parse::<usize>().ok();
                    let total = parse(args[args.len() - 1]);
                    let hlen = if with_headers {
                        parse(args[args.len() - 2])
                    } else {
                        Some(0)
                    };
                    let (Some(total), Some(hlen)) = (total, hlen) else {
                        return Err(self.protocol(format!("bad message line {line:?}")));
                    };
                    if hlen > total {
                        return Err(self.protocol(format!("bad message line {line:?}")));
                    }
                    // The server says how much follows; a reply to us (a JetStream ack) is
                    // small, and no claim makes us allocate more than a message may hold.
                    if total > MAX_MESSAGE {
                        return Err(self.protocol(format!(
                            "a message of {total} bytes announced, more than the {} MiB a reply may have",
                            MAX_MESSAGE >> 20
                        )));
                    }
                    let mut data = vec![0u8; total + 2];
                    self.rd
                        .read_exact(&mut data)
                        .await
                        .map_err(|e| self.io(e))?;
                    data.truncate(total);
                    let status = if with_headers {
                        let head = String::from_utf8_lossy(&data[..hlen]);
                        head.lines()
                            .next()
                            .and_then(|l| l.strip_prefix("NATS/1.0"))
                            .and_then(|rest| rest.split_whitespace().next())
                            .and_then(|c| c.parse().ok())
                    } else {
                        None
                    };
                    let payload = data.split_off(hlen);
                    let n = subject
                        .strip_prefix(&self.inbox)
                        .and_then(|s| s.strip_prefix('.'))
                        .and_then(|s| s.parse::<u64>().ok());
                    if let Some(n) = n {
                        return Ok((n, Reply { status, payload }));
                    }
                }
                Some("PING") => self
                    .wr
                    .write_all(b"PONG\r\n")
                    .await
                    .map_err(|e| self.io(e))?,
                Some("-ERR") => {
                    return Err(NatsError::Server {
                        address: self.address.clone(),
                        message: xdrsync_model::printable(
                            line.strip_prefix("-ERR").unwrap_or(&line).trim(),
                        ),
                    });
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A fake server: `INFO`, `PONG` to the client's `PING`, then `reply` to its first
    /// message.
    async fn hostile_server(reply: &'static [u8]) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"INFO {\"max_payload\":18446744073709551615,\"headers\":true}\r\n")
                .await
                .unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            s.write_all(b"PONG\r\n").await.unwrap();
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(reply).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        addr
    }

    #[tokio::test]
    async fn nats_message_length_from_the_server_is_bounded() {
        for reply in [
            &b"MSG _INBOX.x.0 1 18446744073709551615\r\n"[..],
            b"HMSG _INBOX.x.0 1 9999999999 99999999999\r\n",
            b"MSG _INBOX.x.0 1 999999999\r\n",
        ] {
            let addr = hostile_server(reply).await;
            let mut c = Connection::connect(&addr, &Auth::default()).await.unwrap();
            assert_eq!(c.max_payload, MAX_MESSAGE, "INFO's max_payload is capped");
            let e = c
                .request_all(&[("s".into(), vec![], &b"x"[..])], Duration::from_secs(3))
                .await
                .unwrap_err();
            assert!(e.to_string().contains("bytes announced"), "{e}");
        }
    }

    #[tokio::test]
    async fn nats_endless_line_is_refused() {
        static LONG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let line = LONG.get_or_init(|| vec![b'A'; 200 * 1024]);
        let addr = hostile_server(line).await;
        let mut c = Connection::connect(&addr, &Auth::default()).await.unwrap();
        let e = c
            .request_all(&[("s".into(), vec![], &b"x"[..])], Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("longer than 64 KiB"), "{e}");
    }
}
