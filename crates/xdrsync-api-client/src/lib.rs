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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;
use xdrsync_auth::{AuthError, TokenCache, TokenRequest};
use xdrsync_model::sparse::Fields;
use xdrsync_model::{
    ApiKind, GRAPH_ALERT_FIELDS, GRAPH_INCIDENT_FIELDS, MDE_ALERT_FIELDS, NormalizeError, Record,
    SafeUrl, StreamKind, TenantId, Timestamp, XDR_INCIDENT_FIELDS, normalize_graph_alert,
    normalize_graph_incident, normalize_mde_alert, normalize_siem_detection,
    normalize_xdr_incident,
};

pub mod budget;

pub use budget::{Quota, RateBudgets};

use xdrsync_http::{RetryAction, classify};

/// One tenant's API access: where to call and how to get a token.
#[derive(Clone, Debug)]
pub struct Target {
    /// The tenant.
    pub tenant: TenantId,
    /// The tenant's configured name: the `tenant` label of its metrics.
    pub name: String,
    /// The stream this target reads: the `stream` label of its metrics.
    pub stream: StreamKind,
    /// Which API.
    pub api: ApiKind,
    /// The API's base URL (`https://graph.microsoft.com`, `https://api.security.microsoft.com`).
    pub base_url: Url,
    /// How to get a token for it.
    pub token: TokenRequest,
    /// `$top` per page.
    pub page_size: u32,
}

/// An API call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The service answered with an error status.
    #[error("{url} answered {status}{}: {message}{}", if code.is_empty() { String::new() } else { format!(" {code}") }, request_id.as_ref().map(|r| format!(" [request id {r}]")).unwrap_or_default())]
    Status {
        /// The request (redacted).
        url: SafeUrl,
        /// HTTP status.
        status: u16,
        /// The service's error code (`Forbidden`, `ODataError`, …).
        code: String,
        /// The service's message.
        message: String,
        /// `target` (XDR) or `request-id` (Graph), for Microsoft support.
        request_id: Option<String>,
    },
    /// The service could not be reached.
    #[error("cannot reach {url}: {message}")]
    Transport {
        /// The request (redacted).
        url: SafeUrl,
        /// What failed.
        message: String,
    },
    /// The body is not the expected JSON.
    #[error("unreadable response from {url}: {message}")]
    Decode {
        /// The request (redacted).
        url: SafeUrl,
        /// What is wrong.
        message: String,
    },
    /// The receiver of a paged listing went away (its caller failed), so the listing stopped.
    #[error("the listing was abandoned by its receiver")]
    Abandoned,
    /// Retries ran out.
    #[error("request failed after {attempts} attempts in {elapsed:.1?}: {last}")]
    Exhausted {
        /// How many attempts were made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last failure.
        last: Box<ApiError>,
    },
}

impl ApiError {
    /// The HTTP status behind this error, if the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            ApiError::Exhausted { last, .. } => last.status(),
            ApiError::Auth(AuthError::Entra { status, .. }) => Some(*status),
            _ => None,
        }
    }
}

/// An item the client could not read; it is reported, and paging continues.
#[derive(Debug, Clone)]
pub struct Poison {
    /// The item's id, if it could be found.
    pub item_id: Option<String>,
    /// Why it was rejected.
    pub reason: String,
    /// The raw JSON as received.
    pub raw: String,
}

/// One item as read: normalized, with its raw JSON exactly as the API sent it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The normalized form.
    pub record: Record,
    /// The API's JSON, byte for byte.
    pub raw: String,
}

/// The new items of one page, as [`ApiClient::list_pages`] hands them over.
#[derive(Debug, Default)]
pub struct Page {
    /// Items not handed over before, in the order they arrived.
    pub records: Vec<Fetched>,
    /// Items that could not be read (each once).
    pub poison: Vec<Poison>,
}

/// How a paged listing went ([`ApiClient::list_pages`]).
#[derive(Debug, Default)]
pub struct Paging {
    /// Pages requested.
    pub pages: u32,
    /// Whether the server's order forced offset paging.
    pub fell_back_to_offset: bool,
    /// `Warning` headers of pages the API answered only partly (206): the listing may be
    /// incomplete for the providers named there.
    pub partial: Vec<String>,
    /// Pages whose `$expand=alerts` failed: read without it, each incident then read on its own
    /// with its alerts.
    pub expand_fallbacks: u32,
}

/// What a list call read.
#[derive(Debug, Default)]
pub struct Listing {
    /// Items in the order they arrived.
    pub records: Vec<Fetched>,
    /// Items that could not be read.
    pub poison: Vec<Poison>,
    /// How the paging went.
    pub paging: Paging,
}

/// What a list call reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Incidents with their alerts: Graph `/v1.0/security/incidents?$expand=alerts` or the
    /// legacy `/api/incidents`, by [`Target::api`].
    Incidents,
    /// Alerts: Graph `/v1.0/security/alerts_v2`, or for a legacy target the Defender for
    /// Endpoint `/api/alerts?$expand=evidence`.
    Alerts,
    /// SIEM API detections (`/api/alerts` on the target's alert-exporter host), with the SIEM
    /// API's own filters.
    Detections(SiemFilter),
}

/// The SIEM API's filters (the SIEM seed's `machinegroups`, `DeviceCreatedMachineTags`,
/// `CloudCreatedMachineTags`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiemFilter {
    /// Only these machine groups (all when empty).
    pub machine_groups: Vec<String>,
    /// Only devices with this registry tag.
    pub device_tag: Option<String>,
    /// Only devices with this portal tag.
    pub cloud_tag: Option<String>,
}

/// Retry settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Most attempts per request.
    pub max_attempts: u32,
    /// First wait; it doubles per attempt.
    pub base: Duration,
    /// Longest single backoff wait (a longer `Retry-After` fails the request instead).
    pub max_wait: Duration,
    /// The largest response body read; a larger page fails (`[sync] max_response_mib`).
    pub max_body: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(500),
            max_wait: Duration::from_secs(120),
            max_body: xdrsync_http::DEFAULT_MAX_BODY,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`: exponential with "equal jitter" (half fixed,
    /// half random), so many tenants failing at once do not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        xdrsync_http::jittered_backoff(self.base, self.max_wait, attempt)
    }
}

/// The HTTP client shared by all tenants.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    tokens: Arc<TokenCache>,
    retry: RetryPolicy,
    budgets: Arc<RateBudgets>,
}

#[derive(Deserialize)]
struct PageBody<'a> {
    #[serde(borrow)]
    value: Vec<&'a RawValue>,
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
        let safe = SafeUrl::new(url.clone());
        let started = Instant::now();
        let mut attempt = 0;
        let mut refreshed = false;
        let quota = Quota::of(url);
        let app = target.token.client_id.as_str();
        let tenant = target.tenant.as_str();
        loop {
            attempt += 1;
            let token = self.tokens.token(&target.token).await?;
            let ticket = match quota {
                Some(q) => {
                    let waiting = Instant::now();
                    let ticket = self.budgets.acquire(app, tenant, q).await;
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
                    Some(ticket)
                }
                None => None,
            };
            let result = self
                .http
                .get(url.clone())
                .bearer_auth(token.expose())
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await;
            if let Some(t) = ticket {
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

    /// Lists every incident with a last-update time `≥ since` (and `≤ until`, if given).
    pub async fn list_incidents(
        &self,
        target: &Target,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<Listing, ApiError> {
        self.list(target, &Source::Incidents, since, until).await
    }

    /// Lists every item of `source` with a last-update time `≥ since` (and `≤ until`).
    pub async fn list(
        &self,
        target: &Target,
        source: &Source,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<Listing, ApiError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Page>(2);
        let mut records = Vec::new();
        let mut poison = Vec::new();
        let collect = async {
            while let Some(page) = rx.recv().await {
                records.extend(page.records);
                poison.extend(page.poison);
            }
        };
        let (paging, ()) = tokio::join!(self.list_pages(target, source, since, until, tx), collect);
        Ok(Listing {
            records,
            poison,
            paging: paging?,
        })
    }

    /// [`ApiClient::list`], sending each page's new items to `pages` as soon as it is read, so
    /// a caller can store a page while the next one is fetched and never holds the whole
    /// listing in memory (the channel's capacity is how far the listing may run ahead). Items
    /// repeated across pages (boundary re-reads) are sent once. If the receiver is dropped the
    /// listing stops with [`ApiError::Abandoned`].
    pub async fn list_pages(
        &self,
        target: &Target,
        source: &Source,
        since: Timestamp,
        until: Option<Timestamp>,
        pages: tokio::sync::mpsc::Sender<Page>,
    ) -> Result<Paging, ApiError> {
        let mut listing = Paging::default();
        let n = target.page_size.max(1) as usize;
        let mut page = PageRequest {
            since,
            upper: until,
            skip: 0,
            limit: true,
        };
        let siem = matches!(source, Source::Detections(_));
        // Boundary pages overlap by the items at the boundary time; these drop the repeats.
        let mut seen = std::collections::HashSet::new();
        let mut seen_poison = std::collections::HashSet::new();
        loop {
            let mut alert_failures: HashMap<String, String> = HashMap::new();
            let mut listed_times: HashMap<String, Timestamp> = HashMap::new();
            let url = list_url(target, source, &page, true)?;
            let body = if target.api == ApiKind::Graph && *source == Source::Incidents {
                match self.get_with(target, &url, 2).await {
                    Err(e) if e.status().is_some_and(|s| (500..=599).contains(&s)) => {
                        // Big incidents make `$expand=alerts` fail for good (peers.md §10.2,
                        // Elastic #18144): read the page without it and each incident on its
                        // own with its alerts, so the cursor keeps moving.
                        tracing::warn!(tenant = %target.tenant, error = %e, "The incident list with $expand=alerts failed; reading this page without it and each incident on its own.");
                        listing.expand_fallbacks += 1;
                        let plain = list_url(target, source, &page, false)?;
                        let body = self.get(target, &plain).await?;
                        listing.pages += 1;
                        let (body, failed, times) = self.attach_alerts(target, body).await?;
                        alert_failures = failed;
                        listed_times = times;
                        body
                    }
                    other => other?,
                }
            } else {
                self.get(target, &url).await?
            };
            listing.pages += 1;
            if let Some(w) = body.warning.clone() {
                listing.partial.push(w);
            }
            let not_a_page = |e: serde_json::Error| ApiError::Decode {
                url: SafeUrl::new(url.clone()),
                message: format!(
                    "not {}: {e}",
                    if siem {
                        "a JSON array"
                    } else {
                        "an OData collection"
                    }
                ),
            };
            let items: Vec<&RawValue> = if siem {
                serde_json::from_slice(&body.bytes).map_err(not_a_page)?
            } else {
                serde_json::from_slice::<PageBody<'_>>(&body.bytes)
                    .map_err(not_a_page)?
                    .value
            };
            let count = items.len();
            let mut times = Vec::with_capacity(count);
            let mut page_items = Page::default();
            for raw in items {
                match read_item(target, source, raw) {
                    Ok(f) => {
                        let id = f.record.item_id();
                        // Paging bounds on the time the list gave, even for an incident that
                        // was replaced by its single read or could not be completed.
                        times.push(
                            listed_times
                                .get(&id)
                                .copied()
                                .unwrap_or(f.record.last_update()),
                        );
                        if let Some(reason) = alert_failures.get(&id) {
                            let p = Poison {
                                item_id: Some(id),
                                reason: reason.clone(),
                                raw: f.raw,
                            };
                            if seen_poison.insert(p.raw.clone()) {
                                page_items.poison.push(p);
                            }
                        } else if seen.insert((id, f.record.last_update())) {
                            page_items.records.push(f);
                        }
                    }
                    Err(p) => {
                        if seen_poison.insert(p.raw.clone()) {
                            page_items.poison.push(p);
                        }
                    }
                }
            }
            if (!page_items.records.is_empty() || !page_items.poison.is_empty())
                && pages.send(page_items).await.is_err()
            {
                return Err(ApiError::Abandoned);
            }
            if !page.limit {
                // The SIEM API's one instant, read whole: go on below it.
                page.limit = true;
                page.since = since;
                page.upper = Some(
                    page.upper
                        .unwrap_or(since)
                        .sub(chrono::Duration::nanoseconds(100)),
                );
                if page.upper.is_some_and(|u| u < since) {
                    break;
                }
                continue;
            }
            if count < n {
                break;
            }
            let descending = times.iter().zip(times.iter().skip(1)).all(|(a, b)| a >= b);
            let Some(&oldest) = times.last() else {
                if siem {
                    return Err(ApiError::Decode {
                        url: SafeUrl::new(url.clone()),
                        message: format!(
                            "a full page of {count} detections none of which can be read; the SIEM API cannot page past them"
                        ),
                    });
                }
                // A full page of unreadable items: step past it by offset.
                page.skip += count;
                continue;
            };
            if !descending || listing.fell_back_to_offset {
                if siem {
                    return Err(ApiError::Decode {
                        url: SafeUrl::new(url.clone()),
                        message: "the SIEM API did not list detections newest first, and it has no offset to page with".into(),
                    });
                }
                if !listing.fell_back_to_offset {
                    tracing::warn!(tenant = %target.tenant, api = %target.api, "The API did not list items newest first; falling back to offset paging over a fixed window.");
                    listing.fell_back_to_offset = true;
                    // Fix the window's upper end so new updates cannot shift the offsets.
                    page.upper = Some(
                        page.upper
                            .unwrap_or_else(|| times.iter().copied().max().unwrap_or(oldest)),
                    );
                }
                page.skip += count;
                continue;
            }
            let readable_at_oldest = times.iter().filter(|t| **t == oldest).count();
            if readable_at_oldest == times.len() {
                // The whole page is one instant (a tie group larger than a page): only an
                // offset can step through it. Unreadable items are counted as part of it.
                if siem {
                    // The SIEM API has no offset: read that instant alone, without a limit.
                    page = PageRequest {
                        since: oldest,
                        upper: Some(oldest),
                        skip: 0,
                        limit: false,
                    };
                } else if page.upper == Some(oldest) {
                    page.skip += count;
                } else {
                    page.upper = Some(oldest);
                    page.skip = count;
                }
            } else {
                // Move the boundary down to the oldest time and read the items at exactly
                // that time again rather than skip them: if one of them is updated meanwhile it
                // leaves the window, and a skip count would then jump over an unseen item.
                page.upper = Some(oldest);
                page.skip = 0;
            }
        }
        Ok(listing)
    }
}

/// One page request: the time window, the offset inside it, and whether `$top`/`limit` applies.
#[derive(Debug, Clone, Copy)]
struct PageRequest {
    since: Timestamp,
    upper: Option<Timestamp>,
    skip: usize,
    limit: bool,
}

impl ApiClient {
    /// Replaces each incident of a Graph page read without `$expand` by the same incident
    /// read on its own with `GET /security/incidents/{id}?$expand=alerts` (Microsoft reports
    /// the 500 for `$expand` combined with a list `$filter`; the single read works, and
    /// alerts_v2 cannot be filtered by incident). If the incident changed in between, the
    /// newer version is what is stored: it is as valid a version as the listed one. An
    /// incident whose single read fails too is returned in the map with the reason, to be
    /// recorded as poison while the cursor moves on.
    async fn attach_alerts(
        &self,
        target: &Target,
        body: bytes_like::Body,
    ) -> Result<ExpandedPage, ApiError> {
        let mut failed = HashMap::new();
        let mut listed_times = HashMap::new();
        let mut page: Value =
            serde_json::from_slice(&body.bytes).map_err(|e| ApiError::Decode {
                url: SafeUrl::new(target.base_url.clone()),
                message: format!("not an OData collection: {e}"),
            })?;
        let Some(items) = page.get_mut("value").and_then(Value::as_array_mut) else {
            return Ok((body, failed, listed_times));
        };
        for item in items.iter_mut() {
            let Some(id) = item.get("id").and_then(Value::as_str).map(str::to_owned) else {
                continue;
            };
            let path = format!("v1.0/security/incidents/{}", encode(&id));
            let url = api_url(target, &path, "$expand=alerts")?;
            match self.get(target, &url).await {
                Ok(got) => match serde_json::from_slice::<Value>(&got.bytes) {
                    Ok(mut one) if one.get("id").is_some() => {
                        if let Some(o) = one.as_object_mut() {
                            o.remove("@odata.context");
                        }
                        // Paging bounds on the time the list gave, not a newer one.
                        let listed = item
                            .get("lastUpdateDateTime")
                            .and_then(Value::as_str)
                            .and_then(|t| t.parse::<Timestamp>().ok());
                        if let Some(t) = listed {
                            listed_times.insert(id.clone(), t);
                        }
                        *item = one;
                    }
                    _ => {
                        failed.insert(
                            id,
                            "the incident read with its alerts is not an incident".into(),
                        );
                    }
                },
                Err(e @ (ApiError::Auth(_) | ApiError::Transport { .. })) => return Err(e),
                Err(e) if e.status().is_some_and(|s| s == 401 || s == 403) => return Err(e),
                Err(e) => {
                    failed.insert(id, format!("its alerts cannot be read: {e}"));
                }
            }
        }
        Ok((
            bytes_like::Body {
                bytes: serde_json::to_vec(&page).unwrap_or_default(),
                warning: body.warning,
            },
            failed,
            listed_times,
        ))
    }
}

/// A page whose incidents were read one by one: the body, the incidents that failed (id →
/// reason) and the time the list gave each replaced incident.
type ExpandedPage = (
    bytes_like::Body,
    HashMap<String, String>,
    HashMap<String, Timestamp>,
);

/// `base_url` + `path` + a hand-built query.
fn api_url(target: &Target, path: &str, query: &str) -> Result<Url, ApiError> {
    let mut base = target.base_url.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    let mut url = base.join(path).map_err(|e| ApiError::Decode {
        url: SafeUrl::new(target.base_url.clone()),
        message: format!("bad base URL: {e}"),
    })?;
    url.set_query(Some(query));
    Ok(url)
}

/// Builds the list request for one page.
fn list_url(
    target: &Target,
    source: &Source,
    page: &PageRequest,
    expand: bool,
) -> Result<Url, ApiError> {
    if let Source::Detections(f) = source {
        // The SIEM API (the SIEM seed's parameters): `LastProcessedTimeUtc` in
        // [sinceTimeUtc, untilTimeUtc], the most recent `limit` of them.
        let mut query = format!("sinceTimeUtc={}", page.since);
        if let Some(u) = page.upper {
            query.push_str(&format!("&untilTimeUtc={u}"));
        }
        if page.limit {
            query.push_str(&format!("&limit={}", target.page_size));
        }
        for g in &f.machine_groups {
            query.push_str(&format!("&machinegroups={}", encode(g)));
        }
        if let Some(t) = &f.device_tag {
            query.push_str(&format!("&DeviceCreatedMachineTags={}", encode(t)));
        }
        if let Some(t) = &f.cloud_tag {
            query.push_str(&format!("&CloudCreatedMachineTags={}", encode(t)));
        }
        return api_url(target, "api/alerts", &query);
    }
    let (path, field) = match (source, target.api) {
        (Source::Incidents, ApiKind::Graph) => ("v1.0/security/incidents", "lastUpdateDateTime"),
        (Source::Incidents, ApiKind::Xdr) => ("api/incidents", "lastUpdateTime"),
        (_, ApiKind::Graph) => ("v1.0/security/alerts_v2", "lastUpdateDateTime"),
        (_, ApiKind::Xdr) => ("api/alerts", "lastUpdateTime"),
    };
    let mut filter = format!("{field} ge {}", page.since);
    if let Some(u) = page.upper {
        filter.push_str(&format!(" and {field} le {u}"));
    }
    // Built by hand so `$` stays literal and spaces become %20, as Microsoft's own samples send.
    let mut query = format!("$filter={}&$top={}", encode(&filter), target.page_size);
    if page.skip > 0 {
        query.push_str(&format!("&$skip={}", page.skip));
    }
    match (source, target.api) {
        (Source::Incidents, ApiKind::Graph) if expand => query.push_str("&$expand=alerts"),
        (Source::Alerts, ApiKind::Xdr) => query.push_str("&$expand=evidence"),
        _ => {}
    }
    api_url(target, path, &query)
}

fn encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b':');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

fn read_item(target: &Target, source: &Source, raw: &RawValue) -> Result<Fetched, Poison> {
    let text = raw.get().to_owned();
    type Normalize = fn(&TenantId, &Value) -> Result<Record, NormalizeError>;
    // Each source's normalizer, and the fields it reads: only those are parsed (the raw text is
    // kept whole). The SIEM API's flat detections are parsed whole.
    let (fields, normalize): (Option<&'static Fields>, Normalize) = match (source, target.api) {
        (Source::Incidents, ApiKind::Graph) => (Some(&GRAPH_INCIDENT_FIELDS), |t, v| {
            normalize_graph_incident(t, v).map(Record::Incident)
        }),
        (Source::Incidents, ApiKind::Xdr) => (Some(&XDR_INCIDENT_FIELDS), |t, v| {
            normalize_xdr_incident(t, v).map(Record::Incident)
        }),
        (Source::Alerts, ApiKind::Graph) => (Some(&GRAPH_ALERT_FIELDS), |t, v| {
            normalize_graph_alert(t, v).map(Record::Alert)
        }),
        (Source::Alerts, ApiKind::Xdr) => (Some(&MDE_ALERT_FIELDS), |t, v| {
            normalize_mde_alert(t, v).map(Record::Alert)
        }),
        (Source::Detections(_), _) => (None, |t, v| {
            normalize_siem_detection(t, v).map(Record::Alert)
        }),
    };
    let parsed = match fields {
        Some(f) => xdrsync_model::sparse::parse(&text, f),
        None => serde_json::from_str(&text),
    };
    let value: Value = parsed.map_err(|e| Poison {
        item_id: None,
        reason: e.to_string(),
        raw: text.clone(),
    })?;
    let result = normalize(&target.tenant, &value);
    match result {
        Ok(record) => Ok(Fetched { record, raw: text }),
        Err(e) => {
            let id = ["id", "incidentId", "FullId", "AlertId"]
                .iter()
                .find_map(|k| value.get(k))
                .map(|v| v.to_string().trim_matches('"').to_owned());
            Err(Poison {
                item_id: id,
                reason: e.to_string(),
                raw: text,
            })
        }
    }
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
mod tests {
    use super::*;

    fn target(api: ApiKind) -> Target {
        Target {
            tenant: TenantId::canonical("t"),
            name: "t".into(),
            stream: StreamKind::Incidents,
            api,
            base_url: "https://graph.microsoft.com".parse().unwrap(),
            token: TokenRequest {
                authority: "https://login.microsoftonline.com".parse().unwrap(),
                tenant: TenantId::canonical("t"),
                client_id: "c".into(),
                credential: xdrsync_auth::Credential::Secret(xdrsync_model::SecretString::new("s")),
                resource: "https://graph.microsoft.com".into(),
                version: Default::default(),
                refresh: None,
            },
            page_size: 50,
        }
    }

    #[test]
    fn list_urls_look_like_microsofts_samples() {
        let since: Timestamp = "2026-11-20T01:02:03.5Z".parse().unwrap();
        let until: Timestamp = "2026-11-21T00:00:00Z".parse().unwrap();
        let page = |upper, skip| PageRequest {
            since,
            upper,
            skip,
            limit: true,
        };
        let url = list_url(
            &target(ApiKind::Graph),
            &Source::Incidents,
            &page(Some(until), 3),
            true,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/v1.0/security/incidents?$filter=lastUpdateDateTime%20ge%202026-11-20T01:02:03.5000000Z%20and%20lastUpdateDateTime%20le%202026-11-21T00:00:00.0000000Z&$top=50&$skip=3&$expand=alerts"
        );
        let url = list_url(
            &target(ApiKind::Xdr),
            &Source::Incidents,
            &page(None, 0),
            true,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/api/incidents?$filter=lastUpdateTime%20ge%202026-11-20T01:02:03.5000000Z&$top=50"
        );
        let url = list_url(
            &target(ApiKind::Graph),
            &Source::Alerts,
            &page(None, 0),
            true,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/v1.0/security/alerts_v2?$filter=lastUpdateDateTime%20ge%202026-11-20T01:02:03.5000000Z&$top=50"
        );
        let url = list_url(
            &target(ApiKind::Xdr),
            &Source::Alerts,
            &page(Some(until), 2),
            true,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/api/alerts?$filter=lastUpdateTime%20ge%202026-11-20T01:02:03.5000000Z%20and%20lastUpdateTime%20le%202026-11-21T00:00:00.0000000Z&$top=50&$skip=2&$expand=evidence"
        );
        let siem = Source::Detections(SiemFilter {
            machine_groups: vec!["UK Machines".into(), "France".into()],
            device_tag: Some("VIP".into()),
            cloud_tag: None,
        });
        let url = list_url(&target(ApiKind::Graph), &siem, &page(Some(until), 0), true).unwrap();
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/api/alerts?sinceTimeUtc=2026-11-20T01:02:03.5000000Z&untilTimeUtc=2026-11-21T00:00:00.0000000Z&limit=50&machinegroups=UK%20Machines&machinegroups=France&DeviceCreatedMachineTags=VIP"
        );
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
