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

mod injection {
    //! No incident title can produce a second record or a new CEF/LEEF field.

    use proptest::prelude::*;
    use xdrsync_model::Record;

    use super::super::encoder::*;
    use crate::fixtures;

    /// Characters that end a record somewhere.
    fn breaks(c: char) -> bool {
        c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
    }

    /// Splits `s` at the unescaped occurrences of `sep` (a backslash escapes the next char).
    fn split_unescaped(s: &str, sep: char) -> Vec<String> {
        let mut parts = vec![String::new()];
        let mut escaped = false;
        for c in s.chars() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == sep {
                parts.push(String::new());
                continue;
            }
            if let Some(last) = parts.last_mut() {
                last.push(c);
            }
        }
        parts
    }

    /// A CEF message's first seven header fields and its extension.
    fn cef_parts(m: &str) -> (Vec<String>, String) {
        let mut fields = Vec::new();
        let mut current = String::new();
        let mut escaped = false;
        let mut chars = m.chars();
        while fields.len() < 7 {
            let Some(c) = chars.next() else { break };
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '|' {
                fields.push(std::mem::take(&mut current));
                continue;
            }
            current.push(c);
        }
        (fields, chars.collect())
    }

    /// Titles mixing the characters that matter with arbitrary Unicode.
    fn hostile() -> impl Strategy<Value = String> {
        let special = prop::sample::select(vec![
            '\0', '\n', '\r', '\t', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{9b}', '\u{2028}',
            '\u{2029}', '|', '=', '^', '\\', '"', ']', ' ', 'a',
        ]);
        prop::collection::vec(prop_oneof![special, any::<char>()], 0..40)
            .prop_map(|v| v.into_iter().collect())
    }

    fn with_title(v: &xdrsync_store::StoredVersion, title: &str) -> xdrsync_store::StoredVersion {
        let mut v = v.clone();
        match &mut v.record {
            Record::Incident(i) => i.title = title.to_owned(),
            Record::Alert(a) => {
                a.title = title.to_owned();
                a.description = Some(title.to_owned());
            }
            // A hunt's name is checked by the config; its row's values come from the service
            // (never blank here: a blank column is no entity, so no field at all).
            Record::HuntRow(h) => {
                for k in ["DeviceName", "ProcessCommandLine", "AccountUpn"] {
                    h.row.insert(k.into(), format!("x{title}").into());
                }
            }
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn escaped_values_keep_their_field(s in hostile()) {
            for e in [escape_header(&s), escape_cef_value(&s), escape_leef_value(&s)] {
                prop_assert!(!e.chars().any(breaks), "{e:?}");
            }
            prop_assert_eq!(split_unescaped(&escape_header(&s), '|').len(), 1);
            prop_assert_eq!(split_unescaped(&escape_cef_value(&s), '=').len(), 1);
            prop_assert_eq!(split_unescaped(&escape_leef_value(&s), '^').len(), 1);
        }

        #[test]
        fn no_title_makes_a_second_record_or_a_new_field(s in hostile()) {
            for v in fixtures::stored() {
                let plain = cef(&v);
                let hostile = cef(&with_title(&v, &s));
                prop_assert!(!hostile.chars().any(breaks), "{hostile:?}");
                // CEF: the seven header fields are the same but the name, and the extension
                // (after the seventh unescaped `|`; pipes need no escape there) has as many
                // `key=` as without the title.
                let (hh, hx) = cef_parts(&hostile);
                let (ph, px) = cef_parts(&plain);
                prop_assert_eq!(hh.len(), 7);
                for i in [0, 1, 2, 3, 4, 6] {
                    prop_assert_eq!(&hh[i], &ph[i], "{}", hostile);
                }
                prop_assert_eq!(
                    split_unescaped(&hx, '=').len(),
                    split_unescaped(&px, '=').len(),
                    "{}",
                    hostile
                );
                // LEEF: the same attributes.
                let lp = leef(&v);
                let lh = leef(&with_title(&v, &s));
                prop_assert!(!lh.chars().any(breaks), "{lh:?}");
                prop_assert_eq!(split_unescaped(&lh, '^').len(), split_unescaped(&lp, '^').len());
            }
        }
    }
}
