//! The documents a sink sends, chosen per sink with `format = …`.
//!
//! | format | document |
//! |---|---|
//! | `raw` | the API's JSON for the item, byte for byte as received (one line) |
//! | `xdrsync` | the one normalized schema for legacy and Graph, in its event envelope |
//! | `ocsf` | OCSF 1.5: Incident Finding (2005) for incidents, Detection Finding (2004) for alerts and detections ([`ocsf`]) |
//! | `ecs` | Elastic Common Schema, as Elastic's `m365_defender` ingest pipeline maps incidents and alerts ([`ecs`]) |
//!
//! Every format is one JSON object per version; the wire encoders (CEF, LEEF, syslog, HEC,
//! NATS, PostgreSQL) wrap it or read from the version itself. All four carry the event id
//! (`raw` only in the sink's own envelope where it has one: HEC fields, NATS header, the
//! PostgreSQL key, syslog structured data).

use serde::Deserialize;
use xdrsync_model::{Evidence, StreamKind};
use xdrsync_store::StoredVersion;

pub mod ecs;
pub mod ocsf;

/// The schema of a sink's documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The API's JSON untouched.
    Raw,
    /// The normalized schema with its event envelope (the default).
    #[default]
    Xdrsync,
    /// OCSF 1.5 findings.
    Ocsf,
    /// Elastic Common Schema.
    Ecs,
}

impl Format {
    /// The name as written in the config.
    pub fn as_str(&self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Xdrsync => "xdrsync",
            Format::Ocsf => "ocsf",
            Format::Ecs => "ecs",
        }
    }

    /// Whether the document needs the stored raw JSON (reading it costs a third of the bytes).
    pub fn needs_raw(&self) -> bool {
        matches!(self, Format::Raw)
    }

    /// Appends the document of `v` to `out`, as one line of JSON (no newline).
    pub fn write(&self, v: &StoredVersion, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            Format::Raw => write_raw(v, out),
            Format::Xdrsync => write_xdrsync(v, out),
            Format::Ocsf => serde_json::to_writer(out, &ocsf::document(v)),
            Format::Ecs => serde_json::to_writer(out, &ecs::document(v)),
        }
    }

    /// The document of `v` as a string.
    pub fn to_string(&self, v: &StoredVersion) -> Result<String, serde_json::Error> {
        let mut out = Vec::with_capacity(2048);
        self.write(v, &mut out)?;
        // serde_json writes UTF-8 only, and raw JSON was read as UTF-8.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The raw JSON, kept byte for byte unless it spans lines (a pretty-printing server): then the
/// whitespace between tokens is removed (numbers, strings and key order untouched), so it
/// stays one NDJSON line.
fn write_raw(v: &StoredVersion, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    if v.raw.is_empty() {
        return Err(serde::ser::Error::custom(
            "the raw JSON was not read (internal error: the sink must read raw for format = raw)",
        ));
    }
    if v.raw.contains(['\n', '\r']) {
        // Checked first, so a damaged row is an error rather than a half-minified line.
        serde_json::from_str::<serde::de::IgnoredAny>(&v.raw)?;
        let (mut in_string, mut escaped) = (false, false);
        for &b in v.raw.as_bytes() {
            if in_string {
                out.push(b);
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
            } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                in_string = b == b'"';
                out.push(b);
            }
        }
        Ok(())
    } else {
        out.extend_from_slice(v.raw.as_bytes());
        Ok(())
    }
}

/// The `xdrsync` document: an incident under `incident` with `incident_id`, an alert or SIEM
/// detection under `alert` with `alert_id` (`<alert id>:<part>` for a detection), a scheduled
/// hunt's row under `hunt_row` with `row_id` (`<hunt>:<row hash>`); `stream` says which. Serialized straight into `out` (no intermediate JSON tree).
fn write_xdrsync(v: &StoredVersion, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    use serde::ser::{SerializeMap, Serializer};
    let (id_key, body_key) = match v.stream {
        StreamKind::Incidents => ("incident_id", "incident"),
        StreamKind::Alerts | StreamKind::Detections => ("alert_id", "alert"),
        StreamKind::Hunts => ("row_id", "hunt_row"),
    };
    let mut ser = serde_json::Serializer::new(out);
    let mut m = (&mut ser).serialize_map(Some(10))?;
    m.serialize_entry("event_id", &v.event_id)?;
    m.serialize_entry("seq", &v.seq)?;
    m.serialize_entry("stream", &v.stream)?;
    m.serialize_entry("change", &v.change)?;
    m.serialize_entry("changes", &v.changes)?;
    m.serialize_entry("tenant_id", v.record.tenant())?;
    if let Some(name) = &v.tenant_name {
        m.serialize_entry("tenant", name)?;
    }
    if v.replay {
        m.serialize_entry("replay", &true)?;
    }
    if let Some(action) = &v.origin_action {
        m.serialize_entry("origin", &origin(action))?;
    }
    m.serialize_entry(id_key, &v.record.item_id())?;
    m.serialize_entry("last_update", &v.record.last_update())?;
    m.serialize_entry(body_key, &v.record)?;
    m.end()
}

/// `{"source": "xdrsync", "action_id": …}`: the version was produced by a write of ours, so a
/// SOAR mirroring changes can drop its own echo.
pub(crate) fn origin(action: &str) -> serde_json::Value {
    serde_json::json!({"source": "xdrsync", "action_id": action})
}

/// Milliseconds since the Unix epoch (OCSF `timestamp_t`, HEC `time` × 1000).
pub(crate) fn epoch_millis(t: xdrsync_model::Timestamp) -> i64 {
    t.as_datetime().timestamp_millis()
}

#[cfg(test)]
mod tests;

/// Sets `path` in the JSON object `doc` to `value`, creating the objects on the way.
///
/// The documents are built with `json!` and filled in with this instead of `doc["a"]["b"] = …`,
/// whose `IndexMut` panics when a value on the way is not an object; here a non-object on the
/// way is replaced by an object (it cannot happen with the builders' own literals).
pub(crate) fn set(doc: &mut serde_json::Value, path: &[&str], value: serde_json::Value) {
    use serde_json::{Map, Value};
    let Some((last, parents)) = path.split_last() else {
        *doc = value;
        return;
    };
    let mut cur = doc;
    for key in parents {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(map) = cur else { return };
        cur = map.entry(*key).or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Value::Object(map) = cur {
        map.insert((*last).to_owned(), value);
    }
}

/// `s` as a JSON string literal, quotes included.
pub(crate) fn quote(s: &str) -> String {
    // Serializing a `str` to JSON has no failure case (serde_json fails only on maps with
    // non-string keys and on a writer's I/O error; a `String` writer has none).
    #[allow(clippy::expect_used)]
    serde_json::to_string(s).expect("a string serializes")
}

/// The evidence of a hunt row, read from the advanced hunting columns SOC queries return most
/// (`DeviceName`, `AccountUpn`, `RemoteIP`, `SHA256`, `ProcessCommandLine`, …) into the kinds
/// an alert's evidence has, so every format maps a row's entities as it maps an alert's (OCSF
/// `evidences`, ECS `host`/`related`, CEF `dhost`/`src`/`fileHash`). The row itself is sent
/// whole as well.
pub(crate) fn row_evidence(row: &serde_json::Map<String, serde_json::Value>) -> Vec<Evidence> {
    let text = |k: &str| {
        row.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let mut out: Vec<Evidence> = Vec::new();
    let mut add = |kind: &str, value: &str| {
        if !out.iter().any(|e| e.kind == kind && e.value == value) {
            out.push(Evidence {
                kind: kind.to_owned(),
                value: value.to_owned(),
            });
        }
    };
    for (kind, keys) in [
        ("device", &["DeviceName", "ComputerName"][..]),
        (
            "user",
            &[
                "AccountUpn",
                "AccountName",
                "InitiatingProcessAccountName",
                "RecipientEmailAddress",
            ][..],
        ),
        (
            "ip",
            &["RemoteIP", "LocalIP", "IPAddress", "SenderIPv4"][..],
        ),
        ("url", &["RemoteUrl", "Url"][..]),
        (
            "process",
            &["ProcessCommandLine", "InitiatingProcessCommandLine"][..],
        ),
    ] {
        for k in keys {
            if let Some(v) = text(k) {
                add(kind, v);
            }
        }
    }
    // A file by its strongest hash, else by name.
    let hash = [("SHA256", 64), ("SHA1", 40), ("MD5", 32)]
        .iter()
        .find_map(|(k, len)| {
            text(k).filter(|h| h.len() == *len && h.bytes().all(|b| b.is_ascii_hexdigit()))
        });
    if let Some(h) = hash.or_else(|| text("FileName")) {
        add("file", h);
    }
    out
}
