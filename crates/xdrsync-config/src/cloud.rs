//! Microsoft clouds: login authority, API hosts and token audiences, chosen together.
//!
//! Values from defender-api.md §7. A token from one national cloud does not work in another, so
//! one setting picks all of them consistently; endpoint overrides (a regional host, the
//! emulator) change where requests go but not the audiences, so clients ask for the same
//! scopes as in production.

use serde::Deserialize;
use url::Url;

use crate::{CloudSection, parse_url};

/// A Microsoft cloud.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    /// Commercial.
    #[default]
    Public,
    /// US Government Community Cloud.
    Gcc,
    /// US GCC High.
    GccHigh,
    /// US Department of Defense.
    Dod,
    /// China (21Vianet): accepted as a name only to explain that Microsoft Graph's security
    /// incidents and alerts are not offered there (defender-api.md §7).
    China,
}

/// Resolved hosts and audiences for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Login authority, e.g. `https://login.microsoftonline.com`.
    pub authority: Url,
    /// Graph base URL.
    pub graph: Url,
    /// Defender XDR base URL.
    pub xdr: Url,
    /// Token audience (resource) of Graph.
    pub graph_resource: String,
    /// Token audience (resource) of the XDR API.
    pub xdr_resource: String,
    /// Defender for Endpoint API host (the MDE alerts API).
    pub mde: Url,
    /// Token audience of the MDE API.
    pub mde_resource: String,
    /// The SIEM API host (`https://wdatp-alertexporter-{us,eu,uk}.windows.com`): only the
    /// public cloud had one, in three regions; `None` where there is none.
    pub siem: Option<Url>,
    /// Token audience of the SIEM API (the legacy Azure AD Graph resource, as in the SIEM seed).
    pub siem_resource: String,
}

pub(crate) fn endpoints(section: &CloudSection) -> Result<Endpoints, (String, String)> {
    let (authority, xdr, graph) = match section.name {
        Cloud::China => {
            return Err((
                "cloud.name".into(),
                "Microsoft Graph security incidents and alerts, and the Defender XDR API, are not available in the China (21Vianet) cloud".into(),
            ));
        }
        Cloud::Public => (
            "https://login.microsoftonline.com",
            "https://api.security.microsoft.com",
            "https://graph.microsoft.com",
        ),
        Cloud::Gcc => (
            "https://login.microsoftonline.com",
            "https://api-gcc.security.microsoft.us",
            "https://graph.microsoft.com",
        ),
        Cloud::GccHigh => (
            "https://login.microsoftonline.us",
            "https://api-gov.security.microsoft.us",
            "https://graph.microsoft.us",
        ),
        Cloud::Dod => (
            "https://login.microsoftonline.us",
            "https://api-gov.security.microsoft.us",
            "https://dod-graph.microsoft.us",
        ),
    };
    let regional = match (&section.region, section.name) {
        (None, _) => None,
        (Some(r), Cloud::Public)
            if ["us", "eu", "uk", "au", "swa", "ina", "aea"].contains(&r.as_str()) =>
        {
            Some(format!("https://{r}.api.security.microsoft.com"))
        }
        (Some(r), Cloud::Public) => {
            return Err((
                "cloud.region".into(),
                format!("`{r}` is not a Defender region (us, eu, uk, au, swa, ina, aea)"),
            ));
        }
        (Some(_), _) => {
            return Err((
                "cloud.region".into(),
                "regional hosts exist only in the public cloud".into(),
            ));
        }
    };
    let xdr = regional.as_deref().unwrap_or(xdr);
    let mde = match (section.name, section.region.as_deref()) {
        (Cloud::Gcc, _) => "https://api-gcc.securitycenter.microsoft.us".to_owned(),
        (Cloud::GccHigh | Cloud::Dod, _) => {
            "https://api-gov.securitycenter.microsoft.us".to_owned()
        }
        (_, Some(r @ ("us" | "eu" | "uk" | "au"))) => {
            format!("https://api-{r}.securitycenter.microsoft.com")
        }
        _ => "https://api.securitycenter.microsoft.com".to_owned(),
    };
    // A regional host serves the global resource's tokens.
    let mde_resource = match section.name {
        Cloud::Public | Cloud::China => "https://api.securitycenter.microsoft.com".to_owned(),
        _ => mde.clone(),
    };
    let siem = match (&section.siem_url, section.name, section.region.as_deref()) {
        (Some(u), _, _) => Some(parse_url("cloud.siem_url", u)?),
        (None, Cloud::Public, None | Some("us")) => Some(parse_url(
            "cloud.siem_url",
            "https://wdatp-alertexporter-us.windows.com",
        )?),
        (None, Cloud::Public, Some(r @ ("eu" | "uk"))) => Some(parse_url(
            "cloud.siem_url",
            &format!("https://wdatp-alertexporter-{r}.windows.com"),
        )?),
        _ => None,
    };
    let pick =
        |field: &str, over: &Option<String>, default: &str| -> Result<Url, (String, String)> {
            parse_url(field, over.as_deref().unwrap_or(default))
        };
    Ok(Endpoints {
        authority: pick("cloud.authority_url", &section.authority_url, authority)?,
        graph: pick("cloud.graph_url", &section.graph_url, graph)?,
        xdr: pick("cloud.xdr_url", &section.xdr_url, xdr)?,
        graph_resource: graph.to_owned(),
        // A regional host serves the global resource's tokens.
        xdr_resource: if regional.is_some() {
            "https://api.security.microsoft.com".to_owned()
        } else {
            xdr.to_owned()
        },
        mde: pick("cloud.mde_url", &section.mde_url, &mde)?,
        mde_resource,
        siem,
        siem_resource: "https://graph.windows.net".to_owned(),
    })
}
