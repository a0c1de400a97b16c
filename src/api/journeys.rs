//! The `Journeys` service: journey definitions (changed only while DRAFT, as in Pinpoint),
//! their state, and their execution metrics.

use std::sync::Arc;

use prost::Message as _;
use tonic::{Request, Response, Status};

use super::apps::page_size;
use super::{check_app_id, invalid, observe, store_status};
use crate::domain::{self, FieldViolation};
use crate::journeys::exec::{effective_state, load_progress};
use crate::journeys::{self, metrics, Channel, Sending, KIND, PROGRESS_KIND};
use crate::pipeline::compose::{ComposeError, Composer, Tracking};
use crate::proto::v1::journey_activity::Kind;
use crate::proto::v1::{
    journeys_server, CreateJourneyRequest, DeleteJourneyRequest, GetJourneyExecutionActivityMetricsRequest,
    GetJourneyExecutionMetricsRequest, GetJourneyRequest, Journey, JourneyExecutionActivityMetrics, JourneyExecutionMetrics,
    JourneyProgress, JourneyState, ListJourneysRequest, ListJourneysResponse, UpdateJourneyRequest, UpdateJourneyStateRequest,
};
use crate::render::template::TemplateCache;
use crate::store::{Store, StoreError};

pub struct JourneysService {
    store: Arc<dyn Store>,
    cache: Arc<TemplateCache>,
    /// Wakes this daemon's journey scheduler when a journey is published or changes state.
    wake: Arc<tokio::sync::Notify>,
}

impl JourneysService {
    pub fn new(store: Arc<dyn Store>, cache: Arc<TemplateCache>, wake: Arc<tokio::sync::Notify>) -> Self {
        Self { store, cache, wake }
    }

    /// Checks a whole definition; every problem is a field violation.
    async fn check(&self, app: &str, j: &Journey) -> Result<(), Status> {
        let mut v = Vec::new();
        if j.name.trim().is_empty() {
            v.push(FieldViolation::new("journey.name", "is required"));
        }
        let graph = match journeys::compile(j) {
            Ok(g) => Some(g),
            Err(found) => {
                v.extend(found);
                None
            }
        };
        let _ = Sending::new(j, &mut v);
        let l = j.limits.clone().unwrap_or_default();
        let range = |v: &mut Vec<FieldViolation>, name: &str, val: Option<i32>, lo: i32, hi: i32| {
            if val.is_some_and(|x| !(lo..=hi).contains(&x)) {
                v.push(FieldViolation::new(format!("journey.limits.{name}"), format!("must be {lo} to {hi}")));
            }
        };
        range(&mut v, "daily_cap", l.daily_cap, 0, 100);
        range(&mut v, "endpoint_reentry_cap", l.endpoint_reentry_cap, 0, 100);
        range(&mut v, "total_cap", l.total_cap, 0, 100);
        range(&mut v, "messages_per_second", l.messages_per_second, 1, 20_000);
        if let Some(t) = &l.timeframe_cap {
            range(&mut v, "timeframe_cap.cap", t.cap, 0, 100);
            range(&mut v, "timeframe_cap.days", t.days, 0, 30);
            if t.cap.unwrap_or(0) > 0 && t.days.unwrap_or(0) == 0 {
                v.push(FieldViolation::new("journey.limits.timeframe_cap.days", "give the days the cap counts over"));
            }
        }
        if !l.endpoint_reentry_interval.is_empty() {
            if let Err(e) = journeys::parse_duration(&l.endpoint_reentry_interval) {
                v.push(FieldViolation::new("journey.limits.endpoint_reentry_interval", e));
            }
        }
        let schedule = j.schedule.clone().unwrap_or_default();
        let start = (!schedule.start_time.is_empty()).then(|| crate::segments::rule::parse_instant(&schedule.start_time));
        let end = (!schedule.end_time.is_empty()).then(|| crate::segments::rule::parse_instant(&schedule.end_time));
        if matches!(start, Some(None)) {
            v.push(FieldViolation::new("journey.schedule.start_time", "is not an ISO-8601 instant"));
        }
        if matches!(end, Some(None)) {
            v.push(FieldViolation::new("journey.schedule.end_time", "is not an ISO-8601 instant"));
        }
        if let (Some(Some(s)), Some(Some(e))) = (start, end) {
            if e <= s {
                v.push(FieldViolation::new("journey.schedule.end_time", "must be after start_time"));
            }
        }
        // Entry: a segment, or events (with an optional segment).
        let sc = j.start_condition.clone().unwrap_or_default();
        let segment = match (&sc.segment_start_condition, &sc.event_start_condition) {
            (Some(s), None) => Some(("journey.start_condition.segment_start_condition.segment_id", s.segment_id.clone())),
            (None, Some(e)) => {
                let f = e.event_filter.clone().unwrap_or_default();
                if f.event_types.is_empty() {
                    v.push(FieldViolation::new(
                        "journey.start_condition.event_start_condition.event_filter.event_types",
                        "give the event types that start the journey",
                    ));
                }
                if let Err(e) = crate::segments::rule::Criteria::new(&crate::campaigns::event_dimensions(&f)) {
                    v.push(FieldViolation::new("journey.start_condition.event_start_condition.event_filter", e));
                }
                (!e.segment_id.is_empty()).then(|| ("journey.start_condition.event_start_condition.segment_id", e.segment_id.clone()))
            }
            (Some(_), Some(_)) => {
                v.push(FieldViolation::new("journey.start_condition", "give segment_start_condition or event_start_condition, not both"));
                None
            }
            (None, None) => {
                v.push(FieldViolation::new("journey.start_condition", "give segment_start_condition or event_start_condition"));
                None
            }
        };
        if let Some((field, id)) = segment {
            if id.is_empty() {
                v.push(FieldViolation::new(field, "is required"));
            } else {
                match crate::segments::load(self.store.as_ref(), app, &id, 0).await {
                    Ok(s) => {
                        if sc.event_start_condition.is_some() && crate::segments::is_imported(&s) {
                            v.push(FieldViolation::new(field, "an event-started journey needs a dynamic segment"));
                        }
                    }
                    Err(crate::segments::SegmentError::Store(e)) => return Err(store_status(e)),
                    Err(e) => v.push(FieldViolation::new(field, e.to_string())),
                }
            }
        }
        if !j.refresh_frequency.is_empty() {
            match journeys::parse_duration(&j.refresh_frequency) {
                Ok(s) if s < journeys::MIN_REFRESH_SECS => {
                    v.push(FieldViolation::new("journey.refresh_frequency", "must be at least an hour (PT1H)"))
                }
                Ok(_) if sc.event_start_condition.is_some() => {
                    v.push(FieldViolation::new("journey.refresh_frequency", "applies to segment-started journeys only"))
                }
                Ok(_) => {}
                Err(e) => v.push(FieldViolation::new("journey.refresh_frequency", e)),
            }
        }
        if j.refresh_on_segment_update && sc.event_start_condition.is_some() {
            v.push(FieldViolation::new("journey.refresh_on_segment_update", "applies to segment-started journeys only"));
        }
        if j.local_time && schedule.start_time.is_empty() && schedule.end_time.is_empty() {
            v.push(FieldViolation::new(
                "journey.local_time",
                "reads schedule.start_time and end_time on each participant's clock: give one",
            ));
        }
        // Segment conditions name segments that exist; every message activity's content compiles.
        if let Some(g) = &graph {
            for (i, id) in g.ids.iter().enumerate() {
                let a = &j.activities[id];
                let (m, channel, name) = match &a.kind {
                    Some(Kind::Email(m)) => (m, Channel::Email, "email"),
                    Some(Kind::Sms(m)) => (m, Channel::Sms, "sms"),
                    Some(Kind::Push(m)) => (m, Channel::Push, "push"),
                    Some(Kind::Custom(m)) => (m, Channel::Custom, "custom"),
                    _ => {
                        for c in g.steps[i].conditions() {
                            if let journeys::Cond::Segment(s) = c {
                                if let Err(e) = crate::segments::load(self.store.as_ref(), app, s, 0).await {
                                    match e {
                                        crate::segments::SegmentError::Store(e) => return Err(store_status(e)),
                                        e => v.push(FieldViolation::new(format!("journey.activities[{id:?}]"), e.to_string())),
                                    }
                                }
                            }
                        }
                        continue;
                    }
                };
                let (config, templates) = journeys::exec::content_of(m, channel);
                match Composer::build(self.store.as_ref(), self.cache.clone(), app, &config, &templates, Tracking::off()).await {
                    Ok(_) => {}
                    Err(ComposeError::Field(f)) => {
                        v.push(FieldViolation::new(format!("journey.activities[{id:?}].{name}"), format!("{}: {}", f.field, f.description)))
                    }
                    Err(ComposeError::Store(e)) => return Err(store_status(e)),
                }
            }
        }
        if !v.is_empty() {
            return Err(invalid(v));
        }
        Ok(())
    }

    async fn find(&self, app: &str, id: &str) -> Result<(Journey, Option<JourneyProgress>), Status> {
        check_app_id(app)?;
        let raw = self.store.get_record(app, KIND, id, None).await.map_err(store_status)?;
        let raw = raw.ok_or_else(|| Status::not_found(format!("journey {id} not found")))?;
        let mut j = Journey::decode(raw.as_slice()).map_err(|e| store_status(StoreError::from(e)))?;
        let progress = load_progress(self.store.as_ref(), app, id).await.map_err(store_status)?;
        j.state = effective_state(&j, progress.as_ref()) as i32;
        Ok((j, progress))
    }

    async fn write(&self, app: &str, j: &Journey, expect: i32) -> Result<(), Status> {
        self.store.write_record(app, KIND, &j.id, expect, j.version, &j.encode_to_vec()).await.map_err(store_status)
    }

    /// Marks the journey's templates as used (or no longer), so they cannot be deleted while it runs.
    async fn set_uses(&self, app: &str, j: &Journey, in_use: bool) -> Result<(), Status> {
        let user = journeys::user(&j.id);
        for a in j.activities.values() {
            if let Some(Kind::Email(m) | Kind::Sms(m) | Kind::Push(m) | Kind::Custom(m)) = &a.kind {
                if !m.template_name.is_empty() {
                    match self.store.set_template_use(app, &m.template_name, &user, in_use).await {
                        Ok(()) | Err(StoreError::NotFound(_)) => {}
                        Err(e) => return Err(store_status(e)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts a journey's execution record when it is published: event-started journeys
    /// read events from this point on.
    async fn publish(&self, app: &str, j: &Journey) -> Result<(), Status> {
        if load_progress(self.store.as_ref(), app, &j.id).await.map_err(store_status)?.is_some() {
            return Ok(());
        }
        let position = self.store.last_event(app).await.map_err(store_status)?;
        let p = JourneyProgress { journey_id: j.id.clone(), event_position: position, ..Default::default() };
        self.store.put_blob(app, PROGRESS_KIND, &j.id, &p.encode_to_vec()).await.map_err(store_status)?;
        self.set_uses(app, j, true).await?;
        self.wake.notify_one();
        Ok(())
    }
}

#[tonic::async_trait]
impl journeys_server::Journeys for JourneysService {
    async fn create_journey(&self, request: Request<CreateJourneyRequest>) -> Result<Response<Journey>, Status> {
        observe("CreateJourney", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            if self.store.get_app(&req.app_id).await.map_err(store_status)?.is_none() {
                return Err(Status::not_found(format!("app {} not found", req.app_id)));
            }
            let mut j = req.journey.unwrap_or_default();
            let state = JourneyState::try_from(j.state).unwrap_or(JourneyState::Unspecified);
            let state = match state {
                JourneyState::Unspecified | JourneyState::Draft => JourneyState::Draft,
                JourneyState::Active => JourneyState::Active,
                other => {
                    return Err(invalid(vec![FieldViolation::new(
                        "journey.state",
                        format!("a new journey is DRAFT or ACTIVE, not {}", journeys::state_name(other)),
                    )]))
                }
            };
            self.check(&req.app_id, &j).await?;
            let now = domain::timestamp(chrono::Utc::now());
            j.id = domain::new_id();
            j.app_id = req.app_id.clone();
            j.version = 1;
            j.state = state as i32;
            j.creation_date = now.clone();
            j.last_modified_date = now;
            self.write(&req.app_id, &j, 0).await?;
            if state == JourneyState::Active {
                self.publish(&req.app_id, &j).await?;
            }
            Ok(Response::new(j))
        })
        .await
    }

    async fn get_journey(&self, request: Request<GetJourneyRequest>) -> Result<Response<Journey>, Status> {
        observe("GetJourney", async {
            let req = request.into_inner();
            self.find(&req.app_id, &req.journey_id).await.map(|(j, _)| Response::new(j))
        })
        .await
    }

    async fn list_journeys(&self, request: Request<ListJourneysRequest>) -> Result<Response<ListJourneysResponse>, Status> {
        observe("ListJourneys", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            let size = page_size(req.page_size)?;
            let after = Some(req.page_token.as_str()).filter(|t| !t.is_empty());
            let raw = self.store.list_records(&req.app_id, KIND, after, size + 1).await.map_err(store_status)?;
            let mut out = Vec::with_capacity(raw.len());
            for r in raw {
                let mut j = Journey::decode(r.as_slice()).map_err(|e| store_status(StoreError::from(e)))?;
                let progress = load_progress(self.store.as_ref(), &req.app_id, &j.id).await.map_err(store_status)?;
                j.state = effective_state(&j, progress.as_ref()) as i32;
                out.push(j);
            }
            let next_page_token = if out.len() > size {
                out.truncate(size);
                out.last().map(|j| j.id.clone()).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(Response::new(ListJourneysResponse { journeys: out, next_page_token }))
        })
        .await
    }

    async fn update_journey(&self, request: Request<UpdateJourneyRequest>) -> Result<Response<Journey>, Status> {
        observe("UpdateJourney", async {
            let req = request.into_inner();
            let (old, _) = self.find(&req.app_id, &req.journey_id).await?;
            if old.state != JourneyState::Draft as i32 {
                return Err(Status::failed_precondition(format!(
                    "journey {} is {}: only a DRAFT journey can be changed (create a new journey, or cancel this one)",
                    old.id,
                    journeys::state_name(JourneyState::try_from(old.state).unwrap_or_default())
                )));
            }
            let mut j = req.journey.unwrap_or_default();
            let state = match JourneyState::try_from(j.state).unwrap_or(JourneyState::Unspecified) {
                JourneyState::Unspecified | JourneyState::Draft => JourneyState::Draft,
                JourneyState::Active => JourneyState::Active,
                other => {
                    return Err(invalid(vec![FieldViolation::new(
                        "journey.state",
                        format!("set DRAFT or ACTIVE here, not {}", journeys::state_name(other)),
                    )]))
                }
            };
            self.check(&req.app_id, &j).await?;
            j.id = old.id.clone();
            j.app_id = old.app_id.clone();
            j.version = old.version + 1;
            j.state = state as i32;
            j.creation_date = old.creation_date.clone();
            j.last_modified_date = domain::timestamp(chrono::Utc::now());
            self.write(&req.app_id, &j, old.version).await?;
            if state == JourneyState::Active {
                self.publish(&req.app_id, &j).await?;
            }
            Ok(Response::new(j))
        })
        .await
    }

    async fn delete_journey(&self, request: Request<DeleteJourneyRequest>) -> Result<Response<Journey>, Status> {
        observe("DeleteJourney", async {
            let req = request.into_inner();
            let (j, _) = self.find(&req.app_id, &req.journey_id).await?;
            self.store.delete_record(&req.app_id, KIND, &j.id).await.map_err(store_status)?;
            self.store.journey_drop(&req.app_id, &j.id).await.map_err(store_status)?;
            let _ = self.store.put_blob(&req.app_id, PROGRESS_KIND, &j.id, &[]).await;
            self.set_uses(&req.app_id, &j, false).await?;
            Ok(Response::new(j))
        })
        .await
    }

    async fn update_journey_state(&self, request: Request<UpdateJourneyStateRequest>) -> Result<Response<Journey>, Status> {
        observe("UpdateJourneyState", async {
            let req = request.into_inner();
            let (mut j, _) = self.find(&req.app_id, &req.journey_id).await?;
            let from = JourneyState::try_from(j.state).unwrap_or_default();
            let to = JourneyState::try_from(req.state).unwrap_or_default();
            if to == JourneyState::Unspecified {
                return Err(invalid(vec![FieldViolation::new("state", "give ACTIVE, PAUSED or CANCELLED")]));
            }
            journeys::transition(from, to).map_err(|e| Status::failed_precondition(e.to_string()))?;
            if to == JourneyState::Active && from == JourneyState::Draft {
                // Publishing checks the definition again: its segments and templates may have changed.
                self.check(&req.app_id, &j).await?;
            }
            let raw = self.store.get_record(&req.app_id, KIND, &j.id, None).await.map_err(store_status)?;
            let stored = raw.map(|r| Journey::decode(r.as_slice())).transpose().map_err(|e| store_status(StoreError::from(e)))?;
            let mut stored = stored.ok_or_else(|| Status::not_found(format!("journey {} not found", j.id)))?;
            stored.state = to as i32;
            stored.last_modified_date = domain::timestamp(chrono::Utc::now());
            self.write(&req.app_id, &stored, stored.version).await?;
            match to {
                JourneyState::Active => self.publish(&req.app_id, &stored).await?,
                JourneyState::Cancelled => {
                    self.set_uses(&req.app_id, &stored, false).await?;
                    self.wake.notify_one();
                }
                _ => self.wake.notify_one(),
            }
            j.state = to as i32;
            j.last_modified_date = stored.last_modified_date;
            Ok(Response::new(j))
        })
        .await
    }

    async fn get_journey_execution_metrics(
        &self,
        request: Request<GetJourneyExecutionMetricsRequest>,
    ) -> Result<Response<JourneyExecutionMetrics>, Status> {
        observe("GetJourneyExecutionMetrics", async {
            let req = request.into_inner();
            let (j, progress) = self.find(&req.app_id, &req.journey_id).await?;
            let (active, counters) = self.store.journey_counters(&req.app_id, &j.id).await.map_err(store_status)?;
            Ok(Response::new(JourneyExecutionMetrics {
                app_id: req.app_id,
                journey_id: j.id,
                last_evaluated_time: progress.map(|p| p.last_evaluated_time).unwrap_or_default(),
                metrics: metrics::journey(active, &counters),
            }))
        })
        .await
    }

    async fn get_journey_execution_activity_metrics(
        &self,
        request: Request<GetJourneyExecutionActivityMetricsRequest>,
    ) -> Result<Response<JourneyExecutionActivityMetrics>, Status> {
        observe("GetJourneyExecutionActivityMetrics", async {
            let req = request.into_inner();
            let (j, progress) = self.find(&req.app_id, &req.journey_id).await?;
            let graph = journeys::compile(&j).map_err(|_| Status::failed_precondition("the journey's activities do not compile"))?;
            let Some(i) = graph.index(&req.journey_activity_id) else {
                return Err(Status::not_found(format!("journey {} has no activity {}", j.id, req.journey_activity_id)));
            };
            let (_, counters) = self.store.journey_counters(&req.app_id, &j.id).await.map_err(store_status)?;
            Ok(Response::new(JourneyExecutionActivityMetrics {
                app_id: req.app_id,
                journey_id: j.id,
                journey_activity_id: req.journey_activity_id.clone(),
                activity_type: graph.steps[i].type_name().to_string(),
                last_evaluated_time: progress.map(|p| p.last_evaluated_time).unwrap_or_default(),
                metrics: metrics::activity(&req.journey_activity_id, &counters),
            }))
        })
        .await
    }
}
