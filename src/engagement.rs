//! What recipients reach on the public listener (beside provider feedback, on `feedback_addr`):
//!
//! - `GET /o/{token}`: the open pixel (a 1×1 GIF); records `_email.open`.
//! - `GET /c/{token}`: a click; records `_email.click` with the link and redirects (302) to
//!   exactly the link the token was signed for.
//! - `GET /u/{token}`: a page whose button unsubscribes (a GET alone never does: mail scanners
//!   follow links); `POST /u/{token}` with `List-Unsubscribe=One-Click` (RFC 8058, what mail
//!   clients send) or from that button sets the endpoint's OptOut to ALL and records
//!   `_email.unsubscribe`.
//!
//! A token that does not verify (altered, made for another message or link, expired) gets 404
//! and records nothing. Opens and clicks are recorded in batches (one store round trip for
//! many requests); each request waits for its batch up to [`ANSWER_WAIT`], then is answered
//! anyway while the batch is retried until the store takes it. Each event says whether it is
//! the first open or click of its message (`first_of_message`, decided atomically in the
//! store), which the KPIs count as unique.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};

use crate::outcomes::{Batch, Recorder};
use crate::proto::v1::{Endpoint, Event, EventOrigin, OptOut};
use crate::store::{EndpointOp, Store};
use crate::tracking::{Kind, Links, MessageRef, Verified};

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// How long a request waits for its event to be recorded before it is answered anyway.
pub const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// Events recorded in one batch at most.
const BATCH: usize = 512;
/// How long a batch is retried while the store is unreachable.
const RETRY_FOR: Duration = Duration::from_secs(300);

struct Pending {
    event: Event,
    done: oneshot::Sender<()>,
}

pub struct Engagement {
    links: Arc<Links>,
    store: Arc<dyn Store>,
    queue: mpsc::Sender<Pending>,
}

fn now_secs() -> u64 {
    chrono::Utc::now().timestamp().max(0) as u64
}

/// The event an open, click or unsubscribe records: Pinpoint's envelope, the message's ids as
/// attributes, the link for a click.
fn event(v: &Verified, event_type: &str, headers: &HeaderMap) -> Event {
    let m = &v.message;
    let now = crate::domain::timestamp(chrono::Utc::now());
    let mut attributes = HashMap::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            attributes.insert(k.to_string(), v.to_string());
        }
    };
    put("campaign_id", &m.campaign_id);
    if !m.campaign_id.is_empty() {
        put("treatment_id", &m.treatment_id.to_string());
    }
    put("campaign_activity_id", &m.campaign_activity_id);
    put("journey_id", &m.journey_id);
    put("journey_activity_id", &m.journey_activity_id);
    put("link", &v.link);
    let agent = headers.get(header::USER_AGENT).and_then(|a| a.to_str().ok()).unwrap_or("");
    let kind = event_type.trim_start_matches("_email.");
    let mut detail = serde_json::json!({ "timestamp": now, "user_agent": agent });
    if !v.link.is_empty() {
        detail["link"] = serde_json::Value::String(v.link.clone());
    }
    let facets = serde_json::json!({ "email_channel": { "mail_event": { "mail": { "message_id": m.message_id }, kind: detail } } });
    Event {
        event_type: event_type.to_string(),
        event_timestamp: now.clone(),
        arrival_timestamp: now,
        app_id: m.app_id.clone(),
        client_id: if m.endpoint_id.is_empty() { m.message_id.clone() } else { m.endpoint_id.clone() },
        attributes,
        facets_json: facets.to_string(),
        message_id: m.message_id.clone(),
        origin: EventOrigin::Delivery as i32,
        ..Default::default()
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

impl Engagement {
    /// Starts the batch recorder; `outcome_ttl` bounds how long first opens are remembered.
    pub fn start(links: Arc<Links>, store: Arc<dyn Store>, outcome_ttl: Duration) -> Arc<Self> {
        let (queue, rx) = mpsc::channel(16 * BATCH);
        tokio::spawn(record_batches(rx, store.clone(), outcome_ttl));
        Arc::new(Self { links, store, queue })
    }

    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/o/{token}", axum::routing::get(open))
            .route("/c/{token}", axum::routing::get(click))
            .route("/u/{token}", axum::routing::get(unsubscribe_page).post(unsubscribe))
            .with_state(self)
    }

    /// Queues an event and waits (bounded) for it to be recorded.
    async fn record(&self, event: Event) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Pending { event, done }).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(ANSWER_WAIT, wait).await;
    }
}

/// Records queued events in batches: first opens and clicks marked, then one write per app.
async fn record_batches(mut rx: mpsc::Receiver<Pending>, store: Arc<dyn Store>, outcome_ttl: Duration) {
    let recorder = Recorder::new(store.clone(), outcome_ttl);
    let mut pending = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut pending, BATCH).await > 0 {
        let mut by_app: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in pending.iter().enumerate() {
            by_app.entry(p.event.app_id.clone()).or_default().push(i);
        }
        let started = std::time::Instant::now();
        for (app, members) in &by_app {
            let keys: Vec<String> =
                members.iter().map(|&i| format!("{}:{}", pending[i].event.event_type, pending[i].event.message_id)).collect();
            let mut delay = Duration::from_millis(50);
            let firsts = loop {
                match store.first_engagement(app, &keys, outcome_ttl.as_secs()).await {
                    Ok(f) => break Some(f),
                    Err(e) if e.is_transient() && started.elapsed() < RETRY_FOR => {
                        tracing::warn!(error = %e, "Store unreachable; holding opens and clicks.");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, events = keys.len(), "Cannot record opens and clicks.");
                        break None;
                    }
                }
            };
            let Some(firsts) = firsts else { continue };
            for (&i, first) in members.iter().zip(firsts) {
                pending[i].event.first_of_message = first;
            }
        }
        let mut batch = Batch::default();
        for p in &pending {
            batch.event(&p.event.app_id, p.event.clone());
        }
        let n = pending.len() as u64;
        if recorder.record_patiently(&batch, |_| started.elapsed() > RETRY_FOR).await {
            metrics::counter!(crate::telemetry::ENGAGEMENT, "result" => "recorded").increment(n);
        } else {
            metrics::counter!(crate::telemetry::ENGAGEMENT, "result" => "lost").increment(n);
        }
        for p in pending.drain(..) {
            let _ = p.done.send(());
        }
    }
}

async fn open(State(e): State<Arc<Engagement>>, Path(token): Path<String>, headers: HeaderMap) -> Response {
    let Some(v) = e.links.verify(Kind::Open, &token, now_secs()) else {
        metrics::counter!(crate::telemetry::ENGAGEMENT, "result" => "refused").increment(1);
        return not_found();
    };
    e.record(event(&v, "_email.open", &headers)).await;
    ([(header::CONTENT_TYPE, "image/gif"), (header::CACHE_CONTROL, "no-store, no-cache, must-revalidate, private")], PIXEL).into_response()
}

async fn click(State(e): State<Arc<Engagement>>, Path(token): Path<String>, headers: HeaderMap) -> Response {
    let Some(v) = e.links.verify(Kind::Click, &token, now_secs()) else {
        metrics::counter!(crate::telemetry::ENGAGEMENT, "result" => "refused").increment(1);
        return not_found();
    };
    e.record(event(&v, "_email.click", &headers)).await;
    (StatusCode::FOUND, [(header::LOCATION, v.link.as_str()), (header::CACHE_CONTROL, "no-store")]).into_response()
}

const PAGE_STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32em;margin:4em auto;padding:0 1em;color:#222}\
button{font-size:1em;padding:.6em 1.2em;border:0;border-radius:4px;background:#333;color:#fff;cursor:pointer}";

async fn unsubscribe_page(State(e): State<Arc<Engagement>>, Path(token): Path<String>) -> Response {
    if e.links.verify(Kind::Unsubscribe, &token, now_secs()).is_none() {
        return not_found();
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>Unsubscribe</title><style>{PAGE_STYLE}</style></head><body><h1>Unsubscribe</h1>\
         <p>Stop receiving these messages?</p><form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form></body></html>"
    ))
    .into_response()
}

async fn unsubscribe(State(e): State<Arc<Engagement>>, Path(token): Path<String>, headers: HeaderMap, body: String) -> Response {
    let Some(v) = e.links.verify(Kind::Unsubscribe, &token, now_secs()) else { return not_found() };
    let one_click = url::form_urlencoded::parse(body.as_bytes()).any(|(k, val)| k == "List-Unsubscribe" && val == "One-Click");
    if !one_click {
        return (StatusCode::BAD_REQUEST, "the body must be List-Unsubscribe=One-Click").into_response();
    }
    match opt_out(&e, &v.message).await {
        Ok(()) => {}
        Err(err) => {
            tracing::warn!(error = %err, "Cannot record an unsubscribe.");
            return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "5")], "unavailable; try again").into_response();
        }
    }
    let mut batch = Batch::default();
    batch.event(&v.message.app_id, event(&v, "_email.unsubscribe", &headers));
    if let Err(err) = Recorder::new(e.store.clone(), Duration::ZERO).record(&batch).await {
        // The opt-out is written; only its event is missing.
        tracing::warn!(error = %err, "Cannot record an unsubscribe event.");
    }
    metrics::counter!(crate::telemetry::ENGAGEMENT, "result" => "unsubscribed").increment(1);
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribed</title><style>{PAGE_STYLE}</style></head>\
         <body><h1>You are unsubscribed</h1><p>You will not receive these messages any more.</p></body></html>"
    ))
    .into_response()
}

/// Opts the message's endpoint out of everything (its other fields unchanged).
async fn opt_out(e: &Engagement, m: &MessageRef) -> Result<(), crate::store::StoreError> {
    if m.endpoint_id.is_empty() {
        return Ok(());
    }
    let write = Endpoint { id: m.endpoint_id.clone(), opt_out: OptOut::All as i32, ..Default::default() };
    let op = EndpointOp::Upsert {
        writes: vec![write],
        all_or_nothing: false,
        now: crate::domain::timestamp(chrono::Utc::now()),
        request_id: "one-click-unsubscribe".into(),
    };
    e.store.write_endpoints(&m.app_id, op).await.map(|_| ())
}
