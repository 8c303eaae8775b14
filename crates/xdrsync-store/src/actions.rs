//! The write-back audit: every action sent to Defender (who, when, what, Microsoft's answer,
//! the version it produced), and the versions our writes produced, marked with their action.

use rusqlite::params;
use xdrsync_model::{StreamKind, TenantId, Timestamp};

use crate::{Encoded, NewVersion, SqliteStore, StoreError, StoredVersion, write_transaction};

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionOutcome {
    /// Sent, and Defender accepted it.
    Applied,
    /// Not sent: the latest stored version already shows it (a re-applied file), or a dry run.
    Skipped,
    /// Refused before sending (invalid) or by Defender.
    Failed,
}

impl ActionOutcome {
    /// `applied` / `skipped` / `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionOutcome::Applied => "applied",
            ActionOutcome::Skipped => "skipped",
            ActionOutcome::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "applied" => ActionOutcome::Applied,
            "skipped" => ActionOutcome::Skipped,
            "failed" => ActionOutcome::Failed,
            _ => return None,
        })
    }
}

/// One row of the audit.
#[derive(Debug, Clone)]
pub struct ActionRecord {
    /// A fresh UUID; also in the event of the version it produced (`origin`).
    pub id: String,
    /// When it was sent (or refused).
    pub created_at: Timestamp,
    /// Who: `--actor`, else the config's identity (the app, or the signed-in analyst).
    pub actor: String,
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its configured name then.
    pub tenant_name: String,
    /// `incident` or `alert`.
    pub target: String,
    /// The incident or alert id.
    pub item_id: String,
    /// The action as asked (JSON).
    pub request: String,
    /// How it ended.
    pub outcome: ActionOutcome,
    /// Microsoft's answer or the reason, in plain words.
    pub answer: String,
    /// The last-update time of the version it produced.
    pub produced: Option<Timestamp>,
}

impl SqliteStore {
    pub(crate) fn record_action(
        &self,
        action: &ActionRecord,
        produced: Option<&NewVersion>,
    ) -> Result<(), StoreError> {
        self.record_actions(&[(action.clone(), produced.cloned())])
    }

    pub(crate) fn record_actions(
        &self,
        items: &[(ActionRecord, Option<NewVersion>)],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn).map_err(self.err())?;
        for (action, produced) in items {
            self.record_in(&tx, action, produced.as_ref())?;
        }
        tx.commit().map_err(self.err())
    }

    fn record_in(
        &self,
        tx: &rusqlite::Transaction<'_>,
        action: &ActionRecord,
        produced: Option<&NewVersion>,
    ) -> Result<(), StoreError> {
        let err = self.err();
        if let Some(v) = produced {
            self.apply(
                tx,
                &action.tenant_id,
                std::slice::from_ref(v),
                &Encoded::default(),
                &[],
                None,
            )?;
            let r = &v.record;
            tx.execute(
                "UPDATE versions SET origin = ?1
                 WHERE tenant_id = ?2 AND stream = ?3 AND item_id = ?4 AND last_update = ?5",
                params![
                    action.id,
                    r.tenant().as_str(),
                    r.stream().as_str(),
                    r.item_id(),
                    r.last_update().to_string()
                ],
            )
            .map_err(&err)?;
        }
        tx.execute(
            "INSERT INTO actions (id, created_at, actor, tenant_id, tenant_name, target, item_id, request, outcome, answer, produced)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                action.id,
                action.created_at.to_string(),
                action.actor,
                action.tenant_id.as_str(),
                action.tenant_name,
                action.target,
                action.item_id,
                action.request,
                action.outcome.as_str(),
                action.answer,
                action.produced.map(|t| t.to_string()),
            ],
        )
        .map_err(&err)?;
        Ok(())
    }

    pub(crate) fn actions(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, created_at, actor, tenant_id, tenant_name, target, item_id, request, outcome, answer, produced
                 FROM actions WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY created_at, rowid",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([tenant.map(TenantId::as_str)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, String>(9)?,
                    r.get::<_, Option<String>>(10)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (
                id,
                created,
                actor,
                tenant_id,
                tenant_name,
                target,
                item_id,
                request,
                outcome,
                answer,
                produced,
            ) = row.map_err(self.err())?;
            let corrupt = |message: String| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("action {id}"),
                message,
            };
            out.push(ActionRecord {
                created_at: created.parse().map_err(|e| corrupt(format!("{e}")))?,
                actor,
                tenant_id: TenantId::new(tenant_id),
                tenant_name,
                target,
                item_id,
                request,
                outcome: ActionOutcome::parse(&outcome)
                    .ok_or_else(|| corrupt(format!("unknown outcome {outcome:?}")))?,
                answer,
                produced: produced
                    .map(|p| p.parse())
                    .transpose()
                    .map_err(|e| corrupt(format!("{e}")))?,
                id,
            });
        }
        Ok(out)
    }

    pub(crate) fn latest_of(
        &self,
        tenant: &TenantId,
        stream: StreamKind,
        item: &str,
    ) -> Result<Option<StoredVersion>, StoreError> {
        Ok(self
            .read_versions(
                "SELECT seq, event_id, stream, change, changes, normalized, raw, origin FROM versions
                 WHERE tenant_id = ?1 AND stream = ?2 AND item_id = ?3
                 ORDER BY last_update DESC LIMIT 1",
                params![tenant.as_str(), stream.as_str(), item],
            )?
            .pop())
    }
}
