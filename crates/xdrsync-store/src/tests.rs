use xdrsync_model::{Alert, AlertApi, ApiKind, Incident, IncidentId, Severity};

use super::*;

fn version(tenant: &str, id: &str, t: &str) -> NewVersion {
    NewVersion {
        record: Record::Incident(Incident {
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
        }),
        raw: format!(r#"{{"id":"{id}","lastUpdateDateTime":"{t}"}}"#),
    }
}

fn incident(v: &mut NewVersion) -> &mut Incident {
    match &mut v.record {
        Record::Incident(i) => i,
        Record::Alert(_) | Record::HuntRow(_) => panic!("not an incident"),
    }
}

fn alert(tenant: &str, id: &str, part: Option<u32>, t: &str) -> NewVersion {
    NewVersion {
        record: Record::Alert(Alert {
            tenant_id: TenantId::canonical(tenant),
            alert_id: id.into(),
            part,
            api: if part.is_some() {
                AlertApi::Siem
            } else {
                AlertApi::Mde
            },
            incident_id: Some(IncidentId::new("1")),
            title: "Mimikatz".into(),
            description: None,
            severity: Severity::High,
            status: "new".into(),
            classification: "unknown".into(),
            determination: "unknown".into(),
            category: None,
            service_source: "microsoftDefenderForEndpoint".into(),
            detection_source: "antivirus".into(),
            created: "2026-11-01T00:00:00Z".parse().unwrap(),
            last_update: t.parse().unwrap(),
            first_activity: None,
            last_activity: None,
            resolved: None,
            assigned_to: None,
            mitre_techniques: vec![],
            threat_name: None,
            web_url: None,
            evidence: vec![],
        }),
        raw: format!(r#"{{"id":"{id}"}}"#),
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
            ..CommitStats::default()
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
            updated: 1,
            unchanged: 1,
            ..CommitStats::default()
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
fn sink_state_is_replaced_with_the_position_and_backlog_is_counted() {
    let s = SqliteStore::open_in_memory().unwrap();
    assert_eq!(s.sink_state("file").unwrap(), (0, None));
    s.set_sink_state("file", 0, Some(r#"{"pending":3}"#))
        .unwrap();
    assert_eq!(
        s.sink_state("file").unwrap(),
        (0, Some(r#"{"pending":3}"#.to_owned()))
    );
    s.set_sink_state("file", 3, None).unwrap();
    s.set_sink_state("file", 2, None).unwrap();
    assert_eq!(s.sink_state("file").unwrap(), (3, None));
    assert_eq!(s.sink_position("file").unwrap(), 3);

    let t = TenantId::canonical("a");
    let vs: Vec<_> = (1..=5)
        .map(|i| version("a", &i.to_string(), "2026-11-01T00:00:01Z"))
        .collect();
    s.commit(&t, &vs, None).unwrap();
    assert_eq!(s.count_after(0).unwrap(), 5);
    assert_eq!(s.count_after(3).unwrap(), 2);
    assert_eq!(s.count_after(5).unwrap(), 0);
    // Keeping the newest 2 means starting after seq 3; keeping 9 means keeping everything.
    assert_eq!(s.seq_before_newest(2).unwrap(), 3);
    assert_eq!(s.seq_before_newest(9).unwrap(), 0);
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
        stream: StreamKind::Incidents,
        item_id: Some("9".into()),
        reason: "bad".into(),
        raw: "{}".into(),
    };
    s.record_poison(&t, std::slice::from_ref(&p)).unwrap();
    s.record_poison(&t, &[p]).unwrap();
    assert_eq!(s.poison_count(&t).unwrap(), 1);
}

#[test]
fn change_events_compare_with_the_previous_version_in_time_order() {
    let s = SqliteStore::open_in_memory().unwrap();
    let t = TenantId::canonical("a");
    let v1 = version("a", "9", "2026-11-01T00:00:01Z");
    let mut v2 = version("a", "9", "2026-11-01T00:00:02Z");
    incident(&mut v2).status = "inProgress".into();
    let mut v3 = version("a", "9", "2026-11-01T00:00:03Z");
    incident(&mut v3).status = "redirected".into();
    incident(&mut v3).redirect_incident_id = Some(IncidentId::new("4"));
    // The newest version arrives first, the oldest last (a backfill behind a live pull).
    let stats = s.commit(&t, &[v3, v1], None).unwrap();
    assert_eq!((stats.created, stats.updated, stats.redirected), (1, 1, 1));
    s.commit(&t, &[v2], None).unwrap();
    let all = s.versions_after(0, 10).unwrap();
    let kinds: Vec<_> = all.iter().map(|v| v.change.as_str()).collect();
    assert_eq!(kinds, ["redirected", "created", "updated"]);
    assert_eq!(all[0].changes.redirected_to, Some(IncidentId::new("4")));
    assert_eq!(all[2].changes.fields, vec!["status".to_owned()]);
}

#[test]
fn a_version_1_database_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL);
             INSERT INTO schema_version VALUES (1, '2026-11-01T00:00:00Z');",
        )
        .unwrap();
        conn.execute_batch(MIGRATIONS[0].1).unwrap();
        conn.execute(
            "INSERT INTO incident_versions (tenant_id, incident_id, last_update, event_id, change, api, normalized, raw, fetched_at)
             VALUES ('a', '1', '2026-11-01T00:00:01.0000000Z', 'e1', 'created', 'graph', ?1, '{}', 'now')",
            [version("a", "1", "2026-11-01T00:00:01Z").record.to_json()],
        )
        .unwrap();
        // A newer row that was deleted: its seq must not be handed out again.
        conn.execute(
            "INSERT INTO incident_versions (seq, tenant_id, incident_id, last_update, event_id, change, api, normalized, raw, fetched_at)
             VALUES (5, 'a', '2', '2026-11-01T00:00:01.0000000Z', 'e5', 'created', 'graph', '{}', '{}', 'now')",
            [],
        )
        .unwrap();
        conn.execute("DELETE FROM incident_versions WHERE seq = 5", [])
            .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let all = s.versions_after(0, 10).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].event_id, "e1");
    assert_eq!(all[0].changes, Changes::default());
    // The next version of the migrated incident is an update of it.
    let stats = s
        .commit(
            &TenantId::canonical("a"),
            &[version("a", "1", "2026-11-01T00:00:02Z")],
            None,
        )
        .unwrap();
    assert_eq!(stats.updated, 1);
    assert_eq!(
        s.last_seq().unwrap(),
        6,
        "the sequence continues after the migration"
    );
    assert_eq!(
        s.versions_after(1, 10).unwrap()[0].stream,
        StreamKind::Incidents
    );
}

/// Alerts, detections and incidents share one outbox order but are separate items: the same id
/// in two streams is two items, and an alert's versions are classified against its own past.
#[test]
fn streams_share_the_outbox_and_keep_their_identities() {
    let s = SqliteStore::open_in_memory().unwrap();
    let t = TenantId::canonical("a");
    let mut later = alert("a", "1", None, "2026-11-01T00:00:02Z");
    if let Record::Alert(a) = &mut later.record {
        a.status = "resolved".into();
        a.api = AlertApi::Graph;
    }
    let stats = s
        .commit(
            &t,
            &[
                version("a", "1", "2026-11-01T00:00:01Z"),
                alert("a", "1", None, "2026-11-01T00:00:01Z"),
                alert("a", "1", Some(0), "2026-11-01T00:00:01Z"),
                alert("a", "1", Some(1), "2026-11-01T00:00:01Z"),
                later,
            ],
            Some((StreamKind::Alerts, "2026-11-01T00:00:02Z".parse().unwrap())),
        )
        .unwrap();
    assert_eq!((stats.created, stats.updated), (4, 1));
    let all = s.versions_after(0, 10).unwrap();
    let got: Vec<_> = all
        .iter()
        .map(|v| (v.stream, v.record.item_id(), v.change))
        .collect();
    assert_eq!(
        got,
        [
            (StreamKind::Incidents, "1".into(), ChangeKind::Created),
            (StreamKind::Alerts, "1".into(), ChangeKind::Created),
            (StreamKind::Detections, "1:0".into(), ChangeKind::Created),
            (StreamKind::Detections, "1:1".into(), ChangeKind::Created),
            (StreamKind::Alerts, "1".into(), ChangeKind::Updated),
        ]
    );
    assert_eq!(all[4].changes.fields, vec!["status".to_owned()]);
    let ids: std::collections::BTreeSet<_> = all.iter().map(|v| v.event_id.clone()).collect();
    assert_eq!(ids.len(), 5, "event ids are distinct across streams");
    assert_eq!(s.version_keys(&t, StreamKind::Detections).unwrap().len(), 2);
    assert_eq!(s.cursor(&t, StreamKind::Incidents).unwrap(), None);
    assert!(s.cursor(&t, StreamKind::Alerts).unwrap().is_some());
}

#[test]
fn a_group_commits_every_request_in_one_transaction_and_a_bad_one_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("g.db")).unwrap();
    let (a, b) = (TenantId::canonical("a"), TenantId::canonical("b"));
    let req = |t: &TenantId, versions, cursor: Option<&str>| CommitRequest {
        tenant: t.clone(),
        versions,
        poison: vec![],
        cursor: cursor.map(|c| (StreamKind::Incidents, c.parse().unwrap())),
    };
    let results = s.commit_group(&[
        req(&a, vec![version("a", "1", "2026-11-01T00:00:01Z")], None),
        req(&b, vec![version("b", "1", "2026-11-01T00:00:02Z")], None),
        req(
            &a,
            vec![version("a", "1", "2026-11-01T00:00:03Z")],
            Some("2026-11-01T00:00:03Z"),
        ),
    ]);
    let stats: Vec<CommitStats> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!((stats[0].created, stats[1].created), (1, 1));
    // The second version of a/1 was classified against the first, written earlier in the
    // same transaction.
    assert_eq!((stats[2].created, stats[2].updated), (0, 1));
    assert_eq!(
        s.cursor(&a, StreamKind::Incidents).unwrap(),
        Some("2026-11-01T00:00:03Z".parse().unwrap())
    );
    assert_eq!(s.cursor(&b, StreamKind::Incidents).unwrap(), None);

    // A stored row that cannot be decoded makes the request that needs it fail; the rest of
    // its group is still committed, each on its own.
    s.conn()
        .execute(
            "UPDATE versions SET normalized = 'not json' WHERE tenant_id = 'b'",
            [],
        )
        .unwrap();
    let results = s.commit_group(&[
        req(&a, vec![version("a", "2", "2026-11-01T00:00:04Z")], None),
        req(
            &b,
            vec![version("b", "1", "2026-11-01T00:00:05Z")],
            Some("2026-11-01T00:00:05Z"),
        ),
        req(&a, vec![], Some("2026-11-01T00:00:04Z")),
    ]);
    assert_eq!(results[0].as_ref().unwrap().created, 1);
    let e = results[1].as_ref().unwrap_err().to_string();
    assert!(e.contains("corrupt row"), "{e}");
    assert!(results[2].is_ok());
    assert_eq!(s.cursor(&b, StreamKind::Incidents).unwrap(), None);
    assert_eq!(
        s.cursor(&a, StreamKind::Incidents).unwrap(),
        Some("2026-11-01T00:00:04Z".parse().unwrap())
    );
    assert_eq!(s.last_seq().unwrap(), 4);
}

#[test]
fn the_read_connection_sees_what_the_writer_committed() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("r.db")).unwrap();
    assert!(s.reader.is_some());
    let t = TenantId::canonical("a");
    s.commit(&t, &[version("a", "1", "2026-11-01T00:00:01Z")], None)
        .unwrap();
    assert_eq!(s.versions_after(0, 10).unwrap().len(), 1);
    s.commit(&t, &[version("a", "2", "2026-11-01T00:00:02Z")], None)
        .unwrap();
    assert_eq!(s.versions_after(0, 10).unwrap().len(), 2);
    assert_eq!(s.last_seq().unwrap(), 2);
}

#[test]
fn prune_keeps_the_newest_version_and_everything_undelivered() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("x.db")).unwrap();
    let t = TenantId::canonical("t");
    // Incident 1: three old versions and a new one. Incident 2: one old version only.
    // Incident 3: two old versions, stored last (past the sink's position).
    let mut versions = vec![
        version("t", "1", "2026-01-01T00:00:00Z"),
        version("t", "1", "2026-02-01T00:00:00Z"),
        version("t", "1", "2026-03-01T00:00:00Z"),
        version("t", "2", "2026-01-15T00:00:00Z"),
        version("t", "1", "2026-11-30T00:00:00Z"),
    ];
    for (i, v) in versions.iter_mut().enumerate() {
        incident(v).title = format!("v{i}");
    }
    store.commit(&t, &versions, None).unwrap();
    let delivered = store.last_seq().unwrap();
    let later = vec![
        version("t", "3", "2026-01-02T00:00:00Z"),
        version("t", "3", "2026-01-03T00:00:00Z"),
    ];
    store.commit(&t, &later, None).unwrap();
    let cutoff: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();

    // Steps of two seqs up to the sink's position.
    let mut from = 0;
    let mut deleted = 0;
    while from < delivered {
        let (n, next) = store.prune_step(cutoff, from, delivered, 2).unwrap();
        deleted += n;
        from = next;
    }
    assert_eq!(deleted, 3, "the three old versions of incident 1");
    let keys = store.version_keys(&t, StreamKind::Incidents).unwrap();
    let keys: Vec<(String, String)> = keys
        .into_iter()
        .map(|(id, at)| (id, at.to_string().get(..10).unwrap().to_owned()))
        .collect();
    assert_eq!(
        keys,
        [
            ("1".to_owned(), "2026-11-30".to_owned()),
            ("2".to_owned(), "2026-01-15".to_owned()),
            ("3".to_owned(), "2026-01-02".to_owned()),
            ("3".to_owned(), "2026-01-03".to_owned()),
        ]
    );
    // Nothing past `upto`, even when old and superseded.
    assert_eq!(
        store
            .prune_step(cutoff, delivered, delivered, 100)
            .unwrap()
            .0,
        0
    );
    // Past it, once delivered: the older version of incident 3 goes.
    let all = store.last_seq().unwrap();
    assert_eq!(store.prune_step(cutoff, delivered, all, 100).unwrap().0, 1);
    assert_eq!(store.version_count().unwrap(), 3);
    // A new store gives freed pages back.
    assert_eq!(store.vacuum_step(1_000).unwrap(), 0);
}

/// Two processes opening a new store at once apply every migration once (the second waits
/// for the first, then finds the schema current) instead of failing with "table already
/// exists".
#[test]
fn concurrent_opens_of_a_new_store_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                SqliteStore::open(&path).map(|s| s.schema_version().unwrap())
            })
        })
        .collect();
    for h in handles {
        let version = h.join().unwrap().expect("every open succeeds");
        assert_eq!(version, MIGRATIONS.len() as i64);
    }
}

fn hunt_row(tenant: &str, hunt: &str, device: &str, found: &str) -> NewVersion {
    let row = serde_json::json!({ "Timestamp": "2026-11-01T00:00:00Z", "DeviceName": device });
    let row = row.as_object().cloned().unwrap();
    NewVersion {
        raw: serde_json::Value::Object(row.clone()).to_string(),
        record: Record::HuntRow(xdrsync_model::HuntRow::new(
            TenantId::canonical(tenant),
            hunt,
            Severity::Medium,
            ApiKind::Graph,
            row,
            found.parse().unwrap(),
        )),
    }
}

#[test]
fn a_hunt_row_found_again_is_the_row_already_stored() {
    let s = SqliteStore::open_in_memory().unwrap();
    let t = TenantId::canonical("a");
    let first = [
        hunt_row("a", "h1", "pc1", "2026-11-02T00:00:00Z"),
        hunt_row("a", "h1", "pc2", "2026-11-02T00:00:00Z"),
    ];
    let stats = s.commit(&t, &first, None).unwrap();
    assert_eq!((stats.created, stats.unchanged), (2, 0));
    // The next run, an hour later: pc1 again (not stored), pc3 new, and pc1 found by another
    // hunt (a row of its own).
    let second = [
        hunt_row("a", "h1", "pc1", "2026-11-02T01:00:00Z"),
        hunt_row("a", "h1", "pc3", "2026-11-02T01:00:00Z"),
        hunt_row("a", "h2", "pc1", "2026-11-02T01:00:00Z"),
    ];
    let stats = s.commit(&t, &second, None).unwrap();
    assert_eq!((stats.created, stats.unchanged), (2, 1));
    let all = s.versions_after(0, 10).unwrap();
    assert_eq!(all.len(), 4);
    assert!(
        all.iter()
            .all(|v| v.stream == StreamKind::Hunts && v.change == ChangeKind::Created)
    );
    // The stored row keeps the run that first found it.
    let pc1 = all
        .iter()
        .find_map(|v| {
            v.record
                .hunt_row()
                .filter(|h| h.hunt == "h1" && h.row["DeviceName"] == "pc1")
        })
        .unwrap();
    assert_eq!(pc1.found_at.to_string(), "2026-11-02T00:00:00.0000000Z");
}

#[test]
fn hunt_runs_are_recorded_and_keep_the_last_success() {
    let s = SqliteStore::open_in_memory().unwrap();
    let t = TenantId::canonical("a");
    assert!(s.hunt_runs().unwrap().is_empty());
    let ok = HuntRun {
        hunt: "h1".into(),
        tenant_id: t.clone(),
        started_at: "2026-11-02T00:00:00Z".parse().unwrap(),
        finished_at: "2026-11-02T00:00:01Z".parse().unwrap(),
        rows: 3,
        new_rows: 2,
        truncated: false,
        error: None,
        last_success: None,
    };
    s.record_hunt_run(&ok).unwrap();
    let failed = HuntRun {
        started_at: "2026-11-02T01:00:00Z".parse().unwrap(),
        finished_at: "2026-11-02T01:00:01Z".parse().unwrap(),
        rows: 0,
        new_rows: 0,
        error: Some("429".into()),
        ..ok.clone()
    };
    s.record_hunt_run(&failed).unwrap();
    assert_eq!(
        s.hunt_runs().unwrap()[0].started_at,
        "2026-11-02T01:00:00Z".parse().unwrap()
    );
    let runs = s.hunt_runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].error.as_deref(), Some("429"));
    assert_eq!(runs[0].last_success, Some(ok.finished_at));
}

#[test]
fn a_version_6_store_keeps_every_row_and_its_origin_through_the_hunts_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6.db");
    {
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL);",
        )
        .unwrap();
        let tx = conn.transaction().unwrap();
        for (i, (_, sql)) in MIGRATIONS.iter().take(6).enumerate() {
            tx.execute_batch(sql).unwrap();
            tx.execute(
                "INSERT INTO schema_version VALUES (?1, 'then')",
                [i as i64 + 1],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        let v = version("a", "1", "2026-11-01T00:00:01Z");
        conn.execute(
            "INSERT INTO versions (seq, tenant_id, stream, item_id, last_update, event_id, change, api, normalized, raw, fetched_at, origin)
             VALUES (7, 'a', 'incidents', '1', '2026-11-01T00:00:01.0000000Z', 'e7', 'created', 'graph', ?1, ?2, 'now', 'act-1')",
            [v.record.to_json(), v.raw.clone()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO versions (seq, tenant_id, stream, item_id, last_update, event_id, change, api, normalized, raw, fetched_at)
             VALUES (9, 'a', 'incidents', '2', '2026-11-01T00:00:01.0000000Z', 'e9', 'created', 'graph', '{}', '{}', 'now')",
            [],
        )
        .unwrap();
        conn.execute("DELETE FROM versions WHERE seq = 9", [])
            .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let all = s.versions_after(0, 10).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].seq, all[0].event_id.as_str()), (7, "e7"));
    // Written as text by the earlier release, read as it is.
    assert_eq!(all[0].raw, version("a", "1", "2026-11-01T00:00:01Z").raw);
    assert_eq!(all[0].origin_action.as_deref(), Some("act-1"));
    // A hunt row can be stored now, after the highest seq ever handed out.
    s.commit(
        &TenantId::canonical("a"),
        &[hunt_row("a", "h1", "pc1", "2026-11-02T00:00:00Z")],
        None,
    )
    .unwrap();
    assert_eq!(s.last_seq().unwrap(), 10);
}

/// A big incident's raw JSON, as an API sends it: the kind of payload the store compresses.
fn big_version(tenant: &str, id: &str, t: &str) -> NewVersion {
    let mut v = version(tenant, id, t);
    let alerts: Vec<String> = (0..20)
        .map(|i| format!(r##"{{"alertId":"da{id}_{i}","title":"Suspicious PowerShell command line","evidence":[{{"@odata.type":"#microsoft.graph.security.processEvidence","processCommandLine":"powershell.exe -nop -w hidden -enc {i}","remediationStatus":"none"}}]}}"##))
        .collect();
    v.raw = format!(
        r#"{{"id":"{id}","lastUpdateDateTime":"{t}","displayName":"Multi-stage incident on one endpoint é ✓","alerts":[{}]}}"#,
        alerts.join(",")
    );
    v
}

#[test]
fn every_payload_is_stored_compressed_and_read_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("z.db")).unwrap();
    let t = TenantId::canonical("a");
    let versions: Vec<NewVersion> = (0..50)
        .map(|i| big_version("a", &i.to_string(), "2026-11-01T00:00:01Z"))
        .collect();
    s.commit(&t, &versions, None).unwrap();
    let back = s.versions_after(0, 100).unwrap();
    assert_eq!(back.len(), versions.len());
    for (b, v) in back.iter().zip(&versions) {
        assert_eq!(b.raw, v.raw, "raw byte for byte");
        assert_eq!(b.record, v.record, "normalized read back");
    }
    // On disk: compressed blobs, far smaller than the JSON.
    let db = Connection::open(dir.path().join("z.db")).unwrap();
    let (blobs, stored): (i64, i64) = db
        .query_row(
            "SELECT SUM(typeof(raw) = 'blob'), SUM(length(raw)) FROM versions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let json: usize = versions.iter().map(|v| v.raw.len()).sum();
    assert_eq!(blobs, 50);
    assert!(
        (stored as usize) * 5 < json,
        "{stored} bytes stored for {json} of JSON"
    );
}

#[test]
fn a_damaged_payload_is_an_error_naming_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.db");
    let s = SqliteStore::open(&path).unwrap();
    let t = TenantId::canonical("a");
    s.commit(
        &t,
        &[
            big_version("a", "1", "2026-11-01T00:00:01Z"),
            big_version("a", "2", "2026-11-01T00:00:01Z"),
        ],
        None,
    )
    .unwrap();
    let db = Connection::open(&path).unwrap();
    // A byte of the second version's compressed raw JSON flipped on disk.
    db.execute(
        "UPDATE versions SET raw = CAST(substr(raw, 1, 20) || x'00' || substr(raw, 22) AS BLOB) WHERE seq = 2",
        [],
    )
    .unwrap();
    let err = s.versions_after(0, 10).unwrap_err().to_string();
    assert!(
        err.contains("corrupt row seq 2") && err.contains("raw JSON"),
        "{err}"
    );
    // The first is still read; a reader without the raw JSON reads both.
    assert_eq!(s.versions_after(0, 1).unwrap().len(), 1);
    assert_eq!(s.versions_after_without_raw(0, 10).unwrap().len(), 2);
    // The normalized JSON damaged: the next version of that item cannot be classified.
    db.execute(
        "UPDATE versions SET normalized = x'5a00000000ffff' WHERE seq = 1",
        [],
    )
    .unwrap();
    let err = s
        .commit(&t, &[big_version("a", "1", "2026-11-01T00:00:02Z")], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("seq 1 (normalized)"), "{err}");
}

#[test]
fn a_dictionary_is_trained_from_the_first_payloads_and_read_by_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let a = SqliteStore::open(&path).unwrap();
    // Another process, opened before the dictionary exists.
    let b = SqliteStore::open(&path).unwrap();
    let t = TenantId::canonical("a");
    let n = payload::TRAIN_PAYLOADS / 2 + 200;
    let versions: Vec<NewVersion> = (0..n)
        .map(|i| big_version("a", &i.to_string(), "2026-11-01T00:00:01Z"))
        .collect();
    for chunk in versions.chunks(100) {
        a.commit(&t, chunk, None).unwrap();
    }
    let db = Connection::open(&path).unwrap();
    let dictionaries: i64 = db
        .query_row("SELECT COUNT(*) FROM dictionaries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(dictionaries, 1);
    // The last commits used it (dictionary id 1 in the payload header).
    let with_dictionary: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM versions WHERE substr(raw, 2, 4) = x'01000000'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(with_dictionary >= 100, "{with_dictionary}");
    for s in [&a, &b] {
        let back = s.versions_after(0, 10_000).unwrap();
        assert_eq!(back.len(), n);
        for (got, want) in back.iter().zip(&versions) {
            assert_eq!(got.raw, want.raw);
            assert_eq!(got.record, want.record);
        }
    }
    // A second store in the same process trains its own dictionary 1; each reads its own.
    let other = SqliteStore::open(&dir.path().join("e.db")).unwrap();
    let others: Vec<NewVersion> = (0..n)
        .map(|i| {
            let mut v = big_version("b", &i.to_string(), "2026-11-01T00:00:01Z");
            v.raw = v
                .raw
                .replace("Suspicious", "Anomalous")
                .replace("powershell", "cmd");
            v
        })
        .collect();
    for chunk in others.chunks(100) {
        other
            .commit(&TenantId::canonical("b"), chunk, None)
            .unwrap();
        a.versions_after(0, 3).unwrap();
    }
    let back = other.versions_after(0, 10_000).unwrap();
    assert!(back.iter().zip(&others).all(|(g, w)| g.raw == w.raw));
    assert!(
        a.versions_after(0, 10_000)
            .unwrap()
            .iter()
            .zip(&versions)
            .all(|(g, w)| g.raw == w.raw)
    );
    // A later version of an item compressed with the dictionary is classified against it.
    let stats = b
        .commit(
            &t,
            &[big_version(
                "a",
                &(n - 1).to_string(),
                "2026-11-01T00:00:02Z",
            )],
            None,
        )
        .unwrap();
    assert_eq!(stats.updated, 1);
    // A payload naming a dictionary the store does not have is a clear error.
    db.execute(
        "UPDATE versions SET raw = CAST(x'5a07000000' || substr(raw, 6) AS BLOB) WHERE seq = ?1",
        [n as i64],
    )
    .unwrap();
    let err = a.versions_after(0, 10_000).unwrap_err().to_string();
    assert!(
        err.contains(&format!("seq {n}")) && err.contains("dictionary 7"),
        "{err}"
    );
}

/// Payloads compressed ahead of the writer (`encode`, on the reading task's thread) are stored
/// as they are while the dictionary they were made with is current; ones made before a newer
/// dictionary was trained are compressed again at commit with it. Either way every version
/// reads back byte for byte.
#[test]
fn payloads_encoded_ahead_are_stored_or_redone_with_the_current_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ahead.db");
    let store = SqliteStore::open(&path).unwrap();
    let t = TenantId::canonical("a");
    let n = payload::TRAIN_PAYLOADS / 2 + 200;
    let versions: Vec<NewVersion> = (0..n)
        .map(|i| big_version("a", &i.to_string(), "2026-11-01T00:00:01Z"))
        .collect();
    let request = |chunk: &[NewVersion]| CommitRequest {
        tenant: t.clone(),
        versions: chunk.to_vec(),
        poison: Vec::new(),
        cursor: None,
    };
    let chunks: Vec<&[NewVersion]> = versions.chunks(100).collect();
    // Every chunk encoded before any is committed: all without a dictionary, which the store
    // trains part-way through the commits below.
    let encoded: Vec<Encoded> = chunks.iter().map(|c| store.encode(c)).collect();
    for (chunk, e) in chunks.iter().zip(encoded) {
        let results = store.commit_group_encoded(&[request(chunk)], &[e]);
        assert_eq!(results[0].as_ref().unwrap().created, chunk.len() as u64);
    }
    let db = Connection::open(&path).unwrap();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT COUNT(*) FROM dictionaries"), 1);
    // The chunks committed after the training were compressed again with dictionary 1.
    let redone = count("SELECT COUNT(*) FROM versions WHERE substr(raw, 2, 4) = x'01000000'");
    assert!(redone >= 100, "{redone}");
    // Encoded now, with dictionary 1 current: stored as encoded.
    let later: Vec<NewVersion> = (0..50)
        .map(|i| big_version("a", &format!("later{i}"), "2026-11-01T00:00:02Z"))
        .collect();
    let e = store.encode(&later);
    store.commit_group_encoded(&[request(&later)], &[e]);
    assert_eq!(
        count("SELECT COUNT(*) FROM versions WHERE substr(raw, 2, 4) = x'01000000'"),
        redone + 50
    );
    let back = store.versions_after(0, 10_000).unwrap();
    assert_eq!(back.len(), n + 50);
    for (got, want) in back.iter().zip(versions.iter().chain(&later)) {
        assert_eq!(got.raw, want.raw);
        assert_eq!(got.record, want.record);
    }
}
