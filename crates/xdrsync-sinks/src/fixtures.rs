//! The fixtures every encoder's snapshot tests and the sink conformance suite share: one item
//! of each API shape (Graph and legacy incidents, Graph and MDE alerts, a SIEM detection, a
//! scheduled hunt's row),
//! normalized by the real normalizers and stored in a real store, so `seq`, event ids and
//! change kinds are what a pull would produce.

// Test support (compiled for tests and the `fixtures` feature only): a broken fixture is a
// failed test, so it panics with what broke.
#![allow(clippy::expect_used, clippy::indexing_slicing)]

use serde_json::{Value, json};
use xdrsync_model::{
    ApiKind, HuntRow, Record, Severity, TenantId, normalize_graph_alert, normalize_graph_incident,
    normalize_mde_alert, normalize_siem_detection, normalize_xdr_incident,
};
use xdrsync_store::{CommitRequest, NewVersion, SqliteStore, Store, StoredVersion};

/// The fixtures' tenant.
pub const TENANT: &str = "b3a7c1d2-0000-4000-8000-00000000c0de";

/// A Graph incident with two alerts and characters every encoder must escape.
pub fn graph_incident() -> Value {
    json!({
        "id": "2972395",
        "tenantId": TENANT,
        "displayName": "Multi-stage incident | involving Initial access = \"phish\" \\ on one endpoint",
        "createdDateTime": "2026-11-30T10:03:14.5873021Z",
        "lastUpdateDateTime": "2026-11-30T11:46:02.2933333Z",
        "status": "active",
        "severity": "high",
        "classification": "truePositive",
        "determination": "phishing",
        "assignedTo": "soc-analyst@contoso.com",
        "redirectIncidentId": null,
        "incidentWebUrl": "https://security.microsoft.com/incidents/2972395?tid=b3a7c1d2-0000-4000-8000-00000000c0de",
        "customTags": ["Demo", "line\nbreak"],
        "systemTags": [],
        "alerts": [
            {
                "id": "da637551227677560813_-961444813",
                "title": "Suspicious URL clicked",
                "severity": "high",
                "status": "new",
                "category": "InitialAccess",
                "serviceSource": "microsoftDefenderForOffice365",
                "detectionSource": "microsoftDefenderForOffice365",
                "createdDateTime": "2026-11-30T10:03:14.5873021Z",
                "lastUpdateDateTime": "2026-11-30T11:46:02.2933333Z",
                "mitreTechniques": ["T1566.002"],
                "evidence": [{}, {}]
            },
            {
                "id": "da637551227677560813_1234",
                "title": "Malicious PowerShell",
                "severity": "medium",
                "status": "inProgress",
                "category": "Execution",
                "serviceSource": "microsoftDefenderForEndpoint",
                "detectionSource": "antivirus",
                "createdDateTime": "2026-11-30T10:13:14Z",
                "lastUpdateDateTime": "2026-11-30T11:40:00Z",
                "mitreTechniques": ["T1059.001", "T1059"],
                "evidence": []
            }
        ]
    })
}

/// A legacy XDR incident, resolved.
pub fn xdr_incident() -> Value {
    json!({
        "incidentId": 924518,
        "redirectIncidentId": null,
        "incidentName": "Email reported by user as malware or phish",
        "createdTime": "2026-11-29T08:00:00.0000000Z",
        "lastUpdateTime": "2026-11-30T09:15:00.1230000Z",
        "assignedTo": null,
        "classification": "FalsePositive",
        "determination": "NotAvailable",
        "status": "Resolved",
        "severity": "Informational",
        "incidentUri": "https://security.microsoft.com/incidents/924518?tid=b3a7c1d2-0000-4000-8000-00000000c0de",
        "tags": [],
        "alerts": []
    })
}

/// A Graph `alerts_v2` alert with evidence of several kinds.
pub fn graph_alert() -> Value {
    json!({
        "id": "da637578995287051192_756343937",
        "incidentId": "2972395",
        "title": "Suspicious execution of hidden file",
        "description": "A hidden file has been launched.\nThis may be malware.",
        "severity": "medium",
        "status": "inProgress",
        "classification": "unknown",
        "determination": "unknown",
        "category": "DefenseEvasion",
        "serviceSource": "microsoftDefenderForEndpoint",
        "detectionSource": "antivirus",
        "createdDateTime": "2026-11-30T10:05:00.4560000Z",
        "lastUpdateDateTime": "2026-11-30T11:00:00.1000000Z",
        "firstActivityDateTime": "2026-11-30T10:00:00Z",
        "lastActivityDateTime": "2026-11-30T10:04:00Z",
        "resolvedDateTime": null,
        "assignedTo": null,
        "mitreTechniques": ["T1564.001"],
        "threatDisplayName": "Trojan:Win32/Wacatac",
        "alertWebUrl": "https://security.microsoft.com/alerts/da637578995287051192_756343937?tid=b3a7c1d2-0000-4000-8000-00000000c0de",
        "evidence": [
            { "@odata.type": "#microsoft.graph.security.deviceEvidence", "deviceDnsName": "ws-0042.contoso.com" },
            { "@odata.type": "#microsoft.graph.security.fileEvidence", "fileDetails": { "sha256": "f5e2c8a1b3d4e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f", "fileName": "a.exe" } },
            { "@odata.type": "#microsoft.graph.security.processEvidence", "processCommandLine": "powershell.exe -enc SQBFAFgA =|\\" },
            { "@odata.type": "#microsoft.graph.security.userEvidence", "userAccount": { "userPrincipalName": "alice@contoso.com" } },
            { "@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "203.0.113.7" }
        ]
    })
}

/// A legacy MDE alert.
pub fn mde_alert() -> Value {
    json!({
        "id": "da637472900382838869_1364969609",
        "incidentId": 1126093,
        "title": "Low-reputation arbitrary code executed by signed executable",
        "description": "Binaries signed by Microsoft can be used to run low-reputation arbitrary code.",
        "severity": "Low",
        "status": "Resolved",
        "classification": "TruePositive",
        "determination": "Malware",
        "category": "Execution",
        "detectionSource": "WindowsDefenderAtp",
        "alertCreationTime": "2026-11-30T07:00:00.1234567Z",
        "lastUpdateTime": "2026-11-30T08:00:00.7654321Z",
        "firstEventTime": "2026-11-30T06:58:00Z",
        "lastEventTime": "2026-11-30T06:59:00Z",
        "resolvedTime": "2026-11-30T08:00:00Z",
        "assignedTo": "secop2@contoso.com",
        "computerDnsName": "temp123.middleeast.corp.microsoft.com",
        "mitreTechniques": ["T1218"],
        "threatName": null,
        "evidence": []
    })
}

/// A SIEM API detection.
pub fn siem_detection() -> Value {
    // As text: the object is too long for `json!`'s recursion limit.
    serde_json::from_str(
        r#"{
        "AlertTime": "2026-11-30T05:00:00.0000000Z",
        "ComputerDnsName": "desktop-4kc.contoso.com",
        "AlertTitle": "Suspicious PowerShell command line",
        "Category": "Execution",
        "Severity": "Medium",
        "AlertId": "636688558380765161_2136280442",
        "AlertPart": 0,
        "Actor": null,
        "LinkToWDATP": "https://securitycenter.windows.com/alert/636688558380765161_2136280442",
        "IocName": null,
        "IocValue": null,
        "CreatorIocName": null,
        "CreatorIocValue": null,
        "Sha1": null,
        "FileName": "powershell.exe",
        "FilePath": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0",
        "IpAddress": null,
        "Url": null,
        "IoaDefinitionId": "7f1c3609-a3ff-40e2-995b-c01770161d68",
        "UserName": "bob",
        "AlertPart2": null,
        "FullId": "636688558380765161_2136280442:Y5EmFWr8EGrVf4ZlpgK4u",
        "LastProcessedTimeUtc": "2026-11-30T05:10:00.0000000Z",
        "ThreatCategory": null,
        "ThreatFamily": null,
        "ThreatName": null,
        "RemediationAction": null,
        "RemediationIsSuccess": null,
        "Source": "EDR",
        "Md5": null,
        "Sha256": null,
        "WasExecutingWhileDetected": null,
        "UserDomain": "CONTOSO",
        "LogOnUsers": "CONTOSO\\bob",
        "MachineDomain": "contoso.com",
        "MachineName": "desktop-4kc",
        "InternalIPv4List": "10.0.0.4",
        "InternalIPv6List": "",
        "FileHash": null,
        "DeviceID": "9bc2c8a1e2c8a7c6dd0f2f3e8a1b2c3d4e5f6a7b",
        "MachineGroup": "UnassignedGroup",
        "Description": "A suspicious PowerShell command line was run.",
        "DeviceCreatedMachineTags": null,
        "CloudCreatedMachineTags": null,
        "CommandLine": "powershell.exe -nop -w hidden",
        "IncidentLinkToWDATP": "https://securitycenter.windows.com/incidents/1126094",
        "IncidentLinkToMTP": "https://security.microsoft.com/incidents/1126094?tid=b3a7c1d2-0000-4000-8000-00000000c0de",
        "ExternalId": "2136280442",
        "IocUniqueId": null
    }"#,
    )
    .expect("fixture JSON")
}

/// A row of Graph `runHuntingQuery` (DeviceProcessEvents), with characters every encoder must
/// escape.
pub fn hunt_row() -> Value {
    json!({
        "Timestamp": "2026-11-30T09:58:41.1234567Z",
        "DeviceId": "9f0e3c5a1b2d4e6f8a0b1c2d3e4f5a6b7c8d9e0f",
        "DeviceName": "ws-fin-017.contoso.com",
        "AccountName": "j.doe",
        "AccountUpn": "j.doe@contoso.com",
        "FileName": "powershell.exe",
        "SHA256": "de96a6e69944335375dc1ac238336066889d9ffc7d73628ef4fe1b1b160ab32c",
        "ProcessCommandLine": "powershell.exe -nop -w hidden -enc JABzAD0A | iex ; a=b \\ \"q\"",
        "RemoteIP": "203.0.113.7",
        "Count": 3
    })
}

/// The six fixtures as new versions, in a fixed order.
pub fn new_versions() -> Vec<NewVersion> {
    let t = TenantId::canonical(TENANT);
    let mk = |record: Record, raw: &Value| NewVersion {
        record,
        raw: raw.to_string(),
    };
    let (gi, xi, ga, ma, sd) = (
        graph_incident(),
        xdr_incident(),
        graph_alert(),
        mde_alert(),
        siem_detection(),
    );
    vec![
        mk(
            Record::Incident(normalize_graph_incident(&t, &gi).expect("fixture")),
            &gi,
        ),
        mk(
            Record::Incident(normalize_xdr_incident(&t, &xi).expect("fixture")),
            &xi,
        ),
        mk(
            Record::Alert(normalize_graph_alert(&t, &ga).expect("fixture")),
            &ga,
        ),
        mk(
            Record::Alert(normalize_mde_alert(&t, &ma).expect("fixture")),
            &ma,
        ),
        mk(
            Record::Alert(normalize_siem_detection(&t, &sd).expect("fixture")),
            &sd,
        ),
        {
            let row = hunt_row();
            mk(
                Record::HuntRow(HuntRow::new(
                    t.clone(),
                    "encoded-powershell",
                    Severity::High,
                    ApiKind::Graph,
                    row.as_object().cloned().expect("an object"),
                    "2026-11-30T12:00:00.0000000Z".parse().expect("a time"),
                )),
                &row,
            )
        },
    ]
}

/// The six fixtures as stored versions (`seq` 1–6 of a fresh in-memory store), as a sink
/// reads them: with the configured tenant name (`contoso`).
pub fn stored() -> Vec<StoredVersion> {
    let mut v = store_with(&new_versions())
        .versions_after(0, 100)
        .expect("read back");
    for v in &mut v {
        v.tenant_name = Some("contoso".into());
    }
    v
}

/// Commits versions of any tenants and streams, grouped by tenant, in one transaction.
pub fn commit(store: &dyn Store, versions: &[NewVersion]) {
    let mut group: Vec<CommitRequest> = Vec::new();
    for v in versions {
        let t = v.record.tenant();
        match group.iter_mut().find(|r| r.tenant == *t) {
            Some(r) => r.versions.push(v.clone()),
            None => group.push(CommitRequest {
                tenant: t.clone(),
                versions: vec![v.clone()],
                poison: Vec::new(),
                cursor: None,
                fence: None,
            }),
        }
    }
    for r in store.commit_group(&group) {
        r.expect("commit fixtures");
    }
}

/// A fresh in-memory store holding `versions`.
pub fn store_with(versions: &[NewVersion]) -> SqliteStore {
    let store = SqliteStore::open_in_memory().expect("in-memory store");
    commit(&store, versions);
    store
}

/// `n` distinct versions spread over `tenants` tenants and the four streams: the fixtures
/// with their ids, tenants and times varied (for the conformance suite and the benchmarks).
pub fn many(n: usize, tenants: usize) -> Vec<NewVersion> {
    let base = new_versions();
    (0..n)
        .map(|i| {
            let mut v = base[i % base.len()].clone();
            // Shifted by one tenant each round of the fixtures, so every stream's items spread
            // over every tenant whatever the two counts have in common.
            let tenant = TenantId::canonical(&format!(
                "00000000-0000-4000-8000-{:012x}",
                (i + i / base.len()) % tenants.max(1)
            ));
            let bump =
                |t: xdrsync_model::Timestamp| t.add(chrono::Duration::milliseconds(i as i64));
            match &mut v.record {
                Record::Incident(inc) => {
                    inc.tenant_id = tenant;
                    inc.incident_id = xdrsync_model::IncidentId::new(format!("{}", 100_000 + i));
                    inc.last_update = bump(inc.last_update);
                }
                Record::Alert(a) => {
                    a.tenant_id = tenant;
                    a.alert_id = format!("{}_{i}", a.alert_id);
                    a.last_update = bump(a.last_update);
                }
                Record::HuntRow(h) => {
                    h.tenant_id = tenant;
                    h.row.insert("Count".into(), json!(i));
                    h.row_hash = HuntRow::hash_of(&h.row);
                    h.found_at = bump(h.found_at);
                }
            }
            v
        })
        .collect()
}

/// One delivery from a synchronous test, on a runtime of its own (the pipeline awaits
/// [`Sink::deliver`] on its own runtime).
pub fn deliver_now<S: crate::Sink + ?Sized>(
    sink: &std::sync::Arc<S>,
    store: &std::sync::Arc<dyn Store>,
) -> crate::DeliveryResult {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(crate::Sink::deliver(sink.clone(), store.clone()))
}
