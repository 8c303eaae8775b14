//! `[sinks.stdout]`.

use serde::Deserialize;

/// `[sinks.stdout]`: nothing to set yet; the table's presence selects the sink.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {}
