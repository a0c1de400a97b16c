//! The engine: sharded workers that deliver prepared messages, apply the retry policy, and
//! record outcomes and events in batches.
//!
//! A stable hash of the recipient picks one of N shards of its channel. A shard is a tokio
//! task that owns a bounded queue: a full queue pushes back on the caller (a transactional
//! call gets RESOURCE_EXHAUSTED once its deadline would pass), so memory stays bounded. A
//! shard takes up to [`BATCH`] ready jobs at a time, sends them (SMTP batches pipeline over
//! one session), and writes their outcomes and events in one store round trip per app.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::quota::RateGate;
use super::retry::RetryPolicy;
pub use super::events::{event_for, event_prefix};
use super::events::{event_type, sms_facts};
pub use super::reply::{Reply, Tally, TallySlot};
use crate::channels::apns::{self, ApnsSender};
use crate::channels::email::dkim::DkimSigner;
use crate::channels::email::SmtpPool;
use crate::channels::fcm::FcmSender;
use crate::channels::webhook::{self, Webhook, WebhookConfig};
use crate::channels::Delivery;
use crate::domain;
use crate::proto::v1::{
    ChannelQuota, ChannelType, DeliveryStatus, Endpoint, EndpointStatus, MessageOutcome,
};
use crate::secrets::Sealer;
use crate::store::{EndpointOp, Store};

/// Jobs a shard takes at once.
pub const BATCH: usize = 64;

/// What to deliver.
#[derive(Debug)]
pub enum Payload {
    /// A whole MIME message, sent from `from` to the job's address.
    Email { from: String, mime: Vec<u8> },
    /// A custom-channel POST to the job's address (a URL).
    Custom { body: webhook::Payload },
    /// An APNs notification to the job's address (a device token).
    Apns(apns::Push),
    /// An FCM message to the job's address (a registration token).
    Gcm(crate::channels::fcm::Message),
    /// A text message to the job's address (E.164); an empty `from` takes the channel's.
    Sms(crate::channels::sms::Text),
}

/// One message on its way.
#[derive(Debug)]
pub struct Job {
    /// The outcome so far (ids, channel, address); the worker fills in the result.
    pub outcome: MessageOutcome,
    pub payload: Payload,
    pub dry_run: bool,
    pub first_attempt: Option<Instant>,
    /// Who hears how the job ended, once its outcome is recorded.
    pub reply: Option<Reply>,
    /// Counted against the app channel's quotas already by [`Engine::admit`] (campaign
    /// producers): the worker does not check them again.
    pub admitted: bool,
}

/// The engine's settings.
#[derive(Clone)]
pub struct EngineConfig {
    pub shards_per_channel: usize,
    pub queue_per_shard: usize,
    pub retry: RetryPolicy,
    pub outcome_ttl: Duration,
    /// Signs custom-channel requests when set.
    pub webhook_secret: Option<String>,
    pub webhook_timeout: Duration,
    /// Opens the secrets in apps' channel settings (`None`: settings with secrets fail).
    pub sealer: Option<Arc<Sealer>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Lane {
    Email,
    Custom,
    Apns,
    Gcm,
    Sms,
}

impl Lane {
    pub const ALL: [Lane; 5] = [Lane::Email, Lane::Custom, Lane::Apns, Lane::Gcm, Lane::Sms];

    /// The lane that delivers to a channel, if Herald delivers to it.
    pub fn of(channel: ChannelType) -> Option<Lane> {
        match channel {
            ChannelType::Email => Some(Lane::Email),
            ChannelType::Custom => Some(Lane::Custom),
            ChannelType::Apns | ChannelType::ApnsSandbox | ChannelType::ApnsVoip | ChannelType::ApnsVoipSandbox => Some(Lane::Apns),
            ChannelType::Gcm => Some(Lane::Gcm),
            ChannelType::Sms => Some(Lane::Sms),
            _ => None,
        }
    }

    /// The channel name its quotas are kept under.
    pub fn quota_channel(self) -> &'static str {
        match self {
            Lane::Email => "EMAIL",
            Lane::Custom => "CUSTOM",
            Lane::Apns => "APNS",
            Lane::Gcm => "GCM",
            Lane::Sms => "SMS",
        }
    }
}

pub struct Engine {
    lanes: HashMap<Lane, Vec<mpsc::Sender<Job>>>,
    shared: Arc<Shared>,
    /// Set once by [`Engine::stop`]: when the shards must be done.
    stop_at: tokio::sync::watch::Sender<Option<Instant>>,
    /// The shard tasks, awaited by [`Engine::stop`].
    workers: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// FNV-1a: stable across processes, so a recipient always lands on the same shard.
pub fn shard_of(key: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n.max(1) as u64) as usize
}

struct Shared {
    store: Arc<dyn Store>,
    smtp: Option<Arc<SmtpPool>>,
    config: EngineConfig,
    quotas: Quotas,
    /// Each app's channel settings, refreshed like its quotas.
    channels: parking_lot::Mutex<HashMap<String, (Instant, AppChannels)>>,
    /// The HTTP client every webhook shares (`None` if it could not be built).
    http: Option<reqwest::Client>,
    /// SMTP pools of apps with their own relay, by relay settings.
    pools: parking_lot::Mutex<HashMap<String, Arc<SmtpPool>>>,
    /// Each app's APNs sender and the settings it was built from.
    apns: Built<ApnsSender>,
    /// Each app's FCM sender (holding its access token) and the settings it was built from.
    fcm: Built<FcmSender>,
    /// Each app's DKIM keys and the settings they were read from.
    dkim: Built<DkimSigner>,
    /// `Some(deadline)` once the engine is stopping.
    stopping: tokio::sync::watch::Receiver<Option<Instant>>,
}


mod channels;
use channels::{AppChannels, Built};

/// A relay's pool and the jobs going through it.
type RelayBatch = (Arc<SmtpPool>, Vec<usize>);


/// How long an app's channel quotas are used before they are read again: quota changes take
/// effect within this time, without a restart.
const QUOTA_REFRESH: Duration = Duration::from_secs(1);

/// An app's channel quotas and when they were read.
type AppQuotas = (Instant, HashMap<String, ChannelQuota>);
/// A rate gate and the quota it was built from, by (app, channel).
type Gates = HashMap<(String, String), (ChannelQuota, Arc<RateGate>)>;

/// Each app's channel quotas (refreshed from its settings) and rate gates, shared by shards.
#[derive(Default)]
struct Quotas {
    settings: parking_lot::Mutex<HashMap<String, AppQuotas>>,
    gates: parking_lot::Mutex<Gates>,
}

impl Shared {
    async fn quota(&self, app: &str, channel: &str) -> Option<ChannelQuota> {
        let cached =
            self.quotas.settings.lock().get(app).filter(|(at, _)| at.elapsed() < QUOTA_REFRESH).map(|(_, q)| q.get(channel).copied());
        let quotas = match cached {
            Some(q) => return q,
            None => match self.store.get_app(app).await {
                Ok(Some(a)) => a.settings.map(|s| s.channel_quotas).unwrap_or_default(),
                _ => HashMap::new(),
            },
        };
        let q = quotas.get(channel).copied();
        self.quotas.settings.lock().insert(app.to_string(), (Instant::now(), quotas));
        q
    }

    /// The rate gate of an app channel, rebuilt when its quota changed.
    fn gate(&self, app: &str, channel: &str, q: &ChannelQuota) -> Arc<RateGate> {
        let mut gates = self.quotas.gates.lock();
        let key = (app.to_string(), channel.to_string());
        if let Some((seen, gate)) = gates.get(&key) {
            if seen == q {
                return gate.clone();
            }
        }
        let rate = q.messages_per_second.and_then(|r| u32::try_from(r).ok());
        let gate = Arc::new(RateGate::new(rate, q.burst.and_then(|b| u32::try_from(b).ok())));
        gates.insert(key, (*q, gate.clone()));
        gate
    }

    /// Which jobs are over their app channel's quota (with why). A transactional message over a
    /// quota is THROTTLED, not queued.
    async fn over_quota(&self, jobs: &[Job]) -> Vec<Option<String>> {
        let mut out = vec![None; jobs.len()];
        let mut groups: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        for (i, j) in jobs.iter().enumerate() {
            groups.entry((j.outcome.app_id.as_str(), j.outcome.channel.as_str())).or_default().push(i);
        }
        let hour = chrono::Utc::now().timestamp() / 3600;
        for ((app, channel), idx) in groups {
            let Some(q) = self.quota(app, channel).await else { continue };
            let mut allowed = Vec::with_capacity(idx.len());
            if q.messages_per_second.is_some() {
                let gate = self.gate(app, channel, &q);
                for i in idx {
                    match gate.try_take() {
                        Ok(()) => allowed.push(i),
                        Err(wait) => {
                            out[i] = Some(format!(
                                "over the app's {channel} quota of {} messages per second; retry in {} ms",
                                q.messages_per_second.unwrap_or(0),
                                wait.as_millis().max(1)
                            ))
                        }
                    }
                }
            } else {
                allowed = idx;
            }
            if (q.daily.is_some() || q.total.is_some()) && !allowed.is_empty() {
                let limit = |v: Option<i64>| v.map(|n| n.max(0) as u64);
                let granted = match self.store.take_quota(app, channel, allowed.len() as u64, limit(q.daily), limit(q.total), hour).await {
                    Ok(g) => g as usize,
                    Err(e) => {
                        tracing::warn!(error = %e, "Cannot check quota.");
                        0
                    }
                };
                for &i in &allowed[granted.min(allowed.len())..] {
                    out[i] = Some(format!("over the app's {channel} daily or total quota"));
                }
            }
        }
        out
    }
}

impl Engine {
    pub fn start(store: Arc<dyn Store>, smtp: Option<Arc<SmtpPool>>, config: EngineConfig) -> Arc<Self> {
        let (stop_at, stopping) = tokio::sync::watch::channel(None);
        let shared = Arc::new(Shared {
            stopping,
            store,
            smtp,
            config: config.clone(),
            quotas: Quotas::default(),
            channels: parking_lot::Mutex::new(HashMap::new()),
            http: Webhook::client(config.webhook_timeout)
                .inspect_err(|e| tracing::error!(error = %e, "Cannot build the webhook client."))
                .ok(),
            pools: parking_lot::Mutex::new(HashMap::new()),
            apns: Built::default(),
            fcm: Built::default(),
            dkim: Built::default(),
        });
        let mut lanes = HashMap::new();
        let mut workers = Vec::new();
        for lane in Lane::ALL {
            let mut senders = Vec::new();
            for _ in 0..config.shards_per_channel.max(1) {
                let (tx, rx) = mpsc::channel(config.queue_per_shard.max(1));
                workers.push(tokio::spawn(worker(shared.clone(), lane, senders.len(), rx)));
                senders.push(tx);
            }
            lanes.insert(lane, senders);
        }
        Arc::new(Self { lanes, shared, stop_at, workers: parking_lot::Mutex::new(workers) })
    }

    /// Stops taking jobs and lets every shard finish what it holds by `deadline`: queued jobs
    /// are sent, retries due by then are made, later ones handed back (see [`shard`]), and
    /// every outcome is recorded. Returns whether all shards finished in time.
    pub async fn stop(&self, deadline: Instant) -> bool {
        self.stop_at.send_replace(Some(deadline));
        let workers = std::mem::take(&mut *self.workers.lock());
        // Recording may run a little past the deadline: its last store call is let finish.
        let finished = tokio::time::timeout_at(deadline + Duration::from_secs(2), futures::future::join_all(workers)).await;
        finished.is_ok()
    }

    /// Whether [`Engine::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stop_at.borrow().is_some()
    }

    /// The most messages of one channel that can be at a provider with their outcomes not yet
    /// recorded: per shard, the batch being sent and the batches being recorded. After a crash,
    /// at most this many messages of a run can go twice.
    pub fn repeat_bound(&self) -> u64 {
        (self.shared.config.shards_per_channel.max(1) * BATCH * (1 + shard::RECORDING)) as u64
    }

    /// Queues every job or none: room is reserved on each job's shard first (waiting at most
    /// `wait` in all), and only when all of it is held are the jobs queued. Hands every job
    /// back when some shard stays full or the engine is stopping.
    pub async fn submit_all(&self, jobs: Vec<(Lane, Job)>, wait: Duration) -> Result<(), Vec<(Lane, Job)>> {
        let deadline = Instant::now() + wait;
        let mut counts: std::collections::BTreeMap<(usize, usize), usize> = std::collections::BTreeMap::new();
        let place = |lane: Lane, job: &Job| {
            let shards = &self.lanes[&lane];
            let key = if job.outcome.endpoint_id.is_empty() { &job.outcome.address } else { &job.outcome.endpoint_id };
            (lane as usize, shard_of(key, shards.len()))
        };
        for (lane, job) in &jobs {
            *counts.entry(place(*lane, job)).or_insert(0) += 1;
        }
        let mut permits = HashMap::new();
        // Shards in one order for every caller, so two calls never hold each other's room.
        for (&(lane, shard), &n) in &counts {
            let tx = &self.lanes[&Lane::ALL[lane]][shard];
            if n > tx.max_capacity() {
                return Err(jobs);
            }
            let reserved = match tx.try_reserve_many(n) {
                Ok(p) => Some(p),
                Err(mpsc::error::TrySendError::Closed(())) => None,
                Err(mpsc::error::TrySendError::Full(())) => tokio::time::timeout_at(deadline, tx.reserve_many(n)).await.ok().and_then(Result::ok),
            };
            match reserved {
                Some(p) => {
                    permits.insert((lane, shard), p);
                }
                None => return Err(jobs),
            }
        }
        for (lane, job) in jobs {
            let at = place(lane, &job);
            permits.get_mut(&at).and_then(Iterator::next).expect("room was reserved for every job").send(job);
        }
        Ok(())
    }

    /// Room for `n` messages of a producer that waits rather than being THROTTLED (a campaign
    /// run): waits until the app channel's messages-per-second bucket has a token for each,
    /// then takes all `n` from its daily and total counters in one store call. Returns how many
    /// may go; fewer than `n` means the daily or total quota is used up and the producer stops
    /// (jobs it then submits carry `admitted`, so the worker does not count them again).
    pub async fn admit(&self, app: &str, channel: &str, n: u64) -> Result<u64, crate::store::StoreError> {
        let Some(q) = self.shared.quota(app, channel).await else { return Ok(n) };
        if q.messages_per_second.is_some() {
            let gate = self.shared.gate(app, channel, &q);
            for _ in 0..n {
                gate.take().await;
            }
        }
        if q.daily.is_none() && q.total.is_none() {
            return Ok(n);
        }
        let limit = |v: Option<i64>| v.map(|n| n.max(0) as u64);
        let hour = chrono::Utc::now().timestamp() / 3600;
        self.shared.store.take_quota(app, channel, n, limit(q.daily), limit(q.total), hour).await
    }

    /// Queues a job on its recipient's shard, waiting at most `wait` for room; hands the job
    /// back when the shard stays full.
    pub async fn submit(&self, lane: Lane, job: Job, wait: Duration) -> Result<(), Job> {
        let shards = &self.lanes[&lane];
        let key = if job.outcome.endpoint_id.is_empty() { &job.outcome.address } else { &job.outcome.endpoint_id };
        let tx = &shards[shard_of(key, shards.len())];
        // Room in the queue is the common case: no timer for it.
        let job = match tx.try_send(job) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(j)) => return Err(j),
            Err(mpsc::error::TrySendError::Full(j)) => j,
        };
        tx.send_timeout(job, wait).await.map_err(|e| match e {
            mpsc::error::SendTimeoutError::Timeout(j) | mpsc::error::SendTimeoutError::Closed(j) => j,
        })
    }
}

/// Applies a delivery to an outcome; `Some(delay)` when it should be tried again.
fn settle(job: &mut Job, d: &Delivery, policy: &RetryPolicy, now: &str) -> Option<Duration> {
    let first = *job.first_attempt.get_or_insert_with(Instant::now);
    job.outcome.attempts += 1;
    let o = &mut job.outcome;
    o.status_code = i32::from(d.status_code());
    o.updated_date.clear();
    o.updated_date.push_str(now);
    let retry = |after: Option<Duration>, r: f64| policy.next_delay(o.attempts as u32, first.elapsed(), after, r);
    match d {
        Delivery::Delivered { message, provider_id, .. } => {
            o.delivery_status = DeliveryStatus::Successful as i32;
            o.status_message = message.clone();
            o.provider_message_id = provider_id.clone().unwrap_or_default();
            None
        }
        Delivery::Permanent { message, .. } => {
            o.delivery_status = DeliveryStatus::PermanentFailure as i32;
            o.status_message = message.clone();
            None
        }
        Delivery::Retry { message, retry_after, .. } => {
            o.delivery_status = DeliveryStatus::TemporaryFailure as i32;
            o.status_message = message.clone();
            retry(*retry_after, rand::random())
        }
        Delivery::Throttled { message, retry_after, .. } => {
            o.delivery_status = DeliveryStatus::Throttled as i32;
            o.status_message = message.clone();
            retry(*retry_after, rand::random())
        }
    }
}

/// A shard's metric handles, resolved once.
struct ShardMetrics {
    by_status: HashMap<i32, metrics::Counter>,
    send: metrics::Histogram,
    depth: metrics::Gauge,
    saturation: metrics::Gauge,
    limiter: metrics::Counter,
    retries: metrics::Counter,
    record: metrics::Histogram,
}

impl ShardMetrics {
    fn new(lane: Lane, shard: usize, backend: &'static str) -> Self {
        use crate::telemetry as t;
        let channel = lane.quota_channel();
        let by_status = (1..=7)
            .filter_map(|v| DeliveryStatus::try_from(v).ok())
            .map(|s| {
                let name = s.as_str_name().trim_start_matches("DELIVERY_STATUS_");
                (s as i32, metrics::counter!(t::MESSAGES, "channel" => channel, "status" => name))
            })
            .collect();
        let shard = shard.to_string();
        Self {
            by_status,
            send: metrics::histogram!(t::SEND_DURATION, "channel" => channel),
            depth: metrics::gauge!(t::QUEUE_DEPTH, "channel" => channel, "shard" => shard.clone()),
            saturation: metrics::gauge!(t::QUEUE_SATURATION, "channel" => channel, "shard" => shard),
            limiter: metrics::counter!(t::LIMITER_WAITS, "channel" => channel),
            retries: metrics::counter!(t::RETRIES, "channel" => channel),
            record: metrics::histogram!(t::STORE_DURATION, "backend" => backend, "op" => "record_outcomes"),
        }
    }
}

mod shard;
use shard::worker;

async fn deliver(shared: &Shared, lane: Lane, jobs: &[Job]) -> Vec<Delivery> {
    let dry = |_: &Job| Delivery::Delivered { status_code: 0, message: "dry run: not sent".into(), provider_id: None };
    match lane {
        Lane::Email => {
            let mut out: Vec<Option<Delivery>> = jobs.iter().map(|j| j.dry_run.then(|| dry(j))).collect();
            // One pipelined batch per (relay, sender address).
            let mut groups: HashMap<(usize, &str), RelayBatch> = HashMap::new();
            type AppEmail = (Result<Arc<SmtpPool>, String>, Option<Arc<DkimSigner>>);
            let mut apps: HashMap<&str, AppEmail> = HashMap::new();
            let mut to_sign = Vec::new();
            for (i, j) in jobs.iter().enumerate() {
                let app = j.outcome.app_id.as_str();
                if !apps.contains_key(app) {
                    let c = shared.app_channels(app).await;
                    let signer = match &c.email {
                        Some(Ok(email)) => shared.dkim_signer(app, email),
                        _ => None,
                    };
                    apps.insert(app, (shared.pool_for(&c.email), signer));
                }
                match (&apps[app], &j.payload) {
                    ((Err(why), _), _) if out[i].is_none() => {
                        out[i] = Some(Delivery::Permanent { status_code: 0, message: why.clone(), hard_bounce: false })
                    }
                    ((Ok(pool), signer), Payload::Email { from, mime }) if out[i].is_none() => {
                        if let Some(signer) = signer.as_ref().filter(|s| s.key_for(from).is_some()) {
                            to_sign.push((i, signer.clone(), from.clone(), mime.clone()));
                        }
                        groups.entry((Arc::as_ptr(pool) as usize, from.as_str())).or_insert_with(|| (pool.clone(), Vec::new())).1.push(i);
                    }
                    _ => {}
                }
            }
            // DKIM signatures (RSA takes a while) are made off the async workers.
            let mut signed: Vec<Option<Vec<u8>>> = vec![None; jobs.len()];
            if !to_sign.is_empty() {
                let now = chrono::Utc::now().timestamp();
                let sign = move || to_sign.into_iter().map(|(i, s, from, mime)| (i, s.sign(&from, &mime, now))).collect::<Vec<_>>();
                match tokio::task::spawn_blocking(sign).await {
                    Ok(done) => done.into_iter().for_each(|(i, m)| signed[i] = m),
                    Err(e) => tracing::error!(error = %e, "DKIM signing failed."),
                }
            }
            for ((_, from), (pool, idx)) in groups {
                let items: Vec<(&str, &[u8])> = idx
                    .iter()
                    .map(|&i| match (&jobs[i].payload, &signed[i]) {
                        (_, Some(m)) => (jobs[i].outcome.address.as_str(), m.as_slice()),
                        (Payload::Email { mime, .. }, None) => (jobs[i].outcome.address.as_str(), mime.as_slice()),
                        _ => unreachable!("email lane"),
                    })
                    .collect();
                for (i, d) in idx.into_iter().zip(pool.send_batch(from, &items).await) {
                    out[i] = Some(d);
                }
            }
            out.into_iter()
                .map(|d| d.unwrap_or(Delivery::Permanent { status_code: 0, message: "not an email".into(), hard_bounce: false }))
                .collect()
        }
        Lane::Custom => {
            let mut futures = Vec::with_capacity(jobs.len());
            for j in jobs {
                let app = shared.app_channels(&j.outcome.app_id).await;
                let unusable = match &app.custom {
                    Some(Err(why)) => Some(why.clone()),
                    Some(Ok(c)) if !c.enabled => Some("the app's custom channel is disabled".to_string()),
                    _ => None,
                };
                let disabled = unusable.is_some();
                let secret = app
                    .custom
                    .as_ref()
                    .and_then(|c| c.as_ref().ok())
                    .map(|c| c.signing_secret.clone())
                    .filter(|s| !s.is_empty())
                    .or_else(|| shared.config.webhook_secret.clone())
                    .unwrap_or_default();
                let hook = match (&j.payload, j.dry_run || disabled, &shared.http) {
                    (Payload::Custom { .. }, false, Some(http)) => {
                        let config = WebhookConfig { url: j.outcome.address.clone(), secret, timeout: shared.config.webhook_timeout };
                        Some(Webhook::with_client(config, http.clone()))
                    }
                    _ => None,
                };
                futures.push(async move {
                    match (&j.payload, hook) {
                        (_, _) if j.dry_run => dry(j),
                        (_, _) if disabled => {
                            Delivery::Permanent { status_code: 0, message: unusable.unwrap_or_default(), hard_bounce: false }
                        }
                        (Payload::Custom { body }, Some(h)) => h.send(body).await,
                        _ => Delivery::Permanent {
                            status_code: 0,
                            message: "cannot deliver to this custom address".into(),
                            hard_bounce: false,
                        },
                    }
                });
            }
            futures::future::join_all(futures).await
        }
        Lane::Apns | Lane::Gcm | Lane::Sms => {
            let mut futures = Vec::with_capacity(jobs.len());
            for j in jobs {
                let app = shared.app_channels(&j.outcome.app_id).await;
                futures.push(async move {
                    if j.dry_run {
                        dry(j)
                    } else {
                        provider_send(lane, &app, j).await
                    }
                });
            }
            futures::future::join_all(futures).await
        }
    }
}

fn permanent(message: String) -> Delivery {
    Delivery::Permanent { status_code: 0, message, hard_bounce: false }
}

/// An app's sender for a channel, or the delivery that says why there is none.
fn usable<'a, S>(channel: &'a Option<Result<Arc<S>, String>>, label: &str) -> Result<&'a Arc<S>, Delivery> {
    match channel {
        None => Err(permanent(format!("no {label} channel is configured for this app"))),
        Some(Err(why)) => Err(permanent(why.clone())),
        Some(Ok(sender)) => Ok(sender),
    }
}

/// One message to a push or SMS provider through the app's channel.
async fn provider_send(lane: Lane, app: &AppChannels, j: &Job) -> Delivery {
    let sent = match (lane, &j.payload) {
        (Lane::Apns, Payload::Apns(push)) => match usable(&app.apns, "APNs") {
            Ok(sender) => Ok(sender.send(push, &j.outcome.message_id).await),
            Err(d) => Err(d),
        },
        (Lane::Gcm, Payload::Gcm(m)) => match usable(&app.gcm, "GCM") {
            Ok(sender) => Ok(sender.send(m).await),
            Err(d) => Err(d),
        },
        (Lane::Sms, Payload::Sms(text)) => match usable(&app.sms, "SMS") {
            Ok(sender) => Ok(sender.send(text).await),
            Err(d) => Err(d),
        },
        _ => Err(permanent("the message does not match its channel".into())),
    };
    sent.unwrap_or_else(|d| d)
}

/// Makes endpoints INACTIVE (their other fields unchanged); endpoints deleted meanwhile are
/// skipped.
pub async fn deactivate(store: &dyn Store, app: &str, ids: Vec<String>) -> Result<(), crate::store::StoreError> {
    let writes =
        ids.into_iter().map(|id| Endpoint { id, endpoint_status: EndpointStatus::Inactive as i32, ..Default::default() }).collect();
    let now = domain::timestamp(chrono::Utc::now());
    store
        .write_endpoints(app, EndpointOp::Upsert { writes, all_or_nothing: false, now, request_id: "provider-feedback".into() })
        .await
        .map(|_| ())
}


/// Whether a channel's address is a push token (a dead one makes its endpoint INACTIVE).
fn is_push(channel: &str) -> bool {
    channel.starts_with("APNS") || channel == "GCM" || channel == "BAIDU" || channel == "ADM"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("ep-1", 8), shard_of("ep-1", 8));
        let mut counts = [0; 8];
        for i in 0..8_000 {
            counts[shard_of(&format!("ep-{i}"), 8)] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}
