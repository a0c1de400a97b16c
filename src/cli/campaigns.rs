//! `herald campaigns`: create from a JSON file in the API's shape, list, get, pause, resume,
//! delete, and watch a run live.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use super::client::ConnArgs;
use crate::proto::v1::{
    campaigns_client::CampaignsClient, segments_client::SegmentsClient, Activity, Campaign, CampaignState, CreateCampaignRequest,
    DeleteCampaignRequest, GetCampaignActivitiesRequest, GetCampaignRequest, GetSegmentRequest, ListCampaignsRequest,
    UpdateCampaignRequest,
};

#[derive(Debug, Subcommand)]
pub enum CampaignsCommand {
    /// Create a campaign from a JSON or YAML file in the API's shape (see README).
    Create {
        #[arg(long)]
        app: String,
        file: PathBuf,
    },
    List {
        #[arg(long)]
        app: String,
    },
    /// The campaign, its state and its runs.
    Get {
        #[arg(long)]
        app: String,
        id: String,
    },
    Pause {
        #[arg(long)]
        app: String,
        id: String,
    },
    Resume {
        #[arg(long)]
        app: String,
        id: String,
    },
    Delete {
        #[arg(long)]
        app: String,
        id: String,
    },
    /// A live progress bar of the current run (rate and counts by status) until it ends.
    Watch {
        #[arg(long)]
        app: String,
        id: String,
        /// Stop watching after this many seconds.
        #[arg(long, default_value_t = 3_600)]
        timeout: u64,
    },
}

fn state_name(s: i32) -> &'static str {
    CampaignState::try_from(s).map(|s| s.as_str_name().trim_start_matches("CAMPAIGN_STATE_")).unwrap_or("UNKNOWN")
}

fn summary(c: &Campaign) -> String {
    format!("{}  version {}  {}  {}", c.id, c.version, state_name(c.state), c.name)
}

fn activity_line(a: &Activity) -> String {
    let mut failed: Vec<String> = a.failed.iter().map(|(k, v)| format!("{k} {v}")).collect();
    failed.sort();
    format!(
        "  {}  treatment {} ({})  {}  scheduled {}  endpoints {}, successful {}, failed [{}], throttled {}, capped {}, timed out {}, holdout {}{}",
        a.id,
        a.treatment_id,
        a.treatment_name,
        state_name(a.state),
        a.scheduled_start,
        a.total_endpoints,
        a.successful,
        failed.join(", "),
        a.throttled,
        a.capped,
        a.timed_out,
        a.holdout,
        if a.possible_repeats > 0 { format!(", possible repeats {}", a.possible_repeats) } else { String::new() }
    )
}

pub async fn run(conn: ConnArgs, command: CampaignsCommand) -> anyhow::Result<()> {
    let mut client = CampaignsClient::new(conn.channel().await?);
    let get = |app: &str, id: &str| GetCampaignRequest { app_id: app.into(), campaign_id: id.into(), version: 0 };
    match command {
        CampaignsCommand::Create { app, file } => {
            let c = crate::campaigns::json::campaign(&std::fs::read_to_string(&file)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let c = client.create_campaign(conn.request(CreateCampaignRequest { app_id: app, campaign: Some(c) })).await?.into_inner();
            println!("{}", summary(&c));
        }
        CampaignsCommand::List { app } => {
            let mut token = String::new();
            loop {
                let page = client
                    .list_campaigns(conn.request(ListCampaignsRequest { app_id: app.clone(), page_size: 100, page_token: token }))
                    .await?
                    .into_inner();
                page.campaigns.iter().for_each(|c| println!("{}", summary(c)));
                token = page.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
        }
        CampaignsCommand::Get { app, id } => {
            let c = client.get_campaign(conn.request(get(&app, &id))).await?.into_inner();
            println!("{}", summary(&c));
            let acts = client.get_campaign_activities(conn.request(GetCampaignActivitiesRequest { app_id: app, campaign_id: id })).await?;
            acts.into_inner().activities.iter().for_each(|a| println!("{}", activity_line(a)));
        }
        CampaignsCommand::Pause { app, id } => set_paused(&conn, app, id, true).await?,
        CampaignsCommand::Resume { app, id } => set_paused(&conn, app, id, false).await?,
        CampaignsCommand::Delete { app, id } => {
            let c = client.delete_campaign(conn.request(DeleteCampaignRequest { app_id: app, campaign_id: id })).await?.into_inner();
            println!("deleted {}", summary(&c));
        }
        CampaignsCommand::Watch { app, id, timeout } => watch(&conn, &mut client, &app, &id, timeout).await?,
    }
    Ok(())
}

/// Pauses (`true`) or resumes a campaign: a new version with `is_paused` changed.
pub async fn set_paused(conn: &ConnArgs, app: String, id: String, paused: bool) -> anyhow::Result<()> {
    let mut client = CampaignsClient::new(conn.channel().await?);
    let mut c = client
        .get_campaign(conn.request(GetCampaignRequest { app_id: app.clone(), campaign_id: id.clone(), version: 0 }))
        .await?
        .into_inner();
    c.is_paused = paused;
    let c =
        client.update_campaign(conn.request(UpdateCampaignRequest { app_id: app, campaign_id: id, campaign: Some(c) })).await?.into_inner();
    println!("{}", summary(&c));
    Ok(())
}

async fn watch(
    conn: &ConnArgs,
    client: &mut CampaignsClient<tonic::transport::Channel>,
    app: &str,
    id: &str,
    timeout: u64,
) -> anyhow::Result<()> {
    let c = client
        .get_campaign(conn.request(GetCampaignRequest { app_id: app.into(), campaign_id: id.into(), version: 0 }))
        .await?
        .into_inner();
    // The bar's length: the segment's size.
    let size = SegmentsClient::new(conn.channel().await?)
        .get_segment_size(conn.request(GetSegmentRequest {
            app_id: app.into(),
            segment_id: c.segment_id.clone(),
            version: c.segment_version,
        }))
        .await?
        .into_inner()
        .size;
    let bar = ProgressBar::new(size.max(0) as u64);
    bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}) {msg}")?);
    let start = Instant::now();
    loop {
        let c = client
            .get_campaign(conn.request(GetCampaignRequest { app_id: app.into(), campaign_id: id.into(), version: 0 }))
            .await?
            .into_inner();
        let acts = client
            .get_campaign_activities(conn.request(GetCampaignActivitiesRequest { app_id: app.into(), campaign_id: id.into() }))
            .await?
            .into_inner()
            .activities;
        // The latest run's activities.
        let run = acts.last().map(|a| a.id.rsplit_once('-').map_or(a.id.as_str(), |(r, _)| r).to_string()).unwrap_or_default();
        let current: Vec<&Activity> = acts.iter().filter(|a| a.id.starts_with(&run)).collect();
        let done: i64 =
            current.iter().map(|a| a.successful + a.failed.values().sum::<i64>() + a.throttled + a.capped + a.timed_out + a.holdout).sum();
        let ok: i64 = current.iter().map(|a| a.successful).sum();
        let failed: i64 = current.iter().map(|a| a.failed.values().sum::<i64>()).sum();
        bar.set_position(done.max(0) as u64);
        bar.set_message(format!("{}: {ok} successful, {failed} failed", state_name(c.state)));
        let finished = [
            CampaignState::Completed,
            CampaignState::Paused,
            CampaignState::Deleted,
            CampaignState::Invalid,
            CampaignState::PendingNextRun,
        ]
        .iter()
        .any(|s| *s as i32 == c.state)
            && !acts.is_empty();
        if finished || start.elapsed() > Duration::from_secs(timeout) {
            bar.finish();
            println!("{}", summary(&c));
            current.iter().for_each(|a| println!("{}", activity_line(a)));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
