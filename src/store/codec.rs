//! The stored forms of endpoints and message outcomes, the two records a store holds one of
//! per endpoint and per message, shared by both backends.
//!
//! A stored record is the record's protobuf without what the store can give back for free:
//! the app id (the key carries it), and the timestamps and hex ids in their text form. Those
//! travel in a small header instead: a `0x00` byte (a protobuf message never starts with it:
//! field number 0 does not exist), a flags byte, the flagged timestamps as varint
//! milliseconds since 1970, and the flagged ids as 16 raw bytes each. A timestamp is packed
//! only when its text is exactly what Herald writes (`2026-12-06T22:33:50.217Z`) and an id
//! only when it is 32 lowercase hex digits, so every record reads back byte for byte as it
//! was written; anything else stays in the protobuf. A value without the header (written by
//! an earlier release) is read as plain protobuf.
//!
//! An outcome leaves out its message id too (the key it is stored under holds it), and holds
//! a campaign run's request id as its occurrence, its channel as a one-byte code and its two
//! times as milliseconds after its id's second; an event's attributes go last in key order,
//! so a block of like events compresses to about 30 bytes each.
//!
//! On the loadtest's data in Redis (README, "Memory per endpoint and per message") this makes
//! an endpoint's value 218 bytes instead of 307, an email campaign's outcome 80 bytes (the
//! release before: 150; 147 bytes of its hour's hash with its field, against 412 as plain
//! protobuf), an event about 33 bytes of the stream instead of 337.

use prost::Message as _;

use super::StoreError;
use crate::proto::v1::{Endpoint, Event, MessageOutcome};

const MARK: u8 = 0;

/// The header being written: flags and the packed fields after them, and the protobuf fields
/// they replace (by field number), left out when the record is encoded after it.
struct Header {
    flags: u8,
    packed: Vec<u8>,
    dropped: u32,
}

impl Header {
    fn new() -> Self {
        let mut packed = Vec::with_capacity(384);
        packed.extend([MARK, 0]);
        Self { flags: 0, packed, dropped: 0 }
    }

    /// Packs a timestamp under `bit` in place of protobuf field `number`, when it has
    /// Herald's form.
    fn time(&mut self, bit: u8, number: u32, value: &str) -> bool {
        let Some(ms) = parse_millis(value) else { return false };
        self.flags |= bit;
        self.dropped |= 1 << number;
        prost::encoding::encode_varint(ms, &mut self.packed);
        true
    }

    /// Packs a 32-hex-digit id under `bit` in place of protobuf field `number`.
    fn id(&mut self, bit: u8, number: u32, value: &str) {
        if let Some(raw) = parse_hex16(value) {
            self.flags |= bit;
            self.dropped |= 1 << number;
            self.packed.extend(raw);
        }
    }

    /// Flags `bit` and leaves protobuf field `number` out.
    fn omit(&mut self, bit: u8, number: u32) {
        self.flags |= bit;
        self.dropped |= 1 << number;
    }

    /// The header, then the record's protobuf without the dropped fields: the record is
    /// encoded whole and the dropped fields are cut from the bytes, which costs less than
    /// copying a record to clear them (records carry maps and many strings).
    fn finish(mut self, body: &impl prost::Message) -> Vec<u8> {
        self.packed[1] = self.flags;
        let start = self.packed.len();
        // No exact reserve: computing a record's encoded length walks it (its maps) a second
        // time, and the header's capacity already holds a usual record.
        body.encode_raw(&mut self.packed);
        if self.dropped != 0 {
            strip_fields(&mut self.packed, start, self.dropped);
        }
        self.packed
    }
}

/// Removes the top-level fields whose numbers are set in `dropped` (numbers below 32) from the
/// protobuf encoding in `buf[start..]`, moving the rest down in place.
fn strip_fields(buf: &mut Vec<u8>, start: usize, dropped: u32) {
    let (mut read, mut write) = (start, start);
    while read < buf.len() {
        // Not a whole field (groups, a cut record: prost writes neither): the rest is kept.
        let Some((key, end)) = field_at(buf, read) else { break };
        let number = key >> 3;
        if number < 32 && dropped & (1 << number) != 0 {
            read = end;
            continue;
        }
        if read != write {
            buf.copy_within(read..end, write);
        }
        write += end - read;
        read = end;
    }
    if read >= buf.len() {
        buf.truncate(write);
    } else {
        // Not a whole field (cannot happen for what prost wrote): keep the tail unchanged.
        let tail = buf.len() - read;
        buf.copy_within(read.., write);
        buf.truncate(write + tail);
    }
}

/// The header being read.
struct Reader<'a> {
    flags: u8,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// `None` for a plain protobuf value.
    fn open(bytes: &'a [u8]) -> Result<Option<Self>, StoreError> {
        match bytes {
            [MARK, flags, rest @ ..] => Ok(Some(Self { flags: *flags, rest })),
            [MARK] => Err(StoreError::Corrupt("truncated record header".into())),
            _ => Ok(None),
        }
    }

    /// The second flags byte, when the first says one follows.
    fn more(&mut self) -> Result<u8, StoreError> {
        if self.flags & MORE == 0 {
            return Ok(0);
        }
        let (&more, rest) = self.rest.split_first().ok_or_else(|| StoreError::Corrupt("truncated record header".into()))?;
        self.rest = rest;
        Ok(more)
    }

    fn time(&mut self, bit: u8) -> Result<Option<String>, StoreError> {
        if self.flags & bit == 0 {
            return Ok(None);
        }
        let ms = prost::encoding::decode_varint(&mut self.rest)?;
        Ok(Some(format_millis(ms)))
    }

    fn id(&mut self, bit: u8) -> Result<Option<String>, StoreError> {
        if self.flags & bit == 0 {
            return Ok(None);
        }
        let (raw, rest) = self.rest.split_at_checked(16).ok_or_else(|| StoreError::Corrupt("truncated record id".into()))?;
        self.rest = rest;
        Ok(Some(hex16(raw)))
    }
}

const EP_EFFECTIVE: u8 = 1;
const EP_CREATED: u8 = 2;
const EP_ACTIVITY: u8 = 4;
const EP_REQUEST: u8 = 8;
const EP_APP: u8 = 16;

/// The stored form of an endpoint of `app_id`.
pub fn encode_endpoint(app_id: &str, e: &Endpoint) -> Vec<u8> {
    let mut h = Header::new();
    h.time(EP_EFFECTIVE, 12, &e.effective_date);
    h.time(EP_CREATED, 14, &e.creation_date);
    h.time(EP_ACTIVITY, 16, &e.last_activity_date);
    h.id(EP_REQUEST, 15, &e.request_id);
    if e.application_id == app_id {
        h.omit(EP_APP, 2);
    }
    h.finish(e)
}

/// An endpoint of `app_id` from its stored form (or an earlier release's plain protobuf).
pub fn decode_endpoint(app_id: &str, bytes: &[u8]) -> Result<Endpoint, StoreError> {
    let Some(mut r) = Reader::open(bytes)? else { return Ok(Endpoint::decode(bytes)?) };
    let effective = r.time(EP_EFFECTIVE)?;
    let created = r.time(EP_CREATED)?;
    let activity = r.time(EP_ACTIVITY)?;
    let request = r.id(EP_REQUEST)?;
    let mut e = Endpoint::decode(r.rest)?;
    if let Some(v) = effective {
        e.effective_date = v;
    }
    if let Some(v) = created {
        e.creation_date = v;
    }
    if let Some(v) = activity {
        e.last_activity_date = v;
    }
    if let Some(v) = request {
        e.request_id = v;
    }
    if r.flags & EP_APP != 0 {
        e.application_id = app_id.to_string();
    }
    Ok(e)
}

/// The first byte of an endpoint record packed with its app's dictionary ([`EndpointDict`]):
/// like [`MARK`], a byte no protobuf message starts with (field number 0 does not exist).
const PACKED: u8 = 1;
/// How many of an app's first records make its dictionary.
pub const DICT_RECORDS: usize = 16;
/// The most a packed record may unpack to (a record claiming more is refused, not allocated).
const MAX_RECORD: usize = 1 << 20;

/// A dictionary of an app's endpoint records: the stored forms of some of its records, which
/// the rest are LZ4-compressed against. An app's records repeat the same attribute names,
/// channel, demographic and location values and protobuf structure, so a 220-byte record
/// packs to about 70 bytes, where alone it compresses to nothing. The dictionary is made
/// once from an app's first batch of [`DICT_RECORDS`] or more and never changes; each packed
/// record names it by its hash (`id`), so a reader holding another one (of an app deleted
/// and made again) sees the difference and fetches the app's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointDict {
    pub id: u32,
    pub bytes: Vec<u8>,
}

impl EndpointDict {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { id: fnv1a(&bytes), bytes }
    }

    /// A dictionary from stored records (their first [`DICT_RECORDS`]); `None` for fewer.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Option<Self> {
        let mut bytes = Vec::new();
        let mut n = 0;
        for r in records.into_iter().take(DICT_RECORDS) {
            bytes.extend_from_slice(r);
            n += 1;
        }
        (n == DICT_RECORDS).then(|| Self::new(bytes))
    }

    /// A stored record packed against the dictionary: [`PACKED`], the dictionary's id (4
    /// bytes), the record's length (a varint), its LZ4 block. A record that would not get
    /// smaller is kept as it is.
    pub fn pack(&self, record: Vec<u8>) -> Vec<u8> {
        let block = lz4_flex::block::compress_with_dict(&record, &self.bytes);
        let mut out = Vec::with_capacity(block.len() + 8);
        out.push(PACKED);
        out.extend(self.id.to_le_bytes());
        prost::encoding::encode_varint(record.len() as u64, &mut out);
        out.extend(block);
        if out.len() < record.len() {
            out
        } else {
            record
        }
    }
}

/// The id of the dictionary a stored endpoint record is packed with, if it is.
pub fn packed_with(stored: &[u8]) -> Option<u32> {
    match stored {
        [PACKED, a, b, c, d, ..] => Some(u32::from_le_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// A stored endpoint record as [`decode_endpoint`] reads it: a packed one unpacked with
/// `dict` (which must be the one it names), any other as it is.
pub fn unpack_endpoint(dict: Option<&EndpointDict>, stored: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    let Some(id) = packed_with(&stored) else { return Ok(stored) };
    let dict =
        dict.filter(|d| d.id == id).ok_or_else(|| StoreError::Corrupt("an endpoint record packed with an unknown dictionary".into()))?;
    let mut rest = &stored[5..];
    let len = prost::encoding::decode_varint(&mut rest)? as usize;
    if len > MAX_RECORD {
        return Err(StoreError::Corrupt("a packed endpoint record of an impossible length".into()));
    }
    let mut out = vec![0; len];
    let n = lz4_flex::block::decompress_into_with_dict(rest, &mut out, &dict.bytes)
        .map_err(|e| StoreError::Corrupt(format!("a packed endpoint record: {e}")))?;
    if n != len {
        return Err(StoreError::Corrupt("a packed endpoint record shorter than it says".into()));
    }
    Ok(out)
}

/// 32-bit FNV-1a: a dictionary's id.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

const OUT_CREATED: u8 = 1;
const OUT_UPDATED: u8 = 2;
const OUT_MESSAGE: u8 = 4;
const OUT_REQUEST: u8 = 8;
const OUT_CAMPAIGN: u8 = 16;
const OUT_JOURNEY: u8 = 32;
const OUT_APP: u8 = 64;
/// A second flags byte follows the first.
const MORE: u8 = 128;
// The second flags byte of an outcome.
/// The message id is left out: the key the outcome is stored under holds it.
const OUT_KEYED: u8 = 1;
/// The request id is the campaign id and a suffix (a campaign run's `{campaign}:{occurrence}`):
/// the suffix follows, after its length.
const OUT_RUN: u8 = 2;
/// The update time is stored as the milliseconds after the creation time.
const OUT_UPDATED_AFTER: u8 = 4;
/// The channel is one of [`CHANNELS`]: its index follows, one byte.
const OUT_CHANNEL: u8 = 8;
/// The run's suffix is `:` and six digits (a campaign's occurrence): their number follows, a
/// varint, instead of their text.
const OUT_OCCURRENCE: u8 = 16;
/// The creation time is stored as the milliseconds after the second the message id carries.
const OUT_CREATED_AFTER_ID: u8 = 32;

/// The channel names an outcome's channel is most often one of (Pinpoint's), by index.
const CHANNELS: [&str; 12] =
    ["EMAIL", "SMS", "VOICE", "PUSH", "GCM", "APNS", "APNS_SANDBOX", "APNS_VOIP", "APNS_VOIP_SANDBOX", "ADM", "BAIDU", "CUSTOM"];

/// The stored form of a message outcome of `app_id`, kept under a key that holds its message
/// id (the id itself is left out when it is one of Herald's: [`decode_outcome`] is given it).
/// A campaign run's request id, its campaign id and occurrence, is held as the occurrence,
/// and the update time as the milliseconds after the creation time: an email campaign's
/// outcome is 98 bytes instead of 150 (README, "Memory per endpoint and per message").
pub fn encode_outcome(app_id: &str, o: &MessageOutcome) -> Vec<u8> {
    let mut h = Header::new();
    let mut more = 0u8;
    h.packed.push(0);
    let created = parse_millis(&o.created_date);
    let keyed = parse_hex16(&o.message_id).is_some();
    let minted = crate::domain::message_id_time(&o.message_id).map(|secs| secs.max(0) as u64 * 1_000);
    if let Some(ms) = created {
        h.flags |= OUT_CREATED;
        h.dropped |= 1 << 16;
        match minted.filter(|&m| keyed && ms >= m) {
            Some(m) => {
                more |= OUT_CREATED_AFTER_ID;
                prost::encoding::encode_varint(ms - m, &mut h.packed);
            }
            None => prost::encoding::encode_varint(ms, &mut h.packed),
        }
    }
    match (created, parse_millis(&o.updated_date)) {
        (Some(c), Some(u)) if u >= c => {
            more |= OUT_UPDATED_AFTER;
            h.dropped |= 1 << 17;
            prost::encoding::encode_varint(u - c, &mut h.packed);
        }
        _ => {
            h.time(OUT_UPDATED, 17, &o.updated_date);
        }
    }
    if keyed {
        more |= OUT_KEYED;
        h.dropped |= 1 << 1;
    }
    let run_suffix = match parse_hex16(&o.campaign_id) {
        Some(_) => o.request_id.strip_prefix(o.campaign_id.as_str()).filter(|s| !s.is_empty() && s.len() < 128),
        None => None,
    };
    match run_suffix {
        Some(suffix) => {
            more |= OUT_RUN;
            h.dropped |= 1 << 4;
            match occurrence(suffix) {
                Some(n) => {
                    more |= OUT_OCCURRENCE;
                    prost::encoding::encode_varint(n, &mut h.packed);
                }
                None => {
                    h.packed.push(suffix.len() as u8);
                    h.packed.extend_from_slice(suffix.as_bytes());
                }
            }
        }
        None => h.id(OUT_REQUEST, 4, &o.request_id),
    }
    if let Some(i) = CHANNELS.iter().position(|c| *c == o.channel) {
        more |= OUT_CHANNEL;
        h.dropped |= 1 << 10;
        h.packed.push(i as u8);
    }
    h.id(OUT_CAMPAIGN, 5, &o.campaign_id);
    h.id(OUT_JOURNEY, 7, &o.journey_id);
    if o.app_id == app_id {
        h.omit(OUT_APP, 2);
    }
    if more != 0 {
        h.flags |= MORE;
        h.packed[2] = more;
    } else {
        h.packed.remove(2);
    }
    h.finish(o)
}

/// The number in a run's suffix `:NNNNNN` (six digits: [`crate::campaigns::run_id`]).
fn occurrence(suffix: &str) -> Option<u64> {
    let digits = suffix.strip_prefix(':')?;
    (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// A message outcome of `app_id` stored under `message_id`, from its stored form (or an
/// earlier release's: with the id inside, or plain protobuf).
pub fn decode_outcome(app_id: &str, message_id: &str, bytes: &[u8]) -> Result<MessageOutcome, StoreError> {
    let Some(mut r) = Reader::open(bytes)? else { return Ok(MessageOutcome::decode(bytes)?) };
    let more = r.more()?;
    let created_ms = match r.flags & OUT_CREATED {
        0 => None,
        _ => {
            let ms = prost::encoding::decode_varint(&mut r.rest)?;
            match more & OUT_CREATED_AFTER_ID {
                0 => Some(ms),
                _ => {
                    let secs = crate::domain::message_id_time(message_id)
                        .ok_or_else(|| StoreError::Corrupt("outcome creation time without its message id".into()))?;
                    Some((secs.max(0) as u64 * 1_000).saturating_add(ms))
                }
            }
        }
    };
    let updated = match (created_ms, more & OUT_UPDATED_AFTER != 0) {
        (Some(c), true) => Some(format_millis(c.saturating_add(prost::encoding::decode_varint(&mut r.rest)?))),
        (None, true) => return Err(StoreError::Corrupt("outcome update time without its creation time".into())),
        (_, false) => r.time(OUT_UPDATED)?,
    };
    let message = r.id(OUT_MESSAGE)?;
    let suffix = match (more & OUT_RUN, more & OUT_OCCURRENCE) {
        (0, _) => None,
        (_, OUT_OCCURRENCE) => Some(format!(":{:06}", prost::encoding::decode_varint(&mut r.rest)?)),
        _ => {
            let (&len, rest) = r.rest.split_first().ok_or_else(|| StoreError::Corrupt("truncated outcome request".into()))?;
            let (text, rest) =
                rest.split_at_checked(len as usize).ok_or_else(|| StoreError::Corrupt("truncated outcome request".into()))?;
            r.rest = rest;
            Some(std::str::from_utf8(text).map_err(|_| StoreError::Corrupt("outcome request is not text".into()))?.to_string())
        }
    };
    let request = r.id(OUT_REQUEST)?;
    let channel = match more & OUT_CHANNEL {
        0 => None,
        _ => {
            let (&i, rest) = r.rest.split_first().ok_or_else(|| StoreError::Corrupt("truncated outcome channel".into()))?;
            r.rest = rest;
            Some(*CHANNELS.get(i as usize).ok_or_else(|| StoreError::Corrupt(format!("outcome channel {i}")))?)
        }
    };
    let campaign = r.id(OUT_CAMPAIGN)?;
    let journey = r.id(OUT_JOURNEY)?;
    let mut o = MessageOutcome::decode(r.rest)?;
    if let Some(c) = channel {
        o.channel = c.to_string();
    }
    if more & OUT_KEYED != 0 {
        o.message_id = message_id.to_string();
    }
    if let (Some(suffix), Some(campaign)) = (&suffix, &campaign) {
        o.request_id = format!("{campaign}{suffix}");
    } else if suffix.is_some() {
        return Err(StoreError::Corrupt("outcome request without its campaign".into()));
    }
    for (field, v) in [
        (&mut o.created_date, created_ms.map(format_millis)),
        (&mut o.updated_date, updated),
        (&mut o.message_id, message),
        (&mut o.request_id, request),
        (&mut o.campaign_id, campaign),
        (&mut o.journey_id, journey),
    ] {
        if let Some(v) = v {
            *field = v;
        }
    }
    if r.flags & OUT_APP != 0 {
        o.app_id = app_id.to_string();
    }
    Ok(o)
}

const EV_TIME: u8 = 1;
const EV_ARRIVAL: u8 = 2;
const EV_ARRIVAL_SAME: u8 = 4;
const EV_MESSAGE: u8 = 8;
const EV_APP: u8 = 16;

/// The stored form of an event of `app_id` (its id is the store's: not stored).
pub fn encode_event(app_id: &str, e: &Event) -> Vec<u8> {
    let mut h = Header::new();
    // The id: the store's own, not stored.
    h.dropped |= 1 << 1;
    let packed_time = h.time(EV_TIME, 3, &e.event_timestamp);
    if packed_time && e.arrival_timestamp == e.event_timestamp {
        h.omit(EV_ARRIVAL_SAME, 4);
    } else {
        h.time(EV_ARRIVAL, 4, &e.arrival_timestamp);
    }
    h.id(EV_MESSAGE, 9, &e.message_id);
    if e.app_id == app_id {
        h.omit(EV_APP, 5);
    }
    // The attributes go last, in key order (a map's own order differs from event to event),
    // so like events of a block repeat the same bytes and compress to almost nothing. They are
    // encoded once, with the rest, and their entries moved.
    let start = h.packed.len();
    let mut stored = h.finish(e);
    map_entries_last(&mut stored, start, 7);
    stored
}

/// The end of the protobuf field that starts at `at`, and its key; `None` when the bytes there
/// are not a whole field of a wire type prost writes.
fn field_at(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    fn varint_end(buf: &[u8], mut at: usize) -> usize {
        while at < buf.len() && buf[at] & 0x80 != 0 {
            at += 1;
        }
        at + 1
    }
    let key = prost::encoding::decode_varint(&mut buf.get(at..)?).ok()?;
    let key_end = varint_end(buf, at);
    let end = match key & 7 {
        0 => varint_end(buf, key_end),
        1 => key_end + 8,
        2 => {
            let len = prost::encoding::decode_varint(&mut buf.get(key_end..)?).ok()?;
            varint_end(buf, key_end).checked_add(usize::try_from(len).ok()?)?
        }
        5 => key_end + 4,
        _ => return None,
    };
    (end <= buf.len()).then_some((key, end))
}

/// Moves the entries of map field `number` in the protobuf encoding `buf[start..]` after the
/// other fields, in key order. Left as it is when the bytes do not parse (prost wrote them).
fn map_entries_last(buf: &mut Vec<u8>, start: usize, number: u64) {
    let mut entries: Vec<(usize, usize)> = Vec::new();
    let mut at = start;
    while at < buf.len() {
        let Some((key, end)) = field_at(buf, at) else { return };
        if key >> 3 == number {
            entries.push((at, end));
        }
        at = end;
    }
    if entries.is_empty() {
        return;
    }
    // An entry's key: its field 1, first when prost writes it (absent when empty).
    let key_of = |&(s, e): &(usize, usize)| -> &[u8] {
        // Past the entry's own key and length.
        let mut inner = &buf[s..e];
        let _ = prost::encoding::decode_varint(&mut inner);
        let _ = prost::encoding::decode_varint(&mut inner);
        match inner.split_first() {
            Some((0x0A, mut rest)) => match prost::encoding::decode_varint(&mut rest) {
                Ok(n) => rest.get(..n as usize).unwrap_or(&[]),
                Err(_) => &[],
            },
            _ => &[],
        }
    };
    let mut order: Vec<(&[u8], &[u8])> = entries.iter().map(|r| (key_of(r), &buf[r.0..r.1])).collect();
    order.sort_unstable_by_key(|(key, _)| *key);
    let moved: Vec<u8> = order.iter().flat_map(|(_, bytes)| bytes.iter().copied()).collect();
    // The other fields close up, in their order; the entries follow.
    let mut write = entries[0].0;
    let mut read = entries[0].1;
    for &(s, e) in &entries[1..] {
        buf.copy_within(read..s, write);
        write += s - read;
        read = e;
    }
    let len = buf.len();
    buf.copy_within(read..len, write);
    write += len - read;
    buf.truncate(write);
    buf.extend_from_slice(&moved);
}

/// An event of `app_id` from its stored form (or an earlier release's protobuf).
pub fn decode_event(app_id: &str, bytes: &[u8]) -> Result<Event, StoreError> {
    let Some(mut r) = Reader::open(bytes)? else { return Ok(Event::decode(bytes)?) };
    let time = r.time(EV_TIME)?;
    let arrival = r.time(EV_ARRIVAL)?;
    let message = r.id(EV_MESSAGE)?;
    let mut e = Event::decode(r.rest)?;
    if let Some(v) = time {
        e.event_timestamp = v;
    }
    if r.flags & EV_ARRIVAL_SAME != 0 {
        e.arrival_timestamp = e.event_timestamp.clone();
    } else if let Some(v) = arrival {
        e.arrival_timestamp = v;
    }
    if let Some(v) = message {
        e.message_id = v;
    }
    if r.flags & EV_APP != 0 {
        e.app_id = app_id.to_string();
    }
    Ok(e)
}

/// The largest block of events a store reads back (a stream entry holds at most a thousand
/// events of a few hundred bytes): a corrupt size never makes it allocate more.
const MAX_EVENT_BLOCK: usize = 64 << 20;

/// A batch of events stored as one compressed block: each event's stored form after its
/// length (a varint), the whole compressed with LZ4 (its size first). Events of one batch
/// repeat their campaign, activity and attribute names, so a block of a campaign's events
/// holds each in about 30 bytes instead of 200 (README, "Memory per endpoint and per
/// message"). `None` when the block would not be smaller than the events one by one (a lone
/// event, or events with nothing in common): those are stored as they are.
pub fn encode_event_block(app_id: &str, events: &[Event]) -> Option<Vec<u8>> {
    if events.len() < 2 {
        return None;
    }
    let mut raw = Vec::with_capacity(events.len() * 256);
    for e in events {
        let stored = encode_event(app_id, e);
        prost::encoding::encode_varint(stored.len() as u64, &mut raw);
        raw.extend_from_slice(&stored);
    }
    let block = lz4_flex::block::compress_prepend_size(&raw);
    (block.len() + 8 * events.len() < raw.len()).then_some(block)
}

/// A block of events opened: the decompressed bytes and where each event's stored form lies
/// in them, in order.
pub struct EventBlock {
    raw: Vec<u8>,
    parts: Vec<std::ops::Range<usize>>,
}

impl EventBlock {
    /// Opens [`encode_event_block`]'s bytes.
    pub fn open(block: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("event block {what}"));
        let (size, body) = lz4_flex::block::uncompressed_size(block).map_err(|_| corrupt("without its size"))?;
        if size > MAX_EVENT_BLOCK {
            return Err(corrupt("larger than any written"));
        }
        let mut raw = vec![0; size];
        let n = lz4_flex::block::decompress_into(body, &mut raw).map_err(|e| corrupt(&e.to_string()))?;
        if n != size {
            return Err(corrupt("shorter than its size"));
        }
        let parts = split_block(&raw)?;
        Ok(Self { raw, parts })
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The stored form of the block's `i`th event.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.parts.get(i).map(|r| &self.raw[r.clone()])
    }
}

/// Where each event's stored form lies in a decompressed block.
fn split_block(raw: &[u8]) -> Result<Vec<std::ops::Range<usize>>, StoreError> {
    let mut parts = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let mut rest = &raw[at..];
        let len = prost::encoding::decode_varint(&mut rest)? as usize;
        let start = raw.len() - rest.len();
        let end =
            start.checked_add(len).filter(|&e| e <= raw.len()).ok_or_else(|| StoreError::Corrupt("truncated event in a block".into()))?;
        parts.push(start..end);
        at = end;
    }
    Ok(parts)
}

/// Milliseconds since 1970 of a timestamp written exactly as [`crate::domain::timestamp`]
/// writes one (`YYYY-MM-DDTHH:MM:SS.mmmZ`, years 1970 to 9999).
fn parse_millis(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        b[r].iter().try_fold(0u64, |n, &c| c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second, milli) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if year < 1970 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year as i64, month as i64, day as i64) as u64;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + milli)
}

/// The text [`parse_millis`] reads.
fn format_millis(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    let (y, m, d) = civil_from_days(days);
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, n: u64| {
        let mut n = n;
        for i in (at..at + width).rev() {
            b[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, y as u64);
    put(5, 2, m as u64);
    put(8, 2, d as u64);
    put(11, 2, rem / 3_600_000);
    put(14, 2, rem / 60_000 % 60);
    put(17, 2, rem / 1000 % 60);
    put(20, 3, rem % 1000);
    String::from_utf8_lossy(&b).into_owned()
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// A 32-hex-digit id as its 16 bytes, for keys and index members.
pub fn pack_id(id: &str) -> Option<[u8; 16]> {
    parse_hex16(id)
}

/// An id [`pack_id`] packed (16 bytes), or one kept as text.
pub fn unpack_id(bytes: &[u8]) -> String {
    if bytes.len() == 16 {
        hex16(bytes)
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn hex16(raw: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for &b in raw {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests;
