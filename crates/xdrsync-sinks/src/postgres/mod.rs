//! The PostgreSQL sink: one table per stream (`<prefix>incidents`, `<prefix>alerts`,
//! `<prefix>detections`), one row per version keyed by its event id, written with
//! `INSERT … ON CONFLICT (event_id) DO UPDATE` in one transaction per chunk. A chunk sent
//! again after a crash updates the same rows, so nothing is stored twice; the commit is the
//! acknowledgement.
//!
//! Columns: `event_id` (primary key), `seq`, `tenant_id`, `item_id`, `last_update`
//! (`timestamptz`), `change`, `severity`, `status`, `title`, `document` (`jsonb`, the sink's
//! `format`), `delivered_at`. An index on `(tenant_id, item_id, last_update DESC)` serves "the
//! newest version of each incident".

mod config;
#[cfg(feature = "sink-postgres")]
mod sink;

pub use config::{PostgresConfig, Validated};

use std::sync::Arc;

use xdrsync_config::ConfigError;

use crate::Sink;
use crate::outbox::Common;

/// Builds the sink (reads its URL).
pub(crate) fn build(common: Common, v: &Validated) -> Result<Arc<dyn Sink>, ConfigError> {
    #[cfg(feature = "sink-postgres")]
    {
        sink::build(common, v)
    }
    #[cfg(not(feature = "sink-postgres"))]
    {
        let _ = (common, v);
        Err(crate::config::not_built("postgres", "sink-postgres"))
    }
}
