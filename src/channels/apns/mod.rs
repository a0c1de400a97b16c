//! Apple Push Notification service over HTTP/2. Payloads come from `a2`'s builders and
//! Apple's answers are read as `a2`'s `ErrorBody`; the transport is Herald's own ([`H2Pool`]:
//! hyper over rustls), because a2's client can reach only Apple's two hosts. Two ways to
//! authenticate, as Apple offers: token authentication, an ES256 JWT (the app's .p8 key,
//! signed with ring) reused for 50 minutes and renewed at once when Apple says it expired; or
//! certificate authentication, the app's APNs client certificate presented in the TLS
//! handshake (no authorization header; the topic may be left to the certificate).
//!
//! The channel's parts: [`token`] (the provider token), [`payload`] (the notification a2's
//! builders make from rendered content), [`client`] (the sender over HTTP/2) and
//! [`ApnsError`], what can be wrong with a channel's settings or a notification.

mod client;
mod payload;
mod token;

pub use client::ApnsSender;
pub use payload::{push, Push};
pub use token::{ProviderToken, SigningKey};

use crate::proto::v1::ApnsChannel;

pub const PRODUCTION: &str = "https://api.push.apple.com";
pub const SANDBOX: &str = "https://api.sandbox.push.apple.com";

/// What can be wrong with an APNs channel's settings or a notification.
#[derive(Debug, thiserror::Error)]
pub enum ApnsError {
    #[error("the APNs token_key is not a PEM PKCS#8 private key (-----BEGIN PRIVATE KEY-----)")]
    KeyNotPem,
    #[error("the APNs token_key is not a P-256 (ES256) key")]
    KeyNotP256,
    #[error("the APNs certificate: {0}")]
    Certificate(#[from] crate::channels::email::tls::TlsError),
    #[error("the APNs channel has neither a token key nor a certificate")]
    NoCredentials,
    #[error("the APNs channel: {0}")]
    Connection(#[from] crate::channels::h2::H2Error),
    #[error("raw_content is not JSON: {0}")]
    RawContent(serde_json::Error),
    #[error("the APNs payload could not be built: {0}")]
    Payload(String),
}

/// How a channel authenticates to APNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authentication {
    Token,
    Certificate,
}

/// The method a channel's settings use: `default_authentication_method` when set, else the
/// token key when one is given, else the certificate when one is given.
pub fn authentication(c: &ApnsChannel) -> Option<Authentication> {
    match c.default_authentication_method.as_str() {
        "TOKEN" => Some(Authentication::Token),
        "CERTIFICATE" => Some(Authentication::Certificate),
        _ if !c.token_key.is_empty() => Some(Authentication::Token),
        _ if !c.certificate.is_empty() => Some(Authentication::Certificate),
        _ => None,
    }
}

/// apns-id must be a UUID: Herald's 32-hex-digit message ids in UUID form.
pub fn apns_id(message_id: &str) -> Option<String> {
    let m = message_id;
    (m.len() == 32 && m.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("{}-{}-{}-{}-{}", &m[..8], &m[8..12], &m[12..16], &m[16..20], &m[20..]))
}

/// Which APNs environment and kind of push a channel type means.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kind {
    pub sandbox: bool,
    pub voip: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apns_ids_are_message_ids_in_uuid_form() {
        assert_eq!(apns_id("0123456789abcdef0123456789abcdef").unwrap(), "01234567-89ab-cdef-0123-456789abcdef");
        assert!(apns_id("short").is_none());
    }
}
