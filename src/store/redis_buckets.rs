//! Bucketed hashes: one logical hash of unbounded size kept as many small Redis hashes, so
//! that each stays within Redis's compact listpack encoding (by default at most 128 fields,
//! values of at most 64 bytes). An entry costs its bytes and a few more instead of the
//! 50-odd bytes of a field in a large hash (README, "Memory per endpoint and per message").
//!
//! The buckets grow by linear hashing: a hash `{base}` holds the state (`m` buckets at the
//! start of this round, `s` the next bucket to split, `n` entries), bucket `b` is the hash
//! `{base}:{b}`, and a field goes to `fnv1a(field) mod m`, or `mod 2m` when that bucket has
//! been split this round. When entries exceed [`LOAD`] per bucket, bucket `s` is split: its
//! entries are rewritten into itself and bucket `s + m` (a rewritten hash starts compact
//! again). Everything happens inside one script call, so a writer killed or a Redis restarted
//! in the middle leaves the state and the buckets of before the call or of after it, never
//! a mix; readers compute the bucket in a script too. All keys share the base's hash tag, so
//! they sit in one slot of a cluster.

/// Average entries per bucket above which a bucket is split. Buckets not yet split in a round
/// hold up to twice the average; 48 keeps them under Redis's 128-field listpack limit with
/// room for chance.
const LOAD: u32 = 48;

/// The Lua functions both scripts use: the field's hash, the state, a field's bucket.
macro_rules! prelude {
    () => {
        r#"
local function hash(f)
  local h = 2166136261
  for i = 1, #f do
    h = bit.bxor(h, string.byte(f, i)) % 4294967296
    h = (h * 403 + (h % 256) * 16777216) % 4294967296
  end
  return h
end
local function state(base)
  local v = redis.call('HMGET', base, 'm', 's', 'n')
  return tonumber(v[1]) or 1, tonumber(v[2]) or 0, tonumber(v[3]) or 0
end
local function bucket(h, m, s)
  local b = h % m
  if b < s then b = h % (2 * m) end
  return string.format('%d', b)
end
"#
    };
}

/// Sets fields of the bucketed hash KEYS[1], or appends to them: ARGV[1] the seconds the
/// whole expires in (from this write), ARGV[2] 0 to set, or the most bytes an appended value
/// keeps (its last ones), ARGV[3] the split load, ARGV[4..] field, value pairs. Returns the
/// entries held.
pub(super) const PUT: &str = concat!(
    prelude!(),
    r#"
local base, ttl, keep, load = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local m, s, n = state(base)
local touched = {}
for i = 4, #ARGV, 2 do
  local f, v = ARGV[i], ARGV[i + 1]
  local key = base .. ':' .. bucket(hash(f), m, s)
  if keep > 0 then
    local old = redis.call('HGET', key, f)
    if old then
      v = old .. v
      if #v > keep then v = string.sub(v, #v - keep + 1) end
    end
  end
  n = n + redis.call('HSET', key, f, v)
  touched[key] = true
end
while n > load * (m + s) do
  local from = base .. ':' .. string.format('%d', s)
  local to = base .. ':' .. string.format('%d', s + m)
  local all = redis.call('HGETALL', from)
  redis.call('DEL', from)
  for j = 1, #all, 2 do
    local dest = from
    if hash(all[j]) % (2 * m) ~= s then dest = to end
    redis.call('HSET', dest, all[j], all[j + 1])
  end
  touched[from] = true
  touched[to] = true
  s = s + 1
  if s == m then
    m = 2 * m
    s = 0
  end
end
redis.call('HSET', base, 'm', m, 's', s, 'n', n)
redis.call('EXPIRE', base, ttl)
for key in pairs(touched) do
  redis.call('EXPIRE', key, ttl)
end
return n
"#
);

/// Reads fields ARGV of the bucketed hash KEYS[1], in order (nil for a missing one); a field
/// missing from it is looked for in the plain hash KEYS[2] when given (an earlier release's
/// form of the same index).
pub(super) const GET: &str = concat!(
    prelude!(),
    r#"
local base, plain = KEYS[1], KEYS[2]
local m, s = state(base)
local out = {}
for i = 1, #ARGV do
  local v = redis.call('HGET', base .. ':' .. bucket(hash(ARGV[i]), m, s), ARGV[i])
  if not v and plain then v = redis.call('HGET', plain, ARGV[i]) end
  out[i] = v
end
return out
"#
);

/// A call of [`PUT`] on the bucketed hash `base`: append values keeping their last `keep`
/// bytes, or set them (`keep` 0).
pub(super) fn put<'a>(
    base: &str,
    ttl_secs: i64,
    keep: usize,
    entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> deadpool_redis::redis::Cmd {
    let mut cmd = deadpool_redis::redis::cmd("EVAL");
    cmd.arg(PUT).arg(1).arg(base).arg(ttl_secs.max(1)).arg(keep).arg(LOAD);
    for (field, value) in entries {
        cmd.arg(field).arg(value);
    }
    cmd
}

/// A call of [`GET`] on the bucketed hash `base` (and the plain hash `plain`, when given).
pub(super) fn get<'a>(base: &str, plain: Option<&str>, fields: impl IntoIterator<Item = &'a [u8]>) -> deadpool_redis::redis::Cmd {
    let mut cmd = deadpool_redis::redis::cmd("EVAL");
    cmd.arg(GET);
    match plain {
        Some(p) => cmd.arg(2).arg(base).arg(p),
        None => cmd.arg(1).arg(base),
    };
    for f in fields {
        cmd.arg(f);
    }
    cmd
}

#[cfg(test)]
mod tests {
    /// The scripts' hash, in Rust: FNV-1a over the field's bytes.
    fn fnv1a(f: &[u8]) -> u32 {
        f.iter().fold(2_166_136_261u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(16_777_619))
    }

    #[test]
    fn the_scripts_hash_is_fnv1a_computed_exactly_in_lua_numbers() {
        // The script multiplies by FNV's prime as 403 + 2^24 to stay within a double's 53 bits.
        for f in ["", "ep-000001745", "user-682569", "\u{ff}\u{0}é"] {
            let mut h: u64 = 2_166_136_261;
            for &b in f.as_bytes() {
                h = (h ^ u64::from(b)) % 4_294_967_296;
                h = (h * 403 + (h % 256) * 16_777_216) % 4_294_967_296;
            }
            assert_eq!(h, u64::from(fnv1a(f.as_bytes())), "{f:?}");
        }
    }
}
