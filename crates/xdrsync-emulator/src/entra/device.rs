//! The device authorization endpoints (`/devicecode`): codes, their lifetime and interval.

use super::*;

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
pub(super) fn devicecode(
    state: &EmulatorState,
    tenant_key: &str,
    body: &str,
    ver: Version,
) -> Response {
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
                    .filter(|r| r.named_in(&id, tenant.cloud))
                    .ok_or_else(|| req.unknown_resource(&id, &tenant))?;
                (r, id, delegated_scopes(r), true, true)
            }
            Version::V2 => {
                let scope = req.require("scope")?;
                let v = parse_scopes(scope)
                    .map_err(|m| req.bad(StatusCode::BAD_REQUEST, "invalid_scope", 70011, &m))?;
                // Unqualified scopes (`openid`, `User.Read`) mean the cloud's own Graph.
                if scope.contains(v.1.as_str()) && !v.0.named_in(&v.1, tenant.cloud) {
                    return Err(req.unknown_resource(&v.1, &tenant));
                }
                v
            }
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
