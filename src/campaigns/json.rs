//! Campaign definitions as JSON or YAML in the API's shape (snake_case field names, enum
//! values by name: `frequency: DAILY`), for `herald campaigns create FILE`.

use serde_json::{Map, Value};

use crate::proto::v1::{
    Campaign, CampaignLimits, CustomMessage, DirectMessageConfiguration, EmailMessage, EventFilter, FilterType, Frequency, QuietTime,
    Schedule, TemplateConfiguration, TemplateReference, Treatment,
};

use crate::domain::json::bad;
pub use crate::domain::json::ShapeError;

type R<T> = Result<T, ShapeError>;

fn obj<'a>(v: &'a Value, at: &str) -> R<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| bad(at, "expected an object"))
}

fn text(o: &Map<String, Value>, k: &str, at: &str) -> R<String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(bad(&format!("{at}.{k}"), "expected a string")),
    }
}

fn int(o: &Map<String, Value>, k: &str, at: &str) -> R<Option<i32>> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().and_then(|n| i32::try_from(n).ok()).map(Some).ok_or_else(|| bad(&format!("{at}.{k}"), "expected an integer")),
    }
}

fn boolean(o: &Map<String, Value>, k: &str, at: &str) -> R<bool> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(false),
        Some(v) => v.as_bool().ok_or_else(|| bad(&format!("{at}.{k}"), "expected true or false")),
    }
}

fn strings(o: &Map<String, Value>, k: &str, at: &str) -> R<Vec<String>> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => {
            a.iter().map(|x| x.as_str().map(str::to_string).ok_or_else(|| bad(&format!("{at}.{k}"), "expected strings"))).collect()
        }
        Some(_) => Err(bad(&format!("{at}.{k}"), "expected a list")),
    }
}

fn template(o: &Map<String, Value>, k: &str, at: &str) -> R<Option<TemplateReference>> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let f = format!("{at}.{k}");
            let t = obj(v, &f)?;
            Ok(Some(TemplateReference { name: text(t, "name", &f)?, version: int(t, "version", &f)?.unwrap_or(0) }))
        }
    }
}

fn message(v: Option<&Value>, at: &str) -> R<Option<DirectMessageConfiguration>> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    let o = obj(v, at)?;
    let mut m = DirectMessageConfiguration::default();
    if let Some(e) = o.get("email_message").filter(|v| !v.is_null()) {
        let f = format!("{at}.email_message");
        let e = obj(e, &f)?;
        m.email_message = Some(EmailMessage {
            from_address: text(e, "from_address", &f)?,
            reply_to_addresses: strings(e, "reply_to_addresses", &f)?,
            raw_message: text(e, "raw_message", &f)?,
            subject: text(e, "subject", &f)?,
            html_part: text(e, "html_part", &f)?,
            text_part: text(e, "text_part", &f)?,
            substitutions: Default::default(),
        });
    }
    if let Some(c) = o.get("custom_message").filter(|v| !v.is_null()) {
        let f = format!("{at}.custom_message");
        m.custom_message = Some(CustomMessage { data: text(obj(c, &f)?, "data", &f)? });
    }
    Ok(Some(m))
}

fn templates(v: Option<&Value>, at: &str) -> R<Option<TemplateConfiguration>> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    let o = obj(v, at)?;
    Ok(Some(TemplateConfiguration {
        email_template: template(o, "email_template", at)?,
        custom_template: template(o, "custom_template", at)?,
        sms_template: template(o, "sms_template", at)?,
        push_template: template(o, "push_template", at)?,
    }))
}

fn schedule(v: Option<&Value>, at: &str) -> R<Option<Schedule>> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    let o = obj(v, at)?;
    let frequency = text(o, "frequency", at)?;
    let freq = if frequency.is_empty() {
        Frequency::Unspecified
    } else {
        Frequency::from_str_name(&format!("FREQUENCY_{}", frequency.to_ascii_uppercase()))
            .ok_or_else(|| bad(&format!("{at}.frequency"), format!("unknown value '{frequency}'")))?
    };
    let mut s = Schedule {
        start_time: text(o, "start_time", at)?,
        end_time: text(o, "end_time", at)?,
        frequency: freq as i32,
        is_local_time: boolean(o, "is_local_time", at)?,
        timezone: text(o, "timezone", at)?,
        ..Default::default()
    };
    if let Some(q) = o.get("quiet_time").filter(|v| !v.is_null()) {
        let f = format!("{at}.quiet_time");
        let q = obj(q, &f)?;
        s.quiet_time = Some(QuietTime { start: text(q, "start", &f)?, end: text(q, "end", &f)? });
    }
    if let Some(e) = o.get("event_filter").filter(|v| !v.is_null()) {
        let f = format!("{at}.event_filter");
        let e = obj(e, &f)?;
        let ft = text(e, "filter_type", &f)?;
        let filter_type = if ft.is_empty() {
            FilterType::Endpoint
        } else {
            FilterType::from_str_name(&format!("FILTER_TYPE_{}", ft.to_ascii_uppercase()))
                .ok_or_else(|| bad(&format!("{f}.filter_type"), format!("unknown value '{ft}'")))?
        };
        // Attribute and metric dimensions in Pinpoint's shape, as in segment files.
        let mut dims = serde_json::Map::new();
        for (key, pinpoint) in [("attributes", "Attributes"), ("metrics", "Metrics")] {
            if let Some(v) = e.get(key) {
                dims.insert(pinpoint.into(), v.clone());
            }
        }
        let d = crate::segments::json::dimensions(&Value::Object(dims), &f)
            .map_err(|e| bad(&e.at.replace(".Attributes", ".attributes").replace(".Metrics", ".metrics"), e.what))?;
        s.event_filter = Some(EventFilter {
            filter_type: filter_type as i32,
            exclude_event_types: boolean(e, "exclude_event_types", &f)?,
            event_types: strings(e, "event_types", &f)?,
            attributes: d.attributes,
            metrics: d.metrics,
        });
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

/// A campaign definition: JSON, or YAML when it is not JSON.
pub fn campaign(text_in: &str) -> R<Campaign> {
    let v = document(text_in)?;
    let at = "campaign";
    let o = obj(&v, at)?;
    let mut c = Campaign {
        name: text(o, "name", at)?,
        description: text(o, "description", at)?,
        segment_id: text(o, "segment_id", at)?,
        segment_version: int(o, "segment_version", at)?.unwrap_or(0),
        message_configuration: message(o.get("message_configuration"), "campaign.message_configuration")?,
        template_configuration: templates(o.get("template_configuration"), "campaign.template_configuration")?,
        schedule: schedule(o.get("schedule"), "campaign.schedule")?,
        holdout_percent: int(o, "holdout_percent", at)?.unwrap_or(0),
        treatment_name: text(o, "treatment_name", at)?,
        treatment_description: text(o, "treatment_description", at)?,
        is_paused: boolean(o, "is_paused", at)?,
        engagement_tracking: match o.get("engagement_tracking") {
            None | Some(Value::Null) => None,
            Some(_) => Some(boolean(o, "engagement_tracking", at)?),
        },
        ..Default::default()
    };
    if let Some(l) = o.get("limits").filter(|v| !v.is_null()) {
        let f = "campaign.limits";
        let l = obj(l, f)?;
        c.limits = Some(CampaignLimits {
            daily: int(l, "daily", f)?,
            total: int(l, "total", f)?,
            messages_per_second: int(l, "messages_per_second", f)?,
            maximum_duration: int(l, "maximum_duration", f)?,
            session: int(l, "session", f)?,
        });
    }
    if let Some(ts) = o.get("additional_treatments").and_then(Value::as_array) {
        for (i, t) in ts.iter().enumerate() {
            let f = format!("campaign.additional_treatments[{i}]");
            let to = obj(t, &f)?;
            c.additional_treatments.push(Treatment {
                id: 0,
                treatment_name: text(to, "treatment_name", &f)?,
                treatment_description: text(to, "treatment_description", &f)?,
                size_percent: int(to, "size_percent", &f)?.unwrap_or(0),
                message_configuration: message(to.get("message_configuration"), &format!("{f}.message_configuration"))?,
                template_configuration: templates(to.get("template_configuration"), &format!("{f}.template_configuration"))?,
                schedule: schedule(to.get("schedule"), &format!("{f}.schedule"))?,
            });
        }
    }
    if let Some(t) = o.get("tags").filter(|v| !v.is_null()) {
        for (k, v) in obj(t, "campaign.tags")? {
            c.tags.insert(k.clone(), v.as_str().ok_or_else(|| bad(&format!("campaign.tags.{k}"), "expected a string"))?.to_string());
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
}
