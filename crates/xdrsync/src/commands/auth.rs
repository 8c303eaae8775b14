//! `xdrsync auth token` and `xdrsync auth consent-url`.
//!
//! `auth token` is the partner guide's "validate the token" step done offline: the token's
//! signature is checked against the authority's published keys, its claims are shown, and the
//! permissions the tenant's API needs are checked, naming what is missing and where to grant it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::Value;
use xdrsync_jwt::{Algorithm, Decoded, JwkSet};
use xdrsync_model::ApiKind;

use crate::cli::{AuthCommand, ConsentUrlArgs, LoginArgs, TokenArgs};

pub(crate) async fn run(cmd: AuthCommand, config_path: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        AuthCommand::Token(args) => token(args, config_path).await,
        AuthCommand::ConsentUrl(args) => consent_url(args, config_path),
        AuthCommand::Login(args) => login(args, config_path).await,
        AuthCommand::Status => status(config_path),
    }
}

/// The application permissions that let a sync read incidents, per API (any one suffices),
/// and the API's name in the portal.
fn needed(api: ApiKind) -> (&'static [&'static str], &'static str) {
    match api {
        ApiKind::Graph => (
            &[
                "SecurityIncident.Read.All",
                "SecurityIncident.ReadWrite.All",
            ],
            "Microsoft Graph",
        ),
        ApiKind::Xdr => (
            &["Incident.Read.All", "Incident.ReadWrite.All"],
            "Microsoft Threat Protection (APIs my organization uses)",
        ),
    }
}

async fn token(args: TokenArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config_path)?;
    let tenant = config.require_tenant(&args.tenant)?;
    let vault = if tenant.delegated {
        Some(xdrsync_pipeline::open_vault(&config)?)
    } else {
        None
    };
    let target = xdrsync_pipeline::target(tenant, &config, vault.as_ref())?;
    let http = xdrsync_pipeline::http_client(&config)?;
    let cache = xdrsync_auth::TokenCache::new(http.clone());
    let token = cache
        .token(&target.token)
        .await
        .with_context(|| format!("getting a token for tenant {}", tenant.name))?;
    if args.raw {
        println!("{}", token.expose());
        return Ok(ExitCode::SUCCESS);
    }
    let decoded = Decoded::parse(token.expose()).context("the access token is not a JWT")?;
    println!(
        "Tenant {} ({}), API {}",
        tenant.name, tenant.tenant_id, tenant.api
    );
    // Signature: Graph tokens carry a `nonce` header and cannot be verified by anyone but Graph.
    let signature = if decoded.header.contains_key("nonce") {
        "not verifiable (the token has a `nonce` header, which Microsoft Graph adds; only Graph can check it)".to_owned()
    } else {
        let mut keys_url = target.token.authority.clone();
        keys_url.set_path(&format!(
            "{}/{}/discovery/v2.0/keys",
            keys_url.path().trim_end_matches('/'),
            tenant.tenant_id
        ));
        let jwks: JwkSet = http
            .get(keys_url.clone())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .context("fetching the authority's signing keys")?
            .json()
            .await
            .context("reading the signing keys")?;
        match jwks
            .keys
            .iter()
            .find(|k| Some(k.kid.as_str()) == decoded.kid())
        {
            None => format!(
                "FAILED: key {} is not among the authority's published keys",
                decoded.kid().unwrap_or("(none)")
            ),
            Some(k) => match decoded.verify(&k.public_key()?, &[Algorithm::RS256]) {
                Ok(_) => format!("valid (RS256, key {})", k.kid),
                Err(e) => format!("FAILED: {e}"),
            },
        }
    };
    println!("  signature  {signature}");
    let c = &decoded.claims;
    let text = |k: &str| {
        c.get(k)
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .unwrap_or_else(|| "-".into())
    };
    for k in ["aud", "iss", "tid", "appid", "azp", "idtyp", "ver"] {
        if c.contains_key(k) {
            println!("  {k:<10} {}", text(k));
        }
    }
    let now = chrono::Utc::now().timestamp();
    if let Some(exp) = c.get("exp").and_then(Value::as_i64) {
        let at = chrono::DateTime::from_timestamp(exp, 0)
            .map(|d| d.to_rfc3339())
            .unwrap_or_default();
        println!("  exp        {at} (in {} min)", (exp - now) / 60);
    }
    let roles: Vec<&str> = c
        .get("roles")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let scp: Vec<&str> = c
        .get("scp")
        .and_then(Value::as_str)
        .map(|s| s.split(' ').collect())
        .unwrap_or_default();
    println!(
        "  roles      {}",
        if roles.is_empty() {
            "(none)".to_owned()
        } else {
            roles.join(" ")
        }
    );
    if !scp.is_empty() {
        println!("  scp        {}", scp.join(" "));
    }
    let mut problems = Vec::new();
    if !text("tid").eq_ignore_ascii_case(tenant.tenant_id.as_str())
        && xdrsync_config::is_guid(tenant.tenant_id.as_str())
    {
        problems.push(format!(
            "the token is for tenant {}, not {}",
            text("tid"),
            tenant.tenant_id
        ));
    }
    if !text("aud")
        .trim_end_matches('/')
        .eq_ignore_ascii_case(target.token.resource.trim_end_matches('/'))
    {
        problems.push(format!(
            "the token's audience is {}, not {}",
            text("aud"),
            target.token.resource
        ));
    }
    let (permissions, api_name) = needed(tenant.api);
    if !permissions.iter().any(|p| {
        roles.contains(p)
            || scp
                .iter()
                .any(|s| s.eq_ignore_ascii_case(p) || p.starts_with(&format!("{s}.")))
    }) {
        problems.push(format!(
            "missing application permission {}: in the Entra admin center open App registrations → {} → API permissions → Add a permission → {api_name} → Application permissions → {}, then “Grant admin consent” for tenant {}",
            permissions[0], tenant.client_id, permissions[0], tenant.tenant_id
        ));
    }
    if signature.starts_with("FAILED") {
        problems.push("the signature does not verify".into());
    }
    if problems.is_empty() {
        println!(
            "OK: the token can read incidents through the {} API.",
            tenant.api
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            println!("PROBLEM: {p}");
        }
        Ok(ExitCode::from(crate::EXIT_FAILURE))
    }
}

fn consent_url(args: ConsentUrlArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    // The authority comes from the config's cloud when there is one, else the public cloud.
    let authority = if config_path.exists() {
        let config = super::load_config(config_path)?;
        config
            .tenants
            .first()
            .map(|t| t.endpoints.authority.to_string())
    } else {
        None
    }
    .unwrap_or_else(|| "https://login.microsoftonline.com".into());
    let authority = authority.trim_end_matches('/');
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let (id, redirect) = (enc(&args.client_id), enc(&args.redirect_uri));
    let tenant = args.tenant.as_deref().unwrap_or("common");
    let v2_tenant = args.tenant.as_deref().unwrap_or("organizations");
    println!(
        "Send one of these links to the customer's administrator; after consent, tokens for that tenant work.\n"
    );
    println!(
        "Admin consent (v1):\n  {authority}/{tenant}/adminconsent?client_id={id}&redirect_uri={redirect}\n"
    );
    println!(
        "Admin consent (v2, application permissions of Graph):\n  {authority}/{v2_tenant}/v2.0/adminconsent?client_id={id}&scope={}&redirect_uri={redirect}\n",
        enc("https://graph.microsoft.com/.default")
    );
    println!(
        "Partner consent link (as in Microsoft's partner-access guide):\n  {authority}/common/oauth2/authorize?prompt=consent&client_id={id}&response_type=code&sso_reload=true"
    );
    Ok(ExitCode::SUCCESS)
}

/// Why a sign-in did not complete.
#[derive(Debug, thiserror::Error)]
enum LoginError {
    #[error("sign-in failed: {error}: {description}")]
    Refused { error: String, description: String },
    #[error(
        "the redirect's state does not match the one sent; refusing it (possible cross-site request forgery)"
    )]
    State,
    #[error("no redirect arrived within {0} s")]
    Timeout(u64),
}

async fn login(args: LoginArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let config = super::load_config(config_path)?;
    let tenant = config.require_tenant(&args.tenant)?;
    if !tenant.delegated {
        eprintln!(
            "note: tenant {} is not `delegated = true` in the config; pulls will keep using app-only tokens",
            tenant.name
        );
    }
    let vault = xdrsync_pipeline::open_vault(&config)?;
    let target = xdrsync_pipeline::target(tenant, &config, Some(&vault))?;
    let key = xdrsync_auth::vault_key(
        &tenant.endpoints.authority,
        &tenant.tenant_id,
        &tenant.client_id,
    );
    if args.device_code {
        let http = xdrsync_pipeline::http_client(&config)?;
        let rt = xdrsync_auth::TokenCache::new(http)
            .device_code(&target.token, |message| println!("{message}"))
            .await?;
        vault.put(&key, &rt, xdrsync_model::Timestamp::now(), false)?;
        println!(
            "Signed in to {}; the refresh token is stored encrypted in {}.",
            tenant.name,
            vault.path().display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .context("binding the loopback redirect listener")?;
    let redirect = format!("http://localhost:{}", listener.local_addr()?.port());
    let (verifier, challenge) = xdrsync_auth::pkce();
    let state = xdrsync_auth::random_state();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", &tenant.client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", &redirect)
        .append_pair("response_mode", "query")
        .append_pair("scope", &target.token.delegated_scope())
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let mut url = target.token.v2_url("authorize")?;
    url.set_query(Some(&query));
    println!(
        "Open this URL and sign in as an administrator of {}:\n{url}",
        tenant.name
    );
    if !args.no_browser {
        // Best effort; the URL is printed either way.
        let _ = std::process::Command::new("xdg-open")
            .arg(url.as_str())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    let wait = async {
        loop {
            let (mut sock, _) = listener.accept().await?;
            let mut buf = vec![0u8; 16 * 1024];
            let n = sock.read(&mut buf).await?;
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let params: std::collections::HashMap<String, String> =
                url::Url::parse(&format!("http://localhost{target}"))
                    .map(|u| u.query_pairs().into_owned().collect())
                    .unwrap_or_default();
            if !params.contains_key("code") && !params.contains_key("error") {
                sock.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await?;
                continue;
            }
            let ok = params.contains_key("code") && params.get("state") == Some(&state);
            let page = if ok {
                "Signed in. You can close this window and return to xdrsync."
            } else {
                "Sign-in did not complete. See the xdrsync terminal."
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            sock.write_all(resp.as_bytes()).await?;
            return Ok::<_, std::io::Error>(params);
        }
    };
    let params = tokio::time::timeout(std::time::Duration::from_secs(args.timeout_secs), wait)
        .await
        .map_err(|_| LoginError::Timeout(args.timeout_secs))??;
    if let Some(error) = params.get("error") {
        return Err(LoginError::Refused {
            error: error.clone(),
            description: params.get("error_description").cloned().unwrap_or_default(),
        }
        .into());
    }
    if params.get("state") != Some(&state) {
        return Err(LoginError::State.into());
    }
    let code = params.get("code").cloned().unwrap_or_default();
    let http = xdrsync_pipeline::http_client(&config)?;
    let rt = xdrsync_auth::TokenCache::new(http)
        .redeem_code(&target.token, &code, &redirect, &verifier)
        .await?;
    vault.put(&key, &rt, xdrsync_model::Timestamp::now(), false)?;
    println!(
        "Signed in to {}; the refresh token is stored encrypted in {}.",
        tenant.name,
        vault.path().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Warn this long before a secret or certificate expires.
const WARN_DAYS: i64 = 30;
/// Entra expires refresh tokens after 90 idle days; warn two weeks before.
const RT_IDLE_DAYS: i64 = 90;
const RT_WARN_DAYS: i64 = 76;

fn status(config_path: &Path) -> anyhow::Result<ExitCode> {
    use xdrsync_config::CredentialSource;
    let config = super::load_config(config_path)?;
    let now = xdrsync_model::Timestamp::now();
    let days_until =
        |t: xdrsync_model::Timestamp| (t.ticks() - now.ticks()) / (86_400 * 10_000_000);
    let store = config
        .store_path
        .exists()
        .then(|| xdrsync_store::SqliteStore::open(&config.store_path))
        .transpose()?;
    let vault = if config.tenants.iter().any(|t| t.delegated) {
        Some(xdrsync_pipeline::open_vault(&config)?)
    } else {
        None
    };
    let mut rows = Vec::new();
    let mut serious = false;
    for t in &config.tenants {
        let mut warnings: Vec<String> = Vec::new();
        let (kind, expires) = match &t.credential {
            CredentialSource::Secret(s) => {
                let from = if s.env.is_some() {
                    "env"
                } else if s.file.is_some() {
                    "file"
                } else if s.command.is_some() {
                    "command"
                } else {
                    "inline"
                };
                (format!("secret ({from})"), s.expires)
            }
            CredentialSource::Certificate(c) => {
                // Loading it the way a pull does also proves the key and password work.
                let not_after = match xdrsync_pipeline::credential(t) {
                    Ok(xdrsync_auth::Credential::Certificate(cert)) => cert.not_after(),
                    Ok(_) => None,
                    Err(e) => {
                        warnings.push(format!("cannot load the certificate: {e}"));
                        serious = true;
                        None
                    }
                };
                (
                    format!("certificate ({:?})", c.algorithm).to_lowercase(),
                    not_after,
                )
            }
            CredentialSource::ManagedIdentity(_) => ("managed identity".into(), None),
        };
        let expires_text = match expires {
            None => "-".to_owned(),
            Some(e) => {
                let d = days_until(e);
                if d < 0 {
                    warnings.push(format!("the credential EXPIRED {} days ago: create a new one in the app registration", -d));
                    serious = true;
                } else if d <= WARN_DAYS {
                    warnings.push(format!("the credential expires in {d} days: rotate it now"));
                }
                e.as_datetime().format("%Y-%m-%d").to_string()
            }
        };
        let sign_in = match (&vault, t.delegated) {
            (Some(v), true) => {
                let key =
                    xdrsync_auth::vault_key(&t.endpoints.authority, &t.tenant_id, &t.client_id);
                match v.get(&key)? {
                    None => {
                        warnings.push(format!(
                            "no stored sign-in: run `xdrsync auth login --tenant {}`",
                            t.name
                        ));
                        serious = true;
                        "none".to_owned()
                    }
                    Some((_, stored)) => {
                        let idle = -days_until(stored.last_used);
                        if idle >= RT_IDLE_DAYS {
                            warnings.push(format!("the sign-in expired after {idle} idle days: run `xdrsync auth login --tenant {}`", t.name));
                            serious = true;
                        } else if idle >= RT_WARN_DAYS {
                            warnings.push(format!("the sign-in expires after {} more idle days: pull, or run `auth login` again", RT_IDLE_DAYS - idle));
                        }
                        format!("used {idle} d ago")
                    }
                }
            }
            _ => "app-only".to_owned(),
        };
        let last = store
            .as_ref()
            .and_then(|s| {
                s.last_success(&t.tenant_id, xdrsync_model::StreamKind::Incidents)
                    .ok()
                    .flatten()
            })
            .map(|t| t.as_datetime().format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "never".into());
        rows.push(vec![
            t.name.clone(),
            kind,
            expires_text,
            sign_in,
            last,
            if warnings.is_empty() {
                "ok".into()
            } else {
                warnings.join("; ")
            },
        ]);
    }
    print!(
        "{}",
        crate::table::render(
            &[
                "TENANT",
                "CREDENTIAL",
                "EXPIRES",
                "SIGN-IN",
                "LAST PULL",
                "STATUS"
            ],
            &rows
        )
    );
    Ok(if serious {
        ExitCode::from(crate::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
