//! A token request: which authority, tenant, app and resource, and how the app authenticates.

use std::time::Instant;

use url::Url;
use xdrsync_model::{SecretString, TenantId, TokenVersion};

use crate::{AuthError, Credential, vault};

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

    pub(crate) fn key(&self) -> CacheKey {
        (
            self.authority.to_string(),
            self.tenant.to_string(),
            self.client_id.clone(),
            self.resource.clone(),
        )
    }
}

pub(crate) type CacheKey = (String, String, String, String);

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

/// The client-authentication form fields of a credential (none for a public client).
pub(crate) fn client_auth(req: &TokenRequest, token_url: &Url) -> Vec<(&'static str, String)> {
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
