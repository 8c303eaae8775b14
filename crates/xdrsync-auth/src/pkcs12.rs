//! Reads a certificate and its private key out of a PKCS#12 (`.pfx`/`.p12`) file, as Azure Key
//! Vault, Windows and `openssl pkcs12 -export` write them.
//!
//! Only what a client assertion needs is parsed: the bags of the authenticated safe, with the
//! key in a (shrouded) key bag and the certificates in cert bags. Encryption is PBES2
//! (PBKDF2 + AES-CBC), the default of OpenSSL 3 and of current Windows "AES256-SHA256" exports;
//! the legacy PKCS#12 PBE with SHA-1 and 3DES or RC2-40 (Windows "TripleDES-SHA1" exports, older
//! OpenSSL, `-legacy`), through the RFC 7292 appendix B key derivation; or none (Key Vault
//! downloads). The file's MAC (HMAC-SHA-1 or HMAC-SHA-256 with the RFC 7292 key derivation)
//! is verified when present, so a tampered file or a wrong password is refused before anything
//! is decrypted; iteration counts taken from the file are capped ([`MAX_ITERATIONS`]) so a
//! hostile file cannot keep a pass busy for hours. Which certificate is the key's is decided
//! by its public key, not by bag order.

use pkcs8::der::asn1::{AnyRef, ObjectIdentifier, OctetStringRef};
use pkcs8::der::{Decode as _, Reader as _, SliceReader};

const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const KEY_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.1");
const SHROUDED_KEY_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.2");
const CERT_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.3");
const X509_CERT: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.22.1");
const PBE_SHA1_3DES: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.3");
const PBE_SHA1_RC2_40: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.6");

const WRONG_PASSWORD: &str = "cannot decrypt the PKCS#12 file: wrong password?";
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

/// The most key-derivation iterations taken from a file (OpenSSL writes 2,048, Windows 2,000,
/// the most careful exports some 600,000): more is a hostile file, refused.
pub(crate) const MAX_ITERATIONS: u32 = 2_000_000;

pub(crate) fn check_iterations(n: u32) -> Result<u32, String> {
    if n > MAX_ITERATIONS {
        return Err(format!(
            "the PKCS#12 file asks for {n} key-derivation iterations, more than the {MAX_ITERATIONS} accepted"
        ));
    }
    Ok(n)
}

/// The key (PKCS#8 DER) and every certificate (DER) of a PKCS#12 file.
pub(crate) struct Contents {
    pub(crate) keys: Vec<Vec<u8>>,
    pub(crate) certs: Vec<Vec<u8>>,
}

fn malformed(e: impl std::fmt::Display) -> String {
    format!("not a PKCS#12 file ({e})")
}

/// `[0] EXPLICIT` content: the inner element's full encoding.
fn explicit(any: AnyRef<'_>) -> Result<AnyRef<'_>, String> {
    AnyRef::from_der(any.value()).map_err(malformed)
}

fn octets(any: AnyRef<'_>) -> Result<&[u8], String> {
    Ok(OctetStringRef::try_from(any).map_err(malformed)?.as_bytes())
}

pub(crate) fn parse(der: &[u8], password: &str) -> Result<Contents, String> {
    let pfx = AnyRef::from_der(der).map_err(malformed)?;
    let (auth_safe, mac) = pfx
        .sequence(|r: &mut SliceReader<'_>| {
            let _version: u8 = r.decode()?;
            let content: AnyRef<'_> = r.decode()?;
            let mac: Option<AnyRef<'_>> = if r.is_finished() {
                None
            } else {
                Some(r.decode()?)
            };
            while !r.is_finished() {
                let _: AnyRef<'_> = r.decode()?;
            }
            Ok((content, mac))
        })
        .map_err(malformed)?;
    let (oid, content) = content_info(auth_safe)?;
    if oid != DATA {
        return Err(malformed("the authenticated safe is not plain data"));
    }
    let safe_der = octets(content)?;
    if let Some(mac) = mac {
        verify_mac(mac, safe_der, password)?;
    }
    let infos: Vec<AnyRef<'_>> = AnyRef::from_der(safe_der)
        .and_then(|a| a.sequence(|r: &mut SliceReader<'_>| all(r)))
        .map_err(malformed)?;
    let mut out = Contents {
        keys: Vec::new(),
        certs: Vec::new(),
    };
    for info in infos {
        let (oid, content) = content_info(info)?;
        if oid == DATA {
            read_bags(octets(content)?, password, &mut out)?;
        } else if oid == ENCRYPTED_DATA {
            // A wrong password passes the legacy ciphers' padding check one time in 256; the
            // garbage then fails to parse, which is the same mistake.
            let bags = decrypt_data(content, password)?;
            read_bags(&bags, password, &mut out).map_err(|e| {
                if e.starts_with("not a PKCS#12") {
                    WRONG_PASSWORD.to_owned()
                } else {
                    e
                }
            })?;
        }
    }
    Ok(out)
}

fn all<'a>(r: &mut SliceReader<'a>) -> pkcs8::der::Result<Vec<AnyRef<'a>>> {
    let mut v = Vec::new();
    while !r.is_finished() {
        v.push(r.decode()?);
    }
    Ok(v)
}

/// `ContentInfo ::= SEQUENCE { contentType OID, content [0] EXPLICIT ANY }`.
fn content_info(any: AnyRef<'_>) -> Result<(ObjectIdentifier, AnyRef<'_>), String> {
    let (oid, wrapped) = any
        .sequence(|r: &mut SliceReader<'_>| {
            let oid: ObjectIdentifier = r.decode()?;
            let wrapped: AnyRef<'_> = r.decode()?;
            Ok((oid, wrapped))
        })
        .map_err(malformed)?;
    Ok((oid, explicit(wrapped)?))
}

/// `EncryptedData ::= SEQUENCE { version, EncryptedContentInfo ::= SEQUENCE { contentType,
/// contentEncryptionAlgorithm, encryptedContent [0] IMPLICIT OCTET STRING } }`.
fn decrypt_data(content: AnyRef<'_>, password: &str) -> Result<Vec<u8>, String> {
    let (alg, ciphertext) = content
        .sequence(|r: &mut SliceReader<'_>| {
            let _version: u8 = r.decode()?;
            r.sequence(|r| {
                let _type: ObjectIdentifier = r.decode()?;
                let alg: AnyRef<'_> = r.decode()?;
                let data: AnyRef<'_> = r.decode()?;
                Ok((alg, data.value()))
            })
        })
        .map_err(malformed)?;
    let alg_der = pkcs8::der::Encode::to_der(&alg).map_err(malformed)?;
    decrypt(&alg_der, ciphertext, password)
}

fn decrypt(alg_der: &[u8], ciphertext: &[u8], password: &str) -> Result<Vec<u8>, String> {
    let wrong = || WRONG_PASSWORD.to_owned();
    if let Ok(scheme) = pkcs8::pkcs5::EncryptionScheme::from_der(alg_der) {
        if let pkcs8::pkcs5::EncryptionScheme::Pbes2(p) = &scheme
            && let pkcs8::pkcs5::pbes2::Kdf::Pbkdf2(k) = &p.kdf
        {
            check_iterations(k.iteration_count)?;
        }
        return scheme.decrypt(password, ciphertext).map_err(|_| wrong());
    }
    // `AlgorithmIdentifier { oid, pkcs-12PbeParams ::= SEQUENCE { salt OCTET STRING, iterations INTEGER } }`.
    let (oid, salt, iterations) = AnyRef::from_der(alg_der)
        .and_then(|a| {
            a.sequence(|r: &mut SliceReader<'_>| {
                let oid: ObjectIdentifier = r.decode()?;
                let (salt, iterations) = r.sequence(|r| {
                    let salt: OctetStringRef<'_> = r.decode()?;
                    let iterations: u32 = r.decode()?;
                    Ok((salt.as_bytes(), iterations))
                })?;
                Ok((oid, salt, iterations))
            })
        })
        .map_err(|_| "the PKCS#12 file uses an unsupported encryption".to_owned())?;
    let iterations = check_iterations(iterations)?;
    use cbc::cipher::{
        BlockDecryptMut as _, InnerIvInit as _, KeyIvInit as _, block_padding::Pkcs7,
    };
    if oid == PBE_SHA1_3DES {
        let key = legacy_kdf(password, salt, iterations, 1, 24);
        let iv = legacy_kdf(password, salt, iterations, 2, 8);
        cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
            .map_err(|_| wrong())?
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .map_err(|_| wrong())
    } else if oid == PBE_SHA1_RC2_40 {
        let key = legacy_kdf(password, salt, iterations, 1, 5);
        let iv = legacy_kdf(password, salt, iterations, 2, 8);
        let rc2 = rc2::Rc2::new_with_eff_key_len(&key, 40);
        cbc::Decryptor::<rc2::Rc2>::inner_iv_slice_init(rc2, &iv)
            .map_err(|_| wrong())?
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .map_err(|_| wrong())
    } else {
        Err(format!(
            "the PKCS#12 file uses an unsupported encryption ({oid}); re-encrypt it with AES: `openssl pkcs12 -in old.pfx -nodes | openssl pkcs12 -export -out new.pfx`"
        ))
    }
}

/// `MacData ::= SEQUENCE { mac DigestInfo { digestAlgorithm, digest OCTET STRING },
/// macSalt OCTET STRING, iterations INTEGER DEFAULT 1 }`: the HMAC of the authenticated
/// safe's content with a key derived from the password (RFC 7292 B.2, ID 3).
fn verify_mac(mac: AnyRef<'_>, content: &[u8], password: &str) -> Result<(), String> {
    use hmac::Mac as _;
    let (alg, digest, salt, iterations) = mac
        .sequence(|r: &mut SliceReader<'_>| {
            let (alg, digest) = r.sequence(|r| {
                let alg: ObjectIdentifier = r.sequence(|r| {
                    let oid: ObjectIdentifier = r.decode()?;
                    while !r.is_finished() {
                        let _: AnyRef<'_> = r.decode()?;
                    }
                    Ok(oid)
                })?;
                let digest: OctetStringRef<'_> = r.decode()?;
                Ok((alg, digest.as_bytes()))
            })?;
            let salt: OctetStringRef<'_> = r.decode()?;
            let iterations: u32 = if r.is_finished() { 1 } else { r.decode()? };
            Ok((alg, digest, salt.as_bytes(), iterations))
        })
        .map_err(malformed)?;
    let iterations = check_iterations(iterations)?;
    // An empty password is written either as an empty BMPString or as none at all; OpenSSL
    // accepts both, so do we.
    let passwords: &[Option<&str>] = if password.is_empty() {
        &[Some(""), None]
    } else {
        &[Some(password)]
    };
    for p in passwords {
        let ok = if alg == SHA1 {
            let key = pkcs12_kdf::<sha1::Sha1>(*p, salt, iterations, 3, 20);
            hmac::Hmac::<sha1::Sha1>::new_from_slice(&key)
                .map(|m| m.chain_update(content).verify_slice(digest).is_ok())
                .unwrap_or(false)
        } else if alg == SHA256 {
            let key = pkcs12_kdf::<sha2::Sha256>(*p, salt, iterations, 3, 32);
            hmac::Hmac::<sha2::Sha256>::new_from_slice(&key)
                .map(|m| m.chain_update(content).verify_slice(digest).is_ok())
                .unwrap_or(false)
        } else {
            return Err(format!(
                "the PKCS#12 file's integrity check uses an unsupported digest ({alg})"
            ));
        };
        if ok {
            return Ok(());
        }
    }
    Err(
        "the PKCS#12 file's integrity check (MAC) failed: wrong password, or the file was changed"
            .into(),
    )
}

/// RFC 7292 appendix B.2 with SHA-1: `id` 1 derives the key, 2 the IV.
fn legacy_kdf(password: &str, salt: &[u8], iterations: u32, id: u8, len: usize) -> Vec<u8> {
    pkcs12_kdf::<sha1::Sha1>(Some(password), salt, iterations, id, len)
}

/// RFC 7292 appendix B.2 for a digest with a 64-byte block (SHA-1, SHA-256): `id` 1 derives
/// a key, 2 an IV, 3 a MAC key. The password is the BMPString (UTF-16 big-endian) with its
/// two-byte terminator (`None`: no password at all).
fn pkcs12_kdf<D: sha2::Digest>(
    password: Option<&str>,
    salt: &[u8],
    iterations: u32,
    id: u8,
    len: usize,
) -> Vec<u8> {
    const V: usize = 64;
    let u = <D as sha2::Digest>::output_size();
    let mut pass: Vec<u8> = Vec::new();
    if let Some(password) = password {
        pass = password.encode_utf16().flat_map(u16::to_be_bytes).collect();
        pass.extend([0, 0]);
    }
    let fill = |x: &[u8]| -> Vec<u8> {
        if x.is_empty() {
            return Vec::new();
        }
        let n = V * x.len().div_ceil(V);
        x.iter().copied().cycle().take(n).collect()
    };
    let mut i: Vec<u8> = fill(salt);
    i.extend(fill(&pass));
    let mut out = Vec::with_capacity(len + u);
    while out.len() < len {
        let mut a = D::new()
            .chain_update([id; V])
            .chain_update(&i)
            .finalize()
            .to_vec();
        for _ in 1..iterations.max(1) {
            a = D::digest(&a).to_vec();
        }
        out.extend_from_slice(&a);
        // I_j = (I_j + B + 1) mod 2^(8v), B = A repeated to v bytes.
        let b: Vec<u8> = a.iter().copied().cycle().take(V).collect();
        for block in i.chunks_mut(V) {
            let mut carry = 1u16;
            for (x, y) in block.iter_mut().zip(&b).rev() {
                let sum = u16::from(*x) + u16::from(*y) + carry;
                *x = sum as u8;
                carry = sum >> 8;
            }
        }
    }
    out.truncate(len);
    out
}

/// `SafeContents ::= SEQUENCE OF SafeBag { bagId OID, bagValue [0] EXPLICIT ANY, attrs SET OPTIONAL }`.
fn read_bags(der: &[u8], password: &str, out: &mut Contents) -> Result<(), String> {
    let bags: Vec<AnyRef<'_>> = AnyRef::from_der(der)
        .and_then(|a| a.sequence(|r: &mut SliceReader<'_>| all(r)))
        .map_err(malformed)?;
    for bag in bags {
        let (oid, value) = bag
            .sequence(|r: &mut SliceReader<'_>| {
                let oid: ObjectIdentifier = r.decode()?;
                let value: AnyRef<'_> = r.decode()?;
                while !r.is_finished() {
                    let _: AnyRef<'_> = r.decode()?;
                }
                Ok((oid, value))
            })
            .map_err(malformed)?;
        let value = explicit(value)?;
        if oid == KEY_BAG {
            out.keys
                .push(pkcs8::der::Encode::to_der(&value).map_err(malformed)?);
        } else if oid == SHROUDED_KEY_BAG {
            let (alg, ciphertext) = value
                .sequence(|r: &mut SliceReader<'_>| {
                    let alg: AnyRef<'_> = r.decode()?;
                    let data: OctetStringRef<'_> = r.decode()?;
                    Ok((alg, data.as_bytes()))
                })
                .map_err(malformed)?;
            let alg_der = pkcs8::der::Encode::to_der(&alg).map_err(malformed)?;
            out.keys.push(decrypt(&alg_der, ciphertext, password)?);
        } else if oid == CERT_BAG {
            let (kind, cert) = value
                .sequence(|r: &mut SliceReader<'_>| {
                    let kind: ObjectIdentifier = r.decode()?;
                    let cert: AnyRef<'_> = r.decode()?;
                    Ok((kind, cert))
                })
                .map_err(malformed)?;
            if kind == X509_CERT {
                out.certs.push(octets(explicit(cert)?)?.to_vec());
            }
        }
    }
    Ok(())
}
