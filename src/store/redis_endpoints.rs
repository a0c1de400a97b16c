//! The Redis backend's endpoint tables — the records, the address index and the user index —
//! each cut into buckets that Redis keeps compact.
//!
//! A key of its own per endpoint costs Redis about 100 bytes before its value (the keyspace's
//! entry, the key's name, the value's object), and a sorted set of every id another 100. So
//! the three tables are hashes instead, `epb:{b}` (endpoint id → record), `adb:{b}` (address
//! key → id of its ACTIVE endpoint) and `usb:{b}` (user id → its endpoint ids), an entry's
//! bucket `b` found from a hash of its name by linear hashing: with `L` and `S` from the
//! app's `epix` hash, `b = h mod 2^L`, or `h mod 2^(L+1)` when that is below `S`. Once the
//! app holds more than [`LOAD`] endpoints a bucket, the writer that crossed the line splits
//! bucket `S` (its entries whose `h mod 2^(L+1)` is `S + 2^L` move there) and moves `S` on,
//! all three tables alike, in the same script as its write — a bucket stays near [`LOAD`]
//! entries (at most about twice that before its turn to split), so Redis keeps the address
//! and user buckets as listpacks (an entry costs its bytes and two or three more) and an
//! endpoint record costs its value and about 60 bytes of hash table. Buckets never merge.
//!
//! The scripts compute the buckets themselves from `epix`, read in the same script, so a
//! reader never looks in a bucket that a split has just emptied. Scans read whole buckets in
//! the order of their positions: an entry's position is its hash with the bits reversed, so a
//! bucket holds one contiguous range of positions and a split cuts its range in two. A scan
//! returns entries by (position, id), which no split changes: every endpoint present
//! throughout a scan is returned exactly once, and a cursor (the last id returned) resumes the
//! scan right after it, whatever splits happened in between.
//!
//! An earlier release kept one key per entry (`ep:{id}`, `addr:{key}`, `user:{id}`) and the
//! ids in a sorted set (`eps`); [`RedisStore::migrate_endpoints`] moves an app's entries into
//! the buckets when a daemon starts.

use deadpool_redis::redis;

use super::codec;
use super::plan;
use super::redis::{Keys, RedisStore};
use super::redis_conn::Conn;
use super::StoreError;
use crate::proto::v1::Endpoint;

/// Endpoints per bucket at which the next bucket splits.
pub(super) const LOAD: u64 = 48;

/// Buckets split in one script at most.
const SPLIT_BATCH: u64 = 64;

/// The tables: the letter a script is given, and the name of its buckets.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) enum Table {
    Endpoints,
    Addresses,
    Users,
}

impl Table {
    fn letter(self) -> &'static str {
        match self {
            Table::Endpoints => "e",
            Table::Addresses => "a",
            Table::Users => "u",
        }
    }

    fn buckets(self) -> &'static str {
        match self {
            Table::Endpoints => "epb:",
            Table::Addresses => "adb:",
            Table::Users => "usb:",
        }
    }

    const ALL: [Table; 3] = [Table::Endpoints, Table::Addresses, Table::Users];
}

/// A name's hash as a script takes it.
fn hash_arg(name: &str) -> u32 {
    bucket_hash(name.as_bytes())
}

/// The hash a name's bucket and position come from. The scripts compute the same
/// (`PRELUDE`): a polynomial hash of the bytes, then a mix so that the low bits of ids that
/// differ only in their last characters spread evenly.
pub fn bucket_hash(name: &[u8]) -> u32 {
    let mut x: u32 = 0;
    for &c in name {
        x = x.wrapping_mul(31).wrapping_add(u32::from(c));
    }
    x ^= x >> 16;
    x = x.wrapping_mul(0x045d_9f3b);
    x ^ (x >> 16)
}

/// An id's place in scan order (ids of equal position go in id order).
fn position(id: &str) -> u64 {
    u64::from(bucket_hash(id.as_bytes()).reverse_bits())
}

/// Positions are grouped in 2^16 granules (a position's top 16 bits) for the bitmap `epgr`
/// of the granules that hold endpoints; at the base level a granule is exactly one bucket.
const GRANULE_BITS: u32 = 16;

fn granule(id: &str) -> u64 {
    position(id) >> (32 - GRANULE_BITS)
}

/// Whether bit `g` of a Redis bitmap is set (bit 0 is the first byte's highest bit).
fn bit(map: &[u8], g: u64) -> bool {
    map.get((g / 8) as usize).is_some_and(|b| b & (0x80 >> (g % 8)) != 0)
}

/// The first granule at or after `g` whose bit is set.
fn next_granule(map: &[u8], g: u64) -> Option<u64> {
    let mut g = g;
    while (g / 8) < map.len() as u64 {
        if g.is_multiple_of(8) && map[(g / 8) as usize] == 0 {
            g += 8;
            continue;
        }
        if bit(map, g) {
            return Some(g);
        }
        g += 1;
    }
    None
}

/// Buckets one scan call reads at most (a sparse app's page of 1,000 is one call).
const FETCH_BUCKETS: usize = 1024;

/// The end of the position space (positions are 32 bits).
const END: u64 = 1 << 32;

/// An app's tables start cut into `2^INITIAL_LEVEL` buckets.
pub(super) const INITIAL_LEVEL: u32 = 16;

impl Default for Levels {
    fn default() -> Self {
        Self { level: INITIAL_LEVEL, split: 0 }
    }
}

/// How an app's tables are cut: `2^level + split` buckets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Levels {
    pub level: u32,
    pub split: u64,
}

impl Levels {
    fn parse(text: &[u8]) -> Result<Self, StoreError> {
        let text = std::str::from_utf8(text).ok();
        let (l, s) = text.and_then(|t| t.split_once(':')).ok_or_else(|| StoreError::Corrupt("the endpoint table's levels".into()))?;
        match (l.parse(), s.parse()) {
            (Ok(level), Ok(split)) => Ok(Self { level, split }),
            _ => Err(StoreError::Corrupt("the endpoint table's levels".into())),
        }
    }

    fn text(self) -> String {
        format!("{}:{}", self.level, self.split)
    }

    /// The key of `name`'s bucket of `table`.
    fn key(self, keys: &Keys, table: Table, name: &str) -> String {
        let b = self.bucket_of(bucket_hash(name.as_bytes()));
        keys.key(table.buckets(), &b.to_string())
    }

    fn bucket_of(self, h: u32) -> u64 {
        let m = 1u64 << self.level;
        let b = u64::from(h) % m;
        if b < self.split {
            u64::from(h) % (2 * m)
        } else {
            b
        }
    }

    /// The bucket holding position `p`, and the end of its range of positions.
    fn at(self, p: u64) -> (u64, u64) {
        let b = self.bucket_of((p as u32).reverse_bits());
        let m = 1u64 << self.level;
        let depth = if b < self.split || b >= m { self.level + 1 } else { self.level };
        let span = 1u64 << (32 - depth.min(32));
        (b, (p & !(span - 1)) + span)
    }

    /// Positions that cut the space into about `parts` ranges, each a whole number of buckets
    /// now and for good (a split only cuts a bucket's range in two).
    fn cuts(self, parts: usize) -> Vec<u64> {
        let grain = 1u64 << (32 - self.level.min(32));
        let mut cuts: Vec<u64> = (1..parts as u64).map(|j| (END * j / parts as u64) / grain * grain).filter(|&c| c > 0).collect();
        cuts.dedup();
        cuts
    }
}

/// What every script starts with: the app's key prefix from ARGV[1], its levels, and the
/// bucket key of a name from the name's hash (which the caller computes, [`bucket_hash`]).
const PRELUDE: &str = r#"
local P = ARGV[1]
local EPIX = P .. 'epix'
local st = redis.call('HMGET', EPIX, 'L', 'S', 'n')
local L, S, N = tonumber(st[1] or '16'), tonumber(st[2] or '0'), tonumber(st[3] or '0')
local M = 2 ^ L
local TABLES = {e = 'epb:', a = 'adb:', u = 'usb:'}
-- (a whole number below 2^53 concatenates as its digits)
local function key(t, h)
  h = tonumber(h)
  local b = h % M
  if b < S then b = h % (2 * M) end
  return P .. TABLES[t] .. b
end
"#;

/// [`bucket_hash`] in a script, for the one that finds names of its own (a member set's ids).
/// Numbers stay exact below 2^53, so the 32-bit product is taken in two halves.
const HASH: &str = r#"
local function hash(s)
  local x = 0
  for i = 1, #s do x = (x * 31 + string.byte(s, i)) % 4294967296 end
  x = bit.bxor(x, math.floor(x / 65536)) % 4294967296
  local lo, hi = x % 65536, math.floor(x / 65536)
  x = ((hi * 73244475) % 65536 * 65536 + lo * 73244475) % 4294967296
  return bit.bxor(x, math.floor(x / 65536)) % 4294967296
end
"#;

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PRELUDE}{body}"))
}

/// The endpoint write's compare-and-set. KEYS[1] the app record. ARGV: the prefix, the
/// levels the caller computed the buckets with ("L:S"), counts of reads, sets and deletes,
/// endpoints created and removed, the id of the dictionary the records set are packed with
/// ("" for none), the count of creations, then (bucket, name, value read or "") per read,
/// (bucket, name, value) per creation, per set, and (bucket, name) per delete. A creation is
/// a set of an entry read as absent: `HSETNX` checks it is still absent as it writes it (an
/// entry that has appeared since undoes the creations made and answers 0, like a changed
/// read), which saves reading it again — a fresh import's entries are all creations. Returns 1 applied, 2 applied and a bucket is due to split,
/// 0 a value read has changed, -1 the app is gone, -2 the app's dictionary is not the one
/// packed with, or the levels now when they are not the caller's (nothing applied).
static COMMIT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    script(&format!(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local now = string.format('%d:%d', L, S)
if now ~= ARGV[2] then return now end
if ARGV[8] ~= '' and redis.call('HGET', P .. 'epdict', 'id') ~= ARGV[8] then return -2 end
local c, s, d, x = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[9])
local i = 10
for _ = 1, c do
  if (redis.call('HGET', ARGV[i], ARGV[i + 1]) or '') ~= ARGV[i + 2] then return 0 end
  i = i + 3
end
local first = i
for _ = 1, x do
  if redis.call('HSETNX', ARGV[i], ARGV[i + 1], ARGV[i + 2]) == 0 then
    for j = first, i - 3, 3 do redis.call('HDEL', ARGV[j], ARGV[j + 1]) end
    return 0
  end
  i = i + 3
end
for _ = 1, s do
  redis.call('HSET', ARGV[i], ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
for _ = 1, d do
  redis.call('HDEL', ARGV[i], ARGV[i + 1])
  i = i + 2
end
-- The granules of the records set: a scan of a sparse app reads only theirs.
for j = i, #ARGV do redis.call('SETBIT', P .. 'epgr', ARGV[j], 1) end
local delta = tonumber(ARGV[6]) - tonumber(ARGV[7])
if delta ~= 0 then
  N = N + delta
  redis.call('HSET', EPIX, 'n', N)
end
if N > {LOAD} * (M + S) then return 2 end
return 1
"#
    ))
});

/// Splits buckets S, S+1, … of every table: KEYS[1] the app record; ARGV the prefix, the
/// levels the caller read ("L:S"), how many buckets to split (within the level), then per
/// bucket and table (e, a, u) the number of its names the caller saw in it and those names,
/// each after `m` (it moves to the bucket 2^L above) or `s` (it stays); a name written since
/// is hashed by the script. Returns 1 split, 0 the levels changed since (read again).
static SPLIT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    script(&format!(
        r#"{HASH}
if string.format('%d:%d', L, S) ~= ARGV[2] then return 0 end
local k = tonumber(ARGV[3])
local i = 4
local plans = {{}}
for b = S, S + k - 1 do
  for _, t in ipairs({{'e', 'a', 'u'}}) do
    local n = tonumber(ARGV[i])
    local seen = {{}}
    for j = 1, n do seen[ARGV[i + 2 * j]] = ARGV[i + 2 * j - 1] end
    i = i + 1 + 2 * n
    local from = P .. TABLES[t] .. string.format('%d', b)
    local moving = {{}}
    for _, name in ipairs(redis.call('HKEYS', from)) do
      local how = seen[name]
      -- A name written since the caller read the bucket is hashed here.
      if not how then how = (hash(name) % (2 * M) == b + M) and 'm' or 's' end
      if how == 'm' then moving[#moving + 1] = name end
    end
    plans[#plans + 1] = {{from, P .. TABLES[t] .. string.format('%d', b + M), moving}}
  end
end
for _, plan in ipairs(plans) do
  local from, to, moving = plan[1], plan[2], plan[3]
  -- (unpack takes a few thousand values at most)
  for j = 1, #moving, 1000 do
    local names = {{unpack(moving, j, math.min(j + 999, #moving))}}
    local values = redis.call('HMGET', from, unpack(names))
    local entries = {{}}
    for x = 1, #names do
      entries[2 * x - 1] = names[x]
      entries[2 * x] = values[x]
    end
    redis.call('HSET', to, unpack(entries))
    redis.call('HDEL', from, unpack(names))
  end
end
S = S + k
if S == M then L, S = L + 1, 0 end
redis.call('HSET', EPIX, 'L', L, 'S', S)
return 1
"#
    ))
});

/// Whole endpoint buckets for a scan: KEYS[1] the app record; ARGV the prefix, the levels the
/// caller computed the buckets with ("L:S"), then (bucket, granule) pairs, the granule ""
/// above the base level. Returns the levels now, then, only when they are the caller's, every
/// (id, record) of the buckets. At the base level a bucket is its granule's only one, so an
/// empty bucket clears its granule's bit (a write that fills it again sets it in the same
/// script as its record).
static FETCH: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    script(
        r#"
local now = string.format('%d:%d', L, S)
local out = {now}
if now ~= ARGV[2] then return out end
for i = 3, #ARGV, 2 do
  local all = redis.call('HGETALL', P .. 'epb:' .. ARGV[i])
  if #all == 0 and ARGV[i + 1] ~= '' then redis.call('SETBIT', P .. 'epgr', ARGV[i + 1], 0) end
  for j = 1, #all do out[#out + 1] = all[j] end
end
return out
"#,
    )
});

/// Moves entries of an earlier release's layout into the buckets: KEYS[1] the app's old id
/// index; ARGV the prefix, the number of entries, (table, name, hash, value) per entry, then
/// the old keys to delete and the ids to take from the old index ("" between the two lists).
/// An entry already in its bucket stays as it is (another daemon moved it, or wrote it
/// since). Returns the endpoints added, and whether a bucket is due to split.
static MIGRATE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    script(&format!(
        r#"
local e = tonumber(ARGV[2])
local i, added = 3, 0
for _ = 1, e do
  local t = ARGV[i]
  if redis.call('HSETNX', key(t, ARGV[i + 2]), ARGV[i + 1], ARGV[i + 3]) == 1 and t == 'e' then added = added + 1 end
  i = i + 4
end
local dels, ids = {{}}, {{}}
local into = dels
for j = i, #ARGV do
  if ARGV[j] == '' and into == dels then into = ids else into[#into + 1] = ARGV[j] end
end
for _, k in ipairs(dels) do redis.call('DEL', k) end
for _, id in ipairs(ids) do redis.call('ZREM', KEYS[1], id) end
if added > 0 then
  N = N + added
  redis.call('HSET', EPIX, 'n', N)
end
return {{added, N > {LOAD} * (M + S) and 1 or 0}}
"#
    ))
});

/// A compare-and-set write of the endpoint tables for [`RedisStore::commit_endpoints`].
#[derive(Default)]
pub(super) struct EndpointChange {
    /// Entries read, with the value read ("" for none).
    pub read: Vec<(Table, String, Vec<u8>)>,
    pub sets: Vec<(Table, String, Vec<u8>)>,
    pub dels: Vec<(Table, String)>,
    pub created: usize,
    pub removed: usize,
    /// The dictionary the records set are packed with, if they are.
    pub dict: Option<u32>,
}

/// An entry of a table and its value.
type Entry = (Table, String, Vec<u8>);

/// The bounds of a range of the endpoint table, as [`RedisStore::endpoint_splits`] writes
/// them: `@` and the position in hex.
fn parse_bound(bound: Option<&str>, default: u64) -> Result<u64, StoreError> {
    let Some(b) = bound else { return Ok(default) };
    b.strip_prefix('@')
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .filter(|&p| p <= END)
        .ok_or_else(|| StoreError::Corrupt(format!("not a range bound of the endpoint table: {b:?}")))
}

/// One reply of a transaction as `T`.
fn parse<T: redis::FromRedisValue>(v: Option<redis::Value>) -> Result<T, StoreError> {
    T::from_redis_value(v.unwrap_or(redis::Value::Nil)).map_err(|e| StoreError::Corrupt(format!("an endpoint read's reply: {e}")))
}

impl RedisStore {
    /// How the app's tables were cut when last seen.
    fn cached_levels(&self, keys: &Keys) -> Levels {
        self.levels.lock().unwrap_or_else(|e| e.into_inner()).get(keys.app_id()).copied().unwrap_or_default()
    }

    fn remember_levels(&self, keys: &Keys, levels: Levels) {
        self.levels.lock().unwrap_or_else(|e| e.into_inner()).insert(keys.app_id().to_string(), levels);
    }

    /// Reads entries of the tables; `None` when the app is gone.
    pub(super) async fn read_entries(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        entries: &[(Table, &str)],
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, StoreError> {
        // Plain reads (no script: they cost Redis less), the levels read before and after
        // them: a split is one script that changes the levels, so equal levels on both sides,
        // the ones the buckets were computed with, mean no split moved an entry in between
        // (with others, the read is made again with them).
        for _ in 0..8 {
            let levels = self.cached_levels(keys);
            let mut pipe = redis::pipe();
            pipe.cmd("HMGET").arg(keys.key("epix", "")).arg("L").arg("S").cmd("EXISTS").arg(keys.app());
            for (t, name) in entries {
                pipe.cmd("HGET").arg(levels.key(keys, *t, name)).arg(*name);
            }
            pipe.cmd("HMGET").arg(keys.key("epix", "")).arg("L").arg("S");
            let mut replies: Vec<redis::Value> = pipe.query_async(conn).await?;
            if replies.len() != entries.len() + 3 {
                return Err(StoreError::Corrupt("a short reply to an endpoint read".into()));
            }
            let after: (Option<u32>, Option<u64>) = parse(replies.pop())?;
            let values = replies.split_off(2);
            let exists: bool = parse(replies.pop())?;
            let stored: (Option<u32>, Option<u64>) = parse(replies.pop())?;
            let values = values.into_iter().map(|v| parse(Some(v))).collect::<Result<Vec<Option<Vec<u8>>>, _>>()?;
            if after != stored {
                continue;
            }
            let now = Levels { level: stored.0.unwrap_or(INITIAL_LEVEL), split: stored.1.unwrap_or(0) };
            if now != levels {
                self.remember_levels(keys, now);
                continue;
            }
            if !exists {
                return Ok(None);
            }
            return Ok(Some(values));
        }
        Err(StoreError::Contention)
    }

    /// Endpoint records by id (`None` for an id with none); `None` when the app is gone.
    pub(super) async fn read_endpoints(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        ids: &[String],
    ) -> Result<Option<Vec<Option<Endpoint>>>, StoreError> {
        let entries: Vec<(Table, &str)> = ids.iter().map(|id| (Table::Endpoints, id.as_str())).collect();
        let Some(mut values) = self.read_entries(conn, keys, &entries).await? else { return Ok(None) };
        self.unpack_endpoints(keys, values.iter_mut().flatten()).await?;
        let decoded = values.into_iter().map(|v| v.map(|b| codec::decode_endpoint(keys.app_id(), &b)).transpose());
        Ok(Some(decoded.collect::<Result<Vec<_>, _>>()?))
    }

    /// Runs [`COMMIT`]: 1 applied, 0 a value read has changed, -1 the app is gone, -2 the
    /// app's dictionary is another.
    pub(super) async fn commit_endpoints(&self, conn: &mut Conn, keys: &Keys, c: &EndpointChange) -> Result<i64, StoreError> {
        // Entries read as absent and set now are creations; the other reads are checked.
        let absent: std::collections::HashSet<(Table, &str)> =
            c.read.iter().filter(|(_, _, v)| v.is_empty()).map(|(t, n, _)| (*t, n.as_str())).collect();
        let (creations, sets): (Vec<&Entry>, Vec<_>) = c.sets.iter().partition(|(t, n, _)| absent.contains(&(*t, n.as_str())));
        let created: std::collections::HashSet<(Table, &str)> = creations.iter().map(|(t, n, _)| (*t, n.as_str())).collect();
        let checks: Vec<&Entry> = c.read.iter().filter(|(t, n, v)| !(v.is_empty() && created.contains(&(*t, n.as_str())))).collect();
        for _ in 0..8 {
            let levels = self.cached_levels(keys);
            let mut invocation = COMMIT.prepare_invoke();
            invocation.key(keys.app()).arg(keys.prefix()).arg(levels.text());
            invocation.arg(checks.len()).arg(sets.len()).arg(c.dels.len()).arg(c.created).arg(c.removed);
            invocation.arg(c.dict.map_or_else(String::new, |id| id.to_string())).arg(creations.len());
            for (t, name, value) in checks.iter().chain(&creations).chain(&sets) {
                invocation.arg(levels.key(keys, *t, name)).arg(name.as_str()).arg(value.as_slice());
            }
            for (t, name) in &c.dels {
                invocation.arg(levels.key(keys, *t, name)).arg(name.as_str());
            }
            let mut granules: Vec<u64> = c.sets.iter().filter(|(t, ..)| *t == Table::Endpoints).map(|(_, id, _)| granule(id)).collect();
            granules.sort_unstable();
            granules.dedup();
            invocation.arg(&granules);
            let outcome: redis::Value = invocation.invoke_async(conn).await?;
            let outcome = match outcome {
                redis::Value::Int(n) => n,
                redis::Value::BulkString(now) => {
                    self.remember_levels(keys, Levels::parse(&now)?);
                    continue;
                }
                other => return Err(StoreError::Corrupt(format!("an endpoint commit answered {other:?}"))),
            };
            if outcome == 2 {
                // The write is in; a split that fails (the store went away) is left for the next.
                if let Err(e) = self.split_due(conn, keys).await {
                    tracing::debug!(error = %e, "Splitting an endpoint bucket failed; the next write does it.");
                }
                return Ok(1);
            }
            return Ok(outcome);
        }
        Err(StoreError::Contention)
    }

    /// Splits buckets while the app holds more than [`LOAD`] endpoints a bucket, up to
    /// [`SPLIT_BATCH`] in one script. The writer that made them due does it, right after its
    /// write, under the app's split lease (a writer that finds it held leaves the splits to
    /// its holder); one that dies first leaves them due for the next write (a bucket is only
    /// fuller meanwhile).
    pub(super) async fn split_due(&self, conn: &mut Conn, keys: &Keys) -> Result<(), StoreError> {
        let owner = format!("{:016x}", rand::random::<u64>());
        if !self.redis_try_lease(keys.app_id(), "endpoint-split", &owner, 30_000).await? {
            return Ok(());
        }
        let result = self.split_while_due(conn, keys).await;
        self.redis_release_lease(keys.app_id(), "endpoint-split", &owner).await?;
        result
    }

    async fn split_while_due(&self, conn: &mut Conn, keys: &Keys) -> Result<(), StoreError> {
        // Bounded: splits only ever add buckets, and a failed try reads again.
        for _ in 0..100_000 {
            let (level, split, n): (Option<u32>, Option<u64>, Option<u64>) =
                redis::cmd("HMGET").arg(keys.key("epix", "")).arg("L").arg("S").arg("n").query_async(conn).await?;
            let levels = Levels { level: level.unwrap_or(INITIAL_LEVEL), split: split.unwrap_or(0) };
            let m = 1u64 << levels.level;
            let n = n.unwrap_or(0);
            if n <= LOAD * (m + levels.split) {
                return Ok(());
            }
            // As many as are due, within the level.
            let due = (n.div_ceil(LOAD) - (m + levels.split)).clamp(1, SPLIT_BATCH).min(m - levels.split);
            let mut pipe = redis::pipe();
            for b in levels.split..levels.split + due {
                for t in Table::ALL {
                    pipe.cmd("HKEYS").arg(keys.key(t.buckets(), &b.to_string()));
                }
            }
            let names: Vec<Vec<Vec<u8>>> = pipe.query_async(conn).await?;
            let mut invocation = SPLIT.prepare_invoke();
            invocation.key(keys.app()).arg(keys.prefix()).arg(format!("{}:{}", levels.level, levels.split)).arg(due);
            for (j, names) in names.iter().enumerate() {
                let b = levels.split + (j / Table::ALL.len()) as u64;
                invocation.arg(names.len());
                for name in names {
                    let moves = u64::from(bucket_hash(name)) % (2 * m) == b + m;
                    invocation.arg(if moves { "m" } else { "s" }).arg(name.as_slice());
                }
            }
            let _: i64 = invocation.invoke_async(conn).await?;
        }
        Ok(())
    }

    /// How many endpoints the app holds, and how its tables are cut.
    pub(super) async fn endpoint_levels(&self, keys: &Keys) -> Result<(u64, Levels), StoreError> {
        let (level, split, n): (Option<u32>, Option<u64>, Option<u64>) =
            redis::cmd("HMGET").arg(keys.key("epix", "")).arg("L").arg("S").arg("n").query_async(&mut self.conn()).await?;
        Ok((n.unwrap_or(0), Levels { level: level.unwrap_or(INITIAL_LEVEL), split: split.unwrap_or(0) }))
    }

    /// Cuts of the endpoint table into about `parts` ranges (none for a small app).
    pub(super) async fn endpoint_splits(&self, keys: &Keys, parts: usize) -> Result<Vec<String>, StoreError> {
        let (n, levels) = self.endpoint_levels(keys).await?;
        if parts < 2 || n < 10_000 {
            return Ok(Vec::new());
        }
        Ok(levels.cuts(parts).into_iter().map(|p| format!("@{p:x}")).collect())
    }

    /// A page of (id, record) of the endpoint table in scan order: after the id `after`, or
    /// from the range's start, up to its end (bounds from [`RedisStore::endpoint_splits`]);
    /// the records unpacked, as [`codec::decode_endpoint`] reads them.
    pub(super) async fn scan_endpoint_table(
        &self,
        keys: &Keys,
        after: Option<String>,
        range: (Option<&str>, Option<&str>),
        limit: usize,
    ) -> Result<(Vec<(String, Vec<u8>)>, Option<String>), StoreError> {
        let (mut page, next) = self.scan_buckets(keys, after, range, limit).await?;
        self.unpack_endpoints(keys, page.iter_mut().map(|(_, v)| v)).await?;
        Ok((page, next))
    }

    /// [`Self::scan_endpoint_table`]'s page as stored.
    async fn scan_buckets(
        &self,
        keys: &Keys,
        after: Option<String>,
        range: (Option<&str>, Option<&str>),
        limit: usize,
    ) -> Result<(Vec<(String, Vec<u8>)>, Option<String>), StoreError> {
        let limit = limit.max(1);
        let until = parse_bound(range.1, END)?;
        // Entries are taken from `(from, after)` on: at or past `from`, and past `after` at it.
        let (mut from, mut after) = match after {
            Some(id) => (position(&id), Some(id)),
            None => (parse_bound(range.0, 0)?, None),
        };
        let (n, mut levels) = self.endpoint_levels(keys).await?;
        let base = Levels::default();
        let mut page: Vec<(String, Vec<u8>)> = Vec::new();
        let mut conn = self.conn();
        // A sparse app (fewer endpoints than granules) is scanned through its granule bitmap,
        // so a scan of a small app reads its few buckets rather than all of them.
        let map: Option<Vec<u8>> = if levels == base && n < 1 << GRANULE_BITS {
            redis::cmd("GET").arg(keys.key("epgr", "")).query_async(&mut conn).await?
        } else {
            None
        };
        while from < until {
            let per = (n / ((1u64 << levels.level) + levels.split)).max(1);
            let mut buckets: Vec<(u64, String)> = Vec::new();
            let mut p = from;
            while p < until && buckets.len() as u64 * per < (limit - page.len()) as u64 + per && buckets.len() < FETCH_BUCKETS {
                let at_base = levels == base;
                if let (Some(map), true) = (&map, at_base) {
                    let g = p >> (32 - GRANULE_BITS);
                    if !bit(map, g) {
                        match next_granule(map, g + 1) {
                            Some(next) => p = p.max(next << (32 - GRANULE_BITS)),
                            None => p = until,
                        }
                        if p >= until {
                            p = until;
                            break;
                        }
                    }
                }
                let (b, end) = levels.at(p);
                let g = if at_base { (p >> (32 - GRANULE_BITS)).to_string() } else { String::new() };
                buckets.push((b, g));
                p = end;
            }
            if buckets.is_empty() {
                from = p;
                after = None;
                continue;
            }
            let mut invocation = FETCH.prepare_invoke();
            invocation.key(keys.app()).arg(keys.prefix()).arg(format!("{}:{}", levels.level, levels.split));
            for (b, g) in &buckets {
                invocation.arg(*b).arg(g.as_str());
            }
            let mut raw: Vec<Vec<u8>> = invocation.invoke_async(&mut conn).await?;
            let now = String::from_utf8(raw.remove(0)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let now = now.split_once(':').and_then(|(l, s)| Some(Levels { level: l.parse().ok()?, split: s.parse().ok()? }));
            let Some(now) = now else { return Err(StoreError::Corrupt("the endpoint table's levels".into())) };
            if now != levels {
                levels = now;
                continue;
            }
            let mut found: Vec<(u64, String, Vec<u8>)> = Vec::with_capacity(raw.len() / 2);
            let mut it = raw.into_iter();
            while let (Some(id), Some(value)) = (it.next(), it.next()) {
                let id = String::from_utf8(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let pos = position(&id);
                let past = pos > from || (pos == from && after.as_ref().is_none_or(|a| id > *a));
                if past && pos < p.min(until) {
                    found.push((pos, id, value));
                }
            }
            found.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            let room = limit - page.len();
            let more = found.len() > room;
            page.extend(found.into_iter().take(room).map(|(_, id, v)| (id, v)));
            if more || (page.len() == limit && p < until) {
                let last = page.last().map(|(id, _)| id.clone());
                return Ok((page, last));
            }
            from = p;
            after = None;
        }
        Ok((page, None))
    }

    /// Moves every app's endpoints kept in an earlier release's layout into the buckets
    /// (idempotent, safe to run on several daemons at once; an app already moved costs one
    /// EXISTS). Daemons of the earlier release must be stopped first: they would write the
    /// old layout beside.
    pub async fn migrate_endpoints(&self) -> Result<u64, StoreError> {
        let apps: Vec<String> = redis::cmd("ZRANGE").arg("herald:apps").arg(0).arg(-1).query_async(&mut self.conn()).await?;
        let mut moved = 0;
        for app in apps {
            let keys = Keys::new(&app);
            let old_index = keys.endpoint_ids();
            loop {
                let mut conn = self.conn();
                let ids: Vec<String> = redis::cmd("ZRANGE").arg(&old_index).arg(0).arg(499).query_async(&mut conn).await?;
                if ids.is_empty() {
                    break;
                }
                moved += self.migrate_chunk(&mut conn, &keys, &ids).await?;
            }
        }
        if moved > 0 {
            tracing::info!(endpoints = moved, "Moved endpoints into the bucketed layout.");
        }
        Ok(moved)
    }

    async fn migrate_chunk(&self, conn: &mut Conn, keys: &Keys, ids: &[String]) -> Result<u64, StoreError> {
        let ep_keys: Vec<String> = ids.iter().map(|id| keys.endpoint(id)).collect();
        let records: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&ep_keys).query_async(conn).await?;
        let mut entries: Vec<(Table, String, Vec<u8>)> = Vec::new();
        let (mut addr_names, mut user_names) = (Vec::new(), Vec::new());
        for (id, raw) in ids.iter().zip(&records) {
            let Some(raw) = raw else { continue };
            let e = codec::decode_endpoint(keys.app_id(), raw)?;
            entries.push((Table::Endpoints, id.clone(), raw.clone()));
            if !e.address.is_empty() {
                addr_names.push(plan::address_key(e.channel_type, &e.address));
            }
            if let Some(u) = e.user.as_ref().filter(|u| !u.user_id.is_empty()) {
                user_names.push(u.user_id.clone());
            }
        }
        // Packed with the app's dictionary as they move (made from this chunk when it has none).
        let records: Vec<Vec<u8>> = entries.iter().map(|(_, _, v)| v.clone()).collect();
        if let Some(dict) = self.dict_for_write(keys, &records).await? {
            for ((_, _, v), r) in entries.iter_mut().zip(records) {
                *v = dict.pack(r);
            }
        }
        addr_names.sort();
        addr_names.dedup();
        user_names.sort();
        user_names.dedup();
        let mut old_keys = ep_keys.clone();
        for (table, names) in [(Table::Addresses, &addr_names), (Table::Users, &user_names)] {
            if names.is_empty() {
                continue;
            }
            let names_keys: Vec<String> =
                names.iter().map(|n| if table == Table::Addresses { keys.address(n) } else { keys.user(n) }).collect();
            let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&names_keys).query_async(conn).await?;
            for ((name, key), value) in names.iter().zip(names_keys).zip(values) {
                if let Some(v) = value {
                    entries.push((table, name.clone(), v));
                    old_keys.push(key);
                }
            }
        }
        // The granules first: a bit set for a record not moved yet costs a scan one empty read.
        let mut granules = redis::pipe();
        for (_, name, _) in entries.iter().filter(|(t, ..)| *t == Table::Endpoints) {
            granules.cmd("SETBIT").arg(keys.key("epgr", "")).arg(granule(name)).arg(1).ignore();
        }
        let () = granules.query_async(conn).await?;
        let mut invocation = MIGRATE.prepare_invoke();
        invocation.key(keys.endpoint_ids()).arg(keys.prefix()).arg(entries.len());
        for (t, name, value) in &entries {
            invocation.arg(t.letter()).arg(name.as_str()).arg(hash_arg(name)).arg(value.as_slice());
        }
        invocation.arg(&old_keys).arg("").arg(ids);
        let (added, due): (u64, i64) = invocation.invoke_async(conn).await?;
        if due == 1 {
            self.split_due(conn, keys).await?;
        }
        Ok(added)
    }
}

#[cfg(test)]
mod tests;
