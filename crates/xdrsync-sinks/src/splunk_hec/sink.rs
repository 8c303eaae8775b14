//! Sending batches to HEC, and waiting for the indexer's acknowledgement.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use xdrsync_config::ConfigError;
use xdrsync_model::{SafeUrl, SecretString, TenantId};

use super::config::{Placement, Validated};
use super::encoder::{default_sourcetype, encode_event};
use crate::Sink;
use crate::outbox::{BoxFuture, Common, Event, OutboxSink, SendError, Transport};

#[derive(Debug)]
struct Hec {
    client: reqwest::Client,
    event_url: SafeUrl,
    ack_url: SafeUrl,
    token: SecretString,
    source: String,
    default: Placement,
    tenants: Vec<(TenantId, Placement)>,
    names: Vec<(TenantId, String)>,
    gzip: bool,
    /// The indexer-acknowledgement channel (one per sink instance), when enabled.
    channel: Option<String>,
    ack_timeout: Duration,
    ack_poll: Duration,
}

pub(crate) fn build(common: Common, v: &Validated) -> Result<Arc<dyn Sink>, ConfigError> {
    let token = v
        .token
        .resolve(&format!("sink {} splunk_hec.token", common.name))?;
    let client = crate::http::client(
        &common.name,
        Duration::from_secs(v.timeout_secs),
        v.ca_file.as_deref(),
    )?;
    let join = |p: &str| {
        v.url
            .join(p)
            .map(SafeUrl::new)
            .map_err(|e| ConfigError::Secret {
                field: format!("sink {} splunk_hec.url", common.name),
                message: e.to_string(),
            })
    };
    let mut ack_url = join("services/collector/ack")?;
    let channel = v.ack.then(|| uuid::Uuid::new_v4().to_string());
    if let Some(c) = &channel {
        let mut u = ack_url.expose().clone();
        u.query_pairs_mut().append_pair("channel", c);
        ack_url = SafeUrl::new(u);
    }
    let t = Hec {
        client,
        event_url: join("services/collector/event")?,
        ack_url,
        token,
        source: v.source.clone(),
        default: v.default.clone(),
        tenants: v.tenants.clone(),
        names: v.names.clone(),
        gzip: v.gzip,
        channel,
        ack_timeout: Duration::from_secs(v.ack_timeout_secs),
        ack_poll: Duration::from_millis(v.ack_poll_ms),
    };
    Ok(Arc::new(OutboxSink::new(common, t)))
}

/// HEC's answer body: `{"text":"Success","code":0,"ackId":7}`.
#[derive(serde::Deserialize)]
struct Answer {
    #[serde(default)]
    text: String,
    #[serde(default)]
    code: i64,
    #[serde(rename = "ackId")]
    ack_id: Option<u64>,
}

impl Hec {
    fn auth(&self) -> HeaderValue {
        let mut v = HeaderValue::from_str(&format!("Splunk {}", self.token.expose()))
            .unwrap_or_else(|_| HeaderValue::from_static("Splunk invalid-token-characters"));
        v.set_sensitive(true);
        v
    }

    fn body(&self, events: &[Event]) -> Vec<u8> {
        let mut out = Vec::with_capacity(events.iter().map(|e| e.doc.len() + 256).sum());
        for e in events {
            let tenant = e.v.record.tenant();
            let own = self
                .tenants
                .iter()
                .find(|(t, _)| t == tenant)
                .map(|(_, p)| p);
            let pick = |f: fn(&Placement) -> &Option<String>| {
                own.and_then(|p| f(p).as_deref())
                    .or_else(|| f(&self.default).as_deref())
            };
            let host = pick(|p| &p.host).unwrap_or_else(|| {
                self.names
                    .iter()
                    .find(|(t, _)| t == tenant)
                    .map_or(tenant.as_str(), |(_, n)| n.as_str())
            });
            let sourcetype = pick(|p| &p.sourcetype).unwrap_or(default_sourcetype(e.v.stream));
            encode_event(
                &mut out,
                &e.v,
                &e.doc,
                host,
                &self.source,
                sourcetype,
                pick(|p| &p.index),
            );
            out.push(b'\n');
        }
        out
    }

    /// A POST to `url` with the token, the JSON content type and the ack channel.
    fn request(&self, url: &SafeUrl) -> reqwest::RequestBuilder {
        let req = self
            .client
            .post(url.expose().clone())
            .header(AUTHORIZATION, self.auth())
            .header(CONTENT_TYPE, "application/json");
        match &self.channel {
            Some(c) => req.header("x-splunk-request-channel", c),
            None => req,
        }
    }

    async fn post(&self, url: &SafeUrl, body: Vec<u8>, gzip: bool) -> Result<Answer, SendError> {
        let mut req = self.request(url);
        let body = if gzip {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            enc.write_all(&body)
                .map_err(|e| SendError::permanent(format!("gzip: {e}")))?;
            req = req.header(CONTENT_ENCODING, "gzip");
            enc.finish()
                .map_err(|e| SendError::permanent(format!("gzip: {e}")))?
        } else {
            body
        };
        let what = format!("POST {url}");
        let (status, headers, text) = crate::http::exchange(req.body(body), &what).await?;
        let answer: Option<Answer> = serde_json::from_str(&text).ok();
        if status == 200 {
            return match answer {
                Some(a) if a.code == 0 => Ok(a),
                Some(a) => Err(SendError::permanent(format!(
                    "POST {url}: HTTP 200 with HEC code {}: {}",
                    a.code, a.text
                ))),
                None => Err(SendError::permanent(format!(
                    "POST {url}: HTTP 200 with a body that is not HEC's answer: {}",
                    text.chars().take(200).collect::<String>()
                ))),
            };
        }
        let err = SendError::http(status, &headers, &text);
        let hint = match answer.as_ref().map(|a| a.code) {
            Some(2..=4) => " (check the HEC token)",
            Some(1) => " (the token is disabled)",
            Some(7) => " (the token may not write to this index)",
            Some(10 | 11) => " (indexer acknowledgement is on for this token: set ack = true)",
            Some(14) => " (indexer acknowledgement is off for this token: set ack = false)",
            _ => "",
        };
        let mut err = err.context(&what);
        err.message.push_str(hint);
        Err(err)
    }

    /// Polls the ack endpoint until `ack_id` is indexed.
    async fn wait_for_ack(&self, ack_id: u64) -> Result<(), SendError> {
        let start = Instant::now();
        loop {
            tokio::time::sleep(self.ack_poll).await;
            let body = format!(r#"{{"acks":[{ack_id}]}}"#).into_bytes();
            let text = match self.post_ack(body).await {
                Ok(t) => t,
                // A restarting indexer: keep asking until the timeout.
                Err(e) if e.retriable && start.elapsed() < self.ack_timeout => continue,
                Err(e) => return Err(e),
            };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let acked = v
                .get("acks")
                .and_then(|a| a.get(ack_id.to_string().as_str()))
                .and_then(serde_json::Value::as_bool);
            if acked == Some(true) {
                return Ok(());
            }
            if start.elapsed() >= self.ack_timeout {
                return Err(SendError::transient(format!(
                    "ackId {ack_id} was not acknowledged within {}s; the batch is sent again",
                    self.ack_timeout.as_secs()
                )));
            }
        }
    }

    async fn post_ack(&self, body: Vec<u8>) -> Result<String, SendError> {
        let what = format!("POST {}", self.ack_url);
        let req = self.request(&self.ack_url).body(body);
        match crate::http::exchange(req, &what).await? {
            (200, _, text) => Ok(text),
            (status, headers, text) => Err(SendError::http(status, &headers, &text).context(&what)),
        }
    }
}

impl Transport for Hec {
    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<u64, SendError>> {
        Box::pin(async move {
            let body = self.body(events);
            let sent = body.len() as u64;
            let answer = self.post(&self.event_url, body, self.gzip).await?;
            match (&self.channel, answer.ack_id) {
                (Some(_), Some(id)) => self.wait_for_ack(id).await.map(|()| sent),
                (Some(_), None) => Err(SendError::permanent(
                    "ack = true but HEC returned no ackId: indexer acknowledgement is off for this token (set ack = false, or enable it on the token)",
                )),
                (None, _) => Ok(sent),
            }
        })
    }
}
