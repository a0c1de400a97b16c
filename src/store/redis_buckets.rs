//! Bucketed hashes: one logical hash of unbounded size kept as many small Redis hashes, so
//! that each stays within Redis's compact listpack encoding (by default at most 128 fields,
//! values of at most 64 bytes). An entry costs its bytes and a few more instead of the
//! 50-odd bytes of a field in a large hash (README, "Memory per endpoint and per message").
//!
//! The buckets grow by linear hashing: a hash `{base}` holds the state (`m` buckets at the
//! start of this round, `s` the next bucket to split, `n` entries), bucket `b` is the hash
//! `{base}:{b}`, and an entry goes to `h mod m`, or `h mod 2m` when that bucket has been split
//! this round, `h` being its key's FNV-1a hash, which the daemon computes and writes as the
//! first 4 bytes of the field (so a split reads it instead of hashing in Lua). When entries
//! exceed [`LOAD`] per bucket, bucket `s` is split: the entries whose hash says so move to
//! bucket `s + m`. The buckets expire together, at `e` (in the state), pushed back to
//! `ttl + ttl/8` from now whenever an entry written now would outlive it. Everything happens inside one script call, so a writer killed or a Redis
//! restarted in the middle leaves the state and the buckets of before the call or of after
//! it, never a mix. All keys share the base's hash tag, so they sit in one slot of a cluster.

/// Average entries per bucket above which a bucket is split. Buckets not yet split in a round
/// hold up to twice the average; 48 keeps them under Redis's 128-field listpack limit with
/// room for chance.
pub const LOAD: u32 = 48;

/// The Lua functions both scripts use: the state, a field's bucket.
macro_rules! prelude {
    () => {
        r#"
local function state(base)
  local v = redis.call('HMGET', base, 'm', 's', 'n', 'e', 'z')
  local bare = {}
  for b in string.gmatch(v[5] or '', '%d+') do bare[b] = true end
  return tonumber(v[1]) or 1, tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0, bare
end
local function hash(f)
  local a, b, c, d = string.byte(f, 1, 4)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
local function bucket(f, m, s)
  local h = hash(f)
  local b = h % m
  if b < s then b = h % (2 * m) end
  return string.format('%d', b)
end
"#
    };
}

/// Sets fields of the bucketed hash KEYS[1], or appends to them: ARGV[1] the seconds an
/// entry is kept at least, ARGV[2] 0 to set, or the most bytes an appended value
/// keeps (its last ones), ARGV[3] the split load, ARGV[4..] field, value pairs (each field
/// its key's hash and the key, [`field`]). Returns the entries held.
pub const PUT: &str = concat!(
    prelude!(),
    r#"
local base, ttl, keep, load = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local m, s, n, e, bare = state(base)
-- Buckets that a split left without a key (`bare`) get their expiry when a write creates them.
local born = {}
for i = 4, #ARGV, 2 do
  local f, v = ARGV[i], ARGV[i + 1]
  local b = bucket(f, m, s)
  local key = base .. ':' .. b
  if bare[b] then
    bare[b] = nil
    born[#born + 1] = key
  end
  if keep > 0 then
    local old = redis.call('HGET', key, f)
    if old then
      v = old .. v
      if #v > keep then v = string.sub(v, #v - keep + 1) end
    end
  end
  n = n + redis.call('HSET', key, f, v)
end
-- Buckets expire `life` seconds after the last refresh of them all, which comes once
-- entries written now would outlive it: an entry lives at least `ttl` seconds, and a write
-- pays one EXPIRE per bucket only every ttl/8 seconds.
local life = ttl + math.ceil(ttl / 8)
local created = {}
while n > load * (m + s) do
  local from = base .. ':' .. string.format('%d', s)
  local to = base .. ':' .. string.format('%d', s + m)
  local all = redis.call('HGETALL', from)
  local stay, move, gone = {}, {}, {}
  for j = 1, #all, 2 do
    if hash(all[j]) % (2 * m) ~= s then
      move[#move + 1] = all[j]
      move[#move + 1] = all[j + 1]
      gone[#gone + 1] = all[j]
    else
      stay[#stay + 1] = all[j]
      stay[#stay + 1] = all[j + 1]
    end
  end
  if #move > 0 then
    redis.call('HSET', to, unpack(move))
    created[#created + 1] = to
  else
    bare[string.format('%d', s + m)] = true
  end
  if #stay == 0 then bare[string.format('%d', s)] = true end
  if #all > 256 then
    -- Grown past the compact encoding: written afresh, it is compact again.
    redis.call('DEL', from)
    if #stay > 0 then
      redis.call('HSET', from, unpack(stay))
      created[#created + 1] = from
    end
  elseif #gone > 0 then
    redis.call('HDEL', from, unpack(gone))
  end
  s = s + 1
  if s == m then
    m = 2 * m
    s = 0
  end
end
local now = tonumber(redis.call('TIME')[1])
if now + ttl > e then
  e = now + life
  for b = 0, m + s - 1 do
    redis.call('EXPIRE', base .. ':' .. string.format('%d', b), life)
  end
else
  for _, key in ipairs(created) do
    redis.call('EXPIRE', key, e - now)
  end
  for _, key in ipairs(born) do
    redis.call('EXPIRE', key, e - now)
  end
end
local z = {}
for b in pairs(bare) do z[#z + 1] = b end
redis.call('HSET', base, 'm', m, 's', s, 'n', n, 'e', e, 'z', table.concat(z, ' '))
redis.call('EXPIRE', base, e - now)
return n
"#
);

/// Reads fields ARGV ([`field`]s) of the bucketed hash KEYS[1], in order (nil for a missing
/// one); a field missing from it is looked for, by its key alone, in the plain hash KEYS[2]
/// when given (an earlier release's form of the same index).
pub const GET: &str = concat!(
    prelude!(),
    r#"
local base, plain = KEYS[1], KEYS[2]
local m, s = state(base)
local out = {}
for i = 1, #ARGV do
  local v = redis.call('HGET', base .. ':' .. bucket(ARGV[i], m, s), ARGV[i])
  if not v and plain then v = redis.call('HGET', plain, string.sub(ARGV[i], 5)) end
  out[i] = v
end
return out
"#
);

/// FNV-1a, 32 bits: stable across releases and machines, as the buckets need.
fn fnv1a(key: &[u8]) -> u32 {
    key.iter().fold(2_166_136_261u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(16_777_619))
}

/// The field an entry is stored under: its key's hash (4 bytes, big-endian), then the key.
pub(super) fn field(key: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + key.len());
    f.extend(fnv1a(key).to_be_bytes());
    f.extend_from_slice(key);
    f
}

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
    for (key, value) in entries {
        cmd.arg(field(key)).arg(value);
    }
    cmd
}

/// A call of [`GET`] on the bucketed hash `base` (and the plain hash `plain`, when given).
pub(super) fn get<'a>(base: &str, plain: Option<&str>, keys: impl IntoIterator<Item = &'a [u8]>) -> deadpool_redis::redis::Cmd {
    let mut cmd = deadpool_redis::redis::cmd("EVAL");
    cmd.arg(GET);
    match plain {
        Some(p) => cmd.arg(2).arg(base).arg(p),
        None => cmd.arg(1).arg(base),
    };
    for key in keys {
        cmd.arg(field(key));
    }
    cmd
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_lead_with_their_keys_fnv1a_hash() {
        // FNV-1a's published test values.
        assert_eq!(super::fnv1a(b""), 0x811c_9dc5);
        assert_eq!(super::fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(super::fnv1a(b"foobar"), 0xbf9c_f968);
        assert_eq!(super::field(b"a"), [0xe4, 0x0c, 0x29, 0x2c, b'a']);
    }
}
