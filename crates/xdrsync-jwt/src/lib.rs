//! Minimal JOSE for Entra ID: compact JWS with RS256 and PS256, and RSA JWKs.
//!
//! xdrsync needs exactly this much of JOSE: the emulator signs access tokens (RS256, like Entra)
//! and verifies client assertions (RS256 + `x5t`, PS256 + `x5t#S256`); the client verifies
//! tokens against a JWKS for `auth token`. A full JOSE crate would pull in a crypto backend we do
//! not otherwise need, so this crate does the narrow job on RustCrypto's `rsa` with strict
//! rules: the algorithm comes from the caller's allow-list, never from the token alone, so
//! `alg: none` and algorithm confusion are refused.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rsa::pkcs1v15;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::pss;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// A JWS algorithm this crate implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
}

impl Algorithm {
    /// The `alg` header value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::PS256 => "PS256",
        }
    }
}

/// Why a token could not be produced or accepted.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url segments of JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm that is not allowed here (including `none`).
    #[error("algorithm `{0}` is not accepted")]
    Algorithm(String),
    /// The signature does not verify with the given key.
    #[error("signature verification failed")]
    Signature,
    /// A key could not be built or encoded.
    #[error("key error: {0}")]
    Key(String),
}

/// Encodes bytes as base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url with or without padding, or standard base64 (clients send all three).
pub fn b64_any(s: &str) -> Option<Vec<u8>> {
    let trimmed = s.trim_end_matches('=');
    URL_SAFE_NO_PAD.decode(trimmed).ok().or_else(|| {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed)
            .ok()
    })
}

/// The DER bytes of the first PEM block labelled `label` (e.g. `CERTIFICATE`).
pub fn pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let (_, after) = pem.split_once(&begin)?;
    let (inner, _) = after.split_once(&end)?;
    let body: String = inner.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(body).ok()
}

/// The SHA-1 thumbprint of DER bytes, base64url: the `x5t` / `kid` form Entra uses.
pub fn x5t_sha1(der: &[u8]) -> String {
    b64url(&Sha1::digest(der))
}

/// The SHA-256 thumbprint of DER bytes, base64url: the `x5t#S256` form.
pub fn x5t_sha256(der: &[u8]) -> String {
    b64url(&Sha256::digest(der))
}

/// An RSA signing key with its key id.
#[derive(Clone)]
pub struct SigningKey {
    key: RsaPrivateKey,
    /// The same key for `ring`, which signs: its RSA is constant-time and several times
    /// faster than `rsa`'s blinded signing (a token per tenant made that the emulator's top
    /// cost in bench-scale). `None` for a key `ring` refuses (under 2048 bits), which `rsa`
    /// then signs.
    fast: Option<std::sync::Arc<ring::signature::RsaKeyPair>>,
    kid: String,
    /// The key's certificate chain (standard base64 DER), published as `x5c`.
    x5c: Vec<String>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh RSA key of `bits` bits; the key id is the SHA-1 thumbprint of its
    /// public key.
    pub fn generate(bits: usize) -> Result<Self, JwtError> {
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, bits)
            .map_err(|e| JwtError::Key(e.to_string()))?;
        Self::from_key(key)
    }

    /// Loads a PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, JwtError> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| JwtError::Key(e.to_string()))?;
        Self::from_key(key)
    }

    /// Loads an RSA private key from PEM, PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, JwtError> {
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| JwtError::Key("not an RSA private key in PKCS#8 or PKCS#1 PEM".into()))?;
        Self::from_key(key)
    }

    /// Loads a PKCS#8 DER private key (what a PKCS#12 key bag holds).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, JwtError> {
        let key = RsaPrivateKey::from_pkcs8_der(der)
            .map_err(|_| JwtError::Key("not an RSA private key in PKCS#8 DER".into()))?;
        Self::from_key(key)
    }

    /// The DER `SubjectPublicKeyInfo` of the key, as it stands inside its certificate.
    pub fn public_key_der(&self) -> Result<Vec<u8>, JwtError> {
        self.key
            .to_public_key()
            .to_public_key_der()
            .map(|d| d.into_vec())
            .map_err(|e| JwtError::Key(e.to_string()))
    }

    fn from_key(key: RsaPrivateKey) -> Result<Self, JwtError> {
        let spki = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| JwtError::Key(e.to_string()))?;
        let kid = x5t_sha1(spki.as_bytes());
        let fast = key
            .to_pkcs8_der()
            .ok()
            .and_then(|der| ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes()).ok())
            .map(std::sync::Arc::new);
        Ok(Self {
            key,
            fast,
            kid,
            x5c: Vec::new(),
        })
    }

    /// Attaches the key's certificate: the key id becomes the certificate's SHA-1 thumbprint
    /// (as Entra's `kid` = `x5t`) and the JWK carries it as `x5c`.
    pub fn with_certificate(mut self, cert_der: &[u8]) -> Self {
        self.kid = x5t_sha1(cert_der);
        self.x5c = vec![STANDARD.encode(cert_der)];
        self
    }

    /// The PKCS#8 PEM encoding of the private key.
    pub fn to_pkcs8_pem(&self) -> Result<String, JwtError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| JwtError::Key(e.to_string()))
    }

    /// The key id (`kid`, and `x5t` in Entra's JWKS).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, for verifying what this key signed.
    pub fn public_key(&self) -> RsaPublicKey {
        self.key.to_public_key()
    }

    /// The public half as a JWK.
    pub fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_public_key(&self.key.to_public_key(), &self.kid);
        jwk.x5c = self.x5c.clone();
        jwk
    }

    /// Signs `claims` with the given header fields; `alg` and `typ` are set here.
    pub fn sign(
        &self,
        alg: Algorithm,
        mut header: serde_json::Map<String, Value>,
        claims: &Value,
    ) -> String {
        header.insert("typ".into(), "JWT".into());
        header.insert("alg".into(), alg.as_str().into());
        let signing_input = format!(
            "{}.{}",
            b64url(Value::Object(header).to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        if let Some(fast) = &self.fast {
            let padding: &'static dyn ring::signature::RsaEncoding = match alg {
                Algorithm::RS256 => &ring::signature::RSA_PKCS1_SHA256,
                Algorithm::PS256 => &ring::signature::RSA_PSS_SHA256,
            };
            let mut signature = vec![0; fast.public().modulus_len()];
            let rng = ring::rand::SystemRandom::new();
            if fast
                .sign(padding, &rng, signing_input.as_bytes(), &mut signature)
                .is_ok()
            {
                return format!("{signing_input}.{}", b64url(&signature));
            }
        }
        let signature = match alg {
            // Blinded (`sign_with_rng`): the unblinded path is the timing side channel of
            // RUSTSEC-2023-0071 (docs/security.md). PKCS#1 v1.5 signatures stay deterministic.
            Algorithm::RS256 => pkcs1v15::SigningKey::<Sha256>::new(self.key.clone())
                .sign_with_rng(&mut rand::rngs::OsRng, signing_input.as_bytes())
                .to_vec(),
            Algorithm::PS256 => pss::BlindedSigningKey::<Sha256>::new(self.key.clone())
                .sign_with_rng(&mut rand::rngs::OsRng, signing_input.as_bytes())
                .to_vec(),
        };
        format!("{signing_input}.{}", b64url(&signature))
    }
}

/// A public RSA key in JWK form, as Entra publishes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `RSA`.
    pub kty: String,
    /// Always `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// The key id.
    pub kid: String,
    /// SHA-1 thumbprint (Entra sets it equal to `kid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5t: Option<String>,
    /// Modulus, base64url.
    pub n: String,
    /// Exponent, base64url.
    pub e: String,
    /// Certificate chain, standard base64 DER.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub x5c: Vec<String>,
    /// The issuer this key signs for (v2 key sets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

impl Jwk {
    /// Builds a JWK from a public key.
    pub fn from_public_key(key: &RsaPublicKey, kid: &str) -> Self {
        Jwk {
            kty: "RSA".into(),
            use_: Some("sig".into()),
            kid: kid.to_owned(),
            x5t: Some(kid.to_owned()),
            n: b64url(&key.n().to_bytes_be()),
            e: b64url(&key.e().to_bytes_be()),
            x5c: Vec::new(),
            issuer: None,
        }
    }

    /// The RSA public key.
    pub fn public_key(&self) -> Result<RsaPublicKey, JwtError> {
        let n = b64_any(&self.n).ok_or(JwtError::Key("`n` is not base64url".into()))?;
        let e = b64_any(&self.e).ok_or(JwtError::Key("`e` is not base64url".into()))?;
        RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e))
            .map_err(|err| JwtError::Key(err.to_string()))
    }
}

/// A JWK set: `{"keys": [...]}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// A token split into its parts, not yet verified.
#[derive(Clone, Debug)]
pub struct Decoded {
    /// The JOSE header.
    pub header: serde_json::Map<String, Value>,
    /// The claims.
    pub claims: serde_json::Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

impl Decoded {
    /// Splits and decodes a compact JWS without verifying it.
    pub fn parse(token: &str) -> Result<Self, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("expected three dot-separated segments"));
        };
        let json =
            |seg: &str, what: &'static str| -> Result<serde_json::Map<String, Value>, JwtError> {
                let bytes = b64_any(seg).ok_or(JwtError::Malformed(what))?;
                match serde_json::from_slice(&bytes) {
                    Ok(Value::Object(m)) => Ok(m),
                    _ => Err(JwtError::Malformed(what)),
                }
            };
        let header = json(h, "header is not base64url JSON")?;
        let claims = json(c, "payload is not base64url JSON")?;
        let signature = b64_any(s).ok_or(JwtError::Malformed("signature is not base64url"))?;
        Ok(Self {
            header,
            claims,
            signing_input: format!("{h}.{c}"),
            signature,
        })
    }

    /// The header's `alg`.
    pub fn alg(&self) -> Option<&str> {
        self.header.get("alg").and_then(Value::as_str)
    }

    /// The header's `kid`.
    pub fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    /// Verifies the signature with `key`, accepting only the algorithms in `allowed`.
    pub fn verify(&self, key: &RsaPublicKey, allowed: &[Algorithm]) -> Result<Algorithm, JwtError> {
        let alg = match self.alg() {
            Some("RS256") => Algorithm::RS256,
            Some("PS256") => Algorithm::PS256,
            other => return Err(JwtError::Algorithm(other.unwrap_or("(missing)").to_owned())),
        };
        if !allowed.contains(&alg) {
            return Err(JwtError::Algorithm(alg.as_str().to_owned()));
        }
        // ring verifies keys of 2048 bits and up (every key Entra or the emulator issues) in a
        // fraction of `rsa`'s time, and the emulator checks a token on every request; `rsa`
        // keeps the smaller keys a test or an old tenant may still present.
        let ok = if key.size() >= 256 {
            let params: &ring::signature::RsaParameters = match alg {
                Algorithm::RS256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                Algorithm::PS256 => &ring::signature::RSA_PSS_2048_8192_SHA256,
            };
            ring::signature::RsaPublicKeyComponents {
                n: key.n().to_bytes_be(),
                e: key.e().to_bytes_be(),
            }
            .verify(params, self.signing_input.as_bytes(), &self.signature)
            .is_ok()
        } else {
            self.verify_with_rsa(key, alg)?
        };
        if ok {
            Ok(alg)
        } else {
            Err(JwtError::Signature)
        }
    }

    /// The signature check by the `rsa` crate (keys below 2048 bits).
    fn verify_with_rsa(&self, key: &RsaPublicKey, alg: Algorithm) -> Result<bool, JwtError> {
        Ok(match alg {
            Algorithm::RS256 => {
                let sig = pkcs1v15::Signature::try_from(self.signature.as_slice())
                    .map_err(|_| JwtError::Signature)?;
                pkcs1v15::VerifyingKey::<Sha256>::new(key.clone())
                    .verify(self.signing_input.as_bytes(), &sig)
                    .is_ok()
            }
            Algorithm::PS256 => {
                let sig = pss::Signature::try_from(self.signature.as_slice())
                    .map_err(|_| JwtError::Signature)?;
                pss::VerifyingKey::<Sha256>::new(key.clone())
                    .verify(self.signing_input.as_bytes(), &sig)
                    .is_ok()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key() -> SigningKey {
        SigningKey::generate(2048).unwrap()
    }

    #[test]
    fn rs256_and_ps256_round_trip() {
        let k = key();
        let pk = k.jwk().public_key().unwrap();
        for alg in [Algorithm::RS256, Algorithm::PS256] {
            let mut h = serde_json::Map::new();
            h.insert("kid".into(), k.kid().into());
            let token = k.sign(alg, h, &json!({"aud": "x", "n": 1}));
            let d = Decoded::parse(&token).unwrap();
            assert_eq!(d.verify(&pk, &[alg]).unwrap(), alg);
            assert_eq!(d.claims["aud"], "x");
            assert_eq!(d.kid(), Some(k.kid()));
        }
    }

    /// RS256 signs on ring's constant-time RSA (`rsa`'s unblinded path is RUSTSEC-2023-0071)
    /// and stays deterministic: the same input gives the signature `rsa` computes.
    #[test]
    fn rs256_signing_is_blinded_and_deterministic() {
        use rsa::signature::Signer as _;
        let k = key();
        let claims = json!({"aud": "x"});
        let a = k.sign(Algorithm::RS256, serde_json::Map::new(), &claims);
        let b = k.sign(Algorithm::RS256, serde_json::Map::new(), &claims);
        assert_eq!(a, b);
        let (input, sig) = a.rsplit_once('.').unwrap();
        let unblinded = pkcs1v15::SigningKey::<Sha256>::new(k.key.clone())
            .sign(input.as_bytes())
            .to_vec();
        assert_eq!(sig, b64url(&unblinded));
    }

    /// A key ring refuses (under 2048 bits) is signed by `rsa` instead, and verifies.
    #[test]
    fn a_key_ring_refuses_still_signs() {
        let k = SigningKey::generate(1024).unwrap();
        assert!(k.fast.is_none());
        let pk = k.jwk().public_key().unwrap();
        for alg in [Algorithm::RS256, Algorithm::PS256] {
            let token = k.sign(alg, serde_json::Map::new(), &json!({"aud": "x"}));
            assert_eq!(
                Decoded::parse(&token).unwrap().verify(&pk, &[alg]).unwrap(),
                alg
            );
        }
        assert!(key().fast.is_some(), "a 2048-bit key signs on ring");
    }

    /// ring (keys of 2048 bits and more) and `rsa` (smaller keys) must agree on every
    /// verdict: a good signature, a tampered input, a flipped signature bit, another key.
    #[test]
    fn ring_and_rsa_agree_on_every_verdict() {
        let k = key();
        let other = key().jwk().public_key().unwrap();
        let pk = k.jwk().public_key().unwrap();
        for alg in [Algorithm::RS256, Algorithm::PS256] {
            let token = k.sign(alg, serde_json::Map::new(), &json!({"aud": "x"}));
            let good = Decoded::parse(&token).unwrap();
            let mut bad_input = Decoded::parse(&token).unwrap();
            bad_input.signing_input.push('x');
            let mut bad_sig = Decoded::parse(&token).unwrap();
            bad_sig.signature[7] ^= 1;
            let mut short_sig = Decoded::parse(&token).unwrap();
            short_sig.signature.truncate(10);
            let cases = [
                (&good, &pk, true),
                (&bad_input, &pk, false),
                (&bad_sig, &pk, false),
                (&short_sig, &pk, false),
                (&good, &other, false),
            ];
            for (i, (d, key, want)) in cases.into_iter().enumerate() {
                let by_ring = d.verify(key, &[alg]).is_ok();
                let by_rsa = d.verify_with_rsa(key, alg).unwrap_or(false);
                assert_eq!((by_ring, by_rsa), (want, want), "{alg:?} case {i}");
            }
        }
    }

    #[test]
    fn tampered_none_and_wrong_key_are_refused() {
        let k = key();
        let pk = k.jwk().public_key().unwrap();
        let token = k.sign(
            Algorithm::RS256,
            Default::default(),
            &json!({"roles": ["a"]}),
        );
        // Tampered payload.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64url(json!({"roles": ["admin"]}).to_string().as_bytes());
        parts[1] = &forged;
        let tampered = parts.join(".");
        assert!(matches!(
            Decoded::parse(&tampered)
                .unwrap()
                .verify(&pk, &[Algorithm::RS256]),
            Err(JwtError::Signature)
        ));
        // alg: none.
        let none = format!(
            "{}.{}.",
            b64url(br#"{"alg":"none","typ":"JWT"}"#),
            b64url(br#"{"roles":["admin"]}"#)
        );
        assert!(
            matches!(Decoded::parse(&none).unwrap().verify(&pk, &[Algorithm::RS256]), Err(JwtError::Algorithm(a)) if a == "none")
        );
        // Allowed list is the caller's, not the token's.
        assert!(matches!(
            Decoded::parse(&token)
                .unwrap()
                .verify(&pk, &[Algorithm::PS256]),
            Err(JwtError::Algorithm(_))
        ));
        // Another key.
        let other = key().jwk().public_key().unwrap();
        assert!(
            Decoded::parse(&token)
                .unwrap()
                .verify(&other, &[Algorithm::RS256])
                .is_err()
        );
        // Garbage.
        assert!(matches!(Decoded::parse("a.b"), Err(JwtError::Malformed(_))));
    }

    #[test]
    fn pem_round_trip_keeps_kid() {
        let k = key();
        let again = SigningKey::from_pkcs8_pem(&k.to_pkcs8_pem().unwrap()).unwrap();
        assert_eq!(again.kid(), k.kid());
    }

    #[test]
    fn thumbprints_accept_every_client_encoding() {
        // Doc example: hex 84E05C1D…5534 → hOBcHZi846VCHSJbFAs26Go9VTQ (certificate-credentials).
        let raw = b64_any("hOBcHZi846VCHSJbFAs26Go9VTQ").unwrap();
        assert_eq!(b64_any("hOBcHZi846VCHSJbFAs26Go9VTQ=").unwrap(), raw);
        assert_eq!(b64_any("hOBcHZi846VCHSJbFAs26Go9VTQ=").unwrap().len(), 20);
    }
}
