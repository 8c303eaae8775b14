//! What the clients take and give: targets, sources, pages, listings, errors, retry policy.

use std::time::Duration;

use url::Url;
use xdrsync_auth::{AuthError, TokenRequest};
use xdrsync_model::{ApiKind, Record, SafeUrl, StreamKind, TenantId};

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
    /// The listing cannot go on within what the API allows (Graph refuses `$skip` above
    /// [`crate::GRAPH_MAX_SKIP`]).
    #[error("{url}: {message}")]
    Unpageable {
        /// The request that would have been sent (redacted).
        url: SafeUrl,
        /// Why, and what to do.
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
    /// Of the incidents those pages held, how many were read in a Graph `$batch` (the rest
    /// were read with a request of their own).
    pub batched_reads: u32,
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
