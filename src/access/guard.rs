//! The gRPC guard: a tower layer in front of every Herald service that authenticates the
//! bearer key, checks the scope the RPC needs and the apps the key may touch, takes a call
//! from the key's rate, hands the service the [`Caller`], and writes the audit line.
//!
//! The app a request names is read from its first message (the first message of a client
//! stream: the streaming RPCs refuse later messages naming another app) before the service
//! sees it; the bytes read are handed on unchanged. Health and reflection stay open, as they
//! carry no data.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::StreamExt as _;
use http_body::Frame;
use http_body_util::BodyExt as _;
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use super::audit::{Audit, Line};
use super::methods::{Method, Methods, Named};
use super::{AccessError, Caller, Registry, Scope};

/// Largest first message read for its app id (the API's decoding limit).
const MAX_FIRST_MESSAGE: usize = 64 * 1024 * 1024;

struct Shared {
    registry: Arc<Registry>,
    methods: Methods,
    audit: Option<Arc<Audit>>,
}

#[derive(Clone)]
pub struct GuardLayer {
    shared: Arc<Shared>,
}

impl GuardLayer {
    pub fn new(registry: Arc<Registry>, audit: Option<Arc<Audit>>) -> Self {
        Self { shared: Arc::new(Shared { registry, methods: Methods::load(), audit }) }
    }
}

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner, shared: self.shared.clone() }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    shared: Arc<Shared>,
}

type Request = http::Request<Body>;
type Response = http::Response<Body>;

impl<S, B> tower_service::Service<Request> for Guard<S>
where
    S: tower_service::Service<Request, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let path = request.uri().path().to_string();
            let Some(method) = shared.methods.get(&path).cloned() else {
                // Health, reflection, and paths that are no RPC (tonic answers UNIMPLEMENTED).
                return inner.call(request).await.map(|r| r.map(Body::new));
            };
            let started = Instant::now();
            let peer = peer(&request);
            let token = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::to_string);
            let refuse = |caller: Option<&Caller>, named: &Named, reason: &'static str, status: Status| {
                metrics::counter!(crate::telemetry::ACCESS_REFUSED, "reason" => reason).increment(1);
                if let Some(audit) = &shared.audit {
                    audit.write(&line(caller, &method, named, status.code(), peer.clone(), started.elapsed()));
                }
                Ok(status.into_http())
            };
            let caller = match shared.registry.authenticate(token.as_deref()).await {
                Ok(c) => c,
                Err(AccessError::Unavailable(e)) => {
                    return refuse(None, &Named::default(), "unavailable", Status::unavailable(format!("cannot check the API key: {e}")))
                }
                Err(e @ AccessError::Revoked(_)) => {
                    return refuse(None, &Named::default(), "revoked", Status::unauthenticated(e.to_string()))
                }
                Err(e) => return refuse(None, &Named::default(), "unauthenticated", Status::unauthenticated(e.to_string())),
            };
            if !caller.may(method.scope) {
                let has: Vec<&str> = caller.scopes.iter().map(|s| s.name()).collect();
                let message = format!(
                    "{} needs the {} scope; key '{}' has {}",
                    method.name,
                    method.scope,
                    caller.name,
                    if has.is_empty() { "none".to_string() } else { has.join(", ") }
                );
                return refuse(Some(&caller), &Named::default(), "scope", Status::permission_denied(message));
            }
            if let Err(wait) = shared.registry.admit(&caller) {
                let status = Status::with_error_details(
                    Code::ResourceExhausted,
                    format!("key '{}' is over its {} calls per second", caller.name, caller.rate_per_second),
                    ErrorDetails::with_retry_info(Some(wait.max(Duration::from_millis(1)))),
                );
                return refuse(Some(&caller), &Named::default(), "rate", status);
            }
            let audited = shared.audit.clone().filter(|_| matches!(method.scope, Scope::Admin | Scope::Write));
            let (mut request, named) = if !caller.apps.is_empty() || audited.is_some() {
                let (parts, body) = request.into_parts();
                let (first, body) = first_message(body).await;
                let named = first.map(|m| method.read(&m)).unwrap_or_default();
                (http::Request::from_parts(parts, body), named)
            } else {
                (request, Named::default())
            };
            if !caller.apps.is_empty() {
                let allowed = match &named.app_id {
                    Some(app) => caller.may_touch(app),
                    // ListApps answers with the key's apps only.
                    None => !method.names_app() && method.name == "ListApps",
                };
                if !allowed {
                    let message = match &named.app_id {
                        Some(app) => format!("key '{}' may not touch app {app}", caller.name),
                        None => format!("key '{}' is limited to apps, and {} names none", caller.name, method.name),
                    };
                    return refuse(Some(&caller), &named, "app", Status::permission_denied(message));
                }
            }
            let caller = Arc::new(caller);
            request.extensions_mut().insert(caller.clone());
            let response = inner.call(request).await?;
            Ok(match audited {
                Some(audit) => {
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map(Code::from_i32);
                    let pending = Pending { audit, caller, method, named, peer, started, code };
                    response.map(|b| Body::new(Audited { inner: b, pending: Some(pending) }))
                }
                None => response.map(Body::new),
            })
        })
    }
}

fn peer(request: &Request) -> Option<String> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let ext = request.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| ext.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|i| i.get_ref().remote_addr()))
        .map(|a| a.to_string())
}

fn line(caller: Option<&Caller>, method: &Method, named: &Named, code: Code, peer: Option<String>, took: Duration) -> Line {
    Line {
        time: crate::domain::timestamp(chrono::Utc::now()),
        caller: caller.map_or_else(|| "unauthenticated".to_string(), |c| c.name.clone()),
        key_id: caller.map(|c| c.key_id.clone()).unwrap_or_default(),
        method: format!("{}/{}", method.service, method.name),
        scope: method.scope.name(),
        app_id: named.app_id.clone(),
        resource: named.resource.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect(),
        outcome: crate::api::code_name(code),
        peer,
        duration_ms: (took.as_secs_f64() * 1e6).round() / 1e3,
    }
}

/// Reads the request body up to the end of its first gRPC message; gives that message (when
/// it is whole and uncompressed) and a body that replays what was read, then the rest.
async fn first_message(mut body: Body) -> (Option<Bytes>, Body) {
    let mut buf = BytesMut::new();
    let mut failed: Option<Status> = None;
    let mut ended = false;
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() >= 5 + len || len > MAX_FIRST_MESSAGE {
                break;
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => buf.extend_from_slice(&data),
                // Trailers in a request: nothing follows them.
                Err(_) => {
                    ended = true;
                    break;
                }
            },
            Some(Err(e)) => {
                failed = Some(e);
                break;
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    let read = buf.freeze();
    let first = (read.len() >= 5 && read[0] == 0).then(|| {
        let len = u32::from_be_bytes([read[1], read[2], read[3], read[4]]) as usize;
        read.get(5..5 + len).map(|m| read.slice(5..5 + m.len()))
    });
    let head = futures::stream::iter([Ok::<_, Status>(Frame::data(read))]);
    let rest: Body = match (failed, ended) {
        (Some(e), _) => Body::new(http_body_util::StreamBody::new(head.chain(futures::stream::iter([Err(e)])))),
        (None, true) => Body::new(http_body_util::StreamBody::new(head)),
        (None, false) => Body::new(http_body_util::StreamBody::new(head.chain(http_body_util::BodyStream::new(body)))),
    };
    (first.flatten(), rest)
}

struct Pending {
    audit: Arc<Audit>,
    caller: Arc<Caller>,
    method: Method,
    named: Named,
    peer: Option<String>,
    started: Instant,
    /// From the headers (an error answered without a body) or the trailers.
    code: Option<Code>,
}

impl Pending {
    fn finish(self, ended: bool) {
        // An answer that ended without a status is OK; one dropped before its end was cancelled.
        let code = self.code.unwrap_or(if ended { Code::Ok } else { Code::Cancelled });
        self.audit.write(&line(Some(&self.caller), &self.method, &self.named, code, self.peer, self.started.elapsed()));
    }
}

/// A response body that writes the call's audit line when its status is known.
struct Audited<B> {
    inner: B,
    pending: Option<Pending>,
}

impl<B> http_body::Body for Audited<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = trailers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok());
                    if let Some(p) = self.pending.as_mut() {
                        p.code = code.map(Code::from_i32).or(p.code);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut p) = self.pending.take() {
                    p.code = p.code.or(Some(Code::Unknown));
                    p.finish(true);
                }
            }
            Poll::Ready(None) => {
                if let Some(p) = self.pending.take() {
                    p.finish(true);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Audited<B> {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            // A body already at its end (an answer without one) is dropped unread.
            let ended = p.code.is_some();
            p.finish(ended);
        }
    }
}
