//! Pinpoint's service model (botocore's `service-2.json`, vendored under `proto/pinpoint/`):
//! the operations' methods, paths and status codes, and the shapes of their inputs and
//! outputs. The REST door routes requests, reads their parameters and checks their members
//! from it, so its wire format is the one every AWS SDK is generated from.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Map, Value};

const MODEL: &str = include_str!("../../proto/pinpoint/2016-12-01/service-2.json");

#[derive(Debug, Deserialize)]
struct RawModel {
    operations: BTreeMap<String, RawOperation>,
    shapes: HashMap<String, Shape>,
}

#[derive(Debug, Deserialize)]
struct RawOperation {
    http: RawHttp,
    input: Option<ShapeRef>,
    output: Option<ShapeRef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawHttp {
    method: String,
    request_uri: String,
    response_code: Option<u16>,
}

#[derive(Debug, Deserialize)]
struct ShapeRef {
    shape: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Structure,
    List,
    Map,
    String,
    Integer,
    Long,
    Double,
    Boolean,
    Timestamp,
    Blob,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    #[default]
    Body,
    Uri,
    Querystring,
    Header,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub shape: String,
    #[serde(default)]
    pub location: Location,
    pub location_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shape {
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default)]
    pub members: BTreeMap<String, Member>,
    #[serde(default)]
    pub required: Vec<String>,
    pub payload: Option<String>,
    /// A list's element.
    pub member: Option<ShapeRef2>,
    pub key: Option<ShapeRef2>,
    pub value: Option<ShapeRef2>,
    #[serde(rename = "enum", default)]
    pub values: Vec<String>,
    pub timestamp_format: Option<String>,
    pub error: Option<RawError>,
}

#[derive(Debug, Deserialize)]
pub struct ShapeRef2 {
    pub shape: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawError {
    pub http_status_code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Label(String),
}

#[derive(Debug)]
pub struct Operation {
    pub name: String,
    pub method: http::Method,
    segments: Vec<Segment>,
    pub response_code: u16,
    pub input: Option<String>,
    pub output: Option<String>,
}

#[derive(Debug)]
pub struct Model {
    pub operations: Vec<Operation>,
    shapes: HashMap<String, Shape>,
}

/// Where a request's path led.
pub enum Routed<'a> {
    Found(&'a Operation, Vec<(String, String)>),
    /// The path exists under other methods.
    WrongMethod,
    NotFound,
}

/// A member that does not fit its shape, named by its path from the operation's input
/// (`WriteCampaignRequest.Schedule.StartTime`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub member: String,
    pub why: String,
}

impl Model {
    pub fn get() -> &'static Model {
        static MODEL_CELL: OnceLock<Model> = OnceLock::new();
        MODEL_CELL.get_or_init(|| Model::parse(MODEL).expect("the vendored Pinpoint model parses"))
    }

    fn parse(text: &str) -> Result<Model, serde_json::Error> {
        let raw: RawModel = serde_json::from_str(text)?;
        let operations = raw
            .operations
            .into_iter()
            .map(|(name, op)| {
                let path = op.http.request_uri.split('?').next().unwrap_or_default().to_string();
                let segments = path
                    .split('/')
                    .skip(1)
                    .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(label) => Segment::Label(label.trim_end_matches('+').to_string()),
                        None => Segment::Literal(s.to_string()),
                    })
                    .collect();
                Operation {
                    name,
                    method: op.http.method.parse().unwrap_or(http::Method::GET),
                    segments,
                    response_code: op.http.response_code.unwrap_or(200),
                    input: op.input.map(|r| r.shape),
                    output: op.output.map(|r| r.shape),
                }
            })
            .collect();
        Ok(Model { operations, shapes: raw.shapes })
    }

    pub fn shape(&self, name: &str) -> Option<&Shape> {
        self.shapes.get(name)
    }

    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.iter().find(|o| o.name == name)
    }

    /// The operation a method and path (as sent, percent-encoded) name, with its labels
    /// decoded. Literal segments win over labels.
    pub fn route(&self, method: &http::Method, path: &str) -> Routed<'_> {
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let mut best: Option<(&Operation, usize)> = None;
        let mut other_method = false;
        for op in &self.operations {
            if op.segments.len() != parts.len() {
                continue;
            }
            let mut literals = 0;
            let fits = op.segments.iter().zip(&parts).all(|(seg, part)| match seg {
                Segment::Literal(l) => {
                    literals += 1;
                    l == part
                }
                Segment::Label(_) => !part.is_empty(),
            });
            if !fits {
                continue;
            }
            if op.method != *method {
                other_method = true;
                continue;
            }
            if best.is_none_or(|(_, n)| literals > n) {
                best = Some((op, literals));
            }
        }
        match best {
            Some((op, _)) => {
                let labels = op
                    .segments
                    .iter()
                    .zip(&parts)
                    .filter_map(|(seg, part)| match seg {
                        Segment::Label(l) => Some((l.clone(), percent_encoding::percent_decode_str(part).decode_utf8_lossy().into_owned())),
                        Segment::Literal(_) => None,
                    })
                    .collect();
                Routed::Found(op, labels)
            }
            None if other_method => Routed::WrongMethod,
            None => Routed::NotFound,
        }
    }

    /// The operation's input as one JSON object keyed by member name: labels, query
    /// parameters and headers where the model places them, the payload member from the body
    /// (or the body's members). Every member is checked against its shape.
    pub fn read_input(
        &self,
        op: &Operation,
        labels: &[(String, String)],
        query: &[(String, String)],
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Map<String, Value>, Vec<Violation>> {
        let mut input = Map::new();
        let Some(shape_name) = &op.input else { return Ok(input) };
        let Some(shape) = self.shape(shape_name) else { return Ok(input) };
        let mut violations = Vec::new();
        let body_json = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(v) => Some(v),
                Err(e) => {
                    return Err(vec![Violation { member: String::new(), why: format!("the body is not JSON: {e}") }]);
                }
            }
        };
        for (name, member) in &shape.members {
            let wire = member.location_name.as_deref().unwrap_or(name);
            let found: Option<Value> = match member.location {
                Location::Uri => labels.iter().find(|(l, _)| l == wire).map(|(_, v)| Value::String(v.clone())),
                Location::Querystring => {
                    let values: Vec<&String> = query.iter().filter(|(k, _)| k == wire).map(|(_, v)| v).collect();
                    match (self.shape(&member.shape).map(|s| s.kind), values.as_slice()) {
                        (_, []) => None,
                        (Some(Kind::List), vs) => Some(Value::Array(vs.iter().map(|v| Value::String((*v).clone())).collect())),
                        (Some(kind), [v, ..]) => Some(scalar_from_text(kind, v)),
                        (None, [v, ..]) => Some(Value::String((*v).clone())),
                    }
                }
                Location::Header => headers.iter().find(|(h, _)| h.eq_ignore_ascii_case(wire)).map(|(_, v)| Value::String(v.clone())),
                Location::Body if shape.payload.as_deref() == Some(name) => body_json.clone(),
                Location::Body => match &body_json {
                    Some(Value::Object(o)) => o.get(wire).cloned(),
                    _ => None,
                },
            };
            if let Some(v) = found {
                self.check(&member.shape, &v, name, &mut violations);
                input.insert(name.clone(), v);
            }
        }
        if shape.payload.is_none() {
            match &body_json {
                Some(Value::Object(o)) => {
                    for key in o.keys() {
                        let known = shape
                            .members
                            .iter()
                            .any(|(n, m)| m.location == Location::Body && m.location_name.as_deref().unwrap_or(n) == key);
                        if !known {
                            violations.push(Violation { member: key.clone(), why: format!("is not a member of {shape_name}") });
                        }
                    }
                }
                Some(_) => violations.push(Violation { member: String::new(), why: "the body must be a JSON object".into() }),
                None => {}
            }
        }
        for required in &shape.required {
            if !input.contains_key(required) {
                violations.push(Violation { member: required.clone(), why: "is required".into() });
            }
        }
        if violations.is_empty() {
            Ok(input)
        } else {
            Err(violations)
        }
    }

    /// Checks a value against a shape: kinds, enums and required members, recursively.
    pub fn check(&self, shape_name: &str, value: &Value, path: &str, out: &mut Vec<Violation>) {
        let Some(shape) = self.shape(shape_name) else { return };
        let mut bad = |why: String| out.push(Violation { member: path.to_string(), why });
        match (shape.kind, value) {
            (_, Value::Null) => {}
            (Kind::Structure, Value::Object(o)) => {
                for (key, v) in o {
                    match shape.members.iter().find(|(n, m)| m.location_name.as_deref().unwrap_or(n) == key) {
                        Some((name, m)) => self.check(&m.shape, v, &format!("{path}.{name}"), out),
                        None => out.push(Violation { member: format!("{path}.{key}"), why: format!("is not a member of {shape_name}") }),
                    }
                }
                for required in &shape.required {
                    if o.get(required).is_none_or(Value::is_null) {
                        out.push(Violation { member: format!("{path}.{required}"), why: "is required".into() });
                    }
                }
            }
            (Kind::List, Value::Array(items)) => {
                if let Some(m) = &shape.member {
                    for (i, v) in items.iter().enumerate() {
                        self.check(&m.shape, v, &format!("{path}[{i}]"), out);
                    }
                }
            }
            (Kind::Map, Value::Object(o)) => {
                if let Some(m) = &shape.value {
                    for (k, v) in o {
                        self.check(&m.shape, v, &format!("{path}.{k}"), out);
                    }
                }
            }
            (Kind::String, Value::String(s)) => {
                if !shape.values.is_empty() && !shape.values.iter().any(|v| v == s) {
                    bad(format!("must be one of {}", shape.values.join(", ")));
                }
            }
            (Kind::Integer | Kind::Long, Value::Number(n)) if n.is_i64() => {}
            (Kind::Double, Value::Number(_)) => {}
            (Kind::Boolean, Value::Bool(_)) => {}
            (Kind::Timestamp, Value::String(_) | Value::Number(_)) => {}
            (Kind::Blob, Value::String(_)) => {}
            (kind, _) => bad(format!("must be {}", kind_name(kind))),
        }
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Structure => "an object",
        Kind::List => "a list",
        Kind::Map => "a map",
        Kind::String => "a string",
        Kind::Integer | Kind::Long => "an integer",
        Kind::Double => "a number",
        Kind::Boolean => "a boolean",
        Kind::Timestamp => "a timestamp",
        Kind::Blob => "base64 data",
    }
}

/// A query parameter's text as the JSON value of its kind (left as text when it does not
/// parse, so the shape check names it).
fn scalar_from_text(kind: Kind, text: &str) -> Value {
    match kind {
        Kind::Integer | Kind::Long => text.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(text.into())),
        Kind::Double => text.parse::<f64>().map(Value::from).unwrap_or_else(|_| Value::String(text.into())),
        Kind::Boolean => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(text.into()),
        },
        _ => Value::String(text.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_has_every_operation_and_routes_them() {
        let m = Model::get();
        assert_eq!(m.operations.len(), 122);
        let Routed::Found(op, labels) = m.route(&http::Method::PUT, "/v1/apps/abc/endpoints/e%2F1") else { panic!() };
        assert_eq!(op.name, "UpdateEndpoint");
        assert_eq!(labels, vec![("application-id".into(), "abc".into()), ("endpoint-id".into(), "e/1".into())]);
        let Routed::Found(op, _) = m.route(&http::Method::GET, "/v1/templates/t/email/versions") else { panic!() };
        assert_eq!(op.name, "ListTemplateVersions");
        let Routed::Found(op, _) = m.route(&http::Method::GET, "/v1/apps/abc/channels") else { panic!() };
        assert_eq!(op.name, "GetChannels");
        assert!(matches!(m.route(&http::Method::PATCH, "/v1/apps"), Routed::WrongMethod));
        assert!(matches!(m.route(&http::Method::GET, "/v2/nothing"), Routed::NotFound));
    }

    #[test]
    fn inputs_are_read_where_the_model_puts_them_and_checked() {
        let m = Model::get();
        let op = m.operation("GetSegments").unwrap();
        let input = m.read_input(op, &[("application-id".into(), "a".into())], &[("page-size".into(), "5".into())], &[], b"").unwrap();
        assert_eq!(input["PageSize"], "5");
        let op = m.operation("CreateCampaign").unwrap();
        let body = br#"{"Name":"n","SegmentId":"s","Schedule":{"StartTime":"IMMEDIATE","Frequency":"SOMETIMES"},"Bogus":1}"#;
        let errs = m.read_input(op, &[("application-id".into(), "a".into())], &[], &[], body).unwrap_err();
        let members: Vec<&str> = errs.iter().map(|v| v.member.as_str()).collect();
        assert!(members.contains(&"WriteCampaignRequest.Schedule.Frequency"), "{errs:?}");
        assert!(members.contains(&"WriteCampaignRequest.Bogus"), "{errs:?}");
    }
}
