//! Work units: one campaign run shared by every daemon serving its app.
//!
//! Before anyone reads the segment, the run's coordinator (the daemon holding the run's lease)
//! cuts the member index into [`UNITS`] ranges ([`Store::scan_splits`]) and writes the cuts
//! into the run's record. Each unit then has its own record (kind [`UNIT_KIND`]: a
//! `CampaignRun` with `unit` set, holding that range's cursor, counts, messages in flight and
//! held minutes) and its own lease. Every daemon's scheduler sees the executing run; one that
//! cannot take the run's lease helps instead: it takes any unit nobody holds and reads it to its
//! end, page by page, as a run on one daemon does. The coordinator reads units too, adds the
//! units' counts into the run's record as they settle (so the run's activity is one, whoever
//! sent) and, once every unit is read, releases the held members and completes the run.
//!
//! Faults, per unit, as for a run on one daemon:
//! - **Stop** (SIGTERM): the unit settles what it handed out, records its exact position and is
//!   released; another daemon (or this one, restarted) goes on from there. Nobody twice.
//! - **Crash** (kill -9): the unit's lease lapses after [`LEASE_MS`]; whoever takes it next
//!   re-reads from its cursor, skips every member whose outcome for the run is recorded, and
//!   reports what was in flight (at most [`Engine::repeat_bound`]) as possible repeats.
//! - **Coordinator gone**: the run's lease lapses and another daemon becomes the coordinator,
//!   from the records in the store.
//! - **Store outage**: every call is retried with backoff ([`Runner::patiently`]).
//!
//! On the embedded store (one daemon) the segment is not cut and the run reads it alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;

use super::{add_counts, key, Plan, Pumped, RunError, Runner, LEASE_MS, RUN_KIND};
use crate::proto::v1::{Activity, CampaignRun, CampaignState};
use crate::segments::{self, MemberStream};
use crate::store::StoreError;
#[cfg(doc)]
use crate::{dispatch::engine::Engine, store::Store};

/// The records of runs' work units.
pub(super) const UNIT_KIND: &str = "campaign-unit";

/// Units a run is cut into (where the store can cut its segment): several per daemon, so that
/// the daemons' shares even out and a daemon that dies leaves little for the others to resume.
pub(super) const UNITS: usize = 16;

/// How long a daemon with no unit to take waits before looking again.
const IDLE: Duration = Duration::from_millis(250);

/// The record id of unit `k` of `run`.
pub(super) fn unit_id(run: &CampaignRun, k: i32) -> String {
    format!("{}:u{k}", key(run))
}

/// Unit `k`'s range of the member index: from the cut before it (inclusive) to the cut after
/// it (exclusive), open at either end.
fn range(run: &CampaignRun, k: i32) -> (Option<String>, Option<String>) {
    let (b, i) = (&run.unit_bounds, k as usize);
    (if i >= 2 { b.get(i - 2).cloned() } else { None }, b.get(i - 1).cloned())
}

/// An activity as named in the run, with no counts.
fn without_counts(a: &Activity) -> Activity {
    Activity {
        id: a.id.clone(),
        campaign_id: a.campaign_id.clone(),
        campaign_version: a.campaign_version,
        treatment_id: a.treatment_id,
        treatment_name: a.treatment_name.clone(),
        scheduled_start: a.scheduled_start.clone(),
        start: a.start.clone(),
        end: a.end.clone(),
        state: a.state,
        ..Default::default()
    }
}

impl Runner {
    /// Reads the run's units that nobody holds, one at a time, until every unit is read to its
    /// end (`Done`), or the run is paused, deleted or its lease lost (`Stopped`), or the daemon
    /// stops ([`RunError::Stopped`]). The coordinator also adds the units' counts and held
    /// minutes into the run's record as they go, and waits for the units others hold; a helper
    /// returns once no unit is left to take.
    pub(super) async fn work_units(
        &self,
        app: &str,
        run: &mut CampaignRun,
        plan: &Arc<Plan>,
        rule: &Arc<segments::Rule>,
        lost: &AtomicBool,
        coordinator: bool,
    ) -> Result<Pumped, RunError> {
        let count = run.unit_bounds.len() as i32 + 1;
        loop {
            if self.stopping() {
                return Err(RunError::Stopped);
            }
            if lost.load(Ordering::SeqCst) {
                return Ok(Pumped::Stopped);
            }
            let units = self.units(app, run, count).await?;
            if coordinator {
                self.fold_units(app, run, &units).await?;
            }
            if units.iter().all(|u| u.as_ref().is_some_and(|u| u.scanned)) {
                return Ok(Pumped::Done);
            }
            if let Some(state) = self.interruption(app, run).await? {
                if coordinator {
                    self.stop(app, run, state).await?;
                }
                return Ok(Pumped::Stopped);
            }
            let mut took = false;
            for k in 1..=count {
                if units[(k - 1) as usize].as_ref().is_some_and(|u| u.scanned) {
                    continue;
                }
                match self.work_unit(app, run, plan, rule, k).await? {
                    None => continue,
                    Some(Pumped::Done) => took = true,
                    Some(Pumped::Stopped) => return Ok(Pumped::Stopped),
                }
                if lost.load(Ordering::SeqCst) {
                    return Ok(Pumped::Stopped);
                }
            }
            if !took {
                if !coordinator {
                    return Ok(Pumped::Done);
                }
                tokio::time::sleep(IDLE).await;
            }
        }
    }

    /// Every unit's record (`None`: not started).
    async fn units(&self, app: &str, run: &CampaignRun, count: i32) -> Result<Vec<Option<CampaignRun>>, RunError> {
        let store = self.store.as_ref();
        let reads = (1..=count).map(|k| {
            let id = unit_id(run, k);
            async move { self.patiently(|| store.get_record(app, UNIT_KIND, &id, None)).await }
        });
        let mut out = Vec::with_capacity(count as usize);
        for raw in futures::future::try_join_all(reads).await? {
            out.push(raw.map(|r| CampaignRun::decode(r.as_slice())).transpose().map_err(StoreError::from)?);
        }
        Ok(out)
    }

    /// The run's counts and held minutes: the sum of its units' (saved when they changed).
    async fn fold_units(&self, app: &str, run: &mut CampaignRun, units: &[Option<CampaignRun>]) -> Result<(), RunError> {
        let mut activities: Vec<Activity> = run.activities.iter().map(without_counts).collect();
        let mut held = run.held_releases.clone();
        for u in units.iter().flatten() {
            for (a, c) in activities.iter_mut().zip(&u.activities) {
                add_counts(a, c);
            }
            held.extend(&u.held_releases);
        }
        held.sort_unstable();
        held.dedup();
        if activities != run.activities || held != run.held_releases {
            run.activities = activities;
            run.held_releases = held;
            self.save(app, run).await?;
        }
        Ok(())
    }

    /// Takes unit `k` if nobody holds it and reads it to its end: `None` when another daemon
    /// holds it (or took it meanwhile), else how its pump ended.
    async fn work_unit(
        &self,
        app: &str,
        run: &CampaignRun,
        plan: &Arc<Plan>,
        rule: &Arc<segments::Rule>,
        k: i32,
    ) -> Result<Option<Pumped>, RunError> {
        let store = self.store.as_ref();
        let id = unit_id(run, k);
        let lease = format!("unit:{id}");
        if !self.patiently(|| store.try_lease(app, &lease, &self.owner, LEASE_MS)).await? {
            return Ok(None);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewer =
            crate::store::renew_lease(self.store.clone(), app.to_string(), lease.clone(), self.owner.clone(), LEASE_MS, lost.clone());
        let result = self.read_unit(app, run, plan, rule, k, &id, &lost).await;
        renewer.abort();
        let _ = store.release_lease(app, &lease, &self.owner).await;
        match result? {
            Some(Pumped::Stopped) if lost.load(Ordering::SeqCst) => {
                tracing::warn!(unit = %id, "Lost a campaign unit's lease; another daemon goes on.");
                Ok(None)
            }
            other => Ok(other),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn read_unit(
        &self,
        app: &str,
        run: &CampaignRun,
        plan: &Arc<Plan>,
        rule: &Arc<segments::Rule>,
        k: i32,
        id: &str,
        lost: &AtomicBool,
    ) -> Result<Option<Pumped>, RunError> {
        let store = self.store.as_ref();
        let existing = self.patiently(|| store.get_record(app, UNIT_KIND, id, None)).await?;
        // Read before (by a daemon that stopped or died), or part of a run that resumed: each
        // member is checked against the outcomes recorded for the run.
        let resumed = existing.is_some() || plan.resumed;
        let mut unit = match existing {
            Some(raw) => CampaignRun::decode(raw.as_slice()).map_err(StoreError::from)?,
            None => {
                let fresh = CampaignRun {
                    campaign_id: run.campaign_id.clone(),
                    occurrence: run.occurrence,
                    campaign_version: run.campaign_version,
                    state: CampaignState::Executing as i32,
                    scheduled_start: run.scheduled_start.clone(),
                    start: run.start.clone(),
                    activities: run.activities.iter().map(without_counts).collect(),
                    unit: k,
                    ..Default::default()
                };
                let body = fresh.encode_to_vec();
                match store.write_record(app, UNIT_KIND, id, 0, 1, &body).await {
                    // A missing record is also what a finished run leaves ([`Runner::sweep_units`]
                    // deletes its units once the run's record says it is past them): a daemon
                    // that saw the run executing a moment ago must not read the unit again.
                    Ok(()) if self.past_units(app, run).await? => {
                        let _ = store.delete_record(app, UNIT_KIND, id).await;
                        return Ok(None);
                    }
                    Ok(()) => fresh,
                    // Written by a daemon that held the lease before (its answer was lost).
                    Err(StoreError::Exists(_)) => return Ok(None),
                    Err(e) if e.is_transient() => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if unit.scanned {
            return Ok(None);
        }
        if unit.in_flight > 0 {
            // What was at a provider with no outcome recorded when its reader died may go again.
            unit.activities[0].possible_repeats += unit.in_flight.min(self.engine.repeat_bound() as i64);
            unit.in_flight = 0;
        }
        unit.state = CampaignState::Executing as i32;
        let cursor = Some(unit.cursor.clone()).filter(|c| !c.is_empty());
        let stream = MemberStream::open_range(self.store.clone(), app, rule.clone(), segments::PAGE, range(run, k), cursor);
        let pumped = self.pump(app, &mut unit, plan, stream, (false, resumed), lost).await?;
        if pumped == Pumped::Done {
            unit.scanned = true;
            unit.cursor.clear();
            self.save(app, &unit).await?;
            metrics::counter!(crate::telemetry::CAMPAIGN_UNITS).increment(1);
        }
        Ok(Some(pumped))
    }

    /// Whether the run's record says every unit was read (or the run is gone).
    async fn past_units(&self, app: &str, run: &CampaignRun) -> Result<bool, RunError> {
        let store = self.store.as_ref();
        let id = key(run);
        let latest = self.patiently(|| store.get_record(app, RUN_KIND, &id, None)).await?;
        Ok(match latest {
            None => true,
            Some(raw) => {
                let latest = CampaignRun::decode(raw.as_slice()).map_err(StoreError::from)?;
                latest.scanned || latest.state != CampaignState::Executing as i32
            }
        })
    }

    /// Deletes a completed run's unit records (its counts are in the run's record). Best
    /// effort: a record left by a failure here is only bytes, read by nobody.
    pub(super) async fn sweep_units(&self, app: &str, run: &CampaignRun) {
        let store = self.store.as_ref();
        let deletes = (1..=run.unit_bounds.len() as i32 + 1).map(|k| {
            let id = unit_id(run, k);
            async move { (store.delete_record(app, UNIT_KIND, &id).await, id) }
        });
        for (result, id) in futures::future::join_all(deletes).await {
            if let Err(e) = result {
                tracing::debug!(error = %e, unit = %id, "Cannot delete a finished run's unit record.");
            }
        }
    }

    /// A daemon that cannot take a run's lease (another coordinates it) takes a share of its
    /// units, if it has any.
    pub(super) async fn help(&self, app: &str, mut run: CampaignRun) {
        let lost = AtomicBool::new(false);
        let result = async {
            let Some((plan, rule)) = self.prepare(app, &mut run, false).await? else { return Ok(Pumped::Stopped) };
            self.work_units(app, &mut run, &plan, &rule, &lost, false).await
        };
        match result.await {
            Ok(_) => {}
            Err(RunError::Stopped) => {
                tracing::info!(run = %key(&run), "Stopped reading a campaign unit with the daemon; it resumes where it stopped.")
            }
            Err(e) => tracing::warn!(error = %e, run = %key(&run), "Cannot take part in a campaign run; its coordinator goes on."),
        }
    }
}
