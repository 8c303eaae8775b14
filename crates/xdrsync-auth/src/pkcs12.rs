//! Reads a certificate and its private key out of a PKCS#12 (`.pfx`/`.p12`) file, as Azure Key
//! Vault, Windows and `openssl pkcs12 -export` write them.
//!
//! Only what a client assertion needs is parsed: the bags of the authenticated safe, with the
//! key in a (shrouded) key bag and the certificates in cert bags. Encryption is PBES2
//! (PBKDF2 + AES-CBC), the default of OpenSSL 3 and of current Windows "AES256-SHA256" exports,
//! or none (Key Vault downloads). The legacy PKCS#12 PBE ciphers (3DES, RC2-40) are refused with
//! the command that re-encrypts the file. The file's MAC is not checked; a wrong password fails
//! the decryption instead, which is reported as such. Which certificate is the key's is decided
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
const LEGACY_PBE: &str = "1.2.840.113549.1.12.1.";

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
    let auth_safe = pfx
        .sequence(|r: &mut SliceReader<'_>| {
            let _version: u8 = r.decode()?;
            let content: AnyRef<'_> = r.decode()?;
            // macData, when present, follows; it is not checked (see the module docs).
            while !r.is_finished() {
                let _: AnyRef<'_> = r.decode()?;
            }
            Ok(content)
        })
        .map_err(malformed)?;
    let (oid, content) = content_info(auth_safe)?;
    if oid != DATA {
        return Err(malformed("the authenticated safe is not plain data"));
    }
    let safe_der = octets(content)?;
    let infos: Vec<AnyRef<'_>> = AnyRef::from_der(safe_der)
        .and_then(|a| a.sequence(|r: &mut SliceReader<'_>| all(r)))
        .map_err(malformed)?;
    let mut out = Contents {
        keys: Vec::new(),
        certs: Vec::new(),
    };
    for info in infos {
        let (oid, content) = content_info(info)?;
        let bags = if oid == DATA {
            octets(content)?.to_vec()
        } else if oid == ENCRYPTED_DATA {
            decrypt_data(content, password)?
        } else {
            continue;
        };
        read_bags(&bags, password, &mut out)?;
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
    let scheme = match pkcs8::pkcs5::EncryptionScheme::from_der(alg_der) {
        Ok(s) => s,
        Err(_) => {
            let oid = AnyRef::from_der(alg_der)
                .and_then(|a| {
                    a.sequence(|r: &mut SliceReader<'_>| {
                        let oid: ObjectIdentifier = r.decode()?;
                        while !r.is_finished() {
                            let _: AnyRef<'_> = r.decode()?;
                        }
                        Ok(oid)
                    })
                })
                .map(|o| o.to_string())
                .unwrap_or_default();
            return Err(if oid.starts_with(LEGACY_PBE) {
                "the PKCS#12 file uses a legacy cipher (3DES or RC2); re-encrypt it with AES: `openssl pkcs12 -legacy -in old.pfx -nodes | openssl pkcs12 -export -out new.pfx`".into()
            } else {
                format!("the PKCS#12 file uses an unsupported encryption ({oid})")
            });
        }
    };
    scheme
        .decrypt(password, ciphertext)
        .map_err(|_| "cannot decrypt the PKCS#12 file: wrong password?".into())
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
