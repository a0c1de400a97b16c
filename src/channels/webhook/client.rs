//! The HTTP client and the signature.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Payload;
use crate::channels::Delivery;

pub const SIGNATURE_HEADER: &str = "x-herald-signature";

/// A custom channel's settings.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    /// Write-only: never returned or logged.
    pub secret: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig").field("url", &self.url).field("secret", &"********").field("timeout", &self.timeout).finish()
    }
}

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &str, unix: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header for a body; `max_age` bounds the timestamp's age (replays).
pub fn verify(secret: &str, header: &str, body: &[u8], now_unix: i64, max_age: Duration) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    if (now_unix - t).unsigned_abs() > max_age.as_secs() {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

/// One custom channel's client. Cheap to share.
pub struct Webhook {
    config: WebhookConfig,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(config: WebhookConfig) -> Result<Self, reqwest::Error> {
        let http = Self::client(config.timeout)?;
        Ok(Self { config, http })
    }

    /// An HTTP client for webhooks: one per engine, shared by every custom channel, so that
    /// requests to one host reuse its pooled connections (HTTP/2 where the server offers it).
    pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
        crate::channels::install_crypto_provider();
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(256)
            .build()
    }

    /// A webhook on a shared client (see [`Webhook::client`]): cheap, made per message.
    pub fn with_client(config: WebhookConfig, http: reqwest::Client) -> Self {
        Self { config, http }
    }

    /// POSTs one payload and classifies the answer: 2xx delivered; 408 and 5xx retried; 429
    /// throttled (both honour Retry-After); other 4xx permanent.
    pub async fn send(&self, payload: &Payload) -> Delivery {
        let body = match serde_json::to_vec(payload) {
            Ok(b) => b,
            Err(e) => {
                return Delivery::Permanent { status_code: 0, message: format!("cannot encode the payload: {e}"), hard_bounce: false }
            }
        };
        let signature = sign(&self.config.secret, chrono::Utc::now().timestamp(), &body);
        let response = self
            .http
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return crate::channels::http::unanswered("delivery failed", e),
        };
        let status = response.status();
        let after = crate::channels::http::retry_after(response.headers());
        let message = status.canonical_reason().unwrap_or("").to_string();
        crate::channels::http::classify(status.as_u16(), message, after, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_expire() {
        let header = sign("s3cret", 1_700_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify("s3cret", &header, b"{\"a\":1}", 1_700_000_010, Duration::from_secs(300)));
        assert!(!verify("other", &header, b"{\"a\":1}", 1_700_000_010, Duration::from_secs(300)));
        assert!(!verify("s3cret", &header, b"{\"a\":2}", 1_700_000_010, Duration::from_secs(300)));
        assert!(!verify("s3cret", &header, b"{\"a\":1}", 1_700_001_000, Duration::from_secs(300)), "too old");
        assert!(!verify("s3cret", "garbage", b"", 0, Duration::from_secs(300)));
        assert!(!format!("{:?}", WebhookConfig { url: "u".into(), secret: "s3cret".into(), timeout: Duration::from_secs(1) })
            .contains("s3cret"));
    }
}
