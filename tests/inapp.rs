//! In-app campaigns end to end through the daemon: validation of the message, GetInAppMessages
//! answering for an endpoint the running campaigns it is in the segment and treatment of,
//! most important first, with the event filter and caps the app applies; paused, ended,
//! holdout and non-members left out; SendMessages refusing in-app content.

mod common;

use common::{violations, Backend, Daemon};
use herald::domain::endpoint::cohort_id;
use herald::proto::v1::{
    campaigns_client::CampaignsClient, messages_client::MessagesClient, AddressConfiguration, AttributeDimension, AttributeType,
    ButtonAction, Campaign, CampaignLimits, CampaignState, ChannelType, CreateCampaignRequest, CreateSegmentRequest,
    DefaultButtonConfiguration, DirectMessageConfiguration, Endpoint, EventFilter, Frequency, GetCampaignRequest, GetInAppMessagesRequest,
    InAppLayout, InAppMessage, InAppMessageBodyConfig, InAppMessageButton, InAppMessageContent, InAppMessageHeaderConfig,
    OverrideButtonConfiguration, Schedule, SegmentDimensions, SendMessagesRequest, UpdateCampaignRequest,
};
use tonic::Code;

fn banner(header: &str) -> InAppMessage {
    InAppMessage {
        layout: InAppLayout::TopBanner as i32,
        content: vec![InAppMessageContent {
            background_color: "#FFFFFF".into(),
            header_config: Some(InAppMessageHeaderConfig { header: header.into(), text_color: "#000000".into(), ..Default::default() }),
            body_config: Some(InAppMessageBodyConfig { body: "20% off today".into(), ..Default::default() }),
            primary_btn: Some(InAppMessageButton {
                default_config: Some(DefaultButtonConfiguration {
                    text: "Shop".into(),
                    button_action: ButtonAction::Link as i32,
                    link: "https://shop.example/sale".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            // A second button that each platform points elsewhere.
            secondary_btn: Some(InAppMessageButton {
                default_config: Some(DefaultButtonConfiguration {
                    text: "Later".into(),
                    button_action: ButtonAction::Close as i32,
                    ..Default::default()
                }),
                android: Some(OverrideButtonConfiguration { button_action: ButtonAction::DeepLink as i32, link: "shop://later".into() }),
                ios: Some(OverrideButtonConfiguration {
                    button_action: ButtonAction::Link as i32,
                    link: "https://shop.example/ios".into(),
                }),
                web: Some(OverrideButtonConfiguration { button_action: ButtonAction::Close as i32, link: String::new() }),
            }),
            ..Default::default()
        }],
        custom_config: [("campaign".to_string(), "spring".to_string())].into(),
    }
}

fn in_app(name: &str, segment: &str, message: InAppMessage, priority: i32) -> Campaign {
    Campaign {
        name: name.into(),
        segment_id: segment.into(),
        message_configuration: Some(DirectMessageConfiguration { in_app_message: Some(message), ..Default::default() }),
        schedule: Some(Schedule {
            start_time: "IMMEDIATE".into(),
            frequency: Frequency::InAppEvent as i32,
            event_filter: Some(EventFilter { event_types: vec!["opened_cart".into()], ..Default::default() }),
            ..Default::default()
        }),
        limits: Some(CampaignLimits { session: Some(1), daily: Some(2), total: Some(5), ..Default::default() }),
        priority,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_in_app_messages_answers_what_an_endpoint_should_show() {
    let d = Daemon::start(Backend::Embedded);
    let app = d.create_app("inapp").await.app_id;
    let endpoint = |id: &str, plan: &str| Endpoint {
        id: id.into(),
        channel_type: ChannelType::InApp as i32,
        address: format!("device-{id}"),
        attributes: [("Plan".to_string(), herald::proto::v1::AttributeValues { values: vec![plan.into()] })].into(),
        ..Default::default()
    };
    let all = d.import_as_segment(&app, vec![endpoint("gold-1", "Gold"), endpoint("free-1", "Free")]).await;
    let gold = herald::proto::v1::segments_client::SegmentsClient::new(d.channel().await)
        .create_segment(
            d.req(CreateSegmentRequest {
                app_id: app.clone(),
                name: "gold".into(),
                dimensions: Some(SegmentDimensions {
                    attributes: [(
                        "Plan".to_string(),
                        AttributeDimension { attribute_type: AttributeType::Inclusive as i32, values: vec!["Gold".into()] },
                    )]
                    .into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_inner()
        .id;
    let mut c = CampaignsClient::new(d.channel().await);

    // Validation names each bad field.
    let mut bad = banner("");
    bad.layout = InAppLayout::Unspecified as i32;
    bad.content[0].header_config = None;
    bad.content[0].body_config = None;
    bad.content[0].background_color = "white".into();
    bad.content[0].primary_btn.as_mut().unwrap().default_config.as_mut().unwrap().link.clear();
    let mut wrong = in_app("bad", &all, bad, 9);
    wrong.message_configuration.as_mut().unwrap().sms_message = Some(Default::default());
    let err = c.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(wrong) })).await.unwrap_err();
    assert_eq!(
        violations(&err),
        [
            "campaign.message_configuration",
            "campaign.message_configuration.in_app_message.content[0]",
            "campaign.message_configuration.in_app_message.content[0].background_color",
            "campaign.message_configuration.in_app_message.content[0].primary_btn.default_config.link",
            "campaign.message_configuration.in_app_message.layout",
            "campaign.priority",
        ]
    );
    let mut not_in_app = in_app("x", &all, banner("x"), 0);
    not_in_app.schedule.as_mut().unwrap().frequency = Frequency::Once as i32;
    let err = c.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(not_in_app) })).await.unwrap_err();
    assert_eq!(violations(&err), ["campaign.message_configuration.in_app_message"]);

    // Three running campaigns: everyone's at priority 3, the gold segment's at 1, one ended;
    // a fourth paused.
    let mut ids = Vec::new();
    for (name, segment, priority) in [("everyone", &all, 3), ("gold", &gold, 1), ("ended", &all, 2), ("paused", &all, 2)] {
        let mut camp = in_app(name, segment, banner(name), priority);
        if name == "ended" {
            let s = camp.schedule.as_mut().unwrap();
            s.start_time = "2026-01-01T00:00:00Z".into();
            s.end_time = "2026-02-01T00:00:00Z".into();
        }
        let made = c.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(camp.clone()) })).await.unwrap();
        let made = made.into_inner();
        if name == "paused" {
            camp.is_paused = true;
            c.update_campaign(d.req(UpdateCampaignRequest { app_id: app.clone(), campaign_id: made.id.clone(), campaign: Some(camp) }))
                .await
                .unwrap();
        }
        ids.push(made.id);
    }
    // Shown from start to end: EXECUTING while it runs, COMPLETED once ended, PAUSED paused.
    for (id, want) in [(&ids[0], CampaignState::Executing), (&ids[2], CampaignState::Completed), (&ids[3], CampaignState::Paused)] {
        let got = c.get_campaign(d.req(GetCampaignRequest { app_id: app.clone(), campaign_id: id.clone(), version: 0 })).await.unwrap();
        assert_eq!(got.into_inner().state, want as i32, "{id}");
    }
    let ask = |id: &str| GetInAppMessagesRequest { app_id: app.clone(), endpoint_id: id.into() };
    let got = c.get_in_app_messages(d.req(ask("gold-1"))).await.unwrap().into_inner().in_app_message_campaigns;
    assert_eq!(got.iter().map(|m| m.campaign_id.as_str()).collect::<Vec<_>>(), [ids[1].as_str(), ids[0].as_str()], "priority 1 first");
    let m = &got[0];
    assert_eq!((m.priority, m.session_cap, m.daily_cap, m.total_cap, m.treatment_id.as_str()), (1, 1, 2, 5, "0"));
    let shown = m.in_app_message.as_ref().unwrap();
    assert_eq!(shown.content[0].header_config.as_ref().unwrap().header, "gold");
    assert_eq!(shown.custom_config["campaign"], "spring");
    let second = shown.content[0].secondary_btn.as_ref().expect("the second button");
    assert_eq!(
        (second.android.as_ref().unwrap().link.as_str(), second.ios.as_ref().unwrap().link.as_str()),
        ("shop://later", "https://shop.example/ios")
    );
    assert_eq!(second.web.as_ref().unwrap().button_action, ButtonAction::Close as i32);
    assert_eq!(m.schedule.as_ref().unwrap().event_filter.as_ref().unwrap().event_types, ["opened_cart"]);
    let free = c.get_in_app_messages(d.req(ask("free-1"))).await.unwrap().into_inner().in_app_message_campaigns;
    assert_eq!(free.iter().map(|m| m.campaign_id.as_str()).collect::<Vec<_>>(), [ids[0].as_str()], "not in the gold segment");
    assert_eq!(c.get_in_app_messages(d.req(ask("nobody"))).await.unwrap_err().code(), Code::NotFound);

    // A holdout of every cohort below the endpoint's keeps it out.
    let mut held = in_app("held", &all, banner("held"), 4);
    held.holdout_percent = cohort_id("free-1") + 1;
    let held = c.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(held) })).await.unwrap().into_inner();
    let free = c.get_in_app_messages(d.req(ask("free-1"))).await.unwrap().into_inner().in_app_message_campaigns;
    assert!(free.iter().all(|m| m.campaign_id != held.id), "the holdout sees nothing");

    // An in-app template: validated like the message, usable by a campaign, shown as written.
    use herald::proto::v1::{
        template::Content, templates_client::TemplatesClient, CreateTemplateRequest, InAppTemplate, Template, TemplateConfiguration,
        TemplateReference,
    };
    let mut templates = TemplatesClient::new(d.channel().await);
    let t = |layout: InAppLayout| Template {
        name: "cart-banner".into(),
        content: Some(Content::InApp(InAppTemplate {
            layout: layout as i32,
            content: banner("From the template").content,
            custom_config: Default::default(),
        })),
        ..Default::default()
    };
    let err = templates
        .create_template(d.req(CreateTemplateRequest { app_id: app.clone(), template: Some(t(InAppLayout::Unspecified)) }))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["template.in_app.layout"]);
    let made = templates
        .create_template(d.req(CreateTemplateRequest { app_id: app.clone(), template: Some(t(InAppLayout::MiddleBanner)) }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.template_type, herald::proto::v1::TemplateType::InApp as i32);
    let mut from_template = in_app("templated", &gold, banner("unused"), 2);
    from_template.message_configuration = None;
    from_template.template_configuration = Some(TemplateConfiguration {
        in_app_template: Some(TemplateReference { name: "cart-banner".into(), version: 0 }),
        ..Default::default()
    });
    let templated =
        c.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(from_template) })).await.unwrap().into_inner();
    let got = c.get_in_app_messages(d.req(ask("gold-1"))).await.unwrap().into_inner().in_app_message_campaigns;
    let order: Vec<&str> = got.iter().map(|m| m.campaign_id.as_str()).collect();
    assert_eq!(order, [ids[1].as_str(), templated.id.as_str(), ids[0].as_str()], "priorities 1, 2, 3");
    let m = got[1].in_app_message.as_ref().unwrap();
    assert_eq!(
        (m.layout, m.content[0].header_config.as_ref().unwrap().header.as_str()),
        (InAppLayout::MiddleBanner as i32, "From the template")
    );

    // What the app reports of showing them counts in the campaign's KPIs.
    use herald::proto::v1::{
        events_client::EventsClient, kpis_client::KpisClient, EventsBatch, GetCampaignDateRangeKpiRequest, PutEventsRequest, ReportedEvent,
    };
    let campaign = ids[1].clone();
    let mut events = std::collections::HashMap::new();
    for (kind, n) in [("displayed", 3), ("clicked", 2), ("dismissed", 1)] {
        for k in 0..n {
            events.insert(
                format!("{kind}-{k}"),
                ReportedEvent {
                    event_type: format!("_inapp.message_{kind}"),
                    timestamp: herald::domain::timestamp(chrono::Utc::now()),
                    attributes: [("campaign_id".to_string(), campaign.clone()), ("treatment_id".to_string(), "0".to_string())].into(),
                    ..Default::default()
                },
            );
        }
    }
    EventsClient::new(d.channel().await)
        .put_events(d.req(PutEventsRequest {
            app_id: app.clone(),
            batch_item: [("gold-1".to_string(), EventsBatch { endpoint: None, events })].into(),
        }))
        .await
        .unwrap();
    let mut kpis = KpisClient::new(d.channel().await);
    for (name, want) in [
        ("in-app-message-displays", 3.0),
        ("in-app-message-clicks", 2.0),
        ("in-app-message-dismissals", 1.0),
        ("in-app-message-click-rate", 2.0 / 3.0),
    ] {
        let r = kpis
            .get_campaign_date_range_kpi(d.req(GetCampaignDateRangeKpiRequest {
                app_id: app.clone(),
                campaign_id: ids[1].clone(),
                kpi_name: name.into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let value: f64 = r.kpi_result.unwrap().rows[0].values[0].value.parse().unwrap();
        assert!((value - want).abs() < 1e-9, "{name}: {value}");
    }

    // In-app content is not sent.
    let err = MessagesClient::new(d.channel().await)
        .send_messages(d.req(SendMessagesRequest {
            app_id: app.clone(),
            addresses:
                [("device-x".to_string(), AddressConfiguration { channel_type: ChannelType::InApp as i32, ..Default::default() })].into(),
            message_configuration: Some(DirectMessageConfiguration { in_app_message: Some(banner("x")), ..Default::default() }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["message_configuration.in_app_message"]);
}
