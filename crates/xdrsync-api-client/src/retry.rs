//! The retry decision, in one place.
//!
//! | status | action |
//! |---|---|
//! | 2xx | success |
//! | 401 | refresh the token once, then fail |
//! | 408, 429, 5xx | transient: retry with backoff, after `Retry-After` when given |
//! | other 4xx | permanent: fail now with the service's message |

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// Use it.
    Success,
    /// The token was refused: refresh it and try once more.
    Unauthorized,
    /// Try again later.
    Transient {
        /// The server's `Retry-After`, if it sent one.
        after: Option<Duration>,
    },
    /// Do not retry.
    Permanent,
}

/// Classifies a response by status and headers.
pub fn classify(status: u16, headers: &HeaderMap) -> RetryAction {
    match status {
        200..=299 => RetryAction::Success,
        401 => RetryAction::Unauthorized,
        408 | 429 | 500..=599 => RetryAction::Transient {
            after: retry_after(headers),
        },
        _ => RetryAction::Permanent,
    }
}

/// `Retry-After` in seconds (the form Microsoft sends); an HTTP date is read too.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (at.timestamp() - chrono::Utc::now().timestamp()).max(0);
    Some(Duration::from_secs(secs as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let none = HeaderMap::new();
        let mut ra = HeaderMap::new();
        ra.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(classify(200, &none), RetryAction::Success);
        assert_eq!(classify(401, &none), RetryAction::Unauthorized);
        assert_eq!(
            classify(429, &ra),
            RetryAction::Transient {
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(classify(503, &none), RetryAction::Transient { after: None });
        assert_eq!(classify(403, &none), RetryAction::Permanent);
        assert_eq!(classify(400, &none), RetryAction::Permanent);
        assert_eq!(classify(404, &none), RetryAction::Permanent);
    }
}
