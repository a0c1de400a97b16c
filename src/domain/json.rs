//! Records as JSON in Pinpoint's PascalCase shape — the shape `herald endpoints import` reads
//! and custom-channel payloads carry, so an exported endpoint imports back unchanged.

use serde_json::{json, Map, Value};

use crate::domain::endpoint::channel_name;
use crate::proto::v1::{App, AttributeValues, ChannelType, Endpoint, EndpointStatus, OptOut};

/// Where in a JSON file (a segment definition, a campaign) something is wrong, as a dotted
/// path, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {what}")]
pub struct ShapeError {
    pub at: String,
    pub what: String,
}

/// A [`ShapeError`] at `at`.
pub fn bad(at: &str, what: impl std::fmt::Display) -> ShapeError {
    ShapeError { at: at.to_string(), what: what.to_string() }
}

fn attributes(map: &std::collections::HashMap<String, AttributeValues>) -> Value {
    let mut keys: Vec<_> = map.keys().collect();
    keys.sort();
    Value::Object(keys.into_iter().map(|k| (k.clone(), json!(map[k].values))).collect())
}

fn non_empty(pairs: &[(&str, Value)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        let keep = match v {
            Value::String(s) => !s.is_empty(),
            Value::Null => false,
            _ => true,
        };
        if keep {
            m.insert((*k).to_string(), v.clone());
        }
    }
    Value::Object(m)
}

pub fn endpoint(e: &Endpoint) -> Value {
    let channel = ChannelType::try_from(e.channel_type).map(channel_name).unwrap_or("");
    let status = match EndpointStatus::try_from(e.endpoint_status) {
        Ok(EndpointStatus::Inactive) => "INACTIVE",
        _ => "ACTIVE",
    };
    let opt_out = match OptOut::try_from(e.opt_out) {
        Ok(OptOut::All) => "ALL",
        _ => "NONE",
    };
    let mut metrics: Vec<_> = e.metrics.iter().collect();
    metrics.sort_by(|a, b| a.0.cmp(b.0));
    let mut pairs = vec![
        ("Id", json!(e.id)),
        ("ApplicationId", json!(e.application_id)),
        ("ChannelType", json!(channel)),
        ("Address", json!(e.address)),
        ("EndpointStatus", json!(status)),
        ("OptOut", json!(opt_out)),
        ("CohortId", json!(e.cohort_id.to_string())),
        ("CreationDate", json!(e.creation_date)),
        ("EffectiveDate", json!(e.effective_date)),
        ("RequestId", json!(e.request_id)),
    ];
    if !e.attributes.is_empty() {
        pairs.push(("Attributes", attributes(&e.attributes)));
    }
    if !metrics.is_empty() {
        pairs.push(("Metrics", Value::Object(metrics.into_iter().map(|(k, v)| (k.clone(), json!(v))).collect())));
    }
    if let Some(l) = &e.location {
        pairs.push((
            "Location",
            non_empty(&[
                ("City", json!(l.city)),
                ("Country", json!(l.country)),
                ("Latitude", l.latitude.map_or(Value::Null, |v| json!(v))),
                ("Longitude", l.longitude.map_or(Value::Null, |v| json!(v))),
                ("PostalCode", json!(l.postal_code)),
                ("Region", json!(l.region)),
            ]),
        ));
    }
    if let Some(d) = &e.demographic {
        pairs.push((
            "Demographic",
            non_empty(&[
                ("AppVersion", json!(d.app_version)),
                ("Locale", json!(d.locale)),
                ("Make", json!(d.make)),
                ("Model", json!(d.model)),
                ("ModelVersion", json!(d.model_version)),
                ("Platform", json!(d.platform)),
                ("PlatformVersion", json!(d.platform_version)),
                ("Timezone", json!(d.timezone)),
            ]),
        ));
    }
    if let Some(u) = &e.user {
        let mut user = Map::new();
        if !u.user_id.is_empty() {
            user.insert("UserId".into(), json!(u.user_id));
        }
        if !u.user_attributes.is_empty() {
            user.insert("UserAttributes".into(), attributes(&u.user_attributes));
        }
        pairs.push(("User", Value::Object(user)));
    }
    non_empty(&pairs)
}

pub fn app(a: &App) -> Value {
    let settings = a.settings.clone().unwrap_or_default();
    let limits = settings.limits.unwrap_or_default();
    let quiet = settings.quiet_time.unwrap_or_default();
    json!({
        "Id": a.app_id,
        "Name": a.name,
        "CreationDate": a.creation_date,
        "tags": a.tags,
        "Settings": {
            "Limits": {
                "Daily": limits.daily,
                "Total": limits.total,
                "MessagesPerSecond": limits.messages_per_second,
                "MaximumDuration": limits.maximum_duration,
                "Session": limits.session,
            },
            "QuietTime": { "Start": quiet.start, "End": quiet.end },
            "LastModifiedDate": settings.last_modified_date,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::import::json_line;

    #[test]
    fn printed_endpoints_import_back_unchanged() {
        let line = r#"{"Id":"e1","ChannelType":"APNS_SANDBOX","Address":"tok","Attributes":{"Plan":["Pro","Team"]},"Metrics":{"Visits":3.0},"Location":{"Country":"US","Latitude":47.5},"Demographic":{"Timezone":"Europe/Berlin"},"User":{"UserId":"u1","UserAttributes":{"FirstName":["Ana"]}},"OptOut":"ALL","EndpointStatus":"INACTIVE"}"#;
        let parsed = json_line(line).unwrap();
        let printed = endpoint(&parsed).to_string();
        let again = json_line(&printed).unwrap();
        assert_eq!(parsed, again);
        assert_eq!(endpoint(&again)["ChannelType"], "APNS_SANDBOX");
    }
}

/// Readers of definition files (campaigns, journeys) parsed into JSON values: each names the
/// dotted path of what it refuses.
pub mod read {
    use serde_json::{Map, Value};

    use super::{bad, ShapeError};

    type R<T> = Result<T, ShapeError>;

    pub fn obj<'a>(v: &'a Value, at: &str) -> R<&'a Map<String, Value>> {
        v.as_object().ok_or_else(|| bad(at, "expected an object"))
    }

    /// Refuses keys outside `known`, naming the first.
    pub fn only(o: &Map<String, Value>, known: &[&str], at: &str) -> R<()> {
        match o.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(bad(&format!("{at}.{k}"), format!("unknown key; expected one of {}", known.join(", ")))),
            None => Ok(()),
        }
    }

    pub fn text(o: &Map<String, Value>, k: &str, at: &str) -> R<String> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(_) => Err(bad(&format!("{at}.{k}"), "expected a string")),
        }
    }

    pub fn int(o: &Map<String, Value>, k: &str, at: &str) -> R<Option<i32>> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                v.as_i64().and_then(|n| i32::try_from(n).ok()).map(Some).ok_or_else(|| bad(&format!("{at}.{k}"), "expected an integer"))
            }
        }
    }

    pub fn boolean(o: &Map<String, Value>, k: &str, at: &str) -> R<bool> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(false),
            Some(v) => v.as_bool().ok_or_else(|| bad(&format!("{at}.{k}"), "expected true or false")),
        }
    }

    pub fn strings(o: &Map<String, Value>, k: &str, at: &str) -> R<Vec<String>> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => {
                a.iter().map(|x| x.as_str().map(str::to_string).ok_or_else(|| bad(&format!("{at}.{k}"), "expected strings"))).collect()
            }
            Some(_) => Err(bad(&format!("{at}.{k}"), "expected a list")),
        }
    }

    pub fn sub<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
        o.get(k).filter(|v| !v.is_null())
    }

    /// The line (from 1) of `source` where `key` first appears as a key, for messages that
    /// point into a hand-written file.
    pub fn line_of(source: &str, key: &str) -> Option<usize> {
        let (quoted, yaml) = (format!("\"{key}\""), format!("{key}:"));
        source.lines().position(|l| l.contains(&quoted) || l.trim_start().trim_start_matches("- ").starts_with(&yaml)).map(|i| i + 1)
    }
}
