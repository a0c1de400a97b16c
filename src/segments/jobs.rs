//! Job resources: every segment import (its progress is [`super::import::JOB_KIND`]) is also
//! listed in an index record written when it starts; every ExportSegment call is an export
//! job record, written when it starts, as it progresses and when it ends. Listings read the
//! app's records of one kind in id order, a segment's by filtering them.
//!
//! Faults: an export job's record is written at least every [`EXPORT_PROGRESS`]; one whose
//! daemon stopped (SIGTERM, kill -9) or lost the store before it ended stays PROCESSING in the
//! store and is reported FAILED once it is [`STALE_AFTER`] old. A Redis restart loses nothing
//! that was written (append-only file); a progress write that fails is retried at the next page.

use std::time::{Duration, Instant};

use prost::Message as _;

use crate::domain;
use crate::proto::v1::{ExportJob, ImportJob, JobState};
use crate::store::{Store, StoreError};

/// The record kind listing import jobs (the job as it started; its state is the blob's).
pub const IMPORT_INDEX: &str = "import-job-index";
/// The record kind of export jobs.
pub const EXPORT_KIND: &str = "export-job";
/// How often a running export writes its progress.
pub const EXPORT_PROGRESS: Duration = Duration::from_secs(10);
/// A PROCESSING export job not heard from for this long is reported FAILED.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// Lists an import job from the moment it starts.
pub async fn index_import(store: &dyn Store, job: &ImportJob) -> Result<(), StoreError> {
    store.write_record(&job.app_id, IMPORT_INDEX, &job.id, 0, 1, &job.encode_to_vec()).await
}

/// What a listing needs of a job.
pub trait Job: prost::Message + Default {
    fn id(&self) -> &str;
    fn segment(&self) -> &str;
}

impl Job for ImportJob {
    fn id(&self) -> &str {
        &self.id
    }
    fn segment(&self) -> &str {
        &self.segment_id
    }
}

impl Job for ExportJob {
    fn id(&self) -> &str {
        &self.id
    }
    fn segment(&self) -> &str {
        &self.segment_id
    }
}

/// A page of the app's jobs of record `kind`, those of `segment` only when it is given: the
/// jobs and the token of the next page.
pub async fn page<T: Job>(
    store: &dyn Store,
    app: &str,
    kind: &str,
    segment: &str,
    token: &str,
    size: usize,
) -> Result<(Vec<T>, String), StoreError> {
    let mut after = Some(token.to_string()).filter(|t| !t.is_empty());
    let mut out = Vec::new();
    loop {
        let raw = store.list_records(app, kind, after.as_deref(), size + 1).await?;
        let full = raw.len() > size;
        for r in raw.iter().take(size) {
            let item = T::decode(r.as_slice())?;
            after = Some(item.id().to_string());
            if segment.is_empty() || item.segment() == segment {
                out.push(item);
                if out.len() == size {
                    return Ok((out, after.unwrap_or_default()));
                }
            }
        }
        if !full {
            return Ok((out, String::new()));
        }
    }
}

/// An export job's state as it is reported: a PROCESSING job not heard from for a minute
/// has lost its daemon.
pub fn reported(mut job: ExportJob, now: chrono::DateTime<chrono::Utc>) -> ExportJob {
    let heard = crate::segments::rule::parse_instant(&job.updated_date);
    let stale = heard.is_some_and(|t| now - t > chrono::Duration::from_std(STALE_AFTER).expect("a minute"));
    if job.state == JobState::Processing as i32 && stale {
        job.state = JobState::Failed as i32;
        job.failure = "the daemon serving this export stopped before it ended".into();
    }
    job
}

/// A running export's record.
pub struct Export {
    store: std::sync::Arc<dyn Store>,
    pub job: ExportJob,
    written: Instant,
}

impl Export {
    /// Writes the job as PROCESSING.
    pub async fn start(store: std::sync::Arc<dyn Store>, app: &str, segment: &str, version: i32) -> Result<Self, StoreError> {
        let now = domain::timestamp(chrono::Utc::now());
        let job = ExportJob {
            id: domain::new_id(),
            app_id: app.to_string(),
            segment_id: segment.to_string(),
            segment_version: version,
            state: JobState::Processing as i32,
            creation_date: now.clone(),
            updated_date: now,
            ..Default::default()
        };
        store.write_record(app, EXPORT_KIND, &job.id, 0, 1, &job.encode_to_vec()).await?;
        Ok(Self { store, job, written: Instant::now() })
    }

    async fn write(&mut self) {
        self.job.updated_date = domain::timestamp(chrono::Utc::now());
        match self.store.write_record(&self.job.app_id, EXPORT_KIND, &self.job.id, 1, 1, &self.job.encode_to_vec()).await {
            Ok(()) => self.written = Instant::now(),
            Err(e) => tracing::warn!(error = %e, job = %self.job.id, "Cannot save an export job's progress."),
        }
    }

    /// Counts `n` more endpoints sent; writes the progress every [`EXPORT_PROGRESS`].
    pub async fn sent(&mut self, n: usize) {
        self.job.exported += n as u64;
        if self.written.elapsed() >= EXPORT_PROGRESS {
            self.write().await;
        }
    }

    /// Ends the job: COMPLETED, or FAILED with why.
    pub async fn end(mut self, failure: Option<String>) {
        self.job.state = if failure.is_some() { JobState::Failed } else { JobState::Completed } as i32;
        self.job.failure = failure.unwrap_or_default();
        self.job.completion_date = domain::timestamp(chrono::Utc::now());
        self.write().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_processing_export_is_reported_failed() {
        let now = chrono::Utc::now();
        let job = |state: JobState, ago: i64| ExportJob {
            state: state as i32,
            updated_date: domain::timestamp(now - chrono::Duration::seconds(ago)),
            ..Default::default()
        };
        assert_eq!(reported(job(JobState::Processing, 5), now).state, JobState::Processing as i32);
        let lost = reported(job(JobState::Processing, 61), now);
        assert_eq!(lost.state, JobState::Failed as i32);
        assert!(lost.failure.contains("stopped"));
        assert_eq!(reported(job(JobState::Completed, 600), now).state, JobState::Completed as i32);
    }
}
