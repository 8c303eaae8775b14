//! Types that hold secrets and redact themselves.
//!
//! A secret in a `String` is one `{:?}` away from a log line. [`SecretString`] prints
//! `**REDACTED**` through `Debug` and `Display` and hands its value out only through the
//! explicitly named [`SecretString::expose`]. [`SafeUrl`] prints a URL with any userinfo
//! password and any secret-looking query parameter replaced.

use std::fmt;

use url::Url;

const REDACTED: &str = "**REDACTED**";

/// A client secret, access token, refresh token or other credential.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself. Call this only where the value leaves the process on purpose
    /// (an HTTP request body or header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// Query parameters whose values are credentials in the protocols xdrsync speaks.
const SECRET_PARAMS: &[&str] = &[
    "client_secret",
    "code",
    "code_verifier",
    "refresh_token",
    "access_token",
    "client_assertion",
    "token",
    "sig",
    "signature",
    "password",
    "secret",
    "key",
    "api_key",
    "apikey",
    "api-key",
    "auth",
];

/// A URL that is safe to print: its password and credential query values are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SafeUrl(Url);

impl SafeUrl {
    /// Wraps a URL.
    pub fn new(url: Url) -> Self {
        Self(url)
    }

    /// The URL itself, for making requests.
    pub fn expose(&self) -> &Url {
        &self.0
    }

    fn redacted(&self) -> Url {
        let mut url = self.0.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some(REDACTED));
        }
        if url.query().is_some() {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let secret = SECRET_PARAMS.iter().any(|p| k.eq_ignore_ascii_case(p));
                    (
                        k.into_owned(),
                        if secret {
                            REDACTED.to_owned()
                        } else {
                            v.into_owned()
                        },
                    )
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url
    }
}

impl fmt::Display for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.redacted(), f)
    }
}

impl fmt::Debug for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafeUrl({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_never_prints_its_value() {
        let s = SecretString::new("Xq8~s3cr3t.value");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert!(!format!("{s}").contains("s3cr3t"));
        assert!(!format!("{:#?}", Some(&s)).contains("s3cr3t"));
        assert_eq!(s.expose(), "Xq8~s3cr3t.value");
    }

    #[test]
    fn safe_url_hides_passwords_and_credential_params() {
        let url: Url =
            "https://user:hunter2@proxy.example/x?client_secret=abc123&refresh_token=rt999&keep=1"
                .parse()
                .unwrap();
        let safe = SafeUrl::new(url);
        for shown in [format!("{safe}"), format!("{safe:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("abc123"), "{shown}");
            assert!(!shown.contains("rt999"), "{shown}");
            assert!(shown.contains("keep=1"), "{shown}");
        }
    }
}

/// Text a server sent (an error message, a code, a header) made safe to keep, log and print:
/// control characters (ESC, CR, LF, BEL, C1 codes) become `\u{…}`-style escapes, so a hostile
/// or broken server can neither rewrite an operator's terminal nor forge a log line, and the
/// text is cut at 2,000 characters.
pub fn printable(s: &str) -> String {
    const MAX: usize = 2_000;
    let mut out = String::with_capacity(s.len().min(MAX + 8));
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn control_characters_cannot_forge_a_line_or_colour_a_terminal() {
        let hostile = "denied\r\n2026-12-02T00:00:00Z ERROR forged\u{1b}[31m\u{7}\u{9b}";
        let p = super::printable(hostile);
        assert!(!p.chars().any(char::is_control), "{p}");
        assert!(p.starts_with("denied\\r\\n2026"), "{p}");
        assert_eq!(super::printable(&"x".repeat(5_000)).chars().count(), 2_001);
    }
}
