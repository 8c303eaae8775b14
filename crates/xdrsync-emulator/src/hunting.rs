//! Advanced hunting: XDR `POST /api/advancedhunting/run` and Graph
//! `POST /v1.0/security/runHuntingQuery`, over the tables `AlertInfo` and `AlertEvidence`
//! built from the emulated alerts (last 30 days, as hunting data is kept).
//!
//! The KQL subset, one operator per pipe:
//! - `where <col> <op> <value> [and …]` with `==`, `!=`, `=~`, `>`, `>=`, `<`, `<=`, `contains`,
//!   `has`, `startswith`; values are strings (`"…"`/`'…'`), numbers, `true`/`false`,
//!   `ago(<n>d|h|m|s)` and `datetime(<ISO 8601>)`;
//! - `project <col>, …`; `take <n>` / `limit <n>`; `order by <col> [asc|desc]` (also `sort by`);
//! - `summarize count() by <col>, …`.
//!
//! Anything else is answered 400 with the reason, as the service refuses what it cannot parse.

use std::cmp::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};
use xdrsync_model::Timestamp;

use crate::EmulatorState;
use crate::api::{Admitted, Family, GraphErrors, Needs, odata_json};
use crate::errors;
use crate::limits::Quota;

const XDR_HUNT: &Needs = &Needs {
    roles: &["AdvancedHunting.Read.All"],
    scopes: &["AdvancedHunting.Read"],
};
const GRAPH_HUNT: &Needs = &Needs {
    roles: &["ThreatHunting.Read.All"],
    scopes: &["ThreatHunting.Read.All"],
};

gate!(
    GraphHuntHunting,
    Family::Graph,
    GRAPH_HUNT,
    Some(Quota::Hunting)
);
gate!(XdrHuntHunting, Family::Xdr, XDR_HUNT, Some(Quota::Hunting));
const MAX_ROWS: usize = 100_000;

/// A column type in the result schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    DateTime,
    Str,
    Long,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::DateTime => "DateTime",
            Ty::Str => "String",
            Ty::Long => "Int64",
        }
    }
}

type Row = Map<String, Value>;

struct Table {
    schema: Vec<(String, Ty)>,
    rows: Vec<Row>,
}

fn alert_info_schema() -> Vec<(String, Ty)> {
    [
        ("Timestamp", Ty::DateTime),
        ("AlertId", Ty::Str),
        ("Title", Ty::Str),
        ("Category", Ty::Str),
        ("Severity", Ty::Str),
        ("ServiceSource", Ty::Str),
        ("DetectionSource", Ty::Str),
        ("AttackTechniques", Ty::Str),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_owned(), t))
    .collect()
}

fn alert_evidence_schema() -> Vec<(String, Ty)> {
    [
        ("Timestamp", Ty::DateTime),
        ("AlertId", Ty::Str),
        ("Title", Ty::Str),
        ("Categories", Ty::Str),
        ("AttackTechniques", Ty::Str),
        ("ServiceSource", Ty::Str),
        ("DetectionSource", Ty::Str),
        ("EntityType", Ty::Str),
        ("EvidenceRole", Ty::Str),
        ("FileName", Ty::Str),
        ("FolderPath", Ty::Str),
        ("SHA1", Ty::Str),
        ("SHA256", Ty::Str),
        ("RemoteIP", Ty::Str),
        ("RemoteUrl", Ty::Str),
        ("AccountName", Ty::Str),
        ("AccountDomain", Ty::Str),
        ("AccountSid", Ty::Str),
        ("AccountObjectId", Ty::Str),
        ("AccountUpn", Ty::Str),
        ("DeviceId", Ty::Str),
        ("DeviceName", Ty::Str),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_owned(), t))
    .collect()
}

/// Builds a table from the tenant's alerts of the last 30 days.
fn table(state: &EmulatorState, tenant: &str, name: &str) -> Option<Table> {
    let now = state.clock().now();
    let oldest = now.sub(chrono::Duration::days(30));
    let alerts: Vec<_> = state
        .incidents(tenant, |_| true)
        .into_iter()
        .flat_map(|i| i.alerts)
        .filter(|a| a.created >= oldest)
        .collect();
    let service = |a: &crate::world::EmuAlert| match a
        .service_override
        .unwrap_or(a.template.service_source)
        .legacy
    {
        "MicrosoftDefenderATP" => "Microsoft Defender for Endpoint",
        "OfficeATP" => "Microsoft Defender for Office 365",
        "MicrosoftCloudAppSecurity" => "Microsoft Defender for Cloud Apps",
        "AADIdentityProtection" => "Microsoft Entra ID Protection",
        other => other,
    };
    match name {
        "AlertInfo" => Some(Table {
            schema: alert_info_schema(),
            rows: alerts
                .iter()
                .map(|a| {
                    let v = json!({
                        "Timestamp": a.created.to_string(), "AlertId": a.id, "Title": a.template.title,
                        "Category": a.template.category, "Severity": a.severity.legacy, "ServiceSource": service(a),
                        "DetectionSource": a.template.detection_source.legacy, "AttackTechniques": json!(a.template.mitre).to_string(),
                    });
                    v.as_object().cloned().unwrap_or_default()
                })
                .collect(),
        }),
        "AlertEvidence" => Some(Table {
            schema: alert_evidence_schema(),
            rows: alerts
                .iter()
                .flat_map(|a| {
                    a.entities.iter().map(move |e| {
                        let f = |k: &str| e.fields.get(k).cloned().unwrap_or(Value::Null);
                        let device = a.devices.first();
                        let v = json!({
                            "Timestamp": a.created.to_string(), "AlertId": a.id, "Title": a.template.title,
                            "Categories": json!([a.template.category]).to_string(), "AttackTechniques": json!(a.template.mitre).to_string(),
                            "ServiceSource": service(a), "DetectionSource": a.template.detection_source.legacy,
                            "EntityType": e.kind, "EvidenceRole": if e.kind == "User" { "Impacted" } else { "Related" },
                            "FileName": f("fileName"), "FolderPath": f("filePath"), "SHA1": f("sha1"), "SHA256": f("sha256"),
                            "RemoteIP": f("ipAddress"), "RemoteUrl": f("url"), "AccountName": f("accountName"),
                            "AccountDomain": f("domainName"), "AccountSid": f("userSid"), "AccountObjectId": f("aadUserId"),
                            "AccountUpn": f("userPrincipalName"), "DeviceId": device.map(|d| d.id.clone()),
                            "DeviceName": device.map(|d| d.dns_name.clone()),
                        });
                        v.as_object().cloned().unwrap_or_default()
                    })
                })
                .collect(),
        }),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(String),
    Pipe,
    Comma,
    Open,
    Close,
}

fn lex(q: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = q.chars().collect();
    let at = |i: usize| c.get(i).copied();
    let take = |a: usize, b: usize| -> String { c.get(a..b).unwrap_or_default().iter().collect() };
    let mut i = 0;
    let mut out = Vec::new();
    while let Some(ch) = at(i) {
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '|' {
            out.push(Tok::Pipe);
            i += 1;
        } else if ch == ',' {
            out.push(Tok::Comma);
            i += 1;
        } else if ch == '(' {
            out.push(Tok::Open);
            i += 1;
        } else if ch == ')' {
            out.push(Tok::Close);
            i += 1;
        } else if ch == '"' || ch == '\'' {
            let end = c
                .get(i + 1..)
                .unwrap_or_default()
                .iter()
                .position(|x| *x == ch)
                .ok_or("unterminated string literal")?;
            out.push(Tok::Str(take(i + 1, i + 1 + end)));
            i += end + 2;
        } else if "=!<>~".contains(ch) {
            let mut op = String::from(ch);
            while let Some(next) = at(i + op.len()).filter(|n| "=~".contains(*n)) {
                op.push(next);
            }
            i += op.len();
            out.push(Tok::Op(op));
        } else if ch.is_ascii_digit() {
            let start = i;
            while at(i).is_some_and(|x| x.is_ascii_alphanumeric() || matches!(x, '.' | ':' | '-')) {
                i += 1;
            }
            let text = take(start, i);
            match text.parse::<f64>() {
                Ok(n) => out.push(Tok::Num(n)),
                Err(_) => out.push(Tok::Ident(text)),
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while at(i).is_some_and(|x| x.is_alphanumeric() || x == '_' || x == '.') {
                i += 1;
            }
            out.push(Tok::Ident(take(start, i)));
        } else {
            return Err(format!("unexpected character '{ch}'"));
        }
    }
    Ok(out)
}

fn span(text: &str) -> Option<chrono::Duration> {
    let unit = text.chars().last()?;
    let n: i64 = text.strip_suffix(unit)?.parse().ok()?;
    Some(match unit {
        'd' => chrono::Duration::days(n),
        'h' => chrono::Duration::hours(n),
        'm' => chrono::Duration::minutes(n),
        's' => chrono::Duration::seconds(n),
        _ => return None,
    })
}

/// Runs `query` against the tenant's tables.
fn run(
    state: &EmulatorState,
    tenant: &str,
    query: &str,
    timespan: Option<chrono::Duration>,
) -> Result<Table, String> {
    let toks = lex(query)?;
    let mut parts = toks.split(|t| *t == Tok::Pipe);
    let first = parts.next().unwrap_or_default();
    let [Tok::Ident(name)] = first else {
        return Err("a query starts with a table name, e.g. AlertInfo".into());
    };
    let mut t = table(state, tenant, name).ok_or(format!(
        "'{name}' is not a table this emulator knows (AlertInfo, AlertEvidence)"
    ))?;
    let now = state.clock().now();
    // Graph's `Timespan`: rows older than it are not searched.
    if let Some(span) = timespan {
        let oldest = now.sub(span).to_string();
        t.rows.retain(|r| {
            r.get("Timestamp")
                .and_then(Value::as_str)
                .is_none_or(|ts| ts >= oldest.as_str())
        });
    }
    for op in parts {
        let word = |i: usize| match op.get(i) {
            Some(Tok::Ident(s)) => Some(s.to_ascii_lowercase()),
            _ => None,
        };
        let col = |i: usize, t: &Table| -> Result<String, String> {
            match op.get(i) {
                Some(Tok::Ident(c)) if t.schema.iter().any(|(n, _)| n == c) => Ok(c.clone()),
                Some(Tok::Ident(c)) => Err(format!("'{c}' is not a column of the table")),
                other => Err(format!("expected a column name, found {other:?}")),
            }
        };
        match word(0).as_deref() {
            Some("where") => {
                let mut i = 1;
                let mut conds = Vec::new();
                loop {
                    let c = col(i, &t)?;
                    let Some(Tok::Op(o) | Tok::Ident(o)) = op.get(i + 1) else {
                        return Err("expected an operator".into());
                    };
                    let o = o.to_ascii_lowercase();
                    if ![
                        "==",
                        "!=",
                        "=~",
                        ">",
                        ">=",
                        "<",
                        "<=",
                        "contains",
                        "has",
                        "startswith",
                    ]
                    .contains(&o.as_str())
                    {
                        return Err(format!("operator '{o}' is not supported"));
                    }
                    let (value, used) = match (
                        op.get(i + 2),
                        op.get(i + 3),
                        op.get(i + 4),
                        op.get(i + 5),
                    ) {
                        (Some(Tok::Str(s)), ..) => (Value::String(s.clone()), 1),
                        (Some(Tok::Num(n)), ..) => (json!(n), 1),
                        (Some(Tok::Ident(f)), Some(Tok::Open), Some(arg), Some(Tok::Close))
                            if f == "ago" =>
                        {
                            let text = match arg {
                                Tok::Ident(s) => s.clone(),
                                _ => return Err("ago() takes a timespan such as 1d or 2h".into()),
                            };
                            let d = span(&text).ok_or(format!("'{text}' is not a timespan"))?;
                            (Value::String(now.sub(d).to_string()), 4)
                        }
                        (Some(Tok::Ident(f)), Some(Tok::Open), Some(arg), Some(Tok::Close))
                            if f == "datetime" =>
                        {
                            let text = match arg {
                                Tok::Ident(s) | Tok::Str(s) => s.clone(),
                                _ => return Err("datetime() takes an ISO 8601 time".into()),
                            };
                            let ts: Timestamp = text.parse().map_err(|e| format!("{e}"))?;
                            (Value::String(ts.to_string()), 4)
                        }
                        (Some(Tok::Ident(b)), ..) if b == "true" || b == "false" => {
                            (Value::Bool(b == "true"), 1)
                        }
                        other => return Err(format!("expected a value, found {:?}", other.0)),
                    };
                    conds.push((c, o, value));
                    i += 2 + used;
                    match word(i).as_deref() {
                        None if i >= op.len() => break,
                        Some("and") => i += 1,
                        Some("or") => {
                            return Err(
                                "'or' is not supported in this emulator's KQL subset".into()
                            );
                        }
                        _ => return Err(format!("unexpected {:?}", op.get(i))),
                    }
                }
                t.rows.retain(|r| {
                    conds
                        .iter()
                        .all(|(c, o, v)| test(r.get(c).unwrap_or(&Value::Null), o, v))
                });
            }
            Some("project") => {
                let mut cols = Vec::new();
                let mut i = 1;
                loop {
                    cols.push(col(i, &t)?);
                    match op.get(i + 1) {
                        Some(Tok::Comma) => i += 2,
                        None => break,
                        other => return Err(format!("unexpected {other:?} in project")),
                    }
                }
                t.schema = cols
                    .iter()
                    .filter_map(|c| t.schema.iter().find(|(n, _)| n == c).cloned())
                    .collect();
                t.rows = t
                    .rows
                    .into_iter()
                    .map(|r| {
                        cols.iter()
                            .map(|c| (c.clone(), r.get(c).cloned().unwrap_or(Value::Null)))
                            .collect()
                    })
                    .collect();
            }
            Some("take" | "limit") => match op.get(1) {
                Some(Tok::Num(n)) if op.len() == 2 => t.rows.truncate(*n as usize),
                _ => return Err("take/limit needs a number".into()),
            },
            Some("order" | "sort") => {
                if word(1).as_deref() != Some("by") {
                    return Err("expected 'by' after order/sort".into());
                }
                let c = col(2, &t)?;
                let asc = match word(3).as_deref() {
                    None | Some("desc") => false,
                    Some("asc") => true,
                    Some(o) => return Err(format!("unexpected '{o}' in order by")),
                };
                t.rows.sort_by(|a, b| {
                    let o = cmp(
                        a.get(&c).unwrap_or(&Value::Null),
                        b.get(&c).unwrap_or(&Value::Null),
                    );
                    if asc { o } else { o.reverse() }
                });
            }
            Some("summarize") => {
                if !(word(1).as_deref() == Some("count")
                    && op.get(2) == Some(&Tok::Open)
                    && op.get(3) == Some(&Tok::Close)
                    && word(4).as_deref() == Some("by"))
                {
                    return Err("only 'summarize count() by <columns>' is supported".into());
                }
                let mut cols = Vec::new();
                let mut i = 5;
                loop {
                    cols.push(col(i, &t)?);
                    match op.get(i + 1) {
                        Some(Tok::Comma) => i += 2,
                        None => break,
                        other => return Err(format!("unexpected {other:?} in summarize")),
                    }
                }
                let mut groups: Vec<(Vec<Value>, i64)> = Vec::new();
                for r in &t.rows {
                    let key: Vec<Value> = cols
                        .iter()
                        .map(|c| r.get(c).cloned().unwrap_or(Value::Null))
                        .collect();
                    match groups.iter_mut().find(|(k, _)| *k == key) {
                        Some(g) => g.1 += 1,
                        None => groups.push((key, 1)),
                    }
                }
                let mut schema: Vec<(String, Ty)> = cols
                    .iter()
                    .filter_map(|c| t.schema.iter().find(|(n, _)| n == c).cloned())
                    .collect();
                schema.push(("count_".into(), Ty::Long));
                t.rows = groups
                    .into_iter()
                    .map(|(k, n)| {
                        let mut r: Row = cols.iter().cloned().zip(k).collect();
                        r.insert("count_".into(), json!(n));
                        r
                    })
                    .collect();
                t.schema = schema;
            }
            Some(other) => {
                return Err(format!(
                    "the operator '{other}' is not supported by this emulator (where, project, take, limit, order by, summarize count() by)"
                ));
            }
            None => return Err("empty pipe segment".into()),
        }
    }
    if t.rows.len() > MAX_ROWS {
        t.rows.truncate(MAX_ROWS);
    }
    Ok(t)
}

fn cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

fn test(cell: &Value, op: &str, v: &Value) -> bool {
    let s = |x: &Value| {
        x.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| x.to_string())
    };
    match op {
        "==" => cmp(cell, v) == Ordering::Equal,
        "!=" => cmp(cell, v) != Ordering::Equal,
        "=~" => s(cell).eq_ignore_ascii_case(&s(v)),
        ">" => cmp(cell, v) == Ordering::Greater,
        ">=" => cmp(cell, v) != Ordering::Less,
        "<" => cmp(cell, v) == Ordering::Less,
        "<=" => cmp(cell, v) != Ordering::Greater,
        "contains" => s(cell).to_lowercase().contains(&s(v).to_lowercase()),
        "has" => s(cell)
            .to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| w == s(v).to_lowercase()),
        "startswith" => s(cell).to_lowercase().starts_with(&s(v).to_lowercase()),
        _ => false,
    }
}

fn query_of(body: &str) -> Result<String, String> {
    Ok(request_of(body)?.0)
}

/// The `Query` and (Graph) `Timespan` of a hunting request.
fn request_of(body: &str) -> Result<(String, Option<chrono::Duration>), String> {
    let v: Value = serde_json::from_str(body).map_err(|_| "the body is not JSON".to_owned())?;
    let query = v
        .get("Query")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or("the body needs a \"Query\" string")?;
    let span = match v.get("Timespan") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(iso_duration(s).ok_or(format!(
            "Timespan '{s}' is not an ISO 8601 duration such as P7D"
        ))?),
        Some(_) => return Err("Timespan must be a string such as P7D".into()),
    };
    Ok((query, span))
}

/// `P7D`, `PT12H`, `P1DT6H30M`, `P2W`: an ISO 8601 duration (no years or months).
fn iso_duration(s: &str) -> Option<chrono::Duration> {
    let rest = s.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut total = chrono::Duration::zero();
    for (part, units) in [(date, "WD"), (time, "HMS")] {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            if !units.contains(c) || num.is_empty() {
                return None;
            }
            let n: i64 = num.parse().ok()?;
            num.clear();
            total += match c {
                'W' => chrono::Duration::try_weeks(n)?,
                'D' => chrono::Duration::try_days(n)?,
                'H' => chrono::Duration::try_hours(n)?,
                'M' => chrono::Duration::try_minutes(n)?,
                _ => chrono::Duration::try_seconds(n)?,
            };
        }
        if !num.is_empty() {
            return None;
        }
    }
    (total > chrono::Duration::zero()).then_some(total)
}

/// `POST /api/advancedhunting/run`.
pub(crate) async fn xdr_run(
    Admitted(caller, _): Admitted<XdrHuntHunting>,
    State(state): State<EmulatorState>,
    body: String,
) -> Response {
    let started = std::time::Instant::now();
    match query_of(&body).and_then(|q| run(&state, &caller.tenant, &q, None)) {
        Err(e) => errors::xdr(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Query could not be executed: {e}"),
        ),
        Ok(t) => odata_json(json!({
            "Stats": {"ExecutionTime": started.elapsed().as_secs_f64(), "resource_usage": {"cpu": {"total cpu": "00:00:00"}}, "dataset_statistics": [{"table_row_count": t.rows.len(), "table_size": 0}]},
            "Schema": t.schema.iter().map(|(n, ty)| json!({"Name": n, "Type": ty.name()})).collect::<Vec<_>>(),
            "Results": t.rows,
        })),
    }
}

/// `POST /v1.0/security/runHuntingQuery`.
pub(crate) async fn graph_run(
    Admitted(caller, _): Admitted<GraphHuntHunting>,
    State(state): State<EmulatorState>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let g = GraphErrors::new(&state, &headers);
    match request_of(&body).and_then(|(q, span)| run(&state, &caller.tenant, &q, span)) {
        Err(e) => g.answer(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Query could not be executed: {e}"),
        ),
        Ok(t) => odata_json(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.security.huntingQueryResults",
            "schema": t.schema.iter().map(|(n, ty)| json!({"name": n, "type": ty.name()})).collect::<Vec<_>>(),
            "results": t.rows,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexing() {
        let t =
            lex("AlertInfo | where Severity == 'High' and Timestamp > ago(7d) | take 5").unwrap();
        assert_eq!(t[0], Tok::Ident("AlertInfo".into()));
        assert!(t.contains(&Tok::Str("High".into())));
        assert!(t.contains(&Tok::Ident("7d".into())));
        assert!(t.contains(&Tok::Num(5.0)));
        assert!(lex("AlertInfo | where x == \"open").is_err());
    }

    /// Property test: any query built from KQL's tokens, and any text, runs or is refused
    /// with a message — never a panic — against a real tenant's tables.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        const TOKENS: &[&str] = &[
            "AlertInfo",
            "AlertEvidence",
            "Nope",
            "|",
            "where",
            "take",
            "limit",
            "project",
            "summarize",
            "count",
            "by",
            "order",
            "sort",
            "top",
            "extend",
            "distinct",
            "and",
            "or",
            "==",
            "!=",
            "=~",
            "<",
            ">",
            "<=",
            ">=",
            "contains",
            "has",
            "in",
            "(",
            ")",
            ",",
            "ago(7d)",
            "7d",
            "0",
            "-1",
            "18446744073709551616",
            "1e308",
            "'High'",
            "\"x\"",
            "'",
            "Severity",
            "Timestamp",
            "Title",
            "AlertId",
            "Category",
            "asc",
            "desc",
        ];

        fn state() -> &'static (EmulatorState, String) {
            static STATE: std::sync::OnceLock<(EmulatorState, String)> = std::sync::OnceLock::new();
            STATE.get_or_init(|| {
                let config = crate::EmulatorConfig {
                    directory: crate::directory::Directory::demo(1),
                    ..Default::default()
                };
                let state = EmulatorState::new(config);
                let tenant = state.directory().tenants.first().unwrap().id.clone();
                (state, tenant)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

            #[test]
            fn any_token_query_runs_or_is_refused(
                words in proptest::collection::vec(proptest::sample::select(TOKENS), 0..14)
            ) {
                let (state, tenant) = state();
                let _ = run(state, tenant, &words.join(" "), None);
                // Past the table name, into the operators.
                let _ = run(state, tenant, &format!("AlertInfo | {}", words.join(" ")), None);
                let _ = run(state, tenant, &format!("AlertEvidence | where {}", words.join(" ")), None);
            }

            #[test]
            fn any_text_lexes_or_is_refused(text in ".{0,120}") {
                let _ = lex(&text);
                let (state, tenant) = state();
                let _ = run(state, tenant, &text, None);
            }
        }
    }
}
