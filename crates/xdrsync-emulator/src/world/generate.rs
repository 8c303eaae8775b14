//! What the world is made of: alert templates (titles, categories, MITRE techniques,
//! evidence), devices, users, analysts' comments, and how an incident is named from its alerts.

use super::*;

pub(super) const ANALYSTS: &[&str] = &[
    "secop1@contoso.com",
    "secop2@contoso.com",
    "soc-tier2@contoso.com",
    "Automation",
];
pub(super) const COMMENTS: &[&str] = &[
    "Investigating with the endpoint team",
    "User contacted, device isolated",
    "pen testing",
    "Escalated to tier 2",
];

pub(super) fn incident_name(alerts: &[EmuAlert]) -> String {
    let devices: usize = alerts.iter().map(|a| a.devices.len()).sum();
    let scope = match devices {
        0 => "involving one user".to_owned(),
        1 => "on one endpoint".to_owned(),
        n => format!("on {n} endpoints"),
    };
    if let [only] = alerts {
        format!("{} {scope}", only.template.title)
    } else {
        let mut cats: Vec<&str> = alerts.iter().map(|a| a.template.category_display).collect();
        cats.dedup();
        format!(
            "Multi-stage incident involving {} {scope}",
            cats.join(" & ")
        )
    }
}

/// A kind of alert the emulator makes.
#[derive(Debug)]
pub struct AlertTemplate {
    /// Title.
    pub title: &'static str,
    /// Description.
    pub description: &'static str,
    /// MITRE-aligned category.
    pub category: &'static str,
    category_display: &'static str,
    /// Legacy / Graph `serviceSource`.
    pub service_source: Member,
    /// Legacy / Graph `detectionSource`.
    pub detection_source: Member,
    /// The product the alert id is shaped after.
    pub id_style: IdStyle,
    /// MITRE techniques.
    pub mitre: &'static [&'static str],
    /// Threat family, if malware.
    pub threat_family: Option<&'static str>,
    /// Legacy `investigationState`.
    pub investigation_state: &'static str,
    /// Base severity.
    pub severity: Member,
    /// Whether the alert is about a device.
    pub on_device: bool,
    /// Entity kinds it carries.
    pub entities: &'static [&'static str],
}

/// Alert id shapes of the different products (defender-api.md §1.8).
#[derive(Clone, Copy, Debug)]
pub enum IdStyle {
    /// `da637349914833441527_393341063` (Defender for Endpoint).
    Mde,
    /// `fa` + GUID (Defender for Office 365).
    Mdo,
    /// `ca` + hex (Defender for Cloud Apps).
    Mda,
    /// `ad` + hex (Entra ID Protection).
    Aad,
}

/// The alert templates, after the documented examples.
pub static TEMPLATES: &[AlertTemplate] = &[
    AlertTemplate {
        title: "'Mimikatz' hacktool was detected",
        description: "Readily available tools, such as hacking programs, can be used by unauthorized individuals to spy on users.",
        category: "Malware",
        category_display: "Malware",
        service_source: m("MicrosoftDefenderATP", "microsoftDefenderForEndpoint"),
        detection_source: m("WindowsDefenderAv", "antivirus"),
        id_style: IdStyle::Mde,
        mitre: &[],
        threat_family: Some("Mimikatz"),
        investigation_state: "UnsupportedOs",
        severity: m("Low", "low"),
        on_device: true,
        entities: &["File"],
    },
    AlertTemplate {
        title: "Suspicious PowerShell command line",
        description: "A suspicious PowerShell activity was observed on the machine.",
        category: "Execution",
        category_display: "Execution",
        service_source: m("MicrosoftDefenderATP", "microsoftDefenderForEndpoint"),
        detection_source: m("EDR", "microsoftDefenderForEndpoint"),
        id_style: IdStyle::Mde,
        mitre: &["T1059.001", "T1086"],
        threat_family: None,
        investigation_state: "Running",
        severity: m("Medium", "medium"),
        on_device: true,
        entities: &["Process", "File", "User"],
    },
    AlertTemplate {
        title: "Ransomware activity",
        description: "The user uploaded files that might be infected with ransomware.",
        category: "Impact",
        category_display: "Impact",
        service_source: m("MicrosoftCloudAppSecurity", "microsoftDefenderForCloudApps"),
        detection_source: m("MCAS", "cloudAppSecurity"),
        id_style: IdStyle::Mda,
        mitre: &["T1486"],
        threat_family: None,
        investigation_state: "UnsupportedAlertType",
        severity: m("High", "high"),
        on_device: false,
        entities: &["User", "Ip"],
    },
    AlertTemplate {
        title: "Email reported by user as malware or phish",
        description: "This alert is triggered when any email message is reported as malware or phish by users.",
        category: "InitialAccess",
        category_display: "Initial access",
        service_source: m("OfficeATP", "microsoftDefenderForOffice365"),
        detection_source: m("OfficeATP", "microsoftDefenderForOffice365"),
        id_style: IdStyle::Mdo,
        mitre: &["T1566.001"],
        threat_family: None,
        investigation_state: "Queued",
        severity: m("Informational", "informational"),
        on_device: false,
        entities: &["MailBox", "MailMessage", "MailCluster", "Ip"],
    },
    AlertTemplate {
        title: "Unfamiliar sign-in properties",
        description: "The sign-in had properties not seen recently for the user.",
        category: "InitialAccess",
        category_display: "Initial access",
        service_source: m("AADIdentityProtection", "azureAdIdentityProtection"),
        detection_source: m("AAD", "azureAdIdentityProtection"),
        id_style: IdStyle::Aad,
        mitre: &["T1078"],
        threat_family: None,
        investigation_state: "UnsupportedAlertType",
        severity: m("Medium", "medium"),
        on_device: false,
        entities: &["User", "Ip"],
    },
    AlertTemplate {
        title: "Suspicious connection to a command and control server",
        description: "A process connected to a known command and control address.",
        category: "CommandAndControl",
        category_display: "Command and control",
        service_source: m("MicrosoftDefenderATP", "microsoftDefenderForEndpoint"),
        detection_source: m("EDR", "microsoftDefenderForEndpoint"),
        id_style: IdStyle::Mde,
        mitre: &["T1071.001"],
        threat_family: None,
        investigation_state: "PendingApproval",
        severity: m("High", "high"),
        on_device: true,
        entities: &["Process", "Ip", "Url"],
    },
];

pub(super) const USERS: &[(&str, &str)] = &[
    ("ben", "Ben Andrews"),
    ("nina", "Nina Patel"),
    ("joao", "João Silva"),
    ("yuki", "Yuki Tanaka"),
    ("amara", "Amara Okafor"),
];
pub(super) const OS_PLATFORMS: &[&str] = &[
    "Windows10",
    "Windows11",
    "WindowsServer2016",
    "WindowsServer2022",
];
pub(super) const OS_VERSIONS: &[&str] = &["1607", "22H2", "23H2"];
pub(super) const RISK_SCORES: &[&str] = &["Low", "Medium", "High"];
pub(super) const HOSTS: &[&str] = &[
    "user5cx",
    "finance-ws12",
    "dc01",
    "build-agent-7",
    "hr-laptop-3",
];

pub(super) fn make_alert(rng: &mut Rng, incident: u64, at: Timestamp) -> EmuAlert {
    let t = rng.pick(TEMPLATES);
    let id = match t.id_style {
        IdStyle::Mde => format!(
            "da{}_{}",
            637_000_000_000_000_000 + rng.below(999_999_999_999_999),
            rng.below(2_000_000_000)
        ),
        IdStyle::Mdo => format!("fa{}", rng.guid()),
        IdStyle::Mda => format!("ca{}", rng.hex(32).to_uppercase()),
        IdStyle::Aad => format!("ad{}", rng.hex(40)),
    };
    let (user, display) = *rng.pick(USERS);
    let (os_platform, version, risk_score) = (
        *rng.pick(OS_PLATFORMS),
        *rng.pick(OS_VERSIONS),
        *rng.pick(RISK_SCORES),
    );
    let device = t.on_device.then(|| Device {
        id: rng.hex(40),
        dns_name: format!("{}.corp.contoso.com", rng.pick(HOSTS)),
        os_platform,
        os_build: *rng.pick(&[14393, 19045, 22631, 20348]),
        version,
        rbac_group: *rng.pick(&[("WDATP-Ring0", 9), ("Servers", 12), ("Workstations", 4)]),
        risk_score,
        first_seen: at.sub(chrono::Duration::days(rng.range(30, 900) as i64)),
    });
    let device_id = device.as_ref().map(|d| d.id.clone());
    let ip = format!(
        "{}.{}.{}.{}",
        rng.range(20, 220),
        rng.below(255),
        rng.below(255),
        rng.range(1, 254)
    );
    let entities = t
        .entities
        .iter()
        .map(|kind| {
            let mut f: BTreeMap<&'static str, serde_json::Value> = BTreeMap::new();
            let mut set = |k: &'static str, v: serde_json::Value| {
                f.insert(k, v);
            };
            match *kind {
                "File" => {
                    set("sha1", rng.hex(40).into());
                    set("sha256", rng.hex(64).into());
                    set(
                        "fileName",
                        rng.pick(&["mimikatz.exe", "Detector.UnitTests.dll", "invoice.js"])
                            .to_string()
                            .into(),
                    );
                    set("filePath", "C:\\Users\\Public\\Downloads".into());
                }
                "Process" => {
                    set("processId", rng.range(1000, 30000).into());
                    set(
                        "processCommandLine",
                        "powershell.exe -nop -w hidden -enc SQBFAFgA".into(),
                    );
                    set(
                        "processCreationTime",
                        at.sub(chrono::Duration::seconds(40)).to_string().into(),
                    );
                    set("parentProcessId", rng.range(500, 999).into());
                    set(
                        "parentProcessCreationTime",
                        at.sub(chrono::Duration::hours(3)).to_string().into(),
                    );
                    set("sha1", rng.hex(40).into());
                    set("fileName", "powershell.exe".into());
                    set(
                        "filePath",
                        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0".into(),
                    );
                }
                "User" => {
                    set("accountName", user.into());
                    set("domainName", "CONTOSO".into());
                    set(
                        "userSid",
                        format!(
                            "S-1-5-21-1782978591-3418467001-1436487391-{}",
                            rng.range(1100, 9999)
                        )
                        .into(),
                    );
                    set("aadUserId", rng.guid().into());
                    set("userPrincipalName", format!("{user}@contoso.com").into());
                }
                "Ip" => set("ipAddress", ip.clone().into()),
                "Url" => set(
                    "url",
                    format!("hxxp://c2-{}.example.net/beacon", rng.hex(6)).into(),
                ),
                "MailBox" => {
                    set("mailboxDisplayName", display.into());
                    set("mailboxAddress", format!("{user}@contoso.com").into());
                    set("userPrincipalName", format!("{user}@contoso.com").into());
                }
                "MailMessage" => {
                    set("recipient", format!("{user}@contoso.com").into());
                    set("sender", "billing@fabrikam-invoices.example".into());
                    set("subject", "Overdue invoice #4471".into());
                    set("deliveryAction", "Delivered".into());
                }
                "MailCluster" => set("clusterBy", "Subject;P2SenderDomain;ContentType".into()),
                _ => {}
            }
            if let Some(d) = &device_id {
                f.insert("deviceId", d.clone().into());
            }
            Entity { kind, fields: f }
        })
        .collect();
    let _ = incident;
    EmuAlert {
        id,
        template: t,
        service_override: None,
        comments: Vec::new(),
        assigned_to: None,
        verdict: None,
        created: at,
        last_updated: at.add(chrono::Duration::milliseconds(rng.range(100, 900) as i64)),
        activity: (
            at.sub(chrono::Duration::minutes(3)),
            at.sub(chrono::Duration::minutes(2)),
        ),
        resolved: None,
        status: m("New", "new"),
        severity: t.severity,
        investigation_id: (t.investigation_state == "Running")
            .then(|| rng.range(1000, 99999) as u32),
        devices: device.into_iter().collect(),
        entities,
    }
}
