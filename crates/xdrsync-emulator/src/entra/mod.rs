//! Entra ID token endpoints (v1 `/oauth2/token`, v2 `/oauth2/v2.0/token`) and the device
//! authorization endpoints.
//!
//! Grants:
//! - `client_credentials` with a client secret (body or HTTP Basic, percent-decoded after
//!   base64) or a certificate `client_assertion` (RS256 + `x5t` or PS256 + `x5t#S256`; signature,
//!   `aud`, `iss` = `sub` = client id, `exp`/`nbf` with five minutes of skew; `jti` reuse is
//!   allowed because MSAL reuses one assertion for minutes);
//! - `authorization_code` with PKCE (S256 or plain), single-use codes that expire after ten
//!   minutes, exact `redirect_uri`;
//! - `refresh_token`: a new refresh token on every use (the old one stays valid, as Entra does),
//!   expiring after 90 days of inactivity on the emulator clock (AADSTS700082), revocable;
//! - the device code grant.
//!
//! App-only tokens are v1 tokens as Entra issues them for Graph and Defender: `aud` is the
//! resource's App ID URI, `iss` is `https://sts.windows.net/{tid}/`, `roles` holds the application
//! roles granted in that tenant and is absent when none are. Delegated tokens carry `scp`.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use xdrsync_jwt::{Algorithm, Decoded};
use xdrsync_model::Timestamp;

use crate::EmulatorState;
use crate::directory::{AppRef, AppSpec, Resource, TenantSpec};
use crate::errors;
use crate::rng::name_guid;
use crate::sessions::{Device, Grant, Refresh, User, opaque};

mod device;
mod grants;
mod imds;
mod request;

pub(crate) use device::{devicecode_v1, devicecode_v2};
use grants::{authorization_code, client_credentials, device_code, refresh_token};
pub(crate) use imds::imds;
use request::{Reply, Req};

/// Which token endpoint was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const SKEW_SECS: i64 = 300;
/// Refresh tokens die after this much inactivity.
const RT_MAX_INACTIVE_DAYS: i64 = 90;
/// Authorization codes live about ten minutes.
const CODE_LIFETIME_SECS: i64 = 600;

pub(crate) fn tenant_not_found(tenant: &str) -> String {
    format!(
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
    )
}

pub(crate) fn app_not_found(client_id: &str, tenant: &str) -> String {
    format!(
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
    )
}

/// Whether the app has a service principal in `tenant` (home tenant, or consented).
pub(crate) fn app_in_tenant(app: &AppSpec, tenant: &str) -> bool {
    app.home_tenant.eq_ignore_ascii_case(tenant)
        || (app.multi_tenant && app.consents.contains_key(tenant))
}

/// The delegated permissions an app gets for a resource when it asks for `.default`.
pub(crate) fn delegated_scopes(resource: Resource) -> Vec<String> {
    let s: &[&str] = match resource {
        Resource::Graph => &["SecurityIncident.Read.All", "SecurityAlert.Read.All"],
        Resource::Xdr => &["Incident.Read"],
        Resource::Mde | Resource::Siem => &["Alert.Read"],
    };
    s.iter().map(|x| (*x).to_owned()).collect()
}

/// Splits a v2 `scope` into (resource, its scopes, openid?, offline_access?). Scopes without a
/// resource prefix are Graph's, as in Entra.
pub(crate) fn parse_scopes(
    scope: &str,
) -> Result<(Resource, String, Vec<String>, bool, bool), String> {
    let mut resource: Option<(Resource, String)> = None;
    let mut scopes = Vec::new();
    let (mut openid, mut offline) = (false, false);
    for s in scope.split_whitespace() {
        match s {
            "openid" | "profile" | "email" => openid = true,
            "offline_access" => offline = true,
            _ => {
                let (res_id, name) = match s.rsplit_once('/') {
                    Some((res, name))
                        if s.starts_with("http") || s.contains("://") || !res.is_empty() =>
                    {
                        (res, name)
                    }
                    _ => ("https://graph.microsoft.com", s),
                };
                let Some(r) = Resource::from_identifier(res_id) else {
                    return Err(format!(
                        "The provided value for the input parameter 'scope' is not valid. The scope {s} is not valid."
                    ));
                };
                if resource.as_ref().is_none_or(|(first, _)| *first == r) {
                    resource = Some((r, res_id.to_owned()));
                    if name == ".default" {
                        scopes.extend(delegated_scopes(r));
                    } else {
                        scopes.push(name.to_owned());
                    }
                }
            }
        }
    }
    let (r, id) = resource.unwrap_or((Resource::Graph, "https://graph.microsoft.com".into()));
    scopes.dedup();
    Ok((r, id, scopes, openid, offline))
}

fn pct_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
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

fn token(
    state: &EmulatorState,
    tenant_key: &str,
    headers: &HeaderMap,
    body: &str,
    ver: Version,
) -> Response {
    let req = Req::parse(state, tenant_key, headers, body, ver);
    let result = match req.get("grant_type") {
        None => Err(req.bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        )),
        Some("client_credentials") => client_credentials(&req),
        Some("authorization_code") => authorization_code(&req),
        Some("refresh_token") => refresh_token(&req),
        Some(DEVICE_GRANT) => device_code(&req),
        Some(other) => Err(req.bad(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
        )),
    };
    result.unwrap_or_else(|e| e)
}

fn base_claims(req: &Req<'_>, resource: Resource, tid: &str) -> Map<String, Value> {
    let now = req.now.as_datetime().timestamp();
    let mut c = Map::new();
    let cloud = req
        .state
        .directory()
        .tenant(tid)
        .map(|t| t.cloud)
        .unwrap_or_default();
    c.insert("aud".into(), json!(resource.uri_in(cloud)));
    c.insert(
        "iss".into(),
        json!(format!("https://sts.windows.net/{tid}/")),
    );
    c.insert("iat".into(), json!(now - SKEW_SECS));
    c.insert("nbf".into(), json!(now - SKEW_SECS));
    c.insert("exp".into(), json!(now + req.state.token_lifetime_secs()));
    c.insert("aio".into(), json!(opaque(24)));
    c.insert("tid".into(), json!(tid));
    c.insert("uti".into(), json!(opaque(16)));
    c.insert("ver".into(), json!("1.0"));
    c
}

fn sign(state: &EmulatorState, claims: Map<String, Value>) -> String {
    let key = state.signing_key();
    let mut header = Map::new();
    header.insert("x5t".into(), json!(key.kid()));
    header.insert("kid".into(), json!(key.kid()));
    key.sign(Algorithm::RS256, header, &Value::Object(claims))
}

/// The token response in the endpoint's shape: v1 numbers as strings plus `expires_on`,
/// `not_before`, `resource`; v2 numbers.
fn token_response(
    req: &Req<'_>,
    claims: Map<String, Value>,
    resource_id: &str,
    extra: Map<String, Value>,
) -> Response {
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    let nbf = claims
        .get("nbf")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    let scope = claims.get("scp").and_then(Value::as_str).map(str::to_owned);
    let access_token = sign(req.state, claims);
    let expires_in = exp - req.now.as_datetime().timestamp();
    let mut body = match req.ver {
        Version::V1 => json!({
            "token_type": "Bearer",
            "expires_in": expires_in.to_string(),
            "ext_expires_in": expires_in.to_string(),
            "expires_on": exp.to_string(),
            "not_before": nbf.to_string(),
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
    if let (Some(o), Some(scope)) = (body.as_object_mut(), scope) {
        let scope = match req.ver {
            Version::V1 => scope,
            Version::V2 => scope
                .split(' ')
                .map(|s| format!("{}/{s}", resource_id.trim_end_matches('/')))
                .collect::<Vec<_>>()
                .join(" "),
        };
        o.insert("scope".into(), json!(scope));
    }
    if let Some(o) = body.as_object_mut() {
        o.extend(extra);
    }
    req.state.count_token_issued();
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    errors::no_store(&mut resp);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_split_by_resource() {
        let (r, id, scopes, openid, offline) =
            parse_scopes("https://api.security.microsoft.com/Incident.Read offline_access openid")
                .unwrap();
        assert_eq!(
            (r, id.as_str(), scopes, openid, offline),
            (
                Resource::Xdr,
                "https://api.security.microsoft.com",
                vec!["Incident.Read".to_owned()],
                true,
                true
            )
        );
        let (r, _, scopes, _, offline) =
            parse_scopes("https://graph.microsoft.com/.default").unwrap();
        assert_eq!((r, offline), (Resource::Graph, false));
        assert_eq!(scopes, delegated_scopes(Resource::Graph));
        let (r, _, scopes, _, _) = parse_scopes("SecurityIncident.Read.All").unwrap();
        assert_eq!(
            (r, scopes),
            (
                Resource::Graph,
                vec!["SecurityIncident.Read.All".to_owned()]
            )
        );
        assert!(parse_scopes("https://nothing.example/x").is_err());
    }
}
