//! One campaign run: the pinned segment version streamed in endpoint id order, each member
//! assigned to the holdout or a treatment by cohort, filtered by the delivery rules and the
//! campaign's per-endpoint limits, paced by its messages per second and the channel quotas,
//! rendered and handed to the engine. Progress (a cursor and the counts) is written after
//! every settled page; a page's counts are kept apart until it settles, so the record always
//! says "every member up to the cursor, counted once".
//!
//! Faults:
//! - **Stop** (SIGTERM): the run stops taking members, waits for what it handed out, records
//!   its exact position and stays EXECUTING; the next daemon resumes it. Nobody gets a
//!   message twice, nobody is skipped.
//! - **Crash** (kill -9): the resumed run re-reads from the cursor and skips every member
//!   whose outcome for this run is recorded ([`Store::run_outcomes`], written with the outcome
//!   itself), counting it from that record. The only repeats are messages that were at a
//!   provider with no outcome recorded yet — at most [`Engine::repeat_bound`] — and that many
//!   (or the messages in flight, if fewer) are reported as possible repeats.
//! - **Store outage**: every store call of the run is retried with backoff while the store is
//!   unreachable; the run pauses and goes on when it is back, from its state in memory.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::task::JoinHandle;

use super::{localtime, run_id, RUN_KIND, TRIGGER_KIND};
use crate::dispatch::engine::{Engine, Lane, Tally};
use crate::dispatch::quota::RateGate;
use crate::dispatch::reply::UNSETTLED;
use crate::domain;
use crate::pipeline::compose::{Composer, Origin};
use crate::pipeline::planner;
use crate::proto::v1::{Activity, Campaign, CampaignRun, CampaignState, DeliveryStatus, EndpointStatus};
use crate::render::template::TemplateCache;
use crate::segments::{self, MemberStream};
use crate::store::{Store, StoreError};

mod error;
mod hooked;
mod pages;
mod prepare;
mod rules;
mod submit;
mod units;
pub use error::RunError;
use hooked::filter_by_hook;
pub(crate) use rules::assignment;
use rules::{add_counts, count_status, custom_deliveries, limits, route, status_name, CustomDelivery, Limits};
use submit::{render_tasks, submit_chunk, Submitted};

/// A page handed to the engine, until it settles.
struct Pending {
    /// The last endpoint id the page read: the cursor once it settles.
    last: String,
    /// The tasks rendering and submitting it.
    tasks: Vec<JoinHandle<Submitted>>,
    /// Messages it carries.
    messages: i64,
    tally: Arc<Tally>,
    /// Per treatment, what the page counted (members, holdout, opt-outs, caps...): added to the
    /// run when the page settles, never before, so a resumed run counts each member once.
    counts: Vec<Activity>,
}

/// Backoff between store retries while the store is unreachable.
const STORE_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// Pages settled before the next is sent beyond: the in-flight window.
const WINDOW: usize = 4;
/// How long a run's lease lasts without renewal; renewed every third of it.
const LEASE_MS: u64 = 15_000;
/// How long a page waits to hand its messages to a full engine.
const SUBMIT_WAIT: Duration = Duration::from_secs(3_600);

/// What one run works with, prepared when it starts.
struct Plan {
    cohorts: [Option<usize>; 100],
    composers: Vec<Composer>,
    /// Per treatment: the channels it has content for.
    lanes: Vec<Vec<Lane>>,
    /// Per treatment: its custom delivery (CustomDeliveryConfiguration), if any.
    custom: Vec<Option<CustomDelivery>>,
    /// The campaign's FILTER hook (its own, else the app's), and per treatment the message
    /// configuration it is told about.
    hook: Option<(super::hook::Hook, reqwest::Client)>,
    messages: Vec<crate::proto::v1::DirectMessageConfiguration>,
    limits: Limits,
    /// Per treatment: its schedule (its own, else the campaign's), its start in this run, and
    /// whether that start is later than the run's (its messages wait for it).
    schedules: Vec<(crate::proto::v1::Schedule, chrono::DateTime<chrono::Utc>, bool)>,
    /// Per treatment: when its messages time out (maximum duration after its start).
    deadlines: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    gate: RateGate,
    /// The campaign's messages per second held across every daemon reading the run.
    run_rate: Option<crate::dispatch::quota::RunRate>,
    origin_base: Origin,
    request_id: String,
    /// The run started before (this daemon or another stopped or died): each member is checked
    /// against the outcomes recorded for the run.
    resumed: bool,
}

impl Plan {
    /// The lane a member of `channel` gets treatment `t`'s message on, if it gets one.
    fn route(&self, t: usize, channel: i32) -> Option<Lane> {
        route(&self.lanes[t], self.custom[t].as_ref(), channel)
    }
}

/// A pump's settling state.
#[derive(Default)]
struct Window {
    /// A page did not settle completely: the cursor stays before it from then on.
    frozen: bool,
}

/// One page being sent: its members and where its work and counts go.
struct Page<'a> {
    members: Vec<crate::proto::v1::Endpoint>,
    /// Held members whose time has come (already counted when first read).
    releasing: bool,
    /// Read before by this run (it resumed): each member is checked against the outcomes
    /// recorded for it.
    resumed: bool,
    tasks: &'a mut Vec<JoinHandle<Submitted>>,
    tally: &'a Arc<Tally>,
    counts: &'a mut Vec<Activity>,
}

#[derive(Debug, PartialEq, Eq)]
enum Pumped {
    Done,
    /// Paused, deleted, or the lease was lost: the run stops here.
    Stopped,
}

/// What the delivery rules know of a segment member.
fn member_facts(e: &crate::proto::v1::Endpoint, suppressed: bool) -> planner::Facts<'_> {
    planner::Facts {
        endpoint_id: None,
        endpoint: Some(e),
        channel: crate::proto::v1::ChannelType::try_from(e.channel_type).unwrap_or_default(),
        address: &e.address,
        suppressed,
        duplicate: false,
    }
}

/// A run's record id: its occurrence's, or for an EVENT campaign's trigger run the batch's.
pub fn key(run: &CampaignRun) -> String {
    match &run.trigger {
        Some(t) => format!("{}:e{}", run.campaign_id, t.event_id),
        None => run_id(&run.campaign_id, run.occurrence),
    }
}

/// How long after its event a triggered message may still go out (Pinpoint's rule).
pub const TRIGGER_DEADLINE_SECS: i64 = 300;

/// The member set of a run's messages held until `minute`.
fn held_set(run: &str, minute: i64) -> String {
    format!("held:{run}:{minute}")
}

/// What runs share: the store, the engine, compiled templates, and this daemon's identity.
pub struct Runner {
    pub store: Arc<dyn Store>,
    pub engine: Arc<Engine>,
    pub cache: Arc<TemplateCache>,
    /// This daemon, as a lease owner.
    pub owner: String,
    /// Runs executing in this daemon.
    pub running: parking_lot::Mutex<HashSet<String>>,
    /// True once the daemon is stopping: runs stop taking members.
    stop: tokio::sync::watch::Receiver<bool>,
    /// The tasks of runs started here, so a stop can wait for them.
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    /// Trigger runs fold into their day's activity one at a time.
    folding: tokio::sync::Mutex<()>,
    /// Signed tracking and unsubscribe links (when the public listener has a URL).
    pub links: Option<Arc<crate::tracking::Links>>,
    /// Opens campaign hooks' secrets (`None`: a campaign with a hook fails its run).
    sealer: Option<Arc<crate::secrets::Sealer>>,
    /// The client campaign hooks are called with.
    hook_http: Option<reqwest::Client>,
}

impl Runner {
    pub fn new(
        store: Arc<dyn Store>,
        engine: Arc<Engine>,
        cache: Arc<TemplateCache>,
        owner: String,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            engine,
            cache,
            owner,
            running: Default::default(),
            stop,
            tasks: Default::default(),
            folding: Default::default(),
            links: None,
            sealer: None,
            hook_http: None,
        }
    }

    /// Campaign hooks' secrets are opened with `sealer`.
    pub fn with_sealer(mut self, sealer: Arc<crate::secrets::Sealer>) -> Self {
        self.sealer = Some(sealer);
        self.hook_http = crate::channels::webhook::Webhook::client(super::hook::TIMEOUT)
            .inspect_err(|e| tracing::error!(error = %e, "Cannot build the campaign hooks' HTTP client."))
            .ok();
        self
    }

    /// Campaign emails carry tracking and unsubscribe links signed by `links`.
    pub fn with_links(mut self, links: Option<Arc<crate::tracking::Links>>) -> Self {
        self.links = links;
        self
    }

    /// Starts (or resumes) a run in a task this runner tracks.
    pub fn spawn(self: &Arc<Self>, app: String, run: CampaignRun) {
        let handle = tokio::spawn(self.clone().execute(app, run));
        let mut tasks = self.tasks.lock();
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Waits until every run started here has stopped (call after the stop signal).
    pub async fn wait(&self) {
        loop {
            let tasks = std::mem::take(&mut *self.tasks.lock());
            if tasks.is_empty() {
                return;
            }
            futures::future::join_all(tasks).await;
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// A store call, retried with backoff while the store is unreachable (the run pauses);
    /// [`RunError::Stopped`] if the daemon stops meanwhile.
    async fn patiently<T, F, Fut>(&self, mut call: F) -> Result<T, RunError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut delay = STORE_BACKOFF.0;
        let mut warned = false;
        loop {
            match call().await {
                Ok(v) => {
                    if warned {
                        tracing::info!("Store reachable again; the campaign run goes on.");
                    }
                    return Ok(v);
                }
                Err(e) if e.is_transient() => {
                    if self.stopping() {
                        return Err(RunError::Stopped);
                    }
                    if !warned {
                        tracing::warn!(error = %e, "Store unreachable; the campaign run waits for it.");
                        warned = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(STORE_BACKOFF.1);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn save(&self, app: &str, run: &CampaignRun) -> Result<(), RunError> {
        if run.unit > 0 {
            let (id, body) = (units::unit_id(run, run.unit), run.encode_to_vec());
            return self.patiently(|| self.store.write_record(app, units::UNIT_KIND, &id, 1, 1, &body)).await;
        }
        let id = key(run);
        let kind = if run.trigger.is_some() { TRIGGER_KIND } else { RUN_KIND };
        let body = run.encode_to_vec();
        self.patiently(|| self.store.write_record(app, kind, &id, 1, 1, &body)).await
    }

    /// A finished trigger run: its counts go into the campaign's activity of that day (one
    /// record per day, as a scheduled campaign has one per run); its own record is kept as
    /// finished.
    async fn fold_trigger(&self, app: &str, run: &CampaignRun) -> Result<(), RunError> {
        let _one_at_a_time = self.folding.lock().await;
        let store = self.store.as_ref();
        let arrival = run.trigger.as_ref().and_then(|t| segments::rule::parse_instant(&t.arrival)).unwrap_or_else(chrono::Utc::now);
        let day = (arrival.timestamp().div_euclid(86_400)) as i32;
        let id = run_id(&run.campaign_id, day);
        let existing = self.patiently(|| store.get_record(app, RUN_KIND, &id, None)).await?;
        let fresh = existing.is_none();
        let mut daily = match existing {
            Some(raw) => CampaignRun::decode(raw.as_slice()).map_err(StoreError::from)?,
            None => CampaignRun {
                campaign_id: run.campaign_id.clone(),
                occurrence: day,
                campaign_version: run.campaign_version,
                scheduled_start: domain::timestamp(arrival.date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc()),
                start: run.start.clone(),
                scanned: true,
                ..Default::default()
            },
        };
        for (t, a) in run.activities.iter().enumerate() {
            if daily.activities.len() <= t {
                daily.activities.push(Activity {
                    id: super::activity_id(&id, a.treatment_id),
                    campaign_id: run.campaign_id.clone(),
                    campaign_version: run.campaign_version,
                    treatment_id: a.treatment_id,
                    treatment_name: a.treatment_name.clone(),
                    scheduled_start: daily.scheduled_start.clone(),
                    start: daily.start.clone(),
                    ..Default::default()
                });
            }
            add_counts(&mut daily.activities[t], a);
            daily.activities[t].state = CampaignState::Completed as i32;
            daily.activities[t].end = run.end.clone();
        }
        daily.state = CampaignState::Completed as i32;
        daily.end = run.end.clone();
        daily.campaign_version = daily.campaign_version.max(run.campaign_version);
        let body = daily.encode_to_vec();
        let expect = if fresh { 0 } else { 1 };
        self.patiently(|| store.write_record(app, RUN_KIND, &id, expect, 1, &body)).await?;
        // The trigger's record stays a while as finished, so that its batch, read again after
        // a crash, is known to have run (events::triggers::sweep drops it later).
        self.save(app, run).await
    }

    /// Runs (or resumes) a run to its end, a pause, a stop, or the loss of its lease.
    pub async fn execute(self: Arc<Self>, app: String, mut run: CampaignRun) {
        let id = key(&run);
        if self.stopping() || !self.running.lock().insert(id.clone()) {
            return;
        }
        let lease = format!("run:{id}");
        match self.store.try_lease(&app, &lease, &self.owner, LEASE_MS).await {
            Ok(true) => {}
            Ok(false) if run.split && !run.unit_bounds.is_empty() && !run.scanned && run.state == CampaignState::Executing as i32 => {
                // Another daemon coordinates the run: this one takes a share of its units.
                self.help(&app, run).await;
                self.running.lock().remove(&id);
                return;
            }
            _ => {
                self.running.lock().remove(&id);
                return;
            }
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = crate::store::renew_lease(self.store.clone(), app.clone(), lease.clone(), self.owner.clone(), LEASE_MS, lost.clone());
        let executing = metrics::gauge!(crate::telemetry::CAMPAIGN_RUNS_EXECUTING);
        executing.increment(1.0);
        let result = self.drive(&app, &mut run, &lost).await;
        executing.decrement(1.0);
        match result {
            Ok(()) => {}
            Err(RunError::Stopped) => tracing::info!(run = %id, "Campaign run stopped with the daemon; it resumes where it stopped."),
            Err(e) => {
                tracing::error!(error = %e, run = %id, "Campaign run failed.");
                run.state = CampaignState::Invalid as i32;
                run.failure = e.reason();
                run.end = domain::timestamp(chrono::Utc::now());
                let _ = self.save(&app, &run).await;
            }
        }
        if run.state != CampaignState::Executing as i32 {
            let state = CampaignState::try_from(run.state).map_or("UNKNOWN", |s| s.as_str_name().trim_start_matches("CAMPAIGN_STATE_"));
            metrics::counter!(crate::telemetry::CAMPAIGN_RUNS, "state" => state).increment(1);
        }
        renewer.abort();
        let _ = self.store.release_lease(&app, &lease, &self.owner).await;
        self.running.lock().remove(&id);
    }

    async fn drive(&self, app: &str, run: &mut CampaignRun, lost: &AtomicBool) -> Result<(), RunError> {
        let store = self.store.as_ref();
        let cid = run.campaign_id.clone();
        let fresh = run.start.is_empty();
        let Some((plan, rule)) = self.prepare(app, run, true).await? else {
            run.state = CampaignState::Deleted as i32;
            run.end = domain::timestamp(chrono::Utc::now());
            return self.save(app, run).await;
        };
        if fresh && run.trigger.is_none() && !run.split {
            // Cut the segment into work units, before anyone reads it, so that every daemon
            // serving the app takes a share (none when the store cannot cut it). A run that
            // began on one reader goes on that way.
            let set = rule.narrowest_set().map(str::to_string);
            run.unit_bounds = self.patiently(|| store.scan_splits(app, set.as_deref(), units::UNITS)).await?;
            run.split = true;
            self.save(app, run).await?;
        }
        if !run.scanned && !run.unit_bounds.is_empty() {
            if self.work_units(app, run, &plan, &rule, lost, true).await? == Pumped::Stopped {
                return Ok(());
            }
            run.scanned = true;
            run.cursor.clear();
            self.save(app, run).await?;
        }
        if !run.scanned {
            let cursor = Some(run.cursor.clone()).filter(|c| !c.is_empty());
            let stream = match &run.trigger {
                // The endpoints the events came from, each tested against the segment alone.
                Some(t) => MemberStream::listed(self.store.clone(), app, rule.clone(), t.endpoint_ids.clone(), cursor),
                None => MemberStream::open_ordered(self.store.clone(), app, rule.clone(), segments::PAGE, cursor),
            };
            if self.pump(app, run, &plan, stream, (false, plan.resumed), lost).await? == Pumped::Stopped {
                return Ok(());
            }
            run.scanned = true;
            run.cursor.clear();
            self.save(app, run).await?;
        }
        // Members held for local time or quiet time, minute by minute.
        while let Some(&minute) = run.held_releases.first() {
            loop {
                let left = minute - chrono::Utc::now().timestamp();
                if left <= 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(left.clamp(0, 1) as u64)).await;
                if lost.load(Ordering::SeqCst) {
                    return Ok(());
                }
                if self.stopping() {
                    return Err(RunError::Stopped);
                }
                if let Some(state) = self.interruption(app, run).await? {
                    return self.stop(app, run, state).await;
                }
            }
            let set = held_set(&plan.request_id, minute);
            let cursor = Some(run.cursor.clone()).filter(|c| !c.is_empty());
            let stream = MemberStream::open_ordered(
                self.store.clone(),
                app,
                Arc::new(segments::Rule::Imported(set.clone())),
                segments::PAGE,
                cursor,
            );
            if self.pump(app, run, &plan, stream, (true, plan.resumed), lost).await? == Pumped::Stopped {
                return Ok(());
            }
            self.patiently(|| store.delete_members(app, &set)).await?;
            run.held_releases.remove(0);
            run.cursor.clear();
            self.save(app, run).await?;
        }
        run.state = CampaignState::Completed as i32;
        run.end = domain::timestamp(chrono::Utc::now());
        for a in &mut run.activities {
            a.state = CampaignState::Completed as i32;
            a.start = run.start.clone();
            a.end = run.end.clone();
        }
        if run.trigger.is_some() {
            self.fold_trigger(app, run).await?;
            return Ok(());
        }
        self.save(app, run).await?;
        if !run.unit_bounds.is_empty() {
            self.sweep_units(app, run).await;
        }
        // After its last occurrence a campaign no longer holds its segment and templates.
        let latest = self.patiently(|| store.get_record(app, super::KIND, &cid, None)).await?;
        if let Some(c) = latest.and_then(|raw| Campaign::decode(raw.as_slice()).ok()) {
            let schedule = c.schedule.clone().unwrap_or_default();
            let recurring =
                schedule.frequency == super::Frequency::Event as i32 || super::has_more(&schedule, &c.creation_date, run.occurrence);
            if !recurring {
                self.patiently(|| super::set_uses(store, app, &c, false)).await?;
            }
        }
        tracing::info!(run = %plan.request_id, "Campaign run completed.");
        Ok(())
    }

    /// Whether the campaign was paused or deleted since the run began: the state the run
    /// stops in.
    async fn interruption(&self, app: &str, run: &CampaignRun) -> Result<Option<CampaignState>, RunError> {
        let latest = self.patiently(|| self.store.get_record(app, super::KIND, &run.campaign_id, None)).await?;
        Ok(match latest {
            None => Some(CampaignState::Deleted),
            Some(latest) if Campaign::decode(latest.as_slice()).is_ok_and(|c| c.is_paused) => Some(CampaignState::Paused),
            Some(_) => None,
        })
    }

    /// Records that the run stopped in `state`.
    async fn stop(&self, app: &str, run: &mut CampaignRun, state: CampaignState) -> Result<(), RunError> {
        run.state = state as i32;
        if state == CampaignState::Deleted {
            run.end = domain::timestamp(chrono::Utc::now());
        }
        self.save(app, run).await
    }
}
