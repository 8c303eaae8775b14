//! The `xdrsync` binary end to end: real processes, the real emulator over loopback, real files.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use xdrsync_model::{ApiKind, Timestamp};
use xdrsync_test_utils as tu;

fn xdrsync(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xdrsync"))
        .args(args)
        .current_dir(cwd)
        .env_remove("XDRSYNC_CONFIG")
        .env_remove("XDRSYNC_LOG")
        .output()
        .expect("run xdrsync")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs xdrsync off the async threads, so the in-process emulator keeps serving.
async fn xdrsync_async(args: Vec<String>, cwd: std::path::PathBuf) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        xdrsync(&args, &cwd)
    })
    .await
    .unwrap()
}

fn ndjson_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn demo_twice_adds_no_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    // The emulator's world is deterministic but alive (and realistic: a change becomes
    // visible up to 120 s after its time): what changes between the runs is real.
    let began = Timestamp::now().sub(chrono::Duration::seconds(122));
    let first = xdrsync(&["demo", "--dir", dir.to_str().unwrap()], tmp.path());
    assert!(
        first.status.success(),
        "{}{}",
        text(&first.stdout),
        text(&first.stderr)
    );
    let out = text(&first.stdout);
    for tenant in ["contoso", "northwindtraders", "tailspintoys"] {
        assert!(out.contains(tenant), "{out}");
    }
    assert!(
        out.contains("TENANT")
            && out.contains("NEW")
            && out.contains("UPDATED")
            && out.contains("LAST UPDATE"),
        "{out}"
    );
    assert!(dir.join("xdrsync.db").exists());
    let lines = ndjson_lines(&dir.join("events.ndjson"));
    assert!(lines.len() > 100, "{}", lines.len());
    let ids: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|l| l["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        lines.len(),
        "every NDJSON line is a distinct version"
    );
    let snapshots: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("Latest Incidents ") && n.ends_with(".json"))
        .collect();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    let snapshot: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(&snapshots[0])).unwrap()).unwrap();
    let of = |stream: &str| lines.iter().filter(|l| l["stream"] == stream).count();
    assert_eq!(
        snapshot.as_array().unwrap().len(),
        of("incidents"),
        "first run: every incident version is the latest"
    );
    // The demo also pulls alerts (Graph alerts_v2 and MDE) and SIEM detections.
    assert!(of("alerts") > of("incidents"), "alerts: {}", of("alerts"));
    assert!(of("detections") > 0, "no detections");
    assert!(
        out.contains("STREAM") && out.contains("detections"),
        "{out}"
    );
    // The realistic world, and what the pull did about it, are explained.
    assert!(
        out.contains("realistic world") && out.contains("merged into others"),
        "{out}"
    );

    let second = xdrsync(&["demo", "--dir", dir.to_str().unwrap()], tmp.path());
    assert!(second.status.success(), "{}", text(&second.stderr));
    let again = ndjson_lines(&dir.join("events.ndjson"));
    // Only versions that came to be after the first run began (less the lag) may appear:
    // nothing of the first run comes again, however long the runs took.
    let new_lines = again.get(lines.len()..).unwrap_or_default();
    for line in new_lines {
        let at: Timestamp = line["last_update"].as_str().unwrap().parse().unwrap();
        assert!(at >= began, "an old version came again: {line}");
    }
    assert!(
        new_lines.len() * 20 < lines.len(),
        "second run wrote {} lines",
        new_lines.len()
    );
    let ids: std::collections::BTreeSet<&str> = again
        .iter()
        .map(|l| l["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        again.len(),
        "no duplicate versions after two runs"
    );
}

#[test]
fn malformed_config_exits_2_and_names_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("[sync]\noverlap_sec = 5\n", "unknown field `overlap_sec`"),
        (
            "[[tenants]]\nname = \"a\"\ntenant_id = \"nope nope\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_secret = { env = \"X\" }\n",
            "`tenants[0].tenant_id`",
        ),
        ("[sync]\ngraph_page_size = 500\n", "`sync.graph_page_size`"),
        ("[[tenants]]\nname = \"a\"\n", "missing field `tenant_id`"),
        ("this is not toml", "invalid config file"),
    ];
    for (toml, says) in cases {
        std::fs::write(tmp.path().join("bad.toml"), toml).unwrap();
        for args in [
            &["--config", "bad.toml", "check-config"][..],
            &["--config", "bad.toml", "pull"][..],
        ] {
            let out = xdrsync(args, tmp.path());
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{toml:?}: {err}");
            assert!(err.contains(says), "{toml:?}: {err}");
            assert!(err.contains("bad.toml"), "{err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    let out = xdrsync(&["pull"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("xdrsync demo"),
        "a missing config points at the demo"
    );
    let out = xdrsync(
        &["incidents", "list", "--tenant", "a", "--since", "yesterday"],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`yesterday` is neither a duration"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_list_is_the_hello_world_script() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = tu::write_config(tmp.path(), &emu, &[ApiKind::Xdr, ApiKind::Graph], "");
    let tenant = config.tenants[0].clone();
    let since = Timestamp::now().sub(chrono::Duration::hours(48));
    let expected = emu
        .state()
        .incidents(tenant.tenant_id.as_str(), |i| i.last_update >= since)
        .len();
    let cwd = tmp.path().to_owned();

    let out = xdrsync_async(
        [
            "incidents",
            "list",
            "--tenant",
            &tenant.name,
            "--since",
            "48h",
            "--out",
            "latest.json",
        ]
        .map(str::to_owned)
        .to_vec(),
        cwd.clone(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(cwd.join("latest.json")).unwrap()).unwrap();
    let items = file.as_array().unwrap();
    assert!(
        (expected..=expected + 2).contains(&items.len()),
        "{} vs {expected}",
        items.len()
    );
    assert!(
        items[0]["incidentId"].is_u64(),
        "legacy shape for an xdr tenant"
    );
    for item in items {
        let t: Timestamp = item["lastUpdateTime"].as_str().unwrap().parse().unwrap();
        assert!(t >= since);
    }

    // To stdout, by tenant id, Graph shape.
    let graph_tenant = config.tenants[1].tenant_id.to_string();
    let out = xdrsync_async(
        [
            "incidents",
            "list",
            "--tenant",
            &graph_tenant,
            "--since",
            "2h",
        ]
        .map(str::to_owned)
        .to_vec(),
        cwd.clone(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    for item in listed.as_array().unwrap() {
        assert!(item["id"].is_string() && item["lastUpdateDateTime"].is_string());
    }

    let out = xdrsync_async(
        ["incidents", "list", "--tenant", "nobody"]
            .map(str::to_owned)
            .to_vec(),
        cwd,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no tenant named `nobody`"));
}

/// Secrets and tokens never reach the terminal, even at trace level.
#[test]
fn demo_at_trace_level_prints_no_secret_or_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = xdrsync(
        &[
            "--log-level",
            "trace",
            "demo",
            "--dir",
            dir.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(out.status.success());
    let secret = std::fs::read_to_string(dir.join("demo-client-secret")).unwrap();
    assert!(secret.len() >= 20);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.len() > 1000, "trace logging produced output");
    assert!(!all.contains(secret.trim()), "the client secret leaked");
    assert!(!all.contains("eyJ"), "an access token leaked");
    assert!(
        !all.contains("client_secret="),
        "a token request body leaked"
    );
}

#[test]
fn help_lists_every_command() {
    let out = xdrsync(&["--help"], Path::new("."));
    assert!(out.status.success());
    insta::assert_snapshot!(text(&out.stdout));
}

/// `xdrsync [global] emulator serve [serve] --bind 127.0.0.1:0 --state-dir state`, started and
/// waited for: the process and its contract (`emulator.json`).
fn serve_emulator(
    global: &[&str],
    serve: &[&str],
    state: &Path,
) -> (std::process::Child, std::path::PathBuf) {
    let child = Command::new(env!("CARGO_BIN_EXE_xdrsync"))
        .args(global)
        .args(["emulator", "serve"])
        .args(serve)
        .args(["--bind", "127.0.0.1:0", "--state-dir"])
        .arg(state)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let contract = state.join("emulator.json");
    let started = std::time::Instant::now();
    while !contract.exists() && started.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (child, contract)
}

/// From emulator to first pull in two commands: `emulator serve --tls`, `init --emulator`,
/// then the generated config (which trusts the emulator's CA) pulls over HTTPS.
#[test]
fn serve_then_init_then_pull_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let (mut serve, contract) = serve_emulator(&[], &["--tls"], &state);
    let run = |args: &[&str]| xdrsync(args, tmp.path());
    let init = run(&["init", "--emulator", contract.to_str().unwrap()]);
    let out = text(&init.stdout);
    let pull = run(&["pull", "--ndjson", "out.ndjson"]);
    let again = run(&["init", "--emulator", contract.to_str().unwrap()]);
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(init.status.success(), "{out}{}", text(&init.stderr));
    assert!(out.contains("3 tenants"), "{out}");
    let config = std::fs::read_to_string(tmp.path().join("xdrsync.toml")).unwrap();
    assert!(
        config.contains("ca_file") && config.contains("https://127.0.0.1:"),
        "{config}"
    );
    assert!(!config.contains(&serde_json::from_str::<Value>(&std::fs::read_to_string(&contract).unwrap()).unwrap()["apps"][0]["secret"].as_str().unwrap().to_owned()), "the secret stays in its own file");
    assert!(
        pull.status.success(),
        "{}{}",
        text(&pull.stdout),
        text(&pull.stderr)
    );
    assert!(ndjson_lines(&tmp.path().join("out.ndjson")).len() > 50);
    assert_eq!(
        again.status.code(),
        Some(1),
        "init refuses to overwrite without --force"
    );
}

/// A fixture whose tenants live in GCC High (and one in the commercial cloud): `init` writes
/// `[cloud] name = "gcc-high"`, leaves the other cloud's tenant out by name, and the config
/// pulls end to end with GCC High audiences.
#[test]
fn init_writes_the_cloud_its_tenants_live_in() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let fixture = tmp.path().join("fixture.toml");
    std::fs::write(
        &fixture,
        r#"seed = 5
[[tenants]]
name = "Army"
cloud = "gcc-high"
incidents_per_hour = 3.0
[[tenants]]
name = "Navy"
cloud = "gcc-high"
incidents_per_hour = 2.0
[[tenants]]
name = "Contoso"
incidents_per_hour = 2.0
[[apps]]
name = "Gov connector"
home_tenant = "Army"
multi_tenant = true
[apps.consents.Army]
graph = ["SecurityIncident.Read.All", "SecurityAlert.Read.All"]
[apps.consents.Navy]
graph = ["SecurityIncident.Read.All", "SecurityAlert.Read.All"]
[apps.consents.Contoso]
graph = ["SecurityIncident.Read.All", "SecurityAlert.Read.All"]
"#,
    )
    .unwrap();
    let (mut serve, contract) =
        serve_emulator(&["--config", fixture.to_str().unwrap()], &[], &state);
    let run = |args: &[&str]| xdrsync(args, tmp.path());
    let init = run(&["init", "--emulator", contract.to_str().unwrap()]);
    let pull = run(&["pull", "--ndjson", "out.ndjson"]);
    let _ = serve.kill();
    let _ = serve.wait();
    let out = text(&init.stdout);
    assert!(init.status.success(), "{out}{}", text(&init.stderr));
    assert!(out.contains("2 tenants"), "{out}");
    assert!(
        out.contains("Left out 1 tenants of another cloud than gcc-high: Contoso (public)"),
        "{out}"
    );
    let config = std::fs::read_to_string(tmp.path().join("xdrsync.toml")).unwrap();
    assert!(config.contains("name = \"gcc-high\""), "{config}");
    assert!(
        pull.status.success(),
        "{}{}",
        text(&pull.stdout),
        text(&pull.stderr)
    );
    assert!(ndjson_lines(&tmp.path().join("out.ndjson")).len() > 20);
}

/// The partner guide's "validate the token" step: signature, claims, permissions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_token_validates_and_names_missing_permissions() {
    let emu = tu::start(tu::demo_directory()).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = tu::write_config(tmp.path(), &emu, &[ApiKind::Graph, ApiKind::Xdr], "");
    let cwd = tmp.path().to_owned();
    let run =
        |args: &[&str]| xdrsync_async(args.iter().map(|s| (*s).to_owned()).collect(), cwd.clone());
    let out = run(&["auth", "token", "--tenant", &config.tenants[0].name]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("signature  valid (RS256")
            && stdout.contains("SecurityIncident.Read.All")
            && stdout.contains("OK:"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("eyJ"),
        "the raw token is printed only with --raw"
    );
    // Read roles only: write-back is named as not possible, with the role it needs.
    assert!(
        stdout.contains("write-back: incidents no (needs SecurityIncident.ReadWrite.All)"),
        "{stdout}"
    );
    let raw = run(&[
        "auth",
        "token",
        "--tenant",
        &config.tenants[0].name,
        "--raw",
    ])
    .await;
    assert!(text(&raw.stdout).starts_with("eyJ"));
    // Take the XDR role away from the second tenant: the check names it and where to grant it.
    let victim = config.tenants[1].tenant_id.to_string();
    emu.state().update_directory(|d| {
        d.apps[0]
            .consents
            .get_mut(&victim)
            .unwrap()
            .insert(xdrsync_emulator::Resource::Xdr, vec![]);
    });
    let out = run(&["auth", "token", "--tenant", &config.tenants[1].name]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("roles      (none)"), "{stdout}");
    assert!(
        stdout.contains("PROBLEM: incidents: missing application permission Incident.Read.All")
            && stdout.contains("Microsoft Threat Protection")
            && stdout.contains("Grant admin consent"),
        "{stdout}"
    );
    let out = run(&[
        "auth",
        "consent-url",
        "--client-id",
        "11111111-2222-3333-4444-555555555555",
        "--tenant",
        "contoso.onmicrosoft.com",
    ])
    .await;
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "/contoso.onmicrosoft.com/adminconsent?client_id=11111111-2222-3333-4444-555555555555"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("/contoso.onmicrosoft.com/v2.0/adminconsent?")
            && stdout.contains("prompt=consent"),
        "{stdout}"
    );
}

/// The MSSP flow: `auth login` catches the redirect on loopback, stores the refresh token
/// encrypted, and `pull` then reads the tenant with delegated tokens (rotating the token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_login_then_delegated_pull() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = tu::start_tls(tu::demo_directory(), tmp.path(), |b| b.auto_approve = true).await;
    let c = emu.contract();
    let ca = c.ca_cert.clone().unwrap();
    std::fs::write(tmp.path().join("secret"), &c.apps[0].secret).unwrap();
    let base = emu.base_url();
    std::fs::write(
        tmp.path().join("xdrsync.toml"),
        format!(
            "[cloud]\nca_file = \"{}\"\nauthority_url = \"{base}\"\ngraph_url = \"{base}\"\nxdr_url = \"{base}\"\n\
             [[tenants]]\nname = \"contoso\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret = {{ file = \"secret\" }}\ndelegated = true\n",
            ca.display(), c.tenants[1].id, c.apps[0].client_id
        ),
    )
    .unwrap();
    let dir = tmp.path().to_owned();
    let cmd = move |args: &[&str]| login_cmd(&dir, args);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let start = {
        let dir = tmp.path().to_owned();
        move || {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || start_login(&dir))
        }
    };
    let redirect_of = |url: url::Url| -> String {
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        q["redirect_uri"].clone()
    };

    // Without a sign-in, the delegated tenant says what to do.
    let out = tokio::task::spawn_blocking({
        let mut c = cmd(&["pull"]);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        text(&out.stdout).contains("auth login --tenant contoso"),
        "{}",
        text(&out.stdout)
    );

    // A redirect with a foreign state is refused.
    let (child, url) = start().await.unwrap();
    let redirect = redirect_of(url::Url::parse(&url).unwrap());
    let _ = http
        .get(format!("{redirect}?code=stolen&state=not-ours"))
        .send()
        .await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("state does not match"),
        "{}",
        text(&out.stderr)
    );

    // An error redirect is reported.
    let (child, url) = start().await.unwrap();
    let redirect = redirect_of(url::Url::parse(&url).unwrap());
    let _ = http
        .get(format!(
            "{redirect}?error=access_denied&error_description=the+user+canceled"
        ))
        .send()
        .await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        text(&out.stderr).contains("sign-in failed: access_denied: the user canceled"),
        "{}",
        text(&out.stderr)
    );

    // The real thing: the "browser" follows the authorization URL to the loopback listener.
    let (child, url) = start().await.unwrap();
    let resp = http.get(&url).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let landed = http
        .get(&location)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(landed.contains("Signed in"), "{landed}");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let vault = std::fs::read_to_string(tmp.path().join("tokens.vault")).unwrap();
    assert!(
        vault.contains("ciphertext") && !vault.contains("refresh"),
        "the vault is encrypted"
    );

    let out = tokio::task::spawn_blocking({
        let mut c = cmd(&["pull"]);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("contoso"));
    assert_ne!(
        std::fs::read_to_string(tmp.path().join("tokens.vault")).unwrap(),
        vault,
        "the rotated refresh token was stored"
    );
    // Writes go out as the signed-in analyst: Defender records a person, not the app.
    let contoso = c.tenants[1].id.clone();
    emu.state().update_directory(|d| {
        for scopes in d.apps[0].consents.get_mut(&contoso).unwrap().values_mut() {
            scopes.push("SecurityIncident.ReadWrite.All".into());
        }
    });
    let newest = emu
        .state()
        .incidents(&contoso, |i| i.redirect.is_none())
        .iter()
        .map(|i| i.id)
        .max()
        .unwrap();
    let out = tokio::task::spawn_blocking({
        let mut c = cmd(&[
            "incidents",
            "update",
            "--tenant",
            "contoso",
            "--id",
            &newest.to_string(),
            "--comment",
            "looked at it",
        ]);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let inc = emu
        .state()
        .incidents(&contoso, |i| i.id == newest)
        .pop()
        .unwrap();
    let by = &inc.comments.last().unwrap().created_by;
    assert!(by.contains('@') && !by.starts_with("API-App:"), "{by}");
    assert_eq!(inc.last_modified_by.as_deref(), Some(by.as_str()));
    // 91 idle days later Entra refuses the refresh token: the tenant says to sign in again.
    emu.state().clock().advance(chrono::Duration::days(91));
    let out = tokio::task::spawn_blocking({
        let mut c = cmd(&["pull"]);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("AADSTS700082") && stdout.contains("run `xdrsync auth login`"),
        "{stdout}"
    );
    // A wrong key is a clear error, not a panic.
    let out = tokio::task::spawn_blocking({
        let mut c = cmd(&["pull"]);
        c.env(
            "XDRSYNC_VAULT_KEY",
            "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=",
        );
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        text(&out.stdout).contains("cannot be decrypted"),
        "{}",
        text(&out.stdout)
    );
}

const VAULT_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn login_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xdrsync"));
    c.args(args)
        .current_dir(dir)
        .env("XDRSYNC_VAULT_KEY", VAULT_KEY)
        .env_remove("XDRSYNC_CONFIG");
    c
}

/// Starts `auth login` and returns the child and the authorization URL it printed.
fn start_login(dir: &Path) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut child = login_cmd(
        dir,
        &[
            "auth",
            "login",
            "--tenant",
            "contoso",
            "--no-browser",
            "--timeout-secs",
            "60",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with("http"))
        .unwrap();
    // Keep reading, so the child's later lines do not hit a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, url)
}

/// Credential health without contacting anything: expiring and expired secrets, a
/// certificate's notAfter, a delegated tenant that never signed in.
#[test]
fn auth_status_reports_credential_health() {
    let tmp = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xdrsync-auth/tests/data");
    std::fs::write(tmp.path().join("pfx-pass"), "correct-horse").unwrap();
    std::fs::write(tmp.path().join("bad-pass"), "tr0ub4dor").unwrap();
    let soon = (chrono::Utc::now() + chrono::Duration::days(10)).format("%Y-%m-%dT00:00:00Z");
    let id = "11111111-2222-3333-4444-555555555555";
    std::fs::write(
        tmp.path().join("xdrsync.toml"),
        format!(
            "[[tenants]]\nname = \"soon\"\ntenant_id = \"a.onmicrosoft.com\"\nclient_id = \"{id}\"\nclient_secret = {{ env = \"X\", expires = \"{soon}\" }}\n\
             [[tenants]]\nname = \"cert\"\ntenant_id = \"b.onmicrosoft.com\"\nclient_id = \"{id}\"\nclient_certificate = {{ cert_file = \"{d}/cert.pem\", key_file = \"{d}/key.pem\" }}\n\
             [[tenants]]\nname = \"pfx\"\ntenant_id = \"e.onmicrosoft.com\"\nclient_id = \"{id}\"\nclient_certificate = {{ pfx_file = \"{d}/cert.pfx\", password = {{ file = \"pfx-pass\" }} }}\n\
             [[tenants]]\nname = \"badpfx\"\ntenant_id = \"f.onmicrosoft.com\"\nclient_id = \"{id}\"\nclient_certificate = {{ pfx_file = \"{d}/cert.pfx\", password = {{ file = \"bad-pass\" }} }}\n\
             [[tenants]]\nname = \"old\"\ntenant_id = \"c.onmicrosoft.com\"\nclient_id = \"{id}\"\nclient_secret = {{ env = \"X\", expires = \"2020-01-01T00:00:00Z\" }}\n\
             [[tenants]]\nname = \"mssp\"\ntenant_id = \"d.onmicrosoft.com\"\nclient_id = \"{id}\"\nclient_secret = {{ env = \"X\" }}\ndelegated = true\n",
            d = data.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xdrsync"))
        .args(["auth", "status"])
        .current_dir(tmp.path())
        .env("XDRSYNC_VAULT_KEY", VAULT_KEY)
        .env_remove("XDRSYNC_CONFIG")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("soon ").contains("expires in 9 days") || line("soon ").contains("expires in 10 days"),
        "{stdout}"
    );
    assert!(
        line("cert ").contains("4096-01-01")
            && line("cert ").contains("certificate (ps256)")
            && line("cert ").ends_with("ok"),
        "{stdout}"
    );
    assert!(
        line("pfx ").contains("4096-01-01") && line("pfx ").ends_with("ok"),
        "{stdout}"
    );
    assert!(
        line("badpfx ").contains("wrong password") && !stdout.contains("tr0ub4dor"),
        "{stdout}"
    );
    assert!(line("old ").contains("EXPIRED"), "{stdout}");
    assert!(
        line("mssp ").contains("auth login --tenant mssp"),
        "{stdout}"
    );
}

/// Device code sign-in for a host without a browser; at trace level, neither the access token
/// nor the refresh token (read back from the vault) appears in the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_login_and_no_token_in_trace_output() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = tu::start_tls(tu::demo_directory(), tmp.path(), |b| {
        b.auto_approve = true;
        b.device_code_interval_secs = 1;
    })
    .await;
    let c = emu.contract();
    let ca = c.ca_cert.clone().unwrap();
    std::fs::write(tmp.path().join("secret"), &c.apps[0].secret).unwrap();
    let base = emu.base_url();
    std::fs::write(
        tmp.path().join("xdrsync.toml"),
        format!(
            "[cloud]\nca_file = \"{}\"\nauthority_url = \"{base}\"\ngraph_url = \"{base}\"\nxdr_url = \"{base}\"\n\
             [[tenants]]\nname = \"contoso\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret = {{ file = \"secret\" }}\ndelegated = true\napi = \"xdr\"\n",
            ca.display(), c.tenants[1].id, c.apps[0].client_id
        ),
    )
    .unwrap();
    let dir = tmp.path().to_owned();
    let run = move |args: Vec<&'static str>| {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || login_cmd(&dir, &args).output().unwrap())
    };
    let out = run(vec![
        "--log-level",
        "trace",
        "auth",
        "login",
        "--tenant",
        "contoso",
        "--device-code",
    ])
    .await
    .unwrap();
    let login_out = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{login_out}");
    assert!(
        login_out.contains("/devicelogin") && login_out.contains("enter the code"),
        "{login_out}"
    );
    let pull = run(vec!["--log-level", "trace", "pull"]).await.unwrap();
    let pull_out = format!("{}{}", text(&pull.stdout), text(&pull.stderr));
    assert!(pull.status.success(), "{pull_out}");
    let vault = xdrsync_auth::vault::Vault::new(
        tmp.path().join("tokens.vault"),
        xdrsync_auth::vault::VaultKey::from_base64(VAULT_KEY).unwrap(),
    );
    let entries = vault.list().unwrap();
    assert_eq!(entries.len(), 1);
    let rt = entries[0].1.refresh_token.clone();
    for out in [&login_out, &pull_out] {
        assert!(!out.contains(&rt), "the refresh token leaked");
        assert!(!out.contains("eyJ"), "an access token leaked");
        assert!(!out.contains(&c.apps[0].secret), "the client secret leaked");
    }
    assert!(pull_out.len() > 1000, "trace logging produced output");
}

/// `[[sinks]]` end to end: `check-config` lists them; `pull` with Splunk down still delivers
/// to the other sinks, reports the failure and exits 1; the next pull with Splunk back catches
/// it up; a stdout sink prints events on stdout and the summary on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_from_the_config_one_down_the_others_unaffected() {
    let emu = tu::start(tu::one_tenant(
        "contoso",
        6.0,
        &["SecurityIncident.Read.All"],
    ))
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let hec = tu::receivers::hec::Hec::start(Default::default());
    std::fs::write(dir.join("hec.token"), hec.token()).unwrap();
    hec.stop();
    let sinks = format!(
        "[[sinks]]\nname = \"archive\"\nformat = \"ecs\"\n[sinks.file]\npath = \"ecs.ndjson\"\n\
         [[sinks]]\nname = \"splunk\"\nretry_attempts = 2\nretry_base_ms = 20\n[sinks.splunk_hec]\nurl = \"{}\"\ntoken = {{ file = \"hec.token\" }}\n\
         [[sinks]]\nname = \"hello\"\nstreams = [\"incidents\"]\n[sinks.file]\nmode = \"json_array\"\ndir = \"latest\"\n",
        hec.url()
    );
    tu::write_config(&dir, &emu, &[ApiKind::Graph], &sinks);

    let check = xdrsync_async(vec!["check-config".into()], dir.clone()).await;
    let out = text(&check.stdout);
    assert!(check.status.success(), "{out}{}", text(&check.stderr));
    assert!(out.contains("3 sinks"), "{out}");
    assert!(
        out.contains("sink splunk (splunk_hec, format xdrsync)"),
        "{out}"
    );
    assert!(out.contains("sink hello (file, format raw)"), "{out}");

    // At trace level, so every log line of the HTTP stack is in the output too.
    let cwd = dir.clone();
    let first = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_xdrsync"))
            .arg("pull")
            .current_dir(cwd)
            .env_remove("XDRSYNC_CONFIG")
            .env("XDRSYNC_LOG", "trace")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        !text(&first.stderr).contains(hec.token()) && !text(&first.stdout).contains(hec.token()),
        "the HEC token never prints, even at trace level"
    );
    let err = text(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "{}{err}", text(&first.stdout));
    assert!(
        err.contains("sink splunk") && err.contains("will retry on the next delivery"),
        "{err}"
    );
    assert!(!err.contains(hec.token()), "the token never prints: {err}");
    let archived = ndjson_lines(&dir.join("ecs.ndjson"));
    assert!(archived.len() > 10, "{}", archived.len());
    assert!(archived.iter().all(|d| d["ecs"]["version"].is_string()));
    assert_eq!(std::fs::read_dir(dir.join("latest")).unwrap().count(), 1);

    let status = xdrsync_async(vec!["status".into()], dir.clone()).await;
    let st = text(&status.stdout);
    let splunk_row: Vec<&str> = st
        .lines()
        .find(|l| l.starts_with("splunk"))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // Position 0, the whole archive waiting, never delivered: stalled, exit 1.
    assert_eq!(
        splunk_row.get(1..3),
        Some(&["0", &archived.len().to_string()[..]][..]),
        "{st}"
    );
    assert!(
        splunk_row.contains(&"never") && splunk_row.contains(&"STALLED:"),
        "{st}"
    );
    assert_eq!(status.status.code(), Some(1), "{st}");

    hec.restart();
    let second = xdrsync_async(vec!["pull".into()], dir.clone()).await;
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_eq!(
        hec.events().len(),
        ndjson_lines(&dir.join("ecs.ndjson")).len(),
        "caught up, once"
    );

    // A stdout sink: events on stdout, one JSON document per line; the table on stderr.
    std::fs::write(
        dir.join("xdrsync.toml"),
        std::fs::read_to_string(dir.join("xdrsync.toml")).unwrap()
            + "\n[[sinks]]\nname = \"pipe\"\nformat = \"ocsf\"\n[sinks.stdout]\n",
    )
    .unwrap();
    let third = xdrsync_async(vec!["pull".into()], dir.clone()).await;
    assert!(third.status.success(), "{}", text(&third.stderr));
    let lines: Vec<Value> = text(&third.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout is events only: {l:?}: {e}"))
        })
        .collect();
    assert_eq!(lines.len(), ndjson_lines(&dir.join("ecs.ndjson")).len());
    assert!(lines.iter().all(|d| d["metadata"]["version"] == "1.5.0"));
    assert!(text(&third.stderr).contains("TENANT"));
}

/// Write-back through the binary: `incidents update` changes the incident in Defender, the
/// next `pull --ndjson` delivers the version it made with `origin` naming the action;
/// `actions apply --dry-run` shows the change and sends nothing, `actions apply` applies,
/// re-applying skips, a bad line is refused by line number, `actions log` lists every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_from_the_command_line() {
    let emu = tu::start(tu::many_tenants(&["Contoso"], 6.0, tu::ALL_WRITE_ROLES)).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = tu::write_config(tmp.path(), &emu, &[ApiKind::Graph], "");
    let cwd = tmp.path().to_owned();
    let run =
        |args: &[&str]| xdrsync_async(args.iter().map(|s| (*s).to_owned()).collect(), cwd.clone());
    let first = run(&["pull", "--ndjson", "out.ndjson"]).await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    let tenant = config.tenants[0].tenant_id.as_str().to_owned();
    let ids = tu::newest_incidents(&emu, &tenant, 2);
    let (a, b) = (ids[0], ids[1]);
    let token = run(&["auth", "token", "--tenant", "contoso"]).await;
    assert!(
        text(&token.stdout).contains(
            "write-back: incidents yes (SecurityIncident.ReadWrite.All), alerts yes (SecurityAlert.ReadWrite.All)"
        ),
        "{}",
        text(&token.stdout)
    );
    let update = run(&[
        "incidents",
        "update",
        "--tenant",
        "contoso",
        "--id",
        &a.to_string(),
        "--status",
        "inProgress",
        "--assign",
        "ana@contoso.com",
        "--tag",
        "+escalated",
        "--comment",
        "taking it",
        "--actor",
        "ana",
    ])
    .await;
    let out = text(&update.stdout);
    assert!(update.status.success(), "{out}{}", text(&update.stderr));
    assert!(out.contains("applied"), "{out}");
    let inc = emu.state().incidents(&tenant, |i| i.id == a).pop().unwrap();
    assert_eq!(inc.status.graph, "inProgress");
    assert_eq!(inc.assigned_to.as_deref(), Some("ana@contoso.com"));
    assert!(inc.tags.contains(&"escalated".to_owned()));
    // Delivered with its origin.
    let second = run(&["pull", "--ndjson", "out.ndjson"]).await;
    assert!(second.status.success(), "{}", text(&second.stderr));
    let lines = ndjson_lines(&tmp.path().join("out.ndjson"));
    let marked: Vec<&Value> = lines
        .iter()
        .filter(|l| l["origin"]["source"] == "xdrsync")
        .collect();
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert_eq!(marked[0]["incident_id"], a.to_string());
    assert_eq!(marked[0]["change"], "updated");
    // A file of actions: a dry run, the run, a re-run.
    std::fs::write(
        tmp.path().join("actions.ndjson"),
        format!(
            "{{\"tenant\":\"contoso\",\"id\":\"{b}\",\"classification\":\"falsePositive\",\"determination\":\"notMalicious\",\"status\":\"resolved\",\"tags_add\":[\"bulk-1\"]}}\n\n{{\"tenant\":\"contoso\",\"id\":\"{a}\",\"status\":\"inProgress\"}}\n"
        ),
    )
    .unwrap();
    let dry = run(&["actions", "apply", "actions.ndjson", "--dry-run"]).await;
    let dry_out = text(&dry.stdout);
    assert!(dry.status.success(), "{dry_out}{}", text(&dry.stderr));
    assert!(
        dry_out.contains("dry-run") && dry_out.contains("classification:"),
        "{dry_out}"
    );
    assert!(dry_out.contains("already so"), "{dry_out}");
    assert_ne!(
        emu.state()
            .incidents(&tenant, |i| i.id == b)
            .pop()
            .unwrap()
            .status
            .graph,
        "resolved",
        "a dry run sent nothing"
    );
    let apply = run(&["actions", "apply", "actions.ndjson"]).await;
    assert!(apply.status.success(), "{}", text(&apply.stderr));
    assert!(
        text(&apply.stderr).contains("1 applied, 1 skipped, 0 failed"),
        "{}",
        text(&apply.stderr)
    );
    let again = run(&["actions", "apply", "actions.ndjson"]).await;
    assert!(
        text(&again.stderr).contains("0 applied, 2 skipped, 0 failed"),
        "{}",
        text(&again.stderr)
    );
    std::fs::write(
        tmp.path().join("bad.ndjson"),
        "{\"tenant\":\"contoso\",\"id\":\"1\"}\n{\"tenant\":\"contoso\",\"colour\":\"red\"}\n",
    )
    .unwrap();
    let bad = run(&["actions", "apply", "bad.ndjson"]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("line 2"),
        "{}",
        text(&bad.stderr)
    );
    let log = run(&["actions", "log", "--tenant", "contoso"]).await;
    let log_out = text(&log.stdout);
    assert!(log.status.success(), "{log_out}");
    for want in [
        "ana",
        "applied",
        "skipped",
        "status: inProgress",
        "assignedTo: ana@contoso.com",
    ] {
        assert!(log_out.contains(want), "{want}: {log_out}");
    }
}

/// Hunting across 20 customers: every row tagged with its tenant, Graph and the legacy API
/// alike; one tenant without the hunting role and one throttled for an hour fail by name while
/// the others' rows are kept (exit 1); CSV and NDJSON; `--timespan` narrows Graph's search.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunt_across_customers() {
    let names: Vec<String> = (0..20).map(|i| format!("Customer {i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut roles = tu::ALL_READ_ROLES.to_vec();
    roles.extend(["ThreatHunting.Read.All", "AdvancedHunting.Read.All"]);
    let emu = tu::start(tu::many_tenants(&names, 6.0, &roles)).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = tu::write_config(tmp.path(), &emu, &[ApiKind::Graph, ApiKind::Xdr], "");
    // A Graph tenant without the hunting role (the injected 429 lands on a legacy one).
    let last = config.tenants[18].tenant_id.as_str().to_owned();
    emu.state().update_directory(|d| {
        for roles in d.apps[0].consents.get_mut(&last).unwrap().values_mut() {
            roles.retain(|r| !r.contains("Hunting"));
        }
    });
    emu.state().add_fault(xdrsync_emulator::faults::FaultRule {
        route: "POST /api/advancedhunting/run".into(),
        sequence: vec![xdrsync_emulator::faults::Fault::Status {
            status: 429,
            retry_after_secs: Some(3600),
        }],
        fault: None,
        probability: None,
    });
    let cwd = tmp.path().to_owned();
    let run =
        |args: &[&str]| xdrsync_async(args.iter().map(|s| (*s).to_owned()).collect(), cwd.clone());
    let q = "AlertInfo | summarize count() by Severity";
    let out = run(&["hunt", q, "--all", "--output", "ndjson"]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let rows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tenants: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| r["TenantName"].as_str().unwrap())
        .collect();
    assert_eq!(tenants.len(), 18, "{tenants:?}\n{stderr}");
    assert!(
        rows.iter()
            .all(|r| r["TenantId"].is_string() && r["count_"].is_number()),
        "{stdout}"
    );
    let failed: Vec<&str> = stderr.lines().filter(|l| l.contains("FAILED")).collect();
    assert_eq!(failed.len(), 2, "{stderr}");
    assert!(
        stderr.contains("customer18: FAILED") && stderr.contains("ThreatHunting.Read.All"),
        "the tenant without the role is named with it: {stderr}"
    );
    assert!(
        stderr.contains("3600"),
        "the throttled tenant names the wait: {stderr}"
    );
    // Each tenant's line says how much of its hunting quota is used.
    assert!(
        stderr.contains("customer00: 4 rows, hunting quota 1 of 45 calls this minute"),
        "{stderr}"
    );
    assert!(
        stderr.contains("from 18 of 20 tenants (2 failed"),
        "{stderr}"
    );
    // CSV, two tenants, and Graph's timespan.
    let a = config.tenants[0].name.clone();
    let csv = run(&[
        "hunt",
        "AlertInfo | project AlertId, Severity",
        "--tenant",
        &a,
        "--output",
        "csv",
    ])
    .await;
    let csv_out = text(&csv.stdout);
    assert!(csv.status.success(), "{}", text(&csv.stderr));
    assert!(
        csv_out.starts_with("TenantName,TenantId,AlertId,Severity\n"),
        "{csv_out}"
    );
    let all_rows = csv_out.lines().count() - 1;
    let recent = run(&[
        "hunt",
        "AlertInfo | project AlertId, Severity",
        "--tenant",
        &a,
        "--output",
        "csv",
        "--timespan",
        "1d",
    ])
    .await;
    let recent_rows = text(&recent.stdout).lines().count() - 1;
    assert!(
        recent_rows > 0 && recent_rows < all_rows,
        "{recent_rows} of {all_rows}"
    );
    let none = run(&["hunt", q]).await;
    assert_eq!(none.status.code(), Some(2), "{}", text(&none.stderr));
}

/// The hunting result limits reach the user: a result cut at the 100,000-row limit is said to
/// be cut (the legacy API), and Graph's answer to a result over its size limit is shown with
/// Microsoft's words, for that tenant only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunting_limits_are_said_plainly() {
    let emu = tu::start_with(tu::demo_directory(), |b| {
        b.hunting_max_result_bytes = 2_000_000;
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let config = tu::write_config(tmp.path(), &emu, &[ApiKind::Graph, ApiKind::Xdr], "");
    let (graph, xdr) = (
        config.tenants[0].name.clone(),
        config.tenants[1].name.clone(),
    );
    let big = "AlertEvidence | project EntityType, AlertId | join kind=inner (AlertEvidence | project EntityType, Title) on EntityType";
    let out = xdrsync_async(
        [
            "hunt", big, "--tenant", &graph, "--tenant", &xdr, "--output", "ndjson",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        tmp.path().to_owned(),
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stdout.lines().count(), 100_000, "{stderr}");
    assert!(
        stderr.contains(&format!("{xdr}: 100000 rows"))
            && stderr.contains("TRUNCATED at the service's row limit"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{graph}: FAILED"))
            && stderr.contains("Query execution has exceeded the allowed result size"),
        "{stderr}"
    );
}
