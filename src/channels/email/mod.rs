//! Email over SMTP: a bounded pool of SMTP connections Herald owns, per relay.
//!
//! Herald speaks SMTP itself ([`smtp`]): lettre 0.11, the usual Rust choice, has no
//! PIPELINING (RFC 2920), so every message costs four round trips (MAIL, RCPT, DATA, the
//! body), and it writes the body and its terminator separately; its pool adds a NOOP per
//! checkout and no TCP_NODELAY. Herald's sessions set TCP_NODELAY, pipeline the envelope (two
//! round trips per message), live in a bounded pool without per-use probes, and are reset
//! after a refusal or dropped when their state is unknown. A relay is reached in plain text,
//! with STARTTLS (never falling back to plain text) or over implicit TLS, with rustls.

mod client;
mod config;
pub mod dkim;
pub mod smtp;
pub mod tls;

pub use client::SmtpPool;
pub use config::{SmtpRelay, SmtpUrlError, TlsMode};

/// Whether `domain` is `parent` or one of its subdomains (both lowercase).
pub fn within_domain(domain: &str, parent: &str) -> bool {
    domain == parent || domain.strip_suffix(parent).is_some_and(|rest| rest.ends_with('.'))
}

/// How an SMTP reply code maps to a delivery outcome.
pub fn classify(code: u16, message: String) -> super::Delivery {
    use super::Delivery;
    match code {
        200..=399 => Delivery::Delivered { status_code: code, provider_id: queue_id(&message), message },
        // 421 (service closing) and 450/451/452 are soft bounces: try again later.
        400..=499 => Delivery::Retry { status_code: code, message, retry_after: None },
        // 550/551/553: the mailbox does not exist (a hard bounce).
        550 | 551 | 553 => Delivery::Permanent { status_code: code, message, hard_bounce: true },
        _ => Delivery::Permanent { status_code: code, message, hard_bounce: false },
    }
}

/// The relay's queue id from a 250 reply such as `2.0.0 Ok: queued as 4F2A1C0B3D`.
fn queue_id(message: &str) -> Option<String> {
    message.split("queued as ").nth(1).and_then(|rest| rest.split_whitespace().next()).map(|id| id.trim_end_matches(['.', ')']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::Delivery;

    #[test]
    fn reply_codes_classify() {
        assert_eq!(
            classify(250, "2.0.0 Ok: queued as ABC123".into()),
            Delivery::Delivered { status_code: 250, message: "2.0.0 Ok: queued as ABC123".into(), provider_id: Some("ABC123".into()) }
        );
        assert!(matches!(classify(451, "x".into()), Delivery::Retry { status_code: 451, .. }));
        assert!(matches!(classify(421, "x".into()), Delivery::Retry { .. }));
        assert!(matches!(classify(550, "x".into()), Delivery::Permanent { hard_bounce: true, .. }));
        assert!(matches!(classify(554, "x".into()), Delivery::Permanent { hard_bounce: false, .. }));
    }
}
