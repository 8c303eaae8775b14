//! Syslog headers (RFC 5424, RFC 3164), framing (RFC 6587), and the CEF and LEEF messages.
//!
//! **CEF** (ArcSight "Implementing ArcSight CEF", rev. 25):
//! `CEF:0|Microsoft|Defender XDR|<version>|<signature id>|<name>|<severity>|<extension>`.
//! In the header `\` and `|` are escaped with a backslash; in extension values `\` and `=`
//! are, and CR/LF become `\r`/`\n`; keys are fixed ASCII names. Severity is 0–10
//! (informational 1, low 3, medium 5, high 8, unknown 0).
//!
//! **LEEF** 2.0 (IBM QRadar "Log Event Extended Format"):
//! `LEEF:2.0|Microsoft|Defender XDR|<version>|<event id>|^|key=value^key=value`, with `^`
//! declared as the attribute delimiter; `devTime` in LEEF's default format
//! (`MMM dd yyyy HH:mm:ss.SSS zzz`, UTC). In the header `\` and `|` are escaped; in values `\`
//! and the delimiter are, and CR/LF become `\r`/`\n` (a syslog message is one line).
//!
//! Both carry the same fields: the event id (`cs2` / `eventId`), tenant, item id, change,
//! status, classification, determination, owner, portal link, `seq`, times, and for alerts
//! category, device, IP and file hash from the evidence. A scheduled hunt's row has the
//! signature `hunt:<name>`, the hunt's name and severity, category `Advanced hunting`, the
//! device, user, IP and file of its well-known columns and the whole row as JSON in `msg`.

use std::fmt::Write as _;

use xdrsync_model::{Record, Severity, StreamKind};
use xdrsync_store::StoredVersion;

use super::config::{Framing, Protocol};

/// The product version in CEF and LEEF headers.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// CEF/LEEF severity 0–10.
pub fn severity_0_10(s: &Severity) -> u8 {
    match s {
        Severity::Unknown | Severity::Other(_) => 0,
        Severity::Informational => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
    }
}

/// The syslog severity of an event: high 2 (critical), medium 4 (warning), low 5 (notice),
/// informational and unknown 6 (informational).
pub fn syslog_severity(s: &Severity) -> u8 {
    match s {
        Severity::High => 2,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Informational | Severity::Unknown | Severity::Other(_) => 6,
    }
}

/// Whether `c` could end a record or start a new one in some receiver: every control
/// character (C0 with NUL, DEL, C1 with NEL U+0085) and the Unicode line and paragraph
/// separators.
fn breaks_lines(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Escapes a CEF header field (`|` and `\`); anything that could break the record becomes a
/// space.
pub fn escape_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            c if breaks_lines(c) => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a CEF extension value: `\`, `=`, and CR/LF as CEF's `\r`/`\n`; other characters
/// that could break the record become a space.
pub fn escape_cef_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if breaks_lines(c) => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a LEEF attribute value (delimiter `^`): `\`, `^`, CR/LF as `\r`/`\n`; other
/// characters that could break the record (the tab included) become a space.
pub fn escape_leef_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '^' => out.push_str("\\^"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if breaks_lines(c) => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// One field: `(CEF key, LEEF key (empty: CEF only), value)`.
type Field = (&'static str, &'static str, String);

/// Creation time, category, status, classification and determination (incidents and alerts
/// alike).
fn triage(
    f: &mut Vec<Field>,
    created: xdrsync_model::Timestamp,
    cat: String,
    status: &str,
    classification: &str,
    determination: &str,
) {
    f.push((
        "start",
        "createdTime",
        crate::schema::epoch_millis(created).to_string(),
    ));
    f.push(("cat", "cat", cat));
    f.push(("cs3Label", "", "status".into()));
    f.push(("cs3", "status", status.into()));
    f.push(("cs4Label", "", "classification".into()));
    f.push(("cs4", "classification", classification.into()));
    f.push(("cs5Label", "", "determination".into()));
    f.push(("cs5", "determination", determination.into()));
}

/// The owner and the portal link, when there are.
fn owner_and_link(f: &mut Vec<Field>, owner: &Option<String>, link: &Option<String>) {
    if let Some(o) = owner {
        f.push(("duser", "usrName", o.clone()));
    }
    if let Some(u) = link {
        // CEF's `request` ("the URL accessed"); cs6 carries the tenant's name.
        f.push(("request", "webUrl", u.clone()));
    }
}

/// The fields CEF and LEEF share, in their order.
fn fields(
    v: &StoredVersion,
) -> (
    String,
    String,
    u8,
    Vec<(&'static str, &'static str, String)>,
) {
    let ms = crate::schema::epoch_millis;
    let mut f: Vec<Field> = Vec::new();
    let kind = match v.stream {
        StreamKind::Incidents => "incident",
        StreamKind::Alerts => "alert",
        StreamKind::Detections => "detection",
        StreamKind::Hunts => "hunt",
    };
    // A hunt's rows are all `created`: their signature is the hunt, which is what a SIEM
    // correlates on.
    let signature = match &v.record {
        Record::HuntRow(h) => format!("hunt:{}", h.hunt),
        _ => format!("{kind}:{}", v.change.as_str()),
    };
    f.push(("rt", "devTime", ms(v.record.last_update()).to_string()));
    f.push(("externalId", "externalId", v.record.item_id()));
    f.push(("cs1Label", "", "tenantId".into()));
    f.push(("cs1", "tenantId", v.record.tenant().as_str().into()));
    if let Some(name) = &v.tenant_name {
        f.push(("cs6Label", "", "tenantName".into()));
        f.push(("cs6", "tenantName", name.clone()));
    }
    f.push(("cs2Label", "", "eventId".into()));
    f.push(("cs2", "eventId", v.event_id.clone()));
    f.push(("cn1Label", "", "seq".into()));
    f.push(("cn1", "seq", v.seq.to_string()));
    f.push(("act", "change", v.change.as_str().into()));
    if v.replay {
        // CEF's `reason` ("why the event was generated"); LEEF's own key.
        f.push(("reason", "reason", "replay".into()));
    }
    if let Some(a) = &v.origin_action {
        // A write of ours produced this version (cs1–cs8 are taken, as cs7/cs8 already
        // extend CEF's six); LEEF's own key.
        f.push(("cs9Label", "", "xdrsyncAction".into()));
        f.push(("cs9", "xdrsyncAction", a.clone()));
    }
    let (title, sev) = match &v.record {
        Record::Incident(i) => {
            let cat = "incident".to_owned();
            triage(
                &mut f,
                i.created,
                cat,
                &i.status,
                &i.classification,
                &i.determination,
            );
            owner_and_link(&mut f, &i.assigned_to, &i.web_url);
            if let Some(r) = &i.redirect_incident_id {
                f.push(("cs7Label", "", "redirectIncidentId".into()));
                f.push(("cs7", "redirectIncidentId", r.as_str().into()));
            }
            f.push(("cnt", "alertCount", i.alerts.len().to_string()));
            (i.title.clone(), severity_0_10(&i.severity))
        }
        Record::Alert(a) => {
            let cat = a.category.clone().unwrap_or_else(|| kind.into());
            triage(
                &mut f,
                a.created,
                cat,
                &a.status,
                &a.classification,
                &a.determination,
            );
            owner_and_link(&mut f, &a.assigned_to, &a.web_url);
            if let Some(i) = &a.incident_id {
                f.push(("cs7Label", "", "incidentId".into()));
                f.push(("cs7", "incidentId", i.as_str().into()));
            }
            if let Some(d) = &a.description {
                f.push(("msg", "msg", d.clone()));
            }
            f.push((
                "deviceProcessName",
                "serviceSource",
                a.service_source.clone(),
            ));
            evidence_fields(&mut f, &a.evidence);
            if let Some(t) = &a.threat_name {
                f.push(("cs8Label", "", "threatName".into()));
                f.push(("cs8", "threatName", t.clone()));
            }
            (a.title.clone(), severity_0_10(&a.severity))
        }
        Record::HuntRow(h) => {
            f.push((
                "start",
                "createdTime",
                ms(h.time.unwrap_or(h.found_at)).to_string(),
            ));
            f.push(("cat", "cat", "Advanced hunting".into()));
            let evidence = crate::schema::row_evidence(&h.row);
            if let Some(u) = evidence.iter().find(|e| e.kind == "user") {
                f.push(("suser", "usrName", u.value.clone()));
            }
            evidence_fields(&mut f, &evidence);
            // The whole row, as compact JSON.
            f.push((
                "msg",
                "msg",
                serde_json::Value::Object(h.row.clone()).to_string(),
            ));
            (h.hunt.clone(), severity_0_10(&h.severity))
        }
    };
    (signature, title, sev, f)
}

/// The device, IP and file of an alert's (or a hunt row's) evidence, the first of each.
fn evidence_fields(f: &mut Vec<Field>, evidence: &[xdrsync_model::Evidence]) {
    let find = |k: &str| {
        evidence
            .iter()
            .find(|e| e.kind == k)
            .map(|e| e.value.clone())
    };
    if let Some(h) = find("device") {
        f.push(("dhost", "dstHost", h));
    }
    if let Some(ip) = find("ip") {
        f.push(("src", "src", ip));
    }
    if let Some(h) = find("file") {
        if h.len() >= 32 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
            f.push(("fileHash", "fileHash", h));
        } else {
            f.push(("fname", "fileName", h));
        }
    }
}

/// The CEF message of `v`.
pub fn cef(v: &StoredVersion) -> String {
    let (signature, name, sev, fields) = fields(v);
    let mut out = format!(
        "CEF:0|Microsoft|Defender XDR|{VERSION}|{}|{}|{sev}|",
        escape_header(&signature),
        escape_header(&name)
    );
    let mut first = true;
    for (key, _, value) in fields {
        // CEF has no `cs7`/`cs8`: those go to the flex strings.
        let key = match key {
            "cs7Label" => "flexString1Label",
            "cs7" => "flexString1",
            "cs8Label" => "flexString2Label",
            "cs8" => "flexString2",
            k => k,
        };
        if !first {
            out.push(' ');
        }
        first = false;
        let _ = write!(out, "{key}={}", escape_cef_value(&value));
    }
    out
}

/// The LEEF 2.0 message of `v`.
pub fn leef(v: &StoredVersion) -> String {
    let (signature, name, sev, fields) = fields(v);
    let mut out = format!(
        "LEEF:2.0|Microsoft|Defender XDR|{VERSION}|{}|^|",
        escape_header(&signature)
    );
    let _ = write!(out, "sev={sev}^title={}", escape_leef_value(&name));
    for (_, key, value) in fields {
        match key {
            "" => continue,
            // LEEF's default devTime format, "MMM dd yyyy HH:mm:ss.SSS zzz".
            "devTime" => {
                let at = v.record.last_update().as_datetime();
                let _ = write!(out, "^devTime={}", at.format("%b %d %Y %H:%M:%S%.3f UTC"));
            }
            _ => {
                let _ = write!(out, "^{key}={}", escape_leef_value(&value));
            }
        }
    }
    out
}

/// The syslog header fields a sink holds.
#[derive(Debug, Clone)]
pub struct Header {
    /// RFC 5424 or 3164.
    pub protocol: Protocol,
    /// 0–23.
    pub facility: u8,
    /// HOSTNAME.
    pub hostname: String,
    /// APP-NAME / TAG.
    pub app_name: String,
    /// RFC 5424 SD-ID.
    pub sd_id: String,
}

/// Escapes an RFC 5424 PARAM-VALUE (`"`, `\` and `]`).
fn sd_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if breaks_lines(c) {
            out.push(' ');
            continue;
        }
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Header {
    /// The full syslog message: header then `msg`.
    pub fn message(&self, v: &StoredVersion, msg: &str) -> String {
        let sev = syslog_severity(v.record.severity());
        let pri = u16::from(self.facility) * 8 + u16::from(sev);
        let at = v.record.last_update().as_datetime();
        match self.protocol {
            Protocol::Rfc5424 => {
                let msgid = match v.stream {
                    StreamKind::Incidents => "incident",
                    StreamKind::Alerts => "alert",
                    StreamKind::Detections => "detection",
                    StreamKind::Hunts => "hunt",
                };
                format!(
                    "<{pri}>1 {} {} {} - {msgid} [{} tenant=\"{}\"{} event_id=\"{}\" seq=\"{}\"{}] {msg}",
                    at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
                    self.hostname,
                    self.app_name,
                    self.sd_id,
                    sd_value(v.record.tenant().as_str()),
                    v.tenant_name
                        .as_deref()
                        .map(|n| format!(" tenant_name=\"{}\"", sd_value(n)))
                        .unwrap_or_default(),
                    sd_value(&v.event_id),
                    v.seq,
                    if v.replay { " replay=\"true\"" } else { "" },
                )
            }
            Protocol::Rfc3164 => format!(
                "<{pri}>{} {} {}: {msg}",
                at.format("%b %e %H:%M:%S"),
                self.hostname,
                self.app_name
            ),
        }
    }
}

/// Appends `msg` to a stream buffer with `framing`.
pub fn frame(out: &mut Vec<u8>, msg: &str, framing: Framing) {
    match framing {
        Framing::OctetCounting => {
            out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
            out.extend_from_slice(msg.as_bytes());
        }
        Framing::Newline => {
            out.extend_from_slice(msg.as_bytes());
            out.push(b'\n');
        }
    }
}
