//! The Redis backend: production state, shared by every daemon pointed at the same Redis.
//!
//! Key schema (every per-app key carries the app id as a hash tag, so one app's keys share a
//! Redis Cluster slot and multi-key commands stay legal there):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `herald:apps` | sorted set (all scores 0) | every app id, for listing in id order |
//! | `herald:keys` | hash | key id → `ApiKey` record with its secret's hash (global: one key, one slot) |
//! | `herald:{app}:app` | string | the `App` record (protobuf) |
//! | `herald:{app}:ep:{id}` | string | an `Endpoint` record (its stored form, `store::codec`) |
//! | `herald:{app}:addr:{channel}:{address}` | string | id of the ACTIVE endpoint with that address |
//! | `herald:{app}:user:{user_id}` | string | the user's endpoint ids, newline-separated |
//! | `herald:{app}:eps` | sorted set (all scores 0) | every endpoint id of the app |
//! | `herald:{app}:quota:{channel}:total` / `:h:{hour}` | string (counter) | quota use, all time / per hour (expires after 25 h) |
//! | `herald:{app}:suppressed` | hash | address → `Suppression` (protobuf) |
//! | `herald:{app}:out:{hour}` | hash, expiring | message id (a Herald id as its 16 bytes) → `MessageOutcome` (stored form without the id, `store::codec`), by the hour in the id |
//! | `herald:{app}:counts:{day}` | hash, expiring | `{channel}:{status}` → messages |
//! | `herald:{app}:byreq:{request}` | list, expiring | message ids in the order recorded (16 bytes each; another id after a `0xff` byte; an earlier release's as text), for listing outcomes |
//! | `herald:{app}:runout:{run}` | hash, expiring | endpoint id → delivery status of its outcome in a journey activity's entry (an earlier release's campaign runs too; this release finds a campaign run's outcomes through `epmsg`) |
//! | `herald:{app}:epmsg:{day}`, `herald:{app}:epmsg:{day}:{bucket}` | hash, expiring | endpoint id → the ids of its messages of that day, 16 bytes each, oldest first (its last 1,000); cut into `epmsg-n:{day}` buckets by a hash of the endpoint id (one: the first key) |
//! | `herald:{app}:epmsg-n:{day}` | string, expiring | how many buckets that day's endpoint index has: a power of two fixed at its first message from the app's endpoint count then, about 64 endpoints a bucket so that Redis keeps each as a listpack |
//! | `herald:{app}:byep:{day}` / `:byep-days` | sorted set, expiring / sorted set | `{endpoint}\0{message id}` per day for ids that are not Herald's (an earlier release's form for all: a Herald id as its 16 bytes); the days held, of either form |
//! | `herald:{app}:event-stream` | stream (about the last 1,000,000 events) | one entry per recorded batch, id = its first event's number: one field `z`, the batch's `Event`s as one LZ4 block (`store::codec::encode_event_block`), or fields `e`, one `Event` each (a lone event; an earlier release's entries) |
//! | `herald:{app}:event-seq` | string | the number of the app's last event |
//! | `herald:{app}:channels` | hash | channel → its settings (protobuf) |
//! | `herald:{app}:idem:{key}` | string, expiring | `P` while in flight, `D` + the encoded response after |
//!
//! Endpoint writes run optimistically on a pooled connection: read what the planner needs (one
//! pipelined `MGET` round trip per planning round), then commit with one Lua script call that
//! checks every key read still holds the value read (compare-and-set) and applies the whole
//! plan, atomically; if another writer changed a key in between, the write is planned again.
//! (`WATCH` would do the same, but Redis checks each watched key against the connection's
//! whole watch list, which is quadratic in a batch of thousands of keys.) Reads go over one
//! long-lived multiplexed connection, so they never queue behind a large import pipeline.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, AsyncCommands};
use prost::Message as _;

use super::codec;
use super::plan::{self, EndpointOp, Plan, Snapshot};
use super::redis_conn::{Backend, Conn};
use super::redis_endpoints::{EndpointChange, Table};
use super::{Store, StoreError, TemplateWrite};
use crate::proto::v1::{App, Endpoint, Event, MessageOutcome, Suppression, Template};
use crate::telemetry;

/// How often an endpoint write is re-planned after concurrent writers aborted it.
const MAX_ATTEMPTS: usize = 16;
const APPS_KEY: &str = "herald:apps";
const API_KEYS_KEY: &str = "herald:keys";

/// Quota take: KEYS[1] the total counter, KEYS[2..] the hourly buckets of the last 24 hours
/// (the current hour first). ARGV: requested, daily (-1: none), total (-1: none), bucket TTL.
/// Returns what was granted, and counts it.
static TAKE_QUOTA: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local grant = tonumber(ARGV[1])
local daily, total = tonumber(ARGV[2]), tonumber(ARGV[3])
if total >= 0 then
  local used = tonumber(redis.call('GET', KEYS[1]) or '0')
  grant = math.min(grant, math.max(0, total - used))
end
if daily >= 0 then
  local used = 0
  for i = 2, #KEYS do used = used + tonumber(redis.call('GET', KEYS[i]) or '0') end
  grant = math.min(grant, math.max(0, daily - used))
end
if grant > 0 then
  redis.call('INCRBY', KEYS[1], grant)
  redis.call('INCRBY', KEYS[2], grant)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return grant
"#,
    )
});

/// Rate take: KEYS[1] the counter of one second's window. ARGV: requested, the limit.
/// Returns what was granted, and counts it; the window's key lapses after three seconds.
static TAKE_RATE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[1]), math.max(0, tonumber(ARGV[2]) - used))
if grant > 0 then
  redis.call('INCRBY', KEYS[1], grant)
  redis.call('PEXPIRE', KEYS[1], 3000)
end
return grant
"#,
    )
});

/// HSET of field/value pairs (ARGV) into KEYS[2] if the app KEYS[1] exists: 1, else -1.
static HSET_IF_APP: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
"#,
    )
});

/// Compare-and-set commit of a plan.
///
/// KEYS: app record, endpoint id index (a sorted set), then `c` keys read, `s` keys to set, `d` keys to delete.
/// ARGV: c, s, d, a, r, then the `c` values read ("" for absent: stored values are never
/// empty), the `s` new values, `a` ids to add to the index and `r` ids to remove from it.
/// Returns 1 when applied, 0 when a key read has changed, -1 when the app is gone.
static COMMIT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local c, s, d, a, r = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
for i = 1, c do
  local now = redis.call('GET', KEYS[2 + i])
  if (now or '') ~= ARGV[5 + i] then return 0 end
end
for i = 1, s do
  redis.call('SET', KEYS[2 + c + i], ARGV[5 + c + i])
end
for i = 1, d do
  redis.call('DEL', KEYS[2 + c + s + i])
end
-- The id index is a sorted set with every score 0: paged in id order (ZRANGE BYLEX), each
-- member exactly once, however it changes between pages.
local i = 0
while i < a do
  local m = math.min(1000, a - i)
  local args = {}
  for j = 0, m - 1 do
    args[2 * j + 1] = 0
    args[2 * j + 2] = ARGV[6 + c + s + i + j]
  end
  redis.call('ZADD', KEYS[2], unpack(args))
  i = i + m
end
i = 0
while i < r do
  local m = math.min(1000, r - i)
  redis.call('ZREM', KEYS[2], unpack(ARGV, 6 + c + s + a + i, 6 + c + s + a + i + m - 1))
  i = i + m
end
return 1
"#,
    )
});

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        use redis::RetryMethod;
        let transient = e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
            || matches!(e.retry_method(), RetryMethod::WaitAndRetry);
        if transient {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Backend(e.to_string())
        }
    }
}

impl From<deadpool_redis::PoolError> for StoreError {
    fn from(e: deadpool_redis::PoolError) -> Self {
        match e {
            deadpool_redis::PoolError::Backend(e) => e.into(),
            // No connection could be made or checked out in time: Redis is not answering.
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// Key names of one app.
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(app_id: &str) -> Self {
        Self { prefix: format!("herald:{{{app_id}}}:") }
    }
    /// `prefix + kind + name`, built without the formatting machinery (hot on imports).
    pub(super) fn key(&self, kind: &str, name: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + kind.len() + name.len());
        k.push_str(&self.prefix);
        k.push_str(kind);
        k.push_str(name);
        k
    }
    pub(super) fn app(&self) -> String {
        self.key("app", "")
    }
    /// `herald:{app}:`, the start of every key of the app.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }
    /// The app id the keys are of.
    pub(super) fn app_id(&self) -> &str {
        &self.prefix["herald:{".len()..self.prefix.len() - "}:".len()]
    }
    pub(super) fn endpoint(&self, id: &str) -> String {
        self.key("ep:", id)
    }
    pub(super) fn address(&self, key: &str) -> String {
        self.key("addr:", key)
    }
    pub(super) fn user(&self, user_id: &str) -> String {
        self.key("user:", user_id)
    }
    pub(super) fn endpoint_ids(&self) -> String {
        self.key("eps", "")
    }
    pub(super) fn record(&self, kind: &str, id: &str) -> String {
        self.key("rec:", &format!("{kind}:{id}"))
    }
    pub(super) fn records(&self, kind: &str) -> String {
        self.key("recs:", kind)
    }
    pub(super) fn record_users(&self, kind: &str, id: &str) -> String {
        self.key("recuse:", &format!("{kind}:{id}"))
    }
    pub(super) fn blob(&self, kind: &str, id: &str) -> String {
        self.key("blob:", &format!("{kind}:{id}"))
    }
    pub(super) fn members(&self, set: &str) -> String {
        self.key("mem:", set)
    }
    /// Matches every key of the app (app ids hold no glob characters).
    pub(super) fn pattern(&self) -> String {
        self.key("*", "")
    }
}

pub struct RedisStore {
    pub(super) backend: Backend,
    /// How many buckets each (app, day) endpoint index is cut into, as read from Redis
    /// (`redis_outcomes`: fixed once for the day, so cached for good).
    pub(super) day_buckets: std::sync::Mutex<std::collections::HashMap<(String, i64), u32>>,
    /// How each app's endpoint tables are cut, as last seen (`redis_endpoints`: the scripts
    /// check it and answer with the levels now when it has changed).
    pub(super) levels: std::sync::Mutex<std::collections::HashMap<String, super::redis_endpoints::Levels>>,
    /// Each app's endpoint dictionary as last seen (`redis_dict`).
    pub(super) dicts: std::sync::Mutex<std::collections::HashMap<String, super::redis_dict::Seen>>,
}

impl RedisStore {
    /// Reads what the planner asked for into `snap`, and remembers each value so the commit
    /// can check nothing changed since.
    async fn load(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        needs: plan::Needs,
        snap: &mut Snapshot,
        read: &mut Vec<(Table, String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        if needs.is_empty() {
            return Ok(());
        }
        let groups = [(Table::Endpoints, &needs.endpoints), (Table::Addresses, &needs.addresses), (Table::Users, &needs.users)];
        let entries: Vec<(Table, &str)> = groups.iter().flat_map(|(t, names)| names.iter().map(|n| (*t, n.as_str()))).collect();
        let Some(values) = self.read_entries(conn, keys, &entries).await? else {
            return Err(StoreError::AppNotFound(keys.app_id().to_string()));
        };
        for ((t, name), value) in entries.iter().zip(&values) {
            read.push((*t, name.to_string(), value.clone().unwrap_or_default()));
        }
        let mut values = values.into_iter();
        let (ne, na) = (needs.endpoints.len(), needs.addresses.len());
        let mut eps: Vec<Option<Vec<u8>>> = values.by_ref().take(ne).collect();
        self.unpack_endpoints(keys, eps.iter_mut().flatten()).await?;
        let addrs: Vec<Option<Vec<u8>>> = values.by_ref().take(na).collect();
        let users: Vec<Option<Vec<u8>>> = values.collect();
        let text = |v: Option<Vec<u8>>| v.map(|b| String::from_utf8_lossy(&b).into_owned());
        let eps =
            eps.into_iter().map(|v| v.map(|b| codec::decode_endpoint(keys.app_id(), &b)).transpose()).collect::<Result<Vec<_>, _>>()?;
        snap.absorb_endpoints(needs.endpoints, eps);
        snap.absorb_addresses(needs.addresses, addrs.into_iter().map(text).collect());
        snap.absorb_users(needs.users, users.into_iter().map(text).collect());
        Ok(())
    }

    /// One optimistic attempt: `Ok(None)` when a concurrent writer changed what was read.
    async fn attempt(&self, conn: &mut Conn, app_id: &str, op: &EndpointOp) -> Result<Option<Plan>, StoreError> {
        let keys = Keys::new(app_id);
        let mut snap = Snapshot::default();
        let mut change = EndpointChange::default();
        self.load(conn, &keys, plan::prefetch(op), &mut snap, &mut change.read).await?;
        let plan = loop {
            match plan::plan(app_id, op, &snap) {
                Ok(p) => break p,
                Err(needs) => self.load(conn, &keys, needs, &mut snap, &mut change.read).await?,
            }
        };
        let all_or_nothing = matches!(op, EndpointOp::Upsert { all_or_nothing: true, .. });
        let rejected = all_or_nothing && !plan.rejections.is_empty();
        // Even a plan that writes nothing runs the script: it confirms the app still exists.
        if !rejected {
            let records: Vec<Vec<u8>> = plan.put_endpoints.iter().map(|e| codec::encode_endpoint(app_id, e)).collect();
            let dict = self.dict_for_write(&keys, &records).await?;
            change.dict = dict.as_ref().map(|d| d.id);
            let sets = &mut change.sets;
            let records = records.into_iter().map(|r| match &dict {
                Some(d) => d.pack(r),
                None => r,
            });
            sets.extend(plan.put_endpoints.iter().zip(records).map(|(e, r)| (Table::Endpoints, e.id.clone(), r)));
            sets.extend(plan.put_addresses.iter().map(|(k, id)| (Table::Addresses, k.clone(), id.clone().into_bytes())));
            sets.extend(plan.put_users.iter().map(|(u, ids)| (Table::Users, u.clone(), ids.clone().into_bytes())));
            let dels = &mut change.dels;
            dels.extend(plan.delete_endpoints.iter().map(|id| (Table::Endpoints, id.clone())));
            dels.extend(plan.delete_addresses.iter().map(|k| (Table::Addresses, k.clone())));
            dels.extend(plan.delete_users.iter().map(|u| (Table::Users, u.clone())));
            change.created = plan.created.len();
            change.removed = plan.delete_endpoints.len();
        }
        let outcome = self.commit_endpoints(conn, &keys, &change).await?;
        match outcome {
            1 => Ok(Some(plan)),
            0 => Ok(None),
            // The app was deleted and made again since its dictionary was read: again with its own.
            -2 => {
                self.forget_dict(app_id);
                Ok(None)
            }
            _ => Err(StoreError::AppNotFound(app_id.to_string())),
        }
    }
}

/// A compare-and-set change for [`commit`].
pub(super) struct Change<'a> {
    /// Keys read and the values read ("" for absent).
    pub read: &'a [(String, Vec<u8>)],
    pub sets: &'a [(String, Vec<u8>)],
    pub dels: &'a [String],
    /// A set whose members `add` and `remove` change.
    pub set_key: String,
    pub add: &'a [String],
    pub remove: &'a [String],
}

/// Runs [`COMMIT`]: 1 applied, 0 a key read has changed, -1 the app is gone.
pub(super) async fn commit(conn: &mut Conn, keys: &Keys, c: Change<'_>) -> Result<i64, StoreError> {
    let mut invocation = COMMIT.prepare_invoke();
    invocation.key(keys.app()).key(&c.set_key);
    invocation.arg(c.read.len()).arg(c.sets.len()).arg(c.dels.len()).arg(c.add.len()).arg(c.remove.len());
    for (key, _) in c.read {
        invocation.key(key);
    }
    for (key, _) in c.sets {
        invocation.key(key);
    }
    for key in c.dels {
        invocation.key(key);
    }
    for (_, expected) in c.read {
        invocation.arg(expected.as_slice());
    }
    for (_, value) in c.sets {
        invocation.arg(value.as_slice());
    }
    invocation.arg(c.add).arg(c.remove);
    Ok(invocation.invoke_async(conn).await?)
}

fn decode_app(bytes: Option<Vec<u8>>) -> Result<Option<App>, StoreError> {
    Ok(bytes.map(|b| App::decode(b.as_slice())).transpose()?)
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }

    async fn create_app(&self, app: &App) -> Result<(), StoreError> {
        let keys = Keys::new(&app.app_id);
        let mut conn = self.conn();
        let created: bool =
            redis::cmd("SET").arg(keys.app()).arg(app.encode_to_vec()).arg("NX").query_async::<Option<String>>(&mut conn).await?.is_some();
        if !created {
            return Err(StoreError::AppExists(app.app_id.clone()));
        }
        let _: () = conn.zadd(APPS_KEY, &app.app_id, 0).await?;
        Ok(())
    }

    async fn get_app(&self, app_id: &str) -> Result<Option<App>, StoreError> {
        decode_app(self.conn().get(Keys::new(app_id).app()).await?)
    }

    async fn list_apps(&self, after: Option<&str>, limit: usize) -> Result<Vec<App>, StoreError> {
        let mut conn = self.conn();
        let min = after.map_or_else(|| "-".to_string(), |a| format!("({a}"));
        let ids: Vec<String> =
            redis::cmd("ZRANGE").arg(APPS_KEY).arg(min).arg("+").arg("BYLEX").arg("LIMIT").arg(0).arg(limit).query_async(&mut conn).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One GET per app, all at once on the multiplexed connection: app records live in
        // different cluster slots, so they cannot share a pipeline.
        let found: Vec<Option<Vec<u8>>> = futures::future::try_join_all(ids.iter().map(|id| {
            let mut conn = self.conn();
            let key = Keys::new(id).app();
            async move { conn.get::<_, Option<Vec<u8>>>(key).await }
        }))
        .await?;
        let mut apps = Vec::with_capacity(found.len());
        for bytes in found {
            if let Some(app) = decode_app(bytes)? {
                apps.push(app);
            }
        }
        Ok(apps)
    }

    async fn put_app(&self, app: &App) -> Result<(), StoreError> {
        let replaced: Option<String> =
            redis::cmd("SET").arg(Keys::new(&app.app_id).app()).arg(app.encode_to_vec()).arg("XX").query_async(&mut self.conn()).await?;
        replaced.map(|_| ()).ok_or_else(|| StoreError::AppNotFound(app.app_id.clone()))
    }

    async fn delete_app(&self, app_id: &str) -> Result<Option<App>, StoreError> {
        let keys = Keys::new(app_id);
        let mut conn = self.conn();
        self.forget_dict(app_id);
        // Deleting the app record first makes every later write under it fail, and aborts the
        // transactions in flight (they WATCH it); then the rest is swept.
        // (The app list is another slot on a cluster: its own command.)
        let (app, _): (Option<Vec<u8>>, ()) = redis::pipe().get(keys.app()).del(keys.app()).query_async(&mut conn).await?;
        let _: () = conn.zrem(APPS_KEY, app_id).await?;
        let app = decode_app(app)?;
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(keys.pattern()).arg("COUNT").arg(1000);
            let (next, batch): (u64, Vec<String>) = conn.on_node_of(&keys.app(), scan).await?;
            if !batch.is_empty() {
                let _: () = redis::cmd("UNLINK").arg(&batch).query_async(&mut conn).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(app)
    }

    async fn write_endpoints(&self, app_id: &str, op: EndpointOp) -> Result<Plan, StoreError> {
        let mut conn = self.pooled().await?;
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(plan) = self.attempt(&mut conn, app_id, &op).await? {
                return Ok(plan);
            }
            telemetry::store_retry("redis");
            // Back off a little, with jitter, so colliding writers spread out.
            let cap = 1u64 << attempt.min(6);
            tokio::time::sleep(Duration::from_millis(rand::random_range(0..=cap))).await;
        }
        Err(StoreError::Contention)
    }

    async fn get_endpoint(&self, app_id: &str, endpoint_id: &str) -> Result<Option<Endpoint>, StoreError> {
        Ok(self.get_endpoints(app_id, &[endpoint_id.to_string()]).await?.pop().flatten())
    }

    async fn get_endpoints(&self, app_id: &str, ids: &[String]) -> Result<Vec<Option<Endpoint>>, StoreError> {
        let keys = Keys::new(app_id);
        let found = self.read_endpoints(&mut self.conn(), &keys, ids).await?;
        found.ok_or_else(|| StoreError::AppNotFound(app_id.to_string()))
    }

    async fn user_endpoints(&self, app_id: &str, user_id: &str) -> Result<Vec<Endpoint>, StoreError> {
        let keys = Keys::new(app_id);
        let mut conn = self.conn();
        let Some(list) = self.read_entries(&mut conn, &keys, &[(Table::Users, user_id)]).await? else {
            return Err(StoreError::AppNotFound(app_id.to_string()));
        };
        let list = list.into_iter().next().flatten().map(|b| String::from_utf8_lossy(&b).into_owned());
        let ids = plan::decode_user_list(list.as_deref());
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found = self.read_endpoints(&mut conn, &keys, &ids).await?.unwrap_or_default();
        Ok(found.into_iter().flatten().collect())
    }

    async fn scan_endpoints(
        &self,
        app_id: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Endpoint>, Option<String>), StoreError> {
        let keys = Keys::new(app_id);
        let (page, next) = self.scan_endpoint_table(&keys, cursor, (None, None), limit).await?;
        let endpoints = page.iter().map(|(_, b)| codec::decode_endpoint(app_id, b)).collect::<Result<Vec<_>, _>>()?;
        Ok((endpoints, next))
    }

    async fn write_template(&self, app_id: &str, template: &Template, mode: TemplateWrite) -> Result<Template, StoreError> {
        self.redis_write_template(app_id, template, mode).await
    }

    async fn get_template(&self, app_id: &str, name: &str, version: Option<i32>) -> Result<Option<Template>, StoreError> {
        self.redis_get_template(app_id, name, version).await
    }

    async fn list_templates(&self, app_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<Template>, StoreError> {
        self.redis_list_templates(app_id, after, limit).await
    }

    async fn list_template_versions(&self, app_id: &str, name: &str, after: i32, limit: usize) -> Result<Vec<Template>, StoreError> {
        self.redis_list_template_versions(app_id, name, after, limit).await
    }

    async fn set_active_template_version(&self, app_id: &str, name: &str, version: Option<i32>) -> Result<Template, StoreError> {
        self.redis_set_active_template_version(app_id, name, version).await
    }

    async fn delete_template(&self, app_id: &str, name: &str, version: Option<i32>) -> Result<i32, StoreError> {
        self.redis_delete_template(app_id, name, version).await
    }

    async fn take_quota(
        &self,
        app_id: &str,
        channel: &str,
        requested: u64,
        daily: Option<u64>,
        total: Option<u64>,
        now_hour: i64,
    ) -> Result<u64, StoreError> {
        let keys = Keys::new(app_id);
        let mut invocation = TAKE_QUOTA.prepare_invoke();
        invocation.key(keys.key("quota:", &format!("{channel}:total")));
        for h in 0..24 {
            invocation.key(keys.key("quota:", &format!("{channel}:h:{}", now_hour - h)));
        }
        let limit = |v: Option<u64>| v.map_or(-1, |n| n.min(i64::MAX as u64) as i64);
        invocation.arg(requested).arg(limit(daily)).arg(limit(total)).arg(25 * 3600);
        Ok(invocation.invoke_async(&mut self.conn()).await?)
    }

    async fn take_rate(&self, app_id: &str, channel: &str, window: i64, requested: u64, limit: u64) -> Result<u64, StoreError> {
        let key = Keys::new(app_id).key("rate:", &format!("{channel}:{window}"));
        let mut invocation = TAKE_RATE.prepare_invoke();
        invocation.key(key).arg(requested).arg(limit);
        Ok(invocation.invoke_async(&mut self.conn()).await?)
    }

    async fn put_suppressions(&self, app_id: &str, entries: &[Suppression]) -> Result<(), StoreError> {
        let keys = Keys::new(app_id);
        let mut conn = self.conn();
        for chunk in entries.chunks(1_000) {
            let mut invocation = HSET_IF_APP.prepare_invoke();
            invocation.key(keys.app()).key(keys.key("suppressed", ""));
            for e in chunk {
                invocation.arg(&e.address).arg(e.encode_to_vec());
            }
            let done: i64 = invocation.invoke_async(&mut conn).await?;
            if done < 0 {
                return Err(StoreError::AppNotFound(app_id.to_string()));
            }
        }
        Ok(())
    }

    async fn remove_suppression(&self, app_id: &str, address: &str) -> Result<bool, StoreError> {
        let keys = Keys::new(app_id);
        let (app, removed): (bool, i64) =
            redis::pipe().exists(keys.app()).hdel(keys.key("suppressed", ""), address).query_async(&mut self.conn()).await?;
        if !app {
            return Err(StoreError::AppNotFound(app_id.to_string()));
        }
        Ok(removed > 0)
    }

    async fn endpoint_by_address(&self, app_id: &str, channel: i32, address: &str) -> Result<Option<String>, StoreError> {
        let keys = Keys::new(app_id);
        let name = super::plan::address_key(channel, address);
        let found = self.read_entries(&mut self.conn(), &keys, &[(Table::Addresses, &name)]).await?;
        let id = found.and_then(|v| v.into_iter().next().flatten());
        Ok(id.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    async fn get_suppressions(&self, app_id: &str, addresses: &[String]) -> Result<Vec<Option<Suppression>>, StoreError> {
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        let keys = Keys::new(app_id);
        let found: Vec<Option<Vec<u8>>> =
            redis::cmd("HMGET").arg(keys.key("suppressed", "")).arg(addresses).query_async(&mut self.conn()).await?;
        found.into_iter().map(|v| v.map(|b| Suppression::decode(b.as_slice())).transpose().map_err(StoreError::from)).collect()
    }

    async fn list_suppressions(
        &self,
        app_id: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Suppression>, Option<String>), StoreError> {
        let keys = Keys::new(app_id);
        let mut conn = self.conn();
        let start: u64 = cursor.as_deref().unwrap_or("0").parse().map_err(|_| StoreError::Backend("bad scan cursor".into()))?;
        let (next, pairs): (u64, Vec<(String, Vec<u8>)>) =
            redis::cmd("HSCAN").arg(keys.key("suppressed", "")).arg(start).arg("COUNT").arg(limit.max(1)).query_async(&mut conn).await?;
        let entries = pairs.into_iter().map(|(_, b)| Suppression::decode(b.as_slice())).collect::<Result<Vec<_>, _>>()?;
        Ok((entries, (next != 0).then(|| next.to_string())))
    }

    async fn record_outcomes(&self, app_id: &str, outcomes: &[MessageOutcome], events: &[Event], ttl_secs: u64) -> Result<(), StoreError> {
        self.redis_record_outcomes(app_id, outcomes, events, ttl_secs).await
    }

    async fn run_outcomes(
        &self,
        app_id: &str,
        run: &str,
        endpoint_ids: &[String],
        sent_since: Option<i64>,
    ) -> Result<Vec<Option<i32>>, StoreError> {
        self.redis_run_outcomes(app_id, run, endpoint_ids, sent_since).await
    }

    async fn list_outcomes(
        &self,
        app_id: &str,
        by: &super::OutcomeIndex,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<MessageOutcome>, StoreError> {
        self.redis_list_outcomes(app_id, by, offset, limit).await
    }

    async fn get_outcome(&self, app_id: &str, message_id: &str) -> Result<Option<MessageOutcome>, StoreError> {
        self.redis_get_outcome(app_id, message_id).await
    }

    async fn outcome_counts(&self, app_id: &str, day: &str) -> Result<Vec<(String, i32, u64)>, StoreError> {
        self.redis_outcome_counts(app_id, day).await
    }

    async fn read_events(&self, app_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.redis_read_events(app_id, after, limit).await
    }

    async fn last_event(&self, app_id: &str) -> Result<u64, StoreError> {
        self.redis_last_event(app_id).await
    }

    async fn kpi_counters(&self, app_id: &str, days: &[String]) -> Result<Vec<Vec<(String, i64)>>, StoreError> {
        self.redis_kpi_counters(app_id, days).await
    }

    async fn kpi_uniques(&self, app_id: &str, unions: &[Vec<(String, String)>]) -> Result<Vec<u64>, StoreError> {
        self.redis_kpi_uniques(app_id, unions).await
    }

    async fn first_engagement(&self, app_id: &str, keys: &[String], ttl_secs: u64) -> Result<Vec<bool>, StoreError> {
        self.redis_first_engagement(app_id, keys, ttl_secs).await
    }

    async fn trim_events(&self, app_id: &str, floor: u64) -> Result<(), StoreError> {
        self.redis_trim_events(app_id, floor).await
    }

    async fn set_template_use(&self, app_id: &str, name: &str, user: &str, in_use: bool) -> Result<(), StoreError> {
        self.redis_set_template_use(app_id, name, user, in_use).await
    }

    async fn write_record(
        &self,
        app_id: &str,
        kind: &str,
        id: &str,
        expect_latest: i32,
        version: i32,
        body: &[u8],
    ) -> Result<(), StoreError> {
        self.redis_write_record(app_id, kind, id, expect_latest, version, body).await
    }

    async fn get_record(&self, app_id: &str, kind: &str, id: &str, version: Option<i32>) -> Result<Option<Vec<u8>>, StoreError> {
        self.redis_get_record(app_id, kind, id, version).await
    }

    async fn list_records(&self, app_id: &str, kind: &str, after: Option<&str>, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        self.redis_list_records(app_id, kind, after, limit).await
    }

    async fn list_record_versions(&self, app_id: &str, kind: &str, id: &str, after: i32, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        self.redis_list_record_versions(app_id, kind, id, after, limit).await
    }

    async fn set_record_use(&self, app_id: &str, kind: &str, id: &str, user: &str, in_use: bool) -> Result<(), StoreError> {
        self.redis_set_record_use(app_id, kind, id, user, in_use).await
    }

    async fn delete_record(&self, app_id: &str, kind: &str, id: &str) -> Result<Option<i32>, StoreError> {
        self.redis_delete_record(app_id, kind, id).await
    }

    async fn put_blob(&self, app_id: &str, kind: &str, id: &str, body: &[u8]) -> Result<(), StoreError> {
        self.redis_put_blob(app_id, kind, id, body).await
    }

    async fn get_blob(&self, app_id: &str, kind: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.redis_get_blob(app_id, kind, id).await
    }

    async fn add_members(&self, app_id: &str, set: &str, ids: &[String]) -> Result<(), StoreError> {
        self.redis_add_members(app_id, set, ids).await
    }

    async fn delete_members(&self, app_id: &str, set: &str) -> Result<(), StoreError> {
        self.redis_delete_members(app_id, set).await
    }

    async fn count_members(&self, app_id: &str, set: &str) -> Result<u64, StoreError> {
        self.redis_count_members(app_id, set).await
    }

    async fn scan_members(
        &self,
        app_id: &str,
        set: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Endpoint>, Option<String>), StoreError> {
        self.redis_scan_members(app_id, set, cursor, limit).await
    }

    async fn scan_splits(&self, app_id: &str, set: Option<&str>, parts: usize) -> Result<Vec<String>, StoreError> {
        self.redis_scan_splits(app_id, set, parts).await
    }

    async fn scan_encoded(
        &self,
        app_id: &str,
        set: Option<&str>,
        cursor: Option<String>,
        range: (Option<&str>, Option<&str>),
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<String>), StoreError> {
        self.redis_scan_encoded(app_id, set, cursor, range, limit).await
    }

    async fn members_contain(&self, app_id: &str, set: &str, ids: &[String]) -> Result<Vec<bool>, StoreError> {
        self.redis_members_contain(app_id, set, ids).await
    }

    async fn engaged(&self, app_id: &str, keys: &[String]) -> Result<Vec<bool>, StoreError> {
        self.redis_engaged(app_id, keys).await
    }

    async fn journey_enter(
        &self,
        app_id: &str,
        journey: &str,
        ids: &[String],
        state: &str,
        due: i64,
        rule: super::Reentry,
        now_secs: i64,
    ) -> Result<Vec<super::Entry>, StoreError> {
        self.redis_journey_enter(app_id, journey, ids, state, due, rule, now_secs).await
    }

    async fn journey_due(&self, app_id: &str, journey: &str, until: i64, limit: usize) -> Result<Vec<super::Participant>, StoreError> {
        self.redis_journey_due(app_id, journey, until, limit).await
    }

    async fn journey_move(&self, app_id: &str, journey: &str, moves: &[super::Move], counters: &[(String, i64)]) -> Result<(), StoreError> {
        self.redis_journey_move(app_id, journey, moves, counters).await
    }

    async fn journey_counters(&self, app_id: &str, journey: &str) -> Result<(u64, Vec<(String, i64)>), StoreError> {
        self.redis_journey_counters(app_id, journey).await
    }

    async fn journey_drop(&self, app_id: &str, journey: &str) -> Result<(), StoreError> {
        self.redis_journey_drop(app_id, journey).await
    }

    async fn take_endpoint_caps(
        &self,
        app_id: &str,
        scope: &str,
        ids: &[String],
        recent: Option<(u32, i64)>,
        total: Option<u32>,
        now_secs: i64,
    ) -> Result<Vec<bool>, StoreError> {
        self.redis_take_endpoint_caps(app_id, scope, ids, recent, total, now_secs).await
    }

    async fn try_lease(&self, app_id: &str, name: &str, owner: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        self.redis_try_lease(app_id, name, owner, ttl_ms).await
    }

    async fn release_lease(&self, app_id: &str, name: &str, owner: &str) -> Result<(), StoreError> {
        self.redis_release_lease(app_id, name, owner).await
    }

    async fn put_channel(&self, app_id: &str, channel: &str, settings: &[u8]) -> Result<(), StoreError> {
        let keys = Keys::new(app_id);
        let mut invocation = HSET_IF_APP.prepare_invoke();
        invocation.key(keys.app()).key(keys.key("channels", "")).arg(channel).arg(settings);
        let done: i64 = invocation.invoke_async(&mut self.conn()).await?;
        if done < 0 {
            return Err(StoreError::AppNotFound(app_id.to_string()));
        }
        Ok(())
    }

    async fn put_api_key(&self, key_id: &str, record: &[u8]) -> Result<(), StoreError> {
        let _: () = self.conn().hset(API_KEYS_KEY, key_id, record).await?;
        Ok(())
    }

    async fn get_api_key(&self, key_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.conn().hget(API_KEYS_KEY, key_id).await?)
    }

    async fn list_api_keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut all: Vec<(String, Vec<u8>)> = self.conn().hgetall(API_KEYS_KEY).await?;
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all.into_iter().map(|(_, v)| v).collect())
    }

    async fn get_channel(&self, app_id: &str, channel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.conn().hget(Keys::new(app_id).key("channels", ""), channel).await?)
    }

    async fn delete_channel(&self, app_id: &str, channel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = Keys::new(app_id).key("channels", "");
        let (old, _): (Option<Vec<u8>>, i64) = redis::pipe().hget(&key, channel).hdel(&key, channel).query_async(&mut self.conn()).await?;
        Ok(old)
    }

    async fn claim_idempotency(&self, app_id: &str, key: &str, ttl_secs: u64) -> Result<super::Idempotency, StoreError> {
        let k = Keys::new(app_id).key("idem:", key);
        let mut conn = self.conn();
        let set: Option<String> =
            redis::cmd("SET").arg(&k).arg("P").arg("NX").arg("EX").arg(ttl_secs.max(1)).query_async(&mut conn).await?;
        if set.is_some() {
            return Ok(super::Idempotency::Claimed);
        }
        let v: Option<Vec<u8>> = conn.get(&k).await?;
        Ok(match v {
            Some(v) if v.first() == Some(&b'D') => super::Idempotency::Done(v[1..].to_vec()),
            Some(_) => super::Idempotency::InFlight,
            // Expired between the two commands: claim again.
            None => return Box::pin(self.claim_idempotency(app_id, key, ttl_secs)).await,
        })
    }

    async fn complete_idempotency(&self, app_id: &str, key: &str, response: &[u8], ttl_secs: u64) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(response.len() + 1);
        value.push(b'D');
        value.extend_from_slice(response);
        let _: () = redis::cmd("SET")
            .arg(Keys::new(app_id).key("idem:", key))
            .arg(value)
            .arg("EX")
            .arg(ttl_secs.max(1))
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn release_idempotency(&self, app_id: &str, key: &str) -> Result<(), StoreError> {
        let _: () = self.conn().del(Keys::new(app_id).key("idem:", key)).await?;
        Ok(())
    }

    async fn close(&self) -> Result<(), StoreError> {
        if let Backend::Single { pool, .. } = &self.backend {
            pool.close();
        }
        Ok(())
    }
}

impl RedisStore {
    /// A page of a member set's endpoints (ids after `cursor`).
    pub(super) async fn scan_index(
        &self,
        keys: &Keys,
        index: String,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Endpoint>, Option<String>), StoreError> {
        let bound = cursor.map_or_else(|| "-".to_string(), |c| format!("({c}"));
        let (raw, next) = self.scan_index_encoded(keys, index, bound, "+".to_string(), limit).await?;
        let endpoints = raw.iter().map(|b| codec::decode_endpoint(keys.app_id(), b)).collect::<Result<Vec<_>, _>>()?;
        Ok((endpoints, next))
    }

    /// A page of a member set's encoded endpoints between two ZRANGE BYLEX bounds.
    pub(super) async fn scan_index_encoded(
        &self,
        keys: &Keys,
        index: String,
        from: String,
        until: String,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<String>), StoreError> {
        // The ids, then their records through their buckets (names are hashed here, not in a
        // script); a member whose endpoint is gone has none.
        let mut conn = self.conn();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(&from)
            .arg(&until)
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(limit.max(1))
            .query_async(&mut conn)
            .await?;
        let Some(last) = ids.last().cloned() else { return Ok((Vec::new(), None)) };
        let entries: Vec<(super::redis_endpoints::Table, &str)> =
            ids.iter().map(|id| (super::redis_endpoints::Table::Endpoints, id.as_str())).collect();
        let mut values: Vec<Vec<u8>> =
            self.read_entries(&mut conn, keys, &entries).await?.unwrap_or_default().into_iter().flatten().collect();
        self.unpack_endpoints(keys, values.iter_mut()).await?;
        Ok((values, Some(last)))
    }
}
