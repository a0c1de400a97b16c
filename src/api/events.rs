//! The `Events` service: PutEvents, StreamEvents and event destinations.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message as _;
use tonic::{Request, Response, Status};

use super::apps::page_size;
use super::{check_app_id, invalid, observe, store_status};
use crate::domain::{self, FieldViolation};
use crate::events::{destinations, event_number, put, stream, Filter};
use crate::proto::v1::{
    events_server, CreateEventDestinationRequest, CreateEventDestinationResponse, DeleteEventDestinationRequest, DestinationState,
    EventDestination, GetEventDestinationRequest, ListEventDestinationsRequest, ListEventDestinationsResponse, PutEventsRequest,
    PutEventsResponse, StreamEventsRequest, StreamEventsResponse, UpdateEventDestinationRequest,
};
use crate::secrets::Sealer;
use crate::store::{Store, StoreError};

pub struct EventsService {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
}

impl EventsService {
    pub fn new(store: Arc<dyn Store>, sealer: Arc<Sealer>) -> Self {
        Self { store, sealer }
    }

    async fn app_exists(&self, app_id: &str) -> Result<(), Status> {
        check_app_id(app_id)?;
        match self.store.get_app(app_id).await.map_err(store_status)? {
            Some(_) => Ok(()),
            None => Err(Status::not_found(format!("app {app_id} not found"))),
        }
    }

    async fn destination(&self, app_id: &str, id: &str) -> Result<EventDestination, Status> {
        self.app_exists(app_id).await?;
        destinations::load(self.store.as_ref(), app_id, id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("event destination {id} not found")))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl events_server::Events for EventsService {
    async fn put_events(&self, request: Request<PutEventsRequest>) -> Result<Response<PutEventsResponse>, Status> {
        observe("PutEvents", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            put::check_request(&req.batch_item).map_err(invalid)?;
            self.app_exists(&req.app_id).await?;
            match put::put_events(self.store.as_ref(), &req.app_id, req.batch_item, chrono::Utc::now()).await {
                Ok(r) => Ok(Response::new(r)),
                Err(put::PutError::Invalid(v)) => Err(invalid(v)),
                Err(put::PutError::Store(e)) => Err(store_status(e)),
            }
        })
        .await
    }

    type StreamEventsStream = EventStream;

    async fn stream_events(&self, request: Request<StreamEventsRequest>) -> Result<Response<Self::StreamEventsStream>, Status> {
        observe("StreamEvents", async {
            let req = request.into_inner();
            let mut v = Vec::new();
            let starts = [!req.after_event_id.is_empty(), !req.from_time.is_empty(), req.latest].iter().filter(|b| **b).count();
            if starts > 1 {
                v.push(FieldViolation::new("after_event_id", "give at most one of after_event_id, from_time and latest"));
            }
            let from = if !req.after_event_id.is_empty() {
                match event_number(&req.after_event_id) {
                    Some(n) => stream::From::After(n),
                    None => {
                        v.push(FieldViolation::new("after_event_id", "is not an event id (20 digits)"));
                        stream::From::Oldest
                    }
                }
            } else if !req.from_time.is_empty() {
                match crate::segments::rule::parse_instant(&req.from_time) {
                    Some(t) => stream::From::Time(t),
                    None => {
                        v.push(FieldViolation::new("from_time", "must be an ISO-8601 instant"));
                        stream::From::Oldest
                    }
                }
            } else if req.latest {
                stream::From::Latest
            } else {
                stream::From::Oldest
            };
            if !v.is_empty() {
                return Err(invalid(v));
            }
            self.app_exists(&req.app_id).await?;
            let position = stream::start(self.store.as_ref(), &req.app_id, &from).await.map_err(store_status)?;
            let filter = Filter { event_types: req.event_types, campaign_id: req.campaign_id, journey_id: req.journey_id };
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(stream::pump(self.store.clone(), req.app_id, position, filter, req.stop_at_end, req.include_endpoint, tx));
            let out = futures::stream::unfold(rx, |mut rx| async move {
                let item = rx.recv().await?;
                Some((item.map_err(store_status), rx))
            });
            Ok(Response::new(Box::pin(out) as EventStream))
        })
        .await
    }

    async fn create_event_destination(
        &self,
        request: Request<CreateEventDestinationRequest>,
    ) -> Result<Response<CreateEventDestinationResponse>, Status> {
        observe("CreateEventDestination", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            let mut d = req.destination.ok_or_else(|| invalid(vec![FieldViolation::new("destination", "is required")]))?;
            let v = destinations::validate(&d, "destination");
            if !v.is_empty() {
                return Err(invalid(v));
            }
            self.app_exists(&req.app_id).await?;
            let existing = self.store.list_records(&req.app_id, destinations::KIND, None, destinations::MAX_PER_APP + 1).await;
            if existing.map_err(store_status)?.len() >= destinations::MAX_PER_APP {
                return Err(Status::failed_precondition(format!("an app has at most {} event destinations", destinations::MAX_PER_APP)));
            }
            let made = d.secret.is_empty().then(destinations::new_secret);
            if let Some(s) = &made {
                d.secret = s.clone();
            }
            let now = domain::timestamp(chrono::Utc::now());
            d.id = domain::new_id();
            d.app_id = req.app_id.clone();
            d.creation_date = now.clone();
            d.last_modified_date = now;
            if d.state == DestinationState::Unspecified as i32 {
                d.state = DestinationState::Enabled as i32;
            }
            clear_server_fields(&mut d);
            let stored = destinations::seal(&self.sealer, &req.app_id, d.clone());
            // Deliveries start with the events recorded from now on.
            let last = self.store.last_event(&req.app_id).await.map_err(store_status)?;
            let progress = crate::proto::v1::DestinationProgress { position: last, ..Default::default() };
            self.store.put_blob(&req.app_id, destinations::PROGRESS_KIND, &d.id, &progress.encode_to_vec()).await.map_err(store_status)?;
            self.store.write_record(&req.app_id, destinations::KIND, &d.id, 0, 1, &stored.encode_to_vec()).await.map_err(store_status)?;
            let shown = destinations::view(self.store.as_ref(), &req.app_id, stored).await.map_err(store_status)?;
            Ok(Response::new(CreateEventDestinationResponse { destination: Some(shown), secret: made.unwrap_or_default() }))
        })
        .await
    }

    async fn get_event_destination(&self, request: Request<GetEventDestinationRequest>) -> Result<Response<EventDestination>, Status> {
        observe("GetEventDestination", async {
            let req = request.into_inner();
            let d = self.destination(&req.app_id, &req.destination_id).await?;
            Ok(Response::new(destinations::view(self.store.as_ref(), &req.app_id, d).await.map_err(store_status)?))
        })
        .await
    }

    async fn list_event_destinations(
        &self,
        request: Request<ListEventDestinationsRequest>,
    ) -> Result<Response<ListEventDestinationsResponse>, Status> {
        observe("ListEventDestinations", async {
            let req = request.into_inner();
            let size = page_size(req.page_size)?;
            self.app_exists(&req.app_id).await?;
            let after = Some(req.page_token.as_str()).filter(|t| !t.is_empty());
            let raw = self.store.list_records(&req.app_id, destinations::KIND, after, size + 1).await.map_err(store_status)?;
            let mut out = Vec::with_capacity(raw.len());
            for b in raw.iter().take(size) {
                let d = EventDestination::decode(b.as_slice()).map_err(|e| store_status(StoreError::from(e)))?;
                out.push(destinations::view(self.store.as_ref(), &req.app_id, d).await.map_err(store_status)?);
            }
            let next_page_token = if raw.len() > size { out.last().map(|d| d.id.clone()).unwrap_or_default() } else { String::new() };
            Ok(Response::new(ListEventDestinationsResponse { destinations: out, next_page_token }))
        })
        .await
    }

    async fn update_event_destination(
        &self,
        request: Request<UpdateEventDestinationRequest>,
    ) -> Result<Response<EventDestination>, Status> {
        observe("UpdateEventDestination", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            let w = req.destination.ok_or_else(|| invalid(vec![FieldViolation::new("destination", "is required")]))?;
            let mut d = self.destination(&req.app_id, &req.destination_id).await?;
            let mut merged = d.clone();
            if !w.url.is_empty() {
                merged.url = w.url.clone();
            }
            if req.replace_event_types || !w.event_types.is_empty() {
                merged.event_types = w.event_types.clone();
            }
            if w.batch_size != 0 {
                merged.batch_size = w.batch_size;
            }
            if w.failure_limit != 0 {
                merged.failure_limit = w.failure_limit;
            }
            if w.state != DestinationState::Unspecified as i32 {
                merged.state = w.state;
            }
            if let Some(include) = req.include_endpoint {
                merged.include_endpoint = include;
            }
            // Checked as written: the new secret in the clear, the stored one as it is.
            let mut check = merged.clone();
            check.secret = w.secret.clone();
            let v = destinations::validate(&check, "destination");
            if !v.is_empty() {
                return Err(invalid(v));
            }
            if !w.secret.is_empty() {
                merged.secret = destinations::seal(&self.sealer, &req.app_id, EventDestination { secret: w.secret, ..d.clone() }).secret;
            }
            merged.last_modified_date = domain::timestamp(chrono::Utc::now());
            clear_server_fields(&mut merged);
            self.store.write_record(&req.app_id, destinations::KIND, &d.id, 1, 1, &merged.encode_to_vec()).await.map_err(store_status)?;
            d = merged;
            Ok(Response::new(destinations::view(self.store.as_ref(), &req.app_id, d).await.map_err(store_status)?))
        })
        .await
    }

    async fn delete_event_destination(
        &self,
        request: Request<DeleteEventDestinationRequest>,
    ) -> Result<Response<EventDestination>, Status> {
        observe("DeleteEventDestination", async {
            let req = request.into_inner();
            let d = self.destination(&req.app_id, &req.destination_id).await?;
            let shown = destinations::view(self.store.as_ref(), &req.app_id, d.clone()).await.map_err(store_status)?;
            self.store.delete_record(&req.app_id, destinations::KIND, &d.id).await.map_err(store_status)?;
            self.store.put_blob(&req.app_id, destinations::PROGRESS_KIND, &d.id, &[]).await.map_err(store_status)?;
            Ok(Response::new(shown))
        })
        .await
    }
}

/// Fields only the server sets are not stored from a write.
fn clear_server_fields(d: &mut EventDestination) {
    d.last_success.clear();
    d.last_error.clear();
    d.consecutive_failures = 0;
    d.backlog = 0;
    d.delivered = 0;
    d.dropped = 0;
    d.position.clear();
}
