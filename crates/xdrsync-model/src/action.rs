//! Write-back actions: what an analyst asks Defender to change on an incident or alert.
//!
//! One shape for the CLI (`incidents update`, `alerts update`, `alerts comment`), a bulk file
//! (`actions apply`, one JSON object per line) and, later, a SOAR posting to `run`. Values use
//! Graph's names (the SDK models' members, as the normalized schema does) and are checked
//! **before** anything is sent: a determination must belong to the classification it is given
//! with, a legacy-API tenant takes a determination only with `truePositive` (its PATCH page
//! says so). [`Action::graph_patch`] and [`Action::legacy_patch`] build the bodies. Whether the
//! latest stored version already shows an action (which makes re-applying a file idempotent)
//! is the pipeline's diff against it coming out empty.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Which kind of item an action changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// An incident (`PATCH /security/incidents/{id}`, legacy `PATCH /api/incidents/{id}`).
    Incident,
    /// A Graph alert (`PATCH /security/alerts_v2/{id}`).
    Alert,
}

impl Target {
    /// `incident` / `alert`.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Incident => "incident",
            Target::Alert => "alert",
        }
    }
}

/// One action, as a line of an actions file or built from CLI flags.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The tenant: name, tenant id or domain, as `--tenant` takes it.
    pub tenant: String,
    /// What to change (default `incident`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The incident or alert id.
    pub id: String,
    /// `active`, `inProgress`, `resolved`, `redirected` (incidents); `new`, `inProgress`,
    /// `resolved` (alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The owner (a UPN); `""` unassigns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign: Option<String>,
    /// `unknown`, `truePositive`, `falsePositive`, `informationalExpectedActivity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// A Graph `alertDetermination` member fitting the classification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub determination: Option<String>,
    /// Tags to add (incidents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_add: Vec<String>,
    /// Tags to remove (incidents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_remove: Vec<String>,
    /// A comment to add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Why the incident was resolved (Graph `resolvingComment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolving_comment: Option<String>,
}

/// Graph's incident statuses a caller may set.
pub const INCIDENT_STATUSES: &[&str] = &["active", "inProgress", "resolved", "redirected"];
/// Graph's alert statuses a caller may set.
pub const ALERT_STATUSES: &[&str] = &["new", "inProgress", "resolved"];
/// Graph's classifications.
pub const CLASSIFICATIONS: &[&str] = &[
    "unknown",
    "truePositive",
    "falsePositive",
    "informationalExpectedActivity",
];

/// The determinations each classification takes (Graph's incident-classification guidance, in
/// the SDK models' spelling; `apt` and `securityPersonnel` are deprecated but still members).
pub fn determinations_of(classification: &str) -> &'static [&'static str] {
    match classification {
        "truePositive" => &[
            "multiStagedAttack",
            "maliciousUserActivity",
            "compromisedAccount",
            "malware",
            "phishing",
            "unwantedSoftware",
            "apt",
            "other",
        ],
        "informationalExpectedActivity" => &[
            "securityTesting",
            "lineOfBusinessApplication",
            "confirmedActivity",
            "securityPersonnel",
            "other",
        ],
        "falsePositive" => &["notMalicious", "notEnoughDataToValidate", "other"],
        "unknown" => &["unknown"],
        _ => &[],
    }
}

/// Why an action cannot be sent, in plain words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ActionError(pub String);

impl Action {
    /// Its target (`incident` unless it says `alert`).
    pub fn target(&self) -> Target {
        self.target.unwrap_or(Target::Incident)
    }

    /// Whether it changes anything.
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.assign.is_none()
            && self.classification.is_none()
            && self.determination.is_none()
            && self.tags_add.is_empty()
            && self.tags_remove.is_empty()
            && self.comment.is_none()
            && self.resolving_comment.is_none()
    }

    /// Checks the values before anything is sent. `current_classification` is the latest
    /// stored one (a determination alone must fit it); `legacy` is a tenant on the legacy API.
    pub fn validate(
        &self,
        current_classification: Option<&str>,
        legacy: bool,
    ) -> Result<(), ActionError> {
        let err = |m: String| Err(ActionError(m));
        if self.id.trim().is_empty() {
            return err("no id".into());
        }
        if self.is_empty() {
            return err("nothing to change: give a status, owner, classification, determination, tag or comment".into());
        }
        let statuses = match self.target() {
            Target::Incident => INCIDENT_STATUSES,
            Target::Alert => ALERT_STATUSES,
        };
        if let Some(s) = &self.status
            && !statuses.contains(&s.as_str())
        {
            return err(format!(
                "`{s}` is not a {} status (one of {})",
                self.target().as_str(),
                statuses.join(", ")
            ));
        }
        if let Some(c) = &self.classification
            && !CLASSIFICATIONS.contains(&c.as_str())
        {
            return err(format!(
                "`{c}` is not a classification (one of {})",
                CLASSIFICATIONS.join(", ")
            ));
        }
        if let Some(d) = &self.determination {
            let Some(c) = self.classification.as_deref().or(current_classification) else {
                return err(format!(
                    "determination `{d}` needs a classification (give --classification)"
                ));
            };
            let allowed = determinations_of(c);
            if !allowed.contains(&d.as_str()) {
                return err(format!(
                    "determination `{d}` does not go with classification `{c}` (it takes {})",
                    allowed.join(", ")
                ));
            }
            if legacy && c != "truePositive" {
                return err(format!(
                    "the legacy incidents API sets a determination only with classification truePositive (got `{c}`)"
                ));
            }
        }
        if self.target() == Target::Alert
            && (!self.tags_add.is_empty()
                || !self.tags_remove.is_empty()
                || self.resolving_comment.is_some())
        {
            return err("alerts take no tags and no resolving comment".into());
        }
        if legacy && self.resolving_comment.is_some() {
            return err("the legacy incidents API has no resolving comment (use --comment)".into());
        }
        if let Some(t) = self.tags_add.iter().find(|t| self.tags_remove.contains(t)) {
            return err(format!("tag `{t}` is both added and removed"));
        }
        Ok(())
    }

    /// The tags after the action, from the current ones (order kept, added ones last).
    pub fn tags_after(&self, current: &[String]) -> Vec<String> {
        let mut out: Vec<String> = current
            .iter()
            .filter(|t| !self.tags_remove.contains(t))
            .cloned()
            .collect();
        for t in &self.tags_add {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }

    fn has_field_changes(&self) -> bool {
        self.status.is_some()
            || self.assign.is_some()
            || self.classification.is_some()
            || self.determination.is_some()
            || !self.tags_add.is_empty()
            || !self.tags_remove.is_empty()
            || self.resolving_comment.is_some()
    }

    /// The Graph PATCH body (`None`: only a comment), `custom_tags` being the incident's
    /// current custom tags.
    pub fn graph_patch(&self, custom_tags: &[String]) -> Option<Value> {
        if !self.has_field_changes() {
            return None;
        }
        let mut o = Map::new();
        if let Some(s) = &self.status {
            o.insert("status".into(), json!(s));
        }
        if let Some(a) = &self.assign {
            o.insert("assignedTo".into(), json!(a));
        }
        if let Some(c) = &self.classification {
            o.insert("classification".into(), json!(c));
        }
        if let Some(d) = &self.determination {
            o.insert("determination".into(), json!(d));
        }
        if !self.tags_add.is_empty() || !self.tags_remove.is_empty() {
            o.insert("customTags".into(), json!(self.tags_after(custom_tags)));
        }
        if let Some(r) = &self.resolving_comment {
            o.insert("resolvingComment".into(), json!(r));
        }
        Some(Value::Object(o))
    }

    /// The legacy `PATCH /api/incidents/{id}` body (PascalCase enums; a comment is a field).
    pub fn legacy_patch(&self, tags: &[String]) -> Value {
        let mut o = Map::new();
        if let Some(s) = &self.status {
            o.insert("status".into(), json!(pascal(s)));
        }
        if let Some(a) = &self.assign {
            o.insert("assignedTo".into(), json!(a));
        }
        if let Some(c) = &self.classification {
            o.insert("classification".into(), json!(pascal(c)));
        }
        if let Some(d) = &self.determination {
            o.insert("determination".into(), json!(legacy_determination(d)));
        }
        if !self.tags_add.is_empty() || !self.tags_remove.is_empty() {
            o.insert("tags".into(), json!(self.tags_after(tags)));
        }
        if let Some(c) = &self.comment {
            o.insert("comment".into(), json!(c));
        }
        Value::Object(o)
    }

    /// What the action changes, one `field: value` per change, for dry runs and the log.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut add = |k: &str, v: &str| out.push(format!("{k}: {v}"));
        if let Some(s) = &self.status {
            add("status", s);
        }
        if let Some(a) = &self.assign {
            add("assignedTo", if a.is_empty() { "(unassigned)" } else { a });
        }
        if let Some(c) = &self.classification {
            add("classification", c);
        }
        if let Some(d) = &self.determination {
            add("determination", d);
        }
        for t in &self.tags_add {
            add("tag", &format!("+{t}"));
        }
        for t in &self.tags_remove {
            add("tag", &format!("-{t}"));
        }
        if let Some(c) = &self.comment {
            add("comment", c);
        }
        if let Some(r) = &self.resolving_comment {
            add("resolvingComment", r);
        }
        out
    }
}

/// `inProgress` → `InProgress`.
fn pascal(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The legacy PATCH page's spelling of a Graph determination (defender-api.md §1.11).
fn legacy_determination(d: &str) -> String {
    match d {
        "unknown" => "NotAvailable".into(),
        "notMalicious" => "Clean".into(),
        "notEnoughDataToValidate" => "NoEnoughDataToValidate".into(),
        other => pascal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(json: &str) -> Action {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn values_are_checked_before_sending() {
        let ok = a(
            r#"{"tenant":"t","id":"1","status":"resolved","classification":"truePositive","determination":"malware"}"#,
        );
        assert_eq!(ok.validate(None, false), Ok(()));
        assert_eq!(ok.validate(None, true), Ok(()));
        for (json, current, legacy, says) in [
            (
                r#"{"tenant":"t","id":"1"}"#,
                None,
                false,
                "nothing to change",
            ),
            (
                r#"{"tenant":"t","id":"1","status":"closed"}"#,
                None,
                false,
                "not a incident status",
            ),
            (
                r#"{"tenant":"t","id":"1","target":"alert","status":"active"}"#,
                None,
                false,
                "not a alert status",
            ),
            (
                r#"{"tenant":"t","id":"1","classification":"benign"}"#,
                None,
                false,
                "not a classification",
            ),
            (
                r#"{"tenant":"t","id":"1","determination":"malware"}"#,
                None,
                false,
                "needs a classification",
            ),
            (
                r#"{"tenant":"t","id":"1","determination":"malware"}"#,
                Some("falsePositive"),
                false,
                "does not go with classification `falsePositive`",
            ),
            (
                r#"{"tenant":"t","id":"1","classification":"falsePositive","determination":"notMalicious"}"#,
                None,
                true,
                "only with classification truePositive",
            ),
            (
                r#"{"tenant":"t","id":"1","tags_add":["x"],"tags_remove":["x"]}"#,
                None,
                false,
                "both added and removed",
            ),
            (
                r#"{"tenant":"t","id":"1","target":"alert","tags_add":["x"]}"#,
                None,
                false,
                "no tags",
            ),
        ] {
            let e = a(json).validate(current, legacy).unwrap_err();
            assert!(e.0.contains(says), "{json}: {e}");
        }
        // A determination alone fits the stored classification.
        assert_eq!(
            a(r#"{"tenant":"t","id":"1","determination":"phishing"}"#)
                .validate(Some("truePositive"), false),
            Ok(())
        );
        assert!(
            serde_json::from_str::<Action>(r#"{"tenant":"t","id":"1","colour":"red"}"#).is_err()
        );
    }

    #[test]
    fn bodies_in_each_apis_spelling() {
        let act = a(
            r#"{"tenant":"t","id":"1","status":"inProgress","assign":"ana@contoso.com","classification":"falsePositive","determination":"notMalicious","tags_add":["b"],"tags_remove":["a"],"comment":"seen"}"#,
        );
        assert_eq!(
            act.graph_patch(&["a".into(), "c".into()]).unwrap(),
            json!({"status":"inProgress","assignedTo":"ana@contoso.com","classification":"falsePositive","determination":"notMalicious","customTags":["c","b"]})
        );
        assert_eq!(
            act.legacy_patch(&["a".into()]),
            json!({"status":"InProgress","assignedTo":"ana@contoso.com","classification":"FalsePositive","determination":"Clean","tags":["b"],"comment":"seen"})
        );
        assert_eq!(
            a(r#"{"tenant":"t","id":"1","comment":"x"}"#).graph_patch(&[]),
            None
        );
    }
}
