//! The PostgreSQL sink: one table per stream (`<prefix>incidents`, `<prefix>alerts`,
//! `<prefix>detections`), one row per version keyed by its event id, written with
//! `INSERT … ON CONFLICT (event_id) DO UPDATE` in one transaction per chunk. A chunk sent
//! again after a crash updates the same rows, so nothing is stored twice; the commit is the
//! acknowledgement.
//!
//! Columns: `event_id` (primary key), `seq`, `tenant_id`, `tenant_name` (the configured
//! name; added to older tables by `ALTER TABLE … ADD COLUMN IF NOT EXISTS`), `item_id`, `last_update`
//! (`timestamptz`), `change`, `severity`, `status`, `title`, `document` (`jsonb`, the sink's
//! `format`), `delivered_at`. An index on `(tenant_id, item_id, last_update DESC)` serves "the
//! newest version of each incident".

mod config;
#[cfg(feature = "sink-postgres")]
mod sink;

pub use config::{PgTls, PostgresConfig, Validated};

#[cfg(feature = "sink-postgres")]
pub(crate) use sink::build;
#[cfg(feature = "sink-postgres")]
pub use sink::connection;
