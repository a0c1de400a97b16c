//! Campaign definitions as JSON or YAML, for `herald campaigns create FILE`, in either of two
//! shapes: the API's (snake_case field names, enum values by name: `frequency: DAILY`), or
//! Pinpoint's `WriteCampaignRequest` (PascalCase, as `aws pinpoint create-campaign
//! --cli-input-json` files are, also wrapped as `{"WriteCampaignRequest": …}`), told apart by
//! the top-level keys. In both, an unknown key is an error naming it and its line, and a
//! Pinpoint member Herald has no counterpart for is refused saying why.

use serde_json::{Map, Value};

use crate::domain::json::bad;
use crate::domain::json::read::{boolean, int, line_of, obj, only, strings, sub, text};
pub use crate::domain::json::ShapeError;
use crate::proto::v1::{
    ApnsMessage, Campaign, CampaignLimits, CustomMessage, DefaultPushNotificationMessage, DirectMessageConfiguration, EmailMessage,
    EventFilter, FilterType, Frequency, GcmMessage, PushAction, QuietTime, Schedule, SmsMessage, SmsMessageType, TemplateConfiguration,
    TemplateReference, Treatment,
};

type R<T> = Result<T, ShapeError>;

/// Which shape a file is written in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Api,
    Pinpoint,
}

/// A member's name in `shape`: the API's snake_case name, or Pinpoint's PascalCase one
/// (`SMSMessage`, `APNSMessage`, `GCMMessage`, `SMSTemplate` as the service model spells them;
/// `tags` in lower case there too).
fn key(shape: Shape, api: &str) -> String {
    if shape == Shape::Api {
        return api.to_string();
    }
    match api {
        "tags" => "tags".into(),
        "sms_message" => "SMSMessage".into(),
        "apns_message" => "APNSMessage".into(),
        "gcm_message" => "GCMMessage".into(),
        "default_push_notification_message" => "DefaultMessage".into(),
        "sms_template" => "SMSTemplate".into(),
        _ => api
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
            })
            .collect(),
    }
}

/// Refuses keys outside `known` (API names, spelled for `shape`), and Pinpoint members in
/// `refused` with the reason given.
fn check(o: &Map<String, Value>, shape: Shape, known: &[&str], refused: &[(&str, &str)], at: &str) -> R<()> {
    if shape == Shape::Pinpoint {
        if let Some((k, why)) = refused.iter().find(|(k, _)| o.contains_key(*k)) {
            return Err(bad(&format!("{at}.{k}"), format!("not supported by Herald: {why}")));
        }
    }
    let names: Vec<String> = known.iter().map(|k| key(shape, k)).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    only(o, &names, at)
}

/// Reads the `api`-named member of `o` with `f`, under its name in `shape`.
fn get<'a>(o: &'a Map<String, Value>, shape: Shape, api: &str) -> (Option<&'a Value>, String) {
    let k = key(shape, api);
    (sub(o, &k), k)
}

fn t(o: &Map<String, Value>, shape: Shape, api: &str, at: &str) -> R<String> {
    text(o, &key(shape, api), at)
}

fn i(o: &Map<String, Value>, shape: Shape, api: &str, at: &str) -> R<Option<i32>> {
    int(o, &key(shape, api), at)
}

fn b(o: &Map<String, Value>, shape: Shape, api: &str, at: &str) -> R<bool> {
    boolean(o, &key(shape, api), at)
}

fn template(o: &Map<String, Value>, shape: Shape, api: &str, at: &str) -> R<Option<TemplateReference>> {
    let (Some(v), k) = get(o, shape, api) else { return Ok(None) };
    let f = format!("{at}.{k}");
    let r = obj(v, &f)?;
    check(r, shape, &["name", "version"], &[], &f)?;
    // Pinpoint writes the version as a string ("2"); the API as a number.
    let vk = key(shape, "version");
    let version = match r.get(&vk) {
        None | Some(Value::Null) => 0,
        Some(Value::String(s)) if s.is_empty() => 0,
        Some(Value::String(s)) => s.parse().map_err(|_| bad(&format!("{f}.{vk}"), "expected a version number"))?,
        Some(_) => int(r, &vk, &f)?.unwrap_or(0),
    };
    Ok(Some(TemplateReference { name: t(r, shape, "name", &f)?, version }))
}

fn action(o: &Map<String, Value>, shape: Shape, at: &str) -> R<i32> {
    let a = t(o, shape, "action", at)?;
    if a.is_empty() {
        return Ok(PushAction::Unspecified as i32);
    }
    PushAction::from_str_name(&format!("PUSH_ACTION_{}", a.to_ascii_uppercase()))
        .map(|a| a as i32)
        .ok_or_else(|| bad(&format!("{at}.{}", key(shape, "action")), format!("unknown value '{a}' (OPEN_APP, DEEP_LINK or URL)")))
}

fn data(o: &Map<String, Value>, shape: Shape, at: &str) -> R<std::collections::HashMap<String, String>> {
    let (Some(v), k) = get(o, shape, "data") else { return Ok(Default::default()) };
    let f = format!("{at}.{k}");
    obj(v, &f)?
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or_else(|| bad(&format!("{f}.{k}"), "expected a string"))?.to_string())))
        .collect()
}

fn time_to_live(o: &Map<String, Value>, shape: Shape, at: &str) -> R<i32> {
    Ok(i(o, shape, "time_to_live", at)?.unwrap_or(0))
}

/// Members of Pinpoint's push `Message` Herald has no field for.
const PUSH_REFUSED: &[(&str, &str)] =
    &[("JsonBody", "give the payload as RawContent"), ("ImageSmallIconUrl", "FCM HTTP v1 has no small-icon field; use ImageIconUrl")];

fn message(v: Option<&Value>, shape: Shape, at: &str) -> R<Option<DirectMessageConfiguration>> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    let o = obj(v, at)?;
    check(
        o,
        shape,
        &[
            "email_message",
            "custom_message",
            "sms_message",
            "default_push_notification_message",
            "apns_message",
            "gcm_message",
            "in_app_message",
        ],
        &[("ADMMessage", "Herald has no Amazon Device Messaging channel"), ("BaiduMessage", "Herald has no Baidu channel")],
        at,
    )?;
    let pp = shape == Shape::Pinpoint;
    let mut m = DirectMessageConfiguration::default();
    if let (Some(ia), k) = get(o, shape, "in_app_message") {
        // Pinpoint's CampaignInAppMessage members, in either shape.
        m.in_app_message = Some(super::inapp::json::message(ia, &format!("{at}.{k}"))?);
    }
    if let (Some(e), k) = get(o, shape, "email_message") {
        let f = format!("{at}.{k}");
        let e = obj(e, &f)?;
        m.email_message = Some(if pp {
            // CampaignEmailMessage: Title, Body (text), HtmlBody, FromAddress.
            only(e, &["FromAddress", "Title", "Body", "HtmlBody"], &f)?;
            EmailMessage {
                from_address: text(e, "FromAddress", &f)?,
                subject: text(e, "Title", &f)?,
                text_part: text(e, "Body", &f)?,
                html_part: text(e, "HtmlBody", &f)?,
                ..Default::default()
            }
        } else {
            only(e, &["from_address", "reply_to_addresses", "raw_message", "subject", "html_part", "text_part"], &f)?;
            EmailMessage {
                from_address: text(e, "from_address", &f)?,
                reply_to_addresses: strings(e, "reply_to_addresses", &f)?,
                raw_message: text(e, "raw_message", &f)?,
                subject: text(e, "subject", &f)?,
                html_part: text(e, "html_part", &f)?,
                text_part: text(e, "text_part", &f)?,
                substitutions: Default::default(),
            }
        });
    }
    if let (Some(c), k) = get(o, shape, "custom_message") {
        let f = format!("{at}.{k}");
        let c = obj(c, &f)?;
        check(c, shape, &["data"], &[], &f)?;
        m.custom_message = Some(CustomMessage { data: t(c, shape, "data", &f)? });
    }
    if let (Some(v), k) = get(o, shape, "sms_message") {
        let f = format!("{at}.{k}");
        let s = obj(v, &f)?;
        check(
            s,
            shape,
            &["body", "origination_number", "message_type", "sender_id", "keyword"],
            &[
                ("EntityId", "India DLT registration is not part of Herald's SMS channel"),
                ("TemplateId", "India DLT registration is not part of Herald's SMS channel"),
            ],
            &f,
        )?;
        if pp && s.contains_key("Keyword") {
            return Err(bad(&format!("{f}.Keyword"), "unknown key; expected one of Body, OriginationNumber, MessageType, SenderId"));
        }
        let mt = t(s, shape, "message_type", &f)?;
        let message_type = match mt.to_ascii_uppercase().as_str() {
            "" => SmsMessageType::Unspecified,
            "TRANSACTIONAL" => SmsMessageType::Transactional,
            "PROMOTIONAL" => SmsMessageType::Promotional,
            _ => {
                return Err(bad(
                    &format!("{f}.{}", key(shape, "message_type")),
                    format!("unknown value '{mt}' (TRANSACTIONAL or PROMOTIONAL)"),
                ))
            }
        };
        m.sms_message = Some(SmsMessage {
            body: t(s, shape, "body", &f)?,
            origination_number: t(s, shape, "origination_number", &f)?,
            message_type: message_type as i32,
            sender_id: t(s, shape, "sender_id", &f)?,
            keyword: if pp { String::new() } else { t(s, shape, "keyword", &f)? },
            substitutions: Default::default(),
        });
    }
    // Push: Pinpoint's one `Message` shape for DefaultMessage, APNSMessage and GCMMessage,
    // each read for the members its Herald counterpart has.
    if let (Some(v), k) = get(o, shape, "default_push_notification_message") {
        let f = format!("{at}.{k}");
        let d = obj(v, &f)?;
        if pp {
            check(d, shape, &["action", "body", "silent_push", "title", "url"], PUSH_REFUSED, &f)?;
        } else {
            only(d, &["title", "body", "data", "action", "url", "silent_push"], &f)?;
        }
        m.default_push_notification_message = Some(DefaultPushNotificationMessage {
            title: t(d, shape, "title", &f)?,
            body: t(d, shape, "body", &f)?,
            data: if pp { Default::default() } else { data(d, shape, &f)? },
            action: action(d, shape, &f)?,
            url: t(d, shape, "url", &f)?,
            silent_push: b(d, shape, "silent_push", &f)?,
            substitutions: Default::default(),
        });
    }
    if let (Some(v), k) = get(o, shape, "apns_message") {
        let f = format!("{at}.{k}");
        let a = obj(v, &f)?;
        if pp {
            check(
                a,
                shape,
                &["action", "body", "media_url", "raw_content", "silent_push", "time_to_live", "title", "url"],
                PUSH_REFUSED,
                &f,
            )?;
        } else {
            only(
                a,
                &["title", "body", "data", "sound", "badge", "action", "url", "media_url", "raw_content", "silent_push", "time_to_live"],
                &f,
            )?;
        }
        m.apns_message = Some(ApnsMessage {
            title: t(a, shape, "title", &f)?,
            body: t(a, shape, "body", &f)?,
            data: if pp { Default::default() } else { data(a, shape, &f)? },
            sound: if pp { String::new() } else { t(a, shape, "sound", &f)? },
            badge: if pp { 0 } else { i(a, shape, "badge", &f)?.unwrap_or(0) },
            time_to_live: time_to_live(a, shape, &f)?,
            silent_push: b(a, shape, "silent_push", &f)?,
            action: action(a, shape, &f)?,
            url: t(a, shape, "url", &f)?,
            media_url: t(a, shape, "media_url", &f)?,
            raw_content: t(a, shape, "raw_content", &f)?,
            ..Default::default()
        });
    }
    if let (Some(v), k) = get(o, shape, "gcm_message") {
        let f = format!("{at}.{k}");
        let g = obj(v, &f)?;
        if pp {
            check(
                g,
                shape,
                &["action", "body", "image_icon_url", "image_url", "raw_content", "silent_push", "time_to_live", "title", "url"],
                PUSH_REFUSED,
                &f,
            )?;
            if g.contains_key("MediaUrl") {
                return Err(bad(&format!("{f}.MediaUrl"), "not supported by Herald: FCM notifications carry an ImageUrl"));
            }
        } else {
            only(
                g,
                &[
                    "title",
                    "body",
                    "data",
                    "sound",
                    "action",
                    "url",
                    "image_url",
                    "icon_reference",
                    "raw_content",
                    "silent_push",
                    "time_to_live",
                ],
                &f,
            )?;
        }
        m.gcm_message = Some(GcmMessage {
            title: t(g, shape, "title", &f)?,
            body: t(g, shape, "body", &f)?,
            data: if pp { Default::default() } else { data(g, shape, &f)? },
            sound: if pp { String::new() } else { t(g, shape, "sound", &f)? },
            time_to_live: time_to_live(g, shape, &f)?,
            image_url: t(g, shape, "image_url", &f)?,
            icon_reference: if pp { text(g, "ImageIconUrl", &f)? } else { t(g, shape, "icon_reference", &f)? },
            silent_push: b(g, shape, "silent_push", &f)?,
            action: action(g, shape, &f)?,
            url: t(g, shape, "url", &f)?,
            raw_content: t(g, shape, "raw_content", &f)?,
            ..Default::default()
        });
    }
    Ok(Some(m))
}

fn templates(v: Option<&Value>, shape: Shape, at: &str) -> R<Option<TemplateConfiguration>> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    let o = obj(v, at)?;
    let known: &[&str] = if shape == Shape::Pinpoint {
        &["email_template", "sms_template", "push_template"]
    } else {
        &["email_template", "custom_template", "sms_template", "push_template"]
    };
    let mut known = known.to_vec();
    known.push("in_app_template");
    check(o, shape, &known, &[("VoiceTemplate", "Herald has no voice channel")], at)?;
    Ok(Some(TemplateConfiguration {
        email_template: template(o, shape, "email_template", at)?,
        custom_template: if shape == Shape::Api { template(o, shape, "custom_template", at)? } else { None },
        sms_template: template(o, shape, "sms_template", at)?,
        push_template: template(o, shape, "push_template", at)?,
        in_app_template: template(o, shape, "in_app_template", at)?,
    }))
}

fn event_filter(v: &Value, shape: Shape, f: &str) -> R<EventFilter> {
    let e = obj(v, f)?;
    let pp = shape == Shape::Pinpoint;
    let ft = t(e, shape, "filter_type", f)?;
    let filter_type = if ft.is_empty() {
        FilterType::Endpoint
    } else {
        FilterType::from_str_name(&format!("FILTER_TYPE_{}", ft.to_ascii_uppercase()))
            .ok_or_else(|| bad(&format!("{f}.{}", key(shape, "filter_type")), format!("unknown value '{ft}'")))?
    };
    // Attribute and metric dimensions in Pinpoint's shape, as in segment files.
    let mut dims = Map::new();
    let (mut event_types, mut exclude) = (Vec::new(), false);
    if pp {
        only(e, &["FilterType", "Dimensions"], f)?;
        if let Some(d) = sub(e, "Dimensions") {
            let df = format!("{f}.Dimensions");
            let d = obj(d, &df)?;
            only(d, &["EventType", "Attributes", "Metrics"], &df)?;
            for k in ["Attributes", "Metrics"] {
                if let Some(v) = d.get(k) {
                    dims.insert(k.into(), v.clone());
                }
            }
            if let Some(et) = sub(d, "EventType") {
                let ef = format!("{df}.EventType");
                let et = obj(et, &ef)?;
                only(et, &["DimensionType", "Values"], &ef)?;
                exclude = match text(et, "DimensionType", &ef)?.as_str() {
                    "" | "INCLUSIVE" => false,
                    "EXCLUSIVE" => true,
                    other => return Err(bad(&format!("{ef}.DimensionType"), format!("unknown value '{other}' (INCLUSIVE or EXCLUSIVE)"))),
                };
                event_types = strings(et, "Values", &ef)?;
            }
        }
    } else {
        only(e, &["filter_type", "exclude_event_types", "event_types", "attributes", "metrics"], f)?;
        for (k, pinpoint) in [("attributes", "Attributes"), ("metrics", "Metrics")] {
            if let Some(v) = e.get(k) {
                dims.insert(pinpoint.into(), v.clone());
            }
        }
        exclude = boolean(e, "exclude_event_types", f)?;
        event_types = strings(e, "event_types", f)?;
    }
    let d = crate::segments::json::dimensions(&Value::Object(dims), f).map_err(|e| {
        if pp {
            bad(&e.at.replace(&format!("{f}."), &format!("{f}.Dimensions.")), e.what)
        } else {
            bad(&e.at.replace(".Attributes", ".attributes").replace(".Metrics", ".metrics"), e.what)
        }
    })?;
    Ok(EventFilter {
        filter_type: filter_type as i32,
        exclude_event_types: exclude,
        event_types,
        attributes: d.attributes,
        metrics: d.metrics,
    })
}

fn schedule(v: Option<&Value>, shape: Shape, at: &str) -> R<Option<Schedule>> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    let o = obj(v, at)?;
    check(o, shape, &["start_time", "end_time", "frequency", "is_local_time", "timezone", "quiet_time", "event_filter"], &[], at)?;
    let frequency = t(o, shape, "frequency", at)?;
    let freq = if frequency.is_empty() {
        Frequency::Unspecified
    } else {
        Frequency::from_str_name(&format!("FREQUENCY_{}", frequency.to_ascii_uppercase()))
            .ok_or_else(|| bad(&format!("{at}.{}", key(shape, "frequency")), format!("unknown value '{frequency}'")))?
    };
    let mut s = Schedule {
        start_time: t(o, shape, "start_time", at)?,
        end_time: t(o, shape, "end_time", at)?,
        frequency: freq as i32,
        is_local_time: b(o, shape, "is_local_time", at)?,
        timezone: t(o, shape, "timezone", at)?,
        ..Default::default()
    };
    if let (Some(q), k) = get(o, shape, "quiet_time") {
        let f = format!("{at}.{k}");
        let q = obj(q, &f)?;
        check(q, shape, &["start", "end"], &[], &f)?;
        s.quiet_time = Some(QuietTime { start: t(q, shape, "start", &f)?, end: t(q, shape, "end", &f)? });
    }
    if let (Some(e), k) = get(o, shape, "event_filter") {
        s.event_filter = Some(event_filter(e, shape, &format!("{at}.{k}"))?);
    }
    Ok(Some(s))
}

/// A YAML document as the JSON value it denotes (mappings with string keys, sequences,
/// strings, numbers, booleans, null).
fn from_yaml(y: &yaml_rust2::Yaml) -> R<Value> {
    use yaml_rust2::Yaml;
    Ok(match y {
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    other => return Err(bad("the file", format!("a YAML key must be a string: {other:?}"))),
                };
                m.insert(key, from_yaml(v)?);
            }
            Value::Object(m)
        }
        Yaml::Array(a) => Value::Array(a.iter().map(from_yaml).collect::<R<_>>()?),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| bad("the file", format!("bad number {r}")))?,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Null => Value::Null,
        other => return Err(bad("the file", format!("unsupported YAML value {other:?}"))),
    })
}

/// A file's document: JSON, or YAML when it is not JSON.
pub fn document(text_in: &str) -> R<Value> {
    match serde_json::from_str(text_in) {
        Ok(v) => Ok(v),
        Err(json_error) => {
            let docs = yaml_rust2::YamlLoader::load_from_str(text_in)
                .map_err(|e| bad("the file", format!("neither JSON ({json_error}) nor YAML ({e})")))?;
            let doc = docs.first().ok_or_else(|| bad("the file", "it is empty"))?;
            from_yaml(doc)
        }
    }
}

/// A campaign definition: JSON, or YAML when it is not JSON; in the API's shape or
/// Pinpoint's. An unknown key's error gives the line it is on.
pub fn campaign(text_in: &str) -> R<Campaign> {
    let v = document(text_in)?;
    read(&v).map_err(|mut e| {
        if e.what.starts_with("unknown key") || e.what.starts_with("not supported") {
            if let Some(line) = e.at.rsplit('.').next().and_then(|k| line_of(text_in, k)) {
                e.what = format!("{} (line {line})", e.what);
            }
        }
        e
    })
}

/// A CustomDeliveryConfiguration {DeliveryUri, EndpointTypes}.
fn custom_delivery(o: &Map<String, Value>, shape: Shape, at: &str) -> R<Option<crate::proto::v1::CustomDeliveryConfiguration>> {
    let (Some(v), k) = get(o, shape, "custom_delivery_configuration") else { return Ok(None) };
    let f = format!("{at}.{k}");
    let d = obj(v, &f)?;
    check(d, shape, &["delivery_uri", "endpoint_types"], &[], &f)?;
    Ok(Some(crate::proto::v1::CustomDeliveryConfiguration {
        delivery_uri: t(d, shape, "delivery_uri", &f)?,
        endpoint_types: strings(d, &key(shape, "endpoint_types"), &f)?,
    }))
}

/// A Hook {WebUrl, Mode, LambdaFunctionName} (and Herald's Secret).
fn hook(o: &Map<String, Value>, shape: Shape, at: &str) -> R<Option<crate::proto::v1::CampaignHook>> {
    use crate::proto::v1::CampaignHookMode;
    let (Some(v), k) = get(o, shape, "hook") else { return Ok(None) };
    let f = format!("{at}.{k}");
    let h = obj(v, &f)?;
    check(h, shape, &["web_url", "mode", "lambda_function_name", "secret"], &[], &f)?;
    let mode = t(h, shape, "mode", &f)?;
    let mode = match mode.to_ascii_uppercase().as_str() {
        "" => CampaignHookMode::Unspecified,
        "FILTER" => CampaignHookMode::Filter,
        "DELIVERY" => CampaignHookMode::Delivery,
        _ => return Err(bad(&format!("{f}.{}", key(shape, "mode")), format!("unknown value '{mode}'; expected FILTER"))),
    };
    Ok(Some(crate::proto::v1::CampaignHook {
        web_url: t(h, shape, "web_url", &f)?,
        mode: mode as i32,
        lambda_function_name: t(h, shape, "lambda_function_name", &f)?,
        secret: t(h, shape, "secret", &f)?,
        has_secret: false,
    }))
}

fn read(v: &Value) -> R<Campaign> {
    let o = obj(v, "campaign")?;
    let (o, shape, at) = match o.get("WriteCampaignRequest") {
        Some(w) if o.len() == 1 => (obj(w, "WriteCampaignRequest")?, Shape::Pinpoint, "WriteCampaignRequest"),
        _ if o.keys().any(|k| k != "tags" && k.starts_with(|c: char| c.is_ascii_uppercase())) => {
            (o, Shape::Pinpoint, "WriteCampaignRequest")
        }
        _ => (o, Shape::Api, "campaign"),
    };
    let mut known = vec![
        "name",
        "description",
        "segment_id",
        "segment_version",
        "message_configuration",
        "template_configuration",
        "schedule",
        "limits",
        "holdout_percent",
        "additional_treatments",
        "treatment_name",
        "treatment_description",
        "is_paused",
        "tags",
        "custom_delivery_configuration",
        "hook",
    ];
    if shape == Shape::Api {
        known.push("engagement_tracking");
    }
    known.push("priority");
    check(o, shape, &known, &[], at)?;
    let f = |api: &str| format!("{at}.{}", key(shape, api));
    let mut c = Campaign {
        name: t(o, shape, "name", at)?,
        description: t(o, shape, "description", at)?,
        segment_id: t(o, shape, "segment_id", at)?,
        segment_version: i(o, shape, "segment_version", at)?.unwrap_or(0),
        message_configuration: message(get(o, shape, "message_configuration").0, shape, &f("message_configuration"))?,
        template_configuration: templates(get(o, shape, "template_configuration").0, shape, &f("template_configuration"))?,
        schedule: schedule(get(o, shape, "schedule").0, shape, &f("schedule"))?,
        holdout_percent: i(o, shape, "holdout_percent", at)?.unwrap_or(0),
        treatment_name: t(o, shape, "treatment_name", at)?,
        treatment_description: t(o, shape, "treatment_description", at)?,
        is_paused: b(o, shape, "is_paused", at)?,
        custom_delivery_configuration: custom_delivery(o, shape, at)?,
        hook: hook(o, shape, at)?,
        priority: i(o, shape, "priority", at)?.unwrap_or(0),
        engagement_tracking: match (shape, o.get("engagement_tracking")) {
            (Shape::Pinpoint, _) | (_, None | Some(Value::Null)) => None,
            (Shape::Api, Some(_)) => Some(boolean(o, "engagement_tracking", at)?),
        },
        ..Default::default()
    };
    if let (Some(l), k) = get(o, shape, "limits") {
        let lf = format!("{at}.{k}");
        let l = obj(l, &lf)?;
        check(l, shape, &["daily", "total", "messages_per_second", "maximum_duration", "session"], &[], &lf)?;
        c.limits = Some(CampaignLimits {
            daily: i(l, shape, "daily", &lf)?,
            total: i(l, shape, "total", &lf)?,
            messages_per_second: i(l, shape, "messages_per_second", &lf)?,
            maximum_duration: i(l, shape, "maximum_duration", &lf)?,
            session: i(l, shape, "session", &lf)?,
        });
    }
    if let (Some(ts), k) = get(o, shape, "additional_treatments") {
        let ts = ts.as_array().ok_or_else(|| bad(&format!("{at}.{k}"), "expected a list"))?;
        for (n, tv) in ts.iter().enumerate() {
            let tf = format!("{at}.{k}[{n}]");
            let to = obj(tv, &tf)?;
            check(
                to,
                shape,
                &[
                    "treatment_name",
                    "treatment_description",
                    "size_percent",
                    "message_configuration",
                    "template_configuration",
                    "schedule",
                    "custom_delivery_configuration",
                ],
                &[],
                &tf,
            )?;
            let sf = |api: &str| format!("{tf}.{}", key(shape, api));
            c.additional_treatments.push(Treatment {
                id: 0,
                treatment_name: t(to, shape, "treatment_name", &tf)?,
                treatment_description: t(to, shape, "treatment_description", &tf)?,
                size_percent: i(to, shape, "size_percent", &tf)?.unwrap_or(0),
                message_configuration: message(get(to, shape, "message_configuration").0, shape, &sf("message_configuration"))?,
                template_configuration: templates(get(to, shape, "template_configuration").0, shape, &sf("template_configuration"))?,
                schedule: schedule(get(to, shape, "schedule").0, shape, &sf("schedule"))?,
                custom_delivery_configuration: custom_delivery(to, shape, &tf)?,
            });
        }
    }
    if let Some(tg) = sub(o, "tags") {
        let tf = format!("{at}.tags");
        for (k, v) in obj(tg, &tf)? {
            c.tags.insert(k.clone(), v.as_str().ok_or_else(|| bad(&format!("{tf}.{k}"), "expected a string"))?.to_string());
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn campaigns_parse_in_the_api_shape() {
        let c = super::campaign(
            r#"{"name": "Spring", "segment_id": "s1", "holdout_percent": 5,
                "message_configuration": {"email_message": {"from_address": "a@b.example", "subject": "Hi {{Id}}", "text_part": "x"}},
                "schedule": {"start_time": "2026-12-01T09:00:00Z", "end_time": "2026-12-31T09:00:00Z", "frequency": "weekly", "quiet_time": {"start": "22:00", "end": "07:00"}},
                "limits": {"daily": 1, "messages_per_second": 200},
                "additional_treatments": [{"treatment_name": "B", "size_percent": 40, "template_configuration": {"email_template": {"name": "spring-b"}}}],
                "tags": {"team": "growth"}}"#,
        )
        .unwrap();
        assert_eq!((c.name.as_str(), c.holdout_percent), ("Spring", 5));
        assert_eq!(c.schedule.as_ref().unwrap().frequency, crate::proto::v1::Frequency::Weekly as i32);
        assert_eq!(c.limits.unwrap().messages_per_second, Some(200));
        assert_eq!(c.additional_treatments[0].template_configuration.as_ref().unwrap().email_template.as_ref().unwrap().name, "spring-b");
        assert!(super::campaign(r#"{"schedule": {"frequency": "SOMETIMES"}}"#)
            .unwrap_err()
            .to_string()
            .contains("campaign.schedule.frequency"));
        // The same in YAML.
        let y = super::campaign(
            "name: Spring\nsegment_id: s1\nholdout_percent: 5\nschedule:\n  start_time: IMMEDIATE\n  frequency: ONCE\nlimits:\n  messages_per_second: 200\nmessage_configuration:\n  email_message:\n    from_address: a@b.example\n    subject: \"Hi {{Id}}\"\n    text_part: x\n",
        )
        .unwrap();
        assert_eq!((y.name.as_str(), y.holdout_percent, y.limits.unwrap().messages_per_second), ("Spring", 5, Some(200)));
        assert_eq!(y.message_configuration.unwrap().email_message.unwrap().subject, "Hi {{Id}}");
        assert!(super::campaign("name: [unclosed").is_err());
    }

    #[test]
    fn campaigns_parse_in_pinpoints_shape() {
        let c = super::campaign(
            r#"{"WriteCampaignRequest": {
                "Name": "Spring", "SegmentId": "s1", "SegmentVersion": 2, "HoldoutPercent": 5, "IsPaused": false,
                "MessageConfiguration": {
                    "EmailMessage": {"FromAddress": "a@b.example", "Title": "Hi {{User.UserAttributes.FirstName}}", "Body": "text", "HtmlBody": "<p>html</p>"},
                    "SMSMessage": {"Body": "sms", "MessageType": "PROMOTIONAL", "OriginationNumber": "+12065550100"},
                    "GCMMessage": {"Title": "t", "Body": "b", "Action": "URL", "Url": "https://example.com", "ImageIconUrl": "icon", "TimeToLive": 60}
                },
                "TemplateConfiguration": {"EmailTemplate": {"Name": "spring", "Version": "3"}},
                "Schedule": {"StartTime": "2026-12-01T09:00:00Z", "EndTime": "2026-12-31T09:00:00Z", "Frequency": "WEEKLY", "IsLocalTime": true,
                             "Timezone": "UTC+01", "QuietTime": {"Start": "22:00", "End": "07:00"}},
                "Limits": {"Daily": 1, "MessagesPerSecond": 200, "MaximumDuration": 600, "Total": 5},
                "AdditionalTreatments": [{"TreatmentName": "B", "SizePercent": 40, "TemplateConfiguration": {"SMSTemplate": {"Name": "spring-sms"}}}],
                "tags": {"team": "growth"}}}"#,
        )
        .unwrap();
        assert_eq!((c.name.as_str(), c.segment_id.as_str(), c.segment_version, c.holdout_percent), ("Spring", "s1", 2, 5));
        let m = c.message_configuration.as_ref().unwrap();
        let e = m.email_message.as_ref().unwrap();
        assert_eq!(
            (e.subject.as_str(), e.text_part.as_str(), e.html_part.as_str()),
            ("Hi {{User.UserAttributes.FirstName}}", "text", "<p>html</p>")
        );
        let sms = m.sms_message.as_ref().unwrap();
        assert_eq!((sms.body.as_str(), sms.message_type), ("sms", crate::proto::v1::SmsMessageType::Promotional as i32));
        let g = m.gcm_message.as_ref().unwrap();
        assert_eq!(
            (g.action, g.url.as_str(), g.icon_reference.as_str(), g.time_to_live),
            (crate::proto::v1::PushAction::Url as i32, "https://example.com", "icon", 60)
        );
        assert_eq!(c.template_configuration.as_ref().unwrap().email_template.as_ref().unwrap().version, 3);
        let s = c.schedule.as_ref().unwrap();
        assert_eq!((s.frequency, s.is_local_time, s.timezone.as_str()), (crate::proto::v1::Frequency::Weekly as i32, true, "UTC+01"));
        assert_eq!(s.quiet_time.as_ref().unwrap().start, "22:00");
        let l = c.limits.unwrap();
        assert_eq!((l.daily, l.messages_per_second, l.maximum_duration, l.total), (Some(1), Some(200), Some(600), Some(5)));
        assert_eq!(c.additional_treatments[0].template_configuration.as_ref().unwrap().sms_template.as_ref().unwrap().name, "spring-sms");
        assert_eq!(c.tags["team"], "growth");
        // Unwrapped, with an event filter in Pinpoint's Dimensions.
        let c = super::campaign(
            r#"{"Name": "Bought", "SegmentId": "s1",
                "Schedule": {"StartTime": "IMMEDIATE", "Frequency": "EVENT",
                  "EventFilter": {"FilterType": "ENDPOINT", "Dimensions": {"EventType": {"DimensionType": "INCLUSIVE", "Values": ["purchase"]},
                                  "Attributes": {"sku": {"AttributeType": "INCLUSIVE", "Values": ["A1"]}}}}}}"#,
        )
        .unwrap();
        let f = c.schedule.unwrap().event_filter.unwrap();
        assert_eq!(
            (f.event_types, f.exclude_event_types, f.attributes["sku"].values.clone()),
            (vec!["purchase".to_string()], false, vec!["A1".to_string()])
        );
        // A custom delivery, on the campaign and on a treatment.
        let c = super::campaign(
            r#"{"Name": "Hook", "SegmentId": "s1", "Schedule": {"StartTime": "IMMEDIATE"},
                "MessageConfiguration": {"CustomMessage": {"Data": "{\"a\":1}"}},
                "CustomDeliveryConfiguration": {"DeliveryUri": "https://hooks.example.com/in", "EndpointTypes": ["EMAIL", "SMS"]},
                "AdditionalTreatments": [{"SizePercent": 10,
                  "CustomDeliveryConfiguration": {"DeliveryUri": "https://hooks.example.com/b", "EndpointTypes": ["GCM"]}}]}"#,
        )
        .unwrap();
        let d = c.custom_delivery_configuration.unwrap();
        assert_eq!((d.delivery_uri.as_str(), d.endpoint_types), ("https://hooks.example.com/in", vec!["EMAIL".to_string(), "SMS".into()]));
        assert_eq!(c.message_configuration.unwrap().custom_message.unwrap().data, r#"{"a":1}"#);
        assert_eq!(c.additional_treatments[0].custom_delivery_configuration.as_ref().unwrap().endpoint_types, ["GCM"]);
        let c =
            super::campaign(r#"{"Name": "x", "Hook": {"WebUrl": "https://h.example/f", "Mode": "FILTER", "Secret": "whsec_x"}}"#).unwrap();
        let h = c.hook.unwrap();
        assert_eq!((h.web_url.as_str(), h.mode, h.secret.as_str()), ("https://h.example/f", 1, "whsec_x"));
        let e = super::campaign(r#"{"Name": "x", "CustomDeliveryConfiguration": {"DeliveryURI": "https://h.example"}}"#).unwrap_err();
        assert_eq!(e.at, "WriteCampaignRequest.CustomDeliveryConfiguration.DeliveryURI");
    }

    #[test]
    fn unknown_and_unsupported_keys_are_named_with_their_line() {
        let e = super::campaign("{\n  \"Name\": \"x\",\n  \"SegmentID\": \"s1\"\n}").unwrap_err();
        assert_eq!(e.at, "WriteCampaignRequest.SegmentID");
        assert!(e.what.contains("unknown key") && e.what.contains("SegmentId") && e.what.ends_with("(line 3)"), "{e}");
        let e = super::campaign("{\"Name\": \"x\",\n\"MessageConfiguration\": {\"BaiduMessage\": {}}}").unwrap_err();
        assert_eq!(e.at, "WriteCampaignRequest.MessageConfiguration.BaiduMessage");
        assert!(e.what.starts_with("not supported by Herald") && e.what.ends_with("(line 2)"), "{e}");
        let e = super::campaign("{\"Name\": \"x\", \"MessageConfiguration\": {\"EmailMessage\": {\"Subject\": \"s\"}}}").unwrap_err();
        assert_eq!(e.at, "WriteCampaignRequest.MessageConfiguration.EmailMessage.Subject");
        // The API's shape is as strict, in YAML too.
        let e = super::campaign("name: x\nsegment_id: s1\nschedule:\n  start_time: IMMEDIATE\n  frequncy: ONCE\n").unwrap_err();
        assert_eq!(e.at, "campaign.schedule.frequncy");
        assert!(e.what.ends_with("(line 5)"), "{e}");
        let e =
            super::campaign(r#"{"name": "x", "message_configuration": {"apns_message": {"title": "t", "colour": "red"}}}"#).unwrap_err();
        assert_eq!(e.at, "campaign.message_configuration.apns_message.colour");
    }
}
