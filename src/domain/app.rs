//! App rules: names, tags and the app-level limits and quiet time later issues build on.

use super::FieldViolation;
use crate::proto::v1::{AppSettings, CampaignLimits, ChannelQuota, QuietTime};

pub const MAX_NAME_CHARS: usize = 256;
pub const MAX_TAGS: usize = 50;

pub fn validate_name(name: &str) -> Option<FieldViolation> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        Some(FieldViolation::new("name", format!("must be 1 to {MAX_NAME_CHARS} characters")))
    } else {
        None
    }
}

pub fn validate_tags<'a>(tags: impl ExactSizeIterator<Item = (&'a String, &'a String)>) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    if tags.len() > MAX_TAGS {
        out.push(FieldViolation::new("tags", format!("at most {MAX_TAGS} tags")));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            out.push(FieldViolation::new(format!("tags[{k}]"), "tag keys must be 1 to 128 characters"));
        }
        if v.chars().count() > 256 {
            out.push(FieldViolation::new(format!("tags[{k}]"), "tag values must be at most 256 characters"));
        }
    }
    out
}

/// Checks limits with Pinpoint's bounds; paths are relative to the limits block.
pub fn validate_limits(l: &CampaignLimits) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    let mut check = |field: &str, v: Option<i32>, lo: i32, hi: i32| {
        if let Some(v) = v {
            if v < lo || v > hi {
                out.push(FieldViolation::new(field, format!("must be between {lo} and {hi}")));
            }
        }
    };
    check("daily", l.daily, 0, 100);
    check("total", l.total, 0, 100);
    check("messages_per_second", l.messages_per_second, 1, 20_000);
    check("maximum_duration", l.maximum_duration, 60, i32::MAX);
    check("session", l.session, 0, 100);
    out
}

/// Parses `HH:MM` (24-hour) into minutes after midnight.
pub fn parse_hh_mm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

pub fn validate_quiet_time(q: &QuietTime) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    match (q.start.is_empty(), q.end.is_empty()) {
        (true, true) => {}
        (false, false) => {
            for (field, v) in [("start", &q.start), ("end", &q.end)] {
                if parse_hh_mm(v).is_none() {
                    out.push(FieldViolation::new(field, "must be HH:MM (24-hour)"));
                }
            }
        }
        (true, false) => out.push(FieldViolation::new("start", "is required when end is set")),
        (false, true) => out.push(FieldViolation::new("end", "is required when start is set")),
    }
    out
}

pub fn validate_quota(q: &ChannelQuota) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    for (field, v, hi) in
        [("messages_per_second", q.messages_per_second.map(i64::from), 1_000_000), ("burst", q.burst.map(i64::from), 1_000_000)]
    {
        if v.is_some_and(|v| v < 1 || v > hi) {
            out.push(FieldViolation::new(field, format!("must be between 1 and {hi}")));
        }
    }
    for (field, v) in [("daily", q.daily), ("total", q.total)] {
        if v.is_some_and(|v| v < 0) {
            out.push(FieldViolation::new(field, "must not be negative"));
        }
    }
    out
}

pub fn validate_settings(s: &AppSettings) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    for (channel, q) in &s.channel_quotas {
        if crate::domain::endpoint::parse_channel(channel).is_none() || channel.to_ascii_uppercase() != *channel {
            out.push(FieldViolation::new(format!("channel_quotas[{channel}]"), "is not a channel name (EMAIL, SMS, CUSTOM...)"));
        }
        out.extend(validate_quota(q).into_iter().map(|v| v.under(&format!("channel_quotas[{channel}]"))));
    }
    if let Some(l) = &s.limits {
        out.extend(validate_limits(l).into_iter().map(|v| v.under("limits")));
    }
    if let Some(q) = &s.quiet_time {
        out.extend(validate_quiet_time(q).into_iter().map(|v| v.under("quiet_time")));
    }
    if let Some(j) = &s.journey_limits {
        let mut range = |name: &str, val: Option<i32>, hi: i32| {
            if val.is_some_and(|x| !(0..=hi).contains(&x)) {
                out.push(FieldViolation::new(format!("journey_limits.{name}"), format!("must be 0 to {hi}")));
            }
        };
        range("daily_cap", j.daily_cap, 100);
        range("total_cap", j.total_cap, 100);
        if let Some(t) = &j.timeframe_cap {
            range("timeframe_cap.cap", t.cap, 100);
            range("timeframe_cap.days", t.days, 30);
            if t.cap.unwrap_or(0) > 0 && t.days.unwrap_or(0) == 0 {
                out.push(FieldViolation::new("journey_limits.timeframe_cap.days", "give the days the cap counts over"));
            }
        }
    }
    out
}

/// Applies an update: each block the update carries replaces the stored block.
pub fn apply_settings(stored: &mut AppSettings, update: &AppSettings, now: &str) {
    if update.limits.is_some() {
        stored.limits = update.limits;
    }
    if update.quiet_time.is_some() {
        stored.quiet_time = update.quiet_time.clone();
    }
    if !update.channel_quotas.is_empty() {
        stored.channel_quotas = update
            .channel_quotas
            .iter()
            .filter(|(_, q)| q.messages_per_second.is_some() || q.daily.is_some() || q.total.is_some())
            .map(|(k, v)| (k.clone(), *v))
            .collect();
    }
    if update.engagement_tracking.is_some() {
        stored.engagement_tracking = update.engagement_tracking;
    }
    if update.journey_limits.is_some() {
        stored.journey_limits = update.journey_limits;
    }
    if let Some(h) = &update.campaign_hook {
        // A hook with neither URL nor Lambda name removes it.
        stored.campaign_hook = Some(h.clone()).filter(|h| !h.web_url.is_empty() || !h.lambda_function_name.is_empty());
    }
    stored.last_modified_date = now.to_string();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_pinpoint_bounds() {
        let ok = CampaignLimits {
            daily: Some(100),
            total: Some(0),
            messages_per_second: Some(20_000),
            maximum_duration: Some(60),
            session: None,
        };
        assert!(validate_limits(&ok).is_empty());
        let bad = CampaignLimits {
            daily: Some(101),
            total: Some(-1),
            messages_per_second: Some(0),
            maximum_duration: Some(59),
            session: Some(101),
        };
        let fields: Vec<_> = validate_limits(&bad).into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["daily", "total", "messages_per_second", "maximum_duration", "session"]);
    }

    #[test]
    fn quiet_time_is_hh_mm_both_or_neither() {
        assert_eq!(parse_hh_mm("22:30"), Some(22 * 60 + 30));
        assert_eq!(parse_hh_mm("24:00"), None);
        assert_eq!(parse_hh_mm("7:00"), None);
        assert!(validate_quiet_time(&QuietTime { start: "22:00".into(), end: "07:00".into() }).is_empty());
        assert_eq!(validate_quiet_time(&QuietTime { start: "22:00".into(), end: String::new() })[0].field, "end");
        let s = AppSettings { quiet_time: Some(QuietTime { start: "9".into(), end: "07:00".into() }), ..Default::default() };
        assert_eq!(validate_settings(&s)[0].field, "quiet_time.start");
    }

    #[test]
    fn updates_replace_only_the_blocks_they_carry() {
        let mut stored = AppSettings { limits: Some(CampaignLimits { daily: Some(5), ..Default::default() }), ..Default::default() };
        let update = AppSettings { quiet_time: Some(QuietTime { start: "22:00".into(), end: "07:00".into() }), ..Default::default() };
        apply_settings(&mut stored, &update, "now");
        assert_eq!(stored.limits.unwrap().daily, Some(5));
        assert_eq!(stored.quiet_time.unwrap().start, "22:00");
        assert_eq!(stored.last_modified_date, "now");
    }
}
