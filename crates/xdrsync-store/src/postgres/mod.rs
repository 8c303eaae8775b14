//! The PostgreSQL store: the shared store of a cluster of `run` workers (issue 18), beside
//! SQLite for one machine.
//!
//! Sessions ([`conn`]: one writes, one reads, as the SQLite store's two connections, and a
//! cluster worker's lease renewals on a third),
//! forward-only migrations from `migrations/postgres/` applied once however many workers
//! start at the same time (each step under a transaction-scoped advisory lock), a schema newer
//! than the binary refused, the address shown without its password, and every
//! [`crate::Store`] call ([`store`]), held to the same conformance suite as SQLite.

mod conn;
mod copy;
mod lease;
mod ledger;
mod store;

pub use crate::cluster::Lease;

use std::path::PathBuf;
use std::str::FromStr;

use xdrsync_model::Timestamp;

use crate::StoreError;

/// The PostgreSQL migrations, in order; a database at version `n` has applied the first `n`.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        "0002_leases",
        include_str!("../../migrations/postgres/0002_leases.sql"),
    ),
    (
        "0003_sink_leases",
        include_str!("../../migrations/postgres/0003_sink_leases.sql"),
    ),
    (
        "0004_budget",
        include_str!("../../migrations/postgres/0004_budget.sql"),
    ),
];

/// The advisory lock every migration step takes (any 64-bit constant of ours: "xdrsync m").
const MIGRATION_LOCK: i64 = 0x0078_6472_7379_6e6d;

/// A store in a PostgreSQL database.
#[derive(Debug)]
pub struct PgStore {
    writer: conn::Connection,
    reader: conn::Connection,
    /// Lease renewals (opened on a worker's first renewal).
    leaser: conn::Connection,
    /// The rate-budget ledger's calls (opened on the first), shared with [`ledger::PgLedger`].
    ledger: std::sync::Arc<conn::Connection>,
    dictionaries: store::Shared,
    location: String,
    /// Set once the store is a cluster worker's ([`crate::Cluster::renew`]): the worker and
    /// the sinks whose delivery lease it holds, by generation. Sink positions are then fenced.
    member: std::sync::Mutex<Option<lease::Member>>,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db[?…]`;
    /// `options=-csearch_path%3D<schema>` puts the store in a schema of its own) and brings its
    /// schema up to date. An unreachable server is an error after the connect timeout (10 s
    /// unless the URL sets `connect_timeout`).
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let location = redacted(url);
        let config = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Postgres {
            location: location.clone(),
            message: format!("not a PostgreSQL address: {e}"),
        })?;
        refuse_plaintext_off_this_machine(&config).map_err(|message| StoreError::Postgres {
            location: location.clone(),
            message,
        })?;
        Self::connect_with(config, None, &location)
    }

    /// Connects with settings and TLS made by the caller (the binary makes them by the
    /// PostgreSQL sink's rules: `sslmode`, a CA file, plaintext only over loopback or by name);
    /// `location` is the address to show, without its password.
    pub fn connect_with(
        config: tokio_postgres::Config,
        tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
        location: &str,
    ) -> Result<Self, StoreError> {
        let location = location.to_owned();
        let session = |config, tls| {
            conn::Connection::start(config, tls).map_err(|e| StoreError::Postgres {
                location: location.clone(),
                message: format!("cannot start the database session: {e}"),
            })
        };
        let store = PgStore {
            writer: session(config.clone(), tls.clone())?,
            reader: session(config.clone(), tls.clone())?,
            leaser: session(config.clone(), tls.clone())?,
            ledger: std::sync::Arc::new(session(config, tls)?),
            dictionaries: store::Shared::default(),
            location: location.clone(),
            member: std::sync::Mutex::new(None),
        };
        store.migrate()?;
        store.load_dictionaries()?;
        Ok(store)
    }

    /// Where the store is: its address without the password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.call(|s| {
            let (rt, client) = s.client()?;
            let row = rt.block_on(
                client.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[]),
            )?;
            row.try_get::<_, i64>(0)
        })
    }

    /// Applies the migrations the database lacks, one transaction each. Every step takes the
    /// same transaction-scoped advisory lock first, so workers starting together apply each
    /// step once: the others wait, then find it done. A database past the last migration this
    /// binary knows was written by a newer xdrsync and is refused.
    fn migrate(&self) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as i64;
        loop {
            let step = self.call(move |s| {
                let (rt, client) = s.client()?;
                let tx = rt.block_on(client.transaction())?;
                rt.block_on(tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]))?;
                rt.block_on(tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL, applied_at TEXT NOT NULL)",
                ))?;
                let current: i64 = rt
                    .block_on(
                        tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[]),
                    )?
                    .try_get(0)?;
                let next = usize::try_from(current).ok().and_then(|c| MIGRATIONS.get(c));
                let applied = match next {
                    Some((name, sql)) if current < known => {
                        rt.block_on(tx.batch_execute(sql))?;
                        rt.block_on(tx.execute(
                            "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                            &[&(current + 1), &Timestamp::now().to_string()],
                        ))?;
                        Some(*name)
                    }
                    _ => None,
                };
                rt.block_on(tx.commit())?;
                Ok((current, applied))
            })?;
            match step {
                (current, _) if current > known => {
                    return Err(StoreError::TooNew {
                        path: PathBuf::from(&self.location),
                        found: current,
                        known,
                    });
                }
                (_, Some(name)) => tracing::info!(migration = name, "Applied store migration."),
                (_, None) => return Ok(()),
            }
        }
    }

    /// Every dictionary the store has; the newest is the one new payloads use.
    fn load_dictionaries(&self) -> Result<(), StoreError> {
        let rows = self.call(|s| {
            let (rt, client) = s.client()?;
            let rows =
                rt.block_on(client.query("SELECT id, bytes FROM dictionaries ORDER BY id", &[]))?;
            rows.iter()
                .map(|r| Ok((r.try_get::<_, i32>(0)?, r.try_get::<_, Vec<u8>>(1)?)))
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        })?;
        let mut d = self.dictionaries.lock().unwrap_or_else(|e| e.into_inner());
        for (id, bytes) in rows {
            if let Ok(id) = u32::try_from(id) {
                d.add(id, bytes.into());
            }
        }
        Ok(())
    }

    /// Runs `f` on the writing session, naming the store in its error.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut conn::Session) -> Result<T, tokio_postgres::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        match self.writer.call(f) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(StoreError::Postgres {
                location: self.location.clone(),
                message: describe(&e),
            }),
            None => Err(StoreError::WriterStopped(format!(
                "store {}: the database session's thread stopped",
                self.location
            ))),
        }
    }
}

/// No password crosses the network in clear (invariant 13): the store speaks TLS to no server
/// yet, so a server not on this machine is refused unless the URL accepts plaintext by name
/// (`sslmode=disable`); loopback and Unix sockets need nothing.
fn refuse_plaintext_off_this_machine(config: &tokio_postgres::Config) -> Result<(), String> {
    use tokio_postgres::config::{Host, SslMode};
    let local = |h: &Host| match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    };
    let by_address = config.get_hostaddrs();
    let all_local = if by_address.is_empty() {
        config.get_hosts().iter().all(local)
    } else {
        by_address.iter().all(std::net::IpAddr::is_loopback)
    };
    if all_local || config.get_ssl_mode() == SslMode::Disable {
        return Ok(());
    }
    Err("the server is not on this machine and the store does not speak TLS yet: its password would cross the network in clear. Reach the server through a tunnel on loopback, or accept plaintext by name with sslmode=disable in the URL".into())
}

/// A PostgreSQL error in full: the server's message and detail when it sent one, else the
/// client's (connection refused, timeout, TLS).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        },
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// `url` without its password (for messages), whether in the user part or a `password=` parameter (an
/// address that does not parse as a URL is not shown at all: it may hold one anywhere).
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                // Only fails for URLs that cannot have a password, which this one has.
                let _ = u.set_password(Some("***"));
            }
            if u.query_pairs().any(|(k, _)| k == "password") {
                let kept: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k == "password" {
                            "***".into()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(kept);
            }
            u.to_string()
        }
        Err(_) => "postgres://(an address that is not a URL)".to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
