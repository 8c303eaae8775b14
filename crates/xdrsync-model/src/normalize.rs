//! Mapping of API payloads into the normalized [`Incident`].
//!
//! The legacy Defender XDR API and Microsoft Graph describe the same incident with different
//! names (`incidentName`/`displayName`), types (number/string ids) and enum spellings
//! (`InProgress`/`inProgress`, `NotAvailable`/`unknown`, `MicrosoftDefenderATP`/
//! `microsoftDefenderForEndpoint`). Both are mapped here into Graph's vocabulary, so a tenant can
//! move from one API to the other without its downstream data changing shape.
//!
//! Missing required fields (id, created, last-update time) are errors that name the field;
//! everything else has a documented default, because the live API omits null keys.

use serde_json::{Map, Value};

use crate::sparse::{Fields, Keep};
use crate::{AlertSummary, ApiKind, Incident, IncidentId, Severity, TenantId, Timestamp};

/// The fields [`normalize_xdr_incident`] reads (for [`crate::sparse::parse`]); a field read
/// there must be listed here.
pub static XDR_INCIDENT_FIELDS: Fields = Fields(&[
    ("incidentId", Keep::Value),
    ("redirectIncidentId", Keep::Value),
    ("incidentName", Keep::Value),
    ("createdTime", Keep::Value),
    ("lastUpdateTime", Keep::Value),
    ("status", Keep::Value),
    ("severity", Keep::Value),
    ("classification", Keep::Value),
    ("determination", Keep::Value),
    ("assignedTo", Keep::Value),
    ("incidentUri", Keep::Value),
    ("tags", Keep::Value),
    ("alerts", Keep::Each(&XDR_ALERT_FIELDS)),
]);

static XDR_ALERT_FIELDS: Fields = Fields(&[
    ("alertId", Keep::Value),
    ("title", Keep::Value),
    ("severity", Keep::Value),
    ("status", Keep::Value),
    ("category", Keep::Value),
    ("serviceSource", Keep::Value),
    ("detectionSource", Keep::Value),
    ("creationTime", Keep::Value),
    ("lastUpdatedTime", Keep::Value),
    ("mitreTechniques", Keep::Value),
    ("entities", Keep::Count),
    ("devices", Keep::Count),
]);

/// The fields [`normalize_graph_incident`] reads; a field read there must be listed here.
pub static GRAPH_INCIDENT_FIELDS: Fields = Fields(&[
    ("id", Keep::Value),
    ("redirectIncidentId", Keep::Value),
    ("displayName", Keep::Value),
    ("createdDateTime", Keep::Value),
    ("lastUpdateDateTime", Keep::Value),
    ("status", Keep::Value),
    ("severity", Keep::Value),
    ("classification", Keep::Value),
    ("determination", Keep::Value),
    ("assignedTo", Keep::Value),
    ("incidentWebUrl", Keep::Value),
    ("customTags", Keep::Value),
    ("systemTags", Keep::Value),
    ("alerts", Keep::Each(&GRAPH_ALERT_SUMMARY_FIELDS)),
]);

static GRAPH_ALERT_SUMMARY_FIELDS: Fields = Fields(&[
    ("id", Keep::Value),
    ("title", Keep::Value),
    ("severity", Keep::Value),
    ("status", Keep::Value),
    ("category", Keep::Value),
    ("serviceSource", Keep::Value),
    ("detectionSource", Keep::Value),
    ("createdDateTime", Keep::Value),
    ("lastUpdateDateTime", Keep::Value),
    ("mitreTechniques", Keep::Value),
    ("evidence", Keep::Count),
]);

/// An API payload that cannot be read as an incident.
#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    /// The payload is not a JSON object.
    #[error("expected {what} object, got {found}")]
    NotAnObject {
        /// What was expected (`an incident`, `an alert`, `a detection`).
        what: &'static str,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A required field is absent or null.
    #[error("{item}: required field `{field}` is missing")]
    Missing {
        /// The item and its id if known (`incident 924521`, `alert ?`).
        item: String,
        /// The missing field.
        field: &'static str,
    },
    /// A field has the wrong type or an unparseable value.
    #[error("{item}: field `{field}` is invalid: {reason}")]
    Invalid {
        /// The item and its id if known (`incident 924521`, `alert ?`).
        item: String,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) struct Reader<'a> {
    pub(crate) obj: &'a Map<String, Value>,
    /// The item for error messages: `incident 924521`, `alert da63…`.
    pub(crate) item: String,
}

impl<'a> Reader<'a> {
    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    pub(crate) fn str_opt(&self, field: &'static str) -> Result<Option<String>, NormalizeError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.invalid(
                field,
                format!("expected a string, got {}", type_name(other)),
            )),
        }
    }

    /// A string field, or `default` when it is absent or null (the live API omits null keys).
    pub(crate) fn str_or(
        &self,
        field: &'static str,
        default: &str,
    ) -> Result<String, NormalizeError> {
        Ok(self.str_opt(field)?.unwrap_or_else(|| default.to_owned()))
    }

    pub(crate) fn time(&self, field: &'static str) -> Result<Timestamp, NormalizeError> {
        match self.get(field) {
            None => Err(NormalizeError::Missing {
                item: self.item.clone(),
                field,
            }),
            Some(Value::String(s)) => s.parse().map_err(|e| self.invalid(field, format!("{e}"))),
            Some(other) => Err(self.invalid(
                field,
                format!("expected a timestamp string, got {}", type_name(other)),
            )),
        }
    }

    pub(crate) fn time_opt(&self, field: &'static str) -> Option<Timestamp> {
        self.get(field)
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
    }

    pub(crate) fn strings(&self, field: &'static str) -> Vec<String> {
        match self.get(field) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub(crate) fn invalid(&self, field: &'static str, reason: String) -> NormalizeError {
        NormalizeError::Invalid {
            item: self.item.clone(),
            field,
            reason,
        }
    }
}

/// Reads an id that may be a JSON number or a string of digits.
pub(crate) fn read_id(v: Option<&Value>) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(Some(n.to_string())),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        Some(other) => Err(format!("expected an id, got {}", type_name(other))),
    }
}

/// Graph's spelling of a legacy enum member not in a map: PascalCase with the first letter
/// lower-cased (`InProgress` → `inProgress`), a display name's words joined so
/// (`Windows Defender ATP` → `windowsDefenderATP`): one token either way, never a value with
/// spaces that no Graph reader would match.
fn camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, word) in s.split_whitespace().enumerate() {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            if i == 0 {
                out.extend(first.to_lowercase());
            } else {
                out.extend(first.to_uppercase());
            }
            out.extend(chars);
        }
    }
    out
}

pub(crate) fn enum_value(legacy: Option<String>, map: &[(&str, &str)]) -> String {
    match legacy {
        None => "unknown".to_owned(),
        Some(v) => map
            .iter()
            .find(|(from, _)| from.eq_ignore_ascii_case(&v))
            .map(|(_, to)| (*to).to_owned())
            .unwrap_or_else(|| camel(&v)),
    }
}

const STATUS_MAP: &[(&str, &str)] = &[("InProgress", "inProgress")];
pub(crate) const CLASSIFICATION_MAP: &[(&str, &str)] = &[("Unknown", "unknown")];
/// Legacy determinations with a different Graph name (see defender-api.md §1.11, §2.5): the
/// Graph names are those of Microsoft's generated SDK models (`alertDetermination`).
pub(crate) const DETERMINATION_MAP: &[(&str, &str)] = &[
    ("NotAvailable", "unknown"),
    ("CompromisedUser", "compromisedAccount"),
    ("CompromisedAccount", "compromisedAccount"),
    ("Clean", "notMalicious"),
    ("InsufficientData", "notEnoughDataToValidate"),
    ("NoEnoughDataToValidate", "notEnoughDataToValidate"),
    ("ConfirmedUserActivity", "confirmedActivity"),
];

/// A Graph determination in the SDK models' spelling: one v1.0 doc page spells three members
/// differently (`compromisedUser`, `clean`, `insufficientData`), and a tenant answering in
/// that spelling must not look like a change of verdict.
pub(crate) fn graph_determination(v: String) -> String {
    match v.as_str() {
        "compromisedUser" => "compromisedAccount".into(),
        "clean" => "notMalicious".into(),
        "insufficientData" => "notEnoughDataToValidate".into(),
        _ => v,
    }
}
pub(crate) const ALERT_STATUS_MAP: &[(&str, &str)] =
    &[("Active", "inProgress"), ("Unknown", "unknown")];
/// Legacy `serviceSource` → Graph `serviceSource`.
const SERVICE_SOURCE_MAP: &[(&str, &str)] = &[
    ("MicrosoftDefenderATP", "microsoftDefenderForEndpoint"),
    (
        "MicrosoftDefenderForEndpoint",
        "microsoftDefenderForEndpoint",
    ),
    ("OfficeATP", "microsoftDefenderForOffice365"),
    (
        "MicrosoftDefenderForOffice365",
        "microsoftDefenderForOffice365",
    ),
    ("MicrosoftCloudAppSecurity", "microsoftDefenderForCloudApps"),
    (
        "AzureAdvancedThreatProtection",
        "microsoftDefenderForIdentity",
    ),
    ("AADIdentityProtection", "azureAdIdentityProtection"),
    ("Microsoft365Defender", "microsoft365Defender"),
    ("AppGovernance", "microsoftAppGovernance"),
    ("DataLossPrevention", "dataLossPrevention"),
];
/// Legacy `detectionSource` → Graph `detectionSource`.
pub(crate) const DETECTION_SOURCE_MAP: &[(&str, &str)] = &[
    ("WindowsDefenderAv", "antivirus"),
    ("WindowsDefenderSmartScreen", "smartScreen"),
    ("CustomerTI", "customTi"),
    ("OfficeATP", "microsoftDefenderForOffice365"),
    ("AutomatedInvestigation", "automatedInvestigation"),
    ("MTP", "microsoft365Defender"),
    ("MCAS", "cloudAppSecurity"),
    ("AAD", "azureAdIdentityProtection"),
    ("EDR", "microsoftDefenderForEndpoint"),
    ("WindowsDefenderAtp", "microsoftDefenderForEndpoint"),
    ("CustomDetection", "customDetection"),
    ("AzureATP", "microsoftDefenderForIdentity"),
    ("ThreatExperts", "microsoftThreatExperts"),
    ("Manual", "manual"),
    // The SIEM API's `Source` is a display name (its documentation's example: "Windows
    // Defender ATP").
    ("Windows Defender ATP", "microsoftDefenderForEndpoint"),
    ("Microsoft Defender ATP", "microsoftDefenderForEndpoint"),
    (
        "Microsoft Defender for Endpoint",
        "microsoftDefenderForEndpoint",
    ),
    ("Windows Defender AV", "antivirus"),
    ("Antivirus", "antivirus"),
    ("Windows Defender SmartScreen", "smartScreen"),
    ("SmartScreen", "smartScreen"),
    ("Custom TI", "customTi"),
    ("Automated investigation", "automatedInvestigation"),
    ("Microsoft Threat Experts", "microsoftThreatExperts"),
    ("Custom detection", "customDetection"),
];

/// The object `raw` as `what` (`an incident`, `an alert`, `a detection`) with its id from
/// `id_field`: a [`Reader`] whose errors name the item, and the id.
pub(crate) fn reader<'a>(
    raw: &'a Value,
    what: &'static str,
    id_field: &'static str,
) -> Result<(Reader<'a>, String), NormalizeError> {
    let obj = as_object(raw, what)?;
    let label = what.trim_start_matches("an ").trim_start_matches("a ");
    let id = read_id(obj.get(id_field))
        .map_err(|reason| NormalizeError::Invalid {
            item: format!("{label} ?"),
            field: id_field,
            reason,
        })?
        .ok_or(NormalizeError::Missing {
            item: format!("{label} ?"),
            field: id_field,
        })?;
    Ok((
        Reader {
            obj,
            item: format!("{label} {id}"),
        },
        id,
    ))
}

fn as_object<'a>(
    raw: &'a Value,
    what: &'static str,
) -> Result<&'a Map<String, Value>, NormalizeError> {
    raw.as_object().ok_or(NormalizeError::NotAnObject {
        what,
        found: type_name(raw),
    })
}

/// Normalizes one incident of the legacy `GET /api/incidents` response.
pub fn normalize_xdr_incident(tenant: &TenantId, raw: &Value) -> Result<Incident, NormalizeError> {
    let (r, id) = reader(raw, "an incident", "incidentId")?;
    let redirect =
        read_id(r.get("redirectIncidentId")).map_err(|e| r.invalid("redirectIncidentId", e))?;
    let alerts = match r.get("alerts") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_object)
            .map(xdr_alert)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Incident {
        tenant_id: tenant.clone(),
        incident_id: IncidentId::new(id),
        api: ApiKind::Xdr,
        title: r.str_opt("incidentName")?.unwrap_or_default(),
        created: r.time("createdTime")?,
        last_update: r.time("lastUpdateTime")?,
        status: enum_value(r.str_opt("status")?, STATUS_MAP),
        severity: Severity::parse(&r.str_opt("severity")?.unwrap_or_default()),
        classification: enum_value(r.str_opt("classification")?, CLASSIFICATION_MAP),
        determination: enum_value(r.str_opt("determination")?, DETERMINATION_MAP),
        assigned_to: r.str_opt("assignedTo")?,
        redirect_incident_id: redirect.map(IncidentId::new),
        web_url: r.str_opt("incidentUri")?,
        tags: r.strings("tags"),
        alerts,
    })
}

fn xdr_alert(obj: &Map<String, Value>) -> AlertSummary {
    let r = Reader {
        obj,
        item: String::new(),
    };
    let text = |f: &'static str| r.get(f).and_then(Value::as_str).map(str::to_owned);
    let evidence = |f: &'static str| r.get(f).and_then(Value::as_array).map_or(0, Vec::len);
    AlertSummary {
        id: text("alertId").unwrap_or_default(),
        title: text("title").unwrap_or_default(),
        severity: Severity::parse(&text("severity").unwrap_or_default()),
        status: enum_value(text("status"), ALERT_STATUS_MAP),
        category: text("category"),
        service_source: enum_value(text("serviceSource"), SERVICE_SOURCE_MAP),
        detection_source: enum_value(text("detectionSource"), DETECTION_SOURCE_MAP),
        created: r.time_opt("creationTime"),
        last_update: r.time_opt("lastUpdatedTime"),
        mitre_techniques: r.strings("mitreTechniques"),
        evidence_count: evidence("entities") + evidence("devices"),
    }
}

/// Normalizes one incident of Graph's `GET /v1.0/security/incidents` response.
pub fn normalize_graph_incident(
    tenant: &TenantId,
    raw: &Value,
) -> Result<Incident, NormalizeError> {
    let (r, id) = reader(raw, "an incident", "id")?;
    let redirect =
        read_id(r.get("redirectIncidentId")).map_err(|e| r.invalid("redirectIncidentId", e))?;
    let mut tags = r.strings("customTags");
    tags.extend(r.strings("systemTags"));
    let alerts = match r.get("alerts") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_object)
            .map(graph_alert)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Incident {
        tenant_id: tenant.clone(),
        incident_id: IncidentId::new(id),
        api: ApiKind::Graph,
        title: r.str_opt("displayName")?.unwrap_or_default(),
        created: r.time("createdDateTime")?,
        last_update: r.time("lastUpdateDateTime")?,
        status: r.str_or("status", "unknown")?,
        severity: Severity::parse(&r.str_opt("severity")?.unwrap_or_default()),
        classification: r.str_or("classification", "unknown")?,
        determination: graph_determination(r.str_or("determination", "unknown")?),
        assigned_to: r.str_opt("assignedTo")?,
        redirect_incident_id: redirect.map(IncidentId::new),
        web_url: r.str_opt("incidentWebUrl")?,
        tags,
        alerts,
    })
}

fn graph_alert(obj: &Map<String, Value>) -> AlertSummary {
    let r = Reader {
        obj,
        item: String::new(),
    };
    let text = |f: &'static str| r.get(f).and_then(Value::as_str).map(str::to_owned);
    AlertSummary {
        id: text("id").unwrap_or_default(),
        title: text("title").unwrap_or_default(),
        severity: Severity::parse(&text("severity").unwrap_or_default()),
        status: text("status").unwrap_or_else(|| "unknown".into()),
        category: text("category"),
        service_source: text("serviceSource").unwrap_or_else(|| "unknown".into()),
        detection_source: text("detectionSource").unwrap_or_else(|| "unknown".into()),
        created: r.time_opt("createdDateTime"),
        last_update: r.time_opt("lastUpdateDateTime"),
        mitre_techniques: r.strings("mitreTechniques"),
        evidence_count: r
            .get("evidence")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tenant() -> TenantId {
        TenantId::canonical("cfcdbe43-0000-0000-0000-000000000001")
    }

    /// The documented legacy list example (defender-api.md §1.13), trimmed.
    fn doc_xdr() -> Value {
        json!({
            "incidentId": 924521, "redirectIncidentId": null,
            "incidentName": "'Mimikatz' hacktool was detected on one endpoint",
            "createdTime": "2020-09-06T12:18:03.6266667Z", "lastUpdateTime": "2020-09-06T12:18:03.81Z",
            "assignedTo": null, "classification": "Unknown", "determination": "NotAvailable",
            "status": "InProgress", "severity": "Low", "tags": [], "comments": [],
            "alerts": [{
                "alertId": "da637349914833441527_393341063", "incidentId": 924521,
                "serviceSource": "MicrosoftDefenderATP",
                "creationTime": "2020-09-06T12:18:03.3285366Z",
                "lastUpdatedTime": "2020-09-06T12:18:04.2566667Z",
                "title": "'Mimikatz' hacktool was detected", "category": "Malware",
                "status": "New", "severity": "Low", "detectionSource": "WindowsDefenderAv",
                "mitreTechniques": [], "devices": [{"mdatpDeviceId": "24c2"}],
                "entities": [{"entityType": "File"}]
            }]
        })
    }

    #[test]
    fn legacy_and_graph_shapes_of_one_incident_normalize_alike() {
        let xdr = normalize_xdr_incident(&tenant(), &doc_xdr()).unwrap();
        let graph = normalize_graph_incident(
            &tenant(),
            &json!({
                "id": "924521", "status": "inProgress", "severity": "low",
                "displayName": "'Mimikatz' hacktool was detected on one endpoint",
                "createdDateTime": "2020-09-06T12:18:03.6266667Z",
                "lastUpdateDateTime": "2020-09-06T12:18:03.8100000Z",
                "classification": "unknown", "determination": "unknown", "customTags": [],
                "alerts": [{
                    "id": "da637349914833441527_393341063", "title": "'Mimikatz' hacktool was detected",
                    "severity": "low", "status": "new", "category": "Malware",
                    "serviceSource": "microsoftDefenderForEndpoint", "detectionSource": "antivirus",
                    "createdDateTime": "2020-09-06T12:18:03.3285366Z",
                    "lastUpdateDateTime": "2020-09-06T12:18:04.2566667Z",
                    "mitreTechniques": [], "evidence": [{}, {}]
                }]
            }),
        )
        .unwrap();
        assert_eq!(xdr.version_key(), graph.version_key());
        assert_eq!(xdr.api, ApiKind::Xdr);
        let strip = |mut i: Incident| {
            i.api = ApiKind::Graph;
            i
        };
        assert_eq!(strip(xdr), graph);
    }

    /// Normalizing what [`crate::sparse::parse`] keeps gives what normalizing everything gives.
    #[test]
    fn the_kept_fields_normalize_like_the_whole_payload() {
        let graph = json!({
            "id": "924521", "status": "inProgress", "severity": "low", "displayName": "t",
            "createdDateTime": "2020-09-06T12:18:03.6266667Z",
            "lastUpdateDateTime": "2020-09-06T12:18:03.8100000Z", "redirectIncidentId": "7",
            "classification": "truePositive", "determination": "malware", "assignedTo": "a@b",
            "incidentWebUrl": "https://security.microsoft.com/incidents/924521",
            "customTags": ["c"], "systemTags": ["s"], "comments": [{"comment": "x"}],
            "alerts": [{
                "id": "da1", "title": "t", "severity": "low", "status": "new", "category": "Malware",
                "serviceSource": "microsoftDefenderForEndpoint", "detectionSource": "antivirus",
                "createdDateTime": "2020-09-06T12:18:03.3285366Z",
                "lastUpdateDateTime": "2020-09-06T12:18:04.2566667Z",
                "mitreTechniques": ["T1003"], "evidence": [{"a": {"b": 1}}, {}], "extra": [1]
            }]
        });
        let sparse = |v: &Value, f| crate::sparse::parse(&v.to_string(), f).unwrap();
        assert_eq!(
            normalize_graph_incident(&tenant(), &graph).unwrap(),
            normalize_graph_incident(&tenant(), &sparse(&graph, &GRAPH_INCIDENT_FIELDS)).unwrap()
        );
        let mut xdr = doc_xdr();
        xdr["incidentUri"] = json!("https://security.microsoft.com/incidents/924521");
        xdr["redirectIncidentId"] = json!(5);
        xdr["assignedTo"] = json!("a@b");
        xdr["tags"] = json!(["x"]);
        assert_eq!(
            normalize_xdr_incident(&tenant(), &xdr).unwrap(),
            normalize_xdr_incident(&tenant(), &sparse(&xdr, &XDR_INCIDENT_FIELDS)).unwrap()
        );
    }

    #[test]
    fn missing_last_update_names_the_field_and_incident() {
        let mut raw = doc_xdr();
        raw.as_object_mut().unwrap().remove("lastUpdateTime");
        let err = normalize_xdr_incident(&tenant(), &raw).unwrap_err();
        assert_eq!(
            err.to_string(),
            "incident 924521: required field `lastUpdateTime` is missing"
        );
    }

    #[test]
    fn wrong_types_are_errors_not_panics() {
        let err = normalize_graph_incident(&tenant(), &json!({"id": true})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "incident ?: field `id` is invalid: expected an id, got a boolean"
        );
        let err = normalize_graph_incident(&tenant(), &json!([1])).unwrap_err();
        assert_eq!(err.to_string(), "expected an incident object, got an array");
        let err = normalize_graph_incident(
            &tenant(),
            &json!({"id": "1", "createdDateTime": "x", "lastUpdateDateTime": "2020-01-01T00:00:00Z"}),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("incident 1: field `createdDateTime` is invalid")
        );
    }

    #[test]
    fn unknown_enum_values_are_kept() {
        let mut raw = doc_xdr();
        raw["status"] = json!("AwaitingAction");
        raw["severity"] = json!("Critical");
        let i = normalize_xdr_incident(&tenant(), &raw).unwrap();
        assert_eq!(i.status, "awaitingAction");
        assert_eq!(i.severity, Severity::Other("Critical".into()));
    }

    /// Legacy determinations and both Graph spellings land on the SDK models' member, so a
    /// verdict reads the same whichever API or spelling a tenant answers with.
    #[test]
    fn determinations_normalize_to_the_sdk_members() {
        for (legacy, graph, sdk) in [
            ("CompromisedUser", "compromisedUser", "compromisedAccount"),
            (
                "CompromisedAccount",
                "compromisedAccount",
                "compromisedAccount",
            ),
            ("Clean", "clean", "notMalicious"),
            (
                "InsufficientData",
                "insufficientData",
                "notEnoughDataToValidate",
            ),
            (
                "NoEnoughDataToValidate",
                "notEnoughDataToValidate",
                "notEnoughDataToValidate",
            ),
            (
                "ConfirmedUserActivity",
                "confirmedActivity",
                "confirmedActivity",
            ),
            ("NotAvailable", "unknown", "unknown"),
            (
                "MultiStagedAttack",
                "multiStagedAttack",
                "multiStagedAttack",
            ),
        ] {
            let mut raw = doc_xdr();
            raw["determination"] = json!(legacy);
            let i = normalize_xdr_incident(&tenant(), &raw).unwrap();
            assert_eq!(i.determination, sdk, "{legacy}");
            let raw = json!({"id": "1", "createdDateTime": "2020-01-01T00:00:00Z",
                "lastUpdateDateTime": "2020-01-01T00:00:00Z", "determination": graph});
            let i = normalize_graph_incident(&tenant(), &raw).unwrap();
            assert_eq!(i.determination, sdk, "{graph}");
        }
    }
}
