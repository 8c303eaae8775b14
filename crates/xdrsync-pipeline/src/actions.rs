//! Write-back across tenants: each [`Action`] validated, checked against the latest stored
//! version (a re-applied file skips what is already so), sent through the rate budget, the
//! item read back and stored as a version marked with the action's id, and every action
//! recorded in the audit (`actions log`).
//!
//! Tenants run side by side, each tenant's actions in order; the budget paces every call, so
//! a bulk close across many tenants stays inside each tenant's quota. A write that races a
//! change made in Defender meanwhile stores both versions: ours (from the PATCH answer, marked
//! with the action) and the later one (as pulled), in last-update order.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use xdrsync_api_client::{ApiClient, ApiError};
use xdrsync_auth::vault::Vault;
use xdrsync_config::{Config, Tenant};
use xdrsync_model::action::{Action, Target as ItemKind};
use xdrsync_model::{
    ApiKind, Record, StreamKind, Timestamp, normalize_graph_alert, normalize_graph_incident,
    normalize_xdr_incident,
};
use xdrsync_store::{ActionOutcome, ActionRecord, NewVersion, Store};

/// What became of one action.
#[derive(Debug, Clone)]
pub struct ActionReport {
    /// The audit id (also the `origin` of the version it produced).
    pub action_id: String,
    /// The tenant's configured name (the action's own text when no tenant matched).
    pub tenant: String,
    /// `incident` or `alert`.
    pub target: ItemKind,
    /// The item id.
    pub item: String,
    /// How it ended.
    pub outcome: ActionOutcome,
    /// What happened, in plain words.
    pub message: String,
    /// `field: old → new` for every change, against the latest stored version.
    pub diff: Vec<String>,
    /// The last-update time of the version the write produced.
    pub produced: Option<Timestamp>,
}

/// The audit's writer: actions finished by the tenants side by side are committed together,
/// one transaction for as many as are waiting, each caller answered only once its row (and
/// the version its write produced) is durable. A group that fails is retried one by one.
struct Audit {
    queue: tokio::sync::mpsc::UnboundedSender<AuditItem>,
}

type AuditItem = (
    ActionRecord,
    Option<NewVersion>,
    tokio::sync::oneshot::Sender<Result<(), String>>,
);

impl Audit {
    fn start(store: Arc<dyn Store>) -> (Audit, tokio::task::JoinHandle<()>) {
        let (queue, mut rx) = tokio::sync::mpsc::unbounded_channel::<AuditItem>();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < 512 {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                let (rows, replies): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .map(|(a, v, reply)| ((a, v), reply))
                    .unzip();
                let store = store.clone();
                let done = tokio::task::spawn_blocking(move || {
                    let results: Vec<Result<(), String>> = match store.record_actions(&rows) {
                        Ok(()) => rows.iter().map(|_| Ok(())).collect(),
                        Err(_) if rows.len() > 1 => rows
                            .iter()
                            .map(|(a, v)| {
                                store
                                    .record_action(a, v.as_ref())
                                    .map_err(|e| e.to_string())
                            })
                            .collect(),
                        Err(e) => vec![Err(e.to_string())],
                    };
                    results
                })
                .await;
                if let Ok(results) = done {
                    for (reply, r) in replies.into_iter().zip(results) {
                        let _ = reply.send(r);
                    }
                }
            }
        });
        (Audit { queue }, task)
    }

    async fn record(&self, row: ActionRecord, produced: Option<NewVersion>) -> Result<(), String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send((row, produced, reply))
            .map_err(|_| "the audit writer stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the audit writer stopped".to_owned())?
    }
}

/// Applies `actions` (or, with `dry_run`, shows what each would change). `actor` is recorded
/// with each one.
pub async fn apply_actions(
    config: &Config,
    store: &Arc<dyn Store>,
    client: &ApiClient,
    vault: Option<&Arc<Vault>>,
    actions: Vec<Action>,
    actor: Option<&str>,
    dry_run: bool,
) -> Vec<ActionReport> {
    // By tenant, in file order within each; tenants side by side.
    let mut by_tenant: BTreeMap<String, Vec<(usize, Action)>> = BTreeMap::new();
    for (i, a) in actions.into_iter().enumerate() {
        let key = config
            .tenant(&a.tenant)
            .map_or_else(|| a.tenant.clone(), |t| t.name.clone());
        by_tenant.entry(key).or_default().push((i, a));
    }
    let (audit, writer) = Audit::start(store.clone());
    let audit = &audit;
    let runs = by_tenant.into_values().map(|list| async move {
        // One at a time within a tenant: measured with `scripts/bench-actions 4000 20`, two or
        // eight in flight were slower (4.37 s, 5.1 s against 4.25 s), and against Microsoft the
        // quotas (50 updates a minute per tenant) bind long before one action after another.
        let mut out = Vec::with_capacity(list.len());
        for (i, a) in list {
            out.push((
                i,
                apply_one(config, store, client, vault, audit, a, actor, dry_run).await,
            ));
        }
        out
    });
    let mut all: Vec<(usize, ActionReport)> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    // Every caller had its answer; the writer ends with its queue.
    writer.abort();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

#[allow(clippy::too_many_arguments)] // one action's whole context, passed down once
async fn apply_one(
    config: &Config,
    store: &Arc<dyn Store>,
    client: &ApiClient,
    vault: Option<&Arc<Vault>>,
    audit: &Audit,
    action: Action,
    actor: Option<&str>,
    dry_run: bool,
) -> ActionReport {
    let mut report = ActionReport {
        action_id: uuid::Uuid::new_v4().to_string(),
        tenant: action.tenant.clone(),
        target: action.target(),
        item: action.id.clone(),
        outcome: ActionOutcome::Failed,
        message: String::new(),
        diff: Vec::new(),
        produced: None,
    };
    let Some(tenant) = config.tenant(&action.tenant) else {
        report.message = format!("no tenant `{}` in the config", action.tenant);
        return report;
    };
    report.tenant = tenant.name.clone();
    // Who: as given, else the identity the write goes out as.
    let actor = actor.map_or_else(
        || {
            if tenant.delegated {
                format!("delegated sign-in of {}", tenant.name)
            } else {
                format!("app {}", tenant.client_id)
            }
        },
        str::to_owned,
    );
    let stream = match action.target() {
        ItemKind::Incident => StreamKind::Incidents,
        ItemKind::Alert => StreamKind::Alerts,
    };
    let latest = match store.latest_of(&tenant.tenant_id, stream, &action.id) {
        Ok(l) => l,
        Err(e) => {
            report.message = format!("reading the store: {e}");
            return report;
        }
    };
    let current = latest.as_ref().map(|v| &v.record);
    report.diff = diff(&action, current);
    let classification = current.and_then(|r| match r {
        Record::Incident(i) => Some(i.classification.clone()),
        Record::Alert(a) => Some(a.classification.clone()),
        // Never the target of an action: actions name incidents and alerts.
        Record::HuntRow(_) => None,
    });
    // Records `report` in the audit (with the version it produced); a failure to record is
    // said in the report's message.
    let record = async |report: &mut ActionReport, produced: Option<NewVersion>| {
        let row = ActionRecord {
            id: report.action_id.clone(),
            created_at: Timestamp::now(),
            actor: actor.clone(),
            tenant_id: tenant.tenant_id.clone(),
            tenant_name: tenant.name.clone(),
            target: report.target.as_str().to_owned(),
            item_id: report.item.clone(),
            request: serde_json::to_string(&action).unwrap_or_default(),
            outcome: report.outcome,
            answer: report.message.clone(),
            produced: report.produced,
        };
        if let Err(e) = audit.record(row, produced).await {
            report.message.push_str(&format!(" (not recorded: {e})"));
        }
    };
    if let Err(e) = action.validate(
        classification.as_deref().filter(|c| *c != "unknown"),
        tenant.api == ApiKind::Xdr,
    ) {
        report.message = e.0;
        if !dry_run {
            record(&mut report, None).await;
        }
        return report;
    }
    // Already so: the stored version shows every change (a comment is always a change).
    let already = current.is_some() && report.diff.is_empty();
    if already || dry_run {
        report.outcome = ActionOutcome::Skipped;
        report.message = if already {
            "already so in the latest stored version; nothing sent".into()
        } else if current.is_none() {
            "dry run: not in the store yet (pull it to see the difference)".into()
        } else {
            "dry run: nothing sent".into()
        };
        if already && !dry_run {
            record(&mut report, None).await;
        }
        return report;
    }
    let target = match crate::stream_target(tenant, config, vault, stream) {
        Ok(t) => t,
        Err(e) => {
            report.message = e.to_string();
            return report;
        }
    };
    // The APIs replace tags as a whole: the stored raw item is parsed only for a tag change.
    let tags = if action.tags_add.is_empty() && action.tags_remove.is_empty() {
        Vec::new()
    } else {
        custom_tags(latest.as_ref().map(|v| v.raw.as_str()), tenant.api)
    };
    let outcome = client.apply_action(&target, &action, &tags).await;
    let produced = match outcome {
        Err(e) => {
            report.message = explain(&e, tenant, action.target());
            record(&mut report, None).await;
            return report;
        }
        Ok(w) => w,
    };
    let normalize = |text: &str| -> Result<Record, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        match (tenant.api, action.target()) {
            (ApiKind::Graph, ItemKind::Incident) => {
                normalize_graph_incident(&tenant.tenant_id, &v).map(Record::Incident)
            }
            (ApiKind::Graph, ItemKind::Alert) => {
                normalize_graph_alert(&tenant.tenant_id, &v).map(Record::Alert)
            }
            (ApiKind::Xdr, _) => {
                normalize_xdr_incident(&tenant.tenant_id, &v).map(Record::Incident)
            }
        }
        .map_err(|e| e.to_string())
    };
    let after = match normalize(&produced.after) {
        Ok(r) => r,
        Err(e) => {
            report.outcome = ActionOutcome::Applied;
            report.message = format!("applied, but the item read back is not readable: {e}");
            record(&mut report, None).await;
            return report;
        }
    };
    // Ours is the version the PATCH made. If the item changed again before the read-back,
    // ours is rebuilt from the PATCH answer (with the alerts read back) and the later one is
    // stored after it, as pulled: both are events, in last-update order.
    let (ours, later) = match (produced.patched, &produced.patch_answer) {
        (Some(t), Some(answer)) if t < after.last_update() => (
            with_alerts_of(answer, &produced.after)
                .and_then(|raw| normalize(&raw).ok().map(|r| NewVersion { record: r, raw })),
            Some(NewVersion {
                record: after,
                raw: produced.after.clone(),
            }),
        ),
        _ => (
            Some(NewVersion {
                record: after,
                raw: produced.after.clone(),
            }),
            None,
        ),
    };
    report.outcome = ActionOutcome::Applied;
    report.produced = ours.as_ref().map(|v| v.record.last_update());
    report.message = match report.produced {
        Some(t) => format!("applied; version {t}"),
        None => "applied".into(),
    };
    record(&mut report, ours).await;
    if let Some(later) = later {
        report.message.push_str(&format!(
            "; Defender changed it again since (version {})",
            later.record.last_update()
        ));
        if let Err(e) = store.commit(&tenant.tenant_id, &[later], None) {
            tracing::warn!(error = %e, "Storing the version read back after a write failed; the next pull stores it.");
        }
    }
    report
}

/// The custom tags of the latest stored raw item (Graph `customTags`, legacy `tags`).
fn custom_tags(raw: Option<&str>, api: ApiKind) -> Vec<String> {
    let key = match api {
        ApiKind::Graph => "customTags",
        ApiKind::Xdr => "tags",
    };
    raw.and_then(|r| serde_json::from_str::<Value>(r).ok())
        .and_then(|v| v.get(key).cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// The PATCH answer with the `alerts` of the item read back (a Graph PATCH answers the
/// incident without its relationship).
fn with_alerts_of(answer: &str, after: &str) -> Option<String> {
    let mut a: Value = serde_json::from_str(answer).ok()?;
    let b: Value = serde_json::from_str(after).ok()?;
    if let (Some(o), Some(alerts)) = (a.as_object_mut(), b.get("alerts")) {
        o.remove("@odata.context");
        o.insert("alerts".into(), alerts.clone());
    }
    Some(a.to_string())
}

/// `field: old → new` for each change of `action` against `current`.
fn diff(action: &Action, current: Option<&Record>) -> Vec<String> {
    let (status, owner, class, det, tags) = match current {
        Some(Record::Incident(i)) => (
            i.status.clone(),
            i.assigned_to.clone().unwrap_or_default(),
            i.classification.clone(),
            i.determination.clone(),
            i.tags.clone(),
        ),
        Some(Record::Alert(a)) => (
            a.status.clone(),
            a.assigned_to.clone().unwrap_or_default(),
            a.classification.clone(),
            a.determination.clone(),
            Vec::new(),
        ),
        Some(Record::HuntRow(_)) | None => Default::default(),
    };
    let mut out = Vec::new();
    let mut field = |name: &str, old: &str, new: &Option<String>| {
        if let Some(new) = new
            && new != old
        {
            out.push(format!("{name}: {} → {}", show(old), show(new)));
        }
    };
    field("status", &status, &action.status);
    field("assignedTo", &owner, &action.assign);
    field("classification", &class, &action.classification);
    field("determination", &det, &action.determination);
    for t in action.tags_add.iter().filter(|t| !tags.contains(t)) {
        out.push(format!("tag: +{t}"));
    }
    for t in action.tags_remove.iter().filter(|t| tags.contains(t)) {
        out.push(format!("tag: -{t}"));
    }
    if let Some(c) = &action.comment {
        out.push(format!("comment: + {}", xdrsync_model::printable(c)));
    }
    if let Some(c) = &action.resolving_comment {
        out.push(format!("resolvingComment: {}", xdrsync_model::printable(c)));
    }
    out
}

fn show(s: &str) -> String {
    if s.is_empty() {
        "(none)".into()
    } else {
        xdrsync_model::printable(s)
    }
}

/// Microsoft's refusal in plain words; a 403 names the role the write needs.
fn explain(e: &ApiError, tenant: &Tenant, kind: ItemKind) -> String {
    if e.status() == Some(403) {
        let role = match (tenant.api, kind) {
            (ApiKind::Graph, ItemKind::Incident) => {
                "SecurityIncident.ReadWrite.All (Microsoft Graph)"
            }
            (ApiKind::Graph, ItemKind::Alert) => "SecurityAlert.ReadWrite.All (Microsoft Graph)",
            (ApiKind::Xdr, _) => "Incident.ReadWrite.All (Microsoft Threat Protection)",
        };
        return format!(
            "the app may not write in tenant {}: it needs the application permission {role}, granted by the tenant's admin ({e})",
            tenant.name
        );
    }
    e.to_string()
}
