//! `xdrsync store copy` on PostgreSQL: versions kept with their own `seq` (`OVERRIDING SYSTEM
//! VALUE`, then the identity moved past them), small tables converted from text by
//! `json_populate_record` into each column's type.

use crate::StoreError;
use crate::copy::{ExportedTable, ExportedVersion, TABLES, VERSION_COLUMNS};
use crate::payload;

use super::PgStore;
use super::store::{COMMIT_LOCK, Fail, decode};

impl PgStore {
    pub(super) fn export_versions_pg(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ExportedVersion>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let d = self.dictionaries.clone();
        let location = self.location.clone();
        self.read(move |rt, c| {
            rt.block_on(async {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {VERSION_COLUMNS} FROM versions WHERE seq > $1 ORDER BY seq LIMIT $2"
                        ),
                        &[&after, &limit],
                    )
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let seq: i64 = r.try_get(0)?;
                    let corrupt = |what: &str, message: String| {
                        Fail::Store(StoreError::Corrupt {
                            path: location.as_str().into(),
                            what: format!("seq {seq} ({what})"),
                            message,
                        })
                    };
                    let n: Vec<u8> = r.try_get(9)?;
                    let raw: Vec<u8> = r.try_get(10)?;
                    out.push(ExportedVersion {
                        seq,
                        tenant_id: r.try_get(1)?,
                        stream: r.try_get(2)?,
                        item_id: r.try_get(3)?,
                        last_update: r.try_get(4)?,
                        event_id: r.try_get(5)?,
                        change: r.try_get(6)?,
                        changes: r.try_get(7)?,
                        api: r.try_get(8)?,
                        normalized: decode(&d, &n, c)
                            .await
                            .map_err(|e| corrupt("normalized", e))?,
                        raw: decode(&d, &raw, c).await.map_err(|e| corrupt("raw", e))?,
                        fetched_at: r.try_get(11)?,
                        origin: r.try_get(12)?,
                    });
                }
                Ok(out)
            })
        })
    }

    pub(super) fn import_versions_pg(&self, rows: &[ExportedVersion]) -> Result<(), StoreError> {
        self.train_dictionary();
        let dictionary = super::store::lock(&self.dictionaries).current();
        let mut cols: [Vec<String>; 9] = Default::default();
        let (mut seqs, mut normalized, mut raws, mut origins) = (
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
        );
        for v in rows {
            let e = payload::encode_version(
                &self.dictionaries,
                dictionary.as_ref(),
                &v.normalized,
                &v.raw,
            );
            seqs.push(v.seq);
            normalized.push(payload::into_bytes(e.stored_normalized));
            raws.push(payload::into_bytes(e.stored_raw));
            origins.push(v.origin.clone());
            for (col, value) in cols.iter_mut().zip([
                &v.tenant_id,
                &v.stream,
                &v.item_id,
                &v.last_update,
                &v.event_id,
                &v.change,
                &v.changes,
                &v.api,
                &v.fetched_at,
            ]) {
                col.push(value.clone());
            }
        }
        let [
            tenants,
            streams,
            items,
            times,
            events,
            kinds,
            changes,
            apis,
            fetched,
        ] = cols;
        self.write(move |rt, c| {
            rt.block_on(async {
                let tx = c.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COMMIT_LOCK])
                    .await?;
                tx.execute(
                    "INSERT INTO versions
                     (seq, tenant_id, stream, item_id, last_update, event_id, change, changes, api, normalized, raw, fetched_at, origin)
                     OVERRIDING SYSTEM VALUE
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                                          $6::text[], $7::text[], $8::text[], $9::text[], $10::bytea[],
                                          $11::bytea[], $12::text[], $13::text[])",
                    &[
                        &seqs, &tenants, &streams, &items, &times, &events, &kinds, &changes,
                        &apis, &normalized, &raws, &fetched, &origins,
                    ],
                )
                .await?;
                // New versions continue after the copied ones.
                tx.execute(
                    "SELECT setval(pg_get_serial_sequence('versions', 'seq'),
                                   GREATEST((SELECT MAX(seq) FROM versions), 1))",
                    &[],
                )
                .await?;
                tx.commit().await?;
                Ok(())
            })
        })
    }

    pub(super) fn export_tables_pg(&self) -> Result<Vec<ExportedTable>, StoreError> {
        self.read(move |rt, c| {
            rt.block_on(async {
                let mut out = Vec::with_capacity(TABLES.len());
                for (name, columns) in TABLES {
                    let select = columns
                        .iter()
                        .map(|col| format!("{col}::text"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    // The audit lists in the order it was written.
                    let order = if *name == "actions" {
                        " ORDER BY ord"
                    } else {
                        ""
                    };
                    let rows = c
                        .query(&format!("SELECT {select} FROM {name}{order}"), &[])
                        .await?;
                    let rows = rows
                        .iter()
                        .map(|r| {
                            (0..columns.len())
                                .map(|i| r.try_get::<_, Option<String>>(i))
                                .collect::<Result<Vec<_>, _>>()
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    out.push(ExportedTable { name, rows });
                }
                Ok(out)
            })
        })
    }

    pub(super) fn import_tables_pg(&self, tables: &[ExportedTable]) -> Result<(), StoreError> {
        // Each row as a JSON object of text; PostgreSQL reads it into the columns' types.
        let mut statements = Vec::new();
        for table in tables {
            let Some((name, columns)) = TABLES.iter().find(|(n, _)| *n == table.name) else {
                continue;
            };
            let list = columns.join(", ");
            let sql = format!(
                "INSERT INTO {name} ({list}) SELECT {list} FROM json_populate_record(NULL::{name}, $1::text::json)"
            );
            for row in &table.rows {
                let object: serde_json::Map<String, serde_json::Value> = columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| {
                        (
                            (*c).to_owned(),
                            v.clone()
                                .map_or(serde_json::Value::Null, serde_json::Value::String),
                        )
                    })
                    .collect();
                statements.push((sql.clone(), serde_json::Value::Object(object).to_string()));
            }
        }
        self.write(move |rt, c| {
            rt.block_on(async {
                let tx = c.transaction().await?;
                for (sql, row) in &statements {
                    tx.execute(sql.as_str(), &[row]).await?;
                }
                tx.commit().await?;
                Ok(())
            })
        })
    }
}
