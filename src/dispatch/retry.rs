//! Retry policy: exponential backoff with full jitter, bounded by an attempt count and a
//! deadline. Channels classify a failure as retryable; this decides whether and when.

use std::time::Duration;

/// When to try a retryable delivery again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first backoff's upper bound.
    pub base: Duration,
    /// The largest backoff.
    pub cap: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// No attempt starts later than this after the first.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { base: Duration::from_millis(200), cap: Duration::from_secs(60), max_attempts: 5, deadline: Duration::from_secs(15 * 60) }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`, given `attempt` attempts made so far, `elapsed`
    /// since the first, and the provider's Retry-After if it sent one; `None` when the
    /// delivery should give up (its last status stands). `random` is uniform in [0, 1).
    pub fn next_delay(&self, attempt: u32, elapsed: Duration, retry_after: Option<Duration>, random: f64) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let exp = self.base.saturating_mul(1u32.checked_shl(attempt.saturating_sub(1).min(31)).unwrap_or(u32::MAX));
        let ceiling = exp.min(self.cap);
        let jittered = ceiling.mul_f64(random.clamp(0.0, 1.0));
        // A provider's Retry-After is a floor: never come back sooner than asked.
        let delay = retry_after.map_or(jittered, |r| r.max(jittered));
        (elapsed + delay <= self.deadline).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator for property checks.
    fn randoms(seed: u64) -> impl Iterator<Item = f64> {
        let mut x = seed | 1;
        std::iter::from_fn(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Some((x >> 11) as f64 / (1u64 << 53) as f64)
        })
    }

    #[test]
    fn delays_stay_within_the_exponential_ceiling_and_the_cap() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
            max_attempts: 30,
            deadline: Duration::from_secs(3600),
        };
        for (i, r) in randoms(7).take(20_000).enumerate() {
            let attempt = 1 + (i as u32 % 29);
            let d = p.next_delay(attempt, Duration::ZERO, None, r).unwrap();
            let ceiling = (Duration::from_millis(100) * 2u32.saturating_pow(attempt - 1)).min(Duration::from_secs(5));
            assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
        }
        // Full jitter: delays spread over the whole range, not bunched at the top.
        let small =
            randoms(11).take(10_000).filter(|r| p.next_delay(10, Duration::ZERO, None, *r).unwrap() < Duration::from_millis(2500)).count();
        assert!((4_000..6_000).contains(&small), "{small}");
    }

    #[test]
    fn attempts_deadline_and_retry_after_bound_retries() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            max_attempts: 3,
            deadline: Duration::from_secs(10),
        };
        assert!(p.next_delay(1, Duration::ZERO, None, 0.5).is_some());
        assert!(p.next_delay(3, Duration::ZERO, None, 0.5).is_none(), "three attempts in all");
        assert!(p.next_delay(1, Duration::from_millis(9_990), None, 0.9).is_none(), "past the deadline");
        assert_eq!(p.next_delay(1, Duration::ZERO, Some(Duration::from_secs(2)), 0.1), Some(Duration::from_secs(2)));
        assert!(p.next_delay(1, Duration::from_secs(9), Some(Duration::from_secs(2)), 0.1).is_none());
    }
}
