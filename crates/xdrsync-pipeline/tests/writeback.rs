//! Write-back end to end against the emulator: each kind of update reaches Defender (the
//! emulator's own state) and comes back as a stored `updated` version marked with its action;
//! what is refused is refused before or by Defender with the reason; a re-applied file is
//! skipped; a write racing a change in Defender stores both; a bulk close paced inside quotas.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::sync::Arc;

use xdrsync_config::Config;
use xdrsync_emulator::{Emulator, EmulatorConfig};
use xdrsync_model::action::Action;
use xdrsync_model::{ApiKind, ChangeKind, StreamKind};
use xdrsync_pipeline::Pipeline;
use xdrsync_pipeline::actions::{ActionReport, apply_actions};
use xdrsync_store::{ActionOutcome, SqliteStore, Store};
use xdrsync_test_utils as tu;

struct Env {
    emu: Emulator,
    config: Config,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

/// `names` tenants (tenant `i` on `apis[i % len]`) with `roles`, pulled once.
async fn env(names: &[&str], apis: &[ApiKind], roles: &[&str], extra: &str) -> Env {
    let emu = Emulator::start(
        EmulatorConfig {
            directory: tu::many_tenants(names, 6.0, roles),
            // Quotas at 60× for the bulk test; real time otherwise (the world changes less).
            time_scale: if extra.contains("quota_time_scale = 60") {
                60.0
            } else {
                1.0
            },
            behaviour: xdrsync_emulator::Behaviour {
                rate_limits: extra.contains("rate_budget = true"),
                ..Default::default()
            },
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = tu::write_config(dir.path(), &emu, apis, extra);
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let reports = Pipeline::new(config.clone(), store.clone())
        .unwrap()
        .pull_all()
        .await;
    for r in &reports {
        assert!(r.error.is_none(), "{}: {:?}", r.name, r.error);
    }
    Env {
        emu,
        config,
        store,
        _dir: dir,
    }
}

impl Env {
    async fn apply(&self, actions: Vec<Action>, dry_run: bool) -> Vec<ActionReport> {
        let client = xdrsync_pipeline::api_client(&self.config).unwrap();
        apply_actions(
            &self.config,
            &self.store,
            &client,
            None,
            actions,
            Some("analyst@mssp.example"),
            dry_run,
        )
        .await
    }

    /// The newest incident of tenant `i`: (its config name, its id).
    fn incident(&self, i: usize, nth: usize) -> (String, u64) {
        let t = &self.config.tenants[i];
        let mut all = self
            .emu
            .state()
            .incidents(t.tenant_id.as_str(), |x| x.redirect.is_none());
        all.sort_by_key(|x| std::cmp::Reverse((x.last_update, x.id)));
        (t.name.clone(), all[nth].id)
    }

    fn emulated(&self, i: usize, id: u64) -> xdrsync_emulator::world::EmuIncident {
        let t = &self.config.tenants[i];
        self.emu
            .state()
            .incidents(t.tenant_id.as_str(), |x| x.id == id)
            .pop()
            .unwrap()
    }
}

fn action(tenant: &str, id: impl ToString, json: &str) -> Action {
    let mut a: Action = serde_json::from_str(json).unwrap();
    a.tenant = tenant.to_owned();
    a.id = id.to_string();
    a
}

#[tokio::test]
async fn each_update_kind_reaches_defender_and_comes_back_marked() {
    let e = env(
        &["Contoso", "Fabrikam"],
        &[ApiKind::Graph, ApiKind::Xdr],
        tu::ALL_WRITE_ROLES,
        "",
    )
    .await;
    let (graph, g_id) = e.incident(0, 0);
    let (legacy, l_id) = e.incident(1, 0);
    let alert_id = e.emulated(0, g_id).alerts[0].id.clone();
    let reports = e
        .apply(
            vec![
                action(&graph, g_id, r#"{"tenant":"","id":"","status":"resolved","assign":"ana@contoso.com","classification":"truePositive","determination":"compromisedAccount","tags_add":["ransomware"],"comment":"contained","resolving_comment":"reimaged"}"#),
                action(&legacy, l_id, r#"{"tenant":"","id":"","status":"inProgress","classification":"truePositive","determination":"malware","tags_add":["ir-42"],"comment":"looking"}"#),
                action(&graph, &alert_id, r#"{"tenant":"","id":"","target":"alert","status":"resolved","classification":"falsePositive","determination":"notMalicious","comment":"benign"}"#),
            ],
            false,
        )
        .await;
    for r in &reports {
        assert_eq!(r.outcome, ActionOutcome::Applied, "{r:?}");
        assert!(r.produced.is_some(), "{r:?}");
    }
    // In Defender (the emulator's own state).
    let g = e.emulated(0, g_id);
    assert_eq!(
        (
            g.status.graph,
            g.classification.graph,
            g.determination.graph
        ),
        ("resolved", "truePositive", "compromisedAccount")
    );
    assert_eq!(g.assigned_to.as_deref(), Some("ana@contoso.com"));
    assert!(g.tags.contains(&"ransomware".to_owned()), "{:?}", g.tags);
    assert_eq!(g.resolving_comment.as_deref(), Some("reimaged"));
    assert!(g.comments.iter().any(|c| c.comment == "contained"));
    let l = e.emulated(1, l_id);
    assert_eq!(
        (l.status.graph, l.determination.graph),
        ("inProgress", "malware")
    );
    assert!(l.comments.iter().any(|c| c.comment == "looking"));
    assert!(l.tags.contains(&"ir-42".to_owned()));
    let a = g.alerts.iter().find(|a| a.id == alert_id).unwrap();
    assert_eq!(a.status.graph, "resolved");
    // In the store: the produced versions, marked with their actions, as `updated` events.
    let events = e.store.versions_after(0, 1_000_000).unwrap();
    for (r, stream) in reports.iter().zip([
        StreamKind::Incidents,
        StreamKind::Incidents,
        StreamKind::Alerts,
    ]) {
        let v = events
            .iter()
            .find(|v| v.origin_action.as_deref() == Some(r.action_id.as_str()))
            .unwrap_or_else(|| panic!("no event for {r:?}"));
        assert_eq!(v.stream, stream);
        assert_eq!(v.record.item_id(), r.item);
        assert_eq!(Some(v.record.last_update()), r.produced);
        if stream == StreamKind::Incidents {
            assert_eq!(v.change, ChangeKind::Updated, "{v:?}");
        }
    }
    // A pull afterwards stores nothing twice.
    let before = e.store.last_seq().unwrap();
    let again = Pipeline::new(e.config.clone(), e.store.clone())
        .unwrap()
        .pull_all()
        .await;
    assert!(again.iter().all(|r| r.error.is_none()));
    let new: Vec<_> = e
        .store
        .versions_after(before, 1000)
        .unwrap()
        .into_iter()
        .filter(|v| {
            reports
                .iter()
                .any(|r| r.item == v.record.item_id() && Some(v.record.last_update()) == r.produced)
        })
        .collect();
    assert!(
        new.is_empty(),
        "a produced version was stored again: {new:?}"
    );
    // The audit.
    let log = e.store.actions(None).unwrap();
    assert_eq!(log.len(), 3);
    assert!(
        log.iter()
            .all(|a| a.actor == "analyst@mssp.example" && a.outcome == ActionOutcome::Applied)
    );
}

#[tokio::test]
async fn refusals_name_their_reason_and_touch_nothing() {
    // Contoso may only read; Fabrikam may write.
    let e = env(
        &["Contoso", "Fabrikam"],
        &[ApiKind::Graph],
        tu::ALL_READ_ROLES,
        "",
    )
    .await;
    let fabrikam = e.config.tenants[1].tenant_id.as_str().to_owned();
    e.emu.state().update_directory(|d| {
        for roles in d.apps[0].consents.get_mut(&fabrikam).unwrap().values_mut() {
            roles.push("SecurityIncident.ReadWrite.All".into());
        }
    });
    let (contoso, c_id) = e.incident(0, 0);
    let (fab, f_id) = e.incident(1, 0);
    let before = e.emulated(1, f_id).last_update;
    let reports = e
        .apply(
            vec![
                // A comment is never "already so": it is always sent.
                action(&contoso, c_id, r#"{"tenant":"","id":"","comment":"seen"}"#),
                action(&fab, f_id, r#"{"tenant":"","id":"","classification":"falsePositive","determination":"malware"}"#),
                action(&fab, f_id, r#"{"tenant":"","id":"","status":"closed"}"#),
                action("nobody", 1, r#"{"tenant":"","id":"","status":"resolved"}"#),
                action(&fab, f_id, r#"{"tenant":"","id":"","comment":"handled by tier 2"}"#),
            ],
            false,
        )
        .await;
    let says = |i: usize, text: &str| {
        assert_eq!(
            reports[i].outcome,
            ActionOutcome::Failed,
            "{:?}",
            reports[i]
        );
        assert!(reports[i].message.contains(text), "{:?}", reports[i]);
    };
    says(0, "SecurityIncident.ReadWrite.All");
    says(1, "does not go with classification `falsePositive`");
    says(2, "not a incident status");
    says(3, "no tenant `nobody`");
    // The tenant that may write is not held back by the one that may not.
    assert_eq!(
        reports[4].outcome,
        ActionOutcome::Applied,
        "{:?}",
        reports[4]
    );
    let after = e.emulated(1, f_id);
    assert!(
        after
            .comments
            .iter()
            .any(|c| c.comment == "handled by tier 2")
    );
    assert!(after.last_update > before);
    let refused = e.emulated(0, c_id);
    assert!(!refused.comments.iter().any(|c| c.comment == "seen"));
    let log = e.store.actions(None).unwrap();
    // Every action on a known tenant is in the audit, the refused ones too.
    assert_eq!(log.len(), 4, "{log:?}");
}

#[tokio::test]
async fn re_applying_a_file_skips_what_is_already_so() {
    let e = env(&["Contoso"], &[ApiKind::Graph], tu::ALL_WRITE_ROLES, "").await;
    let actions: Vec<Action> = (0..5)
        .map(|n| {
            let (t, id) = e.incident(0, n);
            action(&t, id, r#"{"tenant":"","id":"","status":"resolved","classification":"truePositive","determination":"phishing","tags_add":["campaign-7"]}"#)
        })
        .collect();
    let dry = e.apply(actions.clone(), true).await;
    assert!(
        dry.iter().all(|r| r.outcome == ActionOutcome::Skipped),
        "{dry:?}"
    );
    // Each shows its change against the stored version (the tag is new to every one).
    assert!(
        dry.iter()
            .all(|r| r.diff.iter().any(|d| d == "tag: +campaign-7")),
        "{dry:?}"
    );
    assert!(
        e.store.actions(None).unwrap().is_empty(),
        "a dry run records nothing"
    );
    let first = e.apply(actions.clone(), false).await;
    assert!(
        first.iter().all(|r| r.outcome == ActionOutcome::Applied),
        "{first:?}"
    );
    let seq = e.store.last_seq().unwrap();
    let second = e.apply(actions, false).await;
    assert!(
        second
            .iter()
            .all(|r| r.outcome == ActionOutcome::Skipped && r.message.starts_with("already so")),
        "{second:?}"
    );
    assert_eq!(e.store.last_seq().unwrap(), seq, "nothing new stored");
}

/// Defender changes the incident between our PATCH and the read-back: both versions are
/// stored and delivered, ours marked with the action, the later one as pulled, in order.
#[tokio::test]
async fn a_write_racing_a_change_in_defender_keeps_both_versions() {
    use xdrsync_emulator::faults::{Fault, FaultRule};
    let e = env(&["Contoso"], &[ApiKind::Graph], tu::ALL_WRITE_ROLES, "").await;
    let (t, id) = e.incident(0, 0);
    e.emu.state().add_fault(FaultRule {
        route: format!("GET /v1.0/security/incidents/{id}"),
        sequence: vec![Fault::Hold],
        fault: None,
        probability: None,
    });
    let tenant = e.config.tenants[0].tenant_id.as_str().to_owned();
    let state = e.emu.state().clone();
    let racer = tokio::spawn(async move {
        // When the read-back is held, an analyst in the portal assigns it meanwhile.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while state.stats().requests_held == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the read-back was never held"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        state.bulk_assign(&tenant, 1, "portal.user@contoso.com");
        state.release_held();
    });
    let reports = e
        .apply(
            vec![action(
                &t,
                id,
                r#"{"tenant":"","id":"","status":"inProgress","comment":"racing the portal"}"#,
            )],
            false,
        )
        .await;
    racer.await.unwrap();
    let r = &reports[0];
    assert_eq!(r.outcome, ActionOutcome::Applied, "{r:?}");
    let versions: Vec<_> = e
        .store
        .versions_after(0, 1_000_000)
        .unwrap()
        .into_iter()
        .filter(|v| v.record.item_id() == id.to_string())
        .collect();
    let ours = versions
        .iter()
        .find(|v| v.origin_action.as_deref() == Some(r.action_id.as_str()))
        .unwrap_or_else(|| panic!("{r:?}: ours is not stored"));
    let later = versions
        .iter()
        .find(|v| {
            v.record.incident().unwrap().assigned_to.as_deref() == Some("portal.user@contoso.com")
        })
        .unwrap_or_else(|| panic!("{r:?}: the portal's change is not stored"));
    assert_eq!(ours.record.incident().unwrap().status, "inProgress");
    assert_eq!(later.origin_action, None);
    assert!(r.message.contains("Defender changed it again"), "{r:?}");
    assert!(ours.record.last_update() < later.record.last_update());
    assert!(ours.seq < later.seq);
}

/// A bulk close of 500 incidents across 30 tenants (one with 120), the emulator's quotas on
/// (time 60×): every action applied, not one 429.
#[tokio::test]
async fn a_bulk_close_across_30_tenants_stays_inside_the_quotas() {
    let names: Vec<String> = (0..30).map(|i| format!("Customer {i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let e = env(
        &names,
        &[ApiKind::Xdr, ApiKind::Graph],
        tu::ALL_WRITE_ROLES,
        // The store need not know the incidents: an hour keeps the first pull short.
        "[sync]\nrate_budget = true\nquota_time_scale = 60\ninitial_lookback_hours = 1\n",
    )
    .await;
    let mut actions = Vec::new();
    for n in 0..120 {
        let (t, id) = e.incident(0, n);
        actions.push(action(&t, id, r#"{"tenant":"","id":"","status":"resolved","classification":"truePositive","determination":"malware"}"#));
    }
    let mut i = 1;
    while actions.len() < 500 {
        let (t, id) = e.incident(i % 30, actions.len() / 30);
        actions.push(action(
            &t,
            id,
            r#"{"tenant":"","id":"","status":"resolved"}"#,
        ));
        i += 1;
    }
    let before = e.emu.state().stats();
    let reports = e.apply(actions, false).await;
    let after = e.emu.state().stats();
    let failed: Vec<_> = reports
        .iter()
        .filter(|r| r.outcome == ActionOutcome::Failed)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        after.throttled - before.throttled,
        0,
        "429s during the bulk close"
    );
    assert_eq!(
        reports
            .iter()
            .filter(|r| r.outcome == ActionOutcome::Applied)
            .count()
            + reports
                .iter()
                .filter(|r| r.outcome == ActionOutcome::Skipped)
                .count(),
        500
    );
}
