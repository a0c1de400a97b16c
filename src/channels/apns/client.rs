//! The sender: HTTP/2 to Apple's hosts (or the channel's base URLs), Apple's answers classified.

use std::time::Duration;

use super::token::{ProviderToken, SigningKey};
use super::{apns_id, authentication, ApnsError, Authentication, Push, PRODUCTION, SANDBOX};
use crate::channels::email::tls::ClientIdentity;
use crate::channels::h2::H2Pool;
use crate::channels::Delivery;
use crate::proto::v1::ApnsChannel;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An app's APNs channel: HTTP/2 connections (each multiplexing many streams) to the
/// production and sandbox hosts, and its provider token.
pub struct ApnsSender {
    production: H2Pool,
    sandbox: H2Pool,
    /// The provider token; `None`: certificate authentication.
    token: Option<ProviderToken>,
    bundle_id: String,
    default_push_type: String,
}

impl ApnsSender {
    pub fn new(c: &ApnsChannel) -> Result<Self, ApnsError> {
        crate::channels::install_crypto_provider();
        let (token, identity) = match authentication(c) {
            Some(Authentication::Token) => {
                let key = SigningKey::from_pem(&c.token_key)?;
                (Some(ProviderToken::new(key, &c.token_key_id, &c.team_id)), None)
            }
            Some(Authentication::Certificate) => {
                let id = ClientIdentity::from_pem(&c.certificate, &c.private_key)?;
                (None, Some(id))
            }
            None => return Err(ApnsError::NoCredentials),
        };
        let n = if c.connections > 0 { c.connections as usize } else { 2 };
        let ca = Some(c.ca_certificate.as_str()).filter(|p| !p.is_empty());
        let origin = |v: &str, default: &str| if v.is_empty() { default.to_string() } else { v.trim_end_matches('/').to_string() };
        let pool = |o: String| H2Pool::new(&o, n, ca, identity.as_ref(), REQUEST_TIMEOUT).map_err(ApnsError::from);
        Ok(Self {
            production: pool(origin(&c.base_url, PRODUCTION))?,
            sandbox: pool(origin(&c.sandbox_base_url, SANDBOX))?,
            token,
            bundle_id: c.bundle_id.clone(),
            default_push_type: if c.default_push_type.is_empty() { "alert".into() } else { c.default_push_type.clone() },
        })
    }

    /// Sends one notification; `message_id` becomes its apns-id.
    pub async fn send(&self, push: &Push, message_id: &str) -> Delivery {
        let mut token = self.token.as_ref().map(ProviderToken::get);
        let path = format!("/3/device/{}", push.device_token);
        // With a certificate and no bundle id, the certificate's own topic applies.
        let topic = match (self.bundle_id.as_str(), push.voip) {
            ("", _) => None,
            (b, true) => Some(format!("{b}.voip")),
            (b, false) => Some(b.to_string()),
        };
        let push_type = if push.push_type.is_empty() { self.default_push_type.as_str() } else { push.push_type.as_str() };
        let id = apns_id(message_id);
        let (priority, expiration) = (push.priority.map(|p| p.to_string()), push.expiration.map(|e| e.to_string()));
        let pool = if push.sandbox { &self.sandbox } else { &self.production };
        let body = bytes::Bytes::from(push.body.clone());
        for attempt in 0..2 {
            let bearer = token.as_ref().map(|t| format!("bearer {t}"));
            let mut headers: Vec<(&str, &str)> = vec![("apns-push-type", push_type), ("content-type", "application/json")];
            if let Some(b) = &bearer {
                headers.push(("authorization", b));
            }
            if let Some(t) = &topic {
                headers.push(("apns-topic", t));
            }
            if let Some(id) = &id {
                headers.push(("apns-id", id));
            }
            if let Some(p) = &priority {
                headers.push(("apns-priority", p));
            }
            if let Some(e) = &expiration {
                headers.push(("apns-expiration", e));
            }
            if let Some(c) = &push.collapse_id {
                headers.push(("apns-collapse-id", c));
            }
            let answer = match pool.post(&path, &headers, body.clone()).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "APNs request failed.");
                    return Delivery::Retry { status_code: 0, message: format!("APNs: {e}"), retry_after: None };
                }
            };
            let status = answer.status;
            let retry_after = crate::channels::http::retry_after(&answer.headers);
            if status == 200 {
                let apns_id = answer.headers.get("apns-id").and_then(|v| v.to_str().ok()).map(str::to_string);
                return Delivery::Delivered { status_code: 200, message: "accepted by APNs".into(), provider_id: apns_id };
            }
            let reason = serde_json::from_slice::<a2::ErrorBody>(&answer.body).ok().map(|b| b.reason);
            let why = match &reason {
                Some(r) => format!("APNs {status} {r:?}"),
                None => format!("APNs {status} {}", String::from_utf8_lossy(&answer.body)),
            };
            use a2::ErrorReason as R;
            match (status, reason) {
                (403, Some(R::ExpiredProviderToken)) if attempt == 0 && token.is_some() => {
                    let provider = self.token.as_ref().expect("token authentication");
                    token = token.map(|stale| provider.renew(&stale));
                    continue;
                }
                // A token that is not (or no longer) a device's: its endpoint is retired.
                (400, Some(R::BadDeviceToken)) | (400, Some(R::DeviceTokenNotForTopic)) | (410, _) => {
                    return Delivery::Permanent { status_code: status, message: why, hard_bounce: true };
                }
                (403, Some(R::ExpiredProviderToken)) | (403, Some(R::InvalidProviderToken)) => {
                    return Delivery::Retry { status_code: status, message: why, retry_after };
                }
                _ => return crate::channels::http::classify(status, why, retry_after, None),
            }
        }
        Delivery::Retry { status_code: 403, message: "APNs refused a renewed provider token".into(), retry_after: None }
    }
}
