//! `herald segments`: create segments from Pinpoint JSON definitions, import endpoint files as
//! segments (with a progress bar), and read sizes and members.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_stream::wrappers::ReceiverStream;

use super::client::ConnArgs;
use crate::domain::json;
use crate::proto::v1::{
    segments_client::SegmentsClient, CreateSegmentRequest, DeleteSegmentRequest, Endpoint, ExportSegmentRequest, GetImportJobRequest,
    GetSegmentRequest, ImportFormat, ImportJob, ImportSegmentRequest, JobState, ListSegmentsRequest, Segment, SegmentType,
    UpdateSegmentRequest,
};
use crate::segments::json::definition;

#[derive(Debug, Subcommand)]
pub enum SegmentsCommand {
    /// Create a dynamic segment from a Pinpoint `WriteSegmentRequest` JSON file.
    Create {
        #[arg(long)]
        app: String,
        file: PathBuf,
    },
    /// A new version of a dynamic segment from a Pinpoint `WriteSegmentRequest` JSON file.
    Update {
        #[arg(long)]
        app: String,
        id: String,
        file: PathBuf,
    },
    /// Import a CSV or JSON-lines file of endpoints as a segment (a new one, or a new version
    /// of an imported segment with --segment).
    Import {
        #[arg(long)]
        app: String,
        file: PathBuf,
        /// The new segment's name (default: the file name).
        #[arg(long, conflicts_with = "segment")]
        name: Option<String>,
        #[arg(long)]
        segment: Option<String>,
        /// csv or jsonl; by default from the file name.
        #[arg(long, value_parser = ["csv", "jsonl"])]
        format: Option<String>,
    },
    /// An import job's state.
    Job {
        #[arg(long)]
        app: String,
        job_id: String,
    },
    List {
        #[arg(long)]
        app: String,
    },
    Get {
        #[arg(long)]
        app: String,
        id: String,
        #[arg(long, default_value_t = 0)]
        version: i32,
    },
    /// The exact number of members.
    Size {
        #[arg(long)]
        app: String,
        id: String,
        #[arg(long, default_value_t = 0)]
        version: i32,
    },
    /// Write the members to stdout (or --output): JSON lines of Pinpoint endpoints, or CSV with
    /// Pinpoint's import columns (one value per attribute, as Pinpoint's CSV carries).
    Export {
        #[arg(long)]
        app: String,
        id: String,
        #[arg(long, default_value_t = 0)]
        version: i32,
        #[arg(long, value_parser = ["csv", "jsonl"], default_value = "jsonl")]
        format: String,
        #[arg(long)]
        output: Option<PathBuf>,
    },
    Delete {
        #[arg(long)]
        app: String,
        id: String,
    },
}

fn summary(s: &Segment) -> String {
    let kind = if s.segment_type == SegmentType::Import as i32 { "imported" } else { "dynamic" };
    let size = s.import_definition.as_ref().map(|d| format!(", {} members", d.size)).unwrap_or_default();
    format!("{}  version {}  {kind}{size}  {}", s.id, s.version, s.name)
}

fn print_job(job: &ImportJob) {
    let state = JobState::try_from(job.state).map(|s| s.as_str_name().trim_start_matches("JOB_STATE_")).unwrap_or("UNKNOWN");
    println!(
        "job {}: {state}; segment {} version {}; {} rows read, {} imported, {} refused",
        job.id, job.segment_id, job.segment_version, job.total_rows, job.imported, job.failed
    );
    if !job.failure.is_empty() {
        println!("  failed: {}", job.failure);
    }
    for e in &job.errors {
        println!("  line {}: {}", e.line, e.reason);
    }
    if job.failed as usize > job.errors.len() {
        println!("  ... and {} more refused rows", job.failed as usize - job.errors.len());
    }
}

pub async fn run(conn: ConnArgs, command: SegmentsCommand) -> anyhow::Result<()> {
    let mut client = SegmentsClient::new(conn.channel().await?).max_decoding_message_size(64 * 1024 * 1024);
    match command {
        SegmentsCommand::Create { app, file } => {
            let def = definition(&std::fs::read_to_string(&file)?).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let name =
                if def.name.is_empty() { file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default() } else { def.name };
            let req =
                CreateSegmentRequest { app_id: app, name, dimensions: def.dimensions, segment_groups: def.segment_groups, tags: def.tags };
            println!("{}", summary(&client.create_segment(conn.request(req)).await?.into_inner()));
        }
        SegmentsCommand::Update { app, id, file } => {
            let def = definition(&std::fs::read_to_string(&file)?).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let req = UpdateSegmentRequest {
                app_id: app,
                segment_id: id,
                name: def.name,
                dimensions: def.dimensions,
                segment_groups: def.segment_groups,
                tags: def.tags,
            };
            println!("{}", summary(&client.update_segment(conn.request(req)).await?.into_inner()));
        }
        SegmentsCommand::Import { app, file, name, segment, format } => {
            import(&conn, &mut client, app, file, name, segment, format).await?
        }
        SegmentsCommand::Job { app, job_id } => {
            print_job(&client.get_import_job(conn.request(GetImportJobRequest { app_id: app, job_id })).await?.into_inner());
        }
        SegmentsCommand::List { app } => {
            let mut token = String::new();
            loop {
                let page = client
                    .list_segments(conn.request(ListSegmentsRequest { app_id: app.clone(), page_size: 100, page_token: token }))
                    .await?
                    .into_inner();
                for s in &page.segments {
                    println!("{}", summary(s));
                }
                token = page.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
        }
        SegmentsCommand::Get { app, id, version } => {
            let s = client.get_segment(conn.request(GetSegmentRequest { app_id: app, segment_id: id, version })).await?.into_inner();
            println!("{}", summary(&s));
            println!("{s:#?}");
        }
        SegmentsCommand::Size { app, id, version } => {
            let s = client.get_segment_size(conn.request(GetSegmentRequest { app_id: app, segment_id: id, version })).await?.into_inner();
            println!("{} members (version {}, {} endpoints read)", s.size, s.version, s.scanned);
        }
        SegmentsCommand::Export { app, id, version, format, output } => {
            let mut out: Box<dyn Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let req = || ExportSegmentRequest { app_id: app.clone(), segment_id: id.clone(), version, page_size: 1_000 };
            if format == "csv" {
                // A first pass finds every column, so the header names them all.
                let mut columns = BTreeSet::new();
                let mut stream = client.export_segment(conn.request(req())).await?.into_inner();
                while let Some(page) = stream.message().await? {
                    page.endpoints.iter().for_each(|e| csv_columns(e, &mut columns));
                }
                let columns: Vec<String> = FIXED.iter().map(|c| c.to_string()).chain(columns).collect();
                let mut w = csv::Writer::from_writer(out);
                w.write_record(&columns)?;
                let mut stream = client.export_segment(conn.request(req())).await?.into_inner();
                let mut truncated = 0;
                while let Some(page) = stream.message().await? {
                    for e in &page.endpoints {
                        w.write_record(csv_row(e, &columns, &mut truncated))?;
                    }
                }
                w.flush()?;
                if truncated > 0 {
                    eprintln!("herald: {truncated} attributes had several values; CSV carries the first (use --format jsonl for all)");
                }
            } else {
                let mut stream = client.export_segment(conn.request(req())).await?.into_inner();
                while let Some(page) = stream.message().await? {
                    for e in &page.endpoints {
                        writeln!(out, "{}", json::endpoint(e))?;
                    }
                }
                out.flush()?;
            }
        }
        SegmentsCommand::Delete { app, id } => {
            let s = client.delete_segment(conn.request(DeleteSegmentRequest { app_id: app, segment_id: id })).await?.into_inner();
            println!("deleted {}", summary(&s));
        }
    }
    Ok(())
}

/// Columns every export has, before the attribute, metric and user-attribute columns.
const FIXED: [&str; 20] = [
    "Id",
    "ChannelType",
    "Address",
    "EndpointStatus",
    "OptOut",
    "EffectiveDate",
    "User.UserId",
    "Location.City",
    "Location.Country",
    "Location.Latitude",
    "Location.Longitude",
    "Location.PostalCode",
    "Location.Region",
    "Demographic.AppVersion",
    "Demographic.Locale",
    "Demographic.Make",
    "Demographic.Model",
    "Demographic.ModelVersion",
    "Demographic.Platform",
    "Demographic.Timezone",
];

fn csv_columns(e: &Endpoint, out: &mut BTreeSet<String>) {
    out.extend(e.attributes.keys().map(|k| format!("Attributes.{k}")));
    out.extend(e.metrics.keys().map(|k| format!("Metrics.{k}")));
    if let Some(u) = &e.user {
        out.extend(u.user_attributes.keys().map(|k| format!("User.UserAttributes.{k}")));
    }
}

fn csv_row(e: &Endpoint, columns: &[String], truncated: &mut usize) -> Vec<String> {
    let j = json::endpoint(e);
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut first = |values: Option<&crate::proto::v1::AttributeValues>| {
        let values = values.map(|v| v.values.as_slice()).unwrap_or_default();
        if values.len() > 1 {
            *truncated += 1;
        }
        values.first().cloned().unwrap_or_default()
    };
    columns
        .iter()
        .map(|c| {
            if let Some(k) = c.strip_prefix("Attributes.") {
                first(e.attributes.get(k))
            } else if let Some(k) = c.strip_prefix("User.UserAttributes.") {
                first(e.user.as_ref().and_then(|u| u.user_attributes.get(k)))
            } else if let Some(k) = c.strip_prefix("Metrics.") {
                e.metrics.get(k).map(|m| m.to_string()).unwrap_or_default()
            } else {
                let mut v = &j;
                for part in c.split('.') {
                    v = v.get(part).unwrap_or(&serde_json::Value::Null);
                }
                text(v)
            }
        })
        .collect()
}

async fn import(
    conn: &ConnArgs,
    client: &mut SegmentsClient<tonic::transport::Channel>,
    app: String,
    file: PathBuf,
    name: Option<String>,
    segment: Option<String>,
    format: Option<String>,
) -> anyhow::Result<()> {
    let shown = file.display().to_string();
    let format = match format.as_deref() {
        Some("csv") => ImportFormat::Csv,
        Some(_) => ImportFormat::Json,
        None => match crate::domain::import::Format::from_path(&shown) {
            Some(crate::domain::import::Format::Csv) => ImportFormat::Csv,
            Some(_) => ImportFormat::Json,
            None => anyhow::bail!("cannot tell the format of {shown}: use --format csv|jsonl"),
        },
    };
    let bytes = std::fs::metadata(&file)?.len();
    let name = match (&segment, name) {
        (Some(_), _) => String::new(),
        (None, Some(n)) => n,
        (None, None) => file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "import".into()),
    };
    let first =
        ImportSegmentRequest { app_id: app, name, segment_id: segment.unwrap_or_default(), format: format as i32, ..Default::default() };
    let (tx, rx) = tokio::sync::mpsc::channel::<ImportSegmentRequest>(8);
    tx.send(first).await?;
    let bar = ProgressBar::new(bytes);
    bar.set_style(ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} sent ({bytes_per_sec}) {msg}",
    )?);
    let upload_bar = bar.clone();
    let uploader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut f = std::fs::File::open(&file)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            upload_bar.inc(n as u64);
            if tx.blocking_send(ImportSegmentRequest { data: buf[..n].to_vec(), ..Default::default() }).is_err() {
                return Ok(());
            }
        }
    });
    let mut states = client.import_segment(conn.request(ReceiverStream::new(rx))).await?.into_inner();
    let mut last = None;
    while let Some(job) = states.message().await? {
        bar.set_message(format!("{} rows, {} imported, {} refused", job.total_rows, job.imported, job.failed));
        last = Some(job);
    }
    uploader.await??;
    bar.finish_and_clear();
    let job = last.ok_or_else(|| anyhow::anyhow!("the daemon reported no job"))?;
    print_job(&job);
    if job.state != JobState::Completed as i32 {
        anyhow::bail!("the import failed");
    }
    Ok(())
}
