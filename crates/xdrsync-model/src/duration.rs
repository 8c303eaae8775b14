//! Human durations such as `48h`, `30d`, `15m`, `90s`, as the command line and config accept them.

/// A duration that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("`{input}` is not a duration: use a whole number followed by s, m, h or d (e.g. 48h, 30d)")]
pub struct DurationParseError {
    input: String,
}

/// Parses `<n><unit>` with unit `s`, `m`, `h`, `d` or `w` into a [`chrono::Duration`].
pub fn parse_duration(input: &str) -> Result<chrono::Duration, DurationParseError> {
    let err = || DurationParseError {
        input: input.to_owned(),
    };
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (digits, unit) = s.split_at(split);
    let n: i64 = digits.parse().map_err(|_| err())?;
    let secs_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(err()),
    };
    n.checked_mul(secs_per_unit)
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("48h").unwrap(), chrono::Duration::hours(48));
        assert_eq!(parse_duration("30d").unwrap(), chrono::Duration::days(30));
        assert_eq!(
            parse_duration("15m").unwrap(),
            chrono::Duration::minutes(15)
        );
        assert_eq!(
            parse_duration("90s").unwrap(),
            chrono::Duration::seconds(90)
        );
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "h", "48", "4 8h", "-1h", "1y", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad} should not parse");
        }
    }
}
