//! The emulated Defender data: one evolving incident history per tenant.
//!
//! A tenant's history is a pure function of its seed and the clock. Incident `k` is created at
//! `EPOCH + k·interval + jitter(k)` and carries a schedule of later updates (assignment, a new
//! alert, a comment, resolution). Asking for the tenant "now" applies every event up to now, so
//! two emulators with the same seed agree on every incident version, and a restarted emulator
//! shows the same incidents as before plus whatever happened in between, like a real tenant.
//! The history starts `history` before the emulator started; older incidents do not exist.
//!
//! One model feeds every API: `render` turns an [`EmuIncident`] into the legacy XDR shape or the
//! Graph shape, so an incident has the same identity and times through both.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use chrono::{TimeZone, Utc};
use serde::Serialize;
use xdrsync_model::Timestamp;

use crate::directory::TenantSpec;
use crate::rng::Rng;

mod generate;
mod members;

pub use generate::*;
pub use members::*;

/// Where every tenant's incident numbering starts: incident `k` is created around
/// `EPOCH + k / incidents_per_hour`.
fn epoch() -> Timestamp {
    Timestamp::from_datetime(
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default(),
    )
}

const TICKS_PER_SEC: i64 = 10_000_000;

/// A comment on an incident.
#[derive(Clone, Debug, Serialize)]
pub struct Comment {
    /// Text.
    pub comment: String,
    /// Author.
    pub created_by: String,
    /// When.
    pub created: Timestamp,
}

/// An entity (legacy) / evidence item (Graph) of an alert.
#[derive(Clone, Debug)]
pub struct Entity {
    /// Legacy `entityType`.
    pub kind: &'static str,
    /// Legacy entity fields that have values.
    pub fields: BTreeMap<&'static str, serde_json::Value>,
}

/// A device an alert is about.
#[derive(Clone, Debug)]
pub struct Device {
    /// `mdatpDeviceId`.
    pub id: String,
    /// `deviceDnsName`.
    pub dns_name: String,
    /// `osPlatform`.
    pub os_platform: &'static str,
    /// `osBuild`.
    pub os_build: u32,
    /// `version`.
    pub version: &'static str,
    /// `rbacGroupName` / `rbacGroupId`.
    pub rbac_group: (&'static str, u32),
    /// `riskScore`.
    pub risk_score: &'static str,
    /// `firstSeen`.
    pub first_seen: Timestamp,
}

/// An alert inside an incident.
#[derive(Clone, Debug)]
pub struct EmuAlert {
    /// `alertId`.
    pub id: String,
    /// Template it was made from.
    pub template: &'static AlertTemplate,
    /// A `serviceSource` other than the template's (enum drift).
    pub service_override: Option<Member>,
    /// Comments added through Graph.
    pub comments: Vec<Comment>,
    /// Owner of the alert.
    pub assigned_to: Option<String>,
    /// Classification and determination set on the alert itself.
    pub verdict: Option<(Member, Member)>,
    /// Created.
    pub created: Timestamp,
    /// Last updated.
    pub last_updated: Timestamp,
    /// First / last activity.
    pub activity: (Timestamp, Timestamp),
    /// Resolved time.
    pub resolved: Option<Timestamp>,
    /// Status: New, InProgress, Resolved.
    pub status: Member,
    /// Severity.
    pub severity: Member,
    /// Investigation id, if an automated investigation ran.
    pub investigation_id: Option<u32>,
    /// Devices.
    pub devices: Vec<Device>,
    /// Entities.
    pub entities: Vec<Entity>,
}

impl EmuAlert {
    /// An endpoint alert: listed by the MDE alerts API and exported by the SIEM API.
    pub fn is_mde(&self) -> bool {
        self.template.service_source.legacy == "MicrosoftDefenderATP"
    }
}

/// One incident as the emulator holds it.
#[derive(Clone, Debug)]
pub struct EmuIncident {
    /// `incidentId`.
    pub id: u64,
    /// `incidentName` / `displayName`.
    pub name: String,
    /// Created.
    pub created: Timestamp,
    /// Last update: part of the version identity.
    pub last_update: Timestamp,
    /// Status.
    pub status: Member,
    /// Severity.
    pub severity: Member,
    /// Classification.
    pub classification: Member,
    /// Determination.
    pub determination: Member,
    /// Owner.
    pub assigned_to: Option<String>,
    /// Custom tags.
    pub tags: Vec<String>,
    /// Comments.
    pub comments: Vec<Comment>,
    /// Why it was resolved (Graph `resolvingComment`, set by a PATCH).
    pub resolving_comment: Option<String>,
    /// Who changed it through the API last (`API-App:<app id>`, or the signed-in user).
    pub last_modified_by: Option<String>,
    /// Merged into.
    pub redirect: Option<u64>,
    /// Alerts.
    pub alerts: Vec<EmuAlert>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Update {
    Merge,
    Assign,
    AddAlert,
    Comment,
    RaiseSeverity,
    Resolve,
}

/// One version of one incident, as the ground truth records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionRecord {
    /// Incident id.
    pub incident_id: u64,
    /// Its last-update time for this version.
    pub last_update: Timestamp,
}

/// One version of one alert, as the ground truth records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertVersionRecord {
    /// Alert id.
    pub alert_id: String,
    /// The incident it belonged to in this version.
    pub incident_id: u64,
    /// Its last-update time for this version.
    pub last_update: Timestamp,
    /// The last-update time of the incident version that first carried it: the alert
    /// becomes visible with that incident version (ingestion lag applies to it).
    pub visible_from: Timestamp,
    /// Whether the MDE alerts API lists it (an endpoint alert).
    pub mde: bool,
    /// How many SIEM API detections it exports (one per entity, when it has a device).
    pub detections: usize,
}

/// The realism switches the history generator needs (from [`crate::Behaviour`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Realism {
    /// Chance that a new incident shares the previous one's timestamps exactly.
    pub tie_probability: f64,
    /// Chance that a new incident is later merged into the one before it.
    pub merge_probability: f64,
    /// Emit evolvable enum members (`awaitingAction`, `microsoftSentinel`).
    pub enum_drift: bool,
    /// Keep every version's snapshot (needed to show what was visible before ingestion lag).
    pub keep_history: bool,
    /// Each change gets its own ingestion lag, up to the configured one, so a change can
    /// become visible after a later change of another incident (as in production).
    pub lag_varies: bool,
}

/// One tenant's incidents and their history.
#[derive(Debug)]
pub struct TenantData {
    spec: TenantSpec,
    interval_ticks: i64,
    next_k: u64,
    /// Incidents by id.
    pub incidents: BTreeMap<u64, EmuIncident>,
    pending: BinaryHeap<Reverse<(Timestamp, u64, u8)>>,
    schedules: BTreeMap<u64, Vec<(Timestamp, Update)>>,
    /// Every version that ever existed, in the order they happened.
    pub versions: Vec<VersionRecord>,
    /// Every alert version that ever existed, in the order they happened.
    pub alert_versions: Vec<AlertVersionRecord>,
    /// `(last update, id)` of every incident's current version: list pages read a range of it
    /// instead of scanning the tenant.
    by_update: std::collections::BTreeSet<(Timestamp, u64)>,
    /// Each incident's current last-update time (its key in `by_update`).
    current: std::collections::HashMap<u64, Timestamp>,
    /// Each alert's newest recorded last-update time.
    alert_latest: std::collections::HashMap<String, Timestamp>,
    /// Next id for incidents created through the admin API (far above generated ids).
    next_custom: u64,
    realism: Realism,
    /// Created and first last-update time of the newest generated incident (for ties).
    last_initial: Option<(Timestamp, Timestamp)>,
    /// Every version's snapshot per incident, oldest first (only with `keep_history`).
    history: BTreeMap<u64, Vec<EmuIncident>>,
    /// Versions a caller's write made (PATCH, comment): `(id, lastUpdate)`. Ingestion lag
    /// models detections reaching the service; a write is applied to the incident itself, so
    /// it is read back at once (read-your-writes).
    written: std::collections::HashSet<(u64, Timestamp)>,
}

impl TenantData {
    /// A tenant whose history starts at `start`.
    pub fn new(spec: TenantSpec, start: Timestamp) -> Self {
        Self::with_realism(spec, start, Realism::default())
    }

    /// A tenant whose history starts at `start`, with realism switches.
    pub fn with_realism(spec: TenantSpec, start: Timestamp, realism: Realism) -> Self {
        let per_hour = spec.incidents_per_hour.max(0.001);
        let interval_ticks = ((3600.0 / per_hour) * TICKS_PER_SEC as f64) as i64;
        let from_epoch = (start.ticks() - epoch().ticks()).max(0);
        let next_k = (from_epoch / interval_ticks.max(1)) as u64 + 1;
        TenantData {
            spec,
            interval_ticks: interval_ticks.max(1),
            next_k,
            incidents: BTreeMap::new(),
            pending: BinaryHeap::new(),
            schedules: BTreeMap::new(),
            versions: Vec::new(),
            alert_versions: Vec::new(),
            alert_latest: std::collections::HashMap::new(),
            by_update: std::collections::BTreeSet::new(),
            current: std::collections::HashMap::new(),
            next_custom: 900_000_000,
            realism,
            last_initial: None,
            history: BTreeMap::new(),
            written: std::collections::HashSet::new(),
        }
    }

    /// The tenant's spec.
    pub fn spec(&self) -> &TenantSpec {
        &self.spec
    }

    fn creation_time(&self, k: u64) -> Timestamp {
        let mut rng = Rng::derive(self.spec.seed, k);
        let jitter = rng.below(self.interval_ticks as u64) as i64;
        Timestamp::from_ticks(epoch().ticks() + k as i64 * self.interval_ticks + jitter)
    }

    /// When the next generated incident is created, and the first last-update time it must
    /// share with the previous incident when it is a tie.
    fn next_creation(&self) -> (Timestamp, Option<Timestamp>) {
        let k = self.next_k;
        let mut rng = Rng::derive(self.spec.seed ^ 0x71E5, k);
        match self.last_initial {
            Some((created, lu))
                if self.realism.tie_probability > 0.0
                    && rng.chance(self.realism.tie_probability) =>
            {
                (created, Some(lu))
            }
            _ => (self.creation_time(k), None),
        }
    }

    /// The incidents as list calls see them at `now`: with ingestion `lag`, the newest version
    /// whose time is at least `lag` old (its own share of `lag` with `lag_varies`); incidents
    /// not updated within `retention` are gone.
    pub fn visible(
        &self,
        now: Timestamp,
        lag: chrono::Duration,
        retention: chrono::Duration,
    ) -> Vec<&EmuIncident> {
        let oldest = now.sub(retention);
        let settled = now.sub(lag);
        self.incidents
            .values()
            .filter_map(|inc| self.shown_version(inc, now, settled, lag))
            .filter(|i| i.last_update >= oldest)
            .collect()
    }

    /// The visible versions (as [`TenantData::visible`]) whose last-update time lies in
    /// `[from, to]`, ordered by `(last update, id)` (newest first unless `ascending`), lazily.
    ///
    /// A version at least `lag` old is shown whatever its own share of the lag, so every
    /// incident whose current version is that old is read from the time index in order; only
    /// the few changed within the last `lag` are resolved one by one, sorted and merged in. A
    /// list page thus costs what it reads, not a pass over the tenant.
    pub fn visible_in(
        &self,
        now: Timestamp,
        lag: chrono::Duration,
        (from, to): (Timestamp, Option<Timestamp>),
        ascending: bool,
    ) -> impl Iterator<Item = &EmuIncident> + '_ {
        use std::ops::Bound;
        let settled = now.sub(lag);
        let upper = to.map_or(settled, |t| t.min(settled));
        let old = self.current_in((Bound::Included(from), Bound::Included(upper)), ascending);
        let in_range =
            |i: &&EmuIncident| i.last_update >= from && to.is_none_or(|t| i.last_update <= t);
        let mut recent: Vec<&EmuIncident> = self
            .current_in((Bound::Excluded(settled), Bound::Unbounded), true)
            .filter_map(|inc| self.shown_version(inc, now, settled, lag))
            .filter(in_range)
            .collect();
        let key = |i: &EmuIncident| (i.last_update, i.id);
        recent.sort_by(|a, b| {
            let o = key(a).cmp(&key(b));
            if ascending { o } else { o.reverse() }
        });
        let mut old = old.peekable();
        let mut recent = recent.into_iter().peekable();
        std::iter::from_fn(move || match (old.peek(), recent.peek()) {
            (Some(a), Some(b)) => {
                let first_is_old = if ascending {
                    key(a) <= key(b)
                } else {
                    key(a) >= key(b)
                };
                if first_is_old {
                    old.next()
                } else {
                    recent.next()
                }
            }
            (Some(_), None) => old.next(),
            (None, _) => recent.next(),
        })
    }

    /// The version of the incident `inc` (its current one) that list calls see at `now`, if
    /// any: see [`TenantData::visible`]. `settled` is `now - lag`: a version that old is
    /// shown without drawing its share of the lag.
    fn shown_version<'a>(
        &'a self,
        inc: &'a EmuIncident,
        now: Timestamp,
        settled: Timestamp,
        lag: chrono::Duration,
    ) -> Option<&'a EmuIncident> {
        let seed = self.spec.seed;
        let varies = self.realism.lag_varies;
        let shown = |v: &EmuIncident| {
            if v.last_update <= settled || self.written.contains(&(v.id, v.last_update)) {
                return true;
            }
            if !varies {
                return false;
            }
            // A fixed share of the lag per version: the same answer on every call.
            let mut rng = Rng::derive(seed ^ 0x1A6, v.id ^ (v.last_update.ticks() as u64));
            let ticks = lag.num_milliseconds().max(0) as u64;
            v.last_update <= now.sub(chrono::Duration::milliseconds(rng.below(ticks + 1) as i64))
        };
        if shown(inc) {
            return Some(inc);
        }
        self.history.get(&inc.id)?.iter().rev().find(|v| shown(v))
    }

    /// The newest current last-update time of the tenant.
    pub fn newest(&self) -> Option<Timestamp> {
        self.by_update.last().map(|(t, _)| *t)
    }

    /// The current versions with a last-update time in `range`, newest first (or oldest first
    /// with `ascending`), lazily: a page reads only as far as it needs.
    pub fn current_in(
        &self,
        range: (std::ops::Bound<Timestamp>, std::ops::Bound<Timestamp>),
        ascending: bool,
    ) -> Box<dyn Iterator<Item = &EmuIncident> + '_> {
        use std::ops::Bound;
        let widen = |b: Bound<Timestamp>, id: u64| match b {
            Bound::Included(t) => Bound::Included((t, id)),
            Bound::Excluded(t) => Bound::Excluded((t, id)),
            Bound::Unbounded => Bound::Unbounded,
        };
        // Inclusive bounds take every id at the boundary instant.
        let lower = match range.0 {
            Bound::Excluded(t) => widen(Bound::Excluded(t), u64::MAX),
            b => widen(b, 0),
        };
        let upper = match range.1 {
            Bound::Excluded(t) => widen(Bound::Excluded(t), 0),
            b => widen(b, u64::MAX),
        };
        // `BTreeSet::range` panics on an inverted range; an empty window is just empty.
        let key = |b: &Bound<(Timestamp, u64)>| match b {
            Bound::Included(k) | Bound::Excluded(k) => Some(*k),
            Bound::Unbounded => None,
        };
        if let (Some(l), Some(u)) = (key(&lower), key(&upper)) {
            let both_in =
                matches!(lower, Bound::Included(_)) && matches!(upper, Bound::Included(_));
            if l > u || (l == u && !both_in) {
                return Box::new(std::iter::empty());
            }
        }
        let keys = self.by_update.range((lower, upper));
        let get = move |(_, id): &(Timestamp, u64)| self.incidents.get(id);
        if ascending {
            Box::new(keys.filter_map(get))
        } else {
            Box::new(keys.rev().filter_map(get))
        }
    }

    fn record(&mut self, id: u64) {
        let Some(inc) = self.incidents.get(&id) else {
            return;
        };
        self.versions.push(VersionRecord {
            incident_id: id,
            last_update: inc.last_update,
        });
        if let Some(old) = self.current.insert(id, inc.last_update) {
            self.by_update.remove(&(old, id));
        }
        self.by_update.insert((inc.last_update, id));
        for a in &inc.alerts {
            if self.alert_latest.get(&a.id) != Some(&a.last_updated) {
                self.alert_latest.insert(a.id.clone(), a.last_updated);
                self.alert_versions.push(AlertVersionRecord {
                    alert_id: a.id.clone(),
                    incident_id: id,
                    last_update: a.last_updated,
                    visible_from: inc.last_update,
                    mde: a.is_mde(),
                    detections: if a.is_mde() && !a.devices.is_empty() {
                        a.entities.len()
                    } else {
                        0
                    },
                });
            }
        }
        if self.realism.keep_history {
            let snapshot = inc.clone();
            self.history.entry(id).or_default().push(snapshot);
        }
    }

    /// Applies every creation and update that happened at or before `now`.
    pub fn advance_to(&mut self, now: Timestamp) {
        loop {
            let (created, tie) = self.next_creation();
            let update = self.pending.peek().map(|Reverse(p)| *p);
            match update {
                Some((at, id, idx)) if at <= now && at < created => {
                    self.pending.pop();
                    self.apply(id, idx as usize, at);
                }
                _ if created <= now => {
                    let k = self.next_k;
                    self.next_k += 1;
                    self.create(k, created, tie);
                }
                _ => break,
            }
        }
    }

    /// Creates `count` incidents at `now` (admin API); returns their ids.
    pub fn create_now(&mut self, now: Timestamp, count: u32) -> Vec<u64> {
        self.advance_to(now);
        (0..count)
            .map(|_| {
                let id = self.next_custom;
                self.next_custom += 1;
                // Created a moment ago, so its first version (created + < 0.4 s) is visible now.
                self.create(id, now.sub(chrono::Duration::seconds(1)), None);
                id
            })
            .collect()
    }

    fn create(&mut self, k: u64, created: Timestamp, tie: Option<Timestamp>) {
        let mut rng = Rng::derive(self.spec.seed ^ 0xC0FFEE, k);
        let id = k;
        let alert_count = 1 + rng.below(3) as usize;
        let mut alerts = Vec::with_capacity(alert_count);
        for i in 0..alert_count {
            let at = created.sub(chrono::Duration::milliseconds(300 + 97 * i as i64));
            alerts.push(make_alert(&mut rng, id, at));
        }
        let severity = alerts
            .iter()
            .map(|a| a.severity)
            .max_by_key(|s| sev_rank(*s))
            .unwrap_or(SEVERITIES[1]);
        let name = incident_name(&alerts);
        let last_update = created.add(chrono::Duration::milliseconds(rng.range(50, 400) as i64));
        let last_update = tie.unwrap_or(last_update);
        if id < 900_000_000 {
            self.last_initial = Some((created, last_update));
        }
        if let Some(a) = alerts
            .first_mut()
            .filter(|_| self.realism.enum_drift && rng.chance(0.2))
        {
            a.service_override = Some(SENTINEL);
        }
        let incident = EmuIncident {
            id,
            name,
            created,
            last_update,
            status: status::ACTIVE,
            severity,
            classification: CLASS_UNKNOWN,
            determination: DET_NA,
            assigned_to: None,
            tags: Vec::new(),
            comments: Vec::new(),
            resolving_comment: None,
            last_modified_by: None,
            redirect: None,
            alerts,
        };
        // The update schedule: zero to three later changes, in time order.
        let n = rng.below(4) as usize;
        let mut schedule = Vec::with_capacity(n);
        let mut at = last_update;
        for i in 0..n {
            let minutes = match i {
                0 => rng.range(2, 90),
                1 => rng.range(60, 720),
                _ => rng.range(360, 2880),
            };
            at = at
                .add(chrono::Duration::seconds(
                    minutes as i64 * 60 + rng.below(60) as i64,
                ))
                .add(chrono::Duration::milliseconds(rng.below(1000) as i64));
            let kind = if i + 1 == n && n >= 2 {
                Update::Resolve
            } else {
                *rng.pick(&[
                    Update::Assign,
                    Update::AddAlert,
                    Update::Comment,
                    Update::RaiseSeverity,
                ])
            };
            schedule.push((at, kind));
        }
        if self.realism.merge_probability > 0.0 && rng.chance(self.realism.merge_probability) {
            let merge_at = at.add(chrono::Duration::minutes(rng.range(10, 240) as i64));
            schedule.push((merge_at, Update::Merge));
        }
        for (idx, (at, _)) in schedule.iter().enumerate() {
            self.pending.push(Reverse((*at, id, idx as u8)));
        }
        self.schedules.insert(id, schedule);
        self.incidents.insert(id, incident);
        self.record(id);
    }

    fn apply(&mut self, id: u64, idx: usize, at: Timestamp) {
        let Some(kind) = self
            .schedules
            .get(&id)
            .and_then(|s| s.get(idx))
            .map(|(_, k)| *k)
        else {
            return;
        };
        if kind == Update::Merge {
            self.merge(id, at);
            return;
        }
        let drift = self.realism.enum_drift;
        let Some(inc) = self.incidents.get_mut(&id) else {
            return;
        };
        if inc.status == status::REDIRECTED {
            // A merged incident no longer changes; its alerts live on in the target.
            return;
        }
        let mut rng = Rng::derive(self.spec.seed ^ 0xA11CE, id * 8 + idx as u64);
        match kind {
            Update::Merge => {}
            Update::Assign => {
                inc.assigned_to = Some(rng.pick(ANALYSTS).to_string());
                inc.status = if drift && rng.chance(0.3) {
                    AWAITING_ACTION
                } else {
                    status::IN_PROGRESS
                };
            }
            Update::AddAlert => {
                let alert = make_alert(&mut rng, id, at);
                if sev_rank(alert.severity) > sev_rank(inc.severity) {
                    inc.severity = alert.severity;
                }
                inc.alerts.push(alert);
                inc.name = incident_name(&inc.alerts);
            }
            Update::Comment => inc.comments.push(Comment {
                comment: rng.pick(COMMENTS).to_string(),
                created_by: rng.pick(ANALYSTS).to_string(),
                created: at,
            }),
            Update::RaiseSeverity => {
                let rank = (sev_rank(inc.severity) + 1).min(SEVERITIES.len() - 1);
                inc.severity = SEVERITIES.get(rank).copied().unwrap_or(inc.severity);
                if !inc.tags.iter().any(|t| t == "Escalated") {
                    inc.tags.push("Escalated".into());
                }
            }
            Update::Resolve => {
                inc.status = status::RESOLVED;
                if rng.chance(0.7) {
                    inc.classification = CLASS_TP;
                    inc.determination = *rng.pick(&DET_TP);
                } else {
                    inc.classification = CLASS_FP;
                    inc.determination = *rng.pick(&DET_FP);
                }
                if inc.assigned_to.is_none() {
                    inc.assigned_to = Some(rng.pick(ANALYSTS).to_string());
                }
                for a in &mut inc.alerts {
                    a.status = m("Resolved", "resolved");
                    a.resolved = Some(at);
                    a.last_updated = at;
                }
            }
        }
        inc.last_update = at;
        self.record(id);
    }

    /// Changes incident `id` at `now` through `f` (a PATCH): a new version, whose time is
    /// after the previous one. `None` if there is no such incident.
    pub fn patch(
        &mut self,
        id: u64,
        now: Timestamp,
        f: impl FnOnce(&mut EmuIncident) -> Result<(), String>,
    ) -> Option<Result<EmuIncident, String>> {
        let inc = self.incidents.get_mut(&id)?;
        let mut changed = inc.clone();
        if let Err(e) = f(&mut changed) {
            return Some(Err(e));
        }
        changed.last_update = now.max(inc.last_update.add(chrono::Duration::milliseconds(1)));
        *inc = changed.clone();
        self.written.insert((id, changed.last_update));
        self.record(id);
        Some(Ok(changed))
    }

    /// Merges incident `id` into the newest earlier incident that is not merged itself:
    /// `status` becomes `Redirected` with `redirectIncidentId`, and its alerts move over.
    fn merge(&mut self, id: u64, at: Timestamp) {
        let target = self
            .incidents
            .range(..id)
            .rev()
            .find(|(_, i)| i.status != status::REDIRECTED)
            .map(|(t, _)| *t);
        let (Some(target), Some(source)) = (target, self.incidents.get_mut(&id)) else {
            return;
        };
        if source.status == status::REDIRECTED {
            return;
        }
        let mut alerts = std::mem::take(&mut source.alerts);
        // Correlated into another incident: the alert itself changed (its `incidentId`).
        for a in &mut alerts {
            a.last_updated = a.last_updated.max(at);
        }
        source.status = status::REDIRECTED;
        source.redirect = Some(target);
        source.last_update = at;
        if let Some(t) = self.incidents.get_mut(&target) {
            t.alerts.extend(alerts);
            t.name = incident_name(&t.alerts);
            t.last_update = at;
        }
        self.record(target);
        self.record(id);
    }
}

fn sev_rank(s: Member) -> usize {
    SEVERITIES.iter().position(|x| *x == s).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TenantSpec {
        TenantSpec::named("Contoso", 4.0)
    }

    #[test]
    fn same_seed_same_history_regardless_of_when_asked() {
        let start: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        let end: Timestamp = "2026-11-03T00:00:00Z".parse().unwrap();
        let mut once = TenantData::new(spec(), start);
        once.advance_to(end);
        let mut stepwise = TenantData::new(spec(), start);
        let mut t = start;
        while t < end {
            t = t.add(chrono::Duration::minutes(37));
            stepwise.advance_to(t.min(end));
        }
        assert_eq!(once.versions, stepwise.versions);
        assert!(once.incidents.len() > 150, "{}", once.incidents.len());
        assert!(once.versions.len() > once.incidents.len());
        for inc in once.incidents.values() {
            assert!(inc.last_update >= inc.created);
            assert!(inc.last_update <= end);
        }
    }

    /// `visible_in` reads the time index and merges the recently changed incidents in; it
    /// must list exactly what a pass over every incident (`visible`), filtered to the range
    /// and sorted, lists: for each lag (none, fixed, varying), window and order, at many
    /// instants including ones inside the lag of fresh changes.
    #[test]
    fn visible_in_lists_what_a_full_pass_lists_in_order() {
        let start: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        let retention = chrono::Duration::days(180);
        for (lag_secs, varies) in [(0, false), (600, false), (600, true), (7200, true)] {
            let realism = Realism {
                keep_history: true,
                lag_varies: varies,
                tie_probability: 0.3,
                ..Realism::default()
            };
            let mut d =
                TenantData::with_realism(TenantSpec::named("Contoso", 40.0), start, realism);
            let lag = chrono::Duration::seconds(lag_secs);
            let mut now = start;
            for step in 0..12 {
                now = now.add(chrono::Duration::minutes(53));
                d.advance_to(now);
                // Some reads land just after changes, some in the middle of the lag.
                let at = now.sub(chrono::Duration::seconds(step * 97 % 900));
                let all = d.visible(at, lag, retention);
                let windows = [
                    (start, None),
                    (at.sub(chrono::Duration::minutes(90)), None),
                    (
                        start.add(chrono::Duration::minutes(60)),
                        Some(at.sub(chrono::Duration::minutes(20))),
                    ),
                    (at, Some(at.sub(chrono::Duration::hours(1)))),
                ];
                for (from, to) in windows {
                    for ascending in [true, false] {
                        let mut want: Vec<(Timestamp, u64)> = all
                            .iter()
                            .filter(|i| {
                                i.last_update >= from && to.is_none_or(|t| i.last_update <= t)
                            })
                            .map(|i| (i.last_update, i.id))
                            .collect();
                        want.sort();
                        if !ascending {
                            want.reverse();
                        }
                        let got: Vec<(Timestamp, u64)> = d
                            .visible_in(at, lag, (from, to), ascending)
                            .map(|i| (i.last_update, i.id))
                            .collect();
                        assert_eq!(
                            got, want,
                            "lag {lag_secs}s varies {varies} step {step} from {from} to {to:?} ascending {ascending}"
                        );
                    }
                }
            }
            assert!(d.incidents.len() > 300, "{}", d.incidents.len());
        }
    }

    #[test]
    fn later_start_sees_same_incidents() {
        let a_start: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        let b_start: Timestamp = "2026-11-01T06:00:00Z".parse().unwrap();
        let end: Timestamp = "2026-11-02T00:00:00Z".parse().unwrap();
        let mut a = TenantData::new(spec(), a_start);
        let mut b = TenantData::new(spec(), b_start);
        a.advance_to(end);
        b.advance_to(end);
        let b_first = *b.incidents.keys().next().unwrap();
        for (id, inc) in &b.incidents {
            let other = &a.incidents[id];
            assert_eq!(inc.created, other.created, "incident {id}");
            assert_eq!(inc.last_update, other.last_update, "incident {id}");
        }
        assert!(b_first > *a.incidents.keys().next().unwrap());
    }
}
