//! The admin API (`/_emulator/...`): change the emulated world at run time and read its ground
//! truth. It needs no token; the emulator listens on loopback.
//!
//! | call | does |
//! |---|---|
//! | `GET /_emulator/health`, `GET /_emulator/stats` | liveness, counters |
//! | `GET /_emulator/directory` | tenants, apps, consents (with secrets: it is an emulator) |
//! | `POST /_emulator/tenants` `{name, id?, domain?, incidents_per_hour?}` | adds a tenant |
//! | `POST /_emulator/apps` (an app registration) | adds an app |
//! | `PUT /_emulator/apps/{client}/consents/{tenant}` `{"graph": [roles], …}` | grants (admin consent) |
//! | `DELETE /_emulator/apps/{client}/consents/{tenant}` | revokes consent (removes the service principal) |
//! | `POST /_emulator/apps/{client}/revoke-refresh-tokens/{tenant}` | revokes the app's refresh tokens there |
//! | `POST /_emulator/tenants/{tenant}/incidents` `{count?}` | creates incidents now |
//! | `GET /_emulator/ground-truth/{tenant}` | every incident version the tenant has had, and every alert version (with when it became visible, whether MDE lists it, its SIEM detections) |
//! | `POST /_emulator/faults` (a [`FaultRule`]), `GET`, `DELETE` | fault injection |
//! | `POST /_emulator/clock/advance` `{"seconds": n}` | moves the emulator clock |
//! | `POST /_emulator/keys/rotate` | rotates the token-signing key |

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::EmulatorState;
use crate::directory::{AppSpec, Resource, TenantSpec};
use crate::errors;
use crate::faults::FaultRule;

fn not_found(what: &str) -> Response {
    errors::xdr(StatusCode::NOT_FOUND, "NotFound", what)
}

pub(crate) async fn stats(State(state): State<EmulatorState>) -> Response {
    Json(state.stats()).into_response()
}

pub(crate) async fn directory(State(state): State<EmulatorState>) -> Response {
    Json(state.directory().as_ref().clone()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTenant {
    name: String,
    id: Option<String>,
    domain: Option<String>,
    incidents_per_hour: Option<f64>,
}

pub(crate) async fn add_tenant(
    State(state): State<EmulatorState>,
    Json(t): Json<NewTenant>,
) -> Response {
    let mut spec = TenantSpec::named(&t.name, t.incidents_per_hour.unwrap_or(2.0));
    if let Some(id) = t.id {
        spec.id = id.to_ascii_lowercase();
    }
    if let Some(d) = t.domain {
        spec.domain = d;
    }
    let dir = state.directory();
    if dir.tenant(&spec.id).is_some() || dir.tenant(&spec.domain).is_some() {
        return errors::xdr(
            StatusCode::CONFLICT,
            "Conflict",
            &format!("tenant {} exists", spec.id),
        );
    }
    let body = json!({"id": spec.id, "name": spec.name, "domain": spec.domain});
    state.update_directory(|d| d.tenants.push(spec));
    (StatusCode::CREATED, Json(body)).into_response()
}

pub(crate) async fn add_app(
    State(state): State<EmulatorState>,
    Json(app): Json<AppSpec>,
) -> Response {
    if state.directory().app(&app.client_id).is_some() {
        return errors::xdr(
            StatusCode::CONFLICT,
            "Conflict",
            &format!("app {} exists", app.client_id),
        );
    }
    let id = app.client_id.clone();
    state.update_directory(|d| d.apps.push(app));
    (StatusCode::CREATED, Json(json!({"client_id": id}))).into_response()
}

pub(crate) async fn grant(
    State(state): State<EmulatorState>,
    Path((client, tenant)): Path<(String, String)>,
    Json(roles): Json<BTreeMap<Resource, Vec<String>>>,
) -> Response {
    let dir = state.directory();
    let Some(t) = dir.tenant(&tenant).cloned() else {
        return not_found("no such tenant");
    };
    if dir.app(&client).is_none() {
        return not_found("no such app");
    }
    state.update_directory(|d| {
        if let Some(a) = d
            .apps
            .iter_mut()
            .find(|a| a.client_id.eq_ignore_ascii_case(&client))
        {
            a.consents.insert(t.id.clone(), roles);
        }
    });
    StatusCode::NO_CONTENT.into_response()
}

pub(crate) async fn revoke(
    State(state): State<EmulatorState>,
    Path((client, tenant)): Path<(String, String)>,
) -> Response {
    let dir = state.directory();
    let Some(t) = dir.tenant(&tenant).cloned() else {
        return not_found("no such tenant");
    };
    let mut removed = false;
    state.update_directory(|d| {
        if let Some(a) = d
            .apps
            .iter_mut()
            .find(|a| a.client_id.eq_ignore_ascii_case(&client))
        {
            removed = a.consents.remove(&t.id).is_some();
        }
    });
    if removed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found("no such consent")
    }
}

pub(crate) async fn revoke_refresh(
    State(state): State<EmulatorState>,
    Path((client, tenant)): Path<(String, String)>,
) -> Response {
    let Some(t) = state.directory().tenant(&tenant).cloned() else {
        return not_found("no such tenant");
    };
    Json(json!({"revoked": state.revoke_refresh_tokens(&client, &t.id)})).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewIncidents {
    #[serde(default)]
    count: Option<u32>,
}

pub(crate) async fn add_incidents(
    State(state): State<EmulatorState>,
    Path(tenant): Path<String>,
    body: Option<Json<NewIncidents>>,
) -> Response {
    let count = body.and_then(|b| b.0.count).unwrap_or(1).clamp(1, 10_000);
    match state.create_incidents(&tenant, count) {
        Some(ids) => (StatusCode::CREATED, Json(json!({"incident_ids": ids}))).into_response(),
        None => not_found("no such tenant"),
    }
}

pub(crate) async fn ground_truth(
    State(state): State<EmulatorState>,
    Path(tenant): Path<String>,
) -> Response {
    if state.directory().tenant(&tenant).is_none() {
        return not_found(&format!("Tenant {tenant} not found"));
    }
    Json(json!({
        "tenant": tenant,
        "versions": state.ground_truth(&tenant),
        "alert_versions": state.alert_ground_truth(&tenant),
    }))
    .into_response()
}

pub(crate) async fn add_fault(
    State(state): State<EmulatorState>,
    Json(rule): Json<FaultRule>,
) -> Response {
    if rule.sequence.is_empty() && rule.fault.is_none() {
        return errors::xdr(
            StatusCode::BAD_REQUEST,
            "InvalidRequestBody",
            "a fault rule needs `sequence` or `fault`",
        );
    }
    let active = state.faults().add(rule);
    (StatusCode::CREATED, Json(json!({"active_rules": active}))).into_response()
}

pub(crate) async fn list_faults(State(state): State<EmulatorState>) -> Response {
    Json(state.faults().list()).into_response()
}

pub(crate) async fn clear_faults(State(state): State<EmulatorState>) -> Response {
    state.faults().clear();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Advance {
    seconds: i64,
}

pub(crate) async fn advance_clock(
    State(state): State<EmulatorState>,
    Json(a): Json<Advance>,
) -> Response {
    state.clock().advance(chrono::Duration::seconds(a.seconds));
    Json(json!({"now": state.clock().now()})).into_response()
}

pub(crate) async fn rotate_keys(State(state): State<EmulatorState>) -> Response {
    Json(json!({"kid": state.rotate_signing_key()})).into_response()
}
