//! The `herald` command line: `serve` runs the daemon, `config` prints the effective
//! configuration, and `apps`/`endpoints` are a terminal client of a running daemon.

mod campaigns;
mod client;
mod endpoints;
mod events;
mod journeys;
mod keys;
mod kpi;
use crate::domain::json;
mod segments;
mod send;
mod templates;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigArgs};

/// Exit code for bad configuration or usage (EX_USAGE / EX_CONFIG family).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "herald", version, about = "Herald: Pinpoint's engagement engine, self-hosted")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Check the configuration and exit without binding anything.
        #[arg(long)]
        validate: bool,
    },
    /// Print the effective configuration (file < environment < flags), secrets masked.
    Config {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Manage apps on a running daemon.
    Apps {
        #[command(flatten)]
        conn: client::ConnArgs,
        #[command(subcommand)]
        command: AppsCommand,
    },
    /// Manage endpoints on a running daemon.
    Endpoints {
        #[command(flatten)]
        conn: client::ConnArgs,
        #[command(subcommand)]
        command: endpoints::EndpointsCommand,
    },
    /// Send an email now (SendMessages).
    Send {
        #[command(flatten)]
        conn: client::ConnArgs,
        #[command(flatten)]
        args: send::SendArgs,
    },
    /// Show a sent message's outcome.
    Outcome {
        #[command(flatten)]
        conn: client::ConnArgs,
        #[arg(long)]
        app: String,
        message_id: String,
    },
    /// Manage message templates on a running daemon.
    Templates {
        #[command(flatten)]
        conn: client::ConnArgs,
        #[command(subcommand)]
        command: templates::TemplatesCommand,
    },
    /// Asks a daemon whether it serves (gRPC health): exit 0 when SERVING, 1 otherwise. For
    /// container health checks.
    Health {
        #[command(flatten)]
        conn: client::ConnArgs,
        /// A service name (empty: the whole server).
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Campaigns: create from JSON, list, get, pause, resume, delete, watch a run.
    Campaigns {
        #[command(flatten)]
        conn: client::ConnArgs,
        #[command(subcommand)]
        command: campaigns::CampaignsCommand,
    },
    /// Journeys: create from Pinpoint's WriteJourneyRequest (JSON or YAML), list, get,
    /// state, delete, watch the participants per activity.
    Journeys {
        #[command(flatten)]
        conn: client::ConnArgs,
        #[command(subcommand)]
        command: journeys::JourneysCommand,
    },
    /// Segments: create from Pinpoint JSON, import endpoint files, sizes and members.
    Segments {
        #[command(flatten)]
        conn: client::ConnArgs,
        #[command(subcommand)]
        command: segments::SegmentsCommand,
    },
    /// Events: report one (PutEvents), or follow an app's event stream.
    Events {
        #[command(flatten)]
        conn: client::ConnArgs,
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// One of Pinpoint's KPIs for an app or a campaign (GetApplicationDateRangeKpi,
    /// GetCampaignDateRangeKpi), as a table or CSV.
    Kpi {
        #[command(flatten)]
        conn: client::ConnArgs,
        #[command(flatten)]
        args: kpi::KpiArgs,
    },
    /// API keys: create (the secret shown once), list, revoke; hash makes a configuration entry.
    Keys {
        #[command(flatten)]
        conn: client::ConnArgs,
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Event destinations: webhooks that receive an app's events, signed (Standard Webhooks).
    Destinations {
        #[command(flatten)]
        conn: client::ConnArgs,
        #[command(subcommand)]
        command: events::DestinationsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AppsCommand {
    /// Create an app and print its id.
    Create {
        #[arg(long)]
        name: String,
        /// A tag as KEY=VALUE (repeatable).
        #[arg(long = "tag", value_parser = endpoints::key_value)]
        tags: Vec<(String, String)>,
    },
    /// List apps.
    List,
    /// Show one app.
    Get { app_id: String },
    /// Delete an app and everything under it.
    Delete { app_id: String },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Serve { config, validate } => serve(&config, validate),
        Command::Config { config } => match Config::load(&config) {
            Ok(c) => {
                print!("{}", c.masked_toml());
                ExitCode::SUCCESS
            }
            Err(e) => config_error(e),
        },
        Command::Apps { conn, command } => run_client(apps(conn, command)),
        Command::Endpoints { conn, command } => run_client(endpoints::run(conn, command)),
        Command::Templates { conn, command } => run_client(templates::run(conn, command)),
        Command::Segments { conn, command } => run_client(segments::run(conn, command)),
        Command::Campaigns { conn, command } => run_client(campaigns::run(conn, command)),
        Command::Journeys { conn, command } => run_client(journeys::run(conn, command)),
        Command::Events { conn, command } => run_client(events::run(conn, command)),
        Command::Destinations { conn, command } => run_client(events::destinations(conn, command)),
        Command::Kpi { conn, args } => run_client(kpi::run(conn, args)),
        Command::Keys { conn, command } => run_client(keys::run(conn, command)),
        Command::Health { conn, service } => run_client(health(conn, service)),
        Command::Send { conn, args } => run_client(send::send(conn, args)),
        Command::Outcome { conn, app, message_id } => run_client(send::outcome(conn, app, message_id)),
    }
}

async fn health(conn: client::ConnArgs, service: String) -> anyhow::Result<()> {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let mut client = HealthClient::new(conn.channel().await?);
    let status = tokio::time::timeout(std::time::Duration::from_secs(3), client.check(HealthCheckRequest { service }))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 3 s"))??
        .into_inner()
        .status();
    println!("{}", status.as_str_name());
    anyhow::ensure!(status == ServingStatus::Serving, "not serving");
    Ok(())
}

fn config_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("herald: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn serve(args: &ConfigArgs, validate: bool) -> ExitCode {
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => return config_error(e),
    };
    if validate {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    crate::telemetry::init_tracing(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "Herald stopped.");
            eprintln!("herald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_client(f: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {}", client::describe(&e));
            ExitCode::FAILURE
        }
    }
}

async fn apps(conn: client::ConnArgs, command: AppsCommand) -> anyhow::Result<()> {
    use crate::proto::v1::{CreateAppRequest, DeleteAppRequest, GetAppRequest, ListAppsRequest};
    let mut apps = conn.apps().await?;
    match command {
        AppsCommand::Create { name, tags } => {
            let app = apps.create_app(conn.request(CreateAppRequest { name, tags: tags.into_iter().collect() })).await?.into_inner();
            println!("{}", app.app_id);
        }
        AppsCommand::List => {
            let mut token = String::new();
            println!("{:<34} {:<26} NAME", "APP ID", "CREATED");
            loop {
                let page = apps.list_apps(conn.request(ListAppsRequest { page_size: 1000, page_token: token })).await?.into_inner();
                for a in &page.apps {
                    println!("{:<34} {:<26} {}", a.app_id, a.creation_date, a.name);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        AppsCommand::Get { app_id } => {
            let app = apps.get_app(conn.request(GetAppRequest { app_id })).await?.into_inner();
            println!("{}", serde_json::to_string_pretty(&json::app(&app))?);
        }
        AppsCommand::Delete { app_id } => {
            let app = apps.delete_app(conn.request(DeleteAppRequest { app_id })).await?.into_inner();
            println!("deleted {} ({})", app.app_id, app.name);
        }
    }
    Ok(())
}
