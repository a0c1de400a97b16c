//! APNs end to end against a protocol-faithful local server (HTTP/2 over TLS with a test CA,
//! provider tokens verified with the team's key): channel settings with a write-only key that
//! is sealed at rest, Apple's answers mapped to delivery statuses, a dead token flipping its
//! endpoint to INACTIVE, an expired provider token renewed.

#[path = "common/apns_server.rs"]
mod apns_server;
mod common;
#[path = "common/tls_relay.rs"]
mod tls_relay;

use std::collections::HashMap;

use apns_server::ApnsServer;
use common::{Daemon, RedisServer, API_KEY};
use herald::channels::apns::{ApnsSender, Push};
use herald::channels::Delivery;
use herald::proto::v1::{
    channels_client::ChannelsClient, endpoints_client::EndpointsClient, messages_client::MessagesClient, ApnsChannel, ApnsMessage,
    ChannelType, DeliveryStatus, DirectMessageConfiguration, Endpoint, EndpointSendConfiguration, EndpointStatus, GetChannelRequest,
    GetEndpointRequest, SendMessagesRequest, UpdateApnsChannelRequest, UpdateEndpointsBatchRequest,
};
use tonic::Code;

fn channel(server: &ApnsServer) -> ApnsChannel {
    ApnsChannel {
        enabled: true,
        token_key: server.key_pem.clone(),
        token_key_id: server.key_id.clone(),
        team_id: server.team_id.clone(),
        bundle_id: server.bundle_id.clone(),
        base_url: server.base_url(),
        sandbox_base_url: server.base_url(),
        ca_certificate: server.ca_pem.clone(),
        connections: 2,
        ..Default::default()
    }
}

/// A plain alert to `token` on the production host.
fn push(token: &str) -> Push {
    Push {
        device_token: token.into(),
        sandbox: false,
        voip: false,
        push_type: String::new(),
        priority: None,
        expiration: None,
        collapse_id: None,
        body: br#"{"aps":{"alert":"hi"}}"#.to_vec(),
    }
}

/// SendMessages of `message` to the recipients `to` names, in `app`.
async fn send_apns(d: &Daemon, app: &str, to: SendMessagesRequest, message: ApnsMessage) -> herald::proto::v1::SendMessagesResponse {
    let request = SendMessagesRequest {
        app_id: app.to_string(),
        message_configuration: Some(DirectMessageConfiguration { apns_message: Some(message), ..Default::default() }),
        ..to
    };
    MessagesClient::new(d.channel().await).send_messages(d.req(request)).await.unwrap().into_inner()
}

/// Every string value in a Redis database (strings, hashes, sets, sorted sets, lists).
async fn redis_values(url: &str) -> Vec<Vec<u8>> {
    use deadpool_redis::redis::AsyncCommands;
    let client = deadpool_redis::redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = c.keys("*").await.unwrap();
    let mut out = Vec::new();
    for k in keys {
        let t: String = deadpool_redis::redis::cmd("TYPE").arg(&k).query_async(&mut c).await.unwrap();
        match t.as_str() {
            "string" => out.push(c.get::<_, Vec<u8>>(&k).await.unwrap()),
            "hash" => out.extend(c.hgetall::<_, HashMap<Vec<u8>, Vec<u8>>>(&k).await.unwrap().into_values()),
            "set" => out.extend(c.smembers::<_, Vec<Vec<u8>>>(&k).await.unwrap()),
            "zset" => out.extend(c.zrange::<_, Vec<Vec<u8>>>(&k, 0, -1).await.unwrap()),
            "list" => out.extend(c.lrange::<_, Vec<Vec<u8>>>(&k, 0, -1).await.unwrap()),
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_channel_sends_maps_answers_and_retires_dead_tokens() {
    let server = ApnsServer::start().await;
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(Some(redis), tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &[]);
    let app = d.create_app("push").await.app_id;
    let mut channels = ChannelsClient::new(d.channel().await);

    // Validation names each bad field; nothing is stored.
    let mut bad = channel(&server);
    bad.token_key = "not a key".into();
    bad.team_id = "short".into();
    bad.default_push_type = "loud".into();
    let err = channels.update_apns_channel(d.req(UpdateApnsChannelRequest { app_id: app.clone(), channel: Some(bad) })).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        tonic_types::StatusExt::get_details_bad_request(&err).unwrap().field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["channel.token_key", "channel.team_id", "channel.default_push_type"]);
    let missing = channels.get_apns_channel(d.req(GetChannelRequest { app_id: app.clone() })).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // The key is write-only: never shown, sealed in the store, kept by updates that omit it.
    let shown = channels
        .update_apns_channel(d.req(UpdateApnsChannelRequest { app_id: app.clone(), channel: Some(channel(&server)) }))
        .await
        .unwrap()
        .into_inner();
    assert!(shown.has_token_key && shown.token_key.is_empty());
    let mut again = channel(&server);
    again.token_key.clear();
    let kept = channels
        .update_apns_channel(d.req(UpdateApnsChannelRequest { app_id: app.clone(), channel: Some(again) }))
        .await
        .unwrap()
        .into_inner();
    assert!(kept.has_token_key && kept.token_key.is_empty());
    let got = channels.get_apns_channel(d.req(GetChannelRequest { app_id: app.clone() })).await.unwrap().into_inner();
    assert!(got.has_token_key && got.token_key.is_empty() && got.bundle_id == server.bundle_id);
    let values = redis_values(&redis_url).await;
    assert!(!values.is_empty());
    assert!(values.iter().all(|v| !String::from_utf8_lossy(v).contains("PRIVATE KEY")), "the .p8 key is sealed at rest");

    // Endpoints: live, VOIP, sandbox with an expired provider token, dead (400 and 410).
    let endpoints = [
        ("live", ChannelType::Apns, "ok-1"),
        ("voip", ChannelType::ApnsVoip, "ok-voip"),
        ("stale", ChannelType::ApnsSandbox, "stale-1"),
        ("bad", ChannelType::Apns, "bad-1"),
        ("gone", ChannelType::Apns, "gone-1"),
    ];
    EndpointsClient::new(d.channel().await)
        .update_endpoints_batch(
            d.req(UpdateEndpointsBatchRequest {
                app_id: app.clone(),
                endpoints: endpoints
                    .iter()
                    .map(|(id, ch, token)| Endpoint {
                        id: id.to_string(),
                        channel_type: *ch as i32,
                        address: token.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            }),
        )
        .await
        .unwrap();
    let message = ApnsMessage {
        title: "Sale".into(),
        body: "Hello {{Id}}".into(),
        badge: 3,
        priority: "10".into(),
        time_to_live: 3_600,
        collapse_id: "sale".into(),
        data: HashMap::from([("order".to_string(), "42".to_string())]),
        ..Default::default()
    };
    let to = SendMessagesRequest {
        endpoints: endpoints
            .iter()
            .map(|(id, _, _)| {
                // Context goes into data.pinpoint, as Pinpoint puts it.
                let context = if *id == "live" { [("flow".to_string(), "sale".to_string())].into() } else { Default::default() };
                let mut own = EndpointSendConfiguration { context, ..Default::default() };
                // Pinpoint's per-recipient overrides: a title and body, or a whole raw payload.
                if *id == "stale" {
                    own.title_override = "Just for you".into();
                    own.body_override = "Your own body".into();
                }
                if *id == "voip" {
                    own.raw_content = r#"{"aps": {"content-available": 1}, "own": true}"#.into();
                }
                (id.to_string(), own)
            })
            .collect(),
        ..Default::default()
    };
    let sent = send_apns(&d, &app, to, message).await;
    let status = |id: &str| DeliveryStatus::try_from(sent.endpoint_result[id].delivery_status).unwrap();
    assert_eq!(status("live"), DeliveryStatus::Successful, "{:?}", sent.endpoint_result["live"]);
    assert_eq!(status("voip"), DeliveryStatus::Successful, "{:?}", sent.endpoint_result["voip"]);
    assert_eq!(status("stale"), DeliveryStatus::Successful, "a renewed provider token: {:?}", sent.endpoint_result["stale"]);
    assert_eq!(status("bad"), DeliveryStatus::PermanentFailure);
    assert_eq!(status("gone"), DeliveryStatus::PermanentFailure);
    assert_eq!(sent.endpoint_result["gone"].status_code, 410);
    assert_eq!(server.refused.load(std::sync::atomic::Ordering::Relaxed), 0, "every request passed Apple's checks");

    // What APNs got: headers as Apple documents them and a2's payload.
    let seen = server.seen.lock().clone();
    let live = seen.iter().find(|s| s.token == "ok-1").unwrap();
    assert!(live.http2);
    assert_eq!((live.topic.as_str(), live.push_type.as_str(), live.priority.as_str()), ("com.example.shop", "alert", "10"));
    assert_eq!(live.collapse_id, "sale");
    let expiration: i64 = live.expiration.parse().unwrap();
    assert!((expiration - chrono::Utc::now().timestamp() - 3_600).abs() < 60);
    assert_eq!(live.apns_id.replace('-', ""), sent.endpoint_result["live"].message_id, "apns-id is the message id");
    assert_eq!(live.body["aps"]["alert"]["title"], "Sale");
    assert_eq!(live.body["aps"]["alert"]["body"], "Hello live");
    assert_eq!(live.body["aps"]["badge"], 3);
    assert_eq!(live.body["order"], "42");
    assert_eq!(live.body["pinpoint"], serde_json::json!({"flow": "sale"}));
    let voip = seen.iter().find(|s| s.token == "ok-voip").unwrap();
    assert_eq!((voip.topic.as_str(), voip.push_type.as_str()), ("com.example.shop.voip", "voip"));
    let stale: Vec<_> = seen.iter().filter(|s| s.token == "stale-1").collect();
    assert_eq!(stale.len(), 2);
    assert_ne!(stale[0].jwt, stale[1].jwt, "the provider token was renewed");
    assert_eq!(stale[1].body["aps"]["alert"]["title"], "Just for you");
    assert_eq!(stale[1].body["aps"]["alert"]["body"], "Your own body");
    assert_eq!(voip.body, serde_json::json!({"aps": {"content-available": 1}, "own": true}), "RawContent is the whole payload");

    // The dead tokens' endpoints are INACTIVE now; the live ones are not.
    let mut eps = EndpointsClient::new(d.channel().await);
    for (id, want) in [("bad", EndpointStatus::Inactive), ("gone", EndpointStatus::Inactive), ("live", EndpointStatus::Active)] {
        let e = eps.get_endpoint(d.req(GetEndpointRequest { app_id: app.clone(), endpoint_id: id.into() })).await.unwrap().into_inner();
        assert_eq!(e.endpoint_status, want as i32, "{id}");
        assert_eq!(e.address, endpoints.iter().find(|x| x.0 == id).unwrap().2, "the rest of {id} is unchanged");
    }

    // A disabled channel fails its sends saying so.
    let mut off = channel(&server);
    off.enabled = false;
    channels.update_apns_channel(d.req(UpdateApnsChannelRequest { app_id: app.clone(), channel: Some(off) })).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let to = SendMessagesRequest { endpoints: [("live".to_string(), EndpointSendConfiguration::default())].into(), ..Default::default() };
    let again = send_apns(&d, &app, to, ApnsMessage { body: "x".into(), ..Default::default() }).await;
    let r = &again.endpoint_result["live"];
    assert_eq!(r.delivery_status, DeliveryStatus::PermanentFailure as i32);
    assert!(r.status_message.contains("disabled"), "{}", r.status_message);
}

/// Apple's throttling and outages: THROTTLED with Apple's Retry-After, TEMPORARY (retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_throttling_and_outages_are_retryable() {
    let server = ApnsServer::start().await;
    let sender = ApnsSender::new(&channel(&server)).unwrap();
    let id = herald::domain::new_message_id();
    assert!(matches!(sender.send(&push("busy-1"), &id).await, Delivery::Throttled { status_code: 429, .. }));
    assert!(matches!(sender.send(&push("down-1"), &id).await, Delivery::Retry { status_code: 503, .. }));
    assert!(matches!(sender.send(&push("ok-1"), &id).await, Delivery::Delivered { status_code: 200, .. }));
    assert!(matches!(sender.send(&push("gone-1"), &id).await, Delivery::Permanent { status_code: 410, hard_bounce: true, .. }));
    // A key Apple does not know: every request is refused as an invalid provider token.
    let mut wrong = channel(&server);
    wrong.token_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_pem();
    let d = ApnsSender::new(&wrong).unwrap().send(&push("ok-1"), &id).await;
    assert!(matches!(d, Delivery::Retry { status_code: 403, .. }), "{d:?}");
}

/// Certificate authentication: the app's APNs certificate and key, validated (the key must be
/// the certificate's), the key write-only and sealed, the certificate presented in the TLS
/// handshake, no provider token sent, the topic left to the certificate when no bundle id is
/// set; a certificate APNs does not trust gets nothing through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_certificate_authentication() {
    let server = ApnsServer::with_certificates().await;
    let (cert_pem, key_pem) = server.client_certificate.clone().unwrap();
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(Some(redis), tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &[]);
    let app = d.create_app("push-cert").await.app_id;
    let mut channels = ChannelsClient::new(d.channel().await);
    let settings = |certificate: &str, private_key: &str| ApnsChannel {
        enabled: true,
        certificate: certificate.into(),
        private_key: private_key.into(),
        base_url: server.base_url(),
        sandbox_base_url: server.base_url(),
        ca_certificate: server.ca_pem.clone(),
        ..Default::default()
    };

    // A key that is not the certificate's, an unknown method, nothing to authenticate with.
    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let mut bad = settings(&cert_pem, &other_key);
    bad.default_authentication_method = "PASSWORD".into();
    let err = channels.update_apns_channel(d.req(UpdateApnsChannelRequest { app_id: app.clone(), channel: Some(bad) })).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        tonic_types::StatusExt::get_details_bad_request(&err).unwrap().field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["channel.default_authentication_method", "channel.certificate"]);
    let err = channels
        .update_apns_channel(d.req(UpdateApnsChannelRequest { app_id: app.clone(), channel: Some(settings("", "")) }))
        .await
        .unwrap_err();
    let fields: Vec<String> =
        tonic_types::StatusExt::get_details_bad_request(&err).unwrap().field_violations.into_iter().map(|v| v.field).collect();
    assert!(fields.contains(&"channel.token_key".to_string()) && fields.contains(&"channel.bundle_id".to_string()), "{fields:?}");

    let shown = channels
        .update_apns_channel(d.req(UpdateApnsChannelRequest { app_id: app.clone(), channel: Some(settings(&cert_pem, &key_pem)) }))
        .await
        .unwrap()
        .into_inner();
    assert!(shown.has_private_key && shown.private_key.is_empty() && !shown.has_token_key);
    assert_eq!(shown.certificate, cert_pem, "the certificate is public and shown");
    let values = redis_values(&redis_url).await;
    assert!(values.iter().all(|v| !String::from_utf8_lossy(v).contains("PRIVATE KEY")), "the private key is sealed at rest");

    let apns = |token: &str, ch: ChannelType| {
        (token.to_string(), herald::proto::v1::AddressConfiguration { channel_type: ch as i32, ..Default::default() })
    };
    let to = SendMessagesRequest {
        addresses: [apns("ok-cert", ChannelType::Apns), apns("ok-voip", ChannelType::ApnsVoip), apns("gone-cert", ChannelType::Apns)]
            .into(),
        ..Default::default()
    };
    let sent = send_apns(&d, &app, to, ApnsMessage { body: "Signed in".into(), ..Default::default() }).await;
    let status = |a: &str| DeliveryStatus::try_from(sent.result[a].delivery_status).unwrap();
    assert_eq!(status("ok-cert"), DeliveryStatus::Successful, "{:?}", sent.result["ok-cert"]);
    assert_eq!(status("ok-voip"), DeliveryStatus::Successful, "{:?}", sent.result["ok-voip"]);
    assert_eq!(status("gone-cert"), DeliveryStatus::PermanentFailure);
    assert_eq!(server.refused.load(std::sync::atomic::Ordering::Relaxed), 0);
    let seen = server.seen.lock().clone();
    let ok = seen.iter().find(|s| s.token == "ok-cert").unwrap();
    assert!(ok.http2 && ok.jwt.is_empty() && ok.topic.is_empty(), "no provider token, the certificate's topic: {ok:?}");
    assert_eq!(ok.body["aps"]["alert"], "Signed in", "{}", ok.body);

    // A certificate APNs did not issue fails the handshake: nothing is delivered.
    let stranger = rcgen::generate_simple_self_signed(vec!["client.test".to_string()]).unwrap();
    let wrong = settings(&stranger.cert.pem(), &stranger.signing_key.serialize_pem());
    let d = ApnsSender::new(&wrong).unwrap().send(&push("ok-stranger"), &herald::domain::new_message_id()).await;
    assert!(matches!(d, Delivery::Retry { status_code: 0, .. }), "{d:?}");
    assert!(!server.seen.lock().iter().any(|s| s.token == "ok-stranger"));
}

/// A push campaign end to end: each APNs member gets the notification rendered with its own
/// attributes, once; a dead token fails alone and retires its endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_campaign_notifies_each_device_once() {
    use herald::proto::v1::AttributeValues;
    let server = ApnsServer::start().await;
    let d = Daemon::start(common::Backend::Embedded);
    let app = d.create_app("push-campaign").await.app_id;
    ChannelsClient::new(d.channel().await)
        .update_apns_channel(d.req(UpdateApnsChannelRequest { app_id: app.clone(), channel: Some(channel(&server)) }))
        .await
        .unwrap();
    let mut eps: Vec<Endpoint> = (0..30)
        .map(|i| Endpoint {
            id: format!("d{i:02}"),
            channel_type: ChannelType::Apns as i32,
            address: format!("ok-{i}"),
            attributes: [("Name".to_string(), AttributeValues { values: vec![format!("N{i}")] })].into(),
            ..Default::default()
        })
        .collect();
    eps.push(Endpoint { id: "dead".into(), channel_type: ChannelType::Apns as i32, address: "gone-9".into(), ..Default::default() });
    let segment = d.import_as_segment(&app, eps).await;
    let acts = common::run_campaign(
        &d,
        &app,
        &segment,
        DirectMessageConfiguration {
            apns_message: Some(ApnsMessage { title: "Sale".into(), body: "Hello {{Attributes.Name}}".into(), ..Default::default() }),
            ..Default::default()
        },
    )
    .await;
    let seen = server.seen.lock().clone();
    let mut got: Vec<(String, String)> = seen
        .iter()
        .filter(|s| s.token.starts_with("ok-"))
        .map(|s| (s.token.clone(), s.body["aps"]["alert"]["body"].as_str().unwrap_or("").to_string()))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = (0..30).map(|i| (format!("ok-{i}"), format!("Hello N{i}"))).collect();
    want.sort();
    assert_eq!(got, want, "each device once, with its own name");
    assert!(seen.iter().filter(|s| s.token.starts_with("ok-")).all(|s| s.body["aps"]["alert"]["title"] == "Sale"));
    assert_eq!((acts[0].total_endpoints, acts[0].successful), (31, 30), "{acts:?}");
    assert_eq!(acts[0].failed.get("PERMANENT_FAILURE"), Some(&1), "{acts:?}");
    let dead = EndpointsClient::new(d.channel().await)
        .get_endpoint(d.req(GetEndpointRequest { app_id: app.clone(), endpoint_id: "dead".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dead.endpoint_status, EndpointStatus::Inactive as i32, "APNs 410 retires the token");
}

/// A push template's APNs block wins over its default block on an APNs device; an inline
/// default push block reaches the device when no APNs block is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_templates_and_the_default_block_reach_apns() {
    use herald::proto::v1::{
        template::Content, templates_client::TemplatesClient, CreateTemplateRequest, DefaultPushNotificationMessage, PushBlock,
        PushTemplate, Template, TemplateConfiguration, TemplateReference,
    };
    let server = ApnsServer::start().await;
    let d = Daemon::start(common::Backend::Embedded);
    let app = d.create_app("push-templates").await.app_id;
    ChannelsClient::new(d.channel().await)
        .update_apns_channel(d.req(UpdateApnsChannelRequest { app_id: app.clone(), channel: Some(channel(&server)) }))
        .await
        .unwrap();
    let phone = Endpoint { id: "phone".into(), channel_type: ChannelType::Apns as i32, address: "ok-phone".into(), ..Default::default() };
    EndpointsClient::new(d.channel().await)
        .update_endpoints_batch(d.req(UpdateEndpointsBatchRequest { app_id: app.clone(), endpoints: vec![phone] }))
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
    let to: HashMap<String, EndpointSendConfiguration> = [("phone".to_string(), EndpointSendConfiguration::default())].into();
    let mut messages = MessagesClient::new(d.channel().await);
    let sent = messages
        .send_messages(d.req(SendMessagesRequest {
            app_id: app.clone(),
            endpoints: to.clone(),
            template_configuration: Some(TemplateConfiguration {
                push_template: Some(TemplateReference { name: "promo".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.endpoint_result["phone"].delivery_status, DeliveryStatus::Successful as i32, "{sent:?}");
    let sent = messages
        .send_messages(d.req(SendMessagesRequest {
            app_id: app.clone(),
            endpoints: to,
            message_configuration: Some(DirectMessageConfiguration {
                default_push_notification_message: Some(DefaultPushNotificationMessage {
                    title: "Inline".into(),
                    body: "default block".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.endpoint_result["phone"].delivery_status, DeliveryStatus::Successful as i32, "{sent:?}");
    let alerts: Vec<(String, String)> = server
        .seen
        .lock()
        .iter()
        .map(|s| {
            (s.body["aps"]["alert"]["title"].as_str().unwrap_or("").into(), s.body["aps"]["alert"]["body"].as_str().unwrap_or("").into())
        })
        .collect();
    assert_eq!(alerts, [("iPhones".to_string(), "for phone".to_string()), ("Inline".to_string(), "default block".to_string())]);
}

/// A journey's push activity notifies each participant's device, with the activity's
/// time to live as the notification's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journeys_push_activity_notifies_each_participant() {
    use herald::proto::v1::{
        journey_activity::Kind, journeys_client::JourneysClient, CreateJourneyRequest, Journey, JourneyActivity, JourneyStartCondition,
        JourneyState, MessageActivity, SegmentCondition,
    };
    let server = ApnsServer::start().await;
    let d = Daemon::start(common::Backend::Embedded);
    let app = d.create_app("push-journey").await.app_id;
    ChannelsClient::new(d.channel().await)
        .update_apns_channel(d.req(UpdateApnsChannelRequest { app_id: app.clone(), channel: Some(channel(&server)) }))
        .await
        .unwrap();
    let devices: Vec<Endpoint> = (0..3)
        .map(|i| Endpoint {
            id: format!("d{i}"),
            channel_type: ChannelType::Apns as i32,
            address: format!("ok-j{i}"),
            ..Default::default()
        })
        .collect();
    let segment = d.import_as_segment(&app, devices).await;
    let notify = JourneyActivity {
        kind: Some(Kind::Push(MessageActivity {
            message_configuration: Some(DirectMessageConfiguration {
                apns_message: Some(ApnsMessage { title: "Welcome".into(), body: "Hi {{Id}}".into(), ..Default::default() }),
                ..Default::default()
            }),
            time_to_live: "3600".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let j = Journey {
        name: "pushes".into(),
        start_condition: Some(JourneyStartCondition {
            segment_start_condition: Some(SegmentCondition { segment_id: segment }),
            ..Default::default()
        }),
        activities: [("notify".to_string(), notify)].into(),
        start_activity: "notify".into(),
        state: JourneyState::Active as i32,
        ..Default::default()
    };
    JourneysClient::new(d.channel().await)
        .create_journey(d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(j) }))
        .await
        .unwrap();
    let start = std::time::Instant::now();
    while server.seen.lock().len() < 3 {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "{} seen", server.seen.lock().len());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let seen = server.seen.lock().clone();
    let mut got: Vec<(String, String)> =
        seen.iter().map(|s| (s.token.clone(), s.body["aps"]["alert"]["body"].as_str().unwrap_or("").to_string())).collect();
    got.sort();
    assert_eq!(got, (0..3).map(|i| (format!("ok-j{i}"), format!("Hi d{i}"))).collect::<Vec<_>>(), "each device once");
    for s in &seen {
        let expiry: i64 = s.expiration.parse().unwrap_or_else(|_| panic!("apns-expiration: {:?}", s.expiration));
        assert!((expiry - chrono::Utc::now().timestamp() - 3600).abs() < 60, "an hour from now: {expiry}");
    }
}
