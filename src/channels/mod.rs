//! The `Channel` seam: each channel delivers a rendered message and classifies what the
//! provider answered; the dispatcher (not the channel) decides what to do about it — retry
//! with backoff, give up, slow down.
//!
//! Channels: [`email`] over SMTP, [`apns`], [`fcm`] (HTTP v1), [`sms`] through a Twilio-style
//! provider, and [`webhook`] for custom channels; each builds its provider's payload, speaks
//! its protocol and classifies the answers. [`senders::Senders`] is the closed set the dispatch
//! engine hands batches to.

pub mod apns;
pub mod email;
pub mod fcm;
pub mod h2;
pub mod http;
pub mod senders;
pub mod settings;
pub mod sms;
pub mod webhook;

use std::time::Duration;

use crate::proto::v1::ChannelType;

/// What to deliver (serializable, so that a retry due after a stop can be kept in the store).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Payload {
    /// A whole MIME message, sent from `from` to the job's address.
    Email { from: String, mime: Vec<u8> },
    /// A custom-channel POST to the job's address (a URL).
    Custom { body: webhook::Payload },
    /// An APNs notification to the job's address (a device token).
    Apns(apns::Push),
    /// An FCM message to the job's address (a registration token).
    Gcm(fcm::Message),
    /// A text message to the job's address (E.164); an empty `from` takes the channel's.
    Sms(sms::Text),
}

/// One message of a batch handed to [`senders::Senders::deliver`].
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    pub app_id: &'a str,
    /// The recipient: an email address, a device token, a phone number or a URL.
    pub address: &'a str,
    pub message_id: &'a str,
    pub payload: &'a Payload,
    /// Everything but the provider call.
    pub dry_run: bool,
}

/// A channel Herald delivers to: each has its own shards, senders and quotas.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub enum Lane {
    Email,
    Custom,
    Apns,
    Gcm,
    Sms,
}

impl Lane {
    pub const ALL: [Lane; 5] = [Lane::Email, Lane::Custom, Lane::Apns, Lane::Gcm, Lane::Sms];

    /// The lane that delivers to a channel, if Herald delivers to it.
    pub fn of(channel: ChannelType) -> Option<Lane> {
        match channel {
            ChannelType::Email => Some(Lane::Email),
            ChannelType::Custom => Some(Lane::Custom),
            ChannelType::Apns | ChannelType::ApnsSandbox | ChannelType::ApnsVoip | ChannelType::ApnsVoipSandbox => Some(Lane::Apns),
            ChannelType::Gcm => Some(Lane::Gcm),
            ChannelType::Sms => Some(Lane::Sms),
            _ => None,
        }
    }

    /// The channel name its quotas are kept under.
    pub fn quota_channel(self) -> &'static str {
        match self {
            Lane::Email => "EMAIL",
            Lane::Custom => "CUSTOM",
            Lane::Apns => "APNS",
            Lane::Gcm => "GCM",
            Lane::Sms => "SMS",
        }
    }
}

/// Whether a channel's address is a push token (a dead one makes its endpoint INACTIVE).
pub fn is_push(channel: &str) -> bool {
    channel.starts_with("APNS") || channel == "GCM" || channel == "BAIDU" || channel == "ADM"
}

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
