//! The `Messages` service: transactional sends with Pinpoint's request and response shapes.
//!
//! A send plans every recipient (rules first: unknown or inactive endpoints, opt-outs,
//! suppressed addresses, duplicates), renders each message once with its own context, and hands
//! it to the engine's shards; the results come back per address and per endpoint. A recipient
//! that fails early still gets an outcome record and an event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{check_app_id, invalid, observe, store_status};
use crate::dispatch::engine::{Engine, Job, Lane, Reply};
use crate::domain::{self, FieldViolation};
use crate::outcomes::{Batch, Recorder};
use crate::pipeline::compose::{ComposeError, Composer, Origin, Overrides};
use crate::pipeline::planner::{self, Facts, Planner};
use crate::proto::v1::{list_outcomes_request, ListOutcomesRequest, ListOutcomesResponse};
use crate::proto::v1::{
    messages_server, ChannelType, DeliveryStatus, Endpoint, EndpointResults, EndpointStatus, GetMessageOutcomeRequest, MessageOutcome,
    MessageResult, MessageSource, SendMessagesRequest, SendMessagesResponse, SendUsersMessagesRequest, SendUsersMessagesResponse,
};
use crate::render::template::TemplateCache;
use crate::store::{Idempotency, OutcomeIndex, Store};

/// Most recipients in one call.
pub const MAX_RECIPIENTS: usize = 10_000;
/// How long a call waits for room on a full shard before shedding load.
const QUEUE_WAIT: Duration = Duration::from_secs(2);
/// How long an idempotency key remembers its send.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a call waits for its messages' results.
const RESULT_WAIT: Duration = Duration::from_secs(60);

pub struct MessagesService {
    store: Arc<dyn Store>,
    cache: Arc<TemplateCache>,
    engine: Arc<Engine>,
    /// Records the outcomes of recipients refused before sending.
    recorder: Recorder,
    /// Signed tracking links, for calls that turn tracking on.
    links: Option<Arc<crate::tracking::Links>>,
}

/// One recipient of a request.
struct Recipient {
    /// The address key (`result`) or endpoint id (`endpoint_result`).
    key: String,
    by_endpoint: bool,
    /// Boxed: most calls name addresses, and recipients are moved by value.
    endpoint: Option<Box<Endpoint>>,
    channel: ChannelType,
    address: String,
    substitutions: HashMap<String, Vec<String>>,
    /// The request's Context with the recipient's over it.
    context: HashMap<String, String>,
    /// Its BodyOverride, TitleOverride and RawContent.
    overrides: Overrides,
}

/// Most Context entries, and characters per name and value (the events carry them).
const MAX_CONTEXT: usize = 40;
const MAX_CONTEXT_CHARS: usize = 200;

/// Most characters of a TraceId (it is an attribute of the message's events).
const MAX_TRACE_ID: usize = 200;

/// What SendMessages refuses of a request: a Context or TraceId too big for events.
fn unsupported(req: &SendMessagesRequest) -> Vec<FieldViolation> {
    let mut v = Vec::new();
    if req.trace_id.chars().count() > MAX_TRACE_ID {
        v.push(FieldViolation::new("trace_id", format!("at most {MAX_TRACE_ID} characters")));
    }
    // The field's name is only written for a context that breaks a rule (a call names up to
    // 10,000 recipients, almost always with none).
    fn context(v: &mut Vec<FieldViolation>, field: impl Fn() -> String, c: &HashMap<String, String>) {
        if c.len() > MAX_CONTEXT {
            v.push(FieldViolation::new(field(), format!("at most {MAX_CONTEXT} entries")));
        }
        if c.iter().any(|(k, x)| k.is_empty() || k.chars().count() > MAX_CONTEXT_CHARS || x.chars().count() > MAX_CONTEXT_CHARS) {
            v.push(FieldViolation::new(
                field(),
                format!("names are 1 to {MAX_CONTEXT_CHARS} characters, values at most {MAX_CONTEXT_CHARS}"),
            ));
        }
    }
    context(&mut v, || "context".into(), &req.context);
    if req.message_configuration.as_ref().is_some_and(|m| m.in_app_message.is_some()) {
        v.push(FieldViolation::new(
            "message_configuration.in_app_message",
            "in-app messages are not sent: put them in an IN_APP_EVENT campaign, which apps fetch with GetInAppMessages",
        ));
    }
    // Recipients with a context, in key order (so the violations come in a stable order).
    let mut addresses: Vec<_> = req.addresses.iter().filter(|(_, c)| !c.context.is_empty()).collect();
    addresses.sort_by(|a, b| a.0.cmp(b.0));
    for (key, c) in addresses {
        context(&mut v, || format!("addresses[{key}].context"), &c.context);
    }
    let mut endpoints: Vec<_> = req.endpoints.iter().filter(|(_, c)| !c.context.is_empty()).collect();
    endpoints.sort_by(|a, b| a.0.cmp(b.0));
    for (key, c) in endpoints {
        context(&mut v, || format!("endpoints[{key}].context"), &c.context);
    }
    v
}

/// A recipient's overrides that its channel cannot take: push takes a title, body and raw
/// payload; SMS a body; email and custom messages none (their content is the message's or the
/// template's, per-recipient values go in substitutions).
fn misplaced_overrides(r: &Recipient) -> Vec<FieldViolation> {
    if r.by_endpoint && r.endpoint.is_none() {
        // Not found: refused as a recipient of its own.
        return Vec::new();
    }
    if r.overrides.is_empty() {
        return Vec::new();
    }
    let at = if r.by_endpoint { format!("endpoints[{}]", r.key) } else { format!("addresses[{}]", r.key) };
    let push = matches!(
        r.channel,
        ChannelType::Apns | ChannelType::ApnsSandbox | ChannelType::ApnsVoip | ChannelType::ApnsVoipSandbox | ChannelType::Gcm
    );
    let sms = r.channel == ChannelType::Sms;
    let name = crate::domain::endpoint::channel_name(r.channel);
    let mut v = Vec::new();
    for (field, given, fits, why) in [
        ("body_override", &r.overrides.body, push || sms, "applies to push and SMS messages"),
        ("title_override", &r.overrides.title, push, "applies to push messages"),
        ("raw_content", &r.overrides.raw_content, push, "is a push payload (APNs or FCM JSON)"),
    ] {
        if !given.is_empty() && !fits {
            v.push(FieldViolation::new(format!("{at}.{field}"), format!("{why}; this recipient is {name}")));
        }
    }
    v
}

fn overrides(body: &str, title: &str, raw: &str) -> Overrides {
    Overrides { body: body.to_string(), title: title.to_string(), raw_content: raw.to_string() }
}

fn merged_context(request: &HashMap<String, String>, own: &HashMap<String, String>) -> HashMap<String, String> {
    let mut c = request.clone();
    c.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    c
}

use crate::pipeline::compose::substitutions as subs;

/// A composition failure as a status: a bad field, or the store.
fn compose_status(e: ComposeError) -> Status {
    match e {
        ComposeError::Field(v) => invalid(vec![v]),
        ComposeError::Store(e) => store_status(e),
    }
}

impl MessagesService {
    pub fn new(store: Arc<dyn Store>, cache: Arc<TemplateCache>, engine: Arc<Engine>, outcome_ttl: Duration) -> Self {
        Self { recorder: Recorder::new(store.clone(), outcome_ttl), store, cache, engine, links: None }
    }

    /// Calls with engagement_tracking get open and click tracking signed by `links`.
    pub fn with_links(mut self, links: Option<Arc<crate::tracking::Links>>) -> Self {
        self.links = links;
        self
    }

    /// A send with an idempotency key: the first call sends, repeats within 24 hours (also
    /// while the first is in flight) get its response.
    async fn send_once(&self, req: SendMessagesRequest) -> Result<SendMessagesResponse, Status> {
        use prost::Message as _;
        check_app_id(&req.app_id)?;
        let key = req.idempotency_key.clone();
        if key.len() > 256 || key.chars().any(char::is_control) {
            return Err(invalid(vec![FieldViolation::new("idempotency_key", "must be at most 256 characters without control characters")]));
        }
        let app = req.app_id.clone();
        let deadline = tokio::time::Instant::now() + RESULT_WAIT;
        loop {
            match self.store.claim_idempotency(&app, &key, IDEMPOTENCY_TTL.as_secs()).await.map_err(store_status)? {
                Idempotency::Done(bytes) => {
                    return SendMessagesResponse::decode(bytes.as_slice())
                        .map_err(|_| Status::internal("a stored response could not be read"));
                }
                Idempotency::InFlight if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(25)).await,
                Idempotency::InFlight => {
                    let mut details = ErrorDetails::new();
                    details.set_retry_info(Some(Duration::from_secs(1)));
                    return Err(Status::with_error_details(
                        tonic::Code::Aborted,
                        "a send with this idempotency key is still in flight",
                        details,
                    ));
                }
                Idempotency::Claimed => {
                    return match self.send(req).await {
                        Ok(response) => {
                            self.store
                                .complete_idempotency(&app, &key, &response.encode_to_vec(), IDEMPOTENCY_TTL.as_secs())
                                .await
                                .map_err(store_status)?;
                            Ok(response)
                        }
                        Err(status) => {
                            let _ = self.store.release_idempotency(&app, &key).await;
                            Err(status)
                        }
                    };
                }
            }
        }
    }

    async fn send(&self, req: SendMessagesRequest) -> Result<SendMessagesResponse, Status> {
        check_app_id(&req.app_id)?;
        let app = &req.app_id;
        let Some(stored_app) = self.store.get_app(app).await.map_err(store_status)? else {
            return Err(Status::not_found(format!("app {app} not found")));
        };
        let count = req.addresses.len() + req.endpoints.len();
        let mut refused = unsupported(&req);
        if count == 0 || count > MAX_RECIPIENTS {
            refused.insert(0, FieldViolation::new("addresses", format!("a send has 1 to {MAX_RECIPIENTS} recipients ({count} given)")));
        }
        let config = req.message_configuration.clone().unwrap_or_default();
        let templates = req.template_configuration.clone().unwrap_or_default();
        // What each channel renders, compiled once for the whole request.
        // Transactional emails are tracked only when the call asks and the app allows it.
        let app_allows = stored_app.settings.as_ref().and_then(|s| s.engagement_tracking) != Some(false);
        let tracking = crate::pipeline::compose::Tracking {
            links: self.links.clone(),
            track: req.engagement_tracking && app_allows,
            unsubscribe: false,
        };
        // Every bad field in one answer: the request's and its content's.
        let composer = match Composer::build(self.store.as_ref(), self.cache.clone(), app, &config, &templates, tracking).await {
            Ok(c) if refused.is_empty() => c,
            Ok(_) => return Err(invalid(refused)),
            Err(ComposeError::Field(f)) => {
                refused.push(f);
                return Err(invalid(refused));
            }
            Err(e) => return Err(compose_status(e)),
        };

        // Recipients.
        let mut recipients = Vec::with_capacity(count);
        for (address, c) in &req.addresses {
            let channel = ChannelType::try_from(c.channel_type).unwrap_or(ChannelType::Unspecified);
            let s = subs(&c.substitutions);
            recipients.push(Recipient {
                key: address.clone(),
                by_endpoint: false,
                endpoint: None,
                channel,
                address: address.clone(),
                substitutions: s,
                context: merged_context(&req.context, &c.context),
                overrides: overrides(&c.body_override, &c.title_override, &c.raw_content),
            });
        }
        let ids: Vec<&String> = req.endpoints.keys().collect();
        let fetched = futures::future::join_all(ids.iter().map(|id| self.store.get_endpoint(app, id))).await;
        for (id, found) in ids.into_iter().zip(fetched) {
            let endpoint = found.map_err(store_status)?.map(Box::new);
            let s = subs(&req.endpoints[id].substitutions);
            let (channel, address) = endpoint.as_ref().map_or((ChannelType::Unspecified, String::new()), |e| {
                (ChannelType::try_from(e.channel_type).unwrap_or_default(), e.address.clone())
            });
            let own = &req.endpoints[id];
            let context = merged_context(&req.context, &own.context);
            let overrides = overrides(&own.body_override, &own.title_override, &own.raw_content);
            recipients.push(Recipient {
                key: id.clone(),
                by_endpoint: true,
                endpoint,
                channel,
                address,
                substitutions: s,
                context,
                overrides,
            });
        }
        // Overrides a recipient's channel cannot take refuse the call before anything is sent.
        let misplaced: Vec<FieldViolation> = recipients.iter().flat_map(misplaced_overrides).collect();
        if !misplaced.is_empty() {
            return Err(invalid(misplaced));
        }
        let normalized: Vec<String> = recipients.iter().map(|r| crate::api::suppressions::normalize(&r.address)).collect();
        let suppressed = self.store.get_suppressions(app, &normalized).await.map_err(store_status)?;

        let request_id = domain::new_id();
        let now = domain::timestamp(chrono::Utc::now());
        let origin = Origin { app_id: app.clone(), scheduled_time: now.clone(), ..Default::default() };
        // Recipients refused before sending: recorded once the call is admitted whole.
        let mut early = Batch::default();
        let mut waiting: Vec<(usize, oneshot::Receiver<MessageOutcome>)> = Vec::new();
        let mut jobs: Vec<(Lane, Job)> = Vec::new();
        let mut finished: Vec<Option<MessageOutcome>> = (0..recipients.len()).map(|_| None).collect();
        let mut seen: HashSet<(i32, &str)> = HashSet::with_capacity(recipients.len());
        let planner = Planner {
            composer: &composer,
            origin: &origin,
            source: MessageSource::Transactional,
            request_id: &request_id,
            stamp: &now,
            dry_run: req.dry_run,
        };
        for (i, r) in recipients.iter().enumerate() {
            let mut o = planner.outcome(if r.by_endpoint { &r.key } else { "" }, &r.address, r.channel);
            o.context = r.context.clone();
            o.trace_id = req.trace_id.clone();
            let facts = Facts {
                endpoint_id: r.by_endpoint.then_some(r.key.as_str()),
                endpoint: r.endpoint.as_deref(),
                channel: r.channel,
                address: &r.address,
                suppressed: suppressed[i].is_some(),
                duplicate: !seen.insert((r.channel as i32, normalized[i].as_str())),
            };
            let lane = match planner::rules(facts) {
                Ok(lane) => lane,
                Err(refusal) => {
                    let (o, event) = planner.refused(o, refusal);
                    finished[i] = Some(o.clone());
                    early.outcome(o, event);
                    continue;
                }
            };
            let (tx, rx) = oneshot::channel();
            // The channel's message substitutions, the recipient's over them.
            let shared = composer.substitutions_for(lane);
            let merged;
            let substitutions = if r.substitutions.is_empty() {
                shared
            } else {
                let mut s = shared.clone();
                s.extend(r.substitutions.iter().map(|(k, v)| (k.clone(), v.clone())));
                merged = s;
                &merged
            };
            match planner.job_with(lane, r.channel, r.endpoint.as_deref(), substitutions, o, Some(Reply::Outcome(tx)), &r.overrides) {
                Ok(job) => {
                    jobs.push((lane, job));
                    waiting.push((i, rx));
                }
                Err(unrendered) => {
                    finished[i] = Some(unrendered.outcome.clone());
                    early.outcome(unrendered.outcome, unrendered.event);
                }
            }
        }
        // All or nothing: room for every message is reserved before any is queued, so a call
        // that cannot be taken whole sends and records none of it (and its idempotency key is
        // released for the retry).
        let mut throttled = Vec::new();
        if !jobs.is_empty() {
            match self.engine.submit_all(jobs, QUEUE_WAIT).await {
                Ok(over) => throttled = over,
                Err(jobs) => {
                    drop(jobs);
                    let mut details = ErrorDetails::new();
                    details.set_retry_info(Some(Duration::from_secs(1)));
                    let why = if self.engine.is_stopping() {
                        "the daemon is stopping; retry on another"
                    } else {
                        "the dispatch queues are full; retry shortly"
                    };
                    let code = if self.engine.is_stopping() { tonic::Code::Unavailable } else { tonic::Code::ResourceExhausted };
                    return Err(Status::with_error_details(code, why, details));
                }
            }
        }
        // Messages over an app channel quota end THROTTLED: recorded with the refusals, and
        // answered through their own reply like the sent ones.
        let mut replies = Vec::new();
        for (mut job, why) in throttled {
            let o = &mut job.outcome;
            o.delivery_status = DeliveryStatus::Throttled as i32;
            o.status_message = why;
            o.updated_date = domain::timestamp(chrono::Utc::now());
            early.delivered((**o).clone(), false, |_, _| {});
            replies.push((job.reply.take(), *job.outcome));
        }
        if !early.is_empty() {
            self.recorder.record(&early).await.map_err(store_status)?;
        }
        for (reply, o) in replies {
            if let Some(Reply::Outcome(tx)) = reply {
                let _ = tx.send(o);
            }
        }
        // One deadline for the whole call (one timer, not one per recipient); a result not in
        // by then is answered as such.
        let collect = async {
            for (i, rx) in waiting {
                finished[i] = rx.await.ok();
            }
        };
        let _ = tokio::time::timeout(RESULT_WAIT, collect).await;
        let mut response = SendMessagesResponse { app_id: app.clone(), request_id, ..Default::default() };
        let by_endpoint = recipients.iter().filter(|r| r.by_endpoint).count();
        response.endpoint_result.reserve(by_endpoint);
        response.result.reserve(recipients.len() - by_endpoint);
        for (r, o) in recipients.into_iter().zip(finished) {
            let result = o.map(result_of).unwrap_or(MessageResult {
                delivery_status: DeliveryStatus::UnknownFailure as i32,
                status_message: "no result within the call's time".into(),
                ..Default::default()
            });
            if r.by_endpoint {
                response.endpoint_result.insert(r.key, result);
            } else {
                response.result.insert(r.key, result);
            }
        }
        Ok(response)
    }
}

fn result_of(o: MessageOutcome) -> MessageResult {
    MessageResult {
        delivery_status: o.delivery_status,
        status_code: o.status_code,
        status_message: o.status_message,
        message_id: o.message_id,
        updated_token: String::new(),
        address: o.address,
    }
}

#[tonic::async_trait]
impl messages_server::Messages for MessagesService {
    async fn send_messages(&self, request: Request<SendMessagesRequest>) -> Result<Response<SendMessagesResponse>, Status> {
        observe("SendMessages", async {
            let req = request.into_inner();
            if req.idempotency_key.is_empty() {
                return self.send(req).await.map(Response::new);
            }
            self.send_once(req).await.map(Response::new)
        })
        .await
    }

    async fn send_users_messages(&self, request: Request<SendUsersMessagesRequest>) -> Result<Response<SendUsersMessagesResponse>, Status> {
        observe("SendUsersMessages", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            if req.users.is_empty() {
                return Err(invalid(vec![FieldViolation::new("users", "at least one user is required")]));
            }
            // Expand each user to its ACTIVE endpoints, then send as SendMessages does.
            let ids: Vec<&String> = req.users.keys().collect();
            let lists = futures::future::join_all(ids.iter().map(|u| self.store.user_endpoints(&req.app_id, u))).await;
            let mut owner: HashMap<String, String> = HashMap::new();
            let mut endpoints = HashMap::new();
            for (user, list) in ids.into_iter().zip(lists) {
                for e in list.map_err(store_status)? {
                    if e.endpoint_status == EndpointStatus::Active as i32 {
                        owner.insert(e.id.clone(), user.clone());
                        endpoints.insert(e.id.clone(), req.users[user].clone());
                    }
                }
            }
            let mut response = SendUsersMessagesResponse { app_id: req.app_id.clone(), ..Default::default() };
            for user in req.users.keys() {
                response.result.insert(user.clone(), EndpointResults::default());
            }
            if endpoints.is_empty() {
                response.request_id = domain::new_id();
                return Ok(Response::new(response));
            }
            let send = SendMessagesRequest {
                app_id: req.app_id.clone(),
                endpoints,
                message_configuration: req.message_configuration,
                template_configuration: req.template_configuration,
                context: req.context,
                trace_id: req.trace_id,
                dry_run: req.dry_run,
                idempotency_key: req.idempotency_key,
                engagement_tracking: req.engagement_tracking,
                ..Default::default()
            };
            let sent = if send.idempotency_key.is_empty() { self.send(send).await? } else { self.send_once(send).await? };
            response.request_id = sent.request_id;
            for (endpoint, result) in sent.endpoint_result {
                if let Some(user) = owner.get(&endpoint) {
                    response.result.entry(user.clone()).or_default().endpoint_result.insert(endpoint, result);
                }
            }
            Ok(Response::new(response))
        })
        .await
    }

    async fn list_outcomes(&self, request: Request<ListOutcomesRequest>) -> Result<Response<ListOutcomesResponse>, Status> {
        observe("ListOutcomes", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            let by = match req.by {
                Some(list_outcomes_request::By::RequestId(r)) if !r.is_empty() => OutcomeIndex::Request(r),
                Some(list_outcomes_request::By::EndpointId(e)) if !e.is_empty() => OutcomeIndex::Endpoint(e),
                _ => return Err(invalid(vec![FieldViolation::new("by", "give a request_id or an endpoint_id")])),
            };
            let size = super::apps::page_size(req.page_size)?;
            let offset: usize = if req.page_token.is_empty() {
                0
            } else {
                req.page_token
                    .parse()
                    .map_err(|_| invalid(vec![FieldViolation::new("page_token", "is not a token this service issued")]))?
            };
            let mut outcomes = self.store.list_outcomes(&req.app_id, &by, offset, size + 1).await.map_err(store_status)?;
            let next_page_token = if outcomes.len() > size {
                outcomes.truncate(size);
                (offset + size).to_string()
            } else {
                String::new()
            };
            Ok(Response::new(ListOutcomesResponse { outcomes, next_page_token }))
        })
        .await
    }

    async fn get_message_outcome(&self, request: Request<GetMessageOutcomeRequest>) -> Result<Response<MessageOutcome>, Status> {
        observe("GetMessageOutcome", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            match self.store.get_outcome(&req.app_id, &req.message_id).await.map_err(store_status)? {
                Some(o) => Ok(Response::new(o)),
                None => Err(Status::not_found(format!("no outcome for message {} in app {}", req.message_id, req.app_id))),
            }
        })
        .await
    }
}
