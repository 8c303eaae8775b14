//! The enum members both APIs spell (legacy `TruePositive`, Graph `truePositive`): statuses,
//! severities, classifications, determinations, and the lists the emulator picks from.

/// An enum member with its legacy (PascalCase) and Graph (camelCase) spellings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Legacy XDR spelling.
    pub legacy: &'static str,
    /// Graph spelling.
    pub graph: &'static str,
}

pub(super) const fn m(legacy: &'static str, graph: &'static str) -> Member {
    Member { legacy, graph }
}

/// Incident statuses.
pub mod status {
    use super::{Member, m};
    /// Active.
    pub const ACTIVE: Member = m("Active", "active");
    /// In progress.
    pub const IN_PROGRESS: Member = m("InProgress", "inProgress");
    /// Resolved.
    pub const RESOLVED: Member = m("Resolved", "resolved");
    /// Merged into another incident.
    pub const REDIRECTED: Member = m("Redirected", "redirected");
}

pub(super) const SEVERITIES: [Member; 4] = [
    m("Informational", "informational"),
    m("Low", "low"),
    m("Medium", "medium"),
    m("High", "high"),
];
pub(crate) const CLASS_UNKNOWN: Member = m("Unknown", "unknown");
pub(super) const CLASS_TP: Member = m("TruePositive", "truePositive");
pub(super) const CLASS_FP: Member = m("FalsePositive", "falsePositive");
pub(crate) const DET_NA: Member = m("NotAvailable", "unknown");
pub(super) const DET_TP: [Member; 4] = [
    m("Malware", "malware"),
    m("Phishing", "phishing"),
    m("MultiStagedAttack", "multiStagedAttack"),
    m("CompromisedUser", "compromisedUser"),
];
pub(super) const DET_FP: [Member; 2] = [
    m("Clean", "clean"),
    m("InsufficientData", "insufficientData"),
];

/// Incident statuses a PATCH may set.
pub const STATUSES: &[Member] = &[
    status::ACTIVE,
    status::IN_PROGRESS,
    status::RESOLVED,
    status::REDIRECTED,
    AWAITING_ACTION,
];
/// Classifications.
pub const CLASSIFICATIONS: &[Member] = &[
    CLASS_UNKNOWN,
    CLASS_FP,
    CLASS_TP,
    m(
        "InformationalExpectedActivity",
        "informationalExpectedActivity",
    ),
];
/// Determinations, with the legacy PATCH page's alternative spellings accepted too.
pub const DETERMINATIONS: &[Member] = &[
    DET_NA,
    m("Apt", "apt"),
    m("Malware", "malware"),
    m("SecurityPersonnel", "securityPersonnel"),
    m("SecurityTesting", "securityTesting"),
    m("UnwantedSoftware", "unwantedSoftware"),
    m("Other", "other"),
    m("MultiStagedAttack", "multiStagedAttack"),
    m("CompromisedUser", "compromisedUser"),
    m("CompromisedAccount", "compromisedUser"),
    m("Phishing", "phishing"),
    m("MaliciousUserActivity", "maliciousUserActivity"),
    m("Clean", "clean"),
    m("InsufficientData", "insufficientData"),
    m("NoEnoughDataToValidate", "insufficientData"),
    m("ConfirmedUserActivity", "confirmedActivity"),
    m("ConfirmedActivity", "confirmedActivity"),
    m("LineOfBusinessApplication", "lineOfBusinessApplication"),
];
/// Alert statuses.
pub const ALERT_STATUSES: &[Member] = &[
    m("New", "new"),
    m("InProgress", "inProgress"),
    m("Resolved", "resolved"),
];

/// Finds a member by its legacy (`graph = false`) or Graph spelling, ignoring case.
pub fn find(list: &[Member], text: &str, graph: bool) -> Option<Member> {
    list.iter().copied().find(|m| {
        if graph {
            m.graph.eq_ignore_ascii_case(text)
        } else {
            m.legacy.eq_ignore_ascii_case(text)
        }
    })
}

/// Evolvable members Graph hides without `Prefer: include-unknown-enum-members`.
pub const AWAITING_ACTION: Member = m("AwaitingAction", "awaitingAction");
/// An evolvable `serviceSource`.
pub const SENTINEL: Member = m("MicrosoftSentinel", "microsoftSentinel");
