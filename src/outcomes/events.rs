//! Engagement events with Pinpoint's names and envelope, made from message outcomes.

use std::collections::HashMap;

use crate::domain;
use crate::proto::v1::{DeliveryStatus, Event, MessageOutcome};

pub fn event_type(channel: &str, status: DeliveryStatus, hard_bounce: bool) -> String {
    let prefix = event_prefix(channel);
    if prefix == "_SMS" {
        // The provider took it: Pinpoint's BUFFERED; SUCCESS comes with the delivered receipt.
        let name = match status {
            DeliveryStatus::Successful => "BUFFERED",
            DeliveryStatus::OptOut => "OPTOUT",
            _ => "FAILURE",
        };
        return [prefix, ".", name].concat();
    }
    let name = match status {
        DeliveryStatus::Successful => "send",
        DeliveryStatus::PermanentFailure if hard_bounce => "hardbounce",
        DeliveryStatus::TemporaryFailure => "softbounce",
        _ => "rejected",
    };
    [prefix, ".", name].concat()
}

/// Pinpoint's event-name prefix for a channel (`EMAIL`, `SMS`, `CUSTOM`, a push channel).
pub fn event_prefix(channel: &str) -> &'static str {
    match channel {
        "EMAIL" => "_email",
        "SMS" => "_SMS",
        "VOICE" => "_voice",
        "CUSTOM" => "_custom",
        _ => "_push",
    }
}

/// The event for an outcome, with Pinpoint's envelope.
pub fn event_for(o: &MessageOutcome, event_type: String) -> Event {
    // When it happened: when the outcome was settled.
    let now = if o.updated_date.is_empty() { domain::timestamp(chrono::Utc::now()) } else { o.updated_date.clone() };
    let mut attributes = HashMap::with_capacity(7 + o.context.len());
    if !o.campaign_id.is_empty() {
        attributes.insert("campaign_id".to_string(), o.campaign_id.clone());
        attributes.insert("treatment_id".to_string(), o.treatment_id.to_string());
        if o.source == crate::proto::v1::MessageSource::Campaign as i32 && !o.request_id.is_empty() {
            attributes.insert("campaign_activity_id".to_string(), crate::campaigns::activity_id(&o.request_id, o.treatment_id));
        }
    }
    if !o.journey_id.is_empty() {
        attributes.insert("journey_id".to_string(), o.journey_id.clone());
        attributes.insert("journey_activity_id".to_string(), o.journey_activity_id.clone());
    }
    if o.dry_run {
        attributes.insert("dry_run".to_string(), "true".to_string());
    }
    if !o.trace_id.is_empty() {
        attributes.insert("trace_id".to_string(), o.trace_id.clone());
    }
    attributes.insert("feedback".to_string(), o.status_message.clone());
    // The sender's Context, beside Herald's own attributes (which win a clash).
    for (k, v) in &o.context {
        attributes.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let client_id = if o.endpoint_id.is_empty() { o.message_id.clone() } else { o.endpoint_id.clone() };
    Event {
        event_id: String::new(),
        event_type,
        event_timestamp: now.clone(),
        arrival_timestamp: now,
        app_id: o.app_id.clone(),
        client_id,
        attributes,
        facets_json: String::new(),
        message_id: o.message_id.clone(),
        origin: crate::proto::v1::EventOrigin::Delivery as i32,
        ..Default::default()
    }
}

/// What Pinpoint records of a text message: its parts and encoding on the outcome, and on the
/// `_SMS.*` event the numbers, the message type and the part count.
pub fn sms_facts(o: &mut MessageOutcome, event: &mut Event, text: &crate::channels::sms::Text) {
    let shape = crate::render::sms::shape(&text.body);
    o.message_parts = shape.parts as i32;
    o.sms_encoding = shape.encoding.as_str().to_string();
    let a = &mut event.attributes;
    a.insert("number_of_message_parts".into(), shape.parts.to_string());
    a.insert("encoding".into(), o.sms_encoding.clone());
    a.insert("message_type".into(), if text.promotional { "PROMOTIONAL" } else { "TRANSACTIONAL" }.into());
    a.insert("destination_phone_number".into(), text.to.clone());
    if !text.from.is_empty() {
        a.insert("origination_phone_number".into(), text.from.clone());
    }
}
