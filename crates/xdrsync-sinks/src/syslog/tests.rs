//! CEF, LEEF, the syslog headers and framing, pinned for the shared fixtures.

use super::config::{Framing, Protocol};
use super::encoder::*;
use crate::fixtures;

fn header(protocol: Protocol) -> Header {
    Header {
        protocol,
        facility: 16,
        hostname: "collector-1".into(),
        app_name: "xdrsync".into(),
        sd_id: "xdrsync@32473".into(),
    }
}

#[test]
fn cef_and_leef_of_every_fixture_are_pinned() {
    let stored = fixtures::stored();
    let mut cefs = String::new();
    let mut leefs = String::new();
    for v in &stored {
        let c = cef(v);
        let l = leef(v);
        assert!(!c.contains(['\n', '\r']) && !l.contains(['\n', '\r']));
        cefs.push_str(&c);
        cefs.push('\n');
        leefs.push_str(&l);
        leefs.push('\n');
    }
    let version = format!(r"\|{}\|", env!("CARGO_PKG_VERSION").replace('.', r"\."));
    insta::with_settings!({ filters => vec![(version.as_str(), "|[version]|")] }, {
        insta::assert_snapshot!("cef", cefs);
        insta::assert_snapshot!("leef", leefs);
    });
}

#[test]
fn cef_escapes_per_the_spec() {
    assert_eq!(escape_header(r"a|b\c"), r"a\|b\\c");
    assert_eq!(escape_cef_value("k=v\\x\r\ny|z"), r"k\=v\\x\r\ny|z");
    assert_eq!(escape_leef_value("a^b\\c\nd=e"), r"a\^b\\c\nd=e");
    // The fixture's title has `|`, `=`, `"` and `\`: the header survives a split on
    // unescaped pipes into exactly 8 parts.
    let c = cef(&fixtures::stored()[0]);
    let mut parts = 0;
    let mut escaped = false;
    for ch in c.chars() {
        match ch {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '|' => parts += 1,
            _ => {}
        }
    }
    assert_eq!(parts, 7, "{c}");
    // `=` is escaped in extension values only (the portal link's query), not in the header.
    assert!(c.contains(r#"Initial access = "phish" \\ on"#), "{c}");
    assert!(c.contains(r"?tid\=b3a7c1d2"), "{c}");
}

#[test]
fn syslog_headers_and_framing_are_pinned() {
    let stored = fixtures::stored();
    let v = &stored[0];
    let m5424 = header(Protocol::Rfc5424).message(v, "CEF:0|x");
    let m3164 = header(Protocol::Rfc3164).message(&stored[3], "LEEF:2.0|x");
    insta::assert_snapshot!(m5424, @r#"<130>1 2026-11-30T11:46:02.293333Z collector-1 xdrsync - incident [xdrsync@32473 tenant="b3a7c1d2-0000-4000-8000-00000000c0de" tenant_name="contoso" event_id="bbf4c864fdc20245b7f7adb6b0f2605b" seq="1"] CEF:0|x"#);
    insta::assert_snapshot!(m3164, @"<133>Nov 30 08:00:00 collector-1 xdrsync: LEEF:2.0|x");
    let mut buf = Vec::new();
    frame(&mut buf, "abc", Framing::OctetCounting);
    frame(&mut buf, "de", Framing::Newline);
    assert_eq!(buf, b"3 abcde\n");
    // PRI = facility * 8 + severity: local0 (16), high → 2 (critical); low → 5 (notice).
    assert!(m5424.starts_with("<130>"));
    assert!(m3164.starts_with("<133>"));
}
