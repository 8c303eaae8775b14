//! Advanced hunting: Graph `POST /security/runHuntingQuery` (`Query`, `Timespan`), or the legacy
//! `POST /api/advancedhunting/run` (`Query`) for `api = "xdr"` tenants, paced on the hunting
//! quota (45 calls a minute per app and tenant).

use reqwest::Method;
use serde_json::{Map, Value, json};
use xdrsync_model::{ApiKind, SafeUrl};

use crate::urls::api_url;
use crate::{ApiClient, ApiError, Quota, Target};

/// Microsoft's row limit of one hunting query; a result this long was cut.
pub const HUNTING_MAX_ROWS: usize = 100_000;

/// A hunting result.
#[derive(Debug, Clone, Default)]
pub struct HuntResult {
    /// `(column, type)` in order.
    pub columns: Vec<(String, String)>,
    /// The rows, as objects keyed by column.
    pub rows: Vec<Map<String, Value>>,
    /// The service stopped at its row limit: there may be more.
    pub truncated: bool,
}

impl ApiClient {
    /// Runs `query` in `target`'s tenant; `timespan` (ISO 8601, e.g. `P7D`) for Graph.
    pub async fn hunt(
        &self,
        target: &Target,
        query: &str,
        timespan: Option<&str>,
    ) -> Result<HuntResult, ApiError> {
        let (path, body, schema_key, results_key, name_key, type_key) = match target.api {
            ApiKind::Graph => {
                let mut body = json!({"Query": query});
                if let (Some(t), Some(o)) = (timespan, body.as_object_mut()) {
                    o.insert("Timespan".into(), json!(t));
                }
                (
                    "v1.0/security/runHuntingQuery",
                    body,
                    "schema",
                    "results",
                    "name",
                    "type",
                )
            }
            ApiKind::Xdr => (
                "api/advancedhunting/run",
                json!({"Query": query}),
                "Schema",
                "Results",
                "Name",
                "Type",
            ),
        };
        let mut url = api_url(target, path, "")?;
        url.set_query(None);
        let got = self
            .write(target, Method::POST, &url, &body, Quota::Hunting)
            .await?;
        let v: Value = serde_json::from_slice(&got.bytes).map_err(|e| ApiError::Decode {
            url: SafeUrl::new(url.clone()),
            message: format!("not a hunting result: {e}"),
        })?;
        let columns = v
            .get(schema_key)
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| {
                        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                        (s(name_key), s(type_key))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rows: Vec<Map<String, Value>> = v
            .get(results_key)
            .and_then(Value::as_array)
            .ok_or_else(|| ApiError::Decode {
                url: SafeUrl::new(url),
                message: format!("the hunting result has no `{results_key}`"),
            })?
            .iter()
            .filter_map(|r| r.as_object().cloned())
            .collect();
        Ok(HuntResult {
            truncated: rows.len() >= HUNTING_MAX_ROWS,
            columns,
            rows,
        })
    }
}
