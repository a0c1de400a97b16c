//! Provider feedback into a running daemon's feedback listener: SMS status callbacks signed
//! the way Twilio signs them, a STOP reply opting the number's endpoint out, an SES bounce in
//! an SNS envelope suppressing the address; callers without a key or signature refused.

mod common;

use common::{free_port, Daemon, RedisServer, API_KEY};
use herald::proto::v1::{
    channels_client::ChannelsClient, endpoints_client::EndpointsClient, ChannelType, Endpoint, GetEndpointRequest, OptOut, SmsChannel,
    SuppressionReason, UpdateEndpointsBatchRequest, UpdateSmsChannelRequest,
};
use herald::store::Store as _;

const CALLBACK: &str = "https://hooks.example.com/herald/sms/status";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_replies_and_bounces_keep_endpoints_clean() {
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::spawn(Some(redis), tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &["--feedback-addr", &addr]);
    let app = d.create_app("fb").await.app_id;
    ChannelsClient::new(d.channel().await)
        .update_sms_channel(d.req(UpdateSmsChannelRequest {
            app_id: app.clone(),
            channel: Some(SmsChannel {
                enabled: true,
                base_url: "https://sms.example.com".into(),
                account_sid: "AC1".into(),
                auth_token: "provider-token".into(),
                origination_numbers: vec!["+14255550100".into()],
                status_callback_url: CALLBACK.into(),
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    EndpointsClient::new(d.channel().await)
        .update_endpoints_batch(d.req(UpdateEndpointsBatchRequest {
            app_id: app.clone(),
            endpoints: vec![
                Endpoint {
                    id: "phone".into(),
                    channel_type: ChannelType::Sms as i32,
                    address: "+15550001111".into(),
                    ..Default::default()
                },
                Endpoint {
                    id: "mail".into(),
                    channel_type: ChannelType::Email as i32,
                    address: "user@example.com".into(),
                    ..Default::default()
                },
            ],
        }))
        .await
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    herald::channels::install_crypto_provider();
    let http = reqwest::Client::new();
    let base = format!("http://{addr}/v1/apps/{app}");
    let form = |pairs: &[(&str, &str)]| -> (Vec<(String, String)>, String) {
        let owned: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&owned).finish();
        (owned, body)
    };

    // A delivery receipt signed with the channel's auth token over its callback URL.
    let (fields, body) = form(&[("MessageSid", "SM1"), ("MessageStatus", "delivered"), ("To", "+15550001111"), ("AccountSid", "AC1")]);
    let signature = herald::feedback::twilio_signature("provider-token", CALLBACK, &fields);
    let post = |path: &str, body: String| {
        http.post(format!("{base}/{path}")).header("content-type", "application/x-www-form-urlencoded").body(body)
    };
    let r = post("sms/status", body.clone()).header("x-twilio-signature", &signature).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let forged = post("sms/status", body.clone()).header("x-twilio-signature", "AAAA").send().await.unwrap();
    assert_eq!(forged.status(), 401, "a wrong signature and no key");
    let (_, failed) = form(&[("MessageSid", "SM2"), ("MessageStatus", "undelivered"), ("To", "+15550001111"), ("ErrorCode", "30003")]);
    assert_eq!(post("sms/status", failed).header("x-api-key", API_KEY).send().await.unwrap().status(), 204);

    // STOP opts the number's endpoint out.
    let (_, stop) = form(&[("From", "+15550001111"), ("To", "+14255550100"), ("Body", " stop ")]);
    assert_eq!(post("sms/inbound", stop).header("authorization", format!("Bearer {API_KEY}")).send().await.unwrap().status(), 204);
    let phone = EndpointsClient::new(d.channel().await)
        .get_endpoint(d.req(GetEndpointRequest { app_id: app.clone(), endpoint_id: "phone".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((phone.opt_out, phone.address.as_str()), (OptOut::All as i32, "+15550001111"));

    // An SES hard bounce inside an SNS envelope suppresses the address.
    let ses = serde_json::json!({
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General", "bouncedRecipients": [{"emailAddress": "User@Example.com"}]},
        "mail": {"messageId": "0100"}
    });
    let sns = serde_json::json!({"Type": "Notification", "MessageId": "n1", "Message": ses.to_string()});
    let email = |v: &serde_json::Value| http.post(format!("{base}/email/feedback")).body(v.to_string());
    assert_eq!(email(&sns).send().await.unwrap().status(), 401, "email feedback needs a key");
    assert_eq!(email(&sns).header("x-api-key", API_KEY).send().await.unwrap().status(), 204);
    assert_eq!(
        email(&serde_json::json!({"type": "softbounce", "address": "other@example.com"}))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(email(&serde_json::json!({"type": "nonsense"})).header("x-api-key", API_KEY).send().await.unwrap().status(), 400);

    let store = herald::store::redis::RedisStore::connect(&redis_url, 2).await.unwrap();
    let suppressed = store.get_suppressions(&app, &["user@example.com".into(), "other@example.com".into()]).await.unwrap();
    assert_eq!(suppressed[0].as_ref().map(|s| s.reason), Some(SuppressionReason::HardBounce as i32));
    assert!(suppressed[1].is_none(), "a soft bounce does not suppress");
    let events = store.read_events(&app, None, 100).await.unwrap();
    let kinds: Vec<(&str, &str)> = events.iter().map(|e| (e.event_type.as_str(), e.client_id.as_str())).collect();
    for want in [("_SMS.SUCCESS", "phone"), ("_SMS.FAILURE", "phone"), ("_SMS.OPTOUT", "phone"), ("_email.hardbounce", "mail")] {
        assert!(kinds.contains(&want), "{want:?} in {kinds:?}");
    }
    assert!(kinds.iter().any(|(k, _)| *k == "_email.softbounce"));
    assert!(d.metrics_text().contains(r#"herald_feedback_total{kind="sms_optout"} 1"#));
}
