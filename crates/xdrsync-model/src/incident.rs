//! The normalized incident schema (`format = "xdrsync"`).
//!
//! One schema for the legacy Defender XDR API and Microsoft Graph: Graph's camelCase enum
//! spellings and field meanings are the target, since Graph is the API that remains after the
//! legacy APIs retire on 2027-02-01. Enums stay open: a value xdrsync does not know is kept as
//! text, never dropped or turned into an error.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{IncidentId, TenantId, Timestamp, VersionKey};

/// Which API an incident version was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKind {
    /// Microsoft Graph `/v1.0/security/incidents`.
    Graph,
    /// The legacy Defender XDR `/api/incidents` (retires 2027-02-01).
    Xdr,
}

impl ApiKind {
    /// The API's stable name, as used in config and the store.
    pub fn as_str(&self) -> &'static str {
        match self {
            ApiKind::Graph => "graph",
            ApiKind::Xdr => "xdr",
        }
    }
}

impl fmt::Display for ApiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Incident or alert severity, ordered from least to most severe.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// `unknown` (Graph), `UnSpecified` (legacy).
    Unknown,
    /// `informational`.
    Informational,
    /// `low`.
    Low,
    /// `medium`.
    Medium,
    /// `high`.
    High,
    /// A value this version of xdrsync does not know (e.g. `unknownFutureValue`).
    Other(String),
}

impl Severity {
    /// Parses any spelling the APIs use; unknown values are kept.
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "unknown" | "unspecified" | "" => Severity::Unknown,
            "informational" => Severity::Informational,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            _ => Severity::Other(s.to_owned()),
        }
    }

    /// The Graph spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Other(s) => s,
        }
    }
}

impl Serialize for Severity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Severity::parse(&String::deserialize(d)?))
    }
}

/// One incident version in the normalized schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// The tenant the incident belongs to.
    pub tenant_id: TenantId,
    /// The incident id (decimal text for both APIs).
    pub incident_id: IncidentId,
    /// The API this version was read from.
    pub api: ApiKind,
    /// `displayName` (Graph) / `incidentName` (legacy).
    pub title: String,
    /// `createdDateTime` / `createdTime`.
    pub created: Timestamp,
    /// `lastUpdateDateTime` / `lastUpdateTime`: with the ids, the version identity.
    pub last_update: Timestamp,
    /// Graph spelling: `active`, `inProgress`, `resolved`, `redirected`, `awaitingAction`, ….
    pub status: String,
    /// Incident severity.
    pub severity: Severity,
    /// Graph spelling: `unknown`, `truePositive`, `falsePositive`,
    /// `informationalExpectedActivity`, ….
    pub classification: String,
    /// Graph spelling: `unknown`, `malware`, `phishing`, `multiStagedAttack`, ….
    pub determination: String,
    /// Owner, if assigned.
    pub assigned_to: Option<String>,
    /// The incident this one was merged into (`status` is then `redirected`).
    pub redirect_incident_id: Option<IncidentId>,
    /// Link to the incident in the Defender portal.
    pub web_url: Option<String>,
    /// Custom and system tags.
    pub tags: Vec<String>,
    /// The incident's alerts, in the order the API gave them.
    pub alerts: Vec<AlertSummary>,
}

impl Incident {
    /// The identity of this version.
    pub fn version_key(&self) -> VersionKey {
        VersionKey {
            tenant: self.tenant_id.clone(),
            incident: self.incident_id.clone(),
            last_update: self.last_update,
        }
    }
}

/// The normalized part of one alert of an incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertSummary {
    /// `id` (Graph) / `alertId` (legacy).
    pub id: String,
    /// Alert title.
    pub title: String,
    /// Alert severity.
    pub severity: Severity,
    /// Graph spelling: `new`, `inProgress`, `resolved`, ….
    pub status: String,
    /// MITRE-aligned category, e.g. `Malware`.
    pub category: Option<String>,
    /// Graph spelling, e.g. `microsoftDefenderForEndpoint`.
    pub service_source: String,
    /// Graph spelling, e.g. `antivirus`.
    pub detection_source: String,
    /// When the alert was created.
    pub created: Option<Timestamp>,
    /// When the alert last changed.
    pub last_update: Option<Timestamp>,
    /// MITRE ATT&CK technique ids, e.g. `T1566.001`.
    pub mitre_techniques: Vec<String>,
    /// How many entities / evidence items the alert carries.
    pub evidence_count: usize,
}

/// Which Entra token endpoint a credential uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenVersion {
    /// `/{tenant}/oauth2/token` with `resource=…`.
    V1,
    /// `/{tenant}/oauth2/v2.0/token` with `scope=…/.default`.
    #[default]
    V2,
}
