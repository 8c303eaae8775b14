//! Azure's instance metadata token endpoint, for managed identities.

use super::*;

/// `GET /metadata/identity/oauth2/token`: the Azure instance metadata endpoint that gives a
/// managed identity its tokens (`Metadata: true` header, `resource`, optional `client_id`).
/// The answer is v1-shaped with numbers as strings, as IMDS sends it.
pub(crate) async fn imds(
    State(state): State<EmulatorState>,
    headers: HeaderMap,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    let bad = |msg: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request", "error_description": msg})),
        )
            .into_response()
    };
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return bad("Required metadata header not specified");
    }
    let pairs: HashMap<String, String> = q
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .map(|v| v.into_iter().collect())
        .unwrap_or_default();
    let Some(resource_id) = pairs.get("resource") else {
        return bad("Required query variable 'resource' is missing");
    };
    let Some(resource) = Resource::from_identifier(resource_id) else {
        return bad("Resource is not a known application");
    };
    let dir = state.directory();
    let app = dir.apps.iter().find(|a| {
        a.managed_identity
            && pairs
                .get("client_id")
                .is_none_or(|c| a.client_id.eq_ignore_ascii_case(c))
    });
    let Some(app) = app.cloned() else {
        return bad("Identity not found");
    };
    let now = state.clock().now().as_datetime().timestamp();
    let exp = now + state.token_lifetime_secs();
    let tid = app.home_tenant.clone();
    let oid = name_guid(&tid, &app.client_id);
    let roles = app.roles(&tid, resource).unwrap_or_default();
    let mut c = Map::new();
    let cloud = dir.tenant(&tid).map(|t| t.cloud).unwrap_or_default();
    c.insert("aud".into(), json!(resource.uri_in(cloud)));
    c.insert(
        "iss".into(),
        json!(format!("https://sts.windows.net/{tid}/")),
    );
    c.insert("iat".into(), json!(now - SKEW_SECS));
    c.insert("nbf".into(), json!(now - SKEW_SECS));
    c.insert("exp".into(), json!(exp));
    c.insert("appid".into(), json!(app.client_id));
    c.insert("appidacr".into(), json!("2"));
    c.insert("idtyp".into(), json!("app"));
    c.insert("oid".into(), json!(oid));
    if !roles.is_empty() {
        c.insert("roles".into(), json!(roles));
    }
    c.insert("sub".into(), json!(oid));
    c.insert("tid".into(), json!(tid));
    c.insert("uti".into(), json!(opaque(16)));
    c.insert("ver".into(), json!("1.0"));
    c.insert("xms_mirid".into(), json!(format!("/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/siem/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}", app.name)));
    let token = sign(&state, c);
    state.count_token_issued();
    axum::Json(json!({
        "access_token": token, "client_id": app.client_id, "expires_in": (exp - now).to_string(),
        "expires_on": exp.to_string(), "ext_expires_in": (exp - now).to_string(), "not_before": (now - SKEW_SECS).to_string(),
        "resource": resource_id, "token_type": "Bearer",
    }))
    .into_response()
}
