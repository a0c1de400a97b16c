//! The custom channel against a local HTTP server that checks the signature with the shared
//! secret and answers with chosen statuses.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use herald::channels::webhook::{verify, Payload, Webhook, WebhookConfig, SIGNATURE_HEADER};
use herald::channels::Delivery;

#[derive(Default)]
struct Seen {
    bodies: Vec<serde_json::Value>,
    bad_signatures: usize,
}

/// A receiver on a free port: `/ok` 200, `/busy` 429 with Retry-After 3, `/down` 503,
/// `/gone` 404, `/slow` answers after 2 s. Every request's signature is checked.
async fn receiver(secret: &'static str) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = |seen: Arc<Mutex<Seen>>, headers: HeaderMap, body: Bytes| {
        let sig = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mut s = seen.lock().unwrap();
        if verify(secret, sig, &body, chrono::Utc::now().timestamp(), Duration::from_secs(300)) {
            s.bodies.push(serde_json::from_slice(&body).unwrap());
        } else {
            s.bad_signatures += 1;
        }
    };
    let s1 = seen.clone();
    let s2 = seen.clone();
    let s3 = seen.clone();
    let app = axum::Router::new()
        .route(
            "/ok",
            axum::routing::post(move |h: HeaderMap, b: Bytes| async move {
                record(s1, h, b);
                StatusCode::OK
            }),
        )
        .route(
            "/busy",
            axum::routing::post(move |h: HeaderMap, b: Bytes| async move {
                record(s2, h, b);
                (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "3")])
            }),
        )
        .route(
            "/down",
            axum::routing::post(move |h: HeaderMap, b: Bytes| async move {
                record(s3, h, b);
                StatusCode::SERVICE_UNAVAILABLE
            }),
        )
        .route("/gone", axum::routing::post(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/slow",
            axum::routing::post(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                StatusCode::OK
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

fn hook(url: String, secret: &str) -> Webhook {
    Webhook::new(WebhookConfig { url, secret: secret.into(), timeout: Duration::from_millis(500) }).unwrap()
}

fn payload() -> Payload {
    let mut endpoints = serde_json::Map::new();
    endpoints.insert("e1".into(), serde_json::json!({"ChannelType": "CUSTOM", "Address": "https://x.example/hook"}));
    Payload {
        message: serde_json::json!({"smsmessage": {"body": "Hello"}}),
        data: "custom data".into(),
        application_id: "app".into(),
        scheduled_time: "2026-11-22T00:00:00.000Z".into(),
        endpoints,
        ..Default::default()
    }
}

#[tokio::test]
async fn signed_payloads_arrive_and_answers_classify() {
    let (base, seen) = receiver("shared-secret").await;
    let d = hook(format!("{base}/ok"), "shared-secret").send(&payload()).await;
    assert!(matches!(d, Delivery::Delivered { status_code: 200, .. }), "{d:?}");
    {
        let s = seen.lock().unwrap();
        assert_eq!((s.bodies.len(), s.bad_signatures), (1, 0));
        let body = &s.bodies[0];
        assert_eq!(body["ApplicationId"], "app");
        assert_eq!(body["Data"], "custom data");
        assert_eq!(body["Endpoints"]["e1"]["ChannelType"], "CUSTOM");
        assert!(body.get("CampaignId").is_none());
    }
    let d = hook(format!("{base}/busy"), "shared-secret").send(&payload()).await;
    assert_eq!(d, Delivery::Throttled { status_code: 429, message: "Too Many Requests".into(), retry_after: Some(Duration::from_secs(3)) });
    let d = hook(format!("{base}/down"), "shared-secret").send(&payload()).await;
    assert!(matches!(d, Delivery::Retry { status_code: 503, .. }), "{d:?}");
    let d = hook(format!("{base}/gone"), "shared-secret").send(&payload()).await;
    assert!(matches!(d, Delivery::Permanent { status_code: 404, .. }), "{d:?}");
    let d = hook(format!("{base}/slow"), "shared-secret").send(&payload()).await;
    assert!(matches!(d, Delivery::Retry { status_code: 0, .. }), "a timeout is retried: {d:?}");
    // The wrong secret: the receiver refuses to trust it.
    hook(format!("{base}/ok"), "wrong-secret").send(&payload()).await;
    assert_eq!(seen.lock().unwrap().bad_signatures, 1);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let d = hook(format!("http://{closed}/ok"), "s").send(&payload()).await;
    assert!(matches!(d, Delivery::Retry { status_code: 0, .. }), "{d:?}");
}
