//! Channel secrets sealed at rest: AES-256-GCM (ring) under a key from configuration
//! (`secret_key`, base64 of 32 bytes), else a key Herald creates once in its data directory.
//! Each sealed value is `sealed:v1:` + base64(nonce ‖ ciphertext ‖ tag), bound to its app,
//! channel and field as associated data, so a value copied to another place does not open.
//! Daemons sharing one Redis must share the key.

use std::path::Path;

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const PREFIX: &str = "sealed:v1:";
const KEY_FILE: &str = "secret.key";

/// Seals and opens secrets with one key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
    /// Derives keys for other purposes from the same secret (tracking links).
    derive: ring::hmac::Key,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// Why a key cannot be loaded or a secret opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret_key is not base64: {0}")]
    NotBase64(base64::DecodeError),
    #[error("secret_key must be 32 bytes (base64 of 32 random bytes), not {0}")]
    WrongLength(usize),
    #[error("secret_key is not an AES-256 key")]
    NotAesKey,
    #[error("no system randomness")]
    NoRandomness,
    #[error("{path}: {source}")]
    KeyFile { path: String, source: Box<SecretError> },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("a stored secret is not sealed")]
    NotSealed,
    #[error("a stored secret is damaged")]
    Damaged,
    #[error("a stored secret does not open with this daemon's secret_key")]
    WrongKey,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Sealer {
    /// A key given as base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let bytes = b64().decode(text.trim()).map_err(SecretError::NotBase64)?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        if bytes.len() != 32 {
            return Err(SecretError::WrongLength(bytes.len()));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SecretError::NotAesKey)?;
        Ok(Self { key: LessSafeKey::new(key), rng: SystemRandom::new(), derive: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes) })
    }

    /// A 32-byte key for `purpose`, derived from the sealing key (HMAC-SHA256 of the purpose):
    /// daemons that share `secret_key` derive the same one.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::hmac::sign(&self.derive, purpose.as_bytes()).as_ref());
        out
    }

    /// The configured key, else the one in `data_dir` (created, readable by its owner only, the
    /// first time).
    pub fn load(configured: Option<&str>, data_dir: &Path) -> Result<Self, SecretError> {
        if let Some(k) = configured {
            return Self::from_base64(k);
        }
        let path = data_dir.join(KEY_FILE);
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source| SecretError::Io { path, source }
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                Self::from_base64(&text).map_err(|e| SecretError::KeyFile { path: path.display().to_string(), source: Box::new(e) })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                SystemRandom::new().fill(&mut bytes).map_err(|_| SecretError::NoRandomness)?;
                std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
                write_private(&path, &b64().encode(bytes)).map_err(io(&path))?;
                tracing::info!(path = %path.display(), "Created a key for channel secrets; daemons sharing a store need the same secret_key.");
                Self::from_bytes(&bytes)
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// `plain` sealed for `place` (app, channel and field); empty stays empty.
    pub fn seal(&self, place: &str, plain: &str) -> String {
        if plain.is_empty() {
            return String::new();
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("system randomness");
        let mut data = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(place.as_bytes()), &mut data)
            .expect("AES-GCM sealing of a bounded secret");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{PREFIX}{}", b64().encode(out))
    }

    /// The secret sealed for `place`. Empty stays empty.
    pub fn open(&self, place: &str, sealed: &str) -> Result<String, SecretError> {
        if sealed.is_empty() {
            return Ok(String::new());
        }
        let Some(body) = sealed.strip_prefix(PREFIX) else {
            return Err(SecretError::NotSealed);
        };
        let bytes = b64().decode(body).map_err(|_| SecretError::Damaged)?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretError::Damaged);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let mut data = rest.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Damaged)?;
        let plain = self.key.open_in_place(nonce, Aad::from(place.as_bytes()), &mut data).map_err(|_| SecretError::WrongKey)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretError::Damaged)
    }
}

/// Whether two byte strings are equal, in time that depends on their length only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where a secret belongs: its app, channel and field.
pub fn place(app: &str, channel: &str, field: &str) -> String {
    format!("{app}/{channel}/{field}")
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_in_their_place_and_with_their_key() {
        let s = Sealer::from_bytes(&[7u8; 32]).unwrap();
        let sealed = s.seal("app/apns/token_key", "-----BEGIN PRIVATE KEY-----");
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("PRIVATE"));
        assert_ne!(sealed, s.seal("app/apns/token_key", "-----BEGIN PRIVATE KEY-----"), "a fresh nonce each time");
        assert_eq!(s.open("app/apns/token_key", &sealed).unwrap(), "-----BEGIN PRIVATE KEY-----");
        assert!(s.open("other/apns/token_key", &sealed).is_err(), "bound to its place");
        assert!(Sealer::from_bytes(&[8u8; 32]).unwrap().open("app/apns/token_key", &sealed).is_err(), "bound to its key");
        assert!(s.open("app/apns/token_key", "plain text").is_err());
        assert_eq!((s.seal("p", ""), s.open("p", "").unwrap()), (String::new(), String::new()));
        assert!(Sealer::from_base64("c2hvcnQ=").is_err());
    }

    #[test]
    fn a_key_is_created_once_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = Sealer::load(None, dir.path()).unwrap();
        let sealed = a.seal("p", "secret");
        let b = Sealer::load(None, dir.path()).unwrap();
        assert_eq!(b.open("p", &sealed).unwrap(), "secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
