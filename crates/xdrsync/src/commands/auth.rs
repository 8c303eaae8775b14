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
use xdrsync_model::{ApiKind, StreamKind};

use crate::cli::{AuthCommand, AuthStatusArgs, ConsentUrlArgs, LoginArgs, TokenArgs};

pub(crate) async fn run(cmd: AuthCommand, config_path: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        AuthCommand::Token(args) => token(args, config_path).await,
        AuthCommand::ConsentUrl(args) => consent_url(args, config_path),
        AuthCommand::Login(args) => login(args, config_path).await,
        AuthCommand::Status(args) => status(args, config_path),
    }
}

/// The application permissions that let a stream be read, per API (any one suffices), and
/// the API's name in the Entra admin center.
fn needed(api: ApiKind, stream: StreamKind) -> (&'static [&'static str], &'static str) {
    match (stream, api) {
        (StreamKind::Incidents, ApiKind::Graph) => (
            &[
                "SecurityIncident.Read.All",
                "SecurityIncident.ReadWrite.All",
            ],
            "Microsoft Graph",
        ),
        (StreamKind::Incidents, ApiKind::Xdr) => (
            &["Incident.Read.All", "Incident.ReadWrite.All"],
            "Microsoft Threat Protection (APIs my organization uses)",
        ),
        (StreamKind::Alerts, ApiKind::Graph) => (
            &["SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"],
            "Microsoft Graph",
        ),
        (StreamKind::Alerts, ApiKind::Xdr) | (StreamKind::Detections, _) => (
            &["Alert.Read.All", "Alert.ReadWrite.All"],
            "WindowsDefenderATP (APIs my organization uses)",
        ),
        (StreamKind::Hunts, ApiKind::Graph) => (&["ThreatHunting.Read.All"], "Microsoft Graph"),
        (StreamKind::Hunts, ApiKind::Xdr) => (
            &["AdvancedHunting.Read.All"],
            "Microsoft Threat Protection (APIs my organization uses)",
        ),
    }
}

async fn token(args: TokenArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config_path)?;
    let tenants = super::select_tenants(&config, &args.tenants)?;
    let vault = if tenants.iter().any(|t| t.delegated) {
        Some(xdrsync_pipeline::open_vault(&config)?)
    } else {
        None
    };
    let http = xdrsync_pipeline::http_client(&config)?;
    let cache = xdrsync_auth::TokenCache::new(http.clone());
    let mut ok = true;
    for (i, tenant) in tenants.iter().enumerate() {
        if args.raw {
            let target = xdrsync_pipeline::target(tenant, &config, vault.as_ref())?;
            let token = cache
                .token(&target.token)
                .await
                .with_context(|| format!("getting a token for tenant {}", tenant.name))?;
            crate::text::outln!("{}", token.expose());
            continue;
        }
        if i > 0 {
            crate::text::outln!();
        }
        ok &= token_report(tenant, &config, vault.as_ref(), &http, &cache).await?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_FAILURE)
    })
}

/// Gets a token for every configured stream of `tenant` (each stream's API has its own
/// audience), verifies it, prints its claims once and checks each stream's permission.
/// Returns whether everything is in order.
async fn token_report(
    tenant: &xdrsync_config::Tenant,
    config: &xdrsync_config::Config,
    vault: Option<&std::sync::Arc<xdrsync_auth::vault::Vault>>,
    http: &reqwest::Client,
    cache: &xdrsync_auth::TokenCache,
) -> anyhow::Result<bool> {
    crate::text::outln!(
        "Tenant {} ({}), API {}",
        tenant.name,
        tenant.tenant_id,
        tenant.api
    );
    let mut problems = Vec::new();
    let mut verified: Vec<(String, String)> = Vec::new();
    let mut streams_ok = Vec::new();
    let mut granted: Vec<String> = Vec::new();
    // A scheduled hunt that runs in the tenant needs the hunting permission like a stream.
    let hunted = config
        .hunts
        .iter()
        .any(|h| h.enabled && config.hunt_tenants(h).any(|t| t.name == tenant.name));
    let streams = tenant
        .streams
        .iter()
        .copied()
        .chain(hunted.then_some(StreamKind::Hunts));
    for stream in streams {
        let target = xdrsync_pipeline::stream_target(tenant, config, vault, stream)?;
        let token = match cache.token(&target.token).await {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{stream}: cannot get a token: {e}"));
                continue;
            }
        };
        let decoded = Decoded::parse(token.expose())
            .with_context(|| format!("the {stream} access token is not a JWT"))?;
        let resource = target.token.resource.trim_end_matches('/').to_owned();
        let first_of_audience = !verified.iter().any(|(r, _)| *r == resource);
        // Signature: Graph tokens carry a `nonce` header and cannot be verified by anyone but Graph.
        let signature = if let Some((_, s)) = verified.iter().find(|(r, _)| *r == resource) {
            s.clone()
        } else if decoded.header.contains_key("nonce") {
            "not verifiable (the token has a `nonce` header, which Microsoft Graph adds; only Graph can check it)".to_owned()
        } else {
            verify_signature(&decoded, &target, tenant, http).await?
        };
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
        if first_of_audience {
            crate::text::outln!("  {stream} token (audience {resource}):");
            crate::text::outln!("    signature  {signature}");
            for k in ["aud", "iss", "tid", "appid", "azp", "idtyp", "ver"] {
                if c.contains_key(k) {
                    crate::text::outln!("    {k:<10} {}", text(k));
                }
            }
            let now = chrono::Utc::now().timestamp();
            if let Some(exp) = c.get("exp").and_then(Value::as_i64) {
                let at = chrono::DateTime::from_timestamp(exp, 0)
                    .map(|d| d.to_rfc3339())
                    .unwrap_or_default();
                crate::text::outln!("    exp        {at} (in {} min)", (exp - now) / 60);
            }
            crate::text::outln!(
                "    roles      {}",
                if roles.is_empty() {
                    "(none)".to_owned()
                } else {
                    roles.join(" ")
                }
            );
            if !scp.is_empty() {
                crate::text::outln!("    scp        {}", scp.join(" "));
            }
            if signature.starts_with("FAILED") {
                problems.push(format!("{stream}: the token's signature does not verify"));
            }
            if !text("tid").eq_ignore_ascii_case(tenant.tenant_id.as_str())
                && xdrsync_config::is_guid(tenant.tenant_id.as_str())
            {
                problems.push(format!(
                    "{stream}: the token is for tenant {}, not {}",
                    text("tid"),
                    tenant.tenant_id
                ));
            }
            if !text("aud")
                .trim_end_matches('/')
                .eq_ignore_ascii_case(&resource)
            {
                problems.push(format!(
                    "{stream}: the token's audience is {}, not {resource}",
                    text("aud"),
                ));
            }
            verified.push((resource.clone(), signature));
        }
        granted.extend(roles.iter().map(|r| (*r).to_owned()));
        granted.extend(scp.iter().map(|s| (*s).to_owned()));
        let (permissions, api_name) = needed(tenant.api, stream);
        if permissions.iter().any(|p| {
            roles.contains(p)
                || scp
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(p) || p.starts_with(&format!("{s}.")))
        }) {
            streams_ok.push(stream.as_str());
        } else {
            problems.push(format!(
                "{stream}: missing application permission {perm}: in the Entra admin center open App registrations → {} → API permissions → Add a permission → {api_name} → Application permissions → {perm}, then “Grant admin consent” for tenant {}",
                tenant.client_id,
                tenant.tenant_id,
                perm = permissions.first().copied().unwrap_or_default(),
            ));
        }
    }
    // Write-back (`incidents update`, `alerts update`): which writes the roles allow. Not a
    // problem when missing — reading is what the tenant is configured for.
    let writes: &[(&str, &str)] = match tenant.api {
        xdrsync_model::ApiKind::Graph => &[
            ("incidents", "SecurityIncident.ReadWrite.All"),
            ("alerts", "SecurityAlert.ReadWrite.All"),
        ],
        xdrsync_model::ApiKind::Xdr => &[("incidents", "Incident.ReadWrite.All")],
    };
    let can: Vec<String> = writes
        .iter()
        .map(|(what, role)| {
            if granted.iter().any(|g| g.eq_ignore_ascii_case(role)) {
                format!("{what} yes ({role})")
            } else {
                format!("{what} no (needs {role})")
            }
        })
        .collect();
    crate::text::outln!("  write-back: {}", can.join(", "));
    // Hunting shares the incidents' token: said only when that token was read.
    if hunted || tenant.streams.contains(&StreamKind::Incidents) {
        let (hunting, _) = needed(tenant.api, StreamKind::Hunts);
        let role = hunting.first().copied().unwrap_or_default();
        crate::text::outln!(
            "  hunting: {}",
            if granted.iter().any(|g| g.eq_ignore_ascii_case(role)) {
                format!("yes ({role})")
            } else {
                format!("no (needs {role})")
            }
        );
    }
    if problems.is_empty() {
        crate::text::outln!(
            "OK: the tokens can read {} through the {} API.",
            streams_ok.join(", "),
            tenant.api
        );
        Ok(true)
    } else {
        for p in &problems {
            crate::text::outln!("PROBLEM: {p}");
        }
        Ok(false)
    }
}

/// Checks a token's signature against the authority's published keys.
async fn verify_signature(
    decoded: &Decoded,
    target: &xdrsync_api_client::Target,
    tenant: &xdrsync_config::Tenant,
    http: &reqwest::Client,
) -> anyhow::Result<String> {
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
    Ok(
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
        },
    )
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
    crate::text::outln!(
        "Send one of these links to the customer's administrator; after consent, tokens for that tenant work.\n"
    );
    crate::text::outln!(
        "Admin consent (v1):\n  {authority}/{tenant}/adminconsent?client_id={id}&redirect_uri={redirect}\n"
    );
    crate::text::outln!(
        "Admin consent (v2, application permissions of Graph):\n  {authority}/{v2_tenant}/v2.0/adminconsent?client_id={id}&scope={}&redirect_uri={redirect}\n",
        enc("https://graph.microsoft.com/.default")
    );
    crate::text::outln!(
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
            .device_code(&target.token, |message| {
                let _ = crate::text::write_stdout(format_args!("{message}\n"));
            })
            .await?;
        vault.put(&key, &rt, xdrsync_model::Timestamp::now(), false)?;
        crate::text::outln!(
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
    crate::text::outln!(
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
            let head = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
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
    crate::text::outln!(
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

fn status(args: AuthStatusArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    use xdrsync_config::CredentialSource;
    let config = super::load_config(config_path)?;
    let selected = super::select_tenants(&config, &args.tenants)?;
    let now = xdrsync_model::Timestamp::now();
    let days_until =
        |t: xdrsync_model::Timestamp| (t.ticks() - now.ticks()) / (86_400 * 10_000_000);
    // Without a store yet (nothing pulled), no history: a SQLite file is not created for it.
    let store = (config.store_url.is_some() || config.store_path.exists())
        .then(|| super::open_store(&config))
        .transpose()?;
    let vault = if selected.iter().any(|t| t.delegated) {
        Some(xdrsync_pipeline::open_vault(&config)?)
    } else {
        None
    };
    let health = match &store {
        Some(s) => s.health()?,
        None => Vec::new(),
    };
    let mut rows = Vec::new();
    let mut docs = Vec::new();
    let mut serious = false;
    for t in selected {
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
        let mine: Vec<_> = health
            .iter()
            .filter(|h| h.tenant_id == t.tenant_id)
            .collect();
        let last = mine.iter().filter_map(|h| h.last_success).max();
        // The last token failure: a failing stream whose error is Entra's (AADSTS code).
        let token_failure = mine
            .iter()
            .filter_map(|h| {
                let e = h.degraded.as_deref()?;
                crate::text::aadsts_code(e).map(|code| (h.last_attempt, code.to_owned(), e))
            })
            .max_by_key(|(at, _, _)| *at);
        if let Some((at, code, _)) = &token_failure {
            warnings.push(format!(
                "token refused at {}: {}",
                crate::text::time(*at),
                crate::text::short_error(&format!("AADSTS{code}"))
            ));
            serious = true;
        }
        rows.push(vec![
            t.name.clone(),
            kind.clone(),
            expires_text,
            sign_in.clone(),
            last.map(crate::text::time)
                .unwrap_or_else(|| "never".into()),
            if warnings.is_empty() {
                "ok".into()
            } else {
                warnings.join("; ")
            },
        ]);
        docs.push(serde_json::json!({
            "tenant": t.name,
            "tenant_id": t.tenant_id.as_str(),
            "credential": kind,
            "expires": expires,
            "sign_in": sign_in,
            "last_pull": last,
            "last_token_failure": token_failure.map(|(at, code, full)| serde_json::json!({
                "at": at, "aadsts": code, "error": full,
            })),
            "warnings": warnings,
        }));
    }
    match args.output {
        crate::cli::OutputFormat::Json => {
            crate::text::outln!(
                "{:#}",
                serde_json::json!({ "tenants": docs, "ok": !serious })
            );
        }
        crate::cli::OutputFormat::Table => crate::text::out!(
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
        ),
    }
    Ok(if serious {
        ExitCode::from(crate::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
