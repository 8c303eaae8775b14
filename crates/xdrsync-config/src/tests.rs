use std::path::Path;

use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("/etc/xdrsync/xdrsync.toml"))
}

#[test]
fn shipped_example_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/xdrsync.toml");
    let config = Config::load(&path).unwrap();
    assert_eq!(config.tenants.len(), 5);
    assert!(config.tenant("fabrikam").unwrap().delegated);
    assert!(matches!(
        config.tenant("woodgrove").unwrap().credential,
        CredentialSource::Certificate(_)
    ));
    assert_eq!(config.hunts.len(), 1);
    let hunt = &config.hunts[0];
    assert_eq!(hunt.interval, std::time::Duration::from_secs(3600));
    assert_eq!(hunt.timespan, chrono::Duration::days(1));
    assert_eq!(hunt.severity, xdrsync_model::Severity::High);
    assert_eq!(
        config.hunt_tenants(hunt).count(),
        config.tenants.iter().filter(|t| t.enabled).count()
    );
    let contoso = config.tenant("contoso").unwrap();
    assert_eq!(contoso.api, ApiKind::Graph);
    assert_eq!(contoso.client_id, "11111111-2222-3333-4444-555555555555");
    assert_eq!(
        contoso.endpoints.graph.as_str(),
        "https://graph.microsoft.com/"
    );
    assert_eq!(
        config.tenant("northwind").unwrap().token_version,
        TokenVersion::V1
    );
    let tailspin = config.tenant("tailspin").unwrap();
    let CredentialSource::Secret(secret) = &tailspin.credential else {
        panic!("a secret")
    };
    assert!(
        secret
            .file
            .as_ref()
            .unwrap()
            .ends_with("examples/config/secrets/tailspin.secret")
    );
}

#[test]
fn unknown_key_names_key_and_line() {
    let err = load("[sync]\ninitial_lookback_hours = 4\nlookback = 3\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/etc/xdrsync/xdrsync.toml"), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
    assert!(msg.contains("unknown field `lookback`"), "{msg}");
}

#[test]
fn wrong_type_names_the_key() {
    let err = load("[sync]\noverlap_secs = \"ten minutes\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("overlap_secs"), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");
}

macro_rules! invalid {
    ($name:ident, $toml:expr, $field:expr, $says:expr) => {
        #[test]
        fn $name() {
            match load($toml) {
                Err(ConfigError::Invalid { field, message, .. }) => {
                    assert_eq!(field, $field);
                    assert!(message.contains($says), "{message}");
                }
                other => panic!("expected an invalid-field error, got {other:?}"),
            }
        }
    };
}

const SECRET: &str = "client_secret = { env = \"S\" }";

invalid!(
    bad_tenant_id,
    &format!(
        "[[tenants]]\nname = \"a\"\ntenant_id = \"not a tenant\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\n{SECRET}\n"
    ),
    "tenants[0].tenant_id",
    "must be a GUID or a domain"
);
invalid!(
    common_is_not_a_tenant,
    &format!(
        "[[tenants]]\nname = \"a\"\ntenant_id = \"common\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\n{SECRET}\n"
    ),
    "tenants[0].tenant_id",
    "not a tenant"
);
invalid!(
    bad_client_id,
    &format!(
        "[[tenants]]\nname = \"a\"\ntenant_id = \"x.onmicrosoft.com\"\nclient_id = \"abc\"\n{SECRET}\n"
    ),
    "tenants[0].client_id",
    "must be a GUID"
);
invalid!(
    missing_secret,
    "[[tenants]]\nname = \"a\"\ntenant_id = \"x.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\n",
    "tenants[0].client_secret",
    "missing"
);
invalid!(
    inline_secret_refused,
    "[[tenants]]\nname = \"a\"\ntenant_id = \"x.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_secret = { value = \"hunter2\" }\n",
    "tenants[0].client_secret",
    "inline secrets are refused"
);
invalid!(
    unknown_app,
    "[[tenants]]\nname = \"a\"\ntenant_id = \"x.onmicrosoft.com\"\napp = \"nope\"\n",
    "tenants[0].app",
    "no [[apps]] entry is named `nope`"
);
invalid!(
    duplicate_tenant_names,
    &format!(
        "[[tenants]]\nname = \"a\"\ntenant_id = \"x.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\n{SECRET}\n[[tenants]]\nname = \"a\"\ntenant_id = \"y.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\n{SECRET}\n"
    ),
    "tenants[1].name",
    "used twice"
);
invalid!(
    graph_top_above_50,
    "[sync]\ngraph_page_size = 100\n",
    "sync.graph_page_size",
    "must be 1..=50"
);
invalid!(
    connect_to_is_an_address_and_port,
    "[cloud]\nconnect_to = \"emulator\"\n",
    "cloud.connect_to",
    "is not an address:port"
);
invalid!(
    connect_to_is_not_used_with_a_proxy,
    "[cloud]\nconnect_to = \"127.0.0.1:8443\"\nproxy = \"http://proxy.corp:3128\"\n",
    "cloud.connect_to",
    "cannot be used with `proxy`"
);
invalid!(
    plain_http_only_on_loopback,
    "[cloud]\ngraph_url = \"http://graph.example.com\"\n",
    "cloud.graph_url",
    "must be https"
);

#[test]
fn inline_secret_allowed_when_asked_and_never_printed() {
    let config = load("allow_inline_secrets = true\n[[tenants]]\nname = \"a\"\ntenant_id = \"x.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_secret = { value = \"hunter2-secret\" }\n").unwrap();
    let t = &config.tenants[0];
    let CredentialSource::Secret(source) = &t.credential else {
        panic!("a secret")
    };
    let secret = source.resolve(&t.credential_field).unwrap();
    assert_eq!(secret.expose(), "hunter2-secret");
    assert!(!format!("{secret:?} {secret}").contains("hunter2"));
}

#[test]
fn env_secret_missing_names_var_not_value() {
    let src = SecretSource {
        env: Some("XDRSYNC_TEST_SURELY_UNSET_VAR".into()),
        ..Default::default()
    };
    let err = src
        .resolve("apps[0].client_secret")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "`apps[0].client_secret`: environment variable XDRSYNC_TEST_SURELY_UNSET_VAR is not set"
    );
}

#[test]
fn file_secret_trims_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    std::fs::write(&path, "abc~def\n").unwrap();
    let src = SecretSource {
        file: Some(path),
        ..Default::default()
    };
    assert_eq!(src.resolve("x").unwrap().expose(), "abc~def");
}

#[test]
fn loopback_emulator_override_keeps_production_audiences() {
    let config = load(&format!(
        "[cloud]\nauthority_url = \"http://127.0.0.1:9\"\ngraph_url = \"http://127.0.0.1:9\"\nxdr_url = \"http://127.0.0.1:9\"\n[[tenants]]\nname = \"a\"\ntenant_id = \"x.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\n{SECRET}\n"
    ))
    .unwrap();
    let e = &config.tenants[0].endpoints;
    assert_eq!(e.graph.as_str(), "http://127.0.0.1:9/");
    assert_eq!(e.graph_resource, "https://graph.microsoft.com");
    assert_eq!(e.xdr_resource, "https://api.security.microsoft.com");
}

#[test]
fn certificate_credentials_and_secret_commands() {
    let config = load(
        "[[apps]]\nname = \"a\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_certificate = { cert_file = \"c.pem\", key_file = \"k.pem\", algorithm = \"rs256\" }\n\
         [[tenants]]\nname = \"t\"\ntenant_id = \"x.onmicrosoft.com\"\napp = \"a\"\n\
         [[tenants]]\nname = \"u\"\ntenant_id = \"y.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_secret = { command = [\"printf\", \"from-vault\\\\n\"] }\n\
         [[tenants]]\nname = \"p\"\ntenant_id = \"z.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_certificate = { pfx_file = \"app.pfx\", password = { env = \"PFX_PASSWORD\" } }\n",
    )
    .unwrap();
    let CredentialSource::Certificate(c) = &config.tenants[0].credential else {
        panic!("a certificate")
    };
    assert_eq!(c.algorithm, AssertionAlgorithm::Rs256);
    let CertificateFiles::Pem {
        cert_file,
        key_file,
    } = &c.files
    else {
        panic!("PEM files")
    };
    assert_eq!(cert_file, Path::new("/etc/xdrsync/c.pem"));
    assert_eq!(key_file, Path::new("/etc/xdrsync/k.pem"));
    let CredentialSource::Certificate(p) = &config.tenants[2].credential else {
        panic!("a certificate")
    };
    assert_eq!(p.algorithm, AssertionAlgorithm::Ps256);
    let CertificateFiles::Pkcs12 { pfx_file, password } = &p.files else {
        panic!("a PKCS#12 file")
    };
    assert_eq!(pfx_file, Path::new("/etc/xdrsync/app.pfx"));
    assert_eq!(
        password.as_ref().and_then(|p| p.env.as_deref()),
        Some("PFX_PASSWORD")
    );
    assert_eq!(
        config.tenants[0].credential_field,
        "apps[0].client_certificate"
    );
    let CredentialSource::Secret(s) = &config.tenants[1].credential else {
        panic!("a secret")
    };
    assert_eq!(s.resolve("x").unwrap().expose(), "from-vault");
    let failing = SecretSource {
        command: Some(vec!["false".into()]),
        ..Default::default()
    };
    let err = failing
        .resolve("apps[0].client_secret")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`false` failed"), "{err}");
}

invalid!(
    secret_and_certificate_both,
    "[[apps]]\nname = \"a\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_secret = { env = \"S\" }\nclient_certificate = { cert_file = \"c\", key_file = \"k\" }\n",
    "apps[0].client_certificate",
    "not both"
);

invalid!(
    pem_and_pfx_mixed,
    "[[apps]]\nname = \"a\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_certificate = { cert_file = \"c\", pfx_file = \"p\" }\n",
    "apps[0].client_certificate",
    "or `pfx_file`"
);

invalid!(
    pfx_password_inline,
    "[[apps]]\nname = \"a\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_certificate = { pfx_file = \"p\", password = { value = \"x\" } }\n",
    "apps[0].client_certificate.password",
    "inline secrets are refused"
);

invalid!(
    pfx_password_with_method,
    "[[apps]]\nname = \"a\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_certificate = { pfx_file = \"p\", password = { env = \"P\", method = \"basic\" } }\n",
    "apps[0].client_certificate.password.method",
    "for `client_secret` only"
);

#[test]
fn regions_and_inline_secret_warning() {
    let config = load("allow_inline_secrets = true\n[cloud]\nregion = \"eu\"\n[[tenants]]\nname = \"a\"\ntenant_id = \"x.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_secret = { value = \"v\" }\n").unwrap();
    let e = &config.tenants[0].endpoints;
    assert_eq!(e.xdr.as_str(), "https://eu.api.security.microsoft.com/");
    assert_eq!(e.xdr_resource, "https://api.security.microsoft.com");
    assert_eq!(config.warnings.len(), 1);
    assert!(config.warnings[0].contains("tenants[0].client_secret"));
}

#[test]
fn streams_and_siem_filters() {
    let t = "[[tenants]]\nname = \"a\"\ntenant_id = \"x.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_secret = { env = \"S\" }\n";
    let config = load(t).unwrap();
    assert_eq!(config.tenants[0].streams, vec![StreamKind::Incidents]);
    let config = load(&format!("[cloud]\nregion = \"uk\"\n{t}streams = [\"detections\", \"incidents\", \"alerts\"]\nsiem = {{ machine_groups = [\"UK\"], device_tag = \"VIP\" }}\n")).unwrap();
    let a = &config.tenants[0];
    assert_eq!(
        a.streams,
        vec![
            StreamKind::Incidents,
            StreamKind::Alerts,
            StreamKind::Detections
        ]
    );
    assert_eq!(a.siem.machine_groups, vec!["UK".to_owned()]);
    assert_eq!(
        a.endpoints.siem.as_ref().unwrap().as_str(),
        "https://wdatp-alertexporter-uk.windows.com/"
    );
    assert_eq!(a.endpoints.siem_resource, "https://graph.windows.net");
    assert_eq!(
        a.endpoints.mde.as_str(),
        "https://api-uk.securitycenter.microsoft.com/"
    );
    assert_eq!(
        a.endpoints.mde_resource,
        "https://api.securitycenter.microsoft.com"
    );
    for (extra, message) in [
        ("streams = [\"events\"]\n", "`events` is not a stream"),
        (
            "streams = [\"alerts\", \"alerts\"]\n",
            "`alerts` is listed twice",
        ),
        ("streams = []\n", "is empty"),
        ("siem = { groups = [] }\n", "unknown field `groups`"),
    ] {
        let err = load(&format!("{t}{extra}")).unwrap_err().to_string();
        assert!(err.contains(message), "{extra}: {err}");
    }
    // No SIEM host outside us/eu/uk unless one is named.
    let err = load(&format!(
        "[cloud]\nregion = \"au\"\n{t}streams = [\"detections\"]\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("set cloud.siem_url"), "{err}");
    let config = load(&format!("[cloud]\nregion = \"au\"\nsiem_url = \"http://127.0.0.1:9/alertexporter\"\n{t}streams = [\"detections\"]\n")).unwrap();
    assert!(config.tenants[0].endpoints.siem.is_some());
}

invalid!(
    alert_page_size_above_the_clamp,
    "[sync]\nalert_page_size = 2000\n",
    "sync.alert_page_size",
    "clamps $top to 1000"
);

invalid!(
    unknown_region,
    "[cloud]\nregion = \"mars\"\n",
    "cloud.region",
    "not a Defender region"
);
invalid!(
    region_outside_public,
    "[cloud]\nname = \"dod\"\nregion = \"eu\"\n",
    "cloud.region",
    "only in the public cloud"
);

invalid!(
    china_is_explained,
    "[cloud]\nname = \"china\"\n",
    "cloud.name",
    "not available in the China (21Vianet) cloud"
);

#[test]
fn national_clouds_pick_authority_hosts_and_audiences_together() {
    for (name, authority, xdr, graph) in [
        (
            "gcc",
            "https://login.microsoftonline.com/",
            "https://api-gcc.security.microsoft.us/",
            "https://graph.microsoft.com/",
        ),
        (
            "gcc-high",
            "https://login.microsoftonline.us/",
            "https://api-gov.security.microsoft.us/",
            "https://graph.microsoft.us/",
        ),
        (
            "dod",
            "https://login.microsoftonline.us/",
            "https://api-gov.security.microsoft.us/",
            "https://dod-graph.microsoft.us/",
        ),
    ] {
        let config = load(&format!("[cloud]\nname = \"{name}\"\n[[tenants]]\nname = \"a\"\ntenant_id = \"x.onmicrosoft.us\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_secret = {{ env = \"S\" }}\n")).unwrap();
        let e = &config.tenants[0].endpoints;
        assert_eq!(
            (e.authority.as_str(), e.xdr.as_str(), e.graph.as_str()),
            (authority, xdr, graph),
            "{name}"
        );
        assert_eq!(
            format!("{}/", e.graph_resource),
            graph,
            "{name}: the audience follows the cloud"
        );
    }
}

#[test]
fn tenants_are_found_by_name_id_or_verified_domain_and_selected() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/xdrsync.toml");
    let config = Config::load(&path).unwrap();
    // By name, by the tenant id as configured, by another verified domain; any case.
    for key in [
        "CONTOSO",
        "Contoso.OnMicrosoft.com",
        "CONTOSO.COM",
        " contoso ",
    ] {
        assert_eq!(
            config.tenant(key).map(|t| t.name.as_str()),
            Some("contoso"),
            "{key}"
        );
    }
    let e = config.require_tenant("nobody.example").unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ConfigError::Usage { .. }), "{e:?}");
    assert!(
        text.starts_with("--tenant: no tenant named `nobody.example`"),
        "{text}"
    );
    assert!(text.contains("contoso (contoso.onmicrosoft.com)"), "{text}");
    assert!(!text.contains("invalid config file"), "{text}");

    // A selection disables the others and narrows the streams.
    let one = config
        .select(&["contoso.com".into()], &["Incidents".into()])
        .unwrap();
    let enabled: Vec<_> = one.tenants.iter().filter(|t| t.enabled).collect();
    assert_eq!(enabled.len(), 1);
    assert_eq!(enabled[0].streams, [StreamKind::Incidents]);
    assert!(matches!(
        config.select(&[], &["tickets".into()]),
        Err(ConfigError::Usage { .. })
    ));
    // Nothing selected: everything enabled stays as it is.
    let all = config.select(&[], &[]).unwrap();
    assert_eq!(
        all.tenants.iter().filter(|t| t.enabled).count(),
        config.tenants.iter().filter(|t| t.enabled).count()
    );
}

#[test]
fn secret_command_without_timeout_is_stopped() {
    let source = SecretSource {
        command: Some(vec!["sleep".into(), "30".into()]),
        timeout_secs: Some(1),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let e = source
        .resolve("tenants[0].client_secret")
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{e}"
    );
    assert!(e.contains("did not finish within 1s"), "{e}");
    // A command that answers in time still works.
    let ok = SecretSource {
        command: Some(vec!["echo".into(), "s3cr3t".into()]),
        ..Default::default()
    };
    assert_eq!(ok.resolve("x").unwrap().expose(), "s3cr3t");
}

#[test]
fn secret_source_debug_never_shows_the_secret() {
    let s = SecretSource {
        value: Some("hunter2-inline-secret".into()),
        ..Default::default()
    };
    let shown = format!("{s:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

/// `[server] actions_hmac_secret` / `actions_token` (the secrets a SOAR signs with) never reach
/// `Debug` of the config, whole or in part.
#[test]
fn inbound_action_secrets_never_reach_debug() {
    let config = load(
        "allow_inline_secrets = true\n[server]\nactions_hmac_secret = { value = \"hmac-hunter2\" }\nactions_token = { value = \"token-hunter3\" }\nactions_replay_secs = 60\n",
    )
    .unwrap();
    let inbound = config.inbound_actions.as_ref().unwrap();
    assert_eq!(inbound.replay_window, std::time::Duration::from_secs(60));
    let shown = format!("{config:?} {inbound:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("hunter3"),
        "{shown}"
    );
    let secret = inbound
        .token
        .as_ref()
        .unwrap()
        .resolve("server.actions_token")
        .unwrap();
    assert_eq!(secret.expose(), "token-hunter3");
    assert!(!format!("{secret:?} {secret}").contains("hunter3"));
}

const TENANT_A: &str = "[[tenants]]\nname = \"a\"\ntenant_id = \"x.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_secret = { env = \"S\" }\n";

invalid!(
    hunts_is_not_a_stream_a_tenant_pulls,
    &format!("{TENANT_A}streams = [\"hunts\"]\n"),
    "tenants[0].streams",
    "[[hunts]]"
);
invalid!(
    a_hunt_name_must_key_a_row,
    &format!("{TENANT_A}[[hunts]]\nname = \"a:b\"\nquery = \"AlertInfo\"\n"),
    "hunts[0].name",
    "not a hunt name"
);
invalid!(
    a_hunt_names_known_tenants,
    &format!("{TENANT_A}[[hunts]]\nname = \"h\"\nquery = \"AlertInfo\"\ntenants = [\"b\"]\n"),
    "hunts[0].tenants",
    "`b` is not the name of a [[tenants]] entry"
);
invalid!(
    a_hunt_needs_a_query,
    &format!("{TENANT_A}[[hunts]]\nname = \"h\"\nquery = \" \"\n"),
    "hunts[0].query",
    "empty"
);
invalid!(
    a_hunt_looks_back_at_most_30_days,
    &format!("{TENANT_A}[[hunts]]\nname = \"h\"\nquery = \"AlertInfo\"\ntimespan = \"31d\"\n"),
    "hunts[0].timespan",
    "30d"
);
invalid!(
    a_hunt_interval_is_a_duration,
    &format!("{TENANT_A}[[hunts]]\nname = \"h\"\nquery = \"AlertInfo\"\ninterval = \"hourly\"\n"),
    "hunts[0].interval",
    "not a duration"
);
invalid!(
    a_hunt_severity_is_known,
    &format!("{TENANT_A}[[hunts]]\nname = \"h\"\nquery = \"AlertInfo\"\nseverity = \"critical\"\n"),
    "hunts[0].severity",
    "not a severity"
);
invalid!(
    hunt_names_are_unique,
    &format!(
        "{TENANT_A}[[hunts]]\nname = \"h\"\nquery = \"A\"\n[[hunts]]\nname = \"h\"\nquery = \"B\"\n"
    ),
    "hunts[1].name",
    "used twice"
);

#[test]
fn the_command_line_cannot_pull_hunts() {
    let err = parse_streams(&["hunts".to_owned()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown stream `hunts`") && err.contains("[[hunts]]"),
        "{err}"
    );
}

#[test]
fn a_hunt_in_a_legacy_tenant_without_a_time_range_is_warned_about() {
    let legacy = TENANT_A.replace("client_secret", "api = \"xdr\"\nclient_secret");
    let c = load(&format!(
        "{legacy}[[hunts]]\nname = \"h\"\nquery = \"AlertInfo\"\ntimespan = \"7d\"\n"
    ))
    .unwrap();
    assert!(
        c.warnings.iter().any(|w| w.contains("hunts[0].query")
            && w.contains("tenants a use the legacy API")
            && w.contains("ago(7d)")),
        "{:?}",
        c.warnings
    );
    let ranged = load(&format!(
        "{legacy}[[hunts]]\nname = \"h\"\nquery = \"AlertInfo | where Timestamp > ago(7d)\"\n"
    ))
    .unwrap();
    assert!(ranged.warnings.is_empty(), "{:?}", ranged.warnings);
}
