//! Write-back: an [`Action`] sent to Defender, and the item read back after it.
//!
//! Graph: `PATCH /security/incidents/{id}` (or `/security/alerts_v2/{id}`) with the changed
//! fields, `POST …/comments` for a comment, then `GET` the item (incidents with
//! `$expand=alerts`, as pulls read them). Legacy API: one `PATCH /api/incidents/{id}` (its
//! comment is a field), whose answer is the whole incident (read again only if it is not). Every call goes through the same rate
//! budget as the pulls: Graph's per-tenant family, and the legacy update API's own quota.

use reqwest::Method;
use serde_json::json;
use xdrsync_model::action::{Action, Target as ItemKind};
use xdrsync_model::{ApiKind, SafeUrl, Timestamp};

use crate::urls::{api_url, encode};
use crate::{ApiClient, ApiError, Quota, Target};

/// What a write did.
#[derive(Debug, Clone)]
pub struct Written {
    /// The item as read back after the write (the API's JSON).
    pub after: String,
    /// The last-update time the PATCH answered with (the version the write made), when the
    /// API answered with the item; `None` for a comment alone.
    pub patched: Option<Timestamp>,
    /// The PATCH answer's JSON, when it carried the item.
    pub patch_answer: Option<String>,
}

impl ApiClient {
    /// Sends `action` (already validated) for the item in `target`'s tenant; `tags` are the
    /// item's current custom tags (tags are replaced as a whole by the APIs).
    pub async fn apply_action(
        &self,
        target: &Target,
        action: &Action,
        tags: &[String],
    ) -> Result<Written, ApiError> {
        let id = encode(&action.id);
        match (target.api, action.target()) {
            (ApiKind::Graph, kind) => {
                let path = match kind {
                    ItemKind::Incident => format!("v1.0/security/incidents/{id}"),
                    ItemKind::Alert => format!("v1.0/security/alerts_v2/{id}"),
                };
                let mut patched = None;
                let mut patch_answer = None;
                if let Some(body) = action.graph_patch(tags) {
                    let url = item_url(target, &path, "")?;
                    let got = self
                        .write(target, Method::PATCH, &url, &body, Quota::Graph)
                        .await?;
                    (patched, patch_answer, _) = answer_time(&got.bytes, "lastUpdateDateTime");
                }
                if let Some(c) = &action.comment {
                    let url = item_url(target, &format!("{path}/comments"), "")?;
                    let body = json!({"@odata.type": "microsoft.graph.security.alertComment", "comment": c});
                    self.write(target, Method::POST, &url, &body, Quota::Graph)
                        .await?;
                }
                let query = match kind {
                    ItemKind::Incident => "$expand=alerts",
                    ItemKind::Alert => "",
                };
                let url = item_url(target, &path, query)?;
                let after = self.get(target, &url).await?;
                Ok(Written {
                    after: String::from_utf8_lossy(&after.bytes).into_owned(),
                    patched,
                    patch_answer,
                })
            }
            (ApiKind::Xdr, ItemKind::Incident) => {
                let path = format!("api/incidents/{id}");
                let url = item_url(target, &path, "")?;
                let got = self
                    .write(
                        target,
                        Method::PATCH,
                        &url,
                        &action.legacy_patch(tags),
                        Quota::XdrUpdate,
                    )
                    .await?;
                let (patched, patch_answer, whole) = answer_time(&got.bytes, "lastUpdateTime");
                // The legacy API answers with the whole incident, its alerts embedded as
                // always: that is the version the write made, no read-back needed.
                let after = match (&patch_answer, whole) {
                    (Some(answer), true) => answer.clone(),
                    _ => String::from_utf8_lossy(&self.get(target, &url).await?.bytes).into_owned(),
                };
                Ok(Written {
                    after,
                    patched,
                    patch_answer,
                })
            }
            (ApiKind::Xdr, ItemKind::Alert) => Err(ApiError::Decode {
                url: SafeUrl::new(target.base_url.clone()),
                message: "alerts are updated through Graph (alerts_v2): set api = \"graph\" for this tenant".into(),
            }),
        }
    }
}

fn item_url(target: &Target, path: &str, query: &str) -> Result<url::Url, ApiError> {
    let mut url = api_url(target, path, query)?;
    if query.is_empty() {
        url.set_query(None);
    }
    Ok(url)
}

/// The last-update time in a PATCH answer, the answer when it is the item, and whether it
/// carries the item's alerts: one pass over the answer that keeps only those two keys (the
/// answer is a whole incident with its alerts; building it as a tree cost a tenth of a bulk
/// apply's CPU).
fn answer_time(body: &[u8], field: &str) -> (Option<Timestamp>, Option<String>, bool) {
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(rename = "lastUpdateTime", borrow, default)]
        xdr: Option<std::borrow::Cow<'a, str>>,
        #[serde(rename = "lastUpdateDateTime", borrow, default)]
        graph: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        alerts: Option<serde::de::IgnoredAny>,
    }
    let Ok(a) = serde_json::from_slice::<Answer<'_>>(body) else {
        return (None, None, false);
    };
    let text = if field == "lastUpdateTime" {
        a.xdr
    } else {
        a.graph
    };
    let t = text.and_then(|s| s.parse().ok());
    (
        t,
        t.map(|_| String::from_utf8_lossy(body).into_owned()),
        a.alerts.is_some(),
    )
}
