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
use crate::directory::{AppSpec, Resource, TenantSpec};
use crate::errors;
use crate::rng::name_guid;
use crate::sessions::{Device, Grant, Refresh, User, opaque};

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

/// One token request.
struct Req<'a> {
    state: &'a EmulatorState,
    now: Timestamp,
    ver: Version,
    tenant_key: &'a str,
    form: HashMap<String, String>,
    headers: &'a HeaderMap,
}

type Reply = Result<Response, Response>;

impl<'a> Req<'a> {
    /// A form-encoded request to the tenant's `tenant_key` endpoint, read at the emulator's now.
    fn parse(
        state: &'a EmulatorState,
        tenant_key: &'a str,
        headers: &'a HeaderMap,
        body: &str,
        ver: Version,
    ) -> Self {
        let form = serde_urlencoded::from_str::<Vec<(String, String)>>(body)
            .map(|p| p.into_iter().collect())
            .unwrap_or_default();
        Req {
            state,
            now: state.clock().now(),
            ver,
            tenant_key,
            form,
            headers,
        }
    }

    fn bad(&self, status: StatusCode, error: &str, code: u32, msg: &str) -> Response {
        errors::entra(status, error, code, msg, self.now)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.form
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn require(&self, key: &str) -> Result<&str, Response> {
        self.get(key).ok_or_else(|| {
            self.bad(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                &format!("The request body must contain the following parameter: '{key}'."),
            )
        })
    }

    fn is_common(&self) -> bool {
        matches!(
            self.tenant_key.to_ascii_lowercase().as_str(),
            "common" | "organizations" | "consumers"
        )
    }

    /// The tenant named in the path (`None` for `/common` and `/organizations`).
    fn tenant(&self) -> Result<Option<TenantSpec>, Response> {
        if self.is_common() {
            return Ok(None);
        }
        match self.state.directory().tenant(self.tenant_key) {
            Some(t) => Ok(Some(t.clone())),
            None => Err(self.bad(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90002,
                &tenant_not_found(self.tenant_key),
            )),
        }
    }

    fn basic(&self) -> Option<(String, String)> {
        let value = self.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
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

    fn client_id(&self) -> Option<String> {
        self.get("client_id")
            .map(str::to_owned)
            .or_else(|| self.basic().map(|b| b.0))
            .or_else(|| {
                let assertion = self.get("client_assertion")?;
                Decoded::parse(assertion)
                    .ok()?
                    .claims
                    .get("iss")?
                    .as_str()
                    .map(str::to_owned)
            })
    }

    /// Finds the app and checks it has a service principal in `tenant`.
    fn app(&self, tenant: &TenantSpec) -> Result<AppSpec, Response> {
        let client_id = self.client_id().ok_or_else(|| {
            self.bad(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        })?;
        match self.state.directory().app(&client_id) {
            Some(app) if app_in_tenant(app, &tenant.id) => Ok(app.clone()),
            _ => Err(self.bad(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                &app_not_found(&client_id, &tenant.name),
            )),
        }
    }

    /// Authenticates the client: `Some(acr)` ("1" secret, "2" certificate), or `None` when no
    /// credential was sent and `required` is false (a public-client flow).
    fn authenticate(
        &self,
        app: &AppSpec,
        tenant: &TenantSpec,
        required: bool,
    ) -> Result<Option<&'static str>, Response> {
        let invalid = |code: u32, msg: String| {
            self.bad(StatusCode::UNAUTHORIZED, "invalid_client", code, &msg)
        };
        if let Some(assertion) = self.get("client_assertion") {
            if self.get("client_assertion_type") != Some(ASSERTION_TYPE) {
                return Err(self.bad(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    50027,
                    &format!("client_assertion_type must be '{ASSERTION_TYPE}'."),
                ));
            }
            self.verify_assertion(app, tenant, assertion)
                .map_err(|(code, msg)| invalid(code, msg))?;
            return Ok(Some("2"));
        }
        let secret = self.get("client_secret").map(str::to_owned).or_else(|| {
            let (_, secret) = self.basic()?;
            self.state.count_basic_client_secret();
            Some(secret)
        });
        let Some(secret) = secret else {
            if required {
                return Err(invalid(7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".into()));
            }
            return Ok(None);
        };
        match app.secrets.iter().find(|s| s.value == secret) {
            None => Err(invalid(
                7000215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    app.client_id
                ),
            )),
            Some(s) if s.expires.is_some_and(|e| e <= self.now) => Err(invalid(
                7000222,
                format!(
                    "The provided client secret keys for app '{}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds",
                    app.client_id
                ),
            )),
            Some(_) => Ok(Some("1")),
        }
    }

    /// Checks a `private_key_jwt` client assertion (entra-oauth.md §1.3).
    fn verify_assertion(
        &self,
        app: &AppSpec,
        tenant: &TenantSpec,
        assertion: &str,
    ) -> Result<(), (u32, String)> {
        let d = Decoded::parse(assertion)
            .map_err(|e| (50027, format!("JWT token is invalid or malformed: {e}.")))?;
        let hs = |k: &str| d.header.get(k).and_then(Value::as_str);
        let (x5t, x5t_s256) = (hs("x5t"), hs("x5t#S256"));
        let Some(cert) = app.certificates.iter().find(|c| c.matches(x5t, x5t_s256)) else {
            return Err((
                700027,
                format!(
                    "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '{}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.]",
                    x5t.or(x5t_s256).unwrap_or(""),
                    app.client_id
                ),
            ));
        };
        let public = cert.jwk.public_key().map_err(|e| (700027, e.to_string()))?;
        d.verify(&public, &[Algorithm::RS256, Algorithm::PS256])
            .map_err(|_| {
                (
                    700027,
                    "Client assertion failed signature validation.".to_owned(),
                )
            })?;
        if cert.expires.is_some_and(|e| e <= self.now) {
            return Err((700027, "Client assertion contains an invalid signature. [Reason - The certificate has expired.]".into()));
        }
        let c = &d.claims;
        let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
        if !text("iss").eq_ignore_ascii_case(&app.client_id) {
            return Err((
                700021,
                format!(
                    "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://aka.ms/certCreds . [iss '{}']",
                    text("iss")
                ),
            ));
        }
        if !text("sub").eq_ignore_ascii_case(text("iss")) {
            return Err((
                50048,
                "Subject mismatches Issuer value in client assertion.".into(),
            ));
        }
        // The audience is this tenant's token endpoint, v1 or v2, named by GUID or domain.
        let aud = url::Url::parse(text("aud")).ok();
        let path_ok = aud.as_ref().is_some_and(|u| {
            let segs: Vec<&str> = u.path().trim_matches('/').split('/').collect();
            let tenant_ok = segs.first().is_some_and(|t| {
                t.eq_ignore_ascii_case(&tenant.id)
                    || t.eq_ignore_ascii_case(&tenant.domain)
                    || t.eq_ignore_ascii_case(self.tenant_key)
            });
            tenant_ok
                && matches!(
                    segs.get(1..),
                    Some(["oauth2", "token"] | ["oauth2", "v2.0", "token"])
                )
        });
        if !path_ok {
            return Err((
                700016,
                format!(
                    "The audience claim value '{}' is invalid for the client assertion; expected this tenant's token endpoint.",
                    text("aud")
                ),
            ));
        }
        let num = |k: &str| c.get(k).and_then(Value::as_f64).map(|f| f as i64);
        let now = self.now.as_datetime().timestamp();
        let exp = num("exp").ok_or((700024, "Client assertion has no expiry (exp).".to_owned()))?;
        let nbf = num("nbf");
        if exp.saturating_add(SKEW_SECS) < now
            || nbf.is_some_and(|n| n.saturating_sub(SKEW_SECS) > now)
        {
            let fmt = |t: i64| {
                chrono::DateTime::from_timestamp(t, 0)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            };
            return Err((
                700024,
                format!(
                    "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                    fmt(now),
                    nbf.map(fmt).unwrap_or_default(),
                    fmt(exp)
                ),
            ));
        }
        Ok(())
    }

    /// For a delegated grant redeemed here: the grant's tenant, and the client's authentication
    /// (`"0"` for a public client that sent no credential).
    fn grant_client(&self, tenant_id: &str) -> Result<(TenantSpec, &'static str), Response> {
        let tenant = self
            .state
            .directory()
            .tenant(tenant_id)
            .cloned()
            .ok_or_else(|| {
                self.bad(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    90002,
                    &tenant_not_found(tenant_id),
                )
            })?;
        let app = self.app(&tenant)?;
        let acr = self.authenticate(&app, &tenant, false)?.unwrap_or("0");
        Ok((tenant, acr))
    }

    /// The resource of a client-credentials request: v1 `resource`, v2 one `…/.default` scope.
    fn app_resource(&self, tenant: &TenantSpec) -> Result<(Resource, String), Response> {
        let id = match self.ver {
            Version::V1 => self.require("resource")?.to_owned(),
            Version::V2 => {
                if self.get("resource").is_some() {
                    return Err(self.bad(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        901002,
                        "The 'resource' request parameter isn't supported.",
                    ));
                }
                let scope = self.require("scope")?;
                let scopes: Vec<&str> = scope.split_whitespace().collect();
                if scopes.len() > 1 && scopes.iter().all(|s| s.ends_with("/.default")) {
                    return Err(self.bad(StatusCode::BAD_REQUEST, "invalid_scope", 700022,
                        "The provided value for the input parameter scope is not valid because it contains more than one resource."));
                }
                let [only] = scopes.as_slice() else {
                    return Err(self.bad(StatusCode::BAD_REQUEST, "invalid_scope", 1002012, &format!(
                        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")));
                };
                if !only.ends_with("/.default") {
                    return Err(self.bad(StatusCode::BAD_REQUEST, "invalid_scope", 1002012, &format!(
                        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")));
                }
                only.trim_end_matches("/.default").to_owned()
            }
        };
        let resource =
            Resource::from_identifier(&id).ok_or_else(|| self.unknown_resource(&id, tenant))?;
        Ok((resource, id))
    }

    fn unknown_resource(&self, id: &str, tenant: &TenantSpec) -> Response {
        self.bad(StatusCode::BAD_REQUEST, "invalid_resource", 500011, &format!(
            "The resource principal named {id} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.", tenant.name))
    }

    /// For a delegated refresh: the resource asked for now (v1 `resource`, v2 `scope`), if any.
    fn delegated_resource(
        &self,
        tenant: &TenantSpec,
    ) -> Result<Option<(Resource, String, Vec<String>)>, Response> {
        match self.ver {
            Version::V1 => match self.get("resource") {
                None => Ok(None),
                Some(id) => {
                    let r = Resource::from_identifier(id)
                        .ok_or_else(|| self.unknown_resource(id, tenant))?;
                    Ok(Some((r, id.to_owned(), delegated_scopes(r))))
                }
            },
            Version::V2 => match self.get("scope") {
                None => Ok(None),
                Some(scope) => {
                    let (r, id, scopes, _, _) = parse_scopes(scope).map_err(|m| {
                        self.bad(StatusCode::BAD_REQUEST, "invalid_scope", 70011, &m)
                    })?;
                    if scopes.is_empty() {
                        Ok(None)
                    } else {
                        Ok(Some((r, id, scopes)))
                    }
                }
            },
        }
    }
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

fn client_credentials(req: &Req<'_>) -> Reply {
    let Some(tenant) = req.tenant()? else {
        return Err(req.bad(StatusCode::BAD_REQUEST, "invalid_request", 9001023,
            "The grant type isn't supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint."));
    };
    let app = req.app(&tenant)?;
    let acr = req.authenticate(&app, &tenant, true)?.unwrap_or("1");
    let (resource, resource_id) = req.app_resource(&tenant)?;
    let roles = app.roles(&tenant.id, resource).unwrap_or_default();
    let oid = name_guid(&tenant.id, &app.client_id);
    let mut claims = base_claims(req, resource, &tenant.id);
    claims.insert("app_displayname".into(), json!(app.name));
    claims.insert("appid".into(), json!(app.client_id));
    claims.insert("appidacr".into(), json!(acr));
    claims.insert(
        "idp".into(),
        json!(format!("https://sts.windows.net/{}/", tenant.id)),
    );
    claims.insert("idtyp".into(), json!("app"));
    claims.insert("oid".into(), json!(oid));
    claims.insert("rh".into(), json!("1.AAAA."));
    if !roles.is_empty() {
        claims.insert("roles".into(), json!(roles));
    }
    claims.insert("sub".into(), json!(oid));
    Ok(token_response(req, claims, &resource_id, Map::new()))
}

fn base_claims(req: &Req<'_>, resource: Resource, tid: &str) -> Map<String, Value> {
    let now = req.now.as_datetime().timestamp();
    let mut c = Map::new();
    c.insert("aud".into(), json!(resource.uri()));
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

/// Issues the delegated tokens of a grant: access token with `scp`, a rotated refresh token
/// (v1 always; v2 with `offline_access`), an ID token (v1 always; v2 with `openid`), and
/// `client_info` when asked.
fn delegated(req: &Req<'_>, grant: &Grant, acr: &str, nonce: Option<&str>) -> Reply {
    let dir = req.state.directory();
    let Some(tenant) = dir.tenant(&grant.user.tenant).cloned() else {
        return Err(req.bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &tenant_not_found(&grant.user.tenant),
        ));
    };
    let Some(app) = dir.app(&grant.client_id).cloned() else {
        return Err(req.bad(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &app_not_found(&grant.client_id, &tenant.name),
        ));
    };
    if !app_in_tenant(&app, &tenant.id) {
        return Err(req.bad(StatusCode::BAD_REQUEST, "invalid_grant", 65001, &format!(
            "The user or administrator has not consented to use the application with ID '{}' named '{}'. Send an interactive authorization request for this user and resource.", app.client_id, app.name)));
    }
    let oid = name_guid(&tenant.id, &grant.user.upn);
    let local = grant.user.upn.split('@').next().unwrap_or("user");
    let mut claims = base_claims(req, grant.resource, &tenant.id);
    claims.insert("acr".into(), json!("1"));
    claims.insert("amr".into(), json!(["pwd"]));
    claims.insert("app_displayname".into(), json!(app.name));
    claims.insert("appid".into(), json!(app.client_id));
    claims.insert("appidacr".into(), json!(acr));
    claims.insert("idtyp".into(), json!("user"));
    claims.insert("name".into(), json!(local));
    claims.insert("oid".into(), json!(oid));
    claims.insert("scp".into(), json!(grant.scopes.join(" ")));
    claims.insert("sub".into(), json!(name_guid(&app.client_id, &oid)));
    claims.insert("unique_name".into(), json!(grant.user.upn));
    claims.insert("upn".into(), json!(grant.user.upn));
    let mut extra = Map::new();
    if req.ver == Version::V1 || grant.offline {
        let rt = opaque(48);
        req.state.sessions().refresh.insert(
            rt.clone(),
            Refresh {
                grant: grant.clone(),
                issued: req.now,
                last_used: req.now,
                revoked: false,
            },
        );
        extra.insert("refresh_token".into(), json!(rt));
    }
    if req.ver == Version::V1 || grant.openid {
        let now = req.now.as_datetime().timestamp();
        let mut id = Map::new();
        id.insert("aud".into(), json!(app.client_id));
        id.insert(
            "iss".into(),
            json!(format!("{}/{}/v2.0", req.state.base_url(), tenant.id)),
        );
        id.insert("iat".into(), json!(now));
        id.insert("nbf".into(), json!(now));
        id.insert("exp".into(), json!(now + 3600));
        id.insert("name".into(), json!(local));
        id.insert("oid".into(), json!(oid));
        id.insert("preferred_username".into(), json!(grant.user.upn));
        id.insert("sub".into(), json!(name_guid(&app.client_id, &oid)));
        id.insert("tid".into(), json!(tenant.id));
        id.insert("ver".into(), json!("2.0"));
        if let Some(n) = nonce {
            id.insert("nonce".into(), json!(n));
        }
        extra.insert("id_token".into(), json!(sign(req.state, id)));
    }
    if req.get("client_info") == Some("1") {
        let info = json!({"uid": oid, "utid": tenant.id}).to_string();
        extra.insert(
            "client_info".into(),
            json!(xdrsync_jwt::b64url(info.as_bytes())),
        );
    }
    Ok(token_response(req, claims, &grant.resource_id, extra))
}

fn authorization_code(req: &Req<'_>) -> Reply {
    req.tenant()?;
    let code = req.require("code")?.to_owned();
    let client_id = req.client_id().unwrap_or_default();
    let invalid_grant =
        |code: u32, msg: &str| req.bad(StatusCode::BAD_REQUEST, "invalid_grant", code, msg);
    let issued = {
        let mut s = req.state.sessions();
        let Some(c) = s.codes.get_mut(&code) else {
            return Err(invalid_grant(
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
            ));
        };
        if c.redeemed {
            return Err(invalid_grant(
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
            ));
        }
        if req.now.ticks() - c.issued.ticks() > CODE_LIFETIME_SECS * 10_000_000 {
            return Err(invalid_grant(
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
            ));
        }
        if !c.grant.client_id.eq_ignore_ascii_case(&client_id) {
            return Err(invalid_grant(
                70000,
                "The provided authorization code was issued to another client.",
            ));
        }
        c.redeemed = true;
        c.clone()
    };
    if req.get("redirect_uri") != Some(issued.redirect_uri.as_str()) {
        return Err(invalid_grant(
            50148,
            "The redirect_uri in the token request does not match the redirect_uri used to obtain the authorization code.",
        ));
    }
    if let Some((challenge, method)) = &issued.challenge {
        let Some(verifier) = req.get("code_verifier") else {
            return Err(req.bad(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'code_verifier'.",
            ));
        };
        let computed = if method.eq_ignore_ascii_case("S256") {
            xdrsync_jwt::b64url(&Sha256::digest(verifier.as_bytes()))
        } else {
            verifier.to_owned()
        };
        if &computed != challenge {
            return Err(invalid_grant(
                501481,
                "The Code_Verifier doesn't match the code_challenge supplied in the authorization request.",
            ));
        }
    }
    let (_, acr) = req.grant_client(&issued.grant.user.tenant)?;
    delegated(req, &issued.grant, acr, issued.nonce.as_deref())
}

fn refresh_token(req: &Req<'_>) -> Reply {
    let path_tenant = req.tenant()?;
    let rt = req.require("refresh_token")?.to_owned();
    let invalid_grant =
        |code: u32, msg: &str| req.bad(StatusCode::BAD_REQUEST, "invalid_grant", code, msg);
    let mut grant = {
        let mut s = req.state.sessions();
        let Some(r) = s.refresh.get_mut(&rt) else {
            return Err(invalid_grant(
                9002313,
                "Invalid request. Request is malformed or invalid: the refresh token is not valid.",
            ));
        };
        if r.revoked {
            return Err(invalid_grant(
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
            ));
        }
        let inactive = req.now.ticks() - r.last_used.ticks();
        if inactive > RT_MAX_INACTIVE_DAYS * 86_400 * 10_000_000 {
            return Err(invalid_grant(
                700082,
                &format!(
                    "The refresh token has expired due to inactivity. The token was issued on {} and was inactive for {RT_MAX_INACTIVE_DAYS}.00:00:00.",
                    r.issued
                ),
            ));
        }
        r.last_used = req.now;
        r.grant.clone()
    };
    if let Some(t) = path_tenant
        .as_ref()
        .filter(|t| !t.id.eq_ignore_ascii_case(&grant.user.tenant))
    {
        return Err(invalid_grant(
            9002313,
            &format!(
                "The refresh token was issued for another tenant than {}.",
                t.id
            ),
        ));
    }
    let client_id = req.client_id().unwrap_or_default();
    if !client_id.eq_ignore_ascii_case(&grant.client_id) {
        return Err(invalid_grant(
            70000,
            "The refresh token was issued to another client.",
        ));
    }
    let (tenant, acr) = req.grant_client(&grant.user.tenant)?;
    // Microsoft's refresh tokens are multi-resource: the same token can be redeemed for another API.
    if let Some((r, id, scopes)) = req.delegated_resource(&tenant)? {
        grant.resource = r;
        grant.resource_id = id;
        grant.scopes = scopes;
    }
    delegated(req, &grant, acr, None)
}

fn device_code(req: &Req<'_>) -> Reply {
    let code = req.require("device_code")?.to_owned();
    let interval = req.state.behaviour().device_code_interval_secs as i64;
    let auto = req.state.behaviour().auto_approve;
    let fail =
        |error: &str, code: u32, msg: &str| req.bad(StatusCode::BAD_REQUEST, error, code, msg);
    let grant = {
        let mut s = req.state.sessions();
        let Some(d) = s.devices.get_mut(&code) else {
            return Err(fail(
                "bad_verification_code",
                70000,
                "The provided device code is not valid.",
            ));
        };
        if d.declined {
            return Err(fail(
                "authorization_declined",
                70000,
                "The end user denied the authorization request.",
            ));
        }
        if d.expires <= req.now {
            return Err(fail("expired_token", 70019, "Verification code expired."));
        }
        if !d
            .grant
            .client_id
            .eq_ignore_ascii_case(&req.client_id().unwrap_or_default())
        {
            return Err(fail(
                "invalid_grant",
                70000,
                "The device code was issued to another client.",
            ));
        }
        let too_fast = d
            .last_poll
            .is_some_and(|p| req.now.ticks() - p.ticks() < interval * 10_000_000 - 5_000_000);
        d.last_poll = Some(req.now);
        d.polls += 1;
        if auto && d.polls >= 2 {
            d.approved = true;
        }
        if !d.approved {
            if too_fast {
                return Err(fail(
                    "slow_down",
                    70000,
                    "Polling too frequently: wait the interval between requests.",
                ));
            }
            return Err(fail(
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            ));
        }
        let grant = d.grant.clone();
        s.devices.remove(&code);
        grant
    };
    let (_, acr) = req.grant_client(&grant.user.tenant)?;
    delegated(req, &grant, acr, None)
}

pub(crate) async fn devicecode_v1(
    State(state): State<EmulatorState>,
    Path(tenant): Path<String>,
    body: String,
) -> Response {
    devicecode(&state, &tenant, &body, Version::V1)
}

pub(crate) async fn devicecode_v2(
    State(state): State<EmulatorState>,
    Path(tenant): Path<String>,
    body: String,
) -> Response {
    devicecode(&state, &tenant, &body, Version::V2)
}

/// `POST /{tenant}/oauth2[/v2.0]/devicecode`.
fn devicecode(state: &EmulatorState, tenant_key: &str, body: &str, ver: Version) -> Response {
    let headers = HeaderMap::new();
    let req = Req::parse(state, tenant_key, &headers, body, ver);
    let result = (|| -> Reply {
        let dir = state.directory();
        let tenant = match req.tenant()? {
            Some(t) => t,
            None => {
                // `/common` and `/organizations`: the user's tenant is known only at sign-in;
                // the emulator signs in to the app's home tenant.
                let client_id = req.require("client_id")?;
                let app = dir.app(client_id).ok_or_else(|| {
                    req.bad(
                        StatusCode::BAD_REQUEST,
                        "unauthorized_client",
                        700016,
                        &app_not_found(client_id, tenant_key),
                    )
                })?;
                dir.tenant(&app.home_tenant).cloned().ok_or_else(|| {
                    req.bad(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        90002,
                        &tenant_not_found(&app.home_tenant),
                    )
                })?
            }
        };
        let client_id = req.require("client_id")?.to_owned();
        if dir.app(&client_id).is_none() {
            return Err(req.bad(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                &app_not_found(&client_id, &tenant.name),
            ));
        }
        let (resource, resource_id, scopes, openid, offline) = match ver {
            Version::V1 => {
                let id = req.require("resource")?.to_owned();
                let r = Resource::from_identifier(&id)
                    .ok_or_else(|| req.unknown_resource(&id, &tenant))?;
                (r, id, delegated_scopes(r), true, true)
            }
            Version::V2 => parse_scopes(req.require("scope")?)
                .map_err(|m| req.bad(StatusCode::BAD_REQUEST, "invalid_scope", 70011, &m))?,
        };
        let user_code: String = opaque(12)
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect::<String>()
            .to_uppercase();
        let device_code = opaque(48);
        let interval = state.behaviour().device_code_interval_secs;
        let grant = Grant {
            client_id,
            user: User {
                upn: format!("admin@{}", tenant.domain),
                tenant: tenant.id.clone(),
            },
            resource,
            resource_id,
            scopes,
            openid,
            offline,
        };
        state.sessions().devices.insert(
            device_code.clone(),
            Device {
                user_code: user_code.clone(),
                grant,
                expires: req.now.add(chrono::Duration::seconds(900)),
                last_poll: None,
                approved: false,
                declined: false,
                polls: 0,
            },
        );
        let uri = format!("{}/devicelogin", state.base_url());
        let message = format!(
            "To sign in, use a web browser to open the page {uri} and enter the code {user_code} to authenticate."
        );
        let body = match ver {
            Version::V1 => {
                json!({"user_code": user_code, "device_code": device_code, "verification_url": uri,
                "expires_in": "900", "interval": interval.to_string(), "message": message})
            }
            Version::V2 => {
                json!({"user_code": user_code, "device_code": device_code, "verification_uri": uri,
                "expires_in": 900, "interval": interval, "message": message})
            }
        };
        Ok(axum::Json(body).into_response())
    })();
    result.unwrap_or_else(|e| e)
}

/// `GET /metadata/identity/oauth2/token`: the Azure instance metadata endpoint that gives a
/// managed identity its tokens (`Metadata: true` header, `resource`, optional `client_id`).
/// The answer is v1-shaped with numbers as strings, as IMDS sends it.
pub(crate) async fn imds(
    State(state): State<EmulatorState>,
    headers: HeaderMap,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    let bad = |msg: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request", "error_description": msg})),
        )
            .into_response()
    };
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return bad("Required metadata header not specified");
    }
    let pairs: HashMap<String, String> = q
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .map(|v| v.into_iter().collect())
        .unwrap_or_default();
    let Some(resource_id) = pairs.get("resource") else {
        return bad("Required query variable 'resource' is missing");
    };
    let Some(resource) = Resource::from_identifier(resource_id) else {
        return bad("Resource is not a known application");
    };
    let dir = state.directory();
    let app = dir.apps.iter().find(|a| {
        a.managed_identity
            && pairs
                .get("client_id")
                .is_none_or(|c| a.client_id.eq_ignore_ascii_case(c))
    });
    let Some(app) = app.cloned() else {
        return bad("Identity not found");
    };
    let now = state.clock().now().as_datetime().timestamp();
    let exp = now + state.token_lifetime_secs();
    let tid = app.home_tenant.clone();
    let oid = name_guid(&tid, &app.client_id);
    let roles = app.roles(&tid, resource).unwrap_or_default();
    let mut c = Map::new();
    c.insert("aud".into(), json!(resource.uri()));
    c.insert(
        "iss".into(),
        json!(format!("https://sts.windows.net/{tid}/")),
    );
    c.insert("iat".into(), json!(now - SKEW_SECS));
    c.insert("nbf".into(), json!(now - SKEW_SECS));
    c.insert("exp".into(), json!(exp));
    c.insert("appid".into(), json!(app.client_id));
    c.insert("appidacr".into(), json!("2"));
    c.insert("idtyp".into(), json!("app"));
    c.insert("oid".into(), json!(oid));
    if !roles.is_empty() {
        c.insert("roles".into(), json!(roles));
    }
    c.insert("sub".into(), json!(oid));
    c.insert("tid".into(), json!(tid));
    c.insert("uti".into(), json!(opaque(16)));
    c.insert("ver".into(), json!("1.0"));
    c.insert("xms_mirid".into(), json!(format!("/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/siem/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}", app.name)));
    let token = sign(&state, c);
    state.count_token_issued();
    axum::Json(json!({
        "access_token": token, "client_id": app.client_id, "expires_in": (exp - now).to_string(),
        "expires_on": exp.to_string(), "ext_expires_in": (exp - now).to_string(), "not_before": (now - SKEW_SECS).to_string(),
        "resource": resource_id, "token_type": "Bearer",
    }))
    .into_response()
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
