//! Fault injection per route, for testing clients against a misbehaving service.
//!
//! A [`FaultRule`] matches requests by method and path glob (`GET /api/incidents`,
//! `POST /*/oauth2/*`, `/v1.0/security/*`) and either plays a scripted `sequence` (one entry per
//! matching request, `ok` to let one through; the rule ends when the script does) or applies one
//! `fault` with a `probability` drawn from a seeded generator, so runs are reproducible.
//!
//! Faults: an error `status` in the service's own error shape (with `Retry-After` for 429/503),
//! a `throttle` in each shape Graph's 429s come in (`TooManyRequests`, `activityLimitReached`
//! with a nested `throttledRequest`, `UnknownError` with an empty message),
//! `latency`, a connection `reset` (headers, then the connection drops), a `truncate`d body, and
//! Graph's federated `partial` answer (206 with a `Warning` header).

use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::EmulatorState;
use crate::errors;
use crate::rng::Rng;

/// One injected misbehaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Let the request through (in a sequence).
    Ok,
    /// A 429 in one of the shapes Graph throttles with (the service's own shape elsewhere),
    /// with `Retry-After` when given (values above 300 s have been seen).
    Throttle {
        /// Which body.
        #[serde(default)]
        shape: ThrottleShape,
        /// `Retry-After` seconds.
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// Answer with this status and the service's error body.
    Status {
        /// HTTP status, e.g. 500, 503, 429.
        status: u16,
        /// `Retry-After` seconds (429 and 503).
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// Wait this long (emulator milliseconds), then answer normally.
    Latency {
        /// Delay in emulator milliseconds (scaled by the time scale).
        ms: u64,
    },
    /// Send the status line and headers, then drop the connection.
    Reset,
    /// Send only the first half of the real body, then drop the connection.
    Truncate,
    /// Graph's federated partial answer: 206 and `Warning: 199 - "…"`, with the real body.
    Partial,
    /// Hold the request until `POST /_emulator/faults/release` (at most ten minutes), then
    /// answer normally: a test knows a request is in flight (`Stats::requests_held`) and
    /// decides when it ends, with no timing guess.
    Hold,
    /// Move the emulator's clock this many seconds forward, then answer normally: incidents
    /// change between two pages, deterministically.
    Advance {
        /// Seconds (emulator time).
        secs: i64,
    },
}

/// The bodies Graph's 429s have been seen with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleShape {
    /// `{"error":{"code":"TooManyRequests","message":"Too many requests.",…}}`.
    #[default]
    TooManyRequests,
    /// `{"error":{"code":"activityLimitReached",…,"innerError":{"code":"throttledRequest",…}}}`.
    ActivityLimitReached,
    /// `{"error":{"code":"UnknownError","message":"",…}}`.
    UnknownError,
}

/// The longest a held request waits for its release.
const MAX_HOLD: Duration = Duration::from_secs(600);

/// A rule: which requests, and what happens to them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// `METHOD /path/glob` or `/path/glob`; `*` matches any characters.
    pub route: String,
    /// A script, one entry per matching request; the rule ends with it.
    #[serde(default)]
    pub sequence: Vec<Fault>,
    /// Without a script: the fault to apply …
    #[serde(default)]
    pub fault: Option<Fault>,
    /// … with this probability (default 1).
    #[serde(default)]
    pub probability: Option<f64>,
}

/// The active rules.
#[derive(Debug)]
pub(crate) struct Faults {
    rules: Mutex<Vec<(FaultRule, usize)>>,
    rng: Mutex<Rng>,
    /// Bumped by a release; held requests wait for a change.
    release: tokio::sync::watch::Sender<u64>,
    /// Requests held now.
    held: std::sync::atomic::AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rules: Mutex::new(Vec::new()),
            rng: Mutex::new(Rng::new(0xFA17)),
            release: tokio::sync::watch::Sender::new(0),
            held: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some((_, after)) = rest.split_once(part) else {
                return false;
            };
            rest = after;
        }
    }
    true
}

impl FaultRule {
    fn matches(&self, method: &str, path: &str) -> bool {
        match self.route.split_once(' ') {
            Some((m, p)) => m.eq_ignore_ascii_case(method) && glob(p.trim(), path),
            None => glob(self.route.trim(), path),
        }
    }
}

impl Faults {
    /// Adds a rule; returns how many are active.
    pub(crate) fn add(&self, rule: FaultRule) -> usize {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        rules.push((rule, 0));
        rules.len()
    }

    /// Lets every held request go on.
    pub(crate) fn release(&self) {
        self.release.send_modify(|g| *g += 1);
    }

    /// Requests held now.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits for the next release (or [`MAX_HOLD`]).
    async fn hold(&self) {
        let mut rx = self.release.subscribe();
        rx.borrow_and_update();
        self.held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = tokio::time::timeout(MAX_HOLD, rx.changed()).await;
        self.held.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Removes every rule.
    pub(crate) fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The active rules.
    pub(crate) fn list(&self) -> Vec<FaultRule> {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// What happens to this request: the first matching rule decides.
    fn decide(&self, method: &str, path: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let i = rules.iter().position(|(r, _)| r.matches(method, path))?;
        let (rule, used) = rules.get_mut(i)?;
        if !rule.sequence.is_empty() {
            let fault = rule.sequence.get(*used).cloned();
            *used += 1;
            if *used >= rule.sequence.len() {
                rules.remove(i);
            }
            return fault.filter(|f| *f != Fault::Ok);
        }
        let p = rule.probability.unwrap_or(1.0);
        let fault = rule.fault.clone()?;
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        rng.chance(p).then_some(fault)
    }
}

/// Which error shape a path's service uses.
fn error_for(path: &str, status: StatusCode, state: &EmulatorState) -> Response {
    let now = state.clock().now();
    let code = match status.as_u16() {
        429 => "TooManyRequests",
        500 => "InternalServerError",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        _ => "Error",
    };
    if path.contains("/oauth2/") {
        let (error, aadsts) = if status.as_u16() == 429 {
            ("temporarily_unavailable", 50196)
        } else {
            ("temporarily_unavailable", 90006)
        };
        return errors::entra(
            status,
            error,
            aadsts,
            "The service is temporarily unavailable. Please try again later.",
            now,
        );
    }
    if path.starts_with("/v1.0/") || path.starts_with("/beta/") {
        let message = if status.as_u16() == 429 {
            "Too many requests."
        } else {
            "The service is temporarily unavailable."
        };
        return errors::graph(status, code, message, now, None);
    }
    errors::xdr(
        status,
        code,
        if code == "InternalServerError" {
            ""
        } else {
            "Injected fault."
        },
    )
}

/// A body that yields `first` and then fails, so the client sees a cut-off response.
fn broken_body(first: bytes::Bytes) -> Body {
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(first),
        Err(std::io::Error::other("injected connection reset")),
    ];
    Body::from_stream(futures_util::stream::iter(chunks))
}

/// The fault-injection middleware.
pub(crate) async fn layer(
    State(state): State<EmulatorState>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_emulator/") {
        return next.run(req).await;
    }
    let Some(fault) = state.faults().decide(req.method().as_str(), &path) else {
        return next.run(req).await;
    };
    state.count_fault();
    match fault {
        Fault::Ok => next.run(req).await,
        Fault::Status {
            status,
            retry_after_secs,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = error_for(&path, status, &state);
            if let Some(v) =
                retry_after_secs.and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
            {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        Fault::Throttle {
            shape,
            retry_after_secs,
        } => {
            let status = StatusCode::TOO_MANY_REQUESTS;
            let mut resp = if path.starts_with("/v1.0/") || path.starts_with("/beta/") {
                let now = state.clock().now();
                let (code, message, inner) = match shape {
                    ThrottleShape::TooManyRequests => {
                        ("TooManyRequests", "Too many requests.", None)
                    }
                    ThrottleShape::ActivityLimitReached => (
                        "activityLimitReached",
                        "The application or user has been throttled.",
                        Some("throttledRequest"),
                    ),
                    ThrottleShape::UnknownError => ("UnknownError", "", None),
                };
                let caller_id = req
                    .headers()
                    .get("client-request-id")
                    .and_then(|v| v.to_str().ok());
                errors::graph_with_inner_code(status, code, message, inner, now, caller_id)
            } else {
                error_for(&path, status, &state)
            };
            if let Some(v) =
                retry_after_secs.and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
            {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        Fault::Latency { ms } => {
            tokio::time::sleep(state.clock().real(Duration::from_millis(ms))).await;
            next.run(req).await
        }
        Fault::Advance { secs } => {
            state.clock().advance(chrono::Duration::seconds(secs));
            next.run(req).await
        }
        Fault::Hold => {
            state.faults().hold().await;
            next.run(req).await
        }
        Fault::Reset => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            broken_body(bytes::Bytes::new()),
        )
            .into_response(),
        Fault::Truncate => {
            let resp = next.run(req).await;
            let (mut parts, body) = resp.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response();
            };
            let half = bytes.slice(..bytes.len() / 2);
            // Announce the full length, deliver half: the client must notice.
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            Response::from_parts(parts, broken_body(half))
        }
        Fault::Partial => {
            let mut resp = next.run(req).await;
            if resp.status() == StatusCode::OK {
                *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
                resp.headers_mut().insert(
                    header::WARNING,
                    HeaderValue::from_static("199 - \"Microsoft/Defender/504/10000\""),
                );
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("/api/incidents", "/api/incidents"));
        assert!(!glob("/api/incidents", "/api/incidents/1"));
        assert!(glob("/*/oauth2/*", "/contoso/oauth2/v2.0/token"));
        assert!(glob("/v1.0/security/*", "/v1.0/security/incidents"));
        assert!(!glob("/v1.0/security/*", "/api/incidents"));
    }

    #[test]
    fn sequences_play_once_then_end() {
        let f = Faults::default();
        f.add(FaultRule {
            route: "GET /api/*".into(),
            sequence: vec![
                Fault::Status {
                    status: 500,
                    retry_after_secs: None,
                },
                Fault::Ok,
                Fault::Reset,
            ],
            fault: None,
            probability: None,
        });
        assert_eq!(f.decide("GET", "/v1.0/security/incidents"), None);
        assert_eq!(f.decide("POST", "/api/incidents"), None);
        assert!(matches!(
            f.decide("GET", "/api/incidents"),
            Some(Fault::Status { status: 500, .. })
        ));
        assert_eq!(f.decide("GET", "/api/incidents"), None);
        assert_eq!(f.decide("GET", "/api/incidents"), Some(Fault::Reset));
        assert_eq!(f.decide("GET", "/api/incidents"), None);
        assert!(f.list().is_empty());
    }

    #[test]
    fn probability_is_reproducible() {
        let run = || {
            let f = Faults::default();
            f.add(FaultRule {
                route: "/x".into(),
                sequence: vec![],
                fault: Some(Fault::Reset),
                probability: Some(0.3),
            });
            (0..200).filter(|_| f.decide("GET", "/x").is_some()).count()
        };
        let n = run();
        assert_eq!(n, run());
        assert!((30..90).contains(&n), "{n}");
    }
}
