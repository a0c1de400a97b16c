//! PutEvents with Pinpoint's shape and limits: a batch keyed by endpoint id, each item an
//! optional Endpoint block (merged as UpdateEndpoint merges; an unknown id is created from it)
//! and events keyed by the caller's event id. The whole request is refused only when it breaks
//! a request limit (no items, more than [`MAX_EVENTS`] events, more than [`MAX_REQUEST_BYTES`]);
//! otherwise every endpoint and every event gets its own result, and one bad event never fails
//! the others.
//!
//! Activity: every accepted event moves its endpoint's `last_activity_date` forward to the
//! event's time (never past the arrival), which Behavior.Recency reads.
//!
//! Faults: endpoint writes go first, then the events in one store round trip; a daemon killed
//! between them has answered nothing, so the caller's retry records the events (the endpoint
//! merge is idempotent). A store outage answers UNAVAILABLE with nothing recorded.

use std::collections::HashMap;

use prost::Message as _;

use crate::domain::{self, endpoint as rules, FieldViolation};
use crate::proto::v1::{
    Endpoint, EndpointItemResponse, Event, EventItemResponse, EventOrigin, EventsBatch, ItemResponse, PutEventsResponse, ReportedEvent,
};
use crate::segments::rule::parse_instant;
use crate::store::{EndpointOp, Store, StoreError};

/// Pinpoint's limits on PutEvents.
pub const MAX_EVENTS: usize = 100;
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
pub const MAX_EVENT_BYTES: usize = 1_000 * 1024;
/// Attributes and metrics of one event, together.
pub const MAX_ATTRIBUTES_AND_METRICS: usize = 40;
/// Characters of an attribute or metric name, and of an event type.
pub const MAX_NAME_CHARS: usize = 50;
pub const MAX_VALUE_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("the request breaks PutEvents' limits")]
    Invalid(Vec<FieldViolation>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

const ACCEPTED: &str = "Accepted";

fn refused(message: impl Into<String>) -> EventItemResponse {
    EventItemResponse { message: message.into(), status_code: 400 }
}

/// Why PutEvents refuses one event (the message its result carries).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("the event id must be non-empty, without control characters")]
    Id,
    #[error("EventType must be 1 to {MAX_NAME_CHARS} characters without control characters")]
    Type,
    #[error("Timestamp is required")]
    NoTimestamp,
    #[error("Timestamp {0:?} is not an ISO-8601 instant")]
    Timestamp(String),
    #[error("an event carries at most {MAX_ATTRIBUTES_AND_METRICS} attributes and metrics together ({0} given)")]
    TooMany(usize),
    #[error("attribute and metric names are 1 to {MAX_NAME_CHARS} characters ({0:?})")]
    Name(String),
    #[error("attribute {0:?} is longer than {MAX_VALUE_CHARS} characters")]
    Value(String),
    #[error("metric {0:?} is not a finite number")]
    Metric(String),
    #[error("Session.Id is required")]
    SessionId,
    #[error("Session.StartTimestamp is required, an ISO-8601 instant")]
    SessionStart,
    #[error("Session.StopTimestamp is not an ISO-8601 instant")]
    SessionStop,
    #[error("Session.Duration must not be negative")]
    SessionDuration,
    #[error("an event is at most {MAX_EVENT_BYTES} bytes")]
    Size,
}

/// Why one event is refused, if it is.
pub fn check_event(event_id: &str, e: &ReportedEvent) -> Result<(), EventError> {
    if event_id.is_empty() || event_id.chars().any(char::is_control) {
        return Err(EventError::Id);
    }
    let n = e.event_type.chars().count();
    if n == 0 || n > MAX_NAME_CHARS || e.event_type.chars().any(char::is_control) {
        return Err(EventError::Type);
    }
    if e.timestamp.is_empty() {
        return Err(EventError::NoTimestamp);
    }
    if parse_instant(&e.timestamp).is_none() {
        return Err(EventError::Timestamp(e.timestamp.clone()));
    }
    if e.attributes.len() + e.metrics.len() > MAX_ATTRIBUTES_AND_METRICS {
        return Err(EventError::TooMany(e.attributes.len() + e.metrics.len()));
    }
    for name in e.attributes.keys().chain(e.metrics.keys()) {
        let n = name.chars().count();
        if n == 0 || n > MAX_NAME_CHARS {
            return Err(EventError::Name(name.clone()));
        }
    }
    if let Some((name, _)) = e.attributes.iter().find(|(_, v)| v.chars().count() > MAX_VALUE_CHARS) {
        return Err(EventError::Value(name.clone()));
    }
    if let Some((name, _)) = e.metrics.iter().find(|(_, v)| !v.is_finite()) {
        return Err(EventError::Metric(name.clone()));
    }
    if let Some(s) = &e.session {
        if s.id.is_empty() {
            return Err(EventError::SessionId);
        }
        if parse_instant(&s.start_timestamp).is_none() {
            return Err(EventError::SessionStart);
        }
        if !s.stop_timestamp.is_empty() && parse_instant(&s.stop_timestamp).is_none() {
            return Err(EventError::SessionStop);
        }
        if s.duration < 0 {
            return Err(EventError::SessionDuration);
        }
    }
    if e.encoded_len() > MAX_EVENT_BYTES {
        return Err(EventError::Size);
    }
    Ok(())
}

/// Checks the request's own limits: the whole call is refused when one is broken.
pub fn check_request(batch: &HashMap<String, EventsBatch>) -> Result<(), Vec<FieldViolation>> {
    let mut v = Vec::new();
    if batch.is_empty() {
        v.push(FieldViolation::new("batch_item", "must hold at least one endpoint's events"));
    }
    let events: usize = batch.values().map(|b| b.events.len()).sum();
    if events > MAX_EVENTS {
        v.push(FieldViolation::new("batch_item", format!("at most {MAX_EVENTS} events per request ({events} given)")));
    }
    let bytes: usize = batch.iter().map(|(k, b)| k.len() + prost::Message::encoded_len(b)).sum();
    if bytes > MAX_REQUEST_BYTES {
        v.push(FieldViolation::new("batch_item", format!("a request is at most {MAX_REQUEST_BYTES} bytes")));
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(v)
    }
}

/// Records a PutEvents batch for `app` as of `now`.
pub async fn put_events(
    store: &dyn Store,
    app: &str,
    batch: HashMap<String, EventsBatch>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PutEventsResponse, PutError> {
    check_request(&batch).map_err(PutError::Invalid)?;
    let arrival = domain::timestamp(now);
    let mut results: HashMap<String, ItemResponse> = HashMap::with_capacity(batch.len());
    // Per endpoint: its accepted events (caller id, event) and its activity.
    let mut accepted: Vec<(String, Vec<(String, ReportedEvent)>)> = Vec::with_capacity(batch.len());
    let mut writes = Vec::new();
    let mut touches = Vec::new();
    // Endpoint ids in a stable order (the response is a map; recording follows this order).
    let mut items: Vec<(String, EventsBatch)> = batch.into_iter().collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    for (endpoint_id, item) in items {
        let mut response = ItemResponse::default();
        if let Err(why) = rules::validate_id(&endpoint_id) {
            let message = format!("endpoint id {why}");
            response.endpoint_item_response = Some(EndpointItemResponse { message: message.clone(), status_code: 400 });
            response.events_item_response = item.events.keys().map(|k| (k.clone(), refused(message.clone()))).collect();
            results.insert(endpoint_id, response);
            continue;
        }
        let mut events = Vec::with_capacity(item.events.len());
        let mut latest: Option<chrono::DateTime<chrono::Utc>> = None;
        let mut ids: Vec<(String, ReportedEvent)> = item.events.into_iter().collect();
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        for (event_id, e) in ids {
            match check_event(&event_id, &e) {
                Ok(()) => {
                    let at = parse_instant(&e.timestamp).map(|t| t.min(now));
                    latest = latest.max(at);
                    response
                        .events_item_response
                        .insert(event_id.clone(), EventItemResponse { message: ACCEPTED.into(), status_code: 202 });
                    events.push((event_id, e));
                }
                Err(why) => {
                    response.events_item_response.insert(event_id, refused(why.to_string()));
                }
            }
        }
        let activity = latest.map(domain::timestamp).unwrap_or_default();
        match item.endpoint {
            Some(mut block) => {
                if !block.id.is_empty() && block.id != endpoint_id {
                    response.endpoint_item_response = Some(EndpointItemResponse {
                        message: format!("the Endpoint block's id {:?} differs from its key", block.id),
                        status_code: 400,
                    });
                } else {
                    block.id = endpoint_id.clone();
                    block.last_activity_date = activity;
                    writes.push(block);
                }
            }
            None if !activity.is_empty() => touches.push((endpoint_id.clone(), activity)),
            None => {}
        }
        results.insert(endpoint_id.clone(), response);
        accepted.push((endpoint_id, events));
    }
    // The endpoints as they stand after this call (which of them exist).
    let mut merged: HashMap<String, Endpoint> = HashMap::new();
    if !writes.is_empty() {
        let ids: Vec<String> = writes.iter().map(|w| w.id.clone()).collect();
        let mut writes = writes;
        crate::attributes::strip_writes(store, app, &mut writes).await?;
        let op = EndpointOp::Upsert { writes, all_or_nothing: false, now: arrival.clone(), request_id: domain::new_id() };
        let plan = store.write_endpoints(app, op).await?;
        for r in &plan.rejections {
            let Some(id) = ids.get(r.index) else { continue };
            let item = results.get_mut(id).expect("every item has a result");
            let message = if r.violation.field.is_empty() {
                r.violation.description.clone()
            } else {
                format!("{}: {}", r.violation.field, r.violation.description)
            };
            item.endpoint_item_response = Some(EndpointItemResponse { message, status_code: 400 });
        }
        merged.extend(plan.written_endpoints().map(|e| (e.id.clone(), e.clone())));
    }
    if !touches.is_empty() {
        let plan = store.write_endpoints(app, EndpointOp::Touch { activity: touches }).await?;
        merged.extend(plan.written_endpoints().map(|e| (e.id.clone(), e.clone())));
    }
    let mut recorded = Vec::new();
    let mut rejected = 0u64;
    for (endpoint_id, events) in accepted {
        let item = results.get_mut(&endpoint_id).expect("every item has a result");
        rejected += item.events_item_response.values().filter(|r| r.status_code != 202).count() as u64;
        let endpoint = merged.get(&endpoint_id);
        if item.endpoint_item_response.is_none() {
            item.endpoint_item_response = Some(match endpoint {
                Some(_) => EndpointItemResponse { message: ACCEPTED.into(), status_code: 202 },
                None => EndpointItemResponse {
                    message: "no such endpoint: its events are recorded, and no endpoint's activity changed".into(),
                    status_code: 404,
                },
            });
        }
        for (client_event_id, e) in events {
            let timestamp = parse_instant(&e.timestamp).map(domain::timestamp).unwrap_or_else(|| arrival.clone());
            recorded.push(Event {
                event_id: String::new(),
                event_type: e.event_type,
                event_timestamp: timestamp,
                arrival_timestamp: arrival.clone(),
                app_id: app.to_string(),
                client_id: endpoint_id.clone(),
                attributes: e.attributes,
                facets_json: String::new(),
                message_id: String::new(),
                metrics: e.metrics,
                session: e.session,
                app_package_name: e.app_package_name,
                app_title: e.app_title,
                app_version_code: e.app_version_code,
                client_sdk_version: e.client_sdk_version,
                sdk_name: e.sdk_name,
                origin: EventOrigin::PutEvents as i32,
                // Never stored with the event: readers attach it when asked.
                endpoint: None,
                client_event_id,
                first_of_message: false,
            });
        }
    }
    if !recorded.is_empty() {
        store.record_outcomes(app, &[], &recorded, 0).await?;
        super::recorded();
    }
    metrics::counter!(crate::telemetry::EVENTS_RECEIVED, "result" => "accepted").increment(recorded.len() as u64);
    metrics::counter!(crate::telemetry::EVENTS_RECEIVED, "result" => "rejected").increment(rejected);
    Ok(PutEventsResponse { results })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(t: &str) -> ReportedEvent {
        ReportedEvent { event_type: t.into(), timestamp: "2026-12-01T10:00:00Z".into(), ..Default::default() }
    }

    #[test]
    fn events_are_checked_against_pinpoints_limits() {
        assert!(check_event("e1", &event("feature_used")).is_ok());
        assert!(check_event("", &event("x")).is_err());
        assert_eq!(check_event("e1", &event("")), Err(EventError::Type));
        assert!(check_event("e1", &event(&"t".repeat(51))).is_err());
        let mut no_time = event("x");
        no_time.timestamp.clear();
        assert_eq!(check_event("e1", &no_time), Err(EventError::NoTimestamp));
        let mut many = event("x");
        for i in 0..30 {
            many.attributes.insert(format!("a{i}"), "v".into());
        }
        for i in 0..11 {
            many.metrics.insert(format!("m{i}"), 1.0);
        }
        assert_eq!(check_event("e1", &many), Err(EventError::TooMany(41)));
        assert!(EventError::TooMany(41).to_string().contains("40"));
        let mut long = event("x");
        long.attributes.insert("a".into(), "v".repeat(201));
        assert_eq!(check_event("e1", &long), Err(EventError::Value("a".into())));
        let mut name = event("x");
        name.metrics.insert("m".repeat(51), 1.0);
        assert!(check_event("e1", &name).is_err());
        let mut session = event("_session.start");
        session.session = Some(crate::proto::v1::EventSession { id: "s".into(), ..Default::default() });
        assert_eq!(check_event("e1", &session), Err(EventError::SessionStart));
    }

    #[test]
    fn a_request_holds_at_most_a_hundred_events() {
        let mut batch = HashMap::new();
        assert!(check_request(&batch).is_err());
        let events: HashMap<String, ReportedEvent> = (0..101).map(|i| (format!("e{i}"), event("x"))).collect();
        batch.insert("ep".to_string(), EventsBatch { endpoint: None, events });
        let v = check_request(&batch).unwrap_err();
        assert!(v[0].description.contains("101"));
    }
}
