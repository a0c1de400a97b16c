//! The readers of each app's event stream that run in the background — EVENT campaign
//! triggers and event destinations — and the stream's retention. For each app, one daemon at
//! a time holds the app's events lease and runs them; when it stops or dies the lease lapses
//! and another daemon takes over from the positions kept in the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;

use crate::campaigns::run::Runner;
use crate::proto::v1::EventDestination;
use crate::secrets::Sealer;
use crate::store::{Store, StoreError};

/// How the stream is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Most events kept per app (at most [`crate::store::MAX_EVENTS`]).
    pub count: u64,
    /// Oldest event kept.
    pub age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self { count: crate::store::MAX_EVENTS, age: Duration::from_secs(7 * 86_400) }
    }
}

/// What the workers share.
pub struct Workers {
    pub runner: Arc<Runner>,
    pub sealer: Arc<Sealer>,
    pub retention: Retention,
    /// First wait after a failed webhook delivery (doubling, with jitter).
    pub webhook_backoff: Duration,
    pub stop: tokio::sync::watch::Receiver<bool>,
}

const LEASE: &str = "events";
const LEASE_MS: u64 = 10_000;
/// How often apps (and each app's destinations) are looked for.
const LOOK: Duration = Duration::from_secs(2);

/// Runs until the stop signal: every [`LOOK`], each app without a worker here gets one.
pub async fn run(w: Arc<Workers>) {
    let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut stop = w.stop.clone();
    loop {
        running.retain(|_, t| !t.is_finished());
        match apps(w.runner.store.as_ref()).await {
            Ok(apps) => {
                for app in apps {
                    if !running.contains_key(&app) {
                        running.insert(app.clone(), tokio::spawn(app_worker(w.clone(), app)));
                    }
                }
            }
            Err(e) if e.is_transient() => {}
            Err(e) => tracing::warn!(error = %e, "Cannot list apps for the event workers."),
        }
        tokio::select! {
            _ = tokio::time::sleep(LOOK) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for (_, t) in running {
        let _ = t.await;
    }
}

async fn apps(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_apps(after.as_deref(), 200).await?;
        out.extend(page.iter().map(|a| a.app_id.clone()));
        match page.last() {
            Some(a) if page.len() == 200 => after = Some(a.app_id.clone()),
            _ => return Ok(out),
        }
    }
}

/// One app: waits for its lease, then runs its trigger reader and destinations while it holds
/// it; ends when the app is gone or the daemon stops.
async fn app_worker(w: Arc<Workers>, app: String) {
    let store = w.runner.store.clone();
    let owner = w.runner.owner.clone();
    let mut stop = w.stop.clone();
    loop {
        match store.try_lease(&app, LEASE, &owner, LEASE_MS).await {
            Ok(true) => break,
            Err(StoreError::AppNotFound(_)) => return,
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(LEASE_MS / 3)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
    tracing::debug!(app, "Holding the app's event workers.");
    // The readers stop when the daemon stops or the lease is lost.
    let (halt_tx, halt) = tokio::sync::watch::channel(false);
    let mut tasks = vec![tokio::spawn(super::triggers::run(w.runner.clone(), app.clone(), halt.clone()))];
    let http = reqwest::Client::builder().pool_max_idle_per_host(8).build().expect("an HTTP client");
    let mut destinations: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut last_trim = tokio::time::Instant::now() - Duration::from_secs(3_600);
    loop {
        // Destinations created since, or whose task ended (deleted, then created again).
        destinations.retain(|_, t| !t.is_finished());
        match list_destinations(store.as_ref(), &app).await {
            Ok(ids) => {
                for id in ids {
                    if let std::collections::hash_map::Entry::Vacant(v) = destinations.entry(id.clone()) {
                        v.insert(tokio::spawn(super::destinations::deliver(
                            store.clone(),
                            w.sealer.clone(),
                            http.clone(),
                            app.clone(),
                            id,
                            halt.clone(),
                            w.webhook_backoff,
                        )));
                    }
                }
            }
            Err(StoreError::AppNotFound(_)) => break,
            Err(_) => {}
        }
        if last_trim.elapsed() > Duration::from_secs(60) {
            last_trim = tokio::time::Instant::now();
            if let Err(e) = upkeep(store.as_ref(), &app, w.retention).await {
                if !e.is_transient() {
                    tracing::warn!(error = %e, app, "Event stream upkeep failed.");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LOOK) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        match store.try_lease(&app, LEASE, &owner, LEASE_MS).await {
            Ok(true) => {}
            // Unreachable: nobody else can take it either.
            Err(e) if e.is_transient() => {}
            _ => break,
        }
    }
    let _ = halt_tx.send(true);
    tasks.extend(destinations.into_values());
    for t in tasks {
        let _ = t.await;
    }
    let _ = store.release_lease(&app, LEASE, &owner).await;
}

async fn list_destinations(store: &dyn Store, app: &str) -> Result<HashSet<String>, StoreError> {
    let mut out = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_records(app, super::destinations::KIND, after.as_deref(), 200).await?;
        for raw in &page {
            let d = EventDestination::decode(raw.as_slice())?;
            after = Some(d.id.clone());
            out.insert(d.id);
        }
        if page.len() < 200 {
            return Ok(out);
        }
    }
}

/// Trims the stream to its retention and drops finished trigger records.
async fn upkeep(store: &dyn Store, app: &str, retention: Retention) -> Result<(), StoreError> {
    let now = chrono::Utc::now();
    let last = store.last_event(app).await?;
    let by_count = last.saturating_sub(retention.count.min(crate::store::MAX_EVENTS)) + 1;
    let age = chrono::Duration::from_std(retention.age).unwrap_or(chrono::Duration::days(7));
    let by_age = super::position_at(store, app, now - age).await? + 1;
    let floor = by_count.max(by_age);
    if floor > 1 {
        store.trim_events(app, floor).await?;
    }
    super::triggers::sweep(store, app, now).await?;
    Ok(())
}
