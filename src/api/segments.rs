//! The `Segments` service: versioned dynamic and imported segments, their size and members.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::apps::page_size;
use super::{check_app_id, invalid, observe, store_status};
use crate::domain::{self, FieldViolation};
use crate::proto::v1::{
    segments_server, CreateSegmentRequest, DeleteSegmentRequest, ExportJob, ExportSegmentRequest, ExportSegmentResponse,
    GetExportJobRequest, GetImportJobRequest, GetSegmentRequest, ImportFormat, ImportJob, ImportSegmentRequest, JobState,
    ListExportJobsResponse, ListImportJobsResponse, ListJobsRequest, ListSegmentVersionsRequest, ListSegmentsRequest, ListSegmentsResponse,
    Segment, SegmentDimensions, SegmentGroupList, SegmentSize, SegmentType, UpdateSegmentRequest,
};
use crate::segments::{self, import, jobs, validate, MemberStream, SegmentError, KIND};
use crate::store::{Store, StoreError};

pub struct SegmentsService {
    store: Arc<dyn Store>,
}

impl SegmentsService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    async fn find(&self, app: &str, id: &str, version: i32) -> Result<Segment, Status> {
        check_app_id(app)?;
        if version < 0 {
            return Err(invalid(vec![FieldViolation::new("version", "must be a version number, or 0 for the latest")]));
        }
        if self.store.get_app(app).await.map_err(store_status)?.is_none() {
            return Err(Status::not_found(format!("app {app} not found")));
        }
        segments::load(self.store.as_ref(), app, id, version).await.map_err(segment_status)
    }

    /// Checks a dynamic definition, including what its source segments are.
    async fn check_definition(
        &self,
        app: &str,
        id: Option<&str>,
        dims: Option<&SegmentDimensions>,
        groups: Option<&SegmentGroupList>,
    ) -> Result<(), Status> {
        let mut violations = validate::definition(dims, groups);
        if violations.is_empty() {
            for (i, g) in groups.iter().flat_map(|l| l.groups.iter()).enumerate() {
                let mut imported = 0;
                for (j, r) in g.source_segments.iter().enumerate() {
                    let field = format!("segment_groups.groups[{i}].source_segments[{j}]");
                    if Some(r.id.as_str()) == id {
                        violations.push(FieldViolation::new(format!("{field}.id"), "a segment cannot be its own source"));
                        continue;
                    }
                    match segments::load(self.store.as_ref(), app, &r.id, r.version).await {
                        Ok(s) => imported += usize::from(segments::is_imported(&s)),
                        Err(SegmentError::Store(e)) => return Err(store_status(e)),
                        Err(e) => violations.push(FieldViolation::new(field, e.to_string())),
                    }
                }
                if imported > 0 && g.source_segments.len() > 1 {
                    violations.push(FieldViolation::new(
                        format!("segment_groups.groups[{i}].source_segments"),
                        "a group's sources are several dynamic segments or one imported segment",
                    ));
                }
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(invalid(violations))
        }
    }

    /// Registers a segment as a user of its sources, so they cannot be deleted from under it.
    async fn use_sources(&self, app: &str, s: &Segment) -> Result<(), Status> {
        for r in s.segment_groups.iter().flat_map(|l| &l.groups).flat_map(|g| &g.source_segments) {
            self.store.set_record_use(app, KIND, &r.id, &format!("segment {}", s.id), true).await.map_err(store_status)?;
        }
        Ok(())
    }

    /// A segment version's rule and a stream over its members.
    async fn members(&self, s: &Segment, page: usize) -> Result<MemberStream, Status> {
        let rule = segments::compile(self.store.as_ref(), &s.app_id, s).await.map_err(segment_status)?;
        Ok(MemberStream::open(self.store.clone(), &s.app_id, Arc::new(rule), page))
    }
}

fn segment_status(e: SegmentError) -> Status {
    match e {
        SegmentError::NotFound(id) => Status::not_found(format!("segment {id} not found")),
        SegmentError::VersionNotFound(id, v) => Status::not_found(format!("version {v} of segment {id} not found")),
        SegmentError::Invalid(why) => Status::failed_precondition(why.to_string()),
        SegmentError::Store(e) => store_status(e),
    }
}

fn decode(raw: Vec<u8>) -> Result<Segment, Status> {
    Segment::decode(raw.as_slice()).map_err(|e| store_status(StoreError::from(e)))
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<ExportSegmentResponse, Status>> + Send>>;
type JobStream = Pin<Box<dyn Stream<Item = Result<ImportJob, Status>> + Send>>;

/// Where an import's rows come from, recorded on its job (Pinpoint's import job definition).
pub struct ImportSource {
    pub s3_url: String,
    pub role_arn: String,
}

/// What an import job is fed through: the file's bytes in chunks, then whether the upload
/// broke off (and why); and its progress reports.
pub type ImportFeed = (mpsc::Sender<Vec<u8>>, tokio::sync::oneshot::Sender<Option<String>>, mpsc::Receiver<ImportJob>);

impl SegmentsService {
    /// Starts an import job as `first` describes it (app, format, and a new segment's name or
    /// the imported segment a new version is written to); its rows arrive through the feed.
    pub async fn start_import(&self, first: &ImportSegmentRequest, source: ImportSource) -> Result<ImportFeed, Status> {
        check_app_id(&first.app_id)?;
        let app = first.app_id.clone();
        let mut violations = Vec::new();
        let format = ImportFormat::try_from(first.format).unwrap_or(ImportFormat::Unspecified);
        if format == ImportFormat::Unspecified {
            violations.push(FieldViolation::new("format", "must be CSV or JSON"));
        }
        if first.name.is_empty() == first.segment_id.is_empty() {
            violations.push(FieldViolation::new("name", "give a name (a new segment) or a segment_id (a new version), not both"));
        }
        if !violations.is_empty() {
            return Err(invalid(violations));
        }
        if self.store.get_app(&app).await.map_err(store_status)?.is_none() {
            return Err(Status::not_found(format!("app {app} not found")));
        }
        let now = domain::timestamp(chrono::Utc::now());
        let segment = if first.segment_id.is_empty() {
            Segment {
                id: domain::new_id(),
                app_id: app.clone(),
                name: first.name.clone(),
                version: 1,
                segment_type: SegmentType::Import as i32,
                creation_date: now.clone(),
                tags: first.tags.clone(),
                ..Default::default()
            }
        } else {
            let old = self.find(&app, &first.segment_id, 0).await?;
            if !segments::is_imported(&old) {
                return Err(Status::failed_precondition(format!("segment {} is dynamic: only imported segments take files", old.id)));
            }
            let mut s = Segment { version: old.version + 1, ..old };
            if !first.tags.is_empty() {
                s.tags = first.tags.clone();
            }
            s
        };
        let job = ImportJob {
            id: domain::new_id(),
            app_id: app.clone(),
            segment_id: segment.id.clone(),
            segment_version: segment.version,
            state: JobState::Processing as i32,
            creation_date: now,
            format: format as i32,
            s3_url: source.s3_url,
            role_arn: source.role_arn,
            ..Default::default()
        };
        jobs::index_import(self.store.as_ref(), &job).await.map_err(store_status)?;
        let (data_tx, data_rx) = mpsc::channel::<Vec<u8>>(8);
        let (progress_tx, progress_rx) = mpsc::channel::<ImportJob>(16);
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<Option<String>>();
        let run = import::ImportRun { store: self.store.clone(), job, segment, progress: progress_tx };
        tokio::spawn(run.run(data_rx, async move { failed_rx.await.ok().flatten() }));
        Ok((data_tx, failed_tx, progress_rx))
    }
}

#[tonic::async_trait]
impl segments_server::Segments for SegmentsService {
    async fn create_segment(&self, request: Request<CreateSegmentRequest>) -> Result<Response<Segment>, Status> {
        observe("CreateSegment", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            if req.name.is_empty() {
                return Err(invalid(vec![FieldViolation::new("name", "is required")]));
            }
            self.check_definition(&req.app_id, None, req.dimensions.as_ref(), req.segment_groups.as_ref()).await?;
            let now = domain::timestamp(chrono::Utc::now());
            let s = Segment {
                id: domain::new_id(),
                app_id: req.app_id.clone(),
                name: req.name,
                version: 1,
                segment_type: SegmentType::Dimensional as i32,
                dimensions: req.dimensions,
                segment_groups: req.segment_groups,
                import_definition: None,
                creation_date: now.clone(),
                last_modified_date: now,
                tags: req.tags,
            };
            self.store.write_record(&req.app_id, KIND, &s.id, 0, 1, &s.encode_to_vec()).await.map_err(store_status)?;
            self.use_sources(&req.app_id, &s).await?;
            Ok(Response::new(s))
        })
        .await
    }

    async fn update_segment(&self, request: Request<UpdateSegmentRequest>) -> Result<Response<Segment>, Status> {
        observe("UpdateSegment", async {
            let req = request.into_inner();
            let old = self.find(&req.app_id, &req.segment_id, 0).await?;
            let redefines = req.dimensions.is_some() || req.segment_groups.is_some();
            if segments::is_imported(&old) && redefines {
                return Err(invalid(vec![FieldViolation::new(
                    "dimensions",
                    "an imported segment's members come from its file: import a new version instead",
                )]));
            }
            self.check_definition(&req.app_id, Some(&req.segment_id), req.dimensions.as_ref(), req.segment_groups.as_ref()).await?;
            let mut s = old.clone();
            s.version = old.version + 1;
            if !req.name.is_empty() {
                s.name = req.name;
            }
            if redefines || !segments::is_imported(&old) {
                s.dimensions = req.dimensions;
                s.segment_groups = req.segment_groups;
            }
            if !req.tags.is_empty() {
                s.tags = req.tags;
            }
            s.last_modified_date = domain::timestamp(chrono::Utc::now());
            self.store.write_record(&req.app_id, KIND, &s.id, old.version, s.version, &s.encode_to_vec()).await.map_err(store_status)?;
            if segments::is_imported(&s) {
                // The new version has the same members as the one it renames.
                let (from, to) = (segments::member_set(&s.id, old.version), segments::member_set(&s.id, s.version));
                let mut cursor = None;
                loop {
                    let (page, next) = self.store.scan_members(&req.app_id, &from, cursor, 5_000).await.map_err(store_status)?;
                    let ids: Vec<String> = page.into_iter().map(|e| e.id).collect();
                    self.store.add_members(&req.app_id, &to, &ids).await.map_err(store_status)?;
                    match next {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
            }
            self.use_sources(&req.app_id, &s).await?;
            Ok(Response::new(s))
        })
        .await
    }

    async fn get_segment(&self, request: Request<GetSegmentRequest>) -> Result<Response<Segment>, Status> {
        observe("GetSegment", async {
            let req = request.into_inner();
            self.find(&req.app_id, &req.segment_id, req.version).await.map(Response::new)
        })
        .await
    }

    async fn list_segments(&self, request: Request<ListSegmentsRequest>) -> Result<Response<ListSegmentsResponse>, Status> {
        observe("ListSegments", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            let size = page_size(req.page_size)?;
            if self.store.get_app(&req.app_id).await.map_err(store_status)?.is_none() {
                return Err(Status::not_found(format!("app {} not found", req.app_id)));
            }
            let after = Some(req.page_token.as_str()).filter(|t| !t.is_empty());
            let raw = self.store.list_records(&req.app_id, KIND, after, size + 1).await.map_err(store_status)?;
            let mut segments = raw.into_iter().map(decode).collect::<Result<Vec<_>, _>>()?;
            let next_page_token = if segments.len() > size {
                segments.truncate(size);
                segments.last().map(|s| s.id.clone()).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(Response::new(ListSegmentsResponse { segments, next_page_token }))
        })
        .await
    }

    async fn list_segment_versions(&self, request: Request<ListSegmentVersionsRequest>) -> Result<Response<ListSegmentsResponse>, Status> {
        observe("ListSegmentVersions", async {
            let req = request.into_inner();
            let size = page_size(req.page_size)?;
            self.find(&req.app_id, &req.segment_id, 0).await?;
            let after: i32 = match req.page_token.as_str() {
                "" => 0,
                t => t.parse().map_err(|_| invalid(vec![FieldViolation::new("page_token", "is not a token this call returned")]))?,
            };
            let raw = self.store.list_record_versions(&req.app_id, KIND, &req.segment_id, after, size + 1).await.map_err(store_status)?;
            let mut segments = raw.into_iter().map(decode).collect::<Result<Vec<_>, _>>()?;
            let next_page_token = if segments.len() > size {
                segments.truncate(size);
                segments.last().map(|s| s.version.to_string()).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(Response::new(ListSegmentsResponse { segments, next_page_token }))
        })
        .await
    }

    async fn delete_segment(&self, request: Request<DeleteSegmentRequest>) -> Result<Response<Segment>, Status> {
        observe("DeleteSegment", async {
            let req = request.into_inner();
            let s = self.find(&req.app_id, &req.segment_id, 0).await?;
            let latest = self.store.delete_record(&req.app_id, KIND, &req.segment_id).await.map_err(store_status)?;
            for v in 1..=latest.unwrap_or(0) {
                self.store.delete_members(&req.app_id, &segments::member_set(&s.id, v)).await.map_err(store_status)?;
            }
            for r in s.segment_groups.iter().flat_map(|l| &l.groups).flat_map(|g| &g.source_segments) {
                let _ = self.store.set_record_use(&req.app_id, KIND, &r.id, &format!("segment {}", s.id), false).await;
            }
            Ok(Response::new(s))
        })
        .await
    }

    async fn get_segment_size(&self, request: Request<GetSegmentRequest>) -> Result<Response<SegmentSize>, Status> {
        observe("GetSegmentSize", async {
            let req = request.into_inner();
            let s = self.find(&req.app_id, &req.segment_id, req.version).await?;
            let mut stream = self.members(&s, segments::PAGE).await?;
            let mut size = 0i64;
            while let Some(page) = stream.next_page().await {
                size += page.map_err(store_status)?.len() as i64;
            }
            Ok(Response::new(SegmentSize { segment_id: s.id, version: s.version, size, scanned: stream.scanned as i64 }))
        })
        .await
    }

    type ExportSegmentStream = ExportStream;

    async fn export_segment(&self, request: Request<ExportSegmentRequest>) -> Result<Response<Self::ExportSegmentStream>, Status> {
        observe("ExportSegment", async {
            let req = request.into_inner();
            let size = match req.page_size {
                0 => segments::PAGE,
                n if n < 0 => return Err(invalid(vec![FieldViolation::new("page_size", "must not be negative")])),
                n => (n as usize).min(10_000),
            };
            let s = self.find(&req.app_id, &req.segment_id, req.version).await?;
            let mut stream = self.members(&s, segments::PAGE).await?;
            let mut job = jobs::Export::start(self.store.clone(), &s.app_id, &s.id, s.version).await.map_err(store_status)?;
            let (tx, rx) = mpsc::channel(2);
            tokio::spawn(async move {
                let id = job.job.id.clone();
                let mut out = Vec::with_capacity(size);
                let gone = Some("the client stopped reading the export".to_string());
                while let Some(page) = stream.next_page().await {
                    match page {
                        Ok(members) => {
                            for e in members {
                                out.push(e);
                                if out.len() == size {
                                    let endpoints = std::mem::replace(&mut out, Vec::with_capacity(size));
                                    if tx.send(Ok(ExportSegmentResponse { endpoints, job_id: id.clone() })).await.is_err() {
                                        return job.end(gone).await;
                                    }
                                    job.sent(size).await;
                                }
                            }
                        }
                        Err(e) => {
                            let why = e.to_string();
                            let _ = tx.send(Err(store_status(e))).await;
                            return job.end(Some(why)).await;
                        }
                    }
                }
                let n = out.len();
                if n > 0 {
                    if tx.send(Ok(ExportSegmentResponse { endpoints: out, job_id: id })).await.is_err() {
                        return job.end(gone).await;
                    }
                    job.sent(n).await;
                }
                job.end(None).await;
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(rx)) as ExportStream))
        })
        .await
    }

    type ImportSegmentStream = JobStream;

    async fn import_segment(
        &self,
        request: Request<Streaming<ImportSegmentRequest>>,
    ) -> Result<Response<Self::ImportSegmentStream>, Status> {
        observe("ImportSegment", async {
            let mut upload = request.into_inner();
            let first = upload
                .message()
                .await?
                .ok_or_else(|| invalid(vec![FieldViolation::new("app_id", "the first message must name the app")]))?;
            let source = ImportSource { s3_url: String::new(), role_arn: String::new() };
            let (data_tx, failed_tx, mut progress_rx) = self.start_import(&first, source).await?;
            let (out_tx, out_rx) = mpsc::channel::<Result<ImportJob, Status>>(16);
            let _ = data_tx.send(first.data).await;
            // The upload is read by its own task; the job learns at the end whether it broke off.
            tokio::spawn(async move {
                let mut failed = None;
                loop {
                    match upload.message().await {
                        Ok(Some(m)) => {
                            if !m.data.is_empty() && data_tx.send(m.data).await.is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            failed = Some(format!("the upload broke off: {}", e.message()));
                            break;
                        }
                    }
                }
                drop(data_tx);
                let _ = failed_tx.send(failed);
            });
            tokio::spawn(async move {
                while let Some(job) = progress_rx.recv().await {
                    let done = job.state != JobState::Processing as i32;
                    if out_tx.send(Ok(job)).await.is_err() || done {
                        break;
                    }
                }
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(out_rx)) as JobStream))
        })
        .await
    }

    async fn get_import_job(&self, request: Request<GetImportJobRequest>) -> Result<Response<ImportJob>, Status> {
        observe("GetImportJob", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            let raw = self.store.get_blob(&req.app_id, import::JOB_KIND, &req.job_id).await.map_err(store_status)?;
            let raw = raw.ok_or_else(|| Status::not_found(format!("import job {} not found", req.job_id)))?;
            ImportJob::decode(raw.as_slice()).map(Response::new).map_err(|e| store_status(StoreError::from(e)))
        })
        .await
    }

    async fn list_import_jobs(&self, request: Request<ListJobsRequest>) -> Result<Response<ListImportJobsResponse>, Status> {
        observe("ListImportJobs", async {
            let req = request.into_inner();
            let size = self.jobs_request(&req).await?;
            let store = self.store.as_ref();
            let (started, next_page_token) =
                jobs::page::<ImportJob>(store, &req.app_id, jobs::IMPORT_INDEX, &req.segment_id, &req.page_token, size)
                    .await
                    .map_err(store_status)?;
            let mut out = Vec::with_capacity(started.len());
            for j in started {
                // Its progress, as the import last wrote it.
                let now = store.get_blob(&req.app_id, import::JOB_KIND, &j.id).await.map_err(store_status)?;
                out.push(match now {
                    Some(raw) => ImportJob::decode(raw.as_slice()).map_err(|e| store_status(StoreError::from(e)))?,
                    None => j,
                });
            }
            Ok(Response::new(ListImportJobsResponse { jobs: out, next_page_token }))
        })
        .await
    }

    async fn get_export_job(&self, request: Request<GetExportJobRequest>) -> Result<Response<ExportJob>, Status> {
        observe("GetExportJob", async {
            let req = request.into_inner();
            check_app_id(&req.app_id)?;
            let raw = self.store.get_record(&req.app_id, jobs::EXPORT_KIND, &req.job_id, None).await.map_err(store_status)?;
            let raw = raw.ok_or_else(|| Status::not_found(format!("export job {} not found", req.job_id)))?;
            let job = ExportJob::decode(raw.as_slice()).map_err(|e| store_status(StoreError::from(e)))?;
            Ok(Response::new(jobs::reported(job, chrono::Utc::now())))
        })
        .await
    }

    async fn list_export_jobs(&self, request: Request<ListJobsRequest>) -> Result<Response<ListExportJobsResponse>, Status> {
        observe("ListExportJobs", async {
            let req = request.into_inner();
            let size = self.jobs_request(&req).await?;
            let (found, next_page_token) =
                jobs::page::<ExportJob>(self.store.as_ref(), &req.app_id, jobs::EXPORT_KIND, &req.segment_id, &req.page_token, size)
                    .await
                    .map_err(store_status)?;
            let now = chrono::Utc::now();
            Ok(Response::new(ListExportJobsResponse { jobs: found.into_iter().map(|j| jobs::reported(j, now)).collect(), next_page_token }))
        })
        .await
    }
}

impl SegmentsService {
    /// Checks a job listing's app (and segment, when one is named); its page size.
    async fn jobs_request(&self, req: &ListJobsRequest) -> Result<usize, Status> {
        check_app_id(&req.app_id)?;
        let size = page_size(req.page_size)?;
        if req.segment_id.is_empty() {
            if self.store.get_app(&req.app_id).await.map_err(store_status)?.is_none() {
                return Err(Status::not_found(format!("app {} not found", req.app_id)));
            }
        } else {
            self.find(&req.app_id, &req.segment_id, 0).await?;
        }
        Ok(size)
    }
}
