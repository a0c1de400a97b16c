//! Channel quotas: a provider account's limits per app and channel, like SES's sending quota.
//!
//! - messages per second: a governor token bucket in this daemon, swapped (not mutated) when
//!   the quota changes at runtime, which paces each daemon; and the quota held across every
//!   daemon on the store ([`SharedRate`]): per UTC second, each daemon takes blocks of that
//!   second's tokens from the store and spends them locally;
//! - daily (a rolling 24 hours, counted in hourly buckets) and total: counters in the store,
//!   checked and incremented atomically for a whole batch ([`crate::store::Store::take_quota`]),
//!   so several daemons on one Redis never overshoot.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The messages-per-second gate of one app channel. `None` rate: no limit.
pub struct RateGate<C: Clock = DefaultClock> {
    clock: C,
    limiter: ArcSwapOption<Limiter<C>>,
}

impl RateGate<DefaultClock> {
    pub fn new(per_second: Option<u32>, burst: Option<u32>) -> Self {
        Self::with_clock(per_second, burst, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateGate<C> {
    pub fn with_clock(per_second: Option<u32>, burst: Option<u32>, clock: C) -> Self {
        let gate = Self { clock, limiter: ArcSwapOption::empty() };
        gate.set(per_second, burst);
        gate
    }

    /// Changes the rate at runtime. The new bucket starts full; in-flight checks finish
    /// against the old one.
    pub fn set(&self, per_second: Option<u32>, burst: Option<u32>) {
        let limiter = per_second.and_then(NonZeroU32::new).map(|rate| {
            let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
            Arc::new(RateLimiter::direct_with_clock(Quota::per_second(rate).allow_burst(burst), self.clock.clone()))
        });
        self.limiter.store(limiter);
    }

    /// Takes one message's token, waiting until one is free (producers that wait rather than
    /// being throttled).
    pub async fn take(&self) {
        while let Err(wait) = self.try_take() {
            tokio::time::sleep(wait.max(Duration::from_micros(50))).await;
        }
    }

    /// Takes one message's token now, or says how long until one is free.
    pub fn try_take(&self) -> Result<(), Duration> {
        match self.limiter.load().as_ref() {
            None => Ok(()),
            Some(l) => l.check().map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }
}

/// An app channel's messages per second across every daemon on one store. Each second's
/// `limit` tokens are counted in the store ([`crate::store::Store::take_rate`]); a daemon takes
/// a block of them (a twentieth of the limit, 1 to 500) when its own run out, so the hot path
/// makes a round trip per block, not per message. Tokens left in a block when its second ends
/// are dropped: the daemons together never send more than `limit` in a second.
///
/// Faults: a daemon stopped (SIGTERM) or killed (kill -9) loses the tokens left in its block
/// for that second, so the others send a little less in it, never more. While the store cannot
/// be reached no token is taken: every sender of the channel waits (a campaign pauses;
/// SendMessages answers UNAVAILABLE, as every call needing the store does), and goes on when
/// it is back. A Redis
/// restarted from its append-only file within the same second may have lost that second's
/// count; a count lapses after three seconds anyway, so the most that can add is one
/// second's `limit`, once.
pub struct SharedRate {
    limit: u64,
    block: u64,
    /// The second the daemon's tokens are for, and how many are left.
    pool: parking_lot::Mutex<(i64, u64)>,
}

impl SharedRate {
    pub fn new(limit: u32) -> Self {
        let limit = u64::from(limit.max(1));
        Self { limit, block: (limit / 20).clamp(1, 500), pool: parking_lot::Mutex::new((0, 0)) }
    }

    /// Takes one token of the current second, or says how long to wait: until the next second
    /// when this one's are all taken, a moment when the store cannot be reached.
    pub async fn take(&self, store: &dyn crate::store::Store, app: &str, channel: &str) -> Result<(), Duration> {
        self.take_counted(store, app, channel, channel).await
    }

    /// As [`SharedRate::take`], the tokens counted under `key` in the store (a channel, or a
    /// campaign run) and reported under the metric label `label`.
    pub async fn take_counted(&self, store: &dyn crate::store::Store, app: &str, key: &str, label: &str) -> Result<(), Duration> {
        let channel = key;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let window = now.as_secs() as i64;
        let next_second = Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos()));
        {
            let mut pool = self.pool.lock();
            if pool.0 == window && pool.1 > 0 {
                pool.1 -= 1;
                return Ok(());
            }
        }
        match store.take_rate(app, channel, window, self.block, self.limit).await {
            Ok(0) => Err(next_second),
            Ok(n) => {
                metrics::counter!(crate::telemetry::RATE_TOKENS_LEASED, "channel" => label.to_string()).increment(n);
                let mut pool = self.pool.lock();
                if pool.0 != window {
                    *pool = (window, 0);
                }
                pool.1 += n - 1;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, app, channel, "Cannot take the shared rate's tokens; waiting.");
                Err(Duration::from_millis(100))
            }
        }
    }
}

/// A campaign run's messages per second across every daemon reading its units: the run's own
/// [`SharedRate`], counted in the store under the run's id.
pub struct RunRate {
    rate: SharedRate,
    store: Arc<dyn crate::store::Store>,
    app: String,
    key: String,
}

impl RunRate {
    pub fn new(per_second: u32, store: Arc<dyn crate::store::Store>, app: &str, run: &str) -> Self {
        Self { rate: SharedRate::new(per_second), store, app: app.to_string(), key: format!("campaign:{run}") }
    }

    /// Takes one token of the run's shared rate, or says how long to wait.
    pub async fn try_take(&self) -> Result<(), Duration> {
        self.rate.take_counted(self.store.as_ref(), &self.app, &self.key, "campaign").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn a_thousand_per_second_over_ten_seconds() {
        let clock = FakeRelativeClock::default();
        let gate = RateGate::with_clock(Some(1_000), Some(50), clock.clone());
        let mut sent = 0u32;
        // Ten simulated seconds, a sender asking every 100 microseconds.
        for _ in 0..100_000 {
            while gate.try_take().is_ok() {
                sent += 1;
            }
            clock.advance(Duration::from_micros(100));
        }
        // 1,000/s for 10 s plus the initial burst, within ±3 %.
        let expected = 10_000 + 50;
        assert!((sent as f64 - expected as f64).abs() <= expected as f64 * 0.03, "{sent}");
        while gate.try_take().is_ok() {}
        assert!(gate.try_take().unwrap_err() <= Duration::from_millis(1), "the next token is at most 1 ms away");
    }

    #[test]
    fn rates_change_at_runtime_and_can_be_lifted() {
        let clock = FakeRelativeClock::default();
        let gate = RateGate::with_clock(Some(1), None, clock.clone());
        assert!(gate.try_take().is_ok());
        assert!(gate.try_take().is_err());
        gate.set(Some(100), Some(100));
        assert_eq!((0..200).filter(|_| gate.try_take().is_ok()).count(), 100);
        gate.set(None, None);
        assert!((0..10_000).all(|_| gate.try_take().is_ok()));
    }
}
