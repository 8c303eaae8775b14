//! An HTTP Event Collector that checks Splunk's documented protocol (Splunk Enterprise
//! "Format events for HTTP Event Collector", "HTTP Event Collector REST API endpoints",
//! "Troubleshoot HTTP Event Collector": the status and `code` table) and answers with its
//! error codes:
//!
//! | HTTP | code | text | when |
//! |---|---|---|---|
//! | 200 | 0 | Success | accepted (with `ackId` when the token has acknowledgement on) |
//! | 401 | 2 | Token is required | no `Authorization` |
//! | 401 | 3 | Invalid authorization | not `Splunk <token>` |
//! | 403 | 4 | Invalid token | wrong token |
//! | 400 | 5 | No data | empty body |
//! | 400 | 6 | Invalid data format | not concatenated JSON objects, a bad `time` |
//! | 400 | 7 | Incorrect index | an index the token may not write |
//! | 400 | 10 | Data channel is missing | ack on, no `X-Splunk-Request-Channel` |
//! | 400 | 11 | Invalid data channel | a channel that is not a GUID |
//! | 400 | 12 | Event field is required | an object without `event` |
//! | 400 | 13 | Event field cannot be blank | `"event": ""` or `null` |
//! | 400 | 14 | ACK is disabled | `/ack` on a token without it |
//! | 503 | 9 | Server is busy | injected ([`Hec::fail_next`]) |
//!
//! A batch with any bad event is refused whole. Accepted events are "indexed" at once; an
//! ack reads `true` once `ack_delay` has passed since the batch.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::Restartable;

/// What the receiver saw of one accepted request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Whether the body was gzip-compressed.
    pub gzip: bool,
    /// The request channel header, if any.
    pub channel: Option<String>,
    /// Events in it.
    pub events: usize,
}

#[derive(Debug)]
struct HecState {
    token: String,
    ack: bool,
    indexes: Option<Vec<String>>,
    ack_delay: Duration,
    fail_next: super::FailNext,
    next_ack: AtomicU64,
    events: Mutex<Vec<Value>>,
    requests: Mutex<Vec<Request>>,
    /// channel → ackId → when it was accepted.
    pending: Mutex<HashMap<String, HashMap<u64, Instant>>>,
    refusals: Mutex<Vec<(u16, i64)>>,
}

/// The HEC receiver.
#[derive(Debug)]
pub struct Hec {
    state: Arc<HecState>,
    server: Restartable,
}

/// How the receiver is set up.
#[derive(Debug, Clone)]
pub struct HecOptions {
    /// The token it accepts.
    pub token: String,
    /// Whether indexer acknowledgement is on for the token.
    pub ack: bool,
    /// The indexes the token may write (`None`: any).
    pub indexes: Option<Vec<String>>,
    /// How long after acceptance an ack reads `true`.
    pub ack_delay: Duration,
}

impl Default for HecOptions {
    fn default() -> Self {
        HecOptions {
            token: "11111111-2222-3333-4444-555555555555".into(),
            ack: false,
            indexes: None,
            ack_delay: Duration::from_millis(100),
        }
    }
}

fn answer(status: u16, code: i64, text: &str) -> Response {
    (
        StatusCode::from_u16(status).expect("a valid status"),
        axum::Json(json!({ "text": text, "code": code })),
    )
        .into_response()
}

impl HecState {
    fn refuse(&self, status: u16, code: i64, text: &str) -> Response {
        self.refusals.lock().unwrap().push((status, code));
        answer(status, code, text)
    }

    fn check_auth(&self, headers: &HeaderMap) -> Option<Response> {
        let Some(auth) = headers.get("authorization") else {
            return Some(self.refuse(401, 2, "Token is required"));
        };
        let Some(token) = auth.to_str().ok().and_then(|a| a.strip_prefix("Splunk ")) else {
            return Some(self.refuse(401, 3, "Invalid authorization"));
        };
        if token != self.token {
            return Some(self.refuse(403, 4, "Invalid token"));
        }
        None
    }

    fn channel(
        &self,
        headers: &HeaderMap,
        query: &HashMap<String, String>,
    ) -> Result<Option<String>, Response> {
        let ch = headers
            .get("x-splunk-request-channel")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| query.get("channel").cloned());
        match ch {
            None if self.ack => Err(self.refuse(400, 10, "Data channel is missing")),
            Some(c) if uuid::Uuid::parse_str(&c).is_err() => {
                Err(self.refuse(400, 11, "Invalid data channel"))
            }
            c => Ok(c),
        }
    }
}

async fn event(
    State(s): State<Arc<HecState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if s.fail_next.take() {
        return s.refuse(503, 9, "Server is busy");
    }
    if let Some(r) = s.check_auth(&headers) {
        return r;
    }
    let channel = match s.channel(&headers, &query) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let data = if gzip {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            return s.refuse(400, 6, "Invalid data format");
        }
        out
    } else {
        body.to_vec()
    };
    if data.iter().all(|b| b.is_ascii_whitespace()) {
        return s.refuse(400, 5, "No data");
    }
    // Concatenated JSON objects (whitespace between them allowed), not an array.
    let mut events = Vec::new();
    for item in serde_json::Deserializer::from_slice(&data).into_iter::<Value>() {
        let Ok(v) = item else {
            return s.refuse(400, 6, "Invalid data format");
        };
        let Some(obj) = v.as_object() else {
            return s.refuse(400, 6, "Invalid data format");
        };
        match obj.get("event") {
            None => return s.refuse(400, 12, "Event field is required"),
            Some(Value::Null) => return s.refuse(400, 13, "Event field cannot be blank"),
            Some(Value::String(e)) if e.is_empty() => {
                return s.refuse(400, 13, "Event field cannot be blank");
            }
            _ => {}
        }
        if obj.get("time").is_some_and(|t| !t.is_number()) {
            return s.refuse(400, 6, "Invalid data format");
        }
        if let (Some(allowed), Some(index)) = (&s.indexes, obj.get("index").and_then(Value::as_str))
            && !allowed.iter().any(|a| a == index)
        {
            return s.refuse(400, 7, "Incorrect index");
        }
        events.push(v);
    }
    s.requests.lock().unwrap().push(Request {
        gzip,
        channel: channel.clone(),
        events: events.len(),
    });
    s.events.lock().unwrap().extend(events);
    if s.ack {
        let id = s.next_ack.fetch_add(1, Ordering::SeqCst);
        s.pending
            .lock()
            .unwrap()
            .entry(channel.unwrap_or_default())
            .or_default()
            .insert(id, Instant::now());
        axum::Json(json!({ "text": "Success", "code": 0, "ackId": id })).into_response()
    } else {
        axum::Json(json!({ "text": "Success", "code": 0 })).into_response()
    }
}

async fn ack(
    State(s): State<Arc<HecState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = s.check_auth(&headers) {
        return r;
    }
    if !s.ack {
        return s.refuse(400, 14, "ACK is disabled");
    }
    let channel = match s.channel(&headers, &query) {
        Ok(c) => c.unwrap_or_default(),
        Err(r) => return r,
    };
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return s.refuse(400, 6, "Invalid data format");
    };
    let Some(ids) = req["acks"].as_array() else {
        return s.refuse(400, 6, "Invalid data format");
    };
    let pending = s.pending.lock().unwrap();
    let mine = pending.get(&channel);
    let mut out = serde_json::Map::new();
    for id in ids.iter().filter_map(Value::as_u64) {
        let done = mine
            .and_then(|m| m.get(&id))
            .is_some_and(|t| t.elapsed() >= s.ack_delay);
        out.insert(id.to_string(), Value::Bool(done));
    }
    axum::Json(json!({ "acks": out })).into_response()
}

async fn health() -> Response {
    answer(200, 17, "HEC is healthy")
}

impl Hec {
    /// Starts a receiver on a free loopback port.
    pub fn start(options: HecOptions) -> Hec {
        let state = Arc::new(HecState {
            token: options.token,
            ack: options.ack,
            indexes: options.indexes,
            ack_delay: options.ack_delay,
            fail_next: super::FailNext::default(),
            next_ack: AtomicU64::new(0),
            events: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            pending: Mutex::new(HashMap::new()),
            refusals: Mutex::new(Vec::new()),
        });
        let router = axum::Router::new()
            .route("/services/collector/event", post(event))
            .route("/services/collector/ack", post(ack))
            .route("/services/collector/health", get(health))
            .with_state(state.clone());
        Hec {
            state,
            server: Restartable::new(router),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// The token it accepts.
    pub fn token(&self) -> &str {
        &self.state.token
    }

    /// Every event object indexed, in order.
    pub fn events(&self) -> Vec<Value> {
        self.state.events.lock().unwrap().clone()
    }

    /// Every accepted request.
    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Every refusal `(status, code)`.
    pub fn refusals(&self) -> Vec<(u16, i64)> {
        self.state.refusals.lock().unwrap().clone()
    }

    /// The next `n` event requests answer 503, code 9.
    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.set(n);
    }

    /// Stops (connections dropped; what was indexed is kept).
    pub fn stop(&self) {
        self.server.stop();
    }

    /// Starts again on the same port.
    pub fn restart(&self) {
        self.server.start();
    }
}
