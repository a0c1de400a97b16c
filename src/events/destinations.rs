//! Event destinations: webhooks that receive an app's events (all, or some types) in batches,
//! at least once, signed per the Standard Webhooks specification — `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`
//! keyed by the base64 part of a `whsec_` secret — so that receivers verify with the spec's
//! libraries.
//!
//! The backlog is the app's event stream itself: a destination keeps only its position (in
//! the store, with its counters), so a restart loses nothing and the backlog is bounded by the
//! stream's retention; events that leave the stream before delivery are counted as dropped.
//! A batch is the next `batch_size` subscribed events after the position, so a retry carries
//! the same events under the same `webhook-id`; each event keeps its own stable `event_id`.
//! A failed delivery is retried with exponential backoff and full jitter; after
//! `failure_limit` failures in a row the destination is disabled until it is updated.
//!
//! Faults: SIGTERM finishes the batch in flight and records the position; kill -9 after the
//! receiver answered and before the position was written sends that batch again (same ids);
//! a store outage pauses deliveries, which resume where they were.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use prost::Message as _;
use sha2::Sha256;

use super::{event_id, event_number};
use crate::domain::{self, FieldViolation};
use crate::proto::v1::{DestinationProgress, DestinationState, EventDestination};
use crate::secrets::Sealer;
use crate::store::{Store, StoreError};

/// The store record kind of destinations, and of their delivery state.
pub const KIND: &str = "event-destination";
pub const PROGRESS_KIND: &str = "event-destination-progress";

pub const DEFAULT_BATCH: i32 = 100;
pub const MAX_BATCH: i32 = 1_000;
pub const DEFAULT_FAILURE_LIMIT: i32 = 10;
/// Destinations per app.
pub const MAX_PER_APP: usize = 25;
/// How long one delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff of failed deliveries: the first wait and the longest.
pub const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

const SECRET_PREFIX: &str = "whsec_";

fn place(app: &str, id: &str) -> String {
    crate::secrets::place(app, &format!("destination:{id}"), "secret")
}

/// A new signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The key bytes of a `whsec_` secret.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let body = secret.strip_prefix(SECRET_PREFIX)?;
    base64::engine::general_purpose::STANDARD.decode(body).ok().filter(|k| (24..=64).contains(&k.len()))
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, per Standard Webhooks.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// Whether a URL may receive events: https, or http on a loopback address.
pub fn check_url(u: &str) -> Result<(), &'static str> {
    let url = url::Url::parse(u).map_err(|_| "must be an absolute URL")?;
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" => match url.host() {
            Some(url::Host::Ipv4(a)) if a.is_loopback() => Ok(()),
            Some(url::Host::Ipv6(a)) if a.is_loopback() => Ok(()),
            Some(url::Host::Domain("localhost")) => Ok(()),
            _ => Err("http is only for loopback receivers; use https"),
        },
        _ => Err("must be an https URL (or http on loopback)"),
    }
}

/// The violations of a destination as written (create: every field it gives; update: the same).
pub fn validate(d: &EventDestination, field: &str) -> Vec<FieldViolation> {
    let mut v = Vec::new();
    if let Err(why) = check_url(&d.url) {
        v.push(FieldViolation::new(format!("{field}.url"), why));
    }
    for (i, t) in d.event_types.iter().enumerate() {
        let n = t.chars().count();
        if n == 0 || n > super::put::MAX_NAME_CHARS {
            v.push(FieldViolation::new(format!("{field}.event_types[{i}]"), "must be 1 to 50 characters"));
        }
    }
    if d.batch_size != 0 && !(1..=MAX_BATCH).contains(&d.batch_size) {
        v.push(FieldViolation::new(format!("{field}.batch_size"), format!("must be 1 to {MAX_BATCH}")));
    }
    if d.failure_limit != 0 && !(1..=1_000).contains(&d.failure_limit) {
        v.push(FieldViolation::new(format!("{field}.failure_limit"), "must be 1 to 1000"));
    }
    if !d.secret.is_empty() && secret_key(&d.secret).is_none() {
        v.push(FieldViolation::new(format!("{field}.secret"), "must be whsec_ and the base64 of 24 to 64 bytes"));
    }
    if DestinationState::try_from(d.state).is_err() {
        v.push(FieldViolation::new(format!("{field}.state"), "must be ENABLED or DISABLED"));
    }
    v
}

/// The stored definition: the secret sealed, server fields set.
pub fn seal(sealer: &Sealer, app: &str, mut d: EventDestination) -> EventDestination {
    d.secret = sealer.seal(&place(app, &d.id), &d.secret);
    d
}

pub async fn load(store: &dyn Store, app: &str, id: &str) -> Result<Option<EventDestination>, StoreError> {
    Ok(store.get_record(app, KIND, id, None).await?.map(|b| EventDestination::decode(b.as_slice())).transpose()?)
}

pub async fn progress(store: &dyn Store, app: &str, id: &str) -> Result<DestinationProgress, StoreError> {
    Ok(store.get_blob(app, PROGRESS_KIND, id).await?.map(|b| DestinationProgress::decode(b.as_slice())).transpose()?.unwrap_or_default())
}

/// Whether deliveries have disabled the destination (until its next update).
fn disabled(d: &EventDestination, p: &DestinationProgress) -> bool {
    d.state == DestinationState::Disabled as i32 || (!p.disabled_for.is_empty() && p.disabled_for == d.last_modified_date)
}

/// A destination as Get shows it: no secret, its state, counters and backlog.
pub async fn view(store: &dyn Store, app: &str, mut d: EventDestination) -> Result<EventDestination, StoreError> {
    let p = progress(store, app, &d.id).await?;
    let last = store.last_event(app).await?;
    d.secret.clear();
    d.state = if disabled(&d, &p) { DestinationState::Disabled } else { DestinationState::Enabled } as i32;
    let current = p.disabled_for.is_empty() || p.disabled_for == d.last_modified_date || p.consecutive_failures == 0;
    d.consecutive_failures = if current { p.consecutive_failures } else { 0 };
    d.last_error = p.last_error;
    d.last_success = p.last_success;
    d.delivered = p.delivered;
    d.dropped = p.dropped;
    d.position = if p.position > 0 { event_id(p.position) } else { String::new() };
    d.backlog = last.saturating_sub(p.position) as i64;
    Ok(d)
}

/// Delivers one destination's events until `stop` (or the destination is deleted). Runs on
/// the daemon holding the app's events lease.
pub async fn deliver(
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    http: reqwest::Client,
    app: String,
    id: String,
    stop: tokio::sync::watch::Receiver<bool>,
    backoff_base: Duration,
) {
    let mut wake = super::subscribe();
    let mut failures_in_memory = 0u32;
    let mut store_backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        match step(&store, &sealer, &http, &app, &id).await {
            Ok(Step::Delivered) => {
                failures_in_memory = 0;
                store_backoff = Duration::from_millis(100);
            }
            Ok(Step::Idle) => {
                store_backoff = Duration::from_millis(100);
                let mut stop = stop.clone();
                tokio::select! {
                    _ = super::wait_for_more(&mut wake) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            Ok(Step::Disabled) => {
                let mut stop = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            Ok(Step::Gone) => return,
            Ok(Step::Failed) => {
                failures_in_memory = failures_in_memory.saturating_add(1);
                let ceiling = backoff_base.saturating_mul(1u32 << failures_in_memory.min(20).saturating_sub(1)).min(BACKOFF.1);
                // Full jitter: anywhere up to the exponential ceiling.
                let wait = ceiling.mul_f64(rand::random::<f64>()).max(backoff_base / 4);
                let mut stop = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            Err(e) => {
                if !e.is_transient() {
                    tracing::warn!(error = %e, destination = %id, "Event destination cannot be read.");
                }
                let mut stop = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(store_backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                store_backoff = (store_backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

enum Step {
    Delivered,
    Idle,
    Failed,
    Disabled,
    Gone,
}

async fn step(store: &Arc<dyn Store>, sealer: &Sealer, http: &reqwest::Client, app: &str, id: &str) -> Result<Step, StoreError> {
    let store = store.as_ref();
    let Some(d) = load(store, app, id).await? else { return Ok(Step::Gone) };
    let mut p = progress(store, app, id).await?;
    if disabled(&d, &p) {
        return Ok(Step::Disabled);
    }
    if !p.disabled_for.is_empty() {
        // Updated since deliveries disabled it: a fresh start.
        p.disabled_for.clear();
        p.consecutive_failures = 0;
    }
    let batch = if d.batch_size > 0 { d.batch_size } else { DEFAULT_BATCH } as usize;
    let filter = super::Filter { event_types: d.event_types.clone(), ..Default::default() };
    let mut events = Vec::with_capacity(batch);
    let mut position = p.position;
    // Events that left the stream before this destination saw them.
    let oldest = store.read_events(app, None, 1).await?.first().and_then(|e| event_number(&e.event_id));
    if let Some(oldest) = oldest {
        if oldest > position + 1 {
            p.dropped += (oldest - position - 1) as i64;
            position = oldest - 1;
        }
    }
    let mut scanned_to = position;
    'read: loop {
        let page = store.read_events(app, (scanned_to > 0).then(|| event_id(scanned_to)).as_deref(), super::stream::PAGE).await?;
        let Some(last) = page.last().and_then(|e| event_number(&e.event_id)) else { break };
        for e in page {
            let n = event_number(&e.event_id).unwrap_or(last);
            if filter.matches(&e) {
                events.push(e);
                if events.len() == batch {
                    scanned_to = n;
                    break 'read;
                }
            }
            scanned_to = n;
        }
    }
    if events.is_empty() {
        if scanned_to != p.position {
            p.position = scanned_to;
            store.put_blob(app, PROGRESS_KIND, id, &p.encode_to_vec()).await?;
        }
        return Ok(Step::Idle);
    }
    if d.include_endpoint {
        super::attach_endpoints(store, app, &mut events).await?;
    }
    let secret = sealer.open(&place(app, id), &d.secret).map_err(|e| StoreError::Corrupt(format!("destination secret: {e}")))?;
    let key = secret_key(&secret).ok_or_else(|| StoreError::Corrupt("destination secret is not a whsec_ secret".into()))?;
    let first = event_number(&events[0].event_id).unwrap_or(0);
    let last = event_number(&events[events.len() - 1].event_id).unwrap_or(0);
    let msg_id = format!("msg_{id}_{first}_{last}");
    let now = chrono::Utc::now();
    let body = serde_json::to_vec(&serde_json::json!({
        "type": "events.batch",
        "timestamp": domain::timestamp(now),
        "data": {
            "application_id": app,
            "destination_id": id,
            "events": events.iter().map(|e| super::envelope(app, e)).collect::<Vec<_>>(),
        },
    }))
    .expect("JSON of JSON values");
    let ts = now.timestamp();
    let answer = http
        .post(&d.url)
        .header("content-type", "application/json")
        .header("webhook-id", &msg_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sign(&key, &msg_id, ts, &body))
        .body(body)
        .timeout(TIMEOUT)
        .send()
        .await;
    let failure = match answer {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("the receiver answered {}", r.status())),
        Err(e) if e.is_timeout() => Some(format!("no answer within {} s", TIMEOUT.as_secs())),
        Err(e) if e.is_connect() => Some("cannot connect to the receiver".to_string()),
        Err(_) => Some("the request failed".to_string()),
    };
    let stamp = domain::timestamp(chrono::Utc::now());
    match failure {
        None => {
            p.position = scanned_to;
            p.consecutive_failures = 0;
            p.delivered += events.len() as i64;
            p.last_success = stamp;
            store.put_blob(app, PROGRESS_KIND, id, &p.encode_to_vec()).await?;
            metrics::counter!(crate::telemetry::WEBHOOK_DELIVERIES, "result" => "delivered").increment(1);
            metrics::counter!(crate::telemetry::WEBHOOK_EVENTS).increment(events.len() as u64);
            Ok(Step::Delivered)
        }
        Some(why) => {
            p.consecutive_failures += 1;
            p.last_error = format!("{stamp}: {why}");
            let limit = if d.failure_limit > 0 { d.failure_limit } else { DEFAULT_FAILURE_LIMIT };
            if p.consecutive_failures >= limit {
                p.disabled_for = d.last_modified_date.clone();
                tracing::warn!(destination = %id, app, failures = p.consecutive_failures, "Event destination disabled after failing repeatedly.");
            }
            // The position stays: the same batch goes again.
            p.position = position;
            store.put_blob(app, PROGRESS_KIND, id, &p.encode_to_vec()).await?;
            metrics::counter!(crate::telemetry::WEBHOOK_DELIVERIES, "result" => "failed").increment(1);
            Ok(if p.consecutive_failures >= limit { Step::Disabled } else { Step::Failed })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The specification's example: secret, id, timestamp and body give this signature.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn destinations_are_validated() {
        let ok = EventDestination { url: "https://hooks.example.com/in".into(), ..Default::default() };
        assert!(validate(&ok, "destination").is_empty());
        let loopback = EventDestination { url: "http://127.0.0.1:9000/".into(), secret: new_secret(), ..Default::default() };
        assert!(validate(&loopback, "destination").is_empty());
        let bad = EventDestination {
            url: "http://hooks.example.com/".into(),
            batch_size: 5000,
            secret: "whsec_short".into(),
            event_types: vec![String::new()],
            ..Default::default()
        };
        let fields: Vec<_> = validate(&bad, "destination").into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["destination.url", "destination.event_types[0]", "destination.batch_size", "destination.secret"]);
    }
}
