//! The normalized alert schema, and its mapping from the three alert APIs.
//!
//! Alerts are read on their own (not only inside incidents) from Graph `alerts_v2`, the legacy
//! Defender for Endpoint `GET /api/alerts`, and the retired SIEM alert exporter. Like incidents,
//! the legacy spellings are mapped into Graph's vocabulary (defender-api.md §2.5, §3.1), and an
//! alert has one identity `(tenant, alert id, last update)` whichever of Graph or MDE it was read
//! from, so a tenant can move off the MDE API without a duplicate or a gap.
//!
//! The SIEM API is different in kind: it exports one **detection** per alert entity (`AlertPart`,
//! `FullId = "<alert id>:<part>"`), versioned by `LastProcessedTimeUtc`. A detection is
//! normalized into the same [`Alert`] shape with `part` set, and its identity is its `FullId`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::normalize::{
    ALERT_STATUS_MAP, CLASSIFICATION_MAP, DETECTION_SOURCE_MAP, DETERMINATION_MAP, Reader,
    enum_value, graph_determination, read_id, reader, type_name,
};
use crate::sparse::{Fields, Keep};
use crate::{IncidentId, NormalizeError, Severity, TenantId, Timestamp};

/// The fields [`normalize_graph_alert`] reads (for [`crate::sparse::parse`]); a field read
/// there must be listed here.
pub static GRAPH_ALERT_FIELDS: Fields = Fields(&[
    ("id", Keep::Value),
    ("incidentId", Keep::Value),
    ("title", Keep::Value),
    ("description", Keep::Value),
    ("severity", Keep::Value),
    ("status", Keep::Value),
    ("classification", Keep::Value),
    ("determination", Keep::Value),
    ("category", Keep::Value),
    ("serviceSource", Keep::Value),
    ("detectionSource", Keep::Value),
    ("createdDateTime", Keep::Value),
    ("lastUpdateDateTime", Keep::Value),
    ("firstActivityDateTime", Keep::Value),
    ("lastActivityDateTime", Keep::Value),
    ("resolvedDateTime", Keep::Value),
    ("assignedTo", Keep::Value),
    ("mitreTechniques", Keep::Value),
    ("threatDisplayName", Keep::Value),
    ("alertWebUrl", Keep::Value),
    ("evidence", Keep::Each(&GRAPH_EVIDENCE_FIELDS)),
]);

static GRAPH_EVIDENCE_FIELDS: Fields = Fields(&[
    ("@odata.type", Keep::Value),
    ("deviceDnsName", Keep::Value),
    ("mdeDeviceId", Keep::Value),
    ("fileDetails", Keep::Value),
    ("processCommandLine", Keep::Value),
    ("imageFile", Keep::Value),
    ("userAccount", Keep::Value),
    ("ipAddress", Keep::Value),
    ("url", Keep::Value),
    ("primaryAddress", Keep::Value),
    ("subject", Keep::Value),
    ("networkMessageId", Keep::Value),
    // What `identifying_value` reads, for the types without their own rule.
    ("registryKey", Keep::Value),
    ("activeDirectoryDomainName", Keep::Value),
    ("agentName", Keep::Value),
    ("messageId", Keep::Value),
    ("fullResourceName", Keep::Value),
    ("amazonResourceId", Keep::Value),
    ("resourceId", Keep::Value),
    ("baseUrl", Keep::Value),
    ("webUrl", Keep::Value),
    ("domainName", Keep::Value),
    ("imageId", Keep::Value),
    ("containerId", Keep::Value),
    ("displayName", Keep::Value),
    ("servicePrincipalName", Keep::Value),
    ("name", Keep::Value),
    ("login", Keep::Value),
    ("value", Keep::Value),
    ("appId", Keep::Value),
    ("deviceName", Keep::Value),
    ("host", Keep::Value),
    ("deviceId", Keep::Value),
    ("registry", Keep::Value),
    ("requestId", Keep::Value),
    ("sessionId", Keep::Value),
    ("configurationId", Keep::Value),
    ("destinationAddress", Keep::Value),
    ("macAddress", Keep::Value),
    ("signatureHash", Keep::Value),
    ("cloudResource", Keep::Value),
    ("clusterByValue", Keep::Value),
    ("query", Keep::Value),
    ("clusterBy", Keep::Value),
]);

/// The fields [`normalize_mde_alert`] reads; a field read there must be listed here.
pub static MDE_ALERT_FIELDS: Fields = Fields(&[
    ("id", Keep::Value),
    ("incidentId", Keep::Value),
    ("title", Keep::Value),
    ("description", Keep::Value),
    ("severity", Keep::Value),
    ("status", Keep::Value),
    ("classification", Keep::Value),
    ("determination", Keep::Value),
    ("category", Keep::Value),
    ("detectionSource", Keep::Value),
    ("alertCreationTime", Keep::Value),
    ("lastUpdateTime", Keep::Value),
    ("firstEventTime", Keep::Value),
    ("lastEventTime", Keep::Value),
    ("resolvedTime", Keep::Value),
    ("assignedTo", Keep::Value),
    ("mitreTechniques", Keep::Value),
    ("threatName", Keep::Value),
    ("computerDnsName", Keep::Value),
    ("relatedUser", Keep::Value),
    ("evidence", Keep::Each(&MDE_EVIDENCE_FIELDS)),
]);

static MDE_EVIDENCE_FIELDS: Fields = Fields(&[
    ("entityType", Keep::Value),
    ("sha256", Keep::Value),
    ("sha1", Keep::Value),
    ("fileName", Keep::Value),
    ("processCommandLine", Keep::Value),
    ("userPrincipalName", Keep::Value),
    ("domainName", Keep::Value),
    ("accountName", Keep::Value),
    ("ipAddress", Keep::Value),
    ("url", Keep::Value),
    ("mailboxAddress", Keep::Value),
    ("registryKey", Keep::Value),
    ("registryValue", Keep::Value),
    ("registryValueName", Keep::Value),
    ("securityGroupName", Keep::Value),
    ("securityGroupId", Keep::Value),
    ("subject", Keep::Value),
    ("clusterBy", Keep::Value),
    ("clusterByValue", Keep::Value),
]);

/// Which API an alert version was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertApi {
    /// Microsoft Graph `/v1.0/security/alerts_v2`.
    Graph,
    /// Defender for Endpoint `GET /api/alerts` (retiring with the legacy APIs).
    Mde,
    /// The SIEM alert exporter `GET /api/alerts` on `wdatp-alertexporter-*` (retired).
    Siem,
}

impl AlertApi {
    /// The API's stable name, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertApi::Graph => "graph",
            AlertApi::Mde => "mde",
            AlertApi::Siem => "siem",
        }
    }
}

/// One thing an alert points at: a device, file, process, user, IP, URL, mailbox ….
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// `device`, `file`, `process`, `user`, `ip`, `url`, `mailbox`, `message`, or the API's
    /// own name for anything else.
    pub kind: String,
    /// The identifying value: a DNS name, SHA-256 (or SHA-1, or file name), command line, UPN
    /// (or `domain\account`), address, URL.
    pub value: String,
}

/// One alert version (or, from the SIEM API, one detection version) in the normalized schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The tenant the alert belongs to.
    pub tenant_id: TenantId,
    /// `id` (Graph, MDE) / `AlertId` (SIEM).
    pub alert_id: String,
    /// SIEM only: which of the alert's entities this detection is (`AlertPart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u32>,
    /// The API this version was read from.
    pub api: AlertApi,
    /// The incident the alert belongs to, if the API says.
    pub incident_id: Option<IncidentId>,
    /// Alert title.
    pub title: String,
    /// Alert description.
    pub description: Option<String>,
    /// Alert severity.
    pub severity: Severity,
    /// Graph spelling: `new`, `inProgress`, `resolved` (`unknown` from the SIEM API).
    pub status: String,
    /// Graph spelling: `unknown`, `truePositive`, `falsePositive`, ….
    pub classification: String,
    /// Graph spelling: `unknown`, `malware`, `phishing`, ….
    pub determination: String,
    /// MITRE-aligned category, e.g. `Malware`.
    pub category: Option<String>,
    /// Graph spelling, e.g. `microsoftDefenderForEndpoint`.
    pub service_source: String,
    /// Graph spelling, e.g. `antivirus`.
    pub detection_source: String,
    /// `createdDateTime` / `alertCreationTime` / `AlertTime`.
    pub created: Timestamp,
    /// `lastUpdateDateTime` / `lastUpdateTime` / `LastProcessedTimeUtc`: with the ids, the
    /// version identity.
    pub last_update: Timestamp,
    /// First activity.
    pub first_activity: Option<Timestamp>,
    /// Last activity.
    pub last_activity: Option<Timestamp>,
    /// When it was resolved.
    pub resolved: Option<Timestamp>,
    /// Owner, if assigned.
    pub assigned_to: Option<String>,
    /// MITRE ATT&CK technique ids.
    pub mitre_techniques: Vec<String>,
    /// `threatDisplayName` / `threatName` / `ThreatName`.
    pub threat_name: Option<String>,
    /// Link to the alert in the Defender portal.
    pub web_url: Option<String>,
    /// What the alert points at.
    pub evidence: Vec<Evidence>,
}

impl Alert {
    /// The item id in its stream: the alert id, or `<alert id>:<part>` for a SIEM detection.
    pub fn item_id(&self) -> String {
        match self.part {
            Some(p) => format!("{}:{p}", self.alert_id),
            None => self.alert_id.clone(),
        }
    }
}

fn incident_of(r: &Reader<'_>, field: &'static str) -> Result<Option<IncidentId>, NormalizeError> {
    Ok(read_id(r.get(field))
        .map_err(|e| r.invalid(field, e))?
        .map(IncidentId::new))
}

fn text(obj: &Map<String, Value>, path: &[&str]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut v = obj.get(*first)?;
    for k in rest {
        v = v.get(k)?;
    }
    v.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

fn push(out: &mut Vec<Evidence>, kind: &str, value: Option<String>) {
    if let Some(value) = value {
        let e = Evidence {
            kind: kind.to_owned(),
            value,
        };
        if !out.contains(&e) {
            out.push(e);
        }
    }
}

fn user_name(domain: Option<String>, account: Option<String>) -> Option<String> {
    match (domain, account) {
        (Some(d), Some(a)) => Some(format!("{d}\\{a}")),
        (None, a) => a,
        (Some(_), None) => None,
    }
}

/// What names an evidence item of a type without its own rule (a Kubernetes pod, a SAS token,
/// a GitHub repository, a type added after this release): the first of the properties such
/// types are known by, so a new type still says what it points at.
fn identifying_value(o: &Map<String, Value>) -> Option<String> {
    IDENTIFYING.iter().find_map(|k| text(o, k))
}

/// [`identifying_value`]'s properties, most telling first (each top-level name is listed in
/// [`GRAPH_EVIDENCE_FIELDS`], which the sparse parse keeps).
const IDENTIFYING: &[&[&str]] = &[
    &["registryKey"],
    &["activeDirectoryDomainName"],
    &["agentName"],
    &["fullResourceName"],
    &["amazonResourceId"],
    &["resourceId"],
    &["url"],
    &["baseUrl"],
    &["webUrl"],
    &["domainName"],
    &["imageId"],
    &["containerId"],
    &["networkMessageId"],
    &["messageId"],
    &["displayName"],
    &["servicePrincipalName"],
    &["name"],
    &["login"],
    &["value"],
    &["appId"],
    &["deviceName"],
    &["host", "deviceDnsName"],
    &["deviceId"],
    &["registry"],
    &["requestId"],
    &["sessionId"],
    &["configurationId"],
    &["destinationAddress", "ipAddress"],
    &["ipAddress", "ipAddress"],
    &["macAddress"],
    &["signatureHash"],
    &["cloudResource", "resourceId"],
    &["clusterByValue"],
    &["query"],
    &["clusterBy"],
];

/// Graph `evidence[]` (typed by `@odata.type`) → [`Evidence`].
fn graph_evidence(items: &[Value]) -> Vec<Evidence> {
    let mut out = Vec::new();
    for o in items.iter().filter_map(Value::as_object) {
        let odata = o.get("@odata.type").and_then(Value::as_str).unwrap_or("");
        let kind = odata
            .rsplit('.')
            .next()
            .unwrap_or("")
            .trim_end_matches("Evidence");
        match kind {
            "device" => push(
                &mut out,
                "device",
                text(o, &["deviceDnsName"]).or_else(|| text(o, &["mdeDeviceId"])),
            ),
            "file" => push(
                &mut out,
                "file",
                text(o, &["fileDetails", "sha256"])
                    .or_else(|| text(o, &["fileDetails", "sha1"]))
                    .or_else(|| text(o, &["fileDetails", "fileName"])),
            ),
            "process" => push(
                &mut out,
                "process",
                text(o, &["processCommandLine"]).or_else(|| text(o, &["imageFile", "fileName"])),
            ),
            "user" => push(
                &mut out,
                "user",
                text(o, &["userAccount", "userPrincipalName"]).or_else(|| {
                    user_name(
                        text(o, &["userAccount", "domainName"]),
                        text(o, &["userAccount", "accountName"]),
                    )
                }),
            ),
            "ip" => push(&mut out, "ip", text(o, &["ipAddress"])),
            "url" => push(&mut out, "url", text(o, &["url"])),
            "mailbox" => push(&mut out, "mailbox", text(o, &["primaryAddress"])),
            "analyzedMessage" => push(
                &mut out,
                "message",
                text(o, &["subject"]).or_else(|| text(o, &["networkMessageId"])),
            ),
            other if !other.is_empty() => push(
                &mut out,
                other,
                Some(identifying_value(o).unwrap_or_default()),
            ),
            _ => {}
        }
    }
    out
}

/// Normalizes one alert of Graph's `GET /v1.0/security/alerts_v2`.
pub fn normalize_graph_alert(tenant: &TenantId, raw: &Value) -> Result<Alert, NormalizeError> {
    let (r, id) = reader(raw, "an alert", "id")?;
    Ok(Alert {
        tenant_id: tenant.clone(),
        alert_id: id,
        part: None,
        api: AlertApi::Graph,
        incident_id: incident_of(&r, "incidentId")?,
        title: r.str_opt("title")?.unwrap_or_default(),
        description: r.str_opt("description")?,
        severity: Severity::parse(&r.str_opt("severity")?.unwrap_or_default()),
        status: r.str_or("status", "unknown")?,
        classification: r.str_or("classification", "unknown")?,
        determination: graph_determination(r.str_or("determination", "unknown")?),
        category: r.str_opt("category")?,
        service_source: r.str_or("serviceSource", "unknown")?,
        detection_source: r.str_or("detectionSource", "unknown")?,
        created: r.time("createdDateTime")?,
        last_update: r.time("lastUpdateDateTime")?,
        first_activity: r.time_opt("firstActivityDateTime"),
        last_activity: r.time_opt("lastActivityDateTime"),
        resolved: r.time_opt("resolvedDateTime"),
        assigned_to: r.str_opt("assignedTo")?,
        mitre_techniques: r.strings("mitreTechniques"),
        threat_name: r.str_opt("threatDisplayName")?,
        web_url: r.str_opt("alertWebUrl")?,
        evidence: r
            .get("evidence")
            .and_then(Value::as_array)
            .map(|a| graph_evidence(a))
            .unwrap_or_default(),
    })
}

/// Normalizes one alert of the Defender for Endpoint `GET /api/alerts` (with or without
/// `$expand=evidence`).
pub fn normalize_mde_alert(tenant: &TenantId, raw: &Value) -> Result<Alert, NormalizeError> {
    let (r, id) = reader(raw, "an alert", "id")?;
    let mut evidence = Vec::new();
    push(&mut evidence, "device", r.str_opt("computerDnsName")?);
    let o = r.obj;
    push(
        &mut evidence,
        "user",
        user_name(
            text(o, &["relatedUser", "domainName"]),
            text(o, &["relatedUser", "userName"]),
        ),
    );
    for e in r
        .get("evidence")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let kind = text(e, &["entityType"]).unwrap_or_default();
        legacy_entity(&mut evidence, &kind, |k| text(e, &[k]));
    }
    Ok(Alert {
        tenant_id: tenant.clone(),
        alert_id: id,
        part: None,
        api: AlertApi::Mde,
        incident_id: incident_of(&r, "incidentId")?,
        title: r.str_opt("title")?.unwrap_or_default(),
        description: r.str_opt("description")?,
        severity: Severity::parse(&r.str_opt("severity")?.unwrap_or_default()),
        status: enum_value(r.str_opt("status")?, ALERT_STATUS_MAP),
        classification: enum_value(r.str_opt("classification")?, CLASSIFICATION_MAP),
        determination: enum_value(r.str_opt("determination")?, DETERMINATION_MAP),
        category: r.str_opt("category")?,
        // Every alert of this API is an endpoint alert.
        service_source: "microsoftDefenderForEndpoint".into(),
        detection_source: enum_value(r.str_opt("detectionSource")?, DETECTION_SOURCE_MAP),
        created: r.time("alertCreationTime")?,
        last_update: r.time("lastUpdateTime")?,
        first_activity: r.time_opt("firstEventTime"),
        last_activity: r.time_opt("lastEventTime"),
        resolved: r.time_opt("resolvedTime"),
        assigned_to: r.str_opt("assignedTo")?,
        mitre_techniques: r.strings("mitreTechniques"),
        threat_name: r.str_opt("threatName")?,
        web_url: None,
        evidence,
    })
}

/// The legacy (MDE evidence, SIEM detection) entity fields → [`Evidence`].
fn legacy_entity(out: &mut Vec<Evidence>, kind: &str, f: impl Fn(&str) -> Option<String>) {
    match kind {
        "File" => push(
            out,
            "file",
            f("sha256").or_else(|| f("sha1")).or_else(|| f("fileName")),
        ),
        "Process" => push(
            out,
            "process",
            f("processCommandLine").or_else(|| f("fileName")),
        ),
        "User" => push(
            out,
            "user",
            f("userPrincipalName").or_else(|| user_name(f("domainName"), f("accountName"))),
        ),
        "Ip" => push(out, "ip", f("ipAddress")),
        "Url" => push(out, "url", f("url")),
        "MailBox" | "Mailbox" => push(out, "mailbox", f("mailboxAddress")),
        // As Graph names them (registryKeyEvidence / registryValueEvidence, identified by
        // the key), so an alert read from either API has the same evidence.
        "Registry" => push(
            out,
            if f("registryValue").is_some() || f("registryValueName").is_some() {
                "registryValue"
            } else {
                "registryKey"
            },
            f("registryKey"),
        ),
        "SecurityGroup" => push(
            out,
            "securityGroup",
            f("securityGroupName").or_else(|| f("securityGroupId")),
        ),
        "MailMessage" => push(out, "message", f("subject")),
        "MailCluster" => push(
            out,
            "mailCluster",
            f("clusterByValue").or_else(|| f("clusterBy")),
        ),
        _ => {}
    }
}

/// Normalizes one detection of the SIEM alert exporter (`GET …/api/alerts`, a bare array).
pub fn normalize_siem_detection(tenant: &TenantId, raw: &Value) -> Result<Alert, NormalizeError> {
    let (r, id) = reader(raw, "a detection", "AlertId")?;
    let part = match r.get("AlertPart") {
        None => 0,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| r.invalid("AlertPart", format!("{n} is not a part number")))?,
        Some(other) => {
            return Err(r.invalid(
                "AlertPart",
                format!("expected a number, got {}", type_name(other)),
            ));
        }
    };
    let o = r.obj;
    let mut evidence = Vec::new();
    push(&mut evidence, "device", text(o, &["ComputerDnsName"]));
    push(
        &mut evidence,
        "file",
        text(o, &["Sha256"])
            .or_else(|| text(o, &["Sha1"]))
            .or_else(|| text(o, &["FileName"])),
    );
    push(&mut evidence, "process", text(o, &["CommandLine"]));
    push(
        &mut evidence,
        "user",
        user_name(text(o, &["UserDomain"]), text(o, &["UserName"])),
    );
    push(&mut evidence, "ip", text(o, &["IpAddress"]));
    push(&mut evidence, "url", text(o, &["Url"]));
    // No incident id field: the incident link ends with it.
    let incident_id = text(o, &["IncidentLinkToMTP"])
        .or_else(|| text(o, &["IncidentLinkToWDATP"]))
        .and_then(|l| l.rsplit('/').next().map(str::to_owned))
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
        .map(IncidentId::new);
    Ok(Alert {
        tenant_id: tenant.clone(),
        alert_id: id,
        part: Some(part),
        api: AlertApi::Siem,
        incident_id,
        title: r.str_opt("AlertTitle")?.unwrap_or_default(),
        description: r.str_opt("Description")?,
        severity: Severity::parse(&r.str_opt("Severity")?.unwrap_or_default()),
        status: "unknown".into(),
        classification: "unknown".into(),
        determination: "unknown".into(),
        category: r.str_opt("Category")?,
        service_source: "microsoftDefenderForEndpoint".into(),
        detection_source: enum_value(r.str_opt("Source")?, DETECTION_SOURCE_MAP),
        created: r.time("AlertTime")?,
        last_update: r.time("LastProcessedTimeUtc")?,
        first_activity: None,
        last_activity: None,
        resolved: None,
        assigned_to: None,
        mitre_techniques: Vec::new(),
        threat_name: r.str_opt("ThreatName")?,
        web_url: r.str_opt("LinkToMTP")?,
        evidence,
    })
}

#[cfg(test)]
mod tests {

    /// The sparse parse keeps what `identifying_value` reads.
    #[test]
    fn identifying_properties_survive_the_sparse_parse() {
        for path in IDENTIFYING {
            let top = path.first().unwrap();
            assert!(
                GRAPH_EVIDENCE_FIELDS.0.iter().any(|(k, _)| k == top),
                "{top} is read but not kept"
            );
        }
    }

    use serde_json::json;

    use super::*;

    fn tenant() -> TenantId {
        TenantId::canonical("cfcdbe43-0000-0000-0000-000000000001")
    }

    /// One alert in Graph's and MDE's shapes normalizes to the same record, so the stream keeps
    /// one identity when a tenant moves from the MDE API to Graph.
    #[test]
    fn mde_and_graph_shapes_of_one_alert_normalize_alike() {
        let graph = normalize_graph_alert(
            &tenant(),
            &json!({
                "id": "da637551227677560813_-961444813", "incidentId": "28282",
                "status": "inProgress", "severity": "medium", "classification": "truePositive",
                "determination": "malware", "serviceSource": "microsoftDefenderForEndpoint",
                "detectionSource": "antivirus", "title": "Mimikatz", "description": "d",
                "category": "CredentialAccess", "assignedTo": "ana@contoso.com",
                "createdDateTime": "2026-11-20T10:00:00.1234567Z",
                "lastUpdateDateTime": "2026-11-20T11:00:00.5Z",
                "firstActivityDateTime": "2026-11-20T09:59:00Z",
                "lastActivityDateTime": "2026-11-20T09:59:30Z",
                "mitreTechniques": ["T1003"], "threatDisplayName": "Mimikatz",
                "evidence": [
                    {"@odata.type": "#microsoft.graph.security.deviceEvidence", "deviceDnsName": "pc1.contoso.com"},
                    {"@odata.type": "#microsoft.graph.security.userEvidence", "userAccount": {"accountName": "ana", "domainName": "CONTOSO"}}
                ]
            }),
        )
        .unwrap();
        let mde = normalize_mde_alert(
            &tenant(),
            &json!({
                "id": "da637551227677560813_-961444813", "incidentId": 28282,
                "status": "InProgress", "severity": "Medium", "classification": "TruePositive",
                "determination": "Malware", "detectionSource": "WindowsDefenderAv",
                "title": "Mimikatz", "description": "d", "category": "CredentialAccess",
                "assignedTo": "ana@contoso.com",
                "alertCreationTime": "2026-11-20T10:00:00.1234567Z",
                "lastUpdateTime": "2026-11-20T11:00:00.5000000Z",
                "firstEventTime": "2026-11-20T09:59:00Z", "lastEventTime": "2026-11-20T09:59:30Z",
                "mitreTechniques": ["T1003"], "threatName": "Mimikatz",
                "computerDnsName": "pc1.contoso.com",
                "relatedUser": {"userName": "ana", "domainName": "CONTOSO"}
            }),
        )
        .unwrap();
        let same_api = Alert {
            api: AlertApi::Graph,
            ..mde
        };
        assert_eq!(same_api, graph);
        assert_eq!(graph.item_id(), "da637551227677560813_-961444813");
    }

    #[test]
    fn siem_detection_is_one_part_of_an_alert() {
        let d = normalize_siem_detection(
            &tenant(),
            &json!({
                "AlertTime": "2026-11-20T10:00:00Z", "ComputerDnsName": "pc1.contoso.com",
                "AlertTitle": "Mimikatz", "Category": "CredentialAccess", "Severity": "High",
                "AlertId": "da1", "AlertPart": 2, "FullId": "da1:2", "Sha1": "abc",
                "LastProcessedTimeUtc": "2026-11-20T10:05:00Z", "Source": "WindowsDefenderAv",
                "UserName": "ana", "UserDomain": "CONTOSO",
                "IncidentLinkToMTP": "https://security.microsoft.com/incidents/28282"
            }),
        )
        .unwrap();
        assert_eq!(d.item_id(), "da1:2");
        assert_eq!(d.incident_id, Some(IncidentId::new("28282")));
        assert_eq!(d.detection_source, "antivirus");
        assert_eq!(d.severity, Severity::High);
        assert_eq!(
            d.evidence,
            vec![
                Evidence {
                    kind: "device".into(),
                    value: "pc1.contoso.com".into()
                },
                Evidence {
                    kind: "file".into(),
                    value: "abc".into()
                },
                Evidence {
                    kind: "user".into(),
                    value: "CONTOSO\\ana".into()
                },
            ]
        );
    }

    #[test]
    fn bad_alerts_are_errors_naming_the_alert() {
        let err = normalize_graph_alert(
            &tenant(),
            &json!({"id": "a1", "createdDateTime": "2026-01-01T00:00:00Z"}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "alert a1: required field `lastUpdateDateTime` is missing"
        );
        let err = normalize_siem_detection(&tenant(), &json!("x")).unwrap_err();
        assert_eq!(err.to_string(), "expected a detection object, got a string");
        let err = normalize_mde_alert(&tenant(), &json!({"status": "New"})).unwrap_err();
        assert_eq!(err.to_string(), "alert ?: required field `id` is missing");
    }
}
