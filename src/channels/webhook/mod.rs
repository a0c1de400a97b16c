//! Custom channels: a signed JSON POST of Pinpoint's custom-channel payload to the app's
//! delivery URL.
//!
//! Signature: `X-Herald-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with
//! the channel's secret, so a receiver can check both origin and freshness.

mod client;

pub use client::{sign, verify, Webhook, WebhookConfig, SIGNATURE_HEADER};

use serde::Serialize;

/// Most endpoints one call carries (Pinpoint's limit).
pub const MAX_ENDPOINTS_PER_CALL: usize = 50;

/// Pinpoint's custom channel payload.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Payload {
    pub message: serde_json::Value,
    pub data: String,
    pub application_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub campaign_id: String,
    /// A string, as Pinpoint writes it ("0" for the default treatment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub treatment_id: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub activity_id: String,
    pub scheduled_time: String,
    /// Endpoint id → the endpoint in Pinpoint's JSON shape.
    pub endpoints: serde_json::Map<String, serde_json::Value>,
    /// The send's Context (SendMessages' and the recipient's, as Pinpoint merges them).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub context: std::collections::BTreeMap<String, String>,
}

/// Where a custom-channel message comes from: the app, when it was scheduled, and for
/// campaigns which campaign, treatment and activity.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub app_id: String,
    pub scheduled_time: String,
    pub campaign_id: String,
    pub treatment_id: Option<u32>,
    pub activity_id: String,
}

impl Payload {
    /// The payload for one recipient: the rendered data, where it comes from, and the endpoint
    /// (when the message went to one) in Pinpoint's JSON shape.
    pub fn new(data: String, origin: &Origin, endpoint: Option<&crate::proto::v1::Endpoint>) -> Self {
        let mut endpoints = serde_json::Map::new();
        if let Some(e) = endpoint {
            endpoints.insert(e.id.clone(), crate::domain::json::endpoint(e));
        }
        Payload {
            message: serde_json::json!({}),
            data,
            application_id: origin.app_id.clone(),
            campaign_id: origin.campaign_id.clone(),
            treatment_id: origin.treatment_id.map(|t| t.to_string()),
            activity_id: origin.activity_id.clone(),
            scheduled_time: origin.scheduled_time.clone(),
            endpoints,
            context: Default::default(),
        }
    }
}
