//! The engine: sharded workers that deliver prepared messages, apply the retry policy, and
//! record outcomes and events in batches.
//!
//! A stable hash of the recipient picks one of N shards of its channel. A shard is a tokio
//! task that owns a bounded queue: a full queue pushes back on the caller (a transactional
//! call gets RESOURCE_EXHAUSTED once its deadline would pass), so memory stays bounded. A
//! shard takes up to [`BATCH`] ready jobs at a time, sends them (a relay's batch pipelines over
//! one session), and writes their outcomes and events in one store round trip per app.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::quota::{RateGate, SharedRate};
pub use super::reply::{Reply, Tally, TallySlot};
use super::retry::RetryPolicy;
use crate::channels::senders::Senders;
use crate::channels::{Delivery, Outbound};
pub use crate::channels::{Lane, Payload};
use crate::outcomes::Recorder;
use crate::proto::v1::{ChannelQuota, DeliveryStatus, MessageOutcome};
use crate::store::Store;

/// Jobs a shard takes at once.
pub const BATCH: usize = 64;

/// One message on its way.
#[derive(Debug)]
pub struct Job {
    /// The outcome so far (ids, channel, address); the worker fills in the result. Boxed: a
    /// job moves through the planner, its shard's queue and its batch, and the outcome is most
    /// of its size.
    pub outcome: Box<MessageOutcome>,
    pub payload: Payload,
    pub dry_run: bool,
    pub first_attempt: Option<Instant>,
    /// Who hears how the job ended, once its outcome is recorded.
    pub reply: Option<Reply>,
    /// Not sent before this (a kept retry, resumed before it is due).
    pub not_before: Option<Instant>,
    /// A retry kept in the store at a stop: its record goes once its outcome is final.
    pub kept: bool,
}

/// The engine's settings.
#[derive(Clone)]
pub struct EngineConfig {
    pub shards_per_channel: usize,
    pub queue_per_shard: usize,
    pub retry: RetryPolicy,
    pub outcome_ttl: Duration,
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
    config: EngineConfig,
    quotas: Quotas,
    /// The channels' senders: a shard hands them its batch.
    senders: Senders,
    /// Writes each settled batch.
    recorder: Recorder,
    /// `Some(deadline)` once the engine is stopping.
    stopping: tokio::sync::watch::Receiver<Option<Instant>>,
}

/// How long an app's channel quotas are used before they are read again: quota changes take
/// effect within this time, without a restart.
const QUOTA_REFRESH: Duration = Duration::from_secs(1);

/// An app's channel quotas and when they were read.
type AppQuotas = (Instant, HashMap<String, ChannelQuota>);
/// An app channel's messages-per-second gates: this daemon's pace, and the quota shared with
/// every daemon on the store.
struct ChannelGate {
    local: RateGate,
    shared: SharedRate,
}

/// A channel's gates and the quota they were built from, by (app, channel).
type Gates = HashMap<(String, String), (ChannelQuota, Arc<ChannelGate>)>;

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
                Ok(None) => HashMap::new(),
                // The store cannot be reached: the quotas read last still hold.
                Err(_) => match self.quotas.settings.lock().get(app) {
                    Some((_, q)) => return q.get(channel).copied(),
                    None => HashMap::new(),
                },
            },
        };
        let q = quotas.get(channel).copied();
        self.quotas.settings.lock().insert(app.to_string(), (Instant::now(), quotas));
        q
    }

    /// The rate gate of an app channel, rebuilt when its quota changed.
    fn gate(&self, app: &str, channel: &str, q: &ChannelQuota) -> Arc<ChannelGate> {
        let mut gates = self.quotas.gates.lock();
        let key = (app.to_string(), channel.to_string());
        if let Some((seen, gate)) = gates.get(&key) {
            if seen == q {
                return gate.clone();
            }
        }
        let rate = q.messages_per_second.and_then(|r| u32::try_from(r).ok());
        let gate = Arc::new(ChannelGate {
            local: RateGate::new(rate, q.burst.and_then(|b| u32::try_from(b).ok())),
            shared: SharedRate::new(rate.unwrap_or(1)),
        });
        gates.insert(key, (*q, gate.clone()));
        gate
    }

    /// Which jobs are over their app channel's quota (with why): the admission of a producer
    /// that does not wait ([`Engine::submit_all`]); such a message is THROTTLED, not queued.
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
                    let taken = match gate.local.try_take() {
                        Ok(()) => gate.shared.take(self.store.as_ref(), app, channel).await,
                        Err(wait) => Err(wait),
                    };
                    match taken {
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
    /// Starts the shards of every channel; they hand their batches to `senders`.
    pub fn start(store: Arc<dyn Store>, senders: Senders, config: EngineConfig) -> Arc<Self> {
        let (stop_at, stopping) = tokio::sync::watch::channel(None);
        let recorder = Recorder::new(store.clone(), config.outcome_ttl);
        let shared = Arc::new(Shared { stopping, store, config: config.clone(), quotas: Quotas::default(), senders, recorder });
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

    /// Queues every job or none, for a producer that does not wait (a transactional call): room
    /// is reserved on each job's shard first (waiting at most `wait` in all); only when all of
    /// it is held are the app channels' quotas taken ([`Shared::over_quota`], one path for
    /// every such producer) and the jobs queued. Returns the jobs over a quota, with why (they
    /// end THROTTLED; their room is given back); hands every job back, nothing taken, when some
    /// shard stays full or the engine is stopping.
    pub async fn submit_all(&self, jobs: Vec<(Lane, Job)>, wait: Duration) -> Result<Vec<(Job, String)>, Vec<(Lane, Job)>> {
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
                Err(mpsc::error::TrySendError::Full(())) => {
                    tokio::time::timeout_at(deadline, tx.reserve_many(n)).await.ok().and_then(Result::ok)
                }
            };
            match reserved {
                Some(p) => {
                    permits.insert((lane, shard), p);
                }
                None => return Err(jobs),
            }
        }
        let (lanes, jobs): (Vec<Lane>, Vec<Job>) = jobs.into_iter().unzip();
        let over = self.shared.over_quota(&jobs).await;
        let mut throttled = Vec::new();
        for ((lane, job), over) in lanes.into_iter().zip(jobs).zip(over) {
            if let Some(why) = over {
                metrics::counter!(crate::telemetry::LIMITER_WAITS, "channel" => lane.quota_channel()).increment(1);
                throttled.push((job, why));
                continue;
            }
            let at = place(lane, &job);
            permits.get_mut(&at).and_then(Iterator::next).expect("room was reserved for every job").send(job);
        }
        Ok(throttled)
    }

    /// Room for `n` messages of a producer that waits rather than being THROTTLED (a campaign
    /// run): waits until the app channel's messages-per-second bucket has a token for each,
    /// then takes all `n` from its daily and total counters in one store call. Returns how many
    /// may go; fewer than `n` means the daily or total quota is used up and the producer stops
    /// (the shards never count a job again).
    pub async fn admit(&self, app: &str, channel: &str, n: u64) -> Result<u64, crate::store::StoreError> {
        let Some(q) = self.shared.quota(app, channel).await else { return Ok(n) };
        if q.messages_per_second.is_some() {
            let gate = self.shared.gate(app, channel, &q);
            for _ in 0..n {
                gate.local.take().await;
                while let Err(wait) = gate.shared.take(self.shared.store.as_ref(), app, channel).await {
                    tokio::time::sleep(wait).await;
                }
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
fn settle(job: &mut Job, d: Delivery, policy: &RetryPolicy, now: &str) -> Option<Duration> {
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
            o.status_message = message;
            o.provider_message_id = provider_id.unwrap_or_default();
            None
        }
        Delivery::Permanent { message, .. } => {
            o.delivery_status = DeliveryStatus::PermanentFailure as i32;
            o.status_message = message;
            None
        }
        Delivery::Retry { message, retry_after, .. } => {
            o.delivery_status = DeliveryStatus::TemporaryFailure as i32;
            o.status_message = message;
            retry(retry_after, rand::random())
        }
        Delivery::Throttled { message, retry_after, .. } => {
            o.delivery_status = DeliveryStatus::Throttled as i32;
            o.status_message = message;
            retry(retry_after, rand::random())
        }
    }
}

/// A shard's metric handles, resolved once.
struct ShardMetrics {
    by_status: HashMap<i32, metrics::Counter>,
    send: metrics::Histogram,
    depth: metrics::Gauge,
    saturation: metrics::Gauge,
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
            retries: metrics::counter!(t::RETRIES, "channel" => channel),
            record: metrics::histogram!(t::STORE_DURATION, "backend" => backend, "op" => "record_outcomes"),
        }
    }
}

pub mod parked;
mod shard;
use shard::worker;

/// Hands a batch to its channel's senders.
async fn deliver(shared: &Shared, lane: Lane, jobs: &[Job]) -> Vec<Delivery> {
    let batch: Vec<Outbound<'_>> = jobs
        .iter()
        .map(|j| Outbound {
            app_id: &j.outcome.app_id,
            address: &j.outcome.address,
            message_id: &j.outcome.message_id,
            payload: &j.payload,
            dry_run: j.dry_run,
        })
        .collect();
    shared.senders.deliver(lane, &batch).await
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
