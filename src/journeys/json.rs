//! Journey definitions in Pinpoint's JSON (`WriteJourneyRequest`: `Name`, `StartCondition`,
//! `Activities`, `StartActivity`, `Schedule`, `Limits`...), as `aws pinpoint create-journey`
//! takes them. Unknown keys are errors that name them. Two habits of hand-written files are
//! read too, and reported ([`Read::notes`]): a `NextActivity` written beside the activity type
//! (`{"EMAIL": {...}, "NextActivity": "wait"}`) instead of inside it, and a wait written as a
//! bare duration (`"Wait": {"WaitTime": "3d"}` or `"Wait": "3d"`).

use serde_json::{Map, Value};

use crate::domain::json::bad;
use crate::domain::json::read::{boolean, int, obj, only, strings, sub, text};
pub use crate::domain::json::ShapeError;
use crate::proto::v1::journey_activity::Kind;
use crate::proto::v1::{
    ClosedDays, ClosedDaysRule, ClosedDaysRules, ConditionOperator, ConditionalSplitActivity, DimensionType, EventCondition,
    EventDimensions, EventFilter, EventStartCondition, FilterType, HoldoutActivity, Journey, JourneyActivity, JourneyCondition,
    JourneyLimits, JourneySchedule, JourneyStartCondition, JourneyState, JourneyTimeframeCap, MessageActivity, MultiConditionalBranch,
    MultiConditionalSplitActivity, OpenHours, OpenHoursDays, OpenHoursRule, OpenHoursRules, QuietTime, RandomSplitActivity,
    RandomSplitEntry, SegmentCondition, SetDimension, SimpleCondition, WaitActivity, WaitTime,
};

type R<T> = Result<T, ShapeError>;

/// A parsed definition and what was read leniently.
#[derive(Debug, Default)]
pub struct Read {
    pub journey: Journey,
    pub notes: Vec<String>,
}

fn set(v: &Value, at: &str) -> R<SetDimension> {
    let o = obj(v, at)?;
    only(o, &["DimensionType", "Values"], at)?;
    let t = match text(o, "DimensionType", at)?.as_str() {
        "" | "INCLUSIVE" => DimensionType::Inclusive,
        "EXCLUSIVE" => DimensionType::Exclusive,
        other => return Err(bad(&format!("{at}.DimensionType"), format!("unknown value '{other}'"))),
    };
    Ok(SetDimension { dimension_type: t as i32, values: strings(o, "Values", at)? })
}

fn event_dimensions(v: &Value, at: &str) -> R<EventDimensions> {
    let o = obj(v, at)?;
    only(o, &["EventType", "Attributes", "Metrics"], at)?;
    let mut probe = Map::new();
    for k in ["Attributes", "Metrics"] {
        if let Some(x) = sub(o, k) {
            probe.insert(k.to_string(), x.clone());
        }
    }
    let d = crate::segments::json::dimensions(&Value::Object(probe), at)?;
    Ok(EventDimensions {
        event_type: sub(o, "EventType").map(|t| set(t, &format!("{at}.EventType"))).transpose()?,
        attributes: d.attributes,
        metrics: d.metrics,
    })
}

fn wait_time(v: &Value, at: &str, notes: &mut Vec<String>) -> R<WaitTime> {
    if let Some(s) = v.as_str() {
        notes.push(format!("{at}: the duration {s:?} read as WaitFor"));
        return Ok(WaitTime { wait_for: s.to_string(), ..Default::default() });
    }
    let o = obj(v, at)?;
    only(o, &["WaitFor", "WaitUntil"], at)?;
    Ok(WaitTime { wait_for: text(o, "WaitFor", at)?, wait_until: text(o, "WaitUntil", at)? })
}

fn segment_condition(v: &Value, at: &str) -> R<SegmentCondition> {
    let o = obj(v, at)?;
    only(o, &["SegmentId"], at)?;
    Ok(SegmentCondition { segment_id: text(o, "SegmentId", at)? })
}

fn simple(v: &Value, at: &str) -> R<SimpleCondition> {
    let o = obj(v, at)?;
    only(o, &["EventCondition", "SegmentCondition", "SegmentDimensions"], at)?;
    let event_condition = match sub(o, "EventCondition") {
        None => None,
        Some(e) => {
            let f = format!("{at}.EventCondition");
            let eo = obj(e, &f)?;
            only(eo, &["Dimensions", "MessageActivity"], &f)?;
            Some(EventCondition {
                dimensions: sub(eo, "Dimensions").map(|d| event_dimensions(d, &format!("{f}.Dimensions"))).transpose()?,
                message_activity: text(eo, "MessageActivity", &f)?,
            })
        }
    };
    Ok(SimpleCondition {
        event_condition,
        segment_condition: sub(o, "SegmentCondition").map(|s| segment_condition(s, &format!("{at}.SegmentCondition"))).transpose()?,
        segment_dimensions: sub(o, "SegmentDimensions")
            .map(|d| crate::segments::json::dimensions(d, &format!("{at}.SegmentDimensions")))
            .transpose()?,
    })
}

fn message(v: &Value, at: &str, kind: &str) -> R<MessageActivity> {
    let o = obj(v, at)?;
    let mut keys = vec!["MessageConfig", "NextActivity", "TemplateName", "TemplateVersion"];
    if kind == "CUSTOM" {
        keys.extend(["DeliveryUri", "EndpointTypes"]);
    }
    only(o, &keys, at)?;
    let mut m = MessageActivity {
        template_name: text(o, "TemplateName", at)?,
        template_version: text(o, "TemplateVersion", at)?,
        next_activity: text(o, "NextActivity", at)?,
        delivery_uri: text(o, "DeliveryUri", at)?,
        endpoint_types: strings(o, "EndpointTypes", at)?,
        ..Default::default()
    };
    if let Some(c) = sub(o, "MessageConfig") {
        let f = format!("{at}.MessageConfig");
        let co = obj(c, &f)?;
        match kind {
            "EMAIL" => {
                only(co, &["FromAddress"], &f)?;
                m.from_address = text(co, "FromAddress", &f)?;
            }
            "SMS" => {
                only(co, &["MessageType", "OriginationNumber", "SenderId", "EntityId", "TemplateId"], &f)?;
                m.message_type = text(co, "MessageType", &f)?;
                m.origination_number = text(co, "OriginationNumber", &f)?;
                m.sender_id = text(co, "SenderId", &f)?;
                m.entity_id = text(co, "EntityId", &f)?;
                m.template_id = text(co, "TemplateId", &f)?;
            }
            "PUSH" => {
                only(co, &["TimeToLive"], &f)?;
                m.time_to_live = text(co, "TimeToLive", &f)?;
            }
            _ => {
                only(co, &["Data"], &f)?;
                m.data = text(co, "Data", &f)?;
            }
        }
    }
    Ok(m)
}

fn evaluation(o: &Map<String, Value>, at: &str, notes: &mut Vec<String>) -> R<Option<WaitTime>> {
    sub(o, "EvaluationWaitTime").map(|w| wait_time(w, &format!("{at}.EvaluationWaitTime"), notes)).transpose()
}

const ACTIVITY_KEYS: [&str; 10] =
    ["EMAIL", "SMS", "PUSH", "CUSTOM", "Wait", "ConditionalSplit", "MultiCondition", "RandomSplit", "Holdout", "ContactCenter"];

fn activity(v: &Value, at: &str, notes: &mut Vec<String>) -> R<JourneyActivity> {
    let o = obj(v, at)?;
    let mut known: Vec<&str> = ACTIVITY_KEYS.to_vec();
    known.extend(["Description", "NextActivity"]);
    only(o, &known, at)?;
    let given: Vec<&str> = ACTIVITY_KEYS.iter().copied().filter(|k| sub(o, k).is_some()).collect();
    let kind_key = match given.as_slice() {
        [k] => *k,
        [] => return Err(bad(at, format!("give one activity type: {}", ACTIVITY_KEYS.join(", ")))),
        _ => return Err(bad(at, format!("give one activity type, not {}", given.join(" and ")))),
    };
    let body = &o[kind_key];
    let f = format!("{at}.{kind_key}");
    // A NextActivity beside the type (hand-written files) is the type's own.
    let beside = text(o, "NextActivity", at)?;
    let note_beside = |notes: &mut Vec<String>| {
        if !beside.is_empty() {
            notes.push(format!("{at}.NextActivity {beside:?} read as {f}.NextActivity"));
        }
    };
    let kind = match kind_key {
        "EMAIL" | "SMS" | "PUSH" | "CUSTOM" => {
            let mut m = message(body, &f, kind_key)?;
            if m.next_activity.is_empty() && !beside.is_empty() {
                note_beside(notes);
                m.next_activity = beside.clone();
            }
            match kind_key {
                "EMAIL" => Kind::Email(m),
                "SMS" => Kind::Sms(m),
                "PUSH" => Kind::Push(m),
                _ => Kind::Custom(m),
            }
        }
        "Wait" => {
            let mut w = if let Some(s) = body.as_str() {
                notes.push(format!("{f}: the duration {s:?} read as WaitTime.WaitFor"));
                WaitActivity { wait_time: Some(WaitTime { wait_for: s.to_string(), ..Default::default() }), ..Default::default() }
            } else {
                let wo = obj(body, &f)?;
                only(wo, &["WaitTime", "NextActivity", "WaitFor", "WaitUntil"], &f)?;
                let wait_time = match (sub(wo, "WaitTime"), sub(wo, "WaitFor").or(sub(wo, "WaitUntil"))) {
                    (Some(t), None) => Some(wait_time(t, &format!("{f}.WaitTime"), notes)?),
                    (None, Some(_)) => {
                        notes.push(format!("{f}: WaitFor/WaitUntil read as {f}.WaitTime"));
                        Some(WaitTime { wait_for: text(wo, "WaitFor", &f)?, wait_until: text(wo, "WaitUntil", &f)? })
                    }
                    (Some(_), Some(_)) => return Err(bad(&f, "give WaitTime, not WaitTime and WaitFor")),
                    (None, None) => None,
                };
                WaitActivity { wait_time, next_activity: text(wo, "NextActivity", &f)? }
            };
            if w.next_activity.is_empty() && !beside.is_empty() {
                note_beside(notes);
                w.next_activity = beside.clone();
            }
            Kind::Wait(w)
        }
        "ConditionalSplit" => {
            let so = obj(body, &f)?;
            only(so, &["Condition", "EvaluationWaitTime", "TrueActivity", "FalseActivity"], &f)?;
            let condition = match sub(so, "Condition") {
                None => None,
                Some(c) => {
                    let cf = format!("{f}.Condition");
                    let co = obj(c, &cf)?;
                    only(co, &["Conditions", "Operator"], &cf)?;
                    let operator = match text(co, "Operator", &cf)?.as_str() {
                        "" | "ALL" => ConditionOperator::All,
                        "ANY" => ConditionOperator::Any,
                        other => return Err(bad(&format!("{cf}.Operator"), format!("unknown value '{other}' (ALL or ANY)"))),
                    };
                    let list = match sub(co, "Conditions") {
                        None => Vec::new(),
                        Some(Value::Array(a)) => {
                            a.iter().enumerate().map(|(i, x)| simple(x, &format!("{cf}.Conditions[{i}]"))).collect::<R<_>>()?
                        }
                        Some(_) => return Err(bad(&format!("{cf}.Conditions"), "expected a list")),
                    };
                    Some(JourneyCondition { conditions: list, operator: operator as i32 })
                }
            };
            Kind::ConditionalSplit(ConditionalSplitActivity {
                condition,
                evaluation_wait_time: evaluation(so, &f, notes)?,
                true_activity: text(so, "TrueActivity", &f)?,
                false_activity: text(so, "FalseActivity", &f)?,
            })
        }
        "MultiCondition" => {
            let mo = obj(body, &f)?;
            only(mo, &["Branches", "DefaultActivity", "EvaluationWaitTime"], &f)?;
            let branches = match sub(mo, "Branches") {
                None => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let bf = format!("{f}.Branches[{i}]");
                        let bo = obj(b, &bf)?;
                        only(bo, &["Condition", "NextActivity"], &bf)?;
                        Ok(MultiConditionalBranch {
                            condition: sub(bo, "Condition").map(|c| simple(c, &format!("{bf}.Condition"))).transpose()?,
                            next_activity: text(bo, "NextActivity", &bf)?,
                        })
                    })
                    .collect::<R<_>>()?,
                Some(_) => return Err(bad(&format!("{f}.Branches"), "expected a list")),
            };
            Kind::MultiCondition(MultiConditionalSplitActivity {
                branches,
                default_activity: text(mo, "DefaultActivity", &f)?,
                evaluation_wait_time: evaluation(mo, &f, notes)?,
            })
        }
        "RandomSplit" => {
            let ro = obj(body, &f)?;
            only(ro, &["Branches"], &f)?;
            let branches = match sub(ro, "Branches") {
                None => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let bf = format!("{f}.Branches[{i}]");
                        let bo = obj(b, &bf)?;
                        only(bo, &["NextActivity", "Percentage"], &bf)?;
                        Ok(RandomSplitEntry {
                            next_activity: text(bo, "NextActivity", &bf)?,
                            percentage: int(bo, "Percentage", &bf)?.unwrap_or(0),
                        })
                    })
                    .collect::<R<_>>()?,
                Some(_) => return Err(bad(&format!("{f}.Branches"), "expected a list")),
            };
            Kind::RandomSplit(RandomSplitActivity { branches })
        }
        "Holdout" => {
            let ho = obj(body, &f)?;
            only(ho, &["NextActivity", "Percentage"], &f)?;
            let mut next = text(ho, "NextActivity", &f)?;
            if next.is_empty() && !beside.is_empty() {
                note_beside(notes);
                next = beside.clone();
            }
            Kind::Holdout(HoldoutActivity { percentage: int(ho, "Percentage", &f)?.unwrap_or(0), next_activity: next })
        }
        _ => return Err(bad(&f, "Amazon Connect activities are not supported by Herald")),
    };
    if !beside.is_empty() && !matches!(kind_key, "EMAIL" | "SMS" | "PUSH" | "CUSTOM" | "Wait" | "Holdout") {
        return Err(bad(&format!("{at}.NextActivity"), format!("a {kind_key} activity leads on through its own branches")));
    }
    Ok(JourneyActivity { description: text(o, "Description", at)?, kind: Some(kind) })
}

/// Reads a `WriteJourneyRequest` (JSON or YAML already parsed into a value).
pub fn journey(v: &Value) -> R<Read> {
    let at = "WriteJourneyRequest";
    let o = obj(v, at)?;
    only(
        o,
        &[
            "Name",
            "StartCondition",
            "Activities",
            "StartActivity",
            "Schedule",
            "Limits",
            "LocalTime",
            "QuietTime",
            "WaitForQuietTime",
            "RefreshFrequency",
            "RefreshOnSegmentUpdate",
            "SendingSchedule",
            "OpenHours",
            "ClosedDays",
            "State",
            "tags",
            "Tags",
            "CreationDate",
            "LastModifiedDate",
            "TimezoneEstimationMethods",
            "JourneyChannelSettings",
        ],
        at,
    )?;
    let mut notes = Vec::new();
    if sub(o, "TimezoneEstimationMethods").is_some() {
        return Err(bad(
            &format!("{at}.TimezoneEstimationMethods"),
            "Herald does not estimate time zones; set Demographic.Timezone on endpoints",
        ));
    }
    if sub(o, "JourneyChannelSettings").is_some() {
        return Err(bad(&format!("{at}.JourneyChannelSettings"), "Amazon Connect settings are not supported by Herald"));
    }
    for k in ["CreationDate", "LastModifiedDate"] {
        if sub(o, k).is_some() {
            notes.push(format!("{at}.{k}: set by Herald; the file's value is not used"));
        }
    }
    let mut j = Journey {
        name: text(o, "Name", at)?,
        start_activity: text(o, "StartActivity", at)?,
        local_time: boolean(o, "LocalTime", at)?,
        wait_for_quiet_time: boolean(o, "WaitForQuietTime", at)?,
        refresh_frequency: text(o, "RefreshFrequency", at)?,
        refresh_on_segment_update: boolean(o, "RefreshOnSegmentUpdate", at)?,
        sending_schedule: boolean(o, "SendingSchedule", at)?,
        ..Default::default()
    };
    j.state = match text(o, "State", at)?.as_str() {
        "" | "DRAFT" => JourneyState::Draft,
        "ACTIVE" => JourneyState::Active,
        other => return Err(bad(&format!("{at}.State"), format!("a new journey is DRAFT or ACTIVE, not '{other}'"))),
    } as i32;
    for k in ["tags", "Tags"] {
        if let Some(t) = sub(o, k) {
            for (name, value) in obj(t, &format!("{at}.{k}"))? {
                j.tags
                    .insert(name.clone(), value.as_str().ok_or_else(|| bad(&format!("{at}.{k}.{name}"), "expected a string"))?.to_string());
            }
        }
    }
    if let Some(s) = sub(o, "StartCondition") {
        let f = format!("{at}.StartCondition");
        let so = obj(s, &f)?;
        only(so, &["Description", "SegmentStartCondition", "EventStartCondition"], &f)?;
        let mut sc = JourneyStartCondition { description: text(so, "Description", &f)?, ..Default::default() };
        if let Some(seg) = sub(so, "SegmentStartCondition") {
            sc.segment_start_condition = Some(segment_condition(seg, &format!("{f}.SegmentStartCondition"))?);
        }
        if let Some(e) = sub(so, "EventStartCondition") {
            let ef = format!("{f}.EventStartCondition");
            let eo = obj(e, &ef)?;
            only(eo, &["EventFilter", "SegmentId"], &ef)?;
            let mut start = EventStartCondition { segment_id: text(eo, "SegmentId", &ef)?, ..Default::default() };
            if let Some(filter) = sub(eo, "EventFilter") {
                let ff = format!("{ef}.EventFilter");
                let fo = obj(filter, &ff)?;
                only(fo, &["FilterType", "Dimensions"], &ff)?;
                let filter_type = match text(fo, "FilterType", &ff)?.as_str() {
                    "" | "ENDPOINT" => FilterType::Endpoint,
                    "SYSTEM" => FilterType::System,
                    other => return Err(bad(&format!("{ff}.FilterType"), format!("unknown value '{other}'"))),
                };
                let d = sub(fo, "Dimensions").map(|d| event_dimensions(d, &format!("{ff}.Dimensions"))).transpose()?.unwrap_or_default();
                let t = d.event_type.unwrap_or_default();
                start.event_filter = Some(EventFilter {
                    filter_type: filter_type as i32,
                    exclude_event_types: t.dimension_type == DimensionType::Exclusive as i32,
                    event_types: t.values,
                    attributes: d.attributes,
                    metrics: d.metrics,
                });
            }
            sc.event_start_condition = Some(start);
        }
        j.start_condition = Some(sc);
    }
    if let Some(acts) = sub(o, "Activities") {
        let f = format!("{at}.Activities");
        for (id, a) in obj(acts, &f)? {
            j.activities.insert(id.clone(), activity(a, &format!("{f}.{id}"), &mut notes)?);
        }
    }
    if let Some(s) = sub(o, "Schedule") {
        let f = format!("{at}.Schedule");
        let so = obj(s, &f)?;
        only(so, &["StartTime", "EndTime", "Timezone"], &f)?;
        j.schedule = Some(JourneySchedule {
            start_time: text(so, "StartTime", &f)?,
            end_time: text(so, "EndTime", &f)?,
            timezone: text(so, "Timezone", &f)?,
        });
    }
    if let Some(l) = sub(o, "Limits") {
        let f = format!("{at}.Limits");
        let lo = obj(l, &f)?;
        only(lo, &["DailyCap", "EndpointReentryCap", "MessagesPerSecond", "EndpointReentryInterval", "TimeframeCap", "TotalCap"], &f)?;
        let timeframe_cap = match sub(lo, "TimeframeCap") {
            None => None,
            Some(t) => {
                let tf = format!("{f}.TimeframeCap");
                let to = obj(t, &tf)?;
                only(to, &["Cap", "Days"], &tf)?;
                Some(JourneyTimeframeCap { cap: int(to, "Cap", &tf)?, days: int(to, "Days", &tf)? })
            }
        };
        j.limits = Some(JourneyLimits {
            daily_cap: int(lo, "DailyCap", &f)?,
            endpoint_reentry_cap: int(lo, "EndpointReentryCap", &f)?,
            messages_per_second: int(lo, "MessagesPerSecond", &f)?,
            endpoint_reentry_interval: text(lo, "EndpointReentryInterval", &f)?,
            timeframe_cap,
            total_cap: int(lo, "TotalCap", &f)?,
        });
    }
    if let Some(q) = sub(o, "QuietTime") {
        let f = format!("{at}.QuietTime");
        let qo = obj(q, &f)?;
        only(qo, &["Start", "End"], &f)?;
        j.quiet_time = Some(QuietTime { start: text(qo, "Start", &f)?, end: text(qo, "End", &f)? });
    }
    if let Some(h) = sub(o, "OpenHours") {
        let f = format!("{at}.OpenHours");
        let mut out = OpenHours::default();
        for (channel, days) in obj(h, &f)? {
            let cf = format!("{f}.{channel}");
            let mut d = OpenHoursDays::default();
            for (day, rules) in obj(days, &cf)? {
                let df = format!("{cf}.{day}");
                let list = rules.as_array().ok_or_else(|| bad(&df, "expected a list of {StartTime, EndTime}"))?;
                let mut r = OpenHoursRules::default();
                for (i, rule) in list.iter().enumerate() {
                    let rf = format!("{df}[{i}]");
                    let ro = obj(rule, &rf)?;
                    only(ro, &["StartTime", "EndTime"], &rf)?;
                    r.rules.push(OpenHoursRule { start_time: text(ro, "StartTime", &rf)?, end_time: text(ro, "EndTime", &rf)? });
                }
                d.days.insert(day.clone(), r);
            }
            out.channels.insert(channel.clone(), d);
        }
        j.open_hours = Some(out);
    }
    if let Some(c) = sub(o, "ClosedDays") {
        let f = format!("{at}.ClosedDays");
        let mut out = ClosedDays::default();
        for (channel, rules) in obj(c, &f)? {
            let cf = format!("{f}.{channel}");
            let list = rules.as_array().ok_or_else(|| bad(&cf, "expected a list of {Name, StartDateTime, EndDateTime}"))?;
            let mut r = ClosedDaysRules::default();
            for (i, rule) in list.iter().enumerate() {
                let rf = format!("{cf}[{i}]");
                let ro = obj(rule, &rf)?;
                only(ro, &["Name", "StartDateTime", "EndDateTime"], &rf)?;
                r.rules.push(ClosedDaysRule {
                    name: text(ro, "Name", &rf)?,
                    start_date_time: text(ro, "StartDateTime", &rf)?,
                    end_date_time: text(ro, "EndDateTime", &rf)?,
                });
            }
            out.channels.insert(channel.clone(), r);
        }
        j.closed_days = Some(out);
    }
    Ok(Read { journey: j, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_pinpoints_shape_and_the_seeds_habits() {
        let v = json!({
            "Name": "welcome",
            "StartCondition": {"SegmentStartCondition": {"SegmentId": "s1"}},
            "StartActivity": "welcome",
            "Activities": {
                "welcome": {"EMAIL": {"TemplateName": "Welcome", "MessageConfig": {"FromAddress": "a@example.com"}}, "NextActivity": "wait"},
                "wait": {"Wait": {"WaitTime": {"WaitFor": "3d"}}, "NextActivity": "opened"},
                "opened": {"ConditionalSplit": {
                    "Condition": {"Conditions": [{"EventCondition": {"Dimensions": {"EventType": {"DimensionType": "INCLUSIVE", "Values": ["_email.open"]}}, "MessageActivity": "welcome"}}]},
                    "TrueActivity": "follow", "FalseActivity": "push"}},
                "follow": {"EMAIL": {"TemplateName": "FollowUp"}},
                "push": {"PUSH": {"TemplateName": "Comeback", "MessageConfig": {"TimeToLive": "3600"}}}
            },
            "Limits": {"DailyCap": 2, "EndpointReentryCap": 1, "TimeframeCap": {"Cap": 3, "Days": 7}},
            "QuietTime": {"Start": "22:00", "End": "07:00"}
        });
        let r = journey(&v).unwrap();
        let j = r.journey;
        assert_eq!(j.name, "welcome");
        let Some(Kind::Email(m)) = &j.activities["welcome"].kind else { panic!() };
        assert_eq!((m.next_activity.as_str(), m.from_address.as_str()), ("wait", "a@example.com"));
        let Some(Kind::Wait(w)) = &j.activities["wait"].kind else { panic!() };
        assert_eq!((w.next_activity.as_str(), w.wait_time.as_ref().unwrap().wait_for.as_str()), ("opened", "3d"));
        assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
        assert!(crate::journeys::compile(&j).is_ok());
        assert_eq!(j.limits.unwrap().timeframe_cap.unwrap().days, Some(7));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = journey(&json!({"Name": "x", "Activites": {}})).unwrap_err();
        assert_eq!(e.at, "WriteJourneyRequest.Activites");
        let e = journey(&json!({"Name": "x", "Activities": {"a": {"EMAIL": {"Template": "t"}}}})).unwrap_err();
        assert_eq!(e.at, "WriteJourneyRequest.Activities.a.EMAIL.Template");
        let e = journey(&json!({"Name": "x", "Activities": {"a": {"EMAIL": {}, "Wait": {}}}})).unwrap_err();
        assert!(e.what.contains("not EMAIL and Wait"), "{e:?}");
    }
}
