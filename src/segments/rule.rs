//! A segment definition compiled into a matcher: pure code, no I/O. Dates are parsed, value
//! sets prepared and source segments resolved once; matching an endpoint then reads only the
//! endpoint, the clock and which imported member sets hold it.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

use crate::domain::endpoint::channel_name;
use crate::proto::v1::{
    AttributeDimension, AttributeType, ChannelType, ComparisonOperator, DimensionType, Endpoint, Include, RecencyDuration, RecencyType,
    Segment, SegmentDimensions, SegmentGroup, SegmentType, SetDimension,
};

/// Mean Earth radius (IUGG), for great-circle distances.
const EARTH_RADIUS_KM: f64 = 6_371.008_8;
/// The range of a GPS point dimension that gives none.
pub const DEFAULT_RANGE_KM: f64 = 100.0;

/// An ISO-8601 instant: RFC 3339 (`2026-11-01T10:00:00Z`, with an offset or fractional
/// seconds), a date and time without offset (UTC), or a date (its midnight UTC).
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| Utc.from_utc_datetime(&t))
}

/// A set dimension: values compared without regard to case.
#[derive(Debug, Clone)]
struct SetTest {
    exclusive: bool,
    values: Vec<String>,
}

impl SetTest {
    fn new(d: &SetDimension) -> Self {
        Self { exclusive: d.dimension_type == DimensionType::Exclusive as i32, values: d.values.iter().map(|v| v.to_lowercase()).collect() }
    }

    fn matches(&self, value: Option<&str>) -> bool {
        let found = value.filter(|v| !v.is_empty()).is_some_and(|v| self.values.iter().any(|x| x.eq_ignore_ascii_case(v)));
        found != self.exclusive
    }
}

#[derive(Debug, Clone)]
enum AttrTest {
    Inclusive(Vec<String>),
    Exclusive(Vec<String>),
    Contains(Vec<String>),
    Before(DateTime<Utc>),
    After(DateTime<Utc>),
    Between(DateTime<Utc>, DateTime<Utc>),
    On(NaiveDate),
}

impl AttrTest {
    fn new(d: &AttributeDimension) -> Option<Self> {
        let instant = |i: usize| d.values.get(i).and_then(|v| parse_instant(v));
        Some(match AttributeType::try_from(d.attribute_type).ok()? {
            AttributeType::Inclusive => Self::Inclusive(d.values.clone()),
            AttributeType::Exclusive => Self::Exclusive(d.values.clone()),
            AttributeType::Contains => Self::Contains(d.values.clone()),
            AttributeType::Before => Self::Before(instant(0)?),
            AttributeType::After => Self::After(instant(0)?),
            AttributeType::Between => Self::Between(instant(0)?, instant(1)?),
            AttributeType::On => Self::On(instant(0)?.date_naive()),
        })
    }

    /// Whether an endpoint whose attribute holds `values` (none when it lacks it) matches.
    fn matches(&self, values: &[String]) -> bool {
        let any_instant = |f: &dyn Fn(DateTime<Utc>) -> bool| values.iter().filter_map(|v| parse_instant(v)).any(f);
        match self {
            Self::Inclusive(want) => values.iter().any(|v| want.contains(v)),
            // An endpoint without the attribute has none of the excluded values.
            Self::Exclusive(unwanted) => !values.iter().any(|v| unwanted.contains(v)),
            Self::Contains(parts) => values.iter().any(|v| parts.iter().any(|p| v.contains(p.as_str()))),
            Self::Before(t) => any_instant(&|v| v < *t),
            Self::After(t) => any_instant(&|v| v > *t),
            Self::Between(a, b) => any_instant(&|v| *a <= v && v <= *b),
            Self::On(day) => any_instant(&|v| v.date_naive() == *day),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Gt,
    Lt,
    Ge,
    Le,
    Eq,
}

/// One set of criteria (a `SegmentDimensions`): every criterion must hold.
#[derive(Debug, Clone, Default)]
pub struct Criteria {
    attributes: Vec<(String, AttrTest)>,
    user_attributes: Vec<(String, AttrTest)>,
    metrics: Vec<(String, Cmp, f64)>,
    channel: Vec<SetTest>,
    app_version: Option<SetTest>,
    device_type: Option<SetTest>,
    make: Option<SetTest>,
    model: Option<SetTest>,
    platform: Option<SetTest>,
    country: Option<SetTest>,
    /// Latitude and longitude in radians, range in km.
    gps: Option<(f64, f64, f64)>,
    /// Active (or not) within this many seconds.
    recency: Option<(i64, bool)>,
}

fn sorted<T>(map: &HashMap<String, T>) -> Vec<(&String, &T)> {
    let mut v: Vec<_> = map.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// Why a segment cannot be compiled into a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("{what} {name} is not valid")]
    Attribute { what: String, name: String },
    #[error("metric {0} has no comparison operator")]
    NoOperator(String),
    #[error("recency has no duration")]
    NoRecencyDuration,
    #[error("recency has no type")]
    NoRecencyType,
    #[error("segment {0} refers to itself through its source segments")]
    Cycle(String),
    #[error("source segment {0} (version {1}) not found")]
    SourceNotFound(String, i32),
    #[error("source segments nest too deeply")]
    TooDeep,
}

impl Criteria {
    /// Compiles validated dimensions (see [`super::validate`]).
    pub fn new(d: &SegmentDimensions) -> Result<Self, RuleError> {
        let attr = |m: &HashMap<String, AttributeDimension>, what: &str| {
            sorted(m)
                .into_iter()
                .map(|(k, v)| {
                    AttrTest::new(v).map(|t| (k.clone(), t)).ok_or_else(|| RuleError::Attribute { what: what.to_string(), name: k.clone() })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut c = Self {
            attributes: attr(&d.attributes, "attribute")?,
            user_attributes: attr(&d.user_attributes, "user attribute")?,
            ..Self::default()
        };
        for (name, m) in sorted(&d.metrics) {
            let op = match ComparisonOperator::try_from(m.comparison_operator) {
                Ok(ComparisonOperator::GreaterThan) => Cmp::Gt,
                Ok(ComparisonOperator::LessThan) => Cmp::Lt,
                Ok(ComparisonOperator::GreaterThanOrEqual) => Cmp::Ge,
                Ok(ComparisonOperator::LessThanOrEqual) => Cmp::Le,
                Ok(ComparisonOperator::Equal) => Cmp::Eq,
                _ => return Err(RuleError::NoOperator(name.clone())),
            };
            c.metrics.push((name.clone(), op, m.value));
        }
        if let Some(s) = &d.channel_type {
            c.channel.push(SetTest::new(s));
        }
        if let Some(demo) = &d.demographic {
            if let Some(s) = &demo.channel {
                c.channel.push(SetTest::new(s));
            }
            c.app_version = demo.app_version.as_ref().map(SetTest::new);
            c.device_type = demo.device_type.as_ref().map(SetTest::new);
            c.make = demo.make.as_ref().map(SetTest::new);
            c.model = demo.model.as_ref().map(SetTest::new);
            c.platform = demo.platform.as_ref().map(SetTest::new);
        }
        if let Some(loc) = &d.location {
            c.country = loc.country.as_ref().map(SetTest::new);
            if let Some(gps) = &loc.gps_point {
                let p = gps.coordinates.unwrap_or_default();
                let range = if gps.range_in_kilometers > 0.0 { gps.range_in_kilometers } else { DEFAULT_RANGE_KM };
                c.gps = Some((p.latitude.to_radians(), p.longitude.to_radians(), range));
            }
        }
        if let Some(r) = d.behavior.as_ref().and_then(|b| b.recency.as_ref()) {
            let secs = match RecencyDuration::try_from(r.duration) {
                Ok(RecencyDuration::Hr24) => 24 * 3600,
                Ok(RecencyDuration::Day7) => 7 * 86_400,
                Ok(RecencyDuration::Day14) => 14 * 86_400,
                Ok(RecencyDuration::Day30) => 30 * 86_400,
                _ => return Err(RuleError::NoRecencyDuration),
            };
            let active = match RecencyType::try_from(r.recency_type) {
                Ok(RecencyType::Active) => true,
                Ok(RecencyType::Inactive) => false,
                _ => return Err(RuleError::NoRecencyType),
            };
            c.recency = Some((secs, active));
        }
        Ok(c)
    }

    pub fn matches(&self, e: &Endpoint, now: DateTime<Utc>) -> bool {
        const NONE: &[String] = &[];
        for (name, test) in &self.attributes {
            if !test.matches(e.attributes.get(name).map_or(NONE, |v| v.values.as_slice())) {
                return false;
            }
        }
        for (name, test) in &self.user_attributes {
            let values = e.user.as_ref().and_then(|u| u.user_attributes.get(name)).map_or(NONE, |v| v.values.as_slice());
            if !test.matches(values) {
                return false;
            }
        }
        for (name, op, want) in &self.metrics {
            let Some(&v) = e.metrics.get(name) else { return false };
            let ok = match op {
                Cmp::Gt => v > *want,
                Cmp::Lt => v < *want,
                Cmp::Ge => v >= *want,
                Cmp::Le => v <= *want,
                Cmp::Eq => v == *want,
            };
            if !ok {
                return false;
            }
        }
        if !self.channel.is_empty() {
            let name = ChannelType::try_from(e.channel_type).ok().map(channel_name);
            if !self.channel.iter().all(|t| t.matches(name)) {
                return false;
            }
        }
        let demo = e.demographic.as_ref();
        let checks: [(&Option<SetTest>, Option<&str>); 5] = [
            (&self.app_version, demo.map(|d| d.app_version.as_str())),
            (&self.make, demo.map(|d| d.make.as_str())),
            (&self.model, demo.map(|d| d.model.as_str())),
            (&self.platform, demo.map(|d| d.platform.as_str())),
            (&self.country, e.location.as_ref().map(|l| l.country.as_str())),
        ];
        for (test, value) in checks {
            if let Some(t) = test {
                if !t.matches(value) {
                    return false;
                }
            }
        }
        if let Some(t) = &self.device_type {
            let value = e.attributes.get("DeviceType").and_then(|v| v.values.first()).map(String::as_str);
            if !t.matches(value) {
                return false;
            }
        }
        if let Some((lat, lon, range)) = self.gps {
            let Some(loc) = e.location.as_ref() else { return false };
            let (Some(elat), Some(elon)) = (loc.latitude, loc.longitude) else { return false };
            if great_circle_km(lat, lon, elat.to_radians(), elon.to_radians()) > range {
                return false;
            }
        }
        if let Some((secs, active)) = self.recency {
            // Activity is the latest event PutEvents reported; an endpoint that never
            // reported one counts from its last update (the SDKs update it at each session).
            let at = if e.last_activity_date.is_empty() { &e.effective_date } else { &e.last_activity_date };
            let last = parse_instant(at);
            let recent = last.is_some_and(|t| (now - t).num_seconds() <= secs);
            if recent != active {
                return false;
            }
        }
        true
    }
}

/// Haversine distance between two points given in radians.
fn great_circle_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let a = ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
}

fn combine(how: Include, mut results: impl Iterator<Item = bool>) -> bool {
    match how {
        Include::All => results.all(|r| r),
        Include::Any => results.any(|r| r),
        Include::None => !results.any(|r| r),
    }
}

/// Where a group's base population comes from.
#[derive(Debug, Clone)]
enum Source {
    Dynamic(Box<Rule>),
    /// An imported segment version's member set.
    Imported(String),
}

#[derive(Debug, Clone)]
struct Group {
    sources: Vec<Source>,
    source_type: Include,
    dimensions: Vec<Criteria>,
    dimension_type: Include,
}

/// A compiled segment.
#[derive(Debug, Clone)]
pub enum Rule {
    /// Dimensions (empty: every endpoint).
    Criteria(Box<Criteria>),
    Groups {
        include: Include,
        groups: Vec<GroupRule>,
    },
    /// The members of an imported segment version.
    Imported(String),
}

/// A compiled segment group.
#[derive(Debug, Clone)]
pub struct GroupRule(Group);

/// The member set of an imported segment version.
pub fn member_set(segment_id: &str, version: i32) -> String {
    format!("{segment_id}:{version}")
}

/// Compiles a stored, validated segment; `sources` holds every segment it refers to, by id
/// and version (version 0: the latest), and theirs in turn.
pub fn compile(segment: &Segment, sources: &HashMap<(String, i32), Segment>) -> Result<Rule, RuleError> {
    compile_depth(segment, sources, 0)
}

/// Segment groups may name segments that have groups themselves; a chain this deep is a cycle.
const MAX_DEPTH: usize = 8;

fn compile_depth(segment: &Segment, sources: &HashMap<(String, i32), Segment>, depth: usize) -> Result<Rule, RuleError> {
    if depth > MAX_DEPTH {
        return Err(RuleError::Cycle(segment.id.clone()));
    }
    if segment.segment_type == SegmentType::Import as i32 {
        return Ok(Rule::Imported(member_set(&segment.id, segment.version)));
    }
    let Some(list) = &segment.segment_groups else {
        return Ok(Rule::Criteria(Box::new(Criteria::new(&segment.dimensions.clone().unwrap_or_default())?)));
    };
    let mut groups = Vec::with_capacity(list.groups.len());
    for g in &list.groups {
        groups.push(GroupRule(compile_group(g, sources, depth)?));
    }
    Ok(Rule::Groups { include: Include::try_from(list.include).unwrap_or(Include::All), groups })
}

fn compile_group(g: &SegmentGroup, sources: &HashMap<(String, i32), Segment>, depth: usize) -> Result<Group, RuleError> {
    let mut out = Vec::with_capacity(g.source_segments.len());
    for r in &g.source_segments {
        let s = sources.get(&(r.id.clone(), r.version)).ok_or_else(|| RuleError::SourceNotFound(r.id.clone(), r.version))?;
        out.push(match compile_depth(s, sources, depth + 1)? {
            Rule::Imported(set) => Source::Imported(set),
            other => Source::Dynamic(Box::new(other)),
        });
    }
    Ok(Group {
        sources: out,
        source_type: Include::try_from(g.source_type).unwrap_or(Include::All),
        dimensions: g.dimensions.iter().map(Criteria::new).collect::<Result<_, _>>()?,
        dimension_type: Include::try_from(g.r#type).unwrap_or(Include::All),
    })
}

/// Which imported member sets hold an endpoint: answered per page from the store.
pub trait Membership {
    fn contains(&self, set: &str, endpoint_id: &str) -> bool;
}

impl Membership for HashMap<String, std::collections::HashSet<String>> {
    fn contains(&self, set: &str, endpoint_id: &str) -> bool {
        self.get(set).is_some_and(|ids| ids.contains(endpoint_id))
    }
}

impl Rule {
    pub fn matches(&self, e: &Endpoint, now: DateTime<Utc>, members: &dyn Membership) -> bool {
        match self {
            Rule::Criteria(c) => c.matches(e, now),
            Rule::Imported(set) => members.contains(set, &e.id),
            Rule::Groups { include, groups } => combine(*include, groups.iter().map(|g| g.0.matches(e, now, members))),
        }
    }

    /// Every imported member set the rule consults.
    pub fn member_sets(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_sets(&mut out);
        out.sort();
        out.dedup();
        out
    }

    fn collect_sets(&self, out: &mut Vec<String>) {
        match self {
            Rule::Criteria(_) => {}
            Rule::Imported(set) => out.push(set.clone()),
            Rule::Groups { groups, .. } => {
                for g in groups {
                    for s in &g.0.sources {
                        match s {
                            Source::Imported(set) => out.push(set.clone()),
                            Source::Dynamic(r) => r.collect_sets(out),
                        }
                    }
                }
            }
        }
    }

    /// A member set every member of the segment belongs to, when there is one: a scan can walk
    /// that set instead of every endpoint of the app.
    pub fn narrowest_set(&self) -> Option<&str> {
        match self {
            Rule::Imported(set) => Some(set),
            Rule::Groups { include: Include::All, groups } => groups.iter().find_map(|g| match (g.0.source_type, g.0.sources.as_slice()) {
                (Include::All | Include::Any, [Source::Imported(set)]) => Some(set.as_str()),
                _ => None,
            }),
            _ => None,
        }
    }
}

impl Group {
    fn matches(&self, e: &Endpoint, now: DateTime<Utc>, members: &dyn Membership) -> bool {
        let in_sources = self.sources.is_empty()
            || combine(
                self.source_type,
                self.sources.iter().map(|s| match s {
                    Source::Dynamic(r) => r.matches(e, now, members),
                    Source::Imported(set) => members.contains(set, &e.id),
                }),
            );
        in_sources && (self.dimensions.is_empty() || combine(self.dimension_type, self.dimensions.iter().map(|d| d.matches(e, now))))
    }
}
