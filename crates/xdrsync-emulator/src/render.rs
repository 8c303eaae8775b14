//! Rendering of the one incident model into the legacy XDR and the Graph JSON shapes.

use serde_json::{Map, Value, json};
use xdrsync_model::Timestamp;

use crate::world::{EmuAlert, EmuIncident, Entity};

/// How bodies are shaped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyStyle {
    /// As in Microsoft's documentation: every entity key present, `null` when empty; no
    /// undocumented fields.
    #[default]
    Doc,
    /// As live captures show: null entity keys omitted, plus `incidentUri`, `providerAlertId`,
    /// `detectorId`, `evidenceCreationTime`, `verdict`, `remediationStatus`.
    Live,
}

/// Every legacy entity key (defender-api.md §1.10), in documentation order.
const ENTITY_KEYS: &[&str] = &[
    "entityType",
    "sha1",
    "sha256",
    "fileName",
    "filePath",
    "processId",
    "processCommandLine",
    "processCreationTime",
    "parentProcessId",
    "parentProcessCreationTime",
    "ipAddress",
    "url",
    "registryKey",
    "registryHive",
    "registryValueType",
    "registryValue",
    "accountName",
    "domainName",
    "userSid",
    "aadUserId",
    "userPrincipalName",
    "mailboxDisplayName",
    "mailboxAddress",
    "clusterBy",
    "sender",
    "recipient",
    "subject",
    "deliveryAction",
    "securityGroupId",
    "securityGroupName",
    "deviceId",
];

/// Created times carry seven fractional digits; last-update times are trimmed, as observed.
fn full(t: &Timestamp) -> Value {
    Value::String(t.to_string())
}

fn trimmed(t: &Timestamp) -> Value {
    Value::String(t.to_trimmed_string())
}

fn opt(t: &Option<Timestamp>) -> Value {
    t.as_ref().map_or(Value::Null, full)
}

fn portal_url(id: u64, tenant: &str) -> String {
    format!("https://security.microsoft.com/incidents/{id}?tid={tenant}")
}

/// The legacy `GET /api/incidents` shape of an incident.
pub(crate) fn xdr_incident(inc: &EmuIncident, tenant: &str, style: BodyStyle) -> Value {
    let mut o = Map::new();
    o.insert("incidentId".into(), json!(inc.id));
    if style == BodyStyle::Live {
        o.insert("incidentUri".into(), json!(portal_url(inc.id, tenant)));
    }
    o.insert("redirectIncidentId".into(), json!(inc.redirect));
    o.insert("incidentName".into(), json!(inc.name));
    o.insert("createdTime".into(), full(&inc.created));
    o.insert("lastUpdateTime".into(), trimmed(&inc.last_update));
    o.insert("assignedTo".into(), json!(inc.assigned_to));
    o.insert("classification".into(), json!(inc.classification.legacy));
    o.insert("determination".into(), json!(inc.determination.legacy));
    o.insert("status".into(), json!(inc.status.legacy));
    o.insert("severity".into(), json!(inc.severity.legacy));
    o.insert("tags".into(), json!(inc.tags));
    o.insert(
        "comments".into(),
        inc.comments
            .iter()
            .map(|c| json!({"comment": c.comment, "createdBy": c.created_by, "createdTime": full(&c.created)}))
            .collect(),
    );
    o.insert(
        "alerts".into(),
        inc.alerts
            .iter()
            .map(|a| xdr_alert(a, inc.id, style))
            .collect(),
    );
    Value::Object(o)
}

fn xdr_alert(a: &EmuAlert, incident: u64, style: BodyStyle) -> Value {
    let t = a.template;
    let mut o = Map::new();
    o.insert("alertId".into(), json!(a.id));
    if style == BodyStyle::Live {
        o.insert(
            "providerAlertId".into(),
            json!(a.id.get(2..).unwrap_or(&a.id)),
        );
    }
    o.insert("incidentId".into(), json!(incident));
    o.insert(
        "serviceSource".into(),
        json!(a.service_override.unwrap_or(t.service_source).legacy),
    );
    o.insert("creationTime".into(), full(&a.created));
    o.insert("lastUpdatedTime".into(), full(&a.last_updated));
    o.insert("resolvedTime".into(), opt(&a.resolved));
    o.insert("firstActivity".into(), full(&a.activity.0));
    o.insert("lastActivity".into(), full(&a.activity.1));
    o.insert("title".into(), json!(t.title));
    o.insert("description".into(), json!(t.description));
    o.insert("category".into(), json!(t.category));
    o.insert("status".into(), json!(a.status.legacy));
    o.insert("severity".into(), json!(a.severity.legacy));
    o.insert("investigationId".into(), json!(a.investigation_id));
    o.insert("investigationState".into(), json!(t.investigation_state));
    o.insert("classification".into(), Value::Null);
    o.insert("determination".into(), Value::Null);
    o.insert("detectionSource".into(), json!(t.detection_source.legacy));
    if style == BodyStyle::Live {
        o.insert(
            "detectorId".into(),
            json!(format!("{:x}", t.title.len() * 7919)),
        );
    }
    o.insert("assignedTo".into(), Value::Null);
    o.insert("actorName".into(), Value::Null);
    o.insert("threatFamilyName".into(), json!(t.threat_family));
    o.insert("mitreTechniques".into(), json!(t.mitre));
    o.insert(
        "devices".into(),
        a.devices
            .iter()
            .map(|d| {
                json!({
                    "mdatpDeviceId": d.id, "aadDeviceId": null, "deviceDnsName": d.dns_name,
                    "osPlatform": d.os_platform, "version": d.version, "osProcessor": "x64",
                    "osBuild": d.os_build, "healthStatus": "Active", "riskScore": d.risk_score,
                    "rbacGroupName": d.rbac_group.0, "rbacGroupId": d.rbac_group.1,
                    "firstSeen": full(&d.first_seen)
                })
            })
            .collect(),
    );
    o.insert(
        "entities".into(),
        a.entities.iter().map(|e| xdr_entity(e, a, style)).collect(),
    );
    Value::Object(o)
}

fn xdr_entity(e: &Entity, a: &EmuAlert, style: BodyStyle) -> Value {
    let mut o = Map::new();
    match style {
        BodyStyle::Doc => {
            for key in ENTITY_KEYS {
                let v = if *key == "entityType" {
                    json!(e.kind)
                } else {
                    e.fields.get(key).cloned().unwrap_or(Value::Null)
                };
                o.insert((*key).into(), v);
            }
        }
        BodyStyle::Live => {
            o.insert("entityType".into(), json!(live_entity_type(e.kind)));
            o.insert("evidenceCreationTime".into(), full(&a.created));
            for (k, v) in &e.fields {
                o.insert((*k).into(), v.clone());
            }
            o.insert("verdict".into(), json!("Suspicious"));
            o.insert("remediationStatus".into(), json!("None"));
        }
    }
    Value::Object(o)
}

/// Live captures spell `Mailbox` where the docs say `MailBox`.
fn live_entity_type(kind: &str) -> &str {
    if kind == "MailBox" { "Mailbox" } else { kind }
}

/// How a Graph caller sees enum members: Graph hides members added after v1.0 shipped unless
/// the client sends `Prefer: include-unknown-enum-members` (it answers `unknownFutureValue`
/// instead), and `[behaviour] determination_doc_spelling` picks the determination spellings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct GraphView {
    /// `Prefer: include-unknown-enum-members`.
    pub(crate) prefer: bool,
    /// The doc page's determination spellings.
    pub(crate) doc_determination: bool,
}

impl GraphView {
    /// The view of a request.
    pub(crate) fn of(state: &crate::EmulatorState, headers: &axum::http::HeaderMap) -> Self {
        GraphView {
            prefer: crate::api::prefers_unknown(headers),
            doc_determination: state.behaviour().determination_doc_spelling,
        }
    }

    /// An evolvable member as this caller sees it.
    pub(crate) fn evolvable(self, member: crate::world::Member) -> &'static str {
        const EVOLVABLE: &[&str] = &[
            "awaitingAction",
            "microsoftSentinel",
            "microsoftDefenderForCloud",
        ];
        if !self.prefer && EVOLVABLE.contains(&member.graph) {
            "unknownFutureValue"
        } else {
            member.graph
        }
    }

    /// A determination as this caller sees it.
    pub(crate) fn determination(self, member: crate::world::Member) -> &'static str {
        crate::world::graph_determination(member, self.doc_determination)
    }
}

/// The Graph `/security/incidents` shape of an incident (with `alerts` when expanded).
pub(crate) fn graph_incident(
    inc: &EmuIncident,
    tenant: &str,
    expand_alerts: bool,
    view: GraphView,
) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(inc.id.to_string()));
    o.insert("tenantId".into(), json!(tenant));
    o.insert("status".into(), json!(view.evolvable(inc.status)));
    o.insert("incidentWebUrl".into(), json!(portal_url(inc.id, tenant)));
    o.insert(
        "redirectIncidentId".into(),
        json!(inc.redirect.map(|r| r.to_string())),
    );
    o.insert("displayName".into(), json!(inc.name));
    o.insert("createdDateTime".into(), full(&inc.created));
    o.insert("lastUpdateDateTime".into(), trimmed(&inc.last_update));
    o.insert("assignedTo".into(), json!(inc.assigned_to));
    o.insert("classification".into(), json!(inc.classification.graph));
    o.insert(
        "determination".into(),
        json!(view.determination(inc.determination)),
    );
    o.insert("severity".into(), json!(inc.severity.graph));
    o.insert("customTags".into(), json!(inc.tags));
    o.insert("systemTags".into(), json!([]));
    o.insert("description".into(), Value::Null);
    o.insert(
        "lastModifiedBy".into(),
        json!(
            inc.last_modified_by
                .clone()
                .or_else(|| inc.assigned_to.as_deref().map(|a| format!("API-App:{a}")))
        ),
    );
    o.insert(
        "resolvingComment".into(),
        inc.resolving_comment
            .as_deref()
            .map_or(Value::Null, |r| Value::String(r.to_owned())),
    );
    o.insert("summary".into(), Value::Null);
    o.insert("priorityScore".into(), json!(priority(inc)));
    o.insert(
        "comments".into(),
        inc.comments
            .iter()
            .map(|c| json!({"comment": c.comment, "createdByDisplayName": c.created_by, "createdDateTime": full(&c.created)}))
            .collect(),
    );
    if expand_alerts {
        o.insert(
            "alerts".into(),
            inc.alerts
                .iter()
                .map(|a| graph_alert(a, inc, tenant, view))
                .collect(),
        );
    }
    Value::Object(o)
}

fn priority(inc: &EmuIncident) -> u64 {
    let base: u64 = match inc.severity.graph {
        "high" => 80,
        "medium" => 50,
        "low" => 20,
        _ => 5,
    };
    (base + inc.alerts.len() as u64 * 5).min(100)
}

pub(crate) fn graph_alert(a: &EmuAlert, inc: &EmuIncident, tenant: &str, view: GraphView) -> Value {
    let t = a.template;
    json!({
        "@odata.type": "#microsoft.graph.security.alert",
        "id": a.id,
        "providerAlertId": a.id.get(2..).unwrap_or(&a.id),
        "incidentId": inc.id.to_string(),
        "status": a.status.graph,
        "severity": a.severity.graph,
        "classification": a.verdict.map_or("unknown", |v| v.0.graph),
        "determination": a.verdict.map_or("unknown", |v| view.determination(v.1)),
        "serviceSource": view.evolvable(a.service_override.unwrap_or(t.service_source)),
        "detectionSource": t.detection_source.graph,
        "detectorId": format!("{:x}", t.title.len() * 7919),
        "tenantId": tenant,
        "title": t.title,
        "description": t.description,
        "recommendedActions": "",
        "category": t.category,
        "assignedTo": a.assigned_to,
        "alertWebUrl": format!("https://security.microsoft.com/alerts/{}?tid={tenant}", a.id),
        "incidentWebUrl": portal_url(inc.id, tenant),
        "actorDisplayName": null,
        "threatDisplayName": t.threat_family,
        "threatFamilyName": t.threat_family,
        "mitreTechniques": t.mitre,
        "createdDateTime": full(&a.created),
        "lastUpdateDateTime": full(&a.last_updated),
        "resolvedDateTime": opt(&a.resolved),
        "firstActivityDateTime": full(&a.activity.0),
        "lastActivityDateTime": full(&a.activity.1),
        "comments": a.comments.iter().map(|c| json!({"comment": c.comment, "createdByDisplayName": c.created_by, "createdDateTime": full(&c.created)})).collect::<Vec<_>>(),
        "evidence": graph_evidence(a),
        "systemTags": [],
    })
}

fn graph_evidence(a: &EmuAlert) -> Vec<Value> {
    let created = full(&a.created);
    let base = |odata: &str, roles: Vec<&str>| -> Map<String, Value> {
        let mut o = Map::new();
        o.insert(
            "@odata.type".into(),
            json!(format!("#microsoft.graph.security.{odata}")),
        );
        o.insert("createdDateTime".into(), created.clone());
        o.insert("verdict".into(), json!("suspicious"));
        o.insert("remediationStatus".into(), json!("none"));
        o.insert("remediationStatusDetails".into(), Value::Null);
        o.insert("roles".into(), json!(roles));
        o.insert("detailedRoles".into(), json!([]));
        o.insert("tags".into(), json!([]));
        o
    };
    let mut out = Vec::new();
    for d in &a.devices {
        let mut o = base("deviceEvidence", vec![]);
        o.insert("firstSeenDateTime".into(), full(&d.first_seen));
        o.insert("mdeDeviceId".into(), json!(d.id));
        o.insert("azureAdDeviceId".into(), Value::Null);
        o.insert("deviceDnsName".into(), json!(d.dns_name));
        o.insert("osPlatform".into(), json!(d.os_platform));
        o.insert("osBuild".into(), json!(d.os_build));
        o.insert("version".into(), json!(d.version));
        o.insert("healthStatus".into(), json!("active"));
        o.insert("riskScore".into(), json!(d.risk_score.to_lowercase()));
        o.insert("rbacGroupId".into(), json!(d.rbac_group.1));
        o.insert("rbacGroupName".into(), json!(d.rbac_group.0));
        o.insert("onboardingStatus".into(), json!("onboarded"));
        o.insert("defenderAvStatus".into(), json!("updated"));
        o.insert("loggedOnUsers".into(), json!([]));
        out.push(Value::Object(o));
    }
    for e in &a.entities {
        let f = |k: &str| e.fields.get(k).cloned().unwrap_or(Value::Null);
        let file_details = || {
            json!({"sha1": f("sha1"), "sha256": f("sha256"), "fileName": f("fileName"),
                   "filePath": f("filePath"), "fileSize": null, "filePublisher": null,
                   "signer": null, "issuer": null})
        };
        let user_account = || {
            json!({"accountName": f("accountName"), "domainName": f("domainName"),
                   "userSid": f("userSid"), "azureAdUserId": f("aadUserId"),
                   "userPrincipalName": f("userPrincipalName"), "displayName": null})
        };
        let o = match e.kind {
            "File" => {
                let mut o = base("fileEvidence", vec![]);
                o.insert("detectionStatus".into(), json!("detected"));
                o.insert("mdeDeviceId".into(), f("deviceId"));
                o.insert("fileDetails".into(), file_details());
                o
            }
            "Process" => {
                let mut o = base("processEvidence", vec![]);
                o.insert("processId".into(), f("processId"));
                o.insert("parentProcessId".into(), f("parentProcessId"));
                o.insert("processCommandLine".into(), f("processCommandLine"));
                o.insert("processCreationDateTime".into(), f("processCreationTime"));
                o.insert(
                    "parentProcessCreationDateTime".into(),
                    f("parentProcessCreationTime"),
                );
                o.insert("detectionStatus".into(), json!("detected"));
                o.insert("mdeDeviceId".into(), f("deviceId"));
                o.insert("imageFile".into(), file_details());
                o.insert("parentProcessImageFile".into(), Value::Null);
                o.insert("userAccount".into(), Value::Null);
                o
            }
            "User" => {
                let mut o = base("userEvidence", vec!["compromised"]);
                o.insert("userAccount".into(), user_account());
                o
            }
            "Ip" => {
                let mut o = base("ipEvidence", vec![]);
                o.insert("ipAddress".into(), f("ipAddress"));
                o.insert("countryLetterCode".into(), Value::Null);
                o
            }
            "Url" => {
                let mut o = base("urlEvidence", vec![]);
                o.insert("url".into(), f("url"));
                o
            }
            "MailBox" => {
                let mut o = base("mailboxEvidence", vec![]);
                o.insert("displayName".into(), f("mailboxDisplayName"));
                o.insert("primaryAddress".into(), f("mailboxAddress"));
                o.insert(
                    "userAccount".into(),
                    json!({"userPrincipalName": f("userPrincipalName")}),
                );
                o
            }
            "MailMessage" => {
                let mut o = base("analyzedMessageEvidence", vec![]);
                o.insert("recipientEmailAddress".into(), f("recipient"));
                o.insert("p1Sender".into(), json!({"emailAddress": f("sender")}));
                o.insert("subject".into(), f("subject"));
                o.insert("deliveryAction".into(), json!("delivered"));
                o
            }
            "MailCluster" => {
                let mut o = base("mailClusterEvidence", vec![]);
                o.insert("clusterBy".into(), f("clusterBy"));
                o
            }
            other => base(&format!("{}Evidence", other.to_lowercase()), vec![]),
        };
        out.push(Value::Object(o));
    }
    // One of the SDK's other evidence types, so clients meet types they do not know.
    let (kind, props) = crate::evidence_types::extra_for(&a.id);
    let mut o = base(kind, vec!["contextual"]);
    if let Value::Object(p) = props {
        o.extend(p);
    }
    out.push(Value::Object(o));
    out
}
