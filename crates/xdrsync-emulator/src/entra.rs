//! Entra ID: token endpoints (v1 and v2), OpenID discovery and the signing keys.
//!
//! Grants: `client_credentials` with a client secret sent in the body or with HTTP Basic
//! (percent-decoded after base64, as Entra does). Tokens are v1 app-only access tokens, the form
//! Microsoft issues for Graph and Defender: `aud` is the resource's App ID URI, `iss` is
//! `https://sts.windows.net/{tid}/`, `roles` holds the application roles granted in that tenant
//! and is absent when none are.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use xdrsync_jwt::Algorithm;

use crate::EmulatorState;
use crate::directory::Resource;
use crate::errors;

/// Which token endpoint was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

pub(crate) async fn token_v1(
    State(state): State<EmulatorState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    token(&state, &tenant, &headers, &body, Version::V1)
}

pub(crate) async fn token_v2(
    State(state): State<EmulatorState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    token(&state, &tenant, &headers, &body, Version::V2)
}

fn pct_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Client id and secret from an `Authorization: Basic` header (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((pct_decode(id), pct_decode(secret)))
}

fn token(
    state: &EmulatorState,
    tenant_key: &str,
    headers: &HeaderMap,
    body: &str,
    version: Version,
) -> Response {
    let now = state.clock().now();
    let bad = |status: StatusCode, error: &str, code: u32, msg: &str| {
        errors::entra(status, error, code, msg, now)
    };
    let form: HashMap<String, String> =
        match serde_urlencoded::from_str::<Vec<(String, String)>>(body) {
            Ok(pairs) => pairs.into_iter().collect(),
            Err(_) => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'grant_type'.",
                );
            }
        };
    let directory = state.directory();
    if matches!(
        tenant_key.to_ascii_lowercase().as_str(),
        "common" | "organizations" | "consumers"
    ) {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            9001023,
            "The grant type isn't supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.",
        );
    }
    let Some(tenant) = directory.tenant(tenant_key).cloned() else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant_key}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        );
    };
    let Some(grant) = form.get("grant_type") else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    };
    if grant != "client_credentials" {
        return bad(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant}'."),
        );
    }
    let basic = basic_credentials(headers);
    let client_id = form
        .get("client_id")
        .cloned()
        .or_else(|| basic.as_ref().map(|b| b.0.clone()));
    let Some(client_id) = client_id else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let secret = form
        .get("client_secret")
        .cloned()
        .or_else(|| basic.map(|b| b.1));
    let Some(secret) = secret else {
        return bad(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    };
    // Which resource: v1 names it with `resource`, v2 with one `<resource>/.default` scope.
    let resource_id = match version {
        Version::V1 => match form.get("resource") {
            Some(r) => r.clone(),
            None => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'resource'.",
                );
            }
        },
        Version::V2 => {
            if form.contains_key("resource") {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    901002,
                    "The 'resource' request parameter isn't supported.",
                );
            }
            let Some(scope) = form.get("scope") else {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'scope'.",
                );
            };
            let scopes: Vec<&str> = scope.split_whitespace().collect();
            if scopes.len() != 1 || !scopes[0].ends_with("/.default") {
                if scopes.len() > 1 && scopes.iter().all(|s| s.ends_with("/.default")) {
                    return bad(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        700022,
                        "The provided value for the input parameter scope is not valid because it contains more than one resource.",
                    );
                }
                return bad(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    1002012,
                    &format!(
                        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                    ),
                );
            }
            scopes[0].trim_end_matches("/.default").to_owned()
        }
    };
    let Some(app) = directory.app(&client_id).cloned() else {
        return bad(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                tenant.name
            ),
        );
    };
    let in_tenant =
        app.home_tenant == tenant.id || (app.multi_tenant && app.consents.contains_key(&tenant.id));
    if !in_tenant {
        return bad(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                tenant.name
            ),
        );
    }
    let matching = app.secrets.iter().find(|s| s.value == secret);
    match matching {
        None => {
            return bad(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            );
        }
        Some(s) if s.expires.is_some_and(|e| e <= now) => {
            return bad(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000222,
                &format!(
                    "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds"
                ),
            );
        }
        Some(_) => {}
    }
    let Some(resource) = Resource::from_identifier(&resource_id) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource_id} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                tenant.name
            ),
        );
    };
    let roles = app.roles(&tenant.id, resource).unwrap_or_default();
    let lifetime = state.token_lifetime_secs();
    let iat = now.as_datetime().timestamp() - 300;
    let exp = now.as_datetime().timestamp() + lifetime;
    let oid = crate::rng::name_guid(&tenant.id, &app.client_id);
    let iss = format!("https://sts.windows.net/{}/", tenant.id);
    let mut claims = serde_json::Map::new();
    claims.insert("aud".into(), json!(resource.uri()));
    claims.insert("iss".into(), json!(iss));
    claims.insert("iat".into(), json!(iat));
    claims.insert("nbf".into(), json!(iat));
    claims.insert("exp".into(), json!(exp));
    claims.insert(
        "aio".into(),
        json!(xdrsync_jwt::b64url(uuid::Uuid::new_v4().as_bytes())),
    );
    claims.insert("app_displayname".into(), json!(app.name));
    claims.insert("appid".into(), json!(app.client_id));
    claims.insert("appidacr".into(), json!("1"));
    claims.insert("idp".into(), json!(iss));
    claims.insert("idtyp".into(), json!("app"));
    claims.insert("oid".into(), json!(oid));
    claims.insert("rh".into(), json!("1.AAAA."));
    if !roles.is_empty() {
        claims.insert("roles".into(), json!(roles));
    }
    claims.insert("sub".into(), json!(oid));
    claims.insert("tid".into(), json!(tenant.id));
    claims.insert(
        "uti".into(),
        json!(xdrsync_jwt::b64url(&uuid::Uuid::new_v4().as_bytes()[..16])),
    );
    claims.insert("ver".into(), json!("1.0"));
    let key = state.signing_key();
    let mut header = serde_json::Map::new();
    header.insert("x5t".into(), json!(key.kid()));
    header.insert("kid".into(), json!(key.kid()));
    let access_token = key.sign(Algorithm::RS256, header, &Value::Object(claims));
    let expires_in = exp - now.as_datetime().timestamp();
    let body = match version {
        Version::V1 => json!({
            "token_type": "Bearer",
            "expires_in": expires_in.to_string(),
            "ext_expires_in": expires_in.to_string(),
            "expires_on": exp.to_string(),
            "not_before": iat.to_string(),
            "resource": resource_id,
            "access_token": access_token,
        }),
        Version::V2 => json!({
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access_token,
        }),
    };
    state.count_token_issued();
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    errors::no_store(&mut resp);
    resp
}

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
    let mut resp = axum::Json(json!({"keys": [state.signing_key().jwk()]})).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("max-age=86400, private"),
    );
    resp
}
