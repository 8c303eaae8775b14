//! Property tests: the normalizers take any JSON a server could send and either normalize it
//! or say what is wrong — never panic. Objects are built from the field names the APIs use
//! (so generated input gets past the first checks and reaches the deep paths), with values of
//! every JSON type, including timestamps that parse and ones that nearly do.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use proptest::prelude::*;
use serde_json::{Map, Value};
use xdrsync_model::{
    TenantId, normalize_graph_alert, normalize_graph_incident, normalize_mde_alert,
    normalize_siem_detection, normalize_xdr_incident,
};

const KEYS: &[&str] = &[
    "id",
    "incidentId",
    "incidentName",
    "displayName",
    "title",
    "description",
    "severity",
    "status",
    "classification",
    "determination",
    "assignedTo",
    "createdTime",
    "createdDateTime",
    "lastUpdateTime",
    "lastUpdateDateTime",
    "firstActivityDateTime",
    "lastActivityDateTime",
    "resolvedDateTime",
    "resolvedTime",
    "alerts",
    "alertId",
    "evidence",
    "entities",
    "devices",
    "@odata.type",
    "entityType",
    "tags",
    "customTags",
    "systemTags",
    "comments",
    "redirectIncidentId",
    "incidentWebUrl",
    "alertWebUrl",
    "serviceSource",
    "detectionSource",
    "category",
    "mitreTechniques",
    "threatName",
    "threatDisplayName",
    "computerDnsName",
    "deviceDnsName",
    "fileName",
    "fileDetails",
    "imageFile",
    "processCommandLine",
    "userAccount",
    "accountName",
    "userPrincipalName",
    "ipAddress",
    "url",
    "mailboxAddress",
    "AlertId",
    "AlertPart",
    "AlertTime",
    "AlertTitle",
    "Severity",
    "Category",
    "Source",
    "LastProcessedTimeUtc",
    "ComputerDnsName",
    "FileName",
    "IpAddress",
    "Url",
    "UserName",
    "CommandLine",
    "ThreatName",
    "FullId",
    "IncidentLinkToMTP",
    "LinkToMTP",
    "Description",
];

const WORDS: &[&str] = &[
    "2026-11-30T05:00:00Z",
    "2026-11-30T05:00:00.1234567Z",
    "2026-11-30",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.9999999Z",
    "2026-13-45T99:99:99Z",
    "",
    "high",
    "High",
    "medium",
    "informational",
    "active",
    "resolved",
    "redirected",
    "inProgress",
    "new",
    "truePositive",
    "falsePositive",
    "compromisedAccount",
    "#microsoft.graph.security.deviceEvidence",
    "#microsoft.graph.security.fileEvidence",
    "#microsoft.graph.security.processEvidence",
    "File",
    "Process",
    "User",
    "Ip",
    "Url",
    "MailBox",
    "\u{0}\u{1b}[31m\u{2028}",
    "ünïcødé",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        proptest::sample::select(WORDS).prop_map(|s| Value::String(s.to_owned())),
        ".{0,40}".prop_map(Value::String),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 12, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..14).prop_map(
                |pairs| {
                    Value::Object(
                        pairs
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect::<Map<_, _>>(),
                    )
                }
            ),
        ]
    })
}

/// A top-level object (what a page's `value[]` item is), built from the APIs' field names.
fn item() -> impl Strategy<Value = Value> {
    proptest::collection::vec((proptest::sample::select(KEYS), json()), 0..24).prop_map(|pairs| {
        Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn normalizers_never_panic_on_any_json(raw in item()) {
        let t = TenantId::canonical("00000000-0000-4000-8000-000000000001");
        // Each returns its value or its error; what matters is that it returns.
        let _ = normalize_xdr_incident(&t, &raw);
        let _ = normalize_graph_incident(&t, &raw);
        let _ = normalize_graph_alert(&t, &raw);
        let _ = normalize_mde_alert(&t, &raw);
        let _ = normalize_siem_detection(&t, &raw);
    }

    /// A normalized record keeps the text it was given printable-safe on output paths: the
    /// normalizer itself succeeds or names the field that is wrong.
    #[test]
    fn a_refusal_names_a_field(raw in item()) {
        let t = TenantId::canonical("00000000-0000-4000-8000-000000000001");
        if let Err(e) = normalize_graph_incident(&t, &raw) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
