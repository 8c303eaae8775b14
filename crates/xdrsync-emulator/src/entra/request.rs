//! A token request as the endpoint reads it: the form, the client's authentication (secret,
//! HTTP Basic, certificate assertion with its `iss`/`sub`/`aud`/`exp`/`nbf` checks), the tenant.

use super::*;

/// One token request.
pub(super) struct Req<'a> {
    pub(super) state: &'a EmulatorState,
    pub(super) now: Timestamp,
    pub(super) ver: Version,
    pub(super) tenant_key: &'a str,
    pub(super) form: HashMap<String, String>,
    pub(super) headers: &'a HeaderMap,
}

pub(super) type Reply = Result<Response, Response>;

impl<'a> Req<'a> {
    /// A form-encoded request to the tenant's `tenant_key` endpoint, read at the emulator's now.
    pub(super) fn parse(
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

    pub(super) fn bad(&self, status: StatusCode, error: &str, code: u32, msg: &str) -> Response {
        errors::entra(status, error, code, msg, self.now)
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.form
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(super) fn require(&self, key: &str) -> Result<&str, Response> {
        self.get(key).ok_or_else(|| {
            self.bad(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                &format!("The request body must contain the following parameter: '{key}'."),
            )
        })
    }

    pub(super) fn is_common(&self) -> bool {
        matches!(
            self.tenant_key.to_ascii_lowercase().as_str(),
            "common" | "organizations" | "consumers"
        )
    }

    /// The tenant named in the path (`None` for `/common` and `/organizations`).
    pub(super) fn tenant(&self) -> Result<Option<TenantSpec>, Response> {
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

    pub(super) fn basic(&self) -> Option<(String, String)> {
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

    pub(super) fn client_id(&self) -> Option<String> {
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
    pub(super) fn app(&self, tenant: &TenantSpec) -> Result<AppRef, Response> {
        let client_id = self.client_id().ok_or_else(|| {
            self.bad(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        })?;
        match AppRef::find(self.state.directory(), &client_id) {
            Some(app) if app_in_tenant(&app, &tenant.id) => Ok(app),
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
    pub(super) fn authenticate(
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
    pub(super) fn verify_assertion(
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
    pub(super) fn grant_client(
        &self,
        tenant_id: &str,
    ) -> Result<(TenantSpec, &'static str), Response> {
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
    pub(super) fn app_resource(&self, tenant: &TenantSpec) -> Result<(Resource, String), Response> {
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
        let resource = Resource::from_identifier(&id)
            .filter(|r| r.named_in(&id, tenant.cloud))
            .ok_or_else(|| self.unknown_resource(&id, tenant))?;
        Ok((resource, id))
    }

    pub(super) fn unknown_resource(&self, id: &str, tenant: &TenantSpec) -> Response {
        self.bad(StatusCode::BAD_REQUEST, "invalid_resource", 500011, &format!(
            "The resource principal named {id} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.", tenant.name))
    }

    /// For a delegated refresh: the resource asked for now (v1 `resource`, v2 `scope`), if any.
    pub(super) fn delegated_resource(
        &self,
        tenant: &TenantSpec,
    ) -> Result<Option<(Resource, String, Vec<String>)>, Response> {
        match self.ver {
            Version::V1 => match self.get("resource") {
                None => Ok(None),
                Some(id) => {
                    let r = Resource::from_identifier(id)
                        .filter(|r| r.named_in(id, tenant.cloud))
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
                    // Unqualified scopes (`openid`, `User.Read`) mean the cloud's own Graph.
                    if scope.contains(id.as_str()) && !r.named_in(&id, tenant.cloud) {
                        return Err(self.unknown_resource(&id, tenant));
                    }
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
