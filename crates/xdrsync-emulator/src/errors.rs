//! Error bodies exactly as each Microsoft service shapes them.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use xdrsync_model::Timestamp;

/// An Entra ID token-endpoint error: `error`, `error_description` with the AADSTS code, trace and
/// correlation ids and a timestamp, `error_codes`, `error_uri`.
pub(crate) fn entra(
    status: StatusCode,
    error: &str,
    code: u32,
    message: &str,
    now: Timestamp,
) -> Response {
    let trace = uuid::Uuid::new_v4().to_string();
    let correlation = uuid::Uuid::new_v4().to_string();
    let ts = now.as_datetime().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {ts}"
        ),
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    let mut resp = (status, axum::Json(body)).into_response();
    no_store(&mut resp);
    resp
}

/// Token responses must not be cached.
pub(crate) fn no_store(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A Defender XDR / MDE error: `{"error":{"code","message","target"}}`.
pub(crate) fn xdr(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "target": uuid::Uuid::new_v4().to_string()}});
    (status, axum::Json(body)).into_response()
}

/// A Microsoft Graph error: `{"error":{"code","message","innerError":{…}}}`.
pub(crate) fn graph(
    status: StatusCode,
    code: &str,
    message: &str,
    now: Timestamp,
    client_request_id: Option<&str>,
) -> Response {
    graph_with_inner_code(status, code, message, None, now, client_request_id)
}

/// [`graph`] with an `innerError.code` (`throttledRequest` under `activityLimitReached`).
pub(crate) fn graph_with_inner_code(
    status: StatusCode,
    code: &str,
    message: &str,
    inner_code: Option<&str>,
    now: Timestamp,
    client_request_id: Option<&str>,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = client_request_id.map_or_else(|| request_id.clone(), str::to_owned);
    let mut inner = json!({
        "date": now.as_datetime().format("%Y-%m-%dT%H:%M:%S").to_string(),
        "request-id": request_id,
        "client-request-id": client_request_id,
    });
    if let (Some(c), Some(o)) = (inner_code, inner.as_object_mut()) {
        o.insert("code".into(), json!(c));
    }
    let body = json!({"error": {
        "code": code,
        "message": message,
        "innerError": inner,
    }});
    let mut resp = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}
