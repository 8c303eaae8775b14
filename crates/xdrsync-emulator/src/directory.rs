//! The emulated Entra ID directory: tenants, app registrations, consents and granted roles.
//!
//! It follows the multi-tenant model of the partner-access guide: an app is registered in its
//! home tenant and has a service principal in another tenant only after that tenant's admin
//! consented; the roles granted there become the `roles` claim of app-only tokens.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use xdrsync_model::Timestamp;

use crate::certs::AppCertificate;
use crate::rng::{Rng, name_guid};

/// Microsoft's national clouds. The emulator serves them all on one base URL; a tenant's cloud
/// decides the audiences its tokens carry and accept (`https://graph.microsoft.us` in GCC High).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    /// Commercial.
    #[default]
    Public,
    /// US Government Community Cloud (commercial Entra and Graph, US-government Defender).
    Gcc,
    /// US GCC High.
    GccHigh,
    /// US Department of Defense.
    Dod,
}

/// A resource (API) that tokens can be issued for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Microsoft Graph.
    Graph,
    /// Microsoft Defender XDR ("Microsoft Threat Protection").
    Xdr,
    /// Microsoft Defender for Endpoint ("WindowsDefenderATP").
    Mde,
    /// The legacy Azure AD Graph resource the retired SIEM API's tokens were issued for.
    Siem,
}

impl Resource {
    /// Every resource.
    pub const ALL: [Resource; 4] = [
        Resource::Graph,
        Resource::Xdr,
        Resource::Mde,
        Resource::Siem,
    ];

    /// The App ID URI in `cloud`, which is also the `aud` of its tokens there.
    pub fn uri_in(&self, cloud: Cloud) -> &'static str {
        match (self, cloud) {
            (Resource::Graph, Cloud::GccHigh) => "https://graph.microsoft.us",
            (Resource::Graph, Cloud::Dod) => "https://dod-graph.microsoft.us",
            (Resource::Xdr, Cloud::Gcc) => "https://api-gcc.security.microsoft.us",
            (Resource::Xdr, Cloud::GccHigh | Cloud::Dod) => "https://api-gov.security.microsoft.us",
            (Resource::Mde, Cloud::Gcc) => "https://api-gcc.securitycenter.microsoft.us",
            (Resource::Mde, Cloud::GccHigh | Cloud::Dod) => {
                "https://api-gov.securitycenter.microsoft.us"
            }
            (r, _) => r.uri(),
        }
    }

    /// Whether `id` names this resource in `cloud`: its App ID URI there, or an alias that
    /// holds in every cloud (the first-party application id). A commercial URI asked of a
    /// GCC High tenant names nothing there (AADSTS500011), as in Entra.
    pub fn named_in(&self, id: &str, cloud: Cloud) -> bool {
        let id = id.trim().trim_end_matches('/');
        if cloud == Cloud::Public {
            return self.aliases().iter().any(|a| a.eq_ignore_ascii_case(id));
        }
        self.uri_in(cloud).eq_ignore_ascii_case(id)
            || self
                .aliases()
                .iter()
                .filter(|a| !a.starts_with("https://"))
                .any(|a| a.eq_ignore_ascii_case(id))
    }

    /// The canonical (commercial) App ID URI, which is also the `aud` of its tokens.
    pub fn uri(&self) -> &'static str {
        match self {
            Resource::Graph => "https://graph.microsoft.com",
            Resource::Xdr => "https://api.security.microsoft.com",
            Resource::Mde => "https://api.securitycenter.microsoft.com",
            Resource::Siem => "https://graph.windows.net",
        }
    }

    /// Every identifier a client may use for the resource: App ID URIs and the first-party
    /// application id.
    fn aliases(&self) -> &'static [&'static str] {
        match self {
            Resource::Graph => &[
                "https://graph.microsoft.com",
                "00000003-0000-0000-c000-000000000000",
            ],
            Resource::Xdr => &[
                "https://api.security.microsoft.com",
                "8ee8fdad-f234-4243-8f3b-15c294843740",
            ],
            Resource::Mde => &[
                "https://api.securitycenter.microsoft.com",
                "https://securitycenter.onmicrosoft.com/windowsatpservice",
                "fc780465-2017-40d4-a0c5-307022471b92",
            ],
            Resource::Siem => &[
                "https://graph.windows.net",
                "00000002-0000-0000-c000-000000000000",
            ],
        }
    }

    /// Finds the resource named by a v1 `resource` or the prefix of a v2 `/.default` scope,
    /// in any cloud ([`Resource::named_in`] then says whether the tenant's cloud has it).
    pub fn from_identifier(id: &str) -> Option<Resource> {
        const CLOUDS: [Cloud; 4] = [Cloud::Public, Cloud::Gcc, Cloud::GccHigh, Cloud::Dod];
        Resource::ALL
            .into_iter()
            .find(|r| CLOUDS.iter().any(|c| r.named_in(id, *c)))
    }
}

/// A tenant of the directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// Tenant GUID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Verified domain, e.g. `contoso.onmicrosoft.com`.
    pub domain: String,
    /// Seed of the tenant's synthetic incidents.
    pub seed: u64,
    /// Mean number of new incidents per hour.
    pub incidents_per_hour: f64,
    /// The national cloud the tenant lives in.
    #[serde(default)]
    pub cloud: Cloud,
}

impl TenantSpec {
    /// A tenant whose id and domain derive from `name`, stable across runs.
    pub fn named(name: &str, incidents_per_hour: f64) -> Self {
        let slug: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_lowercase();
        let id = name_guid("tenant", &slug);
        let seed = u64::from_str_radix(id.get(..8).unwrap_or_default(), 16).unwrap_or(7);
        TenantSpec {
            id,
            name: name.to_owned(),
            domain: format!("{slug}.onmicrosoft.com"),
            seed,
            incidents_per_hour,
            cloud: Cloud::Public,
        }
    }
}

/// A client secret of an app registration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSecret {
    /// The secret value.
    pub value: String,
    /// When it stops working (AADSTS7000222), if ever.
    #[serde(default)]
    pub expires: Option<Timestamp>,
}

/// An app registration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Application (client) id.
    pub client_id: String,
    /// Display name.
    pub name: String,
    /// The tenant the app is registered in.
    pub home_tenant: String,
    /// Whether other tenants may consent to it.
    pub multi_tenant: bool,
    /// Client secrets (several may be valid during rotation).
    pub secrets: Vec<AppSecret>,
    /// Tenant id → resource → granted application roles. A tenant listed here has a service
    /// principal for the app (it consented); an empty role list still yields tokens, but
    /// without a `roles` claim.
    pub consents: BTreeMap<String, BTreeMap<Resource, Vec<String>>>,
    /// Certificates accepted for `client_assertion`.
    #[serde(default)]
    pub certificates: Vec<AppCertificate>,
    /// Redirect URIs accepted by the authorization endpoints (exact match).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The application permissions the app asks for; an admin consent grants these.
    #[serde(default)]
    pub required_roles: BTreeMap<Resource, Vec<String>>,
    /// A managed identity: tokens come from the instance metadata endpoint, in its home tenant.
    #[serde(default)]
    pub managed_identity: bool,
}

impl AppSpec {
    /// The roles granted to this app in `tenant` for `resource`, or `None` if the tenant has no
    /// service principal for the app.
    pub fn roles(&self, tenant: &str, resource: Resource) -> Option<Vec<String>> {
        self.consents
            .get(tenant)
            .map(|by_res| by_res.get(&resource).cloned().unwrap_or_default())
    }
}

/// The whole directory.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    /// Tenants.
    pub tenants: Vec<TenantSpec>,
    /// App registrations.
    pub apps: Vec<AppSpec>,
    /// Lower-cased tenant id and domain → position in `tenants`, built on the first lookup:
    /// every token and API request finds its tenant, and a scan of 10,000 tenants per
    /// request made a pull of N tenants cost N² (bench-scale). A hit is checked against the
    /// tenant it points at and a miss falls back to the scan, so a directory changed after
    /// the index was built still answers right; `EmulatorState::update_directory` drops it.
    #[serde(skip)]
    index: OnceLock<HashMap<String, usize>>,
}

/// The read roles a sync needs, per resource.
pub fn read_roles(resource: Resource) -> Vec<String> {
    let roles: &[&str] = match resource {
        Resource::Graph => &[
            "SecurityIncident.Read.All",
            "SecurityAlert.Read.All",
            "ThreatHunting.Read.All",
        ],
        Resource::Xdr => &["Incident.Read.All", "AdvancedHunting.Read.All"],
        Resource::Mde => &["Alert.Read.All"],
        Resource::Siem => &["Alert.Read.All"],
    };
    roles.iter().map(|s| (*s).to_owned()).collect()
}

impl Directory {
    /// The demo directory: an MSSP home tenant with one multi-tenant connector app, consented
    /// with read roles by three customer tenants. Ids are stable across runs; the secret is
    /// drawn from `secret_seed`.
    pub fn demo(secret_seed: u64) -> Self {
        let mssp = TenantSpec::named("Fabrikam MSSP", 0.5);
        let customers = [
            TenantSpec::named("Contoso", 4.0),
            TenantSpec::named("Northwind Traders", 2.5),
            TenantSpec::named("Tailspin Toys", 1.5),
        ];
        let mut consents = BTreeMap::new();
        for t in &customers {
            let by_res = Resource::ALL
                .into_iter()
                .map(|r| (r, read_roles(r)))
                .collect();
            consents.insert(t.id.clone(), by_res);
        }
        let app = AppSpec {
            client_id: name_guid("app", "xdrsync-mssp-connector"),
            name: "xdrsync MSSP connector".into(),
            home_tenant: mssp.id.clone(),
            multi_tenant: true,
            secrets: vec![AppSecret {
                value: generate_secret(secret_seed),
                expires: None,
            }],
            consents,
            certificates: Vec::new(),
            redirect_uris: vec![
                "http://localhost".into(),
                "https://localhost/SiemMsspConnector".into(),
            ],
            required_roles: Resource::ALL
                .into_iter()
                .map(|r| (r, read_roles(r)))
                .collect(),
            managed_identity: false,
        };
        let mut tenants = vec![mssp];
        tenants.extend(customers);
        Directory::new(tenants, vec![app])
    }

    /// A directory of these tenants and apps.
    pub fn new(tenants: Vec<TenantSpec>, apps: Vec<AppSpec>) -> Self {
        Directory {
            tenants,
            apps,
            index: OnceLock::new(),
        }
    }

    /// Forgets the tenant index after the tenants changed (it is rebuilt on the next lookup).
    pub fn reindex(&mut self) {
        self.index = OnceLock::new();
    }

    /// Finds a tenant by GUID or verified domain (case-insensitive).
    pub fn tenant(&self, key: &str) -> Option<&TenantSpec> {
        let is =
            |t: &TenantSpec| t.id.eq_ignore_ascii_case(key) || t.domain.eq_ignore_ascii_case(key);
        let index = self.index.get_or_init(|| {
            let mut index = HashMap::with_capacity(self.tenants.len() * 2);
            // Reversed, so that the first of two tenants with one key wins, as the scan's.
            for (i, t) in self.tenants.iter().enumerate().rev() {
                index.insert(t.id.to_ascii_lowercase(), i);
                index.insert(t.domain.to_ascii_lowercase(), i);
            }
            index
        });
        index
            .get(&key.to_ascii_lowercase())
            .and_then(|&i| self.tenants.get(i))
            .filter(|t| is(t))
            .or_else(|| self.tenants.iter().find(|t| is(t)))
    }

    /// The position of the app with this client id, for [`AppRef`].
    pub fn app_index(&self, client_id: &str) -> Option<usize> {
        self.apps
            .iter()
            .position(|a| a.client_id.eq_ignore_ascii_case(client_id))
    }

    /// Finds an app by client id.
    pub fn app(&self, client_id: &str) -> Option<&AppSpec> {
        self.app_index(client_id).and_then(|i| self.apps.get(i))
    }
}

/// A secret shaped like Entra's (40 characters, with `~` and `.` as Entra's do).
pub fn generate_secret(seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789~._-";
    let mut rng = Rng::derive(seed, 0x5EC);
    let mut s: String = (0..3)
        .map(|_| char::from(*rng.pick(ALPHABET.get(..62).unwrap_or(ALPHABET))))
        .collect();
    s.push_str("8Q~");
    s.extend((0..34).map(|_| char::from(*rng.pick(ALPHABET))));
    s
}

/// An app of a directory snapshot, without copying it: an MSSP app's consents name every
/// customer tenant, and copying them for each token request cost O(tenants) per token.
#[derive(Clone, Debug)]
pub struct AppRef {
    dir: std::sync::Arc<Directory>,
    index: usize,
}

impl AppRef {
    /// The app with this client id in `dir`, if any.
    pub fn find(dir: std::sync::Arc<Directory>, client_id: &str) -> Option<Self> {
        let index = dir.app_index(client_id)?;
        Some(AppRef { dir, index })
    }
}

impl std::ops::Deref for AppRef {
    type Target = AppSpec;

    fn deref(&self) -> &AppSpec {
        // Found by `find` in this very snapshot, which nothing changes (it is behind an Arc
        // that `update_directory` replaces, never edits, while shared).
        #[allow(clippy::indexing_slicing)]
        &self.dir.apps[self.index]
    }
}

#[cfg(test)]
mod tests {
    use super::{AppRef, Cloud, Directory, Resource, TenantSpec};

    /// Tenants are found by id or domain in any case through the index, the first of two
    /// with one key wins as a scan's would, and a directory changed after the index was built
    /// still finds every tenant (a stale hit is checked, a miss scans).
    #[test]
    fn tenants_are_found_through_the_index_and_after_changes() {
        let mut dir = Directory::demo(7);
        let first = dir.tenants[1].clone();
        assert_eq!(dir.tenant(&first.id.to_uppercase()).unwrap().id, first.id);
        assert_eq!(
            dir.tenant(&first.domain.to_uppercase()).unwrap().id,
            first.id
        );
        assert!(dir.tenant("nowhere.onmicrosoft.com").is_none());
        let mut twin = TenantSpec::named("Twin", 1.0);
        twin.domain = first.domain.clone();
        dir.tenants.push(twin.clone());
        assert_eq!(
            dir.tenant(&first.domain).unwrap().id,
            first.id,
            "first wins"
        );
        assert_eq!(
            dir.tenant(&twin.id).unwrap().name,
            "Twin",
            "added after indexing"
        );
        dir.tenants.swap(1, 2);
        assert_eq!(
            dir.tenant(&first.id).unwrap().id,
            first.id,
            "moved after indexing"
        );
        dir.reindex();
        assert_eq!(dir.tenant(&twin.id).unwrap().name, "Twin");
        let client = dir.apps[0].client_id.clone();
        let app = AppRef::find(std::sync::Arc::new(dir), &client.to_uppercase()).unwrap();
        assert_eq!(app.client_id, client);
    }

    /// Each cloud names its resources by its own App ID URIs (and the first-party ids that hold
    /// everywhere); another cloud's URI names nothing.
    #[test]
    fn resources_are_named_per_cloud() {
        assert!(Resource::Graph.named_in("https://graph.microsoft.us/", Cloud::GccHigh));
        assert!(!Resource::Graph.named_in("https://graph.microsoft.com", Cloud::GccHigh));
        assert!(Resource::Graph.named_in("https://graph.microsoft.com", Cloud::Gcc));
        assert!(Resource::Graph.named_in("https://dod-graph.microsoft.us", Cloud::Dod));
        assert!(Resource::Graph.named_in("00000003-0000-0000-c000-000000000000", Cloud::Dod));
        assert!(Resource::Xdr.named_in("https://api-gcc.security.microsoft.us", Cloud::Gcc));
        assert!(!Resource::Xdr.named_in("https://api.security.microsoft.com", Cloud::Gcc));
        assert!(!Resource::Graph.named_in("https://graph.microsoft.us", Cloud::Public));
        assert_eq!(
            Resource::from_identifier("https://api-gov.securitycenter.microsoft.us"),
            Some(Resource::Mde)
        );
        assert_eq!(
            Resource::Mde.uri_in(Cloud::GccHigh),
            "https://api-gov.securitycenter.microsoft.us"
        );
    }
}
