//! Credential life cycles over TLS against the emulator: certificate rotation, an expired
//! secret, consent revoked between runs.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::path::Path;
use std::sync::Arc;

use xdrsync_config::Config;
use xdrsync_pipeline::{Pipeline, TenantReport};
use xdrsync_store::SqliteStore;
use xdrsync_test_utils as tu;

async fn pull(path: &Path) -> TenantReport {
    let config = Config::load(path).unwrap();
    assert!(config.ca_file.is_some() && config.tenants[0].endpoints.authority.scheme() == "https");
    let store: Arc<dyn xdrsync_store::Store> =
        Arc::new(SqliteStore::open(&config.store_path).unwrap());
    Pipeline::new(config, store)
        .unwrap()
        .pull_all()
        .await
        .remove(0)
}

#[tokio::test]
async fn certificate_rotation_secret_expiry_and_revoked_consent_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut directory = tu::one_tenant("Contoso", 2.0, tu::ALL_READ_ROLES);
    let old = xdrsync_emulator::certs::generate("CN=old", None).unwrap();
    let new = xdrsync_emulator::certs::generate("CN=new", None).unwrap();
    directory.apps[0].certificates.push(old.cert.clone());
    let emu = tu::start_tls(directory, dir.path(), |_| {}).await;
    let secret_config = tu::write_config(dir.path(), &emu, &[xdrsync_model::ApiKind::Graph], "");
    // The same tenant, with a certificate credential instead of the secret.
    let text = std::fs::read_to_string(&secret_config.path)
        .unwrap()
        .replace(
            "client_secret = { file = \"secret\" }",
            "client_certificate = { cert_file = \"cert.pem\", key_file = \"key.pem\" }",
        );
    let cert_config = dir.path().join("cert.toml");
    std::fs::write(&cert_config, text).unwrap();
    let use_cert = |c: &xdrsync_emulator::certs::GeneratedCert| {
        std::fs::write(dir.path().join("cert.pem"), &c.cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), &c.key_pem).unwrap();
    };

    use_cert(&old);
    let r = pull(&cert_config).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    // Rotation: register the new certificate next to the old one, switch, retire the old one.
    emu.state()
        .update_directory(|d| d.apps[0].certificates.push(new.cert.clone()));
    use_cert(&new);
    assert!(pull(&cert_config).await.error.is_none());
    let old_thumb = old.cert.thumbprint_sha1.clone();
    emu.state().update_directory(|d| {
        d.apps[0]
            .certificates
            .retain(|c| c.thumbprint_sha1 != old_thumb)
    });
    assert!(
        pull(&cert_config).await.error.is_none(),
        "the new certificate alone works"
    );
    use_cert(&old);
    let err = pull(&cert_config).await.error.unwrap();
    assert!(
        err.contains("AADSTS700027"),
        "a retired certificate is refused: {err}"
    );

    // The secret expires.
    assert!(pull(&secret_config.path).await.error.is_none());
    emu.state().update_directory(|d| {
        d.apps[0].secrets[0].expires = Some("2020-01-01T00:00:00Z".parse().unwrap())
    });
    let err = pull(&secret_config.path).await.error.unwrap();
    assert!(
        err.contains("AADSTS7000222") && err.contains("expired"),
        "{err}"
    );

    // Consent revoked: the tenant's next run says what to do.
    emu.state()
        .update_directory(|d| d.apps[0].secrets[0].expires = None);
    assert!(pull(&secret_config.path).await.error.is_none());
    let tenant = emu.contract().tenants[0].id.clone();
    emu.state().update_directory(|d| {
        d.apps[0].consents.remove(&tenant);
        // A single-tenant app in its home tenant is always present; make it a customer tenant.
        d.apps[0].home_tenant = "00000000-0000-0000-0000-000000000000".into();
        d.apps[0].multi_tenant = true;
    });
    let err = pull(&secret_config.path).await.error.unwrap();
    assert!(
        err.contains("AADSTS700016") && err.contains("auth consent-url"),
        "{err}"
    );
}

/// A PKCS#12 certificate (OpenSSL 3's default export, password from a file) pulls over TLS; a
/// wrong password is named as such and never printed.
#[tokio::test]
async fn pkcs12_certificate_pulls_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut directory = tu::one_tenant("Contoso", 1.0, tu::ALL_READ_ROLES);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xdrsync-auth/tests/data");
    let key =
        xdrsync_jwt::SigningKey::from_pem(&std::fs::read_to_string(data.join("key.pem")).unwrap())
            .unwrap();
    let cert_der = xdrsync_jwt::pem_block(
        &std::fs::read_to_string(data.join("cert.pem")).unwrap(),
        "CERTIFICATE",
    )
    .unwrap();
    directory.apps[0]
        .certificates
        .push(xdrsync_emulator::certs::register(&cert_der, &key, None));
    let emu = tu::start_tls(directory, dir.path(), |_| {}).await;
    let secret_config = tu::write_config(dir.path(), &emu, &[xdrsync_model::ApiKind::Graph], "");
    let text = std::fs::read_to_string(&secret_config.path)
        .unwrap()
        .replace(
            "client_secret = { file = \"secret\" }",
            "client_certificate = { pfx_file = \"app.pfx\", password = { file = \"pfx-pass\" } }",
        );
    let config = dir.path().join("pfx.toml");
    std::fs::write(&config, text).unwrap();
    std::fs::copy(data.join("cert.pfx"), dir.path().join("app.pfx")).unwrap();

    std::fs::write(dir.path().join("pfx-pass"), "correct-horse\n").unwrap();
    let r = pull(&config).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert!(r.stats.created > 0, "{:?}", r.stats);

    std::fs::write(dir.path().join("pfx-pass"), "tr0ub4dor\n").unwrap();
    let err = pull(&config).await.error.unwrap();
    assert!(
        err.contains("wrong password") && err.contains("app.pfx"),
        "{err}"
    );
    assert!(!err.contains("tr0ub4dor"), "{err}");
}

/// `client_secret_basic`: the secret goes in an HTTP Basic header, form-urlencoded first (RFC
/// 6749 §2.3.1), so a secret with `+`, `~`, `:` and `%` still matches; the default sends it in
/// the body.
#[tokio::test]
async fn client_secret_by_http_basic_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut directory = tu::one_tenant("Contoso", 1.0, tu::ALL_READ_ROLES);
    let secret = "Zz8~a+b:c%2Fd.e_f-g";
    directory.apps[0].secrets[0].value = secret.into();
    let emu = tu::start_tls(directory, dir.path(), |_| {}).await;
    let post = tu::write_config(dir.path(), &emu, &[xdrsync_model::ApiKind::Graph], "");
    std::fs::write(dir.path().join("secret"), secret).unwrap();
    let r = pull(&post.path).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(
        emu.state().stats().basic_client_secrets,
        0,
        "post by default"
    );

    let text = std::fs::read_to_string(&post.path).unwrap().replace(
        "client_secret = { file = \"secret\" }",
        "client_secret = { file = \"secret\", method = \"basic\" }",
    );
    let basic = dir.path().join("basic.toml");
    std::fs::write(&basic, text).unwrap();
    let r = pull(&basic).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert!(emu.state().stats().basic_client_secrets >= 1);

    // A wrong secret by Basic is refused like one in the body.
    std::fs::write(dir.path().join("secret"), "not-it").unwrap();
    let err = pull(&basic).await.error.unwrap();
    assert!(err.contains("AADSTS7000215"), "{err}");
}
