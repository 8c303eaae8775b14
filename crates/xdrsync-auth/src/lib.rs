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

mod pkcs12;
pub mod vault;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use url::Url;
use xdrsync_http::{BodyError, jittered_backoff, read_body, retry_after};
use xdrsync_model::{SafeUrl, SecretString, TenantId, TokenVersion};

/// How a client proves who it is.
#[derive(Clone)]
pub enum Credential {
    /// A client secret, sent in the form body (`client_secret_post`).
    Secret(SecretString),
    /// A client secret, sent as HTTP Basic (`client_secret_basic`; RFC 6749 §2.3.1).
    SecretBasic(SecretString),
    /// A certificate: a signed `client_assertion` (private_key_jwt).
    Certificate(Box<CertificateCredential>),
    /// A managed identity: tokens from this instance-metadata endpoint.
    ManagedIdentity(Url),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Secret(s) => f.debug_tuple("Secret").field(s).finish(),
            Credential::SecretBasic(s) => f.debug_tuple("SecretBasic").field(s).finish(),
            Credential::Certificate(c) => f.debug_tuple("Certificate").field(c).finish(),
            Credential::ManagedIdentity(u) => f
                .debug_tuple("ManagedIdentity")
                .field(&SafeUrl::new(u.clone()))
                .finish(),
        }
    }
}

/// A certificate credential: the private key (never printed) and the certificate's thumbprints.
#[derive(Clone)]
pub struct CertificateCredential {
    key: xdrsync_jwt::SigningKey,
    x5t: String,
    x5t_s256: String,
    algorithm: xdrsync_jwt::Algorithm,
    not_after: Option<xdrsync_model::Timestamp>,
}

impl std::fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("x5t", &self.x5t)
            .field("algorithm", &self.algorithm)
            .field("key", &"**REDACTED**")
            .finish()
    }
}

impl CertificateCredential {
    /// From a PEM certificate and its RSA private key (PKCS#8 or PKCS#1 PEM). PS256 sends the
    /// SHA-256 thumbprint (`x5t#S256`, Entra's current documentation), RS256 the SHA-1 one
    /// (`x5t`, the previous documentation; what azure-identity sends).
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        algorithm: xdrsync_jwt::Algorithm,
    ) -> Result<Self, String> {
        let der =
            xdrsync_jwt::pem_block(cert_pem, "CERTIFICATE").ok_or("no PEM CERTIFICATE block")?;
        let key = xdrsync_jwt::SigningKey::from_pem(key_pem).map_err(|e| e.to_string())?;
        Ok(CertificateCredential {
            key,
            x5t: xdrsync_jwt::x5t_sha1(&der),
            x5t_s256: xdrsync_jwt::x5t_sha256(&der),
            algorithm,
            not_after: certificate_not_after(&der),
        })
    }

    /// From a PKCS#12 file (`.pfx`/`.p12`) and its password (empty when it has none): the RSA
    /// key and the certificate that carries the key's public key, wherever they stand in it.
    pub fn from_pkcs12(
        der: &[u8],
        password: &str,
        algorithm: xdrsync_jwt::Algorithm,
    ) -> Result<Self, String> {
        let contents = pkcs12::parse(der, password)?;
        let [key] = contents.keys.as_slice() else {
            return Err(format!(
                "the PKCS#12 file holds {} private keys; give it exactly one",
                contents.keys.len()
            ));
        };
        let key = xdrsync_jwt::SigningKey::from_pkcs8_der(key).map_err(|e| e.to_string())?;
        let public = key.public_key_der().map_err(|e| e.to_string())?;
        let cert = contents
            .certs
            .iter()
            .find(|c| certificate_has_key(c, &public))
            .ok_or("the PKCS#12 file holds no certificate for its private key")?;
        Ok(CertificateCredential {
            key,
            x5t: xdrsync_jwt::x5t_sha1(cert),
            x5t_s256: xdrsync_jwt::x5t_sha256(cert),
            algorithm,
            not_after: certificate_not_after(cert),
        })
    }

    /// When the certificate expires (its `notAfter`), if it could be read.
    pub fn not_after(&self) -> Option<xdrsync_model::Timestamp> {
        self.not_after
    }

    /// A fresh client assertion for `token_url`, valid for ten minutes.
    pub fn assertion(&self, client_id: &str, token_url: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut header = serde_json::Map::new();
        match self.algorithm {
            xdrsync_jwt::Algorithm::RS256 => header.insert("x5t".into(), self.x5t.clone().into()),
            xdrsync_jwt::Algorithm::PS256 => {
                header.insert("x5t#S256".into(), self.x5t_s256.clone().into())
            }
        };
        let claims = serde_json::json!({
            "aud": token_url, "iss": client_id, "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(), "nbf": now, "iat": now, "exp": now + 600,
        });
        self.key.sign(self.algorithm, header, &claims)
    }
}

/// What to ask Entra for.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// Login authority, e.g. `https://login.microsoftonline.com`.
    pub authority: Url,
    /// The tenant to get a token in.
    pub tenant: TenantId,
    /// Application (client) id.
    pub client_id: String,
    /// How the client authenticates.
    pub credential: Credential,
    /// Resource (App ID URI), e.g. `https://graph.microsoft.com`.
    pub resource: String,
    /// v1 (`resource=`) or v2 (`scope=…/.default`) endpoint.
    pub version: TokenVersion,
    /// Delegated access: redeem the refresh token that `xdrsync auth login` stored in this
    /// vault under this key (and store the rotated one), instead of client credentials.
    pub refresh: Option<RefreshSource>,
}

/// Where a delegated tenant's refresh token lives.
#[derive(Clone, Debug)]
pub struct RefreshSource {
    /// The encrypted vault.
    pub vault: std::sync::Arc<vault::Vault>,
    /// The entry's key (see [`vault_key`]).
    pub key: String,
    /// The tenant's name in the config, for "run `auth login --tenant …`" guidance.
    pub tenant_name: String,
}

/// The vault key of a delegated grant: authority, tenant and client.
pub fn vault_key(authority: &Url, tenant: &TenantId, client_id: &str) -> String {
    format!(
        "{}|{tenant}|{client_id}",
        authority.as_str().trim_end_matches('/')
    )
}

impl TokenRequest {
    /// The token endpoint URL.
    pub fn token_url(&self) -> Result<Url, AuthError> {
        match self.version {
            TokenVersion::V1 => self.oauth_url("oauth2/token"),
            TokenVersion::V2 => self.v2_url("token"),
        }
    }

    /// A v2.0 endpoint of the tenant (`token`, `authorize`, `devicecode`): the delegated flows
    /// use v2.0 whatever [`TokenVersion`] the app-only requests use.
    pub fn v2_url(&self, leaf: &str) -> Result<Url, AuthError> {
        self.oauth_url(&format!("oauth2/v2.0/{leaf}"))
    }

    /// The scope of every delegated request: the API's `.default` plus `offline_access`, so
    /// Entra returns a refresh token.
    pub fn delegated_scope(&self) -> String {
        format!(
            "{}/.default offline_access",
            self.resource.trim_end_matches('/')
        )
    }

    fn oauth_url(&self, rest: &str) -> Result<Url, AuthError> {
        let path = format!("{}/{rest}", self.tenant);
        let mut base = self.authority.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        base.join(&path)
            .map_err(|e| AuthError::Config(format!("bad authority URL: {e}")))
    }

    fn key(&self) -> CacheKey {
        (
            self.authority.to_string(),
            self.tenant.to_string(),
            self.client_id.clone(),
            self.resource.clone(),
        )
    }
}

type CacheKey = (String, String, String, String);

/// An access token and when to stop using it.
#[derive(Clone, Debug)]
pub struct AccessToken {
    /// The bearer token.
    pub token: SecretString,
    /// When the token should be refreshed (a margin before it expires).
    pub refresh_at: Instant,
    /// When it expires.
    pub expires_at: Instant,
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Entra refused the request.
    #[error("Entra ID refused the token request for tenant {tenant} ({status} {error}, AADSTS{code}): {guidance}{}", correlation.as_ref().map(|c| format!(" [correlation id {c}]")).unwrap_or_default())]
    Entra {
        /// Tenant.
        tenant: TenantId,
        /// HTTP status.
        status: u16,
        /// OAuth `error`.
        error: String,
        /// First AADSTS code, 0 if none.
        code: u32,
        /// What to do about it, in plain words.
        guidance: String,
        /// Correlation id to quote to Microsoft support.
        correlation: Option<String>,
    },
    /// The token endpoint could not be reached or kept failing.
    #[error("cannot reach the token endpoint {url}: {message}")]
    Transport {
        /// The endpoint.
        url: SafeUrl,
        /// What failed.
        message: String,
    },
    /// The response was not a token response.
    #[error("unexpected token response from {url}: {message}")]
    Malformed {
        /// The endpoint.
        url: SafeUrl,
        /// What is wrong.
        message: String,
    },
    /// The request could not be built.
    #[error("invalid token request: {0}")]
    Config(String),
    /// The token vault failed.
    #[error(transparent)]
    Vault(#[from] vault::VaultError),
    /// A delegated tenant has no refresh token yet.
    #[error("tenant {tenant} has no stored sign-in: run `xdrsync auth login --tenant {tenant}`")]
    NotSignedIn {
        /// The tenant's name.
        tenant: String,
    },
}

/// Plain guidance for an AADSTS code (entra-oauth.md §1.6).
pub fn guidance(code: u32, client_id: &str, tenant: &TenantId) -> String {
    match code {
        7000215 => "the client secret is wrong: use the secret's value, not its id".into(),
        7000222 => "the client secret has expired: create a new one in the app registration and update the secret source".into(),
        7000218 => "no client secret or certificate was sent".into(),
        700016 => format!("app {client_id} is not present in tenant {tenant}: the tenant's administrator has not consented to it, or the tenant id is wrong. Send the admin consent link to the customer's administrator (`xdrsync auth consent-url --client-id {client_id} --tenant {tenant}`)"),
        65001 => format!("the administrator of {tenant} has not consented to app {client_id}"),
        90002 => format!("tenant {tenant} does not exist in this cloud: check the tenant id and the [cloud] setting"),
        500011 => format!("the API is not provisioned in tenant {tenant} (is Microsoft Defender licensed there?), or the resource id is wrong"),
        1002012 | 70011 | 700022 => "the requested scope is invalid: client credentials need exactly one `<resource>/.default` scope".into(),
        9001023 => "client credentials need a specific tenant, not /common or /organizations".into(),
        700024 | 700027 => "the client assertion (certificate) was rejected: check the certificate and the clock".into(),
        50196 => "too many identical requests (loop detected): tokens must be cached".into(),
        700082 | 70008 | 50173 | 54005 => "the stored sign-in has expired or was revoked: run `xdrsync auth login` for this tenant again".into(),
        _ => "see the AADSTS code in Microsoft's error reference".into(),
    }
}

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

#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<String>,
    #[serde(default)]
    error_codes: Vec<u32>,
    correlation_id: Option<String>,
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

/// The `notAfter` of an X.509 certificate (DER), parsed with RustCrypto's `x509-cert`
/// (UTCTime or GeneralizedTime); `None` for anything that is not a certificate.
pub fn certificate_not_after(der: &[u8]) -> Option<xdrsync_model::Timestamp> {
    use x509_cert::der::Decode as _;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let secs = cert
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs();
    Some(xdrsync_model::Timestamp::from_ticks(
        i64::try_from(secs).ok()?.checked_mul(10_000_000)?,
    ))
}

/// Whether the certificate (DER) carries `public` (a SubjectPublicKeyInfo, DER): the
/// certificate's own subject key is compared, never a byte search through the certificate.
fn certificate_has_key(der: &[u8], public: &[u8]) -> bool {
    use x509_cert::der::{Decode as _, Encode as _};
    x509_cert::Certificate::from_der(der)
        .ok()
        .and_then(|c| c.tbs_certificate.subject_public_key_info.to_der().ok())
        .is_some_and(|spki| spki == public)
}

/// A PKCE pair: a 64-character verifier and its S256 challenge.
pub fn pkce() -> (SecretString, String) {
    let mut bytes = [0u8; 48];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let verifier = xdrsync_jwt::b64url(&bytes);
    let challenge =
        xdrsync_jwt::b64url(&<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
    (SecretString::new(verifier), challenge)
}

/// A random `state` value for an authorization request.
pub fn random_state() -> String {
    let mut bytes = [0u8; 18];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    xdrsync_jwt::b64url(&bytes)
}

/// The client-authentication form fields of a credential (none for a public client).
fn client_auth(req: &TokenRequest, token_url: &Url) -> Vec<(&'static str, String)> {
    match &req.credential {
        Credential::Secret(s) => vec![("client_secret", s.expose().to_owned())],
        Credential::Certificate(c) => vec![
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ),
            (
                "client_assertion",
                c.assertion(&req.client_id, token_url.as_str()),
            ),
        ],
        Credential::SecretBasic(_) | Credential::ManagedIdentity(_) => Vec::new(),
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

impl TokenCache {
    /// The device code flow for hosts without a browser: asks for a code, hands Entra's message
    /// ("open … and enter …") to `prompt`, then polls at the given interval (slower after
    /// `slow_down`) until the user signs in; returns the refresh token.
    pub async fn device_code(
        &self,
        req: &TokenRequest,
        prompt: impl FnOnce(&str),
    ) -> Result<SecretString, AuthError> {
        let token_url = req.v2_url("token")?;
        let code_url = req.v2_url("devicecode")?;
        let form = [
            ("client_id", req.client_id.clone()),
            ("scope", req.delegated_scope()),
        ];
        let (status, bytes) = self.post_once(&code_url, &form, None).await?;
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let field = |k: &str| body.get(k).unwrap_or(&serde_json::Value::Null);
        let Some(device_code) = field("device_code").as_str().map(str::to_owned) else {
            return Err(entra_error(req, status, &bytes));
        };
        let num = |k: &str| {
            field(k)
                .as_u64()
                .or_else(|| field(k).as_str().and_then(|s| s.parse().ok()))
        };
        // Bounded: a server's numbers must not overflow the clock or poll once a year.
        let mut interval = Duration::from_secs(num("interval").unwrap_or(5).clamp(1, 60));
        let deadline =
            Instant::now() + Duration::from_secs(num("expires_in").unwrap_or(900).min(3600));
        prompt(
            field("message")
                .as_str()
                .unwrap_or("Sign in with the code shown by your administrator."),
        );
        let mut form: Vec<(&str, String)> = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:device_code".into(),
            ),
            ("client_id", req.client_id.clone()),
            ("device_code", device_code),
        ];
        form.extend(client_auth(req, &token_url));
        loop {
            tokio::time::sleep(interval).await;
            if Instant::now() > deadline {
                return Err(AuthError::Config(
                    "the device code expired before the sign-in completed".into(),
                ));
            }
            let (status, body) = self.post_once(&token_url, &form, Some(req)).await?;
            if status == 200 {
                return refresh_token_of(&body).ok_or(AuthError::Malformed {
                    url: SafeUrl::new(token_url),
                    message: "no refresh_token".into(),
                });
            }
            let err: Option<ErrorResponse> = serde_json::from_slice(&body).ok();
            match err.as_ref().and_then(|e| e.error.as_deref()) {
                Some("authorization_pending") => {}
                Some("slow_down") => interval += Duration::from_secs(5),
                _ => return Err(entra_error(req, status, &body)),
            }
        }
    }
}

/// Entra's error response as an [`AuthError`], with the AADSTS code turned into guidance.
fn entra_error(req: &TokenRequest, status: u16, body: &[u8]) -> AuthError {
    let err: Option<ErrorResponse> = serde_json::from_slice(body).ok();
    let code = err
        .as_ref()
        .and_then(|e| e.error_codes.first().copied())
        .unwrap_or(0);
    let error = err
        .as_ref()
        .and_then(|e| e.error.as_deref())
        .map(xdrsync_model::printable)
        .unwrap_or_else(|| "unknown_error".into());
    let guidance = match error.as_str() {
        "authorization_declined" => "the user declined the sign-in".to_owned(),
        "expired_token" => {
            "the device code expired before the sign-in completed; start again".to_owned()
        }
        _ if code == 0 && (status == 429 || status >= 500) => {
            "the token endpoint kept failing; try again later".to_owned()
        }
        _ => guidance(code, &req.client_id, &req.tenant),
    };
    AuthError::Entra {
        tenant: req.tenant.clone(),
        status,
        error,
        code,
        guidance,
        correlation: err.and_then(|e| e.correlation_id.as_deref().map(xdrsync_model::printable)),
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
mod x509_tests {
    #[test]
    fn not_after_of_a_real_certificate() {
        // rcgen's default validity ends 4096-01-01; any generated certificate must parse.
        let cert = rcgen_free_cert();
        let t = super::certificate_not_after(&cert).expect("parsed");
        assert!(t.to_string().starts_with("4096-01-01"), "{t}");
        assert!(super::certificate_not_after(b"not a certificate").is_none());
    }

    /// The input that panicked the old hand-written parser: a GeneralizedTime `notAfter`
    /// shorter than 14 characters. Now: not a certificate, no panic; and no mutation or
    /// truncation of a real certificate panics either.
    #[test]
    fn short_generalized_time_does_not_panic() {
        let mut validity = vec![0x17, 13];
        validity.extend_from_slice(b"250101000000Z");
        validity.extend_from_slice(&[0x18, 5]);
        validity.extend_from_slice(b"2024Z");
        let mut tbs = vec![
            0x02,
            0x01,
            0x01,
            0x30,
            0x00,
            0x30,
            0x00,
            0x30,
            validity.len() as u8,
        ];
        tbs.extend_from_slice(&validity);
        let mut cert = vec![0x30, tbs.len() as u8 + 2, 0x30, tbs.len() as u8];
        cert.extend_from_slice(&tbs);
        assert!(super::certificate_not_after(&cert).is_none());

        let real = rcgen_free_cert();
        for n in 0..real.len() {
            let _ = super::certificate_not_after(&real[..n]);
            let mut m = real.clone();
            m[n] ^= 0xff;
            let _ = super::certificate_not_after(&m);
        }
    }

    /// A self-signed certificate (rcgen defaults: notAfter 4096-01-01T00:00:00Z), DER.
    fn rcgen_free_cert() -> Vec<u8> {
        let pem = include_str!("../tests/data/cert.pem");
        xdrsync_jwt::pem_block(pem, "CERTIFICATE").unwrap()
    }
}

#[cfg(test)]
mod pkcs12_tests {
    use super::CertificateCredential;
    use xdrsync_jwt::Algorithm;

    fn from_pem() -> CertificateCredential {
        CertificateCredential::from_pem(
            include_str!("../tests/data/cert.pem"),
            include_str!("../tests/data/key.pem"),
            Algorithm::PS256,
        )
        .unwrap()
    }

    /// OpenSSL 3's default export (PBES2: PBKDF2-SHA256 + AES-256-CBC), an unencrypted file
    /// (Key Vault's downloads), a chain with a second certificate and the legacy SHA-1 PBE files
    /// (3DES, RC2-40) all give the PEM pair's key and thumbprints.
    #[test]
    fn pfx_files_give_the_same_credential_as_pem() {
        let pem = from_pem();
        for (file, password) in [
            (
                &include_bytes!("../tests/data/cert.pfx")[..],
                "correct-horse",
            ),
            (&include_bytes!("../tests/data/cert-nopass.pfx")[..], ""),
            (
                &include_bytes!("../tests/data/cert-chain.pfx")[..],
                "correct-horse",
            ),
            // `-legacy`: RC2-40 certificates, 3DES key; Windows "TripleDES-SHA1": 3DES for both.
            (
                &include_bytes!("../tests/data/cert-legacy.pfx")[..],
                "correct-horse",
            ),
            (
                &include_bytes!("../tests/data/cert-3des.pfx")[..],
                "correct-horse",
            ),
        ] {
            let pfx = CertificateCredential::from_pkcs12(file, password, Algorithm::PS256)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(pfx.x5t, pem.x5t);
            assert_eq!(pfx.x5t_s256, pem.x5t_s256);
            assert_eq!(pfx.key.kid(), pem.key.kid());
        }
    }

    #[test]
    fn bad_pfx_files_say_what_is_wrong() {
        let err = |file: &[u8], password: &str| match CertificateCredential::from_pkcs12(
            file,
            password,
            Algorithm::RS256,
        ) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        };
        let wrong = err(include_bytes!("../tests/data/cert.pfx"), "wrong");
        assert!(wrong.contains("wrong password"), "{wrong}");
        assert!(!wrong.contains("correct-horse"));
        let legacy = err(include_bytes!("../tests/data/cert-3des.pfx"), "wrong");
        assert!(legacy.contains("wrong password"), "{legacy}");
        let junk = err(b"-----BEGIN CERTIFICATE-----", "");
        assert!(junk.contains("not a PKCS#12 file"), "{junk}");
        let pem_as_pfx = err(include_bytes!("../tests/data/cert.pem"), "");
        assert!(pem_as_pfx.contains("not a PKCS#12 file"), "{pem_as_pfx}");
        // A truncated file (a partial copy) is an error at every length, never a panic.
        let whole = include_bytes!("../tests/data/cert.pfx");
        for n in (0..whole.len()).step_by(23) {
            assert!(!err(&whole[..n], "correct-horse").is_empty());
        }
    }

    /// The file's MAC is verified: a wrong password is refused by the integrity check, and a
    /// changed byte anywhere in the authenticated content is refused even with the right
    /// password (OpenSSL's SHA-256 MAC and the legacy SHA-1 one alike).
    #[test]
    fn pkcs12_mac_is_verified() {
        let err = |file: &[u8], password: &str| {
            CertificateCredential::from_pkcs12(file, password, Algorithm::RS256)
                .err()
                .unwrap_or_default()
        };
        for (file, password) in [
            (
                &include_bytes!("../tests/data/cert.pfx")[..],
                "correct-horse",
            ),
            (
                &include_bytes!("../tests/data/cert-3des.pfx")[..],
                "correct-horse",
            ),
        ] {
            let wrong = err(file, "wrong");
            assert!(wrong.contains("integrity check (MAC) failed"), "{wrong}");
            // Flip bytes inside the authenticated content (past the outer headers, before the
            // MAC at the end): every change is refused, none panics.
            let mut refused = 0;
            for at in (40..file.len() - 80).step_by(97) {
                let mut changed = file.to_vec();
                changed[at] ^= 0x01;
                let e = err(&changed, password);
                assert!(!e.is_empty(), "byte {at} changed and accepted");
                refused += usize::from(e.contains("integrity check"));
            }
            assert!(refused > 0);
        }
    }

    #[test]
    fn pkcs12_iteration_count_is_capped() {
        assert!(super::pkcs12::check_iterations(2_048).is_ok());
        let e = super::pkcs12::check_iterations(u32::MAX).unwrap_err();
        assert!(e.contains("iterations"), "{e}");
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

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
