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
    m("CompromisedUser", "compromisedAccount"),
];
pub(super) const DET_FP: [Member; 2] = [
    m("Clean", "notMalicious"),
    m("InsufficientData", "notEnoughDataToValidate"),
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
/// Determinations, with the legacy PATCH page's alternative spellings accepted too. The Graph
/// spellings are those of Microsoft's generated SDK models (`alertDetermination`).
pub const DETERMINATIONS: &[Member] = &[
    DET_NA,
    m("Apt", "apt"),
    m("Malware", "malware"),
    m("SecurityPersonnel", "securityPersonnel"),
    m("SecurityTesting", "securityTesting"),
    m("UnwantedSoftware", "unwantedSoftware"),
    m("Other", "other"),
    m("MultiStagedAttack", "multiStagedAttack"),
    m("CompromisedUser", "compromisedAccount"),
    m("CompromisedAccount", "compromisedAccount"),
    m("Phishing", "phishing"),
    m("MaliciousUserActivity", "maliciousUserActivity"),
    m("Clean", "notMalicious"),
    m("InsufficientData", "notEnoughDataToValidate"),
    m("NoEnoughDataToValidate", "notEnoughDataToValidate"),
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

/// The Graph spelling of a determination: the SDK models' (`compromisedAccount`,
/// `notMalicious`, `notEnoughDataToValidate`), or with `doc` the one v1.0 page's
/// (`compromisedUser`, `clean`, `insufficientData`; `[behaviour] determination_doc_spelling`).
pub fn graph_determination(member: Member, doc: bool) -> &'static str {
    match (doc, member.graph) {
        (true, "compromisedAccount") => "compromisedUser",
        (true, "notMalicious") => "clean",
        (true, "notEnoughDataToValidate") => "insufficientData",
        (_, g) => g,
    }
}

/// The determination a Graph PATCH names, in the spelling the service speaks (`doc` as in
/// [`graph_determination`]); the other spelling is no member, as on the real service.
pub fn find_graph_determination(text: &str, doc: bool) -> Option<Member> {
    DETERMINATIONS
        .iter()
        .copied()
        .find(|m| graph_determination(*m, doc).eq_ignore_ascii_case(text))
}

/// Graph enum types as Microsoft's generated SDK models declare them (member order is the
/// order `gt`/`ge`/`lt`/`le` compare by).
pub mod graph_enums {
    /// `microsoft.graph.security.incidentStatus`.
    pub const INCIDENT_STATUS: &[&str] = &[
        "active",
        "resolved",
        "inProgress",
        "redirected",
        "unknownFutureValue",
        "awaitingAction",
    ];
    /// `microsoft.graph.security.alertStatus`.
    pub const ALERT_STATUS: &[&str] = &[
        "unknown",
        "new",
        "inProgress",
        "resolved",
        "unknownFutureValue",
    ];
    /// `microsoft.graph.security.alertSeverity`.
    pub const SEVERITY: &[&str] = &[
        "unknown",
        "informational",
        "low",
        "medium",
        "high",
        "unknownFutureValue",
    ];
    /// `microsoft.graph.security.alertClassification`.
    pub const CLASSIFICATION: &[&str] = &[
        "unknown",
        "falsePositive",
        "truePositive",
        "informationalExpectedActivity",
        "unknownFutureValue",
    ];
    /// `microsoft.graph.security.alertDetermination`.
    pub const DETERMINATION: &[&str] = &[
        "unknown",
        "apt",
        "malware",
        "securityPersonnel",
        "securityTesting",
        "unwantedSoftware",
        "other",
        "multiStagedAttack",
        "compromisedAccount",
        "phishing",
        "maliciousUserActivity",
        "notMalicious",
        "notEnoughDataToValidate",
        "confirmedActivity",
        "lineOfBusinessApplication",
        "unknownFutureValue",
    ];
    /// [`DETERMINATION`] as the one v1.0 doc page spells it.
    pub const DETERMINATION_DOC: &[&str] = &[
        "unknown",
        "apt",
        "malware",
        "securityPersonnel",
        "securityTesting",
        "unwantedSoftware",
        "other",
        "multiStagedAttack",
        "compromisedUser",
        "phishing",
        "maliciousUserActivity",
        "clean",
        "insufficientData",
        "confirmedActivity",
        "lineOfBusinessApplication",
        "unknownFutureValue",
    ];
    /// `microsoft.graph.security.serviceSource`.
    pub const SERVICE_SOURCE: &[&str] = &[
        "unknown",
        "microsoftDefenderForEndpoint",
        "microsoftDefenderForIdentity",
        "microsoftDefenderForCloudApps",
        "microsoftDefenderForOffice365",
        "microsoft365Defender",
        "azureAdIdentityProtection",
        "microsoftAppGovernance",
        "dataLossPrevention",
        "unknownFutureValue",
        "microsoftDefenderForCloud",
        "microsoftSentinel",
        "microsoftInsiderRiskManagement",
    ];
    /// `microsoft.graph.security.detectionSource`.
    pub const DETECTION_SOURCE: &[&str] = &[
        "unknown",
        "microsoftDefenderForEndpoint",
        "antivirus",
        "smartScreen",
        "customTi",
        "microsoftDefenderForOffice365",
        "automatedInvestigation",
        "microsoftThreatExperts",
        "customDetection",
        "microsoftDefenderForIdentity",
        "cloudAppSecurity",
        "microsoft365Defender",
        "azureAdIdentityProtection",
        "manual",
        "microsoftDataLossPrevention",
        "appGovernancePolicy",
        "appGovernanceDetection",
        "unknownFutureValue",
        "microsoftDefenderForCloud",
        "microsoftDefenderForIoT",
        "microsoftDefenderForServers",
        "microsoftDefenderForStorage",
        "microsoftDefenderForDNS",
        "microsoftDefenderForDatabases",
        "microsoftDefenderForContainers",
        "microsoftDefenderForNetwork",
        "microsoftDefenderForAppService",
        "microsoftDefenderForKeyVault",
        "microsoftDefenderForResourceManager",
        "microsoftDefenderForApiManagement",
        "nrtAlerts",
        "scheduledAlerts",
        "microsoftDefenderThreatIntelligenceAnalytics",
        "builtInMl",
        "microsoftInsiderRiskManagement",
        "microsoftThreatIntelligence",
        "microsoftSentinel",
    ];
    /// `microsoft.graph.security.evidenceVerdict`.
    pub const EVIDENCE_VERDICT: &[&str] = &[
        "unknown",
        "suspicious",
        "malicious",
        "noThreatsFound",
        "unknownFutureValue",
    ];
    /// `microsoft.graph.security.evidenceRemediationStatus`.
    pub const EVIDENCE_REMEDIATION_STATUS: &[&str] = &[
        "none",
        "remediated",
        "prevented",
        "blocked",
        "notFound",
        "unknownFutureValue",
        "active",
        "pendingApproval",
        "declined",
        "unremediated",
        "running",
        "partiallyRemediated",
    ];
    /// `microsoft.graph.security.evidenceRole`.
    pub const EVIDENCE_ROLE: &[&str] = &[
        "unknown",
        "contextual",
        "scanned",
        "source",
        "destination",
        "created",
        "added",
        "compromised",
        "edited",
        "attacked",
        "attacker",
        "commandAndControl",
        "loaded",
        "suspicious",
        "policyViolator",
        "unknownFutureValue",
    ];
}
