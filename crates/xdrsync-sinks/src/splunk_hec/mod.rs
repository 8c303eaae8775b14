//! The Splunk HTTP Event Collector sink.
//!
//! Batches go to `POST <url>/services/collector/event` as concatenated event objects
//! (`{"time":…,"host":…,"source":…,"sourcetype":…,"index":…,"event":{…},"fields":{…}}`),
//! gzip-compressed by default, with `Authorization: Splunk <token>`. Index, sourcetype and host
//! can be set per tenant (an MSSP's per-customer index). With indexer acknowledgement
//! (`ack = true`) every request carries the sink's `X-Splunk-Request-Channel`, and a batch
//! counts as delivered only once `POST /services/collector/ack` says its `ackId` is indexed;
//! until then (or if the ack times out) it is not acknowledged, and is sent again.
//!
//! Status codes follow the shared retry classification: 503 (HEC code 9, server busy), 429
//! and 5xx are retried; 400 (invalid data, incorrect index), 401 and 403 (token) are not. A
//! `200` whose body carries a non-zero `code` is a failure.

mod config;
mod encoder;
#[cfg(feature = "sink-splunk-hec")]
mod sink;

pub use config::{HecConfig, TenantHec, Validated};
pub use encoder::{default_sourcetype, encode_event};

#[cfg(feature = "sink-splunk-hec")]
pub(crate) use sink::build;

#[cfg(test)]
mod tests;
