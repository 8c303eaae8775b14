//! ECS documents, as Elastic's `m365_defender` integration maps them (its `incident` and
//! `alert` ingest pipelines; see `shared/docs/peers.md` §2), so dashboards and detection rules
//! written for that integration work on what xdrsync sends.
//!
//! | ECS field | incident | alert / detection |
//! |---|---|---|
//! | `@timestamp` | `lastUpdateDateTime` | `lastUpdateDateTime` |
//! | `event.kind` | `alert` | `alert` |
//! | `event.category` | from `determination`: malware → `malware`, phishing → `email`, else `threat` | same |
//! | `event.type` | `indicator` for a true positive, else `info` | same |
//! | `event.created` | `createdDateTime` | `createdDateTime` |
//! | `event.id` | the incident id | the alert id |
//! | `event.provider` | the first alert's `serviceSource` | `serviceSource` |
//! | `event.severity` | 1–4 from informational … high | same |
//! | `event.url` | `incidentWebUrl` | `alertWebUrl` |
//! | `event.dataset`, `event.module` | `m365_defender.incident`, `m365_defender` | `m365_defender.alert` |
//! | `cloud.account.id`, `cloud.provider` | the tenant id, `azure` | same |
//! | `message` | `displayName` | `title` |
//! | `user.name`, `related.user` | `assignedTo` | `assignedTo` and user evidence |
//! | `threat.tactic.name` | the alerts' `category` | `category` |
//! | `threat.technique.id`, `threat.technique.subtechnique.id` | the alerts' `mitreTechniques` (split at `.`) | `mitreTechniques` |
//! | `host.hostname`, `related.hosts`, `related.ip`, `related.hash`, `file.hash.*`, `process.command_line`, `url.original` | — | evidence |
//! | `m365_defender.incident.*` / `m365_defender.alert.*` | the rest, in snake case | the rest |
//! | `xdrsync.*` | event id, seq, stream, change | same |
//!
//! A scheduled hunt's row: `event.kind` `alert`, `event.category` `threat`, `event.type`
//! `indicator`, `event.dataset` `m365_defender.hunting`, `@timestamp` when a run first
//! returned it (`event.start` the row's `Timestamp`), `rule.name` the hunt, `message` the
//! hunt's name, `host`/`user`/`related`/`file`/`process`/`url` from the row's well-known
//! columns, and the whole row under `m365_defender.hunting.row`.
//!
//! `event.id` follows Elastic (the item id, shared by every version); the version's own id is
//! `xdrsync.event_id`, which is what to use as the document `_id`.

use super::set;
use serde_json::{Value, json};
use xdrsync_model::{Alert, Evidence, HuntRow, Incident, Record, Severity};
use xdrsync_store::StoredVersion;

/// The ECS version the documents follow.
pub const ECS_VERSION: &str = "8.11.0";

/// The ECS document of `v`.
pub fn document(v: &StoredVersion) -> Value {
    let mut doc = match &v.record {
        Record::Incident(i) => incident(v, i),
        Record::Alert(a) => alert(v, a),
        Record::HuntRow(h) => hunt_row(v, h),
    };
    // The customer, for routing: `cloud.account.name` and `organization.name` (ECS's field
    // for the tenant of a multi-tenant source).
    if let Some(name) = &v.tenant_name {
        set(&mut doc, &["cloud", "account", "name"], json!(name));
        set(&mut doc, &["organization"], json!({ "name": name }));
    }
    if v.replay {
        set(&mut doc, &["tags"], json!(["replay"]));
    }
    doc
}

fn severity(s: &Severity) -> Option<u8> {
    match s {
        Severity::Informational => Some(1),
        Severity::Low => Some(2),
        Severity::Medium => Some(3),
        Severity::High => Some(4),
        Severity::Unknown | Severity::Other(_) => None,
    }
}

fn category(determination: &str) -> &'static str {
    match determination {
        "malware" => "malware",
        "phishing" => "email",
        _ => "threat",
    }
}

fn event_type(classification: &str) -> &'static str {
    if classification == "truePositive" {
        "indicator"
    } else {
        "info"
    }
}

/// `T1566.001` is a sub-technique of `T1566`: ECS keeps both levels.
fn techniques<'a>(ids: impl Iterator<Item = &'a String>) -> (Vec<String>, Vec<String>) {
    let (mut tech, mut sub) = (Vec::new(), Vec::new());
    for id in ids {
        let parent = id.split('.').next().unwrap_or(id).to_owned();
        if !tech.contains(&parent) {
            tech.push(parent);
        }
        if id.contains('.') && !sub.contains(id) {
            sub.push(id.clone());
        }
    }
    (tech, sub)
}

fn threat(tactics: Vec<String>, ids: (Vec<String>, Vec<String>)) -> Option<Value> {
    let (tech, sub) = ids;
    if tactics.is_empty() && tech.is_empty() {
        return None;
    }
    let mut t = json!({});
    if !tactics.is_empty() {
        set(&mut t, &["tactic"], json!({ "name": tactics }));
    }
    if !tech.is_empty() {
        set(&mut t, &["technique"], json!({ "id": tech }));
        if !sub.is_empty() {
            set(&mut t, &["technique", "subtechnique"], json!({ "id": sub }));
        }
    }
    Some(t)
}

fn envelope(v: &StoredVersion) -> Value {
    let mut e =
        json!({ "event_id": v.event_id, "seq": v.seq, "stream": v.stream, "change": v.change });
    if let (Some(a), Some(o)) = (&v.origin_action, e.as_object_mut()) {
        o.insert("origin".into(), super::origin(a));
    }
    e
}

fn incident(v: &StoredVersion, i: &Incident) -> Value {
    let mut event = json!({
        "kind": "alert",
        "category": [category(&i.determination)],
        "type": [event_type(&i.classification)],
        "created": i.created.to_string(),
        "id": i.incident_id,
        "dataset": "m365_defender.incident",
        "module": "m365_defender",
    });
    if let Some(p) = i.alerts.first().map(|a| &a.service_source) {
        set(&mut event, &["provider"], json!(p));
    }
    if let Some(s) = severity(&i.severity) {
        set(&mut event, &["severity"], json!(s));
    }
    if let Some(u) = &i.web_url {
        set(&mut event, &["url"], json!(u));
    }
    let mut tactics: Vec<String> = Vec::new();
    for c in i.alerts.iter().filter_map(|a| a.category.as_ref()) {
        if !tactics.contains(c) {
            tactics.push(c.clone());
        }
    }
    let ids = techniques(i.alerts.iter().flat_map(|a| a.mitre_techniques.iter()));
    let alerts: Vec<Value> = i
        .alerts
        .iter()
        .map(|a| {
            json!({
                "id": a.id,
                "title": a.title,
                "severity": a.severity,
                "status": a.status,
                "category": a.category,
                "service_source": a.service_source,
                "detection_source": a.detection_source,
                "created_date_time": a.created,
                "last_update_date_time": a.last_update,
                "mitre_techniques": a.mitre_techniques,
                "evidence_count": a.evidence_count,
            })
        })
        .collect();
    let mut doc = json!({
        "@timestamp": i.last_update.to_string(),
        "ecs": { "version": ECS_VERSION },
        "event": event,
        "cloud": { "account": { "id": i.tenant_id }, "provider": "azure" },
        "message": i.title,
        "m365_defender": { "incident": {
            "id": i.incident_id,
            "display_name": i.title,
            "status": i.status,
            "severity": i.severity,
            "classification": i.classification,
            "determination": i.determination,
            "assigned_to": i.assigned_to,
            "redirect_incident_id": i.redirect_incident_id,
            "web_url": i.web_url,
            "tags": i.tags,
            "created_date_time": i.created,
            "last_update_date_time": i.last_update,
            "tenant_id": i.tenant_id,
            "api": i.api,
            "alert": alerts,
        }},
        "xdrsync": envelope(v),
    });
    if let Some(a) = &i.assigned_to {
        set(&mut doc, &["user"], json!({ "name": a }));
        set(&mut doc, &["related"], json!({ "user": [a] }));
    }
    if let Some(t) = threat(tactics, ids) {
        set(&mut doc, &["threat"], t);
    }
    doc
}

fn alert(v: &StoredVersion, a: &Alert) -> Value {
    let mut event = json!({
        "kind": "alert",
        "category": [category(&a.determination)],
        "type": [event_type(&a.classification)],
        "created": a.created.to_string(),
        "id": a.item_id(),
        "provider": a.service_source,
        "dataset": "m365_defender.alert",
        "module": "m365_defender",
    });
    if let Some(s) = severity(&a.severity) {
        set(&mut event, &["severity"], json!(s));
    }
    if let Some(u) = &a.web_url {
        set(&mut event, &["url"], json!(u));
    }
    let mut doc = json!({
        "@timestamp": a.last_update.to_string(),
        "ecs": { "version": ECS_VERSION },
        "event": event,
        "cloud": { "account": { "id": a.tenant_id }, "provider": "azure" },
        "message": a.title,
        "m365_defender": { "alert": {
            "id": a.alert_id,
            "part": a.part,
            "incident_id": a.incident_id,
            "title": a.title,
            "description": a.description,
            "severity": a.severity,
            "status": a.status,
            "classification": a.classification,
            "determination": a.determination,
            "category": a.category,
            "service_source": a.service_source,
            "detection_source": a.detection_source,
            "created_date_time": a.created,
            "last_update_date_time": a.last_update,
            "first_activity_date_time": a.first_activity,
            "last_activity_date_time": a.last_activity,
            "resolved_date_time": a.resolved,
            "assigned_to": a.assigned_to,
            "threat_display_name": a.threat_name,
            "mitre_techniques": a.mitre_techniques,
            "tenant_id": a.tenant_id,
            "api": a.api,
            "evidence": a.evidence,
        }},
        "xdrsync": envelope(v),
    });
    let users = a.assigned_to.iter().cloned().collect();
    add_evidence(&mut doc, &a.evidence, users);
    if let Some(o) = &a.assigned_to {
        set(&mut doc, &["user"], json!({ "name": o }));
    }
    let tactics = a.category.iter().cloned().collect();
    if let Some(t) = threat(tactics, techniques(a.mitre_techniques.iter())) {
        set(&mut doc, &["threat"], t);
    }
    doc
}

fn hunt_row(v: &StoredVersion, h: &HuntRow) -> Value {
    let mut event = json!({
        "kind": "alert",
        "category": ["threat"],
        "type": ["indicator"],
        "created": h.found_at.to_string(),
        "id": h.item_id(),
        "provider": "advanced_hunting",
        "dataset": "m365_defender.hunting",
        "module": "m365_defender",
    });
    if let Some(s) = severity(&h.severity) {
        set(&mut event, &["severity"], json!(s));
    }
    if let Some(t) = h.time {
        set(&mut event, &["start"], json!(t.to_string()));
    }
    let mut doc = json!({
        "@timestamp": h.found_at.to_string(),
        "ecs": { "version": ECS_VERSION },
        "event": event,
        "rule": { "name": h.hunt },
        "cloud": { "account": { "id": h.tenant_id }, "provider": "azure" },
        "message": h.hunt,
        "m365_defender": { "hunting": {
            "hunt": h.hunt,
            "row_hash": h.row_hash,
            "severity": h.severity,
            "found_date_time": h.found_at,
            "tenant_id": h.tenant_id,
            "api": h.api,
            "row": h.row,
        }},
        "xdrsync": envelope(v),
    });
    let evidence = super::row_evidence(&h.row);
    let first_user = evidence
        .iter()
        .find(|e| e.kind == "user")
        .map(|e| e.value.clone());
    add_evidence(&mut doc, &evidence, Vec::new());
    if let Some(u) = first_user {
        set(&mut doc, &["user"], json!({ "name": u }));
    }
    doc
}

/// `host`, `url`, `process`, `file` and `related.*` from evidence (`users` already related).
fn add_evidence(doc: &mut Value, evidence: &[Evidence], mut users: Vec<String>) {
    let (mut hosts, mut ips, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
    for e in evidence {
        let val = e.value.clone();
        match e.kind.as_str() {
            "device" => {
                if doc.get("host").is_none() {
                    set(doc, &["host"], json!({ "hostname": val }));
                }
                hosts.push(val);
            }
            "user" | "mailbox" => users.push(val),
            "ip" => ips.push(val),
            "url" => {
                set(doc, &["url"], json!({ "original": val }));
            }
            "process" => {
                set(doc, &["process"], json!({ "command_line": val }));
            }
            "file" => {
                let alg = match val.len() {
                    64 => "sha256",
                    40 => "sha1",
                    32 => "md5",
                    _ => "",
                };
                if alg.is_empty() || !val.bytes().all(|b| b.is_ascii_hexdigit()) {
                    set(doc, &["file"], json!({ "name": val }));
                } else {
                    set(doc, &["file"], json!({ "hash": { alg: val } }));
                    hashes.push(val);
                }
            }
            _ => {}
        }
    }
    let mut related = serde_json::Map::new();
    for (k, list) in [
        ("user", users),
        ("hosts", hosts),
        ("ip", ips),
        ("hash", hashes),
    ] {
        if !list.is_empty() {
            related.insert(k.into(), json!(list));
        }
    }
    if !related.is_empty() {
        set(doc, &["related"], Value::Object(related));
    }
}
