//! Agents' secrets at rest: [`SecretsKey`] seals each value with XChaCha20-Poly1305
//! under the server's key, and opens it again for the one agent and name it was sealed
//! for.
//!
//! - Every write draws a fresh random 192-bit nonce. XChaCha's nonce is long enough that
//!   random nonces never realistically repeat under one key, however many writes there
//!   are (a 96-bit nonce, as in AES-GCM or plain ChaCha20-Poly1305, is only safe for
//!   about 2³² random draws per key).
//! - The agent id and the secret name are the associated data: a ciphertext copied to
//!   another agent's row, or to another name, fails authentication instead of
//!   decrypting.
//! - The key comes from `CORRAL_SECRETS_KEY` (base64 of 32 random bytes). With none, a
//!   zero-setup server on SQLite keeps one in `<data dir>/secrets.key` (mode 0600),
//!   generated on first start; on Postgres, where several hosts share the database,
//!   secret writes are refused instead, so no host invents a key the others lack.
//!
//! Plaintext is never stored, logged or returned by the API: [`SecretsKey`]'s `Debug`
//! shows only its [id](SecretsKey::id), a hash that names the key without revealing it.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

/// Bytes of a key.
pub const KEY_BYTES: usize = 32;
/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 24;
/// The key file's name in the data directory.
pub const KEY_FILE: &str = "secrets.key";

/// The key that seals agents' secrets.
#[derive(Clone)]
pub struct SecretsKey {
    cipher: XChaCha20Poly1305,
    id: String,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKey").field("id", &self.id).finish()
    }
}

/// A sealed secret, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The ciphertext with its 16-byte authentication tag.
    pub ciphertext: Vec<u8>,
    /// The nonce it was sealed with.
    pub nonce: Vec<u8>,
    /// The [id](SecretsKey::id) of the key that sealed it.
    pub key_id: String,
}

/// Why a sealed secret could not be opened. Says nothing about the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Sealed under another key (the server's key changed).
    #[error("the secret was sealed with key {sealed_with}; this server's key is {current}")]
    OtherKey {
        /// The key id stored with the secret.
        sealed_with: String,
        /// This server's key id.
        current: String,
    },
    /// The ciphertext, nonce, agent or name do not match: tampered with, or moved.
    #[error("the secret does not authenticate for this agent and name")]
    Unauthentic,
}

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not base64 of exactly 32 bytes.
    #[error(
        "a secrets key is base64 of exactly 32 random bytes (e.g. `openssl rand -base64 32`): {0}"
    )]
    Malformed(String),
    /// The key file could not be read or written.
    #[error("{0}")]
    Io(String),
}

impl SecretsKey {
    /// The key from its base64 text (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<SecretsKey, KeyError> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|e| KeyError::Malformed(e.to_string()))?;
        let bytes: [u8; KEY_BYTES] = bytes.try_into().map_err(|b: Vec<u8>| {
            KeyError::Malformed(format!("it decodes to {} bytes", b.len()))
        })?;
        Ok(SecretsKey::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8; KEY_BYTES]) -> SecretsKey {
        let digest = Sha256::digest([b"corral-secrets-key-id\0".as_slice(), bytes].concat());
        SecretsKey {
            cipher: XChaCha20Poly1305::new(bytes.into()),
            id: hex::encode(&digest[..8]),
        }
    }

    /// A fresh random key and its base64 text.
    pub fn generate() -> (SecretsKey, String) {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let text = BASE64.encode(key);
        (SecretsKey::from_bytes(&key.into()), text)
    }

    /// The key in `path`, or a new one written there (mode 0600) when the file does
    /// not exist. The flag says whether it was created now.
    pub fn load_or_create(path: &Path) -> Result<(SecretsKey, bool), KeyError> {
        let shown = path.display();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let key = SecretsKey::from_base64(&text)
                    .map_err(|e| KeyError::Io(format!("{shown}: {e}")))?;
                return Ok((key, false));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(KeyError::Io(format!("reading {shown}: {e}"))),
        }
        let (key, text) = SecretsKey::generate();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(path)
            .map_err(|e| KeyError::Io(format!("creating {shown}: {e}")))?;
        file.write_all(format!("{text}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| KeyError::Io(format!("writing {shown}: {e}")))?;
        Ok((key, true))
    }

    /// A short hash that names the key (not secret: it reveals nothing of the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `value` for the secret `name` of agent `agent_id`, with a fresh nonce.
    pub fn seal(&self, agent_id: &str, name: &str, value: &str) -> Sealed {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = associated_data(agent_id, name);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("sealing a secret of bounded size cannot fail");
        Sealed {
            ciphertext,
            nonce: nonce.to_vec(),
            key_id: self.id.clone(),
        }
    }

    /// Opens a secret sealed for `name` of agent `agent_id`.
    pub fn open(&self, agent_id: &str, name: &str, sealed: &Sealed) -> Result<String, OpenError> {
        if sealed.key_id != self.id {
            return Err(OpenError::OtherKey {
                sealed_with: sealed.key_id.clone(),
                current: self.id.clone(),
            });
        }
        if sealed.nonce.len() != NONCE_BYTES {
            return Err(OpenError::Unauthentic);
        }
        let aad = associated_data(agent_id, name);
        let plaintext = self
            .cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| OpenError::Unauthentic)?;
        String::from_utf8(plaintext).map_err(|_| OpenError::Unauthentic)
    }
}

/// What a ciphertext is bound to: a version tag, the agent id and the name, separated
/// by NUL (which neither may contain), so no two pairs give the same bytes.
fn associated_data(agent_id: &str, name: &str) -> Vec<u8> {
    [
        b"corral-secret-v1".as_slice(),
        agent_id.as_bytes(),
        name.as_bytes(),
    ]
    .join(&0u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretsKey {
        SecretsKey::generate().0
    }

    #[test]
    fn a_sealed_secret_opens_for_its_agent_and_name_only() {
        let key = key();
        let sealed = key.seal("agent-a", "API_TOKEN", "s3cr3t value");
        assert_ne!(sealed.ciphertext, b"s3cr3t value".to_vec());
        assert_eq!(sealed.nonce.len(), NONCE_BYTES);
        assert_eq!(
            key.open("agent-a", "API_TOKEN", &sealed).unwrap(),
            "s3cr3t value"
        );
        assert_eq!(
            key.open("agent-b", "API_TOKEN", &sealed),
            Err(OpenError::Unauthentic)
        );
        assert_eq!(
            key.open("agent-a", "OTHER", &sealed),
            Err(OpenError::Unauthentic)
        );
        // The separator keeps ("a\0b", "c") and ("a", "b\0c") apart, were NUL allowed.
        assert_ne!(associated_data("ab", "c"), associated_data("a", "bc"));
    }

    #[test]
    fn every_write_has_its_own_nonce() {
        let key = key();
        let one = key.seal("a", "N", "same");
        let two = key.seal("a", "N", "same");
        assert_ne!(one.nonce, two.nonce);
        assert_ne!(one.ciphertext, two.ciphertext);
    }

    #[test]
    fn a_tampered_ciphertext_or_another_key_is_refused() {
        let key = key();
        let mut sealed = key.seal("a", "N", "value");
        sealed.ciphertext[0] ^= 1;
        assert_eq!(key.open("a", "N", &sealed), Err(OpenError::Unauthentic));
        let other = SecretsKey::generate().0;
        let sealed = key.seal("a", "N", "value");
        assert!(matches!(
            other.open("a", "N", &sealed),
            Err(OpenError::OtherKey { .. })
        ));
    }

    #[test]
    fn keys_are_base64_of_32_bytes_and_debug_hides_them() {
        let (key, text) = SecretsKey::generate();
        let again = SecretsKey::from_base64(&format!(" {text}\n")).unwrap();
        assert_eq!(again.id(), key.id());
        let sealed = key.seal("a", "N", "v");
        assert_eq!(again.open("a", "N", &sealed).unwrap(), "v");
        assert!(!format!("{key:?}").contains(&text));
        let short = SecretsKey::from_base64(&BASE64.encode([0u8; 16])).unwrap_err();
        assert!(short.to_string().contains("decodes to 16 bytes"), "{short}");
        assert!(SecretsKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn the_key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let (first, created) = SecretsKey::load_or_create(&path).unwrap();
        assert!(created);
        let (second, created) = SecretsKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.id(), second.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
