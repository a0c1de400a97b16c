//! Retries due after a stop: kept in the store and made at the next start, never lost.
//!
//! When the daemon stops, a shard makes the retries due before its deadline. A transactional
//! job whose next attempt falls after it is written to the store as a record of kind
//! [`KIND`] (its channel, outcome, payload, when it is due and how long it has been retried),
//! and its outcome says so. At the next start [`resume`] hands every such record back to the
//! engine, due when it was due; the record is deleted only once the job's final outcome is
//! recorded, so a crash before then makes it again (at most once more, like any message handed
//! to a provider and not yet recorded). A campaign job is not kept this way: it goes back to
//! its run unsent, and the run sends it when it resumes.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use prost::Message as _;
use tokio::time::Instant;

use super::{Engine, Job, Lane, Payload};
use crate::proto::v1::MessageOutcome;
use crate::store::{Store, StoreError};

/// The record kind of a kept retry; its id is the message id.
pub const KIND: &str = "parked-retry";
/// The lease a daemon holds on an app while it resumes that app's kept retries.
const LEASE: &str = "parked-retry-resume";
const LEASE_MS: u64 = 5 * 60 * 1000;
/// Kept retries read per store call.
const PAGE: usize = 200;

/// A kept retry as stored (JSON); written from a borrowed payload, read into an owned one.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record<P> {
    lane: Lane,
    /// The outcome so far, protobuf in base64.
    outcome: String,
    payload: P,
    dry_run: bool,
    /// When the next attempt is due, unix milliseconds.
    due_ms: i64,
    /// How long the job had been tried when it was kept: its retry window goes on from there.
    tried_ms: u64,
}

/// The stored form of `job`, due at `due`.
pub(super) fn encode(lane: Lane, job: &Job, due: Instant) -> Vec<u8> {
    let now = Instant::now();
    let due_ms = chrono::Utc::now().timestamp_millis() + due.saturating_duration_since(now).as_millis() as i64;
    let tried_ms = job.first_attempt.map_or(0, |f| now.saturating_duration_since(f).as_millis() as u64);
    let record = Record {
        lane,
        outcome: base64::engine::general_purpose::STANDARD.encode(job.outcome.encode_to_vec()),
        payload: &job.payload,
        dry_run: job.dry_run,
        due_ms,
        tried_ms,
    };
    serde_json::to_vec(&record).expect("a kept retry serializes")
}

/// Writes a kept retry (replacing an earlier one of the same message).
pub(super) async fn keep(store: &dyn Store, app: &str, message_id: &str, body: &[u8]) -> Result<(), StoreError> {
    match store.write_record(app, KIND, message_id, 0, 1, body).await {
        Err(StoreError::Exists(_)) => {
            store.delete_record(app, KIND, message_id).await?;
            store.write_record(app, KIND, message_id, 0, 1, body).await
        }
        other => other,
    }
}

/// Deletes the kept retry of a message whose final outcome is recorded.
pub(super) async fn release(store: &dyn Store, app: &str, message_id: &str) -> Result<(), StoreError> {
    store.delete_record(app, KIND, message_id).await.map(|_| ())
}

/// A job from its stored form.
fn decode(body: &[u8]) -> Option<(Lane, Job)> {
    let r: Record<Payload> = serde_json::from_slice(body).ok()?;
    let outcome = base64::engine::general_purpose::STANDARD.decode(&r.outcome).ok()?;
    let outcome = MessageOutcome::decode(outcome.as_slice()).ok()?;
    let now = Instant::now();
    let wait = (r.due_ms - chrono::Utc::now().timestamp_millis()).max(0) as u64;
    let job = Job {
        outcome: Box::new(outcome),
        payload: r.payload,
        dry_run: r.dry_run,
        first_attempt: Some(now.checked_sub(Duration::from_millis(r.tried_ms)).unwrap_or(now)),
        reply: None,
        not_before: (wait > 0).then(|| now + Duration::from_millis(wait)),
        kept: true,
    };
    Some((r.lane, job))
}

/// Hands every kept retry of every app back to the engine (an app at a time, under a lease so
/// that two daemons starting together do not both make them). Returns how many it handed
/// back; stops early when the engine stops.
pub async fn resume(store: Arc<dyn Store>, engine: Arc<Engine>, owner: &str) -> Result<usize, StoreError> {
    let mut handed = 0;
    let mut after: Option<String> = None;
    loop {
        let apps = store.list_apps(after.as_deref(), 100).await?;
        let Some(last) = apps.last().map(|a| a.app_id.clone()) else { break };
        for app in &apps {
            if !store.try_lease(&app.app_id, LEASE, owner, LEASE_MS).await? {
                continue;
            }
            let mut from: Option<String> = None;
            loop {
                let page = store.list_records(&app.app_id, KIND, from.as_deref(), PAGE).await?;
                let n = page.len();
                for body in page {
                    let Some((lane, job)) = decode(&body) else {
                        tracing::error!(app = %app.app_id, "A kept retry cannot be read; it stays in the store.");
                        continue;
                    };
                    from = Some(job.outcome.message_id.clone());
                    if engine.submit(lane, job, Duration::from_secs(30)).await.is_err() {
                        // Stopping (or full for 30 s): what was not handed back stays kept.
                        return Ok(handed);
                    }
                    handed += 1;
                }
                if n < PAGE {
                    break;
                }
            }
        }
        after = Some(last);
    }
    if handed > 0 {
        tracing::info!(handed, "Retries kept at the last stop are queued again.");
    }
    Ok(handed)
}
