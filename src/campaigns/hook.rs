//! Campaign hooks (Pinpoint's CampaignHook in FILTER mode) with a signed webhook in place of a
//! Lambda function: each page of a run's endpoints, up to [`PAGE`] at a time per treatment, is
//! POSTed to the hook as Pinpoint's event (MessageConfiguration, ApplicationId, CampaignId,
//! TreatmentId, ActivityId, ScheduledTime, Endpoints), signed per Standard Webhooks as event
//! destinations are. The answer is the `Endpoints` map to send to (an object of endpoint id →
//! endpoint, as a Pinpoint extension returns `event.Endpoints`, bare or under `Endpoints`): an
//! endpoint left out gets nothing (counted as filtered_by_hook); one kept is sent with the
//! Attributes, Metrics and User.UserAttributes of the answer. Its address, channel and every
//! other field stay as stored, and ids the page did not carry are ignored, so a hook can narrow
//! and personalize a send but never redirect it.
//!
//! A hook that does not answer 2xx with such a map within [`TIMEOUT`], [`ATTEMPTS`] times,
//! fails its page: those endpoints get nothing and are counted under `failed["HOOK_FAILURE"]`
//! in the run's activity (and `herald_campaign_hook_calls_total{result="failed"}`), never sent
//! unfiltered.
//!
//! Faults: a hook call is a pure function of the page. SIGTERM lets the page in progress
//! finish; after a kill -9 or a store outage the run resumes before the page and calls the
//! hook for it again.

use std::collections::HashMap;
use std::time::Duration;

use crate::domain::FieldViolation;
use crate::events::destinations::{check_url, secret_key, sign};
use crate::proto::v1::{CampaignHook, CampaignHookMode, DirectMessageConfiguration, Endpoint};
use crate::secrets::Sealer;

/// Endpoints per hook call (Pinpoint's batch).
pub const PAGE: usize = 50;
/// How long one call may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Calls per page before it fails.
pub const ATTEMPTS: u32 = 3;

/// Whether a hook is set (a hook with neither URL nor Lambda name is none).
pub fn is_set(h: Option<&CampaignHook>) -> bool {
    h.is_some_and(|h| !h.web_url.is_empty() || !h.lambda_function_name.is_empty())
}

/// Where a campaign's hook secret is sealed.
pub fn campaign_place(app: &str, campaign: &str) -> String {
    crate::secrets::place(app, &format!("campaign:{campaign}"), "hook")
}

/// Where an app's hook secret is sealed.
pub fn app_place(app: &str) -> String {
    crate::secrets::place(app, "app", "campaign-hook")
}

/// The violations of a hook as written; `stored_secret`: an earlier version has one.
pub fn validate(h: &CampaignHook, field: &str, stored_secret: bool) -> Vec<FieldViolation> {
    let mut v = Vec::new();
    if !is_set(Some(h)) {
        return v;
    }
    if !h.lambda_function_name.is_empty() {
        v.push(FieldViolation::new(
            format!("{field}.lambda_function_name"),
            "Herald cannot invoke a Lambda function: give web_url, a webhook that answers as the function did",
        ));
    }
    if h.web_url.is_empty() {
        v.push(FieldViolation::new(format!("{field}.web_url"), "is required"));
    } else if let Err(why) = check_url(&h.web_url) {
        v.push(FieldViolation::new(format!("{field}.web_url"), why));
    }
    match CampaignHookMode::try_from(h.mode) {
        Ok(CampaignHookMode::Unspecified | CampaignHookMode::Filter) => {}
        Ok(CampaignHookMode::Delivery) => v.push(FieldViolation::new(
            format!("{field}.mode"),
            "DELIVERY is no longer supported (as in Pinpoint): send through custom_delivery_configuration and a custom message",
        )),
        Err(_) => v.push(FieldViolation::new(format!("{field}.mode"), "must be FILTER")),
    }
    if h.secret.is_empty() && !stored_secret {
        v.push(FieldViolation::new(format!("{field}.secret"), "give a whsec_ secret: the hook verifies each request with it"));
    } else if !h.secret.is_empty() && secret_key(&h.secret).is_none() {
        v.push(FieldViolation::new(format!("{field}.secret"), "must be whsec_ and the base64 of 24 to 64 bytes"));
    }
    v
}

/// The hook as stored: its secret sealed (or the stored one kept when the write gave none).
pub fn seal(sealer: &Sealer, place: &str, h: &mut CampaignHook, stored: Option<&CampaignHook>) {
    if !is_set(Some(h)) {
        *h = CampaignHook::default();
        return;
    }
    if h.mode == CampaignHookMode::Unspecified as i32 {
        h.mode = CampaignHookMode::Filter as i32;
    }
    h.secret = match (h.secret.is_empty(), stored) {
        (true, Some(old)) => old.secret.clone(),
        _ => sealer.seal(place, &h.secret),
    };
    h.has_secret = false;
}

/// The hook as shown: write-only secret cleared, whether there is one said.
pub fn shown(h: &mut Option<CampaignHook>) {
    if !is_set(h.as_ref()) {
        *h = None;
        return;
    }
    if let Some(h) = h {
        h.has_secret = !h.secret.is_empty();
        h.secret.clear();
    }
}

/// Why a hook cannot be called, or why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HookError {
    #[error("the campaign hook's secret cannot be opened: {0}")]
    Secret(String),
    #[error("the campaign hook's secret is not a whsec_ secret")]
    NotWhsec,
    #[error("this daemon has no sealing key or HTTP client for it")]
    Unavailable,
    #[error("the hook's answer is not JSON: {0}")]
    NotJson(String),
    #[error("the hook must answer with the Endpoints object (endpoint id → endpoint)")]
    NotEndpoints,
    #[error("endpoint {0} in the hook's answer: {1}")]
    BadEndpoint(String, String),
    #[error("the hook's answer broke off: {0}")]
    BrokeOff(String),
    #[error("the hook answered {0}")]
    Status(u16),
    #[error("the hook did not answer within {} s", TIMEOUT.as_secs())]
    Timeout,
    #[error("cannot connect to the hook")]
    Connect,
    #[error("the hook call failed: {0}")]
    Call(String),
}

/// A hook ready to call: its URL and signing key.
#[derive(Clone)]
pub struct Hook {
    pub url: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Hook {
    /// The stored hook opened (its secret unsealed), if one is set.
    pub fn open(sealer: &Sealer, place: &str, h: Option<&CampaignHook>) -> Result<Option<Self>, HookError> {
        let Some(h) = h.filter(|h| is_set(Some(h))) else { return Ok(None) };
        let secret = sealer.open(place, &h.secret).map_err(|e| HookError::Secret(e.to_string()))?;
        let key = secret_key(&secret).ok_or(HookError::NotWhsec)?;
        Ok(Some(Self { url: h.web_url.clone(), key }))
    }

    /// One call for a page: the endpoints the hook keeps, by id, with what it changed; or why
    /// the call failed (after [`ATTEMPTS`]).
    pub async fn filter(
        &self,
        http: &reqwest::Client,
        event: &Event<'_>,
        page: &[Endpoint],
    ) -> Result<HashMap<String, Endpoint>, HookError> {
        let mut endpoints = serde_json::Map::new();
        for e in page {
            endpoints.insert(e.id.clone(), crate::domain::json::endpoint(e));
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "MessageConfiguration": message_json(event.message),
            "ApplicationId": event.app_id,
            "CampaignId": event.campaign_id,
            "TreatmentId": event.treatment_id.to_string(),
            "ActivityId": event.activity_id,
            "ScheduledTime": event.scheduled_time,
            "Endpoints": endpoints,
        }))
        .expect("JSON of JSON values");
        let msg_id = format!("msg_{}_{}", event.activity_id, page.first().map_or("", |e| e.id.as_str()));
        let mut why = HookError::Timeout;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            let ts = chrono::Utc::now().timestamp();
            let answer = http
                .post(&self.url)
                .header("content-type", "application/json")
                .header("webhook-id", &msg_id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sign(&self.key, &msg_id, ts, &body))
                .body(body.clone())
                .timeout(TIMEOUT)
                .send()
                .await;
            why = match answer {
                Ok(r) if r.status().is_success() => match r.bytes().await {
                    Ok(b) => match kept(&b, page) {
                        Ok(k) => return Ok(k),
                        Err(e) => e,
                    },
                    Err(e) => HookError::BrokeOff(e.to_string()),
                },
                Ok(r) => HookError::Status(r.status().as_u16()),
                Err(e) if e.is_timeout() => HookError::Timeout,
                Err(e) if e.is_connect() => HookError::Connect,
                Err(e) => HookError::Call(e.to_string()),
            };
        }
        Err(why)
    }
}

/// What a hook call is about.
pub struct Event<'a> {
    pub message: &'a DirectMessageConfiguration,
    pub app_id: &'a str,
    pub campaign_id: &'a str,
    pub treatment_id: usize,
    pub activity_id: &'a str,
    pub scheduled_time: &'a str,
}

/// The endpoints of `page` that the answer keeps, with its attributes, metrics and user
/// attributes.
fn kept(answer: &[u8], page: &[Endpoint]) -> Result<HashMap<String, Endpoint>, HookError> {
    let v: serde_json::Value = serde_json::from_slice(answer).map_err(|e| HookError::NotJson(e.to_string()))?;
    let map = match v {
        serde_json::Value::Object(mut o) if o.len() == 1 && o.contains_key("Endpoints") => o.remove("Endpoints").unwrap_or_default(),
        other => other,
    };
    let serde_json::Value::Object(map) = map else {
        return Err(HookError::NotEndpoints);
    };
    let mut out = HashMap::new();
    for e in page {
        let Some(returned) = map.get(&e.id) else { continue };
        let r =
            crate::domain::import::json_line(&returned.to_string()).map_err(|why| HookError::BadEndpoint(e.id.clone(), why.to_string()))?;
        let mut keep = e.clone();
        keep.attributes = r.attributes;
        keep.metrics = r.metrics;
        let user_attributes = r.user.map(|u| u.user_attributes).unwrap_or_default();
        match keep.user.as_mut() {
            Some(u) => u.user_attributes = user_attributes,
            None if !user_attributes.is_empty() => {
                keep.user = Some(crate::proto::v1::EndpointUser { user_id: String::new(), user_attributes })
            }
            None => {}
        }
        out.insert(e.id.clone(), keep);
    }
    Ok(out)
}

/// The campaign's message configuration in Pinpoint's JSON (the parts it has).
fn message_json(m: &DirectMessageConfiguration) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    let put = |o: &mut serde_json::Map<String, serde_json::Value>, k: &str, pairs: &[(&str, &str)]| {
        let block: serde_json::Map<String, serde_json::Value> =
            pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
        if !block.is_empty() {
            o.insert(k.to_string(), serde_json::Value::Object(block));
        }
    };
    if let Some(e) = &m.email_message {
        put(
            &mut o,
            "EmailMessage",
            &[("FromAddress", &e.from_address), ("Title", &e.subject), ("Body", &e.text_part), ("HtmlBody", &e.html_part)],
        );
    }
    if let Some(s) = &m.sms_message {
        put(&mut o, "SMSMessage", &[("Body", &s.body), ("OriginationNumber", &s.origination_number), ("SenderId", &s.sender_id)]);
    }
    if let Some(c) = &m.custom_message {
        put(&mut o, "CustomMessage", &[("Data", &c.data)]);
    }
    if let Some(p) = &m.default_push_notification_message {
        put(&mut o, "DefaultMessage", &[("Title", &p.title), ("Body", &p.body)]);
    }
    if let Some(p) = &m.apns_message {
        put(&mut o, "APNSMessage", &[("Title", &p.title), ("Body", &p.body)]);
    }
    if let Some(p) = &m.gcm_message {
        put(&mut o, "GCMMessage", &[("Title", &p.title), ("Body", &p.body)]);
    }
    serde_json::Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{AttributeValues, ChannelType};

    fn ep(id: &str) -> Endpoint {
        Endpoint {
            id: id.into(),
            channel_type: ChannelType::Email as i32,
            address: format!("{id}@example.com"),
            attributes: [("Tier".to_string(), AttributeValues { values: vec!["free".into()] })].into(),
            ..Default::default()
        }
    }

    #[test]
    fn answers_keep_narrow_and_personalize_but_never_redirect() {
        let page = [ep("a"), ep("b")];
        let answer = br#"{"a": {"ChannelType": "SMS", "Address": "+14155550100", "Attributes": {"Tier": ["gold"]}},
                          "z": {"Address": "evil@example.com"}}"#;
        let k = kept(answer, &page).unwrap();
        assert_eq!(k.len(), 1, "b left out, z never sent");
        assert_eq!((k["a"].address.as_str(), k["a"].channel_type), ("a@example.com", ChannelType::Email as i32));
        assert_eq!(k["a"].attributes["Tier"].values, ["gold"]);
        let wrapped = kept(br#"{"Endpoints": {"b": {}}}"#, &page).unwrap();
        assert!(wrapped["b"].attributes.is_empty(), "the answer's attributes are the ones used");
        assert!(kept(b"[1]", &page).is_err() && kept(b"nope", &page).is_err());
    }

    #[test]
    fn hooks_validate_and_refuse_lambda_and_delivery() {
        let good = CampaignHook {
            web_url: "https://hooks.example.com/f".into(),
            secret: format!("whsec_{}", "QUJD".repeat(8)),
            ..Default::default()
        };
        assert!(validate(&good, "hook", false).is_empty());
        let fields = |h: &CampaignHook, stored| validate(h, "hook", stored).into_iter().map(|v| v.field).collect::<Vec<_>>();
        let lambda = CampaignHook { lambda_function_name: "filter".into(), mode: CampaignHookMode::Delivery as i32, ..Default::default() };
        assert_eq!(fields(&lambda, false), ["hook.lambda_function_name", "hook.web_url", "hook.mode", "hook.secret"]);
        let plain = CampaignHook { web_url: "http://hooks.example.com/f".into(), ..Default::default() };
        assert_eq!(fields(&plain, true), ["hook.web_url"], "http only on loopback; the stored secret is kept");
        assert!(fields(&CampaignHook::default(), false).is_empty(), "no hook");
    }
}
