//! The HEC event envelope.

use xdrsync_model::StreamKind;
use xdrsync_store::StoredVersion;

/// The default sourcetype of a stream.
pub fn default_sourcetype(stream: StreamKind) -> &'static str {
    match stream {
        StreamKind::Incidents => "xdrsync:incident",
        StreamKind::Alerts => "xdrsync:alert",
        StreamKind::Detections => "xdrsync:detection",
        StreamKind::Hunts => "xdrsync:hunt",
    }
}

/// Appends one HEC event object for `v` (its document `doc` under `event`) to `out`:
/// `time` is the version's last update in epoch seconds with milliseconds, and the indexed
/// `fields` carry the tenant, stream and event id.
pub fn encode_event(
    out: &mut Vec<u8>,
    v: &StoredVersion,
    doc: &[u8],
    host: &str,
    source: &str,
    sourcetype: &str,
    index: Option<&str>,
) {
    let ms = crate::schema::epoch_millis(v.record.last_update());
    let q = crate::schema::quote;
    out.extend_from_slice(
        format!(
            r#"{{"time":{}.{:03},"host":{},"source":{},"sourcetype":{},"#,
            ms.div_euclid(1000),
            ms.rem_euclid(1000),
            q(host),
            q(source),
            q(sourcetype)
        )
        .as_bytes(),
    );
    if let Some(i) = index {
        out.extend_from_slice(format!(r#""index":{},"#, q(i)).as_bytes());
    }
    out.extend_from_slice(br#""event":"#);
    out.extend_from_slice(doc);
    out.extend_from_slice(
        format!(
            r#","fields":{{"tenant_id":{},{}"stream":"{}","event_id":{}{}}}}}"#,
            q(v.record.tenant().as_str()),
            v.tenant_name
                .as_deref()
                .map(|n| format!(r#""tenant":{},"#, q(n)))
                .unwrap_or_default(),
            v.stream.as_str(),
            q(&v.event_id),
            if v.replay { r#","replay":true"# } else { "" }
        )
        .as_bytes(),
    );
}
