//! Who may call what: API keys with scopes and app lists, their per-key rate limits, the
//! table of which scope each RPC needs, and the audit log of admin and write calls.
//!
//! Keys come from two places. The configuration holds `keys` entries (a name, the SHA-256 of
//! the secret, scopes, apps, a rate) and the older `api_keys` (plain secrets, each an admin
//! key named `api_keys[N]`); the store holds keys made with CreateKey (`herald keys create`),
//! each found by the id its secret carries (`hrld_<id>_<secret>`) and compared by hash, so a
//! revocation is seen by every daemon sharing the store from its next call. Secrets are never
//! kept: only their SHA-256 (they are 32 random bytes, so a fast hash is the right one).
//!
//! With no configured key at all the daemon serves loopback only and every call is the
//! `anonymous` admin, as before scopes existed.

pub mod audit;
pub mod guard;
pub mod methods;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dispatch::quota::RateGate;
use crate::proto::v1::ApiKey;
use crate::secrets::constant_time_eq;
use crate::store::{Store, StoreError};

/// What a key may do. `Admin` includes every other scope; the others are independent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Admin,
    Write,
    Send,
    Read,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Admin, Scope::Write, Scope::Send, Scope::Read];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Write => "write",
            Scope::Send => "send",
            Scope::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.name() == s)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An authenticated caller: the key's name (written in audit lines), what it may do and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Empty: every app.
    pub apps: Vec<String>,
    pub rate_per_second: u32,
    pub burst: u32,
}

impl Caller {
    /// The caller of a daemon with no configured key (loopback only).
    pub fn anonymous() -> Self {
        Self { key_id: String::new(), name: "anonymous".into(), scopes: vec![Scope::Admin], apps: Vec::new(), rate_per_second: 0, burst: 0 }
    }

    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    pub fn may_touch(&self, app_id: &str) -> bool {
        self.apps.is_empty() || self.apps.iter().any(|a| a == app_id)
    }
}

/// Why a call was not let in.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessError {
    #[error("missing 'authorization: Bearer <API key>'")]
    Missing,
    #[error("unknown API key")]
    Unknown,
    #[error("API key '{0}' was revoked")]
    Revoked(String),
    #[error("the key store does not answer: {0}")]
    Unavailable(String),
}

/// A key entry of the configuration file (`[[keys]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfiguredKey {
    pub name: String,
    /// Hex SHA-256 of the secret (`herald keys hash` prints it; `printf %s "$KEY" | sha256sum`).
    pub sha256: String,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    #[serde(default)]
    pub rate_per_second: u32,
    #[serde(default)]
    pub burst: u32,
}

/// A key kept in the store: the public record and its secret's hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    key_id: String,
    name: String,
    scopes: Vec<String>,
    apps: Vec<String>,
    rate_per_second: u32,
    burst: u32,
    created_at: String,
    created_by: String,
    revoked_at: String,
    sha256: String,
}

impl StoredKey {
    fn public(&self) -> ApiKey {
        ApiKey {
            key_id: self.key_id.clone(),
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            app_ids: self.apps.clone(),
            rate_per_second: self.rate_per_second,
            burst: self.burst,
            created_at: self.created_at.clone(),
            created_by: self.created_by.clone(),
            revoked_at: self.revoked_at.clone(),
            source: "store".into(),
        }
    }

    fn caller(&self) -> Caller {
        Caller {
            key_id: self.key_id.clone(),
            name: self.name.clone(),
            scopes: self.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            apps: self.apps.clone(),
            rate_per_second: self.rate_per_second,
            burst: self.burst,
        }
    }
}

pub const SECRET_PREFIX: &str = "hrld_";

/// Hex SHA-256 of a secret as given.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new key id and its secret `hrld_<id>_<43 base64url characters>`.
pub fn new_secret() -> (String, String) {
    let id = hex::encode(rand::random::<[u8; 8]>());
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let token = format!("{SECRET_PREFIX}{id}_{secret}");
    (id, token)
}

/// The key id a store key's secret names, when it has that shape.
fn store_key_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(SECRET_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() >= 32).then_some(id)
}

/// Checks a key's name, scopes and apps; each problem as (field, description).
pub fn check_key(name: &str, scopes: &[String], apps: &[String]) -> Vec<(&'static str, String)> {
    let mut bad = Vec::new();
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        bad.push(("name", "must be 1 to 64 letters, digits, '.', '_' or '-'".to_string()));
    }
    if scopes.is_empty() {
        bad.push(("scopes", "at least one of admin, write, send, read".to_string()));
    }
    for s in scopes {
        if Scope::parse(s).is_none() {
            bad.push(("scopes", format!("'{s}' is not a scope: admin, write, send or read")));
        }
    }
    for a in apps {
        if a.is_empty() || a.len() > 128 {
            bad.push(("app_ids", format!("'{a}' is not an app id")));
        }
    }
    bad
}

struct Configured {
    caller: Caller,
    hash: [u8; 32],
}

/// Every key the daemon accepts, and each one's rate limiter.
pub struct Registry {
    configured: Vec<Configured>,
    store: Arc<dyn Store>,
    limiters: Mutex<HashMap<String, Arc<RateGate>>>,
    /// Store keys already read, when this daemon is the store's only writer (the embedded
    /// store): every creation and revocation goes through here, so the copy is exact. On a
    /// shared store each call reads its key, so a revocation elsewhere counts at once.
    cache: Option<Mutex<HashMap<String, StoredKey>>>,
}

impl Registry {
    /// `api_keys`: plain admin secrets; `keys`: hashed entries (already validated by config).
    pub fn new(api_keys: &[String], keys: &[ConfiguredKey], store: Arc<dyn Store>) -> Self {
        let mut configured: Vec<Configured> = api_keys
            .iter()
            .enumerate()
            .map(|(i, k)| Configured {
                caller: Caller {
                    key_id: format!("config:api_keys[{i}]"),
                    name: format!("api_keys[{i}]"),
                    scopes: vec![Scope::Admin],
                    apps: Vec::new(),
                    rate_per_second: 0,
                    burst: 0,
                },
                hash: Sha256::digest(k.as_bytes()).into(),
            })
            .collect();
        for k in keys {
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(k.sha256.to_ascii_lowercase(), &mut hash).is_err() {
                continue;
            }
            configured.push(Configured {
                caller: Caller {
                    key_id: format!("config:{}", k.name),
                    name: k.name.clone(),
                    scopes: k.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
                    apps: k.apps.clone(),
                    rate_per_second: k.rate_per_second,
                    burst: k.burst,
                },
                hash,
            });
        }
        let cache = (!store.shared()).then(|| Mutex::new(HashMap::new()));
        Self { configured, store, limiters: Mutex::new(HashMap::new()), cache }
    }

    /// Keys are checked only when the configuration names at least one.
    pub fn enforcing(&self) -> bool {
        !self.configured.is_empty()
    }

    /// The caller a bearer token stands for.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Caller, AccessError> {
        if !self.enforcing() {
            return Ok(Caller::anonymous());
        }
        let token = token.map(str::trim).filter(|t| !t.is_empty()).ok_or(AccessError::Missing)?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(id) = store_key_id(token) {
            // Not a store key: it may still be a configured secret of the same shape.
            if let Some(key) = self.stored(id).await? {
                let mut stored = [0u8; 32];
                if hex::decode_to_slice(&key.sha256, &mut stored).is_ok() && constant_time_eq(&stored, &hash) {
                    if !key.revoked_at.is_empty() {
                        return Err(AccessError::Revoked(key.name));
                    }
                    return Ok(key.caller());
                }
            }
        }
        // Every configured key is compared, without stopping at the first match.
        let mut found = None;
        for k in &self.configured {
            if constant_time_eq(&k.hash, &hash) && found.is_none() {
                found = Some(&k.caller);
            }
        }
        found.cloned().ok_or(AccessError::Unknown)
    }

    /// A store key's record, from the cache when there is one.
    async fn stored(&self, id: &str) -> Result<Option<StoredKey>, AccessError> {
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.lock().get(id).cloned()) {
            return Ok(Some(hit));
        }
        let record = self.store.get_api_key(id).await.map_err(|e| AccessError::Unavailable(e.to_string()))?;
        let key = record.and_then(|r| serde_json::from_slice::<StoredKey>(&r).ok());
        if let (Some(cache), Some(k)) = (&self.cache, &key) {
            cache.lock().insert(id.to_string(), k.clone());
        }
        Ok(key)
    }

    /// Takes one call from the caller's rate; `Err(wait)` when over it.
    pub fn admit(&self, caller: &Caller) -> Result<(), Duration> {
        if caller.rate_per_second == 0 {
            return Ok(());
        }
        let gate = {
            let mut limiters = self.limiters.lock();
            limiters
                .entry(caller.key_id.clone())
                .or_insert_with(|| Arc::new(RateGate::new(Some(caller.rate_per_second), Some(caller.burst))))
                .clone()
        };
        gate.try_take()
    }

    /// Creates a store key; returns its record and the secret (shown once).
    pub async fn create(
        &self,
        name: &str,
        scopes: &[String],
        apps: &[String],
        rate_per_second: u32,
        burst: u32,
        created_by: &str,
    ) -> Result<(ApiKey, String), StoreError> {
        let (key_id, secret) = new_secret();
        let mut scopes: Vec<String> = scopes.to_vec();
        scopes.sort_by_key(|s| Scope::parse(s));
        scopes.dedup();
        let key = StoredKey {
            key_id: key_id.clone(),
            name: name.to_string(),
            scopes,
            apps: apps.to_vec(),
            rate_per_second,
            burst,
            created_at: crate::domain::timestamp(chrono::Utc::now()),
            created_by: created_by.to_string(),
            revoked_at: String::new(),
            sha256: hash_secret(&secret),
        };
        self.store.put_api_key(&key_id, &serde_json::to_vec(&key).expect("a key record serializes")).await?;
        if let Some(cache) = &self.cache {
            cache.lock().insert(key_id, key.clone());
        }
        Ok((key.public(), secret))
    }

    /// Store keys (newest first), then configured ones.
    pub async fn list(&self, include_revoked: bool) -> Result<Vec<ApiKey>, StoreError> {
        let mut stored: Vec<StoredKey> = self
            .store
            .list_api_keys()
            .await?
            .iter()
            .filter_map(|r| serde_json::from_slice::<StoredKey>(r).ok())
            .filter(|k| include_revoked || k.revoked_at.is_empty())
            .collect();
        stored.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.key_id.cmp(&b.key_id)));
        let mut out: Vec<ApiKey> = stored.iter().map(StoredKey::public).collect();
        out.extend(self.configured.iter().map(|c| ApiKey {
            key_id: c.caller.key_id.clone(),
            name: c.caller.name.clone(),
            scopes: c.caller.scopes.iter().map(|s| s.name().to_string()).collect(),
            app_ids: c.caller.apps.clone(),
            rate_per_second: c.caller.rate_per_second,
            burst: c.caller.burst,
            source: "config".into(),
            ..Default::default()
        }));
        Ok(out)
    }

    /// Revokes a store key (again: no change); `None` when there is no such key.
    pub async fn revoke(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError> {
        let Some(raw) = self.store.get_api_key(key_id).await? else { return Ok(None) };
        let Ok(mut key) = serde_json::from_slice::<StoredKey>(&raw) else { return Ok(None) };
        if key.revoked_at.is_empty() {
            key.revoked_at = crate::domain::timestamp(chrono::Utc::now());
            self.store.put_api_key(key_id, &serde_json::to_vec(&key).expect("a key record serializes")).await?;
        }
        if let Some(cache) = &self.cache {
            cache.lock().insert(key_id.to_string(), key.clone());
        }
        self.limiters.lock().remove(key_id);
        Ok(Some(key.public()))
    }

    /// Whether `key_id` names a configured key (revoked by editing the configuration).
    pub fn is_configured(&self, key_id: &str) -> bool {
        self.configured.iter().any(|c| c.caller.key_id == key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_name_their_key_and_hash_stably() {
        let (id, secret) = new_secret();
        assert_eq!(store_key_id(&secret), Some(id.as_str()));
        assert_eq!(secret.len(), SECRET_PREFIX.len() + 16 + 1 + 43);
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(store_key_id("hrld_zz_abc"), None);
        assert_eq!(store_key_id("0123456789abcdef-plain"), None);
    }

    #[test]
    fn keys_are_checked_field_by_field() {
        let bad = check_key("bad name", &["root".into()], &[String::new()]);
        let fields: Vec<_> = bad.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["name", "scopes", "app_ids"]);
        assert!(check_key("ci-send", &["send".into(), "read".into()], &[]).is_empty());
        assert_eq!(check_key("x", &[], &[])[0].0, "scopes");
    }

    #[test]
    fn admin_includes_every_scope_and_apps_limit() {
        let mut c = Caller::anonymous();
        assert!(Scope::ALL.iter().all(|s| c.may(*s)));
        c.scopes = vec![Scope::Send];
        c.apps = vec!["a".into()];
        assert!(c.may(Scope::Send) && !c.may(Scope::Read) && !c.may(Scope::Write));
        assert!(c.may_touch("a") && !c.may_touch("b"));
    }
}
