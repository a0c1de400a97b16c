//! The scenarios that drive whole features end to end (segments, campaigns, webhooks) and the
//! same-run Redis reference; `main.rs` holds the shared client helpers and the older ones.

use super::*;
use herald::proto::v1::{
    channels_client::ChannelsClient, segments_client::SegmentsClient, Campaign, CreateSegmentRequest, EmailChannel, Frequency, Schedule,
    SegmentDimensions, UpdateEmailChannelRequest,
};

/// A segment of every endpoint of `app`; its id.
pub(crate) async fn everyone(channel: &Channel, key: &Option<String>, app: &str) -> anyhow::Result<String> {
    let request_body = CreateSegmentRequest {
        app_id: app.to_string(),
        name: "everyone".into(),
        dimensions: Some(SegmentDimensions::default()),
        ..Default::default()
    };
    Ok(SegmentsClient::new(channel.clone()).create_segment(request(key, request_body)).await?.into_inner().id)
}

/// Points the app's email channel at a loopback relay with `pool` connections.
pub(crate) async fn email_relay(channel: &Channel, key: &Option<String>, app: &str, port: u16, pool: i32) -> anyhow::Result<()> {
    ChannelsClient::new(channel.clone())
        .update_email_channel(request(
            key,
            UpdateEmailChannelRequest {
                app_id: app.to_string(),
                channel: Some(EmailChannel {
                    enabled: true,
                    from_address: "Load Test <load@herald.test>".into(),
                    relay_host: "127.0.0.1".into(),
                    relay_port: i32::from(port),
                    pool_size: pool,
                    ..Default::default()
                }),
            },
        ))
        .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn campaign(
    channel: &Channel,
    key: &Option<String>,
    endpoints: u64,
    size: usize,
    connections: i32,
    reference: bool,
    pid: Option<u32>,
    html: (usize, bool),
    json_out: bool,
    keep: bool,
) -> anyhow::Result<()> {
    let (html_links, tracking) = html;
    let sink = start_sink()?;
    let app = create_app(channel, key, "loadtest-campaign").await?;
    import(channel, key, &app, endpoints, 4, 500).await?;
    email_relay(channel, key, &app, sink.1, connections).await?;
    let segment = everyone(channel, key, &app).await?;
    let text: String = "Herald load test payload. ".chars().cycle().take(size).collect();
    let definition = Campaign {
        name: "load".into(),
        segment_id: segment.clone(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                subject: "Hello {{User.UserAttributes.FirstName}}".into(),
                html_part: if html_links == 0 {
                    String::new()
                } else {
                    let links: String = (0..html_links)
                        .map(|i| format!("<p>Story {i}</p><a href=\"https://shop.example/stories/{i}?utm_source=email&amp;id={{{{Id}}}}\">Read</a>\n"))
                        .collect();
                    format!("<html><body><h1>Hello {{{{User.UserAttributes.FirstName}}}}</h1>{links}</body></html>")
                },
                text_part: text,
                ..Default::default()
            }),
            ..Default::default()
        }),
        schedule: Some(Schedule { start_time: "IMMEDIATE".into(), frequency: Frequency::Once as i32, ..Default::default() }),
        engagement_tracking: Some(tracking),
        ..Default::default()
    };
    let reference_before = if reference { Some(smtp_source_rate(&sink, endpoints, size).await?) } else { None };
    let sink_before = sink.2.load(std::sync::atomic::Ordering::Relaxed);
    let cpu_before = pid.and_then(cpu_seconds);
    let run = run_campaign(channel, key, &app, definition, pid).await?;
    // The daemon's CPU time over the run (it does nothing else meanwhile), per message.
    let cpu_per_message = match (cpu_before, pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) if run.successful > 0 => Some((b - a) / run.successful as f64 * 1e6),
        _ => None,
    };
    let (secs, successful, rss_before, peak) = (run.seconds, run.successful, run.rss_before, run.peak);
    // The sink counts what it accepted (its counter lags a little).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_sink = sink.2.load(std::sync::atomic::Ordering::Relaxed) - sink_before;
    let rate = successful as f64 / secs;
    // The reference, timed again after the campaign: the mean of the two, so a machine that
    // speeds up or slows down during the run biases neither side.
    let reference_rate = match reference_before {
        Some(first) => {
            let second = smtp_source_rate(&sink, endpoints, size).await?;
            Some((first, second, (first + second) / 2.0))
        }
        None => None,
    };
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    if json_out {
        println!(
            "{}",
            json!({"scenario": "campaign", "endpoints": endpoints, "successful": successful, "at_sink": at_sink, "seconds": secs, "messages_per_second": rate,
                   "smtp_source_per_second": reference_rate.map(|r| r.2), "smtp_source_before": reference_rate.map(|r| r.0),
                   "smtp_source_after": reference_rate.map(|r| r.1), "ratio": reference_rate.map(|r| rate / r.2), "peak_rss_mb": pid.map(|_| mb(peak)),
                   "daemon_cpu_us_per_message": cpu_per_message})
        );
    } else {
        println!("campaign: {successful} messages successful ({at_sink} counted by the sink) to {endpoints} endpoints in {secs:.2} s = {rate:.0} messages/s end to end");
        if let Some((first, second, r)) = reference_rate {
            println!(
                "reference: smtp-source -d -s 16 = {r:.0} messages/s (before {first:.0}, after {second:.0}); Herald / smtp-source = {:.2}",
                rate / r
            );
        }
        if pid.is_some() {
            println!("daemon resident memory: {:.1} MB before, {:.1} MB at peak", rss_before.map(mb).unwrap_or(0.0), mb(peak));
        }
        if let Some(us) = cpu_per_message {
            println!("daemon CPU: {us:.1} µs per message (user + system time over the run)");
        }
    }
    cleanup(channel, key, &app, keep).await
}

/// Postfix's `smtp-source -d -s 16` pushing `count` messages of `size` bytes into the sink:
/// its messages per second.
pub(crate) async fn smtp_source_rate(sink: &Sink, count: u64, size: usize) -> anyhow::Result<f64> {
    let before = sink.2.load(std::sync::atomic::Ordering::Relaxed);
    let source = if std::path::Path::new("/usr/sbin/smtp-source").exists() { "/usr/sbin/smtp-source" } else { "smtp-source" };
    let t = Instant::now();
    let status = std::process::Command::new(source)
        .args(["-d", "-s", "16", "-m", &count.to_string(), "-l", &size.to_string(), "-f", "load@herald.test", "-t", "sink@herald.test"])
        .arg(format!("127.0.0.1:{}", sink.1))
        .status()
        .context("cannot run smtp-source (install postfix)")?;
    if !status.success() {
        bail!("smtp-source failed: {status}");
    }
    let r = count as f64 / t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = sink.2.load(std::sync::atomic::Ordering::Relaxed) - before;
    if got < count {
        eprintln!("note: the sink counted {got} of smtp-source's {count} messages");
    }
    Ok(r)
}

/// What one campaign run measured.
struct CampaignRun {
    seconds: f64,
    successful: i64,
    rss_before: Option<u64>,
    peak: u64,
}

/// Creates the campaign and watches it to its end: seconds from creation to the run's
/// recorded end, successful messages, and the daemon's resident memory (with `pid`).
async fn run_campaign(
    channel: &Channel,
    key: &Option<String>,
    app: &str,
    definition: herald::proto::v1::Campaign,
    pid: Option<u32>,
) -> anyhow::Result<CampaignRun> {
    use herald::proto::v1::{
        campaigns_client::CampaignsClient, CampaignState, CreateCampaignRequest, GetCampaignActivitiesRequest, GetCampaignRequest,
    };
    let app = app.to_string();
    let rss_before = pid.and_then(resident_bytes);
    let mut peak = rss_before.unwrap_or(0);
    let mut client = CampaignsClient::new(channel.clone());
    let start = Instant::now();
    let started_at = chrono::Utc::now();
    let created =
        client.create_campaign(request(key, CreateCampaignRequest { app_id: app.clone(), campaign: Some(definition) })).await?.into_inner();
    let deadline = Instant::now() + MAX_DURATION;
    loop {
        if let Some(rss) = pid.and_then(resident_bytes) {
            peak = peak.max(rss);
        }
        let c = client
            .get_campaign(request(key, GetCampaignRequest { app_id: app.clone(), campaign_id: created.id.clone(), version: 0 }))
            .await?
            .into_inner();
        if c.state == CampaignState::Completed as i32 {
            break;
        }
        if c.state == CampaignState::Invalid as i32 || Instant::now() > deadline {
            bail!("the campaign did not complete (state {})", c.state);
        }
        // Polled gently: the run's own end time, not the poll, ends the measurement.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let acts = client
        .get_campaign_activities(request(key, GetCampaignActivitiesRequest { app_id: app.clone(), campaign_id: created.id.clone() }))
        .await?
        .into_inner();
    let ended = acts.activities.iter().filter_map(|a| chrono::DateTime::parse_from_rfc3339(&a.end).ok()).max();
    let secs = match ended {
        Some(end) => (end.with_timezone(&chrono::Utc) - started_at).num_microseconds().unwrap_or(0) as f64 / 1e6,
        None => start.elapsed().as_secs_f64(),
    };
    let successful: i64 = acts.activities.iter().map(|a| a.successful).sum();
    Ok(CampaignRun { seconds: secs, successful, rss_before, peak })
}

/// An ES256 key (PKCS#8 PEM), as an APNs .p8 key file holds.
fn es256_key_pem() -> anyhow::Result<String> {
    use base64::Engine as _;
    let rng = ring::rand::SystemRandom::new();
    let der = ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key"))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    Ok(format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n")))
}

/// A push campaign: `endpoints` APNs endpoints, the app's APNs channel pointed at the built-in
/// HTTP/2 sink, an IMMEDIATE campaign to all of them; end-to-end messages/s from Herald's
/// outcomes and the sink's count.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn push(
    channel: &Channel,
    key: &Option<String>,
    endpoints: u64,
    connections: i32,
    pid: Option<u32>,
    json_out: bool,
    keep: bool,
) -> anyhow::Result<()> {
    use herald::proto::v1::{ApnsChannel, ApnsMessage, UpdateApnsChannelRequest};
    let (port, count) = start_http_sink().await?;
    let app = create_app(channel, key, "loadtest-push").await?;
    let apns_endpoint = |i: u64| Endpoint { channel_type: ChannelType::Apns as i32, address: format!("{i:064x}"), ..endpoint(i) };
    import_with(channel, key, &app, endpoints, 4, 500, apns_endpoint).await?;
    let base = format!("http://127.0.0.1:{port}");
    ChannelsClient::new(channel.clone())
        .update_apns_channel(request(
            key,
            UpdateApnsChannelRequest {
                app_id: app.clone(),
                channel: Some(ApnsChannel {
                    enabled: true,
                    token_key: es256_key_pem()?,
                    token_key_id: "LOADTEST01".into(),
                    team_id: "LOADTEAM01".into(),
                    bundle_id: "com.example.loadtest".into(),
                    base_url: base.clone(),
                    sandbox_base_url: base,
                    connections,
                    ..Default::default()
                }),
            },
        ))
        .await?;
    let segment = everyone(channel, key, &app).await?;
    let definition = Campaign {
        name: "push load".into(),
        segment_id: segment.clone(),
        message_configuration: Some(DirectMessageConfiguration {
            apns_message: Some(ApnsMessage {
                title: "Hello {{User.UserAttributes.FirstName}}".into(),
                body: "Herald push load test".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        schedule: Some(Schedule { start_time: "IMMEDIATE".into(), frequency: Frequency::Once as i32, ..Default::default() }),
        ..Default::default()
    };
    let run = run_campaign(channel, key, &app, definition, pid).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_sink = count.load(std::sync::atomic::Ordering::Relaxed);
    let rate = run.successful as f64 / run.seconds;
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    if json_out {
        println!(
            "{}",
            json!({"scenario": "push", "endpoints": endpoints, "successful": run.successful, "at_sink": at_sink, "seconds": run.seconds,
                   "messages_per_second": rate, "peak_rss_mb": pid.map(|_| mb(run.peak))})
        );
    } else {
        println!(
            "push: {} APNs messages successful ({at_sink} counted by the sink) to {endpoints} endpoints in {:.2} s = {rate:.0} messages/s end to end",
            run.successful, run.seconds
        );
        if pid.is_some() {
            println!("daemon resident memory: {:.1} MB before, {:.1} MB at peak", run.rss_before.map(mb).unwrap_or(0.0), mb(run.peak));
        }
    }
    cleanup(channel, key, &app, keep).await
}

/// A sink for webhook and push load: answers 200 to every POST, over HTTP/1.1 or HTTP/2
/// (cleartext), and counts them. Returns its port and the count; it serves until the process
/// ends.
async fn start_http_sink() -> anyhow::Result<(u16, std::sync::Arc<std::sync::atomic::AtomicU64>)> {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = count.clone();
    // The body is read: an HTTP/2 server that answers before reading resets the stream, and
    // enough such resets make it close the connection.
    let app = axum::Router::new().fallback(move |_body: axum::body::Bytes| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((port, count))
}

pub(crate) async fn webhook(
    channel: &Channel,
    key: &Option<String>,
    per_call: usize,
    calls: u64,
    concurrency: usize,
    json_out: bool,
    keep: bool,
) -> anyhow::Result<()> {
    use herald::proto::v1::CustomMessage;
    let (port, count) = start_http_sink().await?;
    let app = create_app(channel, key, "loadtest-webhook").await?;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (ch, key, app, next) = (channel.clone(), key.clone(), app.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = MessagesClient::new(ch).max_encoding_message_size(64 << 20).max_decoding_message_size(64 << 20);
            let (mut ok, mut failed) = (0u64, 0u64);
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= calls {
                    return anyhow::Ok((ok, failed));
                }
                let addresses = (0..per_call)
                    .map(|i| {
                        (
                            format!("http://127.0.0.1:{port}/hook/{n}/{i}"),
                            AddressConfiguration { channel_type: ChannelType::Custom as i32, ..Default::default() },
                        )
                    })
                    .collect();
                let req = SendMessagesRequest {
                    app_id: app.clone(),
                    addresses,
                    message_configuration: Some(DirectMessageConfiguration {
                        custom_message: Some(CustomMessage { data: "{\"kind\": \"load\", \"address\": \"{{Address}}\"}".into() }),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let r = client.send_messages(request(&key, req)).await?.into_inner();
                for v in r.result.values() {
                    if v.delivery_status == DeliveryStatus::Successful as i32 {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
            }
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (o, f) = t.await??;
        ok += o;
        failed += f;
    }
    let secs = start.elapsed().as_secs_f64();
    let received = count.load(std::sync::atomic::Ordering::Relaxed);
    let rate = ok as f64 / secs;
    if json_out {
        println!(
            "{}",
            json!({"scenario": "webhook", "messages": ok + failed, "successful": ok, "failed": failed, "received_by_sink": received, "seconds": secs, "messages_per_second": rate})
        );
    } else {
        println!(
            "webhook: {} messages ({ok} successful, {failed} not; the sink got {received} requests) in {secs:.2} s = {rate:.0} messages/s",
            ok + failed
        );
    }
    cleanup(channel, key, &app, keep).await
}

/// `redis-benchmark -P 100 -t set` against `host:port`: the raw pipelined SET rate of the Redis
/// Herald used, printed as the reference for the figures above.
pub(crate) fn redis_reference(target: &str, json_out: bool) -> anyhow::Result<()> {
    let (host, port) = target.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("--redis-reference takes host:port"))?;
    let out = std::process::Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "-P", "100", "-t", "set", "-n", "1000000", "-q"])
        .output()
        .context("cannot run redis-benchmark (install redis-tools)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .split(['\r', '\n'])
        .filter_map(|l| l.strip_prefix("SET: "))
        .filter_map(|l| l.split_whitespace().next().and_then(|n| n.parse::<f64>().ok()))
        .next_back()
        .ok_or_else(|| anyhow::anyhow!("redis-benchmark printed no SET rate: {text}"))?;
    if json_out {
        println!("{}", json!({"reference": "redis-benchmark -P 100 -t set", "set_per_second": rate}));
    } else {
        println!("reference: redis-benchmark -P 100 -t set = {rate:.0} SET/s against {target}");
    }
    Ok(())
}

/// A process's CPU time (user + system) in seconds, from /proc/PID/stat.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    // Clock ticks: 100 per second on Linux (USER_HZ).
    Some((utime + stime) / 100.0)
}

/// A process's resident memory in bytes (VmRSS), from /proc.
pub(crate) fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

pub(crate) async fn segment(
    channel: &Channel,
    key: &Option<String>,
    endpoints: u64,
    runs: u32,
    pid: Option<u32>,
    json_out: bool,
    keep: bool,
) -> anyhow::Result<()> {
    use herald::proto::v1::{
        segments_client::SegmentsClient, AttributeDimension, ComparisonOperator, CreateSegmentRequest, GetSegmentRequest, MetricDimension,
        SegmentDimensions, SegmentLocation, SetDimension,
    };
    let app = create_app(channel, key, "loadtest-segment").await?;
    let start = Instant::now();
    let (written, _) = import(channel, key, &app, endpoints, 4, 500).await?;
    let import_secs = start.elapsed().as_secs_f64();
    let dims = SegmentDimensions {
        attributes: [("Plan".to_string(), AttributeDimension { attribute_type: 0, values: vec!["Pro".into()] })].into(),
        location: Some(SegmentLocation {
            country: Some(SetDimension { dimension_type: 0, values: vec!["US".into(), "DE".into()] }),
            gps_point: None,
        }),
        metrics: [("Sessions".to_string(), MetricDimension { comparison_operator: ComparisonOperator::GreaterThan as i32, value: 10.0 })]
            .into(),
        ..Default::default()
    };
    let mut client = SegmentsClient::new(channel.clone());
    let seg = client
        .create_segment(request(
            key,
            CreateSegmentRequest { app_id: app.clone(), name: "pro-us-de-active".into(), dimensions: Some(dims), ..Default::default() },
        ))
        .await?
        .into_inner();
    // The members the generator made: Plan is Pro for i % 3 == 1, the country US or DE for
    // i % 4 in {0, 1}, Sessions is i % 50.
    let expected = (0..endpoints).filter(|i| i % 3 == 1 && i % 4 < 2 && i % 50 > 10).count() as i64;
    let rss_before = pid.and_then(resident_bytes);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_before.unwrap_or(0)));
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = pid.map(|pid| {
        let (peak, watching) = (peak.clone(), watching.clone());
        tokio::spawn(async move {
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(rss) = resident_bytes(pid) {
                    peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });
    let mut rates = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let size = client
            .get_segment_size(request(key, GetSegmentRequest { app_id: app.clone(), segment_id: seg.id.clone(), version: 0 }))
            .await?
            .into_inner();
        let secs = t.elapsed().as_secs_f64();
        if size.size != expected || size.scanned as u64 != written {
            bail!("the segment has {} members of {} scanned; expected {expected} of {written}", size.size, size.scanned);
        }
        rates.push(size.scanned as f64 / secs);
    }
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    if let Some(w) = watcher {
        let _ = w.await;
    }
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let growth = rss_before.map(|b| mb(peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(b)));
    if json_out {
        println!(
            "{}",
            json!({"scenario": "segment", "endpoints": written, "members": expected, "import_endpoints_per_second": written as f64 / import_secs,
                   "evaluations": rates, "median_endpoints_per_second": median, "rss_before_mb": rss_before.map(mb), "rss_growth_mb": growth})
        );
    } else {
        println!(
            "segment: {written} endpoints (imported at {:.0}/s), {expected} members; evaluation {} endpoints/s median of {runs} ({}){}",
            written as f64 / import_secs,
            median as u64,
            rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
            match (rss_before, growth) {
                (Some(b), Some(g)) => format!("; daemon resident memory {:.1} MB before, +{g:.1} MB at peak during the scans", mb(b)),
                _ => String::new(),
            }
        );
    }
    cleanup(channel, key, &app, keep).await
}
