//! `journey`: journeys end to end into an smtp-sink this command starts.
//!
//! - **first email vs campaign**: the same email to the same `--endpoints` as an IMMEDIATE
//!   campaign, then as a journey's first activity; each rate is messages handed to the sink
//!   over the time from creation to the last one; the journey's over the campaign's.
//! - **steps**: a journey wait (1 s) → random split (50/50) → email on either branch; steps/s
//!   is three steps per participant over the time from the first wait's end to the last
//!   participant leaving (positions and outcomes in the daemon's store).
//! - **waiting** (`--waiting N`): N participants entered into a wait of an hour; the store's
//!   memory growth per participant (`INFO memory` of `--redis-url`) and the daemon's resident
//!   memory growth (with `--daemon-pid`).

use super::*;
use herald::proto::v1::journey_activity::Kind;
use herald::proto::v1::{
    journeys_client::JourneysClient, Campaign, CreateJourneyRequest, Frequency, GetJourneyExecutionActivityMetricsRequest,
    GetJourneyExecutionMetricsRequest, Journey, JourneyActivity, JourneyStartCondition, JourneyState, MessageActivity, RandomSplitActivity,
    RandomSplitEntry, Schedule, SegmentCondition, WaitActivity, WaitTime,
};

fn email(subject: &str, next: &str, size: usize) -> JourneyActivity {
    JourneyActivity {
        kind: Some(Kind::Email(MessageActivity {
            message_configuration: Some(content(subject, size)),
            next_activity: next.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn content(subject: &str, size: usize) -> DirectMessageConfiguration {
    let text: String = "Herald load test payload. ".chars().cycle().take(size).collect();
    DirectMessageConfiguration {
        email_message: Some(EmailMessage {
            subject: format!("{subject} {{{{User.UserAttributes.FirstName}}}}"),
            text_part: text,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn journey(segment: &str, start: &str, acts: Vec<(&str, JourneyActivity)>) -> Journey {
    Journey {
        name: "load".into(),
        start_condition: Some(JourneyStartCondition {
            segment_start_condition: Some(SegmentCondition { segment_id: segment.into() }),
            ..Default::default()
        }),
        activities: acts.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        start_activity: start.into(),
        state: JourneyState::Active as i32,
        // Every email in these journeys is untracked, like the campaign it is compared with.
        engagement_tracking: Some(false),
        ..Default::default()
    }
}

async fn metrics(
    channel: &Channel,
    key: &Option<String>,
    app: &str,
    id: &str,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let m = JourneysClient::new(channel.clone())
        .get_journey_execution_metrics(request(key, GetJourneyExecutionMetricsRequest { app_id: app.into(), journey_id: id.into() }))
        .await?;
    Ok(m.into_inner().metrics)
}

async fn activity(
    channel: &Channel,
    key: &Option<String>,
    app: &str,
    id: &str,
    act: &str,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let m = JourneysClient::new(channel.clone())
        .get_journey_execution_activity_metrics(request(
            key,
            GetJourneyExecutionActivityMetricsRequest { app_id: app.into(), journey_id: id.into(), journey_activity_id: act.into() },
        ))
        .await?;
    Ok(m.into_inner().metrics)
}

fn n(m: &std::collections::HashMap<String, String>, k: &str) -> u64 {
    m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Waits until the sink has counted `want` more messages than `before`; the seconds since
/// `t0` when it did.
async fn sink_reaches(sink: &Sink, before: u64, want: u64, t0: Instant) -> anyhow::Result<f64> {
    let deadline = Instant::now() + MAX_DURATION;
    loop {
        let got = sink.2.load(std::sync::atomic::Ordering::Relaxed) - before;
        if got >= want {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            bail!("the sink counted {got} of {want} messages");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Redis' CPU time (user + system) in seconds, from INFO cpu.
fn redis_cpu_seconds(url: &str) -> Option<f64> {
    let out = std::process::Command::new("redis-cli").args(["-u", url, "info", "cpu"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<f64>().ok());
    Some(field("used_cpu_user:")? + field("used_cpu_sys:")?)
}

/// CPU seconds of the daemon and of Redis, where known.
fn cpu_now(pid: Option<u32>, redis: Option<&str>) -> (Option<f64>, Option<f64>) {
    (pid.and_then(scenarios::cpu_seconds), redis.and_then(redis_cpu_seconds))
}

/// Microseconds of CPU per message between two readings, daemon then Redis.
fn cpu_per_message(a: (Option<f64>, Option<f64>), b: (Option<f64>, Option<f64>), n: u64) -> (Option<f64>, Option<f64>) {
    let per = |x: Option<f64>, y: Option<f64>| Some((y? - x?) * 1e6 / n as f64);
    (per(a.0, b.0), per(a.1, b.1))
}

fn show_cpu(c: (Option<f64>, Option<f64>)) -> String {
    let f = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.1}"));
    format!("CPU per message: daemon {} µs, Redis {} µs", f(c.0), f(c.1))
}

fn redis_used_memory(url: &str) -> anyhow::Result<u64> {
    let out = std::process::Command::new("redis-cli").args(["-u", url, "info", "memory"]).output().context("cannot run redis-cli")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no used_memory in INFO memory of {url}"))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn journeys(
    channel: &Channel,
    key: &Option<String>,
    endpoints: u64,
    size: usize,
    connections: i32,
    waiting: u64,
    redis_url: Option<String>,
    pid: Option<u32>,
    json_out: bool,
    keep: bool,
) -> anyhow::Result<()> {
    let sink = start_sink()?;
    let app = create_app(channel, key, "loadtest-journey").await?;
    import(channel, key, &app, endpoints, 4, 500).await?;
    scenarios::email_relay(channel, key, &app, sink.1, connections).await?;
    let segment = scenarios::everyone(channel, key, &app).await?;

    // 1. The same email as a campaign, then as a journey's first activity.
    let campaign = Campaign {
        name: "load".into(),
        segment_id: segment.clone(),
        message_configuration: Some(content("Campaign", size)),
        schedule: Some(Schedule { start_time: "IMMEDIATE".into(), frequency: Frequency::Once as i32, ..Default::default() }),
        engagement_tracking: Some(false),
        ..Default::default()
    };
    let before = sink.2.load(std::sync::atomic::Ordering::Relaxed);
    let cpu0 = cpu_now(pid, redis_url.as_deref());
    let t0 = Instant::now();
    herald::proto::v1::campaigns_client::CampaignsClient::new(channel.clone())
        .create_campaign(request(key, herald::proto::v1::CreateCampaignRequest { app_id: app.clone(), campaign: Some(campaign) }))
        .await?;
    let campaign_secs = sink_reaches(&sink, before, endpoints, t0).await?;
    let campaign_rate = endpoints as f64 / campaign_secs;
    let campaign_cpu = cpu_per_message(cpu0, cpu_now(pid, redis_url.as_deref()), endpoints);
    let mut client = JourneysClient::new(channel.clone());
    let before = sink.2.load(std::sync::atomic::Ordering::Relaxed);
    let cpu0 = cpu_now(pid, redis_url.as_deref());
    let t0 = Instant::now();
    let first = journey(&segment, "welcome", vec![("welcome", email("Journey", "", size))]);
    client.create_journey(request(key, CreateJourneyRequest { app_id: app.clone(), journey: Some(first) })).await?;
    let journey_secs = sink_reaches(&sink, before, endpoints, t0).await?;
    let journey_rate = endpoints as f64 / journey_secs;
    let journey_cpu = cpu_per_message(cpu0, cpu_now(pid, redis_url.as_deref()), endpoints);

    // 2. Steps: wait 1 s → random split → an email on either branch.
    let split = JourneyActivity {
        kind: Some(Kind::RandomSplit(RandomSplitActivity {
            branches: vec![
                RandomSplitEntry { next_activity: "left".into(), percentage: 50 },
                RandomSplitEntry { next_activity: "right".into(), percentage: 50 },
            ],
        })),
        ..Default::default()
    };
    let wait = JourneyActivity {
        kind: Some(Kind::Wait(WaitActivity {
            wait_time: Some(WaitTime { wait_for: "PT1S".into(), ..Default::default() }),
            next_activity: "split".into(),
        })),
        ..Default::default()
    };
    let steps = journey(
        &segment,
        "wait",
        vec![("wait", wait), ("split", split), ("left", email("Left", "", size)), ("right", email("Right", "", size))],
    );
    let before = sink.2.load(std::sync::atomic::Ordering::Relaxed);
    let created =
        client.create_journey(request(key, CreateJourneyRequest { app_id: app.clone(), journey: Some(steps) })).await?.into_inner();
    // Entered, then due a second later: the steps start when the first waits end.
    let deadline = Instant::now() + MAX_DURATION;
    let mut t_first = None;
    loop {
        let m = metrics(channel, key, &app, &created.id).await?;
        if t_first.is_none() && n(&activity(channel, key, &app, &created.id, "wait").await?, "EXIT_ACTIVITY") > 0 {
            t_first = Some(Instant::now());
        }
        if n(&m, "ENDPOINT_LEFT") >= endpoints {
            break;
        }
        if Instant::now() > deadline {
            bail!("the steps journey did not finish: {m:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let steps_secs = t_first.map_or(f64::NAN, |t| t.elapsed().as_secs_f64());
    let steps_rate = 3.0 * endpoints as f64 / steps_secs;
    let left = n(&activity(channel, key, &app, &created.id, "split").await?, "BRANCH_1");
    let at_sink = sink.2.load(std::sync::atomic::Ordering::Relaxed) - before;

    // 3. Participants waiting: the store's growth per participant, the daemon's growth.
    let mut waiting_figures = None;
    if waiting > 0 {
        let wapp = create_app(channel, key, "loadtest-journey-waiting").await?;
        import(channel, key, &wapp, waiting, 4, 500).await?;
        let wsegment = scenarios::everyone(channel, key, &wapp).await?;
        let used_before = redis_url.as_deref().map(redis_used_memory).transpose()?;
        let rss_before = pid.and_then(scenarios::resident_bytes);
        let hold = JourneyActivity {
            kind: Some(Kind::Wait(WaitActivity {
                wait_time: Some(WaitTime { wait_for: "PT1H".into(), ..Default::default() }),
                next_activity: "later".into(),
            })),
            ..Default::default()
        };
        let j = journey(&wsegment, "hold", vec![("hold", hold), ("later", email("Later", "", size))]);
        let t0 = Instant::now();
        let j = client.create_journey(request(key, CreateJourneyRequest { app_id: wapp.clone(), journey: Some(j) })).await?.into_inner();
        let mut peak = rss_before.unwrap_or(0);
        let deadline = Instant::now() + MAX_DURATION;
        loop {
            if let Some(r) = pid.and_then(scenarios::resident_bytes) {
                peak = peak.max(r);
            }
            let m = metrics(channel, key, &wapp, &j.id).await?;
            // Everyone in, and stepped into the wait.
            if n(&m, "ENDPOINT_ACTIVE") >= waiting && n(&activity(channel, key, &wapp, &j.id, "hold").await?, "ENTER_ACTIVITY") >= waiting {
                break;
            }
            if Instant::now() > deadline {
                bail!("not everyone entered: {m:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let entry_secs = t0.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let used_after = redis_url.as_deref().map(redis_used_memory).transpose()?;
        let rss_after = pid.and_then(scenarios::resident_bytes);
        let per = match (used_before, used_after) {
            (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / waiting as f64),
            _ => None,
        };
        let growth = match (rss_before, rss_after) {
            (Some(a), Some(b)) => Some((b as f64 - a as f64) / (1024.0 * 1024.0)),
            _ => None,
        };
        let peak_growth = rss_before.map(|a| (peak.max(rss_after.unwrap_or(0)) as f64 - a as f64) / (1024.0 * 1024.0));
        waiting_figures = Some((per, growth, peak_growth, entry_secs));
        cleanup(channel, key, &wapp, keep).await?;
    }

    if json_out {
        println!(
            "{}",
            json!({"scenario": "journey", "endpoints": endpoints, "campaign_per_second": campaign_rate, "journey_first_email_per_second": journey_rate,
                   "ratio": journey_rate / campaign_rate,
                   "campaign_cpu_us": [campaign_cpu.0, campaign_cpu.1], "journey_cpu_us": [journey_cpu.0, journey_cpu.1], "steps_per_second": steps_rate, "steps_seconds": steps_secs, "left_branch": left,
                   "steps_at_sink": at_sink, "waiting": waiting,
                   "store_bytes_per_waiting": waiting_figures.and_then(|w| w.0), "daemon_rss_growth_mb": waiting_figures.and_then(|w| w.1),
                   "daemon_rss_peak_growth_mb": waiting_figures.and_then(|w| w.2), "waiting_entry_seconds": waiting_figures.map(|w| w.3)})
        );
    } else {
        println!("campaign: {endpoints} emails in {campaign_secs:.2} s = {campaign_rate:.0}/s; {}", show_cpu(campaign_cpu));
        println!(
            "journey, first email activity: {endpoints} emails in {journey_secs:.2} s = {journey_rate:.0}/s; journey / campaign = {:.2}; {}",
            journey_rate / campaign_rate,
            show_cpu(journey_cpu)
        );
        println!(
            "steps (wait → random split → email): {} steps in {steps_secs:.2} s = {steps_rate:.0} steps/s; {left} went left, {} right; {at_sink} emails at the sink",
            3 * endpoints,
            endpoints - left
        );
        if let Some((per, growth, peak, secs)) = waiting_figures {
            println!(
                "waiting: {waiting} participants entered in {secs:.1} s; store {} bytes per participant; daemon resident memory {} MB after ({} MB at peak)",
                per.map_or("?".into(), |p| format!("{p:.0}")),
                growth.map_or("?".into(), |g| format!("{g:+.1}")),
                peak.map_or("?".into(), |g| format!("{g:+.1}")),
            );
        }
    }
    cleanup(channel, key, &app, keep).await
}
