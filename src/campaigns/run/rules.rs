//! A run's fixed rules and its counting: which treatment a cohort goes to, the limits that
//! apply, and how delivery statuses add up in its activities.

use crate::dispatch::engine::Lane;
use crate::proto::v1::{Activity, AppSettings, Campaign, ChannelType, DeliveryStatus};

/// Where a cohort goes: the holdout, or a treatment (index into the activities).
pub(crate) fn assignment(c: &Campaign) -> [Option<usize>; 100] {
    let mut out = [Some(0); 100];
    let mut at = 0usize;
    let mut fill = |n: usize, who: Option<usize>, out: &mut [Option<usize>; 100]| {
        for slot in out.iter_mut().skip(at).take(n) {
            *slot = who;
        }
        at = (at + n).min(100);
    };
    fill(c.holdout_percent.clamp(0, 100) as usize, None, &mut out);
    for (i, t) in c.additional_treatments.iter().enumerate() {
        fill(t.size_percent.clamp(0, 100) as usize, Some(i + 1), &mut out);
    }
    out
}

/// A treatment's CustomDeliveryConfiguration: where the custom message goes, and for which
/// endpoint types.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CustomDelivery {
    pub(super) uri: String,
    pub(super) types: Vec<ChannelType>,
}

/// Per treatment (the default first), its custom delivery: its own, or the campaign's when it
/// takes the campaign's content.
pub(super) fn custom_deliveries(c: &Campaign) -> Vec<Option<CustomDelivery>> {
    let read = |d: &Option<crate::proto::v1::CustomDeliveryConfiguration>| {
        d.as_ref().filter(|d| !d.delivery_uri.is_empty()).map(|d| CustomDelivery {
            uri: d.delivery_uri.clone(),
            types: d.endpoint_types.iter().filter_map(|t| crate::domain::endpoint::parse_channel(t)).collect(),
        })
    };
    let base = read(&c.custom_delivery_configuration);
    let mut out = vec![base.clone()];
    for t in &c.additional_treatments {
        let own = t.message_configuration.is_some() || t.template_configuration.is_some();
        out.push(match (read(&t.custom_delivery_configuration), own) {
            (Some(d), _) => Some(d),
            (None, true) => None,
            (None, false) => base.clone(),
        });
    }
    out
}

/// The lane an endpoint of `channel` gets a treatment's message on: the custom lane to the
/// delivery URI when the treatment's custom delivery takes its type, else its own channel's if
/// the treatment has content for it. With a custom delivery, custom content goes only there.
pub(super) fn route(lanes: &[Lane], custom: Option<&CustomDelivery>, channel: i32) -> Option<Lane> {
    let ct = ChannelType::try_from(channel).ok()?;
    match custom {
        Some(d) if d.types.contains(&ct) => lanes.contains(&Lane::Custom).then_some(Lane::Custom),
        _ => Lane::of(ct).filter(|l| lanes.contains(l) && !(custom.is_some() && *l == Lane::Custom)),
    }
}

/// The limits that apply: the campaign's, else the app's defaults.
pub(super) struct Limits {
    pub(super) daily: Option<u32>,
    pub(super) total: Option<u32>,
    pub(super) per_second: Option<u32>,
    pub(super) maximum_duration: Option<i64>,
}

pub(super) fn limits(c: &Campaign, app: &AppSettings) -> Limits {
    let (cl, al) = (c.limits.unwrap_or_default(), app.limits.unwrap_or_default());
    let pick = |a: Option<i32>, b: Option<i32>| a.or(b).filter(|v| *v > 0).map(|v| v as u32);
    Limits {
        daily: pick(cl.daily, al.daily),
        total: pick(cl.total, al.total),
        per_second: pick(cl.messages_per_second, al.messages_per_second),
        maximum_duration: cl.maximum_duration.or(al.maximum_duration).filter(|v| *v > 0).map(i64::from),
    }
}

/// Counts a delivery status into an activity.
pub(super) fn count_status(a: &mut Activity, status: i32) {
    match DeliveryStatus::try_from(status).unwrap_or(DeliveryStatus::UnknownFailure) {
        DeliveryStatus::Successful => a.successful += 1,
        DeliveryStatus::Throttled => a.throttled += 1,
        other => *a.failed.entry(status_name(other)).or_insert(0) += 1,
    }
}

/// Adds a page's counts to the run's.
pub(super) fn add_counts(a: &mut Activity, c: &Activity) {
    a.total_endpoints += c.total_endpoints;
    a.successful += c.successful;
    a.throttled += c.throttled;
    a.held_by_quiet_time += c.held_by_quiet_time;
    a.timed_out += c.timed_out;
    a.holdout += c.holdout;
    a.capped += c.capped;
    a.possible_repeats += c.possible_repeats;
    a.filtered_by_hook += c.filtered_by_hook;
    for (k, v) in &c.failed {
        *a.failed.entry(k.clone()).or_insert(0) += v;
    }
}

pub(super) fn status_name(s: DeliveryStatus) -> String {
    s.as_str_name().trim_start_matches("DELIVERY_STATUS_").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain;
    use crate::proto::v1::Treatment;

    #[test]
    fn holdout_and_treatment_shares_hold_on_100_000_endpoints() {
        let c = Campaign {
            holdout_percent: 10,
            additional_treatments: vec![
                Treatment { size_percent: 25, ..Default::default() },
                Treatment { size_percent: 15, ..Default::default() },
            ],
            ..Default::default()
        };
        let cohorts = assignment(&c);
        let mut counts = [0usize; 4];
        for i in 0..100_000 {
            match cohorts[domain::endpoint::cohort_id(&format!("ep-{i:09}")) as usize] {
                None => counts[0] += 1,
                Some(t) => counts[t + 1] += 1,
            }
        }
        // Holdout 10 %, default 50 %, B 25 %, C 15 %: each within one point.
        for (got, want) in counts.iter().zip([10.0, 50.0, 25.0, 15.0]) {
            let share = *got as f64 / 1_000.0;
            assert!((share - want).abs() <= 1.0, "{counts:?}");
        }
    }
}
