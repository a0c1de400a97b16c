//! One campaign run: the pinned segment version streamed in endpoint id order, each member
//! assigned to the holdout or a treatment by cohort, filtered by the delivery rules and the
//! campaign's per-endpoint limits, paced by its messages per second and the channel quotas,
//! rendered and handed to the engine. Progress (a cursor and the counts) is written after
//! every settled page, so a run whose daemon died resumes after the last settled endpoint; the
//! messages in flight beyond it are the only possible repeats, and are reported.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::task::JoinHandle;

use super::{localtime, run_id, RUN_KIND};
use crate::dispatch::compose::{Composer, Origin};
use crate::dispatch::engine::{Engine, Job, Lane, Reply, Tally};
use crate::dispatch::quota::RateGate;
use crate::domain::{self, endpoint as rules};
use crate::proto::v1::{
    Activity, AppSettings, Campaign, CampaignRun, CampaignState, ChannelType, DeliveryStatus, EndpointStatus, MessageOutcome,
    MessageSource, OptOut,
};
use crate::render::template::TemplateCache;
use crate::segments::{self, MemberStream};
use crate::store::{Store, StoreError};

/// A message's treatment and where its outcome arrives.
/// A page handed to the engine: the last endpoint id it read, the tasks rendering and
/// submitting it, and how many messages they carry.
type Pending = (String, Vec<JoinHandle<Submitted>>, i64, Arc<Tally>);

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
    limits: Limits,
    /// Per treatment: its schedule (its own, else the campaign's), its start in this run, and
    /// whether that start is later than the run's (its messages wait for it).
    schedules: Vec<(crate::proto::v1::Schedule, chrono::DateTime<chrono::Utc>, bool)>,
    /// Per treatment: when its messages time out (maximum duration after its start).
    deadlines: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    gate: RateGate,
    origin_base: Origin,
    request_id: String,
}

#[derive(Debug, PartialEq, Eq)]
enum Pumped {
    Done,
    /// Paused, deleted, or the lease was lost: the run stops here.
    Stopped,
}

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
}

/// Where a cohort goes: the holdout, or a treatment (index into the activities).
fn assignment(c: &Campaign) -> [Option<usize>; 100] {
    let mut out = [Some(0); 100];
    let mut at = 0usize;
    let mut fill = |n: usize, who: Option<usize>, out: &mut [Option<usize>; 100]| {
        for slot in out.iter_mut().skip(at).take(n) {
            *slot = who;
        }
        at = (at + n).min(100);
    };
    fill(c.holdout_percent.clamp(0, 100) as usize, None, &mut out);
    for (i, t) in c.additional_treatments.iter().enumerate() {
        fill(t.size_percent.clamp(0, 100) as usize, Some(i + 1), &mut out);
    }
    out
}

fn lane_of(channel: i32) -> Option<Lane> {
    Lane::of(ChannelType::try_from(channel).ok()?)
}

/// The limits that apply: the campaign's, else the app's defaults.
struct Limits {
    daily: Option<u32>,
    total: Option<u32>,
    per_second: Option<u32>,
    maximum_duration: Option<i64>,
}

fn limits(c: &Campaign, app: &AppSettings) -> Limits {
    let (cl, al) = (c.limits.unwrap_or_default(), app.limits.unwrap_or_default());
    let pick = |a: Option<i32>, b: Option<i32>| a.or(b).filter(|v| *v > 0).map(|v| v as u32);
    Limits {
        daily: pick(cl.daily, al.daily),
        total: pick(cl.total, al.total),
        per_second: pick(cl.messages_per_second, al.messages_per_second),
        maximum_duration: cl.maximum_duration.or(al.maximum_duration).filter(|v| *v > 0).map(i64::from),
    }
}

impl Runner {
    async fn save(&self, app: &str, run: &CampaignRun) -> Result<(), StoreError> {
        self.store.write_record(app, RUN_KIND, &run_id(&run.campaign_id, run.occurrence), 1, 1, &run.encode_to_vec()).await
    }

    /// Runs (or resumes) a run to its end, a pause, or the loss of its lease.
    pub async fn execute(self: Arc<Self>, app: String, mut run: CampaignRun) {
        let id = run_id(&run.campaign_id, run.occurrence);
        if !self.running.lock().insert(id.clone()) {
            return;
        }
        let lease = format!("run:{id}");
        match self.store.try_lease(&app, &lease, &self.owner, LEASE_MS).await {
            Ok(true) => {}
            _ => {
                self.running.lock().remove(&id);
                return;
            }
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (store, app, lease, owner, lost) = (self.store.clone(), app.clone(), lease.clone(), self.owner.clone(), lost.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(LEASE_MS / 3)).await;
                    if !matches!(store.try_lease(&app, &lease, &owner, LEASE_MS).await, Ok(true)) {
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            })
        };
        let executing = metrics::gauge!(crate::telemetry::CAMPAIGN_RUNS_EXECUTING);
        executing.increment(1.0);
        let result = self.drive(&app, &mut run, &lost).await;
        executing.decrement(1.0);
        if let Err(e) = result {
            tracing::error!(error = %e, run = %id, "Campaign run failed.");
            run.state = CampaignState::Invalid as i32;
            run.failure = e;
            run.end = domain::timestamp(chrono::Utc::now());
            let _ = self.save(&app, &run).await;
        }
        if run.state != CampaignState::Executing as i32 {
            let state = CampaignState::try_from(run.state).map_or("UNKNOWN", |s| s.as_str_name().trim_start_matches("CAMPAIGN_STATE_"));
            metrics::counter!(crate::telemetry::CAMPAIGN_RUNS, "state" => state).increment(1);
        }
        renewer.abort();
        let _ = self.store.release_lease(&app, &lease, &self.owner).await;
        self.running.lock().remove(&id);
    }

    async fn drive(&self, app: &str, run: &mut CampaignRun, lost: &AtomicBool) -> Result<(), String> {
        let store = self.store.as_ref();
        let raw = store.get_record(app, super::KIND, &run.campaign_id, Some(run.campaign_version)).await.map_err(|e| e.to_string())?;
        let Some(raw) = raw else {
            run.state = CampaignState::Deleted as i32;
            run.end = domain::timestamp(chrono::Utc::now());
            return self.save(app, run).await.map_err(|e| e.to_string());
        };
        let campaign = Campaign::decode(raw.as_slice()).map_err(|e| e.to_string())?;
        let settings = store.get_app(app).await.map_err(|e| e.to_string())?.and_then(|a| a.settings).unwrap_or_default();
        let limits = limits(&campaign, &settings);
        let segment = segments::load(store, app, &campaign.segment_id, campaign.segment_version).await.map_err(|e| e.to_string())?;
        let rule = segments::compile(store, app, &segment).await.map_err(|e| e.to_string())?;
        // Composers per treatment: the default, then the additional ones (their own content,
        // else the campaign's).
        let mut composers = Vec::new();
        let base =
            (campaign.message_configuration.clone().unwrap_or_default(), campaign.template_configuration.clone().unwrap_or_default());
        composers.push(Composer::build(store, self.cache.clone(), app, &base.0, &base.1).await.map_err(|e| e.to_string())?);
        for t in &campaign.additional_treatments {
            let own = t.message_configuration.is_some() || t.template_configuration.is_some();
            let (m, tc) = if own {
                (t.message_configuration.clone().unwrap_or_default(), t.template_configuration.clone().unwrap_or_default())
            } else {
                base.clone()
            };
            composers.push(Composer::build(store, self.cache.clone(), app, &m, &tc).await.map_err(|e| e.to_string())?);
        }
        let cohorts = assignment(&campaign);
        if run.activities.is_empty() {
            let mut names =
                vec![(0, if campaign.treatment_name.is_empty() { "Default".to_string() } else { campaign.treatment_name.clone() })];
            names.extend(campaign.additional_treatments.iter().enumerate().map(|(i, t)| (i as i32 + 1, t.treatment_name.clone())));
            run.activities = names
                .into_iter()
                .map(|(tid, name)| Activity {
                    id: format!("{}-{tid}", run_id(&run.campaign_id, run.occurrence)),
                    campaign_id: run.campaign_id.clone(),
                    campaign_version: run.campaign_version,
                    treatment_id: tid,
                    treatment_name: name,
                    scheduled_start: run.scheduled_start.clone(),
                    ..Default::default()
                })
                .collect();
        }
        if run.start.is_empty() {
            run.start = domain::timestamp(chrono::Utc::now());
        } else if run.in_flight > 0 {
            // Resumed: what was in flight past the cursor may go again.
            run.activities[0].possible_repeats += run.in_flight;
            run.in_flight = 0;
        }
        run.state = CampaignState::Executing as i32;
        self.save(app, run).await.map_err(|e| e.to_string())?;
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
        for (a, (_, start, _)) in run.activities.iter_mut().zip(&schedules) {
            a.scheduled_start = domain::timestamp(*start);
        }
        let deadlines =
            schedules.iter().map(|(_, start, _)| limits.maximum_duration.map(|s| *start + chrono::Duration::seconds(s))).collect();
        let lanes = composers.iter().map(Composer::lanes).collect();
        let plan = Arc::new(Plan {
            lanes,
            cohorts,
            composers,
            schedules,
            deadlines,
            gate: RateGate::new(limits.per_second, limits.per_second.map(|r| r.clamp(1, 100))),
            limits,
            origin_base: Origin {
                app_id: app.to_string(),
                scheduled_time: run.scheduled_start.clone(),
                campaign_id: run.campaign_id.clone(),
                ..Default::default()
            },
            request_id: run_id(&run.campaign_id, run.occurrence),
        });
        if !run.scanned {
            let cursor = Some(run.cursor.clone()).filter(|c| !c.is_empty());
            let stream = MemberStream::open_ordered(self.store.clone(), app, Arc::new(rule), segments::PAGE, cursor);
            if self.pump(app, run, &plan, stream, false, lost).await? == Pumped::Stopped {
                return Ok(());
            }
            run.scanned = true;
            run.cursor.clear();
            self.save(app, run).await.map_err(|e| e.to_string())?;
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
            if self.pump(app, run, &plan, stream, true, lost).await? == Pumped::Stopped {
                return Ok(());
            }
            self.store.delete_members(app, &set).await.map_err(|e| e.to_string())?;
            run.held_releases.remove(0);
            run.cursor.clear();
            self.save(app, run).await.map_err(|e| e.to_string())?;
        }
        run.state = CampaignState::Completed as i32;
        run.end = domain::timestamp(chrono::Utc::now());
        for a in &mut run.activities {
            a.state = CampaignState::Completed as i32;
            a.start = run.start.clone();
            a.end = run.end.clone();
        }
        self.save(app, run).await.map_err(|e| e.to_string())?;
        // After its last occurrence a campaign no longer holds its segment and templates.
        let latest = self.store.get_record(app, super::KIND, &run.campaign_id, None).await.map_err(|e| e.to_string())?;
        if let Some(c) = latest.and_then(|raw| Campaign::decode(raw.as_slice()).ok()) {
            let schedule = c.schedule.clone().unwrap_or_default();
            let recurring =
                schedule.frequency == super::Frequency::Event as i32 || super::has_more(&schedule, &c.creation_date, run.occurrence);
            if !recurring {
                super::set_uses(self.store.as_ref(), app, &c, false).await.map_err(|e| e.to_string())?;
            }
        }
        tracing::info!(run = %plan.request_id, "Campaign run completed.");
        Ok(())
    }

    /// Whether the campaign was paused or deleted since the run began: the state the run
    /// stops in.
    async fn interruption(&self, app: &str, run: &CampaignRun) -> Result<Option<CampaignState>, String> {
        Ok(match self.store.get_record(app, super::KIND, &run.campaign_id, None).await.map_err(|e| e.to_string())? {
            None => Some(CampaignState::Deleted),
            Some(latest) if Campaign::decode(latest.as_slice()).is_ok_and(|c| c.is_paused) => Some(CampaignState::Paused),
            Some(_) => None,
        })
    }

    /// Records that the run stopped in `state`.
    async fn stop(&self, app: &str, run: &mut CampaignRun, state: CampaignState) -> Result<(), String> {
        run.state = state as i32;
        if state == CampaignState::Deleted {
            run.end = domain::timestamp(chrono::Utc::now());
        }
        self.save(app, run).await.map_err(|e| e.to_string())
    }

    /// Sends a stream of members page by page, settling pages behind a window and moving the
    /// run's cursor; `releasing`: they are held members whose time has come.
    async fn pump(
        &self,
        app: &str,
        run: &mut CampaignRun,
        plan: &Arc<Plan>,
        mut stream: MemberStream,
        releasing: bool,
        lost: &AtomicBool,
    ) -> Result<Pumped, String> {
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut stopped_by_quota = false;
        while let Some(page) = stream.next_page().await {
            let members = page.map_err(|e| e.to_string())?;
            if lost.load(Ordering::SeqCst) {
                tracing::warn!(run = %plan.request_id, "Lost the run's lease; another daemon goes on.");
                return Ok(Pumped::Stopped);
            }
            if let Some(state) = self.interruption(app, run).await? {
                // What was handed out settles first: a paused run has nothing left in flight.
                self.settle_all(app, run, &mut pending).await?;
                self.stop(app, run, state).await?;
                return Ok(Pumped::Stopped);
            }
            let last = stream.last_scanned.clone().unwrap_or_default();
            let mut tasks = Vec::new();
            let tally = Tally::new();
            run.in_flight = pending.iter().map(|p| p.2).sum();
            let before = run.in_flight;
            if !stopped_by_quota {
                self.send_page(app, run, members, plan, releasing, &mut tasks, &tally, &mut stopped_by_quota).await?;
            }
            pending.push_back((last, tasks, run.in_flight - before, tally));
            while pending.len() > WINDOW {
                self.settle_one(app, run, &mut pending).await?;
            }
        }
        self.settle_all(app, run, &mut pending).await?;
        Ok(Pumped::Done)
    }

    /// Waits for the oldest page's outcomes, counts them and moves the cursor past it.
    async fn settle_one(&self, app: &str, run: &mut CampaignRun, pending: &mut VecDeque<Pending>) -> Result<(), String> {
        let Some((last, tasks, _, tally)) = pending.pop_front() else { return Ok(()) };
        let mut submitted = 0;
        for task in tasks {
            let (n, unrendered) = task.await.map_err(|e| e.to_string())??;
            for (t, n) in unrendered {
                *run.activities[t].failed.entry(status_name(DeliveryStatus::PermanentFailure)).or_insert(0) += n;
            }
            submitted += n;
        }
        for (treatment, status) in tally.wait(submitted).await {
            let a = &mut run.activities[treatment];
            match DeliveryStatus::try_from(status).unwrap_or(DeliveryStatus::UnknownFailure) {
                DeliveryStatus::Successful => a.successful += 1,
                DeliveryStatus::Throttled => a.throttled += 1,
                other => *a.failed.entry(status_name(other)).or_insert(0) += 1,
            }
        }
        run.cursor = last;
        run.in_flight = pending.iter().map(|p| p.2).sum();
        for a in &mut run.activities {
            a.state = CampaignState::Executing as i32;
            a.start = run.start.clone();
        }
        self.save(app, run).await.map_err(|e| e.to_string())
    }

    async fn settle_all(&self, app: &str, run: &mut CampaignRun, pending: &mut VecDeque<Pending>) -> Result<(), String> {
        while !pending.is_empty() {
            self.settle_one(app, run, pending).await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_page(
        &self,
        app: &str,
        run: &mut CampaignRun,
        members: Vec<crate::proto::v1::Endpoint>,
        plan: &Arc<Plan>,
        releasing: bool,
        tasks: &mut Vec<JoinHandle<Submitted>>,
        tally: &Arc<Tally>,
        stopped_by_quota: &mut bool,
    ) -> Result<(), String> {
        let (cohorts, limits, request_id) = (&plan.cohorts, &plan.limits, plan.request_id.as_str());
        let store = self.store.as_ref();
        // Members the campaign addresses: an ACTIVE endpoint on a channel it has content for.
        let mut eligible = Vec::with_capacity(members.len());
        let mut held: std::collections::BTreeMap<i64, Vec<String>> = std::collections::BTreeMap::new();
        for e in members {
            // Only endpoints on a channel the campaign has content for are its audience.
            let Some(lane) = lane_of(e.channel_type).filter(|l| plan.lanes.iter().any(|t| t.contains(l))) else { continue };
            if e.endpoint_status == EndpointStatus::Inactive as i32 {
                continue;
            }
            let cohort = e.cohort_id.clamp(0, 99) as usize;
            let Some(treatment) = cohorts[cohort] else {
                run.activities[0].holdout += 1;
                continue;
            };
            if !plan.lanes[treatment].contains(&lane) {
                continue;
            }
            if !releasing {
                run.activities[treatment].total_endpoints += 1;
            }
            if e.opt_out == OptOut::All as i32 {
                *run.activities[treatment].failed.entry(status_name(DeliveryStatus::OptOut)).or_insert(0) += 1;
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
                        run.activities[treatment].held_by_quiet_time += 1;
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
            self.store.add_members(app, &held_set(request_id, minute), &ids).await.map_err(|e| e.to_string())?;
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
                run.activities[*t].timed_out += 1;
            }
            !late
        });
        if eligible.is_empty() {
            return Ok(());
        }
        let addresses: Vec<String> = eligible.iter().map(|(e, _, _)| crate::api::suppressions::normalize(&e.address)).collect();
        let suppressed = store.get_suppressions(app, &addresses).await.map_err(|e| e.to_string())?;
        let mut go = Vec::with_capacity(eligible.len());
        for ((e, lane, t), s) in eligible.into_iter().zip(suppressed) {
            if s.is_some() {
                *run.activities[t].failed.entry(status_name(DeliveryStatus::PermanentFailure)).or_insert(0) += 1;
            } else {
                go.push((e, lane, t));
            }
        }
        if limits.daily.is_some() || limits.total.is_some() {
            let ids: Vec<String> = go.iter().map(|(e, _, _)| e.id.clone()).collect();
            let ok = store
                .take_endpoint_caps(app, &run.campaign_id, &ids, limits.daily, limits.total, now.timestamp())
                .await
                .map_err(|e| e.to_string())?;
            let mut kept = Vec::with_capacity(go.len());
            for (item, ok) in go.into_iter().zip(ok) {
                if ok {
                    kept.push(item);
                } else {
                    run.activities[item.2].capped += 1;
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
            let granted = self.engine.admit(app, channel, n).await.map_err(|e| e.to_string())?;
            if granted < n {
                *stopped_by_quota = true;
                let mut seen = 0;
                let mut kept = Vec::with_capacity(go.len());
                for item in go {
                    if item.1 == lane {
                        seen += 1;
                        if seen > granted {
                            run.activities[item.2].throttled += 1;
                            continue;
                        }
                    }
                    kept.push(item);
                }
                go = kept;
            }
        }
        // What is about to go out is recorded first: if this daemon dies, the run resumes
        // before these messages and reports them as possible repeats.
        run.in_flight += go.len() as i64;
        self.save(app, run).await.map_err(|e| e.to_string())?;
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
        let campaign_id: Arc<str> = run.campaign_id.as_str().into();
        let app: Arc<str> = app.into();
        if plan.limits.per_second.is_some() {
            // Paced: the run itself waits for the gate, so a pause stops it between messages.
            let done = submit_chunk(&self.engine, plan, &app, &campaign_id, &origins, &stamp, tally, go).await;
            tasks.push(tokio::spawn(async move { done }));
            return Ok(());
        }
        let parts = render_tasks(go.len());
        let share = go.len().div_ceil(parts);
        while !go.is_empty() {
            let chunk: Vec<_> = go.drain(..share.min(go.len())).collect();
            let (engine, plan, origins, stamp, campaign_id, app, tally) =
                (self.engine.clone(), plan.clone(), origins.clone(), stamp.clone(), campaign_id.clone(), app.clone(), tally.clone());
            tasks.push(tokio::spawn(
                async move { submit_chunk(&engine, &plan, &app, &campaign_id, &origins, &stamp, &tally, chunk).await },
            ));
        }
        Ok(())
    }
}

/// How many tasks render a page of `n` messages: one per core, none under 100 messages.
fn render_tasks(n: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    (n / 100).clamp(1, cores.clamp(1, 8))
}

/// What a render task hands back: how many messages it handed to the engine (their statuses
/// arrive in the page's tally), and per treatment the messages that could not be rendered.
type Submitted = Result<(usize, Vec<(usize, i64)>), String>;

/// Renders a share of a page and hands it to the engine, paced by the run's rate gate.
#[allow(clippy::too_many_arguments)]
async fn submit_chunk(
    engine: &Engine,
    plan: &Plan,
    app: &str,
    campaign_id: &str,
    origins: &[Origin],
    stamp: &str,
    tally: &Arc<Tally>,
    chunk: Vec<(crate::proto::v1::Endpoint, Lane, usize)>,
) -> Submitted {
    let no_subs = HashMap::new();
    let mut submitted = 0;
    let mut unrendered = Vec::new();
    for (e, lane, t) in chunk {
        plan.gate.take().await;
        let composer = &plan.composers[t];
        let subs = if composer.shared_substitutions.is_empty() { &no_subs } else { &composer.shared_substitutions };
        let payload = match composer.payload(
            lane,
            ChannelType::try_from(e.channel_type).unwrap_or_default(),
            Some(&e),
            &e.address,
            subs,
            &origins[t],
        ) {
            Ok(p) => p,
            Err((why, _)) => {
                tracing::debug!(endpoint = %e.id, %why, "Campaign message not rendered.");
                match unrendered.iter_mut().find(|(u, _)| *u == t) {
                    Some((_, n)) => *n += 1,
                    None => unrendered.push((t, 1)),
                }
                continue;
            }
        };
        let channel = rules::channel_name(ChannelType::try_from(e.channel_type).unwrap_or_default()).to_string();
        let outcome = MessageOutcome {
            message_id: domain::new_message_id(),
            app_id: app.to_string(),
            source: MessageSource::Campaign as i32,
            request_id: plan.request_id.clone(),
            campaign_id: campaign_id.to_string(),
            treatment_id: t as i32,
            endpoint_id: e.id,
            address: e.address,
            channel,
            created_date: stamp.to_string(),
            updated_date: stamp.to_string(),
            ..Default::default()
        };
        let job = Job { outcome, payload, dry_run: false, first_attempt: None, reply: Some(Reply::Tally(tally.slot(t))), admitted: true };
        if engine.submit(lane, job, SUBMIT_WAIT).await.is_err() {
            return Err("the dispatch engine stopped".into());
        }
        submitted += 1;
    }
    Ok((submitted, unrendered))
}

fn status_name(s: DeliveryStatus) -> String {
    s.as_str_name().trim_start_matches("DELIVERY_STATUS_").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::Treatment;

    #[test]
    fn holdout_and_treatment_shares_hold_on_100_000_endpoints() {
        let c = Campaign {
            holdout_percent: 10,
            additional_treatments: vec![
                Treatment { size_percent: 25, ..Default::default() },
                Treatment { size_percent: 15, ..Default::default() },
            ],
            ..Default::default()
        };
        let cohorts = assignment(&c);
        let mut counts = [0usize; 4];
        for i in 0..100_000 {
            match cohorts[domain::endpoint::cohort_id(&format!("ep-{i:09}")) as usize] {
                None => counts[0] += 1,
                Some(t) => counts[t + 1] += 1,
            }
        }
        // Holdout 10 %, default 50 %, B 25 %, C 15 %: each within one point.
        for (got, want) in counts.iter().zip([10.0, 50.0, 25.0, 15.0]) {
            let share = *got as f64 / 1_000.0;
            assert!((share - want).abs() <= 1.0, "{counts:?}");
        }
    }
}
