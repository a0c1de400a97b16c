//! Imported segments: a file of endpoint definitions in Pinpoint's import shape, parsed as it
//! arrives, written as endpoints in chunks, and recorded as the members of a new segment
//! version. Good rows are imported, bad ones reported with their line and reason. The job's
//! state is kept in the store as it runs, so any client can follow it.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::mpsc;

use super::{member_set, KIND};
use crate::domain::{self, endpoint as rules, import::Row};
use crate::proto::v1::{ChannelType, ImportDefinition, ImportFormat, ImportJob, ImportRowError, JobState, Segment};
use crate::store::{EndpointOp, Store, StoreError};

/// The store blob kind of import jobs.
pub const JOB_KIND: &str = "import-job";
/// Rows written per store call.
const CHUNK: usize = 1_000;
/// Refused rows listed in a job (all are counted).
pub const MAX_LISTED_ERRORS: usize = 1_000;
/// How often a running job's state is saved and reported.
const REPORT_EVERY: Duration = Duration::from_millis(500);

/// A `Read` over byte chunks arriving on a channel (the upload), for the blocking parser.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// An endpoint id for a row that gives none: stable for its channel and address, so importing
/// the same file twice updates the same endpoints.
pub fn derived_id(channel: i32, address: &str) -> String {
    use sha2::Digest as _;
    let name = ChannelType::try_from(channel).map(rules::channel_name).unwrap_or("UNKNOWN");
    let digest = sha2::Sha256::digest(format!("{name}:{address}").as_bytes());
    hex::encode(&digest[..16])
}

/// Parses the upload on a blocking thread; sends rows in chunks, or the reason the whole file
/// cannot be read (a bad CSV header).
fn parse(format: ImportFormat, data: mpsc::Receiver<Vec<u8>>, rows: mpsc::Sender<Result<Vec<Row>, crate::domain::import::RowError>>) {
    let reader = ChannelReader { rx: data, buf: Vec::new(), pos: 0 };
    let send_all = |iter: &mut dyn Iterator<Item = Row>| {
        let mut chunk = Vec::with_capacity(CHUNK);
        for row in iter {
            chunk.push(row);
            if chunk.len() == CHUNK && rows.blocking_send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))).is_err() {
                return;
            }
        }
        if !chunk.is_empty() {
            let _ = rows.blocking_send(Ok(chunk));
        }
    };
    match format {
        ImportFormat::Csv => match crate::domain::import::csv_rows(reader) {
            Ok(mut it) => send_all(&mut it),
            Err(e) => {
                let _ = rows.blocking_send(Err(e));
            }
        },
        _ => send_all(&mut crate::domain::import::json_rows(std::io::BufReader::with_capacity(256 * 1024, reader))),
    }
}

/// A running import.
pub struct ImportRun {
    pub store: Arc<dyn Store>,
    pub job: ImportJob,
    /// The segment version written when the job completes (its import definition is filled in).
    pub segment: Segment,
    /// Progress reports (the caller's response stream); a closed one is ignored.
    pub progress: mpsc::Sender<ImportJob>,
}

impl ImportRun {
    async fn save(&self) {
        if let Err(e) = self.store.put_blob(&self.job.app_id, JOB_KIND, &self.job.id, &self.job.encode_to_vec()).await {
            tracing::warn!(error = %e, job = %self.job.id, "Cannot save an import job's state.");
        }
        let _ = self.progress.try_send(self.job.clone());
    }

    fn refuse(&mut self, line: u64, reason: String) {
        self.job.failed += 1;
        if self.job.errors.len() < MAX_LISTED_ERRORS {
            self.job.errors.push(ImportRowError { line, reason });
        }
    }

    /// Runs the job to its end over the upload's byte chunks; returns its final state.
    pub async fn run(
        mut self,
        data: mpsc::Receiver<Vec<u8>>,
        upload_failed: impl std::future::Future<Output = Option<String>>,
    ) -> ImportJob {
        let format = ImportFormat::try_from(self.job.format).unwrap_or(ImportFormat::Json);
        let (rows_tx, mut rows_rx) = mpsc::channel::<Result<Vec<Row>, crate::domain::import::RowError>>(4);
        let parser = tokio::task::spawn_blocking(move || parse(format, data, rows_tx));
        let set = member_set(&self.segment.id, self.segment.version);
        let app = self.job.app_id.clone();
        let mut channels: HashMap<String, i64> = HashMap::new();
        let mut failure = None;
        let mut last_report = Instant::now();
        self.save().await;
        while let Some(chunk) = rows_rx.recv().await {
            let rows = match chunk {
                Ok(rows) => rows,
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            };
            match self.write_chunk(&app, &set, rows, &mut channels).await {
                Ok(()) => {}
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
            if last_report.elapsed() >= REPORT_EVERY {
                last_report = Instant::now();
                self.save().await;
            }
        }
        drop(rows_rx);
        let _ = parser.await;
        if failure.is_none() {
            failure = upload_failed.await;
        }
        if failure.is_none() {
            match self.complete(&app, &set, channels).await {
                Ok(()) => self.job.state = JobState::Completed as i32,
                Err(e) => failure = Some(e.to_string()),
            }
        }
        if let Some(why) = failure {
            self.job.state = JobState::Failed as i32;
            self.job.failure = why;
            if let Err(e) = self.store.delete_members(&app, &set).await {
                tracing::warn!(error = %e, "Cannot drop a failed import's members.");
            }
        }
        self.job.completion_date = domain::timestamp(chrono::Utc::now());
        self.save().await;
        // The last report must arrive, even when the reader is slow.
        let _ = self.progress.send(self.job.clone()).await;
        tracing::info!(job = %self.job.id, app_id = %app, rows = self.job.total_rows, imported = self.job.imported, failed = self.job.failed, "Segment import finished.");
        self.job
    }

    async fn write_chunk(&mut self, app: &str, set: &str, rows: Vec<Row>, channels: &mut HashMap<String, i64>) -> Result<(), StoreError> {
        let listed_before = self.job.errors.len();
        let result = self.write_rows(app, set, rows, channels).await;
        // Rows refused by the parser and by the store, in file order.
        self.job.errors[listed_before..].sort_by_key(|e| e.line);
        result
    }

    async fn write_rows(&mut self, app: &str, set: &str, rows: Vec<Row>, channels: &mut HashMap<String, i64>) -> Result<(), StoreError> {
        let mut lines = Vec::with_capacity(rows.len());
        let mut writes = Vec::with_capacity(rows.len());
        for row in rows {
            self.job.total_rows += 1;
            match row.endpoint {
                Err(why) => self.refuse(row.line, why.to_string()),
                Ok(mut e) => {
                    if e.id.is_empty() {
                        e.id = derived_id(e.channel_type, &e.address);
                    }
                    let violations = rules::validate_write(&e);
                    if violations.is_empty() {
                        lines.push(row.line);
                        writes.push(e);
                    } else {
                        let why = violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ");
                        self.refuse(row.line, why);
                    }
                }
            }
        }
        if writes.is_empty() {
            return Ok(());
        }
        crate::attributes::strip_writes(self.store.as_ref(), app, &mut writes).await?;
        let op =
            EndpointOp::Upsert { writes, all_or_nothing: false, now: domain::timestamp(chrono::Utc::now()), request_id: domain::new_id() };
        let plan = self.store.write_endpoints(app, op).await?;
        let mut refused: HashMap<usize, Vec<String>> = HashMap::new();
        for r in &plan.rejections {
            refused.entry(r.index).or_default().push(format!("{}: {}", r.violation.field, r.violation.description));
        }
        let mut by_index: Vec<(usize, Vec<String>)> = refused.into_iter().collect();
        by_index.sort_by_key(|(i, _)| *i);
        for (i, why) in by_index {
            self.refuse(lines[i], why.join("; "));
        }
        let written: Vec<String> = plan.written_endpoints().map(|e| e.id.clone()).collect();
        for e in plan.written_endpoints() {
            let name = ChannelType::try_from(e.channel_type).map(rules::channel_name).unwrap_or("UNKNOWN");
            *channels.entry(name.to_string()).or_insert(0) += 1;
        }
        self.job.imported += written.len() as u64;
        self.store.add_members(app, set, &written).await
    }

    /// Writes the segment version with its import definition.
    async fn complete(&mut self, app: &str, set: &str, channels: HashMap<String, i64>) -> Result<(), StoreError> {
        let size = self.store.count_members(app, set).await?;
        let now = domain::timestamp(chrono::Utc::now());
        let mut segment = self.segment.clone();
        segment.import_definition = Some(ImportDefinition {
            size: size as i64,
            format: if self.job.format == ImportFormat::Csv as i32 { "CSV" } else { "JSON" }.into(),
            channel_counts: channels,
            job_id: self.job.id.clone(),
        });
        segment.last_modified_date = now.clone();
        if segment.creation_date.is_empty() {
            segment.creation_date = now;
        }
        self.store.write_record(app, KIND, &segment.id, segment.version - 1, segment.version, &segment.encode_to_vec()).await
    }
}
