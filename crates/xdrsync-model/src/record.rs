//! [`Record`]: one stored version of any stream (an incident, an alert, a SIEM detection, a
//! scheduled hunt's row).
//!
//! The store is one outbox for every stream, so sinks deliver incidents and alerts in one order
//! from one position. A record knows its stream, its item id within the stream, its version time
//! and its event id; the stream decides how its normalized JSON is read back.

use crate::change::{classify, classify_alert};
use crate::hunt::HuntRow;
use crate::{Alert, ChangeKind, Changes, EventId, Incident, StreamKind, TenantId, Timestamp};

/// One version of one item of a stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// An incident version (stream `incidents`).
    Incident(Incident),
    /// An alert version (stream `alerts`) or SIEM detection version (stream `detections`).
    Alert(Alert),
    /// A row of a scheduled hunt (stream `hunts`).
    HuntRow(HuntRow),
}

impl Record {
    /// The stream it belongs to.
    pub fn stream(&self) -> StreamKind {
        match self {
            Record::Incident(_) => StreamKind::Incidents,
            Record::Alert(a) if a.part.is_some() => StreamKind::Detections,
            Record::Alert(_) => StreamKind::Alerts,
            Record::HuntRow(_) => StreamKind::Hunts,
        }
    }

    /// Its tenant.
    pub fn tenant(&self) -> &TenantId {
        match self {
            Record::Incident(i) => &i.tenant_id,
            Record::Alert(a) => &a.tenant_id,
            Record::HuntRow(h) => &h.tenant_id,
        }
    }

    /// Its id within the stream (incident id, alert id, or `<alert id>:<part>`).
    pub fn item_id(&self) -> String {
        match self {
            Record::Incident(i) => i.incident_id.to_string(),
            Record::Alert(a) => a.item_id(),
            Record::HuntRow(h) => h.item_id(),
        }
    }

    /// The version time.
    pub fn last_update(&self) -> Timestamp {
        match self {
            Record::Incident(i) => i.last_update,
            Record::Alert(a) => a.last_update,
            Record::HuntRow(h) => h.found_at,
        }
    }

    /// The API it was read from (`graph`, `xdr`, `mde`, `siem`).
    pub fn api(&self) -> &'static str {
        match self {
            Record::Incident(i) => i.api.as_str(),
            Record::Alert(a) => a.api.as_str(),
            Record::HuntRow(h) => h.api.as_str(),
        }
    }

    /// The stable event id of this version.
    pub fn event_id(&self) -> EventId {
        match self {
            Record::Incident(i) => i.version_key().event_id(),
            Record::Alert(a) => {
                EventId::of(&a.tenant_id, self.stream(), &a.item_id(), a.last_update)
            }
            Record::HuntRow(h) => {
                EventId::of(&h.tenant_id, StreamKind::Hunts, &h.item_id(), h.found_at)
            }
        }
    }

    /// The incident, if it is one.
    pub fn incident(&self) -> Option<&Incident> {
        match self {
            Record::Incident(i) => Some(i),
            Record::Alert(_) | Record::HuntRow(_) => None,
        }
    }

    /// The alert or detection, if it is one.
    pub fn alert(&self) -> Option<&Alert> {
        match self {
            Record::Alert(a) => Some(a),
            Record::Incident(_) | Record::HuntRow(_) => None,
        }
    }

    /// The hunt row, if it is one.
    pub fn hunt_row(&self) -> Option<&HuntRow> {
        match self {
            Record::HuntRow(h) => Some(h),
            Record::Incident(_) | Record::Alert(_) => None,
        }
    }

    /// Its severity (a hunt row's is its hunt's).
    pub fn severity(&self) -> &crate::Severity {
        match self {
            Record::Incident(i) => &i.severity,
            Record::Alert(a) => &a.severity,
            Record::HuntRow(h) => &h.severity,
        }
    }

    /// The normalized JSON (`format = "xdrsync"`).
    pub fn to_json(&self) -> String {
        match self {
            Record::Incident(i) => serde_json::to_string(i),
            Record::Alert(a) => serde_json::to_string(a),
            Record::HuntRow(h) => serde_json::to_string(h),
        }
        .unwrap_or_default()
    }

    /// Reads [`Record::to_json`] back for `stream`.
    pub fn from_json(stream: StreamKind, json: &str) -> Result<Self, serde_json::Error> {
        Ok(match stream {
            StreamKind::Incidents => Record::Incident(serde_json::from_str(json)?),
            StreamKind::Alerts | StreamKind::Detections => {
                Record::Alert(serde_json::from_str(json)?)
            }
            StreamKind::Hunts => Record::HuntRow(serde_json::from_str(json)?),
        })
    }

    /// The change this version makes against the previous version of the same item
    /// (`None`: the first one seen). A previous record of the other kind counts as none; a
    /// hunt row has one version, so it is always `created`.
    pub fn classify(&self, prev: Option<&Record>) -> (ChangeKind, Changes) {
        match self {
            Record::Incident(i) => classify(prev.and_then(Record::incident), i),
            Record::Alert(a) => classify_alert(prev.and_then(Record::alert), a),
            Record::HuntRow(_) => (ChangeKind::Created, Changes::default()),
        }
    }
}

impl serde::Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Record::Incident(i) => i.serialize(s),
            Record::Alert(a) => a.serialize(s),
            Record::HuntRow(h) => h.serialize(s),
        }
    }
}
