//! [`HuntRow`]: one row a scheduled hunt returned (stream `hunts`).
//!
//! A scheduled hunt (`[[hunts]]` in the config) runs the same KQL query in many tenants every
//! interval; consecutive runs overlap (a 1-day timespan run hourly returns most rows again), so
//! a row is identified by a hash of its content and the hunt's name: the same row returned by
//! the next run is the same item and is never delivered twice, a row whose values changed (a
//! `summarize` count that grew) is a new one. The hash is over the row with its keys sorted, so
//! a service that reorders columns does not make old rows new.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{ApiKind, Severity, TenantId, Timestamp};

/// One row of a scheduled hunt, as found in one tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HuntRow {
    /// The tenant the query ran in.
    pub tenant_id: TenantId,
    /// The hunt's configured name.
    pub hunt: String,
    /// The hunt's configured severity (hunting rows carry none of their own).
    pub severity: Severity,
    /// The API the query ran on (Graph `runHuntingQuery` or the legacy advanced hunting API).
    pub api: ApiKind,
    /// [`HuntRow::hash_of`] the row: its identity, with the hunt's name.
    pub row_hash: String,
    /// When a run first returned it (its version time: a row has one version).
    pub found_at: Timestamp,
    /// The row's own `Timestamp` column, when it has one that reads as a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    /// The row, column by column, as the service returned it.
    pub row: Map<String, Value>,
}

impl HuntRow {
    /// The row of `hunt` found in `tenant` at `found_at`.
    pub fn new(
        tenant_id: TenantId,
        hunt: &str,
        severity: Severity,
        api: ApiKind,
        row: Map<String, Value>,
        found_at: Timestamp,
    ) -> Self {
        let time = row
            .get("Timestamp")
            .and_then(Value::as_str)
            .and_then(|t| t.parse().ok());
        HuntRow {
            tenant_id,
            row_hash: Self::hash_of(&row),
            hunt: hunt.to_owned(),
            severity,
            api,
            found_at,
            time,
            row,
        }
    }

    /// SHA-256 (first 128 bits, hex) of the row's canonical JSON: keys sorted at every level.
    pub fn hash_of(row: &Map<String, Value>) -> String {
        let mut h = Sha256::new();
        canonical_map(&mut h, row);
        h.finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Its id within the stream: `<hunt>:<row hash>`.
    pub fn item_id(&self) -> String {
        format!("{}:{}", self.hunt, self.row_hash)
    }
}

/// Feeds `m` to `h` with its keys sorted.
fn canonical_map(h: &mut Sha256, m: &Map<String, Value>) {
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_unstable_by_key(|(k, _)| *k);
    h.update(b"{");
    for (k, v) in entries {
        // The key as a JSON string, escapes and all.
        h.update(serde_json::to_string(k).unwrap_or_default().as_bytes());
        h.update(b":");
        canonical(h, v);
        h.update(b",");
    }
    h.update(b"}");
}

/// Feeds `v` to `h` with object keys sorted (numbers and strings as serde_json writes them).
fn canonical(h: &mut Sha256, v: &Value) {
    match v {
        Value::Object(m) => canonical_map(h, m),
        Value::Array(a) => {
            h.update(b"[");
            for v in a {
                canonical(h, v);
                h.update(b",");
            }
            h.update(b"]");
        }
        other => h.update(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_hash_ignores_column_order_and_sees_every_value() {
        let a = row(json!({"DeviceName": "pc1", "Count": 3, "X": {"b": 1, "a": [1, 2]}}));
        let b = row(json!({"X": {"a": [1, 2], "b": 1}, "Count": 3, "DeviceName": "pc1"}));
        let c = row(json!({"DeviceName": "pc1", "Count": 4, "X": {"b": 1, "a": [1, 2]}}));
        let d = row(json!({"DeviceName": "pc1", "Count": 3, "X": {"b": 1, "a": [2, 1]}}));
        assert_eq!(HuntRow::hash_of(&a), HuntRow::hash_of(&b));
        assert_ne!(HuntRow::hash_of(&a), HuntRow::hash_of(&c));
        assert_ne!(HuntRow::hash_of(&a), HuntRow::hash_of(&d));
        assert_eq!(HuntRow::hash_of(&a).len(), 32);
    }

    #[test]
    fn a_row_reads_its_time_and_round_trips() {
        let t: Timestamp = "2026-12-01T10:00:00Z".parse().expect("time");
        let r = HuntRow::new(
            TenantId::new("t1"),
            "lsass",
            Severity::High,
            ApiKind::Graph,
            row(json!({"Timestamp": "2026-11-30T08:00:00.1234567Z", "DeviceName": "pc1"})),
            t,
        );
        assert_eq!(
            r.time.map(|t| t.to_string()).as_deref(),
            Some("2026-11-30T08:00:00.1234567Z")
        );
        assert!(r.item_id().starts_with("lsass:"));
        let back: HuntRow =
            serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("read back");
        assert_eq!(back, r);
        let untimed = HuntRow::new(
            TenantId::new("t1"),
            "count",
            Severity::Low,
            ApiKind::Xdr,
            row(json!({"Timestamp": "not a time", "n": 1})),
            t,
        );
        assert_eq!(untimed.time, None);
    }
}
