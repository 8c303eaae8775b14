//! The retry decision, in one place.
//!
//! | status | action |
//! |---|---|
//! | 2xx | success |
//! | 401 | refresh the token once, then fail |
//! | 408, 429, 5xx | transient: retry with backoff, after `Retry-After` when given |
//! | other 4xx | permanent: fail now with the service's message |

use std::time::Duration;

use reqwest::header::HeaderMap;

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

/// `Retry-After` in seconds or as an HTTP date (shared with the token client).
pub use xdrsync_auth::retry_after;

#[cfg(test)]
mod tests {
    use reqwest::header::RETRY_AFTER;

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
