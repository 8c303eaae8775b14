//! Test harness shared by the integration tests of every crate (a dev-dependency only).
//!
//! [`start`] runs the real emulator on `127.0.0.1:0`; [`write_config`] writes an xdrsync
//! config that points at it, through the same file path users take. [`receivers`] are the
//! real (or protocol-faithful) receivers the sinks are tested against, and [`conformance`] the
//! one suite every sink runs.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::path::Path;

pub mod conformance;
pub mod receivers;
pub mod truth;

use xdrsync_config::Config;
use xdrsync_emulator::{
    AppSecret, AppSpec, Directory, Emulator, EmulatorConfig, Resource, TenantSpec,
};
use xdrsync_model::ApiKind;

/// Starts an emulator with `directory` on a free loopback port, rate limits off (tests that
/// page hard would otherwise wait out real quotas; the rate-limit tests turn them on).
pub async fn start(directory: Directory) -> Emulator {
    let mut config = EmulatorConfig {
        directory,
        ..EmulatorConfig::default()
    };
    config.behaviour.rate_limits = false;
    Emulator::start(config, "127.0.0.1:0".parse().expect("loopback address"))
        .await
        .expect("the emulator binds a loopback port")
}

/// The demo directory with a fixed secret.
pub fn demo_directory() -> Directory {
    Directory::demo(42)
}

/// A single-tenant directory whose app has `roles` on every resource (none: a token without
/// `roles`), with `incidents_per_hour` synthetic incidents.
pub fn one_tenant(name: &str, incidents_per_hour: f64, roles: &[&str]) -> Directory {
    many_tenants(&[name], incidents_per_hour, roles)
}

/// [`one_tenant`] with several tenants (the first is the app's home), the one app consented
/// in each with `roles` on every resource.
pub fn many_tenants(names: &[&str], incidents_per_hour: f64, roles: &[&str]) -> Directory {
    let tenants: Vec<TenantSpec> = names
        .iter()
        .map(|n| TenantSpec::named(n, incidents_per_hour))
        .collect();
    let consents = tenants
        .iter()
        .map(|t| {
            (
                t.id.clone(),
                Resource::ALL
                    .into_iter()
                    .map(|r| (r, roles.iter().map(|s| (*s).to_owned()).collect()))
                    .collect(),
            )
        })
        .collect();
    let Some(tenant) = tenants.first().cloned() else {
        panic!("many_tenants needs a name");
    };
    let name = names.first().copied().unwrap_or("tenant");
    let app = AppSpec {
        client_id: "00000000-0000-4000-8000-0000000000a1".into(),
        name: format!("{name} connector"),
        home_tenant: tenant.id.clone(),
        multi_tenant: tenants.len() > 1,
        secrets: vec![AppSecret {
            value: "test~secret.value-1".into(),
            expires: None,
        }],
        consents,
        certificates: Vec::new(),
        redirect_uris: vec!["http://localhost".into()],
        required_roles: Default::default(),
        managed_identity: false,
    };
    Directory::new(tenants, vec![app])
}

/// Every read role of every resource.
pub const ALL_READ_ROLES: &[&str] = &[
    "SecurityIncident.Read.All",
    "SecurityAlert.Read.All",
    "Incident.Read.All",
    "Alert.Read.All",
];

/// [`ALL_READ_ROLES`] and the roles write-back needs.
pub const ALL_WRITE_ROLES: &[&str] = &[
    "SecurityIncident.Read.All",
    "SecurityAlert.Read.All",
    "Incident.Read.All",
    "Alert.Read.All",
    "SecurityIncident.ReadWrite.All",
    "SecurityAlert.ReadWrite.All",
    "Incident.ReadWrite.All",
];

/// Writes `DIR/xdrsync.toml` (and the secret file) for every tenant the emulator's first app is
/// consented in, tenant `i` pulled with `apis[i % apis.len()]`, and loads it.
///
/// Like [`start`], it turns the client's rate budget off and shortens retry waits, unless
/// `extra`'s `[sync]` sets them.
pub fn write_config(dir: &Path, emulator: &Emulator, apis: &[ApiKind], extra: &str) -> Config {
    write_config_in_cloud(dir, emulator, apis, extra, "public")
}

/// [`write_config`] with `[cloud] name = cloud` (`gcc`, `gcc-high`, `dod`): the hosts stay the
/// emulator's, the token audiences become the cloud's.
pub fn write_config_in_cloud(
    dir: &Path,
    emulator: &Emulator,
    apis: &[ApiKind],
    extra: &str,
    cloud: &str,
) -> Config {
    let mut fast = String::new();
    if !extra.contains("rate_budget") {
        fast.push_str("rate_budget = false\n");
    }
    if !extra.contains("retry_base_ms") {
        fast.push_str("retry_base_ms = 20\n");
    }
    // `run`'s status server on a free port, so daemons of parallel tests never collide.
    let server = if extra.contains("[server]") {
        ""
    } else {
        "\n[server]\nlisten = \"127.0.0.1:0\"\n"
    };
    let extra = if extra.contains("[sync]") {
        extra.replacen("[sync]", &format!("[sync]\n{fast}"), 1)
    } else {
        format!("{extra}\n[sync]\n{fast}")
    };
    let contract = emulator.contract();
    let app = &contract.apps[0];
    fs_err::write(dir.join("secret"), &app.secret).expect("write secret");
    let base = emulator.base_url();
    let ca = contract
        .ca_cert
        .as_ref()
        .map(|p| format!("ca_file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    let mut toml = format!(
        "{extra}{server}\n[store]\npath = \"xdrsync.db\"\n[cloud]\nname = \"{cloud}\"\n{ca}authority_url = \"{base}\"\ngraph_url = \"{base}\"\nxdr_url = \"{base}\"\nmde_url = \"{base}\"\nsiem_url = \"{base}/alertexporter\"\n\
         [[apps]]\nname = \"app\"\nclient_id = \"{}\"\nclient_secret = {{ file = \"secret\" }}\n",
        app.client_id
    );
    let consented = contract
        .tenants
        .iter()
        .filter(|t| app.consented_tenants.contains_key(&t.id));
    for (i, t) in consented.enumerate() {
        let api = match apis[i % apis.len()] {
            ApiKind::Graph => "graph",
            ApiKind::Xdr => "xdr",
        };
        let name = t.domain.split('.').next().unwrap_or("t");
        toml.push_str(&format!("\n[[tenants]]\nname = \"{name}\"\ntenant_id = \"{}\"\napp = \"app\"\napi = \"{api}\"\n", t.id));
    }
    let path = dir.join("xdrsync.toml");
    fs_err::write(&path, toml).expect("write config");
    Config::load(&path).expect("the generated config is valid")
}

/// Rewrites the config at `config.path` so that tenant `i` pulls `streams[i % streams.len()]`
/// (a TOML array such as `["incidents", "alerts"]`), and loads it again.
pub fn set_streams(config: &Config, streams: &[&str]) -> Config {
    let text = fs_err::read_to_string(&config.path).expect("read config");
    let mut out = String::new();
    let mut i = 0;
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("api = ") {
            out.push_str(&format!("streams = {}\n", streams[i % streams.len()]));
            i += 1;
        }
    }
    fs_err::write(&config.path, out).expect("write config");
    Config::load(&config.path).expect("the rewritten config is valid")
}

/// Starts an emulator with `directory` and behaviour changed by `tweak` (rate limits off
/// unless `tweak` turns them on).
pub async fn start_with(
    directory: Directory,
    tweak: impl FnOnce(&mut xdrsync_emulator::Behaviour),
) -> Emulator {
    let mut config = EmulatorConfig {
        directory,
        ..EmulatorConfig::default()
    };
    config.behaviour.rate_limits = false;
    tweak(&mut config.behaviour);
    Emulator::start(config, "127.0.0.1:0".parse().expect("loopback address"))
        .await
        .expect("the emulator binds a loopback port")
}

/// Starts an emulator over TLS (a fresh local CA in `dir`), rate limits off.
pub async fn start_tls(
    directory: Directory,
    dir: &Path,
    tweak: impl FnOnce(&mut xdrsync_emulator::Behaviour),
) -> Emulator {
    let mut config = EmulatorConfig {
        directory,
        ..EmulatorConfig::default()
    };
    config.behaviour.rate_limits = false;
    tweak(&mut config.behaviour);
    let tls = xdrsync_emulator::tls::ensure(&dir.join("tls")).expect("TLS files");
    Emulator::start_with(
        config,
        "127.0.0.1:0".parse().expect("loopback address"),
        Some(tls),
    )
    .await
    .expect("the emulator binds a loopback port")
}

/// The ids of the `n` newest incidents of `tenant` (highest id first) that are not merged.
pub fn newest_incidents(emu: &Emulator, tenant: &str, n: usize) -> Vec<u64> {
    let mut ids: Vec<u64> = emu
        .state()
        .incidents(tenant, |i| i.redirect.is_none())
        .iter()
        .map(|i| i.id)
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.truncate(n);
    ids
}
