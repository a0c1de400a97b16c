//! Keys: API keys kept in the store (CreateKey, ListKeys, RevokeKey). The guard lets only
//! admin keys in; a key limited to apps cannot reach these (they name no app).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{invalid, observe, store_status};
use crate::access::{check_key, Caller, Registry};
use crate::domain::FieldViolation;
use crate::proto::v1::{keys_server::Keys, ApiKey, CreateKeyRequest, CreatedKey, ListKeysRequest, ListKeysResponse, RevokeKeyRequest};

pub struct KeysService {
    registry: Arc<Registry>,
}

impl KeysService {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

fn caller_name<T>(request: &Request<T>) -> String {
    request.extensions().get::<Arc<Caller>>().map_or_else(|| "anonymous".to_string(), |c| c.name.clone())
}

#[tonic::async_trait]
impl Keys for KeysService {
    async fn create_key(&self, request: Request<CreateKeyRequest>) -> Result<Response<CreatedKey>, Status> {
        observe("CreateKey", async {
            if !self.registry.enforcing() {
                return Err(Status::failed_precondition(
                    "keys are not checked while the daemon has no configured key (it serves loopback unauthenticated): \
                     configure an admin key first (api_keys or [[keys]])",
                ));
            }
            let created_by = caller_name(&request);
            let req = request.into_inner();
            let mut bad: Vec<FieldViolation> =
                check_key(&req.name, &req.scopes, &req.app_ids).into_iter().map(|(f, d)| FieldViolation::new(f, d)).collect();
            for a in &req.app_ids {
                if super::check_app_id(a).is_err() {
                    bad.push(FieldViolation::new("app_ids", format!("'{a}' is not an app id")));
                }
            }
            if req.burst > 0 && req.rate_per_second == 0 {
                bad.push(FieldViolation::new("burst", "needs rate_per_second"));
            }
            if !bad.is_empty() {
                return Err(invalid(bad));
            }
            let (key, secret) = self
                .registry
                .create(&req.name, &req.scopes, &req.app_ids, req.rate_per_second, req.burst, &created_by)
                .await
                .map_err(store_status)?;
            tracing::info!(key_id = %key.key_id, name = %key.name, scopes = ?key.scopes, "API key created.");
            Ok(Response::new(CreatedKey { key: Some(key), secret }))
        })
        .await
    }

    async fn list_keys(&self, request: Request<ListKeysRequest>) -> Result<Response<ListKeysResponse>, Status> {
        observe("ListKeys", async {
            let keys = self.registry.list(request.into_inner().include_revoked).await.map_err(store_status)?;
            Ok(Response::new(ListKeysResponse { keys }))
        })
        .await
    }

    async fn revoke_key(&self, request: Request<RevokeKeyRequest>) -> Result<Response<ApiKey>, Status> {
        observe("RevokeKey", async {
            let key_id = request.into_inner().key_id;
            if self.registry.is_configured(&key_id) {
                return Err(Status::failed_precondition(format!(
                    "{key_id} is a configured key: remove it from the configuration and restart"
                )));
            }
            if key_id.is_empty() {
                return Err(invalid(vec![FieldViolation::new("key_id", "required")]));
            }
            let key = self.registry.revoke(&key_id).await.map_err(store_status)?;
            let key = key.ok_or_else(|| Status::not_found(format!("key {key_id} not found")))?;
            tracing::info!(key_id = %key.key_id, name = %key.name, "API key revoked.");
            Ok(Response::new(key))
        })
        .await
    }
}
