//! Message outcomes, their indexes (by request, by endpoint per day), per-day counters and
//! the app's event stream in Redis.
//!
//! The event stream holds one entry per recorded batch, its events as one compressed block
//! (field `z`; a lone event, or an earlier release's batch, as repeated `e` fields): a batch of
//! 64 events costs Redis one stream entry instead of 64, and like events share their bytes. Events are numbered by a
//! per-app sequence; an entry's id is the number of its first event, an event's id its own
//! number (20 digits, as the embedded store's), and the stream keeps about the last
//! [`super::MAX_EVENTS`] events.

use deadpool_redis::redis::{self, AsyncCommands};

use super::redis::{Keys, RedisStore};
use super::StoreError;
use crate::proto::v1::{Event, MessageOutcome};

/// Whether a run's outcome is found through the endpoint index (a campaign run's message,
/// whose id is one of Herald's) rather than a per-run hash: its run is asked for it only when
/// it resumes, and then says when it started ([`RedisStore::redis_run_outcomes`]). A
/// journey asks at every step, so its outcomes keep the per-run hash.
fn found_by_endpoint(o: &MessageOutcome) -> bool {
    o.source == crate::proto::v1::MessageSource::Campaign as i32 && super::codec::pack_id(&o.message_id).is_some()
}

/// A stream entry as XRANGE returns it: its id and its field-value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// Appends events to the stream KEYS[1] as one entry, numbering them from the sequence
/// KEYS[2], and trims events older than the last ARGV[1]. ARGV[2] is how many events the
/// entry holds, ARGV[3] the field name its values go under (`e`: one event each; `z`: one
/// compressed block of them all), ARGV[4..] the values. Returns the last number.
static APPEND_EVENTS: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local n = tonumber(ARGV[2])
local last = redis.call('INCRBY', KEYS[2], n)
local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[3]
  fields[#fields + 1] = ARGV[i]
end
local floor = math.max(1, last - tonumber(ARGV[1]) + 1)
redis.call('XADD', KEYS[1], 'MINID', '~', string.format('%d-0', floor), string.format('%d-0', last - n + 1), unpack(fields))
return last
"#,
    )
});

/// Appends message ids to endpoints' entries in a day's endpoint index (hashes: KEYS, the
/// buckets a batch touches), leaving out ids an entry holds already (an outcome recorded again
/// when it changes) and keeping each entry's last ARGV[1] bytes; each bucket expires in ARGV[2]
/// seconds. ARGV[3..]: for each endpoint, its bucket's position in KEYS, its id, then its new
/// ids (16 bytes each).
const APPEND_BY_ENDPOINT: &str = r#"
local keep = tonumber(ARGV[1])
for i = 3, #ARGV, 3 do
  local key = KEYS[tonumber(ARGV[i])]
  local ids = ARGV[i + 2]
  local v = redis.call('HGET', key, ARGV[i + 1])
  if v then
    local add = {}
    for j = 1, #ids, 16 do
      local id = string.sub(ids, j, j + 15)
      local at, held = 1, false
      while true do
        local p = string.find(v, id, at, true)
        if not p then break end
        if (p - 1) % 16 == 0 then
          held = true
          break
        end
        at = p + 1
      end
      if not held then add[#add + 1] = id end
    end
    v = v .. table.concat(add)
    if #v > keep then v = string.sub(v, #v - keep + 1) end
  else
    v = ids
  end
  redis.call('HSET', key, ARGV[i + 1], v)
end
for _, key in ipairs(KEYS) do
  redis.call('EXPIRE', key, ARGV[2])
end
return 0
"#;

/// Endpoints per bucket of a day's endpoint index, about: Redis keeps a hash of at most 128
/// fields of at most 64 bytes as a listpack, a third of a hash table's bytes per field.
const ENDPOINTS_PER_BUCKET: u64 = 64;

/// Most buckets of a day's endpoint index.
const MOST_BUCKETS: u64 = 1 << 22;

/// The bucket count for a day's endpoint index of an app with `endpoints` endpoints.
fn bucket_count(endpoints: u64) -> u32 {
    endpoints.div_ceil(ENDPOINTS_PER_BUCKET).clamp(1, MOST_BUCKETS).next_power_of_two() as u32
}

/// The key of `endpoint`'s entry in day `day`'s endpoint index of `buckets` buckets (one: the
/// day's single hash, as an earlier release wrote it).
fn day_index_key(keys: &Keys, day: i64, buckets: u32, endpoint: &str) -> String {
    if buckets <= 1 {
        return keys.key("epmsg:", &day.to_string());
    }
    // FNV-1a: stable across releases and machines, as the key must be.
    let hash = endpoint.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    keys.key("epmsg:", &format!("{day}:{}", hash & u64::from(buckets - 1)))
}

/// A message's field in its hour's outcome hash: a Herald message id's last 12 bytes (its
/// random part: the hour key holds the time), any other id as its text.
fn outcome_field(message_id: &str) -> Vec<u8> {
    super::codec::pack_id(message_id).map_or_else(|| message_id.as_bytes().to_vec(), |raw| raw[4..].to_vec())
}

/// The fields a message's outcome may be under: this release's, an earlier release's (the
/// id's 16 bytes) and the earliest's (its text).
fn outcome_fields(message_id: &str) -> [Vec<u8>; 3] {
    let packed = super::codec::pack_id(message_id).map_or_else(|| message_id.as_bytes().to_vec(), Vec::from);
    [outcome_field(message_id), packed, message_id.as_bytes().to_vec()]
}

/// A message id in a request's list (and in the endpoint index's sorted sets): one of
/// Herald's as its 16 bytes; any other after a `0xff` byte (never in text), so that one of 16
/// characters is not taken for packed bytes.
fn listed_id(message_id: &str) -> Vec<u8> {
    match super::codec::pack_id(message_id) {
        Some(raw) => raw.to_vec(),
        None => [&[0xff], message_id.as_bytes()].concat(),
    }
}

/// A message id from a request's list ([`listed_id`]; an earlier release's list holds text).
fn read_listed_id(stored: &[u8]) -> String {
    match stored {
        [0xff, text @ ..] => String::from_utf8_lossy(text).into_owned(),
        raw if raw.len() == 16 => super::codec::unpack_id(raw),
        text => String::from_utf8_lossy(text).into_owned(),
    }
}

/// An outcome read by each of its [`outcome_fields`].
type Packed = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

/// A day of an endpoint's messages as its index gives them: the hash's entry (its ids, 16
/// bytes each) and the sorted set's members.
type DayOfEndpoint = (Option<Vec<u8>>, Vec<Vec<u8>>);

/// A hash field and its value.
type Field = (Vec<u8>, Vec<u8>);

/// Events per stream entry at most (Lua's unpack has a bounded stack).
const EVENTS_PER_ENTRY: usize = 1_000;

/// The number in a stream entry id `N-0`.
fn entry_number(id: &str) -> Option<u64> {
    id.split_once('-').map_or(Some(id), |(n, _)| Some(n)).and_then(|n| n.parse().ok())
}

impl RedisStore {
    pub(super) async fn redis_record_outcomes(
        &self,
        app_id: &str,
        outcomes: &[MessageOutcome],
        events: &[Event],
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        if outcomes.is_empty() && events.is_empty() {
            return Ok(());
        }
        let keys = Keys::new(app_id);
        let mut pipe = redis::pipe();
        // One HSET per hour bucket (message ids carry their hour), expiring with the last
        // outcome's TTL plus the bucket's hour.
        let mut buckets: std::collections::BTreeMap<i64, Vec<Field>> = std::collections::BTreeMap::new();
        for o in outcomes {
            let hour = crate::domain::message_id_time(&o.message_id).unwrap_or(0) / 3600;
            buckets.entry(hour).or_default().push((outcome_field(&o.message_id), super::codec::encode_outcome(app_id, o)));
        }
        for (hour, fields) in buckets {
            let key = keys.key("out:", &hour.to_string());
            pipe.hset_multiple(&key, &fields).ignore();
            pipe.expire(&key, (ttl_secs.max(1) + 3_600) as i64).ignore();
        }
        for ((day, channel, status), n) in super::tally(outcomes) {
            let counts = keys.key("counts:", day);
            pipe.hincr(&counts, format!("{channel}:{status}"), n).ignore();
            pipe.expire(&counts, (ttl_secs + 86_400) as i64).ignore();
        }
        let mut by_request: std::collections::BTreeMap<&str, Vec<Vec<u8>>> = std::collections::BTreeMap::new();
        // The endpoint index, one hash per day: endpoint id → its messages' ids of that day, 16
        // bytes each, oldest first (appended by a script). A message id that is not one of
        // Herald's goes in that day's sorted set of `{endpoint}\0{message id}` members instead
        // (an earlier release's form for every message).
        let mut by_day: std::collections::BTreeMap<i64, std::collections::BTreeMap<&str, Vec<u8>>> = std::collections::BTreeMap::new();
        let mut other_by_day: std::collections::BTreeMap<i64, Vec<(i64, Vec<u8>)>> = std::collections::BTreeMap::new();
        for o in outcomes {
            if !o.request_id.is_empty() {
                by_request.entry(o.request_id.as_str()).or_default().push(listed_id(&o.message_id));
            }
            if !o.endpoint_id.is_empty() {
                let day = crate::domain::message_id_time(&o.message_id).unwrap_or(0) / 86_400;
                match super::codec::pack_id(&o.message_id) {
                    Some(raw) => {
                        let ids = by_day.entry(day).or_default().entry(o.endpoint_id.as_str()).or_default();
                        // A message recorded twice in a batch (its outcome updated) is listed once.
                        if !ids.chunks_exact(16).any(|id| id == raw) {
                            ids.extend_from_slice(&raw);
                        }
                    }
                    None => {
                        let member = [o.endpoint_id.as_bytes(), &[0], &listed_id(&o.message_id)].concat();
                        other_by_day.entry(day).or_default().push((0, member));
                    }
                }
            }
        }
        let days_key = keys.key("byep-days", "");
        let ttl_days = (ttl_secs.max(1)).div_ceil(86_400) as i64;
        let index_ttl = (ttl_secs.max(1) + 86_400) as i64;
        let day_list: Vec<i64> = by_day.keys().copied().collect();
        let bucket_counts = self.day_buckets(app_id, &day_list, Some(index_ttl)).await?;
        for ((day, by_endpoint), buckets) in by_day.iter().zip(bucket_counts) {
            // Each bucket the batch touches once in KEYS, by its position.
            let mut positions: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
            let mut bucket_keys: Vec<String> = Vec::new();
            let mut args: Vec<(usize, &str, &[u8])> = Vec::with_capacity(by_endpoint.len());
            for (endpoint, ids) in by_endpoint {
                let key = day_index_key(&keys, *day, buckets, endpoint);
                let at = *positions.entry(key).or_insert_with_key(|key| {
                    bucket_keys.push(key.clone());
                    bucket_keys.len()
                });
                args.push((at, endpoint, ids.as_slice()));
            }
            let mut append = redis::cmd("EVAL");
            append.arg(APPEND_BY_ENDPOINT).arg(bucket_keys.len()).arg(&bucket_keys);
            append.arg(16 * super::MAX_PER_ENDPOINT).arg(index_ttl);
            for (at, endpoint, ids) in args {
                append.arg(at).arg(endpoint).arg(ids);
            }
            pipe.add_command(append).ignore();
        }
        for (day, members) in &other_by_day {
            let key = keys.key("byep:", &day.to_string());
            pipe.zadd_multiple(&key, members).ignore();
            pipe.expire(&key, index_ttl).ignore();
        }
        for day in by_day.keys().chain(other_by_day.keys()).collect::<std::collections::BTreeSet<_>>() {
            pipe.zadd(&days_key, day.to_string(), *day).ignore();
        }
        if let Some(last) = by_day.keys().chain(other_by_day.keys()).max() {
            pipe.zrembyscore(&days_key, "-inf", format!("({}", last - ttl_days - 1)).ignore();
        }
        for (request, ids) in by_request {
            let list = keys.key("byreq:", request);
            pipe.rpush(&list, ids).ignore();
            pipe.expire(&list, ttl_secs.max(1) as i64).ignore();
        }
        // The per-run index of journey activities' entries: endpoint → status. A campaign
        // run's outcomes are found through the endpoint index instead (`redis_run_outcomes`).
        let mut by_run: std::collections::BTreeMap<&str, Vec<(&str, i32)>> = std::collections::BTreeMap::new();
        for o in outcomes {
            if super::indexed_by_run(o) && !found_by_endpoint(o) {
                by_run.entry(o.request_id.as_str()).or_default().push((o.endpoint_id.as_str(), o.delivery_status));
            }
        }
        for (run, fields) in by_run {
            let key = keys.key("runout:", run);
            pipe.hset_multiple(&key, &fields).ignore();
            pipe.expire(&key, ttl_secs.max(1) as i64).ignore();
        }
        // KPI counters and unique endpoints, in the same pipeline.
        let kpi = crate::kpi::tally(outcomes, events);
        let kpi_ttl = (crate::kpi::RETENTION_DAYS * 86_400) as i64;
        let mut days = std::collections::BTreeSet::new();
        for ((day, field), n) in &kpi.counts {
            pipe.hincr(keys.key("kpi:", day), field, *n).ignore();
            days.insert(day.as_str());
        }
        for day in days {
            pipe.expire(keys.key("kpi:", day), kpi_ttl).ignore();
        }
        for ((day, scope), members) in &kpi.uniques {
            let key = keys.key("kpiu:", &format!("{day}|{scope}"));
            pipe.cmd("PFADD").arg(&key).arg(members).ignore();
            pipe.expire(&key, kpi_ttl).ignore();
        }
        // Marks of journey messages' events, for the journeys' conditions.
        let marks = super::journey_marks(outcomes, events);
        for m in &marks {
            pipe.cmd("SET").arg(keys.key("eng:", m)).arg(1).arg("EX").arg(super::mark_ttl(ttl_secs)).ignore();
        }
        let pipelined = !outcomes.is_empty() || !kpi.is_empty() || !marks.is_empty();
        let mut conn = self.pooled().await?;
        let (stream, sequence) = (keys.key("event-stream", ""), keys.key("event-seq", ""));
        let mut appends = Vec::new();
        for chunk in events.chunks(EVENTS_PER_ENTRY) {
            let mut invocation = APPEND_EVENTS.key(&stream);
            invocation.key(&sequence).arg(super::MAX_EVENTS).arg(chunk.len());
            match super::codec::encode_event_block(app_id, chunk) {
                Some(block) => invocation.arg("z").arg(block),
                None => invocation.arg("e").arg(chunk.iter().map(|e| super::codec::encode_event(app_id, e)).collect::<Vec<_>>()),
            };
            appends.push(invocation);
        }
        // The events' script goes beside the pipeline on the same connection.
        let mut events_conn = conn.twin();
        let append = async move {
            for invocation in &appends {
                let _: u64 = invocation.invoke_async(&mut events_conn).await?;
            }
            Ok::<_, redis::RedisError>(())
        };
        // The pipeline holds what outcomes and KPI counters write; other events need none.
        let write = async {
            match pipelined {
                false => Ok(()),
                true => pipe.query_async::<()>(&mut conn).await,
            }
        };
        let (written, appended) = tokio::join!(write, append);
        written?;
        appended?;
        Ok(())
    }

    /// How many buckets each of `days`'s endpoint index of `app_id` has (one for a day without
    /// a count: an earlier release's, or none written). A writer (`create`: the index's TTL)
    /// fixes a day's count at its first message, from the app's endpoint count then; every
    /// daemon reads the same count afterwards.
    async fn day_buckets(&self, app_id: &str, days: &[i64], create: Option<i64>) -> Result<Vec<u32>, StoreError> {
        let mut counts: Vec<Option<u32>> = {
            let cached = self.day_buckets.lock().expect("bucket counts");
            days.iter().map(|d| cached.get(&(app_id.to_string(), *d)).copied()).collect()
        };
        let unknown: Vec<usize> = (0..days.len()).filter(|&i| counts[i].is_none()).collect();
        if unknown.is_empty() {
            return Ok(counts.into_iter().map(|c| c.unwrap_or(1)).collect());
        }
        let keys = Keys::new(app_id);
        let mut conn = self.conn();
        let count_key = |day: i64| keys.key("epmsg-n:", &day.to_string());
        let mut pipe = redis::pipe();
        if let Some(ttl) = create {
            let endpoints = self.endpoint_levels(&keys).await?.0;
            for &i in &unknown {
                // Outlives the buckets it counts.
                pipe.cmd("SET").arg(count_key(days[i])).arg(bucket_count(endpoints)).arg("NX").arg("EX").arg(ttl + 86_400).ignore();
            }
        }
        for &i in &unknown {
            pipe.cmd("GET").arg(count_key(days[i]));
        }
        let read: Vec<Option<u32>> = pipe.query_async(&mut conn).await?;
        let mut cached = self.day_buckets.lock().expect("bucket counts");
        if cached.len() > 10_000 {
            cached.clear();
        }
        for (&i, n) in unknown.iter().zip(read) {
            counts[i] = n;
            if let Some(n) = n {
                cached.insert((app_id.to_string(), days[i]), n);
            }
        }
        Ok(counts.into_iter().map(|c| c.unwrap_or(1)).collect())
    }

    pub(super) async fn redis_run_outcomes(
        &self,
        app_id: &str,
        run: &str,
        ids: &[String],
        sent_since: Option<i64>,
    ) -> Result<Vec<Option<i32>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = Keys::new(app_id);
        let mut conn = self.conn();
        // The per-run hash: a journey's, or a campaign run's of an earlier release.
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(keys.key("runout:", run)).arg(ids);
        let Some(since) = sent_since else {
            let (statuses,): (Vec<Option<i32>>,) = pipe.query_async(&mut conn).await?;
            return Ok(statuses);
        };
        pipe.cmd("ZRANGE").arg(keys.key("byep-days", "")).arg(since.div_euclid(86_400)).arg("+inf").arg("BYSCORE");
        let (mut statuses, days): (Vec<Option<i32>>, Vec<String>) = pipe.query_async(&mut conn).await?;
        // The endpoints not found there: their messages since the run started, by the days'
        // endpoint index.
        let open: Vec<usize> = (0..ids.len()).filter(|&i| statuses[i].is_none()).collect();
        if open.is_empty() || days.is_empty() {
            return Ok(statuses);
        }
        let days: Vec<i64> = days.iter().filter_map(|d| d.parse().ok()).collect();
        let bucket_counts = self.day_buckets(app_id, &days, None).await?;
        let mut pipe = redis::pipe();
        for (day, buckets) in days.iter().zip(&bucket_counts) {
            for &i in &open {
                pipe.hget(day_index_key(&keys, *day, *buckets, &ids[i]), ids[i].as_str());
            }
        }
        let entries: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
        // (position in `ids`, message id) of each candidate, then their outcomes by hour.
        let mut candidates: Vec<(usize, String)> = Vec::new();
        for day in entries.chunks(open.len()) {
            for (&i, packed) in open.iter().zip(day) {
                for raw in packed.as_deref().unwrap_or_default().chunks_exact(16) {
                    let id = super::codec::unpack_id(raw);
                    if crate::domain::message_id_time(&id).is_some_and(|t| t >= since) {
                        candidates.push((i, id));
                    }
                }
            }
        }
        for chunk in candidates.chunks(1_000) {
            let mut pipe = redis::pipe();
            for (_, id) in chunk {
                let hour = crate::domain::message_id_time(id).unwrap_or(0) / 3600;
                pipe.cmd("HGET").arg(keys.key("out:", &hour.to_string())).arg(outcome_field(id));
            }
            let found: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
            for ((i, id), stored) in chunk.iter().zip(found) {
                let Some(stored) = stored else { continue };
                let o = super::codec::decode_outcome(app_id, id, &stored)?;
                if o.request_id == run && super::indexed_by_run(&o) {
                    statuses[*i] = Some(o.delivery_status);
                }
            }
        }
        Ok(statuses)
    }

    pub(super) async fn redis_list_outcomes(
        &self,
        app_id: &str,
        by: &super::OutcomeIndex,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<MessageOutcome>, StoreError> {
        let keys = Keys::new(app_id);
        let mut conn = self.conn();
        let ids: Vec<String> = match by {
            super::OutcomeIndex::Request(r) => {
                let ids: Vec<Vec<u8>> = conn.lrange(keys.key("byreq:", r), offset as isize, (offset + limit.max(1)) as isize - 1).await?;
                ids.iter().map(|id| read_listed_id(id)).collect()
            }
            super::OutcomeIndex::Endpoint(e) => {
                // An endpoint's last MAX_PER_ENDPOINT messages, newest first, day by day.
                let want = (offset + limit.max(1)).min(super::MAX_PER_ENDPOINT);
                if offset >= want {
                    return Ok(Vec::new());
                }
                let days: Vec<String> = conn.zrevrange(keys.key("byep-days", ""), 0, -1).await?;
                let (from, until) = (format!("[{e}\0"), format!("({e}\u{1}"));
                let days: Vec<i64> = days.iter().filter_map(|d| d.parse().ok()).collect();
                let bucket_counts = self.day_buckets(app_id, &days, None).await?;
                let mut found: Vec<String> = Vec::new();
                for (chunk, counts) in days.chunks(32).zip(bucket_counts.chunks(32)) {
                    let mut pipe = redis::pipe();
                    for (day, buckets) in chunk.iter().zip(counts) {
                        pipe.hget(day_index_key(&keys, *day, *buckets, e), e.as_str());
                        pipe.cmd("ZRANGE")
                            .arg(keys.key("byep:", &day.to_string()))
                            .arg(&until)
                            .arg(&from)
                            .arg("BYLEX")
                            .arg("REV")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(want);
                    }
                    let lists: Vec<DayOfEndpoint> = pipe.query_async(&mut conn).await?;
                    for (packed, members) in lists {
                        // A day's messages newest first: ids sort by their time.
                        let mut day: Vec<String> = packed.unwrap_or_default().chunks_exact(16).map(super::codec::unpack_id).collect();
                        day.extend(members.iter().filter_map(|m| {
                            let at = m.iter().position(|&b| b == 0)?;
                            Some(read_listed_id(&m[at + 1..]))
                        }));
                        day.sort_unstable_by(|a, b| b.cmp(a));
                        // An id in both forms (an earlier release's, recorded again since) once.
                        day.dedup();
                        found.extend(day);
                    }
                    if found.len() >= want {
                        break;
                    }
                }
                found.truncate(want);
                found.drain(..offset);
                found
            }
        };
        let mut pipe = redis::pipe();
        for id in &ids {
            let hour = crate::domain::message_id_time(id).unwrap_or(0) / 3600;
            pipe.cmd("HMGET").arg(keys.key("out:", &hour.to_string())).arg(&outcome_fields(id)[..]);
        }
        let found: Vec<Packed> = if ids.is_empty() { Vec::new() } else { pipe.query_async(&mut conn).await? };
        ids.iter()
            .zip(found)
            .filter_map(|(id, (a, b, c))| Some((id, a.or(b).or(c)?)))
            .map(|(id, b)| super::codec::decode_outcome(app_id, id, &b))
            .collect()
    }

    pub(super) async fn redis_get_outcome(&self, app_id: &str, message_id: &str) -> Result<Option<MessageOutcome>, StoreError> {
        // An id without a time (not one of Herald's) is in hour 0's hash, as it was recorded.
        let secs = crate::domain::message_id_time(message_id).unwrap_or(0);
        let (field, packed, text): Packed = redis::cmd("HMGET")
            .arg(Keys::new(app_id).key("out:", &(secs / 3600).to_string()))
            .arg(&outcome_fields(message_id)[..])
            .query_async(&mut self.conn())
            .await?;
        field.or(packed).or(text).map(|b| super::codec::decode_outcome(app_id, message_id, &b)).transpose()
    }

    pub(super) async fn redis_outcome_counts(&self, app_id: &str, day: &str) -> Result<Vec<(String, i32, u64)>, StoreError> {
        let all: Vec<(String, u64)> = self.conn().hgetall(Keys::new(app_id).key("counts:", day)).await?;
        let mut out: Vec<(String, i32, u64)> = all
            .into_iter()
            .filter_map(|(k, n)| k.rsplit_once(':').and_then(|(c, st)| Some((c.to_string(), st.parse().ok()?, n))))
            .collect();
        out.sort();
        Ok(out)
    }

    pub(super) async fn redis_read_events(&self, app_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<Event>, StoreError> {
        let stream = Keys::new(app_id).key("event-stream", "");
        let limit = limit.max(1);
        let next = match after {
            None => 1,
            Some(a) => a.parse::<u64>().map_err(|_| StoreError::Precondition(format!("event id {a:?} is not one this store gave")))? + 1,
        };
        let mut conn = self.conn();
        // The entry holding event `next`: the last one starting at or before it.
        let holding: Vec<StreamEntry> =
            redis::cmd("XREVRANGE").arg(&stream).arg(format!("{next}-0")).arg("-").arg("COUNT").arg(1).query_async(&mut conn).await?;
        let start = holding.first().map_or_else(|| "-".to_string(), |(id, _)| id.clone());
        let mut out = Vec::with_capacity(limit);
        let mut from = start;
        // Entries hold whole batches of events: ask for about as many entries as the events
        // still wanted need, judging by the entries read so far.
        let mut count = limit.min(4);
        'entries: loop {
            let entries: Vec<StreamEntry> =
                redis::cmd("XRANGE").arg(&stream).arg(&from).arg("+").arg("COUNT").arg(count).query_async(&mut conn).await?;
            let Some((last_id, _)) = entries.last() else { break };
            let last_id = last_id.clone();
            let mut spanned = 0u64;
            let entry_count = entries.len() as u64;
            for (id, fields) in entries {
                let first = entry_number(&id).ok_or_else(|| StoreError::Corrupt(format!("stream entry {id} is not numbered")))?;
                let mut number = first;
                let mut take = |number: u64, stored: &[u8]| -> Result<bool, StoreError> {
                    if number >= next {
                        let mut e = super::codec::decode_event(app_id, stored)?;
                        e.event_id = format!("{number:020}");
                        out.push(e);
                    }
                    Ok(out.len() == limit)
                };
                for (field, blob) in fields {
                    let full = match field.as_str() {
                        "e" => {
                            number += 1;
                            take(number - 1, &blob)?
                        }
                        "z" => {
                            let block = super::codec::EventBlock::open(&blob)?;
                            let mut full = false;
                            for i in 0..block.len() {
                                number += 1;
                                if !full {
                                    full = take(number - 1, block.get(i).unwrap_or_default())?;
                                }
                            }
                            full
                        }
                        _ => false,
                    };
                    if full {
                        break 'entries;
                    }
                }
                spanned += number - first;
            }
            let per_entry = (spanned / entry_count).max(1) as usize;
            from = format!("({last_id}");
            count = (limit - out.len()).div_ceil(per_entry).clamp(1, limit);
        }
        Ok(out)
    }

    pub(super) async fn redis_last_event(&self, app_id: &str) -> Result<u64, StoreError> {
        let n: Option<u64> = self.conn().get(Keys::new(app_id).key("event-seq", "")).await?;
        Ok(n.unwrap_or(0))
    }

    pub(super) async fn redis_trim_events(&self, app_id: &str, floor: u64) -> Result<(), StoreError> {
        let stream = Keys::new(app_id).key("event-stream", "");
        let mut conn = self.conn();
        // The entry holding event `floor` stays (it may hold later events too); every entry
        // before it goes.
        let holding: Vec<StreamEntry> =
            redis::cmd("XREVRANGE").arg(&stream).arg(format!("{floor}-0")).arg("-").arg("COUNT").arg(1).query_async(&mut conn).await?;
        if let Some((id, _)) = holding.first() {
            let _: u64 = redis::cmd("XTRIM").arg(&stream).arg("MINID").arg(id).query_async(&mut conn).await?;
        }
        Ok(())
    }

    pub(super) async fn redis_kpi_counters(&self, app_id: &str, days: &[String]) -> Result<Vec<Vec<(String, i64)>>, StoreError> {
        if days.is_empty() {
            return Ok(Vec::new());
        }
        let keys = Keys::new(app_id);
        let mut pipe = redis::pipe();
        for day in days {
            pipe.hgetall(keys.key("kpi:", day));
        }
        Ok(pipe.query_async(&mut self.conn()).await?)
    }

    pub(super) async fn redis_kpi_uniques(&self, app_id: &str, unions: &[Vec<(String, String)>]) -> Result<Vec<u64>, StoreError> {
        let keys = Keys::new(app_id);
        let mut pipe = redis::pipe();
        let mut asked = Vec::with_capacity(unions.len());
        for sets in unions {
            asked.push(!sets.is_empty());
            if !sets.is_empty() {
                let names: Vec<String> = sets.iter().map(|(day, scope)| keys.key("kpiu:", &format!("{day}|{scope}"))).collect();
                pipe.cmd("PFCOUNT").arg(names);
            }
        }
        let counts: Vec<u64> = if asked.iter().any(|a| *a) { pipe.query_async(&mut self.conn()).await? } else { Vec::new() };
        let mut counts = counts.into_iter();
        Ok(asked.into_iter().map(|a| if a { counts.next().unwrap_or(0) } else { 0 }).collect())
    }

    pub(super) async fn redis_first_engagement(&self, app_id: &str, ids: &[String], ttl_secs: u64) -> Result<Vec<bool>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = Keys::new(app_id);
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("SET").arg(keys.key("eng:", id)).arg(1).arg("NX").arg("EX").arg(ttl_secs.max(1));
        }
        let set: Vec<Option<String>> = pipe.query_async(&mut self.conn()).await?;
        Ok(set.into_iter().map(|r| r.is_some()).collect())
    }
}
