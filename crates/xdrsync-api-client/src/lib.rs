//! Clients for the incident and alert APIs: Microsoft Graph `/v1.0/security/incidents` and
//! `/v1.0/security/alerts_v2`, the legacy Defender XDR `/api/incidents`, the Defender for
//! Endpoint `/api/alerts`, and the SIEM alert exporter ([`Source`]).
//!
//! # Paging
//! Both APIs list the most recently updated incidents first. Offset paging (`$skip`, or Graph's
//! `@odata.nextLink`, which is `$skip` underneath) loses incidents when one is updated while the
//! pages are read: it jumps to the top and everything below shifts up one place, so one incident
//! is never seen (peers.md §10.1). xdrsync pages by **time boundary** instead: after a full page it
//! asks again for `lastUpdate ≤ <oldest time on the page>` from the start, reading the few
//! incidents at exactly that time twice (the repeats are dropped) rather than skipping them by
//! count: an incident updated meanwhile leaves the window and would make a count skip an unseen
//! one. An updated incident moves above the boundary and is read by the next pass; nothing below
//! the boundary moves. Only a tie group larger than a page needs `$skip` (through that one
//! instant). If a server ever returns a page that is not newest-first, the client says so and
//! falls back to offset paging over a fixed window. Alerts page the same way (alerts_v2 clamps
//! `$top` at 1000 and MDE has no `nextLink`, so neither can be trusted to say "more"); the SIEM
//! API has no offset at all (`sinceTimeUtc`/`untilTimeUtc`/`limit`), so a tie group larger than
//! `limit` is read as one instant without a limit.
//!
//! # Failures
//! Every response goes through [`xdrsync_http::classify`]: 429 and 5xx are retried with backoff (honouring
//! `Retry-After`), a 401 refreshes the token once, other 4xx fail at once with the service's own
//! error code and message. A body that is not JSON is retried (it may have been cut off) and then
//! reported. An incident that cannot be normalized is returned as a [`Poison`] item with the
//! reason, and paging goes on.

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;
use xdrsync_auth::TokenCache;
use xdrsync_model::SafeUrl;

/// Graph's security API answers 400 for `$skip` above this (defender-api.md §2.3): listings
/// page by time boundary and use an offset only inside one instant.
pub const GRAPH_MAX_SKIP: usize = 500;

pub mod budget;
mod hunting;
mod paging;
mod types;
mod urls;
mod writes;

pub use types::*;

pub use budget::{Quota, RateBudgets};
pub use hunting::{HUNTING_MAX_ROWS, HuntResult};
pub use writes::Written;

use xdrsync_http::{RetryAction, classify};

/// The HTTP client shared by all tenants.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    tokens: Arc<TokenCache>,
    retry: RetryPolicy,
    budgets: Arc<RateBudgets>,
}

#[derive(Deserialize)]
pub(crate) struct PageBody<'a> {
    #[serde(borrow)]
    pub(crate) value: Vec<&'a RawValue>,
}

impl ApiClient {
    /// A client over `http`, getting tokens from `tokens`.
    pub fn new(http: reqwest::Client, tokens: Arc<TokenCache>, retry: RetryPolicy) -> Self {
        Self::with_budgets(http, tokens, retry, Arc::new(RateBudgets::new(true, 1.0)))
    }

    /// A client that paces its calls through `budgets` (shared with every other client of the
    /// process that uses the same apps).
    pub fn with_budgets(
        http: reqwest::Client,
        tokens: Arc<TokenCache>,
        retry: RetryPolicy,
        budgets: Arc<RateBudgets>,
    ) -> Self {
        ApiClient {
            http,
            tokens,
            retry,
            budgets,
        }
    }

    /// The budgets every call of this client waits on.
    pub fn budgets(&self) -> &Arc<RateBudgets> {
        &self.budgets
    }

    /// The shared token cache.
    pub fn tokens(&self) -> &Arc<TokenCache> {
        &self.tokens
    }

    /// GETs `url` with the tenant's token, retrying per [`classify`]; returns the body.
    pub async fn get(&self, target: &Target, url: &Url) -> Result<bytes_like::Body, ApiError> {
        self.get_with(target, url, self.retry.max_attempts).await
    }

    /// [`ApiClient::get`], but a server error (5xx other than 503) is retried at most up to
    /// `server_error_attempts` attempts: for requests that have a cheaper fallback.
    async fn get_with(
        &self,
        target: &Target,
        url: &Url,
        server_error_attempts: u32,
    ) -> Result<bytes_like::Body, ApiError> {
        let call = Call {
            url,
            method: reqwest::Method::GET,
            json: None,
            quota: Quota::of(url),
            cost: 1,
        };
        self.send(target, &call, server_error_attempts).await
    }

    /// Sends `body` with `method` (PATCH or POST) to `url`, paced on `quota`; the answer's
    /// body (empty for 204). Not retried on 5xx past the policy's attempts; a 4xx is the
    /// service's error with its code and message.
    pub async fn write(
        &self,
        target: &Target,
        method: reqwest::Method,
        url: &Url,
        body: &serde_json::Value,
        quota: Quota,
    ) -> Result<bytes_like::Body, ApiError> {
        let payload = body.to_string();
        let call = Call {
            url,
            method,
            json: Some(payload.as_bytes()),
            quota: Some(quota),
            cost: 1,
        };
        self.send(target, &call, self.retry.max_attempts).await
    }

    /// Sends `call` with the tenant's token, retrying per [`classify`]; returns the body.
    async fn send(
        &self,
        target: &Target,
        call: &Call<'_>,
        server_error_attempts: u32,
    ) -> Result<bytes_like::Body, ApiError> {
        let url = call.url;
        let safe = SafeUrl::new(url.clone());
        let started = Instant::now();
        let mut attempt = 0;
        let mut refreshed = false;
        let quota = call.quota;
        let app = target.token.client_id.as_str();
        let tenant = target.tenant.as_str();
        loop {
            attempt += 1;
            let token = self.tokens.token(&target.token).await?;
            let tickets = match quota {
                Some(q) => {
                    let waiting = Instant::now();
                    // A batch costs one call per request in it (Graph throttles each).
                    let mut tickets = Vec::with_capacity(call.cost);
                    for _ in 0..call.cost.max(1) {
                        tickets.push(self.budgets.acquire(app, tenant, q).await);
                    }
                    // Milliseconds in a counter per (tenant, stream), not a histogram: with
                    // 1,000s of tenants a histogram's buckets per label set would be most of
                    // the exposition. The distribution is kept per quota family.
                    let waited = waiting.elapsed();
                    metrics::counter!(
                        "xdrsync_rate_budget_wait_milliseconds_total",
                        "tenant" => target.name.clone(),
                        "stream" => target.stream.as_str(),
                    )
                    .increment(u64::try_from(waited.as_millis()).unwrap_or(u64::MAX));
                    metrics::histogram!("xdrsync_rate_budget_wait_seconds", "quota" => q.as_str())
                        .record(waited.as_secs_f64());
                    tickets
                }
                None => Vec::new(),
            };
            let request = match call.json {
                Some(body) => self
                    .http
                    .request(call.method.clone(), url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_vec()),
                None => self.http.request(call.method.clone(), url.clone()),
            };
            let result = request
                .bearer_auth(token.expose())
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await;
            for t in tickets {
                self.budgets.answered(t).await;
            }
            let class = match &result {
                Err(_) => "transport",
                Ok(r) => match r.status().as_u16() {
                    200..=299 => "2xx",
                    429 => "429",
                    400..=499 => "4xx",
                    500..=599 => "5xx",
                    _ => "other",
                },
            };
            metrics::counter!(
                "xdrsync_api_calls_total",
                "tenant" => target.name.clone(),
                "stream" => target.stream.as_str(),
                "class" => class,
            )
            .increment(1);
            let (action, failure) = match result {
                Err(e) => (
                    RetryAction::Transient { after: None },
                    ApiError::Transport {
                        url: safe.clone(),
                        message: xdrsync_auth::without_url(&e),
                    },
                ),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let action = classify(status, resp.headers());
                    // Graph's federated answer when a provider failed: data, but not all of it.
                    let warning = (status == 206).then(|| {
                        resp.headers()
                            .get(reqwest::header::WARNING)
                            .and_then(|v| v.to_str().ok())
                            .map(xdrsync_model::printable)
                            .unwrap_or_else(|| {
                                "206 Partial Content without a Warning header".to_owned()
                            })
                    });
                    match xdrsync_http::read_body(resp, self.retry.max_body).await {
                        Err(xdrsync_http::BodyError::TooLarge(max)) => {
                            // Not retried: the same page would be as large again.
                            return Err(ApiError::Decode {
                                url: safe.clone(),
                                message: format!(
                                    "the answer is larger than {} ([sync] max_response_mib); this page fails, the stream is read again next pass",
                                    if max >= 1 << 20 {
                                        format!("{:.1} MiB", max as f64 / f64::from(1u32 << 20))
                                    } else {
                                        format!("{} KiB", max / 1024)
                                    }
                                ),
                            });
                        }
                        Ok(body) if action == RetryAction::Success && body.is_empty() => {
                            // 204 No Content (a comment or a PATCH answered without a body).
                            return Ok(bytes_like::Body {
                                bytes: body,
                                warning,
                            });
                        }
                        Ok(body) if action == RetryAction::Success => {
                            // Only checked here (a cut-off body is retried); the caller parses it.
                            match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                                Ok(_) => {
                                    if let Some(w) = &warning {
                                        tracing::warn!(url = %safe, warning = %w, "The API answered with partial results (206).");
                                    }
                                    return Ok(bytes_like::Body {
                                        bytes: body,
                                        warning,
                                    });
                                }
                                Err(e) => (
                                    RetryAction::Transient { after: None },
                                    ApiError::Decode {
                                        url: safe.clone(),
                                        message: format!("{e} (body of {} bytes)", body.len()),
                                    },
                                ),
                            }
                        }
                        Ok(body) => (action, status_error(&safe, status, &body)),
                        Err(xdrsync_http::BodyError::Transport(e)) => (
                            RetryAction::Transient { after: None },
                            ApiError::Transport {
                                url: safe.clone(),
                                message: xdrsync_auth::without_url(&e),
                            },
                        ),
                    }
                }
            };
            match action {
                RetryAction::Unauthorized if !refreshed => {
                    // A token the API rejects may have been revoked or the clocks disagree:
                    // get a new one, once.
                    refreshed = true;
                    self.tokens.invalidate(&target.token).await;
                    tracing::info!(url = %safe, "API refused the token; refreshing it once.");
                }
                RetryAction::Transient { .. }
                    if attempt >= server_error_attempts
                        && failure
                            .status()
                            .is_some_and(|s| (500..=599).contains(&s) && s != 503) =>
                {
                    return Err(failure);
                }
                RetryAction::Transient { after: Some(after) } if after > self.retry.max_wait => {
                    // Sleeping longer than `retry_max_secs` would stall every stream behind
                    // this one: the budget pauses for it, and this request fails now (the
                    // stream is read again next pass).
                    if let Some(q) = quota {
                        self.budgets.pause(app, tenant, q, after).await;
                    }
                    return Err(ApiError::Exhausted {
                        attempts: attempt,
                        elapsed: started.elapsed(),
                        last: Box::new(ApiError::Transport {
                            url: safe.clone(),
                            message: format!(
                                "the service asked to wait {}s (Retry-After), longer than retry_max_secs ({}s): {failure}",
                                after.as_secs(),
                                self.retry.max_wait.as_secs()
                            ),
                        }),
                    });
                }
                RetryAction::Transient { after } if attempt < self.retry.max_attempts => {
                    let wait = match after {
                        Some(after) => {
                            // 429 (or 503) with `Retry-After`: the whole budget waits, not only
                            // this request, so other streams do not run into the same wall.
                            if let Some(q) = quota {
                                self.budgets.pause(app, tenant, q, after).await;
                            }
                            after
                        }
                        None => self.retry.backoff(attempt),
                    };
                    tracing::warn!(url = %safe, attempt, wait_ms = wait.as_millis() as u64, error = %failure, "Request failed; retrying.");
                    tokio::time::sleep(wait).await;
                }
                RetryAction::Transient { .. } => {
                    return Err(ApiError::Exhausted {
                        attempts: attempt,
                        elapsed: started.elapsed(),
                        last: Box::new(failure),
                    });
                }
                _ => return Err(failure),
            }
        }
    }
}

/// One request for [`ApiClient::send`]: a GET, or a POST of `json`, paced as `cost` calls of
/// `quota`.
struct Call<'a> {
    url: &'a Url,
    method: reqwest::Method,
    json: Option<&'a [u8]>,
    quota: Option<Quota>,
    cost: usize,
}

/// Reads the service's error body: XDR `{"error":{"code","message","target"}}` or Graph
/// `{"error":{"code","message","innerError":{"request-id"}}}`.
fn status_error(url: &SafeUrl, status: u16, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let field = |path: &str| v.pointer(path).unwrap_or(&Value::Null);
    // Everything the server wrote is made printable: it ends up in logs, tables and `status`.
    let text = |v: &Value| v.as_str().map(xdrsync_model::printable);
    ApiError::Status {
        url: url.clone(),
        status,
        code: text(field("/error/code")).unwrap_or_default(),
        message: text(field("/error/message")).unwrap_or_else(|| {
            xdrsync_model::printable(&String::from_utf8_lossy(
                body.get(..body.len().min(200)).unwrap_or_default(),
            ))
        }),
        request_id: text(field("/error/target"))
            .or_else(|| text(field("/error/innerError/request-id"))),
    }
}

/// A response body.
pub mod bytes_like {
    /// Bytes of a JSON response body, already checked to parse.
    #[derive(Debug, Clone)]
    pub struct Body {
        /// The bytes.
        pub bytes: Vec<u8>,
        /// The `Warning` of a 206 partial answer.
        pub warning: Option<String>,
    }
}

#[cfg(test)]
mod hostile_tests {
    #[test]
    fn a_servers_error_text_is_made_printable() {
        let url =
            xdrsync_model::SafeUrl::new("https://graph.microsoft.com/v1.0/x".parse().unwrap());
        let body = br#"{"error":{"code":"Forbidden\u001b[2J","message":"no\r\nERROR forged line\u0007","target":"id\n2"}}"#;
        let e = super::status_error(&url, 403, body);
        let shown = e.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert!(shown.contains("no\\r\\nERROR forged line"), "{shown}");
        // A body that is not JSON: its first 200 bytes, printable.
        let e = super::status_error(&url, 500, b"<html>\x1b[31mboom\n</html>");
        assert!(!e.to_string().chars().any(char::is_control), "{e}");
    }
}
