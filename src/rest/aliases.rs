//! Where a Pinpoint member's name is not its Herald field's name in snake case, and the
//! members Herald refuses (each with why, and what to use instead). Everything not listed
//! maps by name.

pub enum Alias {
    /// `snake_case(member)`.
    Same,
    Field(&'static str),
    Refused(&'static str),
    /// The member's own members belong to this message (`MessageConfig` of a journey's
    /// message activity).
    Flatten,
}

const NO_IAM: &str = "Herald uses no IAM role: remove it";
const NO_RECOMMENDER: &str = "Herald has no recommender models (Amazon Personalize): remove it";

pub fn alias(shape: &str, member: &str) -> Alias {
    use Alias::*;
    match (shape, member) {
        // Herald's resources name their app `app_id`; endpoints keep Pinpoint's name.
        ("EndpointResponse" | "EndpointRequest" | "EndpointBatchItem" | "PublicEndpoint", _) => endpoint(member),
        (_, "ApplicationId") => Field("app_id"),
        ("ApplicationResponse", "Id") => Field("app_id"),
        ("ApplicationsResponse" | "SegmentsResponse" | "CampaignsResponse" | "TemplatesResponse" | "TemplateVersionsResponse", "NextToken") => {
            Field("next_page_token")
        }
        ("ApplicationsResponse", "Item") => Field("apps"),
        ("SegmentsResponse", "Item") => Field("segments"),
        ("CampaignsResponse", "Item") => Field("campaigns"),
        ("TemplatesResponse", "Item") => Field("templates"),
        ("TemplateVersionsResponse", "Item") => Field("versions"),
        ("ActivitiesResponse", "Item") => Field("activities"),
        ("JourneysResponse", "Item") => Field("journeys"),
        ("EndpointsResponse" | "EndpointBatchRequest", "Item") => Field("endpoints"),
        // Journeys: Herald keeps a message activity's settings on the activity.
        ("EmailMessageActivity" | "SMSMessageActivity" | "PushMessageActivity" | "CustomMessageActivity", "MessageConfig") => Flatten,
        ("WriteJourneyRequest", "CreationDate" | "LastModifiedDate") => Refused("is set by Herald"),
        // Campaigns.
        ("WriteCampaignRequest" | "CampaignResponse" | "WriteTreatmentResource" | "TreatmentResource", "State" | "DefaultState") => {
            Refused("is set by Herald")
        }
        ("CampaignEmailMessage", "Title") => Field("subject"),
        ("CampaignEmailMessage", "HtmlBody") => Field("html_part"),
        ("CampaignEmailMessage", "Body") => Field("text_part"),
        ("CampaignEmailMessage" | "SimpleEmail" | "EmailTemplateRequest" | "EmailTemplateResponse", "Headers") => {
            Refused("custom email headers are not supported by Herald")
        }
        ("MessageConfiguration", "DefaultMessage") => Field("default_push_notification_message"),
        ("Message", "ImageUrl") => Field("image_url"),
        ("Message", "MediaUrl") => Field("media_url"),
        ("ActivityResponse", "TotalEndpointCount") => Field("total_endpoints"),
        ("ActivityResponse", "SuccessfulEndpointCount") => Field("successful"),
        ("ActivityResponse", "ScheduledStart") => Field("scheduled_start"),
        ("CampaignSmsMessage" | "SMSMessage" | "SMSMessageActivity", "EntityId" | "TemplateId") => {
            Refused("India DLT registration ids are not supported by Herald")
        }
        // SendMessages.
        ("DirectMessageConfiguration", "DefaultMessage") => Refused("give the channel's own message block (EmailMessage, SMSMessage…)"),
        ("DirectMessageConfiguration", "ADMMessage" | "BaiduMessage") => Refused("Herald has no ADM or Baidu channel"),
        ("DirectMessageConfiguration", "VoiceMessage") => Refused("Herald has no voice channel"),
        ("EmailMessage", "Body") => Field("text_part"),
        ("EmailMessage", "FeedbackForwardingAddress") => Refused("Herald records bounces and complaints as events; remove it"),
        ("MessageResponse", "Result") => Field("result"),
        // Templates.
        (_, "TemplateDescription") => Field("description"),
        (_, "RecommenderId") => Refused(NO_RECOMMENDER),
        ("APNSPushNotificationTemplate" | "AndroidPushNotificationTemplate" | "DefaultPushNotificationTemplate", "MediaUrl" | "ImageUrl") => {
            Field("image_url")
        }
        // Channels.
        ("EmailChannelRequest", "RoleArn" | "OrchestrationSendingRoleArn") => Refused(NO_IAM),
        ("EmailChannelRequest", "ConfigurationSet") => Refused("Herald has no SES configuration sets; event destinations publish its events"),
        ("GCMChannelRequest", "ServiceJson") => Field("service_account_json"),
        ("GCMChannelRequest", "ApiKey") => Refused(
            "Google shut down FCM's legacy API (server keys) in 2024: give ServiceJson, a service account's JSON key, with DefaultAuthenticationMethod TOKEN",
        ),
        ("WriteApplicationSettingsRequest", "CloudWatchMetricsEnabled") => {
            Refused("Herald publishes its metrics for Prometheus at /metrics; there is no CloudWatch")
        }
        ("WriteApplicationSettingsRequest", "EventTaggingEnabled") => Refused("is not supported by Herald"),
        _ => Same,
    }
}

fn endpoint(member: &str) -> Alias {
    match member {
        "ApplicationId" => Alias::Field("application_id"),
        _ => Alias::Same,
    }
}
