//! Transactional sends through the real daemon: delivery rules, rendering, SMTP into
//! smtp-sink, hard bounces, dry runs and outcomes, on both backends.

#[macro_use]
mod common;

use common::{Backend, Daemon, RedisServer, SmtpSink, API_KEY};
use herald::proto::v1::{
    messages_client::MessagesClient, suppressions_client::SuppressionsClient, template::Content, templates_client::TemplatesClient,
    AddSuppressionsRequest, AddressConfiguration, AttributeValues, ChannelType, CheckSuppressionRequest, CreateTemplateRequest,
    DeliveryStatus, DirectMessageConfiguration, EmailMessage, EmailTemplate, Endpoint, EndpointSendConfiguration, EndpointStatus,
    EndpointUser, GetMessageOutcomeRequest, OptOut, SendMessagesRequest, SmsMessage, Suppression, Template, TemplateConfiguration,
    TemplateReference, UpdateEndpointsBatchRequest,
};

fn start(backend: Backend, sink: &SmtpSink) -> Daemon {
    let redis = (backend == Backend::Redis).then(RedisServer::start);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("smtp://127.0.0.1:{}", sink.port);
    Daemon::spawn(redis, tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &["--smtp-url", &url])
}

fn email(id: &str, address: &str, status: EndpointStatus, opt_out: OptOut) -> Endpoint {
    Endpoint {
        id: id.into(),
        channel_type: ChannelType::Email as i32,
        address: address.into(),
        endpoint_status: status as i32,
        opt_out: opt_out as i32,
        user: Some(EndpointUser {
            user_id: format!("u-{id}"),
            user_attributes: [("FirstName".to_string(), AttributeValues { values: vec![id.to_uppercase()] })].into(),
        }),
        ..Default::default()
    }
}

fn status(r: &herald::proto::v1::MessageResult) -> DeliveryStatus {
    DeliveryStatus::try_from(r.delivery_status).unwrap()
}

async fn wait_for(sink: &SmtpSink, n: usize) -> Vec<String> {
    for _ in 0..100 {
        let m = sink.messages();
        if m.len() >= n {
            return m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    sink.messages()
}

async fn rules_rendering_and_delivery(backend: Backend) {
    let sink = SmtpSink::start(&[]);
    let d = start(backend, &sink);
    let app = d.create_app("m").await.app_id;
    let mut eps = d.endpoints().await;
    let batch = vec![
        email("ana", "ana@example.com", EndpointStatus::Active, OptOut::None),
        email("quiet", "quiet@example.com", EndpointStatus::Active, OptOut::All),
        email("old", "old@example.com", EndpointStatus::Inactive, OptOut::None),
    ];
    eps.update_endpoints_batch(d.req(UpdateEndpointsBatchRequest { app_id: app.clone(), endpoints: batch })).await.unwrap();
    let mut templates = TemplatesClient::new(d.channel().await);
    let t = Template {
        name: "welcome".into(),
        content: Some(Content::Email(EmailTemplate {
            subject: "Hi {{User.UserAttributes.FirstName}} ({{Month}})".into(),
            text_part: "Welcome, {{Address}}".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    templates.create_template(d.req(CreateTemplateRequest { app_id: app.clone(), template: Some(t) })).await.unwrap();
    SuppressionsClient::new(d.channel().await)
        .add_suppressions(d.req(AddSuppressionsRequest {
            app_id: app.clone(),
            suppressions: vec![Suppression { address: "blocked@example.com".into(), ..Default::default() }],
        }))
        .await
        .unwrap();

    let addr = |c: ChannelType| AddressConfiguration { channel_type: c as i32, ..Default::default() };
    let month = |m: &str| EndpointSendConfiguration {
        substitutions: [("Month".to_string(), AttributeValues { values: vec![m.into()] })].into(),
        ..Default::default()
    };
    let request = SendMessagesRequest {
        app_id: app.clone(),
        addresses: [
            ("bob@example.com".to_string(), addr(ChannelType::Email)),
            ("BOB@example.com".to_string(), addr(ChannelType::Email)),
            ("blocked@example.com".to_string(), addr(ChannelType::Email)),
            ("not-an-address".to_string(), addr(ChannelType::Email)),
            ("+14155550100".to_string(), addr(ChannelType::Sms)),
        ]
        .into(),
        endpoints: [
            ("ana".to_string(), month("March")),
            ("quiet".to_string(), month("")),
            ("old".to_string(), month("")),
            ("ghost".to_string(), month("")),
        ]
        .into(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage { from_address: "Shop <news@shop.example>".into(), ..Default::default() }),
            ..Default::default()
        }),
        template_configuration: Some(TemplateConfiguration {
            email_template: Some(TemplateReference { name: "welcome".into(), version: 0 }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = MessagesClient::new(d.channel().await).send_messages(d.req(request)).await.unwrap().into_inner();
    assert_eq!(status(&r.endpoint_result["ana"]), DeliveryStatus::Successful, "{:?}", r.endpoint_result["ana"]);
    assert_eq!(r.endpoint_result["ana"].status_code, 250);
    assert_eq!(status(&r.endpoint_result["quiet"]), DeliveryStatus::OptOut);
    assert_eq!(status(&r.endpoint_result["old"]), DeliveryStatus::PermanentFailure);
    assert_eq!(status(&r.endpoint_result["ghost"]), DeliveryStatus::PermanentFailure);
    assert_eq!(status(&r.result["blocked@example.com"]), DeliveryStatus::PermanentFailure);
    assert!(r.result["blocked@example.com"].status_message.contains("suppression"));
    assert_eq!(status(&r.result["not-an-address"]), DeliveryStatus::PermanentFailure);
    assert_eq!(status(&r.result["+14155550100"]), DeliveryStatus::PermanentFailure);
    let bobs = [status(&r.result["bob@example.com"]), status(&r.result["BOB@example.com"])];
    assert!(bobs.contains(&DeliveryStatus::Successful) && bobs.contains(&DeliveryStatus::Duplicate), "{bobs:?}");

    let delivered = wait_for(&sink, 2).await;
    assert_eq!(delivered.len(), 2);
    let ana = delivered.iter().find(|m| m.contains("X-Rcpt-Args: <ana@example.com>")).expect("ana's message");
    assert!(ana.lines().any(|l| l.trim_end() == "Subject: Hi ANA (March)"), "{ana}");
    assert!(ana.contains("Welcome, ana@example.com"), "{ana}");

    let outcome = MessagesClient::new(d.channel().await)
        .get_message_outcome(
            d.req(GetMessageOutcomeRequest { app_id: app.clone(), message_id: r.endpoint_result["ana"].message_id.clone() }),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!((outcome.delivery_status, outcome.endpoint_id.as_str(), outcome.attempts), (DeliveryStatus::Successful as i32, "ana", 1));
    let ghost = MessagesClient::new(d.channel().await)
        .get_message_outcome(
            d.req(GetMessageOutcomeRequest { app_id: app.clone(), message_id: r.endpoint_result["ghost"].message_id.clone() }),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ghost.delivery_status, DeliveryStatus::PermanentFailure as i32, "early failures are recorded too");

    // Listing by request (send order) and by endpoint.
    use herald::proto::v1::{list_outcomes_request::By, ListOutcomesRequest};
    let mut mc = MessagesClient::new(d.channel().await);
    let page = mc
        .list_outcomes(d.req(ListOutcomesRequest {
            app_id: app.clone(),
            by: Some(By::RequestId(r.request_id.clone())),
            page_size: 5,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.outcomes.len(), 5);
    assert!(!page.next_page_token.is_empty());
    let rest = mc
        .list_outcomes(d.req(ListOutcomesRequest {
            app_id: app.clone(),
            by: Some(By::RequestId(r.request_id.clone())),
            page_size: 5,
            page_token: page.next_page_token,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.outcomes.len() + rest.outcomes.len(), 9, "every recipient of the request");
    assert!(page.outcomes.iter().chain(&rest.outcomes).all(|o| o.request_id == r.request_id));
    let ana_list = mc
        .list_outcomes(d.req(ListOutcomesRequest {
            app_id: app.clone(),
            by: Some(By::EndpointId("ana".into())),
            page_size: 10,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ana_list.outcomes.len(), 1);
    assert_eq!(ana_list.outcomes[0].message_id, r.endpoint_result["ana"].message_id);
    let bad = mc
        .list_outcomes(d.req(ListOutcomesRequest { app_id: app.clone(), by: None, page_size: 10, page_token: String::new() }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // A dry run does everything but the provider call.
    let dry = SendMessagesRequest {
        app_id: app.clone(),
        addresses: [("dry@example.com".to_string(), addr(ChannelType::Email))].into(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "news@shop.example".into(),
                subject: "Dry {{Id}}".into(),
                text_part: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        dry_run: true,
        ..Default::default()
    };
    let r = MessagesClient::new(d.channel().await).send_messages(d.req(dry)).await.unwrap().into_inner();
    assert_eq!(status(&r.result["dry@example.com"]), DeliveryStatus::Successful);
    assert!(r.result["dry@example.com"].status_message.contains("dry run"));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(sink.messages().len(), 2, "a dry run sends nothing");

    // A channel the app has not configured fails its recipients, saying so, and no one else.
    let mixed = SendMessagesRequest {
        app_id: app.clone(),
        addresses: [("+14255550100".to_string(), addr(ChannelType::Sms)), ("mixed@example.com".to_string(), addr(ChannelType::Email))]
            .into(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "news@shop.example".into(),
                subject: "Mixed".into(),
                text_part: "x".into(),
                ..Default::default()
            }),
            sms_message: Some(SmsMessage { body: "Your code is 1234".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = MessagesClient::new(d.channel().await).send_messages(d.req(mixed)).await.unwrap().into_inner();
    let sms = &r.result["+14255550100"];
    assert_eq!(status(sms), DeliveryStatus::PermanentFailure);
    assert!(sms.status_message.contains("no SMS channel is configured"), "{sms:?}");
    assert_eq!(status(&r.result["mixed@example.com"]), DeliveryStatus::Successful);
}

async fn hard_bounces_suppress_and_render_failures_fail_one_message(backend: Backend) {
    let sink = SmtpSink::start(&["-B", "550 5.1.1 No such user", "-f", "RCPT"]);
    let d = start(backend, &sink);
    let app = d.create_app("b").await.app_id;
    let addr = AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() };
    let request = |subject: &str| SendMessagesRequest {
        app_id: app.clone(),
        addresses: [("ghost@example.com".to_string(), addr.clone())].into(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "news@shop.example".into(),
                subject: subject.into(),
                text_part: "hello".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = MessagesClient::new(d.channel().await).send_messages(d.req(request("Hi"))).await.unwrap().into_inner();
    let res = &r.result["ghost@example.com"];
    assert_eq!((status(res), res.status_code), (DeliveryStatus::PermanentFailure, 550), "{res:?}");
    let s = SuppressionsClient::new(d.channel().await)
        .check_suppression(d.req(CheckSuppressionRequest { app_id: app.clone(), address: "ghost@example.com".into() }))
        .await
        .expect("a hard bounce suppresses the address")
        .into_inner();
    assert_eq!(s.reason, herald::proto::v1::SuppressionReason::HardBounce as i32);

    // One recipient's render fails; the other in the same call is unaffected.
    let mut failing = request("Total {{divide Metrics.visits 0}}");
    failing.addresses.clear();
    failing.endpoints = [("zero".to_string(), EndpointSendConfiguration::default())].into();
    failing.addresses.insert("fine@example.com".to_string(), addr.clone());
    let mut eps = d.endpoints().await;
    let mut zero = email("zero", "zero@example.com", EndpointStatus::Active, OptOut::None);
    zero.metrics.insert("visits".into(), 3.0);
    eps.update_endpoints_batch(d.req(UpdateEndpointsBatchRequest { app_id: app.clone(), endpoints: vec![zero] })).await.unwrap();
    let r = MessagesClient::new(d.channel().await).send_messages(d.req(failing)).await.unwrap().into_inner();
    let res = &r.endpoint_result["zero"];
    assert_eq!(status(res), DeliveryStatus::PermanentFailure);
    assert!(res.status_message.contains("divide"), "{res:?}");
    // fine@ has no Metrics.visits: a blank operand renders nothing, so its message goes out
    // (and this sink refuses every recipient).
    assert_eq!(r.result["fine@example.com"].status_code, 550);
    // Both are in the app's event stream (read back through StreamEvents, whichever way the
    // store packs them).
    let mut stream = herald::proto::v1::events_client::EventsClient::new(d.channel().await)
        .stream_events(d.req(herald::proto::v1::StreamEventsRequest { app_id: app.clone(), stop_at_end: true, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    while let Some(batch) = stream.message().await.unwrap() {
        kinds.extend(batch.events.into_iter().map(|e| e.event_type));
    }
    assert!(kinds.iter().any(|k| k == "_email.hardbounce"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "_email.rendering_failure"), "{kinds:?}");
}

async fn idempotent_repeats_send_once(backend: Backend) {
    let sink = SmtpSink::start(&[]);
    let d = start(backend, &sink);
    let app = d.create_app("i").await.app_id;
    let request = |key: &str| SendMessagesRequest {
        app_id: app.clone(),
        addresses: [(
            "once@example.com".to_string(),
            AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() },
        )]
        .into(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "news@shop.example".into(),
                subject: "Once".into(),
                text_part: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        idempotency_key: key.into(),
        ..Default::default()
    };
    // Concurrent repeats while the first is in flight, then a later one.
    let mut calls = Vec::new();
    for _ in 0..4 {
        let mut c = MessagesClient::new(d.channel().await);
        let req = d.req(request("reset-42"));
        calls.push(tokio::spawn(async move { c.send_messages(req).await.unwrap().into_inner() }));
    }
    let mut responses = Vec::new();
    for c in calls {
        responses.push(c.await.unwrap());
    }
    responses.push(MessagesClient::new(d.channel().await).send_messages(d.req(request("reset-42"))).await.unwrap().into_inner());
    let first = &responses[0];
    assert!(responses.iter().all(
        |r| r.request_id == first.request_id && r.result["once@example.com"].message_id == first.result["once@example.com"].message_id
    ));
    assert_eq!(status(&first.result["once@example.com"]), DeliveryStatus::Successful);
    // Another key sends again.
    let other = MessagesClient::new(d.channel().await).send_messages(d.req(request("reset-43"))).await.unwrap().into_inner();
    assert_ne!(other.request_id, first.request_id);
    let delivered = wait_for(&sink, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(delivered.len().max(sink.messages().len()), 2, "one message per key");
}

async fn channel_quotas_throttle_and_change_at_runtime(backend: Backend) {
    use herald::proto::v1::{AppSettings, ChannelQuota, UpdateAppSettingsRequest};
    let sink = SmtpSink::start(&[]);
    let d = start(backend, &sink);
    let app = d.create_app("q").await.app_id;
    let quota = |daily: i64| AppSettings {
        channel_quotas: [("EMAIL".to_string(), ChannelQuota { daily: Some(daily), ..Default::default() })].into(),
        ..Default::default()
    };
    let mut apps = d.apps().await;
    apps.update_app_settings(d.req(UpdateAppSettingsRequest { app_id: app.clone(), settings: Some(quota(3)) })).await.unwrap();
    let send = |n: usize, tag: &str| SendMessagesRequest {
        app_id: app.clone(),
        addresses: (0..n)
            .map(|i| {
                (format!("{tag}{i}@example.com"), AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() })
            })
            .collect(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "news@shop.example".into(),
                subject: "Q".into(),
                text_part: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = MessagesClient::new(d.channel().await).send_messages(d.req(send(5, "a"))).await.unwrap().into_inner();
    let count = |r: &herald::proto::v1::SendMessagesResponse, s: DeliveryStatus| r.result.values().filter(|v| status(v) == s).count();
    assert_eq!((count(&r, DeliveryStatus::Successful), count(&r, DeliveryStatus::Throttled)), (3, 2), "{:?}", r.result);
    // Raised at runtime: within the refresh interval the new quota applies.
    apps.update_app_settings(d.req(UpdateAppSettingsRequest { app_id: app.clone(), settings: Some(quota(6)) })).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let r = MessagesClient::new(d.channel().await).send_messages(d.req(send(5, "b"))).await.unwrap().into_inner();
    assert_eq!((count(&r, DeliveryStatus::Successful), count(&r, DeliveryStatus::Throttled)), (3, 2), "{:?}", r.result);
    let bad = AppSettings {
        channel_quotas: [("FAX".to_string(), ChannelQuota { daily: Some(-1), ..Default::default() })].into(),
        ..Default::default()
    };
    let err = apps.update_app_settings(d.req(UpdateAppSettingsRequest { app_id: app.clone(), settings: Some(bad) })).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(wait_for(&sink, 6).await.len(), 6);
}

async fn users_get_every_active_endpoint(backend: Backend) {
    use herald::proto::v1::SendUsersMessagesRequest;
    let sink = SmtpSink::start(&[]);
    let d = start(backend, &sink);
    let app = d.create_app("u").await.app_id;
    let mut ana_work = email("ana-work", "ana@work.example", EndpointStatus::Active, OptOut::None);
    let mut ana_home = email("ana-home", "ana@home.example", EndpointStatus::Active, OptOut::None);
    let mut ana_old = email("ana-old", "ana@old.example", EndpointStatus::Inactive, OptOut::None);
    for e in [&mut ana_work, &mut ana_home, &mut ana_old] {
        e.user.as_mut().unwrap().user_id = "ana".into();
    }
    d.endpoints()
        .await
        .update_endpoints_batch(d.req(UpdateEndpointsBatchRequest { app_id: app.clone(), endpoints: vec![ana_work, ana_home, ana_old] }))
        .await
        .unwrap();
    let req = SendUsersMessagesRequest {
        app_id: app.clone(),
        users: [("ana".to_string(), EndpointSendConfiguration::default()), ("nobody".to_string(), EndpointSendConfiguration::default())]
            .into(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "news@shop.example".into(),
                subject: "For {{User.UserId}} at {{Address}}".into(),
                text_part: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = MessagesClient::new(d.channel().await).send_users_messages(d.req(req)).await.unwrap().into_inner();
    let ana = &r.result["ana"].endpoint_result;
    let mut ids: Vec<_> = ana.keys().cloned().collect();
    ids.sort();
    assert_eq!(ids, ["ana-home", "ana-work"], "only ACTIVE endpoints");
    assert!(ana.values().all(|v| status(v) == DeliveryStatus::Successful), "{ana:?}");
    assert!(r.result["nobody"].endpoint_result.is_empty());
    let delivered = wait_for(&sink, 2).await;
    assert!(delivered.iter().any(|m| m.lines().any(|l| l.trim_end() == "Subject: For ana at ana@home.example")), "{delivered:?}");
}

/// SIGTERM while a message waits for its retry: the retry is kept in the store (the daemon
/// stops at once: no grace period), and the next daemon on that store makes it, once, through
/// the relay it has then.
async fn a_retry_due_after_sigterm_is_made_once_by_the_next_daemon(backend: Backend) {
    let refusing = SmtpSink::start(&["-r", "RCPT"]);
    let accepting = SmtpSink::start(&[]);
    let redis = (backend == Backend::Redis).then(RedisServer::start);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let relay = |sink: &SmtpSink| format!("smtp://127.0.0.1:{}", sink.port);
    let mut d = Daemon::spawn(
        redis,
        data.clone(),
        None,
        Some(API_KEY.to_string()),
        &["--smtp-url", &relay(&refusing), "--shutdown-grace-secs", "0"],
    );
    let app = d.create_app("kept").await.app_id;
    let later = email("later", "later@example.com", EndpointStatus::Active, OptOut::None);
    let mut eps = d.endpoints().await;
    eps.update_endpoints_batch(d.req(UpdateEndpointsBatchRequest { app_id: app.clone(), endpoints: vec![later] })).await.unwrap();
    let request = SendMessagesRequest {
        app_id: app.clone(),
        endpoints: [("later".to_string(), EndpointSendConfiguration::default())].into(),
        message_configuration: Some(common::email_message("Kept for later", "hello")),
        ..Default::default()
    };
    let mut client = MessagesClient::new(d.channel().await);
    let req = d.req(request);
    let call = tokio::spawn(async move { client.send_messages(req).await });
    // The relay refused the first attempt and the retry is waiting: stop now.
    let retried = |text: &str| text.lines().any(|l| l.starts_with("herald_retries_total") && !l.trim_end().ends_with(" 0"));
    let mut waited = 0;
    while !retried(&d.metrics_text()) {
        assert!(waited < 1_000, "no retry within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    let status = d.terminate();
    assert!(status.success(), "herald exited with {status}");
    let _ = call.await;
    let redis = d.redis.take();
    let d = Daemon::spawn(redis, data, Some(tmp), Some(API_KEY.to_string()), &["--smtp-url", &relay(&accepting)]);
    // smtp-sink writes its dump file as the message arrives: read until it is whole.
    let kept = |m: &String| m.lines().any(|l| l.trim_end() == "Subject: Kept for later");
    let mut delivered = wait_for(&accepting, 1).await;
    for _ in 0..100 {
        if delivered.iter().any(kept) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        delivered = accepting.messages();
    }
    assert!(delivered.iter().any(kept), "{delivered:?}");
    // Its outcome ends SUCCESSFUL, and nothing goes twice.
    let mut mc = MessagesClient::new(d.channel().await);
    let mut last = None;
    for _ in 0..200 {
        let outcomes = mc
            .list_outcomes(d.req(herald::proto::v1::ListOutcomesRequest {
                app_id: app.clone(),
                by: Some(herald::proto::v1::list_outcomes_request::By::EndpointId("later".into())),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .outcomes;
        if outcomes.iter().any(|o| o.delivery_status == DeliveryStatus::Successful as i32) {
            last = Some(outcomes);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let outcomes = last.expect("the kept retry's outcome is recorded");
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert!(outcomes[0].attempts >= 2, "{outcomes:?}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(accepting.messages().len(), 1, "made once");
}

on_both_backends!(
    a_retry_due_after_sigterm_is_made_once_by_the_next_daemon,
    rules_rendering_and_delivery,
    hard_bounces_suppress_and_render_failures_fail_one_message,
    idempotent_repeats_send_once,
    channel_quotas_throttle_and_change_at_runtime,
    users_get_every_active_endpoint
);

/// Two daemons on one Redis share an app channel's messages per second: calls spread over
/// both for three seconds send at most the quota in any second, together — not twice it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_a_channels_messages_per_second() {
    use herald::proto::v1::{AppSettings, ChannelQuota, UpdateAppSettingsRequest};
    let sink = SmtpSink::start(&[]);
    let a = start(Backend::Redis, &sink);
    let b = a.sibling();
    let app = a.create_app("shared-rate").await.app_id;
    let quota = AppSettings {
        channel_quotas: [("EMAIL".to_string(), ChannelQuota { messages_per_second: Some(20), ..Default::default() })].into(),
        ..Default::default()
    };
    a.apps().await.update_app_settings(a.req(UpdateAppSettingsRequest { app_id: app.clone(), settings: Some(quota) })).await.unwrap();
    let send = |k: usize| SendMessagesRequest {
        app_id: app.clone(),
        addresses: (0..5)
            .map(|i| {
                (format!("r{k}-{i}@example.com"), AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() })
            })
            .collect(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "news@shop.example".into(),
                subject: "R".into(),
                text_part: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Each daemon is asked for 5 messages every 50 ms (100 a second each, 200 together).
    let (mut ca, mut cb) = (MessagesClient::new(a.channel().await), MessagesClient::new(b.channel().await));
    let mut by_second: std::collections::BTreeMap<i64, usize> = Default::default();
    let (mut sent, mut throttled) = (0, 0);
    let start = std::time::Instant::now();
    let mut k = 0;
    while start.elapsed() < std::time::Duration::from_secs(3) {
        for (c, d) in [(&mut ca, &a), (&mut cb, &b)] {
            let r = c.send_messages(d.req(send(k))).await.unwrap().into_inner();
            k += 1;
            let second = chrono::Utc::now().timestamp();
            let ok = r.result.values().filter(|v| status(v) == DeliveryStatus::Successful).count();
            *by_second.entry(second).or_default() += ok;
            sent += ok;
            throttled += r.result.values().filter(|v| status(v) == DeliveryStatus::Throttled).count();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A call's answer comes a moment after its tokens were taken, so a second's count here
    // may hold a few of the next one's; over the run, the total is what bounds it.
    let seconds = by_second.len();
    assert!(sent <= 20 * seconds, "{sent} sent over {seconds} seconds: {by_second:?}");
    assert!(sent >= 20 * (seconds - 2), "the quota is used, not starved: {sent} in {seconds} s {by_second:?}");
    assert!(throttled > sent, "most were throttled: {throttled} vs {sent}");
    let leased = |d: &Daemon| {
        d.metrics_text()
            .lines()
            .filter(|l| l.starts_with("herald_rate_tokens_leased_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    assert!(leased(&a) > 0.0 && leased(&b) > 0.0, "both daemons took tokens");
}
