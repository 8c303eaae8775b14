//! Sinks that deliver while a pull runs.
//!
//! A sink delivers from the store, from its own position, so it can run at any time; running it
//! after every commit of a pull (instead of once the whole pass is stored) overlaps writing the
//! sink with pulling the next pages, and the data reaches the SIEM sooner. Delivery is still
//! only ever of committed versions, in `seq` order.

use std::sync::Arc;

use tokio::sync::watch;
use xdrsync_sinks::{Delivered, Sink, SinkError};
use xdrsync_store::Store;

/// One delivery of `sink` (its blocking parts run off the async threads). How it went is
/// recorded in the store (`sink_health`) for `status`, `/metrics` and `/readyz`.
pub async fn once(sink: &Arc<dyn Sink>, store: &Arc<dyn Store>) -> Result<Delivered, SinkError> {
    let result = unrecorded(sink, store).await;
    record(sink, store, &result).await;
    result
}

/// [`once`] without recording the outcome: [`follow`] delivers after every commit of a pull
/// and records once, at its end, instead of a store write per commit.
async fn unrecorded(sink: &Arc<dyn Sink>, store: &Arc<dyn Store>) -> Result<Delivered, SinkError> {
    sink.clone().deliver(store.clone()).await
}

/// Records a delivery's outcome (events moved, or the error) in the store.
async fn record(
    sink: &Arc<dyn Sink>,
    store: &Arc<dyn Store>,
    result: &Result<Delivered, SinkError>,
) {
    let outcome = match result {
        Ok(d) => Ok(d.events),
        Err(e) => Err(e.to_string()),
    };
    let (s, st) = (sink.clone(), store.clone());
    let recorded = tokio::task::spawn_blocking(move || {
        st.record_sink_outcome(
            s.name(),
            outcome.as_ref().map(|n| *n).map_err(String::as_str),
        )
    })
    .await;
    if let Ok(Err(e)) = recorded {
        tracing::warn!(sink = sink.name(), error = %e, "Cannot record the sink's delivery outcome for `status`.");
    }
}

/// Delivers to `sink` after every change of `commits` until `finished` turns true, then once
/// more, so everything committed before `finished` was set is delivered when this returns. A
/// sink that does not follow commits (one file per run) delivers only that last time.
/// A failed delivery ends it with the error (the sink resumes from its position next time).
pub async fn follow(
    sink: Arc<dyn Sink>,
    store: Arc<dyn Store>,
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
        let d = match unrecorded(&sink, &store).await {
            Ok(d) => d,
            Err(e) => {
                let failed = Err(e);
                record(&sink, &store, &failed).await;
                return failed;
            }
        };
        total.events += d.events;
        total.position = d.position;
        if last {
            let done = Ok(total);
            record(&sink, &store, &done).await;
            return done;
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
