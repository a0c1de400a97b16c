//! Segments through the daemon on both backends: every dimension, operator and combination of
//! tests/fixtures/segments.json (definitions in Pinpoint's JSON) must have exactly its expected
//! members; imports with bad rows; versions, sizes, exports and deletes.

#[macro_use]
mod common;

use std::collections::HashMap;

use common::{Backend, Daemon};
use herald::proto::v1::{
    segments_client::SegmentsClient, AttributeDimension, AttributeType, ComparisonOperator, CreateSegmentRequest, DeleteSegmentRequest,
    ExportSegmentRequest, GetExportJobRequest, GetImportJobRequest, GetSegmentRequest, GpsCoordinates, GpsPointDimension, ImportFormat,
    ImportJob, ImportSegmentRequest, JobState, ListJobsRequest, ListSegmentVersionsRequest, ListSegmentsRequest, MetricDimension,
    SegmentDimensions, SegmentGroupList, SegmentLocation, SegmentType, UpdateSegmentRequest,
};
use herald::segments::json::definition;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

type Client = SegmentsClient<Channel>;

/// Streams a file into ImportSegment in small chunks; returns every job state received.
async fn import(d: &Daemon, c: &mut Client, first: ImportSegmentRequest, file: &str) -> Vec<ImportJob> {
    let mut msgs = vec![first];
    // Small pieces, cut anywhere (even inside a row), as a client may send them.
    for piece in file.as_bytes().chunks(7) {
        msgs.push(ImportSegmentRequest { data: piece.to_vec(), ..Default::default() });
    }
    let mut stream = c.import_segment(d.req(futures::stream::iter(msgs))).await.unwrap().into_inner();
    let mut states = Vec::new();
    while let Some(job) = stream.message().await.unwrap() {
        states.push(job);
    }
    states
}

async fn members(d: &Daemon, c: &mut Client, app: &str, id: &str, version: i32) -> Vec<String> {
    let req = ExportSegmentRequest { app_id: app.into(), segment_id: id.into(), version, page_size: 2 };
    let mut stream = c.export_segment(d.req(req)).await.unwrap().into_inner();
    let mut ids = Vec::new();
    while let Some(page) = stream.message().await.unwrap() {
        assert!(page.endpoints.len() <= 2, "pages hold at most page_size endpoints");
        ids.extend(page.endpoints.into_iter().map(|e| e.id));
    }
    ids.sort();
    ids
}

/// Replaces `"@name"` segment references by the id the case of that name got.
fn resolve_refs(v: &mut serde_json::Value, ids: &HashMap<String, String>) {
    match v {
        serde_json::Value::String(s) if s.starts_with('@') => *s = ids[&s[1..]].clone(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| resolve_refs(x, ids)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| resolve_refs(x, ids)),
        _ => {}
    }
}

async fn fixture_members_match(backend: Backend) {
    let d = Daemon::start(backend);
    let app = d.create_app("segments").await.app_id;
    let mut c = SegmentsClient::new(d.channel().await);
    let fixture: serde_json::Value = serde_json::from_str(include_str!("fixtures/segments.json")).unwrap();
    // The endpoints arrive as an imported segment of everyone (JSON lines).
    let lines: Vec<String> = fixture["endpoints"].as_array().unwrap().iter().map(|e| e.to_string()).collect();
    let first = ImportSegmentRequest { app_id: app.clone(), name: "all".into(), format: ImportFormat::Json as i32, ..Default::default() };
    let states = import(&d, &mut c, first, &(lines.join("\n") + "\n")).await;
    let done = states.last().unwrap();
    assert_eq!(done.state, JobState::Completed as i32, "{done:?}");
    assert_eq!((done.imported, done.failed), (6, 0));

    let mut ids: HashMap<String, String> = HashMap::new();
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let id = if let Some(csv) = case["import_csv"].as_str() {
            let first =
                ImportSegmentRequest { app_id: app.clone(), name: name.into(), format: ImportFormat::Csv as i32, ..Default::default() };
            let states = import(&d, &mut c, first, csv).await;
            assert_eq!(states.last().unwrap().state, JobState::Completed as i32, "{name}: {states:?}");
            states[0].segment_id.clone()
        } else {
            let mut json = case["segment"].clone();
            resolve_refs(&mut json, &ids);
            let def = definition(&json.to_string()).unwrap_or_else(|e| panic!("{name}: {e}"));
            let req = CreateSegmentRequest {
                app_id: app.clone(),
                name: name.into(),
                dimensions: def.dimensions,
                segment_groups: def.segment_groups,
                tags: def.tags,
            };
            c.create_segment(d.req(req)).await.unwrap_or_else(|e| panic!("{name}: {e:?}")).into_inner().id
        };
        let expected: Vec<String> = case["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect();
        assert_eq!(members(&d, &mut c, &app, &id, 0).await, expected, "case {name}");
        let size = c.get_segment_size(d.req(GetSegmentRequest { app_id: app.clone(), segment_id: id.clone(), version: 0 })).await.unwrap();
        assert_eq!(size.into_inner().size, expected.len() as i64, "case {name}");
        ids.insert(name.to_string(), id);
    }

    // A source in use cannot be deleted; once its user is gone, it can.
    let gold = ids["gold"].clone();
    let err = c.delete_segment(d.req(DeleteSegmentRequest { app_id: app.clone(), segment_id: gold.clone() })).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    for user in ["sources-all", "sources-any", "sources-none", "source-plus-dimensions"] {
        c.delete_segment(d.req(DeleteSegmentRequest { app_id: app.clone(), segment_id: ids[user].clone() })).await.unwrap();
    }
    c.delete_segment(d.req(DeleteSegmentRequest { app_id: app.clone(), segment_id: gold.clone() })).await.unwrap();
    let gone = c.get_segment(d.req(GetSegmentRequest { app_id: app.clone(), segment_id: gold, version: 0 })).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // Listing pages through every segment.
    let (mut listed, mut token) = (0, String::new());
    loop {
        let page = c
            .list_segments(d.req(ListSegmentsRequest { app_id: app.clone(), page_size: 10, page_token: token.clone() }))
            .await
            .unwrap()
            .into_inner();
        listed += page.segments.len();
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(listed, 1 + 42 - 5, "the import of everyone, the cases, less the five deleted");
}

async fn versions_imports_and_validation(backend: Backend) {
    let d = Daemon::start(backend);
    let app = d.create_app("versions").await.app_id;
    let mut c = SegmentsClient::new(d.channel().await);

    // Bad rows are reported with their line and reason; the good ones are imported.
    let file = "ChannelType,Address,Id,Attributes.Plan,Location.Country\n\
                EMAIL,ana@example.com,a1,Gold,US\n\
                FAX,555,a2,Gold,US\n\
                EMAIL,not-an-address,a3,Gold,US\n\
                EMAIL,cy@example.com,,Silver,DE\n\
                SMS,+14255550100,a5,Gold\n";
    let first = ImportSegmentRequest { app_id: app.clone(), name: "list".into(), format: ImportFormat::Csv as i32, ..Default::default() };
    let states = import(&d, &mut c, first, file).await;
    assert_eq!(states[0].state, JobState::Processing as i32, "the job is reported as soon as it starts");
    let job = states.last().unwrap().clone();
    assert_eq!(job.state, JobState::Completed as i32, "{job:?}");
    assert_eq!((job.total_rows, job.imported, job.failed), (5, 2, 3), "{job:?}");
    let lines: Vec<u64> = job.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3, 4, 6], "{job:?}");
    assert!(job.errors[0].reason.contains("FAX"), "{job:?}");
    assert!(job.errors[1].reason.contains("address"), "{job:?}");
    let followed = c.get_import_job(d.req(GetImportJobRequest { app_id: app.clone(), job_id: job.id.clone() })).await.unwrap().into_inner();
    assert_eq!(followed, job);
    let seg =
        c.get_segment(d.req(GetSegmentRequest { app_id: app.clone(), segment_id: job.segment_id.clone(), version: 0 })).await.unwrap();
    let seg = seg.into_inner();
    assert_eq!(seg.segment_type, SegmentType::Import as i32);
    let def = seg.import_definition.clone().unwrap();
    assert_eq!((def.size, def.channel_counts["EMAIL"], def.job_id.as_str()), (2, 2, job.id.as_str()));
    let members_v1 = members(&d, &mut c, &app, &seg.id, 0).await;
    assert_eq!(members_v1.len(), 2);
    assert!(members_v1.contains(&"a1".to_string()));

    // A new version of the imported segment from another file; version 1 keeps its members.
    let first =
        ImportSegmentRequest { app_id: app.clone(), segment_id: seg.id.clone(), format: ImportFormat::Json as i32, ..Default::default() };
    let file = "{\"ChannelType\":\"EMAIL\",\"Address\":\"dee@example.com\",\"Id\":\"a6\"}\n{broken\n";
    let states = import(&d, &mut c, first, file).await;
    let job2 = states.last().unwrap();
    assert_eq!((job2.state, job2.imported, job2.failed, job2.segment_version), (JobState::Completed as i32, 1, 1, 2), "{job2:?}");
    assert_eq!(members(&d, &mut c, &app, &seg.id, 2).await, vec!["a6"]);
    assert_eq!(members(&d, &mut c, &app, &seg.id, 1).await, members_v1);

    // A file that cannot be read at all fails the job, and writes no segment version.
    let first = ImportSegmentRequest { app_id: app.clone(), name: "bad".into(), format: ImportFormat::Csv as i32, ..Default::default() };
    let states = import(&d, &mut c, first, "Id,Nickname\nx,y\n").await;
    let failed = states.last().unwrap();
    assert_eq!(failed.state, JobState::Failed as i32);
    assert!(failed.failure.contains("Nickname"), "{failed:?}");
    let err = c.get_segment(d.req(GetSegmentRequest { app_id: app.clone(), segment_id: failed.segment_id.clone(), version: 0 })).await;
    assert_eq!(err.unwrap_err().code(), Code::NotFound);

    // Dynamic segments: every update is a new version; old versions keep their definition.
    let plan = |v: &str| SegmentDimensions {
        attributes: [("Plan".to_string(), AttributeDimension { attribute_type: AttributeType::Inclusive as i32, values: vec![v.into()] })]
            .into(),
        ..Default::default()
    };
    let created = c
        .create_segment(d.req(CreateSegmentRequest {
            app_id: app.clone(),
            name: "plan".into(),
            dimensions: Some(plan("Gold")),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let updated = c
        .update_segment(d.req(UpdateSegmentRequest {
            app_id: app.clone(),
            segment_id: created.id.clone(),
            dimensions: Some(plan("Silver")),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((updated.version, updated.name.as_str()), (2, "plan"));
    assert_eq!(members(&d, &mut c, &app, &created.id, 1).await, vec!["a1"]);
    let silver = members(&d, &mut c, &app, &created.id, 0).await;
    assert_eq!(silver.len(), 1, "{silver:?}");
    let versions = c
        .list_segment_versions(d.req(ListSegmentVersionsRequest {
            app_id: app.clone(),
            segment_id: created.id.clone(),
            page_size: 1,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((versions.segments.len(), versions.segments[0].version, versions.next_page_token.as_str()), (1, 1, "1"));

    // Validation names every bad field.
    let bad = SegmentDimensions {
        attributes: [
            ("Signup".to_string(), AttributeDimension { attribute_type: AttributeType::Between as i32, values: vec!["2026-01-01".into()] }),
            ("When".to_string(), AttributeDimension { attribute_type: AttributeType::Before as i32, values: vec!["yesterday".into()] }),
            ("Odd".to_string(), AttributeDimension { attribute_type: 42, values: vec!["x".into()] }),
        ]
        .into(),
        metrics: [("visits".to_string(), MetricDimension { comparison_operator: ComparisonOperator::Unspecified as i32, value: 1.0 })]
            .into(),
        location: Some(SegmentLocation {
            country: None,
            gps_point: Some(GpsPointDimension {
                coordinates: Some(GpsCoordinates { latitude: 91.0, longitude: 0.0 }),
                range_in_kilometers: 5.0,
            }),
        }),
        ..Default::default()
    };
    let err = c
        .create_segment(d.req(CreateSegmentRequest {
            app_id: app.clone(),
            name: "bad".into(),
            dimensions: Some(bad),
            segment_groups: Some(SegmentGroupList::default()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields: Vec<String> = err.get_details_bad_request().unwrap().field_violations.into_iter().map(|v| v.field).collect();
    fields.sort();
    for want in [
        "dimensions.attributes[Odd].attribute_type",
        "dimensions.attributes[Signup].values",
        "dimensions.attributes[When].values[0]",
        "dimensions.location.gps_point.coordinates.latitude",
        "dimensions.metrics[visits].comparison_operator",
        "segment_groups",
        "segment_groups.groups",
    ] {
        assert!(fields.iter().any(|f| f == want), "{want} missing from {fields:?}");
    }
    // More than 100 dimensions.
    let many = SegmentDimensions {
        attributes: (0..101)
            .map(|i| (format!("a{i}"), AttributeDimension { attribute_type: AttributeType::Inclusive as i32, values: vec!["x".into()] }))
            .collect(),
        ..Default::default()
    };
    let err = c
        .create_segment(d.req(CreateSegmentRequest {
            app_id: app.clone(),
            name: "many".into(),
            dimensions: Some(many),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(err.message().contains("at most 100"), "{err:?}");
    let err =
        c.get_segment(d.req(GetSegmentRequest { app_id: app.clone(), segment_id: created.id.clone(), version: 9 })).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// Import and export jobs listed app-wide and per segment, paged; an export a client abandons
/// ends FAILED.
async fn job_listings(backend: Backend) {
    let d = Daemon::start(backend);
    let app = d.create_app("jobs").await.app_id;
    let mut c = SegmentsClient::new(d.channel().await);
    let csv = |n: usize| {
        let mut f = "ChannelType,Address,Id\n".to_string();
        for i in 0..n {
            f.push_str(&format!("EMAIL,j{i}@example.com,j{i}\n"));
        }
        f
    };
    let first = ImportSegmentRequest { app_id: app.clone(), name: "a".into(), format: ImportFormat::Csv as i32, ..Default::default() };
    let a1 = import(&d, &mut c, first, &csv(6)).await.pop().unwrap();
    let again = ImportSegmentRequest {
        app_id: app.clone(),
        segment_id: a1.segment_id.clone(),
        format: ImportFormat::Csv as i32,
        ..Default::default()
    };
    let a2 = import(&d, &mut c, again, &csv(3)).await.pop().unwrap();
    let first = ImportSegmentRequest { app_id: app.clone(), name: "b".into(), format: ImportFormat::Csv as i32, ..Default::default() };
    let b1 = import(&d, &mut c, first, &csv(2)).await.pop().unwrap();
    let list = |segment: &str, size: i32, token: &str| ListJobsRequest {
        app_id: app.clone(),
        segment_id: segment.into(),
        page_size: size,
        page_token: token.into(),
    };
    let all = c.list_import_jobs(d.req(list("", 0, ""))).await.unwrap().into_inner();
    let mut want = vec![a1.clone(), a2.clone(), b1.clone()];
    want.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(all.jobs, want, "each job as it ended");
    assert!(all.next_page_token.is_empty());
    let of_a = c.list_import_jobs(d.req(list(&a1.segment_id, 0, ""))).await.unwrap().into_inner().jobs;
    assert_eq!(of_a.iter().map(|j| j.segment_version).collect::<Vec<_>>().len(), 2);
    assert!(of_a.iter().all(|j| j.segment_id == a1.segment_id));
    // Paged one at a time: every job once.
    let (mut token, mut seen) = (String::new(), Vec::new());
    loop {
        let page = c.list_import_jobs(d.req(list("", 1, &token))).await.unwrap().into_inner();
        seen.extend(page.jobs.into_iter().map(|j| j.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, want.iter().map(|j| j.id.clone()).collect::<Vec<_>>());
    assert_eq!(c.list_import_jobs(d.req(list("nope", 0, ""))).await.unwrap_err().code(), Code::NotFound);

    // Each export is a job: its id on every page, its count when it completes.
    let mut export_ids = Vec::new();
    for (segment, n) in [(&a1.segment_id, 3u64), (&b1.segment_id, 2)] {
        let req = ExportSegmentRequest { app_id: app.clone(), segment_id: segment.clone(), version: 0, page_size: 2 };
        let mut stream = c.export_segment(d.req(req)).await.unwrap().into_inner();
        let mut ids = Vec::new();
        while let Some(page) = stream.message().await.unwrap() {
            ids.push(page.job_id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "one job id on every page");
        let job = c.get_export_job(d.req(GetExportJobRequest { app_id: app.clone(), job_id: ids[0].clone() })).await.unwrap().into_inner();
        assert_eq!((job.state, job.exported, job.segment_id.as_str()), (JobState::Completed as i32, n, segment.as_str()), "{job:?}");
        assert!(!job.completion_date.is_empty());
        export_ids.push(ids[0].clone());
    }
    let exports = c.list_export_jobs(d.req(list("", 0, ""))).await.unwrap().into_inner().jobs;
    let mut listed: Vec<String> = exports.iter().map(|j| j.id.clone()).collect();
    export_ids.sort();
    listed.sort();
    assert_eq!(listed, export_ids);
    let of_b = c.list_export_jobs(d.req(list(&b1.segment_id, 0, ""))).await.unwrap().into_inner().jobs;
    assert_eq!((of_b.len(), of_b[0].exported), (1, 2));

    // A client that stops reading (beyond what the transport buffers): the job ends FAILED.
    let first = ImportSegmentRequest { app_id: app.clone(), name: "big".into(), format: ImportFormat::Csv as i32, ..Default::default() };
    let big = import(&d, &mut c, first, &csv(5_000)).await.pop().unwrap();
    let req = ExportSegmentRequest { app_id: app.clone(), segment_id: big.segment_id.clone(), version: 0, page_size: 1 };
    let mut stream = c.export_segment(d.req(req)).await.unwrap().into_inner();
    let job_id = stream.message().await.unwrap().unwrap().job_id;
    drop(stream);
    let start = std::time::Instant::now();
    loop {
        let job = c.get_export_job(d.req(GetExportJobRequest { app_id: app.clone(), job_id: job_id.clone() })).await.unwrap().into_inner();
        if job.state == JobState::Failed as i32 {
            assert!(job.failure.contains("stopped reading") && job.exported < 5_000, "{job:?}");
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "{job:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        c.get_export_job(d.req(GetExportJobRequest { app_id: app.clone(), job_id: "nope".into() })).await.unwrap_err().code(),
        Code::NotFound
    );
}

on_both_backends!(fixture_members_match, versions_imports_and_validation, job_listings);

/// An export whose daemon is killed (kill -9) stays PROCESSING in the store and is reported
/// FAILED once it has not been heard from for a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_cut_off_by_kill_9_is_reported_failed() {
    let d = Daemon::start(Backend::Embedded);
    let app = d.create_app("export-crash").await.app_id;
    let mut c = SegmentsClient::new(d.channel().await);
    let mut csv = "ChannelType,Address,Id\n".to_string();
    for i in 0..5_000 {
        csv.push_str(&format!("EMAIL,k{i}@example.com,k{i}\n"));
    }
    let first = ImportSegmentRequest { app_id: app.clone(), name: "big".into(), format: ImportFormat::Csv as i32, ..Default::default() };
    let seg = import(&d, &mut c, first, &csv).await.pop().unwrap().segment_id;
    let req = ExportSegmentRequest { app_id: app.clone(), segment_id: seg, version: 0, page_size: 1 };
    let mut stream = c.export_segment(d.req(req)).await.unwrap().into_inner();
    let job_id = stream.message().await.unwrap().unwrap().job_id;
    let d = d.crash_and_restart();
    let mut c = SegmentsClient::new(d.channel().await);
    let get = GetExportJobRequest { app_id: app.clone(), job_id: job_id.clone() };
    let job = c.get_export_job(d.req(get.clone())).await.unwrap().into_inner();
    assert_eq!(job.state, JobState::Processing as i32, "{job:?}");
    let heard = chrono::DateTime::parse_from_rfc3339(&job.updated_date).unwrap();
    let due = heard + chrono::Duration::seconds(herald::segments::jobs::STALE_AFTER.as_secs() as i64 + 1);
    let wait = (due.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    let job = c.get_export_job(d.req(get)).await.unwrap().into_inner();
    assert_eq!(job.state, JobState::Failed as i32, "{job:?}");
    assert!(job.failure.contains("stopped"), "{job:?}");
}
