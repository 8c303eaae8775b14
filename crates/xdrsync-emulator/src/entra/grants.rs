//! The grants: client credentials, authorization code (PKCE), refresh token (rotation,
//! revocation, inactivity), device code.

use super::*;

pub(super) fn client_credentials(req: &Req<'_>) -> Reply {
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

/// Issues the delegated tokens of a grant: access token with `scp`, a rotated refresh token
/// (v1 always; v2 with `offline_access`), an ID token (v1 always; v2 with `openid`), and
/// `client_info` when asked.
pub(super) fn delegated(req: &Req<'_>, grant: &Grant, acr: &str, nonce: Option<&str>) -> Reply {
    let dir = req.state.directory();
    let Some(tenant) = dir.tenant(&grant.user.tenant).cloned() else {
        return Err(req.bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &tenant_not_found(&grant.user.tenant),
        ));
    };
    let Some(app) = AppRef::find(dir.clone(), &grant.client_id) else {
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
    // A `.default` request carries the read scopes; the write ones come with the tenant's
    // consent to them (an admin granting write access reaches the next token, as in Entra).
    let mut scopes = grant.scopes.clone();
    let consented: Vec<String> = app
        .consents
        .get(&tenant.id)
        .and_then(|by_resource| by_resource.get(&grant.resource))
        .cloned()
        .unwrap_or_default();
    for (role, scope) in [
        (
            "SecurityIncident.ReadWrite.All",
            "SecurityIncident.ReadWrite.All",
        ),
        ("SecurityAlert.ReadWrite.All", "SecurityAlert.ReadWrite.All"),
        ("Incident.ReadWrite.All", "Incident.ReadWrite"),
        ("Alert.ReadWrite.All", "Alert.ReadWrite"),
    ] {
        if consented.iter().any(|c| c == role) && !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    claims.insert("scp".into(), json!(scopes.join(" ")));
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

pub(super) fn authorization_code(req: &Req<'_>) -> Reply {
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

pub(super) fn refresh_token(req: &Req<'_>) -> Reply {
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

pub(super) fn device_code(req: &Req<'_>) -> Reply {
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
