//! Write operations: XDR `PATCH /api/incidents/{id}`, Graph `PATCH /v1.0/security/incidents/{id}`
//! and `/alerts_v2/{id}`, and their comments. Each change is a new incident version with a new
//! last-update time, as in Defender, so a sync sees write-backs like any other update.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::EmulatorState;
use crate::api::{Admitted, Family, GraphErrors, Needs, odata_json, with_context};
use crate::errors;
use crate::limits::Quota;
use crate::render;
use crate::render::GraphView;
use crate::world::{self, Comment, EmuIncident};

const XDR_WRITE: &Needs = &Needs {
    roles: &["Incident.ReadWrite.All"],
    scopes: &["Incident.ReadWrite"],
};
const GRAPH_INCIDENT_WRITE: &Needs = &Needs {
    roles: &["SecurityIncident.ReadWrite.All"],
    scopes: &["SecurityIncident.ReadWrite.All"],
};
const GRAPH_ALERT_WRITE: &Needs = &Needs {
    roles: &["SecurityAlert.ReadWrite.All"],
    scopes: &["SecurityAlert.ReadWrite.All"],
};

gate!(
    GraphAlertWriteUnmetered,
    Family::Graph,
    GRAPH_ALERT_WRITE,
    None
);
gate!(
    GraphIncidentWriteGraph,
    Family::Graph,
    GRAPH_INCIDENT_WRITE,
    Some(Quota::Graph)
);
gate!(
    GraphIncidentWriteUnmetered,
    Family::Graph,
    GRAPH_INCIDENT_WRITE,
    None
);
gate!(
    XdrWriteXdrUpdate,
    Family::Xdr,
    XDR_WRITE,
    Some(Quota::XdrUpdate)
);

fn body_object(body: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err("the body is not a JSON object".into()),
    }
}

fn text(o: &Map<String, Value>, k: &str) -> Result<Option<String>, String> {
    match o.get(k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Null) => Ok(Some(String::new())),
        Some(_) => Err(format!("`{k}` must be a string")),
    }
}

fn strings(o: &Map<String, Value>, k: &str) -> Result<Option<Vec<String>>, String> {
    match o.get(k) {
        None => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or(format!("`{k}` must be a list of strings"))
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(format!("`{k}` must be a list of strings")),
    }
}

/// Applies the fields of a PATCH body (legacy or Graph spelling) to an incident.
fn apply(
    inc: &mut EmuIncident,
    o: &Map<String, Value>,
    graph: Option<GraphView>,
    author: &str,
    now: xdrsync_model::Timestamp,
) -> Result<(), String> {
    let allowed: &[&str] = if graph.is_some() {
        &[
            "assignedTo",
            "classification",
            "determination",
            "status",
            "customTags",
            "resolvingComment",
            "@odata.type",
        ]
    } else {
        &[
            "status",
            "assignedTo",
            "classification",
            "determination",
            "tags",
            "comment",
        ]
    };
    if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("the property `{k}` cannot be updated"));
    }
    let pick = |list: &[world::Member], k: &str| -> Result<Option<world::Member>, String> {
        match text(o, k)? {
            None => Ok(None),
            Some(v) => world::find(list, &v, graph.is_some())
                .map(Some)
                .ok_or(format!("`{v}` is not a valid value of `{k}`")),
        }
    };
    if let Some(s) = pick(world::STATUSES, "status")? {
        inc.status = s;
    }
    inc.last_modified_by = Some(author.to_owned());
    if let Some(r) = text(o, "resolvingComment")? {
        inc.resolving_comment = (!r.is_empty()).then_some(r);
    }
    if let Some(a) = text(o, "assignedTo")? {
        inc.assigned_to = (!a.is_empty()).then_some(a);
    }
    if let Some(c) = pick(world::CLASSIFICATIONS, "classification")? {
        inc.classification = c;
    }
    let determination = match (text(o, "determination")?, graph) {
        (None, _) => None,
        (Some(v), Some(view)) => Some(
            world::find_graph_determination(&v, view.doc_determination)
                .ok_or(format!("`{v}` is not a valid value of `determination`"))?,
        ),
        (Some(_), None) => pick(world::DETERMINATIONS, "determination")?,
    };
    if let Some(d) = determination {
        // "You can set the determination property only if classification is set to
        // TruePositive" (legacy PATCH documentation).
        if graph.is_none() && inc.classification.legacy != "TruePositive" {
            return Err("determination can be set only when classification is TruePositive".into());
        }
        inc.determination = d;
    }
    if let Some(t) = strings(
        o,
        if graph.is_some() {
            "customTags"
        } else {
            "tags"
        },
    )? {
        inc.tags = t;
    }
    if let Some(c) = text(o, "comment")?.filter(|c| !c.is_empty()) {
        inc.comments.push(Comment {
            comment: c,
            created_by: author.to_owned(),
            created: now,
        });
    }
    Ok(())
}

fn id_of(s: &str) -> Option<u64> {
    s.parse().ok()
}

/// `PATCH /api/incidents/{id}`.
pub(crate) async fn xdr_patch(
    Admitted(caller, _): Admitted<XdrWriteXdrUpdate>,
    State(state): State<EmulatorState>,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let bad = |m: String| errors::xdr(StatusCode::BAD_REQUEST, "InvalidRequestBody", &m);
    let o = match body_object(&body) {
        Ok(o) => o,
        Err(e) => return bad(e),
    };
    let now = state.clock().now();
    let author = caller.author();
    let result = id_of(&id).and_then(|n| {
        state.patch_incident(&caller.tenant, n, |inc| apply(inc, &o, None, &author, now))
    });
    match result {
        None => errors::xdr(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("Incident {id} was not found"),
        ),
        Some(Err(e)) => bad(e),
        Some(Ok(inc)) => {
            let mut v = render::xdr_incident(&inc, &caller.tenant, state.body_style());
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "@odata.context".into(),
                    json!(
                        "https://api.securitycenter.microsoft.com/api/$metadata#Incidents/$entity"
                    ),
                );
            }
            odata_json(v)
        }
    }
}

/// `PATCH /v1.0/security/incidents/{id}`.
pub(crate) async fn graph_patch(
    Admitted(caller, _): Admitted<GraphIncidentWriteGraph>,
    State(state): State<EmulatorState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let g = GraphErrors::new(&state, &headers);
    let bad = |m: String| g.answer(StatusCode::BAD_REQUEST, "BadRequest", &m);
    let o = match body_object(&body) {
        Ok(o) => o,
        Err(e) => return bad(e),
    };
    let author = caller.author();
    let view = GraphView::of(&state, &headers);
    match id_of(&id).and_then(|n| {
        state.patch_incident(&caller.tenant, n, |inc| {
            apply(inc, &o, Some(view), &author, g.now)
        })
    }) {
        None => g.answer(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Incident {id} not found."),
        ),
        Some(Err(e)) => bad(e),
        Some(Ok(inc)) => odata_json(with_context(
            &state,
            render::graph_incident(&inc, &caller.tenant, false, view),
            "security/incidents/$entity",
        )),
    }
}

fn comment_text(body: &str) -> Result<String, String> {
    let o = body_object(body)?;
    text(&o, "comment")?
        .filter(|c| !c.is_empty())
        .ok_or("`comment` is required".into())
}

fn graph_comments(comments: &[Comment]) -> Value {
    json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.security.alertComment)",
        "value": comments.iter().map(|c| json!({"@odata.type": "#microsoft.graph.security.alertComment", "comment": c.comment, "createdByDisplayName": c.created_by, "createdDateTime": c.created.to_string()})).collect::<Vec<_>>(),
    })
}

/// `POST /v1.0/security/incidents/{id}/comments`: returns every comment of the incident.
pub(crate) async fn graph_incident_comment(
    Admitted(caller, _): Admitted<GraphIncidentWriteUnmetered>,
    State(state): State<EmulatorState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let g = GraphErrors::new(&state, &headers);
    let comment = match comment_text(&body) {
        Ok(c) => c,
        Err(e) => {
            return g.answer(StatusCode::BAD_REQUEST, "BadRequest", &e);
        }
    };
    let author = caller.author();
    let result = id_of(&id).and_then(|n| {
        state.patch_incident(&caller.tenant, n, |inc| {
            inc.last_modified_by = Some(author.clone());
            inc.comments.push(Comment {
                comment,
                created_by: author,
                created: g.now,
            });
            Ok(())
        })
    });
    match result {
        Some(Ok(inc)) => odata_json(graph_comments(&inc.comments)),
        _ => g.answer(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Incident {id} not found."),
        ),
    }
}

/// Finds the incident holding alert `alert_id`.
fn incident_of_alert(state: &EmulatorState, tenant: &str, alert_id: &str) -> Option<u64> {
    state
        .incidents(tenant, |i| i.alerts.iter().any(|a| a.id == alert_id))
        .first()
        .map(|i| i.id)
}

/// `PATCH /v1.0/security/alerts_v2/{id}` (status, classification, determination, assignedTo).
pub(crate) async fn graph_alert_patch(
    Admitted(caller, _): Admitted<GraphAlertWriteUnmetered>,
    State(state): State<EmulatorState>,
    headers: HeaderMap,
    Path(alert_id): Path<String>,
    body: String,
) -> Response {
    let g = GraphErrors::new(&state, &headers);
    let bad = |m: String| g.answer(StatusCode::BAD_REQUEST, "BadRequest", &m);
    let o = match body_object(&body) {
        Ok(o) => o,
        Err(e) => return bad(e),
    };
    let view = GraphView::of(&state, &headers);
    let Some(incident) = incident_of_alert(&state, &caller.tenant, &alert_id) else {
        return g.answer(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Alert {alert_id} not found."),
        );
    };
    let result = state.patch_incident(&caller.tenant, incident, |inc| {
        let a = inc
            .alerts
            .iter_mut()
            .find(|a| a.id == alert_id)
            .ok_or("alert moved")?;
        for k in o.keys() {
            if ![
                "status",
                "classification",
                "determination",
                "assignedTo",
                "@odata.type",
            ]
            .contains(&k.as_str())
            {
                return Err(format!("the property `{k}` cannot be updated"));
            }
        }
        if let Some(s) = text(&o, "status")? {
            a.status = world::find(world::ALERT_STATUSES, &s, true)
                .ok_or(format!("`{s}` is not a valid value of `status`"))?;
        }
        if let Some(v) = text(&o, "assignedTo")? {
            a.assigned_to = (!v.is_empty()).then_some(v);
        }
        let (mut c, mut d) = a.verdict.unwrap_or((world::CLASS_UNKNOWN, world::DET_NA));
        if let Some(v) = text(&o, "classification")? {
            c = world::find(world::CLASSIFICATIONS, &v, true)
                .ok_or(format!("`{v}` is not a valid value of `classification`"))?;
        }
        if let Some(v) = text(&o, "determination")? {
            d = world::find_graph_determination(&v, view.doc_determination)
                .ok_or(format!("`{v}` is not a valid value of `determination`"))?;
        }
        a.verdict = Some((c, d));
        a.last_updated = g.now;
        Ok(())
    });
    match result {
        Some(Ok(inc)) => match inc.alerts.iter().find(|a| a.id == alert_id) {
            Some(a) => odata_json(with_context(
                &state,
                render::graph_alert(a, &inc, &caller.tenant, view),
                "security/alerts_v2/$entity",
            )),
            None => bad("alert moved".into()),
        },
        Some(Err(e)) => bad(e),
        None => g.answer(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Alert {alert_id} not found."),
        ),
    }
}

/// `POST /v1.0/security/alerts_v2/{id}/comments`.
pub(crate) async fn graph_alert_comment(
    Admitted(caller, _): Admitted<GraphAlertWriteUnmetered>,
    State(state): State<EmulatorState>,
    headers: HeaderMap,
    Path(alert_id): Path<String>,
    body: String,
) -> Response {
    let g = GraphErrors::new(&state, &headers);
    let comment = match comment_text(&body) {
        Ok(c) => c,
        Err(e) => {
            return g.answer(StatusCode::BAD_REQUEST, "BadRequest", &e);
        }
    };
    let author = caller.author();
    let result = incident_of_alert(&state, &caller.tenant, &alert_id).and_then(|incident| {
        state.patch_incident(&caller.tenant, incident, |inc| {
            let a = inc
                .alerts
                .iter_mut()
                .find(|a| a.id == alert_id)
                .ok_or("alert moved")?;
            a.comments.push(Comment {
                comment,
                created_by: author,
                created: g.now,
            });
            a.last_updated = g.now;
            Ok(())
        })
    });
    match result {
        Some(Ok(inc)) => {
            let comments = inc
                .alerts
                .iter()
                .find(|a| a.id == alert_id)
                .map(|a| a.comments.clone())
                .unwrap_or_default();
            odata_json(graph_comments(&comments))
        }
        _ => g.answer(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Alert {alert_id} not found."),
        ),
    }
}
