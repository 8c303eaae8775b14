//! Realism switches and protocol alternatives.
//!
//! Defaults follow Microsoft's documented behaviour. Where the documents mark something
//! uncertain, the documented reading is the default and the alternative is a switch here.

use serde::{Deserialize, Serialize};

use crate::render::BodyStyle;

/// How the emulated services behave.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Behaviour {
    /// Bodies as in the docs (`doc`: every entity key, nulls) or as live captures show (`live`).
    pub body_style: BodyStyle,
    /// Enforce the documented per-(app, tenant, API) quotas with 429 + `Retry-After`.
    pub rate_limits: bool,
    /// A change becomes visible to list calls this many seconds after its timestamp.
    pub ingestion_lag_secs: u64,
    /// Each change waits its own share of `ingestion_lag_secs` (0 up to all of it), so changes
    /// become visible out of order, as they do in production.
    pub ingestion_lag_varies: bool,
    /// Chance that a new incident shares the previous incident's exact timestamp.
    pub tie_probability: f64,
    /// Chance that a new incident is later merged into an earlier one (`Redirected`).
    pub merge_probability: f64,
    /// Incidents not updated for this many days disappear (Defender keeps 180).
    pub retention_days: u32,
    /// Emit newer enum members (`awaitingAction`, `microsoftSentinel`, …) that Graph hides
    /// behind `Prefer: include-unknown-enum-members`.
    pub enum_drift: bool,
    /// The legacy list API also returns `@odata.nextLink` (undocumented; off by default).
    pub xdr_next_link: bool,
    /// `@odata.nextLink` percent-encodes `$` in option names (`%24skip=`), as some proxies and
    /// SDK-rewritten links do. The service itself writes `$skip=` literally (off by default).
    pub next_link_encoded_dollar: bool,
    /// Sign-in and consent pages approve at once, without a browser (for tests).
    pub auto_approve: bool,
    /// Device-code polling interval, in seconds.
    pub device_code_interval_secs: u64,
    /// Graph lists refuse `$skip` above this with 400, as the security API does (500);
    /// `None` lifts the ceiling.
    pub graph_max_skip: Option<usize>,
    /// Graph `determination` uses the spellings of the one v1.0 doc page that lists
    /// `compromisedUser`, `clean` and `insufficientData`, instead of the SDK models'
    /// `compromisedAccount`, `notMalicious` and `notEnoughDataToValidate` (off by default:
    /// the SDK models are generated from the service's schema).
    pub determination_doc_spelling: bool,
    /// Graph `$expand=alerts` answers 500 when a page holds an incident with at least this
    /// many alerts (observed on large tenants; off by default).
    pub expand_fail_min_alerts: Option<usize>,
    /// Graph `runHuntingQuery` answers 400 when a result's rows come to more than this many
    /// bytes of JSON (the documented 50 MB).
    pub hunting_max_result_bytes: usize,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            body_style: BodyStyle::Doc,
            rate_limits: true,
            ingestion_lag_secs: 0,
            ingestion_lag_varies: false,
            tie_probability: 0.0,
            merge_probability: 0.0,
            retention_days: 180,
            enum_drift: false,
            xdr_next_link: false,
            next_link_encoded_dollar: false,
            auto_approve: false,
            device_code_interval_secs: 5,
            expand_fail_min_alerts: None,
            determination_doc_spelling: false,
            graph_max_skip: Some(500),
            hunting_max_result_bytes: 50_000_000,
        }
    }
}

impl Behaviour {
    /// The real world's mess, which `demo` and `emulator serve` show by default: each change
    /// becomes visible after its own share of up to two minutes of ingestion lag (so out of
    /// order), one new incident in twenty shares the previous one's exact timestamp, one in
    /// thirty is later merged into another (`Redirected`), and newer enum members appear now
    /// and then. Tests start from [`Behaviour::default`] (the documented, idealised service)
    /// and switch on what they test.
    pub fn realistic() -> Self {
        Behaviour {
            ingestion_lag_secs: 120,
            ingestion_lag_varies: true,
            tie_probability: 0.05,
            merge_probability: 0.03,
            enum_drift: true,
            ..Behaviour::default()
        }
    }

    /// Refuses settings the world cannot be built with: probabilities outside `[0, 1)` (a tie
    /// probability of 1 would make every new incident share the first one's instant, forever).
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("tie_probability", self.tie_probability),
            ("merge_probability", self.merge_probability),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!(
                    "behaviour.{name} must be at least 0 and below 1, not {p}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Behaviour;

    /// A tie probability of 1 would generate incidents at one instant forever: refused with
    /// the field's name, as is anything outside [0, 1).
    #[test]
    fn probabilities_outside_zero_to_one_are_refused() {
        assert!(Behaviour::default().validate().is_ok());
        for (tie, merge) in [(1.0, 0.0), (0.0, 1.5), (-0.1, 0.0), (f64::NAN, 0.0)] {
            let b = Behaviour {
                tie_probability: tie,
                merge_probability: merge,
                ..Behaviour::default()
            };
            let e = b.validate().unwrap_err();
            assert!(e.contains("probability"), "{e}");
        }
    }
}
