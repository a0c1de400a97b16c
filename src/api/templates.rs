//! The `Templates` service: versioned templates and previews.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::apps::page_size;
use super::{check_app_id, invalid, observe, store_status};
use crate::domain::{self, endpoint as endpoint_rules, FieldViolation};
use crate::proto::v1::{
    render_template_request::Recipient, template::Content, templates_server, CreateTemplateRequest, DeleteTemplateRequest,
    DeleteTemplateResponse, GetTemplateRequest, ListTemplateVersionsRequest, ListTemplateVersionsResponse, ListTemplatesRequest,
    ListTemplatesResponse, RenderError, RenderTemplateRequest, RenderTemplateResponse, RenderedPart, SmsEncoding, Template,
    UpdateTemplateActiveVersionRequest, UpdateTemplateRequest,
};
use crate::render::template::{self, PartFailure, TemplateCache};
use crate::render::{mime, sms};
use crate::store::{Store, TemplateWrite};

pub struct TemplatesService {
    store: Arc<dyn Store>,
    cache: Arc<TemplateCache>,
}

impl TemplatesService {
    pub fn new(store: Arc<dyn Store>, cache: Arc<TemplateCache>) -> Self {
        Self { store, cache }
    }

    async fn write(&self, app_id: &str, template: Option<Template>, mode: TemplateWrite) -> Result<Template, Status> {
        check_app_id(app_id)?;
        let mut t = template.unwrap_or_default();
        let violations: Vec<_> = template::validate(self.cache.renderer(), &t).into_iter().map(|v| v.under("template")).collect();
        if !violations.is_empty() {
            return Err(invalid(violations));
        }
        t.template_type = template::content_type(&t) as i32;
        t.last_modified_date = domain::timestamp(chrono::Utc::now());
        self.store.write_template(app_id, &t, mode).await.map_err(store_status)
    }

    async fn find(&self, app_id: &str, name: &str, version: i32) -> Result<Template, Status> {
        check_app_id(app_id)?;
        if version < 0 {
            return Err(invalid(vec![FieldViolation::new("version", "must be a version number, or 0 for the active version")]));
        }
        let wanted = (version > 0).then_some(version);
        self.store.get_template(app_id, name, wanted).await.map_err(store_status)?.ok_or_else(|| match wanted {
            Some(v) => Status::not_found(format!("version {v} of template {name} not found")),
            None => Status::not_found(format!("template {name} not found")),
        })
    }
}

fn failure(e: PartFailure) -> RenderError {
    RenderError {
        part: e.part,
        message: e.failure.message,
        line: e.failure.line.unwrap_or(0) as i32,
        column: e.failure.column.unwrap_or(0) as i32,
    }
}

#[tonic::async_trait]
impl templates_server::Templates for TemplatesService {
    async fn create_template(&self, request: Request<CreateTemplateRequest>) -> Result<Response<Template>, Status> {
        observe("CreateTemplate", async {
            let req = request.into_inner();
            self.write(&req.app_id, req.template, TemplateWrite::Create).await.map(Response::new)
        })
        .await
    }

    async fn update_template(&self, request: Request<UpdateTemplateRequest>) -> Result<Response<Template>, Status> {
        observe("UpdateTemplate", async {
            let req = request.into_inner();
            let mode = if req.overwrite_latest { TemplateWrite::OverwriteLatest } else { TemplateWrite::NewVersion };
            self.write(&req.app_id, req.template, mode).await.map(Response::new)
        })
        .await
    }

    async fn get_template(&self, request: Request<GetTemplateRequest>) -> Result<Response<Template>, Status> {
        observe("GetTemplate", async {
            let req = request.into_inner();
            self.find(&req.app_id, &req.name, req.version).await.map(Response::new)
        })
        .await
    }

    async fn list_templates(&self, request: Request<ListTemplatesRequest>) -> Result<Response<ListTemplatesResponse>, Status> {
        observe("ListTemplates", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            let size = page_size(req.page_size)?;
            let mut after = Some(req.page_token).filter(|t| !t.is_empty());
            let mut templates = Vec::new();
            // Filtering by type may take several store pages to fill one page.
            loop {
                let batch = self.store.list_templates(&req.app_id, after.as_deref(), size + 1).await.map_err(store_status)?;
                let exhausted = batch.len() <= size;
                after = batch.last().map(|t| t.name.clone());
                templates.extend(batch.into_iter().filter(|t| req.template_type == 0 || t.template_type == req.template_type));
                if templates.len() > size || exhausted {
                    break;
                }
            }
            let next_page_token = if templates.len() > size {
                templates.truncate(size);
                templates.last().map(|t| t.name.clone()).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(Response::new(ListTemplatesResponse { templates, next_page_token }))
        })
        .await
    }

    async fn list_template_versions(
        &self,
        request: Request<ListTemplateVersionsRequest>,
    ) -> Result<Response<ListTemplateVersionsResponse>, Status> {
        observe("ListTemplateVersions", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            let size = page_size(req.page_size)?;
            let after: i32 = if req.page_token.is_empty() {
                0
            } else {
                req.page_token
                    .parse()
                    .map_err(|_| invalid(vec![FieldViolation::new("page_token", "is not a token this service issued")]))?
            };
            let mut versions = self.store.list_template_versions(&req.app_id, &req.name, after, size + 1).await.map_err(store_status)?;
            let next_page_token = if versions.len() > size {
                versions.truncate(size);
                versions.last().map(|t| t.version.to_string()).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(Response::new(ListTemplateVersionsResponse { versions, next_page_token }))
        })
        .await
    }

    async fn update_template_active_version(
        &self,
        request: Request<UpdateTemplateActiveVersionRequest>,
    ) -> Result<Response<Template>, Status> {
        observe("UpdateTemplateActiveVersion", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            let version = match req.version.trim() {
                "latest" => None,
                v => Some(
                    v.parse::<i32>()
                        .ok()
                        .filter(|v| *v > 0)
                        .ok_or_else(|| invalid(vec![FieldViolation::new("version", "must be a version number or 'latest'")]))?,
                ),
            };
            self.store.set_active_template_version(&req.app_id, &req.name, version).await.map(Response::new).map_err(store_status)
        })
        .await
    }

    async fn delete_template(&self, request: Request<DeleteTemplateRequest>) -> Result<Response<DeleteTemplateResponse>, Status> {
        observe("DeleteTemplate", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            let version = (req.version > 0).then_some(req.version);
            let deleted_versions = self.store.delete_template(&req.app_id, &req.name, version).await.map_err(store_status)?;
            Ok(Response::new(DeleteTemplateResponse { deleted_versions }))
        })
        .await
    }

    async fn render_template(&self, request: Request<RenderTemplateRequest>) -> Result<Response<RenderTemplateResponse>, Status> {
        observe("RenderTemplate", async {
            let req = request.into_inner();
            let endpoint = match req.recipient {
                Some(Recipient::EndpointId(id)) => {
                    check_app_id(&req.app_id)?;
                    let found = self.store.get_endpoint(&req.app_id, &id).await.map_err(store_status)?;
                    Some(found.ok_or_else(|| Status::not_found(format!("endpoint {id} not found in app {}", req.app_id)))?)
                }
                Some(Recipient::Endpoint(mut e)) => {
                    if e.id.is_empty() {
                        e.id = "preview".into();
                    }
                    let violations: Vec<_> = endpoint_rules::validate_write(&e).into_iter().map(|v| v.under("endpoint")).collect();
                    if !violations.is_empty() {
                        return Err(invalid(violations));
                    }
                    Some(e)
                }
                None => None,
            };
            let t = self.find(&req.app_id, &req.name, req.version).await?;
            let compiled = match self.cache.get(&t) {
                Ok(c) => c,
                Err(e) => {
                    return Ok(Response::new(RenderTemplateResponse { version: t.version, error: Some(failure(e)), ..Default::default() }))
                }
            };
            let substitutions: HashMap<String, Vec<String>> = req.substitutions.into_iter().map(|(k, v)| (k, v.values)).collect();
            let ctx = compiled.context(endpoint.as_ref(), &substitutions);
            let rendered = match compiled.render(self.cache.renderer(), &ctx) {
                Ok(parts) => parts,
                Err(e) => {
                    return Ok(Response::new(RenderTemplateResponse { version: t.version, error: Some(failure(e)), ..Default::default() }))
                }
            };
            let part = |name: &str| rendered.iter().find(|(n, _)| n == name).map(|(_, s)| s.as_str());
            let mut response = RenderTemplateResponse { version: t.version, ..Default::default() };
            match &t.content {
                Some(Content::Email(_)) => {
                    let to = endpoint.as_ref().map(|e| e.address.as_str()).filter(|a| !a.is_empty()).unwrap_or("recipient@example.com");
                    let envelope = mime::Envelope {
                        from: "sender@example.com",
                        to,
                        reply_to: None,
                        list_unsubscribe_url: part("list_unsubscribe_url"),
                    };
                    match mime::build(&envelope, part("subject").unwrap_or(""), part("text_part"), part("html_part")) {
                        Ok(raw) => response.mime = String::from_utf8_lossy(&raw).into_owned(),
                        Err(e) => response.error = Some(RenderError { part: "mime".into(), message: e.to_string(), line: 0, column: 0 }),
                    }
                }
                Some(Content::Sms(_)) => {
                    let shape = sms::shape(part("body").unwrap_or(""));
                    response.sms = Some(SmsEncoding {
                        encoding: shape.encoding.as_str().into(),
                        characters: shape.units as i32,
                        parts: shape.parts as i32,
                    });
                }
                _ => {}
            }
            response.parts = rendered.into_iter().map(|(name, content)| RenderedPart { name, content }).collect();
            Ok(Response::new(response))
        })
        .await
    }
}
