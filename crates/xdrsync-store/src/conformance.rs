//! The conformance suite of the [`Store`] trait: what every backend must do the same, each
//! check a function over `&dyn Store`, instantiated per backend by [`conformance!`] (SQLite
//! and PostgreSQL below). What only one backend can show (a file reopened,
//! a SQLite schema migrated, bytes damaged on disk) stays in that backend's tests.

use xdrsync_model::{Alert, AlertApi, ApiKind, Incident, IncidentId, Severity};

use super::*;

pub(crate) fn version(tenant: &str, id: &str, t: &str) -> NewVersion {
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

pub(crate) fn incident(v: &mut NewVersion) -> &mut Incident {
    match &mut v.record {
        Record::Incident(i) => i,
        Record::Alert(_) | Record::HuntRow(_) => panic!("not an incident"),
    }
}

pub(crate) fn alert(tenant: &str, id: &str, part: Option<u32>, t: &str) -> NewVersion {
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

pub(crate) fn hunt_row(tenant: &str, hunt: &str, device: &str, found: &str) -> NewVersion {
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

pub(crate) fn versions_dedup_and_classify(s: &dyn Store) {
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

pub(crate) fn cursor_moves_only_forward_with_the_data(s: &dyn Store) {
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

pub(crate) fn sink_state_is_replaced_with_the_position_and_backlog_is_counted(s: &dyn Store) {
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

pub(crate) fn poison_is_recorded_once_and_counted(s: &dyn Store) {
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

pub(crate) fn change_events_compare_with_the_previous_version_in_time_order(s: &dyn Store) {
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

/// Alerts, detections and incidents share one outbox order but are separate items: the same id
/// in two streams is two items, and an alert's versions are classified against its own past.
pub(crate) fn streams_share_the_outbox_and_keep_their_identities(s: &dyn Store) {
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

pub(crate) fn prune_keeps_the_newest_version_and_everything_undelivered(store: &dyn Store) {
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

pub(crate) fn a_hunt_row_found_again_is_the_row_already_stored(s: &dyn Store) {
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

pub(crate) fn hunt_runs_are_recorded_and_keep_the_last_success(s: &dyn Store) {
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

pub(crate) fn big_version(tenant: &str, id: &str, t: &str) -> NewVersion {
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

/// Every raw version reads back byte for byte, also after the store trained its dictionary
/// from its first payloads (enough versions are committed here to train one) and compressed
/// the rest with it.
pub(crate) fn every_raw_version_reads_back_byte_for_byte_through_training(s: &dyn Store) {
    let t = TenantId::canonical("a");
    let versions: Vec<NewVersion> = (0..(crate::payload::TRAIN_PAYLOADS / 2 + 100))
        .map(|i| big_version("a", &i.to_string(), "2026-11-01T00:00:01Z"))
        .collect();
    for chunk in versions.chunks(200) {
        // Half compressed ahead (as the pipeline does), half at commit.
        let ahead = chunk.len().min(100);
        let encoded = s.encode(&chunk[..ahead]);
        let req = CommitRequest {
            tenant: t.clone(),
            versions: chunk.to_vec(),
            poison: vec![],
            cursor: None,
            fence: None,
        };
        for r in s.commit_group_encoded(&[req], &[encoded]) {
            r.unwrap();
        }
    }
    let mut back = Vec::new();
    let mut after = 0;
    loop {
        let page = s.versions_after(after, 500).unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        back.extend(page);
    }
    assert_eq!(back.len(), versions.len());
    for (b, v) in back.iter().zip(&versions) {
        assert_eq!(b.raw, v.raw, "raw byte for byte");
        assert_eq!(b.record, v.record, "normalized read back");
    }
    // Without raw, the same records and no raw text.
    let light = s.versions_after_without_raw(0, 10).unwrap();
    assert!(light.iter().all(|v| v.raw.is_empty()));
    assert_eq!(light[3].record, versions[3].record);
    // Compressed: far smaller than the JSON.
    let json: usize = versions.iter().map(|v| v.raw.len()).sum();
    assert!(
        s.size_bytes() < json as u64,
        "{} bytes for {json} of JSON",
        s.size_bytes()
    );
}

/// A write-back is audited, and the version it produced is stored in the same transaction,
/// marked with the action's id.
pub(crate) fn actions_are_audited_with_the_version_they_produced(s: &dyn Store) {
    let t = TenantId::canonical("a");
    let action = |id: &str, at: &str, produced: Option<&str>| ActionRecord {
        id: id.into(),
        created_at: at.parse().unwrap(),
        actor: "analyst@contoso".into(),
        tenant_id: t.clone(),
        tenant_name: "Contoso".into(),
        target: "incident".into(),
        item_id: "7".into(),
        request: r#"{"status":"resolved"}"#.into(),
        outcome: if produced.is_some() {
            ActionOutcome::Applied
        } else {
            ActionOutcome::Failed
        },
        answer: "ok".into(),
        produced: produced.map(|p| p.parse().unwrap()),
    };
    s.commit(&t, &[version("a", "7", "2026-11-01T00:00:01Z")], None)
        .unwrap();
    let produced = version("a", "7", "2026-11-01T00:00:09Z");
    s.record_actions(&[
        (
            action(
                "act-1",
                "2026-11-01T00:00:08Z",
                Some("2026-11-01T00:00:09Z"),
            ),
            Some(produced),
        ),
        (action("act-2", "2026-11-01T00:00:08Z", None), None),
    ])
    .unwrap();
    s.record_action(&action("act-3", "2026-11-01T00:00:10Z", None), None)
        .unwrap();
    let listed = s.actions(Some(&t)).unwrap();
    let ids: Vec<&str> = listed.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["act-1", "act-2", "act-3"], "in the order recorded");
    assert_eq!(listed[0].outcome, ActionOutcome::Applied);
    assert_eq!(
        listed[0].produced,
        Some("2026-11-01T00:00:09Z".parse().unwrap())
    );
    assert!(
        s.actions(Some(&TenantId::canonical("other")))
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.actions(None).unwrap().len(), 3);
    let latest = s
        .latest_of(&t, StreamKind::Incidents, "7")
        .unwrap()
        .unwrap();
    assert_eq!(latest.origin_action.as_deref(), Some("act-1"));
    assert_eq!(latest.change, ChangeKind::Updated);
    assert_eq!(s.last_seq().unwrap(), latest.seq);
}

/// Pull outcomes make the stream's health: failures counted until a success, the last success
/// kept, coverage only ever widened.
pub(crate) fn pull_outcomes_make_the_streams_health(s: &dyn Store) {
    let t = TenantId::canonical("a");
    let ok = |since: &str| PullOutcome {
        tenant_name: "Contoso".into(),
        error: None,
        partial: None,
        since: Some(since.parse().unwrap()),
    };
    let failed = PullOutcome {
        tenant_name: "Contoso".into(),
        error: Some("AADSTS700016: the app is not in the tenant".into()),
        partial: None,
        since: None,
    };
    for since in [
        "2026-11-02T00:00:00Z",
        "2026-11-01T00:00:00Z",
        "2026-11-03T00:00:00Z",
    ] {
        s.record_outcome(&t, StreamKind::Incidents, &ok(since))
            .unwrap();
    }
    let success = s.last_success(&t, StreamKind::Incidents).unwrap();
    assert!(success.is_some());
    s.record_outcome(&t, StreamKind::Incidents, &failed)
        .unwrap();
    s.record_outcome(&t, StreamKind::Incidents, &failed)
        .unwrap();
    s.commit(
        &t,
        &[version("a", "1", "2026-11-04T00:00:00Z")],
        Some((
            StreamKind::Incidents,
            "2026-11-04T00:00:00Z".parse().unwrap(),
        )),
    )
    .unwrap();
    let h = s.health().unwrap();
    assert_eq!(h.len(), 1);
    let h = &h[0];
    assert_eq!(
        (h.stream.as_str(), h.tenant_name.as_str()),
        ("incidents", "Contoso")
    );
    assert_eq!(h.failures, 2);
    assert!(
        h.degraded
            .as_deref()
            .is_some_and(|d| d.contains("AADSTS700016"))
    );
    assert_eq!(h.last_success, success, "kept through failures");
    assert_eq!(
        h.covered_from,
        Some("2026-11-01T00:00:00Z".parse().unwrap()),
        "the widest"
    );
    assert_eq!(h.cursor, Some("2026-11-04T00:00:00Z".parse().unwrap()));
    assert_eq!((h.versions, h.items, h.poison), (1, 1, 0));
    assert_eq!(
        s.covered_from(&t, StreamKind::Incidents).unwrap(),
        h.covered_from
    );
    assert_eq!(s.covered_from(&t, StreamKind::Alerts).unwrap(), None);
    s.record_outcome(&t, StreamKind::Incidents, &ok("2026-11-05T00:00:00Z"))
        .unwrap();
    let h = s.health().unwrap();
    assert_eq!(
        (h[0].failures, h[0].degraded.as_deref()),
        (0, None),
        "a success clears it"
    );
    let by_id = s
        .latest_since_by_id(
            &t,
            StreamKind::Incidents,
            "2026-11-01T00:00:00Z".parse().unwrap(),
        )
        .unwrap();
    assert_eq!(
        by_id.get("1"),
        Some(&"2026-11-04T00:00:00Z".parse().unwrap())
    );
}

/// A sink's health: its position, deliveries and failures, backlog; renamed and forgotten.
pub(crate) fn sink_health_follows_deliveries_and_survives_a_rename(s: &dyn Store) {
    let t = TenantId::canonical("a");
    let versions: Vec<NewVersion> = (0..5)
        .map(|i| version("a", &i.to_string(), "2026-11-01T00:00:01Z"))
        .collect();
    s.commit(&t, &versions, None).unwrap();
    assert!(!s.has_sink("splunk").unwrap());
    s.set_sink_position("splunk", 2).unwrap();
    s.set_sink_position("splunk", 1).unwrap();
    assert_eq!(s.sink_position("splunk").unwrap(), 2, "never backward");
    s.record_sink_outcome("splunk", Ok(2)).unwrap();
    s.record_sink_outcome("splunk", Err("HEC answered 503"))
        .unwrap();
    s.record_sink_outcome("splunk", Err("HEC answered 503"))
        .unwrap();
    let h = s.sink_health("splunk").unwrap();
    assert_eq!((h.position, h.backlog, h.failures), (2, 3, 2));
    assert!(h.last_delivery.is_some() && h.oldest_undelivered.is_some());
    assert_eq!(h.last_error.as_deref(), Some("HEC answered 503"));
    s.record_sink_outcome("splunk", Ok(0)).unwrap();
    let h = s.sink_health("splunk").unwrap();
    assert_eq!((h.failures, h.last_error), (0, None));
    assert_eq!(s.sink_positions().unwrap().len(), 1);
    s.rename_sink("splunk", "splunk-eu").unwrap();
    assert!(!s.has_sink("splunk").unwrap());
    assert_eq!(s.sink_position("splunk-eu").unwrap(), 2);
    assert_eq!(s.sink_health("splunk-eu").unwrap().position, 2);
    assert_eq!(s.seq_before_newest(1).unwrap(), s.last_seq().unwrap() - 1);
    assert_eq!(s.count_after(2).unwrap(), 3);
    s.forget_sink("splunk-eu").unwrap();
    assert!(!s.has_sink("splunk-eu").unwrap());
    assert_eq!(s.sink_health("splunk-eu").unwrap().failures, 0);
    assert_eq!(s.version_count().unwrap(), 5);
    s.check_writable().unwrap();
    assert_eq!(s.version_keys(&t, StreamKind::Incidents).unwrap().len(), 5);
}

/// One `#[test]` per check of this module, against a store made by `$make`: an expression
/// giving `(Box<dyn Store>, guard)`, evaluated afresh for each test; the guard (a temporary
/// directory, a scratch schema) outlives the store.
macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        conformance!(@each $backend, $make, [
            versions_dedup_and_classify,
            cursor_moves_only_forward_with_the_data,
            sink_state_is_replaced_with_the_position_and_backlog_is_counted,
            poison_is_recorded_once_and_counted,
            change_events_compare_with_the_previous_version_in_time_order,
            streams_share_the_outbox_and_keep_their_identities,
            prune_keeps_the_newest_version_and_everything_undelivered,
            a_hunt_row_found_again_is_the_row_already_stored,
            hunt_runs_are_recorded_and_keep_the_last_success,
            every_raw_version_reads_back_byte_for_byte_through_training,
            actions_are_audited_with_the_version_they_produced,
            pull_outcomes_make_the_streams_health,
            sink_health_follows_deliveries_and_survives_a_rename
        ]);
    };
    (@each $backend:ident, $make:expr, [$($check:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[test]
                fn $check() {
                    let (store, guard) = $make;
                    super::$check(&*store);
                    drop(store);
                    drop(guard);
                }
            )*
        }
    };
}

conformance!(sqlite_memory, {
    let store: Box<dyn Store> = Box::new(SqliteStore::open_in_memory().unwrap());
    (store, None::<tempfile::TempDir>)
});
// A file store has a second, read-only connection: reads must see every commit through it.
conformance!(sqlite_file, {
    let dir = tempfile::tempdir().unwrap();
    let store: Box<dyn Store> = Box::new(SqliteStore::open(&dir.path().join("x.db")).unwrap());
    (store, Some(dir))
});
// The cluster's store, in a schema of its own on the machine's PostgreSQL.
conformance!(postgres, {
    let scratch = crate::postgres::tests::Scratch::new();
    let store: Box<dyn Store> =
        Box::new(crate::postgres::PgStore::connect(&scratch.url()).unwrap());
    (store, Some(scratch))
});

/// A store with some of everything: versions of two streams (enough to train a dictionary),
/// a cursor, two sink positions (one with state), poison, health, an audited action.
fn filled(s: &dyn Store) {
    let t = TenantId::canonical("a");
    let versions: Vec<NewVersion> = (0..1200)
        .map(|i| {
            big_version(
                "a",
                &(i % 900).to_string(),
                &format!("2026-11-01T00:{:02}:{:02}Z", i / 900, i % 60),
            )
        })
        .collect();
    for chunk in versions.chunks(300) {
        s.commit(
            &t,
            chunk,
            Some((
                StreamKind::Incidents,
                "2026-11-01T00:01:00Z".parse().unwrap(),
            )),
        )
        .unwrap();
    }
    s.commit(&t, &[alert("a", "da1", None, "2026-11-01T00:00:07Z")], None)
        .unwrap();
    s.set_sink_position("splunk", 700).unwrap();
    s.set_sink_state("file", 650, Some(r#"{"file":"a.ndjson","offset":4096}"#))
        .unwrap();
    s.record_sink_outcome("splunk", Err("HEC answered 503"))
        .unwrap();
    s.record_poison(
        &t,
        &[PoisonRecord {
            stream: StreamKind::Incidents,
            item_id: Some("bad".into()),
            reason: "no lastUpdateDateTime".into(),
            raw: r#"{"id":"bad"}"#.into(),
        }],
    )
    .unwrap();
    s.record_outcome(
        &t,
        StreamKind::Incidents,
        &PullOutcome {
            tenant_name: "Contoso".into(),
            since: Some("2026-10-01T00:00:00Z".parse().unwrap()),
            ..PullOutcome::default()
        },
    )
    .unwrap();
    s.record_hunt_run(&HuntRun {
        hunt: "beacons".into(),
        tenant_id: t.clone(),
        started_at: "2026-11-01T00:00:00Z".parse().unwrap(),
        finished_at: "2026-11-01T00:00:05Z".parse().unwrap(),
        rows: 3,
        new_rows: 2,
        truncated: true,
        error: None,
        last_success: None,
    })
    .unwrap();
    s.record_action(
        &ActionRecord {
            id: "act-1".into(),
            created_at: "2026-11-01T00:02:00Z".parse().unwrap(),
            actor: "analyst".into(),
            tenant_id: t.clone(),
            tenant_name: "Contoso".into(),
            target: "incident".into(),
            item_id: "7".into(),
            request: "{}".into(),
            outcome: ActionOutcome::Applied,
            answer: "ok".into(),
            produced: None,
        },
        None,
    )
    .unwrap();
}

/// Everything a store holds, as `store copy` sees it.
fn everything(
    s: &dyn Store,
) -> (
    Vec<crate::copy::ExportedVersion>,
    Vec<crate::copy::ExportedTable>,
) {
    let mut versions = s.export_versions(0, usize::MAX >> 1).unwrap();
    // `fetched_at` is kept as is; nothing to normalize.
    versions.sort_by_key(|v| v.seq);
    (versions, s.export_tables().unwrap())
}

/// `store copy` between every pair of backends: the target holds exactly what the source
/// holds (versions with their seq and event ids, payloads byte for byte, cursors, sink
/// positions and state, poison, health, audit, hunt runs), reads it the same way, continues
/// `seq` after it, and a second copy into it is refused.
#[test]
fn store_copy_moves_everything_between_every_pair_of_backends() {
    type Make = fn() -> (Box<dyn Store>, Box<dyn std::any::Any>);
    fn sqlite() -> (Box<dyn Store>, Box<dyn std::any::Any>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Box<dyn Store> = Box::new(SqliteStore::open(&dir.path().join("x.db")).unwrap());
        (store, Box::new(dir))
    }
    fn postgres() -> (Box<dyn Store>, Box<dyn std::any::Any>) {
        let scratch = crate::postgres::tests::Scratch::new();
        let store: Box<dyn Store> =
            Box::new(crate::postgres::PgStore::connect(&scratch.url()).unwrap());
        (store, Box::new(scratch))
    }
    let backends: [(&str, Make); 2] = [("sqlite", sqlite), ("postgres", postgres)];
    for (from_name, from_make) in backends {
        for (to_name, to_make) in backends {
            let (from, from_guard) = from_make();
            let (to, to_guard) = to_make();
            filled(&*from);
            let mut seen = 0;
            let copied = crate::copy::copy(&*from, &*to, 500, |n| seen = n).unwrap();
            let pair = format!("{from_name} -> {to_name}");
            assert_eq!(copied.versions, 1201, "{pair}");
            assert_eq!(seen, 1201, "{pair}");
            assert_eq!(everything(&*to), everything(&*from), "{pair}");
            assert_eq!(
                to.sink_positions()
                    .unwrap()
                    .iter()
                    .map(|(s, q, _)| (s.clone(), *q))
                    .collect::<Vec<_>>(),
                vec![("file".to_owned(), 650), ("splunk".to_owned(), 700)],
                "{pair}"
            );
            assert_eq!(
                to.sink_state("file").unwrap(),
                from.sink_state("file").unwrap(),
                "{pair}"
            );
            let key = |v: StoredVersion| (v.seq, v.event_id, v.record, v.raw, v.change);
            assert_eq!(
                to.versions_after(690, 20)
                    .unwrap()
                    .into_iter()
                    .map(key)
                    .collect::<Vec<_>>(),
                from.versions_after(690, 20)
                    .unwrap()
                    .into_iter()
                    .map(key)
                    .collect::<Vec<_>>(),
                "{pair}"
            );
            assert_eq!(to.actions(None).unwrap().len(), 1, "{pair}");
            // New versions continue after the copied ones.
            let last = to.last_seq().unwrap();
            to.commit(
                &TenantId::canonical("a"),
                &[version("a", "new", "2026-11-02T00:00:00Z")],
                None,
            )
            .unwrap();
            assert!(to.last_seq().unwrap() > last, "{pair}");
            let e = crate::copy::copy(&*from, &*to, 500, |_| {})
                .unwrap_err()
                .to_string();
            assert!(e.contains("is not empty"), "{pair}: {e}");
            drop((from, to, from_guard, to_guard));
        }
    }
}
