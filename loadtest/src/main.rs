//! `herald-loadtest`: load generator for Herald's gRPC API. It only targets the address it is
//! given (loopback by default), and every scenario is bounded in count and time.
//!
//! Scenarios:
//! - `import`: streams generated endpoints through ImportEndpoints; reports endpoints/s.
//! - `smtp`: Herald's SMTP channel straight into Postfix's `smtp-sink` (started on a free
//!   port), with `--reference` timing Postfix's own `smtp-source -d -s 16` into the same sink.
//! - `get-endpoint`: GetEndpoint at a fixed rate, open loop (calls are issued on schedule
//!   whether or not earlier ones have answered, so a stall shows as latency instead of as
//!   fewer calls); reports p50/p90/p99/p99.9 of each call's own latency.
//! - `transactional`: SendMessages at a fixed rate (the same open loop) or flat out.
//! - `segment`: segment evaluation over imported endpoints, and the daemon's memory.
//! - `campaign`: an email campaign end to end into an smtp-sink it starts, with smtp-source as
//!   the reference.
//! - `webhook`: custom-channel sends into a built-in HTTP/1.1 + HTTP/2 sink it starts.
//!
//! - `put-events`: PutEvents in batches of 100 events; events/s.
//! - `stream-events`: StreamEvents of the app's events to one consumer; events/s.
//! - `event-webhook`: an event destination into a built-in receiver that verifies every
//!   Standard Webhooks signature; events/s delivered and verified.
//! - `event-trigger`: an EVENT campaign at a fixed event rate; PutEvents-to-message latency at
//!   a built-in SMTP receiver.
//!
//! - `tracking`: the open pixel and click redirect of a tracked email, fetched over HTTP/1.1
//!   keep-alive connections; requests/s and the events recorded for them.
//! - `kpi`: KPI queries (31 days) over `--messages` outcomes recorded into the daemon's Redis.
//! - `journey`: a journey's first email against the same campaign, participant steps per
//!   second (wait → random split → email), and the store and daemon memory of participants
//!   waiting.
//!
//! `--redis-reference host:port` adds `redis-benchmark -P 100 -t set` against the daemon's
//! Redis after any scenario; `--json` prints machine-readable results.

mod engagement;
mod events;
mod journeys;
mod rest;
mod scenarios;
mod smtp;

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use herald::proto::v1::{
    apps_client::AppsClient, endpoints_client::EndpointsClient, messages_client::MessagesClient, AddressConfiguration, AttributeValues,
    ChannelType, CreateAppRequest, DeleteAppRequest, DeliveryStatus, DirectMessageConfiguration, EmailMessage, Endpoint,
    EndpointDemographic, EndpointLocation, EndpointUser, GetEndpointRequest, ImportEndpointsRequest, SendMessagesRequest,
};
use serde_json::json;
use tonic::transport::Channel;
use tonic::Request;

use smtp::{smtp, start_sink, Sink};

/// Hard caps, whatever the flags say.
const MAX_COUNT: u64 = 20_000_000;
const MAX_DURATION: Duration = Duration::from_secs(600);

#[derive(Parser)]
#[command(name = "herald-loadtest", about = "Bounded load generator for Herald")]
struct Cli {
    /// Herald's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051", global = true)]
    addr: String,
    /// API key, if the daemon needs one.
    #[arg(long, env = "HERALD_API_KEY", global = true)]
    api_key: Option<String>,
    /// CA certificates (PEM) for a daemon serving TLS (implies https; `https://` alone uses
    /// the system's roots).
    #[arg(long, global = true, value_name = "PEM")]
    ca_file: Option<std::path::PathBuf>,
    /// A client certificate and key (PEM) for a daemon asking for one (mutual TLS).
    #[arg(long, global = true, value_name = "PEM", requires = "key_file")]
    cert_file: Option<std::path::PathBuf>,
    #[arg(long, global = true, value_name = "PEM", requires = "cert_file")]
    key_file: Option<std::path::PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Keep the app the scenario created (it is deleted by default).
    #[arg(long, global = true)]
    keep: bool,
    /// After the scenario, run `redis-benchmark -P 100 -t set` against this Redis (host:port,
    /// the daemon's) as the same-run reference.
    #[arg(long, global = true)]
    redis_reference: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Stream generated endpoints through ImportEndpoints.
    Import {
        /// Endpoints in all.
        #[arg(long, default_value_t = 200_000)]
        count: u64,
        /// Concurrent import streams.
        #[arg(long, default_value_t = 4)]
        streams: u64,
        /// Endpoints per stream message.
        #[arg(long, default_value_t = 500)]
        message: usize,
    },
    /// Herald's SMTP channel into a local smtp-sink (needs no daemon).
    Smtp {
        /// Messages in all.
        #[arg(long, default_value_t = 20_000)]
        count: u64,
        /// Connections (the pool's size and the number of concurrent senders).
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Payload bytes per message (the text part).
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Also time `smtp-source -d -s 16` with the same count and size into the same sink.
        #[arg(long)]
        reference: bool,
    },
    /// Transactional SendMessages: one email address per call at a fixed rate (latency
    /// percentiles from an HDR histogram, failures by status), or `--per-call` addresses per
    /// call flat out over `--concurrency` calls (throughput). The daemon needs --smtp-url
    /// unless --dry-run. (`send` is the older name.)
    #[command(name = "transactional", alias = "send")]
    Send {
        /// Calls per second (fixed-rate mode).
        #[arg(long, default_value_t = 2_000)]
        rate: u64,
        /// Seconds of measured load (fixed-rate mode).
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Addresses per call; above 1 the calls go flat out, `calls` of them.
        #[arg(long, default_value_t = 1)]
        per_call: usize,
        /// Calls in throughput mode.
        #[arg(long, default_value_t = 100)]
        calls: u64,
        /// Concurrent calls in throughput mode.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Everything but the provider call.
        #[arg(long)]
        dry_run: bool,
        /// Connections the calls are spread over.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Segment evaluation: imports endpoints, creates a three-dimension dynamic segment
    /// (Attributes.Plan, Location.Country, Metrics.Sessions) and times GetSegmentSize, which
    /// streams every endpoint through the evaluator. With --daemon-pid, also the daemon's
    /// resident memory before and at its peak during the scans.
    Segment {
        /// Endpoints imported first.
        #[arg(long, default_value_t = 1_000_000)]
        endpoints: u64,
        /// Timed evaluations.
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// The daemon's process id (loopback daemons only), to read its memory from /proc.
        #[arg(long)]
        daemon_pid: Option<u32>,
    },
    /// An email campaign end to end: imports endpoints, creates a segment of all of them and
    /// an IMMEDIATE campaign whose app relay is an smtp-sink this command starts on a free
    /// port, waits for the run to complete, and reports messages/s from Herald's activities and
    /// from the sink's own count. With --reference, times `smtp-source -d -s 16` pushing as many
    /// messages of the same size into the same sink; with --daemon-pid, the daemon's peak
    /// resident memory.
    Campaign {
        #[arg(long, default_value_t = 200_000)]
        endpoints: u64,
        /// Text bytes per message.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// SMTP connections of the app's relay.
        #[arg(long, default_value_t = 16)]
        connections: i32,
        #[arg(long)]
        reference: bool,
        #[arg(long)]
        daemon_pid: Option<u32>,
        /// Add an HTML part with this many links (tracked unless --no-tracking; tracking needs
        /// the daemon's feedback_addr).
        #[arg(long, default_value_t = 0)]
        html_links: usize,
        #[arg(long)]
        no_tracking: bool,
    },
    /// A push campaign to `--endpoints` APNs endpoints through the app's APNs channel into a
    /// built-in HTTP/2 sink this command starts on a free port (it answers 200 and counts):
    /// end-to-end messages/s from Herald's outcomes and the sink's count.
    Push {
        #[arg(long, default_value_t = 100_000)]
        endpoints: u64,
        /// HTTP/2 connections of the app's APNs channel.
        #[arg(long, default_value_t = 2)]
        connections: i32,
        #[arg(long)]
        daemon_pid: Option<u32>,
    },
    /// Custom-channel webhooks: SendMessages with `--per-call` custom addresses per call (flat
    /// out, `--calls` calls) into a built-in HTTP sink this command starts on a free port,
    /// which speaks HTTP/1.1 and HTTP/2 and counts the requests it gets.
    Webhook {
        #[arg(long, default_value_t = 1_000)]
        per_call: usize,
        #[arg(long, default_value_t = 50)]
        calls: u64,
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
    },
    /// PutEvents: `--per-call` events per call over `--spread` endpoints each (of
    /// `--endpoints` imported first), `--concurrency` calls at a time.
    PutEvents {
        #[arg(long, default_value_t = 500_000)]
        events: u64,
        #[arg(long, default_value_t = 100)]
        per_call: u64,
        #[arg(long, default_value_t = 10)]
        spread: u64,
        #[arg(long, default_value_t = 10_000)]
        endpoints: u64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// StreamEvents: `--events` are put first, then streamed from the oldest to one consumer.
    StreamEvents {
        #[arg(long, default_value_t = 500_000)]
        events: u64,
    },
    /// An event destination: `--events` recorded while it is disabled, then enabled; the time
    /// until a built-in receiver has verified every one.
    EventWebhook {
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        #[arg(long, default_value_t = 1_000)]
        batch: i32,
    },
    /// An EVENT campaign: one `purchase` event per call at `--rate` for `--duration` s, each for
    /// its own endpoint; latency from the call to the message at a built-in SMTP receiver.
    EventTrigger {
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        duration: u64,
    },
    /// Opens and clicks: one tracked email into a built-in SMTP receiver, then its pixel and
    /// click URLs fetched by `--connections` keep-alive HTTP/1.1 connections for `--duration` s.
    /// The daemon needs `feedback_addr` (the public listener).
    Tracking {
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 20)]
        duration: u64,
    },
    /// KPI queries over `--messages` outcomes (with opens) spread over 31 days, written into the
    /// daemon's Redis (`--redis-url`) through the store's recorder; `--queries` per KPI.
    /// Journeys into an smtp-sink it starts: the first email activity against the same
    /// campaign, steps per second, and (with --waiting) participants waiting.
    Journey {
        #[arg(long, default_value_t = 100_000)]
        endpoints: u64,
        /// Text bytes per message.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Relay connections.
        #[arg(long, default_value_t = 16)]
        connections: i32,
        /// Participants to enter into an hour's wait (0: skip).
        #[arg(long, default_value_t = 0)]
        waiting: u64,
        /// The daemon's Redis, for its memory (redis://host:port).
        #[arg(long)]
        redis_url: Option<String>,
        #[arg(long)]
        daemon_pid: Option<u32>,
    },
    Kpi {
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        #[arg(long, default_value_t = 200)]
        queries: u64,
        #[arg(long)]
        redis_url: String,
    },
    /// GetEndpoint at a fixed rate.
    GetEndpoint {
        /// Calls per second.
        #[arg(long, default_value_t = 2_000)]
        rate: u64,
        /// Seconds of measured load (after one second of warm-up).
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Endpoints imported first and read at random.
        #[arg(long, default_value_t = 10_000)]
        endpoints: u64,
        /// Connections the calls are spread over.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// SendMessages over Pinpoint's REST door (SigV4-signed here) at a fixed rate, then the
    /// same call over gRPC in the same run; latency percentiles and the daemon's CPU per call
    /// through each. The daemon needs --smtp-url, --rest-addr and the same credential.
    RestSend {
        /// The daemon's REST listener (http://host:port).
        #[arg(long)]
        rest_url: String,
        /// ACCESS_KEY_ID:SECRET, one of the daemon's sigv4_credentials.
        #[arg(long)]
        credential: String,
        /// Calls per second.
        #[arg(long, default_value_t = 2_000)]
        rate: u64,
        /// Seconds of measured load through each door (after one second of warm-up).
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// gRPC connections for the comparison.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long)]
        daemon_pid: Option<u32>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Scenario::Smtp { count, connections, size, reference } = cli.scenario {
        return smtp(count, connections, size, reference, cli.json).await;
    }
    if cli.ca_file.is_some() || cli.cert_file.is_some() || cli.addr.starts_with("https://") {
        let tls = herald::tls::client_config(cli.ca_file.as_deref(), cli.cert_file.as_deref(), cli.key_file.as_deref())?;
        let _ = TLS.set(tls);
    }
    let channel = connect(&cli.addr).await?;
    match cli.scenario {
        Scenario::Smtp { .. } => unreachable!("handled above"),
        Scenario::Send { rate, duration, per_call, calls, concurrency, dry_run, connections } => {
            let app = create_app(&channel, &cli.api_key, "loadtest-send").await?;
            let mut channels = Vec::new();
            for _ in 0..connections.max(1) {
                channels.push(connect(&cli.addr).await?);
            }
            if per_call <= 1 {
                let duration = Duration::from_secs(duration).min(MAX_DURATION);
                send_fixed_rate(&channels, &cli.api_key, &app, rate, Duration::from_secs(1), dry_run).await?;
                let (hist, errors, achieved) = send_fixed_rate(&channels, &cli.api_key, &app, rate, duration, dry_run).await?;
                let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
                if cli.json {
                    println!(
                        "{}",
                        json!({"scenario": "transactional", "target_rate": rate, "achieved_rate": achieved, "calls": hist.len(), "errors": errors, "dry_run": dry_run, "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "p999_ms": ms(0.999)})
                    );
                } else {
                    println!("transactional: {} calls at {achieved:.0}/s (target {rate}/s), {} failed {errors:?}; latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms", hist.len(), errors.values().sum::<u64>(), ms(0.5), ms(0.9), ms(0.99), ms(0.999));
                }
            } else {
                let per_call = per_call.min(10_000);
                let start = Instant::now();
                let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                let mut tasks = Vec::new();
                for w in 0..concurrency.max(1) {
                    let (ch, key, app, next) = (channels[w % channels.len()].clone(), cli.api_key.clone(), app.clone(), next.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut client = MessagesClient::new(ch).max_encoding_message_size(64 << 20).max_decoding_message_size(64 << 20);
                        let (mut ok, mut failed) = (0u64, 0u64);
                        loop {
                            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if n >= calls {
                                break;
                            }
                            let addresses = (0..per_call)
                                .map(|i| {
                                    (
                                        format!("u{n}-{i}@load.herald.test"),
                                        AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() },
                                    )
                                })
                                .collect();
                            let r = client.send_messages(request(&key, send_request(&app, addresses, dry_run))).await?.into_inner();
                            for res in r.result.values() {
                                if res.delivery_status == DeliveryStatus::Successful as i32 {
                                    ok += 1
                                } else {
                                    failed += 1
                                }
                            }
                        }
                        anyhow::Ok((ok, failed))
                    }));
                }
                let (mut ok, mut failed) = (0, 0);
                for t in tasks {
                    let (o, f) = t.await??;
                    ok += o;
                    failed += f;
                }
                let secs = start.elapsed().as_secs_f64();
                let rate = (ok + failed) as f64 / secs;
                if cli.json {
                    println!(
                        "{}",
                        json!({"scenario": "send-throughput", "messages": ok + failed, "successful": ok, "failed": failed, "seconds": secs, "messages_per_second": rate, "dry_run": dry_run})
                    );
                } else {
                    println!(
                        "send: {} messages ({ok} successful, {failed} not) in {secs:.2} s = {rate:.0} messages/s{}",
                        ok + failed,
                        if dry_run { " (dry run)" } else { "" }
                    );
                }
            }
            cleanup(&channel, &cli.api_key, &app, cli.keep).await?;
        }
        Scenario::Import { count, streams, message } => {
            if count == 0 || count > MAX_COUNT || streams == 0 || message == 0 {
                bail!("--count must be 1..={MAX_COUNT}, --streams and --message at least 1");
            }
            let app = create_app(&channel, &cli.api_key, "loadtest-import").await?;
            let start = Instant::now();
            let (written, rejected) = import(&channel, &cli.api_key, &app, count, streams, message).await?;
            let secs = start.elapsed().as_secs_f64();
            let rate = written as f64 / secs;
            if cli.json {
                println!(
                    "{}",
                    json!({"scenario": "import", "endpoints": count, "written": written, "rejected": rejected, "seconds": secs, "endpoints_per_second": rate, "streams": streams})
                );
            } else {
                println!("import: {written} endpoints written ({rejected} rejected) in {secs:.2} s over {streams} streams = {rate:.0} endpoints/s");
            }
            cleanup(&channel, &cli.api_key, &app, cli.keep).await?;
        }
        Scenario::Campaign { endpoints, size, connections, reference, daemon_pid, html_links, no_tracking } => {
            if endpoints == 0 || endpoints > MAX_COUNT || size > 1 << 20 || !(1..=256).contains(&connections) {
                bail!("--endpoints must be 1..={MAX_COUNT}, --size at most 1 MiB, --connections 1..=256");
            }
            let html = (html_links.min(100), !no_tracking);
            scenarios::campaign(&channel, &cli.api_key, endpoints, size, connections, reference, daemon_pid, html, cli.json, cli.keep)
                .await?;
        }
        Scenario::Push { endpoints, connections, daemon_pid } => {
            if endpoints == 0 || endpoints > MAX_COUNT || !(1..=64).contains(&connections) {
                bail!("--endpoints must be 1..={MAX_COUNT}, --connections 1..=64");
            }
            scenarios::push(&channel, &cli.api_key, endpoints, connections, daemon_pid, cli.json, cli.keep).await?;
        }
        Scenario::Webhook { per_call, calls, concurrency } => {
            if !(1..=10_000).contains(&per_call) || calls == 0 || calls > 100_000 || !(1..=64).contains(&concurrency) {
                bail!("--per-call must be 1..=10000, --calls 1..=100000, --concurrency 1..=64");
            }
            scenarios::webhook(&channel, &cli.api_key, per_call, calls, concurrency, cli.json, cli.keep).await?;
        }
        Scenario::Segment { endpoints, runs, daemon_pid } => {
            if endpoints == 0 || endpoints > MAX_COUNT || runs == 0 || runs > 20 {
                bail!("--endpoints must be 1..={MAX_COUNT} and --runs 1..=20");
            }
            scenarios::segment(&channel, &cli.api_key, endpoints, runs, daemon_pid, cli.json, cli.keep).await?;
        }
        Scenario::PutEvents { events, per_call, spread, endpoints, concurrency } => {
            if events == 0
                || events > MAX_COUNT
                || !(1..=100).contains(&per_call)
                || spread == 0
                || spread > per_call
                || endpoints == 0
                || endpoints > MAX_COUNT
            {
                bail!("--events must be 1..={MAX_COUNT}, --per-call 1..=100, --spread 1..=per-call, --endpoints 1..={MAX_COUNT}");
            }
            events::put_events(&channel, &cli.api_key, events, per_call, spread, endpoints, concurrency.clamp(1, 64), cli.json, cli.keep)
                .await?;
        }
        Scenario::StreamEvents { events } => {
            if events == 0 || events > 1_000_000 {
                bail!("--events must be 1..=1000000 (the stream's retention)");
            }
            events::stream_events(&channel, &cli.api_key, events, cli.json, cli.keep).await?;
        }
        Scenario::EventWebhook { events, batch } => {
            if events == 0 || events > 1_000_000 || !(1..=1_000).contains(&batch) {
                bail!("--events must be 1..=1000000, --batch 1..=1000");
            }
            events::event_webhook(&channel, &cli.api_key, events, batch, cli.json, cli.keep).await?;
        }
        Scenario::EventTrigger { rate, duration } => {
            if !(1..=20_000).contains(&rate) || duration == 0 || rate * duration > 1_000_000 {
                bail!("--rate must be 1..=20000, --duration at least 1, at most 1,000,000 events");
            }
            events::event_trigger(&channel, &cli.api_key, rate, duration, cli.json, cli.keep).await?;
        }
        Scenario::Tracking { connections, duration } => {
            if !(1..=512).contains(&connections) || duration == 0 {
                bail!("--connections must be 1..=512, --duration at least 1");
            }
            let duration = Duration::from_secs(duration).min(MAX_DURATION);
            engagement::tracking(&channel, &cli.api_key, connections, duration, cli.json, cli.keep).await?;
        }
        Scenario::Journey { endpoints, size, connections, waiting, redis_url, daemon_pid } => {
            if endpoints == 0 || endpoints > MAX_COUNT || waiting > MAX_COUNT || size > 1 << 20 || !(1..=256).contains(&connections) {
                bail!("--endpoints and --waiting must be at most {MAX_COUNT}, --size at most 1 MiB, --connections 1..=256");
            }
            journeys::journeys(&channel, &cli.api_key, endpoints, size, connections, waiting, redis_url, daemon_pid, cli.json, cli.keep)
                .await?;
        }
        Scenario::Kpi { messages, queries, redis_url } => {
            if messages == 0 || messages > 5_000_000 || !(1..=10_000).contains(&queries) {
                bail!("--messages must be 1..=5000000, --queries 1..=10000");
            }
            engagement::kpi(&channel, &cli.api_key, &redis_url, messages, queries, cli.json, cli.keep).await?;
        }
        Scenario::RestSend { rest_url, credential, rate, duration, connections, daemon_pid } => {
            let (access_key, secret) = credential.split_once(':').context("--credential must be ACCESS_KEY_ID:SECRET")?;
            let mut channels = Vec::new();
            for _ in 0..connections.max(1) {
                channels.push(connect(&cli.addr).await?);
            }
            let target = rest::Target { url: rest_url, access_key: access_key.into(), secret: secret.into() };
            let duration = Duration::from_secs(duration).min(MAX_DURATION);
            rest::send(&channel, &channels, &cli.api_key, &target, rate, duration, daemon_pid, cli.json, cli.keep).await?;
        }
        Scenario::GetEndpoint { rate, duration, endpoints, connections } => {
            if rate == 0 || rate > 200_000 || endpoints == 0 || endpoints > MAX_COUNT {
                bail!("--rate must be 1..=200000 and --endpoints 1..={MAX_COUNT}");
            }
            let duration = Duration::from_secs(duration).min(MAX_DURATION);
            let app = create_app(&channel, &cli.api_key, "loadtest-get").await?;
            import(&channel, &cli.api_key, &app, endpoints, 2, 500).await?;
            let mut channels = Vec::new();
            for _ in 0..connections.max(1) {
                channels.push(connect(&cli.addr).await?);
            }
            // One second of warm-up, then the measured run.
            fixed_rate(&channels, &cli.api_key, &app, rate, endpoints, Duration::from_secs(1)).await?;
            let (hist, errors, achieved) = fixed_rate(&channels, &cli.api_key, &app, rate, endpoints, duration).await?;
            let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
            if cli.json {
                println!(
                    "{}",
                    json!({"scenario": "get-endpoint", "target_rate": rate, "achieved_rate": achieved, "calls": hist.len(), "errors": errors,
                           "p50_ms": us(0.5), "p90_ms": us(0.9), "p99_ms": us(0.99), "p999_ms": us(0.999), "max_ms": hist.max() as f64 / 1000.0})
                );
            } else {
                println!(
                    "get-endpoint: {} calls at {achieved:.0}/s (target {rate}/s), errors {errors:?}; latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
                    hist.len(), us(0.5), us(0.9), us(0.99), us(0.999), hist.max() as f64 / 1000.0
                );
            }
            cleanup(&channel, &cli.api_key, &app, cli.keep).await?;
        }
    }
    if let Some(target) = &cli.redis_reference {
        scenarios::redis_reference(target, cli.json)?;
    }
    Ok(())
}

/// The daemon's TLS, when it serves TLS (set once from the flags).
static TLS: std::sync::OnceLock<tonic::transport::ClientTlsConfig> = std::sync::OnceLock::new();

async fn connect(addr: &str) -> anyhow::Result<Channel> {
    let scheme = if TLS.get().is_some() { "https" } else { "http" };
    let addr = match addr.split_once("://") {
        Some((_, rest)) => format!("{scheme}://{rest}"),
        None => format!("{scheme}://{addr}"),
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(addr.clone())?.tcp_nodelay(true);
    if let Some(tls) = TLS.get() {
        endpoint = endpoint.tls_config(tls.clone())?;
    }
    endpoint.connect().await.with_context(|| format!("cannot connect to {addr}"))
}

fn request<T>(key: &Option<String>, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(k) = key {
        if let Ok(v) = format!("Bearer {k}").parse() {
            r.metadata_mut().insert("authorization", v);
        }
    }
    r
}

async fn create_app(channel: &Channel, key: &Option<String>, name: &str) -> anyhow::Result<String> {
    let app =
        AppsClient::new(channel.clone()).create_app(request(key, CreateAppRequest { name: name.into(), tags: Default::default() })).await?;
    Ok(app.into_inner().app_id)
}

async fn cleanup(channel: &Channel, key: &Option<String>, app: &str, keep: bool) -> anyhow::Result<()> {
    if !keep {
        AppsClient::new(channel.clone()).delete_app(request(key, DeleteAppRequest { app_id: app.into() })).await?;
    }
    Ok(())
}

/// A realistic endpoint: an email address, a user with attributes, location and time zone.
fn endpoint(i: u64) -> Endpoint {
    let one = |v: String| AttributeValues { values: vec![v] };
    Endpoint {
        id: format!("ep-{i:09}"),
        channel_type: ChannelType::Email as i32,
        address: format!("user{i}@example.com"),
        attributes: [
            ("Plan".to_string(), one(["Free", "Pro", "Team"][(i % 3) as usize].into())),
            ("Source".to_string(), one("loadtest".into())),
        ]
        .into(),
        metrics: [("Sessions".to_string(), (i % 50) as f64)].into(),
        location: Some(EndpointLocation {
            country: ["US", "DE", "FR", "JP"][(i % 4) as usize].into(),
            city: "Springfield".into(),
            ..Default::default()
        }),
        demographic: Some(EndpointDemographic { timezone: "America/New_York".into(), platform: "web".into(), ..Default::default() }),
        user: Some(EndpointUser {
            user_id: format!("user-{i}"),
            user_attributes: [("FirstName".to_string(), one(format!("Name{i}")))].into(),
        }),
        ..Default::default()
    }
}

/// Imports `count` endpoints over `streams` concurrent streams; returns (written, rejected).
async fn import(
    channel: &Channel,
    key: &Option<String>,
    app: &str,
    count: u64,
    streams: u64,
    message: usize,
) -> anyhow::Result<(u64, u64)> {
    import_with(channel, key, app, count, streams, message, endpoint).await
}

/// As [`import`], with endpoints made by `make`.
async fn import_with(
    channel: &Channel,
    key: &Option<String>,
    app: &str,
    count: u64,
    streams: u64,
    message: usize,
    make: fn(u64) -> Endpoint,
) -> anyhow::Result<(u64, u64)> {
    let mut tasks = Vec::new();
    for s in 0..streams {
        let (lo, hi) = (count * s / streams, count * (s + 1) / streams);
        let mut client = EndpointsClient::new(channel.clone()).max_encoding_message_size(64 << 20);
        let (key, app) = (key.clone(), app.to_string());
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                let _ = tx.send(ImportEndpointsRequest { app_id: app, endpoints: Vec::new() }).await;
                let mut i = lo;
                while i < hi {
                    let end = (i + message as u64).min(hi);
                    let endpoints = (i..end).map(make).collect();
                    if tx.send(ImportEndpointsRequest { app_id: String::new(), endpoints }).await.is_err() {
                        break;
                    }
                    i = end;
                }
            });
            let r = client.import_endpoints(request(&key, tokio_stream::wrappers::ReceiverStream::new(rx))).await?.into_inner();
            anyhow::Ok((r.written, r.rejected_count))
        }));
    }
    let mut totals = (0, 0);
    for t in tasks {
        let (w, r) = t.await??;
        totals.0 += w;
        totals.1 += r;
    }
    Ok(totals)
}

/// Issues `call(n)` on a fixed schedule for `duration`, open loop (calls are spawned on time
/// whether or not earlier ones answered); returns each call's latency in microseconds, the
/// failures and the achieved rate.
/// Failed calls by status (a gRPC code, or the delivery status a send got).
type Errors = std::collections::BTreeMap<String, u64>;

async fn open_loop<F, Fut>(rate: u64, duration: Duration, call: F) -> anyhow::Result<(Histogram<u64>, Errors, f64)>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<u64, String>>();
    let start = tokio::time::Instant::now();
    for n in 0..total {
        tokio::time::sleep_until(start + interval * n as u32).await;
        let fut = call(n);
        let tx = tx.clone();
        tokio::spawn(async move {
            // Timed from the call itself: the generator's timer ticks once a millisecond, so
            // timing from the schedule would add up to a millisecond of its own lateness.
            let issued = Instant::now();
            let outcome = fut.await;
            let micros = issued.elapsed().as_micros() as u64;
            let _ = tx.send(outcome.map(|()| micros));
        });
    }
    drop(tx);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = Errors::new();
    while let Some(r) = rx.recv().await {
        match r {
            Ok(us) => hist.record(us.max(1))?,
            Err(status) => *errors.entry(status).or_insert(0) += 1,
        }
    }
    let achieved = (hist.len() + errors.values().sum::<u64>()) as f64 / start.elapsed().as_secs_f64();
    Ok((hist, errors, achieved))
}

/// GetEndpoint at a fixed rate over random endpoints of the imported set.
async fn fixed_rate(
    channels: &[Channel],
    key: &Option<String>,
    app: &str,
    rate: u64,
    endpoints: u64,
    duration: Duration,
) -> anyhow::Result<(Histogram<u64>, Errors, f64)> {
    open_loop(rate, duration, |n| {
        let mut client = EndpointsClient::new(channels[(n as usize) % channels.len()].clone());
        let req = request(
            key,
            GetEndpointRequest { app_id: app.to_string(), endpoint_id: format!("ep-{:09}", (n.wrapping_mul(2_654_435_761)) % endpoints) },
        );
        async move { client.get_endpoint(req).await.map(|_| ()).map_err(|s| format!("{:?}", s.code())) }
    })
    .await
}

fn send_request(app: &str, addresses: std::collections::HashMap<String, AddressConfiguration>, dry_run: bool) -> SendMessagesRequest {
    SendMessagesRequest {
        app_id: app.to_string(),
        addresses,
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "Load Test <load@herald.test>".into(),
                subject: "Your code".into(),
                text_part: "Your one-time code is 123456. It expires in ten minutes.".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        dry_run,
        ..Default::default()
    }
}

/// SendMessages with one address on a fixed schedule; latency of each call.
async fn send_fixed_rate(
    channels: &[Channel],
    key: &Option<String>,
    app: &str,
    rate: u64,
    duration: Duration,
    dry_run: bool,
) -> anyhow::Result<(Histogram<u64>, Errors, f64)> {
    open_loop(rate, duration, |n| {
        let mut client = MessagesClient::new(channels[(n as usize) % channels.len()].clone());
        let addresses =
            [(format!("t{n}@load.herald.test"), AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() })]
                .into();
        let req = request(key, send_request(app, addresses, dry_run));
        async move {
            let r = client.send_messages(req).await.map_err(|s| format!("{:?}", s.code()))?;
            match r.get_ref().result.values().find(|v| v.delivery_status != DeliveryStatus::Successful as i32) {
                None => Ok(()),
                Some(v) => Err(DeliveryStatus::try_from(v.delivery_status).map_or("UNKNOWN".into(), |d| d.as_str_name().to_string())),
            }
        }
    })
    .await
}
