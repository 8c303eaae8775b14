//! The HEC envelope, pinned.

use super::encoder::encode_event;
use crate::fixtures;
use crate::schema::Format;

#[test]
fn hec_envelope_is_pinned() {
    let stored = fixtures::stored();
    let mut out = Vec::new();
    for v in &stored[1..3] {
        let doc = Format::Ocsf.to_string(v).unwrap();
        let short = format!(
            r#"{{"class_uid":{}}}"#,
            &serde_json::from_str::<serde_json::Value>(&doc).unwrap()["class_uid"]
        );
        encode_event(
            &mut out,
            v,
            short.as_bytes(),
            "contoso",
            "xdrsync",
            "xdrsync:incident",
            Some("mssp_contoso"),
        );
        out.push(b'\n');
    }
    let text = String::from_utf8(out).unwrap();
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("each event object is JSON");
    }
    insta::assert_snapshot!(text, @r#"
    {"time":1796030100.123,"host":"contoso","source":"xdrsync","sourcetype":"xdrsync:incident","index":"mssp_contoso","event":{"class_uid":2005},"fields":{"tenant_id":"b3a7c1d2-0000-4000-8000-00000000c0de","tenant":"contoso","stream":"incidents","event_id":"eb90a72486df50c26290dafa98a7a3fe"}}
    {"time":1796036400.100,"host":"contoso","source":"xdrsync","sourcetype":"xdrsync:incident","index":"mssp_contoso","event":{"class_uid":2004},"fields":{"tenant_id":"b3a7c1d2-0000-4000-8000-00000000c0de","tenant":"contoso","stream":"alerts","event_id":"a55c9378826e614f8d0de648fc52d6cb"}}
    "#);
}
