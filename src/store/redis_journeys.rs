//! Journey participants in Redis, under the app's hash tag: `jp:{journey}` (hash: endpoint →
//! `"{entries} {last entry} {state}"`, the state empty once it left), `jd:{journey}` (sorted
//! set: the endpoints in the journey now, scored by when they are due) and `jc:{journey}`
//! (hash: the journey's counters). Entries and moves are Lua scripts, so each is atomic.

use deadpool_redis::redis;

use super::redis::{Keys, RedisStore};
use super::{Entry, Move, Participant, Reentry, StoreError};

/// Calls `cmd` on `key` with `args` in chunks of at most 1,000 (Lua's unpack has a limit),
/// `width` arguments to an item. Shared by the scripts below.
const CHUNKED: &str = r#"
local function chunked(cmd, key, args, width)
  local step = 1000 * width
  for c = 1, #args, step do
    redis.call(cmd, key, unpack(args, c, math.min(c + step - 1, #args)))
  end
end
local function hmget(key, ids)
  local out = {}
  for c = 1, #ids, 1000 do
    local part = redis.call('HMGET', key, unpack(ids, c, math.min(c + 999, #ids)))
    for k = 1, #part do out[c + k - 1] = part[k] end
  end
  return out
end
"#;

/// KEYS participants, due set, counters. ARGV cap (0: none), interval, now, due, state, ids...
/// Returns per id its entry number (> 0) when it entered, else 0 in the journey now, -1 cap
/// reached, -2 too soon. Reads and writes go as one HMGET, HSET and ZADD per 1,000 ids.
static ENTER: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(&format!(
        "{CHUNKED}{}",
        r#"
local cap, interval, now, due, state = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local names = {'ENDPOINT_ENTERED', 'ACTIVE_ENDPOINT_REJECTED', 'REENTRY_CAP_EXCEEDED', 'REENTRY_INTERVAL_NOT_ELAPSED'}
local counts = {0, 0, 0, 0}
local ids = {}
for i = 6, #ARGV do ids[#ids + 1] = ARGV[i] end
local olds = hmget(KEYS[1], ids)
local out, hs, zs, seen = {}, {}, {}, {}
for i, id in ipairs(ids) do
  local r, entered = 0, 0
  local entries, last, inside = 0, nil, seen[id] ~= nil
  local old = olds[i]
  if old then
    local e, l, st = string.match(old, '^(%d+) (%d+) ?(.*)$')
    entries, last = tonumber(e or '0'), tonumber(l or '0')
    inside = inside or (st ~= nil and st ~= '')
  end
  seen[id] = true
  if inside then
    r = 1
  elseif cap > 0 and entries >= cap then
    r = 2
  elseif interval > 0 and last and now - last < interval then
    r = 3
  else
    entered = entries + 1
    hs[#hs + 1] = id
    hs[#hs + 1] = entered .. ' ' .. now .. ' ' .. state
    zs[#zs + 1] = due
    zs[#zs + 1] = id
  end
  counts[r + 1] = counts[r + 1] + 1
  if r == 0 then out[#out + 1] = entered else out[#out + 1] = 1 - r end
end
chunked('HSET', KEYS[1], hs, 2)
chunked('ZADD', KEYS[2], zs, 2)
for k = 1, 4 do
  if counts[k] > 0 then redis.call('HINCRBY', KEYS[3], names[k], counts[k]) end
end
return out
"#
    ))
});

/// KEYS participants, due set, counters. ARGV n, then n × (id, due or '', state), then counter
/// name and increment pairs. An id given twice moves as its last move says.
static MOVE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(&format!(
        "{CHUNKED}{}",
        r#"
local n = tonumber(ARGV[1])
local ids, final = {}, {}
for i = 0, n - 1 do
  local id = ARGV[2 + 3 * i]
  ids[#ids + 1] = id
  final[id] = i
end
local olds = hmget(KEYS[1], ids)
local hs, zs, gone = {}, {}, {}
for i = 0, n - 1 do
  local id, due, state = ARGV[2 + 3 * i], ARGV[3 + 3 * i], ARGV[4 + 3 * i]
  if final[id] == i then
    local prefix = string.match(olds[i + 1] or '1 0', '^(%d+ %d+)') or '1 0'
    hs[#hs + 1] = id
    if due == '' then
      hs[#hs + 1] = prefix
      gone[#gone + 1] = id
    else
      hs[#hs + 1] = prefix .. ' ' .. state
      zs[#zs + 1] = due
      zs[#zs + 1] = id
    end
  end
end
chunked('HSET', KEYS[1], hs, 2)
chunked('ZADD', KEYS[2], zs, 2)
chunked('ZREM', KEYS[2], gone, 1)
for j = 2 + 3 * n, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[3], ARGV[j], ARGV[j + 1])
end
return 1
"#
    ))
});

/// The entries and state parts of a stored participant value.
fn parts_of(value: &str) -> (u32, String) {
    let mut parts = value.splitn(3, ' ');
    let entries = parts.next().and_then(|e| e.parse().ok()).unwrap_or(1);
    (entries, parts.nth(1).unwrap_or("").to_string())
}

impl RedisStore {
    pub(super) async fn redis_engaged(&self, app_id: &str, ids: &[String]) -> Result<Vec<bool>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = Keys::new(app_id);
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.exists(keys.key("eng:", id));
        }
        Ok(pipe.query_async(&mut self.conn()).await?)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn redis_journey_enter(
        &self,
        app_id: &str,
        journey: &str,
        ids: &[String],
        state: &str,
        due: i64,
        rule: Reentry,
        now_secs: i64,
    ) -> Result<Vec<Entry>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = Keys::new(app_id);
        let mut invocation = ENTER.prepare_invoke();
        invocation.key(keys.key("jp:", journey)).key(keys.key("jd:", journey)).key(keys.key("jc:", journey));
        invocation.arg(rule.cap).arg(rule.interval_secs).arg(now_secs).arg(due).arg(state).arg(ids);
        let out: Vec<i64> = invocation.invoke_async(&mut self.conn()).await?;
        Ok(out
            .into_iter()
            .map(|r| match r {
                n if n > 0 => Entry::Entered(n as u32),
                0 => Entry::Active,
                -1 => Entry::CapExceeded,
                _ => Entry::TooSoon,
            })
            .collect())
    }

    pub(super) async fn redis_journey_due(
        &self,
        app_id: &str,
        journey: &str,
        until: i64,
        limit: usize,
    ) -> Result<Vec<Participant>, StoreError> {
        let keys = Keys::new(app_id);
        let mut conn = self.conn();
        let due: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(keys.key("jd:", journey))
            .arg("-inf")
            .arg(until)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit.max(1))
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = due.iter().map(|(id, _)| id.as_str()).collect();
        let values: Vec<Option<String>> = redis::cmd("HMGET").arg(keys.key("jp:", journey)).arg(&ids).query_async(&mut conn).await?;
        Ok(due
            .into_iter()
            .zip(values)
            .map(|((endpoint_id, due), v)| {
                let (entries, state) = v.as_deref().map(parts_of).unwrap_or((1, String::new()));
                Participant { endpoint_id, due: due as i64, state, entries }
            })
            .collect())
    }

    pub(super) async fn redis_journey_move(
        &self,
        app_id: &str,
        journey: &str,
        moves: &[Move],
        counters: &[(String, i64)],
    ) -> Result<(), StoreError> {
        if moves.is_empty() && counters.is_empty() {
            return Ok(());
        }
        let keys = Keys::new(app_id);
        let mut invocation = MOVE.prepare_invoke();
        invocation.key(keys.key("jp:", journey)).key(keys.key("jd:", journey)).key(keys.key("jc:", journey));
        invocation.arg(moves.len());
        for (id, next) in moves {
            match next {
                Some((due, state)) => invocation.arg(id).arg(*due).arg(state),
                None => invocation.arg(id).arg("").arg(""),
            };
        }
        for (name, n) in counters {
            invocation.arg(name).arg(*n);
        }
        let _: i64 = invocation.invoke_async(&mut self.conn()).await?;
        Ok(())
    }

    pub(super) async fn redis_journey_counters(&self, app_id: &str, journey: &str) -> Result<(u64, Vec<(String, i64)>), StoreError> {
        let keys = Keys::new(app_id);
        let (active, counters): (u64, Vec<(String, i64)>) =
            redis::pipe().zcard(keys.key("jd:", journey)).hgetall(keys.key("jc:", journey)).query_async(&mut self.conn()).await?;
        let mut counters = counters;
        counters.sort();
        Ok((active, counters))
    }

    pub(super) async fn redis_journey_drop(&self, app_id: &str, journey: &str) -> Result<(), StoreError> {
        let keys = Keys::new(app_id);
        let _: () = redis::cmd("UNLINK")
            .arg(keys.key("jp:", journey))
            .arg(keys.key("jd:", journey))
            .arg(keys.key("jc:", journey))
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }
}
