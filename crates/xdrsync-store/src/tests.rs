use super::*;
use crate::conformance::{big_version, hunt_row, version};

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
        fence: None,
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
        fence: None,
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
