//! Alert APIs over the same incident model: Graph `GET /v1.0/security/alerts_v2[/{id}]`, the MDE
//! `GET /api/alerts` and the retired SIEM alert exporter (`GET /alertexporter/api/alerts`).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use xdrsync_model::Timestamp;

use crate::EmulatorState;
use crate::api::{
    ALERT_PROPERTIES, ALERT_TYPE, Admitted, Family, GraphErrors, Needs, get, next_link, odata_json,
    query_pairs,
};
use crate::errors;
use crate::limits::Quota;
use crate::odata::{self, PropType};
use crate::render::{self, GraphView};
use crate::world::{EmuAlert, EmuIncident};

const GRAPH_ALERT_READ: &Needs = &Needs {
    roles: &["SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"],
    scopes: &["SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"],
};
const MDE_READ: &Needs = &Needs {
    roles: &["Alert.Read.All", "Alert.ReadWrite.All"],
    scopes: &["Alert.Read", "Alert.ReadWrite"],
};

gate!(
    GraphAlertReadGraph,
    Family::Graph,
    GRAPH_ALERT_READ,
    Some(Quota::Graph)
);
gate!(
    GraphAlertReadUnmetered,
    Family::Graph,
    GRAPH_ALERT_READ,
    None
);
gate!(SiemMdeReadMde, Family::Siem, MDE_READ, Some(Quota::Mde));
gate!(XdrMdeReadMde, Family::Xdr, MDE_READ, Some(Quota::Mde));

/// The filterable properties of a Graph alert, their enum types as the SDK models declare
/// them, with the determination spellings of `view`.
fn alerts_v2_props(view: GraphView) -> &'static [(&'static str, PropType)] {
    use crate::world::graph_enums as e;
    const SDK: &[(&str, PropType)] = &[
        ("assignedTo", PropType::Text),
        ("classification", PropType::Enum(e::CLASSIFICATION)),
        ("determination", PropType::Enum(e::DETERMINATION)),
        ("createdDateTime", PropType::DateTime),
        ("lastUpdateDateTime", PropType::DateTime),
        ("severity", PropType::Enum(e::SEVERITY)),
        ("serviceSource", PropType::Enum(e::SERVICE_SOURCE)),
        ("status", PropType::Enum(e::ALERT_STATUS)),
    ];
    const DOC: &[(&str, PropType)] = &[
        ("assignedTo", PropType::Text),
        ("classification", PropType::Enum(e::CLASSIFICATION)),
        ("determination", PropType::Enum(e::DETERMINATION_DOC)),
        ("createdDateTime", PropType::DateTime),
        ("lastUpdateDateTime", PropType::DateTime),
        ("severity", PropType::Enum(e::SEVERITY)),
        ("serviceSource", PropType::Enum(e::SERVICE_SOURCE)),
        ("status", PropType::Enum(e::ALERT_STATUS)),
    ];
    if view.doc_determination { DOC } else { SDK }
}
/// Observed: `$top` above 1000 is clamped, not refused (defender-api.md §8.13).
const ALERTS_V2_MAX_TOP: usize = 1000;
const MDE_MAX_TOP: usize = 10_000;
const MDE_PROPS: &[(&str, PropType)] = &[
    ("alertCreationTime", PropType::DateTime),
    ("lastUpdateTime", PropType::DateTime),
    ("lastEventTime", PropType::DateTime),
    ("incidentId", PropType::Long),
    ("investigationId", PropType::Long),
    ("id", PropType::Text),
    ("status", PropType::Text),
    ("severity", PropType::Text),
    ("category", PropType::Text),
    ("detectionSource", PropType::Text),
    ("assignedTo", PropType::Text),
];

/// The tenant's visible alerts that satisfy `pred`, newest change first. `pred` runs once per
/// alert, under the world lock, and only incidents holding an alert it keeps are copied out
/// (each once, shared by its alerts): a list page's filter keeps a small part of the tenant,
/// and copying every incident and alert for each page of 1,000 was most of the alert streams'
/// cost (bench-pull … alerts).
fn alerts_where(
    state: &EmulatorState,
    tenant: &str,
    pred: impl Fn(&EmuAlert, &EmuIncident) -> bool,
) -> Vec<AlertRef> {
    let found = state.visible_filter_map(tenant, |i| {
        let kept: Vec<usize> = (0..i.alerts.len())
            .filter(|&n| i.alerts.get(n).is_some_and(|a| pred(a, i)))
            .collect();
        (!kept.is_empty()).then(|| (Arc::new(i.clone()), kept))
    });
    let mut out: Vec<AlertRef> = found
        .into_iter()
        .flat_map(|(i, kept)| kept.into_iter().map(move |n| AlertRef(i.clone(), n)))
        .collect();
    out.sort_by(|a, b| (b.last_updated, &b.id).cmp(&(a.last_updated, &a.id)));
    out
}

/// One alert of an incident, pointed at rather than copied.
struct AlertRef(Arc<EmuIncident>, usize);

impl AlertRef {
    /// The incident the alert belongs to.
    fn incident(&self) -> &EmuIncident {
        &self.0
    }
}

impl std::ops::Deref for AlertRef {
    type Target = EmuAlert;

    fn deref(&self) -> &EmuAlert {
        // Made by `alerts_where` from `0..alerts.len()` of this very incident, which the Arc
        // keeps unchanged.
        #[allow(clippy::indexing_slicing)]
        &self.0.alerts[self.1]
    }
}

/// `GET /v1.0/security/alerts_v2`.
pub(crate) async fn alerts_v2(
    Admitted(caller, _): Admitted<GraphAlertReadGraph>,
    State(state): State<EmulatorState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let g = GraphErrors::new(&state, &headers);
    let bad = |m: String| g.answer(StatusCode::BAD_REQUEST, "BadRequest", &m);
    let pairs = query_pairs(q.as_deref());
    for (k, _) in &pairs {
        if k.starts_with('$')
            && !["$filter", "$top", "$skip", "$count", "$select"]
                .iter()
                .any(|o| o.eq_ignore_ascii_case(k))
        {
            return bad(format!("Query option '{k}' is not allowed."));
        }
    }
    let select = match get(&pairs, "$select")
        .map(|s| odata::parse_select(s, ALERT_PROPERTIES, ALERT_TYPE))
        .transpose()
    {
        Ok(s) => s,
        Err(m) => return bad(m),
    };
    let top = match get(&pairs, "$top").map(str::parse::<usize>) {
        None => ALERTS_V2_MAX_TOP,
        Some(Ok(n)) => n.min(ALERTS_V2_MAX_TOP),
        Some(Err(_)) => return bad("Invalid value for $top query option.".into()),
    };
    let Ok(skip) = get(&pairs, "$skip").unwrap_or("0").parse::<usize>() else {
        return bad("Invalid value for $skip query option.".into());
    };
    if let Err(m) = crate::api::check_skip(&state, skip) {
        return bad(m);
    }
    let view = GraphView::of(&state, &headers);
    let filter = match get(&pairs, "$filter")
        .map(|f| odata::parse_filter(f, alerts_v2_props(view), odata::Dialect::Graph))
    {
        None => odata::Filter::All,
        Some(Ok(f)) => f,
        Some(Err(e)) => return bad(format!("Invalid filter clause: {e}")),
    };
    let matching: Vec<AlertRef> = alerts_where(&state, &caller.tenant, |a, i| {
        let source = a
            .service_override
            .unwrap_or(a.template.service_source)
            .graph;
        odata::matches(&filter, &|p| match p {
            "createdDateTime" => odata::Value::DateTime(a.created),
            "lastUpdateDateTime" => odata::Value::DateTime(a.last_updated),
            "severity" => odata::Value::Text(Some(a.severity.graph)),
            "status" => odata::Value::Text(Some(a.status.graph)),
            "serviceSource" => odata::Value::Text(Some(source)),
            "classification" => {
                odata::Value::Text(Some(a.verdict.map_or("unknown", |v| v.0.graph)))
            }
            "determination" => odata::Value::Text(Some(
                a.verdict.map_or("unknown", |v| view.determination(v.1)),
            )),
            _ => odata::Value::Text(a.assigned_to.as_deref().or(i.assigned_to.as_deref())),
        })
    });
    let total = matching.len();
    let page: Vec<Value> = matching
        .iter()
        .skip(skip)
        .take(top)
        .map(|a| {
            let mut v = render::graph_alert(a, a.incident(), &caller.tenant, view);
            if let Some(s) = &select {
                s.project(&mut v, None);
            }
            v
        })
        .collect();
    let base = state.base_url();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{base}/v1.0/$metadata#security/alerts_v2{}",
            select
                .as_ref()
                .map(|s| format!("({})", s.names().join(",")))
                .unwrap_or_default()
        )),
    );
    if get(&pairs, "$count").is_some_and(|c| c.eq_ignore_ascii_case("true")) {
        body.insert("@odata.count".into(), json!(total));
    }
    if let Some(link) = next_link(&state, "/v1.0/security/alerts_v2", &pairs, skip, top, total) {
        body.insert("@odata.nextLink".into(), json!(link));
    }
    body.insert("value".into(), Value::Array(page));
    state.count_page_served();
    odata_json(Value::Object(body))
}

/// `GET /v1.0/security/alerts_v2/{id}`.
pub(crate) async fn alert_v2(
    Admitted(caller, _): Admitted<GraphAlertReadUnmetered>,
    State(state): State<EmulatorState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let g = GraphErrors::new(&state, &headers);
    match alerts_where(&state, &caller.tenant, |a, _| a.id == id)
        .into_iter()
        .next()
    {
        Some(a) => odata_json(render::graph_alert(
            &a,
            a.incident(),
            &caller.tenant,
            GraphView::of(&state, &headers),
        )),
        None => g.answer(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Alert {id} not found."),
        ),
    }
}

/// The MDE alert shape (defender-api.md §3.2).
/// The evidence keys the MDE alert documentation lists (R18): with the `doc` body style each
/// item carries every one (null where it has no value) and nothing else; with `live`, as
/// captures show, null keys are omitted and the device's `deviceId` is added.
const MDE_EVIDENCE_KEYS: &[&str] = &[
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

fn mde_alert(
    a: &EmuAlert,
    i: &EmuIncident,
    tenant: &str,
    evidence: bool,
    style: render::BodyStyle,
) -> Value {
    let t = a.template;
    let device = a.devices.first();
    let user = a.entities.iter().find(|e| e.kind == "User");
    let field = |k: &str| {
        user.and_then(|u| u.fields.get(k))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let mut o = json!({
        "id": a.id, "incidentId": i.id, "investigationId": a.investigation_id,
        "assignedTo": a.assigned_to, "severity": a.severity.legacy, "status": a.status.legacy,
        "classification": a.verdict.map(|v| v.0.legacy), "determination": a.verdict.map(|v| v.1.legacy),
        "investigationState": t.investigation_state, "detectionSource": t.detection_source.legacy,
        "detectorId": format!("{:x}", t.title.len() * 7919), "category": t.category,
        "threatFamilyName": t.threat_family, "threatName": t.threat_family.map(|f| format!("HackTool:Win32/{f}")),
        "title": t.title, "description": t.description,
        "alertCreationTime": a.created.to_string(), "firstEventTime": a.activity.0.to_string(),
        "lastEventTime": a.activity.1.to_string(), "lastUpdateTime": a.last_updated.to_string(),
        "resolvedTime": a.resolved.map(|r| r.to_string()),
        "machineId": device.map(|d| d.id.clone()), "computerDnsName": device.map(|d| d.dns_name.clone()),
        "rbacGroupName": device.map(|d| d.rbac_group.0), "aadTenantId": tenant,
        "mitreTechniques": t.mitre,
        "relatedUser": {"userName": field("accountName"), "domainName": field("domainName")},
        "comments": a.comments.iter().map(|c| json!({"comment": c.comment, "createdBy": c.created_by, "createdTime": c.created.to_string()})).collect::<Vec<_>>(),
    });
    if let Some(obj) = o.as_object_mut().filter(|_| evidence) {
        {
            let items: Vec<Value> = a
                .entities
                .iter()
                .map(|e| {
                    let mut m = Map::new();
                    m.insert("entityType".into(), json!(e.kind));
                    m.insert("evidenceCreationTime".into(), json!(a.created.to_string()));
                    for (k, v) in &e.fields {
                        m.insert((*k).into(), v.clone());
                    }
                    m.insert("detectionStatus".into(), json!("Detected"));
                    match style {
                        render::BodyStyle::Doc => {
                            m.retain(|k, _| MDE_EVIDENCE_KEYS.contains(&k.as_str()));
                            for k in MDE_EVIDENCE_KEYS {
                                m.entry(*k).or_insert(Value::Null);
                            }
                        }
                        render::BodyStyle::Live => m.retain(|_, v| !v.is_null()),
                    }
                    Value::Object(m)
                })
                .collect();
            obj.insert("evidence".into(), Value::Array(items));
        }
    }
    o
}

/// `GET /api/alerts` and `/api/v1.0/alerts` (MDE; no version is the latest): no
/// `@odata.nextLink`; page with `$skip`.
pub(crate) async fn mde_alerts(
    Admitted(caller, _): Admitted<XdrMdeReadMde>,
    State(state): State<EmulatorState>,
    RawQuery(q): RawQuery,
) -> Response {
    let bad = |m: String| {
        errors::xdr(
            StatusCode::BAD_REQUEST,
            "ODataError",
            &format!("Invalid OData URI query: {m}"),
        )
    };
    let pairs = query_pairs(q.as_deref());
    let top = match get(&pairs, "$top").map(str::parse::<usize>) {
        None => MDE_MAX_TOP,
        Some(Ok(n)) if n <= MDE_MAX_TOP => n,
        Some(Ok(n)) => {
            return bad(format!(
                "The limit of '{MDE_MAX_TOP}' for Top query has been exceeded. The value from the incoming request is '{n}'."
            ));
        }
        Some(Err(_)) => return bad("$top must be a non-negative integer".into()),
    };
    let Ok(skip) = get(&pairs, "$skip").unwrap_or("0").parse::<usize>() else {
        return bad("$skip must be a non-negative integer".into());
    };
    let evidence = match get(&pairs, "$expand") {
        None => false,
        Some(e) if e.eq_ignore_ascii_case("evidence") => true,
        Some(e) => return bad(format!("cannot expand '{e}'")),
    };
    let filter = match get(&pairs, "$filter")
        .map(|f| odata::parse_filter(f, MDE_PROPS, odata::Dialect::Legacy))
    {
        None => odata::Filter::All,
        Some(Ok(f)) => f,
        Some(Err(e)) => return bad(e),
    };
    let page: Vec<Value> = alerts_where(&state, &caller.tenant, |a, i| {
        a.is_mde()
            && odata::matches(&filter, &|p| match p {
                "alertCreationTime" => odata::Value::DateTime(a.created),
                "lastUpdateTime" => odata::Value::DateTime(a.last_updated),
                "lastEventTime" => odata::Value::DateTime(a.activity.1),
                "incidentId" => odata::Value::Number(i64::try_from(i.id).ok()),
                "investigationId" => odata::Value::Number(a.investigation_id.map(i64::from)),
                "id" => odata::Value::Text(Some(a.id.as_str())),
                "status" => odata::Value::Text(Some(a.status.legacy)),
                "severity" => odata::Value::Text(Some(a.severity.legacy)),
                "category" => odata::Value::Text(Some(a.template.category)),
                "detectionSource" => odata::Value::Text(Some(a.template.detection_source.legacy)),
                _ => odata::Value::Text(a.assigned_to.as_deref()),
            })
    })
    .into_iter()
    .skip(skip)
    .take(top)
    .map(|a| {
        mde_alert(
            &a,
            a.incident(),
            &caller.tenant,
            evidence,
            state.body_style(),
        )
    })
    .collect();
    state.count_page_served();
    odata_json(
        json!({"@odata.context": "https://api.securitycenter.microsoft.com/api/$metadata#Alerts", "value": page}),
    )
}

/// Parses an ISO 8601 duration such as `PT10M`, `P1D`, `PT1H30M`.
pub(crate) fn iso_duration(s: &str) -> Option<chrono::Duration> {
    let rest = s.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut secs = 0i64;
    let mut take = |part: &str, units: &[(char, i64)]| -> Option<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() {
                num.push(c);
            } else {
                let mult = units.iter().find(|(u, _)| *u == c)?.1;
                secs += num.parse::<i64>().ok()? * mult;
                num.clear();
            }
        }
        num.is_empty().then_some(())
    };
    take(date, &[('W', 604_800), ('D', 86_400)])?;
    take(time, &[('H', 3600), ('M', 60), ('S', 1)])?;
    (secs > 0 || rest == "T0S" || rest == "0D").then(|| chrono::Duration::seconds(secs))
}

/// Deterministic machine tags of a device (for the SIEM API's tag filters).
fn machine_tags(device_id: &str) -> (&'static str, &'static str) {
    let h = device_id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let group = match h % 3 {
        0 => "Finance",
        1 => "Datacenter",
        _ => "Workstations",
    };
    let tag = match h / 3 % 3 {
        0 => "VIP",
        1 => "Kiosk",
        _ => "Standard",
    };
    (group, tag)
}

/// `GET /alertexporter/api/alerts`: the SIEM detections export (defender-api.md §3.1): a bare
/// JSON array, one detection per alert entity, filtered on `LastProcessedTimeUtc`.
pub(crate) async fn siem_alerts(
    Admitted(caller, _): Admitted<SiemMdeReadMde>,
    State(state): State<EmulatorState>,
    RawQuery(q): RawQuery,
) -> Response {
    let bad = |m: String| {
        errors::xdr(
            StatusCode::BAD_REQUEST,
            "InvalidInput",
            &format!("Invalid input {m}"),
        )
    };
    let pairs = query_pairs(q.as_deref());
    let now = state.clock().now();
    let time = |k: &str| -> Result<Option<Timestamp>, Response> {
        get(&pairs, k)
            .map(|v| v.parse::<Timestamp>().map_err(|e| bad(format!("{k}: {e}"))))
            .transpose()
    };
    let since = match (time("sinceTimeUtc"), get(&pairs, "ago")) {
        (Err(r), _) => return r,
        (Ok(Some(t)), _) => t,
        (Ok(None), Some(ago)) => match iso_duration(ago) {
            Some(d) => now.sub(d),
            None => return bad(format!("ago: `{ago}` is not an ISO 8601 duration")),
        },
        (Ok(None), None) => now.sub(chrono::Duration::hours(2)),
    };
    let until = match time("untilTimeUtc") {
        Err(r) => return r,
        Ok(t) => t.unwrap_or(now),
    };
    let limit_n = match get(&pairs, "limit").map(str::parse::<usize>) {
        None => usize::MAX,
        Some(Ok(n)) => n,
        Some(Err(_)) => return bad("limit: not a number".into()),
    };
    let groups: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("machinegroups"))
        .map(|(_, v)| v.as_str())
        .collect();
    let device_tag = get(&pairs, "DeviceCreatedMachineTags");
    let cloud_tag = get(&pairs, "CloudCreatedMachineTags");
    let base = "https://securitycenter.windows.com";
    let mut out = Vec::new();
    let exported =
        |a: &EmuAlert, _: &EmuIncident| a.is_mde() && (since..=until).contains(&a.last_updated);
    for a in alerts_where(&state, &caller.tenant, exported) {
        let (i, processed) = (a.incident(), a.last_updated);
        let Some(d) = a.devices.first() else { continue };
        let (dtag, ctag) = machine_tags(&d.id);
        if (!groups.is_empty()
            && !groups
                .iter()
                .any(|g| g.eq_ignore_ascii_case(d.rbac_group.0)))
            || device_tag.is_some_and(|t| !t.eq_ignore_ascii_case(dtag))
            || cloud_tag.is_some_and(|t| !t.eq_ignore_ascii_case(ctag))
        {
            continue;
        }
        for (n, e) in a.entities.iter().enumerate() {
            let f = |k: &str| e.fields.get(k).cloned().unwrap_or(Value::Null);
            let (host, domain) = d.dns_name.split_once('.').unwrap_or((&d.dns_name, ""));
            out.push(json!({
                "AlertTime": a.created.to_string(), "ComputerDnsName": d.dns_name, "AlertTitle": a.template.title,
                "Category": a.template.category, "Severity": a.severity.legacy, "AlertId": a.id, "Actor": null,
                "LinkToWDATP": format!("{base}/alert/{}", a.id), "IocName": null, "IocValue": null,
                "CreatorIocName": null, "CreatorIocValue": null, "Sha1": f("sha1"), "FileName": f("fileName"),
                "FilePath": f("filePath"), "IpAddress": f("ipAddress"), "Url": f("url"),
                "IoaDefinitionId": format!("{:x}", a.template.title.len() * 7919), "UserName": f("accountName"),
                "AlertPart": n, "FullId": format!("{}:{n}", a.id), "LastProcessedTimeUtc": processed.to_string(),
                "ThreatCategory": a.template.threat_family.map(|_| "HackTool"), "ThreatFamily": a.template.threat_family,
                "ThreatName": a.template.threat_family.map(|t| format!("HackTool:Win32/{t}")),
                "RemediationAction": null, "RemediationIsSuccess": null, "Source": a.template.detection_source.legacy,
                "Md5": null, "Sha256": f("sha256"), "WasExecutingWhileDetected": null, "UserDomain": f("domainName"),
                "LogOnUsers": f("accountName"), "MachineDomain": domain, "MachineName": host,
                "InternalIPv4List": null, "InternalIPv6List": null, "FileHash": f("sha1"), "DeviceID": d.id,
                "MachineGroup": d.rbac_group.0, "Description": a.template.description,
                "DeviceCreatedMachineTags": dtag, "CloudCreatedMachineTags": ctag, "CommandLine": f("processCommandLine"),
                "IncidentLinkToWDATP": format!("{base}/incidents/{}", i.id), "ReportID": n,
                "LinkToMTP": format!("https://security.microsoft.com/alerts/{}", a.id),
                "IncidentLinkToMTP": format!("https://security.microsoft.com/incidents/{}", i.id),
                "ExternalId": null, "IocUniqueId": null,
            }));
        }
    }
    // `limit`: the most recent N detections.
    out.sort_by(|x, y| {
        y["LastProcessedTimeUtc"]
            .as_str()
            .cmp(&x["LastProcessedTimeUtc"].as_str())
    });
    out.truncate(limit_n);
    state.count_page_served();
    (StatusCode::OK, axum::Json(Value::Array(out))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations() {
        assert_eq!(iso_duration("PT10M"), Some(chrono::Duration::minutes(10)));
        assert_eq!(iso_duration("P1DT2H"), Some(chrono::Duration::hours(26)));
        assert_eq!(iso_duration("PT90S"), Some(chrono::Duration::seconds(90)));
        assert_eq!(iso_duration("10M"), None);
        assert_eq!(iso_duration("PT10X"), None);
    }
}
