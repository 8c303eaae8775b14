//! The store against the emulator's ground truth: the one check every sync scenario runs.
//!
//! "Observable": a poll can only see a version that was current (after ingestion lag) while the
//! poll ran. A version replaced before any poll saw it cannot be read from any Microsoft API,
//! so the check is: every stored version is one the emulator had (nothing invented), none is
//! stored twice, and every version that was current for the whole of some poll is stored
//! (nothing lost).

use std::collections::{BTreeMap, BTreeSet};

use xdrsync_emulator::Emulator;
use xdrsync_emulator::faults::{Fault, FaultRule};
use xdrsync_model::{StreamKind, TenantId, Timestamp};
use xdrsync_store::Store;

/// One poll: the emulator's clock when it started and when it ended.
pub type Poll = (Timestamp, Timestamp);

/// Item versions, oldest first per item: `(item id, version time, visible from)`.
pub type Truth = Vec<(String, Timestamp, Timestamp)>;

/// Every incident version of `tenant` (visible from its own time).
pub fn incidents(emu: &Emulator, tenant: &str) -> Truth {
    emu.state()
        .ground_truth(tenant)
        .into_iter()
        .map(|v| (v.incident_id.to_string(), v.last_update, v.last_update))
        .collect()
}

/// Every alert version of `tenant` (`mde_only`: what the MDE API lists), and every SIEM
/// detection version; each visible from the incident version that first carried the alert.
pub fn alerts(emu: &Emulator, tenant: &str, mde_only: bool) -> (Truth, Truth) {
    let records = emu.state().alert_ground_truth(tenant);
    let alerts = records
        .iter()
        .filter(|a| a.mde || !mde_only)
        .map(|a| (a.alert_id.clone(), a.last_update, a.visible_from))
        .collect();
    let detections = records
        .iter()
        .flat_map(|a| {
            (0..a.detections)
                .map(move |p| (format!("{}:{p}", a.alert_id), a.last_update, a.visible_from))
        })
        .collect();
    (alerts, detections)
}

/// Only the versions of `truth` at or after `from` (what a pull reaching back to `from` owes).
pub fn since(truth: &Truth, from: Timestamp) -> Truth {
    truth
        .iter()
        .filter(|(_, t, _)| *t >= from)
        .cloned()
        .collect()
}

/// The versions of `truth` that were current for the whole of some poll: visible at its start
/// (`lag_secs` included) and not replaced before its end.
pub fn observable(truth: &Truth, polls: &[Poll], lag_secs: i64) -> BTreeSet<(String, Timestamp)> {
    let lag = chrono::Duration::seconds(lag_secs);
    let mut by_item: BTreeMap<&str, Vec<(Timestamp, Timestamp)>> = BTreeMap::new();
    for (id, t, from) in truth {
        by_item.entry(id).or_default().push((*t, *from));
    }
    let mut surely = BTreeSet::new();
    for (id, versions) in &by_item {
        for (k, (t, from)) in versions.iter().enumerate() {
            let next = versions.get(k + 1).map(|(_, f)| *f);
            let seen = polls
                .iter()
                .any(|(start, end)| *from <= start.sub(lag) && next.is_none_or(|n| n > *end));
            if seen {
                surely.insert((id.to_string(), *t));
            }
        }
    }
    surely
}

/// Compares the store's `stream` of `tenant` with the truth: everything stored is in
/// `universe` (every version the emulator ever had), nothing is stored twice, and every
/// version of `due` that was current for a whole poll is stored. Returns how many that was.
pub fn check(
    store: &dyn Store,
    tenant: &str,
    stream: StreamKind,
    (universe, due): (&Truth, &Truth),
    polls: &[Poll],
    lag_secs: i64,
) -> usize {
    let truth_keys: BTreeSet<(String, Timestamp)> =
        universe.iter().map(|(id, t, _)| (id.clone(), *t)).collect();
    let rows = store
        .version_keys(&TenantId::canonical(tenant), stream)
        .expect("the store reads");
    let stored: BTreeSet<(String, Timestamp)> = rows.iter().cloned().collect();
    assert_eq!(
        stored.len(),
        rows.len(),
        "{tenant} {stream}: a version stored twice"
    );
    let invented: Vec<_> = stored.difference(&truth_keys).collect();
    assert!(
        invented.is_empty(),
        "{tenant} {stream}: stored versions the emulator never had: {:?}",
        &invented[..invented.len().min(10)]
    );
    let surely = observable(due, polls, lag_secs);
    let lost: Vec<_> = surely.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{tenant} {stream}: lost {} of {} observable versions: {:?}",
        lost.len(),
        surely.len(),
        &lost[..lost.len().min(10)]
    );
    surely.len()
}

/// Injects the sync scenarios' fault storm on each of `routes` (`"GET /api/incidents"`):
/// 503 8 %, 500 5 %, 429 with `Retry-After: 1` 1 %, 401 3 %, connection resets 5 %, bodies cut
/// off 5 %.
pub fn fault_storm(emu: &Emulator, routes: &[&str]) {
    let status = |status, retry_after_secs| Fault::Status {
        status,
        retry_after_secs,
    };
    for route in routes {
        for (fault, p) in [
            (status(503, None), 0.08),
            (status(500, None), 0.05),
            (status(429, Some(1)), 0.01),
            (status(401, None), 0.03),
            (Fault::Reset, 0.05),
            (Fault::Truncate, 0.05),
        ] {
            emu.state().add_fault(FaultRule {
                route: (*route).into(),
                sequence: vec![],
                fault: Some(fault),
                probability: Some(p),
            });
        }
    }
}
