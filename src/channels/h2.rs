//! A small HTTP/2 client for providers that take many small requests (APNs): a fixed number of
//! connections to one origin, each multiplexing many streams, requests spread over them. Built
//! on hyper's HTTP/2 connection directly — no per-request URL parsing, pooling decisions or
//! redirects — over TLS with ALPN `h2` (system roots plus an optional extra CA) or cleartext
//! (h2c, prior knowledge) for `http://` origins. A connection that fails is replaced on the
//! next request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams open at once per connection, at most (APNs allows 1,000; a server's own lower
/// limit, from its SETTINGS, is respected besides).
const STREAMS_PER_CONNECTION: usize = 1_000;

/// Why a pool could not be made or a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// The origin is not an `http(s)://host[:port]` URL, or its TLS setup failed.
    #[error("{0}")]
    Origin(String),
    /// No connection: refused, timed out, or its TLS or HTTP/2 handshake failed.
    #[error("{0}")]
    Connect(String),
    /// The request was sent (perhaps) and the connection broke before an answer.
    #[error("{0}")]
    Exchange(String),
    #[error("no answer within {0} s")]
    Timeout(u64),
}

/// An answer: status, headers and body.
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

pub struct H2Pool {
    scheme: hyper::http::uri::Scheme,
    authority: hyper::http::uri::Authority,
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
    conns: Vec<tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>>,
    streams: Vec<tokio::sync::Semaphore>,
    next: AtomicUsize,
    timeout: Duration,
}

impl H2Pool {
    /// `origin`: `https://host[:port]` or `http://host[:port]`; `identity`: the client
    /// certificate TLS sessions present when asked.
    pub fn new(
        origin: &str,
        connections: usize,
        extra_ca_pem: Option<&str>,
        identity: Option<&crate::channels::email::tls::ClientIdentity>,
        timeout: Duration,
    ) -> Result<Self, H2Error> {
        let url = url::Url::parse(origin).map_err(|e| H2Error::Origin(format!("{origin}: {e}")))?;
        let host = url.host_str().ok_or_else(|| H2Error::Origin(format!("{origin}: no host")))?.trim_matches(['[', ']']).to_string();
        let port = url.port_or_known_default().ok_or_else(|| H2Error::Origin(format!("{origin}: no port")))?;
        let tls = match url.scheme() {
            "https" => Some(
                crate::channels::email::tls::connector_with(extra_ca_pem, vec![b"h2".to_vec()], identity)
                    .map_err(|e| H2Error::Origin(e.to_string()))?,
            ),
            "http" => None,
            other => return Err(H2Error::Origin(format!("{origin}: scheme {other} is neither http nor https"))),
        };
        let authority =
            url[url::Position::BeforeHost..url::Position::AfterPort].parse().map_err(|e| H2Error::Origin(format!("{origin}: {e}")))?;
        Ok(Self {
            scheme: if tls.is_some() { hyper::http::uri::Scheme::HTTPS } else { hyper::http::uri::Scheme::HTTP },
            authority,
            host,
            port,
            tls,
            conns: (0..connections.max(1)).map(|_| tokio::sync::Mutex::new(None)).collect(),
            streams: (0..connections.max(1)).map(|_| tokio::sync::Semaphore::new(STREAMS_PER_CONNECTION)).collect(),
            next: AtomicUsize::new(0),
            timeout,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, H2Error> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| H2Error::Connect(format!("connecting to {}:{} timed out", self.host, self.port)))?
            .map_err(|e| H2Error::Connect(format!("cannot connect to {}:{}: {e}", self.host, self.port)))?;
        tcp.set_nodelay(true).map_err(|e| H2Error::Connect(e.to_string()))?;
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .adaptive_window(true)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let sender = match &self.tls {
            Some(tls) => {
                let name = crate::channels::email::tls::server_name(&self.host).map_err(|e| H2Error::Connect(e.to_string()))?;
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, tcp))
                    .await
                    .map_err(|_| H2Error::Connect(format!("TLS handshake with {} timed out", self.host)))?
                    .map_err(|e| H2Error::Connect(format!("TLS handshake with {} failed: {e}", self.host)))?;
                let (sender, conn) =
                    builder.handshake(TokioIo::new(stream)).await.map_err(|e| H2Error::Connect(format!("HTTP/2 handshake: {e}")))?;
                tokio::spawn(conn);
                sender
            }
            None => {
                let (sender, conn) =
                    builder.handshake(TokioIo::new(tcp)).await.map_err(|e| H2Error::Connect(format!("HTTP/2 handshake: {e}")))?;
                tokio::spawn(conn);
                sender
            }
        };
        Ok(sender)
    }

    /// A ready stream on one of the connections (connecting it first if needed).
    async fn sender(&self) -> Result<(usize, SendRequest<Full<Bytes>>), H2Error> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let mut slot = self.conns[i].lock().await;
        if let Some(s) = slot.as_ref() {
            if !s.is_closed() {
                return Ok((i, s.clone()));
            }
        }
        let s = self.connect().await?;
        *slot = Some(s.clone());
        Ok((i, s))
    }

    /// POSTs `body` to `path` with `headers`. `Err`: no answer (the request may or may not
    /// have reached the server only when the connection broke after it was sent).
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: Bytes) -> Result<Answer, H2Error> {
        let (i, mut sender) = self.sender().await?;
        let _stream = self.streams[i].acquire().await.map_err(|e| H2Error::Exchange(e.to_string()))?;
        let uri = hyper::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| H2Error::Exchange(format!("bad request path: {e}")))?;
        let mut req = hyper::Request::post(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).map_err(|e| H2Error::Exchange(format!("bad request: {e}")))?;
        let exchange = async {
            sender.ready().await.map_err(|e| H2Error::Exchange(e.to_string()))?;
            let resp = sender.send_request(req).await.map_err(|e| H2Error::Exchange(e.to_string()))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| H2Error::Exchange(e.to_string()))?.to_bytes();
            Ok::<_, H2Error>(Answer { status: parts.status.as_u16(), headers: parts.headers, body })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                if sender.is_closed() {
                    // Replaced on the next request through this slot.
                    let mut slot = self.conns[i].lock().await;
                    if slot.as_ref().is_some_and(|s| s.is_closed()) {
                        *slot = None;
                    }
                }
                Err(e)
            }
            Err(_) => Err(H2Error::Timeout(self.timeout.as_secs())),
        }
    }
}
