//! The documented-resource corpus (`tests/corpus/` at the repository root): one item of each
//! resource the client reads, written by hand from Microsoft's resource definitions
//! (defender-api.md §1.7–1.10, §2.5–2.7, §3.1, §3.2, and msgraph-sdk's models for Graph), every
//! documented property present; plus one item of every v1.0 evidence type of the SDK models
//! with every property they declare (`graph_evidence.json`, written by `evidence_from_sdk.py`).
//! The interop test parses the Graph files back with msgraph-sdk: nothing unknown to the SDK,
//! nothing it declares missing.
//!
//! For each item: the client's sparse parse (only the fields a normalizer reads) normalizes
//! exactly like the whole payload; every property the normalized schema documents arrives in
//! its field with the item's value (legacy enums in Graph's spelling); and every property of the
//! item is accounted for — normalized, or kept only in the raw payload (stored byte for byte) —
//! so a property added to the corpus must be placed.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use xdrsync_model::sparse::{self, Fields};
use xdrsync_model::{
    Alert, Evidence, GRAPH_ALERT_FIELDS, GRAPH_INCIDENT_FIELDS, Incident, MDE_ALERT_FIELDS,
    NormalizeError, Severity, TenantId, Timestamp, XDR_INCIDENT_FIELDS, normalize_graph_alert,
    normalize_graph_incident, normalize_mde_alert, normalize_siem_detection,
    normalize_xdr_incident,
};

fn corpus(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/corpus")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn tenant() -> TenantId {
    TenantId::new("b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c")
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Normalizes `text` from the whole payload and from the client's sparse parse of `fields`;
/// both must agree.
fn normalized<T: PartialEq + std::fmt::Debug>(
    text: &str,
    fields: Option<&'static Fields>,
    normalize: fn(&TenantId, &Value) -> Result<T, NormalizeError>,
) -> T {
    let whole: Value = serde_json::from_str(text).unwrap();
    let full = normalize(&tenant(), &whole).unwrap();
    if let Some(fields) = fields {
        let sparse = normalize(&tenant(), &sparse::parse(text, fields).unwrap()).unwrap();
        assert_eq!(
            sparse, full,
            "the sparse parse drops a field the normalizer reads"
        );
    }
    full
}

/// Every key of `item` is in `normalized` or `raw_only`, and every key of both lists is in
/// `item` (the corpus holds every documented property).
fn accounted(what: &str, item: &Value, normalized: &[&str], raw_only: &[&str]) {
    let keys: BTreeSet<&str> = item
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let listed: BTreeSet<&str> = normalized.iter().chain(raw_only).copied().collect();
    let unplaced: Vec<_> = keys.difference(&listed).collect();
    assert!(unplaced.is_empty(), "{what}: not placed: {unplaced:?}");
    let missing: Vec<_> = listed.difference(&keys).collect();
    assert!(
        missing.is_empty(),
        "{what}: documented but not in the corpus: {missing:?}"
    );
}

fn ev(kind: &str, value: &str) -> Evidence {
    Evidence {
        kind: kind.into(),
        value: value.into(),
    }
}

#[test]
fn graph_incident_keeps_every_documented_field() {
    let text = corpus("graph_incident.json");
    let raw: Value = serde_json::from_str(&text).unwrap();
    accounted(
        "Graph incident",
        &raw,
        &[
            "id",
            "displayName",
            "createdDateTime",
            "lastUpdateDateTime",
            "status",
            "severity",
            "classification",
            "determination",
            "assignedTo",
            "redirectIncidentId",
            "incidentWebUrl",
            "customTags",
            "systemTags",
            "alerts",
        ],
        &[
            "tenantId",
            "description",
            "summary",
            "resolvingComment",
            "lastModifiedBy",
            "priorityScore",
            "comments",
        ],
    );
    let i: Incident = normalized(
        &text,
        Some(&GRAPH_INCIDENT_FIELDS),
        normalize_graph_incident,
    );
    assert_eq!(i.incident_id.as_str(), "2972395");
    assert_eq!(i.title, raw["displayName"].as_str().unwrap());
    assert_eq!(i.created, t("2021-08-13T08:43:35.5533333Z"));
    assert_eq!(i.last_update, t("2021-09-30T09:35:45.1133333Z"));
    assert_eq!(
        (i.status.as_str(), &i.severity),
        ("active", &Severity::Medium)
    );
    assert_eq!(
        (i.classification.as_str(), i.determination.as_str()),
        ("truePositive", "multiStagedAttack")
    );
    assert_eq!(
        i.assigned_to.as_deref(),
        Some("KaiC@contoso.onmicrosoft.com")
    );
    assert_eq!(i.redirect_incident_id, None);
    assert_eq!(i.web_url.as_deref(), raw["incidentWebUrl"].as_str());
    assert_eq!(i.tags, ["Demo", "Defender Experts"]);
    let a = &i.alerts[0];
    assert_eq!(a.id, "da637578995287051192_756343937");
    assert_eq!(a.title, "Suspicious execution of hidden file");
    assert_eq!(
        (&a.severity, a.status.as_str()),
        (&Severity::High, "inProgress")
    );
    assert_eq!(a.category.as_deref(), Some("DefenseEvasion"));
    assert_eq!(
        (a.service_source.as_str(), a.detection_source.as_str()),
        ("microsoftDefenderForEndpoint", "antivirus")
    );
    assert_eq!(a.created, Some(t("2021-04-27T12:52:08.7051192Z")));
    assert_eq!(a.last_update, Some(t("2021-05-02T14:19:01.3266667Z")));
    assert_eq!(a.mitre_techniques, ["T1564.001", "T1059.001"]);
    assert_eq!(a.evidence_count, 8);
}

const GRAPH_ALERT_NORMALIZED: &[&str] = &[
    "id",
    "incidentId",
    "title",
    "description",
    "severity",
    "status",
    "classification",
    "determination",
    "category",
    "serviceSource",
    "detectionSource",
    "createdDateTime",
    "lastUpdateDateTime",
    "firstActivityDateTime",
    "lastActivityDateTime",
    "resolvedDateTime",
    "assignedTo",
    "mitreTechniques",
    "threatDisplayName",
    "alertWebUrl",
    "evidence",
];

const GRAPH_ALERT_RAW_ONLY: &[&str] = &[
    "@odata.type",
    "providerAlertId",
    "productName",
    "detectorId",
    "tenantId",
    "recommendedActions",
    "categories",
    "incidentWebUrl",
    "actorDisplayName",
    "threatFamilyName",
    "investigationState",
    "alertPolicyId",
    "comments",
    "systemTags",
    "customDetails",
    "additionalData",
];

#[test]
fn graph_alert_keeps_every_documented_field() {
    let text = corpus("graph_alert.json");
    let raw: Value = serde_json::from_str(&text).unwrap();
    accounted(
        "Graph alert",
        &raw,
        GRAPH_ALERT_NORMALIZED,
        GRAPH_ALERT_RAW_ONLY,
    );
    let a: Alert = normalized(&text, Some(&GRAPH_ALERT_FIELDS), normalize_graph_alert);
    assert_eq!(a.alert_id, "da637578995287051192_756343937");
    assert_eq!(a.part, None);
    assert_eq!(a.incident_id.as_ref().map(|i| i.as_str()), Some("2972395"));
    assert_eq!(a.title, "Suspicious execution of hidden file");
    assert_eq!(a.description.as_deref(), raw["description"].as_str());
    assert_eq!(
        (&a.severity, a.status.as_str()),
        (&Severity::High, "inProgress")
    );
    assert_eq!(
        (a.classification.as_str(), a.determination.as_str()),
        ("truePositive", "multiStagedAttack")
    );
    assert_eq!(a.category.as_deref(), Some("DefenseEvasion"));
    assert_eq!(
        (a.service_source.as_str(), a.detection_source.as_str()),
        ("microsoftDefenderForEndpoint", "antivirus")
    );
    assert_eq!(a.created, t("2021-04-27T12:52:08.7051192Z"));
    assert_eq!(a.last_update, t("2021-05-02T14:19:01.3266667Z"));
    assert_eq!(a.first_activity, Some(t("2021-04-26T07:45:50.116Z")));
    assert_eq!(a.last_activity, Some(t("2021-05-02T07:56:58.222Z")));
    assert_eq!(a.resolved, Some(t("2021-05-03T08:00:00Z")));
    assert_eq!(a.assigned_to.as_deref(), Some("secop2@contoso.com"));
    assert_eq!(a.mitre_techniques, ["T1564.001", "T1059.001"]);
    assert_eq!(a.threat_name.as_deref(), Some("Trojan:Win32/Emotet.AR!MTB"));
    assert_eq!(a.web_url.as_deref(), raw["alertWebUrl"].as_str());
    assert_eq!(
        a.evidence,
        [
            ev("device", "yonif-lap3.middleeast.corp.microsoft.com"),
            ev(
                "file",
                "8963a19fb992ad9a76576c5638fd68292cffb9aaac29eb8285f9abf6196a7dec"
            ),
            ev("process", "\"MsSense.exe\""),
            ev("user", "ana@contoso.com"),
            ev("ip", "203.0.113.7"),
            ev("url", "http://c2.example.net/gate.php"),
            ev("mailbox", "ana@contoso.com"),
            ev("message", "Invoice overdue"),
        ]
    );
}

/// Every v1.0 evidence type of the SDK models, each with every property it declares: each is
/// normalized to its kind with a value naming what it points at, through the sparse parse too.
#[test]
fn every_sdk_evidence_type_with_every_property_is_normalized() {
    let items: Value = serde_json::from_str(&corpus("graph_evidence.json")).unwrap();
    let items = items.as_array().unwrap();
    assert!(items.len() >= 48, "{}", items.len());
    let mut alert: Value = serde_json::from_str(&corpus("graph_alert.json")).unwrap();
    alert["evidence"] = Value::Array(items.clone());
    let text = alert.to_string();
    let a: Alert = normalized(&text, Some(&GRAPH_ALERT_FIELDS), normalize_graph_alert);
    // One evidence per type (no two types collapse into one item).
    assert_eq!(a.evidence.len(), items.len(), "{:#?}", a.evidence);
    fn own(t: &str) -> &str {
        match t {
            "analyzedMessage" => "message",
            other => other,
        }
    }
    for (item, got) in items.iter().zip(&a.evidence) {
        let odata = item["@odata.type"].as_str().unwrap();
        let kind = odata
            .rsplit('.')
            .next()
            .unwrap()
            .trim_end_matches("Evidence");
        assert_eq!(got.kind, own(kind), "{odata}");
        assert!(!got.value.is_empty(), "{odata}: no identifying value");
    }
}

#[test]
fn legacy_xdr_incident_keeps_every_documented_field() {
    let text = corpus("xdr_incident.json");
    let raw: Value = serde_json::from_str(&text).unwrap();
    accounted(
        "XDR incident",
        &raw,
        &[
            "incidentId",
            "incidentName",
            "createdTime",
            "lastUpdateTime",
            "status",
            "severity",
            "classification",
            "determination",
            "assignedTo",
            "redirectIncidentId",
            "incidentUri",
            "tags",
            "alerts",
        ],
        &["detectionSource", "comments"],
    );
    accounted(
        "XDR alert",
        &raw["alerts"][0],
        &[
            "alertId",
            "title",
            "severity",
            "status",
            "category",
            "serviceSource",
            "detectionSource",
            "creationTime",
            "lastUpdatedTime",
            "mitreTechniques",
            "devices",
            "entities",
        ],
        &[
            "providerAlertId",
            "incidentId",
            "resolvedTime",
            "firstActivity",
            "lastActivity",
            "description",
            "investigationId",
            "investigationState",
            "classification",
            "determination",
            "detectorId",
            "assignedTo",
            "actorName",
            "threatFamilyName",
        ],
    );
    let i: Incident = normalized(&text, Some(&XDR_INCIDENT_FIELDS), normalize_xdr_incident);
    assert_eq!(i.incident_id.as_str(), "924565");
    assert_eq!(i.title, "Ransomware activity on multiple endpoints");
    assert_eq!(i.created, t("2020-09-06T14:46:57.0733333Z"));
    assert_eq!(i.last_update, t("2020-09-06T14:46:57.29Z"));
    // Legacy enums in Graph's spelling (the SDK's member for CompromisedUser).
    assert_eq!(
        (
            i.status.as_str(),
            &i.severity,
            i.classification.as_str(),
            i.determination.as_str()
        ),
        (
            "inProgress",
            &Severity::High,
            "truePositive",
            "compromisedAccount"
        )
    );
    assert_eq!(i.assigned_to.as_deref(), Some("secop2@contoso.com"));
    assert_eq!(i.web_url.as_deref(), raw["incidentUri"].as_str());
    assert_eq!(i.tags, ["Ransomware", "Demo"]);
    let a = &i.alerts[0];
    assert_eq!(a.id, "da637349914833441527_393341063");
    assert_eq!((&a.severity, a.status.as_str()), (&Severity::High, "new"));
    assert_eq!(a.category.as_deref(), Some("Impact"));
    assert_eq!(
        (a.service_source.as_str(), a.detection_source.as_str()),
        ("microsoftDefenderForEndpoint", "antivirus")
    );
    assert_eq!(a.created, Some(t("2020-09-06T12:07:54.3716642Z")));
    assert_eq!(a.last_update, Some(t("2020-09-06T14:46:57.2433333Z")));
    assert_eq!(a.mitre_techniques, ["T1486", "T1490"]);
    // Ten entities and one device.
    assert_eq!(a.evidence_count, 11);
}

#[test]
fn mde_alert_keeps_every_documented_field() {
    let text = corpus("mde_alert.json");
    let raw: Value = serde_json::from_str(&text).unwrap();
    accounted(
        "MDE alert",
        &raw,
        &[
            "id",
            "incidentId",
            "title",
            "description",
            "severity",
            "status",
            "classification",
            "determination",
            "category",
            "detectionSource",
            "alertCreationTime",
            "lastUpdateTime",
            "firstEventTime",
            "lastEventTime",
            "resolvedTime",
            "assignedTo",
            "mitreTechniques",
            "threatName",
            "computerDnsName",
            "relatedUser",
            "evidence",
        ],
        &[
            "investigationId",
            "investigationState",
            "detectorId",
            "threatFamilyName",
            "machineId",
            "rbacGroupName",
            "aadTenantId",
            "loggedOnUsers",
            "domains",
            "comments",
        ],
    );
    let a: Alert = normalized(&text, Some(&MDE_ALERT_FIELDS), normalize_mde_alert);
    assert_eq!(a.alert_id, "da637472900382838869_1364969609");
    assert_eq!(a.incident_id.as_ref().map(|i| i.as_str()), Some("1126093"));
    assert_eq!(
        a.title,
        "Low-reputation arbitrary code executed by signed executable"
    );
    assert_eq!(a.description.as_deref(), raw["description"].as_str());
    assert_eq!(
        (
            &a.severity,
            a.status.as_str(),
            a.classification.as_str(),
            a.determination.as_str()
        ),
        (
            &Severity::Low,
            "inProgress",
            "truePositive",
            "notEnoughDataToValidate"
        )
    );
    assert_eq!(a.category.as_deref(), Some("Execution"));
    assert_eq!(
        (a.service_source.as_str(), a.detection_source.as_str()),
        (
            "microsoftDefenderForEndpoint",
            "microsoftDefenderForEndpoint"
        )
    );
    assert_eq!(a.created, t("2021-01-26T20:33:57.7220239Z"));
    assert_eq!(a.last_update, t("2021-01-26T20:33:59.2Z"));
    assert_eq!(a.first_activity, Some(t("2021-01-26T20:31:32.9562661Z")));
    assert_eq!(a.last_activity, Some(t("2021-01-26T20:31:33.0577322Z")));
    assert_eq!(a.resolved, Some(t("2021-01-27T09:00:00Z")));
    assert_eq!(a.assigned_to.as_deref(), Some("secop2@contoso.com"));
    assert_eq!(a.mitre_techniques, ["T1218.011"]);
    assert_eq!(a.threat_name.as_deref(), Some("Trojan:Win32/Emotet.AR!MTB"));
    assert_eq!(
        a.evidence,
        [
            ev("device", "temp123.middleeast.corp.microsoft.com"),
            ev("user", "DOMAIN\\temp123"),
            ev("user", "temp123@microsoft.com"),
            ev(
                "process",
                "rundll32.exe  c:\\temp\\suspicious.dll,RepeatAfterMe"
            ),
            ev(
                "file",
                "dc0ade0c95d6db98882bc8fa6707e64353cd6f7767ff48d6a81a6c2aef21736c"
            ),
            ev("ip", "203.0.113.7"),
            ev("url", "http://c2.example.net/gate.php"),
            ev(
                "registryValue",
                "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"
            ),
        ]
    );
    // Every documented evidence key is in the corpus (the doc shape: all of them, nulls).
    let documented = [
        "entityType",
        "evidenceCreationTime",
        "sha1",
        "sha256",
        "fileName",
        "filePath",
        "processId",
        "processCommandLine",
        "processCreationTime",
        "parentProcessId",
        "parentProcessCreationTime",
        "parentProcessFileName",
        "parentProcessFilePath",
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
        "detectionStatus",
    ];
    for k in documented {
        assert!(raw["evidence"][0].get(k).is_some(), "evidence lacks {k}");
    }
}

#[test]
fn siem_detection_keeps_every_documented_field() {
    let text = corpus("siem_detection.json");
    let raw: Value = serde_json::from_str(&text).unwrap();
    accounted(
        "SIEM detection",
        &raw,
        &[
            "AlertId",
            "AlertPart",
            "AlertTitle",
            "Description",
            "Severity",
            "Category",
            "Source",
            "AlertTime",
            "LastProcessedTimeUtc",
            "ThreatName",
            "LinkToMTP",
            "IncidentLinkToMTP",
            "ComputerDnsName",
            "Sha256",
            "CommandLine",
            "UserDomain",
            "UserName",
            "IpAddress",
            "Url",
        ],
        &[
            "Actor",
            "LinkToWDATP",
            "IocName",
            "IocValue",
            "CreatorIocName",
            "CreatorIocValue",
            "Sha1",
            "FileName",
            "FilePath",
            "IoaDefinitionId",
            "FullId",
            "ThreatCategory",
            "ThreatFamily",
            "RemediationAction",
            "RemediationIsSuccess",
            "Md5",
            "WasExecutingWhileDetected",
            "LogOnUsers",
            "MachineDomain",
            "MachineName",
            "InternalIPv4List",
            "InternalIPv6List",
            "FileHash",
            "DeviceID",
            "MachineGroup",
            "DeviceCreatedMachineTags",
            "CloudCreatedMachineTags",
            "IncidentLinkToWDATP",
            "ReportID",
            "ExternalId",
            "IocUniqueId",
        ],
    );
    let a: Alert = normalized(&text, None, normalize_siem_detection);
    assert_eq!(
        (a.alert_id.as_str(), a.part),
        ("636207535742330111_-1114309685", Some(0))
    );
    assert_eq!(a.item_id(), "636207535742330111_-1114309685:0");
    assert_eq!(a.incident_id.as_ref().map(|i| i.as_str()), Some("1126093"));
    assert_eq!(a.title, "Suspicious PowerShell commandline");
    assert_eq!(a.description.as_deref(), raw["Description"].as_str());
    assert_eq!(a.severity, Severity::Medium);
    assert_eq!(a.category.as_deref(), Some("SuspiciousActivity"));
    assert_eq!(a.created, t("2017-01-23T07:32:54.1861171Z"));
    assert_eq!(a.last_update, t("2017-01-23T11:33:45.0760449Z"));
    assert_eq!(a.threat_name.as_deref(), Some("Trojan:Win32/Emotet.AR!MTB"));
    assert_eq!(a.web_url.as_deref(), raw["LinkToMTP"].as_str());
    assert_eq!(a.detection_source, "microsoftDefenderForEndpoint");
    assert_eq!(
        a.evidence,
        [
            ev("device", "desktop-bvccckk"),
            ev(
                "file",
                "dc0ade0c95d6db98882bc8fa6707e64353cd6f7767ff48d6a81a6c2aef21736c"
            ),
            ev("process", "powershell.exe -nop -w hidden -enc SQBFAFgA"),
            ev("user", "CONTOSO\\ana"),
            ev("ip", "203.0.113.7"),
            ev("url", "http://c2.example.net/gate.php"),
        ]
    );
}
