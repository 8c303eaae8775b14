//! Domain types of xdrsync.
//!
//! This crate sits at the bottom of the workspace: every other crate depends on it and it depends
//! on none of them. It does no I/O. It holds
//!
//! - identifiers as newtypes ([`TenantId`], [`IncidentId`]) so a tenant can never be passed where
//!   an incident is expected;
//! - [`Timestamp`], the one canonical form of the API's variable-precision UTC times, so that the
//!   same instant written `…57.29Z` by one API and `…57.2900000Z` by the other is one version;
//! - the normalized [`Incident`] and [`Alert`] schemas, and [`Record`] (a version of any stream),
//!   and before them: the normalized [`Incident`] schema that both the legacy Defender XDR API and Microsoft Graph
//!   are mapped into ([`normalize`]), with a stable [`VersionKey`] and [`EventId`];
//! - redacting wrappers for secrets and URLs ([`redact`]), so a secret cannot reach a log by
//!   accident: `Debug` and `Display` print `**REDACTED**`.

pub mod action;
pub mod alert;
pub mod change;
pub mod duration;
pub mod hunt;
pub mod ids;
pub mod incident;
pub mod normalize;
pub mod record;
pub mod redact;
pub mod sparse;
pub mod time;

pub use alert::{
    Alert, AlertApi, Evidence, GRAPH_ALERT_FIELDS, MDE_ALERT_FIELDS, normalize_graph_alert,
    normalize_mde_alert, normalize_siem_detection,
};
pub use change::{ChangeKind, Changes};
pub use duration::{DurationParseError, parse_duration};
pub use hunt::HuntRow;
pub use ids::{EventId, IncidentId, StreamKind, TenantId, VersionKey};
pub use incident::{AlertSummary, ApiKind, Incident, Severity, TokenVersion};
pub use normalize::{
    GRAPH_INCIDENT_FIELDS, NormalizeError, XDR_INCIDENT_FIELDS, normalize_graph_incident,
    normalize_xdr_incident,
};
pub use record::Record;
pub use redact::{SafeUrl, SecretString, printable};
pub use time::{Timestamp, TimestampError};
