//! One shard: takes ready jobs from its bounded queue in batches, sends them, applies the retry
//! policy, and records outcomes beside sending the next batch.
//!
//! Retries wait in the shard's own delay queue (bounded: while it is full the shard takes no
//! new work, only due retries), never in detached tasks, so a stop sees every job the shard
//! holds. On [`super::Engine::stop`] the shard closes its queue, sends what is queued, makes
//! the retries due before the deadline, and hands back those due after it: a campaign job goes
//! back unsettled (its run sends it again when it resumes), a transactional one is recorded
//! with its last status and why it was not retried. Every outcome is recorded before the shard
//! ends; a store that is unreachable is retried with backoff until the deadline, so outcomes
//! wait in memory (at most [`RECORDING`] batches per shard, then the shard stops taking work)
//! and are never dropped while the daemon runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{deliver, settle, Job, Lane, Payload, Reply, ShardMetrics, Shared, BATCH};
use crate::channels::Delivery;
use crate::domain;
use crate::outcomes::{sms_facts, Batch, Slot};
use crate::proto::v1::MessageOutcome;

/// Batches of outcomes a shard may be recording while it sends the next.
pub(super) const RECORDING: usize = 2;

/// Jobs waiting for their next attempt, by due time (then arrival, so equal times keep order).
struct Delays {
    jobs: BTreeMap<(Instant, u64), Job>,
    seq: u64,
    bound: usize,
}

impl Delays {
    fn new(bound: usize) -> Self {
        Self { jobs: BTreeMap::new(), seq: 0, bound: bound.max(1) }
    }

    fn push(&mut self, due: Instant, job: Job) {
        self.seq += 1;
        self.jobs.insert((due, self.seq), job);
    }

    fn has_room(&self) -> bool {
        self.jobs.len() < self.bound
    }

    fn next_due(&self) -> Option<Instant> {
        self.jobs.keys().next().map(|(at, _)| *at)
    }

    /// Moves up to `max` jobs due by `now` into `out`.
    fn take_due(&mut self, now: Instant, max: usize, out: &mut Vec<Job>) {
        while out.len() < max {
            match self.jobs.first_entry() {
                Some(e) if e.key().0 <= now => out.push(e.remove()),
                _ => return,
            }
        }
    }

    /// Every job due after `deadline`, with when it is due.
    fn take_after(&mut self, deadline: Instant) -> Vec<(Instant, Job)> {
        let later = self.jobs.split_off(&(deadline, u64::MAX));
        later.into_iter().map(|((due, _), job)| (due, job)).collect()
    }
}

/// What a settled batch writes, and who waits for which outcome.
#[derive(Default)]
struct Settled {
    batch: Batch,
    replies: Vec<(Option<Reply>, Slot)>,
    /// Retries due after the stop, to keep in the store (their outcome is recorded once, when
    /// it is final): the stored form, and the outcome as it stands for whoever waits.
    keep: Vec<(Vec<u8>, MessageOutcome, Option<Reply>)>,
    /// Kept retries whose outcome is now final: app, message id.
    release: Vec<(String, String)>,
}

impl Settled {
    fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.replies.is_empty() && self.keep.is_empty()
    }

    /// A job whose outcome is final.
    fn finish(&mut self, job: Job, hard: bool) {
        if job.kept {
            self.release.push((job.outcome.app_id.clone(), job.outcome.message_id.clone()));
        }
        self.record(job, hard);
    }

    /// A job's outcome, as it stands, to record.
    fn record(&mut self, mut job: Job, hard: bool) {
        let payload = &job.payload;
        let slot = self.batch.delivered(*job.outcome, hard, |o, event| {
            if let Payload::Sms(text) = payload {
                sms_facts(o, event, text);
            }
        });
        self.replies.push((job.reply.take(), slot));
    }
}

/// Hands back jobs whose retry falls after the stop deadline: campaign jobs go back unsettled
/// (dropping their tally slot says so; the run sends them again when it resumes); transactional
/// ones are kept in the store ([`super::parked`]) and made at the next start, their outcome
/// recorded as it stands meanwhile.
fn hand_back(lane: Lane, jobs: Vec<(Instant, Job)>, settled: &mut Settled) {
    for (due, mut job) in jobs {
        if matches!(job.reply, Some(Reply::Tally(_))) {
            continue;
        }
        let kept = super::parked::encode(lane, &job, due);
        let mut o = std::mem::take(&mut *job.outcome);
        o.status_message = format!("{} (retry due after the daemon stopped: kept, and made when it starts again)", o.status_message);
        settled.keep.push((kept, o, job.reply.take()));
    }
}

pub(super) async fn worker(shared: Arc<Shared>, lane: Lane, shard: usize, mut rx: mpsc::Receiver<Job>) {
    let mut buf = Vec::with_capacity(BATCH);
    let m = Arc::new(ShardMetrics::new(lane, shard, shared.store.backend()));
    let recording = Arc::new(tokio::sync::Semaphore::new(RECORDING));
    let mut delays = Delays::new(shared.config.queue_per_shard);
    let mut stop = shared.stopping.clone();
    let mut deadline: Option<Instant> = None;
    let mut open = true;
    loop {
        let due = delays.next_due();
        let mut late = Vec::new();
        tokio::select! {
            biased;
            r = stop.wait_for(Option::is_some), if deadline.is_none() => {
                let at = r.ok().and_then(|d| *d).unwrap_or_else(Instant::now);
                deadline = Some(at);
                // No new work; what is queued is still received and sent.
                rx.close();
                late = delays.take_after(at);
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                delays.take_due(Instant::now(), BATCH, &mut buf);
            }
            n = rx.recv_many(&mut buf, BATCH), if open && delays.has_room() => {
                open = n > 0;
            }
            else => break,
        }
        // Kept retries resumed before they are due wait in the delay queue.
        let now = Instant::now();
        let mut i = 0;
        while i < buf.len() {
            match buf[i].not_before.take() {
                Some(at) if at > now => delays.push(at, buf.swap_remove(i)),
                _ => i += 1,
            }
        }
        let mut settled = Settled::default();
        hand_back(lane, late, &mut settled);
        if !buf.is_empty() {
            let queued = rx.len();
            m.depth.set(queued as f64);
            m.saturation.set(queued as f64 / rx.max_capacity().max(1) as f64);
            let jobs = std::mem::take(&mut buf);
            send_batch(&shared, &m, lane, jobs, &mut delays, deadline, &mut settled).await;
        }
        if !settled.is_empty() {
            // Outcomes are recorded (and waiters answered) beside the next batch's sending, at
            // most RECORDING batches at a time per shard.
            let permit = recording.clone().acquire_owned().await.expect("the shard's semaphore is never closed");
            let (shared, m) = (shared.clone(), m.clone());
            tokio::spawn(async move {
                record_and_reply(&shared, &m, settled).await;
                drop(permit);
            });
        }
        if !open && delays.next_due().is_none() {
            break;
        }
    }
    // Every batch's outcomes are recorded before the shard is done.
    let _all = recording.acquire_many(RECORDING as u32).await;
}

/// Sends one batch: quota checks for fresh transactional jobs, the channel's send, then each
/// job settles — final, or into the delay queue (handed back when its retry falls after the
/// stop deadline).
async fn send_batch(
    shared: &Shared,
    m: &ShardMetrics,
    lane: Lane,
    jobs: Vec<Job>,
    delays: &mut Delays,
    deadline: Option<Instant>,
    settled: &mut Settled,
) {
    // Quotas were taken when the jobs were admitted (Engine::admit, Engine::submit_all).
    let go = jobs;
    let started = Instant::now();
    let deliveries = deliver(shared, lane, &go).await;
    if !go.is_empty() {
        m.send.record(started.elapsed().as_secs_f64());
    }
    // One time for the batch: its messages were settled together.
    let now = domain::timestamp(chrono::Utc::now());
    let mut late = Vec::new();
    for (mut job, d) in go.into_iter().zip(deliveries) {
        let hard = matches!(d, Delivery::Permanent { hard_bounce: true, .. });
        if let Some(delay) = settle(&mut job, d, &shared.config.retry, &now) {
            m.retries.increment(1);
            let due = Instant::now() + delay;
            match deadline {
                Some(d) if due > d => late.push((due, job)),
                _ => delays.push(due, job),
            }
            continue;
        }
        settled.finish(job, hard);
    }
    hand_back(lane, late, settled);
}

/// Records a batch (retrying while the store is unreachable, until the stop deadline), then
/// hands each outcome to whoever waits for it.
async fn record_and_reply(shared: &Shared, m: &ShardMetrics, settled: Settled) {
    let Settled { mut batch, replies, keep, release } = settled;
    for o in batch.outcomes() {
        if let Some(c) = m.by_status.get(&o.delivery_status) {
            c.increment(1);
        }
    }
    let started = Instant::now();
    let past_deadline = |delay: Duration| shared.stopping.borrow().is_some_and(|d| Instant::now() + delay > d);
    for (body, o, reply) in keep {
        let store = shared.store.as_ref();
        let (app, id) = (&o.app_id, &o.message_id);
        if let Err(e) = patiently(|| super::parked::keep(store, app, id, &body), past_deadline).await {
            tracing::error!(app = %app, message = %id, error = %e, "A retry due after the stop could not be kept; it is not made.");
        }
        if let Some(Reply::Outcome(r)) = reply {
            let _ = r.send(o);
        }
    }
    shared.recorder.record_patiently(&batch, past_deadline).await;
    for (app, id) in &release {
        let store = shared.store.as_ref();
        if let Err(e) = patiently(|| super::parked::release(store, app, id), past_deadline).await {
            tracing::warn!(app = %app, message = %id, error = %e, "A kept retry that was made could not be deleted; it is made again at the next start.");
        }
    }
    m.record.record(started.elapsed().as_secs_f64());
    // The outcomes are recorded: they move to whoever waits for them, no copies.
    for (reply, slot) in replies {
        match (reply, batch.take(&slot)) {
            (Some(Reply::Outcome(r)), Some(o)) => drop(r.send(o)),
            (Some(Reply::Tally(slot)), Some(o)) => slot.report(o.delivery_status),
            _ => {}
        }
    }
}

/// A store call retried with backoff while the store is unreachable, until `past_deadline`
/// says the next wait would end after the stop deadline.
async fn patiently<T, F, Fut>(mut call: F, past_deadline: impl Fn(Duration) -> bool) -> Result<T, crate::store::StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::store::StoreError>>,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match call().await {
            Err(e) if e.is_transient() && !past_deadline(delay) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: i32) -> Job {
        Job {
            outcome: Box::new(MessageOutcome { attempts: n, ..Default::default() }),
            payload: Payload::Email { from: String::new(), mime: Vec::new() },
            dry_run: true,
            first_attempt: None,
            reply: None,
            not_before: None,
            kept: false,
        }
    }

    #[test]
    fn delays_come_due_in_order_and_split_at_a_deadline() {
        let now = Instant::now();
        let mut d = Delays::new(3);
        d.push(now + Duration::from_secs(3), job(3));
        d.push(now + Duration::from_secs(1), job(1));
        assert!(d.has_room());
        d.push(now + Duration::from_secs(2), job(2));
        assert!(!d.has_room(), "bounded");
        assert_eq!(d.next_due(), Some(now + Duration::from_secs(1)));
        let mut out = Vec::new();
        d.take_due(now + Duration::from_millis(1_500), 10, &mut out);
        assert_eq!(out.iter().map(|j| j.outcome.attempts).collect::<Vec<_>>(), vec![1]);
        let late = d.take_after(now + Duration::from_millis(2_500));
        assert_eq!(late.iter().map(|(_, j)| j.outcome.attempts).collect::<Vec<_>>(), vec![3]);
        assert_eq!(d.next_due(), Some(now + Duration::from_secs(2)));
    }
}
