//! The encrypted token vault: refresh tokens from `xdrsync auth login`, at rest.
//!
//! Refresh tokens are credentials that last up to 90 idle days, so they are never written in the
//! clear: the vault file is one ChaCha20-Poly1305 message (a fresh random nonce per write) keyed
//! by a 32-byte key from an env var or key file, written atomically with mode 0600. A wrong key
//! or a changed byte is a clear error, never a panic and never a silent empty vault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use xdrsync_model::{SecretString, Timestamp};

/// A vault failure.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The file could not be read or written.
    #[error("token vault {path}: {message}")]
    Io {
        /// The vault file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Decryption failed: wrong key, or the file was changed.
    #[error(
        "token vault {path} cannot be decrypted: the key is wrong or the file was tampered with"
    )]
    Decrypt {
        /// The vault file.
        path: PathBuf,
    },
    /// The key is not 32 bytes of standard base64.
    #[error(
        "the token vault key must be 32 bytes, standard base64 (e.g. `openssl rand -base64 32`): {0}"
    )]
    Key(String),
}

/// The vault key (32 bytes); never printed.
#[derive(Clone)]
pub struct VaultKey([u8; 32]);

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultKey(**REDACTED**)")
    }
}

impl VaultKey {
    /// Parses base64 text (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, VaultError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| VaultError::Key(e.to_string()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| VaultError::Key(format!("got {} bytes", b.len())))?;
        Ok(VaultKey(key))
    }
}

/// One stored refresh token.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredToken {
    /// The refresh token.
    pub refresh_token: String,
    /// When it was obtained.
    pub issued: Timestamp,
    /// When it was last redeemed (Entra expires it after 90 idle days).
    pub last_used: Timestamp,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("issued", &self.issued)
            .field("last_used", &self.last_used)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    version: u32,
    nonce: String,
    ciphertext: String,
}

/// The vault file. Each operation reads, changes and rewrites it under a lock.
#[derive(Debug)]
pub struct Vault {
    path: PathBuf,
    key: VaultKey,
    lock: Mutex<()>,
}

impl Vault {
    /// A vault at `path` with `key` (the file is created on first write).
    pub fn new(path: impl Into<PathBuf>, key: VaultKey) -> Self {
        Vault {
            path: path.into(),
            key,
            lock: Mutex::new(()),
        }
    }

    /// The vault file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, message: impl std::fmt::Display) -> VaultError {
        VaultError::Io {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }

    fn read(&self) -> Result<BTreeMap<String, StoredToken>, VaultError> {
        let text = match fs_err::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.io(e)),
        };
        let decrypt = || VaultError::Decrypt {
            path: self.path.clone(),
        };
        let env: Envelope = serde_json::from_str(&text).map_err(|_| decrypt())?;
        let nonce = STANDARD.decode(&env.nonce).map_err(|_| decrypt())?;
        let ct = STANDARD.decode(&env.ciphertext).map_err(|_| decrypt())?;
        if env.version != 1 || nonce.len() != 12 {
            return Err(decrypt());
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.key.0));
        let plain = cipher
            .decrypt(Nonce::from_slice(&nonce), ct.as_slice())
            .map_err(|_| decrypt())?;
        serde_json::from_slice(&plain).map_err(|_| decrypt())
    }

    fn write(&self, entries: &BTreeMap<String, StoredToken>) -> Result<(), VaultError> {
        let plain = serde_json::to_vec(entries).map_err(|e| self.io(e))?;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.key.0));
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
            .map_err(|_| self.io("encryption failed"))?;
        let env = Envelope {
            version: 1,
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(ct),
        };
        let text = serde_json::to_string(&env).map_err(|e| self.io(e))?;
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // An unpredictable name, created exclusively (a planted symlink is never followed)
        // and 0600 from the first byte.
        use std::io::Write as _;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tokens.")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| self.io(e))?;
        tmp.write_all(text.as_bytes()).map_err(|e| self.io(e))?;
        tmp.as_file().sync_all().map_err(|e| self.io(e))?;
        tmp.persist(&self.path).map_err(|e| self.io(e.error))?;
        Ok(())
    }

    /// The refresh token stored under `key`.
    pub fn get(&self, key: &str) -> Result<Option<(SecretString, StoredToken)>, VaultError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        Ok(self
            .read()?
            .remove(key)
            .map(|t| (SecretString::new(t.refresh_token.clone()), t)))
    }

    /// Stores (replaces) the refresh token under `key`. `issued` is kept when the token is a
    /// rotation of the one already stored.
    pub fn put(
        &self,
        key: &str,
        refresh_token: &SecretString,
        now: Timestamp,
        rotated: bool,
    ) -> Result<(), VaultError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries = self.read()?;
        let issued = if rotated {
            entries.get(key).map_or(now, |t| t.issued)
        } else {
            now
        };
        entries.insert(
            key.to_owned(),
            StoredToken {
                refresh_token: refresh_token.expose().to_owned(),
                issued,
                last_used: now,
            },
        );
        self.write(&entries)
    }

    /// Every stored entry's key and dates (not the tokens).
    pub fn list(&self) -> Result<Vec<(String, StoredToken)>, VaultError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        Ok(self.read()?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> VaultKey {
        VaultKey([b; 32])
    }

    #[test]
    fn round_trip_encrypted_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.vault");
        let v = Vault::new(&path, key(1));
        let now = Timestamp::now();
        v.put("t1", &SecretString::new("rt-secret-value-1"), now, false)
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("rt-secret-value-1"), "not in the clear");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let (rt, stored) = v.get("t1").unwrap().unwrap();
        assert_eq!(rt.expose(), "rt-secret-value-1");
        assert!(!format!("{stored:?} {rt:?} {:?}", key(1)).contains("rt-secret"));
        assert!(v.get("t2").unwrap().is_none());
    }

    /// The vault's temporary file has an unpredictable name, is created exclusively and is
    /// renamed over the vault: a symlink planted at a predictable name, or at the vault's own
    /// path, is never followed (the file it points to is left alone), and nothing is left
    /// behind.
    #[cfg(unix)]
    #[test]
    fn vault_temp_file_never_follows_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let path = dir.path().join("tokens.vault");
        for planted in ["tokens.vault.tmp", ".tokens.vault.tmp", "tokens.tmp"] {
            std::os::unix::fs::symlink(&victim, dir.path().join(planted)).unwrap();
        }
        let v = Vault::new(&path, key(3));
        v.put("t", &SecretString::new("rt"), Timestamp::now(), false)
            .unwrap();
        v.put("t2", &SecretString::new("rt2"), Timestamp::now(), false)
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file());
        for planted in ["tokens.vault.tmp", ".tokens.vault.tmp", "tokens.tmp"] {
            let link = std::fs::symlink_metadata(dir.path().join(planted)).unwrap();
            assert!(link.file_type().is_symlink(), "{planted} was replaced");
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tokens.") && n != ".tokens.vault.tmp")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert_eq!(v.get("t").unwrap().unwrap().0.expose(), "rt");

        // A vault path that is itself a link to a file that is not a vault is a clear
        // error, and the file it points to is never overwritten.
        let linked = dir.path().join("linked.vault");
        std::os::unix::fs::symlink(&victim, &linked).unwrap();
        let err = Vault::new(&linked, key(3))
            .put("t", &SecretString::new("rt"), Timestamp::now(), false)
            .unwrap_err();
        assert!(matches!(err, VaultError::Decrypt { .. }), "{err:?}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    }

    #[test]
    fn wrong_key_and_tampering_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.vault");
        Vault::new(&path, key(1))
            .put("t", &SecretString::new("x"), Timestamp::now(), false)
            .unwrap();
        let err = Vault::new(&path, key(2)).get("t").unwrap_err().to_string();
        assert!(
            err.contains("the key is wrong or the file was tampered with"),
            "{err}"
        );
        let mut text = std::fs::read_to_string(&path).unwrap();
        let i = text.find("ciphertext").unwrap() + 14;
        let flipped = if text.get(i..=i).unwrap() == "A" {
            "B"
        } else {
            "A"
        };
        text.replace_range(i..=i, flipped);
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            Vault::new(&path, key(1)).get("t"),
            Err(VaultError::Decrypt { .. })
        ));
        assert!(VaultKey::from_base64("c2hvcnQ=").is_err());
    }
}
