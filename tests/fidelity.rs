//! Request fields end to end, each where its effect shows: in the email a real SMTP server
//! receives, in the recorded events, in what the daemon answers back. The field ledger
//! (tests/field_ledger.rs) finds the fields these tests set.

#[macro_use]
mod common;

use std::time::Duration;

use common::{free_port, Backend, Daemon, RedisServer, SmtpSink, API_KEY};
use herald::proto::v1::{
    apps_client::AppsClient, campaigns_client::CampaignsClient, messages_client::MessagesClient, AddressConfiguration, AppSettings,
    Campaign, ChannelType, CreateCampaignRequest, DirectMessageConfiguration, EmailMessage, Endpoint, EndpointSendConfiguration,
    EndpointUser, Frequency, Schedule, SendMessagesRequest, SendUsersMessagesRequest, UpdateAppSettingsRequest, UpdateEndpointRequest,
};
use herald::store::Store as _;

const HTML: &str = "<html><body><a href=\"https://shop.example/reset?t=1\">Reset</a></body></html>";

async fn wait_for(sink: &SmtpSink, subject: &str, n: usize) -> Vec<String> {
    let want = format!("Subject: {subject}");
    for _ in 0..200 {
        let got: Vec<String> = sink.messages().into_iter().filter(|m| m.lines().any(|l| l.trim_end() == want)).collect();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} messages with subject {subject}");
}

fn email_message(subject: &str) -> EmailMessage {
    EmailMessage { from_address: "news@shop.example".into(), subject: subject.into(), html_part: HTML.into(), ..Default::default() }
}

fn to(address: &str) -> std::collections::HashMap<String, AddressConfiguration> {
    [(address.to_string(), AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() })].into()
}

/// SendUsersMessages' Context, TraceId, idempotency key and tracking; every Reply-To address;
/// raw email; the app's and a campaign's tracking switches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_messages_email_options_and_tracking_switches() {
    let sink = SmtpSink::start(&[]);
    let smtp = format!("smtp://127.0.0.1:{}", sink.port);
    let public = format!("127.0.0.1:{}", free_port());
    let redis = RedisServer::start();
    let store = herald::store::redis::RedisStore::connect(&redis.url(), 2).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--smtp-url", smtp.as_str(), "--feedback-addr", public.as_str()];
    let d = Daemon::spawn(Some(redis), tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &args);
    let base = format!("http://{public}");
    let app = d.create_app("fidelity").await.app_id;
    let ana = Endpoint {
        channel_type: ChannelType::Email as i32,
        address: "ana@example.com".into(),
        user: Some(EndpointUser { user_id: "ana".into(), ..Default::default() }),
        ..Default::default()
    };
    d.endpoints()
        .await
        .update_endpoint(d.req(UpdateEndpointRequest { app_id: app.clone(), endpoint_id: "ana".into(), endpoint: Some(ana) }))
        .await
        .unwrap();
    let mut messages = MessagesClient::new(d.channel().await);
    let users = SendUsersMessagesRequest {
        app_id: app.clone(),
        users: [("ana".to_string(), EndpointSendConfiguration::default())].into(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                reply_to_addresses: vec!["help@shop.example".into(), "Support <support@shop.example>".into()],
                ..email_message("Reset")
            }),
            ..Default::default()
        }),
        context: [("flow".to_string(), "reset".to_string())].into(),
        trace_id: "trace-7".into(),
        idempotency_key: "reset-ana-1".into(),
        engagement_tracking: true,
        ..Default::default()
    };
    let first = messages.send_users_messages(d.req(users.clone())).await.unwrap().into_inner();
    let again = messages.send_users_messages(d.req(users)).await.unwrap().into_inner();
    assert_eq!(first.request_id, again.request_id, "the retry is answered with the first call's response");
    let m = &wait_for(&sink, "Reset", 1).await[0];
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wait_for(&sink, "Reset", 1).await.len(), 1, "one email for the two calls with one key");
    let unfolded = m.replace("\r\n ", " ").replace("\n ", " ");
    let reply_to = unfolded.lines().find_map(|l| l.strip_prefix("Reply-To: ")).expect("a Reply-To line");
    assert_eq!(reply_to.trim_end(), "help@shop.example, Support <support@shop.example>");
    assert!(unfolded.contains(&format!("{base}/c/")), "tracked: the call asked and the app allows it: {m}");
    let events = store.read_events(&app, None, 1_000).await.unwrap();
    let sent = events.iter().find(|e| e.event_type == "_email.send").expect("an _email.send event");
    assert_eq!((sent.attributes["flow"].as_str(), sent.attributes["trace_id"].as_str()), ("reset", "trace-7"), "{sent:?}");
    let message_id = first.result["ana"].endpoint_result["ana"].message_id.clone();
    let outcome = messages
        .get_message_outcome(d.req(herald::proto::v1::GetMessageOutcomeRequest { app_id: app.clone(), message_id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (outcome.trace_id.as_str(), outcome.context["flow"].as_str()),
        ("trace-7", "reset"),
        "the TraceId and Context on the outcome"
    );

    // Raw email: the caller's whole message, as given.
    let raw = "From: news@shop.example\r\nTo: raw@example.com\r\nSubject: Raw one\r\nMIME-Version: 1.0\r\n\r\nHello from raw\r\n";
    let r = messages
        .send_messages(d.req(SendMessagesRequest {
            app_id: app.clone(),
            addresses: to("raw@example.com"),
            message_configuration: Some(DirectMessageConfiguration {
                email_message: Some(EmailMessage { raw_message: raw.into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.result["raw@example.com"].status_code, 250, "the relay took it: {r:?}");
    assert!(wait_for(&sink, "Raw one", 1).await[0].contains("Hello from raw"));

    // The app turns tracking off: a call asking for it sends plain links.
    AppsClient::new(d.channel().await)
        .update_app_settings(d.req(UpdateAppSettingsRequest {
            app_id: app.clone(),
            settings: Some(AppSettings { engagement_tracking: Some(false), ..Default::default() }),
        }))
        .await
        .unwrap();
    messages
        .send_messages(d.req(SendMessagesRequest {
            app_id: app.clone(),
            addresses: to("plain@example.com"),
            message_configuration: Some(DirectMessageConfiguration {
                email_message: Some(email_message("Untracked")),
                ..Default::default()
            }),
            engagement_tracking: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    let m = wait_for(&sink, "Untracked", 1).await.remove(0);
    assert!(!m.contains(&format!("{base}/")) && m.contains("https://shop.example/reset"), "{m}");

    // A campaign that turns tracking off, in an app that allows it; one that says nothing is
    // tracked.
    let other = d.create_app("campaigns").await.app_id;
    let segment = d
        .import_as_segment(
            &other,
            vec![Endpoint {
                id: "e1".into(),
                channel_type: ChannelType::Email as i32,
                address: "e1@example.com".into(),
                ..Default::default()
            }],
        )
        .await;
    let mut campaigns = CampaignsClient::new(d.channel().await);
    for (subject, tracking) in [("Quiet campaign", Some(false)), ("Tracked campaign", None)] {
        let c = Campaign {
            name: subject.into(),
            segment_id: segment.clone(),
            message_configuration: Some(DirectMessageConfiguration { email_message: Some(email_message(subject)), ..Default::default() }),
            schedule: Some(Schedule { start_time: "IMMEDIATE".into(), frequency: Frequency::Once as i32, ..Default::default() }),
            engagement_tracking: tracking,
            ..Default::default()
        };
        let id = campaigns
            .create_campaign(d.req(CreateCampaignRequest { app_id: other.clone(), campaign: Some(c) }))
            .await
            .unwrap()
            .into_inner()
            .id;
        common::completed_campaign(&d, &other, &id).await;
        let m = wait_for(&sink, subject, 1).await.remove(0).replace("=\r\n", "");
        assert_eq!(m.contains(&format!("{base}/c/")), tracking.is_none(), "{subject}: {m}");
        assert_eq!(m.contains(&format!("{base}/o/")), tracking.is_none(), "{subject}: {m}");
    }
}

/// What an endpoint says of its device and place reaches the templates that render for it.
async fn endpoint_details_reach_templates(backend: Backend) {
    use herald::proto::v1::{
        render_template_request::Recipient, template::Content, templates_client::TemplatesClient, CreateTemplateRequest,
        EndpointDemographic, EndpointLocation, RenderTemplateRequest, SmsTemplate, Template,
    };
    let d = Daemon::start(backend);
    let app = d.create_app("details").await.app_id;
    let mut templates = TemplatesClient::new(d.channel().await);
    let body =
        "{{Demographic.Locale}}|{{Demographic.ModelVersion}}|{{Demographic.PlatformVersion}}|{{Location.Region}}|{{Location.PostalCode}}";
    let t = Template { name: "device".into(), content: Some(Content::Sms(SmsTemplate { body: body.into() })), ..Default::default() };
    templates.create_template(d.req(CreateTemplateRequest { app_id: app.clone(), template: Some(t) })).await.unwrap();
    let phone = Endpoint {
        channel_type: ChannelType::Sms as i32,
        address: "+14255550100".into(),
        demographic: Some(EndpointDemographic {
            locale: "pt_BR".into(),
            model_version: "14 Pro".into(),
            platform_version: "17.2".into(),
            ..Default::default()
        }),
        location: Some(EndpointLocation { region: "WA".into(), postal_code: "98101".into(), ..Default::default() }),
        ..Default::default()
    };
    d.endpoints()
        .await
        .update_endpoint(d.req(UpdateEndpointRequest { app_id: app.clone(), endpoint_id: "phone".into(), endpoint: Some(phone) }))
        .await
        .unwrap();
    let r = templates
        .render_template(d.req(RenderTemplateRequest {
            app_id: app.clone(),
            name: "device".into(),
            recipient: Some(Recipient::EndpointId("phone".into())),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.parts.iter().find(|p| p.name == "body").map(|p| p.content.as_str()), Some("pt_BR|14 Pro|17.2|WA|98101"), "{r:?}");
}

on_both_backends!(endpoint_details_reach_templates);

/// A TCP relay in front of `port` that counts the connections it accepts.
async fn counting_relay(port: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (at, count)
}

/// The app's email channel replaces each relay connection after messages_per_connection
/// messages: six messages one at a time over one pooled connection take three connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_email_channel_replaces_connections_after_messages_per_connection() {
    use herald::proto::v1::{channels_client::ChannelsClient, EmailChannel, TlsMode, UpdateEmailChannelRequest};
    let sink = SmtpSink::start(&[]);
    let (port, connections) = counting_relay(sink.port).await;
    let d = Daemon::start(Backend::Embedded);
    let app = d.create_app("relay").await.app_id;
    ChannelsClient::new(d.channel().await)
        .update_email_channel(d.req(UpdateEmailChannelRequest {
            app_id: app.clone(),
            channel: Some(EmailChannel {
                enabled: true,
                from_address: "news@shop.example".into(),
                relay_host: "127.0.0.1".into(),
                relay_port: i32::from(port),
                pool_size: 1,
                messages_per_connection: 2,
                tls_mode: TlsMode::None as i32,
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    let mut messages = MessagesClient::new(d.channel().await);
    for i in 0..6 {
        let r = messages
            .send_messages(d.req(SendMessagesRequest {
                app_id: app.clone(),
                addresses: to(&format!("r{i}@example.com")),
                message_configuration: Some(DirectMessageConfiguration {
                    email_message: Some(EmailMessage { subject: format!("Relay {i}"), text_part: "x".into(), ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.result[&format!("r{i}@example.com")].status_code, 250, "{r:?}");
    }
    assert_eq!(sink.messages().len(), 6);
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 3, "a new connection every two messages");
}

/// Every listing pages with its token; KPI rows page with theirs; a campaign's and its
/// treatments' descriptions are kept as given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_and_kpis_page_and_descriptions_are_kept() {
    use herald::proto::v1::{
        journey_activity::Kind, journeys_client::JourneysClient, kpis_client::KpisClient, template::Content,
        templates_client::TemplatesClient, CreateJourneyRequest, CreateTemplateRequest, GetApplicationDateRangeKpiRequest,
        GetCampaignDateRangeKpiRequest, GetCampaignRequest, Journey, JourneyActivity, JourneyStartCondition, JourneyState,
        ListCampaignsRequest, ListJourneysRequest, ListTemplatesRequest, MessageActivity, SegmentCondition, SmsTemplate, Template,
        Treatment,
    };
    let sink = SmtpSink::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let smtp = format!("smtp://127.0.0.1:{}", sink.port);
    let d = Daemon::spawn(None, tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &["--smtp-url", smtp.as_str()]);
    let app = d.create_app("pages").await.app_id;
    let members = (0..4)
        .map(|i| Endpoint {
            id: format!("p{i}"),
            channel_type: ChannelType::Email as i32,
            address: format!("p{i}@example.com"),
            ..Default::default()
        })
        .collect();
    let segment = d.import_as_segment(&app, members).await;
    let mut campaigns = CampaignsClient::new(d.channel().await);
    let later = herald::domain::timestamp(chrono::Utc::now() + chrono::Duration::days(30));
    let mut ids = Vec::new();
    for (i, start) in ["IMMEDIATE", "IMMEDIATE", later.as_str()].into_iter().enumerate() {
        let c = Campaign {
            name: format!("c{i}"),
            description: format!("campaign {i}"),
            treatment_name: "A".into(),
            treatment_description: "the default treatment".into(),
            segment_id: segment.clone(),
            message_configuration: Some(DirectMessageConfiguration {
                email_message: Some(email_message(&format!("C{i}"))),
                ..Default::default()
            }),
            additional_treatments: vec![Treatment {
                treatment_name: "B".into(),
                treatment_description: "the other half".into(),
                size_percent: 50,
                ..Default::default()
            }],
            schedule: Some(Schedule { start_time: start.into(), frequency: Frequency::Once as i32, ..Default::default() }),
            ..Default::default()
        };
        ids.push(
            campaigns
                .create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(c) }))
                .await
                .unwrap()
                .into_inner()
                .id,
        );
    }
    let c = campaigns
        .get_campaign(d.req(GetCampaignRequest { app_id: app.clone(), campaign_id: ids[0].clone(), version: 0 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((c.description.as_str(), c.treatment_description.as_str()), ("campaign 0", "the default treatment"));
    assert_eq!(c.additional_treatments[0].treatment_description, "the other half");

    let mut templates = TemplatesClient::new(d.channel().await);
    for name in ["t1", "t2", "t3"] {
        let t = Template { name: name.into(), content: Some(Content::Sms(SmsTemplate { body: "x".into() })), ..Default::default() };
        templates.create_template(d.req(CreateTemplateRequest { app_id: app.clone(), template: Some(t) })).await.unwrap();
    }
    let mut journeys = JourneysClient::new(d.channel().await);
    for i in 0..3 {
        let j = Journey {
            name: format!("j{i}"),
            start_condition: Some(JourneyStartCondition {
                segment_start_condition: Some(SegmentCondition { segment_id: segment.clone() }),
                ..Default::default()
            }),
            activities: [(
                "a".to_string(),
                JourneyActivity {
                    kind: Some(Kind::Email(MessageActivity {
                        message_configuration: Some(DirectMessageConfiguration {
                            email_message: Some(email_message("J")),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                },
            )]
            .into(),
            start_activity: "a".into(),
            state: JourneyState::Draft as i32,
            ..Default::default()
        };
        journeys.create_journey(d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(j) })).await.unwrap();
    }

    // Each listing, two at a time: three items over two pages.
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = campaigns
            .list_campaigns(d.req(ListCampaignsRequest { app_id: app.clone(), page_size: 2, page_token: token.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.campaigns.len() <= 2);
        names.extend(page.campaigns.into_iter().map(|c| c.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    names.sort();
    assert_eq!(names, ["c0", "c1", "c2"]);
    let (mut names, mut token) = (Vec::new(), String::new());
    loop {
        let page = templates
            .list_templates(d.req(ListTemplatesRequest {
                app_id: app.clone(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.templates.len() <= 2);
        names.extend(page.templates.into_iter().map(|t| t.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    names.sort();
    assert_eq!(names, ["t1", "t2", "t3"]);
    let (mut names, mut token) = (Vec::new(), String::new());
    loop {
        let page = journeys
            .list_journeys(d.req(ListJourneysRequest { app_id: app.clone(), page_size: 2, page_token: token.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.journeys.len() <= 2);
        names.extend(page.journeys.into_iter().map(|j| j.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    names.sort();
    assert_eq!(names, ["j0", "j1", "j2"]);

    // KPI rows one at a time: two campaigns for the app, two treatments' runs for a campaign.
    for id in &ids[..2] {
        common::completed_campaign(&d, &app, id).await;
    }
    let mut kpis = KpisClient::new(d.channel().await);
    let (mut rows, mut token, mut pages) = (0, String::new(), 0);
    loop {
        let r = kpis
            .get_application_date_range_kpi(d.req(GetApplicationDateRangeKpiRequest {
                app_id: app.clone(),
                kpi_name: "successful-deliveries-grouped-by-campaign".into(),
                page_size: 1,
                next_token: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        rows += r.kpi_result.map_or(0, |k| k.rows.len());
        pages += 1;
        token = r.next_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!((rows, pages), (2, 2), "a row per campaign, a page each");
    let (mut rows, mut token, mut pages) = (0, String::new(), 0);
    loop {
        let r = kpis
            .get_campaign_date_range_kpi(d.req(GetCampaignDateRangeKpiRequest {
                app_id: app.clone(),
                campaign_id: ids[0].clone(),
                kpi_name: "successful-deliveries-grouped-by-campaign-activity".into(),
                page_size: 1,
                next_token: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        rows += r.kpi_result.map_or(0, |k| k.rows.len());
        pages += 1;
        token = r.next_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!((rows, pages), (2, 2), "a row per treatment's activity, a page each");
}
