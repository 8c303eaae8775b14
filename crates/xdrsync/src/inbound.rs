//! `POST /actions` on `run`'s server: write-back from a SOAR, with the CLI's validation, rate
//! budget and audit.
//!
//! Authenticated by an HMAC-SHA256 signature made exactly like the webhook sink's
//! (`X-Xdrsync-Timestamp`, `X-Xdrsync-Signature: sha256=<hex HMAC(secret, "<ts>.<body>")>`),
//! inside a replay window (default 300 s) in which one signature is accepted once; or by a
//! bearer token. The body is `{"actions": [<action>, …], "actor": "xsoar"?}`, each action as a
//! line of `actions apply`; the answer lists each action's outcome in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use xdrsync_api_client::ApiClient;
use xdrsync_auth::vault::Vault;
use xdrsync_config::Config;
use xdrsync_model::SecretString;
use xdrsync_model::action::Action;
use xdrsync_sinks::webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};
use xdrsync_store::Store;

/// What `POST /actions` needs.
pub(crate) struct ActionsEndpoint {
    config: Config,
    client: ApiClient,
    vault: Option<Arc<Vault>>,
    hmac: Option<SecretString>,
    token: Option<SecretString>,
    window: Duration,
    /// Signatures accepted, with their timestamps, inside the window (a replay is refused).
    seen: Mutex<HashMap<String, u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    actions: Vec<Action>,
    #[serde(default)]
    actor: Option<String>,
}

impl ActionsEndpoint {
    /// The endpoint for `config` (`None`: `[server]` turns it on with neither secret).
    pub(crate) fn new(config: &Config, client: ApiClient) -> anyhow::Result<Option<Arc<Self>>> {
        let Some(inbound) = &config.inbound_actions else {
            return Ok(None);
        };
        let hmac = inbound
            .hmac_secret
            .as_ref()
            .map(|s| s.resolve("server.actions_hmac_secret"))
            .transpose()?;
        let token = inbound
            .token
            .as_ref()
            .map(|s| s.resolve("server.actions_token"))
            .transpose()?;
        let vault = if config.tenants.iter().any(|t| t.delegated) {
            Some(xdrsync_pipeline::open_vault(config)?)
        } else {
            None
        };
        Ok(Some(Arc::new(ActionsEndpoint {
            config: config.clone(),
            client,
            vault,
            hmac,
            token,
            window: inbound.replay_window,
            seen: Mutex::new(HashMap::new()),
        })))
    }

    /// `Err((status, why))` unless the request carries a valid bearer token or a fresh,
    /// unused signature.
    fn authenticate(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), (StatusCode, String)> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let (Some(token), Some(given)) = (
            &self.token,
            header("authorization").and_then(|a| a.strip_prefix("Bearer ")),
        ) {
            // Digests compared, so the comparison's time says nothing about the token.
            let digest = |s: &str| Sha256::digest(s.as_bytes());
            if digest(given) == digest(token.expose()) {
                return Ok(());
            }
            return Err((
                StatusCode::UNAUTHORIZED,
                "the bearer token is not the configured actions_token".into(),
            ));
        }
        let Some(secret) = &self.hmac else {
            return Err((
                StatusCode::UNAUTHORIZED,
                "send Authorization: Bearer <actions_token>".into(),
            ));
        };
        let (Some(ts), Some(signature)) = (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER))
        else {
            return Err((
                StatusCode::UNAUTHORIZED,
                format!(
                    "sign the request: {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} (HMAC-SHA256 of \"<timestamp>.<body>\")"
                ),
            ));
        };
        let ts: u64 = ts.parse().map_err(|_| {
            (
                StatusCode::UNAUTHORIZED,
                format!("{TIMESTAMP_HEADER} is not Unix seconds"),
            )
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let window = self.window.as_secs();
        if now.abs_diff(ts) > window {
            return Err((
                StatusCode::UNAUTHORIZED,
                format!(
                    "the signed timestamp is {} s from now, outside the {window} s window",
                    now.abs_diff(ts)
                ),
            ));
        }
        if !verify(secret.expose().as_bytes(), ts, body, signature) {
            return Err((
                StatusCode::UNAUTHORIZED,
                "the signature does not match the body".into(),
            ));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, t| now.abs_diff(*t) <= window);
        if seen.contains_key(signature) {
            return Err((
                StatusCode::CONFLICT,
                "this signed request was already accepted (a replay); sign each request anew"
                    .into(),
            ));
        }
        seen.insert(signature.to_owned(), ts);
        Ok(())
    }

    /// Handles one request.
    pub(crate) async fn handle(
        &self,
        store: &Arc<dyn Store>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        if let Err((status, why)) = self.authenticate(headers, body) {
            tracing::warn!(%status, reason = %why, "POST /actions refused.");
            return (status, axum::Json(json!({"error": why}))).into_response();
        }
        let request: Request = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": format!("not {{\"actions\": [...]}}: {e}")})),
                )
                    .into_response();
            }
        };
        let actor = request.actor.map_or_else(
            || "soar (POST /actions)".to_owned(),
            |a| format!("{a} (POST /actions)"),
        );
        let reports = xdrsync_pipeline::actions::apply_actions(
            &self.config,
            store,
            &self.client,
            self.vault.as_ref(),
            request.actions,
            Some(&actor),
            false,
        )
        .await;
        let results: Vec<_> = reports
            .iter()
            .map(|r| {
                json!({
                    "action_id": r.action_id,
                    "tenant": r.tenant,
                    "target": r.target.as_str(),
                    "id": r.item,
                    "outcome": r.outcome.as_str(),
                    "message": r.message,
                    "changes": r.diff,
                    "produced_last_update": r.produced,
                })
            })
            .collect();
        axum::Json(json!({ "results": results })).into_response()
    }
}
