//! What an app proves itself with: a secret, a certificate (PEM or PKCS#12, its key matched to
//! the certificate by public key) or a managed identity.

use url::Url;
use xdrsync_model::{SafeUrl, SecretString};

use crate::pkcs12;

/// How a client proves who it is.
#[derive(Clone)]
pub enum Credential {
    /// A client secret, sent in the form body (`client_secret_post`).
    Secret(SecretString),
    /// A client secret, sent as HTTP Basic (`client_secret_basic`; RFC 6749 §2.3.1).
    SecretBasic(SecretString),
    /// A certificate: a signed `client_assertion` (private_key_jwt).
    Certificate(Box<CertificateCredential>),
    /// A managed identity: tokens from this instance-metadata endpoint.
    ManagedIdentity(Url),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Secret(s) => f.debug_tuple("Secret").field(s).finish(),
            Credential::SecretBasic(s) => f.debug_tuple("SecretBasic").field(s).finish(),
            Credential::Certificate(c) => f.debug_tuple("Certificate").field(c).finish(),
            Credential::ManagedIdentity(u) => f
                .debug_tuple("ManagedIdentity")
                .field(&SafeUrl::new(u.clone()))
                .finish(),
        }
    }
}

/// A certificate credential: the private key (never printed) and the certificate's thumbprints.
#[derive(Clone)]
pub struct CertificateCredential {
    key: xdrsync_jwt::SigningKey,
    x5t: String,
    x5t_s256: String,
    algorithm: xdrsync_jwt::Algorithm,
    not_after: Option<xdrsync_model::Timestamp>,
}

impl std::fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("x5t", &self.x5t)
            .field("algorithm", &self.algorithm)
            .field("key", &"**REDACTED**")
            .finish()
    }
}

impl CertificateCredential {
    /// From a PEM certificate and its RSA private key (PKCS#8 or PKCS#1 PEM). PS256 sends the
    /// SHA-256 thumbprint (`x5t#S256`, Entra's current documentation), RS256 the SHA-1 one
    /// (`x5t`, the previous documentation; what azure-identity sends).
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        algorithm: xdrsync_jwt::Algorithm,
    ) -> Result<Self, String> {
        let der =
            xdrsync_jwt::pem_block(cert_pem, "CERTIFICATE").ok_or("no PEM CERTIFICATE block")?;
        let key = xdrsync_jwt::SigningKey::from_pem(key_pem).map_err(|e| e.to_string())?;
        Ok(CertificateCredential {
            key,
            x5t: xdrsync_jwt::x5t_sha1(&der),
            x5t_s256: xdrsync_jwt::x5t_sha256(&der),
            algorithm,
            not_after: certificate_not_after(&der),
        })
    }

    /// From a PKCS#12 file (`.pfx`/`.p12`) and its password (empty when it has none): the RSA
    /// key and the certificate that carries the key's public key, wherever they stand in it.
    pub fn from_pkcs12(
        der: &[u8],
        password: &str,
        algorithm: xdrsync_jwt::Algorithm,
    ) -> Result<Self, String> {
        let contents = pkcs12::parse(der, password)?;
        let [key] = contents.keys.as_slice() else {
            return Err(format!(
                "the PKCS#12 file holds {} private keys; give it exactly one",
                contents.keys.len()
            ));
        };
        let key = xdrsync_jwt::SigningKey::from_pkcs8_der(key).map_err(|e| e.to_string())?;
        let public = key.public_key_der().map_err(|e| e.to_string())?;
        let cert = contents
            .certs
            .iter()
            .find(|c| certificate_has_key(c, &public))
            .ok_or("the PKCS#12 file holds no certificate for its private key")?;
        Ok(CertificateCredential {
            key,
            x5t: xdrsync_jwt::x5t_sha1(cert),
            x5t_s256: xdrsync_jwt::x5t_sha256(cert),
            algorithm,
            not_after: certificate_not_after(cert),
        })
    }

    /// When the certificate expires (its `notAfter`), if it could be read.
    pub fn not_after(&self) -> Option<xdrsync_model::Timestamp> {
        self.not_after
    }

    /// A fresh client assertion for `token_url`, valid for ten minutes.
    pub fn assertion(&self, client_id: &str, token_url: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut header = serde_json::Map::new();
        match self.algorithm {
            xdrsync_jwt::Algorithm::RS256 => header.insert("x5t".into(), self.x5t.clone().into()),
            xdrsync_jwt::Algorithm::PS256 => {
                header.insert("x5t#S256".into(), self.x5t_s256.clone().into())
            }
        };
        let claims = serde_json::json!({
            "aud": token_url, "iss": client_id, "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(), "nbf": now, "iat": now, "exp": now + 600,
        });
        self.key.sign(self.algorithm, header, &claims)
    }
}

/// The `notAfter` of an X.509 certificate (DER), parsed with RustCrypto's `x509-cert`
/// (UTCTime or GeneralizedTime); `None` for anything that is not a certificate.
pub fn certificate_not_after(der: &[u8]) -> Option<xdrsync_model::Timestamp> {
    use x509_cert::der::Decode as _;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let secs = cert
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs();
    Some(xdrsync_model::Timestamp::from_ticks(
        i64::try_from(secs).ok()?.checked_mul(10_000_000)?,
    ))
}

/// Whether the certificate (DER) carries `public` (a SubjectPublicKeyInfo, DER): the
/// certificate's own subject key is compared, never a byte search through the certificate.
fn certificate_has_key(der: &[u8], public: &[u8]) -> bool {
    use x509_cert::der::{Decode as _, Encode as _};
    x509_cert::Certificate::from_der(der)
        .ok()
        .and_then(|c| c.tbs_certificate.subject_public_key_info.to_der().ok())
        .is_some_and(|spki| spki == public)
}

#[cfg(test)]
mod x509_tests {
    #[test]
    fn not_after_of_a_real_certificate() {
        // rcgen's default validity ends 4096-01-01; any generated certificate must parse.
        let cert = rcgen_free_cert();
        let t = super::certificate_not_after(&cert).expect("parsed");
        assert!(t.to_string().starts_with("4096-01-01"), "{t}");
        assert!(super::certificate_not_after(b"not a certificate").is_none());
    }

    /// The input that panicked the old hand-written parser: a GeneralizedTime `notAfter`
    /// shorter than 14 characters. Now: not a certificate, no panic; and no mutation or
    /// truncation of a real certificate panics either.
    #[test]
    fn short_generalized_time_does_not_panic() {
        let mut validity = vec![0x17, 13];
        validity.extend_from_slice(b"250101000000Z");
        validity.extend_from_slice(&[0x18, 5]);
        validity.extend_from_slice(b"2024Z");
        let mut tbs = vec![
            0x02,
            0x01,
            0x01,
            0x30,
            0x00,
            0x30,
            0x00,
            0x30,
            validity.len() as u8,
        ];
        tbs.extend_from_slice(&validity);
        let mut cert = vec![0x30, tbs.len() as u8 + 2, 0x30, tbs.len() as u8];
        cert.extend_from_slice(&tbs);
        assert!(super::certificate_not_after(&cert).is_none());

        let real = rcgen_free_cert();
        for n in 0..real.len() {
            let _ = super::certificate_not_after(&real[..n]);
            let mut m = real.clone();
            m[n] ^= 0xff;
            let _ = super::certificate_not_after(&m);
        }
    }

    /// A self-signed certificate (rcgen defaults: notAfter 4096-01-01T00:00:00Z), DER.
    fn rcgen_free_cert() -> Vec<u8> {
        let pem = include_str!("../tests/data/cert.pem");
        xdrsync_jwt::pem_block(pem, "CERTIFICATE").unwrap()
    }
}

#[cfg(test)]
mod pkcs12_tests {
    use super::CertificateCredential;
    use xdrsync_jwt::Algorithm;

    fn from_pem() -> CertificateCredential {
        CertificateCredential::from_pem(
            include_str!("../tests/data/cert.pem"),
            include_str!("../tests/data/key.pem"),
            Algorithm::PS256,
        )
        .unwrap()
    }

    /// OpenSSL 3's default export (PBES2: PBKDF2-SHA256 + AES-256-CBC), an unencrypted file
    /// (Key Vault's downloads), a chain with a second certificate and the legacy SHA-1 PBE files
    /// (3DES, RC2-40) all give the PEM pair's key and thumbprints.
    #[test]
    fn pfx_files_give_the_same_credential_as_pem() {
        let pem = from_pem();
        for (file, password) in [
            (
                &include_bytes!("../tests/data/cert.pfx")[..],
                "correct-horse",
            ),
            (&include_bytes!("../tests/data/cert-nopass.pfx")[..], ""),
            (
                &include_bytes!("../tests/data/cert-chain.pfx")[..],
                "correct-horse",
            ),
            // `-legacy`: RC2-40 certificates, 3DES key; Windows "TripleDES-SHA1": 3DES for both.
            (
                &include_bytes!("../tests/data/cert-legacy.pfx")[..],
                "correct-horse",
            ),
            (
                &include_bytes!("../tests/data/cert-3des.pfx")[..],
                "correct-horse",
            ),
        ] {
            let pfx = CertificateCredential::from_pkcs12(file, password, Algorithm::PS256)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(pfx.x5t, pem.x5t);
            assert_eq!(pfx.x5t_s256, pem.x5t_s256);
            assert_eq!(pfx.key.kid(), pem.key.kid());
        }
    }

    #[test]
    fn bad_pfx_files_say_what_is_wrong() {
        let err = |file: &[u8], password: &str| match CertificateCredential::from_pkcs12(
            file,
            password,
            Algorithm::RS256,
        ) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        };
        let wrong = err(include_bytes!("../tests/data/cert.pfx"), "wrong");
        assert!(wrong.contains("wrong password"), "{wrong}");
        assert!(!wrong.contains("correct-horse"));
        let legacy = err(include_bytes!("../tests/data/cert-3des.pfx"), "wrong");
        assert!(legacy.contains("wrong password"), "{legacy}");
        let junk = err(b"-----BEGIN CERTIFICATE-----", "");
        assert!(junk.contains("not a PKCS#12 file"), "{junk}");
        let pem_as_pfx = err(include_bytes!("../tests/data/cert.pem"), "");
        assert!(pem_as_pfx.contains("not a PKCS#12 file"), "{pem_as_pfx}");
        // A truncated file (a partial copy) is an error at every length, never a panic.
        let whole = include_bytes!("../tests/data/cert.pfx");
        for n in (0..whole.len()).step_by(23) {
            assert!(!err(&whole[..n], "correct-horse").is_empty());
        }
    }

    /// The file's MAC is verified: a wrong password is refused by the integrity check, and a
    /// changed byte anywhere in the authenticated content is refused even with the right
    /// password (OpenSSL's SHA-256 MAC and the legacy SHA-1 one alike).
    #[test]
    fn pkcs12_mac_is_verified() {
        let err = |file: &[u8], password: &str| {
            CertificateCredential::from_pkcs12(file, password, Algorithm::RS256)
                .err()
                .unwrap_or_default()
        };
        for (file, password) in [
            (
                &include_bytes!("../tests/data/cert.pfx")[..],
                "correct-horse",
            ),
            (
                &include_bytes!("../tests/data/cert-3des.pfx")[..],
                "correct-horse",
            ),
        ] {
            let wrong = err(file, "wrong");
            assert!(wrong.contains("integrity check (MAC) failed"), "{wrong}");
            // Flip bytes inside the authenticated content (past the outer headers, before the
            // MAC at the end): every change is refused, none panics.
            let mut refused = 0;
            for at in (40..file.len() - 80).step_by(97) {
                let mut changed = file.to_vec();
                changed[at] ^= 0x01;
                let e = err(&changed, password);
                assert!(!e.is_empty(), "byte {at} changed and accepted");
                refused += usize::from(e.contains("integrity check"));
            }
            assert!(refused > 0);
        }
    }

    #[test]
    fn pkcs12_iteration_count_is_capped() {
        assert!(super::pkcs12::check_iterations(2_048).is_ok());
        let e = super::pkcs12::check_iterations(u32::MAX).unwrap_err();
        assert!(e.contains("iterations"), "{e}");
    }
}
