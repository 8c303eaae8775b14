//! The canonical timestamp.
//!
//! Defender writes times with anywhere from 0 to 7 fractional digits (`2020-09-06T14:46:57.29Z`,
//! `2020-09-06T14:46:57.0733333Z`). The version identity of an incident includes its last-update
//! time, so two spellings of one instant must compare equal. [`Timestamp`] keeps the instant at
//! 100 ns precision (the API's own resolution) and always prints it with seven fractional digits
//! and a `Z`, which also makes the text form sort in time order.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant in UTC with 100 ns resolution, printed as `YYYY-MM-DDTHH:MM:SS.fffffffZ`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

/// A string that is not an RFC 3339 timestamp.
#[derive(Debug, thiserror::Error)]
#[error("`{input}` is not an RFC 3339 timestamp (expected e.g. 2020-09-06T14:46:57.29Z)")]
pub struct TimestampError {
    input: String,
}

impl Timestamp {
    /// The current time, truncated to 100 ns.
    pub fn now() -> Self {
        Self::from_datetime(Utc::now())
    }

    /// Wraps a chrono time, truncating it to 100 ns.
    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        let nanos = dt.nanosecond() % 1_000_000_000;
        let truncated = nanos - nanos % 100;
        Self(dt.with_nanosecond(truncated).unwrap_or(dt))
    }

    /// Seconds and 100 ns ticks since the Unix epoch.
    pub fn from_ticks(ticks: i64) -> Self {
        let secs = ticks.div_euclid(10_000_000);
        let nanos = (ticks.rem_euclid(10_000_000) * 100) as u32;
        Self(Utc.timestamp_opt(secs, nanos).single().unwrap_or_default())
    }

    /// 100 ns ticks since the Unix epoch.
    pub fn ticks(&self) -> i64 {
        self.0.timestamp() * 10_000_000 + i64::from(self.0.timestamp_subsec_nanos() / 100)
    }

    /// The wrapped chrono time.
    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    /// This instant moved by a signed duration (saturating at the representable range).
    pub fn add(&self, d: chrono::Duration) -> Self {
        Self::from_datetime(self.0.checked_add_signed(d).unwrap_or(self.0))
    }

    /// This instant moved back by a duration.
    pub fn sub(&self, d: chrono::Duration) -> Self {
        Self::from_datetime(self.0.checked_sub_signed(d).unwrap_or(self.0))
    }

    /// The form Defender prints: the fraction trimmed of trailing zeros, none if whole.
    pub fn to_trimmed_string(&self) -> String {
        let canonical = self.to_string();
        let (head, frac) = canonical.split_at(19);
        let digits = frac
            .trim_start_matches('.')
            .trim_end_matches('Z')
            .trim_end_matches('0');
        if digits.is_empty() {
            format!("{head}Z")
        } else {
            format!("{head}.{digits}Z")
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0;
        // The common case by hand: `write!` with seven padded fields was 3 % of a pull's CPU
        // (every version's key, cursor and JSON carry timestamps).
        if let Ok(year @ 0..=9999) = u32::try_from(d.year()) {
            let mut b = *b"0000-00-00T00:00:00.0000000Z";
            let mut put = |at: usize, width: usize, mut v: u32| {
                for i in (at..at + width).rev() {
                    if let Some(c) = b.get_mut(i) {
                        *c = b'0' + (v % 10) as u8;
                    }
                    v /= 10;
                }
            };
            put(0, 4, year);
            put(5, 2, d.month());
            put(8, 2, d.day());
            put(11, 2, d.hour());
            put(14, 2, d.minute());
            put(17, 2, d.second());
            put(20, 7, d.nanosecond() % 1_000_000_000 / 100);
            return f.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?);
        }
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minute(),
            d.second(),
            d.nanosecond() % 1_000_000_000 / 100
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TimestampError {
            input: s.to_owned(),
        };
        let trimmed = s.trim();
        // Defender's own timestamps are always UTC; accept a missing offset as UTC, as
        // .NET's DateTimeOffset parsing does, but nothing else that is not RFC 3339.
        let parsed = DateTime::parse_from_rfc3339(trimmed)
            .or_else(|_| DateTime::parse_from_rfc3339(&format!("{trimmed}Z")))
            .map_err(|_| err())?;
        Ok(Self::from_datetime(parsed.with_timezone(&Utc)))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_instant_are_equal() {
        let a: Timestamp = "2020-09-06T14:46:57.29Z".parse().unwrap();
        let b: Timestamp = "2020-09-06T14:46:57.2900000Z".parse().unwrap();
        let c: Timestamp = "2020-09-06T14:46:57.290+00:00".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.to_string(), "2020-09-06T14:46:57.2900000Z");
        assert_eq!(a.to_trimmed_string(), "2020-09-06T14:46:57.29Z");
    }

    /// The hand-written text is chrono's `%Y-%m-%dT%H:%M:%S.%7fZ` for every instant, at the
    /// ends of the range too; years past 9999 take the general path.
    #[test]
    fn display_is_the_seven_digit_form_everywhere() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut samples: Vec<DateTime<Utc>> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let secs = (x % 253_402_300_799) as i64; // 1970 to 9999-12-31
                DateTime::from_timestamp(secs, (x >> 34) as u32 % 1_000_000_000).unwrap()
            })
            .collect();
        samples.push(DateTime::from_timestamp(0, 0).unwrap());
        samples.push(DateTime::from_timestamp(253_402_300_799, 999_999_999).unwrap());
        samples.push(DateTime::from_timestamp(-62_135_596_800, 100).unwrap()); // year 1
        for d in samples {
            let t = Timestamp::from_datetime(d);
            let want = format!(
                "{}.{:07}Z",
                t.0.format("%Y-%m-%dT%H:%M:%S"),
                t.0.timestamp_subsec_nanos() / 100
            );
            assert_eq!(t.to_string(), want);
        }
        let far = Timestamp::from_datetime(DateTime::from_timestamp(253_402_300_800, 0).unwrap());
        assert_eq!(far.to_string(), "10000-01-01T00:00:00.0000000Z");
    }

    #[test]
    fn precision_is_100ns_and_ticks_round_trip() {
        let t: Timestamp = "2020-09-06T12:18:03.62666679Z".parse().unwrap();
        assert_eq!(t.to_string(), "2020-09-06T12:18:03.6266667Z");
        assert_eq!(Timestamp::from_ticks(t.ticks()), t);
        let whole: Timestamp = "2020-09-06T12:18:03Z".parse().unwrap();
        assert_eq!(whole.to_trimmed_string(), "2020-09-06T12:18:03Z");
    }

    #[test]
    fn text_order_is_time_order() {
        let a: Timestamp = "2020-09-06T14:46:57.3Z".parse().unwrap();
        let b: Timestamp = "2020-09-06T14:46:57.29Z".parse().unwrap();
        assert!(b < a);
        assert!(b.to_string() < a.to_string());
    }

    /// Regression: arithmetic kept nanoseconds, so two timestamps that print the same could
    /// compare unequal (seen as a PATCHed version missing from the emulator's ground truth).
    #[test]
    fn arithmetic_stays_at_100ns() {
        let t: Timestamp = "2026-11-22T03:56:54.8563960Z".parse().unwrap();
        let moved = t.add(chrono::Duration::nanoseconds(37));
        assert_eq!(moved, t);
        assert_eq!(
            t.sub(chrono::Duration::nanoseconds(1)).to_string(),
            "2026-11-22T03:56:54.8563959Z"
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = "yesterday".parse::<Timestamp>().unwrap_err();
        assert!(
            err.to_string()
                .contains("`yesterday` is not an RFC 3339 timestamp")
        );
    }
}
