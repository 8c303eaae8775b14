//! Posting signed batches.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use xdrsync_config::ConfigError;
use xdrsync_model::{SafeUrl, SecretString, TenantId};

use super::config::Validated;
use crate::Sink;
use crate::outbox::{BoxFuture, Common, Event, OutboxSink, SendError, Transport};

/// The signature header: `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "x-xdrsync-signature";
/// The Unix time the signature covers (a receiver should refuse old ones: replays).
pub const TIMESTAMP_HEADER: &str = "x-xdrsync-timestamp";

/// `sha256=<hex>` of `timestamp.body` under `secret`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC is defined for keys of every length (a long one is hashed first): this cannot fail.
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` (`sha256=<hex>`) is the signature of `timestamp.body` under `secret`,
/// compared in constant time: what a receiver of our webhook does, and what `run` does with a
/// SOAR's `POST /actions` signed the same way.
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], header: &str) -> bool {
    let Some(Ok(given)) = header.strip_prefix("sha256=").map(hex::decode) else {
        return false;
    };
    // HMAC is defined for keys of every length: this cannot fail.
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// The id of a batch: a hash of its event ids, the same on every retry.
pub fn batch_id<'a>(event_ids: impl Iterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for id in event_ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    let digest = h.finalize();
    hex::encode(digest.get(..16).unwrap_or(&digest))
}

struct Webhook {
    sink: String,
    client: reqwest::Client,
    /// Index 0: the default URL; then one per tenant with its own (redacted in `Debug`: a
    /// webhook URL often carries its token).
    urls: Vec<SafeUrl>,
    tenants: Vec<(TenantId, usize)>,
    secret: Option<SecretString>,
}

/// A webhook URL as it may appear in logs and errors: its origin only. Webhook URLs often carry
/// their credential in the path (`/services/T0/B0/XXXX`) or the query (`?code=…`).
fn shown(u: &SafeUrl) -> String {
    let url = u.expose();
    format!("{}/…", url.origin().ascii_serialization())
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("urls", &self.urls.iter().map(shown).collect::<Vec<_>>())
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

pub(crate) fn build(common: Common, v: &Validated) -> Result<Arc<dyn Sink>, ConfigError> {
    let secret = v
        .secret
        .as_ref()
        .map(|s| s.resolve(&format!("sink {} webhook.secret", common.name)))
        .transpose()?;
    let client = crate::http::client(
        &common.name,
        Duration::from_secs(v.timeout_secs),
        v.ca_file.as_deref(),
    )?;
    let mut urls = vec![SafeUrl::new(v.url.clone())];
    let mut tenants = Vec::new();
    for (t, u) in &v.tenants {
        urls.push(SafeUrl::new(u.clone()));
        tenants.push((t.clone(), urls.len() - 1));
    }
    let t = Webhook {
        sink: common.name.clone(),
        client,
        urls,
        tenants,
        secret,
    };
    Ok(Arc::new(OutboxSink::new(common, t)))
}

impl Transport for Webhook {
    fn destination(&self, e: &Event) -> usize {
        let t = e.v.record.tenant();
        self.tenants
            .iter()
            .find(|(id, _)| id == t)
            .map_or(0, |(_, i)| *i)
    }

    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<u64, SendError>> {
        Box::pin(async move {
            let dest = events.first().map_or(0, |e| self.destination(e));
            let url = self.urls.get(dest).ok_or_else(|| {
                SendError::permanent(format!("webhook: no URL for destination {dest}"))
            })?;
            let id = batch_id(events.iter().map(|e| e.v.event_id.as_str()));
            let mut body =
                Vec::with_capacity(events.iter().map(|e| e.doc.len() + 1).sum::<usize>() + 128);
            body.extend_from_slice(
                format!(
                    r#"{{"sink":{},"batch_id":"{id}","count":{},"events":["#,
                    crate::schema::quote(&self.sink),
                    events.len()
                )
                .as_bytes(),
            );
            for (i, e) in events.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&e.doc);
            }
            body.extend_from_slice(b"]}");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut req = self
                .client
                .post(url.expose().clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("idempotency-key", &id)
                .header(TIMESTAMP_HEADER, now.to_string());
            if let Some(s) = &self.secret {
                req = req.header(SIGNATURE_HEADER, sign(s.expose().as_bytes(), now, &body));
            }
            let what = format!("POST {}", shown(url));
            let sent = body.len() as u64;
            match crate::http::exchange(req.body(body), &what).await? {
                (200..=299, _, _) => Ok(sent),
                (status, headers, text) => {
                    Err(SendError::http(status, &headers, &text).context(&what))
                }
            }
        })
    }
}
