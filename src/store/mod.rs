//! The storage seam: one trait, [`Store`], with two backends that pass one conformance suite —
//! Redis ([`redis::RedisStore`], production, shared by several daemons) and an embedded redb
//! file ([`embedded::EmbeddedStore`], the default, nothing else to install).
//!
//! Endpoint writes are planned by [`plan`], the same code for both backends: a backend loads
//! what the planner asks for, the planner decides (merges, address conflicts, the per-user cap),
//! and the backend applies the whole plan atomically — a redb write transaction, or a Redis
//! `WATCH`/`MULTI`/`EXEC` that retries when another daemon touched the same keys.

pub mod codec;
pub mod embedded;
mod embedded_endpoints;
mod embedded_journeys;
mod embedded_outcomes;
mod embedded_records;
mod embedded_tables;
mod embedded_templates;
pub mod plan;
pub mod redis;
mod redis_conn;
mod redis_dict;
mod redis_endpoints;
mod redis_journeys;
mod redis_outcomes;
mod redis_records;
mod redis_templates;
pub mod templates;

use std::sync::Arc;

use async_trait::async_trait;

pub use plan::{EndpointOp, Plan, Rejection};
pub use templates::{TemplateMeta, TemplateWrite};

use crate::config::Config;
use crate::proto::v1::{App, Endpoint, Event, MessageOutcome, Suppression, Template};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("app {0} not found")]
    AppNotFound(String),
    #[error("app {0} already exists")]
    AppExists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0}")]
    Precondition(String),
    #[error("the write kept conflicting with concurrent writes; retry it")]
    Contention,
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// The backend cannot be reached now (connection refused or dropped, a timeout, a server
    /// still loading its data): the same call may succeed later.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether the same call may succeed once the backend is reachable again.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<prost::DecodeError> for StoreError {
    fn from(e: prost::DecodeError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// How an endpoint's entry into a journey went ([`Store::journey_enter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// It entered: this is its entry number (1 the first time).
    Entered(u32),
    /// It is in the journey now (an endpoint is in a journey once at a time).
    Active,
    /// It entered as many times as the journey's EndpointReentryCap allows.
    CapExceeded,
    /// Its last entry is more recent than the journey's EndpointReentryInterval.
    TooSoon,
}

impl Entry {
    /// The journey execution metric it counts under.
    pub fn metric(self) -> &'static str {
        match self {
            Entry::Entered(_) => "ENDPOINT_ENTERED",
            Entry::Active => "ACTIVE_ENDPOINT_REJECTED",
            Entry::CapExceeded => "REENTRY_CAP_EXCEEDED",
            Entry::TooSoon => "REENTRY_INTERVAL_NOT_ELAPSED",
        }
    }
}

/// Who may enter a journey again: `cap` entries in all (0: no limit), at least
/// `interval_secs` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reentry {
    pub cap: u32,
    pub interval_secs: i64,
}

/// A journey participant due for its next step: its endpoint, the time it was due and its
/// position (the journey's own encoding, stored as given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub endpoint_id: String,
    pub due: i64,
    pub state: String,
    /// Its entries into the journey, this one included.
    pub entries: u32,
}

/// A participant's next position: due at `.0` in state `.1`, or `None` when it leaves.
pub type Move = (String, Option<(i64, String)>);

/// Where an idempotency key stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idempotency {
    /// This caller holds the key now and must complete or release it.
    Claimed,
    /// Another call holds it and has not finished.
    InFlight,
    /// A call finished with this (encoded) response.
    Done(Vec<u8>),
}

/// What outcomes are listed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeIndex {
    Request(String),
    Endpoint(String),
}

/// Outcomes kept listed per endpoint.
pub const MAX_PER_ENDPOINT: usize = 1_000;

/// Most events kept per app; older ones are dropped as new ones arrive.
pub const MAX_EVENTS: u64 = 1_000_000;

/// The day an outcome counts under: the date part of its `updated_date`.
pub fn outcome_day(o: &MessageOutcome) -> &str {
    o.updated_date.get(..10).unwrap_or("unknown")
}

/// Whether an outcome goes into its run's index ([`Store::run_outcomes`]): a campaign or
/// journey message to an endpoint.
pub fn indexed_by_run(o: &MessageOutcome) -> bool {
    use crate::proto::v1::MessageSource;
    (o.source == MessageSource::Campaign as i32 || o.source == MessageSource::Journey as i32)
        && !o.endpoint_id.is_empty()
        && !o.request_id.is_empty()
}

/// The marks [`Store::record_outcomes`] writes for a batch's events of journey messages
/// (`{event type}:{message id}`, read by [`Store::engaged`]), so a journey's split can ask
/// whether a participant's own message was delivered, opened or clicked.
pub fn journey_marks(outcomes: &[MessageOutcome], events: &[Event]) -> Vec<String> {
    // Events recorded with their message's outcome are marked only when a condition asks
    // about them; those arriving later (opens, clicks, receipts) always.
    let unasked: std::collections::HashSet<&str> =
        outcomes.iter().filter(|o| !o.journey_id.is_empty() && !o.journey_asked).map(|o| o.message_id.as_str()).collect();
    events
        .iter()
        .filter(|e| {
            !e.message_id.is_empty()
                && e.origin != crate::proto::v1::EventOrigin::PutEvents as i32
                && e.attributes.contains_key("journey_id")
                && !unasked.contains(e.message_id.as_str())
        })
        .map(|e| format!("{}:{}", e.event_type, e.message_id))
        .collect()
}

/// How long journey marks are kept: the outcome TTL, and at least a day.
pub fn mark_ttl(ttl_secs: u64) -> u64 {
    ttl_secs.max(86_400)
}

/// Counts a batch by (day, channel, status).
pub fn tally(outcomes: &[MessageOutcome]) -> std::collections::BTreeMap<(&str, &str, i32), u64> {
    let mut counts = std::collections::BTreeMap::new();
    for o in outcomes {
        *counts.entry((outcome_day(o), o.channel.as_str(), o.delivery_status)).or_insert(0) += 1;
    }
    counts
}

/// Where Herald keeps its state.
///
/// Every method is one atomic step: a reader never sees half of a write. Writes under an app
/// fail with [`StoreError::AppNotFound`] once the app is deleted.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `redis` or `embedded`, for logs and metric labels.
    fn backend(&self) -> &'static str;

    /// Whether other processes may write this store's state (Redis: other daemons), so what
    /// one daemon caches of it can go stale. The embedded store's file has one owner.
    fn shared(&self) -> bool {
        true
    }

    /// Cheap liveness check of the backend.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates an app; [`StoreError::AppExists`] if its id is taken.
    async fn create_app(&self, app: &App) -> Result<(), StoreError>;

    async fn get_app(&self, app_id: &str) -> Result<Option<App>, StoreError>;

    /// Apps in id order, after `after` (exclusive), at most `limit`.
    async fn list_apps(&self, after: Option<&str>, limit: usize) -> Result<Vec<App>, StoreError>;

    /// Replaces a stored app; [`StoreError::AppNotFound`] if it is gone.
    async fn put_app(&self, app: &App) -> Result<(), StoreError>;

    /// Deletes the app and everything under it; returns what was deleted.
    async fn delete_app(&self, app_id: &str) -> Result<Option<App>, StoreError>;

    /// Plans and applies an endpoint write. An upsert that is `all_or_nothing` and has
    /// rejections writes nothing; the returned plan says what was (or would have been) done.
    async fn write_endpoints(&self, app_id: &str, op: EndpointOp) -> Result<Plan, StoreError>;

    /// One endpoint; [`StoreError::AppNotFound`] if the app does not exist.
    async fn get_endpoint(&self, app_id: &str, endpoint_id: &str) -> Result<Option<Endpoint>, StoreError>;

    /// Several endpoints, in order (`None`: no such endpoint), in one round trip where the
    /// backend can.
    async fn get_endpoints(&self, app_id: &str, ids: &[String]) -> Result<Vec<Option<Endpoint>>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.get_endpoint(app_id, id).await?);
        }
        Ok(out)
    }

    /// Every endpoint of a user, in the order they were associated with it.
    async fn user_endpoints(&self, app_id: &str, user_id: &str) -> Result<Vec<Endpoint>, StoreError>;

    /// A page of the app's endpoints in id order, each endpoint once: `cursor` is `None` to
    /// start, and the returned cursor is `None` at the end. Pages hold at most `limit`.
    async fn scan_endpoints(
        &self,
        app_id: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Endpoint>, Option<String>), StoreError>;

    /// Writes a template version atomically: `Create` makes version 1 (the active version),
    /// `NewVersion` the next number, `OverwriteLatest` replaces the latest. The record's
    /// content, type, description, tags and defaults are stored; the returned record carries
    /// its version numbers and dates. Errors: AppNotFound, NotFound, Exists, Precondition
    /// (type change, version limit).
    async fn write_template(&self, app_id: &str, template: &Template, mode: TemplateWrite) -> Result<Template, StoreError>;

    /// A version (`None`: the active one), or `None` when the template or version is absent.
    async fn get_template(&self, app_id: &str, name: &str, version: Option<i32>) -> Result<Option<Template>, StoreError>;

    /// The active version of each template, by name after `after`, at most `limit`.
    async fn list_templates(&self, app_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<Template>, StoreError>;

    /// Versions after `after`, ascending, at most `limit`; NotFound if the template is absent.
    async fn list_template_versions(&self, app_id: &str, name: &str, after: i32, limit: usize) -> Result<Vec<Template>, StoreError>;

    /// Makes a version (`None`: the latest) active; returns that version.
    async fn set_active_template_version(&self, app_id: &str, name: &str, version: Option<i32>) -> Result<Template, StoreError>;

    /// Deletes one version (not the active one while others remain) or, with `None`, the
    /// whole template; returns how many versions were deleted.
    async fn delete_template(&self, app_id: &str, name: &str, version: Option<i32>) -> Result<i32, StoreError>;

    /// Takes up to `requested` messages from an app channel's quotas, atomically for the whole
    /// batch: `daily` over a rolling 24 hours (hourly buckets, the current one included) and
    /// `total` over all time; `None` is no limit. Returns how many were granted (what was
    /// granted is counted). Several daemons on one store never overshoot.
    async fn take_quota(
        &self,
        app_id: &str,
        channel: &str,
        requested: u64,
        daily: Option<u64>,
        total: Option<u64>,
        now_hour: i64,
    ) -> Result<u64, StoreError>;

    /// Takes up to `requested` of an app channel's `limit` messages for the second `window`
    /// (unix seconds): a messages-per-second quota shared by every daemon on the store, which
    /// each takes in small blocks. Returns how many were granted (and counts them).
    async fn take_rate(&self, app_id: &str, channel: &str, window: i64, requested: u64, limit: u64) -> Result<u64, StoreError>;

    /// Adds or replaces suppression entries (addresses already normalized).
    async fn put_suppressions(&self, app_id: &str, entries: &[Suppression]) -> Result<(), StoreError>;

    /// Removes one address; whether it was there.
    async fn remove_suppression(&self, app_id: &str, address: &str) -> Result<bool, StoreError>;

    /// The id of the ACTIVE endpoint with this channel and address, if any (the address index).
    async fn endpoint_by_address(&self, app_id: &str, channel: i32, address: &str) -> Result<Option<String>, StoreError>;

    /// The entries of these addresses, in order (`None`: not suppressed). One round trip for a
    /// whole batch of recipients.
    async fn get_suppressions(&self, app_id: &str, addresses: &[String]) -> Result<Vec<Option<Suppression>>, StoreError>;

    /// A page of the list: `cursor` is `None` to start; the returned cursor is `None` at the end.
    async fn list_suppressions(
        &self,
        app_id: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Suppression>, Option<String>), StoreError>;

    /// Records a batch of one app's outcomes and appends its events, in one round trip: each
    /// outcome is kept for `ttl_secs` and counted under its day (from `updated_date`), channel
    /// and delivery status; events go to the app's stream (at most [`MAX_EVENTS`] kept, the
    /// oldest dropped) and get their ids.
    async fn record_outcomes(&self, app_id: &str, outcomes: &[MessageOutcome], events: &[Event], ttl_secs: u64) -> Result<(), StoreError>;

    /// The delivery status recorded for each endpoint under a campaign run or a journey
    /// activity's entry (`run`, its request id), in order (`None`: no outcome recorded for it
    /// there). Every such outcome is indexed by [`Store::record_outcomes`] in the same round trip
    /// as the outcome itself, so a resumed run skips exactly the members that already have one.
    /// `sent_since` (Unix seconds: a campaign run's start, none for journeys) says that the
    /// run's messages are no older: Redis finds a campaign run's outcomes through the endpoints'
    /// per-day message index from that day on rather than keeping a per-run index of its own.
    async fn run_outcomes(
        &self,
        app_id: &str,
        run: &str,
        endpoint_ids: &[String],
        sent_since: Option<i64>,
    ) -> Result<Vec<Option<i32>>, StoreError>;

    /// Outcomes by request or endpoint (newest first for endpoints, send order for a request),
    /// from position `offset`, at most `limit`, while their TTL lasts (Redis lists an
    /// endpoint's last [`MAX_PER_ENDPOINT`]).
    async fn list_outcomes(&self, app_id: &str, by: &OutcomeIndex, offset: usize, limit: usize) -> Result<Vec<MessageOutcome>, StoreError>;

    /// One message's outcome, while its TTL lasts.
    async fn get_outcome(&self, app_id: &str, message_id: &str) -> Result<Option<MessageOutcome>, StoreError>;

    /// A day's (`YYYY-MM-DD`) counts: (channel, delivery status, messages), sorted.
    async fn outcome_counts(&self, app_id: &str, day: &str) -> Result<Vec<(String, i32, u64)>, StoreError>;

    /// Events after `after` (an event id; `None`: from the oldest kept), oldest first.
    async fn read_events(&self, app_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<Event>, StoreError>;

    /// The number of the app's last recorded event (0: none yet). An event's id is its number
    /// in 20 digits; numbers only grow, so a reader resumes after the last id it saw.
    async fn last_event(&self, app_id: &str) -> Result<u64, StoreError>;

    /// Drops the app's events numbered below `floor` (retention by age or count).
    async fn trim_events(&self, app_id: &str, floor: u64) -> Result<(), StoreError>;

    /// The KPI counters of each day (`YYYY-MM-DD`), in order: (`{counter}|{scope}`, count).
    /// [`Store::record_outcomes`] keeps them (see [`crate::kpi`]) for
    /// [`crate::kpi::RETENTION_DAYS`].
    async fn kpi_counters(&self, app_id: &str, days: &[String]) -> Result<Vec<Vec<(String, i64)>>, StoreError>;

    /// For each union of (day, scope) sets, the distinct endpoints delivered to (estimated,
    /// HyperLogLog).
    async fn kpi_uniques(&self, app_id: &str, unions: &[Vec<(String, String)>]) -> Result<Vec<u64>, StoreError>;

    /// Marks each key (an engagement kind and a message id) as seen, kept `ttl_secs`: whether
    /// it was seen here for the first time, atomically (two daemons never both see a first).
    async fn first_engagement(&self, app_id: &str, keys: &[String], ttl_secs: u64) -> Result<Vec<bool>, StoreError>;

    /// Whether each key (`{event type}:{message id}`) was marked: by [`Store::first_engagement`],
    /// or by [`Store::record_outcomes`] for the events of journey messages (so a journey's
    /// conditions read the events of a participant's own message).
    async fn engaged(&self, app_id: &str, keys: &[String]) -> Result<Vec<bool>, StoreError>;

    /// Lets endpoints into a journey, atomically per endpoint: one that is in the journey now
    /// stays where it is ([`Entry::Active`]); one that entered `rule.cap` times, or less than
    /// `rule.interval_secs` ago, stays out; the others enter at `state`, due at `due`. Each
    /// result is counted under its [`Entry::metric`].
    #[allow(clippy::too_many_arguments)]
    async fn journey_enter(
        &self,
        app_id: &str,
        journey: &str,
        ids: &[String],
        state: &str,
        due: i64,
        rule: Reentry,
        now_secs: i64,
    ) -> Result<Vec<Entry>, StoreError>;

    /// The participants due by `until` (Unix seconds), earliest first, at most `limit`.
    async fn journey_due(&self, app_id: &str, journey: &str, until: i64, limit: usize) -> Result<Vec<Participant>, StoreError>;

    /// Moves participants (or lets them leave) and adds to the journey's counters, in one
    /// atomic step.
    async fn journey_move(&self, app_id: &str, journey: &str, moves: &[Move], counters: &[(String, i64)]) -> Result<(), StoreError>;

    /// How many participants are in the journey now, and its counters.
    async fn journey_counters(&self, app_id: &str, journey: &str) -> Result<(u64, Vec<(String, i64)>), StoreError>;

    /// Drops a journey's participants, their entry history and its counters.
    async fn journey_drop(&self, app_id: &str, journey: &str) -> Result<(), StoreError>;

    /// Marks a template as used (or no longer used) by `user`, a campaign or journey id; a
    /// template in use cannot be deleted (FAILED_PRECONDITION).
    async fn set_template_use(&self, app_id: &str, name: &str, user: &str, in_use: bool) -> Result<(), StoreError>;

    /// Writes version `version` of the record `kind`/`id` (segments, campaigns: protobuf as
    /// given), atomically with a check that its latest version is `expect_latest` (0: the
    /// record does not exist): `version` is `expect_latest + 1` for a new version or
    /// `expect_latest` to replace the latest. Errors: AppNotFound; Exists (expected none);
    /// NotFound (expected one, none there); Contention (another writer got there first).
    async fn write_record(
        &self,
        app_id: &str,
        kind: &str,
        id: &str,
        expect_latest: i32,
        version: i32,
        body: &[u8],
    ) -> Result<(), StoreError>;

    /// A version of a record (`None`: the latest).
    async fn get_record(&self, app_id: &str, kind: &str, id: &str, version: Option<i32>) -> Result<Option<Vec<u8>>, StoreError>;

    /// The latest version of each record of a kind, by id after `after`, at most `limit`.
    async fn list_records(&self, app_id: &str, kind: &str, after: Option<&str>, limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;

    /// A record's versions after `after`, ascending, at most `limit`.
    async fn list_record_versions(&self, app_id: &str, kind: &str, id: &str, after: i32, limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Marks a record as used (or no longer used) by `user` (a campaign, another segment); a
    /// record in use cannot be deleted. NotFound when marking a record that does not exist.
    async fn set_record_use(&self, app_id: &str, kind: &str, id: &str, user: &str, in_use: bool) -> Result<(), StoreError>;

    /// Deletes every version of a record; returns the latest version number it had (`None`:
    /// there was none). Precondition (naming a user) while the record is in use.
    async fn delete_record(&self, app_id: &str, kind: &str, id: &str) -> Result<Option<i32>, StoreError>;

    /// Unversioned state (an import job's progress): stored as given, replaced on each put.
    async fn put_blob(&self, app_id: &str, kind: &str, id: &str, body: &[u8]) -> Result<(), StoreError>;

    async fn get_blob(&self, app_id: &str, kind: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Adds endpoint ids to a member set (an imported segment version's members).
    async fn add_members(&self, app_id: &str, set: &str, ids: &[String]) -> Result<(), StoreError>;

    /// Drops a member set.
    async fn delete_members(&self, app_id: &str, set: &str) -> Result<(), StoreError>;

    /// How many ids a member set holds.
    async fn count_members(&self, app_id: &str, set: &str) -> Result<u64, StoreError>;

    /// A page of a member set's endpoints in id order, like [`Store::scan_endpoints`]; ids
    /// whose endpoint no longer exists are skipped.
    async fn scan_members(
        &self,
        app_id: &str,
        set: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Endpoint>, Option<String>), StoreError>;

    /// Ids that cut the app's endpoints (`set` `None`) or a member set into about `parts`
    /// ranges of similar size, ascending, for scans that read the ranges concurrently. Empty
    /// when the backend gains nothing from concurrent reads (the embedded store).
    async fn scan_splits(&self, _app_id: &str, _set: Option<&str>, _parts: usize) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    /// As [`Store::scan_endpoints`] (`set` `None`) or [`Store::scan_members`] within a range,
    /// with the endpoints still encoded (a scan decodes them on another task while the next
    /// page is read): ids after `cursor` (exclusive) or from `from` (inclusive) when there is
    /// no cursor yet, and before `until` (exclusive). `from` and `until` come from
    /// [`Store::scan_splits`].
    async fn scan_encoded(
        &self,
        app_id: &str,
        set: Option<&str>,
        cursor: Option<String>,
        range: (Option<&str>, Option<&str>),
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<String>), StoreError> {
        use prost::Message as _;
        debug_assert!(range == (None, None), "this backend makes no splits");
        let (page, next) = match set {
            Some(s) => self.scan_members(app_id, s, cursor, limit).await?,
            None => self.scan_endpoints(app_id, cursor, limit).await?,
        };
        Ok((page.iter().map(|e| e.encode_to_vec()).collect(), next))
    }

    /// Whether each id is in the member set, in order: one round trip for a page.
    async fn members_contain(&self, app_id: &str, set: &str, ids: &[String]) -> Result<Vec<bool>, StoreError>;

    /// Takes one message for each endpoint from a per-endpoint cap under `scope` (a campaign,
    /// a journey): at most `recent.0` in any `recent.1` seconds (24 hours for a daily cap) and
    /// `total` ever (`None`: no limit), checked and counted atomically for the whole batch.
    /// Returns, in order, whether each endpoint may get one.
    async fn take_endpoint_caps(
        &self,
        app_id: &str,
        scope: &str,
        ids: &[String],
        recent: Option<(u32, i64)>,
        total: Option<u32>,
        now_secs: i64,
    ) -> Result<Vec<bool>, StoreError>;

    /// Takes or renews the lease `name` for `owner` for `ttl_ms`: true when `owner` holds it
    /// now. Several daemons on one store see one holder at a time.
    async fn try_lease(&self, app_id: &str, name: &str, owner: &str, ttl_ms: u64) -> Result<bool, StoreError>;

    /// Gives a lease up, if `owner` holds it.
    async fn release_lease(&self, app_id: &str, name: &str, owner: &str) -> Result<(), StoreError>;

    /// An API key record (`ApiKey` protobuf, its secret's SHA-256 beside it), by key id; keys
    /// are global, not an app's. Replaced on each put (a revocation rewrites the record).
    async fn put_api_key(&self, key_id: &str, record: &[u8]) -> Result<(), StoreError>;

    async fn get_api_key(&self, key_id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every API key record, in key id order.
    async fn list_api_keys(&self) -> Result<Vec<Vec<u8>>, StoreError>;

    /// An app's settings for one channel (`email`, `custom`...), stored as given (protobuf).
    async fn put_channel(&self, app_id: &str, channel: &str, settings: &[u8]) -> Result<(), StoreError>;

    async fn get_channel(&self, app_id: &str, channel: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes a channel's settings; returns what they were.
    async fn delete_channel(&self, app_id: &str, channel: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Claims an idempotency key for `ttl_secs`, atomically: the first caller gets
    /// [`Idempotency::Claimed`], later ones see it in flight or done.
    async fn claim_idempotency(&self, app_id: &str, key: &str, ttl_secs: u64) -> Result<Idempotency, StoreError>;

    /// Stores a claimed key's response.
    async fn complete_idempotency(&self, app_id: &str, key: &str, response: &[u8], ttl_secs: u64) -> Result<(), StoreError>;

    /// Gives a claimed key up (the call failed before sending anything).
    async fn release_idempotency(&self, app_id: &str, key: &str) -> Result<(), StoreError>;

    /// Drops what has expired and the backend does not expire by itself (embedded outcomes and
    /// idempotency keys); returns how many records went. Called periodically.
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// Flushes and releases the backend; called once at shutdown.
    async fn close(&self) -> Result<(), StoreError>;
}

/// Pinpoint keeps templates at account level, not under a project, one per name and type:
/// Herald keeps the ones written that way (the REST door's `/v1/templates`) in one app-shaped
/// space per type (`_account_email`, `_account_sms`, `_account_push`, `_account_inapp`),
/// which no app listing shows, and an app's sends find there a template of the kind they
/// need that the app does not have itself.
pub const ACCOUNT_PREFIX: &str = "_account_";

/// The account space of a template type (`None` for types Pinpoint has no account templates of).
pub fn account_space(kind: crate::proto::v1::TemplateType) -> Option<&'static str> {
    use crate::proto::v1::TemplateType as T;
    match kind {
        T::Email => Some("_account_email"),
        T::Sms => Some("_account_sms"),
        T::Push => Some("_account_push"),
        T::InApp => Some("_account_inapp"),
        _ => None,
    }
}

/// Whether an app id is an account template space (never listed as an app).
pub fn is_account_space(app_id: &str) -> bool {
    app_id.starts_with(ACCOUNT_PREFIX)
}

/// Creates an account template space if it does not exist yet.
pub async fn ensure_account_space(store: &dyn Store, space: &str) -> Result<(), StoreError> {
    if store.get_app(space).await?.is_some() {
        return Ok(());
    }
    let app = App {
        app_id: space.into(),
        name: format!("account templates ({})", space.trim_start_matches(ACCOUNT_PREFIX)),
        creation_date: crate::domain::timestamp(chrono::Utc::now()),
        ..Default::default()
    };
    match store.create_app(&app).await {
        Ok(()) | Err(StoreError::AppExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A template of the app, or else the account's template of that name and kind.
pub async fn find_template(
    store: &dyn Store,
    app_id: &str,
    name: &str,
    version: Option<i32>,
    kind: crate::proto::v1::TemplateType,
) -> Result<Option<Template>, StoreError> {
    if let Some(t) = store.get_template(app_id, name, version).await? {
        return Ok(Some(t));
    }
    let Some(space) = account_space(kind).filter(|s| *s != app_id) else { return Ok(None) };
    match store.get_template(space, name, version).await {
        Ok(t) => Ok(t),
        Err(StoreError::AppNotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Keeps the lease `lease` of `app` held by `owner`, renewed for `ttl_ms` every third of it,
/// until the task is aborted; sets `lost` (and ends) if another owner took it. While the store
/// is unreachable nobody else can take it either: it is renewed when the store is back.
pub fn renew_lease(
    store: Arc<dyn Store>,
    app: String,
    lease: String,
    owner: String,
    ttl_ms: u64,
    lost: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(ttl_ms / 3)).await;
            match store.try_lease(&app, &lease, &owner, ttl_ms).await {
                Ok(true) => {}
                Err(e) if e.is_transient() => {}
                _ => {
                    lost.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            }
        }
    })
}

/// Opens the backend the configuration names: Redis when a URL is given, a Redis Cluster when
/// its nodes are, else the embedded store under the data directory.
pub async fn open(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    match &config.redis_url {
        Some(url) => {
            let store = redis::RedisStore::connect(url, config.redis_pool_size).await?;
            store.migrate_endpoints().await?;
            Ok(Arc::new(store))
        }
        None if !config.redis_cluster_urls.is_empty() => {
            let store = redis::RedisStore::connect_cluster(&config.redis_cluster_urls).await?;
            store.migrate_endpoints().await?;
            Ok(Arc::new(store))
        }
        None => {
            let dir = config.data_dir.clone();
            let store = tokio::task::spawn_blocking(move || embedded::EmbeddedStore::open(&dir))
                .await
                .map_err(|e| StoreError::Backend(e.to_string()))??;
            Ok(Arc::new(store))
        }
    }
}
