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

/// What a cursor walks through for a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// Incidents with their alerts, from Graph or the legacy XDR API (one identity for both).
    Incidents,
}

impl StreamKind {
    /// The stream's stable name, as stored in cursors.
    pub fn as_str(&self) -> &'static str {
        match self {
            StreamKind::Incidents => "incidents",
        }
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
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        EventId(hex)
    }
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
    }
}
