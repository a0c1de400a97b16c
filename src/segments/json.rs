//! Segment definitions written in Pinpoint's JSON (`WriteSegmentRequest`: `Name`,
//! `Dimensions`, `SegmentGroups`, `tags`), as `aws pinpoint create-segment` takes them.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::proto::v1::{
    AttributeDimension, AttributeType, ComparisonOperator, DimensionType, GpsCoordinates, GpsPointDimension, Include, MetricDimension,
    RecencyDimension, RecencyDuration, RecencyType, SegmentBehaviors, SegmentDemographics, SegmentDimensions, SegmentGroup,
    SegmentGroupList, SegmentLocation, SegmentReference, SetDimension,
};

/// A parsed definition.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Definition {
    pub name: String,
    pub dimensions: Option<SegmentDimensions>,
    pub segment_groups: Option<SegmentGroupList>,
    pub tags: HashMap<String, String>,
}

use crate::domain::json::bad;
pub use crate::domain::json::ShapeError;

type R<T> = Result<T, ShapeError>;

fn object<'a>(v: &'a Value, at: &str) -> R<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| bad(at, "expected an object"))
}

/// An object with only the given keys (an unknown one is named).
fn object_of<'a>(v: &'a Value, at: &str, known: &[&str]) -> R<&'a Map<String, Value>> {
    let o = object(v, at)?;
    crate::domain::json::read::only(o, known, at)?;
    Ok(o)
}

fn string(v: &Value, at: &str) -> R<String> {
    v.as_str().map(str::to_string).ok_or_else(|| bad(at, "expected a string"))
}

fn strings(v: Option<&Value>, at: &str) -> R<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().enumerate().map(|(i, x)| string(x, &format!("{at}[{i}]"))).collect(),
        Some(_) => Err(bad(at, "expected a list of strings")),
    }
}

/// An enum value by its Pinpoint name, given the protobuf prefix.
fn named<E>(v: Option<&Value>, at: &str, prefix: &str, parse: impl Fn(&str) -> Option<E>, default: Option<E>) -> R<E> {
    match v {
        None | Some(Value::Null) => default.ok_or_else(|| bad(at, "is required")),
        Some(Value::String(s)) => {
            parse(&format!("{prefix}{}", s.to_ascii_uppercase())).ok_or_else(|| bad(at, format!("unknown value '{s}'")))
        }
        Some(_) => Err(bad(at, "expected a string")),
    }
}

fn set(v: &Value, at: &str) -> R<SetDimension> {
    let o = object_of(v, at, &["DimensionType", "Values"])?;
    let t = named(
        o.get("DimensionType"),
        &format!("{at}.DimensionType"),
        "DIMENSION_TYPE_",
        DimensionType::from_str_name,
        Some(DimensionType::Inclusive),
    )?;
    Ok(SetDimension { dimension_type: t as i32, values: strings(o.get("Values"), &format!("{at}.Values"))? })
}

fn attributes(v: Option<&Value>, at: &str) -> R<HashMap<String, AttributeDimension>> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(HashMap::new()) };
    let mut out = HashMap::new();
    for (name, d) in object(v, at)? {
        let f = format!("{at}.{name}");
        let o = object_of(d, &f, &["AttributeType", "Values"])?;
        let t = named(
            o.get("AttributeType"),
            &format!("{f}.AttributeType"),
            "ATTRIBUTE_TYPE_",
            AttributeType::from_str_name,
            Some(AttributeType::Inclusive),
        )?;
        out.insert(
            name.clone(),
            AttributeDimension { attribute_type: t as i32, values: strings(o.get("Values"), &format!("{f}.Values"))? },
        );
    }
    Ok(out)
}

fn number(v: Option<&Value>, at: &str) -> R<f64> {
    v.and_then(Value::as_f64).ok_or_else(|| bad(at, "expected a number"))
}

/// One `SegmentDimensions` object.
pub fn dimensions(v: &Value, at: &str) -> R<SegmentDimensions> {
    let o = object_of(v, at, &["Attributes", "UserAttributes", "Metrics", "ChannelType", "Demographic", "Location", "Behavior"])?;
    let mut d = SegmentDimensions {
        attributes: attributes(o.get("Attributes"), &format!("{at}.Attributes"))?,
        user_attributes: attributes(o.get("UserAttributes"), &format!("{at}.UserAttributes"))?,
        ..Default::default()
    };
    if let Some(m) = o.get("Metrics").filter(|v| !v.is_null()) {
        for (name, x) in object(m, &format!("{at}.Metrics"))? {
            let f = format!("{at}.Metrics.{name}");
            let mo = object_of(x, &f, &["ComparisonOperator", "Value"])?;
            let op = named(
                mo.get("ComparisonOperator"),
                &format!("{f}.ComparisonOperator"),
                "COMPARISON_OPERATOR_",
                ComparisonOperator::from_str_name,
                None,
            )?;
            d.metrics.insert(
                name.clone(),
                MetricDimension { comparison_operator: op as i32, value: number(mo.get("Value"), &format!("{f}.Value"))? },
            );
        }
    }
    if let Some(c) = o.get("ChannelType").filter(|v| !v.is_null()) {
        d.channel_type = Some(set(c, &format!("{at}.ChannelType"))?);
    }
    if let Some(demo) = o.get("Demographic").filter(|v| !v.is_null()) {
        let f = format!("{at}.Demographic");
        let x = object_of(demo, &f, &["AppVersion", "Channel", "DeviceType", "Make", "Model", "Platform"])?;
        let get = |k: &str| x.get(k).filter(|v| !v.is_null()).map(|v| set(v, &format!("{f}.{k}"))).transpose();
        d.demographic = Some(SegmentDemographics {
            app_version: get("AppVersion")?,
            channel: get("Channel")?,
            device_type: get("DeviceType")?,
            make: get("Make")?,
            model: get("Model")?,
            platform: get("Platform")?,
        });
    }
    if let Some(loc) = o.get("Location").filter(|v| !v.is_null()) {
        let f = format!("{at}.Location");
        let x = object_of(loc, &f, &["Country", "GPSPoint"])?;
        let mut l = SegmentLocation::default();
        if let Some(c) = x.get("Country").filter(|v| !v.is_null()) {
            l.country = Some(set(c, &format!("{f}.Country"))?);
        }
        if let Some(g) = x.get("GPSPoint").filter(|v| !v.is_null()) {
            let gf = format!("{f}.GPSPoint");
            let go = object_of(g, &gf, &["Coordinates", "RangeInKilometers"])?;
            let c = go.get("Coordinates").ok_or_else(|| bad(&format!("{gf}.Coordinates"), "is required"))?;
            let co = object_of(c, &format!("{gf}.Coordinates"), &["Latitude", "Longitude"])?;
            l.gps_point = Some(GpsPointDimension {
                coordinates: Some(GpsCoordinates {
                    latitude: number(co.get("Latitude"), &format!("{gf}.Coordinates.Latitude"))?,
                    longitude: number(co.get("Longitude"), &format!("{gf}.Coordinates.Longitude"))?,
                }),
                range_in_kilometers: go
                    .get("RangeInKilometers")
                    .map(|r| number(Some(r), &format!("{gf}.RangeInKilometers")))
                    .transpose()?
                    .unwrap_or(0.0),
            });
        }
        d.location = Some(l);
    }
    if let Some(b) = o.get("Behavior").filter(|v| !v.is_null()) {
        let f = format!("{at}.Behavior");
        if let Some(r) = object_of(b, &f, &["Recency"])?.get("Recency").filter(|v| !v.is_null()) {
            let rf = format!("{f}.Recency");
            let ro = object_of(r, &rf, &["Duration", "RecencyType"])?;
            let duration = named(ro.get("Duration"), &format!("{rf}.Duration"), "RECENCY_DURATION_", RecencyDuration::from_str_name, None)?;
            let kind = named(ro.get("RecencyType"), &format!("{rf}.RecencyType"), "RECENCY_TYPE_", RecencyType::from_str_name, None)?;
            d.behavior =
                Some(SegmentBehaviors { recency: Some(RecencyDimension { duration: duration as i32, recency_type: kind as i32 }) });
        }
    }
    Ok(d)
}

fn include(v: Option<&Value>, at: &str) -> R<i32> {
    Ok(named(v, at, "INCLUDE_", Include::from_str_name, Some(Include::All))? as i32)
}

/// A `SegmentGroups` object.
pub fn groups(v: &Value, at: &str) -> R<SegmentGroupList> {
    let o = object_of(v, at, &["Groups", "Include"])?;
    let mut list = SegmentGroupList { include: include(o.get("Include"), &format!("{at}.Include"))?, groups: Vec::new() };
    let items = o.get("Groups").and_then(Value::as_array).ok_or_else(|| bad(&format!("{at}.Groups"), "expected a list"))?;
    for (i, g) in items.iter().enumerate() {
        let f = format!("{at}.Groups[{i}]");
        let go = object_of(g, &f, &["Dimensions", "SourceSegments", "SourceType", "Type"])?;
        let mut group = SegmentGroup {
            source_type: include(go.get("SourceType"), &format!("{f}.SourceType"))?,
            r#type: include(go.get("Type"), &format!("{f}.Type"))?,
            ..Default::default()
        };
        for (j, d) in go.get("Dimensions").and_then(Value::as_array).into_iter().flatten().enumerate() {
            group.dimensions.push(dimensions(d, &format!("{f}.Dimensions[{j}]"))?);
        }
        for (j, s) in go.get("SourceSegments").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let sf = format!("{f}.SourceSegments[{j}]");
            let so = object_of(s, &sf, &["Id", "Version"])?;
            let id = string(so.get("Id").unwrap_or(&Value::Null), &format!("{sf}.Id"))?;
            let version = so.get("Version").and_then(Value::as_i64).unwrap_or(0) as i32;
            group.source_segments.push(SegmentReference { id, version });
        }
        list.groups.push(group);
    }
    Ok(list)
}

/// The API's (snake_case) names of the members of Pinpoint's segment shapes.
const API_NAMES: &[(&str, &str)] = &[
    ("name", "Name"),
    ("dimensions", "Dimensions"),
    ("segment_groups", "SegmentGroups"),
    ("attributes", "Attributes"),
    ("user_attributes", "UserAttributes"),
    ("metrics", "Metrics"),
    ("channel_type", "ChannelType"),
    ("demographic", "Demographic"),
    ("location", "Location"),
    ("behavior", "Behavior"),
    ("attribute_type", "AttributeType"),
    ("values", "Values"),
    ("dimension_type", "DimensionType"),
    ("comparison_operator", "ComparisonOperator"),
    ("value", "Value"),
    ("app_version", "AppVersion"),
    ("channel", "Channel"),
    ("device_type", "DeviceType"),
    ("make", "Make"),
    ("model", "Model"),
    ("platform", "Platform"),
    ("country", "Country"),
    ("gps_point", "GPSPoint"),
    ("coordinates", "Coordinates"),
    ("latitude", "Latitude"),
    ("longitude", "Longitude"),
    ("range_in_kilometers", "RangeInKilometers"),
    ("recency", "Recency"),
    ("duration", "Duration"),
    ("recency_type", "RecencyType"),
    ("groups", "Groups"),
    ("include", "Include"),
    ("source_segments", "SourceSegments"),
    ("source_type", "SourceType"),
    ("type", "Type"),
    ("id", "Id"),
    ("version", "Version"),
];

/// The API's shape (CreateSegmentRequest's `name`, `dimensions`, `segment_groups`, `tags`)
/// renamed to Pinpoint's; the keys of attribute and metric maps (the user's names) are kept.
fn from_api_shape(v: &Value, user_keys: bool) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| {
                    let named = API_NAMES.iter().find(|(api, _)| *api == k).map(|(_, p)| p.to_string());
                    let key = if user_keys { k.clone() } else { named.unwrap_or_else(|| k.clone()) };
                    let children_are_user_keys = !user_keys && matches!(k.as_str(), "attributes" | "user_attributes" | "metrics" | "tags");
                    (key, from_api_shape(x, children_are_user_keys))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| from_api_shape(x, false)).collect()),
        other => other.clone(),
    }
}

/// A Pinpoint name back in the API's shape (for errors about an API-shaped file).
fn api_name(p: &str) -> String {
    let (name, index) = p.split_once('[').map_or((p, String::new()), |(n, i)| (n, format!("[{i}")));
    let api = API_NAMES.iter().find(|(_, pp)| *pp == name).map_or(name, |(a, _)| a);
    format!("{api}{index}")
}

/// A segment definition: Pinpoint's `WriteSegmentRequest` (bare, or wrapped as
/// `{"WriteSegmentRequest": {...}}`), or the API's shape (`name`, `dimensions`,
/// `segment_groups`, `tags`), told apart by the top-level keys. An unknown key is an error
/// naming it and the line it is on.
pub fn definition(text: &str) -> R<Definition> {
    let v: Value = serde_json::from_str(text).map_err(|e| bad("the file", format!("not JSON: {e}")))?;
    let api = v.as_object().is_some_and(|o| !o.is_empty() && o.keys().all(|k| k.starts_with(|c: char| c.is_ascii_lowercase())));
    let v = if api { from_api_shape(&v, false) } else { v };
    read(v).map_err(|mut e| {
        if api {
            e.at = e.at.split('.').map(api_name).collect::<Vec<_>>().join(".").replacen("WriteSegmentRequest", "segment", 1);
            if let Some(rest) = e.what.strip_prefix("unknown key; expected one of ") {
                e.what = format!("unknown key; expected one of {}", rest.split(", ").map(api_name).collect::<Vec<_>>().join(", "));
            }
        }
        if e.what.starts_with("unknown key") {
            if let Some(line) = e.at.rsplit('.').next().and_then(|k| crate::domain::json::read::line_of(text, k)) {
                e.what = format!("{} (line {line})", e.what);
            }
        }
        e
    })
}

fn read(v: Value) -> R<Definition> {
    let v = match v.as_object() {
        Some(o) if o.len() == 1 && o.contains_key("WriteSegmentRequest") => o["WriteSegmentRequest"].clone(),
        _ => v,
    };
    let o = object_of(&v, "WriteSegmentRequest", &["Name", "Dimensions", "SegmentGroups", "tags", "Tags"])?;
    let mut d = Definition { name: o.get("Name").and_then(Value::as_str).unwrap_or("").to_string(), ..Default::default() };
    if let Some(x) = o.get("Dimensions").filter(|v| !v.is_null()) {
        d.dimensions = Some(dimensions(x, "Dimensions")?);
    }
    if let Some(x) = o.get("SegmentGroups").filter(|v| !v.is_null()) {
        d.segment_groups = Some(groups(x, "SegmentGroups")?);
    }
    if let Some(t) = o.get("tags").or_else(|| o.get("Tags")).filter(|v| !v.is_null()) {
        for (k, v) in object(t, "tags")? {
            d.tags.insert(k.clone(), string(v, &format!("tags.{k}"))?);
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinpoint_definitions_parse() {
        let d = definition(
            r#"{"WriteSegmentRequest": {"Name": "Gold in US",
                "Dimensions": {"Attributes": {"Plan": {"AttributeType": "INCLUSIVE", "Values": ["Gold"]}},
                               "Demographic": {"Platform": {"DimensionType": "EXCLUSIVE", "Values": ["android"]}},
                               "Location": {"Country": {"Values": ["US"]},
                                            "GPSPoint": {"Coordinates": {"Latitude": 47.6, "Longitude": -122.3}, "RangeInKilometers": 50}},
                               "Metrics": {"visits": {"ComparisonOperator": "GREATER_THAN_OR_EQUAL", "Value": 3}},
                               "Behavior": {"Recency": {"Duration": "DAY_7", "RecencyType": "ACTIVE"}}},
                "tags": {"team": "growth"}}}"#,
        )
        .unwrap();
        assert_eq!(d.name, "Gold in US");
        let dims = d.dimensions.unwrap();
        assert_eq!(dims.attributes["Plan"].values, vec!["Gold"]);
        assert_eq!(dims.demographic.unwrap().platform.unwrap().dimension_type, DimensionType::Exclusive as i32);
        assert_eq!(dims.location.as_ref().unwrap().gps_point.unwrap().range_in_kilometers, 50.0);
        assert_eq!(dims.metrics["visits"].comparison_operator, ComparisonOperator::GreaterThanOrEqual as i32);
        assert_eq!(dims.behavior.unwrap().recency.unwrap().duration, RecencyDuration::Day7 as i32);
        assert_eq!(d.tags["team"], "growth");

        let g = definition(
            r#"{"Name": "g", "SegmentGroups": {"Include": "ANY", "Groups": [
                {"SourceSegments": [{"Id": "s1", "Version": 2}], "SourceType": "ALL", "Type": "NONE",
                 "Dimensions": [{"UserAttributes": {"Tier": {"AttributeType": "CONTAINS", "Values": ["old"]}}}]}]}}"#,
        )
        .unwrap();
        let list = g.segment_groups.unwrap();
        assert_eq!(list.include, Include::Any as i32);
        assert_eq!(list.groups[0].r#type, Include::None as i32);
        assert_eq!(list.groups[0].source_segments[0], SegmentReference { id: "s1".into(), version: 2 });

        let err = definition(r#"{"Dimensions": {"Metrics": {"m": {"ComparisonOperator": "ABOUT", "Value": 1}}}}"#).unwrap_err().to_string();
        assert!(err.contains("Dimensions.Metrics.m.ComparisonOperator") && err.contains("ABOUT"), "{err}");
        // The API's shape reads the same, its errors in its own names.
        let api = definition(
            r#"{"name": "Gold", "dimensions": {"attributes": {"Plan": {"attribute_type": "INCLUSIVE", "values": ["Gold"]}},
                "location": {"gps_point": {"coordinates": {"latitude": 47.6, "longitude": -122.3}, "range_in_kilometers": 5}}},
                "tags": {"team": "growth"}}"#,
        )
        .unwrap();
        assert_eq!(api.dimensions.as_ref().unwrap().attributes["Plan"].values, ["Gold"]);
        assert_eq!(api.dimensions.unwrap().location.unwrap().gps_point.unwrap().range_in_kilometers, 5.0);
        assert_eq!((api.name.as_str(), api.tags["team"].as_str()), ("Gold", "growth"));
        let e = definition("{\"name\": \"x\",\n \"dimensions\": {\"metrics\": {\"visits\":\n {\"comparison\": \"EQUAL\"}}}}").unwrap_err();
        assert_eq!(e.at, "dimensions.metrics.visits.comparison");
        assert!(e.what.contains("comparison_operator") && e.what.ends_with("(line 3)"), "{e}");
        // Unknown keys are named with their line, at any depth.
        let e =
            definition("{\"Name\": \"x\",\n \"Dimensions\": {\"Demographic\": {\n   \"Platfrom\": {\"Values\": [\"ios\"]}}}}").unwrap_err();
        assert_eq!(e.at, "Dimensions.Demographic.Platfrom");
        assert!(e.what.starts_with("unknown key") && e.what.ends_with("(line 3)"), "{e}");
        let e = definition(r#"{"Name": "x", "SegmentId": "s"}"#).unwrap_err();
        assert_eq!(e.at, "WriteSegmentRequest.SegmentId");
    }
}
