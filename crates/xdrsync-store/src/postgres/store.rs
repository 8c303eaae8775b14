//! The [`Store`] calls on PostgreSQL: the SQLite store's statements in PostgreSQL's dialect,
//! with the same transactions.
//!
//! Every transaction that adds versions first takes one transaction-scoped advisory lock
//! ([`COMMIT_LOCK`]). Without it, two workers' transactions could take `seq` 10 and 11 and
//! commit 11 first: a sink reading past its position would deliver 11, move to 11, and never
//! see 10. With it, `seq` is handed out in commit order, as SQLite's single writer does; what a
//! cluster loses is concurrent commits, which each last milliseconds.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::runtime::Runtime;
use tokio_postgres::{Client, GenericClient, Transaction};
use xdrsync_model::{ChangeKind, Record, StreamKind, TenantId, Timestamp};

use super::conn::Session;
use super::{PgStore, describe};
use crate::payload::{self, Dictionaries, Dictionary};
use crate::{
    ActionOutcome, ActionRecord, CommitRequest, CommitStats, Encoded, HuntRun, NewVersion,
    PoisonRecord, PullOutcome, SinkHealth, Store, StoreError, StoredVersion, StreamHealth,
};

/// The advisory lock of every transaction that adds versions ("xdrsync c").
pub(super) const COMMIT_LOCK: i64 = 0x0078_6472_7379_6e63;

/// What a job on a session can fail with: the database, or the store's own checks.
pub(super) enum Fail {
    /// PostgreSQL (or the connection to it) failed.
    Pg(tokio_postgres::Error),
    /// A row could not be read, or a dictionary could not be stored.
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

/// The dictionaries, shared by the store and its sessions' jobs.
pub(super) type Shared = Arc<Mutex<Dictionaries>>;

pub(super) fn lock(d: &Shared) -> MutexGuard<'_, Dictionaries> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

/// The dictionary `id`: known to this process, or (another worker trained it) read from
/// the table.
async fn dictionary<C: GenericClient>(d: &Shared, id: u32, client: &C) -> Option<Dictionary> {
    if let Some(known) = lock(d).known(id) {
        return Some(known);
    }
    let id32 = i32::try_from(id).ok()?;
    let row = client
        .query_opt("SELECT bytes FROM dictionaries WHERE id = $1", &[&id32])
        .await
        .ok()??;
    let bytes: Vec<u8> = row.try_get(0).ok()?;
    Some(lock(d).remember(id, bytes.into()))
}

/// A stored payload's text, its dictionary looked up through `client`.
pub(super) async fn decode<C: GenericClient>(
    d: &Shared,
    stored: &[u8],
    client: &C,
) -> Result<String, String> {
    // The dictionary is looked up first (asynchronously, perhaps in the table); decoding
    // then only asks for the one the header names.
    let found = match payload::dictionary_id(stored) {
        Some(id) => dictionary(d, id, client).await,
        None => None,
    };
    payload::decode_bytes(stored, move |_| found)
}

/// One version ready to insert: its record (to classify and key it) and its payloads.
struct Row {
    record: Record,
    normalized: Vec<u8>,
    raw: Vec<u8>,
}

/// A commit request with its payloads compressed, owned by the job that commits it.
struct Prepared {
    tenant: TenantId,
    fence: Option<crate::Fence>,
    rows: Vec<Row>,
    poison: Vec<PoisonRecord>,
    cursor: Option<(StreamKind, Timestamp)>,
}

impl PgStore {
    /// Compresses `versions` (with `encoded` if it was made with the current dictionary).
    fn prepare(
        &self,
        tenant: &TenantId,
        versions: &[NewVersion],
        encoded: Option<&Encoded>,
        poison: &[PoisonRecord],
        cursor: Option<(StreamKind, Timestamp)>,
    ) -> Prepared {
        let current = lock(&self.dictionaries).current();
        let current_id = current.as_ref().map_or(0, Dictionary::id);
        let ahead = encoded
            .filter(|e| e.items.len() == versions.len() && e.dictionary == current_id)
            .map(|e| &e.items);
        let rows = versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let (normalized, raw) = match ahead.and_then(|a| a.get(i)) {
                    Some(e) => (
                        payload::into_bytes(e.stored_normalized.clone()),
                        payload::into_bytes(e.stored_raw.clone()),
                    ),
                    None => {
                        let e = self.encode_one(v, current.as_ref());
                        (
                            payload::into_bytes(e.stored_normalized),
                            payload::into_bytes(e.stored_raw),
                        )
                    }
                };
                Row {
                    record: v.record.clone(),
                    normalized,
                    raw,
                }
            })
            .collect();
        Prepared {
            tenant: tenant.clone(),
            fence: None,
            rows,
            poison: poison.to_vec(),
            cursor,
        }
    }

    /// A version's payloads compressed with `dictionary`, sampled for training while there is
    /// none (as the SQLite store does).
    fn encode_one(&self, v: &NewVersion, dictionary: Option<&Dictionary>) -> crate::EncodedVersion {
        payload::encode_version(&self.dictionaries, dictionary, &v.record.to_json(), &v.raw)
    }

    /// Trains the first dictionary once enough payloads were sampled and stores it in a
    /// transaction of its own, durable before any payload names it.
    pub(super) fn train_dictionary(&self) {
        let trained = lock(&self.dictionaries).train();
        let Some(bytes) = trained else { return };
        let stored = bytes.clone();
        let id = self.write(move |rt, client| {
            let row = rt.block_on(client.query_one(
                "INSERT INTO dictionaries (created_at, bytes) VALUES ($1, $2) RETURNING id",
                &[&Timestamp::now().to_string(), &stored],
            ))?;
            Ok(row.try_get::<_, i32>(0)?)
        });
        match id.map(u32::try_from) {
            Ok(Ok(id)) => {
                tracing::info!(
                    id,
                    bytes = bytes.len(),
                    "Trained the store's compression dictionary."
                );
                lock(&self.dictionaries).add(id, bytes.into());
            }
            Ok(Err(_)) => tracing::warn!("A compression dictionary id out of range; not used."),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot store the compression dictionary; payloads are compressed without it.")
            }
        }
    }

    /// Runs `f` with the writing session's runtime and client.
    pub(super) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime, &mut Client) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run(&self.writer, f)
    }

    /// Runs `f` with the leasing session's runtime and client: a cluster worker's renewals
    /// never queue behind its own commits (one waiting on another worker's lock would
    /// otherwise let its leases lapse).
    pub(super) fn lease_session<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime, &mut Client) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run(&self.leaser, f)
    }

    /// Runs `f` with the reading session's runtime and client.
    pub(super) fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime, &mut Client) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run(&self.reader, f)
    }

    fn run<T: Send + 'static>(
        &self,
        session: &super::conn::Connection,
        f: impl FnOnce(&Runtime, &mut Client) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, StoreError> {
        run_on(session, &self.location, f)
    }

    /// Reads versions with `sql` (selecting `seq, event_id, stream, change, changes,
    /// normalized, raw, origin`) over `args`.
    fn read_versions(
        &self,
        sql: &'static str,
        args: Vec<Param>,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        let d = self.dictionaries.clone();
        let location = self.location.clone();
        self.read(move |rt, client| {
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                args.iter().map(Param::as_sql).collect();
            let rows = rt.block_on(client.query(sql, &params))?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(rt.block_on(stored_version(&d, &location, &row, client))?);
            }
            Ok(out)
        })
    }
}

/// An owned statement parameter (jobs outlive their callers' borrows).
#[derive(Debug, Clone)]
enum Param {
    Text(String),
    Int(i64),
}

impl Param {
    fn as_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Param::Text(t) => t,
            Param::Int(i) => i,
        }
    }
}

/// One `versions` row as a [`StoredVersion`].
async fn stored_version(
    d: &Shared,
    location: &str,
    row: &tokio_postgres::Row,
    client: &Client,
) -> Result<StoredVersion, Fail> {
    let seq: i64 = row.try_get(0)?;
    let corrupt = |message: String| {
        Fail::Store(StoreError::Corrupt {
            path: location.into(),
            what: format!("seq {seq}"),
            message,
        })
    };
    let stream: String = row.try_get(2)?;
    let stream =
        StreamKind::parse(&stream).ok_or_else(|| corrupt(format!("unknown stream {stream:?}")))?;
    let change: String = row.try_get(3)?;
    let changes: String = row.try_get(4)?;
    let normalized: Vec<u8> = row.try_get(5)?;
    let raw: Option<Vec<u8>> = row.try_get(6)?;
    let normalized = decode(d, &normalized, client)
        .await
        .map_err(|e| corrupt(format!("normalized JSON: {e}")))?;
    let raw = match raw {
        Some(raw) => decode(d, &raw, client)
            .await
            .map_err(|e| corrupt(format!("raw JSON: {e}")))?,
        None => String::new(),
    };
    Ok(StoredVersion {
        seq,
        event_id: row.try_get(1)?,
        stream,
        change: ChangeKind::parse(&change)
            .ok_or_else(|| corrupt(format!("unknown change kind {change:?}")))?,
        changes: serde_json::from_str(&changes).map_err(|e| corrupt(e.to_string()))?,
        record: Record::from_json(stream, &normalized).map_err(|e| corrupt(e.to_string()))?,
        raw,
        tenant_name: None,
        replay: false,
        origin_action: row.try_get(7)?,
    })
}

/// One request's writes inside `tx` (the commit lock held).
async fn apply(
    d: &Shared,
    location: &str,
    tx: &Transaction<'_>,
    req: &Prepared,
    origin: Option<&str>,
) -> Result<CommitStats, Fail> {
    let now = Timestamp::now().to_string();
    let tenant = req.tenant.as_str();
    if let Some(f) = &req.fence {
        // The lease row locked for this transaction: a takeover waits for it to end, and a
        // lease that moved on (or expired) refuses the whole commit.
        let ours = tx
            .query_opt(
                "SELECT 1 FROM leases WHERE tenant_id = $1 AND stream = $2 AND worker = $3
                   AND generation = $4 AND expires_at > now() FOR SHARE",
                &[&tenant, &f.stream.as_str(), &f.worker, &f.generation],
            )
            .await?;
        if ours.is_none() {
            return Err(Fail::Store(StoreError::Fenced {
                location: location.to_owned(),
                tenant: tenant.to_owned(),
                stream: f.stream.as_str().to_owned(),
                generation: f.generation,
            }));
        }
    }
    for p in &req.poison {
        let hash = format!("{:x}", crate::fxhash(p.raw.as_bytes()));
        tx.execute(
            "INSERT INTO poison (tenant_id, raw_hash, incident_id, reason, raw, first_seen, last_seen, times_seen, stream)
             VALUES ($1, $2, $3, $4, $5, $6, $6, 1, $7)
             ON CONFLICT (tenant_id, raw_hash) DO UPDATE SET
                last_seen = EXCLUDED.last_seen, times_seen = poison.times_seen + 1",
            &[&tenant, &hash, &p.item_id, &p.reason, &p.raw, &now, &p.stream.as_str()],
        )
        .await?;
    }
    let stats = if needs_each(&req.rows) {
        rows_each(d, location, tx, req, origin, &now).await?
    } else {
        rows_batched(d, location, tx, req, origin, &now).await?
    };
    if let Some((stream, high_water)) = req.cursor {
        tx.execute(
            "INSERT INTO cursors (tenant_id, stream, high_water, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, stream) DO UPDATE SET
                high_water = GREATEST(cursors.high_water, EXCLUDED.high_water),
                updated_at = EXCLUDED.updated_at",
            &[&tenant, &stream.as_str(), &high_water.to_string(), &now],
        )
        .await?;
    }
    Ok(stats)
}

/// Commits `requests` in one transaction under the commit lock.
fn commit_together(
    store: &PgStore,
    requests: Vec<Prepared>,
) -> Result<Vec<CommitStats>, StoreError> {
    let d = store.dictionaries.clone();
    let location = store.location.clone();
    store.write(move |rt, client| {
        rt.block_on(async {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COMMIT_LOCK])
                .await?;
            let mut stats = Vec::with_capacity(requests.len());
            for r in &requests {
                stats.push(apply(&d, &location, &tx, r, None).await?);
            }
            tx.commit().await?;
            Ok(stats)
        })
    })
}

/// Parses a stored time, naming the row when it does not parse.
fn time(text: &str, location: &str, what: &str) -> Result<Timestamp, Fail> {
    text.parse().map_err(|e| {
        Fail::Store(StoreError::Corrupt {
            path: location.into(),
            what: what.to_owned(),
            message: format!("{e}"),
        })
    })
}

fn opt_time(text: Option<String>) -> Option<Timestamp> {
    text.and_then(|t| t.parse().ok())
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Runs `f` on `session`'s thread with its runtime and client; an error names the store at
/// `location`.
pub(super) fn run_on<T: Send + 'static>(
    session: &super::conn::Connection,
    location: &str,
    f: impl FnOnce(&Runtime, &mut Client) -> Result<T, Fail> + Send + 'static,
) -> Result<T, StoreError> {
    let job = move |s: &mut Session| {
        let (rt, client) = s.client()?;
        let result = f(rt, client);
        if result.is_err() {
            // A transaction the job dropped on its error sends its ROLLBACK only when the
            // connection next runs, and the session's runtime runs only inside a job: until
            // then the server would hold the transaction's locks (the commit lock among
            // them) and stall every other worker. End it now (a no-op if it ended).
            let _ = rt.block_on(client.batch_execute("ROLLBACK"));
        }
        result
    };
    match session.call(job) {
        Some(Ok(v)) => Ok(v),
        Some(Err(Fail::Pg(e))) => Err(StoreError::Postgres {
            location: location.to_owned(),
            message: describe(&e),
        }),
        Some(Err(Fail::Store(e))) => Err(e),
        None => Err(StoreError::WriterStopped(format!(
            "store {location}: the database session's thread stopped"
        ))),
    }
}

impl Store for PgStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn export_versions(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<crate::copy::ExportedVersion>, StoreError> {
        self.export_versions_pg(after, limit)
    }

    fn import_versions(&self, rows: &[crate::copy::ExportedVersion]) -> Result<(), StoreError> {
        self.import_versions_pg(rows)
    }

    fn export_tables(&self) -> Result<Vec<crate::copy::ExportedTable>, StoreError> {
        self.export_tables_pg()
    }

    fn import_tables(&self, tables: &[crate::copy::ExportedTable]) -> Result<(), StoreError> {
        self.import_tables_pg(tables)
    }

    fn cluster(&self) -> Option<&dyn crate::Cluster> {
        Some(self)
    }

    fn ledger(&self, process: &str) -> Option<Box<dyn crate::Ledger>> {
        Some(Box::new(super::ledger::PgLedger::new(
            self.ledger.clone(),
            process,
            &self.location,
        )))
    }

    fn cursor(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<Timestamp>, StoreError> {
        let (t, s) = (tenant.as_str().to_owned(), stream.as_str());
        let location = self.location.clone();
        self.read(move |rt, c| {
            let row = rt.block_on(c.query_opt(
                "SELECT high_water FROM cursors WHERE tenant_id = $1 AND stream = $2",
                &[&t, &s],
            ))?;
            row.map(|r| {
                let text: String = r.try_get(0)?;
                time(&text, &location, &format!("cursor {t}/{s}"))
            })
            .transpose()
        })
    }

    fn commit(
        &self,
        tenant: &TenantId,
        versions: &[NewVersion],
        cursor: Option<(StreamKind, Timestamp)>,
    ) -> Result<CommitStats, StoreError> {
        self.train_dictionary();
        let prepared = self.prepare(tenant, versions, None, &[], cursor);
        commit_together(self, vec![prepared])?
            .pop()
            .ok_or_else(|| StoreError::WriterStopped("a commit returned no result".into()))
    }

    fn commit_group(&self, group: &[CommitRequest]) -> Vec<Result<CommitStats, StoreError>> {
        self.commit_group_encoded(group, &[])
    }

    fn encode(&self, versions: &[NewVersion]) -> Encoded {
        let dictionary = lock(&self.dictionaries).current();
        Encoded {
            dictionary: dictionary.as_ref().map_or(0, Dictionary::id),
            items: versions
                .iter()
                .map(|v| self.encode_one(v, dictionary.as_ref()))
                .collect(),
        }
    }

    fn commit_group_encoded(
        &self,
        group: &[CommitRequest],
        encoded: &[Encoded],
    ) -> Vec<Result<CommitStats, StoreError>> {
        self.train_dictionary();
        let prepared: Vec<Prepared> = group
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut p =
                    self.prepare(&r.tenant, &r.versions, encoded.get(i), &r.poison, r.cursor);
                p.fence = r.fence.clone();
                p
            })
            .collect();
        match commit_together(self, prepared) {
            Ok(stats) => stats.into_iter().map(Ok).collect(),
            Err(e) if group.len() == 1 => vec![Err(e)],
            Err(e) => {
                tracing::warn!(error = %e, requests = group.len(), "A group commit failed; committing its requests one by one.");
                group
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let mut p = self.prepare(
                            &r.tenant,
                            &r.versions,
                            encoded.get(i),
                            &r.poison,
                            r.cursor,
                        );
                        p.fence = r.fence.clone();
                        commit_together(self, vec![p])?.pop().ok_or_else(|| {
                            StoreError::WriterStopped("a commit returned no result".into())
                        })
                    })
                    .collect()
            }
        }
    }

    fn record_poison(&self, tenant: &TenantId, items: &[PoisonRecord]) -> Result<(), StoreError> {
        let prepared = self.prepare(tenant, &[], None, items, None);
        commit_together(self, vec![prepared]).map(drop)
    }

    fn poison_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let t = tenant.as_str().to_owned();
        self.read(move |rt, c| {
            let n: i64 = rt
                .block_on(c.query_one("SELECT COUNT(*) FROM poison WHERE tenant_id = $1", &[&t]))?
                .try_get(0)?;
            Ok(count(n))
        })
    }

    fn count_after(&self, seq: i64) -> Result<u64, StoreError> {
        self.read(move |rt, c| {
            let n: i64 = rt
                .block_on(c.query_one("SELECT COUNT(*) FROM versions WHERE seq > $1", &[&seq]))?
                .try_get(0)?;
            Ok(count(n))
        })
    }

    fn seq_before_newest(&self, n: u64) -> Result<i64, StoreError> {
        let offset = i64::try_from(n).unwrap_or(i64::MAX);
        self.read(move |rt, c| {
            let row = rt.block_on(c.query_opt(
                "SELECT seq FROM versions ORDER BY seq DESC LIMIT 1 OFFSET $1",
                &[&offset],
            ))?;
            Ok(match row {
                Some(r) => r.try_get(0)?,
                None => 0,
            })
        })
    }

    fn versions_after(&self, after: i64, limit: usize) -> Result<Vec<StoredVersion>, StoreError> {
        self.read_versions(
            "SELECT seq, event_id, stream, change, changes, normalized, raw, origin FROM versions
             WHERE seq > $1 ORDER BY seq LIMIT $2",
            vec![
                Param::Int(after),
                Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )
    }

    fn versions_after_without_raw(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        self.read_versions(
            "SELECT seq, event_id, stream, change, changes, normalized, NULL::bytea, origin FROM versions
             WHERE seq > $1 ORDER BY seq LIMIT $2",
            vec![Param::Int(after), Param::Int(i64::try_from(limit).unwrap_or(i64::MAX))],
        )
    }

    fn last_seq(&self) -> Result<i64, StoreError> {
        self.read(move |rt, c| {
            Ok(rt
                .block_on(c.query_one("SELECT COALESCE(MAX(seq), 0)::bigint FROM versions", &[]))?
                .try_get(0)?)
        })
    }

    fn latest_since(&self, since: Timestamp) -> Result<Vec<StoredVersion>, StoreError> {
        self.read_versions(
            "SELECT v.seq, v.event_id, v.stream, v.change, v.changes, v.normalized, v.raw, v.origin
             FROM versions v
             WHERE v.stream = 'incidents' AND v.last_update >= $1
               AND v.last_update = (SELECT MAX(w.last_update) FROM versions w
                                    WHERE w.tenant_id = v.tenant_id AND w.stream = v.stream
                                      AND w.item_id = v.item_id)
             ORDER BY v.last_update DESC, v.seq DESC",
            vec![Param::Text(since.to_string())],
        )
    }

    fn version_keys(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Vec<(String, Timestamp)>, StoreError> {
        self.item_times(
            "SELECT item_id, last_update FROM versions WHERE tenant_id = $1 AND stream = $2
             ORDER BY item_id, last_update",
            tenant,
            stream,
            None,
        )
    }

    fn sink_positions(&self) -> Result<Vec<(String, i64, String)>, StoreError> {
        self.read(move |rt, c| {
            let rows = rt.block_on(c.query(
                "SELECT sink, seq, updated_at FROM sink_positions ORDER BY sink",
                &[],
            ))?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
            }
            Ok(out)
        })
    }

    fn sink_position(&self, sink: &str) -> Result<i64, StoreError> {
        Ok(self.sink_state(sink)?.0)
    }

    fn set_sink_position(&self, sink: &str, seq: i64) -> Result<(), StoreError> {
        let fence = self.sink_fence(sink).transpose()?;
        let (sink, location) = (sink.to_owned(), self.location.clone());
        self.write(move |rt, c| {
            rt.block_on(async {
                let tx = c.transaction().await?;
                if let Some(f) = &fence {
                    super::lease::fence_sink(&tx, &location, &sink, f).await?;
                }
                tx.execute(
                    "INSERT INTO sink_positions (sink, seq, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (sink) DO UPDATE SET seq = GREATEST(sink_positions.seq, EXCLUDED.seq),
                         updated_at = EXCLUDED.updated_at",
                    &[&sink, &seq, &Timestamp::now().to_string()],
                )
                .await?;
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn sink_state(&self, sink: &str) -> Result<(i64, Option<String>), StoreError> {
        let sink = sink.to_owned();
        self.read(move |rt, c| {
            let row = rt.block_on(c.query_opt(
                "SELECT seq, state FROM sink_positions WHERE sink = $1",
                &[&sink],
            ))?;
            Ok(match row {
                Some(r) => (r.try_get(0)?, r.try_get(1)?),
                None => (0, None),
            })
        })
    }

    fn set_sink_state(&self, sink: &str, seq: i64, state: Option<&str>) -> Result<(), StoreError> {
        let fence = self.sink_fence(sink).transpose()?;
        let (sink, state) = (sink.to_owned(), state.map(str::to_owned));
        let location = self.location.clone();
        self.write(move |rt, c| {
            rt.block_on(async {
                let tx = c.transaction().await?;
                if let Some(f) = &fence {
                    super::lease::fence_sink(&tx, &location, &sink, f).await?;
                }
                tx.execute(
                    "INSERT INTO sink_positions (sink, seq, updated_at, state) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (sink) DO UPDATE SET seq = GREATEST(sink_positions.seq, EXCLUDED.seq),
                         updated_at = EXCLUDED.updated_at, state = EXCLUDED.state",
                    &[&sink, &seq, &Timestamp::now().to_string(), &state],
                )
                .await?;
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn record_sink_outcome(
        &self,
        sink: &str,
        outcome: Result<u64, &str>,
    ) -> Result<(), StoreError> {
        let sink = sink.to_owned();
        let (moved, error) = match outcome {
            Ok(n) => (n > 0, None),
            Err(e) => (false, Some(e.to_owned())),
        };
        self.write(move |rt, c| {
            rt.block_on(c.execute(
                "INSERT INTO sink_health (sink, last_delivery, last_error, last_error_at, failures)
                 VALUES ($1, CASE WHEN $2::boolean THEN $3::text END, $4::text,
                         CASE WHEN $4::text IS NOT NULL THEN $3::text END,
                         CASE WHEN $4::text IS NOT NULL THEN 1 ELSE 0 END)
                 ON CONFLICT (sink) DO UPDATE SET
                    last_delivery = COALESCE(EXCLUDED.last_delivery, sink_health.last_delivery),
                    last_error = EXCLUDED.last_error,
                    last_error_at = EXCLUDED.last_error_at,
                    failures = CASE WHEN EXCLUDED.last_error IS NOT NULL
                                    THEN sink_health.failures + 1 ELSE 0 END",
                &[&sink, &moved, &Timestamp::now().to_string(), &error],
            ))?;
            Ok(())
        })
    }

    fn sink_health(&self, sink: &str) -> Result<SinkHealth, StoreError> {
        let sink = sink.to_owned();
        self.read(move |rt, c| {
            rt.block_on(async {
                let (position, updated_at): (i64, Option<String>) = match c
                    .query_opt("SELECT seq, updated_at FROM sink_positions WHERE sink = $1", &[&sink])
                    .await?
                {
                    Some(r) => (r.try_get(0)?, r.try_get(1)?),
                    None => (0, None),
                };
                let health = c
                    .query_opt(
                        "SELECT last_delivery, last_error, last_error_at, failures FROM sink_health WHERE sink = $1",
                        &[&sink],
                    )
                    .await?;
                let (last_delivery, last_error, last_error_at, failures) = match health {
                    Some(r) => (
                        r.try_get::<_, Option<String>>(0)?,
                        r.try_get::<_, Option<String>>(1)?,
                        r.try_get::<_, Option<String>>(2)?,
                        r.try_get::<_, i64>(3)?,
                    ),
                    None => (None, None, None, 0),
                };
                let backlog = c
                    .query_one(
                        "SELECT COUNT(*), (SELECT fetched_at FROM versions WHERE seq > $1 ORDER BY seq LIMIT 1)
                         FROM versions WHERE seq > $1",
                        &[&position],
                    )
                    .await?;
                Ok(SinkHealth {
                    sink: sink.clone(),
                    position,
                    updated_at: opt_time(updated_at),
                    last_delivery: opt_time(last_delivery),
                    last_error,
                    last_error_at: opt_time(last_error_at),
                    failures: u32::try_from(failures).unwrap_or(u32::MAX),
                    backlog: count(backlog.try_get(0)?),
                    oldest_undelivered: opt_time(backlog.try_get(1)?),
                })
            })
        })
    }

    fn forget_sink(&self, sink: &str) -> Result<(), StoreError> {
        let sink = sink.to_owned();
        self.write(move |rt, c| {
            rt.block_on(async {
                let tx = c.transaction().await?;
                tx.execute("DELETE FROM sink_positions WHERE sink = $1", &[&sink])
                    .await?;
                tx.execute("DELETE FROM sink_health WHERE sink = $1", &[&sink])
                    .await?;
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn rename_sink(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.write(move |rt, c| {
            rt.block_on(async {
                let tx = c.transaction().await?;
                for table in ["sink_positions", "sink_health"] {
                    tx.execute(
                        &format!(
                            "UPDATE {table} SET sink = $2 WHERE sink = $1
                             AND NOT EXISTS (SELECT 1 FROM {table} WHERE sink = $2)"
                        ),
                        &[&from, &to],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn has_sink(&self, sink: &str) -> Result<bool, StoreError> {
        let sink = sink.to_owned();
        self.read(move |rt, c| {
            Ok(rt
                .block_on(c.query_one(
                    "SELECT EXISTS (SELECT 1 FROM sink_positions WHERE sink = $1)",
                    &[&sink],
                ))?
                .try_get(0)?)
        })
    }

    fn record_outcome(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
        o: &PullOutcome,
    ) -> Result<(), StoreError> {
        let (t, s, o) = (tenant.as_str().to_owned(), stream.as_str(), o.clone());
        self.write(move |rt, c| {
            let ok = o.error.is_none();
            rt.block_on(c.execute(
                "INSERT INTO stream_health (tenant_id, stream, tenant_name, last_attempt, last_success, degraded, failures, partial, covered_from)
                 VALUES ($1, $2, $3, $4::text, CASE WHEN $5::boolean THEN $4::text END, $6::text,
                         CASE WHEN $5::boolean THEN 0 ELSE 1 END, $7::text,
                         CASE WHEN $5::boolean THEN $8::text END)
                 ON CONFLICT (tenant_id, stream) DO UPDATE SET
                    tenant_name = EXCLUDED.tenant_name,
                    last_attempt = EXCLUDED.last_attempt,
                    last_success = COALESCE(EXCLUDED.last_success, stream_health.last_success),
                    degraded = EXCLUDED.degraded,
                    failures = CASE WHEN $5::boolean THEN 0 ELSE stream_health.failures + 1 END,
                    partial = EXCLUDED.partial,
                    covered_from = CASE WHEN EXCLUDED.covered_from IS NULL THEN stream_health.covered_from
                                        WHEN stream_health.covered_from IS NULL THEN EXCLUDED.covered_from
                                        ELSE LEAST(stream_health.covered_from, EXCLUDED.covered_from) END",
                &[
                    &t,
                    &s,
                    &o.tenant_name,
                    &Timestamp::now().to_string(),
                    &ok,
                    &o.error,
                    &o.partial,
                    &o.since.map(|t| t.to_string()),
                ],
            ))?;
            Ok(())
        })
    }

    fn health(&self) -> Result<Vec<StreamHealth>, StoreError> {
        self.read(move |rt, c| {
            let rows = rt.block_on(c.query(
                "SELECT h.tenant_id, h.stream, h.tenant_name, h.last_attempt, h.last_success, h.degraded, h.failures, h.partial, h.covered_from,
                        c.high_water,
                        (SELECT COUNT(*) FROM versions v WHERE v.tenant_id = h.tenant_id AND v.stream = h.stream),
                        (SELECT COUNT(DISTINCT item_id) FROM versions v WHERE v.tenant_id = h.tenant_id AND v.stream = h.stream),
                        (SELECT COUNT(*) FROM poison p WHERE p.tenant_id = h.tenant_id AND p.stream = h.stream)
                 FROM stream_health h LEFT JOIN cursors c ON c.tenant_id = h.tenant_id AND c.stream = h.stream
                 ORDER BY h.tenant_name, h.stream",
                &[],
            ))?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let ts = |i: usize| -> Result<Option<Timestamp>, tokio_postgres::Error> {
                    Ok(opt_time(r.try_get::<_, Option<String>>(i)?))
                };
                out.push(StreamHealth {
                    tenant_id: TenantId::canonical(&r.try_get::<_, String>(0)?),
                    stream: r.try_get(1)?,
                    tenant_name: r.try_get(2)?,
                    last_attempt: ts(3)?.unwrap_or_else(Timestamp::now),
                    last_success: ts(4)?,
                    degraded: r.try_get(5)?,
                    failures: u32::try_from(r.try_get::<_, i64>(6)?).unwrap_or(u32::MAX),
                    partial: r.try_get(7)?,
                    covered_from: ts(8)?,
                    cursor: ts(9)?,
                    versions: count(r.try_get(10)?),
                    items: count(r.try_get(11)?),
                    poison: count(r.try_get(12)?),
                });
            }
            Ok(out)
        })
    }

    fn latest_since_by_id(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
        since: Timestamp,
    ) -> Result<std::collections::BTreeMap<String, Timestamp>, StoreError> {
        let rows = self.item_times(
            "SELECT item_id, MAX(last_update) FROM versions WHERE tenant_id = $1 AND stream = $2
             GROUP BY item_id HAVING MAX(last_update) >= $3",
            tenant,
            stream,
            Some(since),
        )?;
        Ok(rows.into_iter().collect())
    }

    fn covered_from(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.health_time(
            tenant,
            stream,
            "SELECT covered_from FROM stream_health WHERE tenant_id = $1 AND stream = $2",
        )
    }

    fn last_success(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.health_time(
            tenant,
            stream,
            "SELECT last_success FROM stream_health WHERE tenant_id = $1 AND stream = $2",
        )
    }

    fn record_action(
        &self,
        action: &ActionRecord,
        produced: Option<&NewVersion>,
    ) -> Result<(), StoreError> {
        self.record_actions(&[(action.clone(), produced.cloned())])
    }

    fn record_actions(
        &self,
        items: &[(ActionRecord, Option<NewVersion>)],
    ) -> Result<(), StoreError> {
        self.train_dictionary();
        let items: Vec<(ActionRecord, Option<Prepared>)> = items
            .iter()
            .map(|(a, v)| {
                let p = v
                    .as_ref()
                    .map(|v| self.prepare(&a.tenant_id, std::slice::from_ref(v), None, &[], None));
                (a.clone(), p)
            })
            .collect();
        let d = self.dictionaries.clone();
        let location = self.location.clone();
        self.write(move |rt, c| {
            rt.block_on(async {
                let tx = c.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COMMIT_LOCK])
                    .await?;
                for (action, produced) in &items {
                    if let Some(p) = produced {
                        // The version this write produced, marked with its origin.
                        apply(&d, &location, &tx, p, Some(&action.id)).await?;
                        for row in &p.rows {
                            let r = &row.record;
                            tx.execute(
                                "UPDATE versions SET origin = $1
                                 WHERE tenant_id = $2 AND stream = $3 AND item_id = $4 AND last_update = $5",
                                &[
                                    &action.id,
                                    &r.tenant().as_str(),
                                    &r.stream().as_str(),
                                    &r.item_id(),
                                    &r.last_update().to_string(),
                                ],
                            )
                            .await?;
                        }
                    }
                    tx.execute(
                        "INSERT INTO actions (id, created_at, actor, tenant_id, tenant_name, target, item_id, request, outcome, answer, produced)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                        &[
                            &action.id,
                            &action.created_at.to_string(),
                            &action.actor,
                            &action.tenant_id.as_str(),
                            &action.tenant_name,
                            &action.target,
                            &action.item_id,
                            &action.request,
                            &action.outcome.as_str(),
                            &action.answer,
                            &action.produced.map(|t| t.to_string()),
                        ],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn actions(&self, tenant: Option<&TenantId>) -> Result<Vec<ActionRecord>, StoreError> {
        let tenant = tenant.map(|t| t.as_str().to_owned());
        let location = self.location.clone();
        self.read(move |rt, c| {
            let rows = rt.block_on(c.query(
                "SELECT id, created_at, actor, tenant_id, tenant_name, target, item_id, request, outcome, answer, produced
                 FROM actions WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY created_at, ord",
                &[&tenant],
            ))?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let id: String = r.try_get(0)?;
                let what = format!("action {id}");
                let outcome: String = r.try_get(8)?;
                let produced: Option<String> = r.try_get(10)?;
                out.push(ActionRecord {
                    created_at: time(&r.try_get::<_, String>(1)?, &location, &what)?,
                    actor: r.try_get(2)?,
                    tenant_id: TenantId::new(r.try_get::<_, String>(3)?),
                    tenant_name: r.try_get(4)?,
                    target: r.try_get(5)?,
                    item_id: r.try_get(6)?,
                    request: r.try_get(7)?,
                    outcome: ActionOutcome::parse(&outcome).ok_or_else(|| {
                        Fail::Store(StoreError::Corrupt {
                            path: location.as_str().into(),
                            what: what.clone(),
                            message: format!("unknown outcome {outcome:?}"),
                        })
                    })?,
                    answer: r.try_get(9)?,
                    produced: produced.map(|p| time(&p, &location, &what)).transpose()?,
                    id,
                });
            }
            Ok(out)
        })
    }

    fn latest_of(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
        item: &str,
    ) -> Result<Option<StoredVersion>, StoreError> {
        Ok(self
            .read_versions(
                "SELECT seq, event_id, stream, change, changes, normalized, raw, origin FROM versions
                 WHERE tenant_id = $1 AND stream = $2 AND item_id = $3
                 ORDER BY last_update DESC LIMIT 1",
                vec![
                    Param::Text(tenant.as_str().to_owned()),
                    Param::Text(stream.as_str().to_owned()),
                    Param::Text(item.to_owned()),
                ],
            )?
            .pop())
    }

    fn record_hunt_run(&self, run: &HuntRun) -> Result<(), StoreError> {
        let run = run.clone();
        self.write(move |rt, c| {
            rt.block_on(c.execute(
                "INSERT INTO hunt_runs (hunt, tenant_id, started_at, finished_at, rows, new_rows, truncated, error, last_success)
                 VALUES ($1, $2, $3, $4::text, $5, $6, $7, $8::text, CASE WHEN $8::text IS NULL THEN $4::text END)
                 ON CONFLICT (hunt, tenant_id) DO UPDATE SET
                    started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
                    rows = EXCLUDED.rows, new_rows = EXCLUDED.new_rows,
                    truncated = EXCLUDED.truncated, error = EXCLUDED.error,
                    last_success = COALESCE(EXCLUDED.last_success, hunt_runs.last_success)",
                &[
                    &run.hunt,
                    &run.tenant_id.as_str(),
                    &run.started_at.to_string(),
                    &run.finished_at.to_string(),
                    &i64::try_from(run.rows).unwrap_or(i64::MAX),
                    &i64::try_from(run.new_rows).unwrap_or(i64::MAX),
                    &i64::from(run.truncated),
                    &run.error,
                ],
            ))?;
            Ok(())
        })
    }

    fn hunt_runs(&self) -> Result<Vec<HuntRun>, StoreError> {
        let location = self.location.clone();
        self.read(move |rt, c| {
            let rows = rt.block_on(c.query(
                "SELECT hunt, tenant_id, started_at, finished_at, rows, new_rows, truncated, error, last_success
                 FROM hunt_runs ORDER BY hunt, tenant_id",
                &[],
            ))?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let success: Option<String> = r.try_get(8)?;
                out.push(HuntRun {
                    hunt: r.try_get(0)?,
                    tenant_id: TenantId::new(r.try_get::<_, String>(1)?),
                    started_at: time(&r.try_get::<_, String>(2)?, &location, "hunt_runs.started_at")?,
                    finished_at: time(&r.try_get::<_, String>(3)?, &location, "hunt_runs.finished_at")?,
                    rows: count(r.try_get(4)?),
                    new_rows: count(r.try_get(5)?),
                    truncated: r.try_get::<_, i64>(6)? != 0,
                    error: r.try_get(7)?,
                    last_success: success
                        .map(|t| time(&t, &location, "hunt_runs.last_success"))
                        .transpose()?,
                });
            }
            Ok(out)
        })
    }

    fn prune_step(
        &self,
        cutoff: Timestamp,
        from: i64,
        upto: i64,
        span: i64,
    ) -> Result<(u64, i64), StoreError> {
        let Some(end) = crate::retention::step_end(from, upto, span) else {
            return Ok((0, from));
        };
        let cutoff = cutoff.to_string();
        self.write(move |rt, c| {
            let deleted = rt.block_on(c.execute(
                "DELETE FROM versions WHERE seq IN (
                    SELECT v.seq FROM versions v
                    WHERE v.seq > $1 AND v.seq <= $2 AND v.last_update < $3
                      AND EXISTS (SELECT 1 FROM versions w
                                  WHERE w.tenant_id = v.tenant_id AND w.stream = v.stream
                                    AND w.item_id = v.item_id AND w.last_update > v.last_update))",
                &[&from, &end, &cutoff],
            ))?;
            Ok((deleted, end))
        })
    }

    fn vacuum_step(&self, _pages: u32) -> Result<u64, StoreError> {
        // PostgreSQL's autovacuum gives deleted rows' space back to the table on its own.
        Ok(0)
    }

    fn version_count(&self) -> Result<u64, StoreError> {
        self.read(move |rt, c| {
            let n: i64 = rt
                .block_on(c.query_one("SELECT COUNT(*) FROM versions", &[]))?
                .try_get(0)?;
            Ok(count(n))
        })
    }

    fn checkpoint(&self) {
        // PostgreSQL checkpoints its WAL itself.
    }

    fn size_bytes(&self) -> u64 {
        let size = self.read(move |rt, c| {
            let n: i64 = rt
                .block_on(c.query_one(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = current_schema() AND c.relkind = 'r'",
                    &[],
                ))?
                .try_get(0)?;
            Ok(count(n))
        });
        size.unwrap_or(0)
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        PgStore::schema_version(self)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.write(move |rt, c| {
            rt.block_on(async {
                let tx = c.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COMMIT_LOCK])
                    .await?;
                tx.execute("SELECT 1 FROM versions LIMIT 0 FOR UPDATE", &[])
                    .await?;
                tx.rollback().await?;
                Ok(())
            })
        })
    }
}

impl PgStore {
    /// `(item id, time)` rows of `sql` over tenant, stream and, if given, a time.
    fn item_times(
        &self,
        sql: &'static str,
        tenant: &TenantId,
        stream: StreamKind,
        time_arg: Option<Timestamp>,
    ) -> Result<Vec<(String, Timestamp)>, StoreError> {
        let (t, s) = (tenant.as_str().to_owned(), stream.as_str().to_owned());
        let at = time_arg.map(|t| t.to_string());
        let location = self.location.clone();
        self.read(move |rt, c| {
            let rows = match &at {
                Some(at) => rt.block_on(c.query(sql, &[&t, &s, at]))?,
                None => rt.block_on(c.query(sql, &[&t, &s]))?,
            };
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let id: String = r.try_get(0)?;
                let when: String = r.try_get(1)?;
                let when = time(&when, &location, &format!("{s} {id}"))?;
                out.push((id, when));
            }
            Ok(out)
        })
    }

    /// One time column of `stream_health`, read by `sql`.
    fn health_time(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
        sql: &'static str,
    ) -> Result<Option<Timestamp>, StoreError> {
        let (t, s) = (tenant.as_str().to_owned(), stream.as_str());
        self.read(move |rt, c| {
            let row = rt.block_on(c.query_opt(sql, &[&t, &s]))?;
            Ok(match row {
                Some(r) => opt_time(r.try_get::<_, Option<String>>(0)?),
                None => None,
            })
        })
    }
}

/// Whether `rows` must be stored one by one: an item twice in one request (the later is
/// classified against the earlier, written in the same transaction) or a single-version
/// stream (a hunt row found again is the row already stored).
fn needs_each(rows: &[Row]) -> bool {
    let mut items = std::collections::HashSet::with_capacity(rows.len());
    rows.iter().any(|r| {
        r.record.stream().single_version() || !items.insert((r.record.stream(), r.record.item_id()))
    })
}

/// The previous version read back (`seq`, stored normalized payload) as a record.
async fn previous_record(
    d: &Shared,
    location: &str,
    tx: &Transaction<'_>,
    stream: StreamKind,
    seq: i64,
    stored: &[u8],
) -> Result<Record, Fail> {
    let json = decode(d, stored, tx).await;
    json.and_then(|j| Record::from_json(stream, &j).map_err(|e| e.to_string()))
        .map_err(|message| {
            Fail::Store(StoreError::Corrupt {
                path: location.into(),
                what: format!("seq {seq} (normalized)"),
                message,
            })
        })
}

/// A request's versions stored one statement at a time (see [`needs_each`]).
async fn rows_each(
    d: &Shared,
    location: &str,
    tx: &Transaction<'_>,
    req: &Prepared,
    origin: Option<&str>,
    now: &str,
) -> Result<CommitStats, Fail> {
    let tenant = req.tenant.as_str();
    let seen = tx
        .prepare(
            "SELECT 1 FROM versions WHERE tenant_id = $1 AND stream = $2 AND item_id = $3 LIMIT 1",
        )
        .await?;
    let previous = tx
        .prepare(
            "SELECT seq, normalized FROM versions
             WHERE tenant_id = $1 AND stream = $2 AND item_id = $3 AND last_update < $4
             ORDER BY last_update DESC LIMIT 1",
        )
        .await?;
    let insert = tx
        .prepare(
            // A version already stored (re-read through the overlap) is left alone.
            "INSERT INTO versions
             (tenant_id, stream, item_id, last_update, event_id, change, changes, api, normalized, raw, fetched_at, origin)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (tenant_id, stream, item_id, last_update) DO NOTHING",
        )
        .await?;
    let mut stats = CommitStats::default();
    for row in &req.rows {
        let r = &row.record;
        let stream = r.stream();
        let item = r.item_id();
        // An item of a single-version stream found again is the version already stored.
        if stream.single_version()
            && tx
                .query_opt(&seen, &[&tenant, &stream.as_str(), &item])
                .await?
                .is_some()
        {
            stats.unchanged += 1;
            continue;
        }
        let last_update = r.last_update().to_string();
        let prev = tx
            .query_opt(&previous, &[&tenant, &stream.as_str(), &item, &last_update])
            .await?;
        let prev = match prev {
            Some(p) => {
                let (seq, stored): (i64, Vec<u8>) = (p.try_get(0)?, p.try_get(1)?);
                Some(previous_record(d, location, tx, stream, seq, &stored).await?)
            }
            None => None,
        };
        let (kind, changes) = r.classify(prev.as_ref());
        let changes = serde_json::to_string(&changes).unwrap_or_default();
        let inserted = tx
            .execute(
                &insert,
                &[
                    &tenant,
                    &stream.as_str(),
                    &item,
                    &last_update,
                    &r.event_id().as_str(),
                    &kind.as_str(),
                    &changes,
                    &r.api(),
                    &row.normalized,
                    &row.raw,
                    &now,
                    &origin,
                ],
            )
            .await?;
        if inserted == 0 {
            stats.unchanged += 1;
            continue;
        }
        stats.count(kind);
    }
    Ok(stats)
}

/// A request's versions stored in three statements whatever their number: the previous
/// version of every item read in one query, every new version inserted in one (in order, so
/// `seq` follows the request's order), the inserted ones returned to count.
async fn rows_batched(
    d: &Shared,
    location: &str,
    tx: &Transaction<'_>,
    req: &Prepared,
    origin: Option<&str>,
    now: &str,
) -> Result<CommitStats, Fail> {
    let tenant = req.tenant.as_str();
    let n = req.rows.len();
    let mut streams = Vec::with_capacity(n);
    let mut items = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    for row in &req.rows {
        streams.push(row.record.stream().as_str());
        items.push(row.record.item_id());
        times.push(row.record.last_update().to_string());
    }
    let previous = tx
        .query(
            "SELECT x.i, v.seq, v.normalized
             FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS x(stream, item, lu, i)
             CROSS JOIN LATERAL (
                SELECT seq, normalized FROM versions
                WHERE tenant_id = $1 AND stream = x.stream AND item_id = x.item AND last_update < x.lu
                ORDER BY last_update DESC LIMIT 1) v",
            &[&tenant, &streams, &items, &times],
        )
        .await?;
    let mut prev: Vec<Option<Record>> = vec![None; n];
    for p in previous {
        let i: i64 = p.try_get(0)?;
        let seq: i64 = p.try_get(1)?;
        let stored: Vec<u8> = p.try_get(2)?;
        // `i` counts from 1 (WITH ORDINALITY).
        let at = usize::try_from(i - 1).ok();
        let (Some(slot), Some(row)) = (
            at.and_then(|i| prev.get_mut(i)),
            at.and_then(|i| req.rows.get(i)),
        ) else {
            continue;
        };
        *slot = Some(previous_record(d, location, tx, row.record.stream(), seq, &stored).await?);
    }
    let mut events = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut changes = Vec::with_capacity(n);
    let mut apis = Vec::with_capacity(n);
    let mut normalized = Vec::with_capacity(n);
    let mut raws = Vec::with_capacity(n);
    let mut classified = Vec::with_capacity(n);
    for (row, prev) in req.rows.iter().zip(&prev) {
        let r = &row.record;
        let (kind, change) = r.classify(prev.as_ref());
        events.push(r.event_id().as_str().to_owned());
        kinds.push(kind.as_str());
        changes.push(serde_json::to_string(&change).unwrap_or_default());
        apis.push(r.api());
        normalized.push(row.normalized.as_slice());
        raws.push(row.raw.as_slice());
        classified.push(kind);
    }
    let inserted = tx
        .query(
            "INSERT INTO versions
             (tenant_id, stream, item_id, last_update, event_id, change, changes, api, normalized, raw, fetched_at, origin)
             SELECT $1, x.stream, x.item, x.lu, x.event, x.change, x.changes, x.api, x.normalized, x.raw, $11, $12
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                         $9::bytea[], $10::bytea[])
                  WITH ORDINALITY AS x(stream, item, lu, event, change, changes, api, normalized, raw, i)
             ORDER BY x.i
             ON CONFLICT (tenant_id, stream, item_id, last_update) DO NOTHING
             RETURNING stream, item_id, last_update",
            &[
                &tenant, &streams, &items, &times, &events, &kinds, &changes, &apis, &normalized,
                &raws, &now, &origin,
            ],
        )
        .await?;
    let mut stored = std::collections::HashSet::with_capacity(inserted.len());
    for r in &inserted {
        stored.insert((
            r.try_get::<_, String>(0)?,
            r.try_get::<_, String>(1)?,
            r.try_get::<_, String>(2)?,
        ));
    }
    let mut stats = CommitStats::default();
    for (i, kind) in classified.into_iter().enumerate() {
        let key = (
            streams.get(i).copied().unwrap_or_default().to_owned(),
            items.get(i).cloned().unwrap_or_default(),
            times.get(i).cloned().unwrap_or_default(),
        );
        if stored.contains(&key) {
            stats.count(kind);
        } else {
            stats.unchanged += 1;
        }
    }
    Ok(stats)
}
