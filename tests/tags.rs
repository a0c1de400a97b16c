//! Tags on every taggable resource, by ARN and by path, on both stores: added, replaced,
//! removed, listed, with no new version of the resource; Pinpoint's limits refused by field.

mod common;

use std::collections::HashMap;

use common::{Backend, Daemon};
use herald::proto::v1::campaigns_client::CampaignsClient;
use herald::proto::v1::tags_client::TagsClient;
use herald::proto::v1::template::Content;
use herald::proto::v1::templates_client::TemplatesClient;
use herald::proto::v1::{
    Campaign, CreateCampaignRequest, CreateTemplateRequest, Endpoint, Frequency, GetCampaignRequest, ListTagsForResourceRequest, Schedule,
    SmsTemplate, TagResourceRequest, Template, UntagResourceRequest,
};
use tonic::Code;

fn tags(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn tags_on_every_resource(backend: Backend) {
    let d = Daemon::start(backend);
    let app = d.create_app("tags").await.app_id;
    let endpoint = Endpoint {
        id: "e1".into(),
        channel_type: herald::proto::v1::ChannelType::Email as i32,
        address: "e1@example.com".into(),
        ..Default::default()
    };
    let segment = d.import_as_segment(&app, vec![endpoint]).await;
    let mut start = chrono::Utc::now() + chrono::Duration::days(30);
    start = start - chrono::Duration::nanoseconds(i64::from(start.timestamp_subsec_nanos()));
    let campaign = CampaignsClient::new(d.channel().await)
        .create_campaign(d.req(CreateCampaignRequest {
            app_id: app.clone(),
            campaign: Some(Campaign {
                name: "Later".into(),
                segment_id: segment.clone(),
                message_configuration: Some(common::email_message("Later", "x")),
                schedule: Some(Schedule {
                    start_time: herald::domain::timestamp(start),
                    frequency: Frequency::Once as i32,
                    ..Default::default()
                }),
                tags: tags(&[("team", "growth")]),
                ..Default::default()
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    TemplatesClient::new(d.channel().await)
        .create_template(d.req(CreateTemplateRequest {
            app_id: app.clone(),
            template: Some(Template {
                name: "code".into(),
                content: Some(Content::Sms(SmsTemplate { body: "{{Code}}".into() })),
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    let mut t = TagsClient::new(d.channel().await);
    let arn = |path: String| format!("arn:aws:mobiletargeting:us-east-1:123456789012:{path}");
    for (resource, had) in [
        (arn(format!("apps/{app}")), tags(&[])),
        (arn(format!("apps/{app}/campaigns/{}", campaign.id)), tags(&[("team", "growth")])),
        (format!("apps/{app}/segments/{segment}"), tags(&[])),
        (format!("apps/{app}/templates/code"), tags(&[])),
    ] {
        let list = |t: &mut TagsClient<_>| {
            let req = d.req(ListTagsForResourceRequest { resource_arn: resource.clone() });
            let mut t = t.clone();
            async move { t.list_tags_for_resource(req).await.unwrap().into_inner().tags }
        };
        assert_eq!(list(&mut t).await, had, "{resource}");
        let after = t
            .tag_resource(
                d.req(TagResourceRequest { resource_arn: resource.clone(), tags: tags(&[("team", "retention"), ("cost", "42")]) }),
            )
            .await
            .unwrap()
            .into_inner()
            .tags;
        assert_eq!(after, tags(&[("team", "retention"), ("cost", "42")]), "{resource}: added, and replaced");
        let after = t
            .untag_resource(d.req(UntagResourceRequest { resource_arn: resource.clone(), tag_keys: vec!["cost".into(), "absent".into()] }))
            .await
            .unwrap()
            .into_inner()
            .tags;
        assert_eq!(after, tags(&[("team", "retention")]), "{resource}");
        assert_eq!(list(&mut t).await, tags(&[("team", "retention")]), "{resource}: as stored");
    }
    // The campaign is still version 1 and still scheduled as it was.
    let c = CampaignsClient::new(d.channel().await)
        .get_campaign(d.req(GetCampaignRequest { app_id: app.clone(), campaign_id: campaign.id.clone(), version: 0 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((c.version, c.schedule, c.tags), (1, campaign.schedule, tags(&[("team", "retention")])));

    // Limits and names.
    let err = t
        .tag_resource(
            d.req(TagResourceRequest { resource_arn: format!("apps/{app}"), tags: tags(&[("aws:owner", "x"), (&"k".repeat(129), "v")]) }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        tonic_types::StatusExt::get_details_bad_request(&err).unwrap().field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields.len(), 2, "{fields:?}");
    let many: HashMap<String, String> = (0..50).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let err = t.tag_resource(d.req(TagResourceRequest { resource_arn: format!("apps/{app}"), tags: many })).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "50 more on top of team: over 50");
    for (resource, code) in [
        (format!("apps/{app}/journeys/none"), Code::NotFound),
        ("apps/no-such-app".to_string(), Code::NotFound),
        (format!("apps/{app}/widgets/w"), Code::InvalidArgument),
        ("arn:aws:sns:us-east-1:1:topic".to_string(), Code::InvalidArgument),
    ] {
        let err = t.list_tags_for_resource(d.req(ListTagsForResourceRequest { resource_arn: resource.clone() })).await.unwrap_err();
        assert_eq!(err.code(), code, "{resource}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_embedded() {
    tags_on_every_resource(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_redis() {
    tags_on_every_resource(Backend::Redis).await;
}
