//! What the binary prints: standard output that tolerates a closed pipe, text from servers
//! made safe for a terminal, and the few wording rules every report follows (one time
//! format, singular and plural, short cells).

use std::io::Write as _;

use xdrsync_model::Timestamp;

/// Standard output was closed by the reader (`xdrsync status | head -1`): the command ends
/// quietly with exit 0, as `cat` and ripgrep do, instead of a panic or an error message.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub(crate) struct StdoutClosed;

/// Writes to standard output; a closed pipe becomes [`StdoutClosed`].
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// [`write_stdout`] of a whole string.
pub(crate) fn print_stdout(text: &str) -> anyhow::Result<()> {
    write_stdout(format_args!("{text}"))
}

/// `print!` to standard output, ending the command quietly when the reader went away.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::text::write_stdout(format_args!($($arg)*))?
    };
}

/// `println!` to standard output, ending the command quietly when the reader went away.
macro_rules! outln {
    () => {
        $crate::text::write_stdout(format_args!("\n"))?
    };
    ($($arg:tt)*) => {
        $crate::text::write_stdout(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

pub(crate) use {out, outln};

/// Text that came from a server or a file (an error message, an incident title) made safe
/// for a terminal or a log line: control characters (ESC, CR, BEL, …) are written as
/// `\u{1b}`-style escapes, so nobody can rewrite the operator's screen or forge a log line.
pub(crate) fn escape(s: &str) -> String {
    xdrsync_model::printable(s)
}

/// [`escape`], but line breaks and tabs stay: for a multi-line message meant for a person
/// (a TOML error with its caret), never for a log line.
pub(crate) fn escape_keep_lines(s: &str) -> String {
    s.split('\n')
        .map(|line| escape(line.strip_suffix('\r').unwrap_or(line)).replace("\\t", "\t"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `1 incident`, `2 incidents`, `3 passes`.
pub(crate) fn plural(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else if noun.ends_with('s') {
        format!("{n} {noun}es")
    } else {
        format!("{n} {noun}s")
    }
}

/// The one time format of tables: UTC to the second, `2026-12-02 13:45:07Z`.
pub(crate) fn time(t: Timestamp) -> String {
    t.as_datetime().format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// `1h 05m`, `3m 12s`, `40s` from seconds.
pub(crate) fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Seconds from `t` to now (negative when `t` is in the future).
pub(crate) fn age_secs(t: Timestamp) -> i64 {
    (Timestamp::now().ticks() - t.ticks()) / 10_000_000
}

/// A failure as a short table cell: the error class and its key fact (`403 missing
/// SecurityAlert.Read.All`, `AADSTS7000215 wrong secret`, `429 throttled 58s`, `timeout`),
/// at most `MAX` characters. The full text is in `--output json` and in the logs.
pub(crate) fn short_error(full: &str) -> String {
    const MAX: usize = 60;
    let full = escape(full);
    let lower = full.to_ascii_lowercase();
    // An error that says what to run keeps the instruction whole: it is the key fact.
    let instruction = full.find("run `").and_then(|at| {
        let len = full.get(at + 5..)?.find('`')?;
        Some((at, full.get(at..at + 5 + len + 1)?))
    });
    if let Some(code) = aadsts_code(&full) {
        let what = match code {
            "7000215" => "wrong secret",
            "7000222" => "secret expired",
            "700016" => "app not found in tenant",
            "90002" => "tenant not found",
            "65001" => "no admin consent",
            "700027" | "700024" => "bad certificate assertion",
            "50173" | "700082" | "70008" => "sign-in expired",
            "7000112" => "app disabled",
            "53003" => "blocked by conditional access",
            _ => "token refused",
        };
        return match instruction {
            Some((_, command)) => format!("AADSTS{code} {what}: {command}"),
            None => format!("AADSTS{code} {what}"),
        };
    }
    if let Some((at, command)) = instruction {
        let what = full
            .get(..at)
            .unwrap_or_default()
            .trim_end_matches([' ', ':', ';', ','])
            .rsplit(": ")
            .next()
            .unwrap_or_default();
        return format!("{}: {command}", clip(what, 40));
    }
    if let Some(p) = lower.find("missing") {
        // `missing application permission X` / `missing SecurityAlert.Read.All`
        let rest = full.get(p..).unwrap_or_default();
        if let Some(perm) = rest
            .split(|c: char| c.is_whitespace() || c == ':' || c == ',' || c == ';')
            .find(|w| w.ends_with(".All"))
        {
            let status = if lower.contains("401") { "401" } else { "403" };
            return format!("{status} missing {perm}");
        }
    }
    if lower.contains("429") || lower.contains("throttl") {
        let secs = lower.split("retry-after").nth(1).and_then(|r| {
            r.trim_start_matches(|c: char| !c.is_ascii_digit())
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse::<u64>().ok())
        });
        return match secs {
            Some(s) => format!("429 throttled {s}s"),
            None => "429 throttled".into(),
        };
    }
    if lower.contains("timed out") || lower.contains("timeout") {
        return "timeout".into();
    }
    if lower.contains("connection refused") || lower.contains("error trying to connect") {
        return "connection refused".into();
    }
    if let Some(status) = http_status(&full) {
        let first = full.split(['\n', ':']).next().unwrap_or_default();
        return clip(&format!("{status} {}", first.trim()), MAX);
    }
    clip(full.lines().next().unwrap_or_default(), MAX)
}

/// The digits after `AADSTS` in an Entra error, if any.
pub(crate) fn aadsts_code(text: &str) -> Option<&str> {
    let at = text.find("AADSTS")? + "AADSTS".len();
    let rest = text.get(at..)?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest.get(..end).filter(|d| !d.is_empty())
}

/// A 4xx/5xx status named in an error text (`HTTP 503`, `status 403`, `503 Service …`).
fn http_status(text: &str) -> Option<u16> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|w| w.parse::<u16>().ok())
        .find(|n| (400..600).contains(n))
}

/// At most `n` characters, with `…` when cut.
pub(crate) fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(
            escape("a\u{1b}[2Jb\r\nfake line"),
            "a\\u{1b}[2Jb\\r\\nfake line"
        );
    }

    #[test]
    fn short_errors_keep_the_class_and_the_key_fact() {
        assert_eq!(
            short_error("token request failed: AADSTS7000215: Invalid client secret provided."),
            "AADSTS7000215 wrong secret"
        );
        assert_eq!(
            short_error(
                "HTTP 403 Forbidden: missing application permission SecurityAlert.Read.All: in the Entra admin center …"
            ),
            "403 missing SecurityAlert.Read.All"
        );
        assert_eq!(
            short_error("HTTP 429 Too Many Requests after 6 attempts (Retry-After: 58)"),
            "429 throttled 58s"
        );
        assert_eq!(short_error("operation timed out"), "timeout");
        assert_eq!(
            short_error(
                "tenant contoso has no stored sign-in: run `xdrsync auth login --tenant contoso` (…)"
            ),
            "tenant contoso has no stored sign-in: run `xdrsync auth login --tenant contoso`"
        );
        assert!(short_error(&"x".repeat(500)).chars().count() <= 60);
    }

    #[test]
    fn plurals_and_times() {
        assert_eq!(plural(1u64, "incident"), "1 incident");
        assert_eq!(plural(0u64, "incident"), "0 incidents");
        assert_eq!(plural(6u64, "pass"), "6 passes");
        assert_eq!(
            escape_keep_lines("line 1\n\tcaret\r\n\u{1b}[31m"),
            "line 1\n\tcaret\n\\u{1b}[31m"
        );
        assert_eq!(duration(65), "1m 05s");
        assert_eq!(duration(-5), "0s");
    }
}
