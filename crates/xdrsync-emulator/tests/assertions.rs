//! The token endpoint's client-assertion checks, each refused with Entra's code: wrong
//! issuer, subject not the issuer, wrong audience, expired, not yet valid; absurd numbers are
//! refused or accepted, never a panic.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use serde_json::{Value, json};
use xdrsync_emulator::{Emulator, EmulatorConfig};
use xdrsync_jwt::{Algorithm, SigningKey};

struct World {
    emu: Emulator,
    key: SigningKey,
    x5t_s256: String,
    client_id: String,
    tenant: String,
}

async fn world() -> World {
    let generated = xdrsync_emulator::certs::generate("CN=assertion tests", None).unwrap();
    let mut config = EmulatorConfig::default();
    config.behaviour.rate_limits = false;
    config.directory.apps[0]
        .certificates
        .push(generated.cert.clone());
    let client_id = config.directory.apps[0].client_id.clone();
    let tenant = config.directory.apps[0]
        .consents
        .keys()
        .next()
        .unwrap()
        .clone();
    let emu = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let der = xdrsync_jwt::pem_block(&generated.cert_pem, "CERTIFICATE").unwrap();
    World {
        emu,
        key: SigningKey::from_pem(&generated.key_pem).unwrap(),
        x5t_s256: xdrsync_jwt::x5t_sha256(&der),
        client_id,
        tenant,
    }
}

impl World {
    fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.emu.base_url(), self.tenant)
    }

    /// The claims of a good assertion; `change` edits them.
    fn assertion(&self, change: impl FnOnce(&mut Value)) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({
            "aud": self.token_url(),
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": uuid_like(),
            "nbf": now,
            "exp": now + 600,
        });
        change(&mut claims);
        let mut header = serde_json::Map::new();
        header.insert("x5t#S256".into(), self.x5t_s256.clone().into());
        self.key.sign(Algorithm::PS256, header, &claims)
    }

    async fn redeem(&self, assertion: &str) -> (u16, String) {
        let r = reqwest::Client::new()
            .post(self.token_url())
            .form(&[
                ("client_id", self.client_id.as_str()),
                ("grant_type", "client_credentials"),
                ("scope", "https://graph.microsoft.com/.default"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
            ])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// A `jti` no other assertion of this test uses (reuse is refused, as Entra does).
fn uuid_like() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_assertion_checks_refuse_what_entra_refuses() {
    let w = world().await;
    // The control: a good assertion gets a token.
    let (status, body) = w.redeem(&w.assertion(|_| {})).await;
    assert_eq!(status, 200, "{body}");

    let now = chrono::Utc::now().timestamp();
    type Change = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "wrong iss",
            Box::new(|c| c["iss"] = json!("00000000-0000-0000-0000-000000000bad")),
            "AADSTS700021",
        ),
        (
            "sub is not iss",
            Box::new(|c| c["sub"] = json!("someone-else")),
            "AADSTS50048",
        ),
        (
            "wrong aud",
            Box::new(|c| c["aud"] = json!("https://login.example.com/x/oauth2/token")),
            "AADSTS700016",
        ),
        (
            "expired",
            Box::new(move |c| c["exp"] = json!(now - 3600)),
            "AADSTS700024",
        ),
        (
            "not yet valid",
            Box::new(move |c| c["nbf"] = json!(now + 3600)),
            "AADSTS700024",
        ),
        (
            "no exp",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "AADSTS700024",
        ),
    ];
    for (what, change, code) in cases {
        let (status, body) = w.redeem(&w.assertion(change)).await;
        assert!((400..500).contains(&status), "{what}: {status} {body}");
        assert!(body.contains(code), "{what}: {body}");
    }
    // Absurd numbers: an answer (refused or not), never a panic; the endpoint still works.
    for (exp, nbf) in [(1e300, -1e300), (-1e300, 1e300), (f64::MAX, f64::MIN)] {
        let (status, body) = w
            .redeem(&w.assertion(|c| {
                c["exp"] = json!(exp);
                c["nbf"] = json!(nbf);
            }))
            .await;
        assert!(
            status == 200 || (400..500).contains(&status),
            "{status} {body}"
        );
    }
    let (status, body) = w.redeem(&w.assertion(|_| {})).await;
    assert_eq!(status, 200, "{body}");
}
