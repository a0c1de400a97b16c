//! `herald events` (report an event, follow the stream) and `herald destinations` (event
//! webhooks).

use clap::Subcommand;

use super::client::ConnArgs;
use super::endpoints::{key_number, key_value};
use crate::proto::v1::{
    events_client::EventsClient, CreateEventDestinationRequest, DeleteEventDestinationRequest, DestinationState, EventDestination,
    EventsBatch, GetEventDestinationRequest, ListEventDestinationsRequest, PutEventsRequest, ReportedEvent, StreamEventsRequest,
    UpdateEventDestinationRequest,
};

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Report one event for an endpoint (PutEvents); prints each result.
    Put {
        #[arg(long)]
        app: String,
        #[arg(long)]
        endpoint: String,
        /// The event type, e.g. feature_used or _session.start.
        #[arg(long = "type")]
        event_type: String,
        /// When it happened (ISO-8601; default now).
        #[arg(long)]
        time: Option<String>,
        /// An attribute as NAME=VALUE (repeatable).
        #[arg(long = "attr", value_parser = key_value)]
        attributes: Vec<(String, String)>,
        /// A metric as NAME=NUMBER (repeatable).
        #[arg(long = "metric", value_parser = key_number)]
        metrics: Vec<(String, f64)>,
    },
    /// Follow the app's events as JSON lines (Pinpoint's envelope) until interrupted.
    Tail {
        #[arg(long)]
        app: String,
        /// Start after this event id (a consumer's last one).
        #[arg(long, conflicts_with_all = ["from", "latest"])]
        after: Option<String>,
        /// Start at the first event that arrived at or after this ISO-8601 instant.
        #[arg(long, conflicts_with = "latest")]
        from: Option<String>,
        /// Only events from now on (the default starts at the oldest kept).
        #[arg(long)]
        latest: bool,
        /// Only these event types (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        #[arg(long)]
        campaign: Option<String>,
        /// Stop once caught up instead of following.
        #[arg(long)]
        once: bool,
        /// Each event with its endpoint (as it stands now).
        #[arg(long)]
        with_endpoint: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// Create a webhook for the app's events; prints it (and the signing secret, when Herald
    /// made it: shown this once).
    Create {
        #[arg(long)]
        app: String,
        /// https://..., or http:// on loopback.
        #[arg(long)]
        url: String,
        /// Event types to deliver (repeatable; none: all).
        #[arg(long = "type")]
        types: Vec<String>,
        /// A whsec_ secret of your own (default: Herald makes one).
        #[arg(long, env = "HERALD_DESTINATION_SECRET", hide_env_values = true)]
        secret: Option<String>,
        #[arg(long)]
        batch_size: Option<i32>,
        #[arg(long)]
        failure_limit: Option<i32>,
    },
    List {
        #[arg(long)]
        app: String,
    },
    /// A destination's state, last error and success, backlog and counts.
    Get {
        #[arg(long)]
        app: String,
        id: String,
    },
    /// Turn a destination on again (its failures are forgotten).
    Enable {
        #[arg(long)]
        app: String,
        id: String,
    },
    Disable {
        #[arg(long)]
        app: String,
        id: String,
    },
    Delete {
        #[arg(long)]
        app: String,
        id: String,
    },
}

fn show(d: &EventDestination) -> serde_json::Value {
    serde_json::json!({
        "id": d.id,
        "url": d.url,
        "event_types": d.event_types,
        "state": DestinationState::try_from(d.state).map_or("UNKNOWN", |s| s.as_str_name().trim_start_matches("DESTINATION_STATE_")),
        "batch_size": d.batch_size,
        "failure_limit": d.failure_limit,
        "backlog": d.backlog,
        "delivered": d.delivered,
        "dropped": d.dropped,
        "consecutive_failures": d.consecutive_failures,
        "last_success": d.last_success,
        "last_error": d.last_error,
        "position": d.position,
        "creation_date": d.creation_date,
        "last_modified_date": d.last_modified_date,
    })
}

pub async fn run(conn: ConnArgs, command: EventsCommand) -> anyhow::Result<()> {
    let mut c = EventsClient::new(conn.channel().await?);
    match command {
        EventsCommand::Put { app, endpoint, event_type, time, attributes, metrics } => {
            let e = ReportedEvent {
                event_type,
                timestamp: time.unwrap_or_else(|| crate::domain::timestamp(chrono::Utc::now())),
                attributes: attributes.into_iter().collect(),
                metrics: metrics.into_iter().collect(),
                ..Default::default()
            };
            let batch = EventsBatch { endpoint: None, events: [("cli".to_string(), e)].into_iter().collect() };
            let r = c
                .put_events(conn.request(PutEventsRequest { app_id: app, batch_item: [(endpoint, batch)].into_iter().collect() }))
                .await?
                .into_inner();
            for (id, item) in r.results {
                if let Some(e) = item.endpoint_item_response {
                    println!("endpoint {id}: {} {}", e.status_code, e.message);
                }
                for (eid, ev) in item.events_item_response {
                    println!("event {eid}: {} {}", ev.status_code, ev.message);
                }
            }
        }
        EventsCommand::Tail { app, after, from, latest, types, campaign, once, with_endpoint } => {
            let req = StreamEventsRequest {
                app_id: app.clone(),
                after_event_id: after.unwrap_or_default(),
                from_time: from.unwrap_or_default(),
                latest,
                event_types: types,
                campaign_id: campaign.unwrap_or_default(),
                stop_at_end: once,
                include_endpoint: with_endpoint,
                ..Default::default()
            };
            let mut s = c.stream_events(conn.request(req)).await?.into_inner();
            while let Some(batch) = s.message().await? {
                for e in &batch.events {
                    println!("{}", crate::events::envelope(&app, e));
                }
            }
        }
    }
    Ok(())
}

pub async fn destinations(conn: ConnArgs, command: DestinationsCommand) -> anyhow::Result<()> {
    let mut c = EventsClient::new(conn.channel().await?);
    let pretty = |d: &EventDestination| serde_json::to_string_pretty(&show(d)).expect("JSON of JSON");
    match command {
        DestinationsCommand::Create { app, url, types, secret, batch_size, failure_limit } => {
            let d = EventDestination {
                url,
                event_types: types,
                secret: secret.unwrap_or_default(),
                batch_size: batch_size.unwrap_or(0),
                failure_limit: failure_limit.unwrap_or(0),
                ..Default::default()
            };
            let r = c.create_event_destination(conn.request(CreateEventDestinationRequest { app_id: app, destination: Some(d) })).await?;
            let r = r.into_inner();
            println!("{}", pretty(&r.destination.unwrap_or_default()));
            if !r.secret.is_empty() {
                eprintln!("signing secret (shown once): {}", r.secret);
            }
        }
        DestinationsCommand::List { app } => {
            let mut token = String::new();
            loop {
                let page = c
                    .list_event_destinations(conn.request(ListEventDestinationsRequest {
                        app_id: app.clone(),
                        page_size: 100,
                        page_token: token,
                    }))
                    .await?
                    .into_inner();
                for d in &page.destinations {
                    println!("{}", show(d));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        DestinationsCommand::Get { app, id } => {
            let d = c.get_event_destination(conn.request(GetEventDestinationRequest { app_id: app, destination_id: id })).await?;
            println!("{}", pretty(&d.into_inner()));
        }
        DestinationsCommand::Enable { app, id } => {
            println!("{}", pretty(&set_state(&mut c, &conn, app, id, DestinationState::Enabled).await?))
        }
        DestinationsCommand::Disable { app, id } => {
            println!("{}", pretty(&set_state(&mut c, &conn, app, id, DestinationState::Disabled).await?))
        }
        DestinationsCommand::Delete { app, id } => {
            let d = c.delete_event_destination(conn.request(DeleteEventDestinationRequest { app_id: app, destination_id: id })).await?;
            println!("deleted {}", d.into_inner().id);
        }
    }
    Ok(())
}

async fn set_state(
    c: &mut EventsClient<tonic::transport::Channel>,
    conn: &ConnArgs,
    app: String,
    id: String,
    state: DestinationState,
) -> anyhow::Result<EventDestination> {
    let d = c
        .update_event_destination(conn.request(UpdateEventDestinationRequest {
            app_id: app,
            destination_id: id,
            destination: Some(EventDestination { state: state as i32, ..Default::default() }),
            replace_event_types: false,
            include_endpoint: None,
        }))
        .await?;
    Ok(d.into_inner())
}
