//! Entra's interactive and refresh flows over loopback HTTP: authorization code with PKCE,
//! the MSSP guide's v1 flow, refresh-token rotation and inactivity expiry, admin consent,
//! device code, signing-key rotation.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use xdrsync_emulator::{Directory, Emulator, EmulatorConfig};

struct Env {
    emu: Emulator,
    http: reqwest::Client,
    base: String,
    tenant: String,
    domain: String,
    other: String,
    other_domain: String,
    id: String,
    secret: String,
}

async fn env(auto_approve: bool) -> Env {
    let mut config = EmulatorConfig {
        directory: Directory::demo(3),
        ..Default::default()
    };
    config.behaviour.auto_approve = auto_approve;
    config.behaviour.device_code_interval_secs = 1;
    let emu = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let c = emu.contract();
    Env {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        base: emu.base_url(),
        tenant: c.tenants[1].id.clone(),
        domain: c.tenants[1].domain.clone(),
        // The MSSP's own home tenant: the app exists there, so consent is not the issue.
        other: c.tenants[0].id.clone(),
        other_domain: c.tenants[0].domain.clone(),
        id: c.apps[0].client_id.clone(),
        secret: c.apps[0].secret.clone(),
        emu,
    }
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

fn query(location: &str) -> std::collections::HashMap<String, String> {
    let url = url::Url::parse(location).unwrap();
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

impl Env {
    async fn get_redirect(
        &self,
        path_and_query: &str,
    ) -> std::collections::HashMap<String, String> {
        let resp = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_redirection(),
            "{}: {}",
            resp.status(),
            resp.text().await.unwrap()
        );
        query(resp.headers()["location"].to_str().unwrap())
    }

    async fn token(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn incidents(&self, path: &str, token: &str) -> u16 {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn code(&self, verifier: &str, scope: &str) -> String {
        let challenge = b64url(&Sha256::digest(verifier.as_bytes()));
        let q = serde_urlencoded::to_string([
            ("client_id", self.id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", "http://localhost"),
            ("scope", scope),
            ("state", "s-123"),
            ("nonce", "n-456"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .unwrap();
        let back = self
            .get_redirect(&format!("/{}/oauth2/v2.0/authorize?{q}", self.tenant))
            .await;
        assert_eq!(back["state"], "s-123");
        assert!(back.contains_key("session_state"));
        back["code"].clone()
    }
}

#[tokio::test]
async fn authorization_code_with_pkce_then_refresh_rotation_and_expiry() {
    let e = env(true).await;
    let verifier = "a-verifier-of-at-least-43-characters-0123456789abcdef";
    let scope = "https://api.security.microsoft.com/Incident.Read offline_access openid";
    let code = e.code(verifier, scope).await;
    let form = |code: &str, verifier: &'static str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("client_id", e.id.clone()),
            ("client_secret", e.secret.clone()),
            ("code", code.to_owned()),
            ("redirect_uri", "http://localhost".to_owned()),
            ("code_verifier", verifier.to_owned()),
            ("client_info", "1".to_owned()),
        ]
    };
    let pairs = |v: &Vec<(&'static str, String)>| {
        v.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>()
    };
    let path = format!("/{}/oauth2/v2.0/token", e.tenant);
    let f = form(
        &code,
        "a-verifier-of-at-least-43-characters-0123456789abcdef",
    );
    let (status, body) = e
        .token(
            &path,
            &pairs(&f)
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().unwrap();
    let c = claims(access);
    assert_eq!(c["aud"], "https://api.security.microsoft.com");
    assert_eq!(c["scp"], "Incident.Read");
    assert_eq!(c["upn"], format!("admin@{}", e.domain));
    assert_eq!(claims(body["id_token"].as_str().unwrap())["nonce"], "n-456");
    assert!(body["client_info"].is_string());
    assert_eq!(
        e.incidents("/api/incidents?$top=1", access).await,
        200,
        "a delegated token with scp works"
    );
    assert_eq!(
        e.incidents("/v1.0/security/incidents?$top=1", access).await,
        401,
        "but only for its audience"
    );

    // Codes are single-use.
    let (status, body) = e
        .token(
            &path,
            &pairs(&f)
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(54005)),
        "{body}"
    );
    // The verifier must match the challenge.
    let code2 = e.code(verifier, scope).await;
    let f2 = form(&code2, "another-verifier-that-does-not-match-the-challenge");
    let (status, body) = e
        .token(
            &path,
            &pairs(&f2)
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(501481)),
        "{body}"
    );

    // Refresh: a new refresh token each time; the old one keeps working; another resource too.
    let rt1 = body_rt(&e, &path, verifier, scope).await;
    let refresh = |rt: String, scope: &'static str| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", e.id.clone()),
            ("client_secret", e.secret.clone()),
            ("refresh_token", rt),
            ("scope", scope.to_owned()),
        ]
    };
    let r = refresh(
        rt1.clone(),
        "https://graph.microsoft.com/.default offline_access",
    );
    let (status, body) = e
        .token(
            &path,
            &r.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let rt2 = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2, "refresh tokens rotate");
    assert_eq!(
        e.incidents(
            "/v1.0/security/incidents?$top=1",
            body["access_token"].as_str().unwrap()
        )
        .await,
        200
    );
    let r = refresh(
        rt1.clone(),
        "https://api.security.microsoft.com/Incident.Read offline_access",
    );
    assert_eq!(
        e.token(
            &path,
            &r.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>()
        )
        .await
        .0,
        200,
        "the old refresh token is not revoked"
    );

    // 91 idle days later the refresh token is dead: AADSTS700082.
    e.emu.state().clock().advance(chrono::Duration::days(91));
    let r = refresh(
        rt2,
        "https://api.security.microsoft.com/Incident.Read offline_access",
    );
    let (status, body) = e
        .token(
            &path,
            &r.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(
        (
            status,
            body["error"].as_str(),
            body["error_codes"][0].as_u64()
        ),
        (400, Some("invalid_grant"), Some(700082)),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("inactive for 90.00:00:00")
    );
}

async fn body_rt(e: &Env, path: &str, verifier: &str, scope: &str) -> String {
    let code = e.code(verifier, scope).await;
    let (status, body) = e
        .token(
            path,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &e.id),
                ("client_secret", &e.secret),
                ("code", &code),
                ("redirect_uri", "http://localhost"),
                ("code_verifier", verifier),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["refresh_token"].as_str().unwrap().to_owned()
}

/// The MSSP guide's flow: v1 authorize with `resource`, v1 token with `resource`, refresh.
#[tokio::test]
async fn mssp_v1_flow_and_revocation() {
    let e = env(true).await;
    let q = serde_urlencoded::to_string([
        ("client_id", e.id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", "https://localhost/SiemMsspConnector"),
        ("resource", "https://api.security.microsoft.com"),
        ("state", "xyz"),
    ])
    .unwrap();
    let back = e
        .get_redirect(&format!("/{}/oauth2/authorize?{q}", e.tenant))
        .await;
    let path = format!("/{}/oauth2/token", e.tenant);
    let (status, body) = e
        .token(
            &path,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &e.id),
                ("client_secret", &e.secret),
                ("code", &back["code"]),
                ("redirect_uri", "https://localhost/SiemMsspConnector"),
                ("resource", "https://api.security.microsoft.com"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["expires_in"].is_string() && body["refresh_token"].is_string(),
        "v1 shape: {body}"
    );
    let rt = body["refresh_token"].as_str().unwrap().to_owned();
    let refresh = [
        ("grant_type", "refresh_token"),
        ("client_id", e.id.as_str()),
        ("client_secret", e.secret.as_str()),
        ("refresh_token", rt.as_str()),
        ("resource", "https://api.security.microsoft.com"),
    ];
    assert_eq!(e.token(&path, &refresh).await.0, 200);
    assert_eq!(e.emu.state().revoke_refresh_tokens(&e.id, &e.tenant), 2);
    let (status, body) = e.token(&path, &refresh).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(50173)),
        "{body}"
    );
}

#[tokio::test]
async fn admin_consent_creates_the_service_principal() {
    let e = env(true).await;
    // A tenant the app is not in: remove the consent first.
    let tenant = e.tenant.clone();
    e.emu.state().update_directory(|d| {
        d.apps[0].consents.remove(&tenant);
    });
    let cc = [
        ("grant_type", "client_credentials"),
        ("client_id", e.id.as_str()),
        ("client_secret", e.secret.as_str()),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let path = format!("/{}/oauth2/v2.0/token", e.tenant);
    let (status, body) = e.token(&path, &cc).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(700016))
    );
    let hint = format!("admin@{}", e.domain);
    let q = serde_urlencoded::to_string([
        ("client_id", e.id.as_str()),
        ("scope", "https://graph.microsoft.com/.default"),
        ("redirect_uri", "http://localhost"),
        ("state", "st"),
        ("login_hint", hint.as_str()),
    ])
    .unwrap();
    let back = e
        .get_redirect(&format!("/organizations/v2.0/adminconsent?{q}"))
        .await;
    assert_eq!(back["admin_consent"], "True");
    assert_eq!(back["tenant"], e.tenant);
    assert_eq!(back["state"], "st");
    let (status, body) = e.token(&path, &cc).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        claims(body["access_token"].as_str().unwrap())["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "SecurityIncident.Read.All")
    );
}

#[tokio::test]
async fn the_sign_in_page_and_its_errors() {
    let e = env(false).await;
    let q = serde_urlencoded::to_string([
        ("client_id", e.id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", "http://localhost"),
        ("scope", "openid"),
        ("state", "s1"),
    ])
    .unwrap();
    let page = e
        .http
        .get(format!("{}/{}/oauth2/v2.0/authorize?{q}", e.base, e.tenant))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<form") && page.contains("Accept") && page.contains("Cancel"),
        "{page}"
    );
    // Cancel: back to the app with error=access_denied and the state.
    let mut form: Vec<(String, String)> = serde_urlencoded::from_str::<Vec<(String, String)>>(&q)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (format!("p.{k}"), v))
        .collect();
    form.extend([
        ("kind".into(), "authorize_v2".into()),
        ("tenant".into(), e.tenant.clone()),
        ("username".into(), format!("admin@{}", e.domain)),
    ]);
    let mut cancel = form.clone();
    cancel.push(("decision".into(), "cancel".into()));
    let resp = e
        .http
        .post(format!("{}/_emulator/authorize", e.base))
        .form(&cancel)
        .send()
        .await
        .unwrap();
    let back = query(resp.headers()["location"].to_str().unwrap());
    assert_eq!(
        (back["error"].as_str(), back["state"].as_str()),
        ("access_denied", "s1")
    );
    let mut accept = form;
    accept.push(("decision".into(), "accept".into()));
    let accept_form = accept.clone();
    let resp = e
        .http
        .post(format!("{}/_emulator/authorize", e.base))
        .form(&accept)
        .send()
        .await
        .unwrap();
    assert!(query(resp.headers()["location"].to_str().unwrap()).contains_key("code"));
    // An unregistered redirect URI is never redirected to.
    let bad = serde_urlencoded::to_string([
        ("client_id", e.id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", "https://evil.example/cb"),
    ])
    .unwrap();
    let resp = e
        .http
        .get(format!(
            "{}/{}/oauth2/v2.0/authorize?{bad}",
            e.base, e.tenant
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("AADSTS50011"));
    // A user of another tenant cannot sign in through this tenant's endpoint.
    let mut foreign: Vec<(String, String)> = accept_form
        .iter()
        .filter(|(k, _)| k != "username")
        .cloned()
        .collect();
    foreign.push(("username".into(), format!("admin@{}", e.other_domain)));
    let resp = e
        .http
        .post(format!("{}/_emulator/authorize", e.base))
        .form(&foreign)
        .send()
        .await
        .unwrap();
    let back = query(resp.headers()["location"].to_str().unwrap());
    assert_eq!(back["error"], "invalid_request");
    assert!(
        back["error_description"].contains("AADSTS50020")
            && back["error_description"].contains(&e.tenant),
        "{back:?}"
    );
    assert_ne!(e.other, e.tenant);
}

#[tokio::test]
async fn device_code_pending_slow_down_then_token() {
    let e = env(false).await;
    let (status, dc) = e
        .token(
            &format!("/{}/oauth2/v2.0/devicecode", e.tenant),
            &[
                ("client_id", &e.id),
                (
                    "scope",
                    "https://api.security.microsoft.com/.default offline_access",
                ),
            ],
        )
        .await;
    assert_eq!(status, 200, "{dc}");
    assert_eq!(dc["interval"], 1);
    assert!(
        dc["verification_uri"]
            .as_str()
            .unwrap()
            .ends_with("/devicelogin")
    );
    let device_code = dc["device_code"].as_str().unwrap().to_owned();
    let poll = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", e.id.as_str()),
        ("device_code", device_code.as_str()),
    ];
    let path = format!("/{}/oauth2/v2.0/token", e.tenant);
    let (status, body) = e.token(&path, &poll).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    let (_, body) = e.token(&path, &poll).await;
    assert_eq!(
        body["error"], "slow_down",
        "polled faster than the interval"
    );
    // The user enters the code.
    let resp = e
        .http
        .post(format!("{}/devicelogin", e.base))
        .form(&[
            ("user_code", dc["user_code"].as_str().unwrap()),
            ("username", &format!("admin@{}", e.domain)),
            ("decision", "accept"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // The interval passes on the emulator's clock (what it checks), not the test's.
    e.emu
        .state()
        .clock()
        .advance(chrono::Duration::milliseconds(1100));
    let (status, body) = e.token(&path, &poll).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["scp"],
        "Incident.Read"
    );
    assert!(body["refresh_token"].is_string());
    let (_, body) = e.token(&path, &poll).await;
    assert_eq!(
        body["error"], "bad_verification_code",
        "a device code is redeemed once"
    );
}

#[tokio::test]
async fn signing_key_rotation_keeps_old_tokens_valid() {
    let e = env(true).await;
    let cc = [
        ("grant_type", "client_credentials"),
        ("client_id", e.id.as_str()),
        ("client_secret", e.secret.as_str()),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let path = format!("/{}/oauth2/v2.0/token", e.tenant);
    let old = e.token(&path, &cc).await.1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let kid = e.emu.state().rotate_signing_key();
    let new = e.token(&path, &cc).await.1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let header = |t: &str| -> Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header(&new)["kid"], kid);
    assert_ne!(header(&old)["kid"], kid);
    let jwks: Value = e
        .http
        .get(format!("{}/common/discovery/keys", e.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert_eq!(
        e.incidents("/v1.0/security/incidents?$top=1", &old).await,
        200
    );
    assert_eq!(
        e.incidents("/v1.0/security/incidents?$top=1", &new).await,
        200
    );
    e.emu.state().rotate_signing_key();
    assert_eq!(
        e.incidents("/v1.0/security/incidents?$top=1", &old).await,
        401,
        "two rotations later the old key is gone"
    );
}

#[tokio::test]
async fn expired_secret_is_aadsts7000222() {
    let e = env(true).await;
    e.emu.state().update_directory(|d| {
        d.apps[0].secrets[0].expires = Some("2020-01-01T00:00:00Z".parse().unwrap());
    });
    let (status, body) = e
        .token(
            &format!("/{}/oauth2/v2.0/token", e.tenant),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &e.id),
                ("client_secret", &e.secret),
                ("scope", "https://graph.microsoft.com/.default"),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (401, Some(7000222)),
        "{body}"
    );
}
