//! Who hears how a dispatched job ended: a caller waiting for the outcome itself, or a tally
//! many jobs report their delivery statuses into (a campaign page).

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::proto::v1::MessageOutcome;

/// Who hears how a job ended.
#[derive(Debug)]
pub enum Reply {
    /// The outcome itself (a transactional call waiting for its results).
    Outcome(oneshot::Sender<MessageOutcome>),
    /// Only its delivery status, counted into a tally shared by many jobs (a campaign page).
    Tally(TallySlot),
}

/// Delivery statuses of many jobs, as they end: (group, status) pairs, and a wake-up for
/// whoever waits for a number of them.
#[derive(Default)]
pub struct Tally {
    seen: parking_lot::Mutex<Vec<(usize, i32)>>,
    /// How many the waiter expects (`usize::MAX` until it says).
    expected: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
}

impl Tally {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { expected: std::sync::atomic::AtomicUsize::new(usize::MAX), ..Default::default() })
    }

    /// A slot for one job of `group`.
    pub fn slot(self: &Arc<Self>, group: usize) -> TallySlot {
        TallySlot { tally: Some(self.clone()), group }
    }

    fn report(&self, group: usize, status: i32) {
        let mut seen = self.seen.lock();
        seen.push((group, status));
        if seen.len() >= self.expected.load(std::sync::atomic::Ordering::Acquire) {
            self.done.notify_one();
        }
    }

    /// Waits until `n` jobs have ended; their (group, status) pairs.
    pub async fn wait(&self, n: usize) -> Vec<(usize, i32)> {
        self.expected.store(n, std::sync::atomic::Ordering::Release);
        loop {
            let notified = self.done.notified();
            {
                let mut seen = self.seen.lock();
                if seen.len() >= n {
                    return std::mem::take(&mut *seen);
                }
            }
            notified.await;
        }
    }
}

/// The status a [`Tally`] reports for a job that ended without an outcome: dropped unsent (the
/// engine stopped before taking it) or handed back by a stopping shard before its retry. Its
/// producer has not delivered it and must send it again (a campaign run resumes before it).
pub const UNSETTLED: i32 = -1;

/// One job's place in a [`Tally`]; a job dropped without an outcome reports [`UNSETTLED`], so
/// a waiter never waits for it forever.
pub struct TallySlot {
    tally: Option<Arc<Tally>>,
    group: usize,
}

impl std::fmt::Debug for TallySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TallySlot").field("group", &self.group).finish()
    }
}

impl TallySlot {
    pub fn report(mut self, status: i32) {
        if let Some(t) = self.tally.take() {
            t.report(self.group, status);
        }
    }
}

impl Drop for TallySlot {
    fn drop(&mut self) {
        if let Some(t) = self.tally.take() {
            t.report(self.group, UNSETTLED);
        }
    }
}
