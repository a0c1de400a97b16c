//! The provider call (Twilio's Messages API) and what its answers mean.

use std::time::Duration;

use super::{SmsError, Text};
use crate::channels::Delivery;
use crate::proto::v1::SmsChannel;

/// Provider error codes (Twilio's) that say the number itself cannot receive the message.
const NUMBER_ERRORS: [i64; 6] = [21211, 21214, 21217, 21407, 21612, 21614];
/// The recipient replied STOP: the number is opted out at the provider.
const OPTED_OUT: i64 = 21610;

pub struct SmsSender {
    http: reqwest::Client,
    url: String,
    account_sid: String,
    auth_token: String,
    status_callback: Option<String>,
    /// The default sender: the first origination number, else the sender id.
    default_from: Option<String>,
}

impl SmsSender {
    pub fn new(c: &SmsChannel, http: reqwest::Client) -> Result<Self, SmsError> {
        if c.base_url.is_empty() || c.account_sid.is_empty() || c.auth_token.is_empty() {
            return Err(SmsError::Incomplete);
        }
        Ok(Self {
            http,
            url: format!("{}/2010-04-01/Accounts/{}/Messages.json", c.base_url.trim_end_matches('/'), c.account_sid),
            account_sid: c.account_sid.clone(),
            auth_token: c.auth_token.clone(),
            status_callback: Some(c.status_callback_url.clone()).filter(|u| !u.is_empty()),
            default_from: c.origination_numbers.first().cloned().or_else(|| Some(c.sender_id.clone()).filter(|s| !s.is_empty())),
        })
    }

    /// Sends `text`; an empty `from` takes the channel's default sender.
    pub async fn send(&self, text: &Text) -> Delivery {
        let from = match (text.from.as_str(), &self.default_from) {
            ("", Some(d)) => d.as_str(),
            ("", None) => {
                let message = "no origination number or sender id: set one on the message or the SMS channel".into();
                return Delivery::Permanent { status_code: 0, message, hard_bounce: false };
            }
            (f, _) => f,
        };
        let mut form: Vec<(&str, &str)> = vec![("To", &text.to), ("From", from), ("Body", &text.body)];
        if let Some(cb) = &self.status_callback {
            form.push(("StatusCallback", cb));
        }
        if text.promotional {
            form.push(("MessageIntent", "marketing"));
        }
        let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish();
        let resp = self
            .http
            .post(&self.url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encoded)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return Delivery::Retry { status_code: 0, message: format!("SMS provider: {e}"), retry_after: None },
        };
        let status = resp.status().as_u16();
        let retry_after = crate::channels::http::retry_after(resp.headers());
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let code = body.get("code").and_then(|c| c.as_i64());
        let message = body.get("message").and_then(|m| m.as_str()).unwrap_or("").to_string();
        let why = match code {
            Some(c) => format!("SMS provider {status} (error {c}): {message}"),
            None => format!("SMS provider {status}: {message}"),
        };
        match status {
            200..=299 => {
                let sid = body.get("sid").and_then(|s| s.as_str()).map(str::to_string);
                Delivery::Delivered { status_code: status, message: "accepted by the SMS provider".into(), provider_id: sid }
            }
            429 | 408 | 500..=599 => crate::channels::http::classify(status, why, retry_after, None),
            _ if code == Some(OPTED_OUT) => Delivery::Permanent { status_code: status, message: why, hard_bounce: false },
            _ if code.is_some_and(|c| NUMBER_ERRORS.contains(&c)) => {
                Delivery::Permanent { status_code: status, message: why, hard_bounce: true }
            }
            _ => Delivery::Permanent { status_code: status, message: why, hard_bounce: false },
        }
    }
}
