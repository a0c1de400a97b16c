//! Pinpoint's KPIs from per-day counters that the store keeps as outcomes and events are
//! recorded ([`tally`]), so a query reads at most 31 days of counters and never scans events.
//!
//! Counters are per UTC day and per scope: `t` (transactional: SendMessages and
//! SendUsersMessages), `c:{campaign}` and `a:{campaign}:{run}` (a campaign and one of its runs,
//! Pinpoint's campaign activity), `j:{journey}` and `ja:{journey}:{activity}`. Their names:
//!
//! | counter | counted when |
//! |---|---|
//! | `sent.{g}` | a message went to the provider (any final status after an attempt) |
//! | `ok.{g}` | the provider accepted it |
//! | `hb.{g}` / `sb.{g}` / `fail.{g}` | it failed permanently / temporarily / otherwise at sending |
//! | `fhb.{g}` / `fsb.{g}` | a bounce reported afterwards (SES notification, SMS receipt) |
//! | `dlv.{g}` | a delivery reported afterwards (SES Delivery, SMS delivered receipt) |
//! | `open.email`, `uopen.email` | an open, the first open of its message |
//! | `click.email`, `uclick.email` | a click, the first click of its message |
//! | `complaint.email`, `unsub.email` | a complaint, a one-click unsubscribe |
//! | `open.push` | a push opened (`_campaign.opened_notification` reported with PutEvents) |
//! | `smserr.{code}` | an SMS failed with this provider code |
//!
//! `g` is the channel group: email, sms, push, custom, voice. Unique endpoints delivered to
//! are HyperLogLog sets per day and scope (`C` is all campaigns together), so a range of days
//! is the union of its days.

pub mod hll;
pub mod query;

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::proto::v1::{DeliveryStatus, Event, MessageOutcome, MessageSource};

/// What one recorded batch adds to the counters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// (day, `{counter}|{scope}`) → increment.
    pub counts: BTreeMap<(String, String), i64>,
    /// (day, scope) → endpoints delivered to.
    pub uniques: BTreeMap<(String, String), Vec<String>>,
}

impl Tally {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.uniques.is_empty()
    }

    fn add(&mut self, day: &str, counter: &str, scopes: &[String], n: i64) {
        for s in scopes {
            *self.counts.entry((day.to_string(), format!("{counter}|{s}"))).or_insert(0) += n;
        }
    }
}

/// How long counters are kept: Pinpoint answers for the last 90 days.
pub const RETENTION_DAYS: u64 = 100;

/// The channel group of a Pinpoint channel name.
pub fn group(channel: &str) -> &'static str {
    match channel {
        "EMAIL" => "email",
        "SMS" => "sms",
        "VOICE" => "voice",
        "CUSTOM" => "custom",
        _ => "push",
    }
}

fn scopes(campaign: &str, run: &str, journey: &str, activity: &str) -> Vec<String> {
    match (campaign.is_empty(), journey.is_empty()) {
        (false, _) => {
            let mut s = vec![format!("c:{campaign}")];
            if !run.is_empty() {
                s.push(format!("a:{campaign}:{run}"));
            }
            s
        }
        (true, false) => {
            let mut s = vec![format!("j:{journey}")];
            if !activity.is_empty() {
                s.push(format!("ja:{journey}:{activity}"));
            }
            s
        }
        (true, true) => vec!["t".to_string()],
    }
}

/// The UTC day (`YYYY-MM-DD`) an ISO-8601 timestamp falls on.
fn day_of(ts: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some(t.with_timezone(&chrono::Utc).format("%Y-%m-%d").to_string())
}

/// What a batch adds: sends from its outcomes (attempted and not dry runs), engagement and
/// provider reports from its events that are not the send events of those outcomes.
pub fn tally(outcomes: &[MessageOutcome], events: &[Event]) -> Tally {
    let mut t = Tally::default();
    let mut paired: HashSet<&str> = HashSet::with_capacity(outcomes.len());
    // A batch's outcomes share a few days, campaigns, runs and statuses: they are counted per
    // distinct group first, and each group's counter names are made once.
    #[derive(PartialEq, Eq, Hash)]
    struct Group<'a> {
        day: &'a str,
        campaign: &'a str,
        run: Option<(&'a str, i32)>,
        journey: &'a str,
        activity: &'a str,
        channel: &'a str,
        status: DeliveryStatus,
        sms_code: i32,
    }
    let mut groups: HashMap<Group<'_>, (i64, Vec<&str>)> = HashMap::new();
    for o in outcomes {
        paired.insert(o.message_id.as_str());
        if o.dry_run || o.attempts == 0 {
            continue;
        }
        let status = DeliveryStatus::try_from(o.delivery_status).unwrap_or(DeliveryStatus::UnknownFailure);
        let run =
            (o.source == MessageSource::Campaign as i32 && !o.request_id.is_empty()).then_some((o.request_id.as_str(), o.treatment_id));
        let sms = status != DeliveryStatus::Successful && group(&o.channel) == "sms";
        let g = Group {
            day: crate::store::outcome_day(o),
            campaign: &o.campaign_id,
            run,
            journey: &o.journey_id,
            activity: &o.journey_activity_id,
            channel: &o.channel,
            status,
            sms_code: if sms { o.status_code } else { 0 },
        };
        let entry = groups.entry(g).or_default();
        entry.0 += 1;
        if status == DeliveryStatus::Successful && !o.endpoint_id.is_empty() && (!o.campaign_id.is_empty() || !o.journey_id.is_empty()) {
            entry.1.push(&o.endpoint_id);
        }
    }
    for (k, (n, delivered)) in groups {
        let activity = k.run.map(|(run, treatment)| crate::campaigns::activity_id(run, treatment)).unwrap_or_default();
        let s = scopes(k.campaign, &activity, k.journey, k.activity);
        let g = group(k.channel);
        t.add(k.day, &format!("sent.{g}"), &s, n);
        let counter = match k.status {
            DeliveryStatus::Successful => "ok",
            DeliveryStatus::PermanentFailure => "hb",
            DeliveryStatus::TemporaryFailure => "sb",
            _ => "fail",
        };
        t.add(k.day, &format!("{counter}.{g}"), &s, n);
        if k.status != DeliveryStatus::Successful && g == "sms" {
            t.add(k.day, &format!("smserr.{}", k.sms_code), &s, n);
        }
        if !delivered.is_empty() {
            let all_campaigns = (!k.campaign.is_empty()).then_some("C");
            for scope in s.iter().map(String::as_str).chain(all_campaigns) {
                t.uniques.entry((k.day.to_string(), scope.to_string())).or_default().extend(delivered.iter().map(|e| e.to_string()));
            }
        }
    }
    for e in events {
        if !e.message_id.is_empty() && paired.contains(e.message_id.as_str()) {
            continue;
        }
        let counter = match e.event_type.as_str() {
            "_email.open" => "open.email",
            "_email.click" => "click.email",
            "_email.delivered" => "dlv.email",
            "_email.hardbounce" => "fhb.email",
            "_email.softbounce" => "fsb.email",
            "_email.complaint" => "complaint.email",
            "_email.unsubscribe" => "unsub.email",
            "_SMS.SUCCESS" => "dlv.sms",
            "_SMS.FAILURE" => "fhb.sms",
            "_campaign.opened_notification" | "_push.opened" => "open.push",
            // In-app messages, as the app reports showing them (Amplify's event names).
            "_inapp.message_displayed" => "display.inapp",
            "_inapp.message_clicked" => "click.inapp",
            "_inapp.message_dismissed" => "dismiss.inapp",
            _ => continue,
        };
        let Some(day) = day_of(&e.event_timestamp).or_else(|| day_of(&e.arrival_timestamp)) else { continue };
        let a = |k: &str| e.attributes.get(k).map_or("", String::as_str);
        let s = scopes(a("campaign_id"), a("campaign_activity_id"), a("journey_id"), a("journey_activity_id"));
        t.add(&day, counter, &s, 1);
        if e.first_of_message && counter.ends_with(".email") {
            let unique = if counter == "open.email" { "uopen.email" } else { "uclick.email" };
            t.add(&day, unique, &s, 1);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn grouped_counts_equal_counting_each_outcome_on_its_own() {
        // Counted one outcome at a time, as the definition reads.
        fn one_by_one(outcomes: &[MessageOutcome]) -> Tally {
            let mut t = Tally::default();
            for o in outcomes.iter().filter(|o| !o.dry_run && o.attempts > 0) {
                let day = crate::store::outcome_day(o);
                let run = if o.source == MessageSource::Campaign as i32 && !o.request_id.is_empty() {
                    crate::campaigns::activity_id(&o.request_id, o.treatment_id)
                } else {
                    String::new()
                };
                let s = scopes(&o.campaign_id, &run, &o.journey_id, &o.journey_activity_id);
                let g = group(&o.channel);
                let status = DeliveryStatus::try_from(o.delivery_status).unwrap_or(DeliveryStatus::UnknownFailure);
                let counter = match status {
                    DeliveryStatus::Successful => "ok",
                    DeliveryStatus::PermanentFailure => "hb",
                    DeliveryStatus::TemporaryFailure => "sb",
                    _ => "fail",
                };
                t.add(day, &format!("sent.{g}"), &s, 1);
                t.add(day, &format!("{counter}.{g}"), &s, 1);
                if status != DeliveryStatus::Successful && g == "sms" {
                    t.add(day, &format!("smserr.{}", o.status_code), &s, 1);
                }
                if status == DeliveryStatus::Successful
                    && !o.endpoint_id.is_empty()
                    && (!o.campaign_id.is_empty() || !o.journey_id.is_empty())
                {
                    for scope in s.iter().map(String::as_str).chain((!o.campaign_id.is_empty()).then_some("C")) {
                        t.uniques.entry((day.to_string(), scope.to_string())).or_default().push(o.endpoint_id.clone());
                    }
                }
            }
            t
        }
        let statuses =
            [DeliveryStatus::Successful, DeliveryStatus::PermanentFailure, DeliveryStatus::TemporaryFailure, DeliveryStatus::Throttled];
        let outcomes: Vec<MessageOutcome> = (0..400)
            .map(|i: i32| MessageOutcome {
                message_id: format!("m{i}"),
                campaign_id: if i % 5 == 0 { String::new() } else { format!("c{}", i % 3) },
                journey_id: if i % 5 == 0 && i % 2 == 0 { "j1".into() } else { String::new() },
                journey_activity_id: if i % 10 == 0 { "a1".into() } else { String::new() },
                request_id: if i % 7 == 0 { String::new() } else { format!("run{}", i % 2) },
                treatment_id: i % 3,
                source: if i % 5 == 0 { MessageSource::Journey as i32 } else { MessageSource::Campaign as i32 },
                endpoint_id: if i % 11 == 0 { String::new() } else { format!("ep-{}", i % 50) },
                channel: ["EMAIL", "SMS", "GCM"][(i % 3) as usize].into(),
                delivery_status: statuses[(i % 4) as usize] as i32,
                status_code: [400, 500][(i % 2) as usize],
                attempts: if i % 13 == 0 { 0 } else { 1 },
                dry_run: i % 17 == 0,
                updated_date: format!("2026-11-0{}T10:00:00Z", 1 + i % 2),
                ..Default::default()
            })
            .collect();
        let (mut got, mut want) = (tally(&outcomes, &[]), one_by_one(&outcomes));
        assert!(
            want.counts.len() > 50 && want.uniques.len() > 5,
            "a varied batch: {} counts, {} uniques",
            want.counts.len(),
            want.uniques.len()
        );
        assert_eq!(got.counts, want.counts);
        for t in [&mut got, &mut want] {
            t.uniques.values_mut().for_each(|v| v.sort());
        }
        assert_eq!(got.uniques, want.uniques);
    }

    #[test]
    fn sends_come_from_outcomes_and_engagement_from_events() {
        let o = |id: &str, status: DeliveryStatus, attempts: i32| MessageOutcome {
            message_id: id.into(),
            campaign_id: "c1".into(),
            request_id: "run1".into(),
            source: MessageSource::Campaign as i32,
            endpoint_id: format!("ep-{id}"),
            channel: "EMAIL".into(),
            delivery_status: status as i32,
            attempts,
            updated_date: "2026-11-02T10:00:00Z".into(),
            ..Default::default()
        };
        let outcomes =
            vec![o("m1", DeliveryStatus::Successful, 1), o("m2", DeliveryStatus::PermanentFailure, 1), o("m3", DeliveryStatus::OptOut, 0)];
        let send_event = Event { message_id: "m1".into(), event_type: "_email.send".into(), ..Default::default() };
        let open = Event {
            message_id: "m0".into(),
            event_type: "_email.open".into(),
            event_timestamp: "2026-11-03T01:00:00Z".into(),
            attributes: HashMap::from([("campaign_id".into(), "c1".into()), ("campaign_activity_id".into(), "run1-0".into())]),
            first_of_message: true,
            ..Default::default()
        };
        let t = tally(&outcomes, &[send_event, open]);
        let n = |day: &str, f: &str| t.counts.get(&(day.to_string(), f.to_string())).copied().unwrap_or(0);
        assert_eq!(n("2026-11-02", "sent.email|c:c1"), 2);
        assert_eq!(n("2026-11-02", "sent.email|a:c1:run1-0"), 2);
        assert_eq!(n("2026-11-02", "ok.email|c:c1"), 1);
        assert_eq!(n("2026-11-02", "hb.email|c:c1"), 1);
        assert_eq!(n("2026-11-03", "open.email|c:c1"), 1);
        assert_eq!(n("2026-11-03", "uopen.email|a:c1:run1-0"), 1);
        assert_eq!(t.counts.keys().filter(|(_, f)| f.ends_with("|t")).count(), 0);
        assert_eq!(t.uniques[&("2026-11-02".to_string(), "C".to_string())], vec!["ep-m1".to_string()]);
    }
}
