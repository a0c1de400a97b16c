//! The one classifier of HTTP answers that every HTTP channel (APNs, FCM, SMS, webhooks) falls
//! back on once it has checked its provider's own error codes: 2xx delivered, 429 throttled,
//! 408 and 5xx retried (honouring `Retry-After`), anything else permanent.

use std::time::Duration;

use super::Delivery;

/// `Retry-After` in seconds (HTTP dates are treated as "soon").
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    Some(v.trim().parse::<u64>().map(Duration::from_secs).unwrap_or(Duration::from_secs(1)))
}

/// What an HTTP status means for a message, when the provider said nothing more specific.
pub fn classify(status: u16, message: String, retry_after: Option<Duration>, provider_id: Option<String>) -> Delivery {
    match status {
        200..=299 => Delivery::Delivered { status_code: status, message, provider_id },
        429 => Delivery::Throttled { status_code: status, message, retry_after },
        408 | 500..=599 => Delivery::Retry { status_code: status, message, retry_after },
        _ => Delivery::Permanent { status_code: status, message, hard_bounce: false },
    }
}

/// A request that got no answer (connection refused or reset, a timeout): worth retrying.
pub fn unanswered(what: &str, e: impl std::fmt::Display) -> Delivery {
    Delivery::Retry { status_code: 0, message: format!("{what}: {e}"), retry_after: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify_as_providers_document() {
        assert!(classify(202, "ok".into(), None, None).is_delivered());
        let after = Some(Duration::from_secs(3));
        assert_eq!(
            classify(429, "slow".into(), after, None),
            Delivery::Throttled { status_code: 429, message: "slow".into(), retry_after: after }
        );
        assert!(matches!(classify(503, String::new(), None, None), Delivery::Retry { status_code: 503, .. }));
        assert!(matches!(classify(408, String::new(), None, None), Delivery::Retry { .. }));
        assert!(matches!(classify(400, String::new(), None, None), Delivery::Permanent { hard_bounce: false, .. }));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(1)));
    }
}
