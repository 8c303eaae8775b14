//! Rate limits per (app, tenant, API), at the documented quotas.
//!
//! | quota | limits | source |
//! |---|---|---|
//! | XDR list incidents | 50/min and 1,500/h | defender-api.md §1.5 |
//! | XDR get incident | 100/min and 1,500/h | §1.5 |
//! | XDR update incident | 50/min and 1,500/h | §1.5 |
//! | MDE alerts | 100/min and 1,500/h | §3.2 |
//! | advanced hunting | 45/min and 1,500/h | §4 |
//! | Graph security | 150/min | §2.4 (the documented `/security` limit; incidents are not named) |
//!
//! Windows slide over the emulator clock, so `--time-scale` shortens them. Refused calls count
//! too: Microsoft's guidance is that retrying sooner keeps the computed rate high for longer.

use std::collections::{HashMap, VecDeque};

use xdrsync_model::Timestamp;

/// A quota family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Quota {
    XdrList,
    XdrGet,
    XdrUpdate,
    Mde,
    Hunting,
    Graph,
}

impl Quota {
    /// `(window in seconds, calls allowed in it)`.
    fn windows(self) -> &'static [(i64, usize)] {
        match self {
            Quota::XdrList | Quota::XdrUpdate => &[(60, 50), (3600, 1500)],
            Quota::XdrGet | Quota::Mde => &[(60, 100), (3600, 1500)],
            Quota::Hunting => &[(60, 45), (3600, 1500)],
            Quota::Graph => &[(60, 150)],
        }
    }
}

/// A refusal: wait this many emulator seconds; the window and its limit, for the message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exceeded {
    pub(crate) retry_after_secs: i64,
    pub(crate) window_secs: i64,
    pub(crate) limit: usize,
}

/// Call history per (client id, tenant, quota).
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    calls: HashMap<(String, String, Quota), VecDeque<Timestamp>>,
}

impl Limiter {
    /// Records a call at `now` and says whether it is over a quota.
    pub(crate) fn check(
        &mut self,
        app: &str,
        tenant: &str,
        quota: Quota,
        now: Timestamp,
    ) -> Result<(), Exceeded> {
        let windows = quota.windows();
        let longest = windows.iter().map(|w| w.0).max().unwrap_or(60);
        let calls = self
            .calls
            .entry((app.to_ascii_lowercase(), tenant.to_ascii_lowercase(), quota))
            .or_default();
        let horizon = now.sub(chrono::Duration::seconds(longest));
        while calls.front().is_some_and(|t| *t <= horizon) {
            calls.pop_front();
        }
        let mut verdict = Ok(());
        for &(window, limit) in windows {
            let start = now.sub(chrono::Duration::seconds(window));
            let in_window: Vec<&Timestamp> = calls.iter().filter(|t| **t > start).collect();
            if in_window.len() >= limit {
                // The call that frees a slot is the oldest one still counted.
                let Some(oldest) = in_window.get(in_window.len() - limit).copied() else {
                    continue;
                };
                let frees_at = oldest.add(chrono::Duration::seconds(window));
                let wait = (frees_at.ticks() - now.ticks() + 9_999_999) / 10_000_000;
                verdict = Err(Exceeded {
                    retry_after_secs: wait.max(1),
                    window_secs: window,
                    limit,
                });
                break;
            }
        }
        calls.push_back(now);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifty_per_minute_then_refused_with_the_wait() {
        let mut l = Limiter::default();
        let t0: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        for i in 0..50 {
            assert!(
                l.check(
                    "a",
                    "t",
                    Quota::XdrList,
                    t0.add(chrono::Duration::milliseconds(i * 100))
                )
                .is_ok()
            );
        }
        let e = l
            .check(
                "a",
                "t",
                Quota::XdrList,
                t0.add(chrono::Duration::seconds(10)),
            )
            .unwrap_err();
        assert_eq!((e.retry_after_secs, e.window_secs, e.limit), (50, 60, 50));
        // Another tenant or app has its own budget.
        assert!(l.check("a", "u", Quota::XdrList, t0).is_ok());
        assert!(l.check("b", "t", Quota::XdrList, t0).is_ok());
        // A minute later the window has moved on.
        assert!(
            l.check(
                "a",
                "t",
                Quota::XdrList,
                t0.add(chrono::Duration::seconds(75))
            )
            .is_ok()
        );
    }
}

#[cfg(test)]
mod quota_table {
    use super::*;

    /// Each documented quota: how many calls fit in a minute, then a 429.
    #[test]
    fn every_quota_per_minute() {
        let t0: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        for (quota, per_minute) in [
            (Quota::XdrList, 50),
            (Quota::XdrGet, 100),
            (Quota::XdrUpdate, 50),
            (Quota::Mde, 100),
            (Quota::Hunting, 45),
            (Quota::Graph, 150),
        ] {
            let mut l = Limiter::default();
            for i in 0..per_minute {
                assert!(
                    l.check("a", "t", quota, t0.add(chrono::Duration::milliseconds(i)))
                        .is_ok(),
                    "{quota:?} call {i}"
                );
            }
            assert!(
                l.check("a", "t", quota, t0.add(chrono::Duration::seconds(1)))
                    .is_err(),
                "{quota:?}"
            );
        }
    }

    /// 1,500 an hour: spread out so no minute is full, the hour still fills.
    #[test]
    fn fifteen_hundred_an_hour() {
        let t0: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        let mut l = Limiter::default();
        for i in 0..1500 {
            assert!(
                l.check(
                    "a",
                    "t",
                    Quota::XdrList,
                    t0.add(chrono::Duration::milliseconds(i * 2000))
                )
                .is_ok(),
                "call {i}"
            );
        }
        let e = l
            .check(
                "a",
                "t",
                Quota::XdrList,
                t0.add(chrono::Duration::seconds(3001)),
            )
            .unwrap_err();
        assert_eq!(e.window_secs, 3600);
    }
}
