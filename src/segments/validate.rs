//! Checks a segment definition and names every bad field.

use crate::domain::FieldViolation;

use super::rule::parse_instant;
use crate::domain::endpoint::parse_channel;
use crate::proto::v1::{
    AttributeDimension, AttributeType, ComparisonOperator, DimensionType, Include, RecencyDuration, RecencyType, SegmentDimensions,
    SegmentGroupList, SetDimension,
};

/// Most criteria in one segment, all dimension sets together (Pinpoint's limit).
pub const MAX_DIMENSIONS: usize = 100;
/// Most groups in a segment's group list, and source segments in a group.
pub const MAX_GROUPS: usize = 10;
pub const MAX_SOURCES: usize = 10;

fn set(field: &str, d: &SetDimension, out: &mut Vec<FieldViolation>, count: &mut usize) {
    *count += 1;
    if DimensionType::try_from(d.dimension_type).is_err() {
        out.push(FieldViolation::new(format!("{field}.dimension_type"), "must be INCLUSIVE or EXCLUSIVE"));
    }
    if d.values.is_empty() {
        out.push(FieldViolation::new(format!("{field}.values"), "needs at least one value"));
    }
}

fn attribute(field: &str, name: &str, d: &AttributeDimension, out: &mut Vec<FieldViolation>) {
    if name.is_empty() || name.len() > 50 {
        out.push(FieldViolation::new(field.to_string(), "attribute names are 1 to 50 characters"));
    }
    let values = format!("{field}.values");
    let Ok(kind) = AttributeType::try_from(d.attribute_type) else {
        out.push(FieldViolation::new(
            format!("{field}.attribute_type"),
            "must be INCLUSIVE, EXCLUSIVE, CONTAINS, BEFORE, AFTER, BETWEEN or ON",
        ));
        return;
    };
    let wanted = match kind {
        AttributeType::Inclusive | AttributeType::Exclusive | AttributeType::Contains => {
            if d.values.is_empty() {
                out.push(FieldViolation::new(values, "needs at least one value"));
            }
            return;
        }
        AttributeType::Between => 2,
        _ => 1,
    };
    if d.values.len() != wanted {
        let what =
            if wanted == 2 { "BETWEEN needs exactly two values (from, to)" } else { "needs exactly one value (an ISO-8601 instant)" };
        out.push(FieldViolation::new(values, what));
        return;
    }
    let parsed: Vec<_> = d.values.iter().map(|v| parse_instant(v)).collect();
    for (i, (raw, p)) in d.values.iter().zip(&parsed).enumerate() {
        if p.is_none() {
            out.push(FieldViolation::new(format!("{values}[{i}]"), format!("'{raw}' is not an ISO-8601 date or instant")));
        }
    }
    if let [Some(a), Some(b)] = parsed.as_slice() {
        if a > b {
            out.push(FieldViolation::new(values, "BETWEEN's first value must not be after its second"));
        }
    }
}

/// Checks one set of criteria; returns how many criteria it holds.
pub fn dimensions(field: &str, d: &SegmentDimensions, out: &mut Vec<FieldViolation>) -> usize {
    let mut count = 0;
    for (name, a) in &d.attributes {
        count += 1;
        attribute(&format!("{field}.attributes[{name}]"), name, a, out);
    }
    for (name, a) in &d.user_attributes {
        count += 1;
        attribute(&format!("{field}.user_attributes[{name}]"), name, a, out);
    }
    for (name, m) in &d.metrics {
        count += 1;
        let op = ComparisonOperator::try_from(m.comparison_operator);
        if matches!(op, Err(_) | Ok(ComparisonOperator::Unspecified)) {
            out.push(FieldViolation::new(
                format!("{field}.metrics[{name}].comparison_operator"),
                "must be GREATER_THAN, LESS_THAN, GREATER_THAN_OR_EQUAL, LESS_THAN_OR_EQUAL or EQUAL",
            ));
        }
        if !m.value.is_finite() {
            out.push(FieldViolation::new(format!("{field}.metrics[{name}].value"), "must be a finite number"));
        }
    }
    let channel_values = |f: &str, s: &SetDimension, out: &mut Vec<FieldViolation>| {
        for (i, v) in s.values.iter().enumerate() {
            if parse_channel(v).is_none() {
                out.push(FieldViolation::new(format!("{f}.values[{i}]"), format!("'{v}' is not a channel type")));
            }
        }
    };
    if let Some(s) = &d.channel_type {
        set(&format!("{field}.channel_type"), s, out, &mut count);
        channel_values(&format!("{field}.channel_type"), s, out);
    }
    if let Some(demo) = &d.demographic {
        let f = format!("{field}.demographic");
        for (name, s) in [
            ("app_version", &demo.app_version),
            ("channel", &demo.channel),
            ("device_type", &demo.device_type),
            ("make", &demo.make),
            ("model", &demo.model),
            ("platform", &demo.platform),
        ] {
            if let Some(s) = s {
                set(&format!("{f}.{name}"), s, out, &mut count);
            }
        }
        if let Some(s) = &demo.channel {
            channel_values(&format!("{f}.channel"), s, out);
        }
    }
    if let Some(loc) = &d.location {
        let f = format!("{field}.location");
        if let Some(s) = &loc.country {
            set(&format!("{f}.country"), s, out, &mut count);
            for (i, v) in s.values.iter().enumerate() {
                if !crate::domain::countries::is_alpha2(&v.to_ascii_uppercase()) {
                    out.push(FieldViolation::new(format!("{f}.country.values[{i}]"), format!("'{v}' is not an ISO 3166-1 alpha-2 code")));
                }
            }
        }
        if let Some(gps) = &loc.gps_point {
            count += 1;
            let f = format!("{f}.gps_point");
            match &gps.coordinates {
                None => out.push(FieldViolation::new(format!("{f}.coordinates"), "is required")),
                Some(c) => {
                    if !(-90.0..=90.0).contains(&c.latitude) {
                        out.push(FieldViolation::new(format!("{f}.coordinates.latitude"), "must be between -90 and 90"));
                    }
                    if !(-180.0..=180.0).contains(&c.longitude) {
                        out.push(FieldViolation::new(format!("{f}.coordinates.longitude"), "must be between -180 and 180"));
                    }
                }
            }
            if !(gps.range_in_kilometers >= 0.0 && gps.range_in_kilometers <= 20_100.0) {
                out.push(FieldViolation::new(format!("{f}.range_in_kilometers"), "must be 0 (100 km) to 20,100"));
            }
        }
    }
    if let Some(r) = d.behavior.as_ref().and_then(|b| b.recency.as_ref()) {
        count += 1;
        let f = format!("{field}.behavior.recency");
        if matches!(RecencyDuration::try_from(r.duration), Err(_) | Ok(RecencyDuration::Unspecified)) {
            out.push(FieldViolation::new(format!("{f}.duration"), "must be HR_24, DAY_7, DAY_14 or DAY_30"));
        }
        if matches!(RecencyType::try_from(r.recency_type), Err(_) | Ok(RecencyType::Unspecified)) {
            out.push(FieldViolation::new(format!("{f}.recency_type"), "must be ACTIVE or INACTIVE"));
        }
    }
    count
}

/// Checks a dynamic segment's definition (the references it makes are checked against the
/// store by the caller).
pub fn definition(dims: Option<&SegmentDimensions>, groups: Option<&SegmentGroupList>) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    let mut count = 0;
    if dims.is_some() && groups.is_some() {
        out.push(FieldViolation::new("segment_groups", "a segment has dimensions or segment_groups, not both"));
    }
    if let Some(d) = dims {
        count += dimensions("dimensions", d, &mut out);
    }
    if let Some(list) = groups {
        if Include::try_from(list.include).is_err() {
            out.push(FieldViolation::new("segment_groups.include", "must be ALL, ANY or NONE"));
        }
        if list.groups.is_empty() || list.groups.len() > MAX_GROUPS {
            out.push(FieldViolation::new("segment_groups.groups", format!("needs 1 to {MAX_GROUPS} groups")));
        }
        for (i, g) in list.groups.iter().enumerate() {
            let f = format!("segment_groups.groups[{i}]");
            if Include::try_from(g.r#type).is_err() {
                out.push(FieldViolation::new(format!("{f}.type"), "must be ALL, ANY or NONE"));
            }
            if Include::try_from(g.source_type).is_err() {
                out.push(FieldViolation::new(format!("{f}.source_type"), "must be ALL, ANY or NONE"));
            }
            if g.source_segments.len() > MAX_SOURCES {
                out.push(FieldViolation::new(format!("{f}.source_segments"), format!("at most {MAX_SOURCES}")));
            }
            for (j, r) in g.source_segments.iter().enumerate() {
                if r.id.is_empty() {
                    out.push(FieldViolation::new(format!("{f}.source_segments[{j}].id"), "is required"));
                }
                if r.version < 0 {
                    out.push(FieldViolation::new(format!("{f}.source_segments[{j}].version"), "must be 0 (latest) or a version"));
                }
            }
            for (j, d) in g.dimensions.iter().enumerate() {
                count += dimensions(&format!("{f}.dimensions[{j}]"), d, &mut out);
            }
        }
    }
    if count > MAX_DIMENSIONS {
        out.push(FieldViolation::new(
            if groups.is_some() { "segment_groups" } else { "dimensions" },
            format!("{count} dimensions; a segment has at most {MAX_DIMENSIONS}"),
        ));
    }
    out
}
