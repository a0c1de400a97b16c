//! Firebase Cloud Messaging over the HTTP v1 API: `POST {base}/v1/projects/{project}/messages:send`
//! with an OAuth2 access token. The token comes from the service account's key file: a JWT
//! (RS256, signed with ring) exchanged at the file's `token_uri`, cached until a minute
//! before it expires and fetched again once when FCM answers 401. (The `fcm` crate speaks only
//! the legacy API Google shut down in 2024.)

use std::time::{Duration, Instant};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

use super::Delivery;
use crate::proto::v1::{DefaultPushNotificationMessage, GcmChannel, GcmMessage, PushAction};
use std::collections::HashMap;

pub const FCM: &str = "https://fcm.googleapis.com";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One FCM message body (`{"message": {...}}` without the token, which is added per device).
#[derive(Debug, Clone)]
pub struct Message {
    pub device_token: String,
    /// The `message` object's fields besides `token`.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

struct ServiceAccount {
    client_email: String,
    token_uri: String,
    key: RsaKeyPair,
}

pub struct FcmSender {
    http: reqwest::Client,
    send_url: String,
    account: ServiceAccount,
    rng: SystemRandom,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl FcmSender {
    pub fn new(c: &GcmChannel, http: reqwest::Client) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(&c.service_account_json).map_err(|e| format!("the GCM service account JSON: {e}"))?;
        let field = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or("").to_string();
        let pem = field("private_key");
        use rustls_pki_types::pem::PemObject as _;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| "the GCM service account's private_key is not a PEM PKCS#8 key".to_string())?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| format!("the GCM service account's private_key: {e}"))?;
        let project = if c.project_id.is_empty() { field("project_id") } else { c.project_id.clone() };
        let base = if c.base_url.is_empty() { FCM.to_string() } else { c.base_url.trim_end_matches('/').to_string() };
        Ok(Self {
            http,
            send_url: format!("{base}/v1/projects/{project}/messages:send"),
            account: ServiceAccount { client_email: field("client_email"), token_uri: field("token_uri"), key },
            rng: SystemRandom::new(),
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The signed assertion exchanged for an access token.
    fn assertion(&self) -> String {
        let now = chrono::Utc::now().timestamp();
        let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::json!({"iss": self.account.client_email, "scope": SCOPE, "aud": self.account.token_uri, "iat": now, "exp": now + 3600});
        let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
        let mut signature = vec![0; self.account.key.public().modulus_len()];
        self.account.key.sign(&RSA_PKCS1_SHA256, &self.rng, input.as_bytes(), &mut signature).expect("RSA signing");
        format!("{input}.{}", b64(&signature))
    }

    /// A valid access token; `stale`: the one FCM just refused.
    async fn access_token(&self, stale: Option<&str>) -> Result<String, String> {
        let mut current = self.token.lock().await;
        if let Some((t, until)) = &*current {
            if Instant::now() < *until && stale != Some(t.as_str()) {
                return Ok(t.clone());
            }
        }
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &self.assertion())
            .finish();
        let resp = self
            .http
            .post(&self.account.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("FCM token endpoint: {e}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let token = body.get("access_token").and_then(|t| t.as_str()).filter(|_| status.is_success());
        let Some(token) = token else {
            return Err(format!("FCM token endpoint answered {status}: {body}"));
        };
        let lifetime = body.get("expires_in").and_then(|e| e.as_u64()).unwrap_or(3600);
        *current = Some((token.to_string(), Instant::now() + Duration::from_secs(lifetime.saturating_sub(60))));
        Ok(token.to_string())
    }

    pub async fn send(&self, m: &Message) -> Delivery {
        let mut fields = m.fields.clone();
        fields.insert("token".into(), serde_json::Value::String(m.device_token.clone()));
        let body = serde_json::json!({ "message": fields }).to_string();
        let mut stale: Option<String> = None;
        for attempt in 0..2 {
            let token = match self.access_token(stale.as_deref()).await {
                Ok(t) => t,
                Err(e) => return Delivery::Retry { status_code: 0, message: e, retry_after: None },
            };
            let resp = self
                .http
                .post(&self.send_url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body.clone())
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => return Delivery::Retry { status_code: 0, message: format!("FCM: {e}"), retry_after: None },
            };
            let status = resp.status().as_u16();
            let retry_after = super::http::retry_after(resp.headers());
            let answer: serde_json::Value = resp.json().await.unwrap_or_default();
            if status == 200 {
                let name = answer.get("name").and_then(|n| n.as_str()).map(str::to_string);
                return Delivery::Delivered { status_code: 200, message: "accepted by FCM".into(), provider_id: name };
            }
            if status == 401 && attempt == 0 {
                stale = Some(token);
                continue;
            }
            let error = &answer["error"];
            let fcm_code = error["details"]
                .as_array()
                .and_then(|d| d.iter().find_map(|x| x.get("errorCode").and_then(|c| c.as_str())))
                .or_else(|| error["status"].as_str())
                .unwrap_or("")
                .to_string();
            let text = error["message"].as_str().unwrap_or("").to_string();
            let why = format!("FCM {status} {fcm_code}: {text}");
            return match fcm_code.as_str() {
                "UNREGISTERED" => Delivery::Permanent { status_code: status, message: why, hard_bounce: true },
                // An invalid registration token (FCM says INVALID_ARGUMENT for a malformed one).
                "INVALID_ARGUMENT" if text.to_ascii_lowercase().contains("token") => {
                    Delivery::Permanent { status_code: status, message: why, hard_bounce: true }
                }
                "QUOTA_EXCEEDED" => Delivery::Throttled { status_code: status, message: why, retry_after },
                "UNAVAILABLE" | "INTERNAL" => Delivery::Retry { status_code: status, message: why, retry_after },
                _ => super::http::classify(status, why, retry_after, None),
            };
        }
        Delivery::Retry { status_code: 401, message: "FCM refused a fresh access token".into(), retry_after: None }
    }
}

/// The FCM HTTP v1 message for a device token, from the rendered push content by part
/// (`title`, `body`, `sound`, `url`, `image_url`, `raw_content`) and the GCM and default push
/// blocks' options: a silent push carries data only; `ios` (an iOS device registered with FCM)
/// adds the `apns` override with the same choices APNs headers and aps would carry.
pub fn message(
    parts: &HashMap<String, String>,
    g: &GcmMessage,
    d: &DefaultPushNotificationMessage,
    ios: bool,
    token: &str,
) -> Result<Message, String> {
    use serde_json::{json, Map, Value};
    let pick = |name: &str| parts.get(name).cloned();
    let mut fields = Map::new();
    if let Some(raw) = pick("raw_content") {
        let v: Value = serde_json::from_str(&raw).map_err(|e| format!("raw_content is not JSON: {e}"))?;
        let inner = v.get("message").cloned().unwrap_or(v);
        let Value::Object(m) = inner else { return Err("raw_content must be a JSON object".into()) };
        fields = m;
    } else {
        let silent = g.silent_push || d.silent_push;
        if !silent {
            let mut n = Map::new();
            for (k, part) in [("title", "title"), ("body", "body"), ("image", "image_url")] {
                if let Some(v) = pick(part) {
                    n.insert(k.into(), Value::String(v));
                }
            }
            if !n.is_empty() {
                fields.insert("notification".into(), Value::Object(n));
            }
        }
        let data = if g.data.is_empty() { &d.data } else { &g.data };
        let mut data: Map<String, Value> = data.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        let action = if g.action != 0 { g.action } else { d.action };
        if let Some(url) = pick("url").filter(|_| action == PushAction::DeepLink as i32 || action == PushAction::Url as i32) {
            data.insert("pinpoint.deeplink".into(), Value::String(url));
        }
        if !data.is_empty() {
            fields.insert("data".into(), Value::Object(data));
        }
        let mut android = Map::new();
        match g.priority.to_ascii_lowercase().as_str() {
            "high" => drop(android.insert("priority".into(), json!("HIGH"))),
            "normal" => drop(android.insert("priority".into(), json!("NORMAL"))),
            _ => {}
        }
        if g.time_to_live > 0 {
            android.insert("ttl".into(), Value::String(format!("{}s", g.time_to_live)));
        }
        if !g.collapse_key.is_empty() {
            android.insert("collapse_key".into(), Value::String(g.collapse_key.clone()));
        }
        if !g.restricted_package_name.is_empty() {
            android.insert("restricted_package_name".into(), Value::String(g.restricted_package_name.clone()));
        }
        if let Some(sound) = pick("sound").filter(|_| !silent) {
            android.insert("notification".into(), json!({ "sound": sound.clone() }));
        }
        if !android.is_empty() {
            fields.insert("android".into(), Value::Object(android));
        }
        // An iOS device registered with FCM: the same choices as APNs headers and aps.
        if ios {
            let mut headers = Map::new();
            let mut aps = Map::new();
            if silent {
                aps.insert("content-available".into(), json!(1));
                headers.insert("apns-push-type".into(), json!("background"));
                headers.insert("apns-priority".into(), json!("5"));
            } else {
                match g.priority.to_ascii_lowercase().as_str() {
                    "high" => drop(headers.insert("apns-priority".into(), json!("10"))),
                    "normal" => drop(headers.insert("apns-priority".into(), json!("5"))),
                    _ => {}
                }
                if let Some(sound) = pick("sound") {
                    aps.insert("sound".into(), Value::String(sound));
                }
            }
            if g.time_to_live > 0 {
                let at = chrono::Utc::now().timestamp() + i64::from(g.time_to_live);
                headers.insert("apns-expiration".into(), Value::String(at.to_string()));
            }
            if !g.collapse_key.is_empty() {
                headers.insert("apns-collapse-id".into(), Value::String(g.collapse_key.clone()));
            }
            let mut apns = Map::new();
            if !headers.is_empty() {
                apns.insert("headers".into(), Value::Object(headers));
            }
            if !aps.is_empty() {
                apns.insert("payload".into(), json!({ "aps": aps }));
            }
            if !apns.is_empty() {
                fields.insert("apns".into(), Value::Object(apns));
            }
        }
    }
    Ok(Message { device_token: token.to_string(), fields })
}
