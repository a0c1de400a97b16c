//! What a send renders, prepared once per request or campaign run: the compiled templates of
//! each channel (stored, or a message's inline parts), the sender, and the substitutions every
//! recipient shares; then one payload per recipient: the parts are rendered here, the
//! provider's payload is built by its channel (`channels::<name>`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::channels::webhook;
use crate::channels::{Lane, Payload};
use crate::domain::FieldViolation;
use crate::proto::v1::{
    template::Content, ApnsMessage, AttributeValues, ChannelType, CustomTemplate, DefaultPushNotificationMessage,
    DirectMessageConfiguration, EmailTemplate, Endpoint, GcmMessage, MessageOutcome, PushBlock, PushTemplate, SmsMessage, SmsTemplate,
    Template, TemplateConfiguration, TemplateReference, TemplateType,
};
use crate::render::mime;
use crate::render::template::{CompiledTemplate, TemplateCache};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("{}: {}", .0.field, .0.description)]
    Field(FieldViolation),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Each channel's message substitutions, in Pinpoint's order: a push platform's block over
/// the default push block.
fn lane_substitutions(config: &DirectMessageConfiguration) -> HashMap<Lane, HashMap<String, Vec<String>>> {
    let mut out = HashMap::new();
    if let Some(m) = &config.email_message {
        out.insert(Lane::Email, substitutions(&m.substitutions));
    }
    if let Some(m) = &config.sms_message {
        out.insert(Lane::Sms, substitutions(&m.substitutions));
    }
    let default = config.default_push_notification_message.as_ref().map(|d| substitutions(&d.substitutions)).unwrap_or_default();
    let mut apns = default.clone();
    apns.extend(config.apns_message.as_ref().map(|a| substitutions(&a.substitutions)).unwrap_or_default());
    let mut gcm = default;
    gcm.extend(config.gcm_message.as_ref().map(|g| substitutions(&g.substitutions)).unwrap_or_default());
    out.insert(Lane::Apns, apns);
    out.insert(Lane::Gcm, gcm);
    out.retain(|_, s| !s.is_empty());
    out
}

/// The From header of a raw message (unfolded), if its header has one.
fn raw_from(raw: &str) -> Option<String> {
    let header = raw.split("\r\n\r\n").next()?.split("\n\n").next()?;
    let mut lines = header.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("from") {
                let mut v = value.trim().to_string();
                while let Some(next) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
                    v.push(' ');
                    v.push_str(next.trim());
                }
                return Some(v);
            }
        }
    }
    None
}

/// Why one recipient's message cannot be made; its outcome's status message.
#[derive(Debug, thiserror::Error)]
pub enum Unbuildable {
    /// The send gives no content (or no sender) for this recipient's channel.
    #[error("{0}")]
    NoContent(&'static str),
    #[error("{0}")]
    Render(#[from] crate::render::template::PartFailure),
    #[error("the SMS body rendered empty")]
    EmptySms,
    #[error("{0}")]
    Mime(#[from] crate::render::mime::MimeError),
    #[error("{0}")]
    Apns(#[from] crate::channels::apns::ApnsError),
    #[error("{0}")]
    Fcm(#[from] crate::channels::fcm::FcmError),
}

impl Unbuildable {
    /// Whether the content failed for this recipient (a `.rendering_failure` event), rather
    /// than the send lacking content for the channel.
    pub fn is_rendering(&self) -> bool {
        !matches!(self, Unbuildable::NoContent(_))
    }
}

fn field(f: &str, why: impl std::fmt::Display) -> ComposeError {
    ComposeError::Field(FieldViolation::new(f, why))
}

pub fn substitutions(map: &HashMap<String, AttributeValues>) -> HashMap<String, Vec<String>> {
    map.iter().map(|(k, v)| (k.clone(), v.values.clone())).collect()
}

pub use crate::channels::webhook::Origin;

/// A recipient's own content over what its message renders (SendMessages' BodyOverride,
/// TitleOverride and RawContent): for push, the title and body replace the rendered ones and
/// raw content replaces the whole payload; for SMS, the body replaces the text. Email and
/// custom messages take none (SendMessages refuses them there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub title: String,
    pub body: String,
    pub raw_content: String,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.title.is_empty() && self.body.is_empty() && self.raw_content.is_empty()
    }
}

/// What a send does for engagement in its emails: open and click tracking (links rewritten,
/// an open pixel) and Herald's one-click unsubscribe (List-Unsubscribe and the template
/// variable `{{Herald.UnsubscribeUrl}}`). Both need the public listener's signed links.
#[derive(Clone, Default)]
pub struct Tracking {
    pub links: Option<Arc<crate::tracking::Links>>,
    pub track: bool,
    pub unsubscribe: bool,
}

impl Tracking {
    /// Neither tracking nor unsubscribe links.
    pub fn off() -> Self {
        Self::default()
    }

    fn active(&self) -> Option<&crate::tracking::Links> {
        self.links.as_deref().filter(|_| self.track || self.unsubscribe)
    }
}

pub struct Composer {
    cache: Arc<TemplateCache>,
    email: Option<Arc<CompiledTemplate>>,
    custom: Option<Arc<CompiledTemplate>>,
    /// Push content (a push template, or the message's default and APNs blocks) and the
    /// APNs options that are not templated.
    push: Option<Arc<CompiledTemplate>>,
    apns: ApnsMessage,
    gcm: GcmMessage,
    default_push: DefaultPushNotificationMessage,
    /// SMS content (a template or the message's body) and the SMS message's options.
    sms: Option<Arc<CompiledTemplate>>,
    sms_message: SmsMessage,
    raw_email: Option<String>,
    sender: Option<mime::Sender>,
    /// The envelope sender: the from address without its display name.
    from: String,
    /// Each channel's message substitutions (its block's; for push the default block's, then
    /// the platform block's over them), under each recipient's.
    substitutions: HashMap<Lane, HashMap<String, Vec<String>>>,
    tracking: Tracking,
}

async fn stored(
    store: &dyn Store,
    cache: &TemplateCache,
    app: &str,
    r: &TemplateReference,
    f: &str,
) -> Result<Arc<CompiledTemplate>, ComposeError> {
    let version = (r.version > 0).then_some(r.version);
    // The slot says which kind of account template may stand in for the app's own.
    let kind = match f.rsplit('.').next() {
        Some("sms_template") => TemplateType::Sms,
        Some("push_template") => TemplateType::Push,
        Some("in_app_template") => TemplateType::InApp,
        Some("email_template") => TemplateType::Email,
        _ => TemplateType::Unspecified,
    };
    let t = crate::store::find_template(store, app, &r.name, version, kind)
        .await?
        .ok_or_else(|| field(f, format!("template '{}' (version {}) not found", r.name, r.version)))?;
    cache.get(&t).map_err(|e| field(f, format!("does not compile: {e}")))
}

fn inline(cache: &TemplateCache, content: Content, f: &str) -> Result<Arc<CompiledTemplate>, ComposeError> {
    let t = Template { name: "inline".into(), content: Some(content), ..Default::default() };
    let bad = crate::render::template::validate(cache.renderer(), &t).into_iter().find(|v| v.field != "name");
    if let Some(v) = bad {
        return Err(ComposeError::Field(v.under(f)));
    }
    CompiledTemplate::compile(cache.renderer(), &t).map(Arc::new).map_err(|e| field(f, e.to_string()))
}

impl Composer {
    /// Compiles what `config` and `templates` name for `app`.
    pub async fn build(
        store: &dyn Store,
        cache: Arc<TemplateCache>,
        app: &str,
        config: &DirectMessageConfiguration,
        templates: &TemplateConfiguration,
        tracking: Tracking,
    ) -> Result<Self, ComposeError> {
        if config.sms_message.as_ref().is_some_and(|m| !m.keyword.is_empty()) {
            return Err(field(
                "message_configuration.sms_message.keyword",
                "a program keyword registered with AWS is not sent by Herald's SMS providers; leave it empty",
            ));
        }
        let email_msg = config.email_message.clone();
        let email = match (&templates.email_template, &email_msg) {
            (Some(r), _) if !r.name.is_empty() => Some(stored(store, &cache, app, r, "template_configuration.email_template").await?),
            (_, Some(m)) if m.raw_message.is_empty() && (!m.subject.is_empty() || !m.html_part.is_empty() || !m.text_part.is_empty()) => {
                Some(inline(
                    &cache,
                    Content::Email(EmailTemplate {
                        subject: m.subject.clone(),
                        html_part: m.html_part.clone(),
                        text_part: m.text_part.clone(),
                        ..Default::default()
                    }),
                    "message_configuration.email_message",
                )?)
            }
            _ => None,
        };
        let custom = match (&templates.custom_template, &config.custom_message) {
            (Some(r), _) if !r.name.is_empty() => Some(stored(store, &cache, app, r, "template_configuration.custom_template").await?),
            (_, Some(m)) => Some(inline(
                &cache,
                Content::Custom(CustomTemplate { payload: m.data.clone() }),
                "message_configuration.custom_message.data",
            )?),
            _ => None,
        };
        let default_push = config.default_push_notification_message.clone().unwrap_or_default();
        let apns = config.apns_message.clone().unwrap_or_default();
        let gcm = config.gcm_message.clone().unwrap_or_default();
        let push = match (&templates.push_template, &config.default_push_notification_message, &config.apns_message, &config.gcm_message) {
            (Some(r), _, _, _) if !r.name.is_empty() => Some(stored(store, &cache, app, r, "template_configuration.push_template").await?),
            (_, None, None, None) => None,
            (_, d, a, g) => {
                let default = d.as_ref().map(|d| PushBlock {
                    title: d.title.clone(),
                    body: d.body.clone(),
                    url: d.url.clone(),
                    ..Default::default()
                });
                let apns_block = a.as_ref().map(|a| PushBlock {
                    title: a.title.clone(),
                    body: a.body.clone(),
                    sound: a.sound.clone(),
                    url: a.url.clone(),
                    image_url: a.media_url.clone(),
                    raw_content: a.raw_content.clone(),
                    ..Default::default()
                });
                let gcm_block = g.as_ref().map(|g| PushBlock {
                    title: g.title.clone(),
                    body: g.body.clone(),
                    sound: g.sound.clone(),
                    url: g.url.clone(),
                    image_url: g.image_url.clone(),
                    raw_content: g.raw_content.clone(),
                    ..Default::default()
                });
                let content = Content::Push(PushTemplate { default, apns: apns_block, gcm: gcm_block });
                Some(inline(&cache, content, "message_configuration.default_push_notification_message")?)
            }
        };
        let sms_message = config.sms_message.clone().unwrap_or_default();
        let sms = match (&templates.sms_template, &config.sms_message) {
            (Some(r), _) if !r.name.is_empty() => Some(stored(store, &cache, app, r, "template_configuration.sms_template").await?),
            (_, Some(m)) if !m.body.is_empty() => {
                Some(inline(&cache, Content::Sms(SmsTemplate { body: m.body.clone() }), "message_configuration.sms_message")?)
            }
            _ => None,
        };
        // The sender: the message's from_address, else the app's email channel's (as Pinpoint),
        // within the channel's sending identity when it has one.
        let mut from_address = email_msg.as_ref().map(|m| m.from_address.clone()).unwrap_or_default();
        let mut identity = String::new();
        if email.is_some() || email_msg.is_some() {
            if let Some(raw) = store.get_channel(app, crate::api::channels::EMAIL).await? {
                use prost::Message as _;
                if let Ok(c) = crate::proto::v1::EmailChannel::decode(raw.as_slice()) {
                    if from_address.is_empty() {
                        from_address = c.from_address;
                    }
                    identity = c.identity;
                }
            }
        }
        // A raw message with no sender given is from its own From header (as SES takes it).
        let raw = email_msg.as_ref().map(|m| m.raw_message.as_str()).filter(|r| !r.is_empty());
        if let (true, Some(raw)) = (from_address.is_empty(), raw) {
            from_address = raw_from(raw).unwrap_or_default();
        }
        let reply_to = email_msg.as_ref().map(|m| m.reply_to_addresses.clone()).unwrap_or_default();
        let sender = if from_address.is_empty() {
            None
        } else {
            let from_field = "message_configuration.email_message.from_address";
            let sender = mime::Sender::new(&from_address, &reply_to).map_err(|e| field(from_field, e.to_string()))?;
            if !identity.is_empty() && !crate::channels::settings::identity_covers(&identity, sender.address()) {
                return Err(field(from_field, format!("{} is not within the app's sending identity {identity}", sender.address())));
            }
            Some(sender)
        };
        let from = from_address.rsplit_once('<').map_or(from_address.as_str(), |(_, a)| a.trim_end_matches('>')).trim().to_string();
        Ok(Self {
            cache,
            email,
            custom,
            push,
            apns,
            gcm,
            default_push,
            sms,
            sms_message,
            raw_email: email_msg.as_ref().map(|m| m.raw_message.clone()).filter(|r| !r.is_empty()),
            sender,
            from,
            substitutions: lane_substitutions(config),
            tracking,
        })
    }

    /// The substitutions a message on `lane` is rendered with before the recipient's own.
    pub fn substitutions_for(&self, lane: Lane) -> &HashMap<String, Vec<String>> {
        static NONE: std::sync::LazyLock<HashMap<String, Vec<String>>> = std::sync::LazyLock::new(HashMap::new);
        self.substitutions.get(&lane).unwrap_or(&NONE)
    }

    /// The lanes this composer has content for.
    pub fn lanes(&self) -> Vec<Lane> {
        let mut out = Vec::new();
        if self.email.is_some() || self.raw_email.is_some() {
            out.push(Lane::Email);
        }
        if self.custom.is_some() {
            out.push(Lane::Custom);
        }
        if self.push.is_some() {
            out.push(Lane::Apns);
            out.push(Lane::Gcm);
        }
        if self.sms.is_some() {
            out.push(Lane::Sms);
        }
        out
    }

    /// The push content rendered for one recipient, by part (`title`, `body`...): the
    /// `platform` block's non-empty parts, else the default block's.
    fn push_parts(
        &self,
        platform: &str,
        endpoint: Option<&Endpoint>,
        subs: &HashMap<String, Vec<String>>,
        overrides: &Overrides,
    ) -> Result<HashMap<String, String>, Unbuildable> {
        let t = self.push.as_ref().ok_or(Unbuildable::NoContent("no push content: give a push template or a push message"))?;
        let ctx = t.context(endpoint, subs);
        let mut out = HashMap::new();
        for (name, text) in t.render(self.cache.renderer(), &ctx)? {
            let Some((block, part)) = name.split_once('.').filter(|_| !text.is_empty()) else { continue };
            if block == platform {
                out.insert(part.to_string(), text);
            } else if block == "default" {
                out.entry(part.to_string()).or_insert(text);
            }
        }
        for (part, own) in [("title", &overrides.title), ("body", &overrides.body), ("raw_content", &overrides.raw_content)] {
            if !own.is_empty() {
                out.insert(part.to_string(), own.clone());
            }
        }
        Ok(out)
    }

    /// An FCM message for a device token, from the rendered push parts.
    fn gcm_payload(
        &self,
        endpoint: Option<&Endpoint>,
        token: &str,
        subs: &HashMap<String, Vec<String>>,
        context: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Payload, Unbuildable> {
        let parts = self.push_parts("gcm", endpoint, subs, overrides)?;
        let ios = endpoint.and_then(|e| e.demographic.as_ref()).is_some_and(|d| d.platform.eq_ignore_ascii_case("ios"));
        crate::channels::fcm::message(&parts, &self.gcm, &self.default_push, ios, token, context)
            .map(Payload::Gcm)
            .map_err(Unbuildable::from)
    }

    /// An APNs notification for a device token (`channel` says sandbox and VOIP), from the
    /// rendered push parts.
    fn apns_payload(
        &self,
        channel: ChannelType,
        endpoint: Option<&Endpoint>,
        token: &str,
        subs: &HashMap<String, Vec<String>>,
        context: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Payload, Unbuildable> {
        let parts = self.push_parts("apns", endpoint, subs, overrides)?;
        let kind = crate::channels::apns::Kind {
            sandbox: matches!(channel, ChannelType::ApnsSandbox | ChannelType::ApnsVoipSandbox),
            voip: matches!(channel, ChannelType::ApnsVoip | ChannelType::ApnsVoipSandbox),
        };
        crate::channels::apns::push(&parts, &self.apns, &self.default_push, kind, token, context)
            .map(Payload::Apns)
            .map_err(Unbuildable::from)
    }

    /// One templated email: rendered, then (when the send asks) its links made trackable, the
    /// open pixel added and Herald's unsubscribe URL offered to the template and the headers.
    fn email(
        &self,
        t: &CompiledTemplate,
        sender: &mime::Sender,
        endpoint: Option<&Endpoint>,
        subs: &HashMap<String, Vec<String>>,
        origin: &Origin,
        outcome: &MessageOutcome,
    ) -> Result<Payload, Unbuildable> {
        let mut ctx = t.context(endpoint, subs);
        let links = self.tracking.active().map(|l| {
            let m = crate::tracking::MessageRef {
                app_id: origin.app_id.clone(),
                message_id: outcome.message_id.clone(),
                endpoint_id: outcome.endpoint_id.clone(),
                campaign_id: origin.campaign_id.clone(),
                treatment_id: origin.treatment_id.map_or(0, |t| t as i32),
                campaign_activity_id: origin.activity_id.clone(),
                journey_id: outcome.journey_id.clone(),
                journey_activity_id: outcome.journey_activity_id.clone(),
            };
            l.message(&m, chrono::Utc::now().timestamp().max(0) as u64)
        });
        let unsubscribe =
            links.as_ref().filter(|_| self.tracking.unsubscribe && !outcome.endpoint_id.is_empty()).map(|l| l.unsubscribe_url());
        if let (Some(url), Some(root)) = (&unsubscribe, ctx.as_object_mut()) {
            root.insert("Herald".into(), serde_json::json!({ "UnsubscribeUrl": url }));
        }
        let parts = t.render(self.cache.renderer(), &ctx)?;
        let part = |n: &str| parts.iter().find(|(p, _)| p == n).map(|(_, s)| s.as_str()).filter(|s| !s.is_empty());
        // The template's own unsubscribe URL is kept as given; Herald's is the default.
        let list_unsubscribe = part("list_unsubscribe_url").or(unsubscribe.as_deref());
        let html = match (part("html_part"), &links) {
            (Some(h), Some(l)) if self.tracking.track => {
                let keep: Vec<&str> = part("list_unsubscribe_url").into_iter().collect();
                Some(std::borrow::Cow::Owned(crate::tracking::rewrite::Rewrite { links: l, keep: &keep, open_pixel: true }.apply(h)))
            }
            (h, _) => h.map(std::borrow::Cow::Borrowed),
        };
        // A rewritten part is this recipient's alone; a rendered one may be every recipient's.
        let shared = !matches!(html, Some(std::borrow::Cow::Owned(_)));
        sender
            .message_with(
                &outcome.address,
                part("subject").unwrap_or(""),
                part("text_part"),
                html.as_deref(),
                list_unsubscribe,
                Some(&outcome.message_id),
                shared,
            )
            .map(|mime| Payload::Email { from: self.from.clone(), mime })
            .map_err(Unbuildable::from)
    }

    /// One recipient's payload, or why it cannot be made: to the outcome's address, with its
    /// message id; its Context (the sender's) goes into push payloads' `data.pinpoint`; its
    /// own content (`overrides`) over what was rendered.
    #[allow(clippy::too_many_arguments)]
    pub fn payload(
        &self,
        lane: Lane,
        channel: ChannelType,
        endpoint: Option<&Endpoint>,
        subs: &HashMap<String, Vec<String>>,
        origin: &Origin,
        outcome: &MessageOutcome,
        overrides: &Overrides,
    ) -> Result<Payload, Unbuildable> {
        let (address, context) = (outcome.address.as_str(), &outcome.context);
        match lane {
            Lane::Apns => self.apns_payload(channel, endpoint, address, subs, context, overrides),
            Lane::Gcm => self.gcm_payload(endpoint, address, subs, context, overrides),
            Lane::Sms => {
                let t = self.sms.as_ref().ok_or(Unbuildable::NoContent("no SMS content: give an SMS template or sms_message.body"))?;
                let ctx = t.context(endpoint, subs);
                let parts = t.render(self.cache.renderer(), &ctx)?;
                let body = parts.into_iter().next().map(|(_, s)| s).unwrap_or_default();
                let body = if overrides.body.is_empty() { body } else { overrides.body.clone() };
                if body.is_empty() {
                    return Err(Unbuildable::EmptySms);
                }
                Ok(Payload::Sms(crate::channels::sms::Text::new(address, body, &self.sms_message)))
            }
            Lane::Email => match (&self.raw_email, &self.email, &self.sender) {
                (_, _, None) => Err(Unbuildable::NoContent("no from_address in message_configuration.email_message")),
                (Some(raw), _, Some(_)) => Ok(Payload::Email { from: self.from.clone(), mime: raw.as_bytes().to_vec() }),
                (None, Some(t), Some(sender)) => self.email(t, sender, endpoint, subs, origin, outcome),
                (None, None, Some(_)) => Err(Unbuildable::NoContent("no email content: give a template or a message")),
            },
            Lane::Custom => {
                let t = self.custom.as_ref().ok_or(Unbuildable::NoContent("no custom content: give a template or custom_message"))?;
                let ctx = t.context(endpoint, subs);
                let parts = t.render(self.cache.renderer(), &ctx)?;
                let data = parts.into_iter().next().map(|(_, s)| s).unwrap_or_default();
                let mut body = webhook::Payload::new(data, origin, endpoint);
                body.context = context.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                Ok(Payload::Custom { body })
            }
        }
    }
}
