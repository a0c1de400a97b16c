//! Journeys: Pinpoint's multi-step flows. A definition ([`Journey`]) is checked and compiled
//! into a [`Graph`] — activities by index, each with where it leads — which the API uses to
//! name what is wrong, field by field, and the executor ([`exec`]) walks participant by
//! participant. Each participant's position lives in the store ([`crate::store::Store::journey_due`]):
//! its activity, whether it already waited there, and the message ids its conditions will
//! ask about.

pub mod exec;
pub mod json;
pub mod metrics;
mod schedule;

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::domain::FieldViolation;
use crate::proto::v1::journey_activity::Kind;
use crate::proto::v1::{ConditionOperator, DimensionType, Journey, JourneyState, SimpleCondition, WaitTime};
use crate::segments::rule::{parse_instant, Criteria};

pub use schedule::{local_window, Sending, LOCAL_SPREAD_HOURS};

/// Record kind of journey definitions.
pub const KIND: &str = "journey";
/// Blob kind of a journey's progress ([`crate::proto::v1::JourneyProgress`]).
pub const PROGRESS_KIND: &str = "journey-progress";
/// Pinpoint's limit on activities per journey.
pub const MAX_ACTIVITIES: usize = 40;
/// Template users are named after journeys so that a template in use cannot be deleted.
pub fn user(journey_id: &str) -> String {
    format!("journey:{journey_id}")
}

/// The least refresh interval Pinpoint allows for a segment-started journey.
pub const MIN_REFRESH_SECS: i64 = 3_600;

/// A duration as Pinpoint writes them (ISO-8601: `PT1H`, `P3D`, `P1W`, `PT1H30M`) or as people
/// do (`3d`, `12h`, `30m`, `45s`, `1h30m`, `2w`), in seconds. Years and months are refused:
/// their length depends on the calendar.
/// Why a duration cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("is empty")]
    Empty,
    #[error("{0:?} is not a duration (PT1H, P3D, 3d, 12h, 30m)")]
    NotADuration(String),
    #[error("{0:?}: years and months are not fixed lengths; give days (P30D)")]
    Calendar(String),
}

pub fn parse_duration(s: &str) -> Result<i64, DurationError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(DurationError::Empty);
    }
    let iso = t.starts_with(['P', 'p']);
    let body = if iso { &t[1..] } else { t };
    let mut total: i64 = 0;
    let mut number = String::new();
    let mut in_time = !iso;
    let mut any = false;
    for c in body.chars() {
        match c {
            '0'..='9' => number.push(c),
            'T' | 't' if iso && number.is_empty() && !in_time => in_time = true,
            _ => {
                let n: i64 = number.parse().map_err(|_| DurationError::NotADuration(s.to_string()))?;
                number.clear();
                let unit = match (c.to_ascii_lowercase(), in_time, iso) {
                    ('w', false, _) | ('w', true, false) => 7 * 86_400,
                    ('d', false, _) | ('d', true, false) => 86_400,
                    ('h', true, _) => 3_600,
                    ('m', true, _) => 60,
                    ('s', true, _) => 1,
                    ('y', false, true) | ('m', false, true) => return Err(DurationError::Calendar(s.to_string())),
                    _ => return Err(DurationError::NotADuration(s.to_string())),
                };
                total = total.saturating_add(n.saturating_mul(unit));
                any = true;
            }
        }
    }
    if !number.is_empty() || !any {
        return Err(DurationError::NotADuration(s.to_string()));
    }
    Ok(total)
}

/// A wait: for a duration, or until an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    For(i64),
    Until(DateTime<Utc>),
}

impl Wait {
    /// When a participant arriving at `now` may go on.
    pub fn due(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Wait::For(s) => now + chrono::Duration::seconds(s),
            Wait::Until(t) => t.max(now),
        }
    }
}

/// The channel a message activity sends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Email,
    Sms,
    Push,
    Custom,
}

impl Channel {
    /// Pinpoint's name for it (open hours, closed days, events).
    pub fn name(self) -> &'static str {
        match self {
            Channel::Email => "EMAIL",
            Channel::Sms => "SMS",
            Channel::Push => "PUSH",
            Channel::Custom => "CUSTOM",
        }
    }
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Cond {
    /// The participant's message of activity `activity` had (or, `exclude`, had none of) one
    /// of these events.
    Event { activity: usize, types: Vec<String>, exclude: bool },
    /// The participant's endpoint is in the segment.
    Segment(String),
    /// The participant's endpoint matches the dimensions.
    Dimensions(Box<Criteria>),
}

/// A compiled activity.
#[derive(Debug, Clone)]
pub enum Step {
    Message { channel: Channel, next: Option<usize> },
    Wait { wait: Wait, next: Option<usize> },
    Split { conditions: Vec<Cond>, any: bool, evaluation: Option<Wait>, yes: Option<usize>, no: Option<usize> },
    Multi { branches: Vec<(Cond, Option<usize>)>, default: Option<usize>, evaluation: Option<Wait> },
    Random { branches: Vec<(u32, Option<usize>)> },
    Holdout { percentage: u32, next: Option<usize> },
}

impl Step {
    /// Pinpoint's activity type name in execution metrics.
    pub fn type_name(&self) -> &'static str {
        match self {
            Step::Message { .. } => "MESSAGE",
            Step::Wait { .. } => "WAIT",
            Step::Split { .. } => "CONDITIONAL_SPLIT",
            Step::Multi { .. } => "MULTI_CONDITIONAL_SPLIT",
            Step::Random { .. } => "RANDOM_SPLIT",
            Step::Holdout { .. } => "HOLDOUT",
        }
    }

    /// The conditions it tests (splits only).
    pub fn conditions(&self) -> Vec<&Cond> {
        match self {
            Step::Split { conditions, .. } => conditions.iter().collect(),
            Step::Multi { branches, .. } => branches.iter().map(|b| &b.0).collect(),
            _ => Vec::new(),
        }
    }

    /// Every activity it can lead to.
    fn targets(&self) -> Vec<usize> {
        let v: Vec<Option<usize>> = match self {
            Step::Message { next, .. } | Step::Wait { next, .. } | Step::Holdout { next, .. } => vec![*next],
            Step::Split { yes, no, .. } => vec![*yes, *no],
            Step::Multi { branches, default, .. } => branches.iter().map(|b| b.1).chain([*default]).collect(),
            Step::Random { branches } => branches.iter().map(|b| b.1).collect(),
        };
        v.into_iter().flatten().collect()
    }
}

/// A journey's activities compiled: by index (their ids in sorted order), the start, and
/// which message activities a condition asks about (their message ids are kept per
/// participant).
#[derive(Debug, Clone)]
pub struct Graph {
    pub ids: Vec<String>,
    pub steps: Vec<Step>,
    pub start: usize,
    pub asked: Vec<bool>,
}

impl Graph {
    pub fn index(&self, id: &str) -> Option<usize> {
        self.ids.binary_search_by(|x| x.as_str().cmp(id)).ok()
    }
}

fn valid_activity_id(id: &str) -> bool {
    (1..=100).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn wait_of(w: &WaitTime, field: &str, v: &mut Vec<FieldViolation>) -> Option<Wait> {
    match (w.wait_for.trim().is_empty(), w.wait_until.trim().is_empty()) {
        (false, true) => match parse_duration(&w.wait_for) {
            Ok(s) if s > 0 => Some(Wait::For(s)),
            Ok(_) => {
                v.push(FieldViolation::new(format!("{field}.wait_for"), "must be longer than zero"));
                None
            }
            Err(e) => {
                v.push(FieldViolation::new(format!("{field}.wait_for"), e));
                None
            }
        },
        (true, false) => match parse_instant(&w.wait_until) {
            Some(t) => Some(Wait::Until(t)),
            None => {
                v.push(FieldViolation::new(format!("{field}.wait_until"), "is not an ISO-8601 instant"));
                None
            }
        },
        (false, false) => {
            v.push(FieldViolation::new(field, "give wait_for or wait_until, not both"));
            None
        }
        (true, true) => {
            v.push(FieldViolation::new(field, "give wait_for or wait_until"));
            None
        }
    }
}

/// Compiles and checks a definition's activities; every problem is a violation naming its
/// field (`journey.activities["welcome"].email.next_activity`).
pub fn compile(j: &Journey) -> Result<Graph, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let mut ids: Vec<String> = j.activities.keys().cloned().collect();
    ids.sort();
    if ids.is_empty() {
        v.push(FieldViolation::new("journey.activities", "give at least one activity"));
    }
    if ids.len() > MAX_ACTIVITIES {
        v.push(FieldViolation::new("journey.activities", format!("at most {MAX_ACTIVITIES} activities; {} given", ids.len())));
    }
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let link = |v: &mut Vec<FieldViolation>, field: String, target: &str| -> Option<usize> {
        if target.is_empty() {
            return None;
        }
        match index.get(target) {
            Some(i) => Some(*i),
            None => {
                v.push(FieldViolation::new(field, format!("no activity {target:?} in journey.activities")));
                None
            }
        }
    };
    let mut steps = Vec::with_capacity(ids.len());
    let mut asked = vec![false; ids.len()];
    let mut message_at = vec![None; ids.len()];
    for (i, id) in ids.iter().enumerate() {
        if let Some(Kind::Email(_) | Kind::Sms(_) | Kind::Push(_) | Kind::Custom(_)) = j.activities[id].kind {
            message_at[i] = Some(());
        }
    }
    for id in &ids {
        let at = format!("journey.activities[{id:?}]");
        if !valid_activity_id(id) {
            v.push(FieldViolation::new(&at, "activity ids are 1 to 100 letters, digits, '_' or '-'"));
        }
        let a = &j.activities[id];
        let step = match &a.kind {
            None => {
                v.push(FieldViolation::new(
                    &at,
                    "give one activity type (email, sms, push, custom, wait, conditional_split, multi_condition, random_split, holdout)",
                ));
                None
            }
            Some(Kind::Email(m)) | Some(Kind::Sms(m)) | Some(Kind::Push(m)) | Some(Kind::Custom(m)) => {
                let (channel, name) = match &a.kind {
                    Some(Kind::Email(_)) => (Channel::Email, "email"),
                    Some(Kind::Sms(_)) => (Channel::Sms, "sms"),
                    Some(Kind::Push(_)) => (Channel::Push, "push"),
                    _ => (Channel::Custom, "custom"),
                };
                let field = format!("{at}.{name}");
                let next = link(&mut v, format!("{field}.next_activity"), &m.next_activity);
                message_fields(m, channel, &field, &mut v);
                Some(Step::Message { channel, next })
            }
            Some(Kind::Wait(w)) => {
                let field = format!("{at}.wait");
                let next = link(&mut v, format!("{field}.next_activity"), &w.next_activity);
                let wait = wait_of(&w.wait_time.clone().unwrap_or_default(), &format!("{field}.wait_time"), &mut v);
                wait.map(|wait| Step::Wait { wait, next })
            }
            Some(Kind::ConditionalSplit(s)) => {
                let field = format!("{at}.conditional_split");
                let c = s.condition.clone().unwrap_or_default();
                if c.conditions.is_empty() {
                    v.push(FieldViolation::new(format!("{field}.condition.conditions"), "give at least one condition"));
                }
                let mut conditions = Vec::new();
                for (k, sc) in c.conditions.iter().enumerate() {
                    if let Some(cond) = condition(sc, &format!("{field}.condition.conditions[{k}]"), &index, &message_at, &mut v) {
                        conditions.push(cond);
                    }
                }
                let evaluation = s.evaluation_wait_time.as_ref().filter(|w| !w.wait_for.is_empty() || !w.wait_until.is_empty());
                let evaluation = evaluation.and_then(|w| wait_of(w, &format!("{field}.evaluation_wait_time"), &mut v));
                let yes = link(&mut v, format!("{field}.true_activity"), &s.true_activity);
                let no = link(&mut v, format!("{field}.false_activity"), &s.false_activity);
                let any = c.operator == ConditionOperator::Any as i32;
                Some(Step::Split { conditions, any, evaluation, yes, no })
            }
            Some(Kind::MultiCondition(m)) => {
                let field = format!("{at}.multi_condition");
                if m.branches.is_empty() || m.branches.len() > 4 {
                    v.push(FieldViolation::new(format!("{field}.branches"), "give 1 to 4 branches"));
                }
                let mut branches = Vec::new();
                for (k, b) in m.branches.iter().enumerate() {
                    let bf = format!("{field}.branches[{k}]");
                    let next = link(&mut v, format!("{bf}.next_activity"), &b.next_activity);
                    let sc = b.condition.clone().unwrap_or_default();
                    if let Some(cond) = condition(&sc, &format!("{bf}.condition"), &index, &message_at, &mut v) {
                        branches.push((cond, next));
                    }
                }
                let evaluation = m.evaluation_wait_time.as_ref().filter(|w| !w.wait_for.is_empty() || !w.wait_until.is_empty());
                let evaluation = evaluation.and_then(|w| wait_of(w, &format!("{field}.evaluation_wait_time"), &mut v));
                let default = link(&mut v, format!("{field}.default_activity"), &m.default_activity);
                Some(Step::Multi { branches, default, evaluation })
            }
            Some(Kind::RandomSplit(r)) => {
                let field = format!("{at}.random_split");
                if r.branches.is_empty() || r.branches.len() > 5 {
                    v.push(FieldViolation::new(format!("{field}.branches"), "give 1 to 5 branches"));
                }
                let mut branches = Vec::new();
                let mut sum = 0;
                for (k, b) in r.branches.iter().enumerate() {
                    if !(0..=100).contains(&b.percentage) {
                        v.push(FieldViolation::new(format!("{field}.branches[{k}].percentage"), "must be 0 to 100"));
                    }
                    sum += b.percentage.clamp(0, 100);
                    let next = link(&mut v, format!("{field}.branches[{k}].next_activity"), &b.next_activity);
                    branches.push((b.percentage.clamp(0, 100) as u32, next));
                }
                if !r.branches.is_empty() && sum != 100 {
                    v.push(FieldViolation::new(format!("{field}.branches"), format!("the percentages sum to {sum}, not 100")));
                }
                Some(Step::Random { branches })
            }
            Some(Kind::Holdout(h)) => {
                let field = format!("{at}.holdout");
                if !(0..=100).contains(&h.percentage) {
                    v.push(FieldViolation::new(format!("{field}.percentage"), "must be 0 to 100"));
                }
                let next = link(&mut v, format!("{field}.next_activity"), &h.next_activity);
                Some(Step::Holdout { percentage: h.percentage.clamp(0, 100) as u32, next })
            }
        };
        if let Some(s) = &step {
            for c in s.conditions() {
                if let Cond::Event { activity, .. } = c {
                    asked[*activity] = true;
                }
            }
        }
        steps.push(step);
    }
    let start = match (j.start_activity.as_str(), ids.len()) {
        ("", _) => {
            v.push(FieldViolation::new("journey.start_activity", "is required"));
            None
        }
        (s, _) => match index.get(s) {
            Some(i) => Some(*i),
            None => {
                v.push(FieldViolation::new("journey.start_activity", format!("no activity {s:?} in journey.activities")));
                None
            }
        },
    };
    if !v.is_empty() {
        return Err(v);
    }
    let steps: Vec<Step> = steps.into_iter().map(|s| s.expect("no violations: every step compiled")).collect();
    let start = start.expect("no violations: a start");
    // Every activity reachable from the start, and no path that comes back to where it was.
    let mut reached = vec![false; steps.len()];
    let mut stack = vec![start];
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut reached[i], true) {
            stack.extend(steps[i].targets());
        }
    }
    for (i, r) in reached.iter().enumerate() {
        if !r {
            v.push(FieldViolation::new(format!("journey.activities[{:?}]", ids[i]), "is not reachable from journey.start_activity"));
        }
    }
    if let Some(i) = cycle(&steps) {
        v.push(FieldViolation::new(
            format!("journey.activities[{:?}]", ids[i]),
            "is on a cycle: a participant would come back to it (Wait and split paths must lead forward)",
        ));
    }
    // An event condition asks about a message its participant got on the way there.
    for (i, s) in steps.iter().enumerate() {
        for c in s.conditions() {
            if let Cond::Event { activity, .. } = c {
                if !leads_to(&steps, *activity, i) {
                    v.push(FieldViolation::new(
                        format!("journey.activities[{:?}]", ids[i]),
                        format!("its event condition asks about {:?}, which no path from it leads here", ids[*activity]),
                    ));
                }
            }
        }
    }
    if !v.is_empty() {
        return Err(v);
    }
    Ok(Graph { ids, steps, start, asked })
}

fn leads_to(steps: &[Step], from: usize, to: usize) -> bool {
    let mut seen = vec![false; steps.len()];
    let mut stack = steps[from].targets();
    while let Some(i) = stack.pop() {
        if i == to {
            return true;
        }
        if !std::mem::replace(&mut seen[i], true) {
            stack.extend(steps[i].targets());
        }
    }
    false
}

/// An activity on a cycle, if there is one.
fn cycle(steps: &[Step]) -> Option<usize> {
    // 0 unvisited, 1 on the current path, 2 done.
    fn visit(i: usize, steps: &[Step], mark: &mut [u8]) -> Option<usize> {
        mark[i] = 1;
        for t in steps[i].targets() {
            match mark[t] {
                1 => return Some(t),
                0 => {
                    if let Some(c) = visit(t, steps, mark) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        mark[i] = 2;
        None
    }
    let mut mark = vec![0u8; steps.len()];
    (0..steps.len()).find_map(|i| if mark[i] == 0 { visit(i, steps, &mut mark) } else { None })
}

fn condition(
    sc: &SimpleCondition,
    field: &str,
    index: &HashMap<&str, usize>,
    message_at: &[Option<()>],
    v: &mut Vec<FieldViolation>,
) -> Option<Cond> {
    let given = [sc.event_condition.is_some(), sc.segment_condition.is_some(), sc.segment_dimensions.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        v.push(FieldViolation::new(field, "give one of event_condition, segment_condition, segment_dimensions"));
        return None;
    }
    if let Some(e) = &sc.event_condition {
        let f = format!("{field}.event_condition");
        let activity = match index.get(e.message_activity.as_str()) {
            Some(i) if message_at[*i].is_some() => Some(*i),
            Some(_) => {
                v.push(FieldViolation::new(format!("{f}.message_activity"), "must name an email, sms, push or custom activity"));
                None
            }
            None if e.message_activity.is_empty() => {
                v.push(FieldViolation::new(format!("{f}.message_activity"), "is required: the activity whose message the events are of"));
                None
            }
            None => {
                v.push(FieldViolation::new(
                    format!("{f}.message_activity"),
                    format!("no activity {:?} in journey.activities", e.message_activity),
                ));
                None
            }
        };
        let d = e.dimensions.clone().unwrap_or_default();
        if !d.attributes.is_empty() || !d.metrics.is_empty() {
            v.push(FieldViolation::new(
                format!("{f}.dimensions"),
                "conditions on a message's events test their event_type only; attributes and metrics are not supported",
            ));
        }
        let t = d.event_type.unwrap_or_default();
        if t.values.is_empty() {
            v.push(FieldViolation::new(format!("{f}.dimensions.event_type.values"), "give at least one event type (_email.open...)"));
        }
        let exclude = t.dimension_type == DimensionType::Exclusive as i32;
        return activity.map(|activity| Cond::Event { activity, types: t.values, exclude });
    }
    if let Some(s) = &sc.segment_condition {
        if s.segment_id.is_empty() {
            v.push(FieldViolation::new(format!("{field}.segment_condition.segment_id"), "is required"));
            return None;
        }
        return Some(Cond::Segment(s.segment_id.clone()));
    }
    let d = sc.segment_dimensions.clone().unwrap_or_default();
    let mut dv = Vec::new();
    crate::segments::validate::dimensions(&format!("{field}.segment_dimensions"), &d, &mut dv);
    if !dv.is_empty() {
        v.extend(dv);
        return None;
    }
    match Criteria::new(&d) {
        Ok(c) => Some(Cond::Dimensions(Box::new(c))),
        Err(e) => {
            v.push(FieldViolation::new(format!("{field}.segment_dimensions"), e));
            None
        }
    }
}

/// The fields of a message activity that must be right whatever the content.
fn message_fields(m: &crate::proto::v1::MessageActivity, channel: Channel, field: &str, v: &mut Vec<FieldViolation>) {
    // A CUSTOM activity's MessageConfig.Data is its inline content.
    let inline = m.message_configuration.is_some() || (channel == Channel::Custom && !m.data.is_empty());
    if m.template_name.is_empty() && !inline {
        v.push(FieldViolation::new(format!("{field}.template_name"), "give a template, or inline message_configuration"));
    }
    if !m.template_name.is_empty() && inline {
        v.push(FieldViolation::new(format!("{field}.message_configuration"), "give a template or inline content, not both"));
    }
    if !m.template_version.is_empty() && m.template_version.parse::<u32>().map_or(true, |n| n == 0) {
        v.push(FieldViolation::new(format!("{field}.template_version"), "must be a version number (empty: the active version)"));
    }
    let only = |v: &mut Vec<FieldViolation>, name: &str, set: bool, on: Channel| {
        if set && channel != on {
            v.push(FieldViolation::new(format!("{field}.{name}"), format!("applies to {} activities only", on.name())));
        }
    };
    if m.message_configuration.as_ref().is_some_and(|c| c.in_app_message.is_some()) {
        v.push(FieldViolation::new(
            format!("{field}.message_configuration.in_app_message"),
            "journeys have no in-app activity (as in Pinpoint): use an IN_APP_EVENT campaign",
        ));
    }
    only(v, "from_address", !m.from_address.is_empty(), Channel::Email);
    for (name, set) in [
        ("message_type", !m.message_type.is_empty()),
        ("origination_number", !m.origination_number.is_empty()),
        ("sender_id", !m.sender_id.is_empty()),
    ] {
        only(v, name, set, Channel::Sms);
    }
    for (name, set) in [("entity_id", !m.entity_id.is_empty()), ("template_id", !m.template_id.is_empty())] {
        if set {
            v.push(FieldViolation::new(
                format!("{field}.{name}"),
                "India DLT registration ids are not supported by Herald's SMS providers; leave it empty",
            ));
        }
    }
    if !m.message_type.is_empty() && !["TRANSACTIONAL", "PROMOTIONAL"].contains(&m.message_type.as_str()) {
        v.push(FieldViolation::new(format!("{field}.message_type"), "must be TRANSACTIONAL or PROMOTIONAL"));
    }
    only(v, "time_to_live", !m.time_to_live.is_empty(), Channel::Push);
    if !m.time_to_live.is_empty() && m.time_to_live.parse::<u32>().is_err() {
        v.push(FieldViolation::new(format!("{field}.time_to_live"), "must be a number of seconds"));
    }
    only(v, "delivery_uri", !m.delivery_uri.is_empty(), Channel::Custom);
    only(v, "endpoint_types", !m.endpoint_types.is_empty(), Channel::Custom);
    only(v, "data", !m.data.is_empty(), Channel::Custom);
    if channel == Channel::Custom {
        if !(m.delivery_uri.starts_with("https://") || m.delivery_uri.starts_with("http://")) {
            v.push(FieldViolation::new(
                format!("{field}.delivery_uri"),
                "give the http(s) URL the message is posted to (Lambda ARNs cannot be called from Herald)",
            ));
        }
        if m.endpoint_types.is_empty() {
            v.push(FieldViolation::new(format!("{field}.endpoint_types"), "give the endpoint types it goes to (EMAIL, SMS, GCM...)"));
        }
        for (k, t) in m.endpoint_types.iter().enumerate() {
            if crate::proto::v1::ChannelType::from_str_name(&format!("CHANNEL_TYPE_{t}")).is_none() {
                v.push(FieldViolation::new(format!("{field}.endpoint_types[{k}]"), format!("{t:?} is not a channel type")));
            }
        }
    }
}

/// Why a journey cannot go to the state asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("a DRAFT journey is deleted, not cancelled")]
    CancelDraft,
    #[error("COMPLETED and CLOSED are set by Herald when a journey ends")]
    SetByHerald,
    #[error("the journey is {} and cannot change state", state_name(*.0))]
    Ended(JourneyState),
    #[error("a published journey cannot go back to DRAFT")]
    BackToDraft,
    #[error("cannot go from {} to {}", state_name(*.0), state_name(*.1))]
    Other(JourneyState, JourneyState),
}

/// The journey state a request may ask for, from the state it is in.
pub fn transition(from: JourneyState, to: JourneyState) -> Result<(), TransitionError> {
    use JourneyState::*;
    match (from, to) {
        (Draft, Active) | (Active, Paused) | (Paused, Active) | (Active | Paused, Cancelled) => Ok(()),
        (a, b) if a == b => Ok(()),
        (Draft, Cancelled) => Err(TransitionError::CancelDraft),
        (_, Completed | Closed) => Err(TransitionError::SetByHerald),
        (Completed | Cancelled | Closed, _) => Err(TransitionError::Ended(from)),
        (_, Draft) => Err(TransitionError::BackToDraft),
        _ => Err(TransitionError::Other(from, to)),
    }
}

pub fn state_name(s: JourneyState) -> &'static str {
    s.as_str_name().trim_start_matches("JOURNEY_STATE_")
}

/// A stable share in 0..100 for a participant at an activity: the same on every daemon and
/// after every restart, different per entry.
pub fn share(journey: &str, activity: &str, endpoint: &str, entries: u32) -> u32 {
    let key = format!("{journey}\u{1}{activity}\u{1}{endpoint}\u{1}{entries}");
    // FNV-1a, then a final mix so that neighbouring ids spread evenly.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h % 100) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{HoldoutActivity, JourneyActivity, MessageActivity, RandomSplitActivity, RandomSplitEntry, WaitActivity};

    #[test]
    fn durations_in_iso_8601_and_the_short_forms_people_write() {
        assert_eq!(parse_duration("PT1H"), Ok(3_600));
        assert_eq!(parse_duration("P3D"), Ok(3 * 86_400));
        assert_eq!(parse_duration("P1W"), Ok(7 * 86_400));
        assert_eq!(parse_duration("P1DT12H"), Ok(86_400 + 12 * 3_600));
        assert_eq!(parse_duration("PT1H30M"), Ok(5_400));
        assert_eq!(parse_duration("PT45S"), Ok(45));
        assert_eq!(parse_duration("3d"), Ok(3 * 86_400));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("30m"), Ok(1_800));
        assert_eq!(parse_duration("1h30m"), Ok(5_400));
        assert_eq!(parse_duration("2w"), Ok(14 * 86_400));
        assert!(parse_duration("P1M").unwrap_err().to_string().contains("months"));
        for bad in ["", "3", "d", "P", "PT", "3x", "P1H"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    fn email(next: &str) -> JourneyActivity {
        JourneyActivity {
            kind: Some(Kind::Email(MessageActivity { template_name: "t".into(), next_activity: next.into(), ..Default::default() })),
            ..Default::default()
        }
    }

    fn wait(next: &str) -> JourneyActivity {
        JourneyActivity {
            kind: Some(Kind::Wait(WaitActivity {
                wait_time: Some(WaitTime { wait_for: "3d".into(), ..Default::default() }),
                next_activity: next.into(),
            })),
            ..Default::default()
        }
    }

    fn journey(acts: &[(&str, JourneyActivity)], start: &str) -> Journey {
        Journey {
            activities: acts.iter().map(|(k, a)| (k.to_string(), a.clone())).collect(),
            start_activity: start.into(),
            ..Default::default()
        }
    }

    fn fields(r: Result<Graph, Vec<FieldViolation>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn a_welcome_wait_follow_up_journey_compiles() {
        let g = compile(&journey(&[("welcome", email("wait")), ("wait", wait("follow")), ("follow", email(""))], "welcome")).unwrap();
        assert_eq!(g.ids, ["follow", "wait", "welcome"]);
        assert_eq!(g.start, 2);
        assert!(matches!(g.steps[1], Step::Wait { wait: Wait::For(259_200), next: Some(0) }));
    }

    #[test]
    fn violations_name_the_field() {
        let f = fields(compile(&journey(&[("a", email("nowhere"))], "a")));
        assert_eq!(f, [r#"journey.activities["a"].email.next_activity"#]);
        let f = fields(compile(&journey(&[("a", email("")), ("b", email(""))], "a")));
        assert_eq!(f, [r#"journey.activities["b"]"#], "unreachable");
        let f = fields(compile(&journey(&[("a", wait("b")), ("b", wait("a"))], "a")));
        assert_eq!(f, [r#"journey.activities["a"]"#], "a cycle");
        let f = fields(compile(&journey(&[("a", email(""))], "z")));
        assert_eq!(f, ["journey.start_activity"]);
        let many: Vec<(String, JourneyActivity)> = (0..41).map(|i| (format!("a{i:02}"), email(""))).collect();
        let j = Journey { activities: many.into_iter().collect(), start_activity: "a00".into(), ..Default::default() };
        assert!(fields(compile(&j)).contains(&"journey.activities".to_string()));
        let split = JourneyActivity {
            kind: Some(Kind::RandomSplit(RandomSplitActivity {
                branches: vec![
                    RandomSplitEntry { next_activity: "b".into(), percentage: 60 },
                    RandomSplitEntry { next_activity: "c".into(), percentage: 30 },
                ],
            })),
            ..Default::default()
        };
        let f = fields(compile(&journey(&[("a", split), ("b", email("")), ("c", email(""))], "a")));
        assert_eq!(f, [r#"journey.activities["a"].random_split.branches"#], "percentages that do not sum to 100");
        let hold = JourneyActivity {
            kind: Some(Kind::Holdout(HoldoutActivity { percentage: 101, next_activity: String::new() })),
            ..Default::default()
        };
        assert_eq!(fields(compile(&journey(&[("a", hold)], "a"))), [r#"journey.activities["a"].holdout.percentage"#]);
    }

    #[test]
    fn random_split_and_holdout_shares_are_within_a_point_on_100_000_participants() {
        // As the executor picks: a 30/70 split, and a 10 % holdout.
        let (mut left, mut held) = (0u32, 0u32);
        for i in 0..100_000 {
            let id = format!("ep-{i:09}");
            if share("journey-1", "split", &id, 1) < 30 {
                left += 1;
            }
            if share("journey-1", "holdout", &id, 1) < 10 {
                held += 1;
            }
        }
        assert!((29_000..=31_000).contains(&left), "{left}");
        assert!((9_000..=11_000).contains(&held), "{held}");
    }

    #[test]
    fn shares_are_stable_and_even() {
        assert_eq!(share("j", "a", "e1", 1), share("j", "a", "e1", 1));
        let mut buckets = [0u32; 100];
        for i in 0..100_000 {
            buckets[share("j", "split", &format!("endpoint-{i}"), 1) as usize] += 1;
        }
        let (lo, hi) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
        assert!(*lo > 850 && *hi < 1_150, "{lo}..{hi}");
    }
}
