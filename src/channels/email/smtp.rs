//! A pipelining SMTP client session (RFC 5321, RFC 2920 PIPELINING): the envelope commands go
//! out in one write and their replies are read together, then the dot-stuffed message and its
//! terminator go out in one more write — two round trips per message where a command-by-command
//! client needs four. Servers that do not announce PIPELINING get one command at a time.

use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio_rustls::TlsConnector;

use super::tls::Stream;

/// A complete reply: its code and its text lines joined by spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the server's reply is malformed: {0:?}")]
    Malformed(String),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the relay does not offer STARTTLS")]
    NoStartTls,
    #[error("STARTTLS refused: {0} {1}")]
    StartTlsRefused(u16, String),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
}

/// One SMTP session over a TCP connection, plain or TLS.
pub struct Session {
    io: BufReader<BufWriter<Stream>>,
    pipelining: bool,
    starttls: bool,
    hello_name: String,
    /// Set once the session is in an unknown state; it is then never reused.
    broken: bool,
    timeout: Duration,
    line: String,
}

impl Session {
    /// Reads the greeting and says EHLO (or HELO when EHLO is refused).
    pub async fn open(stream: Stream, hello_name: &str, timeout: Duration) -> Result<(Self, Reply), SessionError> {
        let mut s = Self {
            io: BufReader::new(BufWriter::new(stream)),
            pipelining: false,
            starttls: false,
            hello_name: hello_name.to_string(),
            broken: false,
            timeout,
            line: String::new(),
        };
        let greeting = s.reply().await?;
        if !greeting.is_positive() {
            return Ok((s, greeting));
        }
        let ehlo = s.hello().await?;
        Ok((s, ehlo))
    }

    /// EHLO, falling back to HELO; records the extensions Herald uses.
    async fn hello(&mut self) -> Result<Reply, SessionError> {
        self.write(format!("EHLO {}\r\n", self.hello_name).as_bytes()).await?;
        let mut ehlo = self.reply().await?;
        let has = |ehlo: &Reply, ext: &str| ehlo.text.split(' ').any(|w| w.eq_ignore_ascii_case(ext));
        if ehlo.is_positive() {
            self.pipelining = has(&ehlo, "PIPELINING");
            self.starttls = has(&ehlo, "STARTTLS");
        } else {
            self.pipelining = false;
            self.starttls = false;
            self.write(format!("HELO {}\r\n", self.hello_name).as_bytes()).await?;
            ehlo = self.reply().await?;
        }
        Ok(ehlo)
    }

    /// STARTTLS (RFC 3207): upgrades the plain session to TLS and says EHLO again, since what
    /// the server announced before the upgrade no longer counts. A relay that does not offer
    /// it, or refuses it, is an error: the session never falls back to plain text.
    pub async fn start_tls(self, connector: &TlsConnector, name: ServerName<'static>) -> Result<(Self, Reply), SessionError> {
        let mut s = self;
        if !s.starttls {
            return Err(SessionError::NoStartTls);
        }
        s.write(b"STARTTLS\r\n").await?;
        let r = s.reply().await?;
        if r.code != 220 {
            return Err(SessionError::StartTlsRefused(r.code, r.text));
        }
        // Bytes buffered past the 220 would be a plaintext injection (CVE-2011-0411): refuse.
        if !s.io.buffer().is_empty() {
            return Err(SessionError::Malformed("data after the STARTTLS reply".into()));
        }
        let Stream::Plain(tcp) = s.io.into_inner().into_inner() else {
            return Err(SessionError::Malformed("STARTTLS on a TLS session".into()));
        };
        let tls = match tokio::time::timeout(s.timeout, connector.connect(name, tcp)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(SessionError::Handshake(e)),
            Err(_) => return Err(SessionError::Timeout(s.timeout)),
        };
        let mut s = Self { io: BufReader::new(BufWriter::new(Stream::Tls(Box::new(tls)))), starttls: false, pipelining: false, ..s };
        let ehlo = s.hello().await?;
        Ok((s, ehlo))
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    pub fn pipelining(&self) -> bool {
        self.pipelining
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.write_parts(&[bytes]).await
    }

    /// Writes several pieces with one flush (one segment on the wire when they fit).
    async fn write_parts(&mut self, parts: &[&[u8]]) -> Result<(), SessionError> {
        let r = async {
            for p in parts {
                self.io.write_all(p).await?;
            }
            self.io.flush().await
        };
        match tokio::time::timeout(self.timeout, r).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.broken = true;
                Err(e.into())
            }
            Err(_) => {
                self.broken = true;
                Err(SessionError::Timeout(self.timeout))
            }
        }
    }

    /// Reads one (possibly multi-line) reply.
    async fn reply(&mut self) -> Result<Reply, SessionError> {
        self.read_reply(true).await
    }

    /// Reads one reply; `text` false leaves a positive reply's text out (its code is all a
    /// pipelined envelope needs), sparing a copy per command.
    async fn read_reply(&mut self, text: bool) -> Result<Reply, SessionError> {
        let mut out = String::new();
        loop {
            self.line.clear();
            // A line already buffered needs no read, so no timer either.
            let buffered = memchr::memchr(b'\n', self.io.buffer()).is_some();
            let read = if buffered {
                Ok(self.io.read_line(&mut self.line).await)
            } else {
                tokio::time::timeout(self.timeout, self.io.read_line(&mut self.line)).await
            };
            let n = match read {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    self.broken = true;
                    return Err(e.into());
                }
                Err(_) => {
                    self.broken = true;
                    return Err(SessionError::Timeout(self.timeout));
                }
            };
            if n == 0 {
                self.broken = true;
                return Err(SessionError::Closed);
            }
            let line = self.line.trim_end_matches(['\r', '\n']);
            let code: u16 = match line.get(..3).and_then(|c| c.parse().ok()) {
                Some(c) => c,
                None => {
                    self.broken = true;
                    return Err(SessionError::Malformed(line.to_string()));
                }
            };
            if text || code >= 400 {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(line.get(4..).unwrap_or(""));
            }
            match line.as_bytes().get(3) {
                Some(b'-') => continue,
                _ => return Ok(Reply { code, text: out }),
            }
        }
    }

    /// AUTH PLAIN.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<Reply, SessionError> {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.write(format!("AUTH PLAIN {token}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// One transaction: MAIL, RCPT per recipient, DATA, the message. Returns the reply that
    /// decided it: the first refusal, or the answer to the message. A refused transaction is
    /// reset (RSET) so the session can be reused.
    pub async fn send(&mut self, from: &str, to: &[&str], message: &[u8]) -> Result<Reply, SessionError> {
        let mut envelope = String::with_capacity(64 + 40 * to.len());
        envelope.push_str("MAIL FROM:<");
        envelope.push_str(from);
        envelope.push_str(">\r\n");
        for rcpt in to {
            envelope.push_str("RCPT TO:<");
            envelope.push_str(rcpt);
            envelope.push_str(">\r\n");
        }
        envelope.push_str("DATA\r\n");
        let mut refusal = None;
        let mut data_open = false;
        if self.pipelining {
            self.write(envelope.as_bytes()).await?;
            for _ in 0..to.len() + 2 {
                let r = self.reply().await?;
                data_open |= r.code == 354;
                let ok = r.is_positive() || r.code == 354;
                if !ok && refusal.is_none() {
                    refusal = Some(r);
                }
            }
        } else {
            for cmd in envelope.split_inclusive("\r\n") {
                self.write(cmd.as_bytes()).await?;
                let r = self.reply().await?;
                if !(r.is_positive() || r.code == 354) {
                    refusal = Some(r);
                    break;
                }
            }
        }
        if let Some(r) = refusal {
            if data_open {
                // Some recipients were accepted and DATA is open (RFC 2920 §3.1): they get the
                // message; the refusal is what this transaction reports.
                self.write_message(message).await?;
                self.reply().await?;
            } else {
                self.reset().await?;
            }
            return Ok(r);
        }
        self.write_message(message).await?;
        self.reply().await
    }

    /// The message and its terminator in one flush; dot-stuffed only when a line starts with
    /// a dot or a line end is not CRLF.
    async fn write_message(&mut self, message: &[u8]) -> Result<(), SessionError> {
        if is_clean(message) {
            let end: &[u8] = if message.ends_with(b"\r\n") { b".\r\n" } else { b"\r\n.\r\n" };
            self.write_parts(&[message, end]).await
        } else {
            self.write(&dot_stuffed(message)).await
        }
    }

    /// Several single-recipient transactions pipelined end to end (RFC 2920 §3.1 lets message
    /// content open a command group): each message's end-of-data travels with the next
    /// message's MAIL, RCPT and DATA, so a message costs one round trip. Returns one reply per
    /// message, in order, for the messages answered before an error (if any) stopped the
    /// session: those after it were not, or not knowingly, sent. Without PIPELINING the
    /// messages go one at a time.
    pub async fn send_many(&mut self, from: &str, items: &[(&str, &[u8])]) -> (Vec<Reply>, Option<SessionError>) {
        let mut out = Vec::with_capacity(items.len());
        let error = self.send_many_into(from, items, &mut out).await.err();
        (out, error)
    }

    async fn send_many_into(&mut self, from: &str, items: &[(&str, &[u8])], out: &mut Vec<Reply>) -> Result<(), SessionError> {
        if !self.pipelining {
            for (to, message) in items {
                out.push(self.send(from, &[to], message).await?);
            }
            return Ok(());
        }
        let envelope = |to: &str| format!("MAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n");
        let Some((first, _)) = items.first() else { return Ok(()) };
        self.write(envelope(first).as_bytes()).await?;
        for (i, (_, message)) in items.iter().enumerate() {
            // The replies to this message's envelope.
            let mut refusal = None;
            for _ in 0..3 {
                let r = self.read_reply(false).await?;
                if !(r.is_positive() || r.code == 354) && refusal.is_none() {
                    refusal = Some(r);
                }
            }
            let next = items.get(i + 1).map(|(to, _)| envelope(to));
            match refusal {
                Some(r) => {
                    // Nothing was accepted for this message: reset, then start the next one.
                    self.reset().await?;
                    out.push(r);
                    if let Some(env) = next {
                        self.write(env.as_bytes()).await?;
                    }
                }
                None => {
                    let clean = is_clean(message);
                    let stuffed;
                    let body: &[u8] = if clean {
                        message
                    } else {
                        stuffed = dot_stuffed(message);
                        &stuffed[..stuffed.len() - 3]
                    };
                    let end: &[u8] = if body.ends_with(b"\r\n") { b".\r\n" } else { b"\r\n.\r\n" };
                    match &next {
                        Some(env) => self.write_parts(&[body, end, env.as_bytes()]).await?,
                        None => self.write_parts(&[body, end]).await?,
                    }
                    out.push(self.reply().await?);
                }
            }
        }
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), SessionError> {
        self.write(b"RSET\r\n").await?;
        if self.reply().await?.code != 250 {
            self.broken = true;
        }
        Ok(())
    }

    pub async fn quit(mut self) {
        if self.write(b"QUIT\r\n").await.is_ok() {
            let _ = self.reply().await;
        }
    }
}

/// Whether a message can go on the wire as it is: CRLF line ends and no line starting with a
/// dot.
fn is_clean(message: &[u8]) -> bool {
    message.first() != Some(&b'.')
        && memchr::memchr_iter(b'\n', message).all(|i| i > 0 && message[i - 1] == b'\r' && message.get(i + 1) != Some(&b'.'))
}

/// The message with leading dots doubled, CRLF line ends and the `.` terminator.
pub fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in message {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_messages_go_as_they_are() {
        assert!(is_clean(b"a\r\nb\r\n"));
        assert!(!is_clean(b".a\r\n"));
        assert!(!is_clean(b"a\r\n.b\r\n"));
        assert!(!is_clean(b"a\nb"));
        assert!(!is_clean(b"\nb"));
    }

    #[test]
    fn messages_are_dot_stuffed_and_terminated() {
        assert_eq!(dot_stuffed(b"a\r\n.b\r\n..c"), b"a\r\n..b\r\n...c\r\n.\r\n");
        assert_eq!(dot_stuffed(b".x\ny"), b"..x\r\ny\r\n.\r\n");
        assert_eq!(dot_stuffed(b"ok\r\n"), b"ok\r\n.\r\n");
    }
}
