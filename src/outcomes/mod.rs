//! The one recorder: message outcomes, their counters and events, suppressions from hard
//! bounces and complaints, and endpoint deactivation from dead push tokens — written by the
//! dispatch engine (each settled batch), the producers (recipients refused before sending) and
//! the feedback listener (receipts, replies, bounces), always through a [`Batch`], in one store
//! round trip per app for its outcomes and events.

pub mod events;

use std::sync::Arc;
use std::time::Duration;

pub use events::{event_for, event_prefix, event_type, sms_facts};

use crate::domain;
use crate::proto::v1::{Endpoint, EndpointStatus, Event, MessageOutcome, Suppression, SuppressionReason};
use crate::store::{EndpointOp, Store, StoreError};

/// What one write records, per app (a batch nearly always holds one or two apps: a short
/// list, searched by comparing ids).
#[derive(Default, Debug)]
pub struct Batch {
    apps: Vec<(String, AppBatch)>,
}

/// One app's share of a [`Batch`].
#[derive(Default, Debug)]
struct AppBatch {
    outcomes: Vec<MessageOutcome>,
    events: Vec<Event>,
    suppressions: Vec<Suppression>,
    /// Endpoints whose push token is dead: they become INACTIVE.
    dead: Vec<String>,
}

/// Where an outcome sits in a [`Batch`], to take it back once recorded.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    app: usize,
    index: usize,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// The position of `app`'s share, made when it has none yet.
    fn position(&mut self, app: &str) -> usize {
        match self.apps.iter().position(|(id, _)| id == app) {
            Some(at) => at,
            None => {
                self.apps.push((app.to_string(), AppBatch::default()));
                self.apps.len() - 1
            }
        }
    }

    fn app(&mut self, app: &str) -> &mut AppBatch {
        let at = self.position(app);
        &mut self.apps[at].1
    }

    /// An outcome with its event (if it has one); where it sits.
    pub fn outcome(&mut self, o: MessageOutcome, event: Option<Event>) -> Slot {
        let at = self.position(&o.app_id);
        let a = &mut self.apps[at].1;
        a.events.extend(event);
        a.outcomes.push(o);
        Slot { index: a.outcomes.len() - 1, app: at }
    }

    /// A final delivery: its event (Pinpoint's type for the channel and status), and what a
    /// hard failure implies — a dead push token makes its endpoint INACTIVE, any other hard
    /// bounce suppresses the address.
    pub fn delivered(&mut self, o: MessageOutcome, hard_bounce: bool, extra: impl FnOnce(&mut MessageOutcome, &mut Event)) -> Slot {
        let mut o = o;
        let status =
            crate::proto::v1::DeliveryStatus::try_from(o.delivery_status).unwrap_or(crate::proto::v1::DeliveryStatus::UnknownFailure);
        let mut event = event_for(&o, event_type(&o.channel, status, hard_bounce));
        extra(&mut o, &mut event);
        if hard_bounce && crate::channels::is_push(&o.channel) {
            if !o.endpoint_id.is_empty() {
                self.app(&o.app_id).dead.push(o.endpoint_id.clone());
            }
        } else if hard_bounce {
            let s = Suppression {
                address: crate::api::suppressions::normalize(&o.address),
                reason: SuppressionReason::HardBounce as i32,
                created_date: o.updated_date.clone(),
                note: o.status_message.clone(),
            };
            self.app(&o.app_id).suppressions.push(s);
        }
        self.outcome(o, Some(event))
    }

    /// An event with no outcome of its own (provider feedback about an earlier message).
    pub fn event(&mut self, app: &str, e: Event) {
        self.app(app).events.push(e);
    }

    /// An address to suppress (a hard bounce or complaint reported by the provider).
    pub fn suppress(&mut self, app: &str, s: Suppression) {
        self.app(app).suppressions.push(s);
    }

    /// Takes a recorded outcome back out (for whoever waits for it), without a copy.
    pub fn take(&mut self, slot: &Slot) -> Option<MessageOutcome> {
        let a = &mut self.apps.get_mut(slot.app)?.1;
        a.outcomes.get_mut(slot.index).map(std::mem::take)
    }

    /// Every outcome, in the order added per app.
    pub fn outcomes(&self) -> impl Iterator<Item = &MessageOutcome> {
        self.apps.iter().flat_map(|(_, a)| a.outcomes.iter())
    }
}

/// Writes batches to the store.
pub struct Recorder {
    store: Arc<dyn Store>,
    /// How long outcomes are kept.
    ttl: Duration,
}

impl Recorder {
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        Self { store, ttl }
    }

    /// Records a batch: per app, its outcomes and events in one round trip, then its
    /// suppressions and dead tokens. The first failure stops it (nothing of a failed app's
    /// outcomes is half-written: the store writes them atomically or the write is retried).
    pub async fn record(&self, batch: &Batch) -> Result<(), StoreError> {
        for (app, a) in &batch.apps {
            self.record_app(app, a, &mut 0).await?;
        }
        Ok(())
    }

    /// As [`Recorder::record`], retrying an app's writes while the store is unreachable, with
    /// backoff, until `give_up()` says to stop. Returns whether everything was written.
    pub async fn record_patiently(&self, batch: &Batch, give_up: impl Fn(Duration) -> bool) -> bool {
        let mut all = true;
        for (app, a) in &batch.apps {
            let mut delay = Duration::from_millis(50);
            let mut warned = false;
            let mut step = 0;
            loop {
                match self.record_app(app, a, &mut step).await {
                    Ok(()) => {
                        if warned {
                            tracing::info!("Store reachable again; held outcomes written.");
                        }
                        break;
                    }
                    Err(e) => {
                        metrics::counter!(crate::telemetry::STORE_ERRORS).increment(1);
                        if !e.is_transient() || give_up(delay) {
                            tracing::error!(error = %e, outcomes = a.outcomes.len(), "Cannot record outcomes; giving up on this batch.");
                            all = false;
                            break;
                        }
                        if !warned {
                            tracing::warn!(error = %e, "Store unreachable; holding the batch's outcomes and retrying.");
                            warned = true;
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
        all
    }

    /// Writes an app's share from `step` on (0: outcomes and events, 1: suppressions, 2: dead
    /// tokens), moving `step` past each write that succeeded, so a retry after a failure does
    /// not write the earlier steps (counters, events) again.
    async fn record_app(&self, app: &str, a: &AppBatch, step: &mut u8) -> Result<(), StoreError> {
        if *step == 0 {
            if !a.outcomes.is_empty() || !a.events.is_empty() {
                self.store.record_outcomes(app, &a.outcomes, &a.events, self.ttl.as_secs()).await?;
            }
            *step = 1;
        }
        if *step == 1 {
            if !a.suppressions.is_empty() {
                self.store.put_suppressions(app, &a.suppressions).await?;
            }
            *step = 2;
        }
        if *step == 2 {
            if !a.dead.is_empty() {
                deactivate(self.store.as_ref(), app, a.dead.clone()).await?;
            }
            *step = 3;
        }
        Ok(())
    }
}

/// Makes endpoints INACTIVE (their other fields unchanged); endpoints deleted meanwhile are
/// skipped.
pub async fn deactivate(store: &dyn Store, app: &str, ids: Vec<String>) -> Result<(), StoreError> {
    let writes =
        ids.into_iter().map(|id| Endpoint { id, endpoint_status: EndpointStatus::Inactive as i32, ..Default::default() }).collect();
    let now = domain::timestamp(chrono::Utc::now());
    store
        .write_endpoints(app, EndpointOp::Upsert { writes, all_or_nothing: false, now, request_id: "provider-feedback".into() })
        .await
        .map(|_| ())
}
