//! The token cache against the emulator over loopback.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::sync::Arc;

use xdrsync_auth::{Credential, TokenCache, TokenRequest};
use xdrsync_model::{SecretString, TenantId, TokenVersion};
use xdrsync_test_utils as tu;

/// 100 tasks asking for one tenant's token at once cause one token request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_request() {
    let emu = tu::start(tu::one_tenant("Contoso", 1.0, tu::ALL_READ_ROLES)).await;
    let c = emu.contract();
    let req = TokenRequest {
        authority: emu.base_url().parse().unwrap(),
        tenant: TenantId::canonical(&c.tenants[0].id),
        client_id: c.apps[0].client_id.clone(),
        credential: Credential::Secret(SecretString::new(c.apps[0].secret.clone())),
        resource: "https://graph.microsoft.com".into(),
        version: TokenVersion::V2,
        refresh: None,
    };
    let cache = Arc::new(TokenCache::new(reqwest::Client::new()));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (cache, req) = (cache.clone(), req.clone());
        tasks.push(tokio::spawn(async move {
            cache.token(&req).await.unwrap().expose().to_owned()
        }));
    }
    let mut tokens = std::collections::BTreeSet::new();
    for t in tasks {
        tokens.insert(t.await.unwrap());
    }
    assert_eq!(tokens.len(), 1, "every caller got the same token");
    assert_eq!(cache.requests_sent(), 1);
    assert_eq!(emu.state().stats().tokens_issued, 1);
    // After the API refused it, one new request.
    cache.invalidate(&req).await;
    cache.token(&req).await.unwrap();
    assert_eq!(cache.requests_sent(), 2);
}
