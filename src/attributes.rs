//! Pinpoint's RemoveAttributes: the attributes an app no longer captures. Once an attribute
//! name (or a glob pattern) is removed for its type, every endpoint write — UpdateEndpoint,
//! UpdateEndpointsBatch, ImportEndpoints, segment imports, PutEvents' endpoint blocks — drops
//! new or changed values of it before merging, so stored endpoints keep the values they had
//! (segments, exports and templates still see them) and nothing changes them again.
//!
//! The list is one versioned record per app (written with a version check, so concurrent
//! removals both land). Each process reads it at most once a second per app; a removal made
//! through this process applies at once, one made through another daemon on the same Redis
//! within a second.
//!
//! Faults: a removal is one record write — done or not, whatever stops the daemon. A write
//! that cannot read the list (store unreachable) fails like the write itself would.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use prost::Message as _;

use crate::proto::v1::{Endpoint, RemovedAttributes};
use crate::store::{Store, StoreError};

/// The record kind and id the list is kept under.
pub const KIND: &str = "removed-attributes";
const ID: &str = "app";
/// How long a process trusts the list it read.
const FRESH: Duration = Duration::from_secs(1);

/// Pinpoint's attribute types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeType {
    /// `endpoint-custom-attributes`: the endpoint's Attributes.
    Custom,
    /// `endpoint-metric-attributes`: its Metrics.
    Metric,
    /// `endpoint-user-attributes`: its User.UserAttributes.
    User,
}

impl AttributeType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "endpoint-custom-attributes" => Some(Self::Custom),
            "endpoint-metric-attributes" => Some(Self::Metric),
            "endpoint-user-attributes" => Some(Self::User),
            _ => None,
        }
    }

    fn list(self, r: &mut RemovedAttributes) -> &mut Vec<String> {
        match self {
            Self::Custom => &mut r.endpoint_custom,
            Self::Metric => &mut r.endpoint_metric,
            Self::User => &mut r.endpoint_user,
        }
    }
}

/// A glob over attribute names: `*` any run of characters, `?` one character.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn removed(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| glob(p, name))
}

/// Drops from each write the values of attributes the app no longer captures.
pub fn strip(r: &RemovedAttributes, writes: &mut [Endpoint]) {
    if r.endpoint_custom.is_empty() && r.endpoint_metric.is_empty() && r.endpoint_user.is_empty() {
        return;
    }
    for w in writes {
        w.attributes.retain(|k, _| !removed(&r.endpoint_custom, k));
        w.metrics.retain(|k, _| !removed(&r.endpoint_metric, k));
        if let Some(u) = w.user.as_mut() {
            u.user_attributes.retain(|k, _| !removed(&r.endpoint_user, k));
        }
    }
}

type Cache = parking_lot::Mutex<HashMap<(usize, String), (Instant, Arc<RemovedAttributes>)>>;
/// By store (its address) and app.
static CACHE: LazyLock<Cache> = LazyLock::new(Default::default);

fn cache_key(store: &dyn Store, app: &str) -> (usize, String) {
    (store as *const dyn Store as *const () as usize, app.to_string())
}

/// What the app no longer captures (read at most once a second per process).
pub async fn current(store: &dyn Store, app: &str) -> Result<Arc<RemovedAttributes>, StoreError> {
    let key = cache_key(store, app);
    if let Some((at, r)) = CACHE.lock().get(&key) {
        if at.elapsed() < FRESH {
            return Ok(r.clone());
        }
    }
    let r = Arc::new(load(store, app).await?);
    CACHE.lock().insert(key, (Instant::now(), r.clone()));
    Ok(r)
}

async fn load(store: &dyn Store, app: &str) -> Result<RemovedAttributes, StoreError> {
    match store.get_record(app, KIND, ID, None).await? {
        Some(raw) => Ok(RemovedAttributes::decode(raw.as_slice())?),
        None => Ok(RemovedAttributes::default()),
    }
}

/// [`strip`] with the app's current list.
pub async fn strip_writes(store: &dyn Store, app: &str, writes: &mut [Endpoint]) -> Result<(), StoreError> {
    let r = current(store, app).await?;
    strip(&r, writes);
    Ok(())
}

/// Adds names (or patterns) to what the app no longer captures of `kind`.
pub async fn remove(store: &dyn Store, app: &str, kind: AttributeType, names: &[String]) -> Result<RemovedAttributes, StoreError> {
    for _ in 0..8 {
        let mut r = load(store, app).await?;
        let latest = r.version;
        let list = kind.list(&mut r);
        for n in names {
            if !list.contains(n) {
                list.push(n.clone());
            }
        }
        r.version = latest + 1;
        match store.write_record(app, KIND, ID, latest, latest + 1, &r.encode_to_vec()).await {
            Ok(()) => {
                CACHE.lock().insert(cache_key(store, app), (Instant::now(), Arc::new(r.clone())));
                return Ok(r);
            }
            Err(StoreError::Contention | StoreError::Exists(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contention)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{AttributeValues, EndpointUser};

    #[test]
    fn globs_match_names() {
        assert!(glob("Interests", "Interests") && !glob("Interests", "interests"));
        assert!(glob("Fav*", "FavColour") && glob("Fav*", "Fav") && !glob("Fav*", "Colour"));
        assert!(glob("*Date", "OptInDate") && glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("*", "anything") && glob("a*b*c", "aXXbYYc") && !glob("a*b*c", "aXXbYY"));
    }

    #[test]
    fn removed_attributes_are_dropped_from_writes_only() {
        let v = |s: &str| AttributeValues { values: vec![s.into()] };
        let mut w = Endpoint {
            attributes: [("Interests".into(), v("x")), ("FavColour".into(), v("red")), ("Plan".into(), v("pro"))].into(),
            metrics: [("visits".into(), 3.0), ("cart".into(), 1.0)].into(),
            user: Some(EndpointUser { user_id: "u".into(), user_attributes: [("FirstName".into(), v("Ana"))].into() }),
            ..Default::default()
        };
        let r = RemovedAttributes {
            endpoint_custom: vec!["Interests".into(), "Fav*".into()],
            endpoint_metric: vec!["cart".into()],
            endpoint_user: vec!["First*".into()],
            version: 1,
        };
        strip(&r, std::slice::from_mut(&mut w));
        assert_eq!(w.attributes.keys().collect::<Vec<_>>(), ["Plan"]);
        assert_eq!(w.metrics.keys().collect::<Vec<_>>(), ["visits"]);
        assert!(w.user.unwrap().user_attributes.is_empty());
    }
}
