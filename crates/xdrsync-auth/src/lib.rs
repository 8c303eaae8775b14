//! Entra ID access tokens for xdrsync: acquisition, caching and error guidance.
//!
//! A [`TokenCache`] holds one access token per (authority, tenant, client, resource) and hands it
//! out until shortly before it expires. Concurrent callers for one key wait for a single token
//! request instead of each sending their own (Entra answers repeated identical requests with
//! AADSTS50196). A token the API rejects with 401 is [`TokenCache::invalidate`]d so the next call
//! fetches a fresh one.
//!
//! Entra's errors are kept with their AADSTS code and turned into plain guidance
//! ([`AuthError::guidance`]): "the client secret is wrong", "the customer has not consented",
//! not just `invalid_client`.
//!
//! Secrets and tokens are [`SecretString`]s: they never reach `Debug`, `Display` or a log.

mod credential;
mod delegated;
mod error;
mod pkcs12;
mod request;
pub mod vault;

pub use credential::*;
pub use delegated::*;
pub use error::*;
pub use request::*;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use url::Url;
use xdrsync_http::{BodyError, jittered_backoff, read_body, retry_after};
use xdrsync_model::{SafeUrl, SecretString, TokenVersion};

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<NumOrString>,
    expires_on: Option<NumOrString>,
}

/// v1 sends numbers as strings, v2 as numbers (entra-oauth.md §9.1).
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrString {
    Num(i64),
    Str(String),
}

impl NumOrString {
    fn value(&self) -> Option<i64> {
        match self {
            NumOrString::Num(n) => Some(*n),
            NumOrString::Str(s) => s.trim().parse().ok(),
        }
    }
}

/// Most attempts for one token request when Entra throttles or fails.
const MAX_ATTEMPTS: u32 = 4;
/// Refresh this long before expiry (MSAL and azure-identity use 5 minutes).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A cache of access tokens, shared by every task of the process.
#[derive(Debug)]
pub struct TokenCache {
    http: reqwest::Client,
    /// For the instance metadata endpoint: never through a proxy (`[cloud] proxy` or
    /// `HTTP_PROXY`), which would send the identity's token over someone else's wire.
    imds: reqwest::Client,
    /// One slot per key; the slot's async mutex is held while its token is fetched, so
    /// concurrent callers for the same key wait for one request (single flight).
    slots: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<Option<AccessToken>>>>>,
    requests: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    /// A cache that fetches with `http` (which must not follow redirects).
    pub fn new(http: reqwest::Client) -> Self {
        let imds = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|_| http.clone());
        TokenCache {
            http,
            imds,
            slots: Mutex::new(HashMap::new()),
            requests: Default::default(),
        }
    }

    /// How many token requests were sent.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn slot(&self, key: CacheKey) -> Arc<tokio::sync::Mutex<Option<AccessToken>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(key).or_default().clone()
    }

    /// A valid access token for `req`, from the cache or freshly fetched.
    pub async fn token(&self, req: &TokenRequest) -> Result<SecretString, AuthError> {
        let slot = self.slot(req.key());
        let mut guard = slot.lock().await;
        if let Some(t) = guard.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.token.clone());
        }
        let fetched = self.fetch(req).await;
        // Token acquisitions and failures by AADSTS code, per tenant (labelled by id: this
        // crate does not know the configured names).
        let aadsts = match &fetched {
            Err(AuthError::Entra { code, .. }) => code.to_string(),
            _ => String::new(),
        };
        metrics::counter!(
            "xdrsync_token_requests_total",
            "tenant_id" => req.tenant.as_str().to_owned(),
            "outcome" => if fetched.is_ok() { "ok" } else { "failed" },
            "aadsts" => aadsts,
        )
        .increment(1);
        let fresh = fetched?;
        let token = fresh.token.clone();
        *guard = Some(fresh);
        Ok(token)
    }

    /// Forgets the cached token for `req` (after the API answered 401 with it).
    pub async fn invalidate(&self, req: &TokenRequest) {
        let slot = self.slot(req.key());
        *slot.lock().await = None;
    }

    /// Sends the token request, retrying throttling and outages with backoff.
    pub async fn fetch(&self, req: &TokenRequest) -> Result<AccessToken, AuthError> {
        if let Credential::ManagedIdentity(endpoint) = &req.credential {
            return self.fetch_managed_identity(req, endpoint).await;
        }
        let url = req.token_url()?;
        let safe = SafeUrl::new(url.clone());
        let mut form: Vec<(&str, String)> = vec![("client_id", req.client_id.clone())];
        if let Some(r) = &req.refresh {
            let Some((rt, _)) = r.vault.get(&r.key)? else {
                return Err(AuthError::NotSignedIn {
                    tenant: r.tenant_name.clone(),
                });
            };
            form.push(("grant_type", "refresh_token".into()));
            form.push(("refresh_token", rt.expose().to_owned()));
        } else {
            form.push(("grant_type", "client_credentials".into()));
        }
        form.extend(client_auth(req, &url));
        let scope = match req.refresh {
            Some(_) => req.delegated_scope(),
            None => format!("{}/.default", req.resource.trim_end_matches('/')),
        };
        match req.version {
            TokenVersion::V1 => form.push(("resource", req.resource.clone())),
            TokenVersion::V2 => form.push(("scope", scope)),
        }
        let (status, body, sent_at) = self
            .send_retrying(&safe, "Token endpoint", || {
                self.post(&url, &form, Some(req))
            })
            .await?;
        if status == 200 {
            let token = parse_success(&body, sent_at, &safe)?;
            // Entra rotates refresh tokens: keep the new one before using the access token.
            if let (Some(r), Some(new)) = (&req.refresh, refresh_token_of(&body)) {
                r.vault
                    .put(&r.key, &new, xdrsync_model::Timestamp::now(), true)?;
            }
            return Ok(token);
        }
        Err(entra_error(req, status, &body))
    }

    /// Sends the request `build` makes until it gets an answer that is not a transport failure,
    /// a cut-off body, 429 or 5xx (then waiting `Retry-After` or a jittered backoff), at most
    /// [`MAX_ATTEMPTS`] times; returns the last answer's status and body and when it was sent.
    async fn send_retrying(
        &self,
        safe: &SafeUrl,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>, Instant), AuthError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let sent_at = Instant::now();
            let transport = |e: reqwest::Error| AuthError::Transport {
                url: safe.clone(),
                message: without_url(&e),
            };
            let resp = match build().send().await {
                Ok(r) => r,
                Err(e) if attempt < MAX_ATTEMPTS => {
                    tracing::warn!(url = %safe, attempt, error = %without_url(&e), "{what} cannot be reached; retrying.");
                    tokio::time::sleep(backoff(attempt, None)).await;
                    continue;
                }
                Err(e) => return Err(transport(e)),
            };
            let status = resp.status().as_u16();
            let after = retry_after(resp.headers());
            let body = match read_body(resp, MAX_TOKEN_BODY).await {
                Ok(b) => b,
                Err(BodyError::TooLarge(max)) => {
                    return Err(AuthError::Malformed {
                        url: safe.clone(),
                        message: format!("the answer is larger than {} KiB", max / 1024),
                    });
                }
                Err(BodyError::Transport(e)) if attempt < MAX_ATTEMPTS => {
                    tracing::warn!(url = %safe, attempt, error = %without_url(&e), "{what} answer was cut off; retrying.");
                    tokio::time::sleep(backoff(attempt, None)).await;
                    continue;
                }
                Err(BodyError::Transport(e)) => return Err(transport(e)),
            };
            if (status == 429 || status >= 500) && attempt < MAX_ATTEMPTS {
                tracing::warn!(url = %safe, status, attempt, "{what} is throttling or failing; retrying.");
                tokio::time::sleep(backoff(attempt, after)).await;
                continue;
            }
            return Ok((status, body, sent_at));
        }
    }
}

impl TokenCache {
    /// A managed identity's token from the instance metadata endpoint (`Metadata: true`).
    async fn fetch_managed_identity(
        &self,
        req: &TokenRequest,
        endpoint: &Url,
    ) -> Result<AccessToken, AuthError> {
        let mut url = endpoint.clone();
        url.query_pairs_mut()
            .append_pair("api-version", "2018-02-01")
            .append_pair("resource", &req.resource);
        if !req.client_id.is_empty() {
            url.query_pairs_mut()
                .append_pair("client_id", &req.client_id);
        }
        let safe = SafeUrl::new(url.clone());
        let (status, body, sent_at) = self
            .send_retrying(&safe, "Managed identity endpoint", || {
                self.imds.get(url.clone()).header("Metadata", "true")
            })
            .await?;
        if status == 200 {
            return parse_success(&body, sent_at, &safe);
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Err(AuthError::Entra {
            tenant: req.tenant.clone(),
            status,
            error: xdrsync_model::printable(
                v.get("error")
                    .and_then(|e| e.as_str())
                    .unwrap_or("unknown_error"),
            ),
            code: 0,
            guidance: format!(
                "the managed identity endpoint refused: {} (is this running in Azure with identity {} assigned?)",
                xdrsync_model::printable(
                    v.get("error_description")
                        .and_then(|e| e.as_str())
                        .unwrap_or("no description")
                ),
                req.client_id
            ),
            correlation: None,
        })
    }
}

impl TokenCache {
    /// A token-endpoint POST of `form`; with `client`'s HTTP Basic credentials when it sends its
    /// secret that way (both parts form-urlencoded first, as RFC 6749 §2.3.1 says).
    fn post(
        &self,
        url: &Url,
        form: &[(&str, String)],
        client: Option<&TokenRequest>,
    ) -> reqwest::RequestBuilder {
        let request = self.http.post(url.clone()).form(form);
        match client {
            Some(TokenRequest {
                credential: Credential::SecretBasic(secret),
                client_id,
                ..
            }) => {
                let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
                request.basic_auth::<String, String>(enc(client_id), Some(enc(secret.expose())))
            }
            _ => request,
        }
    }

    /// POSTs a form once: the status and body, or a transport error naming the redacted URL.
    async fn post_once(
        &self,
        url: &Url,
        form: &[(&str, String)],
        client: Option<&TokenRequest>,
    ) -> Result<(u16, Vec<u8>), AuthError> {
        let transport = |e: reqwest::Error| AuthError::Transport {
            url: SafeUrl::new(url.clone()),
            message: without_url(&e),
        };
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resp = self
            .post(url, form, client)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let body = read_body(resp, MAX_TOKEN_BODY).await.map_err(|e| match e {
            BodyError::Transport(e) => transport(e),
            BodyError::TooLarge(max) => AuthError::Malformed {
                url: SafeUrl::new(url.clone()),
                message: format!("the answer is larger than {} KiB", max / 1024),
            },
        })?;
        Ok((status, body))
    }

    /// Redeems an authorization code (with its PKCE verifier) on the v2 endpoint and returns
    /// the refresh token.
    pub async fn redeem_code(
        &self,
        req: &TokenRequest,
        code: &str,
        redirect_uri: &str,
        verifier: &SecretString,
    ) -> Result<SecretString, AuthError> {
        let url = req.v2_url("token")?;
        let safe = SafeUrl::new(url.clone());
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "authorization_code".into()),
            ("client_id", req.client_id.clone()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri.to_owned()),
            ("code_verifier", verifier.expose().to_owned()),
            ("scope", req.delegated_scope()),
        ];
        form.extend(client_auth(req, &url));
        let (status, body) = self.post_once(&url, &form, Some(req)).await?;
        if status == 200 {
            return refresh_token_of(&body).ok_or(AuthError::Malformed {
                url: safe,
                message: "no refresh_token: was offline_access granted?".into(),
            });
        }
        Err(entra_error(req, status, &body))
    }
}

/// The `refresh_token` of a token response, if any.
pub fn refresh_token_of(body: &[u8]) -> Option<SecretString> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("refresh_token")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(SecretString::new)
}

fn parse_success(body: &[u8], sent_at: Instant, url: &SafeUrl) -> Result<AccessToken, AuthError> {
    let malformed = |message: &str| AuthError::Malformed {
        url: url.clone(),
        message: message.into(),
    };
    let parsed: TokenResponse =
        serde_json::from_slice(body).map_err(|_| malformed("the body is not a token response"))?;
    let token = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("no access_token"))?;
    let lifetime = match parsed.expires_in.as_ref().and_then(NumOrString::value) {
        Some(secs) => secs,
        None => parsed
            .expires_on
            .as_ref()
            .and_then(NumOrString::value)
            .map(|on| on.saturating_sub(chrono::Utc::now().timestamp()))
            .unwrap_or(600),
    };
    let lifetime =
        Duration::from_secs(u64::try_from(lifetime).unwrap_or(0)).min(MAX_TOKEN_LIFETIME);
    // Measured from when the request was sent, so a slow response cannot stretch the lifetime.
    let margin = REFRESH_MARGIN.min(lifetime / 2);
    Ok(AccessToken {
        token: SecretString::new(token),
        refresh_at: sent_at + lifetime - margin,
        expires_at: sent_at + lifetime,
    })
}

/// A reqwest error with its causes, without its URL (which may carry credentials; callers show
/// a [`SafeUrl`] instead).
pub fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(url) = e.url() {
        msg = msg.replace(url.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// The wait before retry `attempt` of a token request: the server's `Retry-After` when it
/// sent one, else a jittered exponential backoff from 200 ms up to 30 s.
pub fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    retry_after.unwrap_or_else(|| {
        jittered_backoff(Duration::from_millis(200), Duration::from_secs(30), attempt)
    })
}

/// The largest body a token endpoint may send (a token response is a few KiB).
const MAX_TOKEN_BODY: usize = 1 << 20;

/// The longest token lifetime taken from a token endpoint: 24 hours (Entra issues 60–90
/// minutes; a larger or absurd `expires_in` must not overflow the clock or keep a token
/// forever).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use xdrsync_model::TenantId;

    #[test]
    fn huge_expires_in_does_not_overflow_the_clock() {
        let url = SafeUrl::new("https://login.microsoftonline.com/t".parse().unwrap());
        let now = Instant::now();
        for body in [
            &br#"{"access_token":"a","expires_in":9223372036854775807}"#[..],
            br#"{"access_token":"a","expires_in":"-9223372036854775808"}"#,
            br#"{"access_token":"a","expires_on":-9223372036854775808}"#,
            br#"{"access_token":"a","expires_on":9223372036854775807}"#,
        ] {
            let t = parse_success(body, now, &url).unwrap();
            assert!(t.expires_at <= now + MAX_TOKEN_LIFETIME);
        }
    }

    #[test]
    fn token_url_for_both_versions() {
        let mut req = TokenRequest {
            authority: "https://login.microsoftonline.com".parse().unwrap(),
            tenant: TenantId::canonical("contoso.onmicrosoft.com"),
            client_id: "c".into(),
            credential: Credential::Secret(SecretString::new("s3cr3t")),
            resource: "https://graph.microsoft.com".into(),
            version: TokenVersion::V2,
            refresh: None,
        };
        assert_eq!(
            req.token_url().unwrap().as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        req.version = TokenVersion::V1;
        req.authority = "http://127.0.0.1:9/prefix".parse().unwrap();
        assert_eq!(
            req.token_url().unwrap().as_str(),
            "http://127.0.0.1:9/prefix/contoso.onmicrosoft.com/oauth2/token"
        );
        assert!(!format!("{req:?}").contains("s3cr3t"));
    }

    #[test]
    fn v1_string_and_v2_number_lifetimes_both_parse() {
        let url = SafeUrl::new("https://x/".parse().unwrap());
        let now = Instant::now();
        let v1 = parse_success(br#"{"access_token":"a","expires_in":"3599"}"#, now, &url).unwrap();
        let v2 = parse_success(br#"{"access_token":"a","expires_in":3599}"#, now, &url).unwrap();
        assert_eq!(v1.expires_at, v2.expires_at);
        assert_eq!(v1.expires_at - v1.refresh_at, REFRESH_MARGIN);
        assert!(!format!("{v1:?}").contains("\"a\""));
        assert!(parse_success(b"{}", now, &url).is_err());
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;
    use xdrsync_model::TenantId;

    /// Every credential type prints without its secret, in Debug (what a panic or an `{:?}` in
    /// a log shows) and inside the request that carries it.
    #[test]
    fn credentials_never_print_their_secrets() {
        let key_pem = include_str!("../tests/data/key.pem");
        let cert_pem = include_str!("../tests/data/cert.pem");
        let cert =
            CertificateCredential::from_pem(cert_pem, key_pem, xdrsync_jwt::Algorithm::PS256)
                .unwrap();
        let creds = [
            Credential::Secret(SecretString::new("Zz8~very.secret-value")),
            Credential::SecretBasic(SecretString::new("Zz8~very.secret-value")),
            Credential::Certificate(Box::new(cert)),
        ];
        for c in creds {
            let req = TokenRequest {
                authority: "https://login.microsoftonline.com".parse().unwrap(),
                tenant: TenantId::canonical("t"),
                client_id: "c".into(),
                credential: c,
                resource: "r".into(),
                version: TokenVersion::V2,
                refresh: None,
            };
            let shown = format!("{req:?} {:#?}", req.credential);
            assert!(!shown.contains("very.secret"), "{shown}");
            assert!(
                !shown.contains("PRIVATE KEY") && !shown.contains("MII"),
                "{shown}"
            );
        }
        let v =
            vault::VaultKey::from_base64("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
        assert_eq!(format!("{v:?}"), "VaultKey(**REDACTED**)");
    }
}
