//! Campaign hooks (FILTER) end to end: a local HTTP server checks each request's Standard
//! Webhooks signature, drops half the endpoints and rewrites an attribute of the rest; the
//! campaign's emails reach a real SMTP server (smtp-sink) only for those kept, rendered with
//! the rewritten attribute. A hook that fails sends nobody anything and says so.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use common::{violations, Daemon, RedisServer, SmtpSink, API_KEY};
use herald::proto::v1::{
    campaigns_client::CampaignsClient, AppSettings, Campaign, CampaignHook, CampaignHookMode, ChannelType, CreateCampaignRequest, Endpoint,
    Frequency, GetAppRequest, Schedule, UpdateAppSettingsRequest, UpdateCampaignRequest,
};
use hmac::{Hmac, Mac};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Verifies a Standard Webhooks signature: `v1,base64(HMAC-SHA256(key, id.ts.body))`.
fn verified(h: &HeaderMap, body: &[u8]) -> bool {
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let key = base64::engine::general_purpose::STANDARD.decode(SECRET.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", get("webhook-id"), get("webhook-timestamp")).as_bytes());
    mac.update(body);
    let want = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    get("webhook-signature").split(' ').any(|s| s == want)
}

type Calls = Arc<Mutex<Vec<serde_json::Value>>>;

/// `/filter` keeps the endpoints whose number is even and makes their Tier "gold"; `/fail`
/// answers 500. Unsigned requests get 401.
async fn hook_server() -> (String, Calls, Arc<Mutex<usize>>) {
    let calls: Calls = Default::default();
    let failed = Arc::new(Mutex::new(0usize));
    let (c, f) = (calls.clone(), failed.clone());
    let app = axum::Router::new()
        .route(
            "/filter",
            axum::routing::post(move |h: HeaderMap, b: Bytes| {
                let c = c.clone();
                async move {
                    if !verified(&h, &b) {
                        return (StatusCode::UNAUTHORIZED, String::new());
                    }
                    let event: serde_json::Value = serde_json::from_slice(&b).unwrap();
                    let mut kept = serde_json::Map::new();
                    for (id, e) in event["Endpoints"].as_object().unwrap() {
                        let n: usize = id.trim_start_matches('e').parse().unwrap();
                        if n.is_multiple_of(2) {
                            let mut e = e.clone();
                            e["Attributes"]["Tier"] = serde_json::json!(["gold"]);
                            kept.insert(id.clone(), e);
                        }
                    }
                    c.lock().unwrap().push(event);
                    (StatusCode::OK, serde_json::Value::Object(kept).to_string())
                }
            }),
        )
        .route(
            "/fail",
            axum::routing::post(move || {
                let f = f.clone();
                async move {
                    *f.lock().unwrap() += 1;
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, calls, failed)
}

fn campaign(segment: &str, subject: &str, hook: Option<CampaignHook>) -> Campaign {
    Campaign {
        name: subject.into(),
        segment_id: segment.into(),
        message_configuration: Some(common::email_message(subject, "Your tier: {{Attributes.Tier}}")),
        schedule: Some(Schedule { start_time: "IMMEDIATE".into(), frequency: Frequency::Once as i32, ..Default::default() }),
        hook,
        ..Default::default()
    }
}

/// Waits (at most 30 s) until the sink holds `n` messages with this subject.
async fn received_at_least(sink: &SmtpSink, subject: &str, n: usize) {
    let start = Instant::now();
    while sink.received(subject).len() < n {
        assert!(start.elapsed() < Duration::from_secs(30), "{n} messages {subject:?} never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_hook_narrows_and_personalizes_and_a_failing_one_sends_nothing() {
    let (base, calls, failed) = hook_server().await;
    let sink = SmtpSink::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let smtp = format!("smtp://127.0.0.1:{}?pool=4", sink.port);
    let redis = Some(RedisServer::start());
    let d = Daemon::spawn(redis, tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &["--smtp-url", &smtp]);
    let app = d.create_app("hooks").await.app_id;
    let eps: Vec<Endpoint> = (0..120)
        .map(|i| Endpoint {
            id: format!("e{i:03}"),
            channel_type: ChannelType::Email as i32,
            address: format!("user{i}@example.com"),
            attributes: [("Tier".to_string(), herald::proto::v1::AttributeValues { values: vec!["free".into()] })].into(),
            ..Default::default()
        })
        .collect();
    let segment = d.import_as_segment(&app, eps).await;
    let mut c = CampaignsClient::new(d.channel().await);

    // Refused: a Lambda function, DELIVERY mode, no secret, plain http off loopback.
    let bad = CampaignHook {
        web_url: "http://hooks.example.com/f".into(),
        lambda_function_name: "arn:aws:lambda:us-east-1:1:function:f".into(),
        mode: CampaignHookMode::Delivery as i32,
        ..Default::default()
    };
    let err = c
        .create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(campaign(&segment, "x", Some(bad))) }))
        .await
        .unwrap_err();
    assert_eq!(
        violations(&err),
        ["campaign.hook.lambda_function_name", "campaign.hook.mode", "campaign.hook.secret", "campaign.hook.web_url"]
    );

    let hook = CampaignHook { web_url: format!("{base}/filter"), secret: SECRET.into(), ..Default::default() };
    let created = c
        .create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(campaign(&segment, "Filtered", Some(hook))) }))
        .await
        .unwrap()
        .into_inner();
    let shown = created.hook.clone().unwrap();
    assert!(shown.secret.is_empty() && shown.has_secret, "the secret is write-only: {shown:?}");
    assert_eq!(shown.mode, CampaignHookMode::Filter as i32);
    let a = common::completed_campaign(&d, &app, &created.id).await[0].clone();
    assert_eq!((a.total_endpoints, a.filtered_by_hook, a.successful), (120, 60, 60), "{a:?}");
    let mut got = sink.received("Filtered");
    got.sort();
    let mut want: Vec<String> = (0..120).filter(|i| i % 2 == 0).map(|i| format!("user{i}@example.com")).collect();
    want.sort();
    assert_eq!(got, want, "only the endpoints the hook kept");
    assert!(
        sink.messages().iter().filter(|m| m.contains("Subject: Filtered")).all(|m| m.contains("Your tier: gold")),
        "rendered with the hook's attributes"
    );
    {
        let calls = calls.lock().unwrap();
        let sizes: Vec<usize> = calls.iter().map(|e| e["Endpoints"].as_object().unwrap().len()).collect();
        assert!(sizes.iter().all(|n| *n <= 50) && sizes.iter().sum::<usize>() == 120, "{sizes:?}");
        let e = &calls[0];
        assert_eq!((e["ApplicationId"].as_str(), e["CampaignId"].as_str()), (Some(app.as_str()), Some(created.id.as_str())));
        assert_eq!(e["TreatmentId"], "0");
        assert_eq!(e["MessageConfiguration"]["EmailMessage"]["Title"], "Filtered");
        assert!(e["ActivityId"].as_str().is_some_and(|s| !s.is_empty()) && e["ScheduledTime"].is_string());
    }
    // An update without the secret keeps it.
    let updated = c
        .update_campaign(d.req(UpdateCampaignRequest {
            app_id: app.clone(),
            campaign_id: created.id.clone(),
            campaign: Some(campaign(
                &segment,
                "Filtered again",
                Some(CampaignHook { web_url: format!("{base}/filter"), ..Default::default() }),
            )),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(updated.hook.unwrap().has_secret);

    // The app's hook applies to a campaign without its own; failing, it sends nobody anything.
    let mut apps = d.apps().await;
    apps.update_app_settings(d.req(UpdateAppSettingsRequest {
        app_id: app.clone(),
        settings: Some(AppSettings {
            campaign_hook: Some(CampaignHook { web_url: format!("{base}/fail"), secret: SECRET.into(), ..Default::default() }),
            ..Default::default()
        }),
    }))
    .await
    .unwrap();
    let settings = apps.get_app(d.req(GetAppRequest { app_id: app.clone() })).await.unwrap().into_inner().settings.unwrap();
    let h = settings.campaign_hook.unwrap();
    assert!(h.has_secret && h.secret.is_empty() && h.web_url.ends_with("/fail"));
    let plain = c
        .create_campaign(
            d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(campaign(&segment, "Hooked by the app", None)) }),
        )
        .await
        .unwrap()
        .into_inner();
    let a = common::completed_campaign(&d, &app, &plain.id).await[0].clone();
    assert_eq!((a.successful, a.failed.get("HOOK_FAILURE").copied()), (0, Some(120)), "{a:?}");
    assert!(sink.received("Hooked by the app").is_empty(), "a failing hook never sends unfiltered");
    let tries = *failed.lock().unwrap();
    assert!(tries >= 3 * 3 && tries % 3 == 0, "every page (at most 50 endpoints) tried three times: {tries}");
    let metric = format!("herald_campaign_hook_calls_total{{result=\"failed\"}} {}", tries / 3);
    assert!(d.metrics_text().contains(&metric), "{metric}");
}

/// Faults in the middle of a hooked run: a kill -9 of the daemon and a Redis restart. The run
/// resumes before the page it was on and calls the hook for it again; every endpoint the hook
/// keeps gets its message, nobody it drops gets one, and repeats stay within what the run
/// reports as possible repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hooked_run_survives_kill_9_and_a_redis_restart() {
    let (base, calls, _) = hook_server().await;
    let sink = SmtpSink::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let smtp = format!("smtp://127.0.0.1:{}?pool=4", sink.port);
    let d = Daemon::spawn(
        Some(RedisServer::start_durable()),
        tmp.path().join("data"),
        Some(tmp),
        Some(API_KEY.to_string()),
        &["--smtp-url", &smtp],
    );
    let app = d.create_app("hook-faults").await.app_id;
    let n = 3_000;
    let eps: Vec<Endpoint> = (0..n)
        .map(|i| Endpoint {
            id: format!("e{i:04}"),
            channel_type: ChannelType::Email as i32,
            address: format!("user{i}@example.com"),
            ..Default::default()
        })
        .collect();
    let segment = d.import_as_segment(&app, eps).await;
    let mut c = CampaignsClient::new(d.channel().await);
    let mut camp = campaign(
        &segment,
        "Faulted",
        Some(CampaignHook { web_url: format!("{base}/filter"), secret: SECRET.into(), ..Default::default() }),
    );
    camp.limits = Some(herald::proto::v1::CampaignLimits { messages_per_second: Some(400), ..Default::default() });
    let created = c.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(camp) })).await.unwrap().into_inner();
    received_at_least(&sink, "Faulted", 200).await;
    let mut d = d.crash_and_restart();
    received_at_least(&sink, "Faulted", 600).await;
    d.redis.as_mut().unwrap().kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.redis.as_mut().unwrap().start_again();
    let _c = CampaignsClient::new(d.channel().await);
    let a = common::completed_campaign(&d, &app, &created.id).await[0].clone();
    let got = sink.received("Faulted");
    let mut counts: std::collections::HashMap<&str, i64> = Default::default();
    for r in &got {
        *counts.entry(r.as_str()).or_insert(0) += 1;
    }
    let kept: Vec<String> = (0..n).filter(|i| i % 2 == 0).map(|i| format!("user{i}@example.com")).collect();
    assert!(kept.iter().all(|k| counts.contains_key(k.as_str())), "every endpoint the hook kept got its message");
    assert_eq!(counts.len(), kept.len(), "nobody the hook dropped got one");
    let repeats: i64 = counts.values().map(|v| v - 1).sum();
    assert!(repeats <= a.possible_repeats, "{repeats} repeats, {} reported", a.possible_repeats);
    assert!(calls.lock().unwrap().len() >= n / 50, "every page went through the hook");
}
