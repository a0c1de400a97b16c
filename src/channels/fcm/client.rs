//! The sender: an OAuth2 access token from the service account, then one POST per message.

use std::time::{Duration, Instant};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

use super::{FcmError, Message, FCM};
use crate::channels::Delivery;
use crate::proto::v1::GcmChannel;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
    pub fn new(c: &GcmChannel, http: reqwest::Client) -> Result<Self, FcmError> {
        let v: serde_json::Value = serde_json::from_str(&c.service_account_json).map_err(FcmError::ServiceAccount)?;
        let field = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or("").to_string();
        let pem = field("private_key");
        use rustls_pki_types::pem::PemObject as _;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| FcmError::KeyNotPem)?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| FcmError::Key(e.to_string()))?;
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
    async fn access_token(&self, stale: Option<&str>) -> Result<String, FcmError> {
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
            .map_err(|e| FcmError::TokenEndpoint(e.to_string()))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let token = body.get("access_token").and_then(|t| t.as_str()).filter(|_| status.is_success());
        let Some(token) = token else {
            return Err(FcmError::TokenRefused { status, body });
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
                Err(e) => return Delivery::Retry { status_code: 0, message: e.to_string(), retry_after: None },
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
            let retry_after = crate::channels::http::retry_after(resp.headers());
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
                _ => crate::channels::http::classify(status, why, retry_after, None),
            };
        }
        Delivery::Retry { status_code: 401, message: "FCM refused a fresh access token".into(), retry_after: None }
    }
}
