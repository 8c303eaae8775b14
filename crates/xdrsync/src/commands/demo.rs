//! `xdrsync demo`: the whole product on one machine, no Microsoft account needed.
//!
//! Starts the built-in emulator on a free loopback port (an MSSP app consented by three customer
//! tenants), writes a config for it into `--dir`, pulls every tenant into `DIR/xdrsync.db`,
//! delivers new versions to `DIR/events.ndjson`, writes the Hello World's
//! `DIR/Latest Incidents <time>.json`, and prints a summary per tenant. The emulator's tenants
//! and incidents are deterministic, so a second run adds only what changed in between.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use xdrsync_config::Config;
use xdrsync_emulator::{Emulator, EmulatorConfig};
use xdrsync_model::Timestamp;
use xdrsync_pipeline::{Pipeline, PullMode};
use xdrsync_sinks::{NdjsonSink, Sink};

use crate::cli::DemoArgs;

const SECRET_FILE: &str = "demo-client-secret";

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    xdrsync_sinks::private_dir(dir)?;
    // The real world's mess: lag that varies per change, ties, merges, enum drift.
    let emulator = Emulator::start(
        EmulatorConfig {
            behaviour: xdrsync_emulator::Behaviour::realistic(),
            ..EmulatorConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await
    .context("starting the emulator")?;
    let config = write_config(dir, &emulator)?;
    crate::text::outln!(
        "Emulator running at {} with {} customer tenants.",
        emulator.base_url(),
        config.tenants.len()
    );

    let store = super::open_store(&config)?;
    let names = xdrsync_sinks::tenant_names(&config.tenants);
    let pipeline = Pipeline::new(config, store.clone())?;
    let ndjson = dir.join("events.ndjson");
    let sink: Arc<dyn Sink> = Arc::new(NdjsonSink::new("ndjson", &ndjson).with_tenant_names(names));
    let (reports, delivered) = pipeline
        .pull_all_delivering(PullMode::Incremental, &[sink], |_| {})
        .await;
    let delivered = delivered
        .into_iter()
        .next()
        .unwrap_or_else(|| Ok(Default::default()))?;
    let now = Timestamp::now();
    let latest = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            store.latest_since(now.sub(chrono::Duration::hours(48)))
        })
        .await??
    };
    let latest_path = dir.join(xdrsync_sinks::latest_incidents_file_name(now));
    let mess = Mess::of(&latest);
    let raws: Vec<String> = latest.into_iter().map(|v| v.raw).collect();
    xdrsync_sinks::write_json_array(&latest_path, &raws)?;
    emulator.stop().await;

    crate::text::outln!();
    crate::text::out!("{}", super::pull::summary(&reports));
    crate::text::outln!();
    crate::text::outln!("Store:      {}", store.location());
    crate::text::outln!(
        "NDJSON:     {} ({} new lines)",
        ndjson.display(),
        delivered.events
    );
    crate::text::outln!(
        "Snapshot:   {} ({} incidents updated in the last 48 h)",
        latest_path.display(),
        raws.len()
    );
    crate::text::outln!(
        "Config:     {} (for `xdrsync --config … incidents list` against `xdrsync emulator serve`)",
        dir.join("xdrsync.toml").display()
    );
    crate::text::outln!();
    crate::text::out!("{}", mess.explain());
    Ok(super::pull::exit_code(&reports))
}

/// What of the real world's mess the demo's emulator served, and how the pull answered it.
#[derive(Debug, Default)]
struct Mess {
    redirected: usize,
    unknown_members: usize,
    incidents: usize,
}

impl Mess {
    fn of(latest: &[xdrsync_store::StoredVersion]) -> Self {
        let mut m = Mess::default();
        for i in latest.iter().filter_map(|v| v.record.incident()) {
            m.incidents += 1;
            match i.status.as_str() {
                "redirected" => m.redirected += 1,
                "active" | "inProgress" | "resolved" => {}
                _ => m.unknown_members += 1,
            }
        }
        m
    }

    fn explain(&self) -> String {
        format!(
            "The emulator served a realistic world, as Defender does:\n\
             - changes arrive up to 2 minutes late and out of order: each pull re-reads an overlap\n\
             \x20 window and stores a version once, so late changes are caught without duplicates;\n\
             - incidents share exact timestamps: paging by time boundary re-reads the boundary\n\
             \x20 instant instead of skipping past it;\n\
             - {} of {} incidents were merged into others (status `redirected`, with\n\
             \x20 `redirect_incident_id`): kept, and delivered as changes of their own;\n\
             - {} carry an enum member newer than this release: kept as the API sent it.\n\
             (`xdrsync emulator serve` runs the same world; a fixture with `world = \"ideal\"` turns it off.)\n",
            self.redirected, self.incidents, self.unknown_members
        )
    }
}

/// Writes `DIR/xdrsync.toml` and the secret file for the running emulator and loads it back,
/// so the demo goes through exactly the config path users do.
fn write_config(dir: &Path, emulator: &Emulator) -> anyhow::Result<Config> {
    let contract = emulator.contract();
    let app = contract
        .apps
        .first()
        .context("the demo emulator has no app")?;
    let secret_path = dir.join(SECRET_FILE);
    xdrsync_sinks::write_atomic(&secret_path, app.secret.as_bytes())?;
    restrict(&secret_path)?;
    let base = emulator.base_url();
    let mut toml = format!(
        "# Written by `xdrsync demo` for an emulator at {base}; it changes port on every run.\n\
         [store]\npath = \"xdrsync.db\"\n\n\
         [cloud]\nauthority_url = \"{base}\"\ngraph_url = \"{base}\"\nxdr_url = \"{base}\"\nmde_url = \"{base}\"\nsiem_url = \"{base}/alertexporter\"\n\n\
         [[apps]]\nname = \"mssp\"\nclient_id = \"{}\"\nclient_secret = {{ file = \"{SECRET_FILE}\" }}\n",
        app.client_id
    );
    // One customer on the legacy API with v1 tokens, to show both paths side by side.
    let customers = contract.tenants.iter().filter(|t| t.id != app.home_tenant);
    for (i, t) in customers.enumerate() {
        let name = t.domain.split('.').next().unwrap_or("tenant");
        // The legacy one also reads the retired SIEM API's detections.
        let (api, version, streams) = if i == 1 {
            ("xdr", "v1", r#"["incidents", "alerts", "detections"]"#)
        } else {
            ("graph", "v2", r#"["incidents", "alerts"]"#)
        };
        toml.push_str(&format!(
            "\n[[tenants]]\nname = \"{name}\"\ntenant_id = \"{}\"\napp = \"mssp\"\napi = \"{api}\"\ntoken_version = \"{version}\"\nstreams = {streams}\n",
            t.id
        ));
    }
    let path = dir.join("xdrsync.toml");
    xdrsync_sinks::write_atomic(&path, toml.as_bytes())?;
    Ok(Config::load(&path)?)
}

#[cfg(unix)]
fn restrict(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_: &Path) -> anyhow::Result<()> {
    Ok(())
}
