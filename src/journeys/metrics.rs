//! Journey execution metrics, with Pinpoint's names where Pinpoint has one. Journey-level
//! counters are stored under their name; an activity's under `{activity}|{name}`.

/// Participants who started the journey.
pub const ENDPOINT_ENTERED: &str = "ENDPOINT_ENTERED";
/// Participants who left it (reached an end, or a holdout).
pub const ENDPOINT_LEFT: &str = "ENDPOINT_LEFT";
/// Participants inside now (computed: the participants with a position).
pub const ENDPOINT_ACTIVE: &str = "ENDPOINT_ACTIVE";
/// Removed because the journey was cancelled.
pub const CANCELLED: &str = "CANCELLED";
/// Segment members read for entry, before any filtering.
pub const ENDPOINT_PRODUCED: &str = "ENDPOINT_PRODUCED";
pub const ENDPOINT_INACTIVE: &str = "ENDPOINT_INACTIVE";
pub const ENDPOINT_OPT_OUT: &str = "ENDPOINT_OPT_OUT";
/// With local time: the journey had already ended on the endpoint's clock.
pub const ENDPOINT_TIMEZONE_MISMATCH: &str = "ENDPOINT_TIMEZONE_MISMATCH";

// Activity counters.
pub const ENTER_ACTIVITY: &str = "ENTER_ACTIVITY";
pub const EXIT_ACTIVITY: &str = "EXIT_ACTIVITY";
/// A message handed to its provider.
pub const SUCCESS: &str = "SUCCESS";
pub const DAILY_CAP: &str = "DAILY_CAP";
pub const TIMEFRAME_CAP: &str = "TIMEFRAME_CAP";
/// Not sent: quiet time, outside open hours or on a closed day, with WaitForQuietTime off.
pub const QUIET_TIME: &str = "QUIET_TIME";
/// Held for the end of quiet time (or the next open hour).
pub const QUIET_TIME_WAIT: &str = "QUIET_TIME_WAIT";
/// The participant's endpoint is not on the activity's channel.
pub const CHANNEL_MISMATCH: &str = "CHANNEL_MISMATCH";
/// The channel quota refused it for now (tried again a minute later).
pub const THROTTLED: &str = "THROTTLED";
pub const TRUE_BRANCH: &str = "TRUE_BRANCH";
pub const FALSE_BRANCH: &str = "FALSE_BRANCH";
pub const DEFAULT_BRANCH: &str = "DEFAULT_BRANCH";
pub const HOLDOUT: &str = "HOLDOUT";

/// The journey-level metrics from the stored counters and the participants inside now.
pub fn journey(active: u64, counters: &[(String, i64)]) -> std::collections::HashMap<String, String> {
    let mut out: std::collections::HashMap<String, String> = counters
        .iter()
        .filter(|(k, _)| !k.contains('|') && k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    for k in [ENDPOINT_ENTERED, ENDPOINT_LEFT, CANCELLED, "ACTIVE_ENDPOINT_REJECTED", "REENTRY_CAP_EXCEEDED"] {
        out.entry(k.to_string()).or_insert_with(|| "0".into());
    }
    out.insert(ENDPOINT_ACTIVE.to_string(), active.to_string());
    out
}

/// One activity's metrics from the stored counters.
pub fn activity(activity: &str, counters: &[(String, i64)]) -> std::collections::HashMap<String, String> {
    let prefix = format!("{activity}|");
    let mut out: std::collections::HashMap<String, String> =
        counters.iter().filter_map(|(k, v)| k.strip_prefix(&prefix).map(|m| (m.to_string(), v.to_string()))).collect();
    for k in [ENTER_ACTIVITY, EXIT_ACTIVITY] {
        out.entry(k.to_string()).or_insert_with(|| "0".into());
    }
    out
}
