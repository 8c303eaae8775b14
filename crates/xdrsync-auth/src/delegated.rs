//! Delegated sign-in: PKCE for the authorization-code flow and the device code flow.

use std::time::{Duration, Instant};

use xdrsync_model::{SafeUrl, SecretString};

use crate::error::{ErrorResponse, entra_error};
use crate::request::client_auth;
use crate::{AuthError, TokenCache, TokenRequest, refresh_token_of};

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
