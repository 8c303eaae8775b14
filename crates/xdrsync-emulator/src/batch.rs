//! Graph JSON batching: `POST /v1.0/$batch` with up to 20 requests, each answered on its own.
//!
//! Why the emulator has it: a connector that reads incidents one by one (the `$expand=alerts`
//! fallback) saves 19 of every 20 round trips by batching, and must then cope with what batching
//! does in the real service — every sub-request is authorized, throttled and failed **on its
//! own** (a batch answers 200 with a 429 inside for one request and 200s for the others), and the
//! answers do not come back in request order. Each sub-request is therefore dispatched through
//! the emulator's own router, with the batch's `Authorization`, so it meets the same routes,
//! quotas and injected faults as the same request sent alone.
//!
//! Refused as a whole with Graph's 400 (defender-api.md, Graph JSON batching): a payload that is
//! not `{"requests":[…]}`, more than 20 requests, an id used twice, a `dependsOn` naming no
//! request of the batch, a request with a body but no `Content-Type`. A request whose
//! `dependsOn` failed answers 424 Failed Dependency. Independent requests run concurrently (as in
//! the service); a batch with `dependsOn` runs in listed order. A nested `$batch`, or an absolute URL on
//! another host or version, is a 400 for that request (an absolute URL on this service's
//! `/v1.0`, as msgraph-sdk for Python sends them, is taken).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use crate::EmulatorState;
use crate::api::{GraphErrors, odata_json};

/// Requests per batch (Graph's documented limit).
pub(crate) const MAX_BATCH: usize = 20;

/// Sub-response headers carried into the batch answer (hop-by-hop and length headers are not).
const KEPT_HEADERS: [&str; 6] = [
    "content-type",
    "retry-after",
    "location",
    "odata-version",
    "cache-control",
    "warning",
];

struct SubRequest {
    id: String,
    method: Method,
    url: String,
    headers: Map<String, Value>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

/// `POST /v1.0/$batch`.
pub(crate) async fn graph_batch(
    State(state): State<EmulatorState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let g = GraphErrors::new(&state, &headers);
    let Some(auth) = headers.get(header::AUTHORIZATION).cloned() else {
        return g.answer(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
        );
    };
    let requests = match parse(&body) {
        Ok(r) => r,
        Err(m) => return g.answer(StatusCode::BAD_REQUEST, "BadRequest", &m),
    };
    state.count_batch();
    // One router for the batch's requests (each request takes a clone).
    let app = crate::router(state.clone());
    let mut responses: Vec<Value> = Vec::with_capacity(requests.len());
    if requests.iter().all(|r| r.depends_on.is_empty()) {
        // Independent requests run side by side, as the service runs them.
        let runs = requests
            .iter()
            .map(|r| run(&state, &app, &auth, &headers, r));
        responses.extend(
            futures_util::future::join_all(runs)
                .await
                .into_iter()
                .map(|(_, answer)| answer),
        );
    } else {
        // `dependsOn` orders requests (the whole batch in listed order); one whose dependency
        // failed is not run.
        let mut statuses: std::collections::HashMap<String, u16> = Default::default();
        for r in &requests {
            let failed = r
                .depends_on
                .iter()
                .find(|d| !statuses.get(*d).is_some_and(|s| (200..300).contains(s)));
            let (status, answer) = match failed {
                Some(d) => failed_dependency(&g, &r.id, d),
                None => run(&state, &app, &auth, &headers, r).await,
            };
            statuses.insert(r.id.clone(), status);
            responses.push(answer);
        }
    }
    // Graph documents that answers may come in any order: the emulator rotates them by one so a
    // client that matches answers to requests by position fails its tests here, not in production.
    if responses.len() > 1 {
        responses.rotate_left(1);
    }
    odata_json(json!({ "responses": responses }))
}

fn failed_dependency(g: &GraphErrors, id: &str, dependency: &str) -> (u16, Value) {
    let body = json!({"error": {
        "code": "FailedDependency",
        "message": format!("Request {id} depends on request {dependency}, which failed."),
        "innerError": {"date": g.now.as_datetime().format("%Y-%m-%dT%H:%M:%S").to_string()},
    }});
    (
        424,
        json!({"id": id, "status": 424, "headers": {"Content-Type": "application/json"}, "body": body}),
    )
}

/// Reads and checks the batch payload; `Err` is the 400 message for the whole batch.
fn parse(body: &[u8]) -> Result<Vec<SubRequest>, String> {
    const INVALID: &str = "Invalid batch payload format.";
    let v: Value = serde_json::from_slice(body).map_err(|_| INVALID.to_owned())?;
    let list = v
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| INVALID.to_owned())?;
    if list.len() > MAX_BATCH {
        return Err(format!(
            "Number of requests exceeds the limit of {MAX_BATCH}."
        ));
    }
    let mut out: Vec<SubRequest> = Vec::with_capacity(list.len());
    for item in list {
        let text = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_owned);
        let id = text("id").ok_or_else(|| INVALID.to_owned())?;
        if out.iter().any(|r| r.id == id) {
            return Err(format!("Request Id {id} is duplicated."));
        }
        let method = text("method")
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .ok_or_else(|| format!("Request {id} has no valid method."))?;
        let url = text("url").ok_or_else(|| format!("Request {id} has no url."))?;
        let headers = match item.get("headers") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(INVALID.to_owned()),
        };
        let body = item.get("body").filter(|b| !b.is_null()).cloned();
        if body.is_some()
            && !headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("content-type"))
        {
            return Err(format!(
                "Write request id : {id} does not contain Content-Type header or body."
            ));
        }
        let depends_on = match item.get("dependsOn") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|d| {
                    d.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| INVALID.to_owned())
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(INVALID.to_owned()),
        };
        out.push(SubRequest {
            id,
            method,
            url,
            headers,
            body,
            depends_on,
        });
    }
    for r in &out {
        if let Some(d) = r
            .depends_on
            .iter()
            .find(|d| !out.iter().any(|o| &o.id == *d))
        {
            return Err(format!(
                "Request {} depends on request {d}, which is not in the batch.",
                r.id
            ));
        }
    }
    Ok(out)
}

/// Runs one sub-request through the router; its status and its entry of `responses`.
async fn run(
    state: &EmulatorState,
    app: &axum::Router,
    auth: &HeaderValue,
    outer: &HeaderMap,
    r: &SubRequest,
) -> (u16, Value) {
    let bad = |message: &str| {
        let body = json!({"error": {"code": "BadRequest", "message": message}});
        (
            400,
            json!({"id": r.id, "status": 400, "headers": {"Content-Type": "application/json"}, "body": body}),
        )
    };
    let relative = if r.url.contains("://") {
        match absolute_on_this_service(state, &r.url) {
            Some(rel) => rel,
            None => {
                return bad(
                    "Batch request URLs must be relative to the version (e.g. /security/incidents) or point at this service's /v1.0.",
                );
            }
        }
    } else {
        r.url.trim_start_matches('/').to_owned()
    };
    if relative.starts_with("$batch") {
        return bad("A batch request cannot contain another batch.");
    }
    let mut builder = Request::builder()
        .method(r.method.clone())
        .uri(format!("/v1.0/{relative}"))
        .header(header::AUTHORIZATION, auth.clone());
    if let Some(crid) = outer.get("client-request-id") {
        builder = builder.header("client-request-id", crid.clone());
    }
    for (k, v) in &r.headers {
        if let Some(v) = v.as_str()
            && let Ok(v) = HeaderValue::from_str(v)
            && !k.eq_ignore_ascii_case("authorization")
        {
            builder = builder.header(k.as_str(), v);
        }
    }
    let body = match &r.body {
        None => Body::empty(),
        Some(Value::String(s)) => Body::from(s.clone()),
        Some(v) => Body::from(v.to_string()),
    };
    let Ok(request) = builder.body(body) else {
        return bad("The request's url or headers are not valid HTTP.");
    };
    let Ok(resp) = app.clone().oneshot(request).await;
    let status = resp.status().as_u16();
    let mut headers = Map::new();
    for (name, value) in resp.headers() {
        if KEPT_HEADERS.contains(&name.as_str())
            && let Ok(v) = value.to_str()
        {
            headers.insert(display_name(name.as_str()), json!(v));
        }
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let mut entry = json!({"id": r.id, "status": status, "headers": headers});
    if !bytes.is_empty()
        && let Some(o) = entry.as_object_mut()
    {
        let body = serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        o.insert("body".into(), body);
    }
    (status, entry)
}

/// The part after `/v1.0/` of an absolute URL on this service (msgraph-sdk for Python sends
/// its batch requests' full URLs, and the service takes them when they point at itself and the
/// batch's version); `None` for another host or version.
fn absolute_on_this_service(state: &EmulatorState, raw: &str) -> Option<String> {
    let u = url::Url::parse(raw).ok()?;
    let base = url::Url::parse(&state.base_url()).ok()?;
    let graph_hosts = [
        "graph.microsoft.com",
        "graph.microsoft.us",
        "dod-graph.microsoft.us",
    ];
    let ours = (u.scheme(), u.host_str(), u.port_or_known_default())
        == (base.scheme(), base.host_str(), base.port_or_known_default())
        || u.host_str().is_some_and(|h| graph_hosts.contains(&h));
    let rest = u.path().strip_prefix("/v1.0/")?;
    if !ours {
        return None;
    }
    Some(match u.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    })
}

/// `Retry-After`, `Content-Type`, …: the casing Graph's batch answers use.
fn display_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}
