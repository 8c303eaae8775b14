//! Identifier newtypes.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Timestamp;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an identifier.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

string_id!(
    /// A Microsoft Entra tenant, by GUID (lower case) or verified domain.
    TenantId
);
string_id!(
    /// An incident id. The legacy API sends a JSON number (`924521`), Graph a string (`"924521"`);
    /// both become the same decimal text here, which is what makes the two APIs one identity.
    IncidentId
);

impl TenantId {
    /// A tenant id in its canonical (lower-case) form, since GUIDs are case-insensitive.
    pub fn canonical(id: &str) -> Self {
        Self(id.trim().to_ascii_lowercase())
    }
}

/// A stream of one tenant: what a cursor walks through and what a stored version is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// Incidents with their alerts, from Graph or the legacy XDR API (one identity for both).
    Incidents,
    /// Alerts on their own, from Graph `alerts_v2` or the MDE alerts API (one identity for
    /// both).
    Alerts,
    /// SIEM API detections: one per alert entity.
    Detections,
    /// Rows of scheduled hunts (`[[hunts]]`): not pulled with a cursor but found by running a
    /// query; one version per row.
    Hunts,
}

impl StreamKind {
    /// Every stream.
    pub const ALL: [StreamKind; 4] = [
        StreamKind::Incidents,
        StreamKind::Alerts,
        StreamKind::Detections,
        StreamKind::Hunts,
    ];

    /// The streams a tenant pulls with a cursor (`streams = [...]` of a tenant).
    pub const PULLED: [StreamKind; 3] = [
        StreamKind::Incidents,
        StreamKind::Alerts,
        StreamKind::Detections,
    ];

    /// Whether a tenant pulls it (every stream but `hunts`).
    pub fn is_pulled(&self) -> bool {
        !matches!(self, StreamKind::Hunts)
    }

    /// Whether an item of the stream has one version only: its id names its content (a hunt
    /// row), so finding it again at a later time is finding the same version.
    pub fn single_version(&self) -> bool {
        matches!(self, StreamKind::Hunts)
    }

    /// The stream's stable name, as stored in cursors and used in the config.
    pub fn as_str(&self) -> &'static str {
        match self {
            StreamKind::Incidents => "incidents",
            StreamKind::Alerts => "alerts",
            StreamKind::Detections => "detections",
            StreamKind::Hunts => "hunts",
        }
    }

    /// Parses [`StreamKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of one incident version: `(tenant, incident, last-update time)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionKey {
    /// The tenant the incident belongs to.
    pub tenant: TenantId,
    /// The incident.
    pub incident: IncidentId,
    /// The incident's last-update time for this version.
    pub last_update: Timestamp,
}

impl VersionKey {
    /// The stable event id of this version, which sinks use to drop repeats.
    pub fn event_id(&self) -> EventId {
        let mut h = Sha256::new();
        h.update(self.tenant.as_str().as_bytes());
        h.update([0]);
        h.update(self.incident.as_str().as_bytes());
        h.update([0]);
        h.update(self.last_update.to_string().as_bytes());
        let digest = h.finalize();
        EventId(hex16(&digest))
    }
}

impl EventId {
    /// The event id of a version of an item of a stream other than incidents (whose ids keep
    /// [`VersionKey::event_id`]): the stream's name is hashed in, so an alert id can never
    /// collide with an incident id or a detection's.
    pub fn of(tenant: &TenantId, stream: StreamKind, item: &str, last_update: Timestamp) -> Self {
        let mut h = Sha256::new();
        for part in [tenant.as_str(), stream.as_str(), item] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(last_update.to_string().as_bytes());
        let digest = h.finalize();
        EventId(hex16(&digest))
    }
}

/// The first 16 bytes of a SHA-256 digest, in hex (32 digits).
fn hex16(digest: &[u8]) -> String {
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

string_id!(
    /// A stable, content-derived id of one delivered event (32 hex digits). The same incident
    /// version always gets the same id, on any machine, in any run.
    EventId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_is_stable_and_distinct() {
        let key = |t: &str| VersionKey {
            tenant: TenantId::canonical("AAAA"),
            incident: IncidentId::new("42"),
            last_update: t.parse().unwrap(),
        };
        let a = key("2020-09-06T14:46:57.29Z").event_id();
        assert_eq!(a, key("2020-09-06T14:46:57.2900000Z").event_id());
        assert_ne!(a, key("2020-09-06T14:46:57.3Z").event_id());
        assert_eq!(a.as_str().len(), 32);
        // Pinned: the id must never change between releases, or sinks would see repeats.
        assert_eq!(a.as_str(), "10eedb4a33985857669be8837e3f050e");
        let t = "2020-09-06T14:46:57.29Z".parse().unwrap();
        let tenant = TenantId::canonical("AAAA");
        let alert = EventId::of(&tenant, StreamKind::Alerts, "42", t);
        assert_ne!(alert, a);
        assert_ne!(alert, EventId::of(&tenant, StreamKind::Detections, "42", t));
        assert_eq!(alert.as_str(), "637c84eab25d11acc3222d7a9b7865a9", "pinned");
    }
}
