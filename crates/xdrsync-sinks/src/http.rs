//! The HTTP client the HTTP sinks (Splunk HEC, webhook) share: rustls, the system's roots
//! plus an optional CA file, a request timeout, no redirects (a redirect would resend the
//! events, and the token, somewhere else).

use std::path::Path;
use std::time::Duration;

use xdrsync_config::ConfigError;

use crate::outbox::SendError;

/// A client for a sink named `sink`.
pub(crate) fn client(
    sink: &str,
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, ConfigError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("xdrsync/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = ca_file {
        let err = |message: String| ConfigError::Secret {
            field: format!("sink {sink} ca_file"),
            message,
        };
        let pem = fs_err::read(ca).map_err(|e| err(e.to_string()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))? {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| ConfigError::Secret {
        field: format!("sink {sink}"),
        message: format!("cannot build the HTTP client: {e}"),
    })
}

/// The largest receiver answer read.
const MAX_ANSWER: usize = 1 << 20;

/// Sends `req` and reads the whole answer: `(status, headers, body)`. A request that gets no
/// answer is a transient [`SendError`] whose message starts with `what` (`POST <url>`, the
/// URL already redacted by the caller).
pub(crate) async fn exchange(
    req: reqwest::RequestBuilder,
    what: &str,
) -> Result<(u16, reqwest::header::HeaderMap, String), SendError> {
    let resp = req
        .send()
        .await
        .map_err(|e| SendError::reqwest(e).context(what))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    // A receiver's answer is a status and a little JSON: at most 1 MiB is read, and what it
    // says is made printable (it reaches logs and `status`).
    let body = match xdrsync_http::read_body(resp, MAX_ANSWER).await {
        Ok(b) => b,
        Err(xdrsync_http::BodyError::TooLarge(_)) => {
            return Err(SendError::transient(format!(
                "{what}: the receiver's answer is larger than {} KiB",
                MAX_ANSWER / 1024
            )));
        }
        Err(xdrsync_http::BodyError::Transport(e)) => {
            return Err(SendError::reqwest(e).context(what));
        }
    };
    let text = xdrsync_model::printable(&String::from_utf8_lossy(&body));
    Ok((status, headers, text))
}
