//! Pinpoint's JSON (PascalCase members, as the service model shapes them) to Herald's
//! protobuf messages and back, by name: a member `SegmentVersion` is the field
//! `segment_version`, an enum value `EMAIL` is `CHANNEL_TYPE_EMAIL`, a map of lists
//! (`Attributes`) is a map of `AttributeValues`. Where Pinpoint's name differs, `aliases`
//! says so; a member with no counterpart is refused, naming it, never dropped.

use std::borrow::Cow;

use base64::Engine as _;
use prost_reflect::{
    DynamicMessage, EnumDescriptor, FieldDescriptor, Kind as PKind, MapKey, MessageDescriptor, ReflectMessage, Value as PValue,
};
use serde_json::{Map, Number, Value};

use super::aliases::{alias, Alias};
use super::model::{Kind, Model, Violation};

/// `SegmentVersion` → `segment_version`, `APNSMessage` → `apns_message`, `RequestID` → `request_id`.
pub fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let boundary = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn screaming(name: &str) -> String {
    snake(name).to_ascii_uppercase()
}

/// The proto field a Pinpoint member of `shape` maps onto (empty: the member's members are
/// the message's own).
fn target(shape: Option<&str>, member: &str) -> Result<Cow<'static, str>, &'static str> {
    match shape.map(|s| alias(s, member)).unwrap_or(Alias::Same) {
        Alias::Same => Ok(Cow::Owned(snake(member))),
        Alias::Field(f) => Ok(Cow::Borrowed(f)),
        Alias::Flatten => Ok(Cow::Borrowed("")),
        Alias::Refused(why) => Err(why),
    }
}

/// Herald field paths set from Pinpoint member paths, so that Herald's own validation errors
/// can be told in Pinpoint's names.
#[derive(Debug, Default)]
pub struct Trail {
    entries: Vec<(String, String, Option<String>)>,
}

impl Trail {
    pub fn note(&mut self, herald: &str, pinpoint: &str, shape: Option<&str>) {
        self.entries.push((herald.to_string(), pinpoint.to_string(), shape.map(str::to_string)));
    }

    /// `campaign.schedule.frequency` → `WriteCampaignRequest.Schedule.Frequency`.
    pub fn pinpoint_name(&self, herald: &str) -> String {
        let best = self
            .entries
            .iter()
            .filter(|(h, _, _)| {
                // The empty path is a payload merged into the request itself: it holds every field.
                h.is_empty()
                    || herald == h
                    || (herald.starts_with(h.as_str()) && matches!(herald.as_bytes().get(h.len()), Some(b'.' | b'[')))
            })
            .max_by_key(|(h, _, _)| h.len());
        let Some((h, p, shape)) = best else { return herald.to_string() };
        let mut name = p.clone();
        let mut shape = shape.clone();
        let mut note = None;
        let model = Model::get();
        for seg in herald[h.len()..].split('.').filter(|s| !s.is_empty()) {
            let (field, index) = match seg.split_once('[') {
                Some((f, rest)) => (f, Some(rest)),
                None => (seg, None),
            };
            let member = shape.as_deref().and_then(|s| model.shape(s)).and_then(|s| {
                s.members.iter().find(|(n, _)| target(shape.as_deref(), n).is_ok_and(|t| t == field)).map(|(n, m)| (n.clone(), m))
            });
            match member {
                Some((n, m)) => {
                    name = format!("{name}.{n}");
                    shape = element_shape(model, &m.shape);
                }
                None => {
                    // Herald's own setting, which Pinpoint's request does not carry.
                    if shape.is_some() {
                        note =
                            Some(format!(" (Herald's `{field}`, which Pinpoint's request does not carry: set it over Herald's gRPC API)"));
                    }
                    name = format!("{name}.{}", pascal(field));
                    shape = None;
                }
            }
            if let Some(rest) = index {
                name = format!("{name}[{rest}");
            }
        }
        name + note.as_deref().unwrap_or_default()
    }
}

/// A structure shape itself, or the structure a list or map holds.
fn element_shape(model: &Model, name: &str) -> Option<String> {
    let s = model.shape(name)?;
    match s.kind {
        Kind::Structure => Some(name.to_string()),
        Kind::List => s.member.as_ref().map(|m| m.shape.clone()),
        Kind::Map => s.value.as_ref().map(|m| m.shape.clone()),
        _ => None,
    }
}

fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// Reads a Pinpoint structure into a message of `desc`.
pub struct Decoder<'a> {
    pub model: &'a Model,
    pub trail: Trail,
    pub violations: Vec<Violation>,
}

impl<'a> Decoder<'a> {
    pub fn new() -> Self {
        Self { model: Model::get(), trail: Trail::default(), violations: Vec::new() }
    }

    fn bad(&mut self, member: &str, why: impl Into<String>) {
        self.violations.push(Violation { member: member.to_string(), why: why.into() });
    }

    /// `value` (a JSON object of `shape`) as a message; `herald`/`pinpoint` are the paths of
    /// where it sits, for error messages.
    pub fn message(
        &mut self,
        shape: Option<&str>,
        value: &Value,
        desc: &MessageDescriptor,
        herald: &str,
        pinpoint: &str,
    ) -> DynamicMessage {
        let mut msg = DynamicMessage::new(desc.clone());
        self.trail.note(herald, pinpoint, shape);
        let Value::Object(members) = value else {
            self.bad(pinpoint, "must be an object");
            return msg;
        };
        let model = self.model;
        let shape_def = shape.and_then(|s| model.shape(s));
        for (key, v) in members {
            if v.is_null() {
                continue;
            }
            let found = shape_def.and_then(|s| s.members.iter().find(|(n, m)| m.location_name.as_deref().unwrap_or(n) == key));
            let (name, member_shape) = match found {
                Some((n, m)) => (n.as_str(), Some(m.shape.as_str())),
                None => (key.as_str(), None),
            };
            let p = if pinpoint.is_empty() { name.to_string() } else { format!("{pinpoint}.{name}") };
            let field_name = match target(shape, name) {
                Ok(f) => f,
                Err(why) => {
                    self.bad(&p, why);
                    continue;
                }
            };
            if field_name.is_empty() {
                let inner = self.message(member_shape, v, desc, herald, &p);
                for (f, val) in inner.fields() {
                    msg.set_field(&f, val.clone());
                }
                continue;
            }
            let Some(field) = desc.get_field_by_name(&field_name) else {
                self.bad(&p, "is not supported by Herald");
                continue;
            };
            let h = if herald.is_empty() { field.name().to_string() } else { format!("{herald}.{}", field.name()) };
            if let Some(pv) = self.field(member_shape, v, &field, &h, &p) {
                msg.set_field(&field, pv);
            }
        }
        msg
    }

    /// One member's value as the value of `field`.
    pub fn field(&mut self, shape: Option<&str>, v: &Value, field: &FieldDescriptor, herald: &str, pinpoint: &str) -> Option<PValue> {
        let model = self.model;
        let shape_def = shape.and_then(|s| model.shape(s));
        if field.is_map() {
            let PKind::Message(entry) = field.kind() else { return None };
            let value_field = entry.map_entry_value_field();
            let Value::Object(o) = v else {
                self.bad(pinpoint, "must be a map");
                return None;
            };
            let value_shape = shape_def.and_then(|s| s.value.as_ref()).map(|m| m.shape.clone());
            let mut map = std::collections::HashMap::new();
            for (k, x) in o {
                let p = format!("{pinpoint}.{k}");
                let h = format!("{herald}.{k}");
                if let Some(val) = self.single(value_shape.as_deref(), x, &value_field.kind(), &h, &p) {
                    map.insert(MapKey::String(k.clone()), val);
                }
            }
            return Some(PValue::Map(map));
        }
        if field.is_list() {
            let Value::Array(items) = v else {
                self.bad(pinpoint, "must be a list");
                return None;
            };
            let item_shape = shape_def.and_then(|s| s.member.as_ref()).map(|m| m.shape.clone());
            let kind = field.kind();
            let list = items
                .iter()
                .enumerate()
                .filter_map(|(i, x)| self.single(item_shape.as_deref(), x, &kind, &format!("{herald}[{i}]"), &format!("{pinpoint}[{i}]")))
                .collect();
            return Some(PValue::List(list));
        }
        self.single(shape, v, &field.kind(), herald, pinpoint)
    }

    fn single(&mut self, shape: Option<&str>, v: &Value, kind: &PKind, herald: &str, pinpoint: &str) -> Option<PValue> {
        let out = match (kind, v) {
            (PKind::Message(md), Value::Object(_)) => PValue::Message(self.message(shape, v, md, herald, pinpoint)),
            // A Pinpoint list where Herald wraps one (`Attributes: {name: [values]}`).
            (PKind::Message(md), Value::Array(_)) if md.fields().len() == 1 && md.fields().all(|f| f.is_list()) => {
                let f = md.fields().next()?;
                let inner = self.field(shape, v, &f, &format!("{herald}.{}", f.name()), pinpoint)?;
                let mut m = DynamicMessage::new(md.clone());
                m.set_field(&f, inner);
                PValue::Message(m)
            }
            (PKind::Enum(ed), Value::String(s)) => match enum_number(ed, s) {
                Some(n) => PValue::EnumNumber(n),
                None => {
                    self.bad(pinpoint, format!("'{s}' is not a value Herald knows"));
                    return None;
                }
            },
            (PKind::String, Value::String(s)) => PValue::String(s.clone()),
            (PKind::String, Value::Number(n)) => PValue::String(n.to_string()),
            (PKind::String, Value::Bool(b)) => PValue::String(b.to_string()),
            (PKind::Bool, Value::Bool(b)) => PValue::Bool(*b),
            (PKind::Int32 | PKind::Sint32 | PKind::Sfixed32, _) => match integer(v).and_then(|n| i32::try_from(n).ok()) {
                Some(n) => PValue::I32(n),
                None => return self.nothing(pinpoint, "must be a 32-bit integer"),
            },
            (PKind::Int64 | PKind::Sint64 | PKind::Sfixed64, _) => match integer(v) {
                Some(n) => PValue::I64(n),
                None => return self.nothing(pinpoint, "must be an integer"),
            },
            (PKind::Uint32 | PKind::Fixed32, _) => match integer(v).and_then(|n| u32::try_from(n).ok()) {
                Some(n) => PValue::U32(n),
                None => return self.nothing(pinpoint, "must be a non-negative integer"),
            },
            (PKind::Uint64 | PKind::Fixed64, _) => match integer(v).and_then(|n| u64::try_from(n).ok()) {
                Some(n) => PValue::U64(n),
                None => return self.nothing(pinpoint, "must be a non-negative integer"),
            },
            (PKind::Double, _) => match number(v) {
                Some(n) => PValue::F64(n),
                None => return self.nothing(pinpoint, "must be a number"),
            },
            (PKind::Float, _) => match number(v) {
                Some(n) => PValue::F32(n as f32),
                None => return self.nothing(pinpoint, "must be a number"),
            },
            (PKind::Bytes, Value::String(s)) => match base64::engine::general_purpose::STANDARD.decode(s) {
                Ok(b) => PValue::Bytes(b.into()),
                Err(_) => return self.nothing(pinpoint, "must be base64"),
            },
            _ => return self.nothing(pinpoint, "has the wrong type"),
        };
        Some(out)
    }

    fn nothing(&mut self, pinpoint: &str, why: &str) -> Option<PValue> {
        self.bad(pinpoint, why);
        None
    }
}

impl Default for Decoder<'_> {
    fn default() -> Self {
        Self::new()
    }
}

fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn enum_prefix(ed: &EnumDescriptor) -> String {
    format!("{}_", screaming(ed.name()))
}

/// `EMAIL` in `ChannelType` is `CHANNEL_TYPE_EMAIL`. The unspecified value is never named.
pub fn enum_number(ed: &EnumDescriptor, s: &str) -> Option<i32> {
    let prefix = enum_prefix(ed);
    ed.values()
        .filter(|v| !v.name().ends_with("_UNSPECIFIED"))
        .find(|v| v.name().strip_prefix(prefix.as_str()) == Some(s) || v.name() == s)
        .map(|v| v.number())
}

/// `CHANNEL_TYPE_EMAIL` → `EMAIL`.
pub fn enum_name(ed: &EnumDescriptor, n: i32) -> Option<String> {
    let v = ed.get_value(n).filter(|v| !v.name().ends_with("_UNSPECIFIED"))?;
    let prefix = enum_prefix(ed);
    Some(v.name().strip_prefix(prefix.as_str()).unwrap_or(v.name()).to_string())
}

/// A message as the Pinpoint structure `shape`: every member of the shape Herald has a
/// value for.
pub fn encode(model: &Model, shape: &str, msg: &DynamicMessage) -> Value {
    let mut out = Map::new();
    let Some(def) = model.shape(shape) else { return Value::Object(out) };
    for (name, member) in &def.members {
        let Ok(field_name) = target(Some(shape), name) else { continue };
        if field_name.is_empty() {
            let inner = encode(model, &member.shape, msg);
            if inner.as_object().is_some_and(|o| !o.is_empty()) {
                out.insert(name.clone(), inner);
            }
            continue;
        }
        let Some(field) = msg.descriptor().get_field_by_name(&field_name) else { continue };
        if !msg.has_field(&field) && !zero_enum_shown(&field) {
            // A required list or map is answered empty rather than left out (`KpiResult.Rows`).
            if def.required.contains(name) {
                match model.shape(&member.shape).map(|s| s.kind) {
                    Some(Kind::List) => {
                        out.insert(name.clone(), Value::Array(Vec::new()));
                    }
                    Some(Kind::Map) => {
                        out.insert(name.clone(), Value::Object(Map::new()));
                    }
                    _ => {}
                }
            }
            continue;
        }
        let wire = member.location_name.clone().unwrap_or_else(|| name.clone());
        if let Some(v) = encode_value(model, &member.shape, &msg.get_field(&field), &field.kind()) {
            out.insert(wire, v);
        }
    }
    Value::Object(out)
}

/// An enum whose zero value means something (`INCLUSIVE`, `ALL`) is shown even when zero.
fn zero_enum_shown(field: &FieldDescriptor) -> bool {
    match field.kind() {
        PKind::Enum(ed) => !field.is_list() && ed.get_value(0).is_some_and(|v| !v.name().ends_with("_UNSPECIFIED")),
        _ => false,
    }
}

fn encode_value(model: &Model, shape: &str, v: &PValue, kind: &PKind) -> Option<Value> {
    let def = model.shape(shape)?;
    Some(match (def.kind, v) {
        (Kind::Structure, PValue::Message(m)) => encode(model, shape, m),
        (Kind::List, PValue::List(items)) => {
            let item = &def.member.as_ref()?.shape;
            Value::Array(items.iter().filter_map(|x| encode_value(model, item, x, kind)).collect())
        }
        // A Herald wrapper of one list, where Pinpoint has the list.
        (Kind::List, PValue::Message(m)) => {
            let f = m.descriptor().fields().next()?;
            return encode_value(model, shape, &m.get_field(&f), &f.kind());
        }
        // A Herald wrapper of one map (`EndpointResults`), where Pinpoint has the map.
        (Kind::Map, PValue::Message(m)) => {
            let f = m.descriptor().fields().next()?;
            return encode_value(model, shape, &m.get_field(&f), &f.kind());
        }
        (Kind::Map, PValue::Map(entries)) => {
            let value_shape = &def.value.as_ref()?.shape;
            let value_kind = match kind {
                PKind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other.clone(),
            };
            let mut o = Map::new();
            let mut keys: Vec<&MapKey> = entries.keys().collect();
            keys.sort_by_key(|k| k.as_str().map(str::to_string));
            for k in keys {
                if let (Some(key), Some(x)) = (k.as_str(), encode_value(model, value_shape, &entries[k], &value_kind)) {
                    o.insert(key.to_string(), x);
                }
            }
            Value::Object(o)
        }
        (Kind::String, PValue::String(s)) => Value::String(s.clone()),
        (Kind::String, PValue::EnumNumber(n)) => match kind {
            PKind::Enum(ed) => Value::String(enum_name(ed, *n)?),
            _ => Value::String(n.to_string()),
        },
        (Kind::String, PValue::I32(n)) => Value::String(n.to_string()),
        (Kind::String, PValue::I64(n)) => Value::String(n.to_string()),
        (Kind::String, PValue::Bool(b)) => Value::String(b.to_string()),
        (Kind::Integer | Kind::Long, PValue::I32(n)) => Value::from(*n),
        (Kind::Integer | Kind::Long, PValue::I64(n)) => Value::from(*n),
        (Kind::Integer | Kind::Long, PValue::U32(n)) => Value::from(*n),
        (Kind::Integer | Kind::Long, PValue::U64(n)) => Value::from(*n),
        (Kind::Double, PValue::F64(n)) => Value::Number(Number::from_f64(*n)?),
        (Kind::Double, PValue::F32(n)) => Value::Number(Number::from_f64(f64::from(*n))?),
        (Kind::Double, PValue::I64(n)) => Value::from(*n as f64),
        (Kind::Double, PValue::I32(n)) => Value::from(f64::from(*n)),
        (Kind::Boolean, PValue::Bool(b)) => Value::Bool(*b),
        (Kind::Timestamp, PValue::String(s)) => Value::String(s.clone()),
        (Kind::Blob, PValue::Bytes(b)) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_convert_as_pinpoint_spells_them() {
        assert_eq!(snake("SegmentVersion"), "segment_version");
        assert_eq!(snake("APNSMessage"), "apns_message");
        assert_eq!(snake("RequestID"), "request_id");
        assert_eq!(snake("tags"), "tags");
        assert_eq!(snake("Id"), "id");
        assert_eq!(pascal("start_time"), "StartTime");
    }
}
