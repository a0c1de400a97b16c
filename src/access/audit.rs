//! The audit log: one JSON line per admin or write call, and per call refused for its key
//! (unknown, revoked, out of scope or over its rate), to a file (appended, mode 0600) or
//! stdout. A line says who (the key's name and id), what (the RPC), where (the app and the
//! resource ids the request names), when, from where and the outcome (the gRPC code only:
//! status messages can quote what a caller sent, so they are left out, as are request
//! bodies, secrets and message contents).
//!
//! Lines go through a channel to one writer thread, flushed whenever the channel is empty;
//! [`Audit::close`] writes what is queued before the daemon exits. A kill -9 loses at most
//! the lines not yet flushed (the calls of the last moment).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::mpsc;

use parking_lot::Mutex;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

impl Target {
    /// `-` or `stdout`: standard output; anything else: a file path.
    pub fn parse(s: &str) -> Self {
        match s {
            "-" | "stdout" => Target::Stdout,
            path => Target::File(PathBuf::from(path)),
        }
    }
}

/// One audit line.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// RFC 3339, milliseconds, UTC.
    pub time: String,
    /// The key's name (`anonymous` with no configured key).
    pub caller: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_id: String,
    /// `herald.v1.Campaigns/CreateCampaign`.
    pub method: String,
    /// The scope the method needs.
    pub scope: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub resource: serde_json::Map<String, serde_json::Value>,
    /// `OK`, or the gRPC code of the failure (`PERMISSION_DENIED`…).
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    pub duration_ms: f64,
}

pub struct Audit {
    tx: Mutex<Option<mpsc::Sender<String>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Audit {
    /// Opens the target (a file is created if missing, appended to, mode 0600).
    pub fn open(target: &Target) -> std::io::Result<Self> {
        let mut out: Box<dyn std::io::Write + Send> = match target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(path) => {
                let mut options = std::fs::OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt as _;
                    options.mode(0o600);
                }
                Box::new(options.open(path)?)
            }
        };
        let (tx, rx) = mpsc::channel::<String>();
        let writer = std::thread::Builder::new().name("herald-audit".into()).spawn(move || {
            let mut buf = Vec::with_capacity(64 * 1024);
            while let Ok(line) = rx.recv() {
                buf.extend_from_slice(line.as_bytes());
                buf.push(b'\n');
                while let Ok(more) = rx.try_recv() {
                    buf.extend_from_slice(more.as_bytes());
                    buf.push(b'\n');
                    if buf.len() > 1 << 20 {
                        break;
                    }
                }
                if let Err(e) = out.write_all(&buf).and_then(|_| out.flush()) {
                    tracing::error!(error = %e, "Cannot write the audit log.");
                }
                buf.clear();
            }
        })?;
        Ok(Self { tx: Mutex::new(Some(tx)), writer: Mutex::new(Some(writer)) })
    }

    pub fn write(&self, line: &Line) {
        metrics::counter!(crate::telemetry::AUDIT_LINES, "outcome" => line.outcome).increment(1);
        if let Some(tx) = self.tx.lock().as_ref() {
            let _ = tx.send(serde_json::to_string(line).expect("an audit line serializes"));
        }
    }

    /// Writes every queued line and stops the writer.
    pub fn close(&self) {
        self.tx.lock().take();
        if let Some(w) = self.writer.lock().take() {
            let _ = w.join();
        }
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.close();
    }
}
