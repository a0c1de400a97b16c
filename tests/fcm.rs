//! FCM HTTP v1 end to end against a local OAuth2 token endpoint (it verifies the RS256
//! assertion with the service account's public key, its scope and audience) and a local FCM
//! server that checks the bearer token and answers with Google's documented error bodies.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use common::{Daemon, RedisServer, API_KEY};
use herald::channels::fcm::{FcmSender, Message};
use herald::channels::Delivery;
use herald::proto::v1::{
    channels_client::ChannelsClient, endpoints_client::EndpointsClient, messages_client::MessagesClient, ChannelType, DeliveryStatus,
    DirectMessageConfiguration, Endpoint, EndpointSendConfiguration, EndpointStatus, GcmChannel, GcmMessage, GetChannelRequest,
    GetEndpointRequest, SendMessagesRequest, UpdateEndpointsBatchRequest, UpdateGcmChannelRequest,
};
use parking_lot::Mutex;

const KEY_PEM: &str = include_str!("fixtures/fcm-test-key.pem");

#[derive(Default)]
struct Google {
    public_key: Vec<u8>,
    token_uri: String,
    issued: Mutex<HashSet<String>>,
    revoked: Mutex<HashSet<String>>,
    token_calls: AtomicUsize,
    messages: Mutex<Vec<serde_json::Value>>,
}

type Reply = (StatusCode, [(&'static str, &'static str); 1], String);

fn reply(status: StatusCode, v: serde_json::Value) -> Reply {
    (status, [("retry-after", "0")], v.to_string())
}

fn google_error(status: StatusCode, state: &str, message: &str, fcm: Option<&str>) -> Reply {
    let mut error = serde_json::json!({"code": status.as_u16(), "message": message, "status": state});
    if let Some(code) = fcm {
        error["details"] = serde_json::json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]);
    }
    reply(status, serde_json::json!({ "error": error }))
}

async fn token(State(g): State<Arc<Google>>, body: String) -> Reply {
    g.token_calls.fetch_add(1, Ordering::SeqCst);
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let bad = || reply(StatusCode::BAD_REQUEST, serde_json::json!({"error": "invalid_grant", "error_description": "Invalid JWT"}));
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return reply(StatusCode::BAD_REQUEST, serde_json::json!({"error": "unsupported_grant_type"}));
    }
    let Some(jwt) = form.get("assertion") else { return bad() };
    let parts: Vec<&str> = jwt.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (Some(h), Some(c), Some(sig)) = (parts.first(), parts.get(1), parts.get(2).and_then(|s| b64.decode(s).ok())) else { return bad() };
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &g.public_key);
    if key.verify(format!("{h}.{c}").as_bytes(), &sig).is_err() {
        return bad();
    }
    let header: serde_json::Value = serde_json::from_slice(&b64.decode(h).unwrap_or_default()).unwrap_or_default();
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(c).unwrap_or_default()).unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    let ok = header["alg"] == "RS256"
        && claims["iss"] == "herald-test@project-1.iam.gserviceaccount.com"
        && claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
        && claims["aud"] == g.token_uri.as_str()
        && claims["iat"].as_i64().is_some_and(|t| (t - now).abs() < 60)
        && claims["exp"].as_i64().is_some_and(|t| t > now);
    if !ok {
        return bad();
    }
    let t = format!("ya29.test-{}", g.token_calls.load(Ordering::SeqCst));
    g.issued.lock().insert(t.clone());
    reply(StatusCode::OK, serde_json::json!({"access_token": t, "expires_in": 3599, "token_type": "Bearer"}))
}

async fn send(State(g): State<Arc<Google>>, Path(project): Path<String>, headers: HeaderMap, body: String) -> Reply {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    if !g.issued.lock().contains(bearer) || g.revoked.lock().contains(bearer) {
        return google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "Request had invalid authentication credentials.", None);
    }
    if project != "project-1/messages:send" {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Requested entity was not found.", None);
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "Invalid JSON payload received.", None);
    };
    let device = v["message"]["token"].as_str().unwrap_or("").to_string();
    g.messages.lock().push(v.clone());
    if device.starts_with("ok") {
        reply(StatusCode::OK, serde_json::json!({"name": format!("projects/project-1/messages/0:{}", g.messages.lock().len())}))
    } else if device.starts_with("gone") {
        google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Requested entity was not found.", Some("UNREGISTERED"))
    } else if device.starts_with("bad") {
        google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            Some("INVALID_ARGUMENT"),
        )
    } else if device.starts_with("quota") {
        google_error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED", "Quota exceeded.", Some("QUOTA_EXCEEDED"))
    } else if device.starts_with("down") {
        google_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "The service is currently unavailable.", Some("UNAVAILABLE"))
    } else if device.starts_with("revoke") {
        // The access token dies now: the next request with it is refused.
        g.revoked.lock().insert(bearer.to_string());
        reply(StatusCode::OK, serde_json::json!({"name": "projects/project-1/messages/0:revoked"}))
    } else {
        google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "Unknown device.", None)
    }
}

async fn start_google() -> (String, Arc<Google>) {
    use rustls_pki_types::pem::PemObject as _;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(KEY_PEM.as_bytes()).unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    use ring::signature::KeyPair as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let g = Arc::new(Google { public_key: pair.public_key().as_ref().to_vec(), token_uri: format!("{base}/token"), ..Default::default() });
    let app = axum::Router::new()
        .route("/token", axum::routing::post(token))
        .route("/v1/projects/{*rest}", axum::routing::post(send))
        .with_state(g.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, g)
}

fn service_account(base: &str) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": "project-1",
        "private_key_id": "k1",
        "private_key": KEY_PEM,
        "client_email": "herald-test@project-1.iam.gserviceaccount.com",
        "token_uri": format!("{base}/token"),
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_v1_sends_with_oauth_and_retires_dead_tokens() {
    let (base, google) = start_google().await;
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(Some(RedisServer::start()), tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &[]);
    let app = d.create_app("fcm").await.app_id;
    let mut channels = ChannelsClient::new(d.channel().await);
    let settings = GcmChannel { enabled: true, service_account_json: service_account(&base), base_url: base.clone(), ..Default::default() };
    let shown = channels
        .update_gcm_channel(d.req(UpdateGcmChannelRequest { app_id: app.clone(), channel: Some(settings) }))
        .await
        .unwrap()
        .into_inner();
    assert!(shown.has_service_account_json && shown.service_account_json.is_empty());
    let got = channels.get_gcm_channel(d.req(GetChannelRequest { app_id: app.clone() })).await.unwrap().into_inner();
    assert!(got.has_service_account_json && got.service_account_json.is_empty());

    let endpoints = [("live", "ok-1"), ("gone", "gone-1"), ("bad", "bad-1"), ("iphone", "ok-ios")];
    EndpointsClient::new(d.channel().await)
        .update_endpoints_batch(
            d.req(UpdateEndpointsBatchRequest {
                app_id: app.clone(),
                endpoints: endpoints
                    .iter()
                    .map(|(id, t)| Endpoint {
                        id: id.to_string(),
                        channel_type: ChannelType::Gcm as i32,
                        address: t.to_string(),
                        demographic: (*id == "iphone")
                            .then(|| herald::proto::v1::EndpointDemographic { platform: "iOS".into(), ..Default::default() }),
                        ..Default::default()
                    })
                    .collect(),
            }),
        )
        .await
        .unwrap();
    let message = GcmMessage {
        title: "Sale".into(),
        body: "Hello {{Id}}".into(),
        priority: "high".into(),
        time_to_live: 600,
        collapse_key: "sale".into(),
        data: HashMap::from([("order".to_string(), "42".to_string())]),
        ..Default::default()
    };
    let sent = MessagesClient::new(d.channel().await)
        .send_messages(
            d.req(SendMessagesRequest {
                app_id: app.clone(),
                endpoints: endpoints
                    .iter()
                    .map(|(id, _)| {
                        // The iPhone's own Context goes into its data.pinpoint (flattened for FCM).
                        let context =
                            if *id == "iphone" { HashMap::from([("flow".to_string(), "sale".to_string())]) } else { HashMap::new() };
                        (id.to_string(), EndpointSendConfiguration { context, ..Default::default() })
                    })
                    .collect(),
                message_configuration: Some(DirectMessageConfiguration { gcm_message: Some(message), ..Default::default() }),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_inner();
    let r = |id: &str| &sent.endpoint_result[id];
    assert_eq!(r("live").delivery_status, DeliveryStatus::Successful as i32, "{:?}", r("live"));
    assert_eq!((r("gone").delivery_status, r("gone").status_code), (DeliveryStatus::PermanentFailure as i32, 404));
    assert_eq!(r("bad").delivery_status, DeliveryStatus::PermanentFailure as i32);
    assert_eq!(google.token_calls.load(Ordering::SeqCst), 1, "one access token, cached");

    let messages = google.messages.lock().clone();
    let live = messages.iter().find(|m| m["message"]["token"] == "ok-1").unwrap();
    assert_eq!(live["message"]["notification"], serde_json::json!({"title": "Sale", "body": "Hello live"}));
    assert_eq!(live["message"]["android"], serde_json::json!({"priority": "HIGH", "ttl": "600s", "collapse_key": "sale"}));
    assert_eq!(live["message"]["data"], serde_json::json!({"order": "42"}));
    assert!(live["message"].get("apns").is_none(), "no APNs override for an Android device");
    // An iOS device through FCM gets the APNs override: priority, expiry and collapse id.
    let ios = messages.iter().find(|m| m["message"]["token"] == "ok-ios").unwrap();
    let headers = &ios["message"]["apns"]["headers"];
    assert_eq!((headers["apns-priority"].as_str(), headers["apns-collapse-id"].as_str()), (Some("10"), Some("sale")));
    let expiry: i64 = headers["apns-expiration"].as_str().unwrap().parse().unwrap();
    assert!((expiry - chrono::Utc::now().timestamp() - 600).abs() < 60);
    assert_eq!(ios["message"]["notification"]["body"], "Hello iphone");
    assert_eq!(ios["message"]["data"], serde_json::json!({"order": "42", "pinpoint.flow": "sale"}));

    let mut eps = EndpointsClient::new(d.channel().await);
    for (id, want) in [("gone", EndpointStatus::Inactive), ("bad", EndpointStatus::Inactive), ("live", EndpointStatus::Active)] {
        let e = eps.get_endpoint(d.req(GetEndpointRequest { app_id: app.clone(), endpoint_id: id.into() })).await.unwrap().into_inner();
        assert_eq!(e.endpoint_status, want as i32, "{id}");
    }
}

/// A 401 fetches a new access token once; quota and outages are retryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_refreshes_its_token_on_401_and_retries_outages() {
    let (base, google) = start_google().await;
    let c = GcmChannel { enabled: true, service_account_json: service_account(&base), base_url: base.clone(), ..Default::default() };
    herald::channels::install_crypto_provider();
    let sender = FcmSender::new(&c, reqwest::Client::new()).unwrap();
    let m = |t: &str| Message { device_token: t.into(), fields: serde_json::Map::new() };
    assert!(matches!(sender.send(&m("revoke-1")).await, Delivery::Delivered { .. }));
    assert!(matches!(sender.send(&m("ok-1")).await, Delivery::Delivered { .. }), "after a 401, a new token");
    assert_eq!(google.token_calls.load(Ordering::SeqCst), 2);
    assert!(matches!(sender.send(&m("quota-1")).await, Delivery::Throttled { status_code: 429, .. }));
    assert!(matches!(sender.send(&m("down-1")).await, Delivery::Retry { status_code: 503, .. }));
    assert!(matches!(sender.send(&m("gone-1")).await, Delivery::Permanent { status_code: 404, hard_bounce: true, .. }));
}

/// The channel's project_id names the FCM project whatever the service account's says; a push
/// template's GCM block wins over its default block on an Android device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channels_project_and_a_push_templates_gcm_block_reach_fcm() {
    use herald::proto::v1::{
        template::Content, templates_client::TemplatesClient, CreateTemplateRequest, PushBlock, PushTemplate, Template,
        TemplateConfiguration, TemplateReference,
    };
    let (base, google) = start_google().await;
    let d = Daemon::start(common::Backend::Embedded);
    let app = d.create_app("fcm-templates").await.app_id;
    let mut account: serde_json::Value = serde_json::from_str(&service_account(&base)).unwrap();
    account["project_id"] = serde_json::json!("some-other-project");
    let settings = GcmChannel {
        enabled: true,
        service_account_json: account.to_string(),
        project_id: "project-1".into(),
        base_url: base.clone(),
        ..Default::default()
    };
    ChannelsClient::new(d.channel().await)
        .update_gcm_channel(d.req(UpdateGcmChannelRequest { app_id: app.clone(), channel: Some(settings) }))
        .await
        .unwrap();
    let android = Endpoint { id: "android".into(), channel_type: ChannelType::Gcm as i32, address: "ok-a".into(), ..Default::default() };
    EndpointsClient::new(d.channel().await)
        .update_endpoints_batch(d.req(UpdateEndpointsBatchRequest { app_id: app.clone(), endpoints: vec![android] }))
        .await
        .unwrap();
    let block = |title: &str| Some(PushBlock { title: title.into(), body: "for {{Id}}".into(), ..Default::default() });
    let t = Template {
        name: "promo".into(),
        content: Some(Content::Push(PushTemplate { default: block("Everyone"), apns: block("iPhones"), gcm: block("Androids") })),
        ..Default::default()
    };
    TemplatesClient::new(d.channel().await)
        .create_template(d.req(CreateTemplateRequest { app_id: app.clone(), template: Some(t) }))
        .await
        .unwrap();
    let sent = MessagesClient::new(d.channel().await)
        .send_messages(d.req(SendMessagesRequest {
            app_id: app.clone(),
            endpoints: [("android".to_string(), EndpointSendConfiguration::default())].into(),
            template_configuration: Some(TemplateConfiguration {
                push_template: Some(TemplateReference { name: "promo".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.endpoint_result["android"].delivery_status, DeliveryStatus::Successful as i32, "sent to project-1: {sent:?}");
    let messages = google.messages.lock().clone();
    assert_eq!(messages[0]["message"]["notification"], serde_json::json!({"title": "Androids", "body": "for android"}));
}
