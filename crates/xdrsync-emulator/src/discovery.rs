//! Entra ID discovery: OpenID configuration (v1 and v2), signing keys and instance discovery.

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::EmulatorState;
use crate::entra::Version;
use crate::errors;

pub(crate) async fn openid_v2(
    State(state): State<EmulatorState>,
    Path(tenant): Path<String>,
) -> Response {
    openid(&state, &tenant, Version::V2)
}

pub(crate) async fn openid_v1(
    State(state): State<EmulatorState>,
    Path(tenant): Path<String>,
) -> Response {
    openid(&state, &tenant, Version::V1)
}

fn openid(state: &EmulatorState, tenant_key: &str, version: Version) -> Response {
    let now = state.clock().now();
    let base = state.base_url();
    let templated = matches!(
        tenant_key.to_ascii_lowercase().as_str(),
        "common" | "organizations"
    );
    let tid = if templated {
        "{tenantid}".to_owned()
    } else {
        match state.directory().tenant(tenant_key) {
            Some(t) => t.id.clone(),
            None => {
                return errors::entra(
                    StatusCode::BAD_REQUEST,
                    "invalid_tenant",
                    90002,
                    &format!(
                        "Tenant '{tenant_key}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
                    ),
                    now,
                );
            }
        }
    };
    let seg = if templated {
        tenant_key.to_owned()
    } else {
        tid.clone()
    };
    let body = match version {
        Version::V2 => json!({
            "token_endpoint": format!("{base}/{seg}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{base}/{seg}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": format!("{base}/{tid}/v2.0"),
            "request_uri_parameter_supported": false,
            "authorization_endpoint": format!("{base}/{seg}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/{seg}/oauth2/v2.0/devicecode"),
            "end_session_endpoint": format!("{base}/{seg}/oauth2/v2.0/logout"),
            "tenant_region_scope": "WW",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }),
        Version::V1 => json!({
            "token_endpoint": format!("{base}/{seg}/oauth2/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{base}/common/discovery/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
            "scopes_supported": ["openid"],
            "issuer": format!("https://sts.windows.net/{tid}/"),
            "microsoft_multi_refresh_token": true,
            "authorization_endpoint": format!("{base}/{seg}/oauth2/authorize"),
            "device_authorization_endpoint": format!("{base}/{seg}/oauth2/devicecode"),
            "end_session_endpoint": format!("{base}/{seg}/oauth2/logout"),
            "cloud_instance_name": "microsoftonline.com",
        }),
    };
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("max-age=86400, private"),
    );
    resp
}

pub(crate) async fn jwks(State(state): State<EmulatorState>) -> Response {
    let keys: Vec<_> = state.verification_keys().iter().map(|k| k.jwk()).collect();
    let mut resp = axum::Json(json!({ "keys": keys })).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("max-age=86400, private"),
    );
    resp
}

/// `GET /common/discovery/instance`: MSAL's authority validation and alias lookup. Known
/// instances are the emulator's own host and Microsoft's public-cloud aliases; any other
/// host answers `invalid_instance` (AADSTS50049), as Entra does.
pub(crate) async fn instance(
    State(state): State<EmulatorState>,
    RawQuery(q): RawQuery,
) -> Response {
    let now = state.clock().now();
    let pairs: Vec<(String, String)> = q
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let base = state.base_url();
    let own_host = url::Url::parse(&base)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_default();
    const PUBLIC: &[&str] = &[
        "login.microsoftonline.com",
        "login.windows.net",
        "login.microsoft.com",
        "sts.windows.net",
    ];
    let endpoint = get("authorization_endpoint")
        .unwrap_or_else(|| format!("{base}/common/oauth2/v2.0/authorize"));
    let Ok(url) = url::Url::parse(&endpoint) else {
        return errors::entra(
            StatusCode::BAD_REQUEST,
            "invalid_instance",
            50049,
            "Unknown or invalid instance.",
            now,
        );
    };
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => String::new(),
    };
    // MSAL names the instance by host name only, without the port.
    let own_name = own_host
        .rsplit_once(':')
        .map_or(own_host.as_str(), |(h, _)| h);
    let name = url.host_str().unwrap_or_default();
    if host != own_host && name != own_name && !PUBLIC.contains(&host.as_str()) {
        return errors::entra(
            StatusCode::BAD_REQUEST,
            "invalid_instance",
            50049,
            "Unknown or invalid instance.",
            now,
        );
    }
    let tenant = url
        .path_segments()
        .and_then(|mut s| s.next())
        .unwrap_or("common")
        .to_owned();
    let body = json!({
        "tenant_discovery_endpoint": if name == own_name {
            format!("{base}/{tenant}/v2.0/.well-known/openid-configuration")
        } else {
            format!("{}://{host}/{tenant}/v2.0/.well-known/openid-configuration", url.scheme())
        },
        "api-version": get("api-version").unwrap_or_else(|| "1.1".into()),
        "metadata": [
            {"preferred_network": own_host, "preferred_cache": own_host, "aliases": [own_host]},
            {"preferred_network": "login.microsoftonline.com", "preferred_cache": "login.windows.net", "aliases": PUBLIC},
        ],
    });
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("max-age=86400, private"),
    );
    resp
}
