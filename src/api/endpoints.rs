//! The `Endpoints` service: Pinpoint's endpoint writes and reads, and the bulk import stream.

use std::sync::Arc;

use std::collections::VecDeque;

use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

use super::{check_app_id, invalid, observe, store_status, timed};
use crate::domain::{self, endpoint as rules, FieldViolation};
use crate::proto::v1::{
    endpoints_server, AttributesResource, DeleteEndpointRequest, DeleteUserEndpointsRequest, Endpoint, GetEndpointRequest,
    GetUserEndpointsRequest, ImportEndpointsRequest, ImportEndpointsResponse, ImportRejection, RemoveAttributesRequest,
    UpdateEndpointRequest, UpdateEndpointsBatchRequest, UpdateEndpointsBatchResponse, UserEndpoints,
};
use crate::store::{EndpointOp, Plan, Store, StoreError};
use crate::telemetry;

/// Most endpoints in one UpdateEndpointsBatch call.
pub const MAX_BATCH: usize = 10_000;
/// Import writes go to the store in chunks of this many endpoints...
const IMPORT_CHUNK: usize = 1_000;
/// ...with this many chunks in flight.
const IMPORT_IN_FLIGHT: usize = 4;
/// Most rejections listed in an import's response (all are counted).
const MAX_LISTED_REJECTIONS: usize = 10_000;

pub struct EndpointsService {
    store: Arc<dyn Store>,
}

impl EndpointsService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

/// The write operation for endpoints as a caller gave them: without the values of attributes
/// the app no longer captures (RemoveAttributes) and without activity, which is the server's
/// to set from PutEvents.
async fn upsert(store: &dyn Store, app_id: &str, mut writes: Vec<Endpoint>, all_or_nothing: bool) -> Result<EndpointOp, StoreError> {
    for w in &mut writes {
        w.last_activity_date.clear();
    }
    crate::attributes::strip_writes(store, app_id, &mut writes).await?;
    Ok(EndpointOp::Upsert { writes, all_or_nothing, now: domain::timestamp(chrono::Utc::now()), request_id: domain::new_id() })
}

fn check_endpoint_id(field: &str, id: &str) -> Result<(), Status> {
    rules::validate_id(id).map_err(|why| invalid(vec![FieldViolation::new(field, why)]))
}

fn count_written(plan: &Plan) {
    metrics::counter!(telemetry::ENDPOINTS_WRITTEN).increment(plan.written.len() as u64);
    if !plan.rejections.is_empty() {
        let rejected: std::collections::HashSet<_> = plan.rejections.iter().map(|r| r.index).collect();
        metrics::counter!(telemetry::ENDPOINTS_REJECTED).increment(rejected.len() as u64);
    }
}

/// Writes all-or-nothing; rejections become one INVALID_ARGUMENT naming each bad field under
/// the path `path(index)`.
async fn write_all(store: &dyn Store, app_id: &str, writes: Vec<Endpoint>, path: impl Fn(usize) -> String) -> Result<Plan, Status> {
    let op = upsert(store, app_id, writes, true).await.map_err(store_status)?;
    let plan = timed(store.backend(), "write_endpoints", store.write_endpoints(app_id, op)).await.map_err(store_status)?;
    count_written(&plan);
    if !plan.rejections.is_empty() {
        return Err(invalid(plan.rejections.into_iter().map(|r| r.violation.under(&path(r.index))).collect()));
    }
    Ok(plan)
}

#[tonic::async_trait]
impl endpoints_server::Endpoints for EndpointsService {
    async fn update_endpoint(&self, request: Request<UpdateEndpointRequest>) -> Result<Response<Endpoint>, Status> {
        observe("UpdateEndpoint", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            let mut endpoint = req.endpoint.unwrap_or_default();
            let mut violations = Vec::new();
            if !endpoint.id.is_empty() && endpoint.id != req.endpoint_id {
                violations.push(FieldViolation::new("endpoint.id", "must be empty or equal endpoint_id"));
            }
            endpoint.id = req.endpoint_id;
            violations.extend(rules::validate_write(&endpoint).into_iter().map(|v| {
                if v.field == "id" {
                    FieldViolation::new("endpoint_id", v.description)
                } else {
                    v.under("endpoint")
                }
            }));
            if !violations.is_empty() {
                return Err(invalid(violations));
            }
            let plan = write_all(self.store.as_ref(), &req.app_id, vec![endpoint], |_| "endpoint".into()).await?;
            let written = plan.written_endpoints().next().cloned().unwrap_or_default();
            Ok(Response::new(written))
        })
        .await
    }

    async fn update_endpoints_batch(
        &self,
        request: Request<UpdateEndpointsBatchRequest>,
    ) -> Result<Response<UpdateEndpointsBatchResponse>, Status> {
        observe("UpdateEndpointsBatch", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            if req.endpoints.is_empty() || req.endpoints.len() > MAX_BATCH {
                return Err(invalid(vec![FieldViolation::new(
                    "endpoints",
                    format!("must hold 1 to {MAX_BATCH} endpoints ({} given)", req.endpoints.len()),
                )]));
            }
            let violations: Vec<_> = req
                .endpoints
                .iter()
                .enumerate()
                .flat_map(|(i, e)| rules::validate_write(e).into_iter().map(move |v| v.under(&format!("endpoints[{i}]"))))
                .collect();
            if !violations.is_empty() {
                return Err(invalid(violations));
            }
            let op_request_id = domain::new_id();
            let plan = write_all(self.store.as_ref(), &req.app_id, req.endpoints, |i| format!("endpoints[{i}]")).await?;
            Ok(Response::new(UpdateEndpointsBatchResponse {
                request_id: op_request_id,
                endpoints: plan.written_endpoints().cloned().collect(),
            }))
        })
        .await
    }

    async fn get_endpoint(&self, request: Request<GetEndpointRequest>) -> Result<Response<Endpoint>, Status> {
        observe("GetEndpoint", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            check_endpoint_id("endpoint_id", &req.endpoint_id)?;
            match timed(self.store.backend(), "get_endpoint", self.store.get_endpoint(&req.app_id, &req.endpoint_id))
                .await
                .map_err(store_status)?
            {
                Some(e) => Ok(Response::new(e)),
                None => Err(Status::not_found(format!("endpoint {} not found in app {}", req.endpoint_id, req.app_id))),
            }
        })
        .await
    }

    async fn delete_endpoint(&self, request: Request<DeleteEndpointRequest>) -> Result<Response<Endpoint>, Status> {
        observe("DeleteEndpoint", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            check_endpoint_id("endpoint_id", &req.endpoint_id)?;
            let op = EndpointOp::Delete { ids: vec![req.endpoint_id.clone()] };
            let mut plan = self.store.write_endpoints(&req.app_id, op).await.map_err(store_status)?;
            plan.deleted
                .pop()
                .map(Response::new)
                .ok_or_else(|| Status::not_found(format!("endpoint {} not found in app {}", req.endpoint_id, req.app_id)))
        })
        .await
    }

    async fn get_user_endpoints(&self, request: Request<GetUserEndpointsRequest>) -> Result<Response<UserEndpoints>, Status> {
        observe("GetUserEndpoints", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            check_endpoint_id("user_id", &req.user_id)?;
            let endpoints = self.store.user_endpoints(&req.app_id, &req.user_id).await.map_err(store_status)?;
            if endpoints.is_empty() {
                return Err(Status::not_found(format!("user {} has no endpoints in app {}", req.user_id, req.app_id)));
            }
            Ok(Response::new(UserEndpoints { endpoints }))
        })
        .await
    }

    async fn delete_user_endpoints(&self, request: Request<DeleteUserEndpointsRequest>) -> Result<Response<UserEndpoints>, Status> {
        observe("DeleteUserEndpoints", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            check_endpoint_id("user_id", &req.user_id)?;
            let op = EndpointOp::DeleteUser { user_id: req.user_id.clone() };
            let plan = self.store.write_endpoints(&req.app_id, op).await.map_err(store_status)?;
            if plan.deleted.is_empty() {
                return Err(Status::not_found(format!("user {} has no endpoints in app {}", req.user_id, req.app_id)));
            }
            Ok(Response::new(UserEndpoints { endpoints: plan.deleted }))
        })
        .await
    }

    async fn import_endpoints(
        &self,
        request: Request<Streaming<ImportEndpointsRequest>>,
    ) -> Result<Response<ImportEndpointsResponse>, Status> {
        observe("ImportEndpoints", async {
            let mut stream = request.into_inner();
            let mut import = Import::default();
            let mut app_id: Option<String> = None;
            let mut chunk: Vec<(u64, Endpoint)> = Vec::with_capacity(IMPORT_CHUNK);
            // Chunk writes run as their own tasks, so they progress while the stream is read.
            let mut in_flight: VecDeque<JoinHandle<Result<ChunkResult, Status>>> = VecDeque::new();
            while let Some(msg) = stream.message().await? {
                let app = match (&app_id, msg.app_id.as_str()) {
                    (None, "") => return Err(invalid(vec![FieldViolation::new("app_id", "the first message must name the app")])),
                    (None, id) => {
                        check_app_id(id)?;
                        if self.store.get_app(id).await.map_err(store_status)?.is_none() {
                            return Err(Status::not_found(format!("app {id} not found")));
                        }
                        app_id.insert(id.to_string()).clone()
                    }
                    (Some(a), id) if id.is_empty() || id == a => a.clone(),
                    (Some(_), _) => return Err(invalid(vec![FieldViolation::new("app_id", "must be the same in every message")])),
                };
                for endpoint in msg.endpoints {
                    let index = import.received;
                    import.received += 1;
                    let violations = rules::validate_write(&endpoint);
                    if violations.is_empty() {
                        chunk.push((index, endpoint));
                    } else {
                        import.reject(index, &endpoint.id, violations);
                    }
                    if chunk.len() >= IMPORT_CHUNK {
                        in_flight.push_back(tokio::spawn(write_chunk(self.store.clone(), app.clone(), std::mem::take(&mut chunk))));
                        if in_flight.len() >= IMPORT_IN_FLIGHT {
                            if let Some(done) = in_flight.pop_front() {
                                import.absorb(joined(done.await)?);
                            }
                        }
                    }
                }
            }
            if let Some(app) = &app_id {
                if !chunk.is_empty() {
                    in_flight.push_back(tokio::spawn(write_chunk(self.store.clone(), app.clone(), std::mem::take(&mut chunk))));
                }
            }
            while let Some(done) = in_flight.pop_front() {
                import.absorb(joined(done.await)?);
            }
            tracing::info!(
                app_id = app_id.as_deref().unwrap_or(""),
                received = import.received,
                written = import.written,
                rejected = import.rejected_count,
                "Import finished."
            );
            Ok(Response::new(ImportEndpointsResponse {
                received: import.received,
                written: import.written,
                rejected_count: import.rejected_count,
                rejected: import.rejected,
            }))
        })
        .await
    }

    async fn remove_attributes(&self, request: Request<RemoveAttributesRequest>) -> Result<Response<AttributesResource>, Status> {
        observe("RemoveAttributes", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            let mut v = Vec::new();
            let kind = crate::attributes::AttributeType::parse(&req.attribute_type);
            if kind.is_none() {
                v.push(FieldViolation::new(
                    "attribute_type",
                    "must be endpoint-custom-attributes, endpoint-metric-attributes or endpoint-user-attributes",
                ));
            }
            if req.blacklist.is_empty() {
                v.push(FieldViolation::new("blacklist", "give the attribute names (or glob patterns) to remove"));
            }
            for (i, name) in req.blacklist.iter().enumerate() {
                let n = name.chars().count();
                if n == 0 || n > rules::MAX_ATTRIBUTE_NAME || name.chars().any(char::is_control) {
                    v.push(FieldViolation::new(
                        format!("blacklist[{i}]"),
                        format!("attribute names are 1 to {} characters", rules::MAX_ATTRIBUTE_NAME),
                    ));
                }
            }
            let Some(kind) = kind.filter(|_| v.is_empty()) else { return Err(invalid(v)) };
            if self.store.get_app(&req.app_id).await.map_err(store_status)?.is_none() {
                return Err(Status::not_found(format!("app {} not found", req.app_id)));
            }
            crate::attributes::remove(self.store.as_ref(), &req.app_id, kind, &req.blacklist).await.map_err(store_status)?;
            Ok(Response::new(AttributesResource { app_id: req.app_id, attribute_type: req.attribute_type, attributes: req.blacklist }))
        })
        .await
    }
}

fn joined(r: Result<Result<ChunkResult, Status>, tokio::task::JoinError>) -> Result<ChunkResult, Status> {
    r.map_err(|e| {
        tracing::error!(error = %e, "Import chunk task failed.");
        Status::internal("an import chunk failed")
    })?
}

/// A chunk's result: the stream positions of its writes and what the store did.
struct ChunkResult {
    indexes: Vec<u64>,
    ids: Vec<String>,
    plan: Plan,
}

async fn write_chunk(store: Arc<dyn Store>, app_id: String, chunk: Vec<(u64, Endpoint)>) -> Result<ChunkResult, Status> {
    let (indexes, writes): (Vec<u64>, Vec<Endpoint>) = chunk.into_iter().unzip();
    let ids: Vec<String> = writes.iter().map(|e| e.id.clone()).collect();
    let gone = |e| match e {
        StoreError::AppNotFound(_) => Status::not_found(format!("app {app_id} was deleted during the import")),
        other => store_status(other),
    };
    let op = upsert(store.as_ref(), &app_id, writes, false).await.map_err(gone)?;
    let plan = timed(store.backend(), "write_endpoints", store.write_endpoints(&app_id, op)).await.map_err(gone)?;
    count_written(&plan);
    Ok(ChunkResult { indexes, ids, plan })
}

#[derive(Default)]
struct Import {
    received: u64,
    written: u64,
    rejected_count: u64,
    rejected: Vec<ImportRejection>,
}

impl Import {
    fn reject(&mut self, index: u64, endpoint_id: &str, violations: Vec<FieldViolation>) {
        self.rejected_count += 1;
        for v in violations {
            if self.rejected.len() < MAX_LISTED_REJECTIONS {
                self.rejected.push(ImportRejection { index, endpoint_id: endpoint_id.to_string(), field: v.field, reason: v.description });
            }
        }
    }

    fn absorb(&mut self, chunk: ChunkResult) {
        self.written += chunk.plan.written.len() as u64;
        let mut last = None;
        for r in chunk.plan.rejections {
            let index = chunk.indexes[r.index];
            if last != Some(index) {
                self.rejected_count += 1;
                last = Some(index);
            }
            if self.rejected.len() < MAX_LISTED_REJECTIONS {
                self.rejected.push(ImportRejection {
                    index,
                    endpoint_id: chunk.ids[r.index].clone(),
                    field: r.violation.field,
                    reason: r.violation.description,
                });
            }
        }
    }
}
