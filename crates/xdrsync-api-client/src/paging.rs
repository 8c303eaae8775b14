//! Listing by time boundary: pages read, items normalized (or poisoned), alerts attached.

use std::collections::HashMap;

use serde_json::Value;
use serde_json::value::RawValue;
use xdrsync_model::sparse::Fields;
use xdrsync_model::{
    ApiKind, GRAPH_ALERT_FIELDS, GRAPH_INCIDENT_FIELDS, MDE_ALERT_FIELDS, NormalizeError, Record,
    SafeUrl, TenantId, Timestamp, XDR_INCIDENT_FIELDS, normalize_graph_alert,
    normalize_graph_incident, normalize_mde_alert, normalize_siem_detection,
    normalize_xdr_incident,
};

use crate::{
    ApiClient, ApiError, Fetched, Listing, Page, PageBody, Paging, Poison, Source, Target,
    bytes_like,
};

use crate::urls::{PageRequest, api_url, encode, list_url};

impl ApiClient {
    /// Lists every incident with a last-update time `≥ since` (and `≤ until`, if given).
    pub async fn list_incidents(
        &self,
        target: &Target,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<Listing, ApiError> {
        self.list(target, &Source::Incidents, since, until).await
    }

    /// Lists every item of `source` with a last-update time `≥ since` (and `≤ until`).
    pub async fn list(
        &self,
        target: &Target,
        source: &Source,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<Listing, ApiError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Page>(2);
        let mut records = Vec::new();
        let mut poison = Vec::new();
        let collect = async {
            while let Some(page) = rx.recv().await {
                records.extend(page.records);
                poison.extend(page.poison);
            }
        };
        let (paging, ()) = tokio::join!(self.list_pages(target, source, since, until, tx), collect);
        Ok(Listing {
            records,
            poison,
            paging: paging?,
        })
    }

    /// [`ApiClient::list`], sending each page's new items to `pages` as soon as it is read, so
    /// a caller can store a page while the next one is fetched and never holds the whole
    /// listing in memory (the channel's capacity is how far the listing may run ahead). Items
    /// repeated across pages (boundary re-reads) are sent once. If the receiver is dropped the
    /// listing stops with [`ApiError::Abandoned`].
    pub async fn list_pages(
        &self,
        target: &Target,
        source: &Source,
        since: Timestamp,
        until: Option<Timestamp>,
        pages: tokio::sync::mpsc::Sender<Page>,
    ) -> Result<Paging, ApiError> {
        let mut listing = Paging::default();
        let n = target.page_size.max(1) as usize;
        let mut page = PageRequest {
            since,
            upper: until,
            skip: 0,
            limit: true,
        };
        let siem = matches!(source, Source::Detections(_));
        // Boundary pages overlap by the items at the boundary time; these drop the repeats.
        let mut seen = std::collections::HashSet::new();
        let mut seen_poison = std::collections::HashSet::new();
        loop {
            let mut alert_failures: HashMap<String, String> = HashMap::new();
            let mut listed_times: HashMap<String, Timestamp> = HashMap::new();
            let url = list_url(target, source, &page, true)?;
            if target.api == ApiKind::Graph && page.skip > crate::GRAPH_MAX_SKIP {
                // Only a tie group (or an unordered answer) larger than 500 items gets here:
                // the time boundary cannot split one instant, and Graph refuses the offset.
                return Err(ApiError::Unpageable {
                    url: SafeUrl::new(url),
                    message: format!(
                        "more than {} items share one lastUpdateDateTime ({}) or the list was not ordered, and Graph refuses $skip above {}; the stream stays at its cursor (nothing is skipped)",
                        crate::GRAPH_MAX_SKIP,
                        page.upper.map_or_else(|| "?".to_owned(), |t| t.to_string()),
                        crate::GRAPH_MAX_SKIP
                    ),
                });
            }
            let body = if target.api == ApiKind::Graph && *source == Source::Incidents {
                match self.get_with(target, &url, 2).await {
                    Err(e) if e.status().is_some_and(|s| (500..=599).contains(&s)) => {
                        // Big incidents make `$expand=alerts` fail for good (peers.md §10.2,
                        // Elastic #18144): read the page without it and each incident on its
                        // own with its alerts, so the cursor keeps moving.
                        tracing::warn!(tenant = %target.tenant, error = %e, "The incident list with $expand=alerts failed; reading this page without it and each incident on its own.");
                        listing.expand_fallbacks += 1;
                        let plain = list_url(target, source, &page, false)?;
                        let body = self.get(target, &plain).await?;
                        listing.pages += 1;
                        let (body, failed, times, batched) =
                            self.attach_alerts(target, body).await?;
                        listing.batched_reads += batched;
                        alert_failures = failed;
                        listed_times = times;
                        body
                    }
                    other => other?,
                }
            } else {
                self.get(target, &url).await?
            };
            listing.pages += 1;
            if let Some(w) = body.warning.clone() {
                listing.partial.push(w);
            }
            let not_a_page = |e: serde_json::Error| ApiError::Decode {
                url: SafeUrl::new(url.clone()),
                message: format!(
                    "not {}: {e}",
                    if siem {
                        "a JSON array"
                    } else {
                        "an OData collection"
                    }
                ),
            };
            let items: Vec<&RawValue> = if siem {
                serde_json::from_slice(&body.bytes).map_err(not_a_page)?
            } else {
                serde_json::from_slice::<PageBody<'_>>(&body.bytes)
                    .map_err(not_a_page)?
                    .value
            };
            let count = items.len();
            let mut times = Vec::with_capacity(count);
            let mut page_items = Page::default();
            for raw in items {
                match read_item(target, source, raw) {
                    Ok(f) => {
                        let id = f.record.item_id();
                        // Paging bounds on the time the list gave, even for an incident that
                        // was replaced by its single read or could not be completed.
                        times.push(
                            listed_times
                                .get(&id)
                                .copied()
                                .unwrap_or(f.record.last_update()),
                        );
                        if let Some(reason) = alert_failures.get(&id) {
                            let p = Poison {
                                item_id: Some(id),
                                reason: reason.clone(),
                                raw: f.raw,
                            };
                            if seen_poison.insert(p.raw.clone()) {
                                page_items.poison.push(p);
                            }
                        } else if seen.insert((id, f.record.last_update())) {
                            page_items.records.push(f);
                        }
                    }
                    Err(p) => {
                        if seen_poison.insert(p.raw.clone()) {
                            page_items.poison.push(p);
                        }
                    }
                }
            }
            if (!page_items.records.is_empty() || !page_items.poison.is_empty())
                && pages.send(page_items).await.is_err()
            {
                return Err(ApiError::Abandoned);
            }
            if !page.limit {
                // The SIEM API's one instant, read whole: go on below it.
                page.limit = true;
                page.since = since;
                page.upper = Some(
                    page.upper
                        .unwrap_or(since)
                        .sub(chrono::Duration::nanoseconds(100)),
                );
                if page.upper.is_some_and(|u| u < since) {
                    break;
                }
                continue;
            }
            if count < n {
                break;
            }
            let descending = times.iter().zip(times.iter().skip(1)).all(|(a, b)| a >= b);
            let Some(&oldest) = times.last() else {
                if siem {
                    return Err(ApiError::Decode {
                        url: SafeUrl::new(url.clone()),
                        message: format!(
                            "a full page of {count} detections none of which can be read; the SIEM API cannot page past them"
                        ),
                    });
                }
                // A full page of unreadable items: step past it by offset.
                page.skip += count;
                continue;
            };
            if !descending || listing.fell_back_to_offset {
                if siem {
                    return Err(ApiError::Decode {
                        url: SafeUrl::new(url.clone()),
                        message: "the SIEM API did not list detections newest first, and it has no offset to page with".into(),
                    });
                }
                if !listing.fell_back_to_offset {
                    tracing::warn!(tenant = %target.tenant, api = %target.api, "The API did not list items newest first; falling back to offset paging over a fixed window.");
                    listing.fell_back_to_offset = true;
                    // Fix the window's upper end so new updates cannot shift the offsets.
                    page.upper = Some(
                        page.upper
                            .unwrap_or_else(|| times.iter().copied().max().unwrap_or(oldest)),
                    );
                }
                page.skip += count;
                continue;
            }
            let readable_at_oldest = times.iter().filter(|t| **t == oldest).count();
            if readable_at_oldest == times.len() {
                // The whole page is one instant (a tie group larger than a page): only an
                // offset can step through it. Unreadable items are counted as part of it.
                if siem {
                    // The SIEM API has no offset: read that instant alone, without a limit.
                    page = PageRequest {
                        since: oldest,
                        upper: Some(oldest),
                        skip: 0,
                        limit: false,
                    };
                } else if page.upper == Some(oldest) {
                    page.skip += count;
                } else {
                    page.upper = Some(oldest);
                    page.skip = count;
                }
            } else {
                // Move the boundary down to the oldest time and read the items at exactly
                // that time again rather than skip them: if one of them is updated meanwhile it
                // leaves the window, and a skip count would then jump over an unseen item.
                page.upper = Some(oldest);
                page.skip = 0;
            }
        }
        Ok(listing)
    }
}

impl ApiClient {
    /// Replaces each incident of a Graph page read without `$expand` by the same incident
    /// read on its own with `GET /security/incidents/{id}?$expand=alerts` (Microsoft reports
    /// the 500 for `$expand` combined with a list `$filter`; the single read works, and
    /// alerts_v2 cannot be filtered by incident). The single reads go 20 at a time in one Graph
    /// `$batch` (one round trip instead of 20, the same rate budget: each request in a batch is
    /// paced and throttled as a call); a request the batch could not answer with the incident
    /// (throttled, failed, or the whole batch refused) is read again on its own with the usual
    /// retries, after waiting out the longest `Retry-After` the batch carried. If the incident
    /// changed in between, the newer version is what is stored: it is as valid a version as the
    /// listed one. An incident whose single read fails too is returned in the map with the
    /// reason, to be recorded as poison while the cursor moves on.
    async fn attach_alerts(
        &self,
        target: &Target,
        body: bytes_like::Body,
    ) -> Result<ExpandedPage, ApiError> {
        let mut failed = HashMap::new();
        let mut listed_times = HashMap::new();
        let mut page: Value =
            serde_json::from_slice(&body.bytes).map_err(|e| ApiError::Decode {
                url: SafeUrl::new(target.base_url.clone()),
                message: format!("not an OData collection: {e}"),
            })?;
        let Some(items) = page.get_mut("value").and_then(Value::as_array_mut) else {
            return Ok((body, failed, listed_times, 0));
        };
        let mut batched = 0u32;
        let ids: Vec<(usize, String)> = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| Some((i, item.get("id")?.as_str()?.to_owned())))
            .collect();
        for chunk in ids.chunks(GRAPH_BATCH) {
            let mut answers = self.batch_incidents(target, chunk).await?;
            for (i, id) in chunk {
                let got = match answers.remove(id) {
                    Some(one) => {
                        batched += 1;
                        Ok(one)
                    }
                    None => self.read_incident(target, id).await?,
                };
                let Some(item) = items.get_mut(*i) else {
                    continue;
                };
                match got {
                    Ok(mut one) => {
                        if let Some(o) = one.as_object_mut() {
                            o.remove("@odata.context");
                        }
                        // Paging bounds on the time the list gave, not a newer one.
                        let listed = item
                            .get("lastUpdateDateTime")
                            .and_then(Value::as_str)
                            .and_then(|t| t.parse::<Timestamp>().ok());
                        if let Some(t) = listed {
                            listed_times.insert(id.clone(), t);
                        }
                        *item = one;
                    }
                    Err(reason) => {
                        failed.insert(id.clone(), reason);
                    }
                }
            }
        }
        Ok((
            bytes_like::Body {
                bytes: serde_json::to_vec(&page).unwrap_or_default(),
                warning: body.warning,
            },
            failed,
            listed_times,
            batched,
        ))
    }

    /// One incident with its alerts, read on its own: `Ok(Err(reason))` when it cannot be
    /// read (poison for that incident), `Err` when nothing can be (auth, transport).
    async fn read_incident(
        &self,
        target: &Target,
        id: &str,
    ) -> Result<Result<Value, String>, ApiError> {
        let path = format!("v1.0/security/incidents/{}", encode(id));
        let url = api_url(target, &path, "$expand=alerts")?;
        match self.get(target, &url).await {
            Ok(got) => Ok(match serde_json::from_slice::<Value>(&got.bytes) {
                Ok(one) if one.get("id").is_some() => Ok(one),
                _ => Err("the incident read with its alerts is not an incident".into()),
            }),
            Err(e @ (ApiError::Auth(_) | ApiError::Transport { .. })) => Err(e),
            Err(e) if e.status().is_some_and(|s| s == 401 || s == 403) => Err(e),
            // Throttling that outlasted the retries says nothing about the incident: the page
            // fails and the stream is read again (a poisoned incident would lose its alerts).
            Err(e @ ApiError::Exhausted { .. })
                if !e
                    .status()
                    .is_some_and(|s| (500..=599).contains(&s) && s != 503) =>
            {
                Err(e)
            }
            Err(e) => Ok(Err(format!("its alerts cannot be read: {e}"))),
        }
    }

    /// Reads the incidents of `chunk` (≤ 20) with their alerts in one `POST /v1.0/$batch`:
    /// the incidents the batch answered with 200, by id. The others are left to single reads;
    /// before those, the budget waits out the longest `Retry-After` of a throttled request.
    /// A batch the service refuses or fails is logged and answers nothing (all read singly);
    /// only a token problem is an error.
    async fn batch_incidents(
        &self,
        target: &Target,
        chunk: &[(usize, String)],
    ) -> Result<HashMap<String, Value>, ApiError> {
        let mut out = HashMap::new();
        if chunk.len() < 2 {
            return Ok(out);
        }
        let requests: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(n, (_, id))| {
                serde_json::json!({
                    "id": n.to_string(),
                    "method": "GET",
                    "url": format!("/security/incidents/{}?$expand=alerts", encode(id)),
                })
            })
            .collect();
        let payload = serde_json::json!({ "requests": requests }).to_string();
        let mut url = api_url(target, "v1.0/$batch", "")?;
        url.set_query(None);
        let call = crate::Call {
            url: &url,
            method: reqwest::Method::POST,
            json: Some(payload.as_bytes()),
            quota: Some(crate::Quota::Graph),
            cost: chunk.len(),
        };
        let body = match self.send(target, &call, 2).await {
            Ok(b) => b,
            Err(e @ ApiError::Auth(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(tenant = %target.tenant, error = %e, "The $batch of incident reads failed; reading each incident on its own.");
                return Ok(out);
            }
        };
        let Ok(answer) = serde_json::from_slice::<BatchAnswer>(&body.bytes) else {
            tracing::warn!(tenant = %target.tenant, "The $batch answer has no `responses`; reading each incident on its own.");
            return Ok(out);
        };
        let mut wait: Option<std::time::Duration> = None;
        for r in answer.responses {
            // Answers come in any order: matched by the id this batch gave each request.
            let Some((_, id)) = r.id.parse::<usize>().ok().and_then(|n| chunk.get(n)) else {
                continue;
            };
            match r.status {
                200 if r.body.get("id").is_some() => {
                    out.insert(id.clone(), r.body);
                }
                status => {
                    let mut headers = reqwest::header::HeaderMap::new();
                    for (k, v) in &r.headers {
                        if let (Ok(k), Some(Ok(v))) = (
                            reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                            v.as_str().map(reqwest::header::HeaderValue::from_str),
                        ) {
                            headers.insert(k, v);
                        }
                    }
                    if let xdrsync_http::RetryAction::Transient { after: Some(after) } =
                        xdrsync_http::classify(status, &headers)
                    {
                        wait = wait.max(Some(after));
                    }
                    tracing::debug!(tenant = %target.tenant, incident = %id, status, "A $batch request was not answered with the incident; reading it on its own.");
                }
            }
        }
        if let Some(after) = wait {
            // A longer wait is the single read's to judge (it fails the page by name).
            let after = after.min(self.retry.max_wait);
            self.budgets
                .pause(
                    target.token.client_id.as_str(),
                    target.tenant.as_str(),
                    crate::Quota::Graph,
                    after,
                )
                .await;
        }
        Ok(out)
    }
}

/// Requests per Graph `$batch` (Graph's documented limit).
const GRAPH_BATCH: usize = 20;

/// `{"responses":[{"id","status","headers","body"}]}`.
#[derive(serde::Deserialize)]
struct BatchAnswer {
    responses: Vec<BatchResponse>,
}

#[derive(serde::Deserialize)]
struct BatchResponse {
    id: String,
    status: u16,
    #[serde(default)]
    headers: serde_json::Map<String, Value>,
    #[serde(default)]
    body: Value,
}

/// A page whose incidents were read one by one: the body, the incidents that failed (id →
/// reason), the time the list gave each replaced incident, and how many came from a `$batch`.
type ExpandedPage = (
    bytes_like::Body,
    HashMap<String, String>,
    HashMap<String, Timestamp>,
    u32,
);

fn read_item(target: &Target, source: &Source, raw: &RawValue) -> Result<Fetched, Poison> {
    let text = raw.get().to_owned();
    type Normalize = fn(&TenantId, &Value) -> Result<Record, NormalizeError>;
    // Each source's normalizer, and the fields it reads: only those are parsed (the raw text is
    // kept whole). The SIEM API's flat detections are parsed whole.
    let (fields, normalize): (Option<&'static Fields>, Normalize) = match (source, target.api) {
        (Source::Incidents, ApiKind::Graph) => (Some(&GRAPH_INCIDENT_FIELDS), |t, v| {
            normalize_graph_incident(t, v).map(Record::Incident)
        }),
        (Source::Incidents, ApiKind::Xdr) => (Some(&XDR_INCIDENT_FIELDS), |t, v| {
            normalize_xdr_incident(t, v).map(Record::Incident)
        }),
        (Source::Alerts, ApiKind::Graph) => (Some(&GRAPH_ALERT_FIELDS), |t, v| {
            normalize_graph_alert(t, v).map(Record::Alert)
        }),
        (Source::Alerts, ApiKind::Xdr) => (Some(&MDE_ALERT_FIELDS), |t, v| {
            normalize_mde_alert(t, v).map(Record::Alert)
        }),
        (Source::Detections(_), _) => (None, |t, v| {
            normalize_siem_detection(t, v).map(Record::Alert)
        }),
    };
    let parsed = match fields {
        Some(f) => xdrsync_model::sparse::parse(&text, f),
        None => serde_json::from_str(&text),
    };
    let value: Value = parsed.map_err(|e| Poison {
        item_id: None,
        reason: e.to_string(),
        raw: text.clone(),
    })?;
    let result = normalize(&target.tenant, &value);
    match result {
        Ok(record) => Ok(Fetched { record, raw: text }),
        Err(e) => {
            let id = ["id", "incidentId", "FullId", "AlertId"]
                .iter()
                .find_map(|k| value.get(k))
                .map(|v| v.to_string().trim_matches('"').to_owned());
            Err(Poison {
                item_id: id,
                reason: e.to_string(),
                raw: text,
            })
        }
    }
}
