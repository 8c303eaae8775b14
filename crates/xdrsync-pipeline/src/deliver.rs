//! Sinks that deliver while a pull runs.
//!
//! A sink delivers from the store, from its own position, so it can run at any time; running it
//! after every commit of a pull (instead of once the whole pass is stored) overlaps writing the
//! sink with pulling the next pages, and the data reaches the SIEM sooner. Delivery is still
//! only ever of committed versions, in `seq` order.

use std::sync::Arc;

use tokio::sync::watch;
use xdrsync_sinks::{Delivered, Sink, SinkError};
use xdrsync_store::SqliteStore;

/// One delivery of `sink`, off the async threads (file and store I/O block). How it went is
/// recorded in the store (`sink_health`) for `status`, `/metrics` and `/readyz`.
pub async fn once(sink: &Arc<dyn Sink>, store: &Arc<SqliteStore>) -> Result<Delivered, SinkError> {
    let (s, st) = (sink.clone(), store.clone());
    match tokio::task::spawn_blocking(move || {
        let result = s.deliver(&st);
        let outcome = match &result {
            Ok(d) => Ok(d.events),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = st.record_sink_outcome(s.name(), outcome.as_ref().map(|n| *n).map_err(String::as_str)) {
            tracing::warn!(sink = s.name(), error = %e, "Cannot record the sink's delivery outcome for `status`.");
        }
        result
    })
    .await
    {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Delivers to `sink` after every change of `commits` until `finished` turns true, then once
/// more, so everything committed before `finished` was set is delivered when this returns. A
/// sink that does not follow commits (one file per run) delivers only that last time.
/// A failed delivery ends it with the error (the sink resumes from its position next time).
pub async fn follow(
    sink: Arc<dyn Sink>,
    store: Arc<SqliteStore>,
    mut commits: watch::Receiver<u64>,
    mut finished: watch::Receiver<bool>,
) -> Result<Delivered, SinkError> {
    if !sink.follows_commits() {
        while !*finished.borrow_and_update() {
            if finished.changed().await.is_err() {
                break;
            }
        }
        return once(&sink, &store).await;
    }
    let mut total = Delivered::default();
    loop {
        // Read before delivering: a pull that finishes during this delivery gets one more.
        let last = *finished.borrow_and_update() || finished.has_changed().is_err();
        commits.borrow_and_update();
        let d = once(&sink, &store).await?;
        total.events += d.events;
        total.position = d.position;
        if last {
            return Ok(total);
        }
        tokio::select! {
            changed = commits.changed() => {
                if changed.is_err() {
                    // No more commits can come; wait for the end.
                    let _ = finished.changed().await;
                }
            }
            _ = finished.changed() => {}
        }
    }
}
