//! The pull pipeline against the real emulator over loopback HTTP and a real SQLite file.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use xdrsync_emulator::Emulator;
use xdrsync_model::{ApiKind, StreamKind, TenantId, Timestamp};
use xdrsync_pipeline::Pipeline;
use xdrsync_store::{SqliteStore, Store};
use xdrsync_test_utils as tu;

/// The emulator's current incidents of `tenant` updated at or after `since`: id → last update.
fn current(emu: &Emulator, tenant: &str, since: Timestamp) -> BTreeMap<String, Timestamp> {
    emu.state()
        .incidents(tenant, |i| i.last_update >= since)
        .iter()
        .map(|i| (i.id.to_string(), i.last_update))
        .collect()
}

/// The store's newest version of each incident of `tenant`.
fn stored_latest(store: &dyn Store, tenant: &str) -> BTreeMap<String, Timestamp> {
    let mut out = BTreeMap::new();
    for (id, t) in store
        .version_keys(&TenantId::canonical(tenant), StreamKind::Incidents)
        .unwrap()
    {
        let e = out.entry(id).or_insert(t);
        if t > *e {
            *e = t;
        }
    }
    out
}

/// The store holds exactly `want` (the emulator's incidents now), except that an incident the
/// emulator's world changed after the pull ended (its world runs on the real clock, so one can
/// change between the pull and this check) may be stored at its previous version, or not yet.
fn assert_holds(
    got: &BTreeMap<String, Timestamp>,
    want: &BTreeMap<String, Timestamp>,
    pulled_until: Timestamp,
    what: &str,
) {
    for (id, t) in want {
        if *t <= pulled_until {
            assert_eq!(got.get(id), Some(t), "{what}: incident {id}");
        }
    }
    for (id, t) in got {
        let w = want
            .get(id)
            .unwrap_or_else(|| panic!("{what}: {id} invented"));
        assert!(
            w == t || *w > pulled_until,
            "{what}: incident {id} stored at {t}, the emulator has {w}"
        );
    }
}

#[tokio::test]
async fn rerun_adds_nothing_and_later_updates_are_collected() {
    let emu = tu::start(tu::demo_directory()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = tu::write_config(dir.path(), &emu, &[ApiKind::Graph, ApiKind::Xdr], "");
    let lookback = config.sync.initial_lookback;
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let pipeline = Pipeline::new(config.clone(), store.clone()).unwrap();

    let started = Timestamp::now();
    let first = pipeline.pull_all().await;
    let pulled_until = emu.state().clock().now();
    assert_eq!(first.len(), 3);
    for r in &first {
        assert!(r.error.is_none(), "{}: {:?}", r.name, r.error);
        assert!(r.stats.created > 0, "{}", r.name);
        assert!(r.pages >= 2, "{}: {} pages", r.name, r.pages);
    }
    for t in &config.tenants {
        let want = current(&emu, t.tenant_id.as_str(), started.sub(lookback));
        let got = stored_latest(&*store, t.tenant_id.as_str());
        assert_holds(
            &got,
            &want,
            pulled_until,
            &format!("{} after the first pull", t.name),
        );
    }

    let second = pipeline.pull_all().await;
    let seq_before = store.last_seq().unwrap();
    for r in &second {
        assert!(r.error.is_none());
        assert_eq!(
            (r.stats.created, r.stats.updated),
            (0, 0),
            "{}: a re-run stores nothing new",
            r.name
        );
    }
    assert_eq!(store.last_seq().unwrap(), seq_before);

    // Six hours pass in the tenants: new incidents, and updates to ones already stored.
    emu.state().clock().advance(chrono::Duration::hours(6));
    let third = pipeline.pull_all().await;
    let pulled_until = emu.state().clock().now();
    let updated: u64 = third.iter().map(|r| r.stats.updated).sum();
    let created: u64 = third.iter().map(|r| r.stats.created).sum();
    assert!(
        updated > 0 && created > 0,
        "updated {updated}, created {created}"
    );
    for t in &config.tenants {
        let want = current(&emu, t.tenant_id.as_str(), started.sub(lookback));
        let got = stored_latest(&*store, t.tenant_id.as_str());
        assert_holds(
            &got,
            &want,
            pulled_until,
            &format!("{} after six more hours", t.name),
        );
    }
}

#[tokio::test]
async fn one_tenants_failure_does_not_stop_the_others() {
    let emu = tu::start(tu::demo_directory()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = tu::write_config(dir.path(), &emu, &[ApiKind::Graph], "");
    // Revoke the second customer's consent: its token requests fail with AADSTS700016.
    let victim = config.tenants[1].tenant_id.to_string();
    emu.state().update_directory(|d| {
        d.apps[0].consents.remove(&victim);
    });
    if let xdrsync_config::CredentialSource::Secret(s) = &mut config.tenants[2].credential {
        s.file = Some(dir.path().join("missing-secret-file"));
    }
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let reports = Pipeline::new(config, store).unwrap().pull_all().await;
    assert!(reports[0].error.is_none());
    assert!(reports[0].stats.created > 0);
    let consent = reports[1].error.as_deref().unwrap();
    assert!(
        consent.contains("AADSTS700016") && consent.contains("admin consent link"),
        "{consent}"
    );
    let secret = reports[2].error.as_deref().unwrap();
    assert!(
        secret.contains("apps[0].client_secret") && secret.contains("cannot read secret file"),
        "{secret}"
    );
}

/// Certificate credentials (PS256 + x5t#S256 and RS256 + x5t) pull like secrets do.
#[tokio::test]
async fn certificate_credentials_pull() {
    let mut directory = tu::one_tenant("Contoso", 2.0, tu::ALL_READ_ROLES);
    let generated = xdrsync_emulator::certs::generate("CN=xdrsync test", None).unwrap();
    directory.apps[0].certificates.push(generated.cert.clone());
    let emu = tu::start(directory).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.pem"), &generated.cert_pem).unwrap();
    std::fs::write(dir.path().join("k.pem"), &generated.key_pem).unwrap();
    let c = emu.contract();
    for alg in ["ps256", "rs256"] {
        let base = emu.base_url();
        let toml = format!(
            "[store]\npath = \"{alg}.db\"\n[cloud]\nauthority_url = \"{base}\"\ngraph_url = \"{base}\"\nxdr_url = \"{base}\"\n\
             [[tenants]]\nname = \"contoso\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\n\
             client_certificate = {{ cert_file = \"c.pem\", key_file = \"k.pem\", algorithm = \"{alg}\" }}\n",
            c.tenants[0].id, c.apps[0].client_id
        );
        let path = dir.path().join(format!("{alg}.toml"));
        std::fs::write(&path, toml).unwrap();
        let config = xdrsync_config::Config::load(&path).unwrap();
        let store: Arc<dyn xdrsync_store::Store> =
            Arc::new(SqliteStore::open(&config.store_path).unwrap());
        let reports = Pipeline::new(config, store).unwrap().pull_all().await;
        assert!(reports[0].error.is_none(), "{alg}: {:?}", reports[0].error);
        assert!(reports[0].stats.created > 0, "{alg}");
    }
    // A certificate the app does not know is refused with AADSTS700027.
    let other = xdrsync_emulator::certs::generate("CN=stranger", None).unwrap();
    std::fs::write(dir.path().join("c.pem"), &other.cert_pem).unwrap();
    std::fs::write(dir.path().join("k.pem"), &other.key_pem).unwrap();
    let config = xdrsync_config::Config::load(&dir.path().join("ps256.toml")).unwrap();
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let reports = Pipeline::new(config, store).unwrap().pull_all().await;
    let err = reports[0].error.as_deref().unwrap();
    assert!(
        err.contains("AADSTS700027") && err.contains("certificate"),
        "{err}"
    );
    assert!(!err.contains("PRIVATE KEY"), "{err}");
}

/// A config for the emulator's first tenant authenticated by its managed identity; `cloud`
/// is `[sync]` and the start of `[cloud]` (its last section header must be `[cloud]`, or be
/// empty).
fn managed_identity_config(
    dir: &std::path::Path,
    emu: &xdrsync_emulator::Emulator,
    cloud: &str,
) -> xdrsync_config::Config {
    let c = emu.contract();
    let base = emu.base_url();
    let cloud = if cloud.contains("[cloud]") {
        cloud.to_owned()
    } else {
        format!("{cloud}[cloud]\n")
    };
    let path = dir.join("mi.toml");
    std::fs::write(
        &path,
        format!(
            "{cloud}authority_url = \"{base}\"\ngraph_url = \"{base}\"\nxdr_url = \"{base}\"\n\
             [[tenants]]\nname = \"contoso\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\napi = \"xdr\"\n\
             managed_identity = {{ endpoint = \"{base}/metadata/identity/oauth2/token\" }}\n",
            c.tenants[0].id, c.apps[0].client_id
        ),
    )
    .unwrap();
    xdrsync_config::Config::load(&path).unwrap()
}

/// A collector in Azure: tokens from the instance metadata endpoint (the emulator serves its
/// shape), no secret at all.
#[tokio::test]
async fn managed_identity_pulls() {
    let mut directory = tu::one_tenant("Contoso", 2.0, tu::ALL_READ_ROLES);
    directory.apps[0].managed_identity = true;
    let emu = tu::start(directory).await;
    let base = emu.base_url();
    let dir = tempfile::tempdir().unwrap();
    let config = managed_identity_config(dir.path(), &emu, "");
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let reports = Pipeline::new(config, store).unwrap().pull_all().await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    assert!(reports[0].stats.created > 0);
    // Without the Metadata header the endpoint refuses, as IMDS does.
    let resp = reqwest::get(format!(
        "{base}/metadata/identity/oauth2/token?resource=https://graph.microsoft.com"
    ))
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

/// The instance metadata endpoint is never reached through a proxy: with `[cloud] proxy`
/// pointing at nothing, the managed identity still gets its token (the API calls, which do go
/// through the proxy, then fail).
#[tokio::test]
async fn managed_identity_is_never_proxied() {
    let mut directory = tu::one_tenant("Contoso", 2.0, tu::ALL_READ_ROLES);
    directory.apps[0].managed_identity = true;
    let emu = tu::start(directory).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = dead.local_addr().unwrap();
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let config = managed_identity_config(
        dir.path(),
        &emu,
        &format!("[sync]\nretry_attempts = 1\n[cloud]\nproxy = \"http://{proxy}\"\n"),
    );
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let before = emu.state().stats().tokens_issued;
    let reports = Pipeline::new(config, store).unwrap().pull_all().await;
    assert_eq!(
        emu.state().stats().tokens_issued,
        before + 1,
        "the identity's token came straight from the endpoint: {:?}",
        reports[0].error
    );
    let error = reports[0].error.clone().unwrap_or_default();
    assert!(!error.contains("Managed identity"), "{error}");
}

/// A minimal HTTP forward proxy on loopback that demands `Proxy-Authorization` and counts what
/// it forwards (absolute-form requests to plain-HTTP targets, as the loopback emulator is).
async fn start_proxy(
    user: &'static str,
    pass: &'static str,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    );
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let (counter, expected) = (counter.clone(), expected.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read the head and as much body as Content-Length says.
                loop {
                    let n = client.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let authorized = head.lines().any(|l| {
                    l.to_lowercase().starts_with("proxy-authorization:")
                        && l.split_once(':').map(|x| x.1.trim()) == Some(expected.as_str())
                });
                if !authorized {
                    let _ = client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                    return;
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut lines = head.lines();
                let request_line = lines.next().unwrap_or_default();
                let mut parts = request_line.split_whitespace();
                let (method, target) = (parts.next().unwrap_or("GET"), parts.next().unwrap_or("/"));
                if method == "CONNECT" {
                    // HTTPS: a tunnel to host:port; TLS runs end to end through it.
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await;
                    let _ = upstream.write_all(&buf[end + 4..]).await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    return;
                }
                let url = url::Url::parse(target).unwrap();
                let origin = format!(
                    "{}{}",
                    url.path(),
                    url.query().map(|q| format!("?{q}")).unwrap_or_default()
                );
                let mut out = format!("{method} {origin} HTTP/1.1\r\n");
                for l in lines.filter(|l| {
                    !l.to_lowercase().starts_with("proxy-")
                        && !l.to_lowercase().starts_with("connection:")
                }) {
                    out.push_str(l);
                    out.push_str("\r\n");
                }
                out.push_str("connection: close\r\n\r\n");
                let Ok(mut upstream) =
                    tokio::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap()))
                        .await
                else {
                    return;
                };
                let _ = upstream.write_all(out.as_bytes()).await;
                let _ = upstream.write_all(&buf[end + 4..]).await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (format!("127.0.0.1:{}", addr.port()), count)
}

#[tokio::test]
async fn every_call_goes_through_the_configured_proxy() {
    let emu = tu::start(tu::one_tenant("Contoso", 2.0, tu::ALL_READ_ROLES)).await;
    let (proxy, count) = start_proxy("squid", "pr0xy~pass").await;
    let dir = tempfile::tempdir().unwrap();
    let config = tu::write_config(dir.path(), &emu, &[ApiKind::Graph], "# proxied");
    let text = std::fs::read_to_string(&config.path).unwrap().replace(
        "[cloud]\n",
        &format!("[cloud]\nproxy = \"http://squid:pr0xy~pass@{proxy}\"\n"),
    );
    std::fs::write(&config.path, text).unwrap();
    let config = xdrsync_config::Config::load(&config.path).unwrap();
    assert!(
        !format!("{:?} {}", config.proxy, config.proxy.as_ref().unwrap()).contains("pr0xy"),
        "the proxy password is redacted"
    );
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let reports = Pipeline::new(config.clone(), store)
        .unwrap()
        .pull_all()
        .await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    assert!(reports[0].stats.created > 0);
    assert!(
        count.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the token request and the API calls went through the proxy"
    );
    // Wrong proxy credentials: a clear failure that does not print them.
    let text = std::fs::read_to_string(&config.path)
        .unwrap()
        .replace("pr0xy~pass", "wrong~pass");
    std::fs::write(&config.path, text).unwrap();
    let config = xdrsync_config::Config::load(&config.path).unwrap();
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let reports = Pipeline::new(config, store).unwrap().pull_all().await;
    let err = reports[0].error.as_deref().unwrap();
    assert!(!err.contains("wrong~pass"), "{err}");
}

/// HTTPS through the proxy: CONNECT tunnels to the TLS emulator, token endpoint included.
#[tokio::test]
async fn https_goes_through_the_proxy_by_connect() {
    let dir = tempfile::tempdir().unwrap();
    let emu = tu::start_tls(
        tu::one_tenant("Contoso", 2.0, tu::ALL_READ_ROLES),
        dir.path(),
        |_| {},
    )
    .await;
    let (proxy, count) = start_proxy("squid", "pr0xy~pass").await;
    let config = tu::write_config(dir.path(), &emu, &[ApiKind::Xdr], "");
    let text = std::fs::read_to_string(&config.path).unwrap().replace(
        "[cloud]\n",
        &format!("[cloud]\nproxy = \"http://squid:pr0xy~pass@{proxy}\"\n"),
    );
    std::fs::write(&config.path, text).unwrap();
    let config = xdrsync_config::Config::load(&config.path).unwrap();
    assert_eq!(config.tenants[0].endpoints.authority.scheme(), "https");
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let reports = Pipeline::new(config, store).unwrap().pull_all().await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    assert!(reports[0].stats.created > 0);
    assert!(
        count.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the TLS connections were tunnelled"
    );
    assert!(emu.state().stats().tokens_issued >= 1);
}

/// Pages are committed as they are read; a listing that fails on its third page keeps the first
/// two pages' versions but not the cursor, and the next pull completes the window from the old
/// cursor without storing anything twice.
#[tokio::test]
async fn a_listing_that_fails_midway_keeps_its_pages_and_not_the_cursor() {
    use xdrsync_emulator::faults::{Fault, FaultRule};
    let emu = tu::start(tu::one_tenant("Contoso", 6.0, tu::ALL_READ_ROLES)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = tu::write_config(
        dir.path(),
        &emu,
        &[ApiKind::Graph],
        "[sync]\ngraph_page_size = 20\nretry_attempts = 1\n",
    );
    let tenant = config.tenants[0].tenant_id.clone();
    let lookback = config.sync.initial_lookback;
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    let pipeline = Pipeline::new(config, store.clone()).unwrap();
    emu.state().add_fault(FaultRule {
        route: "GET /v1.0/security/incidents".into(),
        sequence: vec![
            Fault::Ok,
            Fault::Ok,
            Fault::Status {
                status: 403,
                retry_after_secs: None,
            },
        ],
        fault: None,
        probability: None,
    });
    let started = Timestamp::now();
    let failed = pipeline.pull_all().await;
    assert!(failed[0].error.is_some(), "the third page fails for good");
    // The stored versions are the first two pages' (boundary re-reads are not stored twice).
    let stored = || store.versions_after(0, 100_000).unwrap().len();
    let kept = stored();
    assert!((30..=40).contains(&kept), "{kept} versions kept");
    assert_eq!(store.cursor(&tenant, StreamKind::Incidents).unwrap(), None);

    let ok = pipeline.pull_all().await;
    assert!(ok[0].error.is_none(), "{:?}", ok[0].error);
    let added = ok[0].stats.created + ok[0].stats.updated;
    assert_eq!(added as usize + kept, stored());
    assert_eq!(
        ok[0].stats.unchanged as usize, kept,
        "the kept pages are read again, once"
    );
    let want = current(&emu, tenant.as_str(), started.sub(lookback));
    assert_eq!(stored_latest(&*store, tenant.as_str()), want);
    assert!(
        store
            .cursor(&tenant, StreamKind::Incidents)
            .unwrap()
            .is_some()
    );
}
