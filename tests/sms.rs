//! SMS end to end against a local server shaped like Twilio's Messages API (form POSTs with
//! basic auth to /2010-04-01/Accounts/{sid}/Messages.json, Twilio's JSON answers and error
//! codes): channel settings with a write-only auth token, what the provider receives, and its
//! answers mapped to delivery statuses and `_SMS.*` events.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use common::{Daemon, RedisServer, API_KEY};
use herald::proto::v1::{
    channels_client::ChannelsClient, messages_client::MessagesClient, AddressConfiguration, AttributeValues, ChannelType, DeliveryStatus,
    DirectMessageConfiguration, GetChannelRequest, SendMessagesRequest, SmsChannel, SmsMessage, SmsMessageType, UpdateSmsChannelRequest,
};
use herald::store::Store as _;
use parking_lot::Mutex;
use tonic::Code;

const SID: &str = "AC0123456789abcdef";
const TOKEN: &str = "twilio-auth-token";

type Received = Arc<Mutex<Vec<HashMap<String, String>>>>;

async fn messages(
    State(received): State<Received>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    use base64::Engine as _;
    let json = |s: StatusCode, v: serde_json::Value| (s, [("retry-after", "0")], v.to_string());
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}")));
    if sid != SID || headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return json(StatusCode::UNAUTHORIZED, serde_json::json!({"code": 20003, "message": "Authenticate", "status": 401}));
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-www-form-urlencoded") {
        return json(StatusCode::UNSUPPORTED_MEDIA_TYPE, serde_json::json!({"code": 20415, "message": "form expected"}));
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let to = form.get("To").cloned().unwrap_or_default();
    received.lock().push(form);
    match to.as_str() {
        "+15551110000" => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"code": 21211, "message": "The 'To' number +15551110000 is not a valid phone number.", "status": 400}),
        ),
        "+15552220000" => {
            json(StatusCode::TOO_MANY_REQUESTS, serde_json::json!({"code": 20429, "message": "Too Many Requests", "status": 429}))
        }
        "+15553330000" => json(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"code": 20500, "message": "Internal Server Error"})),
        _ => json(
            StatusCode::CREATED,
            serde_json::json!({"sid": format!("SM{:032x}", received.lock().len()), "status": "queued", "to": to, "account_sid": SID}),
        ),
    }
}

/// The SMS channel settings for the provider on `port`.
fn provider_channel(port: u16) -> SmsChannel {
    SmsChannel {
        enabled: true,
        base_url: format!("http://127.0.0.1:{port}"),
        account_sid: SID.into(),
        auth_token: TOKEN.into(),
        origination_numbers: vec!["+14255550100".into()],
        ..Default::default()
    }
}

async fn start_provider() -> (u16, Received) {
    let received: Received = Arc::default();
    let app =
        axum::Router::new().route("/2010-04-01/Accounts/{sid}/Messages.json", axum::routing::post(messages)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_through_a_twilio_shaped_provider() {
    let (port, received) = start_provider().await;
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let d = Daemon::spawn(Some(redis), tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &[]);
    let app = d.create_app("sms").await.app_id;
    let mut channels = ChannelsClient::new(d.channel().await);

    let mut bad = SmsChannel { enabled: true, base_url: "ftp://x".into(), origination_numbers: vec!["555".into()], ..Default::default() };
    bad.sender_id = "way too long sender".into();
    let err = channels.update_sms_channel(d.req(UpdateSmsChannelRequest { app_id: app.clone(), channel: Some(bad) })).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        tonic_types::StatusExt::get_details_bad_request(&err).unwrap().field_violations.into_iter().map(|v| v.field).collect();
    for f in ["channel.base_url", "channel.account_sid", "channel.auth_token", "channel.origination_numbers[0]", "channel.sender_id"] {
        assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
    }

    let settings = provider_channel(port);
    let shown = channels
        .update_sms_channel(d.req(UpdateSmsChannelRequest { app_id: app.clone(), channel: Some(settings) }))
        .await
        .unwrap()
        .into_inner();
    assert!(shown.has_auth_token && shown.auth_token.is_empty());
    let got = channels.get_sms_channel(d.req(GetChannelRequest { app_id: app.clone() })).await.unwrap().into_inner();
    assert!(got.has_auth_token && got.auth_token.is_empty() && got.account_sid == SID);
    // GetChannels: the one channel this app has, enabled, with when it was set.
    let all = channels.get_channels(d.req(GetChannelRequest { app_id: app.clone() })).await.unwrap().into_inner().channels;
    assert_eq!(all.keys().collect::<Vec<_>>(), ["SMS"]);
    assert!(all["SMS"].enabled && all["SMS"].last_modified_date == got.last_modified_date, "{all:?}");
    let err = channels.get_channels(d.req(GetChannelRequest { app_id: "no-such-app".into() })).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let sms = |n: &str| (n.to_string(), AddressConfiguration { channel_type: ChannelType::Sms as i32, ..Default::default() });
    let mut addresses: HashMap<String, AddressConfiguration> =
        ["+15550000001", "+15550000002", "+15550000003", "+15551110000", "+15552220000", "+15553330000"].into_iter().map(sms).collect();
    // Pinpoint's BodyOverride: this recipient's text instead of the rendered one.
    addresses.get_mut("+15550000003").unwrap().body_override = "Your own text".into();
    addresses.get_mut("+15550000001").unwrap().substitutions =
        HashMap::from([("Code".to_string(), AttributeValues { values: vec!["4711".into()] })]);
    // 13 + 60 = 73 UCS-2 units: two concatenated parts of at most 67.
    addresses.get_mut("+15550000002").unwrap().substitutions =
        HashMap::from([("Code".to_string(), AttributeValues { values: vec!["日本語".repeat(20)] })]);
    let sent = MessagesClient::new(d.channel().await)
        .send_messages(d.req(SendMessagesRequest {
            app_id: app.clone(),
            addresses,
            message_configuration: Some(DirectMessageConfiguration {
                sms_message: Some(SmsMessage {
                    body: "Your code is {{Code}}".into(),
                    message_type: SmsMessageType::Transactional as i32,
                    // The SMS block's substitutions, under each recipient's own.
                    substitutions: HashMap::from([("Code".to_string(), AttributeValues { values: vec!["0000".into()] })]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let result = |n: &str| &sent.result[n];
    let status = |n: &str| DeliveryStatus::try_from(result(n).delivery_status).unwrap();
    assert_eq!(status("+15550000001"), DeliveryStatus::Successful, "{:?}", result("+15550000001"));
    assert_eq!(status("+15551110000"), DeliveryStatus::PermanentFailure);
    assert!(result("+15551110000").status_message.contains("21211"), "{}", result("+15551110000").status_message);
    assert_eq!(status("+15552220000"), DeliveryStatus::Throttled);
    assert_eq!(status("+15553330000"), DeliveryStatus::TemporaryFailure);

    // What the provider got: the channel's number as From, the rendered body, one request for
    // the invalid number, retries for the throttled and failing ones.
    let got = received.lock().clone();
    let ok: Vec<_> = got.iter().filter(|f| f["To"] == "+15550000001").collect();
    assert_eq!(ok.len(), 1);
    assert_eq!((ok[0]["From"].as_str(), ok[0]["Body"].as_str()), ("+14255550100", "Your code is 4711"));
    assert_eq!(got.iter().filter(|f| f["To"] == "+15551110000").count(), 1, "a permanent failure is not retried");
    let own: Vec<_> = got.iter().filter(|f| f["To"] == "+15550000003").map(|f| f["Body"].as_str()).collect();
    assert_eq!(own, ["Your own text"], "the BodyOverride reaches its recipient only");
    let fallback: Vec<_> = got.iter().filter(|f| f["To"] == "+15553330000").collect();
    assert_eq!(fallback[0]["Body"].as_str(), "Your code is 0000", "the block's substitutions apply");
    assert!(got.iter().filter(|f| f["To"] == "+15553330000").count() > 1, "a 5xx is retried");

    // Events carry Pinpoint's SMS names: the provider's acceptance is BUFFERED (SUCCESS waits
    // for the delivered receipt).
    let store = herald::store::redis::RedisStore::connect(&redis_url, 2).await.unwrap();
    let events = store.read_events(&app, None, 100).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert!(types.contains(&"_SMS.BUFFERED") && types.contains(&"_SMS.FAILURE"), "{types:?}");
    assert!(!types.contains(&"_SMS.SUCCESS"), "no receipt came: {types:?}");

    // Each outcome and event records the parts and encoding the body went as.
    for (number, parts, encoding) in [("+15550000001", 1, "GSM7"), ("+15550000002", 2, "UCS2")] {
        let o = store.get_outcome(&app, &result(number).message_id).await.unwrap().unwrap();
        assert_eq!((o.message_parts, o.sms_encoding.as_str()), (parts, encoding), "{number}");
        let e = events.iter().find(|e| e.message_id == result(number).message_id).unwrap();
        assert_eq!(e.event_type, "_SMS.BUFFERED");
        let a = |k: &str| e.attributes.get(k).map(String::as_str);
        assert_eq!(a("number_of_message_parts"), Some(parts.to_string().as_str()));
        assert_eq!(a("message_type"), Some("TRANSACTIONAL"));
        assert_eq!(a("destination_phone_number"), Some(number));
    }

    // An SMS has no title and no raw payload: those overrides are refused, naming the field.
    let mut titled = sms("+15550000004").1;
    titled.title_override = "Title".into();
    titled.raw_content = "{}".into();
    let err = MessagesClient::new(d.channel().await)
        .send_messages(d.req(SendMessagesRequest {
            app_id: app.clone(),
            addresses: HashMap::from([("+15550000004".to_string(), titled)]),
            message_configuration: Some(DirectMessageConfiguration {
                sms_message: Some(SmsMessage { body: "x".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        tonic_types::StatusExt::get_details_bad_request(&err).unwrap().field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["addresses[+15550000004].title_override", "addresses[+15550000004].raw_content"]);
    assert!(!received.lock().iter().any(|f| f["To"] == "+15550000004"), "a refused call sends nothing");
}

/// An SMS campaign end to end: each ACTIVE SMS member of the segment gets the text rendered
/// with its own attributes, once; the email members get nothing (no email content).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_campaign_texts_each_sms_member_once() {
    use herald::proto::v1::Endpoint;
    let (port, received) = start_provider().await;
    let d = Daemon::start(common::Backend::Embedded);
    let app = d.create_app("sms-campaign").await.app_id;
    let settings = provider_channel(port);
    ChannelsClient::new(d.channel().await)
        .update_sms_channel(d.req(UpdateSmsChannelRequest { app_id: app.clone(), channel: Some(settings) }))
        .await
        .unwrap();
    let name = |i: usize| ("Name".to_string(), AttributeValues { values: vec![format!("N{i}")] });
    let mut eps: Vec<Endpoint> = (0..40)
        .map(|i| Endpoint {
            id: format!("s{i:02}"),
            channel_type: ChannelType::Sms as i32,
            address: format!("+1425555{i:04}"),
            attributes: [name(i)].into(),
            ..Default::default()
        })
        .collect();
    eps.extend((0..5).map(|i| Endpoint {
        id: format!("m{i}"),
        channel_type: ChannelType::Email as i32,
        address: format!("m{i}@example.com"),
        ..Default::default()
    }));
    let segment = d.import_as_segment(&app, eps).await;
    let acts = common::run_campaign(
        &d,
        &app,
        &segment,
        DirectMessageConfiguration {
            sms_message: Some(SmsMessage {
                body: "Hi {{Attributes.Name}}, 20% off today".into(),
                message_type: SmsMessageType::Promotional as i32,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let got = received.lock().clone();
    let mut to: Vec<(String, String)> = got.iter().map(|f| (f["To"].clone(), f["Body"].clone())).collect();
    to.sort();
    let want: Vec<(String, String)> = (0..40).map(|i| (format!("+1425555{i:04}"), format!("Hi N{i}, 20% off today"))).collect();
    assert_eq!(to, want, "each SMS member once, with its own name");
    assert!(got.iter().all(|f| f["From"] == "+14255550100"));
    assert_eq!((acts[0].total_endpoints, acts[0].successful), (40, 40), "{acts:?}");
}

/// An SMS template named in the send renders per recipient, with the SMS block's
/// substitutions and options (its origination number) applied to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_template_renders_with_the_blocks_options() {
    use herald::proto::v1::{
        template::Content, templates_client::TemplatesClient, CreateTemplateRequest, SmsTemplate, Template, TemplateConfiguration,
        TemplateReference,
    };
    let (port, received) = start_provider().await;
    let d = Daemon::start(common::Backend::Embedded);
    let app = d.create_app("sms-template").await.app_id;
    ChannelsClient::new(d.channel().await)
        .update_sms_channel(d.req(UpdateSmsChannelRequest { app_id: app.clone(), channel: Some(provider_channel(port)) }))
        .await
        .unwrap();
    let t = Template {
        name: "code".into(),
        content: Some(Content::Sms(SmsTemplate { body: "Your code is {{Code}}".into() })),
        ..Default::default()
    };
    TemplatesClient::new(d.channel().await)
        .create_template(d.req(CreateTemplateRequest { app_id: app.clone(), template: Some(t) }))
        .await
        .unwrap();
    let sent = MessagesClient::new(d.channel().await)
        .send_messages(d.req(SendMessagesRequest {
            app_id: app.clone(),
            addresses:
                [("+14255550123".to_string(), AddressConfiguration { channel_type: ChannelType::Sms as i32, ..Default::default() })].into(),
            message_configuration: Some(DirectMessageConfiguration {
                sms_message: Some(SmsMessage {
                    origination_number: "+14255550199".into(),
                    substitutions: [("Code".to_string(), AttributeValues { values: vec!["314159".into()] })].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            template_configuration: Some(TemplateConfiguration {
                sms_template: Some(TemplateReference { name: "code".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.result["+14255550123"].delivery_status, DeliveryStatus::Successful as i32, "{sent:?}");
    let got = received.lock().clone();
    assert_eq!((got[0]["Body"].as_str(), got[0]["From"].as_str()), ("Your code is 314159", "+14255550199"));
}

/// A journey's SMS activity texts each participant through the app's SMS channel, with the
/// activity's origination number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journeys_sms_activity_texts_each_participant() {
    use herald::proto::v1::{
        journey_activity::Kind, journeys_client::JourneysClient, CreateJourneyRequest, Endpoint, Journey, JourneyActivity,
        JourneyStartCondition, JourneyState, MessageActivity, SegmentCondition,
    };
    let (port, received) = start_provider().await;
    let d = Daemon::start(common::Backend::Embedded);
    let app = d.create_app("sms-journey").await.app_id;
    ChannelsClient::new(d.channel().await)
        .update_sms_channel(d.req(UpdateSmsChannelRequest { app_id: app.clone(), channel: Some(provider_channel(port)) }))
        .await
        .unwrap();
    let phones: Vec<Endpoint> = (0..3)
        .map(|i| Endpoint {
            id: format!("p{i}"),
            channel_type: ChannelType::Sms as i32,
            address: format!("+1425555020{i}"),
            ..Default::default()
        })
        .collect();
    let segment = d.import_as_segment(&app, phones).await;
    let text = JourneyActivity {
        kind: Some(Kind::Sms(MessageActivity {
            message_configuration: Some(DirectMessageConfiguration {
                sms_message: Some(SmsMessage { body: "Welcome, {{Id}}".into(), ..Default::default() }),
                ..Default::default()
            }),
            origination_number: "+14255550177".into(),
            message_type: "TRANSACTIONAL".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let j = Journey {
        name: "texts".into(),
        start_condition: Some(JourneyStartCondition {
            segment_start_condition: Some(SegmentCondition { segment_id: segment }),
            ..Default::default()
        }),
        activities: [("text".to_string(), text)].into(),
        start_activity: "text".into(),
        state: JourneyState::Active as i32,
        ..Default::default()
    };
    JourneysClient::new(d.channel().await)
        .create_journey(d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(j) }))
        .await
        .unwrap();
    let start = std::time::Instant::now();
    while received.lock().len() < 3 {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "{:?}", received.lock());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut got: Vec<(String, String, String)> =
        received.lock().iter().map(|f| (f["To"].clone(), f["Body"].clone(), f["From"].clone())).collect();
    got.sort();
    let want: Vec<(String, String, String)> =
        (0..3).map(|i| (format!("+1425555020{i}"), format!("Welcome, p{i}"), "+14255550177".to_string())).collect();
    assert_eq!(got, want, "each participant once, from the activity's number");
}
