use xdrsync_model::{ApiKind, IncidentId, Severity};

use super::*;

fn version(tenant: &str, id: &str, t: &str) -> NewVersion {
    NewVersion {
        incident: Incident {
            tenant_id: TenantId::canonical(tenant),
            incident_id: IncidentId::new(id),
            api: ApiKind::Graph,
            title: format!("incident {id}"),
            created: "2026-11-01T00:00:00Z".parse().unwrap(),
            last_update: t.parse().unwrap(),
            status: "active".into(),
            severity: Severity::High,
            classification: "unknown".into(),
            determination: "unknown".into(),
            assigned_to: None,
            redirect_incident_id: None,
            web_url: None,
            tags: vec![],
            alerts: vec![],
        },
        raw: format!(r#"{{"id":"{id}","lastUpdateDateTime":"{t}"}}"#),
    }
}

#[test]
fn versions_dedup_and_classify() {
    let s = SqliteStore::open_in_memory().unwrap();
    let t = TenantId::canonical("a");
    let first = s
        .commit(
            &t,
            &[
                version("a", "1", "2026-11-01T00:00:01Z"),
                version("a", "2", "2026-11-01T00:00:02Z"),
            ],
            None,
        )
        .unwrap();
    assert_eq!(
        first,
        CommitStats {
            created: 2,
            updated: 0,
            unchanged: 0
        }
    );
    // Same instant, other spelling: the same version.
    let again = s
        .commit(
            &t,
            &[
                version("a", "1", "2026-11-01T00:00:01.0000000Z"),
                version("a", "1", "2026-11-01T00:00:05Z"),
            ],
            None,
        )
        .unwrap();
    assert_eq!(
        again,
        CommitStats {
            created: 0,
            updated: 1,
            unchanged: 1
        }
    );
    let all = s.versions_after(0, 100).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(
        all.iter().map(|v| v.change.as_str()).collect::<Vec<_>>(),
        ["created", "created", "updated"]
    );
    assert_eq!(
        all[2].raw,
        r#"{"id":"1","lastUpdateDateTime":"2026-11-01T00:00:05Z"}"#
    );
    assert_eq!(s.versions_after(2, 100).unwrap().len(), 1);
    // Another tenant's incident 1 is a different incident.
    let other = s
        .commit(
            &TenantId::canonical("b"),
            &[version("b", "1", "2026-11-01T00:00:01Z")],
            None,
        )
        .unwrap();
    assert_eq!(other.created, 1);
}

#[test]
fn cursor_moves_only_forward_with_the_data() {
    let s = SqliteStore::open_in_memory().unwrap();
    let t = TenantId::canonical("a");
    assert_eq!(s.cursor(&t, StreamKind::Incidents).unwrap(), None);
    let later: Timestamp = "2026-11-02T00:00:00Z".parse().unwrap();
    let earlier: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
    s.commit(&t, &[], Some((StreamKind::Incidents, later)))
        .unwrap();
    s.commit(&t, &[], Some((StreamKind::Incidents, earlier)))
        .unwrap();
    assert_eq!(s.cursor(&t, StreamKind::Incidents).unwrap(), Some(later));
}

#[test]
fn sink_positions_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.sink_position("ndjson").unwrap(), 0);
        s.set_sink_position("ndjson", 7).unwrap();
        s.set_sink_position("ndjson", 3).unwrap();
        s.commit(
            &TenantId::canonical("a"),
            &[version("a", "1", "2026-11-01T00:00:01Z")],
            None,
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.sink_position("ndjson").unwrap(), 7);
    assert_eq!(s.last_seq().unwrap(), 1);
    assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute("INSERT INTO schema_version VALUES (99, 'future')", [])
        .unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("schema version 99, newer than this xdrsync understands"),
        "{err}"
    );
}

#[test]
fn poison_is_recorded_once_and_counted() {
    let s = SqliteStore::open_in_memory().unwrap();
    let t = TenantId::canonical("a");
    let p = PoisonRecord {
        incident_id: Some("9".into()),
        reason: "bad".into(),
        raw: "{}".into(),
    };
    s.record_poison(&t, std::slice::from_ref(&p)).unwrap();
    s.record_poison(&t, &[p]).unwrap();
    assert_eq!(s.poison_count(&t).unwrap(), 1);
}
