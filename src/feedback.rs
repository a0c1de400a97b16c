//! Provider feedback over HTTP, on its own port (`feedback_addr`): what providers report after
//! a send keeps endpoints and suppression lists clean.
//!
//! - `POST /v1/apps/{app}/sms/status`: the SMS provider's status callbacks (Twilio's form
//!   fields `MessageSid`, `MessageStatus`, `To`, `ErrorCode`): delivered → `_SMS.SUCCESS`,
//!   failed/undelivered → `_SMS.FAILURE`.
//! - `POST /v1/apps/{app}/sms/inbound`: replies (`From`, `Body`); STOP and its synonyms opt the
//!   number's endpoint out (`opt_out` ALL) with `_SMS.OPTOUT`.
//! - `POST /v1/apps/{app}/email/feedback`: Amazon SES notifications (raw, or inside an SNS
//!   envelope) or `{"type": "hardbounce"|"softbounce"|"complaint", "addresses": [...]}`; hard
//!   bounces and complaints go on the suppression list, each with its `_email.*` event; SES
//!   Delivery notifications record `_email.delivered`. A notification whose Message-ID is one
//!   Herald wrote names the message, so its event carries the campaign and run it came from.
//!
//! Callers authenticate with an API key having the `send` scope (and the app, for a key
//! limited to apps), as `x-api-key` or `Authorization: Bearer`;
//! SMS callbacks may instead carry the provider's signature (`X-Twilio-Signature`, HMAC-SHA1
//! with the channel's auth token over the channel's status callback URL and the sorted form
//! fields). Without API keys configured (loopback only) every caller is accepted.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;

use crate::channels::settings;
use crate::outcomes::{event_for, Batch, Recorder};
use crate::proto::v1::{ChannelType, Endpoint, MessageOutcome, OptOut, SmsChannel, Suppression, SuppressionReason};
use crate::secrets::Sealer;
use crate::store::{EndpointOp, Store};

/// Words that opt a number out (as carriers and Pinpoint treat them).
const STOP_WORDS: [&str; 7] = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT"];

pub struct Feedback {
    pub store: Arc<dyn Store>,
    pub sealer: Arc<Sealer>,
    pub keys: Arc<crate::access::Registry>,
    pub outcome_ttl: Duration,
}

type Reply = (StatusCode, String);

/// The store failed: the provider should retry; what failed goes to the log, not the answer.
fn unavailable(e: crate::store::StoreError) -> Reply {
    tracing::warn!(error = %e, "Cannot record provider feedback.");
    reply(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable; retry later")
}

/// A batch of one event.
fn one_event(app: &str, e: crate::proto::v1::Event) -> Batch {
    let mut b = Batch::default();
    b.event(app, e);
    b
}

fn reply(status: StatusCode, text: impl Into<String>) -> Reply {
    (status, text.into())
}

impl Feedback {
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/v1/apps/{app}/sms/status", axum::routing::post(sms_status))
            .route("/v1/apps/{app}/sms/inbound", axum::routing::post(sms_inbound))
            .route("/v1/apps/{app}/email/feedback", axum::routing::post(email_feedback))
            .with_state(self)
    }

    /// A key with the send scope that may touch the app (any caller with no configured key).
    async fn api_key_ok(&self, app: &str, headers: &HeaderMap) -> bool {
        let given = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")));
        match self.keys.authenticate(given).await {
            Ok(caller) => caller.may(crate::access::Scope::Send) && caller.may_touch(app),
            Err(_) => false,
        }
    }

    /// An API key, or the SMS provider's signature over the channel's callback URL.
    async fn sms_caller_ok(&self, app: &str, headers: &HeaderMap, form: &[(String, String)]) -> bool {
        if self.api_key_ok(app, headers).await {
            return true;
        }
        let Some(signature) = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()) else { return false };
        let Some(Ok(channel)) = settings::load::<SmsChannel>(self.store.as_ref(), &self.sealer, app).await else { return false };
        if channel.status_callback_url.is_empty() || channel.auth_token.is_empty() {
            return false;
        }
        let expected = twilio_signature(&channel.auth_token, &channel.status_callback_url, form);
        constant_time_eq(expected.as_bytes(), signature.as_bytes())
    }

    /// Records what a notification said, through the one recorder.
    async fn record(&self, batch: &Batch) -> Result<(), Reply> {
        Recorder::new(self.store.clone(), self.outcome_ttl).record(batch).await.map_err(unavailable)
    }
}

/// Twilio's request signature: base64(HMAC-SHA1(auth token, URL + each sorted key and value)).
pub fn twilio_signature(auth_token: &str, url: &str, form: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = form.iter().collect();
    pairs.sort();
    let mut data = url.to_string();
    for (k, v) in pairs {
        data.push_str(k);
        data.push_str(v);
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, data.as_bytes()).as_ref())
}

use crate::secrets::constant_time_eq;

fn parse_form(body: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
}

fn outcome(app: &str, channel: &str, address: &str, endpoint_id: &str, message_id: &str, note: String) -> MessageOutcome {
    MessageOutcome {
        app_id: app.to_string(),
        channel: channel.to_string(),
        address: address.to_string(),
        endpoint_id: endpoint_id.to_string(),
        message_id: message_id.to_string(),
        status_message: note,
        ..Default::default()
    }
}

fn count(kind: &'static str) {
    metrics::counter!(crate::telemetry::FEEDBACK, "kind" => kind).increment(1);
}

async fn sms_status(State(f): State<Arc<Feedback>>, Path(app): Path<String>, headers: HeaderMap, body: String) -> Reply {
    let form = parse_form(&body);
    if !f.sms_caller_ok(&app, &headers, &form).await {
        return reply(StatusCode::UNAUTHORIZED, "an API key or a valid provider signature is required");
    }
    let (to, sid, status) = (field(&form, "To"), field(&form, "MessageSid"), field(&form, "MessageStatus"));
    let kind = match status {
        "delivered" => "SUCCESS",
        "failed" | "undelivered" => "FAILURE",
        // queued, sent, accepted...: not final.
        _ => return reply(StatusCode::NO_CONTENT, ""),
    };
    count(if kind == "SUCCESS" { "sms_delivered" } else { "sms_failed" });
    let endpoint = f.store.endpoint_by_address(&app, ChannelType::Sms as i32, to).await.ok().flatten().unwrap_or_default();
    let note = format!("{status} {}", field(&form, "ErrorCode")).trim().to_string();
    let event = event_for(&outcome(&app, "SMS", to, &endpoint, sid, note), format!("_SMS.{kind}"));
    match f.record(&one_event(&app, event)).await {
        Ok(()) => reply(StatusCode::NO_CONTENT, ""),
        Err(r) => r,
    }
}

async fn sms_inbound(State(f): State<Arc<Feedback>>, Path(app): Path<String>, headers: HeaderMap, body: String) -> Reply {
    let form = parse_form(&body);
    if !f.sms_caller_ok(&app, &headers, &form).await {
        return reply(StatusCode::UNAUTHORIZED, "an API key or a valid provider signature is required");
    }
    let from = field(&form, "From");
    let word = field(&form, "Body").trim().to_ascii_uppercase();
    if !STOP_WORDS.contains(&word.as_str()) {
        return reply(StatusCode::NO_CONTENT, "");
    }
    count("sms_optout");
    let endpoint = match f.store.endpoint_by_address(&app, ChannelType::Sms as i32, from).await {
        Ok(e) => e,
        Err(e) => return unavailable(e),
    };
    if let Some(id) = &endpoint {
        let write = Endpoint { id: id.clone(), opt_out: OptOut::All as i32, ..Default::default() };
        let op = EndpointOp::Upsert {
            writes: vec![write],
            all_or_nothing: false,
            now: crate::domain::timestamp(chrono::Utc::now()),
            request_id: "sms-inbound".into(),
        };
        if let Err(e) = f.store.write_endpoints(&app, op).await {
            return unavailable(e);
        }
    }
    let event = event_for(&outcome(&app, "SMS", from, endpoint.as_deref().unwrap_or(""), "", word), "_SMS.OPTOUT".into());
    match f.record(&one_event(&app, event)).await {
        Ok(()) => reply(StatusCode::NO_CONTENT, ""),
        Err(r) => r,
    }
}

/// The Herald message id in a notification's `mail` block: its Message-ID header, which
/// Herald writes as `<{message id}@{sender domain}>`.
fn herald_message_id(v: &serde_json::Value) -> Option<String> {
    let mail = v.get("mail")?;
    let header = mail.pointer("/commonHeaders/messageId").and_then(|m| m.as_str()).or_else(|| {
        mail.get("headers")?.as_array()?.iter().find_map(|h| {
            h.get("name")?.as_str().filter(|n| n.eq_ignore_ascii_case("message-id"))?;
            h.get("value")?.as_str()
        })
    })?;
    let id = header.trim().trim_start_matches('<').split('@').next()?;
    crate::domain::message_id_time(id).map(|_| id.to_string())
}

/// What an email notification says: (kind, addresses, the Herald message it is about) with
/// kind hardbounce, softbounce, complaint or delivered.
/// A notice: its kind, the addresses it names, and the Message-ID it is about.
type Notice = (&'static str, Vec<String>, Option<String>);

/// Why an email notification cannot be read.
#[derive(Debug, thiserror::Error)]
enum NoticeError {
    #[error("the SNS Message is not JSON: {0}")]
    SnsMessage(serde_json::Error),
    #[error("type must be hardbounce, softbounce or complaint, not {0:?}")]
    Type(Option<String>),
    #[error("address or addresses is required")]
    NoAddress,
}

fn email_notices(v: &serde_json::Value) -> Result<Vec<Notice>, NoticeError> {
    // An SNS envelope carries the SES notification as a JSON string.
    if v.get("Type").and_then(|t| t.as_str()) == Some("Notification") {
        let inner: serde_json::Value =
            serde_json::from_str(v.get("Message").and_then(|m| m.as_str()).unwrap_or("")).map_err(NoticeError::SnsMessage)?;
        return email_notices(&inner);
    }
    let addresses = |list: &serde_json::Value| -> Vec<String> {
        list.as_array()
            .map(|a| a.iter().filter_map(|r| r.get("emailAddress").and_then(|e| e.as_str()).map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let ses_type = v.get("notificationType").or_else(|| v.get("eventType")).and_then(|t| t.as_str());
    let message = herald_message_id(v);
    match ses_type {
        Some("Bounce") => {
            let b = &v["bounce"];
            let kind = if b["bounceType"] == "Permanent" { "hardbounce" } else { "softbounce" };
            Ok(vec![(kind, addresses(&b["bouncedRecipients"]), message)])
        }
        Some("Complaint") => Ok(vec![("complaint", addresses(&v["complaint"]["complainedRecipients"]), message)]),
        Some("Delivery") => {
            let list = v["delivery"]["recipients"].as_array().map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_string)).collect());
            Ok(vec![("delivered", list.unwrap_or_default(), message)])
        }
        Some(_) => Ok(Vec::new()),
        None => {
            let kind = match v.get("type").and_then(|t| t.as_str()) {
                Some("hardbounce") => "hardbounce",
                Some("softbounce") => "softbounce",
                Some("complaint") => "complaint",
                other => return Err(NoticeError::Type(other.map(str::to_string))),
            };
            let mut list: Vec<String> = v
                .get("addresses")
                .and_then(|a| a.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            if let Some(a) = v.get("address").and_then(|a| a.as_str()) {
                list.push(a.to_string());
            }
            if list.is_empty() {
                return Err(NoticeError::NoAddress);
            }
            Ok(vec![(kind, list, None)])
        }
    }
}

async fn email_feedback(State(f): State<Arc<Feedback>>, Path(app): Path<String>, headers: HeaderMap, body: String) -> Reply {
    if !f.api_key_ok(&app, &headers).await {
        return reply(StatusCode::UNAUTHORIZED, "an API key with the send scope is required");
    }
    let v: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("not JSON: {e}")),
    };
    let notices = match email_notices(&v) {
        Ok(n) => n,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let now = crate::domain::timestamp(chrono::Utc::now());
    let mut batch = Batch::default();
    for (kind, addresses, message) in notices {
        // The message it is about, when Herald sent it and still keeps its outcome: its
        // campaign and run go on the event (and into their KPIs).
        let sent = match &message {
            Some(id) => f.store.get_outcome(&app, id).await.ok().flatten(),
            None => None,
        };
        for a in addresses {
            let address = crate::api::suppressions::normalize(&a);
            count(match kind {
                "hardbounce" => "email_hardbounce",
                "complaint" => "email_complaint",
                "delivered" => "email_delivered",
                _ => "email_softbounce",
            });
            let about = match sent.as_ref().filter(|o| crate::api::suppressions::normalize(&o.address) == address) {
                Some(o) => MessageOutcome {
                    status_message: kind.to_string(),
                    updated_date: String::new(),
                    context: Default::default(),
                    ..o.clone()
                },
                None => {
                    let endpoint =
                        f.store.endpoint_by_address(&app, ChannelType::Email as i32, &address).await.ok().flatten().unwrap_or_default();
                    outcome(&app, "EMAIL", &address, &endpoint, message.as_deref().unwrap_or(""), kind.to_string())
                }
            };
            batch.event(&app, event_for(&about, format!("_email.{kind}")));
            let reason = match kind {
                "hardbounce" => SuppressionReason::HardBounce,
                "complaint" => SuppressionReason::Complaint,
                _ => continue,
            };
            batch.suppress(
                &app,
                Suppression { address, reason: reason as i32, created_date: now.clone(), note: "provider feedback".into() },
            );
        }
    }
    match f.record(&batch).await {
        Ok(()) => reply(StatusCode::NO_CONTENT, ""),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ses_notifications_raw_and_in_sns_envelopes() {
        let bounce = serde_json::json!({
            "notificationType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": "a@x.test"}, {"emailAddress": "b@x.test"}]}
        });
        assert_eq!(email_notices(&bounce).unwrap(), vec![("hardbounce", vec!["a@x.test".to_string(), "b@x.test".to_string()], None)]);
        let sns = serde_json::json!({"Type": "Notification", "Message": serde_json::json!({
            "notificationType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": "c@x.test"}]}
        }).to_string()});
        assert_eq!(email_notices(&sns).unwrap(), vec![("complaint", vec!["c@x.test".to_string()], None)]);
        // A delivery names Herald's message through the Message-ID header it wrote.
        let id = crate::domain::new_message_id();
        let delivery = serde_json::json!({
            "notificationType": "Delivery",
            "mail": {"commonHeaders": {"messageId": format!("<{id}@shop.example>")}},
            "delivery": {"recipients": ["e@x.test"]}
        });
        assert_eq!(email_notices(&delivery).unwrap(), vec![("delivered", vec!["e@x.test".to_string()], Some(id))]);
        let foreign = serde_json::json!({"eventType": "Delivery", "mail": {"headers": [{"name": "Message-ID", "value": "<abc@x>"}]},
            "delivery": {"recipients": ["e@x.test"]}});
        assert_eq!(email_notices(&foreign).unwrap()[0].2, None);
        let soft = serde_json::json!({"notificationType": "Bounce", "bounce": {"bounceType": "Transient", "bouncedRecipients": []}});
        assert_eq!(email_notices(&soft).unwrap()[0].0, "softbounce");
        assert_eq!(email_notices(&serde_json::json!({"type": "complaint", "address": "d@x.test"})).unwrap()[0].1, ["d@x.test"]);
        assert!(email_notices(&serde_json::json!({"type": "bounce"})).is_err());
    }

    #[test]
    fn twilio_signatures_follow_the_documented_example() {
        // Twilio's documented example (security docs): auth token 12345, this URL and form.
        let form: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sig = twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &form);
        assert_eq!(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    }
}
