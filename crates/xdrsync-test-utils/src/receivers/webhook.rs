//! A webhook receiver that does what a careful consumer should: refuses a request whose
//! `X-Xdrsync-Signature` is not the HMAC-SHA256 of `<X-Xdrsync-Timestamp>.<body>` under the
//! shared secret, or whose timestamp is more than 5 minutes off (a replay), and drops events
//! whose `event_id` it already has.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::Restartable;

#[derive(Debug)]
struct HookState {
    secret: Vec<u8>,
    fail_next: super::FailNext,
    throttle_next: super::FailNext,
    throttle_secs: std::sync::atomic::AtomicU64,
    /// Events kept (repeats dropped), with the path they were posted to.
    events: Mutex<Vec<(String, Value)>>,
    seen: Mutex<HashSet<String>>,
    repeats: AtomicUsize,
    batches: AtomicUsize,
    refused: AtomicUsize,
}

/// The receiver.
#[derive(Debug)]
pub struct Webhook {
    state: Arc<HookState>,
    server: Restartable,
}

fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    let ts = headers
        .get("x-xdrsync-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or("no timestamp")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(ts) > 300 {
        return Err("stale timestamp");
    }
    let sig = headers
        .get("x-xdrsync-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or("no signature")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| "bad signature")
}

async fn hook(
    State(s): State<Arc<HookState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if s.fail_next.take() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
    }
    if s.throttle_next.take() {
        let after = s.throttle_secs.load(Ordering::SeqCst).to_string();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, after)],
            "injected throttling",
        )
            .into_response();
    }
    if let Err(why) = verify(&s.secret, &headers, &body) {
        s.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, why).into_response();
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let Some(events) = v["events"].as_array() else {
        return (StatusCode::BAD_REQUEST, "no events").into_response();
    };
    if v["count"].as_u64() != Some(events.len() as u64) {
        return (StatusCode::BAD_REQUEST, "count does not match").into_response();
    }
    s.batches.fetch_add(1, Ordering::SeqCst);
    let mut seen = s.seen.lock().unwrap();
    let mut kept = s.events.lock().unwrap();
    for e in events {
        let id = crate::conformance::event_id_of(e).unwrap_or_default();
        if seen.insert(id) {
            kept.push((uri.path().to_owned(), e.clone()));
        } else {
            s.repeats.fetch_add(1, Ordering::SeqCst);
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

impl Webhook {
    /// Starts a receiver with `secret` on a free loopback port.
    pub fn start(secret: &str) -> Webhook {
        let state = Arc::new(HookState {
            secret: secret.as_bytes().to_vec(),
            fail_next: super::FailNext::default(),
            throttle_next: super::FailNext::default(),
            throttle_secs: std::sync::atomic::AtomicU64::new(0),
            events: Mutex::new(Vec::new()),
            seen: Mutex::new(HashSet::new()),
            repeats: AtomicUsize::new(0),
            batches: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        let router = axum::Router::new()
            .route("/{*path}", post(hook))
            .with_state(state.clone());
        Webhook {
            state,
            server: Restartable::new(router),
        }
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.server.addr)
    }

    /// Events kept, with the path each came to.
    pub fn events(&self) -> Vec<(String, Value)> {
        self.state.events.lock().unwrap().clone()
    }

    /// Events dropped as repeats.
    pub fn repeats(&self) -> usize {
        self.state.repeats.load(Ordering::SeqCst)
    }

    /// Requests refused for their signature or timestamp.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// The next `n` requests answer 500.
    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.set(n);
    }

    /// The next `n` requests answer 503 with `Retry-After: secs`.
    pub fn throttle_next(&self, n: usize, secs: u64) {
        self.state.throttle_secs.store(secs, Ordering::SeqCst);
        self.state.throttle_next.set(n);
    }

    /// Stops (connections dropped; events kept).
    pub fn stop(&self) {
        self.server.stop();
    }

    /// Starts again on the same port.
    pub fn restart(&self) {
        self.server.start();
    }
}
