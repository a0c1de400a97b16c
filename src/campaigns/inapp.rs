//! In-app campaigns (Pinpoint's in-app messaging, as Amplify apps use it): a campaign whose
//! content is an `in_app_message` and whose frequency is IN_APP_EVENT sends nothing itself.
//! The app asks GetInAppMessages for an endpoint and gets every such campaign it should show
//! now — running (not paused, started, not ended), the endpoint in its segment and not in its
//! holdout, the treatment its cohort falls in — most important first (priority 1 to 5), each
//! with the event filter, the session, daily and total caps and the quiet time the app applies
//! when it shows the message, as Pinpoint's SDKs do. Displays, clicks and dismissals come back
//! through PutEvents (`_inapp.message_displayed`, `_inapp.message_clicked`,
//! `_inapp.message_dismissed` with the campaign_id and treatment_id attributes) and count in
//! the campaign's KPIs.
//!
//! Stateless: a read of the campaigns, the endpoint and the segments; SIGTERM, kill -9 or a
//! store outage only fail the calls in flight (UNAVAILABLE while the store is away).

use std::sync::Arc;

use prost::Message as _;

use crate::domain::FieldViolation;
use crate::proto::v1::{
    ButtonAction, Campaign, EndpointStatus, Frequency, InAppAlignment, InAppCampaignSchedule, InAppLayout, InAppMessage,
    InAppMessageButton, InAppMessageCampaign, OptOut,
};
use crate::segments::{self, MemberStream, SegmentError};
use crate::store::{Store, StoreError};

/// Contents of a message (a carousel's; other layouts take one).
pub const MAX_CAROUSEL: usize = 5;

fn color(v: &mut Vec<FieldViolation>, field: String, c: &str) {
    let hex = c.len() == 7 && c.starts_with('#') && c[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if !c.is_empty() && !hex {
        v.push(FieldViolation::new(field, "must be a #RRGGBB colour"));
    }
}

fn button(v: &mut Vec<FieldViolation>, field: &str, b: &InAppMessageButton) {
    let link_needed = |a: i32| matches!(ButtonAction::try_from(a), Ok(ButtonAction::Link | ButtonAction::DeepLink));
    let action = |v: &mut Vec<FieldViolation>, f: String, a: i32, link: &str| {
        if ButtonAction::try_from(a).is_err() {
            v.push(FieldViolation::new(format!("{f}.button_action"), "must be LINK, DEEP_LINK or CLOSE"));
        } else if link_needed(a) && link.is_empty() {
            v.push(FieldViolation::new(format!("{f}.link"), "a LINK or DEEP_LINK button needs its link"));
        }
    };
    match &b.default_config {
        Some(d) => {
            if d.text.is_empty() {
                v.push(FieldViolation::new(format!("{field}.default_config.text"), "is required"));
            }
            if d.button_action == ButtonAction::Unspecified as i32 {
                v.push(FieldViolation::new(format!("{field}.default_config.button_action"), "is required"));
            }
            action(v, format!("{field}.default_config"), d.button_action, &d.link);
            color(v, format!("{field}.default_config.background_color"), &d.background_color);
            color(v, format!("{field}.default_config.text_color"), &d.text_color);
        }
        None => v.push(FieldViolation::new(format!("{field}.default_config"), "is required")),
    }
    for (name, o) in [("android", &b.android), ("ios", &b.ios), ("web", &b.web)] {
        if let Some(o) = o {
            action(v, format!("{field}.{name}"), o.button_action, &o.link);
        }
    }
}

/// The violations of an in-app message (Pinpoint's rules: a layout, one content or up to five
/// for a carousel, a header or body or image in each, colours as #RRGGBB, buttons with text,
/// an action and the link it needs).
pub fn validate(m: &InAppMessage, field: &str) -> Vec<FieldViolation> {
    let mut v = Vec::new();
    let layout = InAppLayout::try_from(m.layout).unwrap_or(InAppLayout::Unspecified);
    if layout == InAppLayout::Unspecified {
        v.push(FieldViolation::new(
            format!("{field}.layout"),
            "is required: BOTTOM_BANNER, TOP_BANNER, OVERLAYS, MOBILE_FEED, MIDDLE_BANNER or CAROUSEL",
        ));
    }
    let most = if layout == InAppLayout::Carousel { MAX_CAROUSEL } else { 1 };
    if m.content.is_empty() || m.content.len() > most {
        v.push(FieldViolation::new(format!("{field}.content"), format!("give 1 to {most} contents for this layout")));
    }
    for (i, c) in m.content.iter().enumerate() {
        let f = format!("{field}.content[{i}]");
        let header = c.header_config.as_ref().is_some_and(|h| !h.header.is_empty());
        let body = c.body_config.as_ref().is_some_and(|b| !b.body.is_empty());
        if !header && !body && c.image_url.is_empty() {
            v.push(FieldViolation::new(f.clone(), "give a header, a body or an image"));
        }
        color(&mut v, format!("{f}.background_color"), &c.background_color);
        if let Some(h) = &c.header_config {
            color(&mut v, format!("{f}.header_config.text_color"), &h.text_color);
            if InAppAlignment::try_from(h.alignment).is_err() {
                v.push(FieldViolation::new(format!("{f}.header_config.alignment"), "must be LEFT, CENTER or RIGHT"));
            }
        }
        if let Some(b) = &c.body_config {
            color(&mut v, format!("{f}.body_config.text_color"), &b.text_color);
            if InAppAlignment::try_from(b.alignment).is_err() {
                v.push(FieldViolation::new(format!("{f}.body_config.alignment"), "must be LEFT, CENTER or RIGHT"));
            }
        }
        if !c.image_url.is_empty() && crate::domain::endpoint::validate_url(&c.image_url).is_err() {
            v.push(FieldViolation::new(format!("{f}.image_url"), "must be an http or https URL"));
        }
        if let Some(b) = &c.primary_btn {
            button(&mut v, &format!("{f}.primary_btn"), b);
        }
        if let Some(b) = &c.secondary_btn {
            button(&mut v, &format!("{f}.secondary_btn"), b);
        }
    }
    v
}

/// Whether a campaign is an in-app one.
pub fn is_in_app(c: &Campaign) -> bool {
    c.schedule.as_ref().is_some_and(|s| s.frequency == Frequency::InAppEvent as i32)
}

/// The in-app campaigns `endpoint_id` should show now, most important first. `None`: no such
/// endpoint.
pub async fn messages_for(
    store: &Arc<dyn Store>,
    app: &str,
    endpoint_id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Vec<InAppMessageCampaign>>, SegmentError> {
    let Some(e) = store.get_endpoint(app, endpoint_id).await? else { return Ok(None) };
    if e.endpoint_status == EndpointStatus::Inactive as i32 || e.opt_out == OptOut::All as i32 {
        return Ok(Some(Vec::new()));
    }
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_records(app, super::KIND, after.as_deref(), 200).await?;
        let full = page.len() == 200;
        for raw in &page {
            let c = Campaign::decode(raw.as_slice()).map_err(StoreError::from)?;
            after = Some(c.id.clone());
            if let Some(m) = shown(store, app, &c, &e, now).await? {
                out.push(m);
            }
        }
        if !full {
            break;
        }
    }
    // Priority 1 first; unset last; then the campaign id, for a stable order.
    out.sort_by_key(|m| (if m.priority > 0 { m.priority } else { i32::MAX }, m.campaign_id.clone()));
    Ok(Some(out))
}

/// The campaign's message for this endpoint, if it should show one now.
async fn shown(
    store: &Arc<dyn Store>,
    app: &str,
    c: &Campaign,
    e: &crate::proto::v1::Endpoint,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<InAppMessageCampaign>, SegmentError> {
    if !is_in_app(c) || c.is_paused {
        return Ok(None);
    }
    let schedule = c.schedule.clone().unwrap_or_default();
    let started = super::start_of(&schedule, &c.creation_date).is_none_or(|s| s <= now);
    let ended = segments::rule::parse_instant(&schedule.end_time).is_some_and(|end| end <= now);
    if !started || ended {
        return Ok(None);
    }
    let Some(t) = super::run::assignment(c)[e.cohort_id.clamp(0, 99) as usize] else { return Ok(None) };
    // The treatment's content (its own, else the campaign's): inline, or an in-app template.
    let (m, tc) = match t {
        0 => (&c.message_configuration, &c.template_configuration),
        n => {
            let own = &c.additional_treatments[n - 1];
            match own.message_configuration.is_some() || own.template_configuration.is_some() {
                true => (&own.message_configuration, &own.template_configuration),
                false => (&c.message_configuration, &c.template_configuration),
            }
        }
    };
    let message = match (m.as_ref().and_then(|m| m.in_app_message.clone()), tc.as_ref().and_then(|t| t.in_app_template.as_ref())) {
        (Some(m), _) => m,
        (None, Some(r)) => match store.get_template(app, &r.name, (r.version > 0).then_some(r.version)).await? {
            Some(crate::proto::v1::Template { content: Some(crate::proto::v1::template::Content::InApp(a)), .. }) => {
                InAppMessage { content: a.content, custom_config: a.custom_config, layout: a.layout }
            }
            _ => return Ok(None),
        },
        (None, None) => return Ok(None),
    };
    let segment = match segments::load(store.as_ref(), app, &c.segment_id, c.segment_version).await {
        Ok(s) => s,
        Err(SegmentError::NotFound(_) | SegmentError::VersionNotFound(..)) => return Ok(None),
        Err(err) => return Err(err),
    };
    let rule = segments::compile(store.as_ref(), app, &segment).await?;
    let mut members = MemberStream::listed(store.clone(), app, Arc::new(rule), vec![e.id.clone()], None);
    let mut member = false;
    while let Some(page) = members.next_page().await {
        member |= page?.iter().any(|m| m.id == e.id);
    }
    if !member {
        return Ok(None);
    }
    let limits = c.limits.unwrap_or_default();
    Ok(Some(InAppMessageCampaign {
        campaign_id: c.id.clone(),
        daily_cap: limits.daily.unwrap_or(0),
        in_app_message: Some(message),
        priority: c.priority,
        schedule: Some(InAppCampaignSchedule {
            end_date: schedule.end_time.clone(),
            event_filter: schedule.event_filter.clone(),
            quiet_time: schedule.quiet_time.clone(),
        }),
        session_cap: limits.session.unwrap_or(0),
        total_cap: limits.total.unwrap_or(0),
        treatment_id: t.to_string(),
    }))
}

/// Pinpoint's JSON of an in-app message (CampaignInAppMessage, InAppTemplateRequest's
/// members): strict, each unknown key named.
pub mod json {
    use serde_json::{Map, Value};

    use crate::domain::json::read::{obj, only, text};
    use crate::domain::json::{bad, ShapeError};
    use crate::proto::v1::{
        ButtonAction, DefaultButtonConfiguration, InAppAlignment, InAppLayout, InAppMessage, InAppMessageBodyConfig, InAppMessageButton,
        InAppMessageContent, InAppMessageHeaderConfig, OverrideButtonConfiguration,
    };

    type R<T> = Result<T, ShapeError>;

    fn named<E>(o: &Map<String, Value>, k: &str, at: &str, prefix: &str, parse: impl Fn(&str) -> Option<E>) -> R<Option<E>> {
        let s = text(o, k, at)?;
        if s.is_empty() {
            return Ok(None);
        }
        parse(&format!("{prefix}{}", s.to_ascii_uppercase()))
            .map(Some)
            .ok_or_else(|| bad(&format!("{at}.{k}"), format!("unknown value '{s}'")))
    }

    fn action(o: &Map<String, Value>, at: &str) -> R<i32> {
        Ok(named(o, "ButtonAction", at, "BUTTON_ACTION_", ButtonAction::from_str_name)?.map_or(0, |a| a as i32))
    }

    fn over(v: Option<&Value>, at: &str) -> R<Option<OverrideButtonConfiguration>> {
        let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
        let o = obj(v, at)?;
        only(o, &["ButtonAction", "Link"], at)?;
        Ok(Some(OverrideButtonConfiguration { button_action: action(o, at)?, link: text(o, "Link", at)? }))
    }

    fn button(v: Option<&Value>, at: &str) -> R<Option<InAppMessageButton>> {
        let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
        let o = obj(v, at)?;
        only(o, &["Android", "DefaultConfig", "IOS", "Web"], at)?;
        let default_config = match o.get("DefaultConfig").filter(|v| !v.is_null()) {
            None => None,
            Some(d) => {
                let f = format!("{at}.DefaultConfig");
                let d = obj(d, &f)?;
                only(d, &["BackgroundColor", "BorderRadius", "ButtonAction", "Link", "Text", "TextColor"], &f)?;
                Some(DefaultButtonConfiguration {
                    background_color: text(d, "BackgroundColor", &f)?,
                    border_radius: crate::domain::json::read::int(d, "BorderRadius", &f)?.unwrap_or(0),
                    button_action: action(d, &f)?,
                    link: text(d, "Link", &f)?,
                    text: text(d, "Text", &f)?,
                    text_color: text(d, "TextColor", &f)?,
                })
            }
        };
        Ok(Some(InAppMessageButton {
            android: over(o.get("Android"), &format!("{at}.Android"))?,
            default_config,
            ios: over(o.get("IOS"), &format!("{at}.IOS"))?,
            web: over(o.get("Web"), &format!("{at}.Web"))?,
        }))
    }

    fn alignment(o: &Map<String, Value>, at: &str) -> R<i32> {
        Ok(named(o, "Alignment", at, "IN_APP_ALIGNMENT_", InAppAlignment::from_str_name)?.map_or(0, |a| a as i32))
    }

    /// An in-app message: `Content`, `CustomConfig`, `Layout`.
    pub fn message(v: &Value, at: &str) -> R<InAppMessage> {
        let o = obj(v, at)?;
        if o.contains_key("Body") {
            return Err(bad(&format!("{at}.Body"), "not supported by Herald: the text goes in Content[].BodyConfig.Body"));
        }
        only(o, &["Content", "CustomConfig", "Layout"], at)?;
        let mut m = InAppMessage {
            layout: named(o, "Layout", at, "IN_APP_LAYOUT_", InAppLayout::from_str_name)?.map_or(0, |l| l as i32),
            ..Default::default()
        };
        if let Some(c) = o.get("CustomConfig").filter(|v| !v.is_null()) {
            for (k, v) in obj(c, &format!("{at}.CustomConfig"))? {
                let s = v.as_str().ok_or_else(|| bad(&format!("{at}.CustomConfig.{k}"), "expected a string"))?;
                m.custom_config.insert(k.clone(), s.to_string());
            }
        }
        let items = match o.get("Content") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err(bad(&format!("{at}.Content"), "expected a list")),
        };
        for (i, c) in items.iter().enumerate() {
            let f = format!("{at}.Content[{i}]");
            let c = obj(c, &f)?;
            only(c, &["BackgroundColor", "BodyConfig", "HeaderConfig", "ImageUrl", "PrimaryBtn", "SecondaryBtn"], &f)?;
            let body_config = match c.get("BodyConfig").filter(|v| !v.is_null()) {
                None => None,
                Some(b) => {
                    let bf = format!("{f}.BodyConfig");
                    let b = obj(b, &bf)?;
                    only(b, &["Alignment", "Body", "TextColor"], &bf)?;
                    Some(InAppMessageBodyConfig {
                        alignment: alignment(b, &bf)?,
                        body: text(b, "Body", &bf)?,
                        text_color: text(b, "TextColor", &bf)?,
                    })
                }
            };
            let header_config = match c.get("HeaderConfig").filter(|v| !v.is_null()) {
                None => None,
                Some(h) => {
                    let hf = format!("{f}.HeaderConfig");
                    let h = obj(h, &hf)?;
                    only(h, &["Alignment", "Header", "TextColor"], &hf)?;
                    Some(InAppMessageHeaderConfig {
                        alignment: alignment(h, &hf)?,
                        header: text(h, "Header", &hf)?,
                        text_color: text(h, "TextColor", &hf)?,
                    })
                }
            };
            m.content.push(InAppMessageContent {
                background_color: text(c, "BackgroundColor", &f)?,
                body_config,
                header_config,
                image_url: text(c, "ImageUrl", &f)?,
                primary_btn: button(c.get("PrimaryBtn"), &format!("{f}.PrimaryBtn"))?,
                secondary_btn: button(c.get("SecondaryBtn"), &format!("{f}.SecondaryBtn"))?,
            });
        }
        Ok(m)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn pinpoints_in_app_json_reads_strictly() {
            let v: serde_json::Value = serde_json::from_str(
                r##"{"Layout": "CAROUSEL", "CustomConfig": {"k": "v"},
                    "Content": [{"BackgroundColor": "#FFFFFF", "HeaderConfig": {"Alignment": "CENTER", "Header": "Hi", "TextColor": "#000000"},
                                 "BodyConfig": {"Alignment": "LEFT", "Body": "Sale", "TextColor": "#000000"}, "ImageUrl": "https://img.example/a.png",
                                 "PrimaryBtn": {"DefaultConfig": {"ButtonAction": "LINK", "Link": "https://shop.example", "Text": "Go", "BorderRadius": 4},
                                                "IOS": {"ButtonAction": "DEEP_LINK", "Link": "shop://sale"}}}]}"##,
            )
            .unwrap();
            let m = super::message(&v, "InAppMessage").unwrap();
            assert_eq!(m.layout, crate::proto::v1::InAppLayout::Carousel as i32);
            let b = m.content[0].primary_btn.as_ref().unwrap();
            assert_eq!((b.default_config.as_ref().unwrap().border_radius, b.ios.as_ref().unwrap().link.as_str()), (4, "shop://sale"));
            assert!(super::super::validate(&m, "m").is_empty(), "{:?}", super::super::validate(&m, "m"));
            let e =
                super::message(&serde_json::json!({"Layout": "TOP_BANNER", "Content": [{"Colour": "red"}]}), "InAppMessage").unwrap_err();
            assert_eq!(e.at, "InAppMessage.Content[0].Colour");
            let e = super::message(&serde_json::json!({"Layout": "SIDEWAYS"}), "InAppMessage").unwrap_err();
            assert_eq!(e.at, "InAppMessage.Layout");
        }
    }
}
