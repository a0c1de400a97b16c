//! The scheduler: every second, each campaign's due occurrence becomes a run record — created
//! only if absent, so with several daemons on one store a run fires exactly once — and runs
//! left executing (a daemon that died) or paused then resumed are picked up under a lease.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;

use super::run::Runner;
use super::{due, run_id, runs, Frequency, KIND, RUN_KIND};
use crate::domain;
use crate::proto::v1::{Campaign, CampaignRun, CampaignState};
use crate::store::StoreError;

/// How often due runs are looked for.
pub const TICK: Duration = Duration::from_secs(1);

/// Runs the scheduler until `stop` says so; `wake` makes it look at once (a campaign was
/// created or changed).
pub async fn run(runner: Arc<Runner>, wake: Arc<tokio::sync::Notify>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        if let Err(e) = tick(&runner, chrono::Utc::now()).await {
            tracing::warn!(error = %e, "Campaign scheduler tick failed.");
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One pass over every app's campaigns, as of `now`.
pub async fn tick(runner: &Arc<Runner>, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    let store = runner.store.clone();
    let mut after: Option<String> = None;
    loop {
        let apps = store.list_apps(after.as_deref(), 200).await?;
        for app in &apps {
            let mut cursor: Option<String> = None;
            loop {
                let page = store.list_records(&app.app_id, KIND, cursor.as_deref(), 200).await?;
                for raw in &page {
                    let c = Campaign::decode(raw.as_slice())?;
                    cursor = Some(c.id.clone());
                    if let Err(e) = campaign(runner, &app.app_id, &c, now).await {
                        tracing::warn!(error = %e, campaign = %c.id, "Cannot schedule a campaign.");
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

async fn campaign(runner: &Arc<Runner>, app: &str, c: &Campaign, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    let store = runner.store.as_ref();
    let done = runs(store, app, &c.id).await?;
    let last = done.last();
    // A run to (re)start here: one left executing by a daemon that stopped, or one paused and
    // since resumed. The run's lease decides who executes it.
    if let Some(r) = last {
        let resumable =
            r.state == CampaignState::Executing as i32 || (r.state == CampaignState::Paused as i32 && !c.is_paused && !r.start.is_empty());
        if resumable {
            if !runner.running.lock().contains(&run_id(&r.campaign_id, r.occurrence)) {
                runner.spawn(app.to_string(), r.clone());
            }
            return Ok(());
        }
    }
    let schedule = c.schedule.clone().unwrap_or_default();
    let Some((k, at)) = due(&schedule, &c.creation_date, now) else { return Ok(()) };
    if last.is_some_and(|r| r.occurrence >= k) {
        return Ok(());
    }
    let once = schedule.frequency == Frequency::Once as i32;
    if c.is_paused && once {
        // A paused one-time campaign waits to be resumed.
        return Ok(());
    }
    let mut run = CampaignRun {
        campaign_id: c.id.clone(),
        occurrence: k,
        campaign_version: c.version,
        state: CampaignState::Executing as i32,
        scheduled_start: domain::timestamp(at),
        ..Default::default()
    };
    if c.is_paused {
        // A recurring campaign skips the runs that fall due while it is paused.
        run.state = CampaignState::Paused as i32;
    }
    match store.write_record(app, RUN_KIND, &run_id(&c.id, k), 0, 1, &run.encode_to_vec()).await {
        Ok(()) => {
            if run.state == CampaignState::Executing as i32 {
                tracing::info!(campaign = %c.id, occurrence = k, "Campaign run fired.");
                runner.spawn(app.to_string(), run);
            }
            Ok(())
        }
        // Another daemon fired it.
        Err(StoreError::Exists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
