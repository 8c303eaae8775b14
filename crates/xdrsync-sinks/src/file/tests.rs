use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use xdrsync_model::{ApiKind, Incident, IncidentId, Record, Severity, TenantId, Timestamp};
use xdrsync_store::{NewVersion, SqliteStore};

use super::*;
use crate::config::validate_toml;
use crate::fixtures::deliver_now;
use crate::{Delivered, Sink};

fn sink_from(toml: &str, dir: &Path) -> std::sync::Arc<dyn Sink> {
    let v = validate_toml(toml, &dir.join("xdrsync.toml"), &[], false).unwrap();
    crate::build(&v).unwrap()
}

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
    let store: Arc<dyn xdrsync_store::Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let t = TenantId::canonical("t");
    store.commit(&t, &[version(1), version(2)], None).unwrap();
    let sink = Arc::new(NdjsonSink::new("ndjson", dir.path().join("out.ndjson")));
    assert_eq!(
        deliver_now(&sink, &store).unwrap(),
        Delivered {
            events: 2,
            position: 2
        }
    );
    assert_eq!(
        deliver_now(&sink, &store).unwrap(),
        Delivered {
            events: 0,
            position: 2
        }
    );
    store.commit(&t, &[version(3)], None).unwrap();
    assert_eq!(deliver_now(&sink, &store).unwrap().events, 1);
    assert_eq!(seqs(&dir.path().join("out.ndjson")), [1, 2, 3]);
}

/// A torn last line with no pending record (another writer, or an older xdrsync) is cut
/// before appending, so every line stays whole.
#[test]
fn a_torn_last_line_is_cut_before_appending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.ndjson");
    let store: Arc<dyn xdrsync_store::Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let t = TenantId::canonical("t");
    store.commit(&t, &[version(1)], None).unwrap();
    std::fs::write(&path, "{\"seq\":0}\n{\"half").unwrap();
    let sink = Arc::new(NdjsonSink::new("ndjson", &path));
    assert_eq!(
        deliver_now(&sink, &store).unwrap(),
        Delivered {
            events: 1,
            position: 1
        }
    );
    assert_eq!(seqs(&path), [0, 1]);
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
    let store: Arc<dyn xdrsync_store::Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
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

/// A crash after the pending record and part of the batch were written, in a format with no
/// `seq` to recover from (OCSF): the partial batch is cut off and written again, once.
#[test]
fn a_partly_written_batch_is_cut_and_written_again_in_any_format() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let t = TenantId::canonical("t");
    store
        .commit(&t, &[version(1), version(2), version(3)], None)
        .unwrap();
    let path = dir.path().join("out.ndjson");
    let docs: Vec<String> = store
        .versions_after(0, 10)
        .unwrap()
        .iter()
        .map(|v| crate::schema::Format::Ocsf.to_string(v).unwrap())
        .collect();
    // Line 1 was delivered; the batch of 2 and 3 was recorded as pending and half written.
    let first = format!("{}\n", docs[0]);
    let batch = format!("{}\n{}\n", docs[1], docs[2]);
    std::fs::write(
        &path,
        format!("{first}{}", batch.get(..batch.len() / 2).unwrap()),
    )
    .unwrap();
    let pending = serde_json::json!({ "pending": {
        "file": path, "offset": first.len(), "end_len": first.len() + batch.len(), "end_seq": 3 } });
    store
        .set_sink_state("f", 1, Some(&pending.to_string()))
        .unwrap();
    let sink = sink_from(
        r#"name = "f"
format = "ocsf"
[file]
path = "out.ndjson""#,
        dir.path(),
    );
    assert_eq!(deliver_now(&sink, &store).unwrap().events, 2);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{first}{batch}")
    );
    // The same crash after the whole batch was written: the position just moves on.
    store.commit(&t, &[version(4)], None).unwrap();
    let doc4 = crate::schema::Format::Ocsf
        .to_string(&store.versions_after(3, 1).unwrap()[0])
        .unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(format!("{doc4}\n").as_bytes())
        .unwrap();
    let pending = serde_json::json!({ "pending": {
        "file": path, "offset": len, "end_len": len + doc4.len() as u64 + 1, "end_seq": 4 } });
    store
        .set_sink_state("f", 3, Some(&pending.to_string()))
        .unwrap();
    assert_eq!(
        deliver_now(&sink, &store).unwrap(),
        Delivered {
            events: 0,
            position: 4
        }
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4);
}

#[test]
fn ndjson_rotates_by_size_and_keeps_the_newest_files() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let t = TenantId::canonical("t");
    let sink = sink_from(
        r#"name = "f"
batch_max_events = 2
[file]
path = "events.ndjson"
rotate_max_bytes = 2500
keep_rotated = 2"#,
        dir.path(),
    );
    for i in 1..=12 {
        store.commit(&t, &[version(i)], None).unwrap();
        deliver_now(&sink, &store).unwrap();
    }
    let mut all: Vec<i64> = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("events"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}"); // the active file and two rotated
    for n in &names {
        let p = dir.path().join(n);
        assert!(std::fs::metadata(&p).unwrap().len() <= 2500, "{n}");
        all.extend(seqs(&p));
    }
    all.sort();
    // The oldest rotated files were removed; what is left is contiguous and ends at 12.
    assert_eq!(*all.last().unwrap(), 12);
    assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
}

#[test]
fn ndjson_rotates_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let t = TenantId::canonical("t");
    let sink = sink_from(
        r#"name = "f"
[file]
path = "events.ndjson"
rotate_max_age_secs = 1"#,
        dir.path(),
    );
    store.commit(&t, &[version(1)], None).unwrap();
    deliver_now(&sink, &store).unwrap();
    // The file was opened two seconds ago: the sink's recorded state says when, so the test
    // moves that instead of sleeping past the age.
    let (position, state) = store.sink_state("f").unwrap();
    let mut state: serde_json::Value = serde_json::from_str(&state.unwrap()).unwrap();
    let opened: Timestamp = serde_json::from_value(state["opened_at"].clone()).unwrap();
    state["opened_at"] = serde_json::to_value(opened.sub(chrono::Duration::seconds(2))).unwrap();
    store
        .set_sink_state("f", position, Some(&state.to_string()))
        .unwrap();
    store.commit(&t, &[version(2)], None).unwrap();
    deliver_now(&sink, &store).unwrap();
    assert_eq!(seqs(&dir.path().join("events.ndjson")), [2]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// The Hello World seed's output as a sink: one `Latest Incidents <time>.json` array of raw
/// incidents per delivery with something new, none for an empty one.
#[test]
fn json_array_mode_writes_latest_incidents_files() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let t = TenantId::canonical("t");
    let sink = sink_from(
        r#"name = "hello"
streams = ["incidents"]
[file]
mode = "json_array"
dir = "out""#,
        dir.path(),
    );
    store.commit(&t, &[version(1), version(2)], None).unwrap();
    assert_eq!(deliver_now(&sink, &store).unwrap().events, 2);
    assert_eq!(deliver_now(&sink, &store).unwrap().events, 0);
    store.commit(&t, &[version(3)], None).unwrap();
    assert_eq!(deliver_now(&sink, &store).unwrap().events, 1);
    let mut files: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2);
    let mut ids = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("Latest Incidents ") && name.ends_with(".json"),
            "{name}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        for item in v.as_array().unwrap() {
            ids.push(item["incidentId"].as_i64().unwrap());
        }
    }
    ids.sort();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(sink.metrics().events_sent, 3);
    assert_eq!(sink.metrics().batches_sent, 2);
}

#[test]
fn routing_passes_over_what_the_sink_does_not_take() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let sink = sink_from(
        r#"name = "f"
streams = ["alerts"]
min_severity = "medium"
[file]
path = "a.ndjson""#,
        dir.path(),
    );
    crate::fixtures::commit(&*store, &crate::fixtures::new_versions());
    // Six fixtures: two incidents, a medium Graph alert, a low MDE alert, a detection, a
    // hunt's row.
    let d = deliver_now(&sink, &store).unwrap();
    assert_eq!(
        d,
        Delivered {
            events: 1,
            position: 6
        }
    );
    let m = sink.metrics();
    assert_eq!((m.events_sent, m.events_filtered), (1, 5));
    let line = std::fs::read_to_string(dir.path().join("a.ndjson")).unwrap();
    assert!(
        line.contains("Suspicious execution of hidden file"),
        "{line}"
    );
}

#[test]
fn routing_by_tenant_and_change_kind() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    crate::fixtures::commit(&*store, &crate::fixtures::many(30, 3));
    let t1 = "00000000-0000-4000-8000-000000000001";
    // Every fixture version is a first version: `created`.
    let none = sink_from(
        r#"name = "u"
changes = ["updated"]
[file]
path = "u.ndjson""#,
        dir.path(),
    );
    assert_eq!(
        deliver_now(&none, &store).unwrap(),
        Delivered {
            events: 0,
            position: 30
        }
    );
    assert_eq!(none.metrics().events_filtered, 30);
    let one = sink_from(
        &format!(
            r#"name = "t"
tenants = ["{t1}"]
changes = ["created"]
[file]
path = "t.ndjson""#
        ),
        dir.path(),
    );
    assert_eq!(deliver_now(&one, &store).unwrap().events, 10);
    let text = std::fs::read_to_string(dir.path().join("t.ndjson")).unwrap();
    assert!(
        text.lines()
            .all(|l| l.contains(&format!(r#""tenant_id":"{t1}""#)))
    );
}

#[test]
fn a_backlog_over_its_bound_is_kept_or_its_oldest_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    crate::fixtures::commit(&*store, &crate::fixtures::many(10, 1));
    let keep = sink_from(
        r#"name = "keep"
backlog_max_events = 4
[file]
path = "keep.ndjson""#,
        dir.path(),
    );
    // Over the bound but kept: all ten, nothing dropped (and an ERROR logged).
    assert_eq!(deliver_now(&keep, &store).unwrap().events, 10);
    assert_eq!(keep.metrics().events_dropped, 0);
    assert_eq!(keep.metrics().backlog, 10);
    let drop = sink_from(
        r#"name = "drop"
backlog_max_events = 4
when_full = "drop_oldest"
[file]
path = "drop.ndjson""#,
        dir.path(),
    );
    assert_eq!(
        deliver_now(&drop, &store).unwrap(),
        Delivered {
            events: 4,
            position: 10
        }
    );
    assert_eq!(drop.metrics().events_dropped, 6);
    assert_eq!(seqs(&dir.path().join("drop.ndjson")), [7, 8, 9, 10]);
    // Under the bound again: nothing more is dropped.
    crate::fixtures::commit(&*store, &crate::fixtures::many(12, 1)[10..]);
    assert_eq!(deliver_now(&drop, &store).unwrap().events, 2);
    assert_eq!(drop.metrics().events_dropped, 6);
}
