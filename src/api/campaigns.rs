//! The `Campaigns` service: versioned campaign definitions, their state and their activities.

use std::sync::Arc;

use prost::Message as _;
use tonic::{Request, Response, Status};

use super::apps::page_size;
use super::{check_app_id, invalid, observe, store_status};
use crate::campaigns::{self, hook, validate_schedule, Frequency, KIND, MAX_TREATMENTS};
use crate::domain::{self, FieldViolation};
use crate::pipeline::compose::{ComposeError, Composer};
use crate::proto::v1::{
    campaigns_server, Campaign, CampaignState, CreateCampaignRequest, DeleteCampaignRequest, GetCampaignActivitiesRequest,
    GetCampaignActivitiesResponse, GetCampaignRequest, GetInAppMessagesRequest, InAppMessagesResponse, ListCampaignVersionsRequest,
    ListCampaignsRequest, ListCampaignsResponse, UpdateCampaignRequest,
};
use crate::render::template::TemplateCache;
use crate::segments;
use crate::store::{Store, StoreError};

pub struct CampaignsService {
    store: Arc<dyn Store>,
    /// Seals campaign hooks' secrets.
    sealer: Arc<crate::secrets::Sealer>,
    cache: Arc<TemplateCache>,
    /// Wakes this daemon's scheduler when a campaign is created or changed.
    wake: Arc<tokio::sync::Notify>,
}

impl CampaignsService {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<TemplateCache>,
        wake: Arc<tokio::sync::Notify>,
        sealer: Arc<crate::secrets::Sealer>,
    ) -> Self {
        Self { store, sealer, cache, wake }
    }

    /// Checks a definition; returns it with its segment version pinned.
    async fn check(&self, app: &str, mut c: Campaign, stored: Option<&Campaign>) -> Result<Campaign, Status> {
        let mut v = Vec::new();
        let stored_hook = stored.and_then(|s| s.hook.as_ref()).filter(|h| hook::is_set(Some(h)));
        if let Some(h) = &c.hook {
            v.extend(hook::validate(h, "campaign.hook", stored_hook.is_some()));
        }
        if c.name.is_empty() {
            v.push(FieldViolation::new("campaign.name", "is required"));
        }
        if let Some(s) = c.schedule.as_mut() {
            campaigns::apply_defaults(s);
        }
        for s in c.additional_treatments.iter_mut().filter_map(|t| t.schedule.as_mut()) {
            campaigns::apply_defaults(s);
        }
        match &c.schedule {
            None => v.push(FieldViolation::new("campaign.schedule", "is required")),
            Some(s) => validate_schedule("campaign.schedule", s, &mut v),
        }
        let l = c.limits.unwrap_or_default();
        let range = |v: &mut Vec<FieldViolation>, name: &str, val: Option<i32>, lo: i32, hi: i32| {
            if val.is_some_and(|x| !(lo..=hi).contains(&x)) {
                v.push(FieldViolation::new(format!("campaign.limits.{name}"), format!("must be {lo} to {hi}")));
            }
        };
        range(&mut v, "daily", l.daily, 0, 100);
        range(&mut v, "total", l.total, 0, 100);
        range(&mut v, "messages_per_second", l.messages_per_second, 1, 20_000);
        range(&mut v, "maximum_duration", l.maximum_duration, 60, i32::MAX);
        if !(0..=100).contains(&c.holdout_percent) {
            v.push(FieldViolation::new("campaign.holdout_percent", "must be 0 to 100"));
        }
        if c.additional_treatments.len() > MAX_TREATMENTS - 1 {
            v.push(FieldViolation::new("campaign.additional_treatments", format!("at most {}", MAX_TREATMENTS - 1)));
        }
        let mut shares = c.holdout_percent.max(0);
        for (i, t) in c.additional_treatments.iter_mut().enumerate() {
            t.id = i as i32 + 1;
            if !(0..=100).contains(&t.size_percent) {
                v.push(FieldViolation::new(format!("campaign.additional_treatments[{i}].size_percent"), "must be 0 to 100"));
            }
            shares += t.size_percent.max(0);
            if let Some(s) = &t.schedule {
                validate_schedule(&format!("campaign.additional_treatments[{i}].schedule"), s, &mut v);
            }
        }
        if shares > 100 {
            v.push(FieldViolation::new(
                "campaign.additional_treatments",
                format!("the holdout and the additional treatments take {shares} %; the default treatment gets the rest of 100"),
            ));
        }
        let immediate = c.schedule.as_ref().is_some_and(|s| s.start_time.eq_ignore_ascii_case("IMMEDIATE"));
        // An IMMEDIATE campaign runs at once, nothing to pause; an in-app one goes on showing.
        if c.is_paused && immediate && !campaigns::inapp::is_in_app(&c) {
            return Err(Status::failed_precondition("an IMMEDIATE campaign cannot be paused"));
        }
        // The segment (pinned at its latest version when none is named).
        match segments::load(self.store.as_ref(), app, &c.segment_id, c.segment_version.max(0)).await {
            Ok(s) => {
                c.segment_version = s.version;
                let event = c.schedule.as_ref().is_some_and(|s| s.frequency == Frequency::Event as i32);
                if event && segments::is_imported(&s) {
                    v.push(FieldViolation::new("campaign.segment_id", "an EVENT campaign needs a dynamic segment"));
                }
            }
            Err(segments::SegmentError::Store(e)) => return Err(store_status(e)),
            Err(e) => v.push(FieldViolation::new("campaign.segment_id", e.to_string())),
        }
        // In-app campaigns: only in-app content (inline or a template), in every treatment,
        // with IN_APP_EVENT.
        let in_app = campaigns::inapp::is_in_app(&c);
        let mut in_app_contents = vec![("campaign".to_string(), c.message_configuration.clone(), c.template_configuration.clone())];
        for (i, t) in c.additional_treatments.iter().enumerate() {
            if t.message_configuration.is_some() || t.template_configuration.is_some() {
                in_app_contents.push((
                    format!("campaign.additional_treatments[{i}]"),
                    t.message_configuration.clone(),
                    t.template_configuration.clone(),
                ));
            }
        }
        for (field, m, t) in &in_app_contents {
            let (m, t) = (m.clone().unwrap_or_default(), t.clone().unwrap_or_default());
            let template = t.in_app_template.as_ref().filter(|r| !r.name.is_empty());
            if let Some(r) = template {
                let found = crate::store::find_template(
                    self.store.as_ref(),
                    app,
                    &r.name,
                    (r.version > 0).then_some(r.version),
                    crate::proto::v1::TemplateType::InApp,
                )
                .await
                .map_err(store_status)?;
                let f = format!("{field}.template_configuration.in_app_template");
                match found {
                    None => v.push(FieldViolation::new(f, format!("template {} (version {}) not found", r.name, r.version))),
                    Some(found) if found.template_type != crate::proto::v1::TemplateType::InApp as i32 => {
                        v.push(FieldViolation::new(f, format!("template {} is not an in-app template", r.name)))
                    }
                    Some(_) => {}
                }
            }
            match (&m.in_app_message, template.is_some(), in_app) {
                (Some(_), true, _) => v.push(FieldViolation::new(
                    format!("{field}.message_configuration.in_app_message"),
                    "give an in-app message or an in-app template, not both",
                )),
                (Some(ia), false, true) => {
                    v.extend(campaigns::inapp::validate(ia, &format!("{field}.message_configuration.in_app_message")))
                }
                (Some(_), false, false) => v.push(FieldViolation::new(
                    format!("{field}.message_configuration.in_app_message"),
                    "in-app messages go in IN_APP_EVENT campaigns (schedule.frequency)",
                )),
                (None, true, false) => v.push(FieldViolation::new(
                    format!("{field}.template_configuration.in_app_template"),
                    "in-app templates go in IN_APP_EVENT campaigns (schedule.frequency)",
                )),
                (None, false, true) => v.push(FieldViolation::new(
                    format!("{field}.message_configuration.in_app_message"),
                    "an IN_APP_EVENT campaign needs an in-app message or an in-app template",
                )),
                _ => {}
            }
            if in_app {
                let others = crate::proto::v1::DirectMessageConfiguration { in_app_message: None, ..m.clone() };
                let other_templates = crate::proto::v1::TemplateConfiguration { in_app_template: None, ..t.clone() };
                if others != Default::default() || other_templates != Default::default() {
                    v.push(FieldViolation::new(
                        format!("{field}.message_configuration"),
                        "an in-app campaign carries only in_app_message or an in_app_template",
                    ));
                }
            }
        }
        if c.priority != 0 && !(1..=5).contains(&c.priority) {
            v.push(FieldViolation::new("campaign.priority", "must be 1 (most important) to 5"));
        } else if c.priority != 0 && !in_app {
            v.push(FieldViolation::new("campaign.priority", "orders in-app messages: only for IN_APP_EVENT campaigns"));
        }
        if in_app && (c.hook.is_some() || c.custom_delivery_configuration.is_some()) {
            v.push(FieldViolation::new("campaign", "an in-app campaign takes no hook or custom delivery: the app shows it"));
        }
        // Every treatment's content must compile and give the campaign a channel.
        let base = (c.message_configuration.clone().unwrap_or_default(), c.template_configuration.clone().unwrap_or_default());
        let mut contents = vec![("campaign".to_string(), base.clone())];
        for (i, t) in c.additional_treatments.iter().enumerate() {
            if t.message_configuration.is_some() || t.template_configuration.is_some() {
                contents.push((
                    format!("campaign.additional_treatments[{i}]"),
                    (t.message_configuration.clone().unwrap_or_default(), t.template_configuration.clone().unwrap_or_default()),
                ));
            }
        }
        custom_delivery("campaign", c.custom_delivery_configuration.as_ref(), &mut v);
        for (i, t) in c.additional_treatments.iter().enumerate() {
            custom_delivery(&format!("campaign.additional_treatments[{i}]"), t.custom_delivery_configuration.as_ref(), &mut v);
        }
        // Which contents a custom delivery needs custom content in (a treatment without its own
        // content takes the campaign's).
        let mut needs_custom: Vec<String> = Vec::new();
        if c.custom_delivery_configuration.is_some() {
            needs_custom.push("campaign".into());
        }
        for (i, t) in c.additional_treatments.iter().enumerate() {
            if t.custom_delivery_configuration.is_some() {
                let own = t.message_configuration.is_some() || t.template_configuration.is_some();
                needs_custom.push(if own { format!("campaign.additional_treatments[{i}]") } else { "campaign".into() });
            }
        }
        for (field, (m, t)) in contents {
            if in_app || m.in_app_message.is_some() || t.in_app_template.is_some() {
                continue;
            }
            match Composer::build(self.store.as_ref(), self.cache.clone(), app, &m, &t, crate::pipeline::compose::Tracking::off()).await {
                Ok(composer) if composer.lanes().is_empty() => {
                    v.push(FieldViolation::new(format!("{field}.message_configuration"), "give email or custom content, or a template"))
                }
                Ok(composer) if needs_custom.contains(&field) && !composer.lanes().contains(&crate::channels::Lane::Custom) => {
                    v.push(FieldViolation::new(
                        format!("{field}.message_configuration.custom_message"),
                        "a custom delivery (custom_delivery_configuration) sends the custom message: give custom_message or a custom template",
                    ))
                }
                Ok(_) => {}
                Err(ComposeError::Field(f)) => v.push(f.under(&field)),
                Err(ComposeError::Store(e)) => return Err(store_status(e)),
            }
        }
        if !v.is_empty() {
            return Err(invalid(v));
        }
        Ok(c)
    }

    /// Seals the hook's secret for storage (keeping the stored one when the write gave none).
    fn seal_hook(&self, app: &str, c: &mut Campaign, stored: Option<&Campaign>) {
        if let Some(h) = c.hook.as_mut() {
            hook::seal(&self.sealer, &hook::campaign_place(app, &c.id), h, stored.and_then(|s| s.hook.as_ref()));
        }
        if !hook::is_set(c.hook.as_ref()) {
            c.hook = None;
        }
    }

    async fn find(&self, app: &str, id: &str, version: i32) -> Result<Campaign, Status> {
        check_app_id(app)?;
        let raw = self.store.get_record(app, KIND, id, (version > 0).then_some(version)).await.map_err(store_status)?;
        let raw = raw.ok_or_else(|| {
            Status::not_found(format!("campaign {id}{} not found", if version > 0 { format!(" version {version}") } else { String::new() }))
        })?;
        let mut c = Campaign::decode(raw.as_slice()).map_err(|e| store_status(StoreError::from(e)))?;
        let runs = campaigns::runs(self.store.as_ref(), app, id).await.map_err(store_status)?;
        c.state = campaigns::state(&c, &runs) as i32;
        Ok(c)
    }
}

#[tonic::async_trait]
impl campaigns_server::Campaigns for CampaignsService {
    async fn create_campaign(&self, request: Request<CreateCampaignRequest>) -> Result<Response<Campaign>, Status> {
        observe("CreateCampaign", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            if self.store.get_app(&req.app_id).await.map_err(store_status)?.is_none() {
                return Err(Status::not_found(format!("app {} not found", req.app_id)));
            }
            let mut c = self.check(&req.app_id, req.campaign.unwrap_or_default(), None).await?;
            let now = domain::timestamp(chrono::Utc::now());
            c.id = domain::new_id();
            self.seal_hook(&req.app_id, &mut c, None);
            c.app_id = req.app_id.clone();
            c.version = 1;
            c.creation_date = now.clone();
            c.last_modified_date = now;
            c.state = CampaignState::Scheduled as i32;
            self.store.write_record(&req.app_id, KIND, &c.id, 0, 1, &c.encode_to_vec()).await.map_err(store_status)?;
            campaigns::set_uses(self.store.as_ref(), &req.app_id, &c, true).await.map_err(store_status)?;
            self.wake.notify_one();
            Ok(Response::new(shown(c)))
        })
        .await
    }

    async fn get_campaign(&self, request: Request<GetCampaignRequest>) -> Result<Response<Campaign>, Status> {
        observe("GetCampaign", async {
            let req = request.into_inner();
            self.find(&req.app_id, &req.campaign_id, req.version).await.map(|c| Response::new(shown(c)))
        })
        .await
    }

    async fn list_campaign_versions(
        &self,
        request: Request<ListCampaignVersionsRequest>,
    ) -> Result<Response<ListCampaignsResponse>, Status> {
        observe("ListCampaignVersions", async {
            let req = request.into_inner();
            let size = page_size(req.page_size)?;
            let latest = self.find(&req.app_id, &req.campaign_id, 0).await?;
            // The token is the last version given; the page goes on below it.
            let below = match req.page_token.as_str() {
                "" => latest.version + 1,
                t => match t.parse::<i32>() {
                    Ok(v) if (1..=latest.version).contains(&v) => v,
                    _ => return Err(invalid(vec![FieldViolation::new("page_token", "is not a token this call gave")])),
                },
            };
            let mut campaigns = Vec::with_capacity(size.min(below as usize));
            for v in (1..below).rev().take(size) {
                campaigns.push(if v == latest.version { latest.clone() } else { self.find(&req.app_id, &req.campaign_id, v).await? });
            }
            let next_page_token = match campaigns.last() {
                Some(c) if campaigns.len() == size && c.version > 1 => c.version.to_string(),
                _ => String::new(),
            };
            Ok(Response::new(ListCampaignsResponse { campaigns: campaigns.into_iter().map(shown).collect(), next_page_token }))
        })
        .await
    }

    async fn list_campaigns(&self, request: Request<ListCampaignsRequest>) -> Result<Response<ListCampaignsResponse>, Status> {
        observe("ListCampaigns", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            let size = page_size(req.page_size)?;
            let after = Some(req.page_token.as_str()).filter(|t| !t.is_empty());
            let raw = self.store.list_records(&req.app_id, KIND, after, size + 1).await.map_err(store_status)?;
            let mut campaigns = Vec::with_capacity(raw.len());
            for r in raw {
                let mut c = Campaign::decode(r.as_slice()).map_err(|e| store_status(StoreError::from(e)))?;
                let runs = campaigns::runs(self.store.as_ref(), &req.app_id, &c.id).await.map_err(store_status)?;
                c.state = campaigns::state(&c, &runs) as i32;
                campaigns.push(c);
            }
            let next_page_token = if campaigns.len() > size {
                campaigns.truncate(size);
                campaigns.last().map(|c| c.id.clone()).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(Response::new(ListCampaignsResponse { campaigns: campaigns.into_iter().map(shown).collect(), next_page_token }))
        })
        .await
    }

    async fn update_campaign(&self, request: Request<UpdateCampaignRequest>) -> Result<Response<Campaign>, Status> {
        observe("UpdateCampaign", async {
            let req = request.into_inner();
            let old = self.find(&req.app_id, &req.campaign_id, 0).await?;
            let mut c = self.check(&req.app_id, req.campaign.unwrap_or_default(), Some(&old)).await?;
            c.id = old.id.clone();
            self.seal_hook(&req.app_id, &mut c, Some(&old));
            c.app_id = old.app_id.clone();
            c.version = old.version + 1;
            c.creation_date = old.creation_date.clone();
            c.last_modified_date = domain::timestamp(chrono::Utc::now());
            self.store.write_record(&req.app_id, KIND, &c.id, old.version, c.version, &c.encode_to_vec()).await.map_err(store_status)?;
            campaigns::set_uses(self.store.as_ref(), &req.app_id, &c, true).await.map_err(store_status)?;
            self.wake.notify_one();
            let runs = campaigns::runs(self.store.as_ref(), &req.app_id, &c.id).await.map_err(store_status)?;
            c.state = campaigns::state(&c, &runs) as i32;
            Ok(Response::new(shown(c)))
        })
        .await
    }

    async fn delete_campaign(&self, request: Request<DeleteCampaignRequest>) -> Result<Response<Campaign>, Status> {
        observe("DeleteCampaign", async {
            let req = request.into_inner();
            let mut c = self.find(&req.app_id, &req.campaign_id, 0).await?;
            self.store.delete_record(&req.app_id, KIND, &c.id).await.map_err(store_status)?;
            campaigns::set_uses(self.store.as_ref(), &req.app_id, &c, false).await.map_err(store_status)?;
            c.state = CampaignState::Deleted as i32;
            Ok(Response::new(shown(c)))
        })
        .await
    }

    async fn get_in_app_messages(&self, request: Request<GetInAppMessagesRequest>) -> Result<Response<InAppMessagesResponse>, Status> {
        observe("GetInAppMessages", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            if self.store.get_app(&req.app_id).await.map_err(store_status)?.is_none() {
                return Err(Status::not_found(format!("app {} not found", req.app_id)));
            }
            let found = campaigns::inapp::messages_for(&self.store, &req.app_id, &req.endpoint_id, chrono::Utc::now()).await;
            match found {
                Ok(Some(in_app_message_campaigns)) => Ok(Response::new(InAppMessagesResponse { in_app_message_campaigns })),
                Ok(None) => Err(Status::not_found(format!("endpoint {} not found", req.endpoint_id))),
                Err(segments::SegmentError::Store(e)) => Err(store_status(e)),
                Err(e) => Err(Status::internal(format!("an in-app campaign's segment cannot be evaluated: {e}"))),
            }
        })
        .await
    }

    async fn get_campaign_activities(
        &self,
        request: Request<GetCampaignActivitiesRequest>,
    ) -> Result<Response<GetCampaignActivitiesResponse>, Status> {
        observe("GetCampaignActivities", async {
            let req = request.into_inner();
            self.find(&req.app_id, &req.campaign_id, 0).await?;
            let runs = campaigns::runs(self.store.as_ref(), &req.app_id, &req.campaign_id).await.map_err(store_status)?;
            let mut activities = Vec::new();
            for r in runs {
                if r.activities.is_empty() {
                    // A run skipped while the campaign was paused.
                    activities.push(crate::proto::v1::Activity {
                        id: format!("{}-0", campaigns::run_id(&r.campaign_id, r.occurrence)),
                        campaign_id: r.campaign_id.clone(),
                        campaign_version: r.campaign_version,
                        state: r.state,
                        scheduled_start: r.scheduled_start.clone(),
                        ..Default::default()
                    });
                }
                for mut a in r.activities {
                    a.state = r.state;
                    activities.push(a);
                }
            }
            Ok(Response::new(GetCampaignActivitiesResponse { activities }))
        })
        .await
    }
}

/// Checks a CustomDeliveryConfiguration: an http(s) URI Herald can POST to, and endpoint types
/// that are channel types.
fn custom_delivery(field: &str, d: Option<&crate::proto::v1::CustomDeliveryConfiguration>, v: &mut Vec<FieldViolation>) {
    let Some(d) = d else { return };
    let field = format!("{field}.custom_delivery_configuration");
    if d.delivery_uri.starts_with("arn:") {
        v.push(FieldViolation::new(
            format!("{field}.delivery_uri"),
            "a Lambda function cannot be invoked from Herald: give the http(s) URL of a webhook",
        ));
    } else if let Err(why) = crate::domain::endpoint::validate_url(&d.delivery_uri) {
        v.push(FieldViolation::new(format!("{field}.delivery_uri"), why));
    }
    if d.endpoint_types.is_empty() {
        v.push(FieldViolation::new(format!("{field}.endpoint_types"), "give the endpoint types it goes to (EMAIL, SMS, GCM, CUSTOM...)"));
    }
    for (k, t) in d.endpoint_types.iter().enumerate() {
        let known = crate::domain::endpoint::parse_channel(t).is_some();
        if !known {
            v.push(FieldViolation::new(format!("{field}.endpoint_types[{k}]"), format!("{t:?} is not a channel type")));
        }
    }
}

/// A campaign as callers see it: its hook's secret write-only.
fn shown(mut c: Campaign) -> Campaign {
    hook::shown(&mut c.hook);
    c
}
