//! When a journey's message may go: outside its quiet time and, with a sending schedule,
//! within the channel's open hours and outside its closed days. Quiet time applies, as in
//! Pinpoint, only to a participant whose endpoint has a valid Demographic.Timezone, read in
//! it; open hours are read in that zone too, or in the journey's schedule time zone (a UTC
//! offset, UTC when none) for an endpoint without one. With `local_time`, the journey's
//! start and end are wall-clock times in each participant's zone ([`local_window`]).

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

use super::Channel;
use crate::domain::FieldViolation;
use crate::proto::v1::Journey;
use crate::segments::rule::parse_instant;

/// A participant's clock: its own zone, or a fixed offset in minutes.
#[derive(Debug, Clone, Copy)]
enum Zone {
    Named(Tz),
    Fixed(i32),
}

impl Zone {
    fn local(self, t: DateTime<Utc>) -> NaiveDateTime {
        match self {
            Zone::Named(tz) => t.with_timezone(&tz).naive_local(),
            Zone::Fixed(m) => (t + Duration::minutes(i64::from(m))).naive_utc(),
        }
    }

    fn utc(self, local: NaiveDateTime) -> DateTime<Utc> {
        match self {
            Zone::Named(tz) => tz
                .from_local_datetime(&local)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                // A wall time skipped by a DST change: an hour later exists.
                .unwrap_or_else(|| Utc.from_utc_datetime(&(local + Duration::hours(1)))),
            Zone::Fixed(m) => Utc.from_utc_datetime(&(local - Duration::minutes(i64::from(m)))),
        }
    }
}

/// From and until, a closed day.
type Span = (DateTime<Utc>, DateTime<Utc>);

/// A journey's sending rules, compiled.
#[derive(Debug, Clone, Default)]
pub struct Sending {
    quiet: Option<(NaiveTime, NaiveTime)>,
    open: HashMap<Channel, HashMap<Weekday, Vec<(NaiveTime, NaiveTime)>>>,
    closed: HashMap<Channel, Vec<Span>>,
    /// The journey's own offset, for endpoints without a time zone.
    offset: i32,
}

fn hhmm(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M").ok()
}

fn channel_of(name: &str) -> Option<Channel> {
    match name {
        "EMAIL" => Some(Channel::Email),
        "SMS" => Some(Channel::Sms),
        "PUSH" => Some(Channel::Push),
        "CUSTOM" => Some(Channel::Custom),
        _ => None,
    }
}

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name {
        "MONDAY" => Weekday::Mon,
        "TUESDAY" => Weekday::Tue,
        "WEDNESDAY" => Weekday::Wed,
        "THURSDAY" => Weekday::Thu,
        "FRIDAY" => Weekday::Fri,
        "SATURDAY" => Weekday::Sat,
        "SUNDAY" => Weekday::Sun,
        _ => return None,
    })
}

impl Sending {
    /// Compiles the journey's quiet time, open hours and closed days; what cannot be read is
    /// a violation.
    pub fn new(j: &Journey, v: &mut Vec<FieldViolation>) -> Self {
        let mut s = Sending::default();
        let tz = j.schedule.as_ref().map(|s| s.timezone.as_str()).unwrap_or("");
        if !tz.is_empty() {
            match crate::campaigns::parse_offset(tz) {
                Some(m) => s.offset = m,
                None => v.push(FieldViolation::new("journey.schedule.timezone", "must be a UTC offset: UTC, UTC+01, UTC-05:30...")),
            }
        }
        if let Some(q) = j.quiet_time.as_ref().filter(|q| !q.start.is_empty() || !q.end.is_empty()) {
            match (hhmm(&q.start), hhmm(&q.end)) {
                (Some(a), Some(b)) => s.quiet = Some((a, b)),
                _ => v.push(FieldViolation::new("journey.quiet_time", "start and end are HH:MM")),
            }
        }
        let schedule_given =
            j.open_hours.as_ref().is_some_and(|o| !o.channels.is_empty()) || j.closed_days.as_ref().is_some_and(|c| !c.channels.is_empty());
        if schedule_given && !j.sending_schedule {
            v.push(FieldViolation::new("journey.sending_schedule", "set it to true for open_hours and closed_days to apply"));
        }
        for (name, days) in j.open_hours.as_ref().map(|o| &o.channels).into_iter().flatten() {
            let field = format!("journey.open_hours[{name:?}]");
            let Some(c) = channel_of(name) else {
                v.push(FieldViolation::new(field, "channels are EMAIL, SMS, PUSH, CUSTOM"));
                continue;
            };
            for (day, rules) in &days.days {
                let Some(d) = weekday(day) else {
                    v.push(FieldViolation::new(format!("{field}[{day:?}]"), "days are MONDAY to SUNDAY"));
                    continue;
                };
                for (k, r) in rules.rules.iter().enumerate() {
                    match (hhmm(&r.start_time), hhmm(&r.end_time)) {
                        (Some(a), Some(b)) if a < b => s.open.entry(c).or_default().entry(d).or_default().push((a, b)),
                        _ => v.push(FieldViolation::new(
                            format!("{field}[{day:?}].rules[{k}]"),
                            "start_time and end_time are HH:MM, start before end",
                        )),
                    }
                }
            }
        }
        for (name, rules) in j.closed_days.as_ref().map(|c| &c.channels).into_iter().flatten() {
            let field = format!("journey.closed_days[{name:?}]");
            let Some(c) = channel_of(name) else {
                v.push(FieldViolation::new(field, "channels are EMAIL, SMS, PUSH, CUSTOM"));
                continue;
            };
            for (k, r) in rules.rules.iter().enumerate() {
                match (parse_instant(&r.start_date_time), parse_instant(&r.end_date_time)) {
                    (Some(a), Some(b)) if a < b => s.closed.entry(c).or_default().push((a, b)),
                    _ => v.push(FieldViolation::new(
                        format!("{field}.rules[{k}]"),
                        "start_date_time and end_date_time are ISO-8601 instants, start before end",
                    )),
                }
            }
        }
        if !j.sending_schedule {
            s.open.clear();
            s.closed.clear();
        }
        s
    }

    /// Whether anything can hold a message.
    pub fn is_empty(&self) -> bool {
        self.quiet.is_none() && self.open.is_empty() && self.closed.is_empty()
    }

    /// When a message on `channel` to a participant in `tz` may go, if not at `now`.
    pub fn hold(&self, channel: Channel, tz: Option<&str>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.is_empty() {
            return None;
        }
        let own = tz.and_then(crate::campaigns::localtime::zone);
        let zone = own.map_or(Zone::Fixed(self.offset), Zone::Named);
        let mut at = now;
        // Each rule may push the time past another's window; a few rounds settle it.
        for _ in 0..8 {
            let before = at;
            if let (Some((start, end)), Some(_)) = (self.quiet, own) {
                at = quiet_end(start, end, zone, at).unwrap_or(at);
            }
            for (a, b) in self.closed.get(&channel).into_iter().flatten() {
                if at >= *a && at < *b {
                    at = *b;
                }
            }
            if let Some(week) = self.open.get(&channel) {
                at = next_open(week, zone, at).unwrap_or(at);
            }
            if at == before {
                break;
            }
        }
        (at > now).then_some(at)
    }
}

/// With `local_time`: when a participant in `tz` may enter, and until when — the journey's
/// start and end read in its schedule's offset, at the same wall-clock time in `tz` (the
/// journey's own times for a participant without a valid zone).
pub fn local_window(schedule: &crate::proto::v1::JourneySchedule, tz: Option<&str>) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let offset = crate::campaigns::parse_offset(&schedule.timezone).unwrap_or(0);
    let zone = tz.and_then(crate::campaigns::localtime::zone);
    let at = |s: &str| {
        let t = parse_instant(s)?;
        match zone {
            None => Some(t),
            Some(z) => {
                let wall = (t + Duration::minutes(i64::from(offset))).naive_utc();
                Some(Zone::Named(z).utc(wall))
            }
        }
    };
    (at(&schedule.start_time), at(&schedule.end_time))
}

/// How far a participant's local times can be from the journey's: UTC-12 to UTC+14.
pub const LOCAL_SPREAD_HOURS: (i64, i64) = (14, 12);

/// The end of the quiet time `at` falls in, if it does.
fn quiet_end(start: NaiveTime, end: NaiveTime, zone: Zone, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if start == end {
        return None;
    }
    let local = zone.local(at);
    let now = local.time();
    let inside = if start < end { now >= start && now < end } else { now >= start || now < end };
    if !inside {
        return None;
    }
    let mut day = local.date();
    if now >= end {
        day = day.succ_opt()?;
    }
    Some(zone.utc(day.and_time(end)))
}

/// The first time at or after `at` within the open hours (`at` itself when inside; `None`
/// when the week has no open hours at all).
fn next_open(week: &HashMap<Weekday, Vec<(NaiveTime, NaiveTime)>>, zone: Zone, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = zone.local(at);
    for offset in 0..8 {
        let day = local.date() + Duration::days(offset);
        let mut rules = week.get(&day.weekday()).cloned().unwrap_or_default();
        rules.sort();
        for (a, b) in rules {
            if offset == 0 {
                if local.time() >= a && local.time() < b {
                    return Some(at);
                }
                if local.time() < a {
                    return Some(zone.utc(day.and_time(a)));
                }
            } else {
                return Some(zone.utc(day.and_time(a)));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{
        ClosedDays, ClosedDaysRule, ClosedDaysRules, OpenHours, OpenHoursDays, OpenHoursRule, OpenHoursRules, QuietTime,
    };

    fn t(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap()
    }

    #[test]
    fn quiet_time_holds_in_the_participants_zone_or_the_journeys_offset() {
        let j = Journey { quiet_time: Some(QuietTime { start: "22:00".into(), end: "07:00".into() }), ..Default::default() };
        let mut v = Vec::new();
        let s = Sending::new(&j, &mut v);
        assert!(v.is_empty());
        // 23:30 in New York: held until 07:00 there (12:00 UTC).
        assert_eq!(s.hold(Channel::Email, Some("America/New_York"), t("2026-11-23T04:30:00Z")), Some(t("2026-11-23T12:00:00Z")));
        assert_eq!(s.hold(Channel::Email, Some("America/New_York"), t("2026-11-23T15:00:00Z")), None);
        // No valid zone: quiet time does not apply (Pinpoint's rule).
        assert_eq!(s.hold(Channel::Email, None, t("2026-11-23T23:00:00Z")), None);
        assert_eq!(s.hold(Channel::Email, Some("Not/AZone"), t("2026-11-23T23:00:00Z")), None);
    }

    #[test]
    fn local_time_reads_the_schedule_on_each_participants_clock() {
        let s = crate::proto::v1::JourneySchedule {
            start_time: "2026-11-23T09:00:00Z".into(),
            end_time: "2026-11-24T09:00:00Z".into(),
            timezone: "UTC".into(),
        };
        assert_eq!(local_window(&s, Some("America/New_York")), (Some(t("2026-11-23T14:00:00Z")), Some(t("2026-11-24T14:00:00Z"))));
        assert_eq!(local_window(&s, Some("Asia/Tokyo")), (Some(t("2026-11-23T00:00:00Z")), Some(t("2026-11-24T00:00:00Z"))));
        assert_eq!(local_window(&s, None), (Some(t("2026-11-23T09:00:00Z")), Some(t("2026-11-24T09:00:00Z"))));
    }

    #[test]
    fn open_hours_and_closed_days_apply_per_channel() {
        let rules = |a: &str, b: &str| OpenHoursRules { rules: vec![OpenHoursRule { start_time: a.into(), end_time: b.into() }] };
        let j = Journey {
            sending_schedule: true,
            open_hours: Some(OpenHours {
                channels: [("EMAIL".to_string(), OpenHoursDays { days: [("MONDAY".to_string(), rules("09:00", "17:00"))].into() })].into(),
            }),
            closed_days: Some(ClosedDays {
                channels: [(
                    "SMS".to_string(),
                    ClosedDaysRules {
                        rules: vec![ClosedDaysRule {
                            name: "holiday".into(),
                            start_date_time: "2026-11-23T00:00:00Z".into(),
                            end_date_time: "2026-11-24T00:00:00Z".into(),
                        }],
                    },
                )]
                .into(),
            }),
            ..Default::default()
        };
        let mut v = Vec::new();
        let s = Sending::new(&j, &mut v);
        assert!(v.is_empty(), "{v:?}");
        // 2026-11-23 is a Monday: before 09:00 the email waits; at noon it goes.
        assert_eq!(s.hold(Channel::Email, None, t("2026-11-23T08:00:00Z")), Some(t("2026-11-23T09:00:00Z")));
        assert_eq!(s.hold(Channel::Email, None, t("2026-11-23T12:00:00Z")), None);
        // After 17:00 Monday: next Monday.
        assert_eq!(s.hold(Channel::Email, None, t("2026-11-23T18:00:00Z")), Some(t("2026-11-30T09:00:00Z")));
        assert_eq!(s.hold(Channel::Sms, None, t("2026-11-23T12:00:00Z")), Some(t("2026-11-24T00:00:00Z")));
        assert_eq!(s.hold(Channel::Push, None, t("2026-11-23T12:00:00Z")), None);
    }
}
