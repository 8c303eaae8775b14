//! `[[sinks]]` validation: the shipped example, every refusal's message, and that no secret
//! reaches `Debug` or an error.

use std::path::Path;

use super::*;

fn check(toml: &str) -> Result<ValidatedSink, ConfigError> {
    validate_toml(toml, Path::new("/etc/xdrsync/xdrsync.toml"), &[], false)
}

fn err(toml: &str) -> String {
    check(toml).unwrap_err().to_string()
}

#[test]
fn shipped_example_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/xdrsync.toml");
    let config = Config::load(&path).unwrap();
    let sinks = validate(&config).unwrap();
    let kinds: Vec<(&str, &str, bool)> = sinks
        .iter()
        .map(|s| (s.common.name.as_str(), s.kind(), s.enabled))
        .collect();
    assert_eq!(
        kinds,
        [
            ("archive", "file", true),
            ("hello-world", "file", true),
            ("qradar", "syslog", true),
            ("splunk", "splunk_hec", true),
            ("soar", "webhook", true),
            ("bus", "nats", false),
            ("warehouse", "postgres", false),
        ]
    );
    assert_eq!(
        sinks[1].common.format,
        Format::Raw,
        "json_array defaults to raw"
    );
    let contoso = config.tenant("contoso").unwrap().tenant_id.clone();
    let Kind::SplunkHec(hec) = &sinks[3].kind else {
        panic!("hec")
    };
    assert_eq!(
        hec.tenants[0].0, contoso,
        "per-tenant settings by tenant name"
    );
}

#[test]
fn refusals_name_the_field_and_the_problem() {
    let e = |t: &str| err(t).replace("invalid config file /etc/xdrsync/xdrsync.toml: ", "");
    insta::assert_snapshot!(e("name = \"a\"\n[file]\npath = \"x\"\nrotate = 3"), @"`sinks[0].file`: unknown field `rotate`, expected one of `mode`, `path`, `dir`, `rotate_max_bytes`, `rotate_max_age_secs`, `keep_rotated`");
    insta::assert_snapshot!(e("name = \"a\""), @"`sinks[0]`: give exactly one of [sinks.file], [sinks.stdout], [sinks.syslog], [sinks.splunk_hec], [sinks.webhook], [sinks.nats], [sinks.postgres]");
    insta::assert_snapshot!(e("name = \"a\"\n[stdout]\n[file]\npath = \"x\""), @"`sinks[0]`: give exactly one of [sinks.file], [sinks.stdout], [sinks.syslog], [sinks.splunk_hec], [sinks.webhook], [sinks.nats], [sinks.postgres]");
    insta::assert_snapshot!(e("name = \"a b\"\n[stdout]"), @"`sinks[0].name`: `a b`: use letters, digits, `-`, `_` and `.`");
    insta::assert_snapshot!(e("name = \"a\"\ntenants = [\"nobody\"]\n[stdout]"), @"`sinks[0].tenants[0]`: no tenant named `nobody` in [[tenants]] (give its name or its tenant id)");
    insta::assert_snapshot!(e("name = \"a\"\nmin_severity = \"critical\"\n[stdout]"), @"`sinks[0].min_severity`: `critical`: expected informational, low, medium or high");
    insta::assert_snapshot!(e("name = \"a\"\nstreams = [\"events\"]\n[stdout]"), @"`sinks[0].streams[0]`: `events`: expected incidents, alerts or detections");
    insta::assert_snapshot!(e("name = \"a\"\nchanges = [\"deleted\"]\n[stdout]"), @"`sinks[0].changes[0]`: `deleted`: expected created, updated, alert_added or redirected");
    insta::assert_snapshot!(e("name = \"a\"\nformat = \"cef\"\n[stdout]"), @"`sinks[0]`: unknown variant `cef`, expected one of `raw`, `xdrsync`, `ocsf`, `ecs`");
    insta::assert_snapshot!(e("name = \"a\"\n[webhook]\nurl = \"http://hooks.example.com/x\""), @"`sinks[0].webhook.url`: `http://hooks.example.com/x` must be https (plain http is allowed only to a loopback address)");
    insta::assert_snapshot!(e("name = \"a\"\n[splunk_hec]\nurl = \"https://s:8088\"\ntoken = { value = \"abc\" }"), @"`sinks[0].splunk_hec.token`: inline secrets are refused: use `env` or `file`, or set `allow_inline_secrets = true` at the top of the file");
    insta::assert_snapshot!(e("name = \"a\"\nformat = \"ecs\"\n[syslog]\naddress = \"q:514\""), @r#"`sinks[0].format`: `ecs` applies to JSON messages; CEF and LEEF messages are built from the normalized record (set syslog.message = "json", or remove format)"#);
    insta::assert_snapshot!(e("name = \"a\"\n[syslog]\naddress = \"q\""), @"`sinks[0].syslog.address`: `q`: expected host:port");
    insta::assert_snapshot!(e("name = \"a\"\n[syslog]\naddress = \"q:514\"\nfacility = \"local9\""), @"`sinks[0].syslog.facility`: `local9`: expected a facility name (local0 … local7, user, auth, …) or 0..=23");
    insta::assert_snapshot!(e("name = \"a\"\n[nats]\nurl = \"nats://u:p@h:4222\""), @"`sinks[0].nats.url`: put credentials in `user`/`password` or `token` (secret sources), not in the URL");
    insta::assert_snapshot!(e("name = \"a\"\n[postgres]\nurl = { env = \"X\" }\nschema = \"Bad-Name\""), @"`sinks[0].postgres.schema`: lowercase letters, digits and `_`, at most 48, not starting with a digit");
    insta::assert_snapshot!(e("name = \"a\"\n[file]\nmode = \"json_array\""), @r#"`sinks[0].file.dir`: the folder is required (mode = "json_array")"#);
}

#[test]
fn two_sinks_with_one_name_are_refused() {
    let path = Path::new("/tmp/x.toml");
    let config = Config::from_toml(
        "[[sinks]]\nname = \"a\"\n[sinks.stdout]\n[[sinks]]\nname = \"a\"\n[sinks.file]\npath = \"f\"\n",
        path,
    )
    .unwrap();
    let e = validate(&config).unwrap_err().to_string();
    assert!(
        e.contains("`sinks[1].name`") && e.contains("two sinks are named `a`"),
        "{e}"
    );
}

#[test]
fn secrets_never_reach_debug_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.toml");
    let secret = "s3cr3t-value-0123456789";
    let toml = |table: &str| format!("name = \"a\"\n{table}");
    for table in [
        format!("[splunk_hec]\nurl = \"https://splunk:8088\"\ntoken = {{ value = \"{secret}\" }}"),
        format!(
            "[webhook]\nurl = \"https://h.example.com/x?key={secret}\"\nsecret = {{ value = \"{secret}\" }}"
        ),
        format!("[nats]\nuser = \"u\"\npassword = {{ value = \"{secret}\" }}"),
        format!("[nats]\ntoken = {{ value = \"{secret}\" }}"),
        format!("[postgres]\nurl = {{ value = \"postgres://u:{secret}@127.0.0.1/test\" }}"),
    ] {
        let v = validate_toml(&toml(&table), &path, &[], true).unwrap();
        let sink = build(&v).unwrap();
        let debug = format!("{sink:?}");
        assert!(!debug.contains(secret), "{table}\n{debug}");
    }
    // A PostgreSQL URL that does not parse: the error does not repeat it.
    let v = validate_toml(
        &toml(&format!(
            "[postgres]\nurl = {{ value = \"postgres://u:{secret}@[bad\" }}"
        )),
        &path,
        &[],
        true,
    )
    .unwrap();
    let e = build(&v).unwrap_err().to_string();
    assert!(!e.contains(secret), "{e}");
}

/// NATS: TLS is required for a server not on this machine unless `tls = false` says
/// otherwise; `tls://` always requires it; one way of authenticating at a time.
#[test]
fn nats_tls_is_required_off_this_machine() {
    let tls = |url: &str, extra: &str| match check(&format!(
        "name = \"n\"\n[nats]\nurl = \"{url}\"\n{extra}"
    ))
    .map(|v| v.kind)
    {
        Ok(Kind::Nats(n)) => Ok(n.require_tls),
        Ok(_) => Err("not nats".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    assert_eq!(tls("nats://bus.example.com:4222", ""), Ok(true));
    assert_eq!(tls("nats://bus.example.com:4222", "tls = false"), Ok(false));
    assert_eq!(tls("nats://127.0.0.1:4222", ""), Ok(false));
    assert_eq!(tls("nats://localhost:4222", ""), Ok(false));
    assert_eq!(tls("tls://127.0.0.1:4222", ""), Ok(true));
    assert!(
        tls("tls://127.0.0.1:4222", "tls = false")
            .unwrap_err()
            .contains("tls://")
    );
    assert!(
        tls("ws://127.0.0.1:4222", "")
            .unwrap_err()
            .contains("nats:// or tls://")
    );
    let both = tls(
        "nats://127.0.0.1:4222",
        "token = { value = \"a\" }\nnkey = { value = \"SUAB\" }",
    )
    .unwrap_err();
    assert!(both.contains("one of"), "{both}");
    let e = tls("nats://u:p@127.0.0.1:4222", "").unwrap_err();
    assert!(e.contains("not in the URL") && !e.contains("u:p@"), "{e}");
}
