//! Each app's endpoint dictionary in Redis: `epdict`, a hash of its `id` and its bytes (`d`),
//! made once from the app's first batch of [`codec::DICT_RECORDS`] records or more and never
//! changed (DeleteApp removes it with the rest). Records written after it are packed against
//! it ([`codec::EndpointDict`]): an endpoint costs Redis about 130 bytes less.
//!
//! Every daemon keeps the dictionaries it has seen. A packed record names its dictionary's id,
//! so a reader whose copy is not that one (the app was deleted and made again) reads the app's
//! own, and the endpoint write's script checks that the id it packed with is the app's, so no
//! record is ever packed with a dictionary the app does not hold. Making it is one script
//! that sets it only when the app has none (two daemons making one at once agree on the
//! first), and only while the app exists. A kill -9 or a Redis restart between the dictionary
//! and the first records packed with it leaves a dictionary with no records yet: harmless.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_redis::redis;

use super::codec::{self, EndpointDict};
use super::redis::{Keys, RedisStore};
use super::StoreError;

/// What a daemon has seen of an app's dictionary.
#[derive(Clone)]
pub(super) enum Seen {
    Dict(Arc<EndpointDict>),
    /// None, when last read: a write too small to make one reads again after [`RECHECK`].
    Absent(Instant),
}

const RECHECK: Duration = Duration::from_secs(10);

/// Sets the dictionary if the app (KEYS[2]) exists and has none; answers the app's
/// dictionary (id, bytes), or nil when the app is gone.
static CREATE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('EXISTS', KEYS[2]) == 0 then return false end
if redis.call('HSETNX', KEYS[1], 'id', ARGV[1]) == 1 then redis.call('HSET', KEYS[1], 'd', ARGV[2]) end
return redis.call('HMGET', KEYS[1], 'id', 'd')
"#,
    )
});

/// The dictionary of a reply (id, bytes), checked against its id.
fn parse(reply: (Option<String>, Option<Vec<u8>>)) -> Result<Option<EndpointDict>, StoreError> {
    match reply {
        (Some(id), Some(bytes)) => {
            let dict = EndpointDict::new(bytes);
            if id.parse::<u32>().ok() != Some(dict.id) {
                return Err(StoreError::Corrupt("an endpoint dictionary whose bytes are not its id's".into()));
            }
            Ok(Some(dict))
        }
        (None, None) => Ok(None),
        _ => Err(StoreError::Corrupt("a half-written endpoint dictionary".into())),
    }
}

impl RedisStore {
    fn seen_dict(&self, app_id: &str) -> Option<Seen> {
        self.dicts.lock().unwrap_or_else(|e| e.into_inner()).get(app_id).cloned()
    }

    fn remember_dict(&self, app_id: &str, seen: Seen) {
        self.dicts.lock().unwrap_or_else(|e| e.into_inner()).insert(app_id.to_string(), seen);
    }

    /// Forgets the app's dictionary (a write found the app's is another, or the app was
    /// deleted): the next use reads it again.
    pub(super) fn forget_dict(&self, app_id: &str) {
        self.dicts.lock().unwrap_or_else(|e| e.into_inner()).remove(app_id);
    }

    /// The app's dictionary as stored now.
    async fn read_dict(&self, keys: &Keys) -> Result<Option<Arc<EndpointDict>>, StoreError> {
        let reply: (Option<String>, Option<Vec<u8>>) =
            redis::cmd("HMGET").arg(keys.key("epdict", "")).arg("id").arg("d").query_async(&mut self.conn()).await?;
        let dict = parse(reply)?.map(Arc::new);
        self.remember_dict(keys.app_id(), dict.clone().map_or_else(|| Seen::Absent(Instant::now()), Seen::Dict));
        Ok(dict)
    }

    /// The dictionary to pack `records` (stored forms about to be written) with: the app's,
    /// made from them when it has none and they are enough; `None` to write them unpacked.
    pub(super) async fn dict_for_write(&self, keys: &Keys, records: &[Vec<u8>]) -> Result<Option<Arc<EndpointDict>>, StoreError> {
        if records.is_empty() {
            return Ok(None);
        }
        match self.seen_dict(keys.app_id()) {
            Some(Seen::Dict(d)) => return Ok(Some(d)),
            Some(Seen::Absent(at)) if records.len() < codec::DICT_RECORDS && at.elapsed() < RECHECK => return Ok(None),
            _ => {}
        }
        let Some(made) = EndpointDict::from_records(records.iter().map(Vec::as_slice)) else { return self.read_dict(keys).await };
        let reply: Option<(Option<String>, Option<Vec<u8>>)> = CREATE
            .key(keys.key("epdict", ""))
            .key(keys.app())
            .arg(made.id.to_string())
            .arg(made.bytes.as_slice())
            .invoke_async(&mut self.conn())
            .await?;
        // The app is gone: its write fails on its own.
        let Some(reply) = reply else { return Ok(None) };
        let dict = parse(reply)?.map(Arc::new);
        if let Some(d) = &dict {
            self.remember_dict(keys.app_id(), Seen::Dict(d.clone()));
        }
        Ok(dict)
    }

    /// Unpacks the packed records among `values` (as read from the buckets) into the stored
    /// forms [`codec::decode_endpoint`] reads, reading the app's dictionary when this daemon
    /// has not got the one they name.
    pub(super) async fn unpack_endpoints<'a>(
        &self,
        keys: &Keys,
        values: impl IntoIterator<Item = &'a mut Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut packed: Vec<&mut Vec<u8>> = values.into_iter().filter(|v| codec::packed_with(v).is_some()).collect();
        let Some(first) = packed.first() else { return Ok(()) };
        let id = codec::packed_with(first);
        let dict = match self.seen_dict(keys.app_id()) {
            Some(Seen::Dict(d)) if Some(d.id) == id => Some(d),
            _ => self.read_dict(keys).await?,
        };
        for v in packed.iter_mut() {
            **v = codec::unpack_endpoint(dict.as_deref(), std::mem::take(*v))?;
        }
        Ok(())
    }
}
