//! The webhook sink: JSON batches POSTed to a URL (one per tenant if configured), signed with
//! HMAC-SHA256 so the receiver can tell they came from us and were not altered.
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! X-Xdrsync-Timestamp: 1764503162
//! X-Xdrsync-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
//! Idempotency-Key: <batch id>
//!
//! {"sink":"soar","batch_id":"…","count":2,"events":[{…},{…}]}
//! ```
//!
//! The batch id is a hash of the batch's event ids, so a retried batch carries the same id and
//! the receiver can drop the repeat (each event also carries its own `event_id` in the
//! `xdrsync`, `ocsf` (`metadata.uid`) and `ecs` (`xdrsync.event_id`) formats). Any 2xx is an
//! acknowledgement; 408, 429 (with `Retry-After`) and 5xx are retried; other answers fail.

mod config;
#[cfg(feature = "sink-webhook")]
mod sink;

pub use config::{TenantWebhook, Validated, WebhookConfig};
#[cfg(feature = "sink-webhook")]
pub use sink::{SIGNATURE_HEADER, TIMESTAMP_HEADER, batch_id, sign, verify};

#[cfg(feature = "sink-webhook")]
pub(crate) use sink::build;

#[cfg(all(test, feature = "sink-webhook"))]
mod tests;
