use xdrsync_model::{ApiKind, Incident, IncidentId, Record, Severity, TenantId};
use xdrsync_store::NewVersion;

use super::*;

fn version(id: u32) -> NewVersion {
    NewVersion {
        record: Record::Incident(Incident {
            tenant_id: TenantId::canonical("t"),
            incident_id: IncidentId::new(id.to_string()),
            api: ApiKind::Xdr,
            title: "x".into(),
            created: "2026-11-01T00:00:00Z".parse().unwrap(),
            last_update: Timestamp::from_ticks(1_000_000 + i64::from(id)),
            status: "active".into(),
            severity: Severity::Low,
            classification: "unknown".into(),
            determination: "unknown".into(),
            assigned_to: None,
            redirect_incident_id: None,
            web_url: None,
            tags: vec![],
            alerts: vec![],
        }),
        raw: format!(r#"{{"incidentId":{id}}}"#),
    }
}

fn seqs(path: &Path) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

#[test]
fn delivers_each_version_once_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_memory().unwrap();
    let t = TenantId::canonical("t");
    store.commit(&t, &[version(1), version(2)], None).unwrap();
    let sink = NdjsonSink::new("ndjson", dir.path().join("out.ndjson"));
    assert_eq!(
        sink.deliver(&store).unwrap(),
        Delivered {
            events: 2,
            position: 2
        }
    );
    assert_eq!(
        sink.deliver(&store).unwrap(),
        Delivered {
            events: 0,
            position: 2
        }
    );
    store.commit(&t, &[version(3)], None).unwrap();
    assert_eq!(sink.deliver(&store).unwrap().events, 1);
    assert_eq!(seqs(&dir.path().join("out.ndjson")), [1, 2, 3]);
}

#[test]
fn crash_after_write_before_ack_does_not_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.ndjson");
    let store = SqliteStore::open_in_memory().unwrap();
    let t = TenantId::canonical("t");
    store
        .commit(&t, &[version(1), version(2), version(3)], None)
        .unwrap();
    // Simulate: lines 1-2 written and synced, then killed before the position was stored,
    // in the middle of writing line 3.
    let lines: Vec<String> = store
        .versions_after(0, 10)
        .unwrap()
        .iter()
        .map(|v| ndjson_line(v).unwrap())
        .collect();
    std::fs::write(
        &path,
        format!("{}\n{}\n{}", lines[0], lines[1], &lines[2][..10]),
    )
    .unwrap();
    let sink = NdjsonSink::new("ndjson", &path);
    assert_eq!(
        sink.deliver(&store).unwrap(),
        Delivered {
            events: 1,
            position: 3
        }
    );
    assert_eq!(seqs(&path), [1, 2, 3]);
}

#[test]
fn json_array_keeps_raw_bytes_and_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(latest_incidents_file_name(
        "2026-11-22T03:10:11.5Z".parse().unwrap(),
    ));
    assert!(path.ends_with("Latest Incidents 2026-11-22T03.10.11.5000000Z.json"));
    write_json_array(
        &path,
        &[
            r#"{"incidentId":1,"x":1.10}"#.into(),
            r#"{"incidentId":2}"#.into(),
        ],
    )
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(r#""x":1.10"#));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    write_json_array(&path, &[]).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "[]\n");
}

/// The envelope of an NDJSON line, pinned: key order and names are a wire format.
#[test]
fn ndjson_line_envelope_is_stable() {
    let store = SqliteStore::open_in_memory().unwrap();
    store
        .commit(&TenantId::canonical("t"), &[version(7)], None)
        .unwrap();
    let v = &store.versions_after(0, 1).unwrap()[0];
    let line = ndjson_line(v).unwrap();
    let head = format!(
        r#"{{"event_id":"{}","seq":1,"stream":"incidents","change":"created","changes":{{}},"tenant_id":"t","incident_id":"7","last_update":"1970-01-01T00:00:00.1000007Z","incident":{{"tenant_id":"t","incident_id":"7","api":"xdr","#,
        v.event_id
    );
    assert!(line.starts_with(&head), "{line}");
    assert!(line.ends_with(r#""tags":[],"alerts":[]}}"#), "{line}");
}
