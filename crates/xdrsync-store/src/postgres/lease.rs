//! Leases of a cluster's workers on the PostgreSQL store (issue 18): no home-made consensus,
//! only rows, transactions and row locks.
//!
//! Each renewal, in one transaction, a worker records that it is alive, extends the leases it
//! still holds, gives back what exceeds a fair share of the live workers, and takes free or
//! expired leases up to that share with `FOR UPDATE SKIP LOCKED` (two workers never wait on or
//! take the same row). Taking a lease bumps its generation. Expiry is the server's clock. A
//! commit names its lease ([`crate::Fence`]) and checks it `FOR SHARE` in its own transaction,
//! so a takeover waits for a commit in flight and a paused worker's late commit is refused.
//! Sinks are leased the same way, in a table of their own; once a store has renewed for a
//! worker, every sink position it writes is checked against the sink's lease
//! ([`fence_sink`]), so exactly one worker moves a sink at a time.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::Transaction;
use xdrsync_model::{StreamKind, TenantId};

use super::PgStore;
use super::store::Fail;
use crate::{Held, Lease, LeaseRow, SinkLease, StoreError, WorkerRow};

/// The worker a store renews for, and the sinks it holds by generation.
#[derive(Debug, Clone)]
pub(super) struct Member {
    worker: String,
    sinks: HashMap<String, i64>,
}

/// A stream lease taken in a renewal: `(tenant, stream, generation, previous holder)`.
type Taken = (String, String, i64, Option<String>);

impl PgStore {
    /// One renewal of `worker`'s stream leases among `wanted` (see [`crate::Cluster::renew`]):
    /// the leases it holds afterwards.
    pub fn renew_leases(
        &self,
        worker: &str,
        wanted: &[(TenantId, StreamKind)],
        lease: Duration,
    ) -> Result<Vec<Lease>, StoreError> {
        Ok(crate::Cluster::renew(self, worker, wanted, &[], lease)?.streams)
    }

    /// Gives back every lease of `worker` (see [`crate::Cluster::release`]).
    pub fn release_leases(&self, worker: &str) -> Result<(), StoreError> {
        crate::Cluster::release(self, worker)
    }

    /// The sink fence of the worker this store renews for: `None` when it is no cluster
    /// worker's; `Some(Err)` when the worker does not hold `sink`'s lease.
    pub(super) fn sink_fence(&self, sink: &str) -> Option<Result<(String, i64), StoreError>> {
        let member = self.member.lock().unwrap_or_else(|e| e.into_inner());
        let m = member.as_ref()?;
        Some(match m.sinks.get(sink) {
            Some(g) => Ok((m.worker.clone(), *g)),
            None => Err(StoreError::SinkFenced {
                location: self.location.clone(),
                sink: sink.to_owned(),
            }),
        })
    }
}

/// Checks, in the transaction that moves `sink`'s position, that `worker` still holds its
/// lease at `generation`; the row stays locked `FOR SHARE` until the transaction ends, so a
/// takeover waits for this write.
pub(super) async fn fence_sink(
    tx: &Transaction<'_>,
    location: &str,
    sink: &str,
    (worker, generation): &(String, i64),
) -> Result<(), Fail> {
    let ours = tx
        .query_opt(
            "SELECT 1 FROM sink_leases WHERE sink = $1 AND worker = $2 AND generation = $3
               AND expires_at > now() FOR SHARE",
            &[&sink, worker, generation],
        )
        .await?;
    match ours {
        Some(_) => Ok(()),
        None => Err(Fail::Store(StoreError::SinkFenced {
            location: location.to_owned(),
            sink: sink.to_owned(),
        })),
    }
}

impl crate::Cluster for PgStore {
    fn renew(
        &self,
        worker: &str,
        wanted: &[(TenantId, StreamKind)],
        sinks: &[String],
        lease: Duration,
    ) -> Result<Held, StoreError> {
        let worker = worker.to_owned();
        let tenants: Vec<String> = wanted.iter().map(|(t, _)| t.as_str().to_owned()).collect();
        let streams: Vec<&'static str> = wanted.iter().map(|(_, s)| s.as_str()).collect();
        let sinks = sinks.to_vec();
        let secs = lease.as_secs_f64().max(0.001);
        let location = self.location.clone();
        let me = worker.clone();
        let (held, held_sinks, taken_over, live) = self.lease_session(move |rt, c| {
            rt.block_on(async {
                let tx = c.transaction().await?;
                tx.execute(
                    "INSERT INTO workers (worker, seen_at, alive_until)
                     VALUES ($1, now(), now() + make_interval(secs => $2))
                     ON CONFLICT (worker) DO UPDATE SET seen_at = now(), alive_until = EXCLUDED.alive_until",
                    &[&worker, &secs],
                )
                .await?;
                let live: i64 = tx
                    .query_one("SELECT COUNT(*) FROM workers WHERE alive_until > now()", &[])
                    .await?
                    .try_get(0)?;
                let live = live.max(1);
                let (held, mut taken_over) =
                    renew_streams(&tx, &worker, secs, &tenants, &streams, live).await?;
                let (held_sinks, sinks_taken) = renew_sinks(&tx, &worker, secs, &sinks, live).await?;
                taken_over += sinks_taken;
                tx.commit().await?;
                Ok((held, held_sinks, taken_over, live))
            })
        })?;
        let mut out = Held {
            streams: Vec::with_capacity(held.len()),
            sinks: held_sinks
                .into_iter()
                .map(|(sink, generation)| SinkLease { sink, generation })
                .collect(),
            taken_over,
            live_workers: u64::try_from(live).unwrap_or(0),
        };
        for (tenant, stream, generation) in held {
            let stream = parse_stream(&location, &stream)?;
            out.streams.push(Lease {
                tenant: TenantId::canonical(&tenant),
                stream,
                generation,
            });
        }
        out.streams
            .sort_by(|a, b| (a.tenant.as_str(), a.stream).cmp(&(b.tenant.as_str(), b.stream)));
        out.sinks.sort_by(|a, b| a.sink.cmp(&b.sink));
        *self.member.lock().unwrap_or_else(|e| e.into_inner()) = Some(Member {
            worker: me,
            sinks: out
                .sinks
                .iter()
                .map(|s| (s.sink.clone(), s.generation))
                .collect(),
        });
        Ok(out)
    }

    fn release(&self, worker: &str) -> Result<(), StoreError> {
        let worker = worker.to_owned();
        self.lease_session(move |rt, c| {
            rt.block_on(async {
                let tx = c.transaction().await?;
                for sql in [
                    "UPDATE leases SET worker = NULL, expires_at = NULL WHERE worker = $1",
                    "UPDATE sink_leases SET worker = NULL, expires_at = NULL WHERE worker = $1",
                    "DELETE FROM workers WHERE worker = $1",
                ] {
                    tx.execute(sql, &[&worker]).await?;
                }
                tx.commit().await?;
                Ok(())
            })
        })?;
        if let Some(m) = self
            .member
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            m.sinks.clear();
        }
        Ok(())
    }

    fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        let location = self.location.clone();
        let rows = self.read(move |rt, c| {
            rt.block_on(async {
                let streams = c
                    .query(
                        "SELECT tenant_id, stream, worker, generation,
                                to_char(renewed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                                COALESCE(expires_at <= now(), true)
                         FROM leases ORDER BY tenant_id, stream",
                        &[],
                    )
                    .await?;
                let sinks = c
                    .query(
                        "SELECT sink, worker, generation,
                                to_char(renewed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                                COALESCE(expires_at <= now(), true)
                         FROM sink_leases ORDER BY sink",
                        &[],
                    )
                    .await?;
                let mut out = Vec::with_capacity(streams.len() + sinks.len());
                for r in &streams {
                    let (tenant, stream): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                    out.push((Some((tenant, stream)), None, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?));
                }
                for r in &sinks {
                    out.push((None, Some(r.try_get::<_, String>(0)?), r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?));
                }
                Ok(out)
            })
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (pair, sink, worker, generation, renewed_at, expired) in rows {
            let (what, tenant, stream) = match (pair, sink) {
                (Some((t, s)), _) => {
                    let stream = parse_stream(&location, &s)?;
                    (
                        format!("{t}/{s}"),
                        Some(TenantId::canonical(&t)),
                        Some(stream),
                    )
                }
                (None, Some(sink)) => (format!("sink:{sink}"), None, None),
                (None, None) => continue,
            };
            let worker: Option<String> = worker;
            out.push(LeaseRow {
                what,
                tenant,
                stream,
                expired: expired || worker.is_none(),
                worker,
                generation,
                renewed_at,
            });
        }
        Ok(out)
    }

    fn workers(&self) -> Result<Vec<WorkerRow>, StoreError> {
        self.read(move |rt, c| {
            rt.block_on(async {
                let rows = c
                    .query(
                        "SELECT worker, to_char(seen_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                                alive_until > now()
                         FROM workers ORDER BY worker",
                        &[],
                    )
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(WorkerRow {
                            worker: r.try_get(0)?,
                            seen_at: r.try_get(1)?,
                            alive: r.try_get(2)?,
                        })
                    })
                    .collect()
            })
        })
    }
}

/// The stream part of a renewal: extend what is still ours (an expired lease is lost, even if
/// nobody took it), give back what exceeds the fair share, take free or expired ones up to it.
async fn renew_streams(
    tx: &Transaction<'_>,
    worker: &str,
    secs: f64,
    tenants: &[String],
    streams: &[&'static str],
    live: i64,
) -> Result<(Vec<(String, String, i64)>, u64), Fail> {
    let total = i64::try_from(tenants.len()).unwrap_or(i64::MAX);
    let share = (total + live - 1) / live;
    tx.execute(
        "INSERT INTO leases (tenant_id, stream)
         SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
        &[&tenants, &streams],
    )
    .await?;
    let renewed = tx
        .query(
            "UPDATE leases SET expires_at = now() + make_interval(secs => $2), renewed_at = now()
             WHERE worker = $1 AND expires_at > now()
               AND (tenant_id, stream) IN (SELECT * FROM unnest($3::text[], $4::text[]))
             RETURNING tenant_id, stream, generation",
            &[&worker, &secs, &tenants, &streams],
        )
        .await?;
    let mut held: Vec<(String, String, i64)> = renewed
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<_, Fail>>()?;
    let held_n = i64::try_from(held.len()).unwrap_or(i64::MAX);
    let mut taken_over = 0;
    if held_n > share {
        // Give back the extras (a new worker takes them at its next renewal).
        held.sort();
        let extra = held.split_off(usize::try_from(share).unwrap_or(0));
        let (t, s): (Vec<String>, Vec<String>) = extra.into_iter().map(|(t, s, _)| (t, s)).unzip();
        tx.execute(
            "UPDATE leases SET worker = NULL, expires_at = NULL
             WHERE worker = $1 AND (tenant_id, stream) IN (SELECT * FROM unnest($2::text[], $3::text[]))",
            &[&worker, &t, &s],
        )
        .await?;
    } else if held_n < share {
        let taken = tx
            .query(
                "WITH free AS (
                     SELECT l.tenant_id, l.stream, l.worker AS prev FROM leases l
                     JOIN unnest($3::text[], $4::text[]) AS w(t, s)
                       ON l.tenant_id = w.t AND l.stream = w.s
                     WHERE l.worker IS NULL OR l.expires_at IS NULL OR l.expires_at <= now()
                     ORDER BY l.tenant_id, l.stream
                     LIMIT $5
                     FOR UPDATE OF l SKIP LOCKED)
                 UPDATE leases SET worker = $1, generation = leases.generation + 1,
                     expires_at = now() + make_interval(secs => $2), renewed_at = now()
                 FROM free WHERE leases.tenant_id = free.tenant_id AND leases.stream = free.stream
                 RETURNING leases.tenant_id, leases.stream, leases.generation, free.prev",
                &[&worker, &secs, &tenants, &streams, &(share - held_n)],
            )
            .await?;
        for r in &taken {
            let t: Taken = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            if t.3.as_deref().is_some_and(|p| p != worker) {
                taken_over += 1;
            }
            held.push((t.0, t.1, t.2));
        }
    }
    Ok((held, taken_over))
}

/// The sink part of a renewal, by the same rules as [`renew_streams`].
async fn renew_sinks(
    tx: &Transaction<'_>,
    worker: &str,
    secs: f64,
    sinks: &[String],
    live: i64,
) -> Result<(Vec<(String, i64)>, u64), Fail> {
    if sinks.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let total = i64::try_from(sinks.len()).unwrap_or(i64::MAX);
    let share = (total + live - 1) / live;
    tx.execute(
        "INSERT INTO sink_leases (sink) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
        &[&sinks],
    )
    .await?;
    let renewed = tx
        .query(
            "UPDATE sink_leases SET expires_at = now() + make_interval(secs => $2), renewed_at = now()
             WHERE worker = $1 AND expires_at > now() AND sink = ANY($3)
             RETURNING sink, generation",
            &[&worker, &secs, &sinks],
        )
        .await?;
    let mut held: Vec<(String, i64)> = renewed
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, Fail>>()?;
    let held_n = i64::try_from(held.len()).unwrap_or(i64::MAX);
    let mut taken_over = 0;
    if held_n > share {
        held.sort();
        let extra: Vec<String> = held
            .split_off(usize::try_from(share).unwrap_or(0))
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        tx.execute(
            "UPDATE sink_leases SET worker = NULL, expires_at = NULL WHERE worker = $1 AND sink = ANY($2)",
            &[&worker, &extra],
        )
        .await?;
    } else if held_n < share {
        let taken = tx
            .query(
                "WITH free AS (
                     SELECT sink, worker AS prev FROM sink_leases
                     WHERE sink = ANY($3) AND (worker IS NULL OR expires_at IS NULL OR expires_at <= now())
                     ORDER BY sink LIMIT $4
                     FOR UPDATE SKIP LOCKED)
                 UPDATE sink_leases SET worker = $1, generation = sink_leases.generation + 1,
                     expires_at = now() + make_interval(secs => $2), renewed_at = now()
                 FROM free WHERE sink_leases.sink = free.sink
                 RETURNING sink_leases.sink, sink_leases.generation, free.prev",
                &[&worker, &secs, &sinks, &(share - held_n)],
            )
            .await?;
        for r in &taken {
            let prev: Option<String> = r.try_get(2)?;
            if prev.as_deref().is_some_and(|p| p != worker) {
                taken_over += 1;
            }
            held.push((r.try_get(0)?, r.try_get(1)?));
        }
    }
    Ok((held, taken_over))
}

fn parse_stream(location: &str, stream: &str) -> Result<StreamKind, StoreError> {
    StreamKind::parse(stream).ok_or_else(|| StoreError::Corrupt {
        path: location.into(),
        what: "leases".into(),
        message: format!("unknown stream {stream:?}"),
    })
}
