//! Why a token was refused, and what to do about it (AADSTS codes in plain words).

use xdrsync_model::{SafeUrl, TenantId};

use crate::TokenRequest;
use crate::vault;

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

/// Entra's error response as an [`AuthError`], with the AADSTS code turned into guidance.
pub(crate) fn entra_error(req: &TokenRequest, status: u16, body: &[u8]) -> AuthError {
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
        // Which resource was asked for matters here: a tenant in another national cloud has
        // no principal for this cloud's App ID URI.
        _ if code == 500011 => format!(
            "{}; the resource asked for was {}: if the tenant is in a national cloud (GCC, GCC High, DoD), set `[cloud] name` to it",
            guidance(code, &req.client_id, &req.tenant),
            req.resource
        ),
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

/// Entra's error body (the fields read).
#[derive(serde::Deserialize)]
pub(crate) struct ErrorResponse {
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) error_codes: Vec<u32>,
    pub(crate) correlation_id: Option<String>,
}
