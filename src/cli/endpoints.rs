//! `herald endpoints put|get|delete|user|import`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_stream::wrappers::ReceiverStream;

use super::client::ConnArgs;
use crate::domain::endpoint::parse_channel;
use crate::domain::import::{self, Format, Row};
use crate::domain::json;
use crate::proto::v1::{
    AttributeValues, DeleteEndpointRequest, DeleteUserEndpointsRequest, Endpoint, EndpointDemographic, EndpointLocation, EndpointStatus,
    EndpointUser, GetEndpointRequest, GetUserEndpointsRequest, ImportEndpointsRequest, OptOut, UpdateEndpointRequest,
};

/// A rejected import row: its line and why.
type LineError = (u64, String);

/// Endpoints per message of the import stream.
const IMPORT_MESSAGE: usize = 500;

#[derive(Debug, Subcommand)]
pub enum EndpointsCommand {
    /// Create or update an endpoint (fields not given keep their stored values).
    Put {
        #[arg(long)]
        app: String,
        id: String,
        /// EMAIL, SMS, VOICE, APNS, APNS_SANDBOX, APNS_VOIP, APNS_VOIP_SANDBOX, GCM, BAIDU, ADM, CUSTOM, IN_APP.
        #[arg(long, value_parser = channel)]
        channel_type: Option<i32>,
        #[arg(long)]
        address: Option<String>,
        #[arg(long)]
        user_id: Option<String>,
        /// NAME=VALUE (repeatable; repeating a name adds values).
        #[arg(long = "attribute", value_parser = key_value)]
        attributes: Vec<(String, String)>,
        /// NAME=VALUE (repeatable).
        #[arg(long = "user-attribute", value_parser = key_value)]
        user_attributes: Vec<(String, String)>,
        /// NAME=NUMBER (repeatable).
        #[arg(long = "metric", value_parser = key_number)]
        metrics: Vec<(String, f64)>,
        #[arg(long)]
        country: Option<String>,
        #[arg(long)]
        timezone: Option<String>,
        /// ACTIVE or INACTIVE.
        #[arg(long, value_parser = ["ACTIVE", "INACTIVE"])]
        status: Option<String>,
        /// ALL or NONE.
        #[arg(long, value_parser = ["ALL", "NONE"])]
        opt_out: Option<String>,
    },
    /// Print an endpoint as Pinpoint JSON.
    Get {
        #[arg(long)]
        app: String,
        id: String,
    },
    /// Delete an endpoint.
    Delete {
        #[arg(long)]
        app: String,
        id: String,
    },
    /// Print every endpoint of a user, one JSON object per line.
    User {
        #[arg(long)]
        app: String,
        user_id: String,
        /// Delete them instead.
        #[arg(long)]
        delete: bool,
    },
    /// Import endpoints from a CSV file with Pinpoint's column names or from JSON lines.
    Import {
        #[arg(long)]
        app: String,
        file: PathBuf,
        /// csv or jsonl; by default from the file name.
        #[arg(long, value_parser = ["csv", "jsonl"])]
        format: Option<String>,
    },
}

/// A command-line value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("'{0}' is not NAME=VALUE")]
    Pair(String),
    #[error("'{0}' is not a number")]
    Number(String),
    #[error("'{0}' is not a channel type")]
    Channel(String),
}

pub fn key_value(s: &str) -> Result<(String, String), ArgError> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| ArgError::Pair(s.to_string()))
}

pub fn key_number(s: &str) -> Result<(String, f64), ArgError> {
    let (k, v) = key_value(s)?;
    v.parse().map(|n| (k, n)).map_err(|_| ArgError::Number(v))
}

fn channel(s: &str) -> Result<i32, ArgError> {
    parse_channel(s).map(|c| c as i32).ok_or_else(|| ArgError::Channel(s.to_string()))
}

fn grouped(pairs: Vec<(String, String)>) -> HashMap<String, AttributeValues> {
    let mut out: HashMap<String, AttributeValues> = HashMap::new();
    for (k, v) in pairs {
        out.entry(k).or_default().values.push(v);
    }
    out
}

pub async fn run(conn: ConnArgs, command: EndpointsCommand) -> anyhow::Result<()> {
    let mut client = conn.endpoints().await?;
    match command {
        EndpointsCommand::Put {
            app,
            id,
            channel_type,
            address,
            user_id,
            attributes,
            user_attributes,
            metrics,
            country,
            timezone,
            status,
            opt_out,
        } => {
            let mut e = Endpoint {
                id: id.clone(),
                channel_type: channel_type.unwrap_or(0),
                address: address.unwrap_or_default(),
                attributes: grouped(attributes),
                metrics: metrics.into_iter().collect(),
                ..Default::default()
            };
            if user_id.is_some() || !user_attributes.is_empty() {
                e.user = Some(EndpointUser { user_id: user_id.unwrap_or_default(), user_attributes: grouped(user_attributes) });
            }
            if let Some(country) = country {
                e.location = Some(EndpointLocation { country, ..Default::default() });
            }
            if let Some(timezone) = timezone {
                e.demographic = Some(EndpointDemographic { timezone, ..Default::default() });
            }
            e.endpoint_status = match status.as_deref() {
                Some("ACTIVE") => EndpointStatus::Active as i32,
                Some(_) => EndpointStatus::Inactive as i32,
                None => 0,
            };
            e.opt_out = match opt_out.as_deref() {
                Some("ALL") => OptOut::All as i32,
                Some(_) => OptOut::None as i32,
                None => 0,
            };
            let stored = client
                .update_endpoint(conn.request(UpdateEndpointRequest { app_id: app, endpoint_id: id, endpoint: Some(e) }))
                .await?
                .into_inner();
            println!("{}", serde_json::to_string_pretty(&json::endpoint(&stored))?);
        }
        EndpointsCommand::Get { app, id } => {
            let e = client.get_endpoint(conn.request(GetEndpointRequest { app_id: app, endpoint_id: id })).await?.into_inner();
            println!("{}", serde_json::to_string_pretty(&json::endpoint(&e))?);
        }
        EndpointsCommand::Delete { app, id } => {
            let e = client.delete_endpoint(conn.request(DeleteEndpointRequest { app_id: app, endpoint_id: id })).await?.into_inner();
            println!("deleted {}", e.id);
        }
        EndpointsCommand::User { app, user_id, delete } => {
            let endpoints = if delete {
                client
                    .delete_user_endpoints(conn.request(DeleteUserEndpointsRequest { app_id: app, user_id }))
                    .await?
                    .into_inner()
                    .endpoints
            } else {
                client.get_user_endpoints(conn.request(GetUserEndpointsRequest { app_id: app, user_id })).await?.into_inner().endpoints
            };
            for e in endpoints {
                println!("{}", json::endpoint(&e));
            }
        }
        EndpointsCommand::Import { app, file, format } => import_file(&conn, &mut client, app, file, format).await?,
    }
    Ok(())
}

async fn import_file(
    conn: &ConnArgs,
    client: &mut crate::proto::v1::endpoints_client::EndpointsClient<tonic::transport::Channel>,
    app: String,
    file: PathBuf,
    format: Option<String>,
) -> anyhow::Result<()> {
    let name = file.display().to_string();
    let format = match format.as_deref() {
        Some("csv") => Format::Csv,
        Some(_) => Format::JsonLines,
        None => Format::from_path(&name).ok_or_else(|| anyhow::anyhow!("cannot tell the format of {name}: use --format csv|jsonl"))?,
    };
    let total_lines = BufReader::new(std::fs::File::open(&file)?).lines().count() as u64;
    let rows_total = if format == Format::Csv { total_lines.saturating_sub(1) } else { total_lines };
    let bar = ProgressBar::new(rows_total);
    bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows ({per_sec}, {eta} left)")?);

    let (tx, rx) = tokio::sync::mpsc::channel::<ImportEndpointsRequest>(8);
    tx.send(ImportEndpointsRequest { app_id: app.clone(), endpoints: Vec::new() }).await?;
    let producer_bar = bar.clone();
    let producer = tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<u64>, Vec<LineError>)> {
        let reader = std::fs::File::open(&file)?;
        let rows: Box<dyn Iterator<Item = Row>> = match format {
            Format::Csv => Box::new(import::csv_rows(reader).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?),
            Format::JsonLines => Box::new(import::json_rows(BufReader::new(reader))),
        };
        let mut lines = Vec::new();
        let mut local_rejects = Vec::new();
        let mut batch = Vec::with_capacity(IMPORT_MESSAGE);
        for row in rows {
            producer_bar.inc(1);
            match row.endpoint {
                Ok(mut e) => {
                    if e.id.is_empty() {
                        e.id = crate::domain::new_id();
                    }
                    lines.push(row.line);
                    batch.push(e);
                    if batch.len() == IMPORT_MESSAGE {
                        let msg = ImportEndpointsRequest { app_id: String::new(), endpoints: std::mem::take(&mut batch) };
                        if tx.blocking_send(msg).is_err() {
                            break;
                        }
                    }
                }
                Err(reason) => local_rejects.push((row.line, reason.to_string())),
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(ImportEndpointsRequest { app_id: String::new(), endpoints: batch });
        }
        Ok((lines, local_rejects))
    });
    let response = client.import_endpoints(conn.request(ReceiverStream::new(rx))).await;
    let (lines, local_rejects) = producer.await??;
    let response = response?.into_inner();
    bar.finish_and_clear();

    let mut rejected: Vec<(u64, String)> = local_rejects;
    for r in &response.rejected {
        let line = lines.get(r.index as usize).copied().unwrap_or(0);
        let field = if r.field.is_empty() { String::new() } else { format!("{}: ", r.field) };
        rejected.push((line, format!("{field}{}", r.reason)));
    }
    rejected.sort_by_key(|(line, _)| *line);
    let rejected_rows = response.rejected_count + rejected.iter().filter(|(l, _)| !lines.contains(l)).count() as u64;
    println!(
        "{name}: {} rows read, {} written, {} rejected",
        lines.len() as u64 + (rejected_rows - response.rejected_count),
        response.written,
        rejected_rows
    );
    for (line, reason) in rejected {
        println!("  line {line}: {reason}");
    }
    Ok(())
}
