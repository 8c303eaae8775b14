//! Client certificates of app registrations (for `client_assertion` credentials).

use base64::Engine as _;
use rcgen::{CertificateParams, DnType, KeyPair};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use xdrsync_jwt::{Jwk, SigningKey};
use xdrsync_model::Timestamp;

/// A certificate registered on an app (its public part, as Entra keeps it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppCertificate {
    /// The certificate, standard base64 DER.
    pub cert_der_b64: String,
    /// Its public key.
    pub jwk: Jwk,
    /// SHA-1 thumbprint, upper-case hex (as the portal shows it).
    pub thumbprint_sha1: String,
    /// SHA-256 thumbprint, upper-case hex.
    pub thumbprint_sha256: String,
    /// When it stops being accepted, if ever.
    #[serde(default)]
    pub expires: Option<Timestamp>,
}

impl AppCertificate {
    /// The DER bytes.
    pub fn der(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.cert_der_b64)
            .unwrap_or_default()
    }

    /// Whether a JWS header thumbprint (`x5t` = SHA-1, `x5t#S256` = SHA-256; base64url or
    /// standard base64, padded or not) names this certificate.
    pub fn matches(&self, x5t: Option<&str>, x5t_s256: Option<&str>) -> bool {
        let eq = |given: Option<&str>, hex_thumb: &str| {
            given
                .and_then(xdrsync_jwt::b64_any)
                .is_some_and(|raw| hex::encode_upper(raw) == hex_thumb)
        };
        eq(x5t, &self.thumbprint_sha1) || eq(x5t_s256, &self.thumbprint_sha256)
    }
}

/// A generated certificate with its PEM files' contents.
#[derive(Debug)]
pub struct GeneratedCert {
    /// The registered (public) part.
    pub cert: AppCertificate,
    /// The certificate PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key PEM.
    pub key_pem: String,
}

/// Generates an RSA-2048 self-signed certificate for an app (RSA, because RS256 and PS256
/// assertions need it; azure-identity requires RSA keys).
pub fn generate(subject: &str, expires: Option<Timestamp>) -> Result<GeneratedCert, String> {
    let key = SigningKey::generate(2048).map_err(|e| e.to_string())?;
    let key_pem = key.to_pkcs8_pem().map_err(|e| e.to_string())?;
    let pair = KeyPair::from_pkcs8_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name.push(DnType::CommonName, subject);
    let cert = params.self_signed(&pair).map_err(|e| e.to_string())?;
    Ok(GeneratedCert {
        cert: register(cert.der(), &key, expires),
        cert_pem: cert.pem(),
        key_pem,
    })
}

/// The registered form of an existing certificate (DER) and its key: what uploading it to the
/// app registration keeps.
pub fn register(der: &[u8], key: &SigningKey, expires: Option<Timestamp>) -> AppCertificate {
    let mut jwk = key.jwk();
    jwk.kid = xdrsync_jwt::x5t_sha1(der);
    jwk.x5t = Some(jwk.kid.clone());
    AppCertificate {
        cert_der_b64: base64::engine::general_purpose::STANDARD.encode(der),
        jwk,
        thumbprint_sha1: hex::encode_upper(Sha1::digest(der)),
        thumbprint_sha256: hex::encode_upper(Sha256::digest(der)),
        expires,
    }
}

/// A token-signing key with a self-signed certificate, as Entra publishes its keys: the JWK's
/// `kid` and `x5t` are the certificate's SHA-1 thumbprint and `x5c` carries the certificate.
pub fn token_signing_key() -> Result<SigningKey, String> {
    let key = SigningKey::generate(2048).map_err(|e| e.to_string())?;
    let key_pem = key.to_pkcs8_pem().map_err(|e| e.to_string())?;
    let pair = KeyPair::from_pkcs8_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "accounts.accesscontrol.windows.net");
    let cert = params.self_signed(&pair).map_err(|e| e.to_string())?;
    Ok(key.with_certificate(cert.der()))
}
