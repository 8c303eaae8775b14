//! Entra ID's interactive endpoints: `/{tenant}/oauth2/authorize` (v1, `resource`),
//! `/{tenant}/oauth2/v2.0/authorize` (v2, `scope`), `/{tenant}/adminconsent`,
//! `/{tenant}/v2.0/adminconsent` and the device-code page `/devicelogin`.
//!
//! Each shows a small sign-in and consent page; with `behaviour.auto_approve` it approves at
//! once (signing in as `login_hint`, or `admin@<tenant domain>`), so tests need no browser.
//! Approval is an administrator's consent: an app that has no service principal in the user's
//! tenant gets one with the application roles it requires, as in the partner-access guide.
//! Errors that Entra shows on its own page (unknown app, unregistered redirect URI) are shown on
//! the page; everything else goes back to the redirect URI as `error`/`error_description`.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::EmulatorState;
use crate::directory::{AppSpec, Directory, Resource};
use crate::entra::{
    app_in_tenant, app_not_found, delegated_scopes, parse_scopes, tenant_not_found,
};
use crate::sessions::{Code, Grant, User, opaque};

/// What the page is asking for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    AuthorizeV1,
    AuthorizeV2,
    AdminConsentV1,
    AdminConsentV2,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::AuthorizeV1 => "authorize_v1",
            Kind::AuthorizeV2 => "authorize_v2",
            Kind::AdminConsentV1 => "adminconsent_v1",
            Kind::AdminConsentV2 => "adminconsent_v2",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        [
            Kind::AuthorizeV1,
            Kind::AuthorizeV2,
            Kind::AdminConsentV1,
            Kind::AdminConsentV2,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

type Params = HashMap<String, String>;

fn params(q: Option<&str>) -> Params {
    q.and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .map(|v| v.into_iter().collect())
        .unwrap_or_default()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:34em;margin:3em auto}}input{{width:100%;padding:.4em}}\
         button{{padding:.5em 1.2em;margin:.5em .5em 0 0}}</style></head><body><h2>{t}</h2>{body}\
         <p><small>xdrsync emulator of Microsoft Entra ID</small></p></body></html>",
        t = escape(title)
    )
}

/// An error shown on Entra's own page (no redirect).
fn error_page(code: u32, message: &str) -> Response {
    let body = format!("<p><b>AADSTS{code}</b>: {}</p>", escape(message));
    (StatusCode::BAD_REQUEST, Html(page("Sign in: error", &body))).into_response()
}

pub(crate) async fn authorize_v1(
    s: State<EmulatorState>,
    p: Path<String>,
    q: RawQuery,
) -> Response {
    start(s, p, q, Kind::AuthorizeV1)
}
pub(crate) async fn authorize_v2(
    s: State<EmulatorState>,
    p: Path<String>,
    q: RawQuery,
) -> Response {
    start(s, p, q, Kind::AuthorizeV2)
}
pub(crate) async fn adminconsent_v1(
    s: State<EmulatorState>,
    p: Path<String>,
    q: RawQuery,
) -> Response {
    start(s, p, q, Kind::AdminConsentV1)
}
pub(crate) async fn adminconsent_v2(
    s: State<EmulatorState>,
    p: Path<String>,
    q: RawQuery,
) -> Response {
    start(s, p, q, Kind::AdminConsentV2)
}

/// Exact match, except that Entra ignores the port of `http://localhost` / `http://127.0.0.1`
/// redirect URIs, so native apps can listen on any free loopback port.
fn redirect_matches(registered: &str, given: &str) -> bool {
    if registered == given {
        return true;
    }
    let (Ok(r), Ok(g)) = (url::Url::parse(registered), url::Url::parse(given)) else {
        return false;
    };
    let loopback = |u: &url::Url| {
        u.scheme() == "http" && matches!(u.host_str(), Some("localhost" | "127.0.0.1"))
    };
    loopback(&r) && loopback(&g) && r.host_str() == g.host_str() && r.path() == g.path()
}

/// Validates what must be right before anything can be redirected back.
fn check_client(dir: &Directory, p: &Params) -> Result<(AppSpec, String), Response> {
    let client_id = p.get("client_id").cloned().unwrap_or_default();
    let Some(app) = dir.app(&client_id).cloned() else {
        return Err(error_page(
            700016,
            &app_not_found(&client_id, "the directory"),
        ));
    };
    let redirect = p
        .get("redirect_uri")
        .cloned()
        .or_else(|| app.redirect_uris.first().cloned())
        .unwrap_or_default();
    if !app
        .redirect_uris
        .iter()
        .any(|r| redirect_matches(r, &redirect))
    {
        return Err(error_page(
            50011,
            &format!(
                "The redirect URI '{redirect}' specified in the request does not match the redirect URIs configured for the application '{}'.",
                app.client_id
            ),
        ));
    }
    Ok((app, redirect))
}

fn start(
    State(state): State<EmulatorState>,
    Path(tenant_key): Path<String>,
    RawQuery(q): RawQuery,
    kind: Kind,
) -> Response {
    let p = params(q.as_deref());
    let dir = state.directory();
    let common = matches!(
        tenant_key.to_ascii_lowercase().as_str(),
        "common" | "organizations"
    );
    if !common && dir.tenant(&tenant_key).is_none() {
        return error_page(90002, &tenant_not_found(&tenant_key));
    }
    let (app, redirect) = match check_client(&dir, &p) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if matches!(kind, Kind::AuthorizeV1 | Kind::AuthorizeV2)
        && !p
            .get("response_type")
            .is_some_and(|r| r.split(' ').any(|t| t == "code"))
    {
        return back(
            &redirect,
            &p,
            kind,
            &[
                ("error", "unsupported_response_type"),
                (
                    "error_description",
                    "AADSTS70005: response_type must include 'code'.",
                ),
            ],
        );
    }
    if state.behaviour().auto_approve {
        let user = p.get("login_hint").cloned().or_else(|| {
            (!common)
                .then(|| {
                    dir.tenant(&tenant_key)
                        .map(|t| format!("admin@{}", t.domain))
                })
                .flatten()
        });
        let Some(user) = user else {
            return error_page(
                50058,
                "Auto-approve on /common needs login_hint=user@tenant-domain to know who signs in.",
            );
        };
        return decide(&state, &tenant_key, &app, &redirect, &p, kind, Some(&user));
    }
    let default_user = dir
        .tenant(&tenant_key)
        .map(|t| format!("admin@{}", t.domain))
        .unwrap_or_default();
    let user = p.get("login_hint").cloned().unwrap_or(default_user);
    let mut hidden = String::new();
    for (k, v) in &p {
        hidden.push_str(&format!(
            "<input type=\"hidden\" name=\"p.{}\" value=\"{}\">",
            escape(k),
            escape(v)
        ));
    }
    let what = match kind {
        Kind::AuthorizeV1 | Kind::AuthorizeV2 => "sign in and grant the requested permissions",
        Kind::AdminConsentV1 | Kind::AdminConsentV2 => "grant admin consent for your organization",
    };
    let body = format!(
        "<p><b>{app}</b> wants you to {what}.</p><form method=\"post\" action=\"/_emulator/authorize\">\
         <input type=\"hidden\" name=\"kind\" value=\"{kind}\"><input type=\"hidden\" name=\"tenant\" value=\"{tenant}\">{hidden}\
         <label>User<input name=\"username\" value=\"{user}\"></label><label>Password<input name=\"password\" type=\"password\" value=\"any\"></label>\
         <button name=\"decision\" value=\"accept\">Accept</button><button name=\"decision\" value=\"cancel\">Cancel</button></form>",
        app = escape(&app.name),
        kind = kind.as_str(),
        tenant = escape(&tenant_key),
        user = escape(&user),
    );
    Html(page("Sign in to your account", &body)).into_response()
}

/// `POST /_emulator/authorize`: the page's Accept / Cancel.
pub(crate) async fn decision(State(state): State<EmulatorState>, body: String) -> Response {
    let form: Params = serde_urlencoded::from_str::<Vec<(String, String)>>(&body)
        .map(|v| v.into_iter().collect())
        .unwrap_or_default();
    let Some(kind) = form.get("kind").and_then(|k| Kind::parse(k)) else {
        return error_page(900144, "The form is incomplete.");
    };
    let tenant_key = form
        .get("tenant")
        .cloned()
        .unwrap_or_else(|| "common".into());
    let p: Params = form
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("p.").map(|k| (k.to_owned(), v.clone())))
        .collect();
    let dir = state.directory();
    let (app, redirect) = match check_client(&dir, &p) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let user = (form.get("decision").map(String::as_str) == Some("accept"))
        .then(|| form.get("username").cloned().unwrap_or_default());
    decide(
        &state,
        &tenant_key,
        &app,
        &redirect,
        &p,
        kind,
        user.as_deref(),
    )
}

/// Approves (for `user`) or cancels (`None`), then redirects back to the app.
fn decide(
    state: &EmulatorState,
    tenant_key: &str,
    app: &AppSpec,
    redirect: &str,
    p: &Params,
    kind: Kind,
    user: Option<&str>,
) -> Response {
    let Some(user) = user else {
        let (error, desc) = match kind {
            Kind::AdminConsentV1 => ("permission_denied", "The admin canceled the request"),
            _ => ("access_denied", "the user canceled the authentication"),
        };
        return back(
            redirect,
            p,
            kind,
            &[("error", error), ("error_description", desc)],
        );
    };
    let dir = state.directory();
    let domain = user.rsplit('@').next().unwrap_or_default();
    let Some(tenant) = dir.tenant(domain).cloned() else {
        return back(
            redirect,
            p,
            kind,
            &[
                ("error", "invalid_request"),
                (
                    "error_description",
                    &format!(
                        "AADSTS50034: The user account {user} does not exist in any tenant of this emulator."
                    ),
                ),
            ],
        );
    };
    let common = matches!(
        tenant_key.to_ascii_lowercase().as_str(),
        "common" | "organizations"
    );
    if !common && dir.tenant(tenant_key).is_some_and(|t| t.id != tenant.id) {
        return back(
            redirect,
            p,
            kind,
            &[
                ("error", "invalid_request"),
                (
                    "error_description",
                    &format!(
                        "AADSTS50020: User account '{user}' does not exist in tenant '{tenant_key}'."
                    ),
                ),
            ],
        );
    }
    // Consent: the signed-in administrator grants the app its required roles in their tenant.
    if !app_in_tenant(app, &tenant.id) {
        if !app.multi_tenant {
            return back(
                redirect,
                p,
                kind,
                &[
                    ("error", "unauthorized_client"),
                    (
                        "error_description",
                        &format!(
                            "AADSTS700016: {}",
                            app_not_found(&app.client_id, &tenant.name)
                        ),
                    ),
                ],
            );
        }
        let roles = app.required_roles.clone();
        let (client, tid) = (app.client_id.clone(), tenant.id.clone());
        state.update_directory(|d| {
            if let Some(a) = d.apps.iter_mut().find(|a| a.client_id == client) {
                a.consents.entry(tid).or_insert(roles);
            }
        });
    }
    match kind {
        Kind::AdminConsentV1 => back(
            redirect,
            p,
            kind,
            &[("tenant", &tenant.id), ("admin_consent", "True")],
        ),
        Kind::AdminConsentV2 => {
            let scope = p.get("scope").cloned().unwrap_or_default();
            back(
                redirect,
                p,
                kind,
                &[
                    ("admin_consent", "True"),
                    ("tenant", &tenant.id),
                    ("scope", &scope),
                ],
            )
        }
        Kind::AuthorizeV1 | Kind::AuthorizeV2 => {
            let parsed = if kind == Kind::AuthorizeV1 {
                let id = p
                    .get("resource")
                    .cloned()
                    .unwrap_or_else(|| "https://graph.microsoft.com".into());
                match Resource::from_identifier(&id).filter(|r| r.named_in(&id, tenant.cloud)) {
                    Some(r) => Ok((r, id, delegated_scopes(r), true, true)),
                    None => Err(format!(
                        "AADSTS500011: The resource principal named {id} was not found in the tenant named {}.",
                        tenant.name
                    )),
                }
            } else {
                parse_scopes(p.get("scope").map(String::as_str).unwrap_or("openid"))
                    .map_err(|e| format!("AADSTS70011: {e}"))
                    .and_then(|v| {
                        let scope = p.get("scope").map(String::as_str).unwrap_or("");
                        // Unqualified scopes (`openid`, `User.Read`) mean the cloud's own Graph.
                        if !scope.contains(v.1.as_str()) || v.0.named_in(&v.1, tenant.cloud) {
                            Ok(v)
                        } else {
                            Err(format!(
                                "AADSTS500011: The resource principal named {} was not found in the tenant named {}.",
                                v.1, tenant.name
                            ))
                        }
                    })
            };
            let (resource, resource_id, scopes, openid, offline) = match parsed {
                Ok(v) => v,
                Err(e) => {
                    return back(
                        redirect,
                        p,
                        kind,
                        &[("error", "invalid_resource"), ("error_description", &e)],
                    );
                }
            };
            let code = opaque(64);
            let challenge = p.get("code_challenge").map(|c| {
                (
                    c.clone(),
                    p.get("code_challenge_method")
                        .cloned()
                        .unwrap_or_else(|| "plain".into()),
                )
            });
            state.sessions().codes.insert(
                code.clone(),
                Code {
                    grant: Grant {
                        client_id: app.client_id.clone(),
                        user: User {
                            upn: user.to_owned(),
                            tenant: tenant.id.clone(),
                        },
                        resource,
                        resource_id,
                        scopes,
                        openid,
                        offline,
                    },
                    redirect_uri: redirect.to_owned(),
                    challenge,
                    nonce: p.get("nonce").cloned(),
                    issued: state.clock().now(),
                    redeemed: false,
                },
            );
            let session = uuid::Uuid::new_v4().to_string();
            let mut pairs = vec![("code", code.as_str()), ("session_state", session.as_str())];
            let admin = p.get("prompt").is_some_and(|x| x == "admin_consent");
            if admin {
                pairs.push(("admin_consent", "True"));
            }
            back(redirect, p, kind, &pairs)
        }
    }
}

/// Sends the result to the redirect URI per `response_mode` (query, fragment or form_post),
/// always echoing `state`.
fn back(redirect: &str, p: &Params, kind: Kind, pairs: &[(&str, &str)]) -> Response {
    let mut all: Vec<(&str, &str)> = pairs.to_vec();
    if let Some(s) = p.get("state") {
        all.push(("state", s));
    }
    let mode = p.get("response_mode").map(String::as_str).unwrap_or(
        if kind == Kind::AuthorizeV2
            && p.get("response_type")
                .is_some_and(|r| r.contains("id_token"))
        {
            "fragment"
        } else {
            "query"
        },
    );
    let encoded = serde_urlencoded::to_string(&all).unwrap_or_default();
    match mode {
        "form_post" => {
            let inputs: String = all
                .iter()
                .map(|(k, v)| {
                    format!(
                        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                        escape(k),
                        escape(v)
                    )
                })
                .collect();
            let body = format!(
                "<form method=\"post\" action=\"{}\">{inputs}<noscript><button>Continue</button></noscript></form><script>document.forms[0].submit()</script>",
                escape(redirect)
            );
            Html(page("Working…", &body)).into_response()
        }
        "fragment" => Redirect::to(&format!("{redirect}#{encoded}")).into_response(),
        _ => {
            let sep = if redirect.contains('?') { '&' } else { '?' };
            let mut r = Redirect::to(&format!("{redirect}{sep}{encoded}")).into_response();
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            r
        }
    }
}

/// `GET /devicelogin`: where the user enters the device code.
pub(crate) async fn devicelogin_page() -> Response {
    let body = "<form method=\"post\" action=\"/devicelogin\"><label>Code<input name=\"user_code\"></label>\
                <label>User<input name=\"username\" placeholder=\"admin@contoso.onmicrosoft.com\"></label>\
                <button name=\"decision\" value=\"accept\">Continue</button><button name=\"decision\" value=\"cancel\">Cancel</button></form>";
    Html(page("Enter code", body)).into_response()
}

/// `POST /devicelogin`: approves or declines a pending device code.
pub(crate) async fn devicelogin_submit(
    State(state): State<EmulatorState>,
    body: String,
) -> Response {
    let form: Params = serde_urlencoded::from_str::<Vec<(String, String)>>(&body)
        .map(|v| v.into_iter().collect())
        .unwrap_or_default();
    let code = form
        .get("user_code")
        .map(|c| c.trim().to_uppercase())
        .unwrap_or_default();
    let accept = form.get("decision").map(String::as_str) == Some("accept");
    let username = form.get("username").cloned().unwrap_or_default();
    let dir = state.directory();
    let mut sessions = state.sessions();
    let Some(device) = sessions.devices.values_mut().find(|d| d.user_code == code) else {
        return error_page(70000, "That code is not valid or has expired.");
    };
    if !accept {
        device.declined = true;
        return Html(page(
            "Cancelled",
            "<p>You declined the sign-in. You may close this window.</p>",
        ))
        .into_response();
    }
    if !username.is_empty() {
        let Some(tenant) = dir.tenant(username.rsplit('@').next().unwrap_or_default()) else {
            return error_page(
                50034,
                &format!(
                    "The user account {username} does not exist in any tenant of this emulator."
                ),
            );
        };
        device.grant.user = User {
            upn: username.clone(),
            tenant: tenant.id.clone(),
        };
    }
    device.approved = true;
    Html(page(
        "Signed in",
        "<p>You have signed in to the application. You may close this window.</p>",
    ))
    .into_response()
}
