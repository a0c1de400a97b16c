//! Running journeys. A scheduler looks every second for the journeys that have work (ACTIVE,
//! or CLOSED with participants still inside) and drives each under a lease, so with several
//! daemons on one store a journey is stepped by one of them at a time. The lease holder:
//!
//! 1. lets participants in — its segment's members when it starts and at each refresh, or
//!    the endpoints whose reported events match its event filter — through
//!    [`Store::journey_enter`], which applies the re-entry rules atomically;
//! 2. steps the participants that are due ([`Store::journey_due`]): each walks its path
//!    (splits, holdouts, waits that have elapsed) until it waits, leaves, or reaches a message
//!    activity; the batch's messages go through the planner's delivery rules, the journey's
//!    caps, sending schedule and rate, into the engine; when their outcomes are in, every
//!    participant's new position and the counters are written in one step
//!    ([`Store::journey_move`]).
//!
//! Faults:
//! - **Stop** (SIGTERM): the batch in hand settles (messages the engine hands back unsent
//!   leave their participants where they were); nothing is sent twice, nobody is skipped.
//! - **Crash** (kill -9): positions are written after the messages' outcomes, so the next
//!   lease holder steps the batch again; every message whose outcome was recorded is found in
//!   the run index ([`Store::run_outcomes`], keyed by journey, activity and entry) and not sent
//!   again — only what was at a provider without a recorded outcome can repeat. Waits are
//!   due times in the store: they survive any restart.
//! - **Store outage**: the step fails, the lease holder backs off and steps again when the
//!   store is back, from the positions in the store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message as _;
use tokio::task::JoinHandle;

use super::{compile, metrics as names, parse_duration, share, Channel, Cond, Graph, Sending, Step, KIND, PROGRESS_KIND};
use crate::dispatch::engine::Engine;
use crate::dispatch::quota::RateGate;
use crate::domain;
use crate::pipeline::compose::{ComposeError, Composer, Tracking};
use crate::proto::v1::journey_activity::Kind;
use crate::proto::v1::{Endpoint, EndpointStatus, Event, EventOrigin, Journey, JourneyProgress, JourneyState};
use crate::render::template::TemplateCache;
use crate::segments::rule::{parse_instant, Criteria, Rule};
use futures::StreamExt;

use crate::store::{Entry, Move, Participant, Reentry, Store, StoreError};

mod entry;
mod send;
mod step;
pub use send::{content_of, request_id};

/// How often the scheduler looks for journeys with work.
pub const TICK: Duration = Duration::from_secs(1);
/// Participants stepped per batch.
const PAGE: usize = 1_000;
/// Batches stepped side by side.
const BATCHES: usize = 4;
/// Segment members let in per entry page.
const ENTRY_PAGE: usize = 1_000;
const LEASE_MS: u64 = 15_000;
/// Entrants stepped as they enter are due this much later in the queue meanwhile.
const CLAIM_SECS: i64 = (LEASE_MS / 1_000) as i64;
/// How long a message waits for a full engine.
const SUBMIT_WAIT: Duration = Duration::from_secs(3_600);
/// A participant whose message the channel quota refused tries again this much later.
const THROTTLED_RETRY_SECS: i64 = 60;

/// Why a journey stopped being driven here.
#[derive(Debug, thiserror::Error)]
pub enum JourneyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// A journey compiled for running: its graph, composers per message activity, rules.
struct Plan {
    journey: Journey,
    graph: Graph,
    sending: Sending,
    composers: HashMap<usize, Composer>,
    gate: RateGate,
    reentry: Reentry,
    daily: Option<u32>,
    total: Option<u32>,
    timeframe: Option<(u32, i64)>,
    /// Segment conditions, compiled (segment id → rule).
    segments: HashMap<String, Arc<Rule>>,
    start_rule: Option<Arc<Rule>>,
    event: Option<EventMatcher>,
}

/// An event-started journey's filter.
struct EventMatcher {
    types: Vec<String>,
    exclude: bool,
    criteria: Criteria,
    /// Events that arrived before the journey's start (the earliest, with local time) or
    /// after its end let nobody in.
    window: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
}

impl EventMatcher {
    fn matches(&self, e: &Event) -> bool {
        if e.origin != EventOrigin::PutEvents as i32 || e.client_id.is_empty() {
            return false;
        }
        if self.types.contains(&e.event_type) == self.exclude {
            return false;
        }
        let at = parse_instant(&e.arrival_timestamp).unwrap_or_else(Utc::now);
        if self.window.0.is_some_and(|s| at < s) || self.window.1.is_some_and(|end| at >= end) {
            return false;
        }
        let probe = Endpoint {
            attributes: e
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), crate::proto::v1::AttributeValues { values: vec![v.clone()] }))
                .collect(),
            metrics: e.metrics.clone(),
            ..Default::default()
        };
        self.criteria.matches(&probe, at)
    }
}

/// A participant's position, as stored: its activity, whether it already waited there, and
/// the message ids of the activities a condition asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub activity: usize,
    pub waited: bool,
    pub messages: Vec<(usize, String)>,
}

impl Position {
    pub fn arrive(activity: usize) -> Self {
        Position { activity, waited: false, messages: Vec::new() }
    }

    pub fn encode(&self) -> String {
        let mut s = format!("{}{}", self.activity, if self.waited { 'w' } else { 'a' });
        for (a, m) in &self.messages {
            s.push(';');
            s.push_str(&a.to_string());
            s.push('=');
            s.push_str(m);
        }
        s
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.split(';');
        let head = parts.next()?;
        let (num, flag) = head.split_at(head.len().checked_sub(1)?);
        let activity = num.parse().ok()?;
        let waited = match flag {
            "w" => true,
            "a" => false,
            _ => return None,
        };
        let messages = parts.filter_map(|p| p.split_once('=')).filter_map(|(a, m)| Some((a.parse().ok()?, m.to_string()))).collect();
        Some(Position { activity, waited, messages })
    }

    fn message(&self, activity: usize) -> Option<&str> {
        self.messages.iter().find(|(a, _)| *a == activity).map(|(_, m)| m.as_str())
    }
}

/// The state a journey is in: what its record says, unless Herald closed or completed it.
pub fn effective_state(j: &Journey, progress: Option<&JourneyProgress>) -> JourneyState {
    let own = JourneyState::try_from(j.state).unwrap_or(JourneyState::Draft);
    match (own, progress.map(|p| JourneyState::try_from(p.state).unwrap_or_default())) {
        (JourneyState::Active | JourneyState::Paused, Some(s @ (JourneyState::Closed | JourneyState::Completed))) => s,
        (s, _) => s,
    }
}

pub async fn load_progress(store: &dyn Store, app: &str, id: &str) -> Result<Option<JourneyProgress>, StoreError> {
    match store.get_blob(app, PROGRESS_KIND, id).await? {
        Some(raw) => Ok(Some(JourneyProgress::decode(raw.as_slice())?)),
        None => Ok(None),
    }
}

/// What journeys share in a daemon.
pub struct JourneyRunner {
    pub store: Arc<dyn Store>,
    pub engine: Arc<Engine>,
    pub cache: Arc<TemplateCache>,
    pub owner: String,
    stop: tokio::sync::watch::Receiver<bool>,
    links: Option<Arc<crate::tracking::Links>>,
    running: parking_lot::Mutex<HashSet<String>>,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    /// Wakes the scheduler (a journey was published or changed state).
    pub wake: Arc<tokio::sync::Notify>,
}

impl JourneyRunner {
    pub fn new(
        store: Arc<dyn Store>,
        engine: Arc<Engine>,
        cache: Arc<TemplateCache>,
        owner: String,
        stop: tokio::sync::watch::Receiver<bool>,
        links: Option<Arc<crate::tracking::Links>>,
        wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        Self { store, engine, cache, owner, stop, links, running: Default::default(), tasks: Default::default(), wake }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits until every journey driven here has stopped (after the stop signal).
    pub async fn wait(&self) {
        loop {
            let tasks = std::mem::take(&mut *self.tasks.lock());
            if tasks.is_empty() {
                return;
            }
            futures::future::join_all(tasks).await;
        }
    }

    /// Looks for journeys with work until the daemon stops.
    pub async fn run(self: Arc<Self>) {
        let mut stop = self.stop.clone();
        loop {
            if self.stopping() {
                return;
            }
            if let Err(e) = self.tick().await {
                if !e.is_transient() {
                    tracing::warn!(error = %e, "Journey scheduler tick failed.");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn tick(self: &Arc<Self>) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        loop {
            let apps = self.store.list_apps(after.as_deref(), 200).await?;
            for app in &apps {
                let mut cursor: Option<String> = None;
                loop {
                    let page = self.store.list_records(&app.app_id, KIND, cursor.as_deref(), 200).await?;
                    for raw in &page {
                        let j = Journey::decode(raw.as_slice())?;
                        cursor = Some(j.id.clone());
                        let progress = load_progress(self.store.as_ref(), &app.app_id, &j.id).await?;
                        let state = effective_state(&j, progress.as_ref());
                        let work = matches!(state, JourneyState::Active | JourneyState::Closed | JourneyState::Cancelled)
                            && !(state == JourneyState::Cancelled
                                && progress.as_ref().is_some_and(|p| p.metrics.contains_key("CANCEL_DONE")));
                        if work {
                            self.spawn(&app.app_id, &j.id);
                        }
                    }
                    if page.len() < 200 {
                        break;
                    }
                }
            }
            match apps.last() {
                Some(a) if apps.len() == 200 => after = Some(a.app_id.clone()),
                _ => return Ok(()),
            }
        }
    }

    fn spawn(self: &Arc<Self>, app: &str, journey: &str) {
        let key = format!("{app}/{journey}");
        if self.stopping() || !self.running.lock().insert(key.clone()) {
            return;
        }
        let me = self.clone();
        let (app, journey) = (app.to_string(), journey.to_string());
        let handle = tokio::spawn(async move {
            me.drive_leased(&app, &journey).await;
            me.running.lock().remove(&key);
        });
        let mut tasks = self.tasks.lock();
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    async fn drive_leased(self: &Arc<Self>, app: &str, journey: &str) {
        let lease = format!("journey:{journey}");
        match self.store.try_lease(app, &lease, &self.owner, LEASE_MS).await {
            Ok(true) => {}
            _ => return,
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewer =
            crate::store::renew_lease(self.store.clone(), app.to_string(), lease.clone(), self.owner.clone(), LEASE_MS, lost.clone());
        if let Err(e) = self.drive(app, journey, &lost).await {
            match &e {
                JourneyError::Store(s) if s.is_transient() => {
                    tracing::warn!(error = %e, journey, "Store unreachable; the journey goes on when it is back.")
                }
                _ => tracing::error!(error = %e, journey, "Journey stopped."),
            }
        }
        renewer.abort();
        let _ = self.store.release_lease(app, &lease, &self.owner).await;
    }

    async fn prepare(&self, app: &str, j: Journey) -> Result<Plan, JourneyError> {
        let store = self.store.as_ref();
        let graph = compile(&j).map_err(|v| {
            JourneyError::Invalid(v.iter().map(|f| format!("{}: {}", f.field, f.description)).collect::<Vec<_>>().join("; "))
        })?;
        let mut v = Vec::new();
        let sending = Sending::new(&j, &mut v);
        let settings = store.get_app(app).await?.and_then(|a| a.settings).unwrap_or_default();
        let tracking = Tracking {
            links: self.links.clone(),
            track: j.engagement_tracking != Some(false) && settings.engagement_tracking != Some(false),
            unsubscribe: true,
        };
        let mut composers = HashMap::new();
        for (i, id) in graph.ids.iter().enumerate() {
            let a = &j.activities[id];
            let (m, channel) = match &a.kind {
                Some(Kind::Email(m)) => (m, Channel::Email),
                Some(Kind::Sms(m)) => (m, Channel::Sms),
                Some(Kind::Push(m)) => (m, Channel::Push),
                Some(Kind::Custom(m)) => (m, Channel::Custom),
                _ => continue,
            };
            let (config, templates) = content_of(m, channel);
            match Composer::build(store, self.cache.clone(), app, &config, &templates, tracking.clone()).await {
                Ok(c) => {
                    composers.insert(i, c);
                }
                Err(ComposeError::Store(e)) => return Err(e.into()),
                Err(ComposeError::Field(f)) => return Err(JourneyError::Invalid(format!("activity {id}: {}: {}", f.field, f.description))),
            }
        }
        // The journey's limits; each it leaves unset, the app's JourneyLimits (as Pinpoint's).
        let mut limits = j.limits.clone().unwrap_or_default();
        let app_limits = settings.journey_limits.unwrap_or_default();
        limits.daily_cap = limits.daily_cap.or(app_limits.daily_cap);
        limits.total_cap = limits.total_cap.or(app_limits.total_cap);
        if limits.timeframe_cap.as_ref().is_none_or(|t| t.cap.is_none() && t.days.is_none()) {
            limits.timeframe_cap = app_limits.timeframe_cap;
        }
        let interval = match limits.endpoint_reentry_interval.as_str() {
            "" => 0,
            s => parse_duration(s).map_err(|e| JourneyError::Invalid(e.to_string()))?,
        };
        let cap = limits.endpoint_reentry_cap.map_or(1, |c| c.max(0) as u32);
        let per_second = limits.messages_per_second.filter(|r| *r > 0).map(|r| r as u32);
        let timeframe = limits
            .timeframe_cap
            .as_ref()
            .and_then(|t| Some((t.cap.filter(|c| *c > 0)? as u32, i64::from(t.days.filter(|d| *d > 0)?) * 86_400)));
        let mut segments = HashMap::new();
        for s in &graph.steps {
            for c in s.conditions() {
                if let Cond::Segment(id) = c {
                    if !segments.contains_key(id) {
                        segments.insert(id.clone(), Arc::new(load_rule(store, app, id, 0).await?));
                    }
                }
            }
        }
        let start = j.start_condition.clone().unwrap_or_default();
        let (start_rule, event) = match (&start.segment_start_condition, &start.event_start_condition) {
            (Some(s), _) if !s.segment_id.is_empty() => (Some(Arc::new(load_rule(store, app, &s.segment_id, 0).await?)), None),
            (_, Some(e)) => {
                let f = e.event_filter.clone().unwrap_or_default();
                let criteria = Criteria::new(&crate::campaigns::event_dimensions(&f)).map_err(|e| JourneyError::Invalid(e.to_string()))?;
                let rule = match e.segment_id.as_str() {
                    "" => None,
                    id => Some(Arc::new(load_rule(store, app, id, 0).await?)),
                };
                let schedule = j.schedule.clone().unwrap_or_default();
                let (early, late) = if j.local_time {
                    (chrono::Duration::hours(super::LOCAL_SPREAD_HOURS.0), chrono::Duration::hours(super::LOCAL_SPREAD_HOURS.1))
                } else {
                    (chrono::Duration::zero(), chrono::Duration::zero())
                };
                let window = (parse_instant(&schedule.start_time).map(|s| s - early), parse_instant(&schedule.end_time).map(|e| e + late));
                (rule, Some(EventMatcher { types: f.event_types, exclude: f.exclude_event_types, criteria, window }))
            }
            _ => (None, None),
        };
        Ok(Plan {
            graph,
            sending,
            composers,
            gate: RateGate::new(per_second, per_second.map(|r| r.clamp(1, 100))),
            reentry: Reentry { cap, interval_secs: interval },
            daily: limits.daily_cap.filter(|d| *d > 0).map(|d| d as u32),
            total: limits.total_cap.filter(|d| *d > 0).map(|d| d as u32),
            timeframe,
            segments,
            start_rule,
            event,
            journey: j,
        })
    }

    async fn drive(self: &Arc<Self>, app: &str, id: &str, lost: &AtomicBool) -> Result<(), JourneyError> {
        let store = self.store.clone();
        let Some(raw) = store.get_record(app, KIND, id, None).await? else { return Ok(()) };
        let j = Journey::decode(raw.as_slice()).map_err(StoreError::from)?;
        let mut progress = load_progress(store.as_ref(), app, id)
            .await?
            .unwrap_or_else(|| JourneyProgress { journey_id: id.to_string(), ..Default::default() });
        let plan = match self.prepare(app, j).await {
            Ok(p) => p,
            Err(JourneyError::Invalid(why)) => {
                tracing::error!(journey = id, why, "Journey cannot run.");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut checked = std::time::Instant::now();
        let mut state = effective_state(&plan.journey, Some(&progress));
        loop {
            if self.stopping() || lost.load(Ordering::SeqCst) {
                return Ok(());
            }
            if checked.elapsed() >= TICK {
                checked = std::time::Instant::now();
                let Some(raw) = store.get_record(app, KIND, id, None).await? else { return Ok(()) };
                let latest = Journey::decode(raw.as_slice()).map_err(StoreError::from)?;
                state = effective_state(&latest, Some(&progress));
            }
            let now = Utc::now();
            match state {
                JourneyState::Paused | JourneyState::Draft | JourneyState::Completed => return Ok(()),
                JourneyState::Cancelled => return self.cancel(app, id, &mut progress).await,
                _ => {}
            }
            let schedule = plan.journey.schedule.clone().unwrap_or_default();
            // With local time, the earliest participant's start and the latest one's end are
            // up to 14 and 12 hours from the journey's own.
            let (early, late) = if plan.journey.local_time {
                (chrono::Duration::hours(super::LOCAL_SPREAD_HOURS.0), chrono::Duration::hours(super::LOCAL_SPREAD_HOURS.1))
            } else {
                (chrono::Duration::zero(), chrono::Duration::zero())
            };
            let end = parse_instant(&schedule.end_time).map(|e| e + late);
            let started = parse_instant(&schedule.start_time).is_none_or(|s| s - early <= now);
            if state == JourneyState::Active && end.is_some_and(|e| now >= e) {
                state = JourneyState::Closed;
                progress.state = JourneyState::Closed as i32;
                self.save(app, &mut progress).await?;
            }
            // Entries and steps go on side by side: a large segment's members are let in while
            // those already in are stepped.
            let entering = state == JourneyState::Active && started;
            let (entered, stepped) = tokio::join!(
                async {
                    if entering {
                        self.enter(app, &plan, &mut progress, now).await
                    } else {
                        Ok(false)
                    }
                },
                self.step(app, &plan, now)
            );
            let busy = entered? | stepped?;
            let (active, _) = store.journey_counters(app, id).await?;
            let entries_done = match (&plan.event, state) {
                (_, JourneyState::Closed) => true,
                (Some(_), _) => false,
                (None, _) => {
                    progress.segment_read > 0
                        && !progress.entry_open
                        && refresh_secs(&plan.journey).is_none()
                        && !plan.journey.refresh_on_segment_update
                }
            };
            if active == 0 && entries_done && !busy {
                progress.state = JourneyState::Completed as i32;
                self.save(app, &mut progress).await?;
                tracing::info!(journey = id, "Journey completed.");
                return Ok(());
            }
            if !busy {
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
            }
        }
    }

    async fn save(&self, app: &str, p: &mut JourneyProgress) -> Result<(), StoreError> {
        p.last_evaluated_time = domain::timestamp(Utc::now());
        self.store.put_blob(app, PROGRESS_KIND, &p.journey_id, &p.encode_to_vec()).await
    }

    /// Everyone still inside leaves, counted as CANCELLED.
    async fn cancel(&self, app: &str, id: &str, progress: &mut JourneyProgress) -> Result<(), JourneyError> {
        loop {
            let due = self.store.journey_due(app, id, i64::MAX / 2, PAGE).await?;
            if due.is_empty() {
                break;
            }
            let moves: Vec<Move> = due.iter().map(|p| (p.endpoint_id.clone(), None)).collect();
            self.store.journey_move(app, id, &moves, &[(names::CANCELLED.to_string(), moves.len() as i64)]).await?;
        }
        progress.metrics.insert("CANCEL_DONE".into(), 1);
        self.save(app, progress).await?;
        Ok(())
    }
}

/// A time as whole seconds, rounded up: a participant due then has waited at least as long.
pub(super) fn ceil_secs(t: DateTime<Utc>) -> i64 {
    t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0)
}

fn eligible(e: &Endpoint) -> bool {
    e.endpoint_status != EndpointStatus::Inactive as i32 && e.opt_out != crate::proto::v1::OptOut::All as i32
}

fn segment_error(e: crate::segments::SegmentError) -> JourneyError {
    match e {
        crate::segments::SegmentError::Store(s) => JourneyError::Store(s),
        other => JourneyError::Invalid(other.to_string()),
    }
}

async fn load_rule(store: &dyn Store, app: &str, id: &str, version: i32) -> Result<Rule, JourneyError> {
    let segment = crate::segments::load(store, app, id, version).await.map_err(segment_error)?;
    crate::segments::compile(store, app, &segment).await.map_err(segment_error)
}

/// A segment-started journey's refresh interval, if it has one.
pub fn refresh_secs(j: &Journey) -> Option<i64> {
    (!j.refresh_frequency.is_empty()).then(|| parse_duration(&j.refresh_frequency).ok()).flatten()
}

/// Moves a participant on to `to` (arriving there), or out of the journey.
fn walk(batch: &mut Batch, next: &mut Vec<(Participant, Position)>, p: Participant, pos: Position, to: Option<usize>) {
    match to {
        Some(a) => {
            let mut moved = pos;
            moved.activity = a;
            moved.waited = false;
            next.push((p, moved));
        }
        None => batch.leave(&p.endpoint_id),
    }
}

/// What one step writes: positions and counters.
#[derive(Default)]
struct Batch {
    moves: Vec<Move>,
    counters: HashMap<String, i64>,
    /// Endpoints read as they entered, not read again.
    known: HashMap<String, Endpoint>,
}

impl Batch {
    /// The endpoints of `ids`, those not known read from the store.
    async fn endpoints(&self, store: &dyn Store, app: &str, ids: &[String]) -> Result<Vec<Option<Endpoint>>, StoreError> {
        let missing: Vec<String> = ids.iter().filter(|i| !self.known.contains_key(*i)).cloned().collect();
        let mut read = if missing.is_empty() { Vec::new() } else { store.get_endpoints(app, &missing).await? }.into_iter();
        Ok(ids.iter().map(|i| self.known.get(i).cloned().or_else(|| read.next().flatten())).collect())
    }

    fn count(&mut self, activity: &str, metric: &str, n: i64) {
        *self.counters.entry(format!("{activity}|{metric}")).or_default() += n;
    }

    fn stay(&mut self, endpoint: &str, due: i64, pos: &Position) {
        self.moves.push((endpoint.to_string(), Some((due, pos.encode()))));
    }

    fn leave(&mut self, endpoint: &str) {
        self.moves.push((endpoint.to_string(), None));
        *self.counters.entry(names::ENDPOINT_LEFT.to_string()).or_default() += 1;
    }

    fn counters(&self) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = self.counters.iter().map(|(k, n)| (k.clone(), *n)).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        let p = Position { activity: 12, waited: true, messages: vec![(3, "abc".into()), (7, "def".into())] };
        assert_eq!(p.encode(), "12w;3=abc;7=def");
        assert_eq!(Position::decode(&p.encode()), Some(p));
        assert_eq!(Position::decode("0a"), Some(Position::arrive(0)));
        assert_eq!(Position::decode("x"), None);
        assert_eq!(Position::decode(""), None);
    }
}
