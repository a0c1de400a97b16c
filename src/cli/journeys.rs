//! `herald journeys`: create from a file in Pinpoint's `WriteJourneyRequest` shape (JSON or
//! YAML), list, get, change state, delete, and watch the participants per activity live.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;

use super::client::ConnArgs;
use crate::journeys;
use crate::proto::v1::{
    journeys_client::JourneysClient, CreateJourneyRequest, DeleteJourneyRequest, GetJourneyExecutionActivityMetricsRequest,
    GetJourneyExecutionMetricsRequest, GetJourneyRequest, Journey, JourneyState, ListJourneysRequest, UpdateJourneyStateRequest,
};

#[derive(Debug, Subcommand)]
pub enum JourneysCommand {
    /// Create a journey from a WriteJourneyRequest file (JSON or YAML; see README). It says
    /// what it read leniently.
    Create {
        #[arg(long)]
        app: String,
        file: PathBuf,
        /// Publish it at once (State ACTIVE) whatever the file says.
        #[arg(long)]
        activate: bool,
    },
    List {
        #[arg(long)]
        app: String,
    },
    /// The journey, its execution metrics and each activity's.
    Get {
        #[arg(long)]
        app: String,
        id: String,
    },
    /// Set the state: ACTIVE (publish or resume), PAUSED, CANCELLED.
    State {
        #[arg(long)]
        app: String,
        id: String,
        state: String,
    },
    Delete {
        #[arg(long)]
        app: String,
        id: String,
    },
    /// Live counts per activity until the journey ends (or the timeout).
    Watch {
        #[arg(long)]
        app: String,
        id: String,
        #[arg(long, default_value_t = 3_600)]
        timeout: u64,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        every: f64,
    },
}

fn summary(j: &Journey) -> String {
    let state = journeys::state_name(JourneyState::try_from(j.state).unwrap_or_default());
    format!("{}  {}  {}  {} activities", j.id, state, j.name, j.activities.len())
}

async fn report(conn: &ConnArgs, client: &mut JourneysClient<tonic::transport::Channel>, app: &str, j: &Journey) -> anyhow::Result<String> {
    let m = client
        .get_journey_execution_metrics(conn.request(GetJourneyExecutionMetricsRequest { app_id: app.into(), journey_id: j.id.clone() }))
        .await?
        .into_inner();
    let mut out = summary(j);
    let mut metrics: Vec<(String, String)> = m.metrics.into_iter().collect();
    metrics.sort();
    out.push_str(&format!("\n  {}", metrics.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")));
    let mut ids: Vec<&String> = j.activities.keys().collect();
    ids.sort();
    for id in ids {
        let a = client
            .get_journey_execution_activity_metrics(conn.request(GetJourneyExecutionActivityMetricsRequest {
                app_id: app.into(),
                journey_id: j.id.clone(),
                journey_activity_id: id.clone(),
            }))
            .await?
            .into_inner();
        let mut metrics: Vec<(String, String)> = a.metrics.into_iter().collect();
        metrics.sort();
        let start = if *id == j.start_activity { " (start)" } else { "" };
        out.push_str(&format!(
            "\n  {id}{start}  {}  {}",
            a.activity_type,
            metrics.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(out)
}

fn parse_state(s: &str) -> anyhow::Result<JourneyState> {
    JourneyState::from_str_name(&format!("JOURNEY_STATE_{}", s.to_ascii_uppercase()))
        .filter(|s| *s != JourneyState::Unspecified)
        .ok_or_else(|| anyhow::anyhow!("unknown state {s:?}: ACTIVE, PAUSED or CANCELLED"))
}

pub async fn run(conn: ConnArgs, command: JourneysCommand) -> anyhow::Result<()> {
    let mut client = JourneysClient::new(conn.channel().await?);
    let get = |app: &str, id: &str| GetJourneyRequest { app_id: app.into(), journey_id: id.into() };
    match command {
        JourneysCommand::Create { app, file, activate } => {
            let text = std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let at = |e: crate::domain::json::ShapeError| anyhow::anyhow!("{}: {e}", file.display());
            let mut doc = crate::campaigns::json::document(&text).map_err(at)?;
            // `aws pinpoint create-journey --cli-input-json` wraps the request.
            if let Some(inner) = doc.get("WriteJourneyRequest").cloned() {
                doc = inner;
            }
            let read = journeys::json::journey(&doc).map_err(at)?;
            for n in &read.notes {
                eprintln!("note: {n}");
            }
            let mut j = read.journey;
            if activate {
                j.state = JourneyState::Active as i32;
            }
            let j = client.create_journey(conn.request(CreateJourneyRequest { app_id: app, journey: Some(j) })).await?.into_inner();
            println!("{}", summary(&j));
        }
        JourneysCommand::List { app } => {
            let mut token = String::new();
            loop {
                let page = client
                    .list_journeys(conn.request(ListJourneysRequest { app_id: app.clone(), page_size: 100, page_token: token }))
                    .await?
                    .into_inner();
                page.journeys.iter().for_each(|j| println!("{}", summary(j)));
                token = page.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
        }
        JourneysCommand::Get { app, id } => {
            let j = client.get_journey(conn.request(get(&app, &id))).await?.into_inner();
            println!("{}", report(&conn, &mut client, &app, &j).await?);
        }
        JourneysCommand::State { app, id, state } => {
            let state = parse_state(&state)?;
            let j = client
                .update_journey_state(conn.request(UpdateJourneyStateRequest { app_id: app, journey_id: id, state: state as i32 }))
                .await?
                .into_inner();
            println!("{}", summary(&j));
        }
        JourneysCommand::Delete { app, id } => {
            let j = client.delete_journey(conn.request(DeleteJourneyRequest { app_id: app, journey_id: id })).await?.into_inner();
            println!("deleted {}", summary(&j));
        }
        JourneysCommand::Watch { app, id, timeout, every } => {
            let deadline = Instant::now() + Duration::from_secs(timeout);
            let every = Duration::from_secs_f64(every.max(0.1));
            let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
            loop {
                let j = client.get_journey(conn.request(get(&app, &id))).await?.into_inner();
                let text = report(&conn, &mut client, &app, &j).await?;
                if tty {
                    print!("\x1b[2J\x1b[H");
                }
                println!("{text}");
                let state = JourneyState::try_from(j.state).unwrap_or_default();
                if matches!(state, JourneyState::Completed | JourneyState::Cancelled) || Instant::now() >= deadline {
                    return Ok(());
                }
                tokio::time::sleep(every).await;
            }
        }
    }
    Ok(())
}
