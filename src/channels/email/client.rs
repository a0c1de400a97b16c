//! The connection pool and the send path.

use std::sync::Arc;
use std::time::Duration;

use lettre::address::{Address, Envelope};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::Rset;
use lettre::transport::smtp::extension::ClientId;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::{classify, SmtpRelay};
use crate::channels::Delivery;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

struct Pooled {
    conn: AsyncSmtpConnection,
    sent: u32,
}

/// A bounded pool of SMTP connections to one relay. `send` takes `&self`: share the pool.
pub struct SmtpPool {
    relay: SmtpRelay,
    /// Connections waiting for their next message (most recently used last).
    idle: Mutex<Vec<Pooled>>,
    /// One permit per connection that may be open: the pool's bound.
    permits: Arc<Semaphore>,
}

fn transient(message: String) -> Delivery {
    Delivery::Retry { status_code: 0, message, retry_after: None }
}

fn from_error(e: &lettre::transport::smtp::Error) -> Delivery {
    match e.status().and_then(|c| c.to_string().parse::<u16>().ok()) {
        Some(code) => classify(code, e.to_string()),
        None => transient(e.to_string()),
    }
}

impl SmtpPool {
    pub fn new(relay: SmtpRelay) -> Self {
        let permits = Arc::new(Semaphore::new(relay.pool_size.max(1)));
        Self { relay, idle: Mutex::new(Vec::new()), permits }
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
        // Without it Nagle's algorithm and delayed ACKs stall every message by ~40 ms.
        stream.set_nodelay(true).map_err(|e| transient(e.to_string()))?;
        let hello = ClientId::Domain(self.relay.hello_name.clone());
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello).await.map_err(|e| from_error(&e))?;
        if let (Some(user), Some(pass)) = (&self.relay.username, &self.relay.password) {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &Credentials::new(user.clone(), pass.clone()))
                .await
                .map_err(|e| from_error(&e))?;
        }
        Ok(Pooled { conn, sent: 0 })
    }

    /// Sends one prepared message (`message` is the whole MIME text) to `to`.
    pub async fn send(&self, from: &str, to: &[&str], message: &[u8]) -> Delivery {
        let envelope = match envelope(from, to) {
            Ok(e) => e,
            Err(d) => return d,
        };
        let _permit = self.permits.acquire().await.expect("the pool's semaphore is never closed");
        let idle = self.idle.lock().pop();
        let mut pooled = match idle {
            Some(p) => p,
            None => match self.connect().await {
                Ok(p) => p,
                Err(d) => return d,
            },
        };
        let delivery = match tokio::time::timeout(COMMAND_TIMEOUT, pooled.conn.send(&envelope, message)).await {
            Ok(Ok(response)) => {
                let code = response.code().to_string().parse().unwrap_or(250);
                classify(code, response.message().collect::<Vec<_>>().join(" "))
            }
            Ok(Err(e)) => from_error(&e),
            Err(_) => transient("the relay did not answer in time".into()),
        };
        pooled.sent += 1;
        let healthy = !pooled.conn.has_broken()
            && match &delivery {
                Delivery::Delivered { .. } => true,
                // A refused transaction leaves the session mid-way: reset it, or drop it.
                _ => matches!(tokio::time::timeout(COMMAND_TIMEOUT, pooled.conn.command(Rset)).await, Ok(Ok(_))),
            };
        let spent = self.relay.messages_per_connection > 0 && pooled.sent >= self.relay.messages_per_connection;
        if healthy && !spent {
            self.idle.lock().push(pooled);
        } else {
            tokio::spawn(async move {
                let _ = pooled.conn.quit().await;
            });
        }
        delivery
    }

    /// Says QUIT on every idle connection.
    pub async fn close(&self) {
        let idle: Vec<Pooled> = std::mem::take(&mut *self.idle.lock());
        for mut p in idle {
            let _ = p.conn.quit().await;
        }
    }

    /// Connections open and idle right now.
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().len()
    }
}

fn envelope(from: &str, to: &[&str]) -> Result<Envelope, Delivery> {
    let bad = |what: &str, v: &str, e: String| Delivery::Permanent {
        status_code: 0,
        message: format!("bad {what} address '{v}': {e}"),
        hard_bounce: false,
    };
    let from: Address = from.parse().map_err(|e: lettre::address::AddressError| bad("from", from, e.to_string()))?;
    let to = to.iter().map(|t| t.parse::<Address>().map_err(|e| bad("recipient", t, e.to_string()))).collect::<Result<Vec<_>, _>>()?;
    Envelope::new(Some(from), to).map_err(|e| bad("recipient", "", e.to_string()))
}
