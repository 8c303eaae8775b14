//! `xdrsync init --emulator DIR/emulator.json`: from emulator to first pull in two commands.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use xdrsync_emulator::{Cloud, Contract};

use crate::cli::InitArgs;

pub(crate) fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let text = fs_err::read_to_string(&args.emulator)?;
    let contract: Contract = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not an emulator contract (emulator.json)",
            args.emulator.display()
        )
    })?;
    anyhow::ensure!(
        args.force || !args.out.exists(),
        "{} exists; pass --force to overwrite it",
        args.out.display()
    );
    let folder = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let secrets = folder.join("secrets");
    xdrsync_sinks::private_dir(&secrets)?;
    let base = &contract.base_url;
    // One config serves one cloud (`[cloud] name` sets the audiences every token asks for):
    // the cloud most consented tenants live in; tenants of another are left out, by name.
    let consented: BTreeSet<&str> = contract
        .apps
        .iter()
        .flat_map(|a| a.consented_tenants.keys().map(String::as_str))
        .collect();
    let cloud = {
        let mut counts: Vec<(Cloud, usize)> = Vec::new();
        for t in contract
            .tenants
            .iter()
            .filter(|t| consented.contains(t.id.as_str()))
        {
            match counts.iter_mut().find(|(c, _)| *c == t.cloud) {
                Some((_, n)) => *n += 1,
                None => counts.push((t.cloud, 1)),
            }
        }
        // Most tenants first; on a tie, the commercial cloud.
        counts.sort_by_key(|(c, n)| (std::cmp::Reverse(*n), *c != Cloud::Public));
        counts.first().map_or(Cloud::Public, |(c, _)| *c)
    };
    let mut toml = format!(
        "# Written by `xdrsync init` for the emulator at {base}.\n\n[store]\npath = \"xdrsync.db\"\n\n\
         [cloud]\n{}authority_url = \"{base}\"\ngraph_url = \"{base}\"\nxdr_url = \"{base}\"\nmde_url = \"{base}\"\nsiem_url = \"{base}/alertexporter\"\n",
        match cloud_name(cloud) {
            "public" => String::new(),
            name => format!("name = \"{name}\"\n"),
        }
    );
    let mut skipped: Vec<String> = Vec::new();
    if let Some(ca) = &contract.ca_cert {
        let ca = fs_err::canonicalize(ca)?;
        toml.push_str(&format!(
            "ca_file = {}\n",
            toml_string(&ca.display().to_string())
        ));
    }
    let mut names = BTreeSet::new();
    let mut tenants = 0;
    for (i, app) in contract.apps.iter().enumerate() {
        let app_name = format!("app{}", i + 1);
        let secret_path = secrets.join(format!("{}.secret", app.client_id));
        xdrsync_sinks::write_atomic(&secret_path, app.secret.as_bytes())?;
        restrict(&secret_path);
        toml.push_str(&format!(
            "\n# {}\n[[apps]]\nname = \"{app_name}\"\nclient_id = \"{}\"\nclient_secret = {{ file = \"secrets/{}.secret\" }}\n",
            app.name, app.client_id, app.client_id
        ));
        for tenant_id in app.consented_tenants.keys() {
            let Some(t) = contract.tenants.iter().find(|t| &t.id == tenant_id) else {
                continue;
            };
            if t.cloud != cloud {
                skipped.push(format!("{} ({})", t.name, cloud_name(t.cloud)));
                continue;
            }
            let base_name = t.domain.split('.').next().unwrap_or("tenant").to_owned();
            let mut name = base_name.clone();
            let mut n = 2;
            while !names.insert(name.clone()) {
                name = format!("{base_name}-{n}");
                n += 1;
            }
            tenants += 1;
            toml.push_str(&format!(
                "\n# {}\n[[tenants]]\nname = \"{name}\"\ntenant_id = \"{}\"\napp = \"{app_name}\"\napi = \"graph\"\n",
                t.name, t.id
            ));
        }
    }
    xdrsync_sinks::write_atomic(&args.out, toml.as_bytes())?;
    let config =
        xdrsync_config::Config::load(&args.out).context("the written config does not validate")?;
    crate::text::outln!(
        "Wrote {} with {tenants} tenants and {} apps (secrets in {}).",
        args.out.display(),
        contract.apps.len(),
        secrets.display()
    );
    if !skipped.is_empty() {
        crate::text::outln!(
            "Left out {} tenants of another cloud than {}: {} (one config serves one cloud; write a second config for them).",
            skipped.len(),
            cloud_name(cloud),
            skipped.join(", ")
        );
    }
    if let Some(first) = config.tenants.first() {
        crate::text::outln!(
            "Next: xdrsync --config {} incidents list --tenant {} --since 48h",
            args.out.display(),
            first.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The `[cloud] name` of a cloud.
fn cloud_name(c: Cloud) -> &'static str {
    match c {
        Cloud::Public => "public",
        Cloud::Gcc => "gcc",
        Cloud::GccHigh => "gcc-high",
        Cloud::Dod => "dod",
    }
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(unix)]
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict(_: &Path) {}
