//! Change events: what one incident version changed compared with the version before it.
//!
//! Incidents are mutable objects. Peers either re-emit the whole incident on every change (and
//! users see "duplicates") or never look at changes at all (peers.md §10.3, §10.5, §12.1). The
//! stream xdrsync emits has one event per version, and says what kind of change it was and which
//! fields moved, so a SIEM rule can react to "an alert was added" or "the incident was merged"
//! without diffing JSON itself.
//!
//! The kinds, by precedence (a version that does several things is the most specific one; its
//! `fields` still list everything that changed):
//!
//! | kind | when |
//! |---|---|
//! | `created` | the first version of the incident xdrsync has seen (`redirected` if that one is already merged) |
//! | `redirected` | it now points to another incident (`redirectIncidentId`, merged) |
//! | `alert_added` | it carries alerts the previous version did not |
//! | `updated` | anything else (status, owner, classification, severity, tags, comments …) |
//!
//! The API the version was read from is not a change: a tenant switched from the legacy API to
//! Graph keeps one identity and one history.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Alert, Incident, IncidentId};

/// The kind of a change event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// First version seen.
    Created,
    /// A field changed.
    Updated,
    /// New alerts joined the incident.
    AlertAdded,
    /// The incident was merged into another one.
    Redirected,
}

impl ChangeKind {
    /// The stable name (store column, sink envelopes).
    pub fn as_str(&self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::AlertAdded => "alert_added",
            ChangeKind::Redirected => "redirected",
        }
    }

    /// Parses [`ChangeKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => ChangeKind::Created,
            "updated" => ChangeKind::Updated,
            "alert_added" => ChangeKind::AlertAdded,
            "redirected" => ChangeKind::Redirected,
            _ => return None,
        })
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What changed between two versions of one incident.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Normalized field names whose value changed (`status`, `assigned_to`, `alerts`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Ids of alerts the previous version did not carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts_added: Vec<String>,
    /// The incident this one was merged into, when that is new in this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirected_to: Option<IncidentId>,
}

/// Compares `next` with the version before it (`None`: the first one seen).
pub fn classify(prev: Option<&Incident>, next: &Incident) -> (ChangeKind, Changes) {
    let Some(prev) = prev else {
        // First seen already merged (it was merged before xdrsync looked): say so.
        if let Some(to) = &next.redirect_incident_id {
            let changes = Changes {
                redirected_to: Some(to.clone()),
                ..Changes::default()
            };
            return (ChangeKind::Redirected, changes);
        }
        return (ChangeKind::Created, Changes::default());
    };
    let fields = changed(&[
        ("title", prev.title != next.title),
        ("created", prev.created != next.created),
        ("status", prev.status != next.status),
        ("severity", prev.severity != next.severity),
        ("classification", prev.classification != next.classification),
        ("determination", prev.determination != next.determination),
        ("assigned_to", prev.assigned_to != next.assigned_to),
        (
            "redirect_incident_id",
            prev.redirect_incident_id != next.redirect_incident_id,
        ),
        (
            "web_url",
            prev.web_url.is_some() && prev.web_url != next.web_url,
        ),
        ("tags", prev.tags != next.tags),
        ("alerts", prev.alerts != next.alerts),
    ]);
    let alerts_added: Vec<String> = next
        .alerts
        .iter()
        .filter(|a| !prev.alerts.iter().any(|p| p.id == a.id))
        .map(|a| a.id.clone())
        .collect();
    let redirected_to = next
        .redirect_incident_id
        .clone()
        .filter(|r| prev.redirect_incident_id.as_ref() != Some(r));
    let kind = if redirected_to.is_some() {
        ChangeKind::Redirected
    } else if !alerts_added.is_empty() {
        ChangeKind::AlertAdded
    } else {
        ChangeKind::Updated
    };
    (
        kind,
        Changes {
            fields,
            alerts_added,
            redirected_to,
        },
    )
}

/// Compares an alert (or SIEM detection) version with the one before it: `created` for the
/// first one seen, else `updated` with the fields that moved. The API is not a change (MDE →
/// Graph keeps one history), nor are the fields only one of the APIs fills (`web_url`,
/// evidence details MDE lists only with `$expand`).
pub fn classify_alert(prev: Option<&Alert>, next: &Alert) -> (ChangeKind, Changes) {
    let Some(prev) = prev else {
        return (ChangeKind::Created, Changes::default());
    };
    let fields = changed(&[
        ("incident_id", prev.incident_id != next.incident_id),
        ("title", prev.title != next.title),
        ("status", prev.status != next.status),
        ("severity", prev.severity != next.severity),
        ("classification", prev.classification != next.classification),
        ("determination", prev.determination != next.determination),
        ("assigned_to", prev.assigned_to != next.assigned_to),
        ("resolved", prev.resolved != next.resolved),
        ("last_activity", prev.last_activity != next.last_activity),
    ]);
    (
        ChangeKind::Updated,
        Changes {
            fields,
            ..Changes::default()
        },
    )
}

/// The names of the fields whose comparison says they changed, in the order given.
fn changed(fields: &[(&str, bool)]) -> Vec<String> {
    fields
        .iter()
        .filter(|(_, moved)| *moved)
        .map(|(name, _)| (*name).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AlertSummary, ApiKind, Severity, TenantId};

    fn incident() -> Incident {
        Incident {
            tenant_id: TenantId::canonical("t"),
            incident_id: IncidentId::new("7"),
            api: ApiKind::Xdr,
            title: "Multi-stage incident".into(),
            created: "2026-11-01T00:00:00Z".parse().unwrap(),
            last_update: "2026-11-01T00:00:00Z".parse().unwrap(),
            status: "active".into(),
            severity: Severity::Medium,
            classification: "unknown".into(),
            determination: "unknown".into(),
            assigned_to: None,
            redirect_incident_id: None,
            web_url: None,
            tags: vec![],
            alerts: vec![alert("da1")],
        }
    }

    fn alert(id: &str) -> AlertSummary {
        AlertSummary {
            id: id.into(),
            title: "Suspicious PowerShell".into(),
            severity: Severity::Medium,
            status: "new".into(),
            category: None,
            service_source: "microsoftDefenderForEndpoint".into(),
            detection_source: "edr".into(),
            created: None,
            last_update: None,
            mitre_techniques: vec![],
            evidence_count: 1,
        }
    }

    #[test]
    fn kinds_by_precedence_and_fields_listed() {
        let a = incident();
        assert_eq!(classify(None, &a).0, ChangeKind::Created);
        let mut merged = a.clone();
        merged.redirect_incident_id = Some(IncidentId::new("3"));
        assert_eq!(classify(None, &merged).0, ChangeKind::Redirected);

        let mut b = a.clone();
        b.status = "inProgress".into();
        b.assigned_to = Some("analyst@contoso.com".into());
        assert_eq!(
            classify(Some(&a), &b),
            (
                ChangeKind::Updated,
                Changes {
                    fields: vec!["status".into(), "assigned_to".into()],
                    ..Changes::default()
                }
            )
        );

        let mut c = b.clone();
        c.alerts.push(alert("da2"));
        let (kind, changes) = classify(Some(&b), &c);
        assert_eq!(kind, ChangeKind::AlertAdded);
        assert_eq!(changes.alerts_added, vec!["da2".to_owned()]);
        assert_eq!(changes.fields, vec!["alerts".to_owned()]);

        let mut d = c.clone();
        d.status = "redirected".into();
        d.redirect_incident_id = Some(IncidentId::new("5"));
        d.alerts.push(alert("da3"));
        let (kind, changes) = classify(Some(&c), &d);
        assert_eq!(kind, ChangeKind::Redirected);
        assert_eq!(changes.redirected_to, Some(IncidentId::new("5")));
        assert_eq!(changes.alerts_added, vec!["da3".to_owned()]);
    }

    #[test]
    fn switching_api_is_not_a_change() {
        let a = incident();
        let mut b = a.clone();
        b.api = ApiKind::Graph;
        b.web_url = Some("https://security.microsoft.com/incidents/7".into());
        let (kind, changes) = classify(Some(&a), &b);
        assert_eq!(kind, ChangeKind::Updated);
        assert!(changes.fields.is_empty(), "{changes:?}");
    }

    #[test]
    fn kind_names_round_trip() {
        for k in [
            ChangeKind::Created,
            ChangeKind::Updated,
            ChangeKind::AlertAdded,
            ChangeKind::Redirected,
        ] {
            assert_eq!(ChangeKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ChangeKind::parse("deleted"), None);
    }
}
