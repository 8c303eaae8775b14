//! The HTTP client the HTTP sinks (Splunk HEC, webhook) share: rustls, the system's roots
//! plus an optional CA file, a request timeout, no redirects (a redirect would resend the
//! events, and the token, somewhere else).

use std::path::Path;
use std::time::Duration;

use xdrsync_config::ConfigError;

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
