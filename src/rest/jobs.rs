//! Pinpoint's import and export jobs over REST. CreateImportJob reads the endpoint files
//! under an `s3://` URL through the S3-compatible endpoint Herald is configured with and feeds
//! them to the same import the gRPC `ImportSegment` runs; CreateExportJob runs the gRPC
//! `ExportSegment` and writes its pages as newline-delimited JSON objects (Pinpoint's
//! EndpointResponse shape) under an `s3://` prefix. The job resources answer the Get…Job(s)
//! operations.

use serde_json::{json, Map, Value};
use tonic::Request;

use super::ops::Call;
use super::s3::{self, S3};
use super::RestError;
use crate::api::segments::ImportSource;
use crate::proto::v1::{self as pb, segments_server::Segments as _};

fn status(s: tonic::Status) -> RestError {
    RestError::from_status(s, &super::transcode::Trail::default())
}

fn job_status(state: i32) -> &'static str {
    match pb::JobState::try_from(state).unwrap_or(pb::JobState::Unspecified) {
        pb::JobState::Completed => "COMPLETED",
        pb::JobState::Failed => "FAILED",
        pb::JobState::Processing => "PROCESSING",
        pb::JobState::Unspecified => "CREATED",
    }
}

/// Herald's import job as Pinpoint's ImportJobResponse.
fn import_response(job: &pb::ImportJob, segment_name: Option<&str>) -> Value {
    let failures: Vec<String> = job
        .errors
        .iter()
        .map(|e| format!("line {}: {}", e.line, e.reason))
        .chain((!job.failure.is_empty()).then(|| job.failure.clone()))
        .collect();
    let done = job.state == pb::JobState::Completed as i32;
    let failed = job.state == pb::JobState::Failed as i32;
    let format = if job.format == pb::ImportFormat::Csv as i32 { "CSV" } else { "JSON" };
    let mut definition = json!({
        "DefineSegment": true, "RegisterEndpoints": true, "Format": format,
        "RoleArn": job.role_arn, "S3Url": job.s3_url, "SegmentId": job.segment_id,
    });
    if let Some(n) = segment_name {
        definition["SegmentName"] = Value::String(n.to_string());
    }
    let mut v = json!({
        "ApplicationId": job.app_id, "Id": job.id, "CreationDate": job.creation_date, "Type": "IMPORT",
        "JobStatus": job_status(job.state), "Definition": definition,
        "TotalPieces": 1, "CompletedPieces": i32::from(done), "FailedPieces": i32::from(failed),
        "TotalProcessed": job.imported + job.failed, "TotalFailures": job.failed, "Failures": failures,
    });
    if !job.completion_date.is_empty() {
        v["CompletionDate"] = Value::String(job.completion_date.clone());
    }
    v
}

fn out(member: &str, v: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(member.to_string(), v);
    m
}

pub async fn dispatch(c: &Call<'_>, op: &str) -> Result<Map<String, Value>, RestError> {
    let segments = &c.rest.services.segments;
    let app = c.input.get("ApplicationId").and_then(Value::as_str).unwrap_or_default().to_string();
    match op {
        "CreateImportJob" => create_import(c, &app).await,
        "GetImportJob" => {
            let job_id = c.input.get("JobId").and_then(Value::as_str).unwrap_or_default().to_string();
            let job =
                segments.get_import_job(Request::new(pb::GetImportJobRequest { app_id: app, job_id })).await.map_err(status)?.into_inner();
            Ok(out("ImportJobResponse", import_response(&job, None)))
        }
        "GetImportJobs" | "GetSegmentImportJobs" => {
            let req = list_request(c, app)?;
            let r = segments.list_import_jobs(Request::new(req)).await.map_err(status)?.into_inner();
            let items: Vec<Value> = r.jobs.iter().map(|j| import_response(j, None)).collect();
            let mut v = json!({ "Item": items });
            if !r.next_page_token.is_empty() {
                v["NextToken"] = Value::String(r.next_page_token);
            }
            Ok(out("ImportJobsResponse", v))
        }
        "CreateExportJob" => create_export(c, &app).await,
        "GetExportJob" => {
            let job_id = c.input.get("JobId").and_then(Value::as_str).unwrap_or_default().to_string();
            let job = segments
                .get_export_job(Request::new(pb::GetExportJobRequest { app_id: app.clone(), job_id }))
                .await
                .map_err(status)?
                .into_inner();
            Ok(out("ExportJobResponse", export_response(c, &job).await))
        }
        "GetExportJobs" | "GetSegmentExportJobs" => {
            let req = list_request(c, app)?;
            let r = segments.list_export_jobs(Request::new(req)).await.map_err(status)?.into_inner();
            let mut items = Vec::new();
            for j in &r.jobs {
                items.push(export_response(c, j).await);
            }
            let mut v = json!({ "Item": items });
            if !r.next_page_token.is_empty() {
                v["NextToken"] = Value::String(r.next_page_token);
            }
            Ok(out("ExportJobsResponse", v))
        }
        _ => Err(RestError::bad_request(format!("{op} is not served over Herald's REST API yet; its gRPC API has the counterpart"))),
    }
}

/// A job listing's request: the app, a segment when the operation names one, the page.
fn list_request(c: &Call<'_>, app: String) -> Result<pb::ListJobsRequest, RestError> {
    let text = |k: &str| c.input.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let page_size = match c.input.get("PageSize").and_then(Value::as_str) {
        None => 0,
        Some(p) => p.parse::<i32>().map_err(|_| RestError::bad_request(format!("PageSize '{p}' must be a number")))?,
    };
    Ok(pb::ListJobsRequest { app_id: app, segment_id: text("SegmentId"), page_size, page_token: text("Token") })
}

/// Where a REST export job writes, kept beside Herald's export job.
const EXPORT_DEFINITION: &str = "rest_export_definition";

/// Herald's export job as Pinpoint's ExportJobResponse.
async fn export_response(c: &Call<'_>, job: &pb::ExportJob) -> Value {
    let stored = c.rest.store.get_blob(&job.app_id, EXPORT_DEFINITION, &job.id).await.ok().flatten();
    let def: Value = stored.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_else(|| json!({}));
    let done = job.state == pb::JobState::Completed as i32;
    let failed = job.state == pb::JobState::Failed as i32;
    let mut v = json!({
        "ApplicationId": job.app_id, "Id": job.id, "CreationDate": job.creation_date, "Type": "EXPORT",
        "JobStatus": job_status(job.state),
        "Definition": {
            "RoleArn": def["RoleArn"].as_str().unwrap_or_default(), "S3UrlPrefix": def["S3UrlPrefix"].as_str().unwrap_or_default(),
            "SegmentId": job.segment_id, "SegmentVersion": job.segment_version,
        },
        "TotalPieces": def["Pieces"].as_u64().unwrap_or(0), "CompletedPieces": if done { def["Pieces"].as_u64().unwrap_or(0) } else { 0 },
        "FailedPieces": i32::from(failed), "TotalProcessed": job.exported, "TotalFailures": 0,
        "Failures": if job.failure.is_empty() { vec![] } else { vec![job.failure.clone()] },
    });
    if !job.completion_date.is_empty() {
        v["CompletionDate"] = Value::String(job.completion_date.clone());
    }
    v
}

async fn create_export(c: &Call<'_>, app: &str) -> Result<Map<String, Value>, RestError> {
    let s3 = c.rest.s3.clone().ok_or_else(|| {
        RestError::bad_request("export jobs write S3: configure s3_endpoint, s3_access_key_id and s3_secret_access_key on the daemon")
    })?;
    let def = c.input.get("ExportJobRequest").cloned().unwrap_or_default();
    let text = |k: &str| def.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let (prefix_url, role) = (text("S3UrlPrefix"), text("RoleArn"));
    if let Some(allowed) = &c.rest.s3_role_arn {
        if &role != allowed {
            return Err(RestError::new(
                403,
                "ForbiddenException",
                format!("ExportJobRequest.RoleArn {role} is not the role this daemon writes S3 as"),
            ));
        }
    }
    let segment_id = text("SegmentId");
    let version = def.get("SegmentVersion").and_then(Value::as_i64).unwrap_or(0) as i32;
    let (bucket, prefix) = s3::parse_url(&prefix_url).map_err(|e| RestError::bad_request(format!("ExportJobRequest.S3UrlPrefix: {e}")))?;
    if segment_id.is_empty() {
        return export_app(c, app, s3, (bucket, prefix), (prefix_url, role)).await;
    }
    let req = pb::ExportSegmentRequest { app_id: app.to_string(), segment_id: segment_id.clone(), version, page_size: 1_000 };
    let mut stream = c.rest.services.segments.export_segment(Request::new(req)).await.map_err(status)?.into_inner();
    use futures::StreamExt as _;
    let first = stream.next().await;
    let (job_id, first_page) = match first {
        Some(Ok(page)) => (page.job_id.clone(), Some(page)),
        Some(Err(s)) => return Err(status(s)),
        // An empty segment: the job ended at once; it is the segment's latest.
        None => {
            let list =
                pb::ListJobsRequest { app_id: app.to_string(), segment_id: segment_id.clone(), page_size: 1, page_token: String::new() };
            let r = c.rest.services.segments.list_export_jobs(Request::new(list)).await.map_err(status)?.into_inner();
            (r.jobs.first().map(|j| j.id.clone()).unwrap_or_default(), None)
        }
    };
    let key_prefix = job_prefix(&prefix, &job_id);
    let job_id_for_response = job_id.clone();
    let store = c.rest.store.clone();
    let app_id = app.to_string();
    let save = move |pieces: u64| {
        let (store, app_id, job_id) = (store.clone(), app_id.clone(), job_id.clone());
        let body = json!({ "S3UrlPrefix": prefix_url, "RoleArn": role, "Pieces": pieces }).to_string();
        async move { store.put_blob(&app_id, EXPORT_DEFINITION, &job_id, body.as_bytes()).await }
    };
    save(0).await.map_err(|e| RestError::from_status(crate::api::store_status(e), &super::transcode::Trail::default()))?;
    let model = super::model::Model::get();
    let desc = c.rest.descriptor("Endpoint");
    tokio::spawn(async move {
        let mut piece = 0u64;
        let mut page = first_page;
        while let Some(p) = page.take() {
            let body = json_lines(model, &desc, &p.endpoints);
            if let Err(e) = s3.put(&bucket, &format!("{key_prefix}part-{piece:05}.json"), body).await {
                // Dropping the stream ends Herald's job as failed.
                tracing::warn!(error = %e, "An export job cannot write to S3.");
                return;
            }
            piece += 1;
            let _ = save(piece).await;
            page = match stream.next().await {
                Some(Ok(p)) => Some(p),
                _ => None,
            };
        }
    });
    let req = pb::GetExportJobRequest { app_id: app.to_string(), job_id: job_id_for_response };
    let job = c.rest.services.segments.get_export_job(Request::new(req)).await.map_err(status)?.into_inner();
    Ok(out("ExportJobResponse", export_response(c, &job).await))
}

async fn create_import(c: &Call<'_>, app: &str) -> Result<Map<String, Value>, RestError> {
    let s3 = c.rest.s3.clone().ok_or_else(|| {
        RestError::bad_request("import jobs read S3: configure s3_endpoint, s3_access_key_id and s3_secret_access_key on the daemon")
    })?;
    let def = c.input.get("ImportJobRequest").cloned().unwrap_or_default();
    let text = |k: &str| def.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let flag = |k: &str| def.get(k).and_then(Value::as_bool);
    let (url, role) = (text("S3Url"), text("RoleArn"));
    if let Some(allowed) = &c.rest.s3_role_arn {
        if &role != allowed {
            return Err(RestError::new(
                403,
                "ForbiddenException",
                format!("ImportJobRequest.RoleArn {role} is not the role this daemon reads S3 as"),
            ));
        }
    }
    if !text("ExternalId").is_empty() {
        return Err(RestError::bad_request("ImportJobRequest.ExternalId: Herald assumes no IAM role, so it takes no external id"));
    }
    if flag("RegisterEndpoints") == Some(false) {
        return Err(RestError::bad_request("ImportJobRequest.RegisterEndpoints false: Herald writes the endpoints it imports"));
    }
    let (segment_id, name) = (text("SegmentId"), text("SegmentName"));
    if segment_id.is_empty() && (flag("DefineSegment") != Some(true) || name.is_empty()) {
        return Err(RestError::bad_request(
            "ImportJobRequest: Herald imports into a segment: give DefineSegment true with SegmentName (a new segment), or SegmentId (a new version)",
        ));
    }
    let format = match text("Format").as_str() {
        "CSV" => pb::ImportFormat::Csv,
        _ => pb::ImportFormat::Json,
    };
    let (bucket, prefix) = s3::parse_url(&url).map_err(|e| RestError::bad_request(format!("ImportJobRequest.S3Url: {e}")))?;
    let keys: Vec<String> = s3
        .list(&bucket, &prefix)
        .await
        .map_err(|e| RestError::bad_request(format!("ImportJobRequest.S3Url: {e}")))?
        .into_iter()
        .filter(|k| !k.ends_with('/'))
        .collect();
    if keys.is_empty() {
        return Err(RestError::bad_request(format!("ImportJobRequest.S3Url: no objects under {url}")));
    }
    let first = pb::ImportSegmentRequest {
        app_id: app.to_string(),
        name: if segment_id.is_empty() { name.clone() } else { String::new() },
        segment_id,
        format: format as i32,
        ..Default::default()
    };
    let source = ImportSource { s3_url: url, role_arn: role };
    let (data, failed, mut progress) = c.rest.services.segments.start_import(&first, source).await.map_err(status)?;
    let job = progress.recv().await.ok_or_else(|| RestError::new(500, "InternalServerErrorException", "the import did not start"))?;
    tokio::spawn(feed(s3, bucket, keys, format, data, failed));
    Ok(out("ImportJobResponse", import_response(&job, (!name.is_empty()).then_some(name.as_str()))))
}

/// Reads each object and hands its bytes to the import; CSV files after the first drop their
/// header row when it is the first file's (several files are one table).
async fn feed(
    s3: S3,
    bucket: String,
    keys: Vec<String>,
    format: pb::ImportFormat,
    data: tokio::sync::mpsc::Sender<Vec<u8>>,
    failed: tokio::sync::oneshot::Sender<Option<String>>,
) {
    let mut header: Option<Vec<u8>> = None;
    for key in keys {
        let body = match s3.get(&bucket, &key).await {
            Ok(b) => b.to_vec(),
            Err(e) => {
                let _ = failed.send(Some(e.to_string()));
                return;
            }
        };
        let mut body = body;
        if format == pb::ImportFormat::Csv {
            let end = body.iter().position(|&b| b == b'\n').map_or(body.len(), |i| i + 1);
            let this = body[..end].to_vec();
            match &header {
                None => header = Some(this),
                Some(h) if h.trim_ascii_end() == this.trim_ascii_end() => {
                    body.drain(..end);
                }
                Some(_) => {
                    let _ = failed.send(Some(format!("s3://{bucket}/{key} has another header row than the first file")));
                    return;
                }
            }
        }
        if !body.ends_with(b"\n") {
            body.push(b'\n');
        }
        if data.send(body).await.is_err() {
            return;
        }
    }
    drop(data);
    let _ = failed.send(None);
}

/// Endpoints as Pinpoint's EndpointResponse JSON, one per line.
fn json_lines(model: &super::model::Model, desc: &prost_reflect::MessageDescriptor, endpoints: &[pb::Endpoint]) -> Vec<u8> {
    let mut body = Vec::new();
    for e in endpoints {
        let d =
            prost_reflect::DynamicMessage::decode(desc.clone(), prost::Message::encode_to_vec(e).as_slice()).expect("an endpoint decodes");
        body.extend(super::transcode::encode(model, "EndpointResponse", &d).to_string().into_bytes());
        body.push(b'\n');
    }
    body
}

/// Where an export goes: the object key prefix under its job.
fn job_prefix(prefix: &str, job_id: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        format!("{prefix}{job_id}/")
    } else {
        format!("{prefix}/{job_id}/")
    }
}

/// Pinpoint's export with no SegmentId: every endpoint of the app, page by page.
async fn export_app(
    c: &Call<'_>,
    app: &str,
    s3: S3,
    (bucket, prefix): (String, String),
    (prefix_url, role): (String, String),
) -> Result<Map<String, Value>, RestError> {
    let store = c.rest.store.clone();
    let store_error = |e| RestError::from_status(crate::api::store_status(e), &super::transcode::Trail::default());
    if store.get_app(app).await.map_err(store_error)?.is_none() {
        return Err(RestError::not_found(format!("app {app} not found")));
    }
    let mut job = crate::segments::jobs::Export::start(store.clone(), app, "", 0).await.map_err(store_error)?;
    let job_id = job.job.id.clone();
    let save = {
        let (store, app, job_id) = (store.clone(), app.to_string(), job_id.clone());
        move |pieces: u64| {
            let (store, app, job_id) = (store.clone(), app.clone(), job_id.clone());
            let body = json!({ "S3UrlPrefix": prefix_url, "RoleArn": role, "Pieces": pieces }).to_string();
            async move { store.put_blob(&app, EXPORT_DEFINITION, &job_id, body.as_bytes()).await }
        }
    };
    save(0).await.map_err(store_error)?;
    let first = job.job.clone();
    let key_prefix = job_prefix(&prefix, &job_id);
    let desc = c.rest.descriptor("Endpoint");
    let app_id = app.to_string();
    tokio::spawn(async move {
        let model = super::model::Model::get();
        let mut cursor = None;
        let mut piece = 0u64;
        loop {
            let (page, next) = match store.scan_endpoints(&app_id, cursor.take(), 1_000).await {
                Ok(p) => p,
                Err(e) => return job.end(Some(format!("the store failed: {e}"))).await,
            };
            if !page.is_empty() {
                let key = format!("{key_prefix}part-{piece:05}.json");
                if let Err(e) = s3.put(&bucket, &key, json_lines(model, &desc, &page)).await {
                    return job.end(Some(e.to_string())).await;
                }
                piece += 1;
                let _ = save(piece).await;
                job.sent(page.len()).await;
            }
            match next {
                Some(n) => cursor = Some(n),
                None => return job.end(None).await,
            }
        }
    });
    Ok(out("ExportJobResponse", export_response(c, &first).await))
}
