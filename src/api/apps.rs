//! The `Apps` service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{check_app_id, invalid, observe, store_status};
use crate::campaigns::hook;
use crate::domain::{self, app as rules, FieldViolation};
use crate::proto::v1::{
    apps_server, App, AppSettings, CreateAppRequest, DeleteAppRequest, GetAppRequest, ListAppsRequest, ListAppsResponse,
    UpdateAppSettingsRequest,
};
use crate::store::Store;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

pub struct AppsService {
    store: Arc<dyn Store>,
    /// Seals the campaign hook's secret.
    sealer: Arc<crate::secrets::Sealer>,
}

/// An app as callers see it: its campaign hook's secret write-only.
fn shown(mut a: App) -> App {
    if let Some(s) = a.settings.as_mut() {
        hook::shown(&mut s.campaign_hook);
    }
    a
}

impl AppsService {
    pub fn new(store: Arc<dyn Store>, sealer: Arc<crate::secrets::Sealer>) -> Self {
        Self { store, sealer }
    }

    async fn get(&self, app_id: &str) -> Result<App, Status> {
        check_app_id(app_id)?;
        self.store.get_app(app_id).await.map_err(store_status)?.ok_or_else(|| Status::not_found(format!("app {app_id} not found")))
    }
}

/// `page_size` 0 means the default; the token is the last id of the previous page.
pub fn page_size(requested: i32) -> Result<usize, Status> {
    match requested {
        0 => Ok(DEFAULT_PAGE),
        n if n < 0 => Err(invalid(vec![FieldViolation::new("page_size", "must not be negative")])),
        n => Ok((n as usize).min(MAX_PAGE)),
    }
}

#[tonic::async_trait]
impl apps_server::Apps for AppsService {
    async fn create_app(&self, request: Request<CreateAppRequest>) -> Result<Response<App>, Status> {
        observe("CreateApp", async {
            let req = request.into_inner();
            let mut violations: Vec<_> = rules::validate_name(&req.name).into_iter().collect();
            violations.extend(rules::validate_tags(req.tags.iter()));
            if !violations.is_empty() {
                return Err(invalid(violations));
            }
            let app = App {
                app_id: domain::new_id(),
                name: req.name,
                creation_date: domain::timestamp(chrono::Utc::now()),
                tags: req.tags,
                settings: Some(AppSettings::default()),
            };
            self.store.create_app(&app).await.map_err(store_status)?;
            tracing::info!(app_id = %app.app_id, "App created.");
            Ok(Response::new(app))
        })
        .await
    }

    async fn get_app(&self, request: Request<GetAppRequest>) -> Result<Response<App>, Status> {
        observe("GetApp", async { self.get(&request.into_inner().app_id).await.map(|a| Response::new(shown(a))) }).await
    }

    async fn list_apps(&self, request: Request<ListAppsRequest>) -> Result<Response<ListAppsResponse>, Status> {
        observe("ListApps", async {
            // A key limited to apps sees only those.
            let only = request.extensions().get::<Arc<crate::access::Caller>>().map(|c| c.apps.clone()).unwrap_or_default();
            let req = request.into_inner();
            let size = page_size(req.page_size)?;
            let after = Some(req.page_token.as_str()).filter(|t| !t.is_empty());
            // One extra tells whether another page follows.
            let mut apps = self.store.list_apps(after, size + 1).await.map_err(store_status)?;
            let next_page_token = if apps.len() > size {
                apps.truncate(size);
                apps.last().map(|a| a.app_id.clone()).unwrap_or_default()
            } else {
                String::new()
            };
            let apps = apps
                .into_iter()
                .filter(|a| !crate::store::is_account_space(&a.app_id) && (only.is_empty() || only.contains(&a.app_id)))
                .map(shown)
                .collect();
            Ok(Response::new(ListAppsResponse { apps, next_page_token }))
        })
        .await
    }

    async fn delete_app(&self, request: Request<DeleteAppRequest>) -> Result<Response<App>, Status> {
        observe("DeleteApp", async {
            let app_id = request.into_inner().app_id;
            check_app_id(&app_id)?;
            let app = self.store.delete_app(&app_id).await.map_err(store_status)?;
            let app = app.ok_or_else(|| Status::not_found(format!("app {app_id} not found")))?;
            tracing::info!(%app_id, "App deleted.");
            Ok(Response::new(shown(app)))
        })
        .await
    }

    async fn update_app_settings(&self, request: Request<UpdateAppSettingsRequest>) -> Result<Response<App>, Status> {
        observe("UpdateAppSettings", async {
            let req = request.into_inner();
            let mut update = req.settings.unwrap_or_default();
            let mut app = self.get(&req.app_id).await?;
            let stored_hook = app.settings.as_ref().and_then(|s| s.campaign_hook.clone()).filter(|h| hook::is_set(Some(h)));
            let mut violations: Vec<_> = rules::validate_settings(&update).into_iter().map(|v| v.under("settings")).collect();
            if let Some(h) = &update.campaign_hook {
                violations.extend(hook::validate(h, "settings.campaign_hook", stored_hook.is_some()));
            }
            if !violations.is_empty() {
                return Err(invalid(violations));
            }
            if let Some(h) = update.campaign_hook.as_mut() {
                hook::seal(&self.sealer, &hook::app_place(&req.app_id), h, stored_hook.as_ref());
            }
            let settings = app.settings.get_or_insert_with(Default::default);
            rules::apply_settings(settings, &update, &domain::timestamp(chrono::Utc::now()));
            self.store.put_app(&app).await.map_err(store_status)?;
            Ok(Response::new(shown(app)))
        })
        .await
    }
}
