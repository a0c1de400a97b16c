//! Custom delivery end to end against a local HTTP server that checks every request's
//! signature: a campaign's CustomDeliveryConfiguration (its endpoint types POSTed to the URI in
//! calls of at most 50 endpoints, per treatment), and CUSTOM endpoints whose address is an id
//! that the app's custom channel delivers to its delivery_url.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::{violations, Backend, Daemon};
use herald::channels::webhook::{verify, SIGNATURE_HEADER};
use herald::domain::endpoint::cohort_id;
use herald::proto::v1::{
    campaigns_client::CampaignsClient, channels_client::ChannelsClient, messages_client::MessagesClient, Campaign, ChannelType,
    CreateCampaignRequest, CustomChannel, CustomDeliveryConfiguration, CustomMessage, DeliveryStatus, DirectMessageConfiguration,
    EmailMessage, Endpoint, EndpointSendConfiguration, Frequency, Schedule, SendMessagesRequest, Treatment, UpdateCustomChannelRequest,
};
use tonic::Code;

const SECRET: &str = "custom-s3cret";

/// What arrived, by path: each request's JSON body (only requests whose signature verified).
type Seen = Arc<Mutex<HashMap<String, Vec<serde_json::Value>>>>;

/// A receiver on a free port taking POSTs to any of `paths`; answers 200.
async fn receiver(paths: &[&'static str]) -> (String, Seen, Arc<Mutex<usize>>) {
    let seen: Seen = Default::default();
    let forged = Arc::new(Mutex::new(0usize));
    let mut app = axum::Router::new();
    for &p in paths {
        let (seen, forged) = (seen.clone(), forged.clone());
        app = app.route(
            p,
            axum::routing::post(move |h: HeaderMap, b: Bytes| async move {
                let sig = h.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                if verify(SECRET, sig, &b, chrono::Utc::now().timestamp(), Duration::from_secs(300)) {
                    seen.lock().unwrap().entry(p.to_string()).or_default().push(serde_json::from_slice(&b).unwrap());
                } else {
                    *forged.lock().unwrap() += 1;
                }
                "ok"
            }),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen, forged)
}

fn endpoint(id: &str, channel: ChannelType, address: &str) -> Endpoint {
    Endpoint { id: id.into(), channel_type: channel as i32, address: address.into(), ..Default::default() }
}

fn custom(data: &str) -> Option<DirectMessageConfiguration> {
    Some(DirectMessageConfiguration { custom_message: Some(CustomMessage { data: data.into() }), ..Default::default() })
}

fn immediate() -> Option<Schedule> {
    Some(Schedule { start_time: "IMMEDIATE".into(), frequency: Frequency::Once as i32, ..Default::default() })
}

async fn custom_channel(d: &Daemon, app: &str, delivery_url: &str) {
    ChannelsClient::new(d.channel().await)
        .update_custom_channel(d.req(UpdateCustomChannelRequest {
            app_id: app.into(),
            channel: Some(CustomChannel {
                enabled: true,
                delivery_url: delivery_url.into(),
                signing_secret: SECRET.into(),
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
}

/// Endpoint ids in the calls that reached `path`, and each call's endpoint count.
fn endpoints_at(seen: &Seen, path: &str) -> (Vec<String>, Vec<usize>) {
    let seen = seen.lock().unwrap();
    let calls = seen.get(path).cloned().unwrap_or_default();
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    for c in &calls {
        let eps = c["Endpoints"].as_object().unwrap();
        sizes.push(eps.len());
        ids.extend(eps.keys().cloned());
    }
    ids.sort();
    (ids, sizes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_delivery_batches_by_fifty_and_custom_ids_reach_the_channels_delivery_url() {
    let (base, seen, forged) = receiver(&["/cdc", "/cdc-b", "/channel", "/own"]).await;
    let d = Daemon::start(Backend::Embedded);
    let app = d.create_app("shop").await.app_id;
    custom_channel(&d, &app, &format!("{base}/channel")).await;
    let mut eps: Vec<Endpoint> =
        (0..230).map(|i| endpoint(&format!("e{i:03}"), ChannelType::Email, &format!("user{i}@example.com"))).collect();
    eps.extend((1..=3).map(|i| endpoint(&format!("crm-{i}"), ChannelType::Custom, &format!("contact-{i}"))));
    eps.push(endpoint("own", ChannelType::Custom, &format!("{base}/own")));
    let segment = d.import_as_segment(&app, eps).await;
    let mut campaigns = CampaignsClient::new(d.channel().await);

    // Refused: a Lambda ARN, an unknown endpoint type, a custom delivery without custom content.
    let mut bad = Campaign {
        name: "bad".into(),
        segment_id: segment.clone(),
        message_configuration: custom("{}"),
        schedule: immediate(),
        custom_delivery_configuration: Some(CustomDeliveryConfiguration {
            delivery_uri: "arn:aws:lambda:us-east-1:123456789012:function:send".into(),
            endpoint_types: vec!["EMAIL".into(), "FAX".into()],
        }),
        ..Default::default()
    };
    let err =
        campaigns.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(bad.clone()) })).await.unwrap_err();
    assert_eq!(
        violations(&err),
        ["campaign.custom_delivery_configuration.delivery_uri", "campaign.custom_delivery_configuration.endpoint_types[1]"]
    );
    bad.custom_delivery_configuration =
        Some(CustomDeliveryConfiguration { delivery_uri: format!("{base}/cdc"), endpoint_types: vec!["EMAIL".into()] });
    bad.message_configuration = Some(DirectMessageConfiguration {
        email_message: Some(EmailMessage {
            from_address: "a@shop.example".into(),
            subject: "s".into(),
            text_part: "t".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = campaigns.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(bad) })).await.unwrap_err();
    assert_eq!(violations(&err), ["campaign.message_configuration.custom_message"]);

    // The default treatment's EMAIL endpoints go to /cdc, treatment 1's (half the cohorts, its
    // own content and URI) to /cdc-b; CUSTOM endpoints are not among the types: nothing.
    let c = Campaign {
        name: "spring".into(),
        segment_id: segment.clone(),
        message_configuration: custom(r#"{"offer":"spring"}"#),
        schedule: immediate(),
        custom_delivery_configuration: Some(CustomDeliveryConfiguration {
            delivery_uri: format!("{base}/cdc"),
            endpoint_types: vec!["EMAIL".into()],
        }),
        additional_treatments: vec![Treatment {
            treatment_name: "B".into(),
            size_percent: 50,
            message_configuration: custom(r#"{"offer":"b"}"#),
            custom_delivery_configuration: Some(CustomDeliveryConfiguration {
                delivery_uri: format!("{base}/cdc-b"),
                endpoint_types: vec!["email".into()],
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let id =
        campaigns.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(c) })).await.unwrap().into_inner().id;
    let acts = common::completed_campaign(&d, &app, &id).await;
    let (a, a_sizes) = endpoints_at(&seen, "/cdc");
    let (b, b_sizes) = endpoints_at(&seen, "/cdc-b");
    let emails: Vec<String> = (0..230).map(|i| format!("e{i:03}")).collect();
    let want_b: Vec<String> = emails.iter().filter(|e| cohort_id(e) < 50).cloned().collect();
    let want_a: Vec<String> = emails.iter().filter(|e| cohort_id(e) >= 50).cloned().collect();
    assert_eq!(a, want_a, "the default treatment's endpoints, each once");
    assert_eq!(b, want_b, "treatment B's endpoints, each once");
    assert!(a_sizes.iter().chain(&b_sizes).all(|n| (1..=50).contains(n)), "calls of at most 50: {a_sizes:?} {b_sizes:?}");
    assert!(a_sizes.len() < want_a.len() / 2, "endpoints share calls: {a_sizes:?}");
    {
        let seen = seen.lock().unwrap();
        let first = &seen["/cdc"][0];
        assert_eq!(first["Data"], r#"{"offer":"spring"}"#);
        assert_eq!((first["ApplicationId"].as_str(), first["CampaignId"].as_str()), (Some(app.as_str()), Some(id.as_str())));
        assert_eq!(first["TreatmentId"], "0", "a string, as Pinpoint writes it");
        assert!(first["ActivityId"].as_str().is_some_and(|s| !s.is_empty()) && first["ScheduledTime"].is_string());
        let ep = first["Endpoints"].as_object().unwrap().values().next().unwrap();
        assert_eq!(ep["ChannelType"], "EMAIL");
        assert!(ep["Address"].as_str().unwrap().ends_with("@example.com"));
        assert_eq!(seen["/cdc-b"][0]["Data"], r#"{"offer":"b"}"#);
        assert_eq!(seen["/cdc-b"][0]["TreatmentId"], "1");
        assert!(!seen.contains_key("/channel") && !seen.contains_key("/own"), "CUSTOM endpoints are not among the types");
    }
    let sent: i64 = acts.iter().map(|a| a.successful).sum();
    assert_eq!(sent, 230, "{acts:?}");

    // Without a custom delivery, the custom message goes to CUSTOM endpoints: an id to the
    // channel's delivery_url (one call for the three), a URL to itself.
    let plain = Campaign {
        name: "plain".into(),
        segment_id: segment.clone(),
        message_configuration: custom(r#"{"offer":"plain"}"#),
        schedule: immediate(),
        ..Default::default()
    };
    let id = campaigns
        .create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(plain) }))
        .await
        .unwrap()
        .into_inner()
        .id;
    common::completed_campaign(&d, &app, &id).await;
    let (ids, sizes) = endpoints_at(&seen, "/channel");
    assert_eq!(ids, ["crm-1", "crm-2", "crm-3"]);
    assert!(sizes.iter().all(|n| *n <= 50));
    assert_eq!(endpoints_at(&seen, "/own").0, ["own"]);

    // SendMessages to a custom id: the channel's delivery_url, one call for that endpoint.
    let r = MessagesClient::new(d.channel().await)
        .send_messages(
            d.req(SendMessagesRequest {
                app_id: app.clone(),
                endpoints: [(
                    "crm-2".to_string(),
                    EndpointSendConfiguration { context: [("order".to_string(), "A-1".to_string())].into(), ..Default::default() },
                )]
                .into(),
                message_configuration: custom(r#"{"reset":true}"#),
                context: [("flow".to_string(), "reset".to_string())].into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.endpoint_result["crm-2"].delivery_status, DeliveryStatus::Successful as i32, "{r:?}");
    let calls = seen.lock().unwrap()["/channel"].clone();
    let last = calls.last().unwrap();
    assert_eq!(last["Data"], r#"{"reset":true}"#);
    assert_eq!(last["Endpoints"].as_object().unwrap().keys().collect::<Vec<_>>(), ["crm-2"]);
    assert_eq!(last["Context"], serde_json::json!({"flow": "reset", "order": "A-1"}), "the send's and the recipient's Context");
    assert!(seen.lock().unwrap()["/cdc"][0].get("Context").is_none(), "campaign messages carry none");
    assert_eq!(*forged.lock().unwrap(), 0, "every request was signed with the channel's secret");

    // A CUSTOM address may be any id, not one with spaces or a scheme Herald cannot POST to.
    for bad in ["user 1", "ftp://files.example.com/x"] {
        let err = d
            .endpoints()
            .await
            .update_endpoint(d.req(herald::proto::v1::UpdateEndpointRequest {
                app_id: app.clone(),
                endpoint_id: "x".into(),
                endpoint: Some(endpoint("x", ChannelType::Custom, bad)),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
    }
}

/// A custom template named in the send renders its payload for each endpoint into the Data
/// the channel's delivery_url receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_template_renders_the_payload_per_endpoint() {
    use herald::proto::v1::{
        template::Content, templates_client::TemplatesClient, CreateTemplateRequest, CustomTemplate, Template, TemplateConfiguration,
        TemplateReference, UpdateEndpointsBatchRequest,
    };
    let (base, seen, _) = receiver(&["/channel"]).await;
    let d = Daemon::start(Backend::Embedded);
    let app = d.create_app("custom-template").await.app_id;
    custom_channel(&d, &app, &format!("{base}/channel")).await;
    let mut crm = endpoint("crm-1", ChannelType::Custom, "contact-1");
    crm.attributes.insert("Plan".into(), herald::proto::v1::AttributeValues { values: vec!["Gold".into()] });
    d.endpoints()
        .await
        .update_endpoints_batch(d.req(UpdateEndpointsBatchRequest { app_id: app.clone(), endpoints: vec![crm] }))
        .await
        .unwrap();
    let t = Template {
        name: "crm".into(),
        content: Some(Content::Custom(CustomTemplate { payload: r#"{"contact":"{{Address}}","plan":"{{Attributes.Plan}}"}"#.into() })),
        ..Default::default()
    };
    TemplatesClient::new(d.channel().await)
        .create_template(d.req(CreateTemplateRequest { app_id: app.clone(), template: Some(t) }))
        .await
        .unwrap();
    let r = MessagesClient::new(d.channel().await)
        .send_messages(d.req(SendMessagesRequest {
            app_id: app.clone(),
            endpoints: [("crm-1".to_string(), EndpointSendConfiguration::default())].into(),
            template_configuration: Some(TemplateConfiguration {
                custom_template: Some(TemplateReference { name: "crm".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.endpoint_result["crm-1"].delivery_status, DeliveryStatus::Successful as i32, "{r:?}");
    let calls = seen.lock().unwrap()["/channel"].clone();
    assert_eq!(calls[0]["Data"], r#"{"contact":"contact-1","plan":"Gold"}"#);
}
