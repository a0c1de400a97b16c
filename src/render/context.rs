//! The render context: Pinpoint's message variables for one endpoint, the request's or
//! campaign's substitutions, and the template's default substitutions for what is missing.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::value::number_value;
use crate::domain::endpoint::channel_name;
use crate::proto::v1::{AttributeValues, ChannelType, Endpoint, EndpointStatus, OptOut};

fn lists(map: &HashMap<String, AttributeValues>) -> Value {
    Value::Object(map.iter().map(|(k, v)| (k.clone(), Value::from(v.values.clone()))).collect())
}

fn non_empty(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .filter(|(_, v)| !matches!(v, Value::String(s) if s.is_empty()) && !v.is_null())
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// The endpoint variables a template can reach: only these are built for each recipient. For
/// `Attributes` and `User.UserAttributes`, when every mention names a key (`Attributes.Plan`,
/// `User.UserAttributes.[First Name]`), only those keys are copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    bits: u16,
    /// `None`: every key.
    attributes: Option<Vec<String>>,
    user_attributes: Option<Vec<String>>,
}

const ROOT_NAMES: [&str; 14] = [
    "Id",
    "Address",
    "ChannelType",
    "EndpointStatus",
    "OptOut",
    "CreationDate",
    "EffectiveDate",
    "RequestId",
    "CohortId",
    "Attributes",
    "Metrics",
    "Location",
    "Demographic",
    "User",
];

impl Roots {
    pub fn all() -> Roots {
        Roots { bits: u16::MAX, attributes: None, user_attributes: None }
    }

    /// The roots named anywhere in a template's sources. A template that can reach the context
    /// without naming a root (`this`, `lookup`, `@root`, `..`) gets them all.
    pub fn referenced_by<'a>(sources: impl IntoIterator<Item = &'a str> + Clone) -> Roots {
        let mut bits = 0u16;
        for source in sources.clone() {
            if ["this", "lookup", "@root", ".."].iter().any(|w| source.contains(w)) {
                return Roots::all();
            }
            for (i, name) in ROOT_NAMES.iter().enumerate() {
                if source.contains(name) {
                    bits |= 1 << i;
                }
            }
        }
        Roots {
            bits,
            attributes: named_keys(sources.clone(), "Attributes", true),
            user_attributes: named_keys(sources, "UserAttributes", false),
        }
    }

    fn has(&self, name: &str) -> bool {
        ROOT_NAMES.iter().position(|n| *n == name).is_some_and(|i| self.bits & (1 << i) != 0)
    }
}

/// The keys named after each `{map}.` in `sources`, or `None` when some mention of `map` is
/// not followed by a plain key (the whole map is reachable then). `top`: `map` must not be
/// the tail of a longer name (`Attributes` in `UserAttributes`).
fn named_keys<'a>(sources: impl IntoIterator<Item = &'a str>, map: &str, top: bool) -> Option<Vec<String>> {
    let mut keys: Vec<String> = Vec::new();
    for source in sources {
        for (at, _) in source.match_indices(map) {
            if top && source[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = source[at + map.len()..].strip_prefix('.')?;
            let key = match rest.strip_prefix('[') {
                Some(literal) => &literal[..literal.find(']')?],
                None => {
                    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-')).unwrap_or(rest.len());
                    &rest[..end]
                }
            };
            if key.is_empty() {
                return None;
            }
            if !keys.iter().any(|k| k == key) {
                keys.push(key.to_string());
            }
        }
    }
    Some(keys)
}

fn lists_of(map: &HashMap<String, AttributeValues>, keys: &Option<Vec<String>>) -> Value {
    match keys {
        None => lists(map),
        Some(keys) => Value::Object(
            keys.iter().filter_map(|k| map.get_key_value(k)).map(|(k, v)| (k.clone(), Value::from(v.values.clone()))).collect(),
        ),
    }
}

/// An endpoint as Pinpoint's message variables (`Id`, `Address`, `User.UserAttributes.*`, ...),
/// limited to `roots`.
pub fn endpoint_variables(e: &Endpoint, roots: &Roots) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: &dyn Fn() -> Value| {
        if roots.has(k) {
            let v = v();
            if !matches!(&v, Value::String(s) if s.is_empty()) {
                m.insert(k.to_string(), v);
            }
        }
    };
    put("Id", &|| e.id.clone().into());
    put("Address", &|| e.address.clone().into());
    put("ChannelType", &|| ChannelType::try_from(e.channel_type).map(channel_name).unwrap_or("").into());
    put("EndpointStatus", &|| if e.endpoint_status == EndpointStatus::Inactive as i32 { "INACTIVE" } else { "ACTIVE" }.into());
    put("OptOut", &|| if e.opt_out == OptOut::All as i32 { "ALL" } else { "NONE" }.into());
    put("CreationDate", &|| e.creation_date.clone().into());
    put("EffectiveDate", &|| e.effective_date.clone().into());
    put("RequestId", &|| e.request_id.clone().into());
    put("CohortId", &|| e.cohort_id.to_string().into());
    put("Attributes", &|| lists_of(&e.attributes, &roots.attributes));
    put("Metrics", &|| Value::Object(e.metrics.iter().map(|(k, v)| (k.clone(), number_value(*v))).collect()));
    if let Some(l) = &e.location {
        put("Location", &|| {
            non_empty(vec![
                ("City", l.city.clone().into()),
                ("Country", l.country.clone().into()),
                ("Latitude", l.latitude.map(number_value).unwrap_or(Value::Null)),
                ("Longitude", l.longitude.map(number_value).unwrap_or(Value::Null)),
                ("PostalCode", l.postal_code.clone().into()),
                ("Region", l.region.clone().into()),
            ])
        });
    }
    if let Some(d) = &e.demographic {
        put("Demographic", &|| {
            non_empty(vec![
                ("AppVersion", d.app_version.clone().into()),
                ("Locale", d.locale.clone().into()),
                ("Make", d.make.clone().into()),
                ("Model", d.model.clone().into()),
                ("ModelVersion", d.model_version.clone().into()),
                ("Platform", d.platform.clone().into()),
                ("PlatformVersion", d.platform_version.clone().into()),
                ("Timezone", d.timezone.clone().into()),
            ])
        });
    }
    if let Some(u) = &e.user {
        put("User", &|| {
            let mut user = Map::new();
            if !u.user_id.is_empty() {
                user.insert("UserId".into(), u.user_id.clone().into());
            }
            user.insert("UserAttributes".into(), lists_of(&u.user_attributes, &roots.user_attributes));
            Value::Object(user)
        });
    }
    m
}

/// Top-level variables that always hold one string.
const SCALAR_ROOTS: &[&str] =
    &["Id", "Address", "ChannelType", "EndpointStatus", "OptOut", "CreationDate", "EffectiveDate", "RequestId", "CohortId"];
/// Objects whose members always hold one string or number.
const SCALAR_OBJECTS: &[&str] = &["Location", "Demographic", "Metrics"];

/// Splits a variable as written in a template (`User.UserAttributes.[Last Name].[0]`) into
/// its segments.
pub fn path_segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_literal = false;
    for c in path.chars() {
        match c {
            '[' if !in_literal && cur.is_empty() => in_literal = true,
            ']' if in_literal => in_literal = false,
            '.' if !in_literal => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

fn absent(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

/// Stores `default` at `path` when the value there is absent, null or `[]`; missing parents
/// are created as objects.
pub fn apply_default(root: &mut Map<String, Value>, path: &[String], default: &str) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = root;
    for seg in parents {
        let entry = node.entry(seg.clone()).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Array(items) = entry {
            // An index into a list: the rest of the path lives in that element.
            let object: Map<String, Value> = items.iter().enumerate().map(|(i, v)| (i.to_string(), v.clone())).collect();
            *entry = Value::Object(object);
        }
        if !entry.is_object() {
            if !absent(Some(entry)) {
                return;
            }
            *entry = Value::Object(Map::new());
        }
        node = entry.as_object_mut().expect("made an object above");
    }
    if absent(node.get(last)) {
        node.insert(last.clone(), Value::String(default.to_string()));
    }
}

/// The whole context: endpoint variables, then substitutions (top-level names with list
/// values, which win over endpoint variables of the same name), then defaults for what is
/// still missing.
pub fn build(
    endpoint: Option<&Endpoint>,
    substitutions: &HashMap<String, Vec<String>>,
    defaults: &[(Vec<String>, String)],
    roots: &Roots,
) -> Value {
    let mut root = endpoint.map(|e| endpoint_variables(e, roots)).unwrap_or_default();
    for (k, v) in substitutions {
        // A substitution named like a scalar variable stays scalar (its printed form), so the
        // variable prints the same however it was set.
        let value = if SCALAR_ROOTS.contains(&k.as_str()) || SCALAR_OBJECTS.contains(&k.as_str()) || k == "User" {
            Value::String(v.join(","))
        } else {
            Value::from(v.clone())
        };
        root.insert(k.clone(), value);
    }
    for (path, default) in defaults {
        apply_default(&mut root, path, default);
    }
    Value::Object(root)
}

/// Why a template's default substitutions do not read.
#[derive(Debug, thiserror::Error)]
pub enum DefaultsError {
    #[error("must be a JSON object of variable names to strings: {0}")]
    NotAnObject(serde_json::Error),
    #[error("the default for '{name}' must be a string, not {value}")]
    NotAString { name: String, value: Value },
}

/// Parses a template's default substitutions (a JSON object of variable → string).
pub fn parse_defaults(json: &str) -> Result<Vec<(Vec<String>, String)>, DefaultsError> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let map: Map<String, Value> = serde_json::from_str(json).map_err(DefaultsError::NotAnObject)?;
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((path_segments(&k), s)),
            value => Err(DefaultsError::NotAString { name: k, value }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::EndpointUser;
    use serde_json::json;

    #[test]
    fn only_referenced_roots_are_built() {
        let e = Endpoint { id: "e1".into(), address: "a@b.example".into(), ..Default::default() };
        let roots = Roots::referenced_by(["Hi {{Id}}", "{{upper Attributes.Plan.[0]}}"]);
        let ctx = build(Some(&e), &HashMap::new(), &[], &roots);
        assert_eq!(ctx["Id"], "e1");
        assert!(ctx.get("Address").is_none());
        assert_eq!(Roots::referenced_by(["{{#each this}}{{/each}}"]), Roots::all());
        assert_eq!(Roots::referenced_by(["{{lookup . \"Address\"}}"]), Roots::all());
    }

    #[test]
    fn only_the_attribute_keys_named_are_copied() {
        let one = |v: &str| AttributeValues { values: vec![v.to_string()] };
        let e = Endpoint {
            attributes: [("Plan".to_string(), one("Pro")), ("Team".to_string(), one("x")), ("Last Name".to_string(), one("Ng"))].into(),
            user: Some(EndpointUser {
                user_attributes: [("FirstName".to_string(), one("Ana")), ("City".to_string(), one("Oslo"))].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let roots = Roots::referenced_by(["Hi {{User.UserAttributes.FirstName}} {{Attributes.[Last Name]}}", "{{Attributes.Plan.[0]}}"]);
        let ctx = build(Some(&e), &HashMap::new(), &[], &roots);
        assert_eq!(ctx["User"]["UserAttributes"], json!({"FirstName": ["Ana"]}));
        assert_eq!(ctx["Attributes"], json!({"Plan": ["Pro"], "Last Name": ["Ng"]}));
        // A mention that is not a plain key reaches the whole map.
        for whole in [
            "{{#each User.UserAttributes}}{{@key}}{{/each}}",
            "{{#with User.UserAttributes}}{{City}}{{/with}}",
            "{{User.UserAttributes/City}}",
        ] {
            let ctx = build(Some(&e), &HashMap::new(), &[], &Roots::referenced_by([whole]));
            assert_eq!(ctx["User"]["UserAttributes"], json!({"FirstName": ["Ana"], "City": ["Oslo"]}), "{whole}");
        }
        let ctx = build(Some(&e), &HashMap::new(), &[], &Roots::referenced_by(["{{#each Attributes}}{{/each}}"]));
        assert_eq!(ctx["Attributes"].as_object().unwrap().len(), 3);
    }

    #[test]
    fn paths_split_with_segment_literals() {
        assert_eq!(path_segments("User.UserAttributes.[Last Name].[0]"), ["User", "UserAttributes", "Last Name", "0"]);
        assert_eq!(path_segments("Month"), ["Month"]);
    }

    #[test]
    fn defaults_fill_only_what_is_missing() {
        let e = Endpoint {
            id: "e1".into(),
            user: Some(EndpointUser {
                user_id: "u".into(),
                user_attributes: [("FirstName".to_string(), AttributeValues { values: vec!["Jane".into()] })].into(),
            }),
            metrics: [("sessions".to_string(), 12.0)].into(),
            ..Default::default()
        };
        let defaults = parse_defaults(r#"{"User.UserAttributes.Activity":"running","User.UserAttributes.FirstName":"friend","User.UserAttributes.[Last Name].[0]":"Doe"}"#).unwrap();
        let ctx = build(Some(&e), &[("Month".to_string(), vec!["March".to_string()])].into(), &defaults, &Roots::all());
        assert_eq!(ctx["User"]["UserAttributes"]["Activity"], json!("running"));
        assert_eq!(ctx["User"]["UserAttributes"]["FirstName"], json!(["Jane"]));
        assert_eq!(ctx["User"]["UserAttributes"]["Last Name"]["0"], json!("Doe"));
        assert_eq!(ctx["Month"], json!(["March"]));
        assert_eq!(ctx["Metrics"]["sessions"], json!(12));
        assert!(parse_defaults(r#"{"a": 1}"#).is_err());
    }
}
