//! The Pinpoint REST door: Pinpoint's API (version 2016-12-01) over HTTP, as the AWS SDKs and
//! the AWS CLI speak it, verified with SigV4 and answered by the same services as the gRPC
//! door (one implementation, two doors; nothing goes through the gRPC socket).
//!
//! A request is routed by the vendored service model (`model`), its parameters read where the
//! model puts them and checked against its shapes, its members mapped by name onto Herald's
//! messages (`transcode`, with the exceptions in `aliases`), and handed to the service
//! (`ops`). Errors answer as Pinpoint's do: `x-amzn-ErrorType` and `{"Message", "RequestID"}`.

pub mod aliases;
mod jobs;
pub mod model;
mod ops;
pub mod s3;
pub mod sigv4;
mod templates;
pub mod transcode;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use tonic::Code;
use tonic_types::StatusExt;

use self::model::{Location, Model, Routed, Violation};
use self::transcode::Trail;
use crate::telemetry;

/// The largest request body read (Pinpoint's PutEvents takes 4 MB of events; templates are up
/// to 600,000 characters).
pub const MAX_BODY: usize = 7 * 1024 * 1024;

/// The services both doors answer with.
pub struct Services {
    pub apps: Arc<crate::api::apps::AppsService>,
    pub endpoints: Arc<crate::api::endpoints::EndpointsService>,
    pub segments: Arc<crate::api::segments::SegmentsService>,
    pub templates: Arc<crate::api::templates::TemplatesService>,
    pub campaigns: Arc<crate::api::campaigns::CampaignsService>,
    pub journeys: Arc<crate::api::journeys::JourneysService>,
    pub messages: Arc<crate::api::messages::MessagesService>,
    pub events: Arc<crate::api::events::EventsService>,
    pub kpis: Arc<crate::api::kpis::KpisService>,
    pub tags: Arc<crate::api::tags::TagsService>,
    pub channels: Arc<crate::api::channels::ChannelsService>,
}

pub struct Rest {
    pub services: Services,
    pub(crate) store: Arc<dyn crate::store::Store>,
    credentials: sigv4::Credentials,
    pool: prost_reflect::DescriptorPool,
    /// Where import jobs read (`s3_endpoint`), if configured.
    pub(crate) s3: Option<s3::S3>,
    /// The one RoleArn import jobs may name, if configured.
    pub(crate) s3_role_arn: Option<String>,
    /// Where changes and refusals are audited (the gRPC door's audit log).
    audit: Option<Arc<crate::access::audit::Audit>>,
}

/// What a request named, for its audit line.
#[derive(Default)]
struct Seen {
    access_key: Option<String>,
    app_id: Option<String>,
    resource: serde_json::Map<String, Value>,
}

/// A Pinpoint error answer.
#[derive(Debug)]
pub struct RestError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl RestError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequestException", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "NotFoundException", message)
    }

    /// Members that do not fit, named as Pinpoint names them.
    pub fn invalid(violations: &[Violation]) -> Self {
        let text: Vec<String> =
            violations.iter().map(|v| if v.member.is_empty() { v.why.clone() } else { format!("{} {}", v.member, v.why) }).collect();
        Self::bad_request(text.join("; "))
    }

    /// A service's status, with the fields its violations name told in Pinpoint's names.
    pub fn from_status(status: tonic::Status, trail: &Trail) -> Self {
        let details = status.get_error_details();
        let mut message = status.message().to_string();
        if let Some(bad) = details.bad_request() {
            let text: Vec<String> = bad
                .field_violations
                .iter()
                .map(|v| {
                    let name = trail.pinpoint_name(&v.field);
                    if name.is_empty() {
                        v.description.clone()
                    } else {
                        format!("{name} {}", v.description)
                    }
                })
                .collect();
            if !text.is_empty() {
                message = text.join("; ");
            }
        }
        let retry_after = details.retry_info().and_then(|r| r.retry_delay);
        let (status_code, code) = match status.code() {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => (400, "BadRequestException"),
            Code::NotFound => (404, "NotFoundException"),
            Code::AlreadyExists | Code::Aborted => (409, "ConflictException"),
            Code::PermissionDenied | Code::Unauthenticated => (403, "ForbiddenException"),
            Code::ResourceExhausted => (429, "TooManyRequestsException"),
            Code::Unimplemented => (405, "MethodNotAllowedException"),
            _ => (500, "InternalServerErrorException"),
        };
        Self { status: status_code, code, message, retry_after }
    }

    fn into_response(self, request_id: &str) -> Response<Body> {
        let body = json!({ "Message": self.message, "RequestID": request_id }).to_string();
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = r.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-amzn-requestid", v);
        }
        if let Some(after) = self.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            h.insert("retry-after", HeaderValue::from(secs));
        }
        r
    }
}

impl Rest {
    pub fn new(services: Services, store: Arc<dyn crate::store::Store>, credentials: sigv4::Credentials) -> anyhow::Result<Self> {
        let pool = prost_reflect::DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET)?;
        // Parse the model now rather than on the first request.
        let _ = Model::get();
        Ok(Self { services, store, credentials, pool, s3: None, s3_role_arn: None, audit: None })
    }

    /// Import jobs read S3 through this client; `role_arn`, when given, is the only RoleArn
    /// their requests may name.
    pub fn with_s3(mut self, s3: Option<s3::S3>, role_arn: Option<String>) -> Self {
        self.s3 = s3;
        self.s3_role_arn = role_arn;
        self
    }

    /// Audits every REST call that changes something and every refused one.
    pub fn with_audit(mut self, audit: Option<Arc<crate::access::audit::Audit>>) -> Self {
        self.audit = audit;
        self
    }

    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new().fallback(handle).with_state(self)
    }

    /// An account template space, made on the first template of its kind written.
    async fn ensure_account(&self, space: &str) -> Result<(), RestError> {
        crate::store::ensure_account_space(self.store.as_ref(), space)
            .await
            .map_err(|e| RestError::from_status(crate::api::store_status(e), &Trail::default()))
    }

    /// A Herald message's descriptor (`App` → `herald.v1.App`).
    pub(crate) fn descriptor(&self, name: &str) -> prost_reflect::MessageDescriptor {
        self.pool.get_message_by_name(&format!("herald.v1.{name}")).unwrap_or_else(|| panic!("herald.v1.{name} is in the descriptor set"))
    }
}

async fn handle(State(rest): State<Arc<Rest>>, request: Request<Body>) -> Response<Body> {
    let start = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = request.into_parts();
    let changes = parts.method != axum::http::Method::GET;
    let mut seen = Seen::default();
    let (op_name, result) = serve(&rest, parts, body, &mut seen).await;
    let outcome = match &result {
        Ok(_) => "OK",
        Err(e) => e.code,
    };
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status >= 500 {
                tracing::warn!(operation = op_name, code = e.code, message = %e.message, "REST call failed.");
            }
            e.into_response(&request_id)
        }
    };
    let refused = matches!(response.status().as_u16(), 401 | 403);
    if let Some(audit) = rest.audit.as_ref().filter(|_| changes || refused) {
        audit.write(&crate::access::audit::Line {
            time: crate::domain::timestamp(chrono::Utc::now()),
            caller: seen
                .access_key
                .clone()
                .unwrap_or_else(|| if rest.credentials.is_empty() { "anonymous" } else { "unauthenticated" }.into()),
            key_id: seen.access_key.unwrap_or_default(),
            method: format!("pinpoint/{op_name}"),
            scope: "admin",
            app_id: seen.app_id,
            resource: seen.resource,
            outcome,
            peer: None,
            duration_ms: (start.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        });
    }
    let status = response.status().as_u16().to_string();
    metrics::counter!(telemetry::REST_REQUESTS, "operation" => op_name, "status" => status).increment(1);
    metrics::histogram!(telemetry::REST_DURATION, "operation" => op_name).record(start.elapsed().as_secs_f64());
    let mut response = response;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().entry("x-amzn-requestid").or_insert(v);
    }
    response
}

async fn serve(
    rest: &Rest,
    parts: axum::http::request::Parts,
    body: Body,
    seen: &mut Seen,
) -> (&'static str, Result<Response<Body>, RestError>) {
    let model = Model::get();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> =
        parts.headers.iter().filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str().to_ascii_lowercase(), v.to_string()))).collect();
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return ("unrouted", Err(RestError::new(413, "PayloadTooLargeException", format!("the body exceeds {MAX_BODY} bytes"))));
        }
    };
    let (op, labels) = match model.route(&parts.method, &path) {
        Routed::Found(op, labels) => (op, labels),
        Routed::WrongMethod => {
            return (
                "unrouted",
                Err(RestError::new(405, "MethodNotAllowedException", format!("{} is not allowed on {path}", parts.method))),
            )
        }
        Routed::NotFound => return ("unrouted", Err(RestError::not_found(format!("no Pinpoint operation at {path}")))),
    };
    let name: &'static str = op.name.as_str();
    let mut region = "us-east-1".to_string();
    if !rest.credentials.is_empty() {
        let signed = sigv4::Signed { method: parts.method.as_str(), path: &path, query: &query, headers: &headers, body: &body };
        match sigv4::verify(&rest.credentials, &signed, chrono::Utc::now()) {
            Ok(key) => seen.access_key = Some(key),
            Err(e) => {
                metrics::counter!(telemetry::ACCESS_REFUSED, "reason" => "signature").increment(1);
                return (name, Err(RestError::new(403, e.code(), e.to_string())));
            }
        }
        if let Some(r) = headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .and_then(|(_, v)| v.split("Credential=").nth(1))
            .and_then(|c| c.split('/').nth(2))
        {
            region = r.to_string();
        }
    }
    let query_pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let input = match model.read_input(op, &labels, &query_pairs, &headers, &body) {
        Ok(i) => i,
        Err(v) => return (name, Err(RestError::invalid(&v))),
    };
    seen.app_id = input.get("ApplicationId").and_then(Value::as_str).map(str::to_string);
    for (k, v) in &input {
        if k != "ApplicationId" && (k.ends_with("Id") || k == "TemplateName" || k == "ResourceArn") && v.is_string() {
            seen.resource.insert(k.clone(), v.clone());
        }
    }
    let ctx = ops::Call { rest, region: &region, input: &input, input_shape: op.input.as_deref().unwrap_or_default() };
    let output = match ops::dispatch(&ctx, &op.name).await {
        Ok(o) => o,
        Err(e) => return (name, Err(e)),
    };
    (name, Ok(write_output(op, output)))
}

/// The operation's output: the payload member as the body (or the body members), header
/// members as headers, with the model's status code.
fn write_output(op: &model::Operation, output: Map<String, Value>) -> Response<Body> {
    let model = Model::get();
    let shape = op.output.as_deref().and_then(|s| model.shape(s));
    let mut body = Value::Object(Map::new());
    let mut headers = Vec::new();
    if let Some(shape) = shape {
        match &shape.payload {
            Some(p) => {
                if let Some(v) = output.get(p) {
                    body = v.clone();
                }
            }
            None => {
                let mut o = Map::new();
                for (name, m) in &shape.members {
                    if let Some(v) = output.get(name) {
                        match m.location {
                            Location::Header => headers.push((m.location_name.clone().unwrap_or_else(|| name.clone()), v.clone())),
                            _ => {
                                o.insert(m.location_name.clone().unwrap_or_else(|| name.clone()), v.clone());
                            }
                        }
                    }
                }
                body = Value::Object(o);
            }
        }
    }
    let text = if op.response_code == 204 { String::new() } else { body.to_string() };
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = StatusCode::from_u16(op.response_code).unwrap_or(StatusCode::OK);
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    for (name, v) in headers {
        let text = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        if let (Ok(n), Ok(v)) = (axum::http::HeaderName::try_from(name), HeaderValue::from_str(&text)) {
            r.headers_mut().insert(n, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    async fn answer(status: tonic::Status) -> (u16, String, Option<String>, Value) {
        let r = RestError::from_status(status, &Trail::default()).into_response("req-1");
        let code = r.headers()["x-amzn-errortype"].to_str().unwrap().to_string();
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let status = r.status().as_u16();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, code, retry, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn statuses_answer_as_pinpoint_errors() {
        let shed = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "the send queue is full",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(1500))),
        );
        let (status, code, retry, body) = answer(shed).await;
        assert_eq!((status, code.as_str(), retry.as_deref()), (429, "TooManyRequestsException", Some("2")));
        assert_eq!(body, json!({"Message": "the send queue is full", "RequestID": "req-1"}));
        for (s, want) in [
            (tonic::Status::invalid_argument("x"), (400, "BadRequestException")),
            (tonic::Status::failed_precondition("x"), (400, "BadRequestException")),
            (tonic::Status::not_found("x"), (404, "NotFoundException")),
            (tonic::Status::already_exists("x"), (409, "ConflictException")),
            (tonic::Status::permission_denied("x"), (403, "ForbiddenException")),
            (tonic::Status::unavailable("x"), (500, "InternalServerErrorException")),
        ] {
            let (status, code, _, _) = answer(s).await;
            assert_eq!((status, code.as_str()), want);
        }
    }
}
