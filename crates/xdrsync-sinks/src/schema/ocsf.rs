//! OCSF 1.5 documents: an incident version is an **Incident Finding** (`class_uid` 2005), an
//! alert or SIEM detection version a **Detection Finding** (`class_uid` 2004); both in the
//! Findings category (`category_uid` 2).
//!
//! The attributes mapped (schema.ocsf.io, 1.5.0):
//!
//! | OCSF attribute | incident | alert / detection |
//! |---|---|---|
//! | `activity_id` / `activity_name` | 1 Create (first version), 3 Close (resolved, redirected), else 2 Update | same (resolved → 3) |
//! | `type_uid` / `type_name` | `class_uid × 100 + activity_id` | same |
//! | `time` | `lastUpdateDateTime` (ms) | `lastUpdateDateTime` |
//! | `start_time` | `createdDateTime` | `firstActivityDateTime` or `createdDateTime` |
//! | `end_time` | — | `lastActivityDateTime` |
//! | `severity_id` / `severity` | 1 Informational, 2 Low, 3 Medium, 4 High, 0 Unknown, 99 Other | same |
//! | `status_id` / `status` | active 1 New, inProgress 2 In Progress, awaitingAction 3 On Hold, resolved 4 Resolved, else 99 Other | new 1, inProgress 2, resolved 4, else 99 |
//! | `verdict_id` / `verdict` | truePositive 2, falsePositive 1, informationalExpectedActivity 5 Benign, unknown 0 | — |
//! | `assignee.name` | `assignedTo` (unassigned: `assignee_group.name` `Unassigned`, as OCSF requires one of them) | — (in `unmapped`) |
//! | `src_url` | `incidentWebUrl` | `finding_info.src_url` ← `alertWebUrl` |
//! | `finding_info_list[]` / `finding_info` | one per alert: `uid`, `title`, `created_time`, `modified_time`, `types` (category), `attacks[].technique.uid` | `uid` (item id), `title`, `desc`, `created_time`, `modified_time`, `first_seen_time`, `last_seen_time`, `types`, `src_url`, `attacks` |
//! | `evidences[]` | — | `device.hostname`, `file.hashes`/`file.name`, `process.cmd_line` (with `uid` a hash of it: OCSF needs an id), `user.name`/`email_addr`, `src_endpoint.ip`, `url.url_string`, `email.subject` |
//! | `malware[]` | — | `threatDisplayName` as `name` |
//! | `is_alert` | — | `true` |
//! | `cloud.provider`, `cloud.account.uid` | `Microsoft`, the tenant id | same |
//! | `metadata` | `version` 1.5.0, `product` (Microsoft Defender XDR; `feature.name` = the API), `uid` = event id, `correlation_uid` = incident id, `tenant_uid`, `log_name` = stream, `original_time`, `profiles` `["cloud", "incident"]` | same, `profiles` `["cloud"]` |
//! | `unmapped` | classification, determination, tags, redirect id, the change and what changed | alert id, part, incident id, classification, determination, sources, owner, change |
//!
//! A scheduled hunt's row is a **Detection Finding** too: `activity` Create, `status` New,
//! `time` when a run first returned it, `start_time` the row's `Timestamp` when it has one,
//! `severity` the hunt's, `finding_info` (`uid` = `<hunt>:<row hash>`, `title` = the hunt's
//! name, `types` `["Advanced hunting"]`, `analytic` the hunt as a rule), `evidences` from
//! the row's well-known columns (device, user, IP, URL, process, file), and the whole row in
//! `unmapped.row`.

use serde_json::{Map, Value, json};
use xdrsync_model::{Alert, ChangeKind, Evidence, HuntRow, Incident, Record, Severity};
use xdrsync_store::StoredVersion;

use super::{epoch_millis, set};

/// The OCSF schema version the documents follow.
pub const OCSF_VERSION: &str = "1.5.0";

/// The OCSF document of `v`.
pub fn document(v: &StoredVersion) -> Value {
    let mut doc = match &v.record {
        Record::Incident(i) => incident(v, i),
        Record::Alert(a) => alert(v, a),
        Record::HuntRow(h) => hunt_row(v, h),
    };
    // The customer, for routing: the cloud account's name.
    if let Some(name) = &v.tenant_name {
        set(&mut doc, &["cloud", "account", "name"], json!(name));
    }
    if v.replay {
        set(&mut doc, &["metadata", "labels"], json!(["replay"]));
    }
    doc
}

fn severity(s: &Severity) -> (u8, &'static str) {
    match s {
        Severity::Unknown => (0, "Unknown"),
        Severity::Informational => (1, "Informational"),
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Other(_) => (99, "Other"),
    }
}

fn activity(change: ChangeKind, closed: bool) -> (u8, &'static str) {
    match change {
        _ if closed => (3, "Close"),
        ChangeKind::Created => (1, "Create"),
        ChangeKind::Updated | ChangeKind::AlertAdded | ChangeKind::Redirected => (2, "Update"),
    }
}

fn metadata(v: &StoredVersion, api: &str, correlation: Option<&str>, profiles: &[&str]) -> Value {
    let mut m = json!({
        "version": OCSF_VERSION,
        "product": {
            "name": "Microsoft Defender XDR",
            "vendor_name": "Microsoft",
            "feature": { "name": api },
        },
        "uid": v.event_id,
        "tenant_uid": v.record.tenant(),
        "log_name": v.stream,
        "original_time": v.record.last_update().to_string(),
    });
    if let Some(c) = correlation {
        set(&mut m, &["correlation_uid"], json!(c));
    }
    if !profiles.is_empty() {
        set(&mut m, &["profiles"], json!(profiles));
    }
    m
}

fn attacks(techniques: &[String]) -> Value {
    Value::Array(
        techniques
            .iter()
            .map(|t| json!({ "technique": { "uid": t } }))
            .collect(),
    )
}

fn header(class_uid: u32, class_name: &str, activity: (u8, &str)) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("activity_id".into(), json!(activity.0));
    m.insert("activity_name".into(), json!(activity.1));
    m.insert("category_uid".into(), json!(2));
    m.insert("category_name".into(), json!("Findings"));
    m.insert("class_uid".into(), json!(class_uid));
    m.insert("class_name".into(), json!(class_name));
    m.insert(
        "type_uid".into(),
        json!(u64::from(class_uid) * 100 + u64::from(activity.0)),
    );
    m.insert(
        "type_name".into(),
        json!(format!("{class_name}: {}", activity.1)),
    );
    m
}

fn incident(v: &StoredVersion, i: &Incident) -> Value {
    let closed = matches!(i.status.as_str(), "resolved" | "redirected");
    let mut m = header(2005, "Incident Finding", activity(v.change, closed));
    m.insert("time".into(), json!(epoch_millis(i.last_update)));
    m.insert("start_time".into(), json!(epoch_millis(i.created)));
    let (sev_id, sev) = severity(&i.severity);
    m.insert("severity_id".into(), json!(sev_id));
    m.insert("severity".into(), json!(sev));
    let (status_id, status) = match i.status.as_str() {
        "active" => (1, "New"),
        "inProgress" => (2, "In Progress"),
        "awaitingAction" => (3, "On Hold"),
        "resolved" => (4, "Resolved"),
        _ => (99, "Other"),
    };
    m.insert("status_id".into(), json!(status_id));
    m.insert("status".into(), json!(status));
    if status_id == 99 {
        m.insert("status_detail".into(), json!(i.status));
    }
    let (verdict_id, verdict) = match i.classification.as_str() {
        "truePositive" => (2, "True Positive"),
        "falsePositive" => (1, "False Positive"),
        "informationalExpectedActivity" => (5, "Benign"),
        _ => (0, "Unknown"),
    };
    m.insert("verdict_id".into(), json!(verdict_id));
    m.insert("verdict".into(), json!(verdict));
    match &i.assigned_to {
        Some(a) => {
            m.insert("assignee".into(), json!({ "name": a }));
        }
        // OCSF requires an assignee or an assignee group; Defender's own word for none.
        None => {
            m.insert("assignee_group".into(), json!({ "name": "Unassigned" }));
        }
    }
    if let Some(u) = &i.web_url {
        m.insert("src_url".into(), json!(u));
    }
    m.insert("desc".into(), json!(i.title));
    let infos: Vec<Value> = i
        .alerts
        .iter()
        .map(|a| {
            let mut f = json!({ "uid": a.id, "title": a.title });
            if let Some(t) = a.created {
                set(&mut f, &["created_time"], json!(epoch_millis(t)));
            }
            if let Some(t) = a.last_update {
                set(&mut f, &["modified_time"], json!(epoch_millis(t)));
            }
            if let Some(c) = &a.category {
                set(&mut f, &["types"], json!([c]));
            }
            if !a.mitre_techniques.is_empty() {
                set(&mut f, &["attacks"], attacks(&a.mitre_techniques));
            }
            f
        })
        .collect();
    // Required by the class: an incident without alerts still names itself.
    let infos = if infos.is_empty() {
        vec![json!({ "uid": i.incident_id, "title": i.title })]
    } else {
        infos
    };
    m.insert("finding_info_list".into(), Value::Array(infos));
    m.insert(
        "cloud".into(),
        json!({ "provider": "Microsoft", "account": { "uid": i.tenant_id } }),
    );
    m.insert(
        "metadata".into(),
        metadata(
            v,
            i.api.as_str(),
            Some(i.incident_id.as_str()),
            &["cloud", "incident"],
        ),
    );
    m.insert(
        "unmapped".into(),
        json!({
            "incident_id": i.incident_id,
            "classification": i.classification,
            "determination": i.determination,
            "tags": i.tags,
            "redirect_incident_id": i.redirect_incident_id,
            "change": v.change,
            "changes": v.changes,
        }),
    );
    if let (Some(a), Some(Value::Object(u))) = (&v.origin_action, m.get_mut("unmapped")) {
        u.insert("origin".into(), super::origin(a));
    }
    Value::Object(m)
}

fn alert(v: &StoredVersion, a: &Alert) -> Value {
    let closed = a.status == "resolved";
    let mut m = header(2004, "Detection Finding", activity(v.change, closed));
    m.insert("time".into(), json!(epoch_millis(a.last_update)));
    m.insert(
        "start_time".into(),
        json!(epoch_millis(a.first_activity.unwrap_or(a.created))),
    );
    if let Some(t) = a.last_activity {
        m.insert("end_time".into(), json!(epoch_millis(t)));
    }
    let (sev_id, sev) = severity(&a.severity);
    m.insert("severity_id".into(), json!(sev_id));
    m.insert("severity".into(), json!(sev));
    let (status_id, status) = match a.status.as_str() {
        "new" => (1, "New"),
        "inProgress" => (2, "In Progress"),
        "resolved" => (4, "Resolved"),
        _ => (99, "Other"),
    };
    m.insert("status_id".into(), json!(status_id));
    m.insert("status".into(), json!(status));
    if status_id == 99 {
        m.insert("status_detail".into(), json!(a.status));
    }
    m.insert("is_alert".into(), json!(true));
    let mut info = json!({
        "uid": a.item_id(),
        "title": a.title,
        "created_time": epoch_millis(a.created),
        "modified_time": epoch_millis(a.last_update),
    });
    if let Some(d) = &a.description {
        set(&mut info, &["desc"], json!(d));
    }
    if let Some(t) = a.first_activity {
        set(&mut info, &["first_seen_time"], json!(epoch_millis(t)));
    }
    if let Some(t) = a.last_activity {
        set(&mut info, &["last_seen_time"], json!(epoch_millis(t)));
    }
    if let Some(c) = &a.category {
        set(&mut info, &["types"], json!([c]));
    }
    if let Some(u) = &a.web_url {
        set(&mut info, &["src_url"], json!(u));
    }
    if !a.mitre_techniques.is_empty() {
        set(&mut info, &["attacks"], attacks(&a.mitre_techniques));
    }
    m.insert("finding_info".into(), info);
    if !a.evidence.is_empty() {
        m.insert(
            "evidences".into(),
            Value::Array(a.evidence.iter().map(evidence).collect()),
        );
    }
    if let Some(t) = &a.threat_name {
        m.insert(
            "malware".into(),
            json!([{ "name": t, "classification_ids": [0] }]),
        );
    }
    m.insert(
        "cloud".into(),
        json!({ "provider": "Microsoft", "account": { "uid": a.tenant_id } }),
    );
    m.insert(
        "metadata".into(),
        metadata(
            v,
            a.api.as_str(),
            a.incident_id.as_ref().map(|i| i.as_str()),
            &["cloud"],
        ),
    );
    m.insert(
        "unmapped".into(),
        json!({
            "alert_id": a.alert_id,
            "part": a.part,
            "incident_id": a.incident_id,
            "classification": a.classification,
            "determination": a.determination,
            "service_source": a.service_source,
            "detection_source": a.detection_source,
            "assigned_to": a.assigned_to,
            "resolved": a.resolved,
            "change": v.change,
        }),
    );
    if let (Some(a), Some(Value::Object(u))) = (&v.origin_action, m.get_mut("unmapped")) {
        u.insert("origin".into(), super::origin(a));
    }
    Value::Object(m)
}

fn hunt_row(v: &StoredVersion, h: &HuntRow) -> Value {
    let mut m = header(
        2004,
        "Detection Finding",
        activity(ChangeKind::Created, false),
    );
    m.insert("time".into(), json!(epoch_millis(h.found_at)));
    if let Some(t) = h.time {
        m.insert("start_time".into(), json!(epoch_millis(t)));
    }
    let (sev_id, sev) = severity(&h.severity);
    m.insert("severity_id".into(), json!(sev_id));
    m.insert("severity".into(), json!(sev));
    m.insert("status_id".into(), json!(1));
    m.insert("status".into(), json!("New"));
    m.insert("is_alert".into(), json!(true));
    let mut info = json!({
        "uid": h.item_id(),
        "title": h.hunt,
        "created_time": epoch_millis(h.found_at),
        "types": ["Advanced hunting"],
        // The hunt is the rule that found the row (OCSF `analytic`, type 1 Rule).
        "analytic": { "name": h.hunt, "type_id": 1, "type": "Rule" },
    });
    if let Some(t) = h.time {
        set(&mut info, &["first_seen_time"], json!(epoch_millis(t)));
    }
    m.insert("finding_info".into(), info);
    let evidence = super::row_evidence(&h.row);
    if !evidence.is_empty() {
        m.insert(
            "evidences".into(),
            Value::Array(evidence.iter().map(self::evidence).collect()),
        );
    }
    m.insert(
        "cloud".into(),
        json!({ "provider": "Microsoft", "account": { "uid": h.tenant_id } }),
    );
    m.insert(
        "metadata".into(),
        metadata(v, h.api.as_str(), None, &["cloud"]),
    );
    m.insert(
        "unmapped".into(),
        json!({ "hunt": h.hunt, "row_hash": h.row_hash, "row": h.row }),
    );
    Value::Object(m)
}

/// OCSF `hash.algorithm_id` by length: 1 MD5, 2 SHA-1, 3 SHA-256.
fn hash_algorithm(v: &str) -> Option<u8> {
    if !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match v.len() {
        32 => Some(1),
        40 => Some(2),
        64 => Some(3),
        _ => None,
    }
}

/// The first 16 bytes of SHA-256 of a command line, in hex.
fn process_uid(cmd_line: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(cmd_line.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn evidence(e: &Evidence) -> Value {
    let v = &e.value;
    match e.kind.as_str() {
        "device" => json!({ "device": { "hostname": v, "type_id": 0 } }),
        "file" => match hash_algorithm(v) {
            Some(alg) => {
                json!({ "file": { "name": "", "type_id": 1, "hashes": [{ "algorithm_id": alg, "value": v }] } })
            }
            None => json!({ "file": { "name": v, "type_id": 1 } }),
        },
        // OCSF needs a process id; the normalized evidence keeps the command line only, so
        // the uid is the producer's: a hash of it (the same process line, the same uid).
        "process" => json!({ "process": { "cmd_line": v, "uid": process_uid(v) } }),
        "user" if v.contains('@') => json!({ "user": { "name": v, "email_addr": v } }),
        "user" => json!({ "user": { "name": v } }),
        "ip" => json!({ "src_endpoint": { "ip": v } }),
        "url" => json!({ "url": { "url_string": v } }),
        "mailbox" => json!({ "user": { "email_addr": v } }),
        "message" => json!({ "email": { "subject": v } }),
        other => json!({ "data": { "kind": other, "value": v } }),
    }
}
