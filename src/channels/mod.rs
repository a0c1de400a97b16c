//! The `Channel` seam: each channel delivers a rendered message and classifies what the
//! provider answered; the dispatcher (not the channel) decides what to do about it — retry
//! with backoff, give up, slow down.
//!
//! Channels so far: [`email`] over SMTP and [`webhook`] for custom channels.

pub mod apns;
pub mod email;
pub mod fcm;
pub mod h2;
pub mod settings;
pub mod sms;
pub mod webhook;

use std::time::Duration;

/// Installs ring as rustls' process-wide crypto provider (once; later calls do nothing).
/// HTTPS clients need exactly one provider chosen before they are built.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// What a provider made of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted. `provider_id` is the provider's message id when it gave one.
    Delivered { status_code: u16, message: String, provider_id: Option<String> },
    /// Failed for now (a 4xx, a dropped connection, a timeout); worth retrying.
    Retry { status_code: u16, message: String, retry_after: Option<Duration> },
    /// The provider asked us to slow down.
    Throttled { status_code: u16, message: String, retry_after: Option<Duration> },
    /// Will never succeed. `hard_bounce` marks an address that does not exist, which belongs
    /// on the app's suppression list.
    Permanent { status_code: u16, message: String, hard_bounce: bool },
}

impl Delivery {
    pub fn status_code(&self) -> u16 {
        match self {
            Delivery::Delivered { status_code, .. }
            | Delivery::Retry { status_code, .. }
            | Delivery::Throttled { status_code, .. }
            | Delivery::Permanent { status_code, .. } => *status_code,
        }
    }

    pub fn is_delivered(&self) -> bool {
        matches!(self, Delivery::Delivered { .. })
    }
}
