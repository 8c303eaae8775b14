//! The emulator's fixture file (`emulator serve --config FIXTURE.toml`).
//!
//! It declares tenants, app registrations (single- or multi-tenant, secrets with expiry,
//! generated certificates, redirect URIs), the roles each tenant granted, data volumes and
//! behaviours. Every field has a default, so no file is needed for the demo set-up.
//!
//! The world is realistic unless the fixture says `world = "ideal"`: `[behaviour]` overrides
//! [`Behaviour::realistic`] (ingestion lag that varies per change, ties, merges, enum drift),
//! or, with `world = "ideal"`, the documented service's [`Behaviour::default`].
//!
//! ```toml
//! seed = 7
//! time_scale = 60.0
//! world = "realistic"
//!
//! [behaviour]
//! ingestion_lag_secs = 120
//! rate_limits = true
//!
//! [[tenants]]
//! name = "Contoso"
//! incidents_per_hour = 4.0
//! cloud = "public"
//!
//! [[apps]]
//! name = "SIEM connector"
//! home_tenant = "Contoso"
//! certificates = ["primary"]
//! [apps.consents.Contoso]
//! graph = ["SecurityIncident.Read.All"]
//! xdr = ["Incident.Read.All"]
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use xdrsync_model::Timestamp;

use crate::behaviour::Behaviour;
use crate::directory::{
    AppSecret, AppSpec, Directory, Resource, TenantSpec, generate_secret, read_roles,
};
use crate::rng::name_guid;
use crate::{EmulatorConfig, certs};

/// A fixture problem, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("emulator fixture {path}: {message}")]
pub struct FixtureError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// Which world `[behaviour]` starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum World {
    /// [`Behaviour::realistic`]: lag, ties, merges, enum drift.
    #[default]
    Realistic,
    /// [`Behaviour::default`]: the documented service, none of the mess.
    Ideal,
}

/// The fixture file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// The world `[behaviour]` starts from (realistic unless `"ideal"`).
    #[serde(default)]
    pub world: World,
    /// Seed for generated secrets; incident data is seeded per tenant.
    pub seed: Option<u64>,
    /// Emulator seconds per real second.
    pub time_scale: Option<f64>,
    /// How far back each tenant's history reaches at start-up, in days (default 7).
    pub history_days: Option<u32>,
    /// Access-token lifetime in seconds (default 3599).
    pub token_lifetime_secs: Option<i64>,
    /// Realism switches and protocol alternatives, over the defaults of `world`.
    #[serde(default)]
    pub behaviour: toml::Table,
    /// Tenants; none means the demo set-up (an MSSP tenant and three customers).
    #[serde(default)]
    pub tenants: Vec<FixtureTenant>,
    /// App registrations.
    #[serde(default)]
    pub apps: Vec<FixtureApp>,
}

/// `[[tenants]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureTenant {
    /// Display name; the id and domain derive from it unless given.
    pub name: String,
    /// Tenant GUID.
    pub id: Option<String>,
    /// Verified domain.
    pub domain: Option<String>,
    /// Mean new incidents per hour (default 2).
    pub incidents_per_hour: Option<f64>,
    /// Seed of its incidents.
    pub seed: Option<u64>,
    /// The national cloud it lives in: `public` (default), `gcc`, `gcc-high`, `dod` (its
    /// tokens carry and need that cloud's audiences, e.g. `https://graph.microsoft.us`).
    #[serde(default)]
    pub cloud: crate::directory::Cloud,
}

/// `[[apps]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureApp {
    /// Display name; the client id derives from it unless given.
    pub name: String,
    /// Application (client) id.
    pub client_id: Option<String>,
    /// Home tenant, by name or id.
    pub home_tenant: String,
    /// Whether other tenants may consent to it (default true).
    #[serde(default = "yes")]
    pub multi_tenant: bool,
    /// Client secrets; none means one generated secret.
    #[serde(default)]
    pub secrets: Vec<FixtureSecret>,
    /// Names of certificates to generate (written to the state folder).
    #[serde(default)]
    pub certificates: Vec<String>,
    /// Redirect URIs for the authorization endpoints.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Tenant (name or id) → resource → granted application roles.
    #[serde(default)]
    pub consents: BTreeMap<String, BTreeMap<Resource, Vec<String>>>,
    /// Application roles an admin consent grants (default: the read roles of every API).
    pub required_roles: Option<BTreeMap<Resource, Vec<String>>>,
    /// A managed identity (tokens from `/metadata/identity/oauth2/token`).
    #[serde(default)]
    pub managed_identity: bool,
}

fn yes() -> bool {
    true
}

/// `[[apps.secrets]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureSecret {
    /// The value; generated when absent.
    pub value: Option<String>,
    /// When it expires (AADSTS7000222 afterwards).
    pub expires: Option<Timestamp>,
}

/// Certificates generated for apps: client id → (certificate name, PEM paths).
pub type CertPaths = BTreeMap<String, Vec<(String, PathBuf, PathBuf)>>;

impl Fixture {
    /// `[behaviour]` over the defaults of `world`, checked.
    pub fn resolved_behaviour(&self) -> Result<Behaviour, String> {
        let base = match self.world {
            World::Realistic => Behaviour::realistic(),
            World::Ideal => Behaviour::default(),
        };
        let mut table = toml::Table::try_from(&base).map_err(|e| format!("behaviour: {e}"))?;
        for (k, v) in &self.behaviour {
            table.insert(k.clone(), v.clone());
        }
        let b: Behaviour = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| format!("behaviour: {}", e.to_string().trim_end()))?;
        b.validate()?;
        Ok(b)
    }

    /// Reads a fixture file.
    pub fn load(path: &Path) -> Result<Fixture, FixtureError> {
        let err = |message: String| FixtureError {
            path: path.to_owned(),
            message,
        };
        let text = fs_err::read_to_string(path).map_err(|e| err(e.to_string()))?;
        toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().to_owned()))
    }

    /// Builds the emulator configuration; generated certificates are written under
    /// `state_dir/certs/`.
    pub fn build(
        self,
        path: &Path,
        state_dir: &Path,
    ) -> Result<(EmulatorConfig, CertPaths), FixtureError> {
        let err = |message: String| FixtureError {
            path: path.to_owned(),
            message,
        };
        let behaviour = self.resolved_behaviour().map_err(err)?;
        let seed = self.seed.unwrap_or(1);
        let mut config = EmulatorConfig {
            behaviour,
            time_scale: self.time_scale.unwrap_or(1.0),
            ..EmulatorConfig::default()
        };
        if let Some(days) = self.history_days {
            config.history = chrono::Duration::days(i64::from(days));
        }
        if let Some(secs) = self.token_lifetime_secs {
            config.token_lifetime_secs = secs;
        }
        if self.tenants.is_empty() && self.apps.is_empty() {
            config.directory = Directory::demo(seed);
            return Ok((config, CertPaths::new()));
        }
        let mut dir = Directory::default();
        // Lower-cased name, id and domain → tenant id: a fixture of 10,000 tenants must not
        // scan them all per tenant and per consent.
        let mut keys: HashMap<String, String> = HashMap::new();
        let mut taken: HashSet<String> = HashSet::new();
        for (i, t) in self.tenants.into_iter().enumerate() {
            let mut spec = TenantSpec::named(&t.name, t.incidents_per_hour.unwrap_or(2.0));
            if let Some(id) = t.id {
                spec.id = id.to_ascii_lowercase();
            }
            if let Some(domain) = t.domain {
                spec.domain = domain;
            }
            if let Some(s) = t.seed {
                spec.seed = s;
            }
            spec.cloud = t.cloud;
            let (id, domain) = (
                spec.id.to_ascii_lowercase(),
                spec.domain.to_ascii_lowercase(),
            );
            if taken.contains(&id) || taken.contains(&domain) {
                return Err(err(format!("tenants[{i}]: `{}` is declared twice", t.name)));
            }
            for key in [spec.name.to_ascii_lowercase(), id.clone(), domain.clone()] {
                keys.entry(key).or_insert_with(|| spec.id.clone());
            }
            taken.insert(id);
            taken.insert(domain);
            dir.tenants.push(spec);
        }
        let resolve =
            |key: &str| -> Option<String> { keys.get(&key.to_ascii_lowercase()).cloned() };
        let mut cert_paths = CertPaths::new();
        for (i, a) in self.apps.into_iter().enumerate() {
            let home = resolve(&a.home_tenant).ok_or_else(|| {
                err(format!(
                    "apps[{i}].home_tenant: no tenant `{}`",
                    a.home_tenant
                ))
            })?;
            let client_id = a
                .client_id
                .unwrap_or_else(|| name_guid("app", &a.name))
                .to_ascii_lowercase();
            let mut secrets: Vec<AppSecret> = a
                .secrets
                .into_iter()
                .enumerate()
                .map(|(j, s)| AppSecret {
                    value: s
                        .value
                        .unwrap_or_else(|| generate_secret(seed ^ (i as u64) << 8 ^ j as u64)),
                    expires: s.expires,
                })
                .collect();
            if secrets.is_empty() {
                secrets.push(AppSecret {
                    value: generate_secret(seed ^ (i as u64) << 8),
                    expires: None,
                });
            }
            let mut consents = BTreeMap::new();
            for (tenant, roles) in a.consents {
                let id = resolve(&tenant)
                    .ok_or_else(|| err(format!("apps[{i}].consents: no tenant `{tenant}`")))?;
                consents.insert(id, roles);
            }
            let mut certificates = Vec::new();
            for name in &a.certificates {
                let generated = certs::generate(&format!("CN={} {name}", a.name), None)
                    .map_err(|e| err(format!("apps[{i}].certificates: {e}")))?;
                let folder = state_dir.join("certs");
                fs_err::create_dir_all(&folder).map_err(|e| err(e.to_string()))?;
                let cert_path = folder.join(format!("{client_id}-{name}.pem"));
                let key_path = folder.join(format!("{client_id}-{name}-key.pem"));
                fs_err::write(&cert_path, &generated.cert_pem).map_err(|e| err(e.to_string()))?;
                {
                    // The app's private key: 0600 from the first byte.
                    use std::io::Write as _;
                    let mut options = std::fs::OpenOptions::new();
                    options.write(true).create(true).truncate(true);
                    #[cfg(unix)]
                    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                    options
                        .open(&key_path)
                        .and_then(|mut f| f.write_all(generated.key_pem.as_bytes()))
                        .map_err(|e| err(e.to_string()))?;
                }
                cert_paths.entry(client_id.clone()).or_default().push((
                    name.clone(),
                    cert_path,
                    key_path,
                ));
                certificates.push(generated.cert);
            }
            dir.apps.push(AppSpec {
                managed_identity: a.managed_identity,
                client_id,
                name: a.name,
                home_tenant: home,
                multi_tenant: a.multi_tenant,
                secrets,
                consents,
                certificates,
                redirect_uris: a.redirect_uris,
                required_roles: a.required_roles.unwrap_or_else(|| {
                    Resource::ALL
                        .into_iter()
                        .map(|r| (r, read_roles(r)))
                        .collect()
                }),
            });
        }
        config.directory = dir;
        Ok((config, cert_paths))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No fixture, or one without `world`, is the realistic world; `[behaviour]` overrides it
    /// field by field; `world = "ideal"` starts from the documented service; a wrong field or
    /// value is an error naming it.
    #[test]
    fn the_world_is_realistic_unless_the_fixture_says_ideal() {
        let dir = tempfile::tempdir().unwrap();
        let resolve = |text: &str| {
            let f: Fixture = toml::from_str(text).map_err(|e| e.to_string())?;
            f.build(Path::new("f.toml"), dir.path())
                .map(|(c, _)| c.behaviour)
                .map_err(|e| e.to_string())
        };
        let real = Behaviour::realistic();
        let b = Fixture::default().resolved_behaviour().unwrap();
        assert_eq!(b.ingestion_lag_secs, real.ingestion_lag_secs);
        assert!(b.ingestion_lag_varies && b.enum_drift);
        assert!(b.tie_probability > 0.0 && b.merge_probability > 0.0);
        let b = resolve("[behaviour]\nrate_limits = false\n").unwrap();
        assert!(!b.rate_limits && b.ingestion_lag_varies && b.tie_probability > 0.0);
        let b = resolve("world = \"ideal\"\n[behaviour]\ntie_probability = 0.2\n").unwrap();
        assert_eq!(
            (b.ingestion_lag_secs, b.enum_drift, b.tie_probability),
            (0, false, 0.2)
        );
        let e = resolve("[behaviour]\nlag = 3\n").unwrap_err();
        assert!(e.contains("lag"), "{e}");
        let e = resolve("[behaviour]\ntie_probability = 1.0\n").unwrap_err();
        assert!(e.contains("tie_probability"), "{e}");
        let e = resolve("world = \"perfect\"\n").unwrap_err();
        assert!(e.contains("perfect") || e.contains("world"), "{e}");
    }

    #[test]
    fn fixture_declares_tenants_apps_secrets_certificates_and_consents() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
            seed = 3
            time_scale = 10.0
            [behaviour]
            ingestion_lag_secs = 30
            [[tenants]]
            name = "Contoso"
            [[tenants]]
            name = "Fabrikam"
            id = "11111111-2222-3333-4444-555555555555"
            [[apps]]
            name = "SIEM"
            home_tenant = "Contoso"
            multi_tenant = false
            certificates = ["primary"]
            [[apps.secrets]]
            value = "s3cret"
            expires = "2027-01-01T00:00:00Z"
            [apps.consents.Fabrikam]
            graph = ["SecurityIncident.Read.All"]
        "#;
        let fixture: Fixture = toml::from_str(text).unwrap();
        let (config, certs) = fixture.build(Path::new("f.toml"), dir.path()).unwrap();
        assert_eq!(config.time_scale, 10.0);
        assert_eq!(config.behaviour.ingestion_lag_secs, 30);
        let d = &config.directory;
        assert_eq!(d.tenants.len(), 2);
        let app = &d.apps[0];
        assert!(!app.multi_tenant);
        assert_eq!(app.secrets[0].value, "s3cret");
        assert!(app.secrets[0].expires.is_some());
        assert_eq!(
            app.roles("11111111-2222-3333-4444-555555555555", Resource::Graph),
            Some(vec!["SecurityIncident.Read.All".to_owned()])
        );
        let (_, cert, key) = &certs[&app.client_id][0];
        assert!(cert.exists() && key.exists());
        assert_eq!(app.certificates[0].thumbprint_sha1.len(), 40);
    }

    #[test]
    fn bad_fixture_names_the_problem() {
        let err = toml::from_str::<Fixture>("[[tenants]]\nname = \"x\"\nincidents = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `incidents`"), "{err}");
        let fixture: Fixture = toml::from_str(
            "[[tenants]]\nname = \"A\"\n[[apps]]\nname = \"x\"\nhome_tenant = \"Nope\"\n",
        )
        .unwrap();
        let err = fixture
            .build(Path::new("f.toml"), Path::new("/tmp"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("apps[0].home_tenant: no tenant `Nope`"),
            "{err}"
        );
    }
}
