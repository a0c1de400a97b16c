//! Each Pinpoint operation onto the Herald service that answers it: which input members
//! become which request fields, and how the answer becomes the operation's output.

use base64::Engine as _;
use prost::Message;
use prost_reflect::DynamicMessage;
use serde_json::{json, Map, Value};
use tonic::Request;

use super::model::Model;
use super::transcode::{self, Decoder, Trail};
use super::{Rest, RestError};
use crate::proto::v1::{self as pb};

use crate::proto::v1::apps_server::Apps as _;
use crate::proto::v1::campaigns_server::Campaigns as _;
use crate::proto::v1::channels_server::Channels as _;
use crate::proto::v1::endpoints_server::Endpoints as _;
use crate::proto::v1::events_server::Events as _;
use crate::proto::v1::journeys_server::Journeys as _;
use crate::proto::v1::kpis_server::Kpis as _;
use crate::proto::v1::messages_server::Messages as _;
use crate::proto::v1::segments_server::Segments as _;
use crate::proto::v1::tags_server::Tags as _;

/// The account every ARN Herald writes names (Herald has no AWS account).
pub const ACCOUNT: &str = "000000000000";

/// One request being answered.
pub struct Call<'a> {
    pub rest: &'a Rest,
    pub region: &'a str,
    pub input: &'a Map<String, Value>,
    pub input_shape: &'a str,
}

/// How an input member reaches the Herald request: into a field, or its members merged into
/// the request itself.
enum Part<'a> {
    To(&'a str, &'a str),
    Merge(&'a str),
}
use Part::{Merge, To};

impl Call<'_> {
    fn arn(&self, path: &str) -> String {
        format!("arn:aws:mobiletargeting:{}:{ACCOUNT}:{path}", self.region)
    }

    /// Builds the Herald request `name` from the input's members.
    fn request<T: Message + Default>(&self, name: &str, parts: &[Part<'_>]) -> Result<(T, Trail), RestError> {
        self.request_from(name, parts, self.input)
    }

    fn request_from<T: Message + Default>(
        &self,
        name: &str,
        parts: &[Part<'_>],
        input: &Map<String, Value>,
    ) -> Result<(T, Trail), RestError> {
        let model = Model::get();
        let desc = self.rest.descriptor(name);
        let shape = model.shape(self.input_shape);
        let mut dec = Decoder::new();
        let mut msg = DynamicMessage::new(desc.clone());
        for part in parts {
            let member = match part {
                To(m, _) | Merge(m) => *m,
            };
            let member_shape = shape.and_then(|s| s.members.get(member)).map(|m| m.shape.as_str());
            if let Merge(_) = part {
                dec.trail.note("", member, member_shape);
            }
            let Some(v) = input.get(member) else { continue };
            match part {
                Merge(_) => {
                    let sub = dec.message(member_shape, v, &desc, "", member);
                    for (f, val) in sub.fields() {
                        msg.set_field(&f, val.clone());
                    }
                }
                To(_, field) => {
                    let fd = desc.get_field_by_name(field).unwrap_or_else(|| panic!("{name} has a field {field}"));
                    dec.trail.note(field, member, member_shape);
                    if let Some(pv) = dec.field(member_shape, v, &fd, field, member) {
                        msg.set_field(&fd, pv);
                    }
                }
            }
        }
        if !dec.violations.is_empty() {
            return Err(RestError::invalid(&dec.violations));
        }
        let t = msg.transcode_to::<T>().map_err(|e| RestError::new(500, "InternalServerErrorException", e.to_string()))?;
        Ok((t, dec.trail))
    }

    /// A Herald message as the Pinpoint structure `shape`.
    fn encode<T: Message>(&self, name: &str, shape: &str, msg: &T) -> Value {
        let d = DynamicMessage::decode(self.rest.descriptor(name), msg.encode_to_vec().as_slice())
            .expect("a message decodes with its own descriptor");
        transcode::encode(Model::get(), shape, &d)
    }

    fn str(&self, member: &str) -> &str {
        self.input.get(member).and_then(Value::as_str).unwrap_or_default()
    }
}

fn out(member: &str, v: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(member.to_string(), v);
    m
}

fn set(v: &mut Value, key: &str, x: Value) {
    if let Value::Object(o) = v {
        o.insert(key.to_string(), x);
    }
}

/// Pinpoint's `MessageBody` answer.
fn accepted(request_id: &str) -> Value {
    json!({ "Message": "Accepted", "RequestID": request_id })
}

macro_rules! call {
    ($trail:expr, $fut:expr) => {
        $fut.await.map_err(|s| RestError::from_status(s, &$trail))?.into_inner()
    };
}

const APP: Part<'static> = To("ApplicationId", "app_id");

fn unsupported(what: impl Into<String>) -> RestError {
    RestError::bad_request(what)
}

/// Listings under an app: Herald's gRPC listings of an unknown app are empty, Pinpoint's are
/// NotFound.
const APP_LISTINGS: [&str; 6] = ["GetCampaigns", "GetSegments", "ListJourneys", "GetCampaignVersions", "GetSegmentVersions", "GetChannels"];

pub async fn dispatch(c: &Call<'_>, op: &str) -> Result<Map<String, Value>, RestError> {
    let s = &c.rest.services;
    if APP_LISTINGS.contains(&op) {
        let (req, t) = c.request::<pb::GetAppRequest>("GetAppRequest", &[APP])?;
        call!(t, s.apps.get_app(Request::new(req)));
    }
    Ok(match op {
        // Apps and their settings.
        "CreateApp" => {
            let (req, t) = c.request::<pb::CreateAppRequest>("CreateAppRequest", &[Merge("CreateApplicationRequest")])?;
            let app = call!(t, s.apps.create_app(Request::new(req)));
            out("ApplicationResponse", app_response(c, &app))
        }
        "GetApp" | "DeleteApp" => {
            let (req, t) = c.request::<pb::GetAppRequest>("GetAppRequest", &[APP])?;
            let app = if op == "GetApp" {
                call!(t, s.apps.get_app(Request::new(req)))
            } else {
                call!(t, s.apps.delete_app(Request::new(pb::DeleteAppRequest { app_id: req.app_id })))
            };
            out("ApplicationResponse", app_response(c, &app))
        }
        "GetApps" => {
            let (req, t) = c.request::<pb::ListAppsRequest>("ListAppsRequest", &[To("PageSize", "page_size"), To("Token", "page_token")])?;
            let list = call!(t, s.apps.list_apps(Request::new(req)));
            let items: Vec<Value> = list.apps.iter().map(|a| app_response(c, a)).collect();
            let mut v = json!({ "Item": items });
            if !list.next_page_token.is_empty() {
                set(&mut v, "NextToken", Value::String(list.next_page_token));
            }
            out("ApplicationsResponse", v)
        }
        "GetApplicationSettings" => {
            let (req, t) = c.request::<pb::GetAppRequest>("GetAppRequest", &[APP])?;
            let app = call!(t, s.apps.get_app(Request::new(req)));
            out("ApplicationSettingsResource", settings_response(c, &app))
        }
        "UpdateApplicationSettings" => {
            let (req, t) = c.request::<pb::UpdateAppSettingsRequest>(
                "UpdateAppSettingsRequest",
                &[APP, To("WriteApplicationSettingsRequest", "settings")],
            )?;
            let app = call!(t, s.apps.update_app_settings(Request::new(req)));
            out("ApplicationSettingsResource", settings_response(c, &app))
        }

        // Endpoints.
        "UpdateEndpoint" => {
            let (req, t) = c.request::<pb::UpdateEndpointRequest>(
                "UpdateEndpointRequest",
                &[APP, To("EndpointId", "endpoint_id"), To("EndpointRequest", "endpoint")],
            )?;
            let e = call!(t, s.endpoints.update_endpoint(Request::new(req)));
            out("MessageBody", accepted(&e.request_id))
        }
        "UpdateEndpointsBatch" => {
            let (req, t) = c.request::<pb::UpdateEndpointsBatchRequest>("UpdateEndpointsBatchRequest", &[APP, Merge("EndpointBatchRequest")])?;
            let r = call!(t, s.endpoints.update_endpoints_batch(Request::new(req)));
            out("MessageBody", accepted(&r.request_id))
        }
        "GetEndpoint" | "DeleteEndpoint" => {
            let (req, t) = c.request::<pb::GetEndpointRequest>("GetEndpointRequest", &[APP, To("EndpointId", "endpoint_id")])?;
            let e = if op == "GetEndpoint" {
                call!(t, s.endpoints.get_endpoint(Request::new(req)))
            } else {
                call!(t, s.endpoints.delete_endpoint(Request::new(pb::DeleteEndpointRequest { app_id: req.app_id, endpoint_id: req.endpoint_id })))
            };
            out("EndpointResponse", c.encode("Endpoint", "EndpointResponse", &e))
        }
        "GetUserEndpoints" | "DeleteUserEndpoints" => {
            let (req, t) = c.request::<pb::GetUserEndpointsRequest>("GetUserEndpointsRequest", &[APP, To("UserId", "user_id")])?;
            let u = if op == "GetUserEndpoints" {
                call!(t, s.endpoints.get_user_endpoints(Request::new(req)))
            } else {
                call!(t, s.endpoints.delete_user_endpoints(Request::new(pb::DeleteUserEndpointsRequest { app_id: req.app_id, user_id: req.user_id })))
            };
            out("EndpointsResponse", c.encode("UserEndpoints", "EndpointsResponse", &u))
        }

        // Segments.
        "CreateSegment" => {
            let (req, t) = c.request::<pb::CreateSegmentRequest>("CreateSegmentRequest", &[APP, Merge("WriteSegmentRequest")])?;
            let seg = call!(t, s.segments.create_segment(Request::new(req)));
            out("SegmentResponse", segment_response(c, &seg))
        }
        "UpdateSegment" => {
            let (req, t) = c.request::<pb::UpdateSegmentRequest>(
                "UpdateSegmentRequest",
                &[APP, To("SegmentId", "segment_id"), Merge("WriteSegmentRequest")],
            )?;
            let seg = call!(t, s.segments.update_segment(Request::new(req)));
            out("SegmentResponse", segment_response(c, &seg))
        }
        "GetSegment" | "GetSegmentVersion" | "DeleteSegment" => {
            let (req, t) =
                c.request::<pb::GetSegmentRequest>("GetSegmentRequest", &[APP, To("SegmentId", "segment_id"), To("Version", "version")])?;
            let seg = if op == "DeleteSegment" {
                call!(t, s.segments.delete_segment(Request::new(pb::DeleteSegmentRequest { app_id: req.app_id, segment_id: req.segment_id })))
            } else {
                call!(t, s.segments.get_segment(Request::new(req)))
            };
            out("SegmentResponse", segment_response(c, &seg))
        }
        "GetSegments" => {
            let (req, t) = c.request::<pb::ListSegmentsRequest>("ListSegmentsRequest", &[APP, To("PageSize", "page_size"), To("Token", "page_token")])?;
            let list = call!(t, s.segments.list_segments(Request::new(req)));
            out("SegmentsResponse", segments_response(c, &list))
        }
        "GetSegmentVersions" => {
            let (req, t) = c.request::<pb::ListSegmentVersionsRequest>(
                "ListSegmentVersionsRequest",
                &[APP, To("SegmentId", "segment_id"), To("PageSize", "page_size"), To("Token", "page_token")],
            )?;
            let list = call!(t, s.segments.list_segment_versions(Request::new(req)));
            out("SegmentsResponse", segments_response(c, &list))
        }

        // Campaigns.
        "CreateCampaign" => {
            let (req, t) = c.request::<pb::CreateCampaignRequest>("CreateCampaignRequest", &[APP, To("WriteCampaignRequest", "campaign")])?;
            let camp = call!(t, s.campaigns.create_campaign(Request::new(req)));
            out("CampaignResponse", campaign_response(c, &camp))
        }
        "UpdateCampaign" => {
            let (req, t) = c.request::<pb::UpdateCampaignRequest>(
                "UpdateCampaignRequest",
                &[APP, To("CampaignId", "campaign_id"), To("WriteCampaignRequest", "campaign")],
            )?;
            let camp = call!(t, s.campaigns.update_campaign(Request::new(req)));
            out("CampaignResponse", campaign_response(c, &camp))
        }
        "GetCampaign" | "GetCampaignVersion" | "DeleteCampaign" => {
            let (req, t) = c.request::<pb::GetCampaignRequest>(
                "GetCampaignRequest",
                &[APP, To("CampaignId", "campaign_id"), To("Version", "version")],
            )?;
            let camp = if op == "DeleteCampaign" {
                call!(t, s.campaigns.delete_campaign(Request::new(pb::DeleteCampaignRequest { app_id: req.app_id, campaign_id: req.campaign_id })))
            } else {
                call!(t, s.campaigns.get_campaign(Request::new(req)))
            };
            out("CampaignResponse", campaign_response(c, &camp))
        }
        "GetCampaigns" => {
            let (req, t) = c.request::<pb::ListCampaignsRequest>("ListCampaignsRequest", &[APP, To("PageSize", "page_size"), To("Token", "page_token")])?;
            let list = call!(t, s.campaigns.list_campaigns(Request::new(req)));
            out("CampaignsResponse", campaigns_response(c, &list))
        }
        "GetCampaignVersions" => {
            let (req, t) = c.request::<pb::ListCampaignVersionsRequest>(
                "ListCampaignVersionsRequest",
                &[APP, To("CampaignId", "campaign_id"), To("PageSize", "page_size"), To("Token", "page_token")],
            )?;
            let list = call!(t, s.campaigns.list_campaign_versions(Request::new(req)));
            out("CampaignsResponse", campaigns_response(c, &list))
        }
        "GetCampaignActivities" => {
            let (req, t) = c.request::<pb::GetCampaignActivitiesRequest>(
                "GetCampaignActivitiesRequest",
                &[APP, To("CampaignId", "campaign_id")],
            )?;
            let app_id = req.app_id.clone();
            let acts = call!(t, s.campaigns.get_campaign_activities(Request::new(req)));
            let items: Vec<Value> = acts
                .activities
                .iter()
                .map(|a| {
                    let mut v = c.encode("Activity", "ActivityResponse", a);
                    set(&mut v, "ApplicationId", Value::String(app_id.clone()));
                    set(&mut v, "TreatmentId", Value::String(a.treatment_id.to_string()));
                    set(&mut v, "TotalEndpointCount", Value::from(a.total_endpoints));
                    set(&mut v, "SuccessfulEndpointCount", Value::from(a.successful));
                    let done = a.state == pb::CampaignState::Completed as i32;
                    if done {
                        set(&mut v, "Result", Value::String(if a.failed.is_empty() { "SUCCESS" } else { "FAIL" }.into()));
                    }
                    let mut metrics = Map::new();
                    for (k, n) in [
                        ("THROTTLED", a.throttled),
                        ("HELD_BY_QUIET_TIME", a.held_by_quiet_time),
                        ("TIMED_OUT", a.timed_out),
                        ("HOLDOUT", a.holdout),
                        ("CAPPED", a.capped),
                        ("FILTERED_BY_HOOK", a.filtered_by_hook),
                    ] {
                        metrics.insert(k.into(), Value::String(n.to_string()));
                    }
                    for (status, n) in &a.failed {
                        metrics.insert(status.clone(), Value::String(n.to_string()));
                    }
                    set(&mut v, "ExecutionMetrics", Value::Object(metrics));
                    v
                })
                .collect();
            out("ActivitiesResponse", json!({ "Item": items }))
        }

        "RemoveAttributes" => {
            let (req, t) = c.request::<pb::RemoveAttributesRequest>(
                "RemoveAttributesRequest",
                &[APP, To("AttributeType", "attribute_type"), Merge("UpdateAttributesRequest")],
            )?;
            let r = call!(t, s.endpoints.remove_attributes(Request::new(req)));
            out("AttributesResource", c.encode("AttributesResource", "AttributesResource", &r))
        }
        "GetInAppMessages" => {
            let (req, t) = c.request::<pb::GetInAppMessagesRequest>("GetInAppMessagesRequest", &[APP, To("EndpointId", "endpoint_id")])?;
            let r = call!(t, s.campaigns.get_in_app_messages(Request::new(req)));
            out("InAppMessagesResponse", c.encode("InAppMessagesResponse", "InAppMessagesResponse", &r))
        }

        // Sending.
        "SendMessages" => {
            let input = email_message_in(c.input, &["MessageRequest", "MessageConfiguration", "EmailMessage"])?;
            let (req, t) = c.request_from::<pb::SendMessagesRequest>("SendMessagesRequest", &[APP, Merge("MessageRequest")], &input)?;
            let r = call!(t, s.messages.send_messages(Request::new(req)));
            out("MessageResponse", c.encode("SendMessagesResponse", "MessageResponse", &r))
        }
        "SendUsersMessages" => {
            let input = email_message_in(c.input, &["SendUsersMessageRequest", "MessageConfiguration", "EmailMessage"])?;
            let (req, t) =
                c.request_from::<pb::SendUsersMessagesRequest>("SendUsersMessagesRequest", &[APP, Merge("SendUsersMessageRequest")], &input)?;
            let r = call!(t, s.messages.send_users_messages(Request::new(req)));
            out("SendUsersMessageResponse", c.encode("SendUsersMessagesResponse", "SendUsersMessageResponse", &r))
        }

        // Events and KPIs.
        "PutEvents" => {
            let (req, t) = c.request::<pb::PutEventsRequest>("PutEventsRequest", &[APP, Merge("EventsRequest")])?;
            let r = call!(t, s.events.put_events(Request::new(req)));
            out("EventsResponse", c.encode("PutEventsResponse", "EventsResponse", &r))
        }
        "GetApplicationDateRangeKpi" => {
            let (req, t) = c.request::<pb::GetApplicationDateRangeKpiRequest>("GetApplicationDateRangeKpiRequest", &kpi_parts(None))?;
            let r = call!(t, s.kpis.get_application_date_range_kpi(Request::new(req)));
            out("ApplicationDateRangeKpiResponse", c.encode("DateRangeKpiResponse", "ApplicationDateRangeKpiResponse", &r))
        }
        "GetCampaignDateRangeKpi" => {
            let (req, t) = c.request::<pb::GetCampaignDateRangeKpiRequest>(
                "GetCampaignDateRangeKpiRequest",
                &kpi_parts(Some(To("CampaignId", "campaign_id"))),
            )?;
            let r = call!(t, s.kpis.get_campaign_date_range_kpi(Request::new(req)));
            out("CampaignDateRangeKpiResponse", c.encode("DateRangeKpiResponse", "CampaignDateRangeKpiResponse", &r))
        }
        "GetJourneyDateRangeKpi" => {
            let (req, t) = c.request::<pb::GetJourneyDateRangeKpiRequest>(
                "GetJourneyDateRangeKpiRequest",
                &kpi_parts(Some(To("JourneyId", "journey_id"))),
            )?;
            let r = call!(t, s.kpis.get_journey_date_range_kpi(Request::new(req)));
            out("JourneyDateRangeKpiResponse", c.encode("DateRangeKpiResponse", "JourneyDateRangeKpiResponse", &r))
        }

        // Tags.
        "TagResource" => {
            let (req, t) = c.request::<pb::TagResourceRequest>("TagResourceRequest", &[To("ResourceArn", "resource_arn"), Merge("TagsModel")])?;
            call!(t, s.tags.tag_resource(Request::new(req)));
            Map::new()
        }
        "UntagResource" => {
            let (req, t) =
                c.request::<pb::UntagResourceRequest>("UntagResourceRequest", &[To("ResourceArn", "resource_arn"), To("TagKeys", "tag_keys")])?;
            call!(t, s.tags.untag_resource(Request::new(req)));
            Map::new()
        }
        "ListTagsForResource" => {
            let (req, t) = c.request::<pb::ListTagsForResourceRequest>("ListTagsForResourceRequest", &[To("ResourceArn", "resource_arn")])?;
            let r = call!(t, s.tags.list_tags_for_resource(Request::new(req)));
            out("TagsModel", json!({ "tags": r.tags }))
        }

        // Channels.
        "GetChannels" => {
            let (req, t) = c.request::<pb::GetChannelRequest>("GetChannelRequest", &[APP])?;
            let r = call!(t, s.channels.get_channels(Request::new(req)));
            let mut channels = Map::new();
            for (name, summary) in &r.channels {
                let mut v = c.encode("ChannelSummary", "ChannelResponse", summary);
                set(&mut v, "Enabled", Value::Bool(summary.enabled));
                set(&mut v, "ApplicationId", Value::String(c.str("ApplicationId").to_string()));
                channels.insert(name.clone(), v);
            }
            out("ChannelsResponse", json!({ "Channels": channels }))
        }
        "UpdateEmailChannel" | "GetEmailChannel" | "DeleteEmailChannel" => {
            let ch = channel_call(c, op, "Email", "EmailChannelRequest", "UpdateEmailChannelRequest").await?;
            out("EmailChannelResponse", ch)
        }
        "UpdateSmsChannel" | "GetSmsChannel" | "DeleteSmsChannel" => {
            let ch = channel_call(c, op, "Sms", "SMSChannelRequest", "UpdateSmsChannelRequest").await?;
            out("SMSChannelResponse", ch)
        }
        "UpdateApnsChannel" | "GetApnsChannel" | "DeleteApnsChannel" => {
            let ch = channel_call(c, op, "Apns", "APNSChannelRequest", "UpdateApnsChannelRequest").await?;
            out("APNSChannelResponse", ch)
        }
        "UpdateGcmChannel" | "GetGcmChannel" | "DeleteGcmChannel" => {
            let ch = channel_call(c, op, "Gcm", "GCMChannelRequest", "UpdateGcmChannelRequest").await?;
            out("GCMChannelResponse", ch)
        }

        // Journeys.
        "CreateJourney" => {
            let (req, t) = c.request::<pb::CreateJourneyRequest>("CreateJourneyRequest", &[APP, To("WriteJourneyRequest", "journey")])?;
            let j = call!(t, s.journeys.create_journey(Request::new(req)));
            out("JourneyResponse", journey_response(c, &j))
        }
        "UpdateJourney" => {
            let (req, t) = c.request::<pb::UpdateJourneyRequest>(
                "UpdateJourneyRequest",
                &[APP, To("JourneyId", "journey_id"), To("WriteJourneyRequest", "journey")],
            )?;
            let j = call!(t, s.journeys.update_journey(Request::new(req)));
            out("JourneyResponse", journey_response(c, &j))
        }
        "GetJourney" | "DeleteJourney" => {
            let (req, t) = c.request::<pb::GetJourneyRequest>("GetJourneyRequest", &[APP, To("JourneyId", "journey_id")])?;
            let j = if op == "GetJourney" {
                call!(t, s.journeys.get_journey(Request::new(req)))
            } else {
                call!(t, s.journeys.delete_journey(Request::new(pb::DeleteJourneyRequest { app_id: req.app_id, journey_id: req.journey_id })))
            };
            out("JourneyResponse", journey_response(c, &j))
        }
        "ListJourneys" => {
            let (req, t) = c.request::<pb::ListJourneysRequest>("ListJourneysRequest", &[APP, To("PageSize", "page_size"), To("Token", "page_token")])?;
            let list = call!(t, s.journeys.list_journeys(Request::new(req)));
            let items: Vec<Value> = list.journeys.iter().map(|j| journey_response(c, j)).collect();
            let mut v = json!({ "Item": items });
            if !list.next_page_token.is_empty() {
                set(&mut v, "NextToken", Value::String(list.next_page_token));
            }
            out("JourneysResponse", v)
        }
        "UpdateJourneyState" => {
            let (req, t) = c.request::<pb::UpdateJourneyStateRequest>(
                "UpdateJourneyStateRequest",
                &[APP, To("JourneyId", "journey_id"), Merge("JourneyStateRequest")],
            )?;
            let j = call!(t, s.journeys.update_journey_state(Request::new(req)));
            out("JourneyResponse", journey_response(c, &j))
        }
        "GetJourneyExecutionMetrics" => {
            let (req, t) = c.request::<pb::GetJourneyExecutionMetricsRequest>(
                "GetJourneyExecutionMetricsRequest",
                &[APP, To("JourneyId", "journey_id")],
            )?;
            let m = call!(t, s.journeys.get_journey_execution_metrics(Request::new(req)));
            out("JourneyExecutionMetricsResponse", c.encode("JourneyExecutionMetrics", "JourneyExecutionMetricsResponse", &m))
        }
        "GetJourneyExecutionActivityMetrics" => {
            let (req, t) = c.request::<pb::GetJourneyExecutionActivityMetricsRequest>(
                "GetJourneyExecutionActivityMetricsRequest",
                &[APP, To("JourneyId", "journey_id"), To("JourneyActivityId", "journey_activity_id")],
            )?;
            let m = call!(t, s.journeys.get_journey_execution_activity_metrics(Request::new(req)));
            out(
                "JourneyExecutionActivityMetricsResponse",
                c.encode("JourneyExecutionActivityMetrics", "JourneyExecutionActivityMetricsResponse", &m),
            )
        }

        "CreateImportJob" | "GetImportJob" | "GetImportJobs" | "GetSegmentImportJobs" | "CreateExportJob" | "GetExportJob" | "GetExportJobs"
        | "GetSegmentExportJobs" => super::jobs::dispatch(c, op).await?,

        // Templates (account level, as in Pinpoint).
        op if op.ends_with("Template") || op == "ListTemplates" || op == "ListTemplateVersions" || op == "UpdateTemplateActiveVersion" => {
            super::templates::dispatch(c, op).await?
        }

        // What needs an AWS service Herald does not replace.
        "CreateRecommenderConfiguration" | "DeleteRecommenderConfiguration" | "GetRecommenderConfiguration" | "GetRecommenderConfigurations"
        | "UpdateRecommenderConfiguration" => {
            return Err(unsupported("Herald has no recommender models (Amazon Personalize); personalize content with endpoint attributes and templates"))
        }
        "PutEventStream" | "GetEventStream" | "DeleteEventStream" => {
            return Err(unsupported(
                "Herald does not write to Kinesis streams or Firehose: its event destinations (Events.CreateEventDestination over gRPC, `herald events destinations`) deliver every event as signed webhooks (Standard Webhooks), and StreamEvents streams them",
            ))
        }
        "SendOTPMessage" | "VerifyOTPMessage" => {
            return Err(unsupported("Herald has no one-time password service; send the code with SendMessages over the SMS or email channel"))
        }
        "PhoneNumberValidate" => return Err(unsupported("Herald has no phone number validation service")),
        "GetJourneyRuns" | "GetJourneyRunExecutionMetrics" | "GetJourneyRunExecutionActivityMetrics" => {
            return Err(unsupported(
                "Herald keeps a journey's metrics across its runs, not per run: GetJourneyExecutionMetrics and GetJourneyExecutionActivityMetrics answer for the journey",
            ))
        }
        op if op.contains("Voice") || op.contains("Adm") || op.contains("Baidu") || op.contains("Voip") || op.contains("ApnsSandbox") => {
            return Err(unsupported("Herald's channels are email, SMS, APNs, FCM (GCM), custom webhooks and in-app; this channel is not one of them"))
        }
        other => {
            return Err(unsupported(format!("{other} is not served over Herald's REST API yet; its gRPC API has the counterpart")))
        }
    })
}

fn kpi_parts(resource: Option<Part<'static>>) -> Vec<Part<'static>> {
    let mut parts = vec![APP, To("KpiName", "kpi_name"), To("StartTime", "start_time"), To("EndTime", "end_time")];
    parts.extend([To("PageSize", "page_size"), To("NextToken", "next_token")]);
    parts.extend(resource);
    parts
}

fn app_response(c: &Call<'_>, app: &pb::App) -> Value {
    let mut v = c.encode("App", "ApplicationResponse", app);
    set(&mut v, "Arn", Value::String(c.arn(&format!("apps/{}", app.app_id))));
    v
}

fn settings_response(c: &Call<'_>, app: &pb::App) -> Value {
    let mut v = c.encode("AppSettings", "ApplicationSettingsResource", &app.settings.clone().unwrap_or_default());
    set(&mut v, "ApplicationId", Value::String(app.app_id.clone()));
    v
}

fn segment_response(c: &Call<'_>, seg: &pb::Segment) -> Value {
    let mut v = c.encode("Segment", "SegmentResponse", seg);
    set(&mut v, "Arn", Value::String(c.arn(&format!("apps/{}/segments/{}", seg.app_id, seg.id))));
    let kind = if seg.segment_type == pb::SegmentType::Import as i32 { "IMPORT" } else { "DIMENSIONAL" };
    set(&mut v, "SegmentType", Value::String(kind.into()));
    v
}

fn segments_response(c: &Call<'_>, list: &pb::ListSegmentsResponse) -> Value {
    let items: Vec<Value> = list.segments.iter().map(|s| segment_response(c, s)).collect();
    let mut v = json!({ "Item": items });
    if !list.next_page_token.is_empty() {
        set(&mut v, "NextToken", Value::String(list.next_page_token.clone()));
    }
    v
}

fn state_name(state: i32) -> String {
    pb::CampaignState::try_from(state)
        .ok()
        .filter(|s| *s != pb::CampaignState::Unspecified)
        .map_or_else(|| "SCHEDULED".to_string(), |s| s.as_str_name().trim_start_matches("CAMPAIGN_STATE_").to_string())
}

fn campaign_response(c: &Call<'_>, camp: &pb::Campaign) -> Value {
    let mut v = c.encode("Campaign", "CampaignResponse", camp);
    set(&mut v, "Arn", Value::String(c.arn(&format!("apps/{}/campaigns/{}", camp.app_id, camp.id))));
    let state = json!({ "CampaignStatus": state_name(camp.state) });
    set(&mut v, "State", state.clone());
    set(&mut v, "DefaultState", state.clone());
    set(&mut v, "SegmentVersion", Value::from(camp.segment_version));
    if let Some(Value::Array(items)) = v.get_mut("AdditionalTreatments") {
        for (item, t) in items.iter_mut().zip(&camp.additional_treatments) {
            set(item, "Id", Value::String(t.id.to_string()));
            set(item, "State", state.clone());
            set(item, "SizePercent", Value::from(t.size_percent));
        }
    }
    v
}

fn campaigns_response(c: &Call<'_>, list: &pb::ListCampaignsResponse) -> Value {
    let items: Vec<Value> = list.campaigns.iter().map(|x| campaign_response(c, x)).collect();
    let mut v = json!({ "Item": items });
    if !list.next_page_token.is_empty() {
        set(&mut v, "NextToken", Value::String(list.next_page_token.clone()));
    }
    v
}

fn journey_response(c: &Call<'_>, j: &pb::Journey) -> Value {
    let mut v = c.encode("Journey", "JourneyResponse", j);
    if let Value::Object(o) = &mut v {
        o.entry("tags").or_insert_with(|| json!({}));
    }
    v
}

/// Pinpoint's nested email (`SimpleEmail {Subject {Data}, HtmlPart {Data}, TextPart {Data}}`,
/// `RawEmail {Data}`) as Herald's flat one.
fn email_message_in(input: &Map<String, Value>, path: &[&str]) -> Result<Map<String, Value>, RestError> {
    let mut input = input.clone();
    let mut at: Option<&mut Value> = input.get_mut(path[0]);
    for key in &path[1..] {
        at = at.and_then(|v| v.get_mut(*key));
    }
    let Some(Value::Object(email)) = at else { return Ok(input) };
    let whole = path.join(".");
    if let Some(Value::Object(simple)) = email.remove("SimpleEmail") {
        for (part, field) in [("Subject", "Subject"), ("HtmlPart", "HtmlPart"), ("TextPart", "TextPart")] {
            if let Some(p) = simple.get(part) {
                if let Some(cs) = p.get("Charset").and_then(Value::as_str) {
                    if !cs.eq_ignore_ascii_case("utf-8") {
                        return Err(RestError::bad_request(format!(
                            "{whole}.SimpleEmail.{part}.Charset must be UTF-8: Herald sends UTF-8"
                        )));
                    }
                }
                if let Some(d) = p.get("Data") {
                    email.insert(field.into(), d.clone());
                }
            }
        }
        if simple.contains_key("Headers") {
            return Err(RestError::bad_request(format!("{whole}.SimpleEmail.Headers: custom email headers are not supported by Herald")));
        }
    }
    if let Some(raw) = email.remove("RawEmail") {
        if let Some(d) = raw.get("Data").and_then(Value::as_str) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(d)
                .map_err(|_| RestError::bad_request(format!("{whole}.RawEmail.Data must be base64")))?;
            let text =
                String::from_utf8(bytes).map_err(|_| RestError::bad_request(format!("{whole}.RawEmail.Data must be a MIME message")))?;
            email.insert("RawMessage".into(), Value::String(text));
        }
    }
    Ok(input)
}

/// Update, Get or Delete of one channel (`kind` is Email, Sms, Apns or Gcm).
async fn channel_call(c: &Call<'_>, op: &str, kind: &str, write_member: &str, update_request: &str) -> Result<Value, RestError> {
    let s = &c.rest.services.channels;
    let platform = match kind {
        "Email" => "EMAIL",
        "Sms" => "SMS",
        "Apns" => "APNS",
        _ => "GCM",
    };
    let mut input = c.input.clone();
    if let Some(Value::Object(w)) = input.get_mut(write_member) {
        match kind {
            "Gcm" => match w.remove("DefaultAuthenticationMethod").as_ref().and_then(Value::as_str) {
                None | Some("TOKEN") => {}
                Some(other) => {
                    return Err(RestError::bad_request(format!(
                        "{write_member}.DefaultAuthenticationMethod {other}: FCM is reached with a service account (TOKEN) only"
                    )))
                }
            },
            // Pinpoint names an SES identity by its ARN; Herald by the domain or address it is.
            "Email" => {
                if let Some(Value::String(id)) = w.get_mut("Identity") {
                    if let Some(rest) = id.strip_prefix("arn:").filter(|r| r.contains(":ses:")) {
                        if let Some((_, name)) = rest.split_once(":identity/") {
                            *id = name.to_string();
                        }
                    }
                }
            }
            "Sms" => {
                if let Some(code) = w.remove("ShortCode") {
                    w.insert("OriginationNumbers".into(), Value::Array(vec![code]));
                }
            }
            _ => {}
        }
    }
    let get = || pb::GetChannelRequest { app_id: c.str("ApplicationId").to_string() };
    let t = Trail::default();
    macro_rules! channel {
        ($upd:ident, $get:ident, $del:ident, $req:ty, $msg:literal) => {{
            let ch = if op.starts_with("Update") {
                let (mut req, t) = c.request_from::<$req>(update_request, &[APP, To(write_member, "channel")], &input)?;
                // Pinpoint's request carries fewer settings than Herald's channel (the relay,
                // the SMS provider): what it does not give is kept.
                if let Ok(old) = s.$get(Request::new(get())).await {
                    let enabled = input.get(write_member).and_then(|w| w.get("Enabled")).and_then(Value::as_bool);
                    let mut merged = overlay(c, $msg, &old.into_inner(), &req.channel.take().unwrap_or_default());
                    if let Some(e) = enabled {
                        merged.enabled = e;
                    }
                    req.channel = Some(merged);
                }
                call!(t, s.$upd(Request::new(req)))
            } else if op.starts_with("Get") {
                call!(t, s.$get(Request::new(get())))
            } else {
                call!(t, s.$del(Request::new(get())))
            };
            (c.encode($msg, &format!("{}ChannelResponse", shape_prefix(kind)), &ch), ch.enabled, ch.last_modified_date.clone())
        }};
    }
    let (mut v, enabled, modified) = match kind {
        "Email" => channel!(update_email_channel, get_email_channel, delete_email_channel, pb::UpdateEmailChannelRequest, "EmailChannel"),
        "Sms" => channel!(update_sms_channel, get_sms_channel, delete_sms_channel, pb::UpdateSmsChannelRequest, "SmsChannel"),
        "Apns" => channel!(update_apns_channel, get_apns_channel, delete_apns_channel, pb::UpdateApnsChannelRequest, "ApnsChannel"),
        _ => channel!(update_gcm_channel, get_gcm_channel, delete_gcm_channel, pb::UpdateGcmChannelRequest, "GcmChannel"),
    };
    set(&mut v, "ApplicationId", Value::String(c.str("ApplicationId").to_string()));
    set(&mut v, "Platform", Value::String(platform.into()));
    set(&mut v, "Enabled", Value::Bool(enabled));
    if !modified.is_empty() {
        set(&mut v, "LastModifiedDate", Value::String(modified));
    }
    Ok(v)
}

/// `old` with every field `new` sets.
fn overlay<T: Message + Default>(c: &Call<'_>, name: &str, old: &T, new: &T) -> T {
    let desc = c.rest.descriptor(name);
    let mut merged = DynamicMessage::decode(desc.clone(), old.encode_to_vec().as_slice()).expect("a channel decodes");
    let fresh = DynamicMessage::decode(desc, new.encode_to_vec().as_slice()).expect("a channel decodes");
    for (f, v) in fresh.fields() {
        merged.set_field(&f, v.clone());
    }
    merged.transcode_to::<T>().expect("a channel encodes")
}

fn shape_prefix(kind: &str) -> &'static str {
    match kind {
        "Email" => "Email",
        "Sms" => "SMS",
        "Apns" => "APNS",
        _ => "GCM",
    }
}
