//! Request URLs as Microsoft's samples write them: `$filter`, `$orderby`, `$top`, `$expand`,
//! the SIEM API's `sinceTimeUtc`.

use url::Url;
use xdrsync_model::{ApiKind, SafeUrl, Timestamp};

use crate::{ApiError, Source, Target};

/// One page request: the time window, the offset inside it, and whether `$top`/`limit` applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageRequest {
    pub(crate) since: Timestamp,
    pub(crate) upper: Option<Timestamp>,
    pub(crate) skip: usize,
    pub(crate) limit: bool,
}

/// `base_url` + `path` + a hand-built query.
pub(crate) fn api_url(target: &Target, path: &str, query: &str) -> Result<Url, ApiError> {
    let mut base = target.base_url.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    let mut url = base.join(path).map_err(|e| ApiError::Decode {
        url: SafeUrl::new(target.base_url.clone()),
        message: format!("bad base URL: {e}"),
    })?;
    url.set_query(Some(query));
    Ok(url)
}

/// Builds the list request for one page.
pub(crate) fn list_url(
    target: &Target,
    source: &Source,
    page: &PageRequest,
    expand: bool,
) -> Result<Url, ApiError> {
    if let Source::Detections(f) = source {
        // The SIEM API (the SIEM seed's parameters): `LastProcessedTimeUtc` in
        // [sinceTimeUtc, untilTimeUtc], the most recent `limit` of them.
        let mut query = format!("sinceTimeUtc={}", page.since);
        if let Some(u) = page.upper {
            query.push_str(&format!("&untilTimeUtc={u}"));
        }
        if page.limit {
            query.push_str(&format!("&limit={}", target.page_size));
        }
        for g in &f.machine_groups {
            query.push_str(&format!("&machinegroups={}", encode(g)));
        }
        if let Some(t) = &f.device_tag {
            query.push_str(&format!("&DeviceCreatedMachineTags={}", encode(t)));
        }
        if let Some(t) = &f.cloud_tag {
            query.push_str(&format!("&CloudCreatedMachineTags={}", encode(t)));
        }
        return api_url(target, "api/alerts", &query);
    }
    let (path, field) = match (source, target.api) {
        (Source::Incidents, ApiKind::Graph) => ("v1.0/security/incidents", "lastUpdateDateTime"),
        (Source::Incidents, ApiKind::Xdr) => ("api/incidents", "lastUpdateTime"),
        (_, ApiKind::Graph) => ("v1.0/security/alerts_v2", "lastUpdateDateTime"),
        (_, ApiKind::Xdr) => ("api/alerts", "lastUpdateTime"),
    };
    let mut filter = format!("{field} ge {}", page.since);
    if let Some(u) = page.upper {
        filter.push_str(&format!(" and {field} le {u}"));
    }
    // Built by hand so `$` stays literal and spaces become %20, as Microsoft's own samples send.
    let mut query = format!("$filter={}&$top={}", encode(&filter), target.page_size);
    if page.skip > 0 {
        query.push_str(&format!("&$skip={}", page.skip));
    }
    match (source, target.api) {
        (Source::Incidents, ApiKind::Graph) if expand => query.push_str("&$expand=alerts"),
        (Source::Alerts, ApiKind::Xdr) => query.push_str("&$expand=evidence"),
        _ => {}
    }
    api_url(target, path, &query)
}

pub(crate) fn encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b':');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdrsync_auth::TokenRequest;
    use xdrsync_model::{StreamKind, TenantId};

    use crate::SiemFilter;

    fn target(api: ApiKind) -> Target {
        Target {
            tenant: TenantId::canonical("t"),
            name: "t".into(),
            stream: StreamKind::Incidents,
            api,
            base_url: "https://graph.microsoft.com".parse().unwrap(),
            token: TokenRequest {
                authority: "https://login.microsoftonline.com".parse().unwrap(),
                tenant: TenantId::canonical("t"),
                client_id: "c".into(),
                credential: xdrsync_auth::Credential::Secret(xdrsync_model::SecretString::new("s")),
                resource: "https://graph.microsoft.com".into(),
                version: Default::default(),
                refresh: None,
            },
            page_size: 50,
        }
    }

    #[test]
    fn list_urls_look_like_microsofts_samples() {
        let since: Timestamp = "2026-11-20T01:02:03.5Z".parse().unwrap();
        let until: Timestamp = "2026-11-21T00:00:00Z".parse().unwrap();
        let page = |upper, skip| PageRequest {
            since,
            upper,
            skip,
            limit: true,
        };
        let url = list_url(
            &target(ApiKind::Graph),
            &Source::Incidents,
            &page(Some(until), 3),
            true,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/v1.0/security/incidents?$filter=lastUpdateDateTime%20ge%202026-11-20T01:02:03.5000000Z%20and%20lastUpdateDateTime%20le%202026-11-21T00:00:00.0000000Z&$top=50&$skip=3&$expand=alerts"
        );
        let url = list_url(
            &target(ApiKind::Xdr),
            &Source::Incidents,
            &page(None, 0),
            true,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/api/incidents?$filter=lastUpdateTime%20ge%202026-11-20T01:02:03.5000000Z&$top=50"
        );
        let url = list_url(
            &target(ApiKind::Graph),
            &Source::Alerts,
            &page(None, 0),
            true,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/v1.0/security/alerts_v2?$filter=lastUpdateDateTime%20ge%202026-11-20T01:02:03.5000000Z&$top=50"
        );
        let url = list_url(
            &target(ApiKind::Xdr),
            &Source::Alerts,
            &page(Some(until), 2),
            true,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/api/alerts?$filter=lastUpdateTime%20ge%202026-11-20T01:02:03.5000000Z%20and%20lastUpdateTime%20le%202026-11-21T00:00:00.0000000Z&$top=50&$skip=2&$expand=evidence"
        );
        let siem = Source::Detections(SiemFilter {
            machine_groups: vec!["UK Machines".into(), "France".into()],
            device_tag: Some("VIP".into()),
            cloud_tag: None,
        });
        let url = list_url(&target(ApiKind::Graph), &siem, &page(Some(until), 0), true).unwrap();
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/api/alerts?sinceTimeUtc=2026-11-20T01:02:03.5000000Z&untilTimeUtc=2026-11-21T00:00:00.0000000Z&limit=50&machinegroups=UK%20Machines&machinegroups=France&DeviceCreatedMachineTags=VIP"
        );
    }
}
