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

    /// Loads what a run works with (the campaign, its segment's rule, composers, limits,
    /// schedules) into a [`Plan`]; `None` when the campaign is gone. The coordinator (the
    /// run's lease holder) also starts the run's record; a helper leaves it as it is.
    async fn prepare(
        &self,
        app: &str,
        run: &mut CampaignRun,
        coordinator: bool,
    ) -> Result<Option<(Arc<Plan>, Arc<segments::Rule>)>, RunError> {
        let store = self.store.as_ref();
        let (cid, version) = (run.campaign_id.clone(), run.campaign_version);
        let raw = self.patiently(|| store.get_record(app, super::KIND, &cid, Some(version))).await?;
        let Some(raw) = raw else { return Ok(None) };
        let campaign = Campaign::decode(raw.as_slice()).map_err(StoreError::from)?;
        let settings = self.patiently(|| store.get_app(app)).await?.and_then(|a| a.settings).unwrap_or_default();
        let limits = limits(&campaign, &settings);
        let rule = loop {
            let loaded = async {
                let segment = segments::load(store, app, &campaign.segment_id, campaign.segment_version).await?;
                let rule = segments::compile(store, app, &segment).await?;
                Ok::<_, segments::SegmentError>(rule)
            };
            match loaded.await {
                Ok(v) => break v,
                Err(segments::SegmentError::Store(e)) if e.is_transient() => {
                    // Waits until the store answers again, then loads once more.
                    self.patiently(|| store.ping()).await?;
                }
                Err(e) => return Err(e.into()),
            }
        };
        // Composers per treatment: the default, then the additional ones (their own content,
        // else the campaign's).
        let mut composers = Vec::new();
        let base =
            (campaign.message_configuration.clone().unwrap_or_default(), campaign.template_configuration.clone().unwrap_or_default());
        let mut contents = vec![base.clone()];
        for t in &campaign.additional_treatments {
            let own = t.message_configuration.is_some() || t.template_configuration.is_some();
            contents.push(if own {
                (t.message_configuration.clone().unwrap_or_default(), t.template_configuration.clone().unwrap_or_default())
            } else {
                base.clone()
            });
        }
        // Campaign emails are tracked unless the campaign or the app turns it off, and always
        // offer Herald's one-click unsubscribe.
        let tracking = crate::pipeline::compose::Tracking {
            links: self.links.clone(),
            track: campaign.engagement_tracking != Some(false) && settings.engagement_tracking != Some(false),
            unsubscribe: true,
        };
        for (m, tc) in &contents {
            let composer = loop {
                match Composer::build(store, self.cache.clone(), app, m, tc, tracking.clone()).await {
                    Ok(c) => break c,
                    Err(crate::pipeline::compose::ComposeError::Store(e)) if e.is_transient() => {
                        self.patiently(|| store.ping()).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            composers.push(composer);
        }
        let hook = match super::hook::is_set(campaign.hook.as_ref()) {
            true => (campaign.hook.as_ref(), super::hook::campaign_place(app, &campaign.id)),
            false => (settings.campaign_hook.as_ref(), super::hook::app_place(app)),
        };
        let hook = match (super::hook::is_set(hook.0), &self.sealer, &self.hook_http) {
            (false, _, _) => None,
            (true, Some(sealer), Some(http)) => {
                super::hook::Hook::open(sealer, &hook.1, hook.0).map_err(RunError::Hook)?.map(|h| (h, http.clone()))
            }
            (true, _, _) => return Err(RunError::Hook(super::hook::HookError::Unavailable)),
        };
        let cohorts = assignment(&campaign);
        if run.activities.is_empty() {
            let mut names =
                vec![(0, if campaign.treatment_name.is_empty() { "Default".to_string() } else { campaign.treatment_name.clone() })];
            names.extend(campaign.additional_treatments.iter().enumerate().map(|(i, t)| (i as i32 + 1, t.treatment_name.clone())));
            run.activities = names
                .into_iter()
                .map(|(tid, name)| Activity {
                    id: super::activity_id(&key(run), tid),
                    campaign_id: run.campaign_id.clone(),
                    campaign_version: run.campaign_version,
                    treatment_id: tid,
                    treatment_name: name,
                    scheduled_start: run.scheduled_start.clone(),
                    ..Default::default()
                })
                .collect();
        }
        // A run that started before (in this daemon or another) checks each member against the
        // outcomes recorded for it, so nobody who has one gets the message again.
        let resumed = !run.start.is_empty();
        if !coordinator {
            // A daemon helping with the run's units changes nothing of the run's record.
        } else if run.start.is_empty() {
            run.start = domain::timestamp(chrono::Utc::now());
        } else if run.in_flight > 0 {
            // What was at a provider with no outcome recorded may go again: at most what the
            // engine can hold unrecorded.
            run.activities[0].possible_repeats += run.in_flight.min(self.engine.repeat_bound() as i64);
            run.in_flight = 0;
        }
        if coordinator {
            run.state = CampaignState::Executing as i32;
            self.save(app, run).await?;
        }
        let scheduled = segments::rule::parse_instant(&run.scheduled_start).unwrap_or_else(chrono::Utc::now);
        let schedule = campaign.schedule.clone().unwrap_or_default();
        let mut schedules = vec![(schedule.clone(), scheduled, false)];
        for t in &campaign.additional_treatments {
            schedules.push(match &t.schedule {
                Some(own) => {
                    let start = localtime::treatment_start(&schedule, own, &campaign.creation_date, scheduled);
                    (own.clone(), start, start > scheduled)
                }
                None => (schedule.clone(), scheduled, false),
            });
        }
        // The app's quiet time holds every treatment whose schedule gives none (Pinpoint's
        // campaign QuietTime overrides the application's).
        if let Some(q) = settings.quiet_time.as_ref().filter(|q| !q.start.is_empty() && !q.end.is_empty()) {
            for (s, _, _) in &mut schedules {
                if s.quiet_time.as_ref().is_none_or(|own| own.start.is_empty() && own.end.is_empty()) {
                    s.quiet_time = Some(q.clone());
                }
            }
        }
        for (a, (_, start, _)) in run.activities.iter_mut().zip(&schedules) {
            a.scheduled_start = domain::timestamp(*start);
        }
        // A triggered message goes within 5 minutes of its event or not at all.
        let trigger_deadline = run
            .trigger
            .as_ref()
            .and_then(|t| segments::rule::parse_instant(&t.arrival))
            .map(|a| a + chrono::Duration::seconds(TRIGGER_DEADLINE_SECS));
        let deadlines = schedules
            .iter()
            .map(|(_, start, _)| {
                let own = limits.maximum_duration.map(|s| *start + chrono::Duration::seconds(s));
                match (own, trigger_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .collect();
        let lanes = composers.iter().map(Composer::lanes).collect();
        let plan = Arc::new(Plan {
            lanes,
            custom: custom_deliveries(&campaign),
            hook,
            messages: contents.iter().map(|(m, _)| m.clone()).collect(),
            cohorts,
            composers,
            schedules,
            deadlines,
            gate: RateGate::new(limits.per_second, limits.per_second.map(|r| r.clamp(1, 100))),
            run_rate: limits.per_second.map(|r| crate::dispatch::quota::RunRate::new(r, self.store.clone(), app, &key(run))),
            limits,
            origin_base: Origin {
                app_id: app.to_string(),
                scheduled_time: run.scheduled_start.clone(),
                campaign_id: run.campaign_id.clone(),
                ..Default::default()
            },
            request_id: key(run),
            resumed,
        });
        Ok(Some((plan, Arc::new(rule))))
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

    /// Sends a stream of members page by page, settling pages behind a window and moving the
    /// run's cursor; `releasing`: they are held members whose time has come.
    async fn pump(
        &self,
        app: &str,
        run: &mut CampaignRun,
        plan: &Arc<Plan>,
        mut stream: MemberStream,
        (releasing, resumed): (bool, bool),
        lost: &AtomicBool,
    ) -> Result<Pumped, RunError> {
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut stopped_by_quota = false;
        let mut window = Window::default();
        loop {
            if self.stopping() {
                // What was handed out settles and the exact position is recorded; the run
                // stays EXECUTING for the next daemon.
                self.settle_all(app, run, &mut pending, &mut window).await?;
                return Err(RunError::Stopped);
            }
            let Some(page) = stream.next_page().await else { break };
            let members = page?;
            if lost.load(Ordering::SeqCst) {
                tracing::warn!(run = %plan.request_id, "Lost the run's lease; another daemon goes on.");
                return Ok(Pumped::Stopped);
            }
            if let Some(state) = self.interruption(app, run).await? {
                // What was handed out settles first: a paused run has nothing left in flight.
                self.settle_all(app, run, &mut pending, &mut window).await?;
                self.stop(app, run, state).await?;
                return Ok(Pumped::Stopped);
            }
            let last = stream.last_scanned.clone().unwrap_or_default();
            let mut tasks = Vec::new();
            let tally = Tally::new();
            let mut counts = vec![Activity::default(); run.activities.len()];
            run.in_flight = pending.iter().map(|p| p.messages).sum();
            let before = run.in_flight;
            if !stopped_by_quota {
                let page = Page { members, releasing, resumed, tasks: &mut tasks, tally: &tally, counts: &mut counts };
                self.send_page(app, run, plan, page, &mut stopped_by_quota).await?;
            }
            pending.push_back(Pending { last, tasks, messages: run.in_flight - before, tally, counts });
            while pending.len() > WINDOW {
                self.settle_one(app, run, &mut pending, &mut window).await?;
            }
        }
        self.settle_all(app, run, &mut pending, &mut window).await?;
        if window.frozen {
            // Some messages went back unsent (the engine stopped): the run resumes before them.
            return Err(RunError::Stopped);
        }
        Ok(Pumped::Done)
    }

    /// Waits for the oldest page's outcomes, counts them and moves the cursor past it — unless
    /// a message of it (or of a page before it) ended unsettled: then the cursor stays, the
    /// counts are not added, and the run resumes there later, skipping who has an outcome.
    async fn settle_one(
        &self,
        app: &str,
        run: &mut CampaignRun,
        pending: &mut VecDeque<Pending>,
        window: &mut Window,
    ) -> Result<(), RunError> {
        let Some(page) = pending.pop_front() else { return Ok(()) };
        let mut submitted = 0;
        let mut counts = page.counts;
        let mut complete = true;
        for task in page.tasks {
            let done = task.await.map_err(|e| RunError::Task(e.to_string()))?;
            for (t, n) in done.unrendered {
                *counts[t].failed.entry(status_name(DeliveryStatus::PermanentFailure)).or_insert(0) += n;
            }
            submitted += done.submitted;
            complete &= done.complete;
        }
        for (treatment, status) in page.tally.wait(submitted).await {
            if status == UNSETTLED {
                complete = false;
                continue;
            }
            count_status(&mut counts[treatment], status);
        }
        window.frozen |= !complete;
        if window.frozen {
            run.in_flight = 0;
            return Ok(());
        }
        for (a, c) in run.activities.iter_mut().zip(&counts) {
            add_counts(a, c);
        }
        run.cursor = page.last;
        run.in_flight = pending.iter().map(|p| p.messages).sum();
        for a in &mut run.activities {
            a.state = CampaignState::Executing as i32;
            a.start = run.start.clone();
        }
        self.save(app, run).await
    }

    async fn settle_all(
        &self,
        app: &str,
        run: &mut CampaignRun,
        pending: &mut VecDeque<Pending>,
        window: &mut Window,
    ) -> Result<(), RunError> {
        while !pending.is_empty() {
            self.settle_one(app, run, pending, window).await?;
        }
        if window.frozen {
            // The position of the last complete page, with nothing in flight past it.
            self.save(app, run).await?;
        }
        Ok(())
    }

    /// Filters a page by the delivery rules and limits, counts it into `page.counts`, and hands
    /// what may go to render-and-submit tasks.
    async fn send_page(
        &self,
        app: &str,
        run: &mut CampaignRun,
        plan: &Arc<Plan>,
        page: Page<'_>,
        stopped_by_quota: &mut bool,
    ) -> Result<(), RunError> {
        let Page { members, releasing, resumed, tasks, tally, counts } = page;
        let (cohorts, limits, request_id) = (&plan.cohorts, &plan.limits, plan.request_id.as_str());
        let store = self.store.as_ref();
        // A resumed run: the statuses already recorded for this page's members.
        let recorded = if resumed && !members.is_empty() {
            let ids: Vec<String> = members.iter().map(|e| e.id.clone()).collect();
            self.patiently(|| store.run_outcomes(app, request_id, &ids)).await?
        } else {
            Vec::new()
        };
        // Members the campaign addresses: an ACTIVE endpoint on a channel it has content for.
        let mut eligible = Vec::with_capacity(members.len());
        let mut held: std::collections::BTreeMap<i64, Vec<String>> = std::collections::BTreeMap::new();
        for (i, e) in members.into_iter().enumerate() {
            // Only endpoints on a channel the campaign has content for are its audience.
            if !(0..plan.lanes.len()).any(|t| plan.route(t, e.channel_type).is_some()) {
                continue;
            }
            if e.endpoint_status == EndpointStatus::Inactive as i32 {
                continue;
            }
            let cohort = e.cohort_id.clamp(0, 99) as usize;
            let Some(treatment) = cohorts[cohort] else {
                counts[0].holdout += 1;
                continue;
            };
            let Some(lane) = plan.route(treatment, e.channel_type) else { continue };
            if !releasing {
                counts[treatment].total_endpoints += 1;
            }
            if let Some(Some(status)) = recorded.get(i) {
                // Sent before this run resumed: counted from its recorded outcome, not sent again.
                count_status(&mut counts[treatment], *status);
                continue;
            }
            // Pinpoint's rules on the endpoint (an opt-out, here), as every producer applies them.
            if let Err(refused) = planner::endpoint(member_facts(&e, false)) {
                count_status(&mut counts[treatment], refused.status as i32);
                continue;
            }
            if !releasing {
                let tz = e.demographic.as_ref().and_then(|d| localtime::zone(&d.timezone));
                let (schedule, start, later) = &plan.schedules[treatment];
                let now = chrono::Utc::now();
                let hold =
                    if *later { localtime::hold_from(schedule, *start, tz, now) } else { localtime::hold(schedule, *start, tz, now) };
                if let Some(h) = hold {
                    if matches!(h, localtime::Hold::QuietTime(_)) {
                        counts[treatment].held_by_quiet_time += 1;
                    }
                    // Released at the start of the minute after it may go.
                    let minute = (h.until().timestamp() + 59) / 60 * 60;
                    held.entry(minute).or_default().push(e.id.clone());
                    continue;
                }
            }
            eligible.push((e, lane, treatment));
        }
        // Held members are recorded before the cursor can move past them.
        for (minute, ids) in held {
            let set = held_set(request_id, minute);
            self.patiently(|| store.add_members(app, &set, &ids)).await?;
            if let Err(at) = run.held_releases.binary_search(&minute) {
                run.held_releases.insert(at, minute);
            }
        }
        if eligible.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now();
        eligible.retain(|(_, _, t)| {
            let late = plan.deadlines[*t].is_some_and(|d| now > d);
            if late {
                counts[*t].timed_out += 1;
            }
            !late
        });
        if eligible.is_empty() {
            return Ok(());
        }
        let addresses: Vec<String> = eligible.iter().map(|(e, _, _)| crate::api::suppressions::normalize(&e.address)).collect();
        let suppressed = self.patiently(|| store.get_suppressions(app, &addresses)).await?;
        let mut go = Vec::with_capacity(eligible.len());
        for ((e, lane, t), s) in eligible.into_iter().zip(suppressed) {
            match planner::listed(member_facts(&e, s.is_some())) {
                Err(refused) => count_status(&mut counts[t], refused.status as i32),
                Ok(()) => go.push((e, lane, t)),
            }
        }
        if let Some((hook, http)) = &plan.hook {
            go = filter_by_hook(run, plan, hook, http, go, counts).await;
        }
        if limits.daily.is_some() || limits.total.is_some() {
            let ids: Vec<String> = go.iter().map(|(e, _, _)| e.id.clone()).collect();
            let ok = self
                .patiently(|| {
                    store.take_endpoint_caps(app, &run.campaign_id, &ids, limits.daily.map(|d| (d, 86_400)), limits.total, now.timestamp())
                })
                .await?;
            let mut kept = Vec::with_capacity(go.len());
            for (item, ok) in go.into_iter().zip(ok) {
                if ok {
                    kept.push(item);
                } else {
                    counts[item.2].capped += 1;
                }
            }
            go = kept;
        }
        // The channel quotas: wait for their rate, stop at their daily or total.
        for lane in Lane::ALL {
            let n = go.iter().filter(|(_, l, _)| *l == lane).count() as u64;
            if n == 0 {
                continue;
            }
            let channel = lane.quota_channel();
            let granted = self.patiently(|| self.engine.admit(app, channel, n)).await?;
            if granted < n {
                *stopped_by_quota = true;
                let mut seen = 0;
                let mut kept = Vec::with_capacity(go.len());
                for item in go {
                    if item.1 == lane {
                        seen += 1;
                        if seen > granted {
                            counts[item.2].throttled += 1;
                            continue;
                        }
                    }
                    kept.push(item);
                }
                go = kept;
            }
        }
        // What is about to go out is recorded first: if this daemon dies, the run resumes
        // before these messages, skips those with a recorded outcome and reports the rest as
        // possible repeats.
        run.in_flight += go.len() as i64;
        self.save(app, run).await?;
        // Rendering and submitting go on in tasks beside the run (one per core's share of the
        // page) while it reads and filters the next page; the page settles once they are done.
        let stamp: Arc<str> = domain::timestamp(now).into();
        let origins: Arc<Vec<Origin>> = Arc::new(
            run.activities
                .iter()
                .enumerate()
                .map(|(t, a)| Origin { treatment_id: Some(t as u32), activity_id: a.id.clone(), ..plan.origin_base.clone() })
                .collect(),
        );
        if plan.limits.per_second.is_some() {
            // Paced: the run itself waits for the gate, so a pause stops it between messages.
            let done = submit_chunk(&self.engine, plan, &origins, &stamp, tally, &self.stop, go).await;
            tasks.push(tokio::spawn(async move { done }));
            return Ok(());
        }
        let parts = render_tasks(go.len());
        let share = go.len().div_ceil(parts);
        while !go.is_empty() {
            let chunk: Vec<_> = go.drain(..share.min(go.len())).collect();
            let (engine, plan, origins, stamp, tally, stop) =
                (self.engine.clone(), plan.clone(), origins.clone(), stamp.clone(), tally.clone(), self.stop.clone());
            tasks.push(tokio::spawn(async move { submit_chunk(&engine, &plan, &origins, &stamp, &tally, &stop, chunk).await }));
        }
        Ok(())
    }
}
