//! Versioned records (segments, campaigns, runs), blobs, member sets, per-endpoint caps and
//! leases in Redis. Keys are under the app's hash tag like every other key.

use deadpool_redis::redis::{self, AsyncCommands};

use super::redis::{Keys, RedisStore};
use super::StoreError;
use crate::proto::v1::Endpoint;

/// A versioned record: KEYS app, record hash, kind's id index. ARGV id, expected latest,
/// version, body. {1, latest} when written; {0, latest} when the latest is not the expected
/// one; {-1, 0} when the app is gone.
static WRITE_RECORD: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local latest = tonumber(redis.call('HGET', KEYS[2], 'latest') or '0')
if latest ~= tonumber(ARGV[2]) then return {0, latest} end
local v = tonumber(ARGV[3])
if v > latest then latest = v end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4], 'latest', latest)
if v == latest then redis.call('HSET', KEYS[2], 'cur', ARGV[4]) end
redis.call('ZADD', KEYS[3], 0, ARGV[1])
return {1, latest}
"#,
    )
});

/// KEYS record hash, kind's id index, record's user set. ARGV id. {1, latest} when deleted,
/// {0, 0} when absent, {-1, a user} when in use.
static DELETE_RECORD: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local users = redis.call('SRANDMEMBER', KEYS[3], 1)
if #users > 0 then return {-1, users[1]} end
local latest = redis.call('HGET', KEYS[1], 'latest')
if not latest then return {0, 0} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return {1, tonumber(latest)}
"#,
    )
});

/// KEYS record hash, record's user set. ARGV user, 1 (in use) or 0. 1 done, 0 record absent.
static RECORD_USE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
if ARGV[2] == '1' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 1
"#,
    )
});

/// Per-endpoint caps. KEYS totals hash, recent-sends hash. ARGV recent cap (-1: none), total
/// (-1), now (seconds), window (seconds), then endpoint ids. Recent sends are a
/// space-separated list of times within the window. Returns 1/0 per id.
static TAKE_CAPS: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local daily, total, now, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local ok = 1
  if total >= 0 and tonumber(redis.call('HGET', KEYS[1], id) or '0') >= total then ok = 0 end
  local recent = {}
  if daily >= 0 then
    for t in string.gmatch(redis.call('HGET', KEYS[2], id) or '', '%S+') do
      if tonumber(t) > now - window then recent[#recent + 1] = t end
    end
    if #recent >= daily then ok = 0 end
  end
  if ok == 1 then
    redis.call('HINCRBY', KEYS[1], id, 1)
    if daily >= 0 then
      recent[#recent + 1] = tostring(now)
      redis.call('HSET', KEYS[2], id, table.concat(recent, ' '))
    end
  end
  out[#out + 1] = ok
end
return out
"#,
    )
});

/// KEYS lease. ARGV owner, ttl ms. 1 when the owner holds it (taken or renewed), else 0.
static TRY_LEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or (not holder) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// KEYS lease. ARGV owner. Deletes it if the owner holds it.
static RELEASE_LEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"#,
    )
});

impl RedisStore {
    pub(super) async fn redis_write_record(
        &self,
        app_id: &str,
        kind: &str,
        id: &str,
        expect_latest: i32,
        version: i32,
        body: &[u8],
    ) -> Result<(), StoreError> {
        if version != expect_latest + 1 && !(version == expect_latest && version > 0) {
            return Err(StoreError::Backend(format!("version {version} cannot follow {expect_latest}")));
        }
        let keys = Keys::new(app_id);
        let mut invocation = WRITE_RECORD.prepare_invoke();
        invocation.key(keys.app()).key(keys.record(kind, id)).key(keys.records(kind));
        invocation.arg(id).arg(expect_latest).arg(version).arg(body);
        let (status, latest): (i64, i64) = invocation.invoke_async(&mut self.conn()).await?;
        match status {
            1 => Ok(()),
            -1 => Err(StoreError::AppNotFound(app_id.to_string())),
            _ if expect_latest == 0 => Err(StoreError::Exists(format!("{kind} {id}"))),
            _ if latest == 0 => Err(StoreError::NotFound(format!("{kind} {id}"))),
            _ => Err(StoreError::Contention),
        }
    }

    pub(super) async fn redis_get_record(
        &self,
        app_id: &str,
        kind: &str,
        id: &str,
        version: Option<i32>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let keys = Keys::new(app_id);
        let field = version.map_or_else(|| "cur".to_string(), |v| v.to_string());
        Ok(self.conn().hget(keys.record(kind, id), field).await?)
    }

    pub(super) async fn redis_list_records(
        &self,
        app_id: &str,
        kind: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let keys = Keys::new(app_id);
        let mut conn = self.conn();
        let min = after.map_or_else(|| "-".to_string(), |a| format!("({a}"));
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.records(kind))
            .arg(min)
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(keys.record(kind, id), "cur");
        }
        let found: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
        Ok(found.into_iter().flatten().collect())
    }

    pub(super) async fn redis_list_record_versions(
        &self,
        app_id: &str,
        kind: &str,
        id: &str,
        after: i32,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let keys = Keys::new(app_id);
        let mut conn = self.conn();
        let latest: Option<i32> = conn.hget(keys.record(kind, id), "latest").await?;
        let Some(latest) = latest else { return Ok(Vec::new()) };
        let wanted: Vec<String> = ((after.max(0) + 1)..=latest).take(limit).map(|v| v.to_string()).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<Option<Vec<u8>>> = redis::cmd("HMGET").arg(keys.record(kind, id)).arg(&wanted).query_async(&mut conn).await?;
        Ok(found.into_iter().flatten().collect())
    }

    pub(super) async fn redis_set_record_use(
        &self,
        app_id: &str,
        kind: &str,
        id: &str,
        user: &str,
        in_use: bool,
    ) -> Result<(), StoreError> {
        let keys = Keys::new(app_id);
        let mut invocation = RECORD_USE.prepare_invoke();
        invocation.key(keys.record(kind, id)).key(keys.record_users(kind, id)).arg(user).arg(if in_use { "1" } else { "0" });
        let done: i64 = invocation.invoke_async(&mut self.conn()).await?;
        if done == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("{kind} {id}")))
        }
    }

    pub(super) async fn redis_delete_record(&self, app_id: &str, kind: &str, id: &str) -> Result<Option<i32>, StoreError> {
        let keys = Keys::new(app_id);
        let mut invocation = DELETE_RECORD.prepare_invoke();
        invocation.key(keys.record(kind, id)).key(keys.records(kind)).key(keys.record_users(kind, id)).arg(id);
        let (status, detail): (i64, redis::Value) = invocation.invoke_async(&mut self.conn()).await?;
        match status {
            1 => Ok(Some(redis::from_redis_value::<i32>(detail).map_err(|e| StoreError::Corrupt(e.to_string()))?)),
            0 => Ok(None),
            _ => {
                let user: String = redis::from_redis_value(detail).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Err(StoreError::Precondition(format!("{kind} {id} is in use by {user}")))
            }
        }
    }

    pub(super) async fn redis_put_blob(&self, app_id: &str, kind: &str, id: &str, body: &[u8]) -> Result<(), StoreError> {
        let keys = Keys::new(app_id);
        let _: () = self.conn().set(keys.blob(kind, id), body).await?;
        Ok(())
    }

    pub(super) async fn redis_get_blob(&self, app_id: &str, kind: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let keys = Keys::new(app_id);
        Ok(self.conn().get(keys.blob(kind, id)).await?)
    }

    pub(super) async fn redis_add_members(&self, app_id: &str, set: &str, ids: &[String]) -> Result<(), StoreError> {
        let keys = Keys::new(app_id);
        let key = keys.members(set);
        let mut pipe = redis::pipe();
        for chunk in ids.chunks(1_000) {
            let items: Vec<(i64, &str)> = chunk.iter().map(|id| (0, id.as_str())).collect();
            pipe.zadd_multiple(&key, &items).ignore();
        }
        let _: () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    pub(super) async fn redis_delete_members(&self, app_id: &str, set: &str) -> Result<(), StoreError> {
        let keys = Keys::new(app_id);
        // UNLINK frees a large set off Redis's main thread.
        let _: () = redis::cmd("UNLINK").arg(keys.members(set)).query_async(&mut self.conn()).await?;
        Ok(())
    }

    pub(super) async fn redis_count_members(&self, app_id: &str, set: &str) -> Result<u64, StoreError> {
        let keys = Keys::new(app_id);
        Ok(self.conn().zcard(keys.members(set)).await?)
    }

    pub(super) async fn redis_scan_members(
        &self,
        app_id: &str,
        set: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Endpoint>, Option<String>), StoreError> {
        let keys = Keys::new(app_id);
        self.scan_index(&keys, keys.members(set), cursor, limit).await
    }

    pub(super) async fn redis_scan_splits(&self, app_id: &str, set: Option<&str>, parts: usize) -> Result<Vec<String>, StoreError> {
        let keys = Keys::new(app_id);
        let Some(set) = set else { return self.endpoint_splits(&keys, parts).await };
        let index = keys.members(set);
        let mut conn = self.conn();
        let n: u64 = conn.zcard(&index).await?;
        // Small indexes read fast enough in one range.
        if parts < 2 || n < 10_000 {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for j in 1..parts as u64 {
            let rank = (n * j / parts as u64) as isize;
            pipe.zrange(&index, rank, rank);
        }
        let cuts: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
        let mut cuts: Vec<String> = cuts.into_iter().flatten().collect();
        cuts.dedup();
        Ok(cuts)
    }

    pub(super) async fn redis_scan_encoded(
        &self,
        app_id: &str,
        set: Option<&str>,
        cursor: Option<String>,
        range: (Option<&str>, Option<&str>),
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<String>), StoreError> {
        let keys = Keys::new(app_id);
        let Some(set) = set else {
            let (page, next) = self.scan_endpoint_table(&keys, cursor, range, limit).await?;
            return Ok((page.into_iter().map(|(_, v)| v).collect(), next));
        };
        let index = keys.members(set);
        let from = match (cursor, range.0) {
            (Some(c), _) => format!("({c}"),
            (None, Some(f)) => format!("[{f}"),
            (None, None) => "-".to_string(),
        };
        let until = range.1.map_or_else(|| "+".to_string(), |u| format!("({u}"));
        self.scan_index_encoded(&keys, index, from, until, limit).await
    }

    pub(super) async fn redis_members_contain(&self, app_id: &str, set: &str, ids: &[String]) -> Result<Vec<bool>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = Keys::new(app_id);
        let scores: Vec<Option<f64>> = redis::cmd("ZMSCORE").arg(keys.members(set)).arg(ids).query_async(&mut self.conn()).await?;
        Ok(scores.into_iter().map(|s| s.is_some()).collect())
    }

    pub(super) async fn redis_take_endpoint_caps(
        &self,
        app_id: &str,
        scope: &str,
        ids: &[String],
        recent: Option<(u32, i64)>,
        total: Option<u32>,
        now_secs: i64,
    ) -> Result<Vec<bool>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = Keys::new(app_id);
        let mut invocation = TAKE_CAPS.prepare_invoke();
        invocation.key(keys.key("capt:", scope)).key(keys.key("capd:", scope));
        invocation.arg(recent.map_or(-1, |r| i64::from(r.0))).arg(total.map_or(-1, i64::from)).arg(now_secs);
        invocation.arg(recent.map_or(86_400, |r| r.1)).arg(ids);
        let out: Vec<i64> = invocation.invoke_async(&mut self.conn()).await?;
        Ok(out.into_iter().map(|v| v == 1).collect())
    }

    pub(super) async fn redis_try_lease(&self, app_id: &str, name: &str, owner: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let keys = Keys::new(app_id);
        let mut invocation = TRY_LEASE.prepare_invoke();
        invocation.key(keys.key("lease:", name)).arg(owner).arg(ttl_ms.max(1));
        let held: i64 = invocation.invoke_async(&mut self.conn()).await?;
        Ok(held == 1)
    }

    pub(super) async fn redis_release_lease(&self, app_id: &str, name: &str, owner: &str) -> Result<(), StoreError> {
        let keys = Keys::new(app_id);
        let mut invocation = RELEASE_LEASE.prepare_invoke();
        invocation.key(keys.key("lease:", name)).arg(owner);
        let _: i64 = invocation.invoke_async(&mut self.conn()).await?;
        Ok(())
    }
}
