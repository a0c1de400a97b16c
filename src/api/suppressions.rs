//! The `Suppressions` service: an app's list of addresses nothing is sent to.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::apps::page_size;
use super::{check_app_id, invalid, observe, store_status};
use crate::domain::{self, FieldViolation};
use crate::proto::v1::{
    suppressions_server, AddSuppressionsRequest, AddSuppressionsResponse, CheckSuppressionRequest, ListSuppressionsRequest,
    ListSuppressionsResponse, RemoveSuppressionRequest, RemoveSuppressionResponse, Suppression, SuppressionReason,
};
use crate::store::Store;

/// Most entries one AddSuppressions call takes.
pub const MAX_ADD: usize = 10_000;

/// Email addresses compare case-insensitively (as providers' suppression lists do); other
/// addresses (phone numbers, tokens) as written.
pub fn normalize(address: &str) -> String {
    let a = address.trim();
    if a.contains('@') {
        a.to_lowercase()
    } else {
        a.to_string()
    }
}

fn check_address(field: &str, address: &str) -> Option<FieldViolation> {
    let a = address.trim();
    if a.is_empty() || a.len() > 320 || a.chars().any(char::is_control) {
        Some(FieldViolation::new(field, "must be 1 to 320 characters without control characters"))
    } else {
        None
    }
}

pub struct SuppressionsService {
    store: Arc<dyn Store>,
}

impl SuppressionsService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl suppressions_server::Suppressions for SuppressionsService {
    async fn add_suppressions(&self, request: Request<AddSuppressionsRequest>) -> Result<Response<AddSuppressionsResponse>, Status> {
        observe("AddSuppressions", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            if req.suppressions.is_empty() || req.suppressions.len() > MAX_ADD {
                return Err(invalid(vec![FieldViolation::new("suppressions", format!("must hold 1 to {MAX_ADD} entries"))]));
            }
            let mut violations = Vec::new();
            for (i, s) in req.suppressions.iter().enumerate() {
                violations.extend(check_address(&format!("suppressions[{i}].address"), &s.address));
                if SuppressionReason::try_from(s.reason).is_err() {
                    violations.push(FieldViolation::new(format!("suppressions[{i}].reason"), "unknown reason"));
                }
                if s.note.chars().count() > 500 {
                    violations.push(FieldViolation::new(format!("suppressions[{i}].note"), "must be at most 500 characters"));
                }
            }
            if !violations.is_empty() {
                return Err(invalid(violations));
            }
            let now = domain::timestamp(chrono::Utc::now());
            let entries: Vec<Suppression> = req
                .suppressions
                .into_iter()
                .map(|s| Suppression {
                    address: normalize(&s.address),
                    reason: if s.reason == 0 { SuppressionReason::Manual as i32 } else { s.reason },
                    created_date: now.clone(),
                    note: s.note,
                })
                .collect();
            self.store.put_suppressions(&req.app_id, &entries).await.map_err(store_status)?;
            Ok(Response::new(AddSuppressionsResponse { added: entries.len() as i32 }))
        })
        .await
    }

    async fn remove_suppression(&self, request: Request<RemoveSuppressionRequest>) -> Result<Response<RemoveSuppressionResponse>, Status> {
        observe("RemoveSuppression", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            if let Some(v) = check_address("address", &req.address) {
                return Err(invalid(vec![v]));
            }
            let address = normalize(&req.address);
            if self.store.remove_suppression(&req.app_id, &address).await.map_err(store_status)? {
                Ok(Response::new(RemoveSuppressionResponse { removed: true }))
            } else {
                Err(Status::not_found(format!("{address} is not suppressed in app {}", req.app_id)))
            }
        })
        .await
    }

    async fn list_suppressions(&self, request: Request<ListSuppressionsRequest>) -> Result<Response<ListSuppressionsResponse>, Status> {
        observe("ListSuppressions", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            if self.store.get_app(&req.app_id).await.map_err(store_status)?.is_none() {
                return Err(Status::not_found(format!("app {} not found", req.app_id)));
            }
            let size = page_size(req.page_size)?;
            let cursor = Some(req.page_token).filter(|t| !t.is_empty());
            let (suppressions, next) = self.store.list_suppressions(&req.app_id, cursor, size).await.map_err(store_status)?;
            Ok(Response::new(ListSuppressionsResponse { suppressions, next_page_token: next.unwrap_or_default() }))
        })
        .await
    }

    async fn check_suppression(&self, request: Request<CheckSuppressionRequest>) -> Result<Response<Suppression>, Status> {
        observe("CheckSuppression", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            if let Some(v) = check_address("address", &req.address) {
                return Err(invalid(vec![v]));
            }
            let address = normalize(&req.address);
            let found = self.store.get_suppressions(&req.app_id, std::slice::from_ref(&address)).await.map_err(store_status)?;
            match found.into_iter().next().flatten() {
                Some(s) => Ok(Response::new(s)),
                None => Err(Status::not_found(format!("{address} is not suppressed in app {}", req.app_id))),
            }
        })
        .await
    }
}
