//! EVENT campaigns: the app's reported events, read from the stream after a position kept in
//! the store, fire each EVENT campaign whose filter they match (event type INCLUSIVE or
//! EXCLUSIVE, attribute and metric dimensions) within its start and end. A batch of events
//! becomes, per campaign, one trigger run — a campaign run over the endpoints the events came
//! from, each tested against the campaign's segment alone (never a scan), with the
//! campaign's treatments, holdout, limits and quiet time — whose messages go within 5 minutes
//! of the event or are dropped and counted as timed out.
//!
//! Durability: the trigger runs are written to the store before the position moves past their
//! events, so an event accepted by PutEvents is not lost when the daemon dies: the next daemon
//! re-reads from the position (a run already written is kept, not doubled) and resumes every
//! trigger run left executing, skipping the endpoints whose outcome is recorded.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;

use super::{event_id, event_number};
use crate::campaigns::run::{key, Runner};
use crate::campaigns::{Frequency, KIND, TRIGGER_KIND};
use crate::proto::v1::{Campaign, CampaignRun, CampaignState, Endpoint, Event, EventFilter, EventOrigin, EventTrigger};
use crate::segments::rule::{parse_instant, Criteria};
use crate::store::{Store, StoreError};

/// Where the trigger reader stands (a blob: the last event number read).
pub const POSITION_KIND: &str = "event-trigger-position";
/// Events read per step.
const PAGE: usize = 1_000;
/// How often trigger runs left executing are looked for.
const RESUME_EVERY: Duration = Duration::from_secs(5);
/// How long the list of EVENT campaigns is reused before it is read again.
const CAMPAIGNS_TTL: Duration = Duration::from_secs(1);

/// One EVENT campaign, compiled for matching.
struct Armed {
    campaign: Campaign,
    types: Vec<String>,
    exclude: bool,
    criteria: Criteria,
    start: Option<chrono::DateTime<chrono::Utc>>,
    end: Option<chrono::DateTime<chrono::Utc>>,
}

impl Armed {
    fn new(c: Campaign) -> Option<Self> {
        let s = c.schedule.clone()?;
        if s.frequency != Frequency::Event as i32 || c.is_paused {
            return None;
        }
        let f: EventFilter = s.event_filter.clone()?;
        let criteria = Criteria::new(&crate::campaigns::event_dimensions(&f)).ok()?;
        // Events before the campaign existed never fire it.
        let created = parse_instant(&c.creation_date);
        let start = crate::campaigns::start_of(&s, &c.creation_date).max(created);
        let end = parse_instant(&s.end_time);
        Some(Self { types: f.event_types, exclude: f.exclude_event_types, criteria, start, end, campaign: c })
    }

    /// Whether a reported event fires this campaign.
    fn fires(&self, e: &Event) -> bool {
        if e.origin != EventOrigin::PutEvents as i32 {
            return false;
        }
        let listed = self.types.contains(&e.event_type);
        if listed == self.exclude {
            return false;
        }
        let Some(at) = parse_instant(&e.arrival_timestamp) else { return false };
        if self.start.is_some_and(|s| at < s) || self.end.is_some_and(|end| at > end) {
            return false;
        }
        // The event's attributes and metrics, tested as an endpoint's would be.
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

/// Reads the app's events and fires its EVENT campaigns until `stop`.
pub async fn run(runner: Arc<Runner>, app: String, mut stop: tokio::sync::watch::Receiver<bool>) {
    let store = runner.store.clone();
    let mut wake = super::subscribe();
    let mut armed: Vec<Armed> = Vec::new();
    let mut loaded_at: Option<Instant> = None;
    let mut resumed_at: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        let step = async {
            // Trigger runs left by a daemon that died wait for their lease to lapse: looked
            // for again every few seconds.
            if resumed_at.is_none_or(|t| t.elapsed() > RESUME_EVERY) {
                resume(&runner, &app).await?;
                resumed_at = Some(Instant::now());
            }
            if loaded_at.is_none_or(|t| t.elapsed() > CAMPAIGNS_TTL) {
                armed = campaigns(store.as_ref(), &app).await?;
                loaded_at = Some(Instant::now());
            }
            step(&runner, &app, &armed).await
        };
        match step.await {
            Ok(true) => backoff = Duration::from_millis(100),
            Ok(false) => {
                backoff = Duration::from_millis(100);
                tokio::select! {
                    _ = super::wait_for_more(&mut wake) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            Err(e) => {
                if !e.is_transient() {
                    tracing::warn!(error = %e, app, "Cannot fire EVENT campaigns.");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Trigger runs left executing (by this daemon before a restart, or by one that died) go on.
async fn resume(runner: &Arc<Runner>, app: &str) -> Result<(), StoreError> {
    let mut after: Option<String> = None;
    loop {
        let page = runner.store.list_records(app, TRIGGER_KIND, after.as_deref(), 200).await?;
        for raw in &page {
            let run = CampaignRun::decode(raw.as_slice())?;
            after = Some(key(&run));
            if run.state == CampaignState::Executing as i32 && !runner.running.lock().contains(&key(&run)) {
                runner.spawn(app.to_string(), run);
            }
        }
        if page.len() < 200 {
            return Ok(());
        }
    }
}

/// The app's EVENT campaigns that may fire.
async fn campaigns(store: &dyn Store, app: &str) -> Result<Vec<Armed>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_records(app, KIND, after.as_deref(), 200).await?;
        for raw in &page {
            let c = Campaign::decode(raw.as_slice())?;
            after = Some(c.id.clone());
            out.extend(Armed::new(c));
        }
        if page.len() < 200 {
            return Ok(out);
        }
    }
}

/// Reads one page of events after the position and fires what they match; whether there
/// was a page.
async fn step(runner: &Arc<Runner>, app: &str, armed: &[Armed]) -> Result<bool, StoreError> {
    let store = runner.store.as_ref();
    let position = match store.get_blob(app, POSITION_KIND, "").await? {
        Some(b) => String::from_utf8_lossy(&b).parse::<u64>().unwrap_or(0),
        // From the oldest event kept: a campaign fires only on events that arrived after it
        // was created (and within 5 minutes of them), so history costs a read, not sends.
        None => 0,
    };
    if armed.is_empty() {
        // No EVENT campaign: nothing to read, the position follows the stream (a campaign
        // created later fires only on events after its creation anyway).
        let last = store.last_event(app).await?;
        if last != position {
            store.put_blob(app, POSITION_KIND, "", last.to_string().as_bytes()).await?;
        }
        return Ok(false);
    }
    let page = store.read_events(app, (position > 0).then(|| event_id(position)).as_deref(), PAGE).await?;
    let Some(last) = page.last().and_then(|e| event_number(&e.event_id)) else { return Ok(false) };
    let mut fired: HashMap<usize, (BTreeSet<String>, String)> = HashMap::new();
    for e in &page {
        for (i, a) in armed.iter().enumerate() {
            if a.fires(e) {
                let entry = fired.entry(i).or_insert_with(|| (BTreeSet::new(), e.arrival_timestamp.clone()));
                entry.0.insert(e.client_id.clone());
            }
        }
    }
    let mut runs = Vec::new();
    for (i, (ids, arrival)) in fired {
        let c = &armed[i].campaign;
        let run = CampaignRun {
            campaign_id: c.id.clone(),
            campaign_version: c.version,
            state: CampaignState::Executing as i32,
            scheduled_start: arrival.clone(),
            trigger: Some(EventTrigger { endpoint_ids: ids.into_iter().collect(), arrival, event_id: event_id(last) }),
            ..Default::default()
        };
        metrics::counter!(crate::telemetry::EVENT_TRIGGERS, "result" => "fired")
            .increment(run.trigger.as_ref().map_or(0, |t| t.endpoint_ids.len() as u64));
        match store.write_record(app, TRIGGER_KIND, &key(&run), 0, 1, &run.encode_to_vec()).await {
            // Written before (a daemon that died before moving the position): resumed, or
            // finished, as it is — never run twice.
            Ok(()) | Err(StoreError::Exists(_)) => runs.push(run),
            Err(e) => return Err(e),
        }
    }
    store.put_blob(app, POSITION_KIND, "", last.to_string().as_bytes()).await?;
    for run in runs {
        if !runner.running.lock().contains(&key(&run)) {
            runner.spawn(app.to_string(), run);
        }
    }
    Ok(true)
}

/// How long a finished trigger run's record stays (it tells a re-read batch apart from a new
/// one; the position moves past its events within moments of writing it).
pub const FINISHED_KEPT: chrono::Duration = chrono::Duration::minutes(10);

/// Drops the records of trigger runs that finished more than [`FINISHED_KEPT`] ago.
pub async fn sweep(store: &dyn Store, app: &str, now: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
    let mut gone = 0;
    let mut after: Option<String> = None;
    loop {
        let page = store.list_records(app, TRIGGER_KIND, after.as_deref(), 200).await?;
        for raw in &page {
            let run = CampaignRun::decode(raw.as_slice())?;
            after = Some(key(&run));
            let ended = parse_instant(&run.end);
            if run.state != CampaignState::Executing as i32 && ended.is_some_and(|t| now - t > FINISHED_KEPT) {
                store.delete_record(app, TRIGGER_KIND, &key(&run)).await?;
                gone += 1;
            }
        }
        if page.len() < 200 {
            return Ok(gone);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{FilterType, Schedule};

    fn armed(exclude: bool) -> Armed {
        let c = Campaign {
            creation_date: "2026-01-01T00:00:00.000Z".into(),
            schedule: Some(Schedule {
                frequency: Frequency::Event as i32,
                event_filter: Some(EventFilter {
                    filter_type: FilterType::Endpoint as i32,
                    exclude_event_types: exclude,
                    event_types: vec!["_session.start".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        Armed::new(c).expect("an EVENT campaign")
    }

    fn reported(event_type: &str) -> Event {
        Event {
            event_type: event_type.into(),
            origin: EventOrigin::PutEvents as i32,
            arrival_timestamp: "2026-06-01T00:00:00.000Z".into(),
            ..Default::default()
        }
    }

    #[test]
    fn excluded_types_fire_on_every_other_type() {
        let (listed, other) = (reported("_session.start"), reported("purchase"));
        assert!(armed(false).fires(&listed) && !armed(false).fires(&other), "the listed type only");
        assert!(!armed(true).fires(&listed) && armed(true).fires(&other), "every type but the listed one");
    }
}
