//! Firebase Cloud Messaging over the HTTP v1 API: `POST {base}/v1/projects/{project}/messages:send`
//! with an OAuth2 access token. The token comes from the service account's key file: a JWT
//! (RS256, signed with ring) exchanged at the file's `token_uri`, cached until a minute
//! before it expires and fetched again once when FCM answers 401. (The `fcm` crate speaks only
//! the legacy API Google shut down in 2024.)
//!
//! The channel's parts: [`payload`] (the HTTP v1 message from rendered content), [`client`]
//! (the sender and its access token) and [`FcmError`].

mod client;
mod payload;

pub use client::FcmSender;
pub use payload::{message, Message};

pub const FCM: &str = "https://fcm.googleapis.com";

/// What can be wrong with a GCM channel's settings, its access token or a message.
#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    #[error("the GCM service account JSON: {0}")]
    ServiceAccount(serde_json::Error),
    #[error("the GCM service account's private_key is not a PEM PKCS#8 key")]
    KeyNotPem,
    #[error("the GCM service account's private_key: {0}")]
    Key(String),
    #[error("FCM token endpoint: {0}")]
    TokenEndpoint(String),
    #[error("FCM token endpoint answered {status}: {body}")]
    TokenRefused { status: reqwest::StatusCode, body: serde_json::Value },
    #[error("raw_content is not JSON: {0}")]
    RawContent(serde_json::Error),
    #[error("raw_content must be a JSON object")]
    RawContentNotObject,
}
