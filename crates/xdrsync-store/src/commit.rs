//! Writing a pull: versions, cursors and poison records, group-committed.

use rusqlite::{Connection, OptionalExtension, params};
use xdrsync_model::{Record, StreamKind, TenantId, Timestamp};

use crate::payload::Dictionary;
use crate::{
    CommitRequest, CommitStats, Encoded, EncodedVersion, NewVersion, PoisonRecord, SqliteStore,
    StoreError, fxhash, write_transaction,
};

impl SqliteStore {
    pub(crate) fn cursor(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
    ) -> Result<Option<Timestamp>, StoreError> {
        let text: Option<String> = self
            .read_conn()
            .query_row(
                "SELECT high_water FROM cursors WHERE tenant_id = ?1 AND stream = ?2",
                params![tenant.as_str(), stream.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        text.map(|t| {
            t.parse().map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("cursor {tenant}/{}", stream.as_str()),
                message: format!("{e}"),
            })
        })
        .transpose()
    }

    pub(crate) fn commit(
        &self,
        tenant: &TenantId,
        versions: &[NewVersion],
        cursor: Option<(StreamKind, Timestamp)>,
    ) -> Result<CommitStats, StoreError> {
        let none = Encoded::default();
        self.commit_alone(&mut self.conn(), tenant, versions, &none, &[], cursor)
    }

    /// One request's writes in a transaction of their own.
    fn commit_alone(
        &self,
        conn: &mut Connection,
        tenant: &TenantId,
        versions: &[NewVersion],
        encoded: &Encoded,
        poison: &[PoisonRecord],
        cursor: Option<(StreamKind, Timestamp)>,
    ) -> Result<CommitStats, StoreError> {
        self.train_dictionary(conn);
        let tx = write_transaction(conn).map_err(self.err())?;
        let stats = self.apply(&tx, tenant, versions, encoded, poison, cursor)?;
        tx.commit().map_err(self.err())?;
        Ok(stats)
    }

    pub(crate) fn commit_group(
        &self,
        group: &[CommitRequest],
    ) -> Vec<Result<CommitStats, StoreError>> {
        self.commit_group_encoded(group, &[])
    }

    pub(crate) fn encode(&self, versions: &[NewVersion]) -> Encoded {
        let dictionary = self.dictionaries().current();
        let items = versions
            .iter()
            .map(|v| self.encode_version(v, dictionary.as_ref()))
            .collect();
        Encoded {
            dictionary: dictionary.map_or(0, |d| d.id()),
            items,
        }
    }

    /// One version's payloads compressed with `dictionary`; while the store has none, they are
    /// kept as training samples (whoever compresses, samples).
    fn encode_version(&self, v: &NewVersion, dictionary: Option<&Dictionary>) -> EncodedVersion {
        crate::payload::encode_version(&self.dictionaries, dictionary, &v.record.to_json(), &v.raw)
    }

    pub(crate) fn commit_group_encoded(
        &self,
        group: &[CommitRequest],
        encoded: &[Encoded],
    ) -> Vec<Result<CommitStats, StoreError>> {
        let none = Encoded::default();
        let encoded_of = |i: usize| encoded.get(i).unwrap_or(&none);
        let mut conn = self.conn();
        self.train_dictionary(&mut conn);
        let together = (|| {
            let tx = write_transaction(&mut conn).map_err(self.err())?;
            let mut stats = Vec::with_capacity(group.len());
            for (i, r) in group.iter().enumerate() {
                let e = encoded_of(i);
                stats.push(self.apply(&tx, &r.tenant, &r.versions, e, &r.poison, r.cursor)?);
            }
            tx.commit().map_err(self.err())?;
            Ok::<_, StoreError>(stats)
        })();
        match together {
            Ok(stats) => stats.into_iter().map(Ok).collect(),
            Err(e) if group.len() == 1 => vec![Err(e)],
            Err(e) => {
                tracing::warn!(error = %e, requests = group.len(), "A group commit failed; committing its requests one by one.");
                group
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let (v, p) = (&r.versions, &r.poison);
                        self.commit_alone(&mut conn, &r.tenant, v, encoded_of(i), p, r.cursor)
                    })
                    .collect()
            }
        }
    }

    /// Trains the store's compression dictionary once enough payloads were sampled, and
    /// stores it in a transaction of its own, so that it is durable before any payload
    /// names it. A failure is logged: payloads are compressed without it meanwhile.
    pub(crate) fn train_dictionary(&self, conn: &mut Connection) {
        let trained = self.dictionaries().train();
        let Some(bytes) = trained else { return };
        let stored = (|| {
            let tx = write_transaction(conn)?;
            tx.execute(
                "INSERT INTO dictionaries (created_at, bytes) VALUES (?1, ?2)",
                params![Timestamp::now().to_string(), bytes],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok::<_, rusqlite::Error>(id)
        })();
        match stored.map(u32::try_from) {
            Ok(Ok(id)) => {
                tracing::info!(
                    id,
                    bytes = bytes.len(),
                    "Trained the store's compression dictionary."
                );
                self.dictionaries().add(id, bytes.into());
            }
            Ok(Err(_)) => tracing::warn!("A compression dictionary id out of range; not used."),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot store the compression dictionary; payloads are compressed without it.")
            }
        }
    }

    /// One request's writes inside `tx`.
    pub(crate) fn apply(
        &self,
        tx: &rusqlite::Transaction<'_>,
        tenant: &TenantId,
        versions: &[NewVersion],
        encoded: &Encoded,
        poison: &[PoisonRecord],
        cursor: Option<(StreamKind, Timestamp)>,
    ) -> Result<CommitStats, StoreError> {
        let err = self.err();
        let now = Timestamp::now().to_string();
        if !poison.is_empty() {
            record_poison_in(tx, tenant, poison, &now).map_err(&err)?;
        }
        let mut stats = CommitStats::default();
        let dictionary = self.dictionaries().current();
        // Compressed ahead with the dictionary still current: used as they are.
        let ahead = (encoded.items.len() == versions.len()
            && encoded.dictionary == dictionary.as_ref().map_or(0, |d| d.id()))
        .then_some(&encoded.items);
        {
            let mut previous = tx
                .prepare_cached(
                    "SELECT seq, normalized FROM versions
                     WHERE tenant_id = ?1 AND stream = ?2 AND item_id = ?3 AND last_update < ?4
                     ORDER BY last_update DESC LIMIT 1",
                )
                .map_err(&err)?;
            let mut insert = tx
                .prepare_cached(
                    // A version already stored (re-read through the overlap) is left alone.
                    "INSERT INTO versions
                     (tenant_id, stream, item_id, last_update, event_id, change, changes, api, normalized, raw, fetched_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (tenant_id, stream, item_id, last_update) DO NOTHING",
                )
                .map_err(&err)?;
            // An item of a single-version stream (a hunt row, identified by its content) found
            // again at a later time is the version already stored, not a new one.
            let mut seen = tx
                .prepare_cached(
                    "SELECT 1 FROM versions WHERE tenant_id = ?1 AND stream = ?2 AND item_id = ?3 LIMIT 1",
                )
                .map_err(&err)?;
            for (i, v) in versions.iter().enumerate() {
                let r = &v.record;
                debug_assert_eq!(r.tenant(), tenant);
                let stream = r.stream();
                let item = r.item_id();
                if stream.single_version()
                    && seen
                        .exists(params![tenant.as_str(), stream.as_str(), item])
                        .map_err(&err)?
                {
                    stats.unchanged += 1;
                    continue;
                }
                let last_update = r.last_update().to_string();
                let key = params![tenant.as_str(), stream.as_str(), item, last_update];
                let prev: Option<(i64, rusqlite::types::Value)> = previous
                    .query_row(key, |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
                    .map_err(&err)?;
                let prev = match prev {
                    Some((seq, stored)) => Some(
                        crate::payload::decode((&stored).into(), |id| {
                            self.dictionaries().get(id, tx)
                        })
                        .and_then(|json| {
                            Record::from_json(stream, &json).map_err(|e| e.to_string())
                        })
                        .map_err(|message| StoreError::Corrupt {
                            path: self.path.clone(),
                            what: format!("seq {seq} (normalized)"),
                            message,
                        })?,
                    ),
                    None => None,
                };
                let (kind, changes) = r.classify(prev.as_ref());
                let here;
                let e = match ahead.and_then(|a| a.get(i)) {
                    Some(e) => e,
                    None => {
                        here = self.encode_version(v, dictionary.as_ref());
                        &here
                    }
                };
                let changes_json = serde_json::to_string(&changes).unwrap_or_default();
                let inserted = insert
                    .execute(params![
                        tenant.as_str(),
                        stream.as_str(),
                        item,
                        last_update,
                        r.event_id().as_str(),
                        kind.as_str(),
                        changes_json,
                        r.api(),
                        e.stored_normalized,
                        e.stored_raw,
                        now,
                    ])
                    .map_err(&err)?;
                if inserted == 0 {
                    stats.unchanged += 1;
                    continue;
                }
                stats.count(kind);
            }
        }
        if let Some((stream, high_water)) = cursor {
            tx.execute(
                "INSERT INTO cursors (tenant_id, stream, high_water, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant_id, stream) DO UPDATE SET
                    high_water = MAX(high_water, excluded.high_water), updated_at = excluded.updated_at",
                params![tenant.as_str(), stream.as_str(), high_water.to_string(), now],
            )
            .map_err(&err)?;
        }
        Ok(stats)
    }

    pub(crate) fn record_poison(
        &self,
        tenant: &TenantId,
        items: &[PoisonRecord],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let err = self.err();
        let tx = write_transaction(&mut conn).map_err(&err)?;
        record_poison_in(&tx, tenant, items, &Timestamp::now().to_string()).map_err(&err)?;
        tx.commit().map_err(err)
    }

    pub(crate) fn poison_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        self.read_conn()
            .query_row(
                "SELECT COUNT(*) FROM poison WHERE tenant_id = ?1",
                [tenant.as_str()],
                |r| r.get(0),
            )
            .map_err(self.err())
    }
}

fn record_poison_in(
    tx: &rusqlite::Transaction<'_>,
    tenant: &TenantId,
    items: &[PoisonRecord],
    now: &str,
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO poison (tenant_id, raw_hash, incident_id, reason, raw, first_seen, last_seen, times_seen, stream)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 1, ?7)
         ON CONFLICT (tenant_id, raw_hash) DO UPDATE SET last_seen = excluded.last_seen, times_seen = times_seen + 1",
    )?;
    for p in items {
        let hash = format!("{:x}", fxhash(p.raw.as_bytes()));
        insert.execute(params![
            tenant.as_str(),
            hash,
            p.item_id,
            p.reason,
            p.raw,
            now,
            p.stream.as_str()
        ])?;
    }
    Ok(())
}
