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

/// The longest `Retry-After` taken from any server: one hour. Microsoft's APIs ask for
/// seconds to a minute; a larger value is a broken or hostile server, and callers cap it
/// further at their own `retry_max_secs` (a wait longer than that fails the request instead
/// of sleeping).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` in seconds or as an HTTP date, at most [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let secs = if let Ok(secs) = v.parse::<u64>() {
        secs
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        u64::try_from(
            at.timestamp()
                .saturating_sub(chrono::Utc::now().timestamp()),
        )
        .unwrap_or(0)
    };
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// `base · 2^(attempt−1)`, capped at `max`, with "equal jitter" (half fixed, half random), so
/// many clients failing at once do not retry in lockstep.
pub fn jittered_backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(max);
    let half = exp / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use reqwest::header::RETRY_AFTER;

    use super::*;

    #[test]
    fn huge_retry_after_is_capped() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "18446744073709551615".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            RETRY_AFTER,
            "Fri, 31 Dec 9999 23:59:59 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let (base, max) = (Duration::from_millis(200), Duration::from_secs(30));
        for attempt in [1, 2, 5, 40, u32::MAX] {
            let exp = base
                .saturating_mul(1 << attempt.saturating_sub(1).min(16))
                .min(max);
            let w = jittered_backoff(base, max, attempt);
            assert!(w >= exp / 2 && w <= exp, "{attempt}: {w:?}");
        }
    }

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
