//! Apple Push Notification service over HTTP/2. Payloads come from `a2`'s builders and
//! Apple's answers are read as `a2`'s `ErrorBody`; the transport is Herald's own ([`H2Pool`]:
//! hyper over rustls), because a2's client can reach only Apple's two hosts. Two ways to
//! authenticate, as Apple offers: token authentication, an ES256 JWT (the app's .p8 key,
//! signed with ring) reused for 50 minutes and renewed at once when Apple says it expired; or
//! certificate authentication, the app's APNs client certificate presented in the TLS
//! handshake (no authorization header; the topic may be left to the certificate).

use std::time::{Duration, Instant};

use base64::Engine as _;
use parking_lot::Mutex;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use super::email::tls::ClientIdentity;
use super::h2::H2Pool;
use super::Delivery;
use crate::proto::v1::{ApnsChannel, ApnsMessage, DefaultPushNotificationMessage, PushAction};
use std::collections::HashMap;

pub const PRODUCTION: &str = "https://api.push.apple.com";
pub const SANDBOX: &str = "https://api.sandbox.push.apple.com";
/// Apple accepts a provider token for an hour and refuses renewals more often than every 20
/// minutes.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A .p8 key: PKCS#8, P-256.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl SigningKey {
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        use rustls_pki_types::pem::PemObject as _;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| "is not a PEM PKCS#8 private key (-----BEGIN PRIVATE KEY-----)".to_string())?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_pkcs8_der(), &rng)
            .map_err(|_| "is not a P-256 (ES256) key".to_string())?;
        Ok(Self { pair, rng })
    }

    /// A JWT with `header` and `claims` (JSON), signed ES256.
    pub fn jwt(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing_input = format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()));
        let signature = self.pair.sign(&self.rng, signing_input.as_bytes()).expect("ECDSA signing");
        format!("{signing_input}.{}", b64.encode(signature.as_ref()))
    }
}

/// The provider token, shared by every request of one channel.
pub struct ProviderToken {
    key: SigningKey,
    key_id: String,
    team_id: String,
    current: Mutex<Option<(String, Instant)>>,
}

impl ProviderToken {
    pub fn new(key: SigningKey, key_id: &str, team_id: &str) -> Self {
        Self { key, key_id: key_id.to_string(), team_id: team_id.to_string(), current: Mutex::new(None) }
    }

    fn sign(&self) -> String {
        let header = serde_json::json!({"alg": "ES256", "kid": self.key_id});
        let claims = serde_json::json!({"iss": self.team_id, "iat": chrono::Utc::now().timestamp()});
        self.key.jwt(&header, &claims)
    }

    /// The token to send: the current one while it is fresh.
    pub fn get(&self) -> String {
        let mut current = self.current.lock();
        match &*current {
            Some((t, at)) if at.elapsed() < TOKEN_LIFETIME => t.clone(),
            _ => {
                let t = self.sign();
                *current = Some((t.clone(), Instant::now()));
                t
            }
        }
    }

    /// A new token after Apple refused `stale` (unless another request renewed it already).
    pub fn renew(&self, stale: &str) -> String {
        let mut current = self.current.lock();
        if let Some((t, _)) = &*current {
            if t != stale {
                return t.clone();
            }
        }
        let t = self.sign();
        *current = Some((t.clone(), Instant::now()));
        t
    }
}

/// One notification, ready to go.
#[derive(Debug, Clone)]
pub struct Push {
    pub device_token: String,
    pub sandbox: bool,
    pub voip: bool,
    pub push_type: String,
    /// 10 or 5 (apns-priority); `None`: Apple's default.
    pub priority: Option<u8>,
    /// apns-expiration (unix seconds; 0: deliver once or drop).
    pub expiration: Option<i64>,
    pub collapse_id: Option<String>,
    /// The JSON payload.
    pub body: Vec<u8>,
}

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

impl ApnsSender {
    pub fn new(c: &ApnsChannel) -> Result<Self, String> {
        super::install_crypto_provider();
        let (token, identity) = match authentication(c) {
            Some(Authentication::Token) => {
                let key = SigningKey::from_pem(&c.token_key).map_err(|e| format!("the APNs token_key {e}"))?;
                (Some(ProviderToken::new(key, &c.token_key_id, &c.team_id)), None)
            }
            Some(Authentication::Certificate) => {
                let id = ClientIdentity::from_pem(&c.certificate, &c.private_key).map_err(|e| format!("the APNs certificate: {e}"))?;
                (None, Some(id))
            }
            None => return Err("the APNs channel has neither a token key nor a certificate".into()),
        };
        let n = if c.connections > 0 { c.connections as usize } else { 2 };
        let ca = Some(c.ca_certificate.as_str()).filter(|p| !p.is_empty());
        let origin = |v: &str, default: &str| if v.is_empty() { default.to_string() } else { v.trim_end_matches('/').to_string() };
        let pool = |o: String| H2Pool::new(&o, n, ca, identity.as_ref(), REQUEST_TIMEOUT).map_err(|e| format!("the APNs channel: {e}"));
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
            let retry_after = super::http::retry_after(&answer.headers);
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
                _ => return super::http::classify(status, why, retry_after, None),
            }
        }
        Delivery::Retry { status_code: 403, message: "APNs refused a renewed provider token".into(), retry_after: None }
    }
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

/// Which APNs environment and kind of push a channel type means.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kind {
    pub sandbox: bool,
    pub voip: bool,
}

/// The APNs notification for a device token, built with a2's payload builder from the rendered
/// push content by part (the APNs block's parts, else the default block's) and the APNs
/// message's options (badge, category, thread id, push type, priority, expiration, collapse id).
pub fn push(
    parts: &HashMap<String, String>,
    a: &ApnsMessage,
    d: &DefaultPushNotificationMessage,
    kind: Kind,
    token: &str,
) -> Result<Push, String> {
    use a2::request::notification::NotificationBuilder as _;
    use a2::request::payload::PayloadLike as _;
    let pick = |name: &str| parts.get(name).map(String::as_str);
    let silent = a.silent_push || d.silent_push;
    let body = match pick("raw_content") {
        Some(raw) => {
            let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| format!("raw_content is not JSON: {e}"))?;
            v.to_string()
        }
        None => {
            let mut b = a2::DefaultNotificationBuilder::new();
            if silent {
                b = b.set_content_available();
            } else {
                if let Some(v) = pick("title") {
                    b = b.set_title(v);
                }
                if let Some(v) = pick("body") {
                    b = b.set_body(v);
                }
                if let Some(v) = pick("sound") {
                    b = b.set_sound(v);
                }
            }
            if a.badge > 0 {
                b = b.set_badge(a.badge as u32);
            }
            if !a.category.is_empty() {
                b = b.set_category(&a.category);
            }
            if pick("image_url").is_some() {
                b = b.set_mutable_content();
            }
            let mut payload = b.build(token, Default::default());
            let data = if a.data.is_empty() { &d.data } else { &a.data };
            for (k, v) in data {
                payload.data.insert(k.as_str(), serde_json::Value::String(v.clone()));
            }
            let action = if a.action != 0 { a.action } else { d.action };
            if let Some(url) = pick("url").filter(|_| action == PushAction::DeepLink as i32 || action == PushAction::Url as i32) {
                payload.data.insert("pinpoint", serde_json::json!({"deeplink": url}));
            }
            if let Some(img) = pick("image_url") {
                payload.data.insert("media_url", serde_json::Value::String(img.to_string()));
            }
            if !a.thread_id.is_empty() {
                payload.data.insert("thread-id", serde_json::Value::String(a.thread_id.clone()));
            }
            let mut json = payload.to_json_string().map_err(|e| e.to_string())?;
            if !a.thread_id.is_empty() {
                // thread-id belongs in aps.
                let mut v: serde_json::Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
                if let Some(t) = v.as_object_mut().and_then(|o| o.remove("thread-id")) {
                    v["aps"]["thread-id"] = t;
                }
                json = v.to_string();
            }
            json
        }
    };
    let voip = kind.voip;
    let push_type = if !a.apns_push_type.is_empty() {
        a.apns_push_type.clone()
    } else if voip {
        "voip".into()
    } else if silent {
        "background".into()
    } else {
        String::new()
    };
    let priority = match a.priority.as_str() {
        "10" => Some(10),
        "5" => Some(5),
        _ if silent => Some(5),
        _ => None,
    };
    Ok(Push {
        device_token: token.to_string(),
        sandbox: kind.sandbox,
        voip,
        push_type,
        priority,
        expiration: (a.time_to_live > 0).then(|| chrono::Utc::now().timestamp() + i64::from(a.time_to_live)),
        collapse_id: Some(a.collapse_id.clone()).filter(|c| !c.is_empty()),
        body: body.into_bytes(),
    })
}
