//! Campaigns with Pinpoint's semantics: definitions ([`validate`]), schedules (this module),
//! runs that stream a segment into the dispatch engine ([`run`]) and the scheduler that fires
//! them once across daemons ([`scheduler`]).

pub mod hook;
pub mod inapp;
pub mod json;
pub mod localtime;
pub mod run;
pub mod scheduler;

use chrono::{DateTime, Duration as ChronoDuration, Months, Utc};
use prost::Message as _;

use crate::domain::FieldViolation;
pub use crate::proto::v1::Frequency;
use crate::proto::v1::{Campaign, CampaignRun, CampaignState, Schedule};
use crate::segments::rule::parse_instant;
use crate::store::{Store, StoreError};

/// Store record kinds.
pub const KIND: &str = "campaign";

/// The id of a run's activity for one treatment (Pinpoint's campaign activity id): what
/// GetCampaignActivities lists and what events and KPIs group a campaign's messages by.
pub fn activity_id(run_key: &str, treatment_id: i32) -> String {
    format!("{run_key}-{treatment_id}")
}
pub const RUN_KIND: &str = "campaign-run";
/// The store record kind of an EVENT campaign's runs for one batch of events, while they run.
pub const TRIGGER_KIND: &str = "campaign-trigger";

/// Treatments in all, the default one included (Pinpoint's limit).
pub const MAX_TREATMENTS: usize = 5;

/// A run's record id: the campaign and the schedule occurrence, sortable.
pub fn run_id(campaign_id: &str, occurrence: i32) -> String {
    format!("{campaign_id}:{occurrence:06}")
}

/// The "user" a campaign registers on the segment and templates it uses.
pub fn user(campaign_id: &str) -> String {
    format!("campaign {campaign_id}")
}

/// When the schedule starts: `IMMEDIATE` is the campaign's creation.
pub fn start_of(schedule: &Schedule, created: &str) -> Option<DateTime<Utc>> {
    if schedule.start_time.eq_ignore_ascii_case("IMMEDIATE") {
        parse_instant(created)
    } else {
        parse_instant(&schedule.start_time)
    }
}

/// The time of occurrence `k` of a schedule starting at `start`.
pub fn occurrence(frequency: Frequency, start: DateTime<Utc>, k: i32) -> Option<DateTime<Utc>> {
    let k = i64::from(k);
    match frequency {
        Frequency::Once => (k == 0).then_some(start),
        Frequency::Hourly => Some(start + ChronoDuration::hours(k)),
        Frequency::Daily => Some(start + ChronoDuration::days(k)),
        Frequency::Weekly => Some(start + ChronoDuration::weeks(k)),
        Frequency::Monthly => start.checked_add_months(Months::new(u32::try_from(k).ok()?)),
        _ => None,
    }
}

/// The latest occurrence due at `now` (not past the end time), if any: missed earlier
/// occurrences are not run late.
pub fn due(schedule: &Schedule, created: &str, now: DateTime<Utc>) -> Option<(i32, DateTime<Utc>)> {
    let frequency = Frequency::try_from(schedule.frequency).ok()?;
    let start = start_of(schedule, created)?;
    if now < start {
        return None;
    }
    let end = parse_instant(&schedule.end_time);
    let mut k = match frequency {
        Frequency::Once => 0,
        Frequency::Hourly => ((now - start).num_seconds() / 3_600) as i32,
        Frequency::Daily => ((now - start).num_seconds() / 86_400) as i32,
        Frequency::Weekly => ((now - start).num_seconds() / (7 * 86_400)) as i32,
        Frequency::Monthly => {
            let mut k = 0;
            while occurrence(frequency, start, k + 1).is_some_and(|t| t <= now) {
                k += 1;
            }
            k
        }
        _ => return None,
    };
    // Past the end time: the last occurrence before it.
    while k >= 0 {
        let at = occurrence(frequency, start, k)?;
        if end.is_none_or(|e| at <= e) {
            return Some((k, at));
        }
        k -= 1;
    }
    None
}

/// Whether a schedule has an occurrence after `k`.
pub fn has_more(schedule: &Schedule, created: &str, k: i32) -> bool {
    let (Ok(frequency), Some(start)) = (Frequency::try_from(schedule.frequency), start_of(schedule, created)) else { return false };
    match occurrence(frequency, start, k + 1) {
        Some(at) => parse_instant(&schedule.end_time).is_none_or(|e| at <= e),
        None => false,
    }
}

/// Pinpoint's defaults for a schedule's omitted members: a schedule without a frequency runs
/// once (`Frequency` is not required in Pinpoint's `Schedule`).
pub fn apply_defaults(s: &mut Schedule) {
    if s.frequency == Frequency::Unspecified as i32 {
        s.frequency = Frequency::Once as i32;
    }
}

/// Checks a schedule; `field` prefixes the violations.
pub fn validate_schedule(field: &str, s: &Schedule, out: &mut Vec<FieldViolation>) {
    let frequency = Frequency::try_from(s.frequency).unwrap_or(Frequency::Unspecified);
    if frequency == Frequency::Unspecified {
        out.push(FieldViolation::new(format!("{field}.frequency"), "must be ONCE, HOURLY, DAILY, WEEKLY, MONTHLY, EVENT or IN_APP_EVENT"));
    }
    let immediate = s.start_time.eq_ignore_ascii_case("IMMEDIATE");
    let start = parse_instant(&s.start_time);
    if !immediate && start.is_none() {
        out.push(FieldViolation::new(format!("{field}.start_time"), "must be IMMEDIATE or an ISO-8601 instant"));
    }
    if immediate && !matches!(frequency, Frequency::Once | Frequency::Unspecified | Frequency::InAppEvent) {
        out.push(FieldViolation::new(format!("{field}.start_time"), "IMMEDIATE is for ONCE and IN_APP_EVENT campaigns"));
    }
    if !s.end_time.is_empty() {
        match parse_instant(&s.end_time) {
            None => out.push(FieldViolation::new(format!("{field}.end_time"), "must be an ISO-8601 instant")),
            Some(e) if start.is_some_and(|st| e <= st) => {
                out.push(FieldViolation::new(format!("{field}.end_time"), "must be after start_time"))
            }
            Some(_) => {}
        }
    } else if matches!(frequency, Frequency::Hourly | Frequency::Daily | Frequency::Weekly | Frequency::Monthly) {
        out.push(FieldViolation::new(format!("{field}.end_time"), "a recurring campaign needs an end time"));
    }
    if !s.timezone.is_empty() && parse_offset(&s.timezone).is_none() {
        out.push(FieldViolation::new(format!("{field}.timezone"), "must be a UTC offset: UTC, UTC+01, UTC+05:45, UTC-11"));
    }
    if let Some(q) = &s.quiet_time {
        let hhmm = |v: &str| chrono::NaiveTime::parse_from_str(v, "%H:%M").is_ok();
        if q.start.is_empty() != q.end.is_empty() {
            out.push(FieldViolation::new(format!("{field}.quiet_time"), "give both start and end, or neither"));
        }
        for (name, v) in [("start", &q.start), ("end", &q.end)] {
            if !v.is_empty() && !hhmm(v) {
                out.push(FieldViolation::new(format!("{field}.quiet_time.{name}"), "must be HH:MM"));
            }
        }
    }
    if matches!(frequency, Frequency::Event | Frequency::InAppEvent) {
        match &s.event_filter {
            None => {
                out.push(FieldViolation::new(format!("{field}.event_filter"), "an EVENT or IN_APP_EVENT campaign needs an event filter"))
            }
            Some(f) if f.event_types.is_empty() => {
                out.push(FieldViolation::new(format!("{field}.event_filter.event_types"), "name at least one event type"))
            }
            Some(f) => {
                crate::segments::validate::dimensions(&format!("{field}.event_filter"), &event_dimensions(f), out);
            }
        }
    }
}

/// An event filter's attribute and metric tests as segment dimensions (the same semantics,
/// applied to the event's attributes and metrics).
pub fn event_dimensions(f: &crate::proto::v1::EventFilter) -> crate::proto::v1::SegmentDimensions {
    crate::proto::v1::SegmentDimensions { attributes: f.attributes.clone(), metrics: f.metrics.clone(), ..Default::default() }
}

/// Minutes east of UTC for `UTC`, `UTC+01`, `UTC+05:45`, `UTC-11`.
pub fn parse_offset(s: &str) -> Option<i32> {
    let rest = s.strip_prefix("UTC")?;
    if rest.is_empty() {
        return Some(0);
    }
    let (sign, rest) = match rest.as_bytes().first()? {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return None,
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h.parse::<i32>().ok()?, m.parse::<i32>().ok()?),
        None => (rest.parse::<i32>().ok()?, 0),
    };
    (rest.len() >= 2 && (0..=14).contains(&h) && [0, 30, 45].contains(&m)).then_some(sign * (h * 60 + m))
}

/// A campaign's runs, in occurrence order.
pub async fn runs(store: &dyn Store, app: &str, campaign_id: &str) -> Result<Vec<CampaignRun>, StoreError> {
    let prefix = format!("{campaign_id}:");
    let mut out = Vec::new();
    let mut after = prefix.clone();
    loop {
        let page = store.list_records(app, RUN_KIND, Some(&after), 500).await?;
        let n = page.len();
        for raw in page {
            let run = CampaignRun::decode(raw.as_slice())?;
            if run.campaign_id != campaign_id {
                return Ok(out);
            }
            after = run_id(campaign_id, run.occurrence);
            out.push(run);
        }
        if n < 500 {
            return Ok(out);
        }
    }
}

/// A campaign's state, from its definition and runs.
pub fn state(c: &Campaign, runs: &[CampaignRun]) -> CampaignState {
    let schedule = c.schedule.clone().unwrap_or_default();
    let last = runs.last();
    if last.is_some_and(|r| r.state == CampaignState::Executing as i32) {
        return CampaignState::Executing;
    }
    if c.is_paused {
        return CampaignState::Paused;
    }
    if schedule.frequency == Frequency::Event as i32 {
        return CampaignState::Scheduled;
    }
    // An in-app campaign is shown from its start to its end.
    if schedule.frequency == Frequency::InAppEvent as i32 {
        let now = chrono::Utc::now();
        return match (start_of(&schedule, &c.creation_date), parse_instant(&schedule.end_time)) {
            (_, Some(end)) if end <= now => CampaignState::Completed,
            (Some(start), _) if start > now => CampaignState::Scheduled,
            _ => CampaignState::Executing,
        };
    }
    match last {
        None => CampaignState::Scheduled,
        Some(r) if r.state == CampaignState::Paused as i32 && schedule.frequency == Frequency::Once as i32 => CampaignState::Paused,
        Some(r) if has_more(&schedule, &c.creation_date, r.occurrence) => CampaignState::PendingNextRun,
        Some(_) => CampaignState::Completed,
    }
}

/// Registers (or releases) a campaign's use of its segment and templates: while registered
/// they cannot be deleted. A campaign holds them from creation until it is deleted or has run
/// its last occurrence.
pub async fn set_uses(store: &dyn Store, app: &str, c: &Campaign, in_use: bool) -> Result<(), StoreError> {
    let user = user(&c.id);
    match store.set_record_use(app, crate::segments::KIND, &c.segment_id, &user, in_use).await {
        Ok(()) | Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let mut templates = vec![c.template_configuration.clone().unwrap_or_default()];
    templates.extend(c.additional_treatments.iter().filter_map(|t| t.template_configuration.clone()));
    for t in templates {
        for r in [t.email_template, t.custom_template, t.sms_template, t.push_template, t.in_app_template].into_iter().flatten() {
            if !r.name.is_empty() {
                match store.set_template_use(app, &r.name, &user, in_use).await {
                    Ok(()) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}
