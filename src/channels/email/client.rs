//! The connection pool and the send path.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::smtp::{Reply, Session, SessionError};
use super::tls::{self, Stream};
use super::{classify, SmtpRelay, TlsMode};
use crate::channels::Delivery;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

struct Pooled {
    session: Session,
    sent: u32,
}

/// A bounded pool of SMTP sessions to one relay. `send` takes `&self`: share the pool.
pub struct SmtpPool {
    relay: SmtpRelay,
    /// Sessions waiting for their next message (most recently used last).
    idle: Mutex<Vec<Pooled>>,
    /// One permit per connection that may be open: the pool's bound.
    permits: Arc<Semaphore>,
    /// For a TLS relay: the connector (or why none could be built) and the name to verify.
    tls: Option<Result<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>), String>>,
}

fn transient(message: String) -> Delivery {
    Delivery::Retry { status_code: 0, message, retry_after: None }
}

fn from_reply(r: Reply) -> Delivery {
    classify(r.code, r.text)
}

fn from_error(e: SessionError) -> Delivery {
    transient(e.to_string())
}

/// A batch is split over sessions so that each carries at least this many of its messages.
const MESSAGES_PER_SPLIT: usize = 16;

impl SmtpPool {
    pub fn new(relay: SmtpRelay) -> Self {
        let permits = Arc::new(Semaphore::new(relay.pool_size.max(1)));
        let tls = (relay.tls != TlsMode::None).then(|| {
            let connector = tls::connector(relay.extra_ca_pem.as_deref()).map_err(|e| e.to_string())?;
            let name = tls::server_name(&relay.host).map_err(|e| e.to_string())?;
            Ok((connector, name))
        });
        Self { relay, idle: Mutex::new(Vec::new()), permits, tls }
    }

    pub fn relay(&self) -> &SmtpRelay {
        &self.relay
    }

    async fn connect(&self) -> Result<Pooled, Delivery> {
        let addr = (self.relay.host.as_str(), self.relay.port);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(transient(format!("cannot connect to {}:{}: {e}", self.relay.host, self.relay.port))),
            Err(_) => return Err(transient(format!("connecting to {}:{} timed out", self.relay.host, self.relay.port))),
        };
        stream.set_nodelay(true).map_err(|e| transient(e.to_string()))?;
        let tls = match &self.tls {
            None => None,
            Some(Ok(tls)) => Some(tls),
            Some(Err(e)) => return Err(transient(format!("TLS settings of {}: {e}", self.relay.host))),
        };
        let stream = match (self.relay.tls, tls) {
            (TlsMode::Tls, Some((connector, name))) => {
                match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), stream)).await {
                    Ok(Ok(s)) => Stream::Tls(Box::new(s)),
                    Ok(Err(e)) => return Err(transient(format!("TLS handshake with {}:{} failed: {e}", self.relay.host, self.relay.port))),
                    Err(_) => return Err(transient(format!("TLS handshake with {}:{} timed out", self.relay.host, self.relay.port))),
                }
            }
            _ => Stream::Plain(stream),
        };
        let (mut session, mut hello) = Session::open(stream, &self.relay.hello_name, COMMAND_TIMEOUT).await.map_err(from_error)?;
        if !hello.is_positive() {
            return Err(from_reply(hello));
        }
        if let (TlsMode::StartTls, Some((connector, name))) = (self.relay.tls, tls) {
            (session, hello) = session.start_tls(connector, name.clone()).await.map_err(from_error)?;
            if !hello.is_positive() {
                return Err(from_reply(hello));
            }
        }
        if let (Some(user), Some(pass)) = (&self.relay.username, &self.relay.password) {
            let r = session.auth_plain(user, pass).await.map_err(from_error)?;
            if !r.is_positive() {
                return Err(from_reply(r));
            }
        }
        Ok(Pooled { session, sent: 0 })
    }

    /// Sends one prepared message (`message` is the whole MIME text) to `to`.
    pub async fn send(&self, from: &str, to: &[&str], message: &[u8]) -> Delivery {
        if let Err(d) = check_addresses(from, to) {
            return d;
        }
        let _permit = self.permits.acquire().await.expect("the pool's semaphore is never closed");
        let idle = self.idle.lock().pop();
        let mut pooled = match idle {
            Some(p) => p,
            None => match self.connect().await {
                Ok(p) => p,
                Err(d) => return d,
            },
        };
        let delivery = match pooled.session.send(from, to, message).await {
            Ok(reply) => from_reply(reply),
            Err(e) => from_error(e),
        };
        self.give_back(pooled, 1);
        delivery
    }

    /// Sends several messages, each to one recipient, pipelined over one session (one round
    /// trip per message where the relay supports PIPELINING). One delivery per item, in order;
    /// a connection failure mid-batch fails the rest of it as retryable.
    pub async fn send_batch(&self, from: &str, items: &[(&str, &[u8])]) -> Vec<Delivery> {
        let mut out: Vec<Option<Delivery>> = vec![None; items.len()];
        let mut valid = Vec::with_capacity(items.len());
        for (i, (to, message)) in items.iter().enumerate() {
            match check_addresses(from, &[to]) {
                Ok(()) => valid.push((i, (*to, *message))),
                Err(d) => out[i] = Some(d),
            }
        }
        if !valid.is_empty() {
            // A large batch is split over several sessions sent concurrently: one session
            // carries one message per round trip, so a batch on one session would leave the
            // pool's other connections idle.
            let ways = valid.len().div_ceil(MESSAGES_PER_SPLIT).clamp(1, self.relay.pool_size.max(1));
            let chunk = valid.len().div_ceil(ways);
            let sent = futures::future::join_all(valid.chunks(chunk).map(|part| self.send_on_one_session(from, part))).await;
            for (i, d) in sent.into_iter().flatten() {
                out[i] = Some(d);
            }
        }
        out.into_iter().map(|d| d.expect("every item has a delivery")).collect()
    }

    /// Sends `items` (index, (recipient, message)) pipelined on one pooled session.
    async fn send_on_one_session(&self, from: &str, items: &[(usize, (&str, &[u8]))]) -> Vec<(usize, Delivery)> {
        let _permit = self.permits.acquire().await.expect("the pool's semaphore is never closed");
        let idle = self.idle.lock().pop();
        let pooled = match idle {
            Some(p) => Ok(p),
            None => self.connect().await,
        };
        let mut pooled = match pooled {
            Err(d) => return items.iter().map(|(i, _)| (*i, d.clone())).collect(),
            Ok(p) => p,
        };
        let batch: Vec<(&str, &[u8])> = items.iter().map(|(_, item)| *item).collect();
        let (replies, error) = pooled.session.send_many(from, &batch).await;
        let answered = replies.len();
        let mut out: Vec<(usize, Delivery)> = items.iter().zip(replies).map(|((i, _), reply)| (*i, from_reply(reply))).collect();
        if let Some(e) = error {
            let d = from_error(e);
            out.extend(items[answered..].iter().map(|(i, _)| (*i, d.clone())));
        }
        self.give_back(pooled, batch.len());
        out
    }

    /// Returns a session to the pool after `sent` more messages, or closes it when it is
    /// broken or has carried its share.
    fn give_back(&self, mut pooled: Pooled, sent: usize) {
        pooled.sent += sent as u32;
        let spent = self.relay.messages_per_connection > 0 && pooled.sent >= self.relay.messages_per_connection;
        if !pooled.session.is_broken() && !spent {
            self.idle.lock().push(pooled);
        } else {
            tokio::spawn(pooled.session.quit());
        }
    }

    /// Says QUIT on every idle connection.
    pub async fn close(&self) {
        let idle: Vec<Pooled> = std::mem::take(&mut *self.idle.lock());
        for p in idle {
            p.session.quit().await;
        }
    }

    /// Connections open and idle right now.
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().len()
    }
}

/// Envelope addresses are validated addr-specs by the time they get here (endpoint writes and
/// channel settings check them); this only makes sure none could inject SMTP commands.
fn check_addresses(from: &str, to: &[&str]) -> Result<(), Delivery> {
    for (what, a) in std::iter::once(("from", from)).chain(to.iter().map(|t| ("recipient", *t))) {
        let safe = a.len() <= 320
            && a.contains('@')
            && !a.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'<' || b == b'>');
        if !safe {
            return Err(Delivery::Permanent { status_code: 0, message: format!("bad {what} address '{a}'"), hard_bounce: false });
        }
    }
    if to.is_empty() {
        return Err(Delivery::Permanent { status_code: 0, message: "no recipient".into(), hard_bounce: false });
    }
    Ok(())
}
