//! The provider token: an ES256 JWT signed with the app's .p8 key, reused for 50 minutes and
//! renewed at once when Apple says it expired.

use std::time::{Duration, Instant};

use base64::Engine as _;
use parking_lot::Mutex;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use super::ApnsError;

/// Apple accepts a provider token for an hour and refuses renewals more often than every 20
/// minutes.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);

/// A .p8 key: PKCS#8, P-256.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl SigningKey {
    pub fn from_pem(pem: &str) -> Result<Self, ApnsError> {
        use rustls_pki_types::pem::PemObject as _;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| ApnsError::KeyNotPem)?;
        let rng = SystemRandom::new();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_pkcs8_der(), &rng).map_err(|_| ApnsError::KeyNotP256)?;
        Ok(Self { pair, rng })
    }

    /// A JWT with `header` and `claims` (JSON), signed ES256.
    pub fn jwt(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing_input = format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()));
        let signature = self.pair.sign(&self.rng, signing_input.as_bytes()).expect("ECDSA signing");
        format!("{signing_input}.{}", b64.encode(signature.as_ref()))
    }
}

/// The provider token, shared by every request of one channel.
pub struct ProviderToken {
    key: SigningKey,
    key_id: String,
    team_id: String,
    current: Mutex<Option<(String, Instant)>>,
}

impl ProviderToken {
    pub fn new(key: SigningKey, key_id: &str, team_id: &str) -> Self {
        Self { key, key_id: key_id.to_string(), team_id: team_id.to_string(), current: Mutex::new(None) }
    }

    fn sign(&self) -> String {
        let header = serde_json::json!({"alg": "ES256", "kid": self.key_id});
        let claims = serde_json::json!({"iss": self.team_id, "iat": chrono::Utc::now().timestamp()});
        self.key.jwt(&header, &claims)
    }

    /// The token to send: the current one while it is fresh.
    pub fn get(&self) -> String {
        let mut current = self.current.lock();
        match &*current {
            Some((t, at)) if at.elapsed() < TOKEN_LIFETIME => t.clone(),
            _ => {
                let t = self.sign();
                *current = Some((t.clone(), Instant::now()));
                t
            }
        }
    }

    /// A new token after Apple refused `stale` (unless another request renewed it already).
    pub fn renew(&self, stale: &str) -> String {
        let mut current = self.current.lock();
        if let Some((t, _)) = &*current {
            if t != stale {
                return t.clone();
            }
        }
        let t = self.sign();
        *current = Some((t.clone(), Instant::now()));
        t
    }
}
