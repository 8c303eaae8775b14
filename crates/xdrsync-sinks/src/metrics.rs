//! Per-sink counters, and the named events that both log and count.
//!
//! Every delivery outcome goes through one of the events below (`emit` logs it and updates the
//! sink's counters), so a log line and a counter never disagree and label cardinality stays
//! bounded (the sink's name; never a tenant or an event id).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A sink's counters, shared by its deliveries.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    events_sent: AtomicU64,
    events_filtered: AtomicU64,
    events_dropped: AtomicU64,
    batches_sent: AtomicU64,
    bytes_sent: AtomicU64,
    send_retries: AtomicU64,
    deliveries_failed: AtomicU64,
    position: AtomicI64,
    backlog: AtomicU64,
}

/// A copy of a sink's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Events the receiver accepted.
    pub events_sent: u64,
    /// Events passed over because the sink's route does not take them.
    pub events_filtered: u64,
    /// Events skipped because the backlog was over its bound (`when_full = "drop_oldest"`).
    pub events_dropped: u64,
    /// Batches the receiver accepted.
    pub batches_sent: u64,
    /// Bytes of those batches (before compression).
    pub bytes_sent: u64,
    /// Attempts that failed and were retried.
    pub send_retries: u64,
    /// Deliveries that ended in an error.
    pub deliveries_failed: u64,
    /// The last acknowledged `seq`.
    pub position: i64,
    /// Events past the position when the last delivery started.
    pub backlog: u64,
}

impl SinkMetrics {
    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            events_sent: self.events_sent.load(Relaxed),
            events_filtered: self.events_filtered.load(Relaxed),
            events_dropped: self.events_dropped.load(Relaxed),
            batches_sent: self.batches_sent.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            send_retries: self.send_retries.load(Relaxed),
            deliveries_failed: self.deliveries_failed.load(Relaxed),
            position: self.position.load(Relaxed),
            backlog: self.backlog.load(Relaxed),
        }
    }
}

/// The receiver accepted a batch.
pub(crate) struct BatchSent<'a> {
    pub(crate) sink: &'a str,
    pub(crate) events: u64,
    pub(crate) bytes: u64,
    pub(crate) position: i64,
}

impl BatchSent<'_> {
    pub(crate) fn emit(self, m: &SinkMetrics) {
        tracing::debug!(
            sink = self.sink,
            events = self.events,
            bytes = self.bytes,
            position = self.position,
            "Batch delivered."
        );
        m.events_sent.fetch_add(self.events, Relaxed);
        m.bytes_sent.fetch_add(self.bytes, Relaxed);
        m.batches_sent.fetch_add(1, Relaxed);
        m.position.store(self.position, Relaxed);
    }
}

/// Events the route does not take were passed over.
pub(crate) struct EventsFiltered<'a> {
    pub(crate) sink: &'a str,
    pub(crate) events: u64,
    pub(crate) position: i64,
}

impl EventsFiltered<'_> {
    pub(crate) fn emit(self, m: &SinkMetrics) {
        if self.events > 0 {
            tracing::trace!(
                sink = self.sink,
                events = self.events,
                "Events not routed to this sink."
            );
        }
        m.events_filtered.fetch_add(self.events, Relaxed);
        m.position.store(self.position, Relaxed);
    }
}

/// A send failed and will be tried again.
pub(crate) struct SendRetrying<'a> {
    pub(crate) sink: &'a str,
    pub(crate) attempt: u32,
    pub(crate) wait: Duration,
    pub(crate) error: &'a str,
}

impl SendRetrying<'_> {
    pub(crate) fn emit(self, m: &SinkMetrics) {
        tracing::warn!(sink = self.sink, attempt = self.attempt, wait_ms = self.wait.as_millis() as u64,
            error = %self.error, "Sink send failed; retrying.");
        m.send_retries.fetch_add(1, Relaxed);
    }
}

/// A delivery ended in an error; its events stay in the outbox.
pub(crate) struct DeliveryFailed<'a> {
    pub(crate) sink: &'a str,
    pub(crate) error: &'a crate::SinkError,
}

impl DeliveryFailed<'_> {
    pub(crate) fn emit(self, m: &SinkMetrics) {
        tracing::error!(sink = self.sink, error = %self.error,
            "Sink delivery failed; its backlog stays in the outbox.");
        m.deliveries_failed.fetch_add(1, Relaxed);
    }
}

/// The backlog measured at the start of a delivery.
pub(crate) struct Backlog<'a> {
    pub(crate) sink: &'a str,
    pub(crate) events: u64,
    pub(crate) max: u64,
    /// Events skipped to get back under `max` (`drop_oldest`), 0 when kept.
    pub(crate) dropped: u64,
    pub(crate) skipped_to: i64,
}

impl Backlog<'_> {
    pub(crate) fn emit(self, m: &SinkMetrics) {
        m.backlog.store(self.events, Relaxed);
        if self.events <= self.max {
            return;
        }
        if self.dropped > 0 {
            tracing::error!(
                sink = self.sink,
                backlog = self.events,
                max = self.max,
                dropped = self.dropped,
                skipped_to = self.skipped_to,
                "Sink backlog over its bound: the oldest events were skipped for this sink (DATA LOSS for this sink: the skipped events are still in the store, between the old position and skipped_to)."
            );
            m.events_dropped.fetch_add(self.dropped, Relaxed);
            m.position.store(self.skipped_to, Relaxed);
        } else {
            tracing::error!(
                sink = self.sink,
                backlog = self.events,
                max = self.max,
                "Sink backlog over its bound: the receiver has been failing or slow; the events are kept in the outbox."
            );
        }
    }
}
