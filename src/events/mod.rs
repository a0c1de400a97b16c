//! Events in and out. Every event of an app — those its apps report with PutEvents ([`put`])
//! and those Herald records of its messages — goes into the app's event stream in the store,
//! numbered in arrival order. Everything downstream reads that stream from a position it keeps:
//! StreamEvents ([`stream`]) for a consumer that resumes after its last id, event destinations
//! ([`destinations`]: signed webhooks) and EVENT campaigns ([`triggers`]), both of which keep
//! their position in the store so a restart loses nothing. [`worker`] runs the last two for
//! each app, on one daemon at a time (a lease), and trims the stream to its retention.

pub mod destinations;
pub mod put;
pub mod stream;
pub mod triggers;
pub mod worker;

use std::sync::LazyLock;
use std::time::Duration;

use crate::proto::v1::Event;
use crate::store::{Store, StoreError};

/// An event's id from its number in the app's stream.
pub fn event_id(number: u64) -> String {
    format!("{number:020}")
}

/// The number of an event id this store gave; `None` for anything else.
pub fn event_number(id: &str) -> Option<u64> {
    (id.len() == 20).then(|| id.parse().ok()).flatten()
}

/// Counts events recorded by this daemon, so readers that caught up wake at once; readers
/// also look every [`POLL`] for events other daemons recorded.
static RECORDED: LazyLock<tokio::sync::watch::Sender<u64>> = LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// How long a reader that caught up waits before it looks again without being woken.
pub const POLL: Duration = Duration::from_millis(200);

/// Says that events were recorded (wakes readers that caught up).
pub fn recorded() {
    RECORDED.send_modify(|n| *n = n.wrapping_add(1));
}

/// Waits until events are recorded here, or [`POLL`] passes.
pub async fn wait_for_more(rx: &mut tokio::sync::watch::Receiver<u64>) {
    let _ = tokio::time::timeout(POLL, rx.changed()).await;
}

/// A receiver for [`wait_for_more`].
pub fn subscribe() -> tokio::sync::watch::Receiver<u64> {
    RECORDED.subscribe()
}

/// The number after which the first event that arrived at or after `t` sits (a binary search
/// over the stream: arrival order is number order). 0 when every kept event qualifies.
pub async fn position_at(store: &dyn Store, app: &str, t: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
    let last = store.last_event(app).await?;
    let Some(first) = store.read_events(app, None, 1).await?.into_iter().next() else { return Ok(last) };
    let mut lo = event_number(&first.event_id).unwrap_or(1);
    let mut hi = last + 1;
    // Invariant: every event numbered below lo arrived before t (or is gone); hi is past the
    // answer.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let found = store.read_events(app, Some(&event_id(mid - 1)), 1).await?;
        match found.first() {
            Some(e) => {
                let n = event_number(&e.event_id).unwrap_or(mid);
                let arrived = crate::segments::rule::parse_instant(&e.arrival_timestamp);
                if arrived.is_some_and(|a| a < t) {
                    lo = n + 1;
                } else {
                    hi = mid.min(n);
                }
            }
            None => hi = mid,
        }
    }
    Ok(lo.saturating_sub(1))
}

/// What a reader asks of events beside their position.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub event_types: Vec<String>,
    pub campaign_id: String,
    pub journey_id: String,
}

impl Filter {
    pub fn matches(&self, e: &Event) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(&e.event_type))
            && (self.campaign_id.is_empty() || e.attributes.get("campaign_id") == Some(&self.campaign_id))
            && (self.journey_id.is_empty() || e.attributes.get("journey_id") == Some(&self.journey_id))
    }
}

/// Pinpoint's streamed event envelope (as its Kinesis records carry it), in JSON: what event
/// webhooks deliver. Times are epoch milliseconds, as there. `endpoint` (and `device`, from
/// its demographic) are there when the event was read with its endpoint
/// ([`attach_endpoints`]): it is not stored with each event.
pub fn envelope(app: &str, e: &Event) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let millis = |s: &str| crate::segments::rule::parse_instant(s).map(|t| t.timestamp_millis());
    let mut application = Map::new();
    application.insert("app_id".into(), json!(app));
    let mut sdk = Map::new();
    if !e.sdk_name.is_empty() {
        sdk.insert("name".into(), json!(e.sdk_name));
    }
    if !e.client_sdk_version.is_empty() {
        sdk.insert("version".into(), json!(e.client_sdk_version));
    }
    application.insert("sdk".into(), Value::Object(sdk));
    for (k, v) in [("package_name", &e.app_package_name), ("title", &e.app_title), ("version_code", &e.app_version_code)] {
        if !v.is_empty() {
            application.insert(k.into(), json!(v));
        }
    }
    let mut out = Map::new();
    out.insert("event_id".into(), json!(e.event_id));
    out.insert("event_type".into(), json!(e.event_type));
    out.insert("event_timestamp".into(), json!(millis(&e.event_timestamp)));
    out.insert("arrival_timestamp".into(), json!(millis(&e.arrival_timestamp)));
    out.insert("event_version".into(), json!("3.1"));
    out.insert("application".into(), Value::Object(application));
    out.insert("client".into(), json!({ "client_id": e.client_id }));
    let mut device = Map::new();
    if let Some(d) = e.endpoint.as_ref().and_then(|ep| ep.demographic.as_ref()) {
        let mut platform = Map::new();
        if !d.platform.is_empty() {
            platform.insert("name".into(), json!(d.platform));
        }
        if !d.platform_version.is_empty() {
            platform.insert("version".into(), json!(d.platform_version));
        }
        device.insert("platform".into(), Value::Object(platform));
        if !d.make.is_empty() {
            device.insert("make".into(), json!(d.make));
        }
        if !d.model.is_empty() {
            device.insert("model".into(), json!(d.model));
        }
        if !d.locale.is_empty() {
            device.insert("locale".into(), json!({ "code": d.locale }));
        }
    }
    out.insert("device".into(), Value::Object(device));
    if let Some(s) = &e.session {
        let mut session = Map::new();
        session.insert("session_id".into(), json!(s.id));
        session.insert("start_timestamp".into(), json!(millis(&s.start_timestamp)));
        if !s.stop_timestamp.is_empty() {
            session.insert("stop_timestamp".into(), json!(millis(&s.stop_timestamp)));
        }
        if s.duration > 0 {
            session.insert("duration".into(), json!(s.duration));
        }
        out.insert("session".into(), Value::Object(session));
    }
    let mut attributes: Map<String, Value> = e.attributes.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    if !e.message_id.is_empty() {
        attributes.insert("message_id".into(), json!(e.message_id));
    }
    out.insert("attributes".into(), Value::Object(attributes));
    out.insert("metrics".into(), Value::Object(e.metrics.iter().map(|(k, v)| (k.clone(), json!(v))).collect()));
    if !e.facets_json.is_empty() {
        if let Ok(f) = serde_json::from_str::<Value>(&e.facets_json) {
            out.insert("facets".into(), f);
        }
    }
    if let Some(ep) = &e.endpoint {
        out.insert("endpoint".into(), endpoint_json(ep));
    }
    Value::Object(out)
}

/// Fills each event's `endpoint` with its endpoint as it stands now (one read per distinct
/// endpoint of the batch); events of unknown endpoints (transactional sends to an address)
/// stay without one.
pub async fn attach_endpoints(store: &dyn Store, app: &str, events: &mut [Event]) -> Result<(), StoreError> {
    let mut ids: Vec<&str> = events.iter().map(|e| e.client_id.as_str()).filter(|id| !id.is_empty()).collect();
    ids.sort_unstable();
    ids.dedup();
    let found = futures::future::join_all(ids.iter().map(|id| store.get_endpoint(app, id))).await;
    let mut by_id = std::collections::HashMap::with_capacity(ids.len());
    for (id, e) in ids.iter().zip(found) {
        if let Some(e) = e? {
            by_id.insert(id.to_string(), e);
        }
    }
    for e in events {
        e.endpoint = by_id.get(&e.client_id).cloned().map(Box::new);
    }
    Ok(())
}

/// An endpoint in Pinpoint's JSON shape (PascalCase members), as streamed events carry it.
fn endpoint_json(ep: &crate::proto::v1::Endpoint) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let mut m = Map::new();
    m.insert("Id".into(), json!(ep.id));
    if let Ok(c) = crate::proto::v1::ChannelType::try_from(ep.channel_type) {
        m.insert("ChannelType".into(), json!(c.as_str_name().trim_start_matches("CHANNEL_TYPE_")));
    }
    m.insert("Address".into(), json!(ep.address));
    if let Ok(s) = crate::proto::v1::EndpointStatus::try_from(ep.endpoint_status) {
        m.insert("EndpointStatus".into(), json!(s.as_str_name().trim_start_matches("ENDPOINT_STATUS_")));
    }
    if let Ok(o) = crate::proto::v1::OptOut::try_from(ep.opt_out) {
        m.insert("OptOut".into(), json!(o.as_str_name().trim_start_matches("OPT_OUT_")));
    }
    m.insert("Attributes".into(), Value::Object(ep.attributes.iter().map(|(k, v)| (k.clone(), json!(v.values))).collect()));
    m.insert("Metrics".into(), Value::Object(ep.metrics.iter().map(|(k, v)| (k.clone(), json!(v))).collect()));
    if let Some(u) = &ep.user {
        m.insert(
            "User".into(),
            json!({
                "UserId": u.user_id,
                "UserAttributes": u.user_attributes.iter().map(|(k, v)| (k.clone(), json!(v.values))).collect::<Map<String, Value>>(),
            }),
        );
    }
    m.insert("EffectiveDate".into(), json!(ep.effective_date));
    m.insert("CreationDate".into(), json!(ep.creation_date));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_twenty_digit_numbers() {
        assert_eq!(event_id(42), "00000000000000000042");
        assert_eq!(event_number(&event_id(42)), Some(42));
        assert_eq!(event_number("42"), None);
        assert_eq!(event_number("0000000000000000004x"), None);
    }

    #[test]
    fn filters_select_by_type_campaign_and_journey() {
        let mut e = Event { event_type: "_email.send".into(), ..Default::default() };
        e.attributes.insert("campaign_id".into(), "c1".into());
        assert!(Filter::default().matches(&e));
        assert!(Filter { event_types: vec!["_email.send".into()], ..Default::default() }.matches(&e));
        assert!(!Filter { event_types: vec!["_email.open".into()], ..Default::default() }.matches(&e));
        assert!(Filter { campaign_id: "c1".into(), ..Default::default() }.matches(&e));
        assert!(!Filter { campaign_id: "c2".into(), ..Default::default() }.matches(&e));
        assert!(!Filter { journey_id: "j".into(), ..Default::default() }.matches(&e));
    }

    #[test]
    fn the_envelope_carries_pinpoints_members() {
        let mut e = Event {
            event_id: event_id(7),
            event_type: "feature_used".into(),
            event_timestamp: "2026-12-01T10:00:00.000Z".into(),
            arrival_timestamp: "2026-12-01T10:00:01.000Z".into(),
            client_id: "ep1".into(),
            sdk_name: "aws-amplify".into(),
            session: Some(crate::proto::v1::EventSession {
                id: "s1".into(),
                start_timestamp: "2026-12-01T09:59:00.000Z".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        e.metrics.insert("count".into(), 3.0);
        let v = envelope("app1", &e);
        assert_eq!(v["event_type"], "feature_used");
        assert_eq!(v["event_timestamp"], 1_796_119_200_000i64);
        assert_eq!(v["arrival_timestamp"], 1_796_119_201_000i64);
        assert_eq!(v["application"]["app_id"], "app1");
        assert_eq!(v["application"]["sdk"]["name"], "aws-amplify");
        assert_eq!(v["client"]["client_id"], "ep1");
        assert_eq!(v["session"]["session_id"], "s1");
        assert_eq!(v["metrics"]["count"], 3.0);
        assert_eq!(v["event_id"], "00000000000000000007");
    }
}
