//! The one conformance suite every sink runs against its receiver.
//!
//! 1. **Delivery**: 60 versions (three tenants, every stream) reach the receiver exactly once,
//!    in chunks of 16; the position is the store's last `seq`; the counters say so.
//! 2. **Retry on failure**: the receiver goes down and comes back while the sink is retrying;
//!    the delivery succeeds, counts its retries, and nothing arrives twice.
//! 3. **No loss across a receiver restart**: with the receiver down the delivery fails with a
//!    retriable error, the position stays, the backlog is counted, and another sink delivers
//!    meanwhile; after the restart everything arrives, once.
//! 4. **Repeats**: a second sink with a fresh position re-sends everything to the same
//!    receiver: a receiver that drops repeats by event id keeps each once, any other receives
//!    each exactly twice (at least once, never silently dropped).
//!
//! Where a receiver cannot do a step (UDP has no acknowledgement, stdout no restart), its
//! [`Capabilities`] say so and the step is left out; that is a property of the protocol,
//! documented with the sink.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use xdrsync_sinks::{Sink, SinkError, fixtures};
use xdrsync_store::{SqliteStore, Store};

/// What a receiver's protocol allows the suite to check.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// It can be stopped and restarted (steps 2 and 3).
    pub restart: bool,
    /// A delivery it accepted is really there (false for UDP: steps 2 and 3 need it).
    pub acknowledges: bool,
    /// It drops repeats by event id.
    pub dedups: bool,
}

/// A receiver under test.
pub trait Receiver: Sync {
    /// The sink's own table, e.g. `[splunk_hec]\nurl = "…"`, placed after the common keys.
    fn sink_table(&self) -> String;
    /// Builds a sink from its complete TOML (override for sinks that need a writer).
    fn build(&self, toml: &str, dir: &Path) -> Arc<dyn Sink> {
        let v = xdrsync_sinks::config::validate_toml(toml, &dir.join("xdrsync.toml"), &[], true)
            .unwrap_or_else(|e| panic!("sink config: {e}\n{toml}"));
        xdrsync_sinks::build(&v).unwrap_or_else(|e| panic!("building the sink: {e}"))
    }
    /// The event ids it holds, with repeats; waits (briefly) until it has at least `expect`.
    fn event_ids(&self, expect: usize) -> impl Future<Output = Vec<String>> + Send;
    /// Stops it.
    fn stop(&self) -> impl Future<Output = ()> + Send;
    /// Starts it again.
    fn restart(&self) -> impl Future<Output = ()> + Send;
    /// What it can do.
    fn capabilities(&self) -> Capabilities;
}

/// The event id of a document in any format, or of an envelope around it (HEC `fields`).
pub fn event_id_of(doc: &Value) -> Option<String> {
    [
        &doc["event_id"],
        &doc["metadata"]["uid"],
        &doc["xdrsync"]["event_id"],
        &doc["fields"]["event_id"],
        &doc["event"]["event_id"],
    ]
    .into_iter()
    .find_map(|v| v.as_str().map(str::to_owned))
}

/// One delivery, as the pipeline does it.
pub async fn deliver(
    sink: &Arc<dyn Sink>,
    store: &Arc<dyn Store>,
) -> Result<xdrsync_sinks::Delivered, SinkError> {
    sink.clone().deliver(store.clone()).await
}

fn counts(ids: &[String]) -> HashMap<&str, usize> {
    let mut m = HashMap::new();
    for id in ids {
        *m.entry(id.as_str()).or_insert(0) += 1;
    }
    m
}

/// Asserts the receiver holds each of `expected` exactly `times` times and nothing else.
async fn assert_holds<R: Receiver>(r: &R, expected: &[String], times: usize, step: &str) {
    let got = r.event_ids(expected.len() * times).await;
    let c = counts(&got);
    let missing: Vec<&String> = expected
        .iter()
        .filter(|e| !c.contains_key(e.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{step}: {} events missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let wrong: Vec<(&&str, &usize)> = c.iter().filter(|(_, n)| **n != times).collect();
    assert!(
        wrong.is_empty(),
        "{step}: events held other than {times} time(s): {:?}",
        wrong.first()
    );
    assert_eq!(
        got.len(),
        expected.len() * times,
        "{step}: unexpected events"
    );
}

/// Runs the suite against `r`.
pub async fn run<R: Receiver>(r: &R) {
    let caps = r.capabilities();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let all = fixtures::many(100, 3);
    fixtures::commit(&*store, &all[..60]);
    let table = r.sink_table();
    let sink = |name: &str, retry: &str| {
        r.build(
            &format!("name = \"{name}\"\nbatch_max_events = 16\n{retry}\n{table}"),
            dir.path(),
        )
    };
    let patient = sink(
        "s1",
        "retry_attempts = 12\nretry_base_ms = 100\nretry_max_secs = 1",
    );
    let hasty = sink(
        "s1",
        "retry_attempts = 2\nretry_base_ms = 20\nretry_max_secs = 1",
    );
    let ids = |n: usize| -> Vec<String> {
        store
            .versions_after_without_raw(0, n)
            .unwrap()
            .into_iter()
            .map(|v| v.event_id)
            .collect()
    };

    // 1. Delivery.
    let d = deliver(&patient, &store).await.expect("1: delivers");
    assert_eq!(d.events, 60, "1: events");
    assert_eq!(d.position, store.last_seq().unwrap(), "1: position");
    assert_eq!(store.sink_position("s1").unwrap(), d.position);
    let m = patient.metrics();
    assert_eq!(m.events_sent, 60, "1: metrics {m:?}");
    assert!(m.batches_sent >= 4, "1: chunks of 16: {m:?}");
    assert!(m.bytes_sent > 0 && m.position == d.position, "1: {m:?}");
    assert_eq!(
        deliver(&patient, &store).await.unwrap().events,
        0,
        "1: nothing twice"
    );
    assert_holds(r, &ids(60), 1, "1 delivery").await;

    if caps.restart && caps.acknowledges {
        // 2. The receiver is down when the delivery starts and back while it retries.
        fixtures::commit(&*store, &all[60..80]);
        r.stop().await;
        let (d, ()) = tokio::join!(deliver(&patient, &store), async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            r.restart().await;
        });
        assert_eq!(d.expect("2: delivers once the receiver is back").events, 20);
        assert!(patient.metrics().send_retries > 0, "2: retries counted");
        assert_holds(r, &ids(80), 1, "2 retry").await;

        // 3. Down for longer than the retries: nothing acknowledged, nothing lost.
        fixtures::commit(&*store, &all[80..]);
        let before = store.sink_position("s1").unwrap();
        r.stop().await;
        match deliver(&hasty, &store).await {
            Err(SinkError::Send {
                retriable: true,
                attempts: 2,
                ..
            })
            | Err(SinkError::Io { .. }) => {}
            other => panic!("3: expected a retriable failure, got {other:?}"),
        }
        assert_eq!(
            store.sink_position("s1").unwrap(),
            before,
            "3: position kept"
        );
        let m = hasty.metrics();
        assert_eq!((m.backlog, m.deliveries_failed), (20, 1), "3: {m:?}");
        let other = r.build(
            "name = \"other\"\n[file]\npath = \"other.ndjson\"",
            dir.path(),
        );
        assert_eq!(
            deliver(&other, &store).await.unwrap().events,
            100,
            "3: other sinks deliver"
        );
        r.restart().await;
        assert_eq!(
            deliver(&patient, &store).await.unwrap().events,
            20,
            "3: catches up"
        );
        assert_holds(r, &ids(100), 1, "3 restart").await;
    } else {
        fixtures::commit(&*store, &all[60..]);
        assert_eq!(deliver(&patient, &store).await.unwrap().events, 40);
        assert_holds(r, &ids(100), 1, "1b delivery").await;
    }

    // 4. A sink from position 0 sends everything again to the same receiver.
    let again = sink("s2", "");
    assert_eq!(
        deliver(&again, &store).await.unwrap().events,
        100,
        "4: re-sent"
    );
    let times = if caps.dedups { 1 } else { 2 };
    assert_holds(r, &ids(100), times, "4 repeats").await;
}
