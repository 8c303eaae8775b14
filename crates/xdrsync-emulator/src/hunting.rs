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
/// The rows a query returns at most: more are cut off (documented for every hunting API).
const MAX_ROWS: usize = 100_000;

/// The answer to a result over the size limit (the MDE documentation's wording).
const RESULT_TOO_LARGE: &str = "Query execution has exceeded the allowed result size. Optimize your query by limiting the number of results and try again.";

/// The JSON size of `rows`, as the answer would carry them.
fn result_bytes(rows: &[Map<String, Value>]) -> usize {
    rows.iter()
        .map(|r| serde_json::to_vec(r).map_or(0, |v| v.len() + 1))
        .sum()
}

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

/// How `extend` computes its column from a row.
type Cell = Box<dyn Fn(&Row) -> Value>;

struct Table {
    schema: Vec<(String, Ty)>,
    rows: Vec<Row>,
}

impl Table {
    /// The schema of `cols`, in their order.
    fn schema_of(&self, cols: &[String]) -> Vec<(String, Ty)> {
        cols.iter()
            .filter_map(|c| self.schema.iter().find(|(n, _)| n == c).cloned())
            .collect()
    }
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
        "DeviceProcessEvents" | "DeviceNetworkEvents" | "DeviceEvents" | "EmailEvents"
        | "IdentityLogonEvents" => Some(activity_table(name, &alerts)),
        _ => None,
    }
}

/// The activity tables SOC queries use most, made from the same alerts' entities, so a
/// device, user, file or address in an alert's evidence is the one in the events: a join on
/// `DeviceId`, `SHA1` or `AccountUpn` finds them together.
fn activity_table(name: &str, alerts: &[crate::world::EmuAlert]) -> Table {
    let cols: &[(&str, Ty)] = match name {
        "DeviceProcessEvents" => &[
            ("Timestamp", Ty::DateTime),
            ("DeviceId", Ty::Str),
            ("DeviceName", Ty::Str),
            ("ActionType", Ty::Str),
            ("FileName", Ty::Str),
            ("FolderPath", Ty::Str),
            ("SHA1", Ty::Str),
            ("ProcessCommandLine", Ty::Str),
            ("AccountName", Ty::Str),
            ("ReportId", Ty::Long),
        ],
        "DeviceNetworkEvents" => &[
            ("Timestamp", Ty::DateTime),
            ("DeviceId", Ty::Str),
            ("DeviceName", Ty::Str),
            ("ActionType", Ty::Str),
            ("RemoteIP", Ty::Str),
            ("RemoteUrl", Ty::Str),
            ("RemotePort", Ty::Long),
            ("InitiatingProcessFileName", Ty::Str),
            ("ReportId", Ty::Long),
        ],
        "DeviceEvents" => &[
            ("Timestamp", Ty::DateTime),
            ("DeviceId", Ty::Str),
            ("DeviceName", Ty::Str),
            ("ActionType", Ty::Str),
            ("FileName", Ty::Str),
            ("FolderPath", Ty::Str),
            ("SHA1", Ty::Str),
            ("SHA256", Ty::Str),
            ("ReportId", Ty::Long),
        ],
        "EmailEvents" => &[
            ("Timestamp", Ty::DateTime),
            ("NetworkMessageId", Ty::Str),
            ("SenderFromAddress", Ty::Str),
            ("RecipientEmailAddress", Ty::Str),
            ("Subject", Ty::Str),
            ("DeliveryAction", Ty::Str),
            ("ThreatTypes", Ty::Str),
        ],
        _ => &[
            ("Timestamp", Ty::DateTime),
            ("AccountUpn", Ty::Str),
            ("AccountName", Ty::Str),
            ("AccountDomain", Ty::Str),
            ("ActionType", Ty::Str),
            ("LogonType", Ty::Str),
            ("DeviceName", Ty::Str),
            ("IPAddress", Ty::Str),
        ],
    };
    let mut rows = Vec::new();
    let mut report = 0i64;
    for a in alerts {
        let device = a.devices.first();
        let ts = a.activity.0.to_string();
        let ip = a
            .entities
            .iter()
            .find_map(|e| e.fields.get("ipAddress").cloned())
            .unwrap_or(Value::Null);
        let process = a
            .entities
            .iter()
            .find(|e| e.kind == "Process")
            .and_then(|e| e.fields.get("fileName").cloned())
            .unwrap_or(Value::Null);
        for e in &a.entities {
            let f = |k: &str| e.fields.get(k).cloned().unwrap_or(Value::Null);
            report += 1;
            let dev = |v: &mut Map<String, Value>| {
                v.insert("DeviceId".into(), json!(device.map(|d| d.id.clone())));
                v.insert(
                    "DeviceName".into(),
                    json!(device.map(|d| d.dns_name.clone())),
                );
            };
            let mut v = Map::new();
            v.insert("Timestamp".into(), json!(ts));
            match (name, e.kind) {
                ("DeviceProcessEvents", "Process") if device.is_some() => {
                    dev(&mut v);
                    v.insert("ActionType".into(), json!("ProcessCreated"));
                    v.insert("FileName".into(), f("fileName"));
                    v.insert("FolderPath".into(), f("filePath"));
                    v.insert("SHA1".into(), f("sha1"));
                    v.insert("ProcessCommandLine".into(), f("processCommandLine"));
                    v.insert("AccountName".into(), json!("system"));
                    v.insert("ReportId".into(), json!(report));
                }
                ("DeviceNetworkEvents", "Ip" | "Url") if device.is_some() => {
                    dev(&mut v);
                    v.insert("ActionType".into(), json!("ConnectionSuccess"));
                    v.insert(
                        "RemoteIP".into(),
                        if e.kind == "Ip" {
                            f("ipAddress")
                        } else {
                            ip.clone()
                        },
                    );
                    v.insert("RemoteUrl".into(), f("url"));
                    v.insert("RemotePort".into(), json!(443));
                    v.insert("InitiatingProcessFileName".into(), process.clone());
                    v.insert("ReportId".into(), json!(report));
                }
                ("DeviceEvents", "File") if device.is_some() => {
                    dev(&mut v);
                    v.insert("ActionType".into(), json!("AntivirusDetection"));
                    v.insert("FileName".into(), f("fileName"));
                    v.insert("FolderPath".into(), f("filePath"));
                    v.insert("SHA1".into(), f("sha1"));
                    v.insert("SHA256".into(), f("sha256"));
                    v.insert("ReportId".into(), json!(report));
                }
                ("EmailEvents", "MailMessage") => {
                    v.insert(
                        "NetworkMessageId".into(),
                        json!(format!("{}-{report}", a.id)),
                    );
                    v.insert("SenderFromAddress".into(), f("sender"));
                    v.insert("RecipientEmailAddress".into(), f("recipient"));
                    v.insert("Subject".into(), f("subject"));
                    v.insert("DeliveryAction".into(), f("deliveryAction"));
                    v.insert("ThreatTypes".into(), json!("Phish"));
                }
                ("IdentityLogonEvents", "User") => {
                    v.insert("AccountUpn".into(), f("userPrincipalName"));
                    v.insert("AccountName".into(), f("accountName"));
                    v.insert("AccountDomain".into(), f("domainName"));
                    v.insert("ActionType".into(), json!("LogonSuccess"));
                    v.insert("LogonType".into(), json!("Interactive"));
                    v.insert(
                        "DeviceName".into(),
                        json!(device.map(|d| d.dns_name.clone())),
                    );
                    v.insert("IPAddress".into(), ip.clone());
                }
                _ => continue,
            }
            rows.push(v);
        }
    }
    Table {
        schema: cols.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect(),
        rows,
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
    run_tokens(state, tenant, &toks, timespan, 0)
}

/// The pipe-separated parts of `toks`, pipes inside parentheses (a `join`'s right side) kept.
fn split_pipes(toks: &[Tok]) -> Vec<&[Tok]> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Open => depth += 1,
            Tok::Close => depth = depth.saturating_sub(1),
            Tok::Pipe if depth == 0 => {
                out.push(toks.get(start..i).unwrap_or_default());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(toks.get(start..).unwrap_or_default());
    out
}

/// `bin(<col>, <span>)` at `op[i..]`: the column and the span, and the tokens used.
fn bin_of(op: &[Tok], i: usize) -> Option<(String, chrono::Duration, usize)> {
    match (
        op.get(i),
        op.get(i + 1),
        op.get(i + 2),
        op.get(i + 3),
        op.get(i + 4),
        op.get(i + 5),
    ) {
        (
            Some(Tok::Ident(f)),
            Some(Tok::Open),
            Some(Tok::Ident(c)),
            Some(Tok::Comma),
            Some(Tok::Ident(s)),
            Some(Tok::Close),
        ) if f.eq_ignore_ascii_case("bin") => Some((c.clone(), span(s)?, 6)),
        _ => None,
    }
}

/// A time floored to a multiple of `span` (from the epoch), as `bin()` does.
fn floor_time(v: &Value, span: chrono::Duration) -> Value {
    let Some(t) = v.as_str().and_then(|s| s.parse::<Timestamp>().ok()) else {
        return Value::Null;
    };
    let ms = span.num_milliseconds().max(1);
    let at = t.as_datetime().timestamp_millis();
    let floored = at - at.rem_euclid(ms);
    chrono::DateTime::from_timestamp_millis(floored)
        .map(|d| json!(Timestamp::from_datetime(d).to_string()))
        .unwrap_or(Value::Null)
}

fn run_tokens(
    state: &EmulatorState,
    tenant: &str,
    toks: &[Tok],
    timespan: Option<chrono::Duration>,
    depth: usize,
) -> Result<Table, String> {
    if depth > 3 {
        return Err("joins nest too deep".into());
    }
    let pieces = split_pipes(toks);
    let mut parts = pieces.into_iter();
    let first = parts.next().unwrap_or_default();
    let [Tok::Ident(name)] = first else {
        return Err("a query starts with a table name, e.g. AlertInfo".into());
    };
    let mut t = table(state, tenant, name).ok_or(format!(
        "'{name}' is not a table this emulator knows (AlertInfo, AlertEvidence, DeviceProcessEvents, DeviceNetworkEvents, DeviceEvents, EmailEvents, IdentityLogonEvents)"
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
        // `c1, c2, …` from `op[start..]` to the end of the operator.
        let col_list = |start: usize, what: &str, t: &Table| -> Result<Vec<String>, String> {
            let mut cols = Vec::new();
            let mut i = start;
            loop {
                cols.push(col(i, t)?);
                match op.get(i + 1) {
                    Some(Tok::Comma) => i += 2,
                    None => return Ok(cols),
                    other => return Err(format!("unexpected {other:?} in {what}")),
                }
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
                let cols = col_list(1, "project", &t)?;
                t.schema = t.schema_of(&cols);
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
                    return Err(
                        "only 'summarize count() by <columns or bin(<column>, <span>)>' is supported"
                            .into(),
                    );
                }
                // Group columns, each maybe `bin(<column>, <span>)` (floored times).
                let mut cols = Vec::new();
                let mut bins: Vec<Option<chrono::Duration>> = Vec::new();
                let mut i = 5;
                loop {
                    match bin_of(op, i) {
                        Some((c, s, used)) => {
                            cols.push(col(i + 2, &t).map(|_| c)?);
                            bins.push(Some(s));
                            i += used - 1;
                        }
                        None => {
                            cols.push(col(i, &t)?);
                            bins.push(None);
                        }
                    }
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
                        .zip(&bins)
                        .map(|(c, b)| {
                            let v = r.get(c).cloned().unwrap_or(Value::Null);
                            match b {
                                Some(s) => floor_time(&v, *s),
                                None => v,
                            }
                        })
                        .collect();
                    match groups.iter_mut().find(|(k, _)| *k == key) {
                        Some(g) => g.1 += 1,
                        None => groups.push((key, 1)),
                    }
                }
                let mut schema = t.schema_of(&cols);
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
            Some("count") if op.len() == 1 => {
                let n = t.rows.len();
                t.schema = vec![("Count".into(), Ty::Long)];
                t.rows = vec![[("Count".to_owned(), json!(n))].into_iter().collect()];
            }
            Some("distinct") => {
                let cols = col_list(1, "distinct", &t)?;
                let mut seen: Vec<Vec<Value>> = Vec::new();
                let mut rows = Vec::new();
                for r in &t.rows {
                    let key: Vec<Value> = cols
                        .iter()
                        .map(|c| r.get(c).cloned().unwrap_or(Value::Null))
                        .collect();
                    if !seen.contains(&key) {
                        rows.push(cols.iter().cloned().zip(key.iter().cloned()).collect());
                        seen.push(key);
                    }
                }
                t.schema = t.schema_of(&cols);
                t.rows = rows;
            }
            Some("top") => {
                let (Some(Tok::Num(n)), Some("by")) = (op.get(1), word(2).as_deref()) else {
                    return Err("top needs a number and 'by <column>'".into());
                };
                let c = col(3, &t)?;
                let asc = match word(4).as_deref() {
                    None | Some("desc") => false,
                    Some("asc") => true,
                    Some(o) => return Err(format!("unexpected '{o}' in top")),
                };
                t.rows.sort_by(|a, b| {
                    let o = cmp(
                        a.get(&c).unwrap_or(&Value::Null),
                        b.get(&c).unwrap_or(&Value::Null),
                    );
                    if asc { o } else { o.reverse() }
                });
                t.rows.truncate(*n as usize);
            }
            Some("extend") => {
                let Some(Tok::Ident(name)) = op.get(1) else {
                    return Err("extend needs 'Name = <column, literal or bin()>'".into());
                };
                if op.get(2) != Some(&Tok::Op("=".into())) {
                    return Err("extend needs 'Name = …'".into());
                }
                let (ty, value): (Ty, Cell) = match (op.get(3), op.len()) {
                    (Some(Tok::Str(s)), 4) => {
                        let s = s.clone();
                        (Ty::Str, Box::new(move |_| json!(s)))
                    }
                    (Some(Tok::Num(n)), 4) => {
                        let n = *n;
                        (Ty::Long, Box::new(move |_| json!(n)))
                    }
                    (Some(Tok::Ident(_)), 4) => {
                        let c = col(3, &t)?;
                        let ty = t
                            .schema
                            .iter()
                            .find(|(n, _)| *n == c)
                            .map_or(Ty::Str, |x| x.1);
                        (
                            ty,
                            Box::new(move |r: &Row| r.get(&c).cloned().unwrap_or(Value::Null)),
                        )
                    }
                    _ => match bin_of(op, 3) {
                        Some((c, s, 6)) if op.len() == 9 => {
                            let c = col(5, &t).map(|_| c)?;
                            (
                                Ty::DateTime,
                                Box::new(move |r: &Row| {
                                    floor_time(r.get(&c).unwrap_or(&Value::Null), s)
                                }),
                            )
                        }
                        _ => {
                            return Err(
                                "extend takes a column, a literal or bin(<column>, <span>)".into(),
                            );
                        }
                    },
                };
                for r in &mut t.rows {
                    let v = value(r);
                    r.insert(name.clone(), v);
                }
                t.schema.retain(|(n, _)| n != name);
                t.schema.push((name.clone(), ty));
            }
            Some("join") => {
                // join kind=inner (<query>) on <column>
                let inner = matches!(
                    (word(1).as_deref(), op.get(2), word(3).as_deref()),
                    (Some("kind"), Some(Tok::Op(eq)), Some("inner")) if eq == "="
                );
                if !inner {
                    return Err("only 'join kind=inner (<query>) on <column>' is supported".into());
                }
                let Some(Tok::Open) = op.get(4) else {
                    return Err("join needs '(<query>)'".into());
                };
                let mut level = 0usize;
                let mut close = None;
                for (i, tok) in op.iter().enumerate().skip(4) {
                    match tok {
                        Tok::Open => level += 1,
                        Tok::Close => {
                            level -= 1;
                            if level == 0 {
                                close = Some(i);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let Some(close) = close else {
                    return Err("join: unbalanced parentheses".into());
                };
                let right = run_tokens(
                    state,
                    tenant,
                    op.get(5..close).unwrap_or_default(),
                    timespan,
                    depth + 1,
                )?;
                if word(close + 1).as_deref() != Some("on") {
                    return Err("join needs 'on <column>'".into());
                }
                let key = match op.get(close + 2) {
                    Some(Tok::Ident(k))
                        if t.schema.iter().any(|(n, _)| n == k)
                            && right.schema.iter().any(|(n, _)| n == k) =>
                    {
                        k.clone()
                    }
                    other => return Err(format!("join: {other:?} is not a column of both sides")),
                };
                // Right-side columns whose names the left has get a `1` (as Kusto names them).
                let rename = |n: &str| {
                    if t.schema.iter().any(|(l, _)| l == n) {
                        format!("{n}1")
                    } else {
                        n.to_owned()
                    }
                };
                let mut schema = t.schema.clone();
                schema.extend(right.schema.iter().map(|(n, ty)| (rename(n), *ty)));
                let mut rows = Vec::new();
                for l in &t.rows {
                    let k = l.get(&key).unwrap_or(&Value::Null);
                    if k.is_null() {
                        continue;
                    }
                    for r in right.rows.iter().filter(|r| r.get(&key) == Some(k)) {
                        let mut row = l.clone();
                        for (n, v) in r {
                            row.insert(rename(n), v.clone());
                        }
                        rows.push(row);
                        if rows.len() > MAX_ROWS {
                            break;
                        }
                    }
                }
                t.schema = schema;
                t.rows = rows;
            }
            Some(other) => {
                return Err(format!(
                    "the operator '{other}' is not supported by this emulator (where, project, extend, take, limit, top, order by, distinct, count, summarize count() by, join kind=inner)"
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
        // The documented result size limit (50 MB for Graph): the service refuses the query
        // rather than cutting the rows.
        Ok(t) if result_bytes(&t.rows) > state.behaviour().hunting_max_result_bytes => {
            g.answer(StatusCode::BAD_REQUEST, "BadRequest", RESULT_TOO_LARGE)
        }
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

    /// The activity tables come from the alerts' own entities (a join finds them together),
    /// and the operators SOC queries use work as Kusto's do.
    #[test]
    fn activity_tables_and_operators() {
        let config = crate::EmulatorConfig {
            directory: crate::directory::Directory::demo(3),
            ..Default::default()
        };
        let state = EmulatorState::new(config);
        let tenant = state.directory().tenants[1].id.clone();
        let q = |query: &str| {
            run(&state, &tenant, query, None).unwrap_or_else(|e| panic!("{query}: {e}"))
        };
        let count = |query: &str| q(query).rows[0]["Count"].as_u64().unwrap();
        for table in [
            "DeviceProcessEvents",
            "DeviceNetworkEvents",
            "DeviceEvents",
            "EmailEvents",
            "IdentityLogonEvents",
        ] {
            assert!(count(&format!("{table} | count")) > 0, "{table} is empty");
        }
        let names = q("DeviceProcessEvents | distinct DeviceName");
        let mut seen: Vec<&Value> = names.rows.iter().map(|r| &r["DeviceName"]).collect();
        let n = seen.len();
        seen.dedup();
        assert_eq!(seen.len(), n);
        let joined = q(
            "AlertEvidence | where EntityType == 'Process' | join kind=inner (DeviceProcessEvents | project DeviceId, ProcessCommandLine) on DeviceId | take 5",
        );
        assert_eq!(joined.rows.len(), 5);
        for r in &joined.rows {
            assert!(
                r["AlertId"].is_string() && r["ProcessCommandLine"].is_string(),
                "{r:?}"
            );
            assert_eq!(r["DeviceId"], r["DeviceId1"]);
        }
        let by_day = q("AlertInfo | summarize count() by bin(Timestamp, 1d)");
        let total: u64 = by_day
            .rows
            .iter()
            .map(|r| r["count_"].as_u64().unwrap())
            .sum();
        assert_eq!(total, count("AlertInfo | count"));
        assert!(
            by_day
                .rows
                .iter()
                .all(|r| r["Timestamp"].as_str().unwrap().contains("T00:00:00"))
        );
        let top = q("AlertInfo | top 3 by Timestamp desc");
        assert_eq!(top.rows.len(), 3);
        assert!(cmp(&top.rows[0]["Timestamp"], &top.rows[2]["Timestamp"]) != Ordering::Less);
        let ext = q(
            "AlertInfo | extend Day = bin(Timestamp, 1d) | extend Source = 'emulator' | project AlertId, Day, Source | take 2",
        );
        assert_eq!(
            ext.schema
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["AlertId", "Day", "Source"]
        );
        assert_eq!(ext.rows[0]["Source"], "emulator");
        // The users who logged on are the alerts' users.
        let evidence: Vec<Value> =
            q("AlertEvidence | where EntityType == 'User' | distinct AccountUpn")
                .rows
                .into_iter()
                .map(|r| r["AccountUpn"].clone())
                .collect();
        for r in q("IdentityLogonEvents | distinct AccountUpn").rows {
            assert!(evidence.contains(&r["AccountUpn"]), "{r:?}");
        }
        for bad in [
            "AlertInfo | join kind=leftouter (AlertInfo) on AlertId",
            "AlertInfo | join kind=inner (AlertInfo on AlertId",
            "AlertInfo | join kind=inner (AlertInfo) on Nope",
            "AlertInfo | top x by Timestamp",
            "AlertInfo | extend = 1",
            "AlertInfo | summarize count() by bin(Timestamp)",
        ] {
            assert!(run(&state, &tenant, bad, None).is_err(), "{bad}");
        }
        assert_eq!(iso_duration("P7D"), Some(chrono::Duration::days(7)));
        assert_eq!(iso_duration("PT1H30M"), Some(chrono::Duration::minutes(90)));
        assert_eq!(iso_duration("P1W"), Some(chrono::Duration::days(7)));
        for bad in ["7d", "P", "PT", "P1Y", "P-1D", "PT1D"] {
            assert_eq!(iso_duration(bad), None, "{bad}");
        }
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
            "join",
            "kind=inner",
            "kind",
            "=",
            "on",
            "bin(Timestamp, 1h)",
            "bin",
            "DeviceProcessEvents",
            "DeviceNetworkEvents",
            "EmailEvents",
            "IdentityLogonEvents",
            "DeviceId",
            "(AlertInfo | take 3)",
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
