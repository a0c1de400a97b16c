//! Local time and quiet time: when a campaign message may go to an endpoint, from the
//! endpoint's `Demographic.timezone`. Pure code, tested by tables.

use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::parse_offset;
use crate::proto::v1::Schedule;

/// An endpoint's time zone, when it names a valid one (quiet time and local time apply only
/// then).
pub fn zone(name: &str) -> Option<Tz> {
    if name.is_empty() {
        None
    } else {
        Tz::from_str(name).ok()
    }
}

/// Why a message waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Until the schedule's start in the endpoint's own time zone.
    LocalTime(DateTime<Utc>),
    /// Until the end of the endpoint's quiet time.
    QuietTime(DateTime<Utc>),
    /// Until its treatment's own start.
    Start(DateTime<Utc>),
}

impl Hold {
    pub fn until(self) -> DateTime<Utc> {
        match self {
            Hold::LocalTime(t) | Hold::QuietTime(t) | Hold::Start(t) => t,
        }
    }
}

/// When the run's scheduled start happens in `tz` by its wall clock: the start as read in the
/// schedule's starting offset (`timezone`, UTC when empty), at the same local time in `tz`.
fn local_start(schedule: &Schedule, scheduled: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
    let offset = parse_offset(&schedule.timezone).unwrap_or(0);
    let wall = (scheduled + Duration::minutes(i64::from(offset))).naive_utc();
    tz.from_local_datetime(&wall).earliest().map(|t| t.with_timezone(&Utc))
}

/// The end of the quiet time `at` falls in, in `tz`, if it falls in one.
pub(crate) fn quiet_until(start: NaiveTime, end: NaiveTime, tz: Tz, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if start == end {
        return None;
    }
    let local = at.with_timezone(&tz);
    let now = local.time();
    let inside = if start < end { now >= start && now < end } else { now >= start || now < end };
    if !inside {
        return None;
    }
    // The next `end` on the local clock after `at`.
    let mut day = local.date_naive();
    if now >= end {
        day = day.succ_opt()?;
    }
    tz.from_local_datetime(&day.and_time(end)).earliest().map(|t| t.with_timezone(&Utc))
}

/// Whether a message to an endpoint in `tz` must wait at `now`, and until when. `scheduled`
/// is the run's scheduled start.
pub fn hold(schedule: &Schedule, scheduled: DateTime<Utc>, tz: Option<Tz>, now: DateTime<Utc>) -> Option<Hold> {
    let tz = tz?;
    let mut result = None;
    let mut at = now;
    if schedule.is_local_time {
        if let Some(start) = local_start(schedule, scheduled, tz) {
            if start > now {
                result = Some(Hold::LocalTime(start));
                at = start;
            }
        }
    }
    if let Some(q) = &schedule.quiet_time {
        let parse = |v: &str| NaiveTime::parse_from_str(v, "%H:%M").ok();
        if let (Some(s), Some(e)) = (parse(&q.start), parse(&q.end)) {
            if let Some(until) = quiet_until(s, e, tz, at) {
                result = Some(Hold::QuietTime(until));
            }
        }
    }
    result
}

/// Where a treatment has a schedule of its own, when it sends in a run scheduled at
/// `scheduled`: moved by as much as the treatment's start is after the campaign's (never
/// before the run).
pub fn treatment_start(campaign: &Schedule, treatment: &Schedule, created: &str, scheduled: DateTime<Utc>) -> DateTime<Utc> {
    match (super::start_of(treatment, created), super::start_of(campaign, created)) {
        (Some(t), Some(c)) if t > c => scheduled + (t - c),
        _ => scheduled,
    }
}

/// [`hold`] for a treatment starting at `start` (its schedule's local time and quiet time
/// apply from then): a message waits for the start even where the endpoint has no zone.
pub fn hold_from(schedule: &Schedule, start: DateTime<Utc>, tz: Option<Tz>, now: DateTime<Utc>) -> Option<Hold> {
    let at = now.max(start);
    match hold(schedule, start, tz, at) {
        Some(h) => Some(h),
        None if at > now => Some(Hold::Start(at)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::QuietTime;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn quiet(start: &str, end: &str) -> Schedule {
        Schedule { quiet_time: Some(QuietTime { start: start.into(), end: end.into() }), ..Default::default() }
    }

    #[test]
    fn quiet_time_holds_until_it_ends_in_the_endpoints_zone() {
        let s = quiet("22:00", "07:00");
        let ny = zone("America/New_York");
        let start = t("2026-11-22T00:00:00Z");
        // 23:30 in New York (04:30 UTC): held until 07:00 New York (12:00 UTC).
        assert_eq!(hold(&s, start, ny, t("2026-11-22T04:30:00Z")), Some(Hold::QuietTime(t("2026-11-22T12:00:00Z"))));
        // 06:59 in New York: held a minute.
        assert_eq!(hold(&s, start, ny, t("2026-11-22T11:59:00Z")), Some(Hold::QuietTime(t("2026-11-22T12:00:00Z"))));
        // 07:00 and 21:59 in New York: sent.
        assert_eq!(hold(&s, start, ny, t("2026-11-22T12:00:00Z")), None);
        assert_eq!(hold(&s, start, ny, t("2026-11-23T02:59:00Z")), None);
        // A window within one day.
        let day = quiet("12:00", "13:30");
        assert_eq!(hold(&day, start, zone("Europe/Berlin"), t("2026-11-22T11:15:00Z")), Some(Hold::QuietTime(t("2026-11-22T12:30:00Z"))));
        assert_eq!(hold(&day, start, zone("Europe/Berlin"), t("2026-11-22T12:30:00Z")), None);
        // No valid time zone: quiet time does not apply.
        assert_eq!(hold(&s, start, zone(""), t("2026-11-22T04:30:00Z")), None);
        assert_eq!(hold(&s, start, zone("Mars/Olympus"), t("2026-11-22T04:30:00Z")), None);
    }

    #[test]
    fn local_time_sends_at_the_start_on_each_endpoints_clock() {
        // 09:00 read in UTC+14 (the earliest zone) is 19:00 UTC the day before.
        let s = Schedule { is_local_time: true, timezone: "UTC+14".into(), ..Default::default() };
        let scheduled = t("2026-11-21T19:00:00Z");
        // Tokyo reaches 09:00 at 00:00 UTC; New York at 14:00 UTC.
        assert_eq!(hold(&s, scheduled, zone("Asia/Tokyo"), scheduled), Some(Hold::LocalTime(t("2026-11-22T00:00:00Z"))));
        assert_eq!(hold(&s, scheduled, zone("America/New_York"), scheduled), Some(Hold::LocalTime(t("2026-11-22T14:00:00Z"))));
        assert_eq!(hold(&s, scheduled, zone("Pacific/Kiritimati"), scheduled), None, "UTC+14 is there already");
        assert_eq!(hold(&s, scheduled, zone("Asia/Tokyo"), t("2026-11-22T00:00:00Z")), None);
        // Local time and quiet time together: 09:00 local falls in a 08:00-10:00 quiet time.
        let both = Schedule { quiet_time: Some(QuietTime { start: "08:00".into(), end: "10:00".into() }), ..s.clone() };
        assert_eq!(hold(&both, scheduled, zone("Asia/Tokyo"), scheduled), Some(Hold::QuietTime(t("2026-11-22T01:00:00Z"))));
    }

    #[test]
    fn a_treatment_with_its_own_schedule_starts_later_by_as_much() {
        let campaign = Schedule { start_time: "2026-11-22T09:00:00Z".into(), ..Default::default() };
        let later = Schedule { start_time: "2026-11-22T11:30:00Z".into(), ..Default::default() };
        let earlier = Schedule { start_time: "2026-11-22T08:00:00Z".into(), ..Default::default() };
        let run = t("2026-11-23T09:00:00Z");
        assert_eq!(treatment_start(&campaign, &later, "", run), t("2026-11-23T11:30:00Z"));
        assert_eq!(treatment_start(&campaign, &earlier, "", run), run, "never before the run");
        assert_eq!(treatment_start(&campaign, &Schedule::default(), "", run), run);
        // Waits for its start with or without a zone; then its quiet time applies.
        let start = t("2026-11-23T11:30:00Z");
        assert_eq!(hold_from(&later, start, None, run), Some(Hold::Start(start)));
        assert_eq!(hold_from(&later, start, zone("Asia/Tokyo"), run), Some(Hold::Start(start)));
        assert_eq!(hold_from(&later, start, None, start), None);
        let quiet_later = Schedule { quiet_time: Some(QuietTime { start: "20:00".into(), end: "23:00".into() }), ..later };
        // 11:30 UTC is 20:30 in Tokyo: held until 23:00 there (14:00 UTC).
        assert_eq!(hold_from(&quiet_later, start, zone("Asia/Tokyo"), run), Some(Hold::QuietTime(t("2026-11-23T14:00:00Z"))));
    }
}
