//! A local APNs: HTTP/2 over TLS (a certificate from a test CA), checking what Apple checks —
//! the path `/3/device/<token>`, the provider token (an ES256 JWT whose signature must verify
//! with the team's key, with `kid` and `iss`), the topic, the push type — and answering with
//! Apple's documented status codes and `{"reason": ...}` bodies. The device token picks the
//! answer: `ok…` 200, `bad…` 400 BadDeviceToken, `gone…` 410 Unregistered, `busy…` 429
//! TooManyRequests, `down…` 503 ServiceUnavailable, `stale…` 403 ExpiredProviderToken for the
//! first provider token it sees, then 200. Started with [`ApnsServer::with_certificates`] it
//! checks certificate authentication instead: the TLS handshake requires a client certificate
//! from the server's own "Apple" CA (made for the test, with the bundle id as its UID, as
//! Apple's carry it), and requests carry no provider token.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::tls_relay::test_server_config_with;

/// A CA standing in for Apple's, a verifier requiring client certificates it issued, and one
/// such certificate for `bundle_id` (subject UID the bundle id, CN "Apple Push Services: …")
/// with its key, both PEM.
fn client_authority(bundle_id: &str) -> (Arc<dyn rustls::server::danger::ClientCertVerifier>, String, String) {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let ca = super::tls_relay::test_ca("Test Apple Worldwide Developer Relations CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, format!("Apple Push Services: {bundle_id}"));
    params.distinguished_name.push(DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 1]), bundle_id);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap();
    (verifier, cert.pem(), key.serialize_pem())
}

/// What the server saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub token: String,
    pub topic: String,
    pub push_type: String,
    pub apns_id: String,
    pub priority: String,
    pub expiration: String,
    pub collapse_id: String,
    pub jwt: String,
    pub body: serde_json::Value,
    pub http2: bool,
}

pub struct ApnsServer {
    pub port: u16,
    pub ca_pem: String,
    /// The team's .p8 key (PEM) the provider tokens must be signed with.
    pub key_pem: String,
    pub key_id: String,
    pub team_id: String,
    pub bundle_id: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Requests refused for a bad provider token, path or topic.
    pub refused: Arc<AtomicUsize>,
    /// Certificate authentication: the client certificate (PEM) and its key (PEM) Apple would
    /// have issued to the app.
    pub client_certificate: Option<(String, String)>,
    /// Only count requests, do not keep them (load tests).
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    public_key: Vec<u8>,
    key_id: String,
    team_id: String,
    bundle_id: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    refused: Arc<AtomicUsize>,
    /// Provider tokens already refused as expired (each `stale…` device sees the first one
    /// refused).
    expired: Mutex<HashSet<String>>,
    /// Certificate authentication (the handshake checked the certificate).
    certificates: bool,
}

fn answer(status: u16, reason: Option<&str>, apns_id: &str) -> Response<Full<Bytes>> {
    let body = match reason {
        Some(r) if status == 410 => serde_json::json!({"reason": r, "timestamp": 1_700_000_000_000u64}).to_string(),
        Some(r) => serde_json::json!({"reason": r}).to_string(),
        None => String::new(),
    };
    Response::builder().status(status).header("apns-id", apns_id).body(Full::new(Bytes::from(body))).unwrap()
}

/// Checks an ES256 JWT against the key; returns its header and claims.
fn verify(jwt: &str, public_key: &[u8]) -> Option<(serde_json::Value, serde_json::Value)> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = jwt.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    let signature = b64.decode(s).ok()?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, public_key)
        .verify(format!("{h}.{c}").as_bytes(), &signature)
        .ok()?;
    Some((serde_json::from_slice(&b64.decode(h).ok()?).ok()?, serde_json::from_slice(&b64.decode(c).ok()?).ok()?))
}

async fn handle(state: Arc<State>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let apns_id = header("apns-id");
    let http2 = req.version() == hyper::Version::HTTP_2;
    let refuse = |status: u16, reason: &str| {
        state.refused.fetch_add(1, Ordering::Relaxed);
        answer(status, Some(reason), &apns_id)
    };
    if req.method() != hyper::Method::POST {
        return refuse(405, "MethodNotAllowed");
    }
    let Some(token) = req.uri().path().strip_prefix("/3/device/").map(str::to_string) else {
        return refuse(404, "BadPath");
    };
    let jwt = header("authorization").strip_prefix("bearer ").unwrap_or("").to_string();
    if state.certificates {
        // The TLS handshake authenticated the provider; a token as well is not expected.
        if !header("authorization").is_empty() {
            return refuse(403, "InvalidProviderToken");
        }
    } else {
        let Some((h, c)) = verify(&jwt, &state.public_key) else {
            return refuse(403, "InvalidProviderToken");
        };
        if h["alg"] != "ES256" || h["kid"] != state.key_id.as_str() || c["iss"] != state.team_id.as_str() || !c["iat"].is_i64() {
            return refuse(403, "InvalidProviderToken");
        }
    }
    let (topic, push_type) = (header("apns-topic"), header("apns-push-type"));
    let voip_topic = format!("{}.voip", state.bundle_id);
    // Without apns-topic, a certificate's own topic applies.
    let effective = match (topic.is_empty() && state.certificates, push_type == "voip") {
        (true, true) => voip_topic.clone(),
        (true, false) => state.bundle_id.clone(),
        (false, _) => topic.clone(),
    };
    if effective != state.bundle_id && effective != voip_topic {
        return refuse(400, "TopicDisallowed");
    }
    if (push_type == "voip") != (effective == voip_topic) {
        return refuse(400, "BadTopic");
    }
    let (priority, expiration, collapse_id) = (header("apns-priority"), header("apns-expiration"), header("apns-collapse-id"));
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return refuse(400, "PayloadEmpty");
    };
    let seen = Seen {
        token: token.clone(),
        topic,
        push_type,
        apns_id: apns_id.clone(),
        priority,
        expiration,
        collapse_id,
        jwt: jwt.clone(),
        body,
        http2,
    };
    state.seen.lock().push(seen);
    let (status, reason) = if token.starts_with("ok") {
        (200, None)
    } else if token.starts_with("bad") {
        (400, Some("BadDeviceToken"))
    } else if token.starts_with("gone") {
        (410, Some("Unregistered"))
    } else if token.starts_with("busy") {
        (429, Some("TooManyRequests"))
    } else if token.starts_with("down") {
        (503, Some("ServiceUnavailable"))
    } else if token.starts_with("stale") {
        let mut expired = state.expired.lock();
        if expired.is_empty() || expired.contains(&jwt) {
            expired.insert(jwt);
            (403, Some("ExpiredProviderToken"))
        } else {
            (200, None)
        }
    } else {
        (400, Some("BadDeviceToken"))
    };
    answer(status, reason, &apns_id)
}

impl ApnsServer {
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A server for certificate authentication.
    pub async fn with_certificates() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(certificates: bool) -> Self {
        let bundle_id = "com.example.shop";
        let (verifier, client_certificate) = if certificates {
            let (verifier, cert, key) = client_authority(bundle_id);
            (Some(verifier), Some((cert, key)))
        } else {
            (None, None)
        };
        let (mut config, ca_pem) = test_server_config_with(&["localhost", "127.0.0.1"], verifier);
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let state = Arc::new(State {
            public_key: key.public_key_raw().to_vec(),
            key_id: "ABC123DEFG".into(),
            team_id: "TEAM123456".into(),
            bundle_id: bundle_id.into(),
            seen: Arc::new(Mutex::new(Vec::new())),
            refused: Arc::new(AtomicUsize::new(0)),
            expired: Mutex::new(HashSet::new()),
            certificates,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, state) = (acceptor.clone(), s.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(state, req).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .max_concurrent_streams(1_000)
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            port,
            ca_pem,
            key_pem: key.serialize_pem(),
            key_id: state.key_id.clone(),
            team_id: state.team_id.clone(),
            bundle_id: state.bundle_id.clone(),
            seen: state.seen.clone(),
            refused: state.refused.clone(),
            client_certificate,
            task,
        }
    }

    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
}
