//! SMS through an HTTP provider speaking the Twilio Messages API: a form POST to
//! `{base}/2010-04-01/Accounts/{sid}/Messages.json` with basic auth and `To`, `From`, `Body`
//! (and `StatusCallback` when the channel asks for delivery receipts). The provider's answer
//! becomes a delivery status: 2xx accepted (its message `sid` kept), invalid or unreachable
//! numbers permanent, 429 throttled, 5xx and transport errors retried.
//!
//! The channel's parts: [`payload`] (the text from rendered content), [`client`] (the
//! provider call and its answers) and [`SmsError`].

mod client;
mod payload;

pub use client::SmsSender;
pub use payload::Text;

/// What can be wrong with an SMS channel's settings.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SmsError {
    #[error("the app's SMS channel lacks its base_url, account_sid or auth_token")]
    Incomplete,
}
