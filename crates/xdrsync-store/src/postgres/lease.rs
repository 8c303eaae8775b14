//! Leases of a cluster's workers on the PostgreSQL store (issue 18): no home-made consensus,
//! only rows, transactions and row locks.
//!
//! Each renewal, in one transaction, a worker records that it is alive, extends the leases it
//! still holds, gives back what exceeds a fair share of the live workers, and takes free or
//! expired leases up to that share with `FOR UPDATE SKIP LOCKED` (two workers never wait on or
//! take the same row). Taking a lease bumps its generation. Expiry is the server's clock. A
//! commit names its lease ([`crate::Fence`]) and checks it `FOR SHARE` in its own transaction,
//! so a takeover waits for a commit in flight and a paused worker's late commit is refused.

use std::time::Duration;

use xdrsync_model::{StreamKind, TenantId};

use super::PgStore;
use super::store::Fail;
use crate::StoreError;

/// A lease a worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The tenant.
    pub tenant: TenantId,
    /// The stream.
    pub stream: StreamKind,
    /// Its generation, for the fence of every commit made under it.
    pub generation: i64,
}

impl PgStore {
    /// One renewal of `worker`'s leases among `wanted` (every (tenant, stream) the cluster
    /// pulls; every worker passes the same), each lasting `lease` from now: the leases it holds
    /// afterwards. A worker whose lease expired before this renewal has lost it (another may
    /// hold it now, under a newer generation).
    pub fn renew_leases(
        &self,
        worker: &str,
        wanted: &[(TenantId, StreamKind)],
        lease: Duration,
    ) -> Result<Vec<Lease>, StoreError> {
        let worker = worker.to_owned();
        let tenants: Vec<String> = wanted.iter().map(|(t, _)| t.as_str().to_owned()).collect();
        let streams: Vec<&'static str> = wanted.iter().map(|(_, s)| s.as_str()).collect();
        let secs = lease.as_secs_f64().max(0.001);
        let total = i64::try_from(wanted.len()).unwrap_or(i64::MAX);
        let location = self.location.clone();
        self.write(move |rt, c| {
            rt.block_on(async {
                let tx = c.transaction().await?;
                tx.execute(
                    "INSERT INTO workers (worker, seen_at, alive_until)
                     VALUES ($1, now(), now() + make_interval(secs => $2))
                     ON CONFLICT (worker) DO UPDATE SET seen_at = now(), alive_until = EXCLUDED.alive_until",
                    &[&worker, &secs],
                )
                .await?;
                tx.execute(
                    "INSERT INTO leases (tenant_id, stream)
                     SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
                    &[&tenants, &streams],
                )
                .await?;
                let live: i64 = tx
                    .query_one(
                        "SELECT COUNT(*) FROM workers WHERE alive_until > now()",
                        &[],
                    )
                    .await?
                    .try_get(0)?;
                let share = (total + live.max(1) - 1) / live.max(1);
                // Extend what is still ours (an expired lease is lost, even if nobody took it).
                let renewed = tx
                    .query(
                        "UPDATE leases SET expires_at = now() + make_interval(secs => $2), renewed_at = now()
                         WHERE worker = $1 AND expires_at > now()
                           AND (tenant_id, stream) IN (SELECT * FROM unnest($3::text[], $4::text[]))
                         RETURNING tenant_id, stream, generation",
                        &[&worker, &secs, &tenants, &streams],
                    )
                    .await?;
                let mut held = rows(&renewed)?;
                let held_n = i64::try_from(held.len()).unwrap_or(i64::MAX);
                if held_n > share {
                    // Give back the extras (a new worker takes them at its next renewal).
                    held.sort();
                    let extra = held.split_off(usize::try_from(share).unwrap_or(0));
                    let (t, s): (Vec<String>, Vec<String>) =
                        extra.into_iter().map(|(t, s, _)| (t, s)).unzip();
                    tx.execute(
                        "UPDATE leases SET worker = NULL, expires_at = NULL
                         WHERE worker = $1 AND (tenant_id, stream) IN (SELECT * FROM unnest($2::text[], $3::text[]))",
                        &[&worker, &t, &s],
                    )
                    .await?;
                } else if held_n < share {
                    let taken = tx
                        .query(
                            "UPDATE leases SET worker = $1, generation = generation + 1,
                                 expires_at = now() + make_interval(secs => $2), renewed_at = now()
                             WHERE (tenant_id, stream) IN (
                                 SELECT l.tenant_id, l.stream FROM leases l
                                 JOIN unnest($3::text[], $4::text[]) AS w(t, s)
                                   ON l.tenant_id = w.t AND l.stream = w.s
                                 WHERE l.worker IS NULL OR l.expires_at IS NULL OR l.expires_at <= now()
                                 ORDER BY l.tenant_id, l.stream
                                 LIMIT $5
                                 FOR UPDATE OF l SKIP LOCKED)
                             RETURNING tenant_id, stream, generation",
                            &[&worker, &secs, &tenants, &streams, &(share - held_n)],
                        )
                        .await?;
                    held.extend(rows(&taken)?);
                }
                tx.commit().await?;
                let mut out = Vec::with_capacity(held.len());
                for (tenant, stream, generation) in held {
                    let stream = StreamKind::parse(&stream).ok_or_else(|| {
                        Fail::Store(StoreError::Corrupt {
                            path: location.as_str().into(),
                            what: "leases".into(),
                            message: format!("unknown stream {stream:?}"),
                        })
                    })?;
                    out.push(Lease {
                        tenant: TenantId::canonical(&tenant),
                        stream,
                        generation,
                    });
                }
                out.sort_by(|a, b| (a.tenant.as_str(), a.stream).cmp(&(b.tenant.as_str(), b.stream)));
                Ok(out)
            })
        })
    }

    /// Gives back every lease of `worker` and leaves the cluster (a clean exit): the others
    /// take its share at their next renewal instead of after the leases expire.
    pub fn release_leases(&self, worker: &str) -> Result<(), StoreError> {
        let worker = worker.to_owned();
        self.write(move |rt, c| {
            rt.block_on(async {
                let tx = c.transaction().await?;
                tx.execute(
                    "UPDATE leases SET worker = NULL, expires_at = NULL WHERE worker = $1",
                    &[&worker],
                )
                .await?;
                tx.execute("DELETE FROM workers WHERE worker = $1", &[&worker])
                    .await?;
                tx.commit().await?;
                Ok(())
            })
        })
    }
}

/// `(tenant, stream, generation)` of lease rows.
fn rows(rows: &[tokio_postgres::Row]) -> Result<Vec<(String, String, i64)>, Fail> {
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}
