//! Faults in the middle of a campaign, with real parts: a 20,000-endpoint email campaign at
//! 1,500 messages per second into Postfix's smtp-sink (which writes one file per message it
//! accepts), on a Redis that keeps an append-only file. At about a third of the run:
//!
//! - SIGTERM, then a new daemon: nobody is missing, nobody gets the message twice;
//! - kill -9, then a new daemon: nobody is missing; repeats are few (at most 500) and never
//!   more than the run reports as possible repeats;
//! - Redis killed and started again from its append-only file (three times in a row): the run
//!   completes every time, nobody is missing, at most 500 repeats, the daemon stays up, health
//!   says NOT_SERVING and SendMessages answers UNAVAILABLE while Redis is down, and every
//!   message the sink received has its outcome recorded.
//!
//! - a channel whose messages per second is shared by every daemon on the store (a channel
//!   quota): Redis killed and started again mid-run pauses the run; it completes, nobody is
//!   missing, and the sink never receives more than the quota allows (tokens are counted per
//!   second in Redis, and a daemon that cannot reach it takes none).
//!
//! And a SendMessages call that cannot queue all its recipients sends and records none of them;
//! endpoint writes cut by a kill -9 and by a Redis restart leave the bucketed endpoint tables
//! exact once the client has retried (one record, address and user entry each, the count right).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{email_message, Daemon, RedisServer, SmtpSink, API_KEY};
use herald::proto::v1::{
    campaigns_client::CampaignsClient, list_outcomes_request, messages_client::MessagesClient, AddressConfiguration, CampaignState,
    ChannelType, DeliveryStatus, Endpoint, EndpointStatus, GetCampaignActivitiesRequest, GetCampaignRequest, ListOutcomesRequest, OptOut,
    SendMessagesRequest,
};

const ENDPOINTS: usize = 20_000;
const RATE: i32 = 1_500;
const MAX_REPEATS: i64 = 500;

/// Every 10th endpoint opted out, every 15th INACTIVE.
fn endpoint(i: usize) -> Endpoint {
    Endpoint {
        id: format!("ep{i:06}"),
        channel_type: ChannelType::Email as i32,
        address: format!("user{i}@example.com"),
        opt_out: if i % 10 == 3 { OptOut::All as i32 } else { OptOut::None as i32 },
        endpoint_status: if i % 15 == 4 { EndpointStatus::Inactive as i32 } else { EndpointStatus::Active as i32 },
        ..Default::default()
    }
}

fn eligible() -> Vec<String> {
    (0..ENDPOINTS)
        .map(endpoint)
        .filter(|e| e.endpoint_status == EndpointStatus::Active as i32 && e.opt_out == OptOut::None as i32)
        .map(|e| e.address)
        .collect()
}

fn daemon(sink: &SmtpSink) -> Daemon {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("smtp://127.0.0.1:{}?pool=8", sink.port);
    Daemon::spawn(
        Some(RedisServer::start_durable()),
        tmp.path().join("data"),
        Some(tmp),
        Some(API_KEY.to_string()),
        &["--smtp-url", &url, "--shutdown-grace-secs", "20"],
    )
}

/// Imports the endpoints and makes a segment of all of them.
async fn setup(d: &Daemon, app: &str) -> String {
    d.import_as_segment(app, (0..ENDPOINTS).map(endpoint).collect()).await
}

async fn start_campaign(d: &Daemon, app: &str, segment: &str, subject: &str) -> String {
    common::start_email_campaign(d, app, segment, subject, Some(RATE)).await
}

/// How many messages the sink holds (all subjects): a cheap progress count.
fn sink_count(sink: &SmtpSink) -> usize {
    std::fs::read_dir(sink.dump.path()).unwrap().count()
}

async fn wait_for_sink(sink: &SmtpSink, at_least: usize, within: Duration) {
    let start = Instant::now();
    while sink_count(sink) < at_least {
        assert!(start.elapsed() < within, "only {} messages at the sink after {within:?}", sink_count(sink));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_completed(d: &Daemon, app: &str, id: &str, within: Duration) {
    let start = Instant::now();
    loop {
        // The daemon may be between stores (Redis restarting): errors are retried.
        if let Ok(mut c) = tokio::time::timeout(Duration::from_secs(2), async { CampaignsClient::new(d.channel().await) }).await {
            if let Ok(got) = c.get_campaign(d.req(GetCampaignRequest { app_id: app.into(), campaign_id: id.into(), version: 0 })).await {
                let state = got.into_inner().state;
                assert_ne!(state, CampaignState::Invalid as i32, "the run failed");
                if state == CampaignState::Completed as i32 {
                    return;
                }
            }
        }
        assert!(start.elapsed() < within, "campaign not completed within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (missing, sent twice or more beyond the first, possible repeats the run reports).
async fn tally(d: &Daemon, sink: &SmtpSink, app: &str, id: &str, subject: &str) -> (usize, i64, i64) {
    // The last messages reach the sink's files a moment after their outcomes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut counts: HashMap<String, i64> = HashMap::new();
    for r in sink.received(subject) {
        *counts.entry(r).or_insert(0) += 1;
    }
    let expected = eligible();
    let missing = expected.iter().filter(|a| !counts.contains_key(a.as_str())).count();
    let allowed: HashSet<&String> = expected.iter().collect();
    assert!(counts.keys().all(|a| allowed.contains(a)), "only eligible endpoints get the campaign");
    let twice: i64 = counts.values().map(|v| v - 1).sum();
    let acts = CampaignsClient::new(d.channel().await)
        .get_campaign_activities(d.req(GetCampaignActivitiesRequest { app_id: app.into(), campaign_id: id.into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acts.activities.len(), 1, "one run");
    let a = &acts.activities[0];
    assert_eq!(a.total_endpoints, expected.len() as i64 + opted_out() as i64, "every member counted once: {a:?}");
    assert_eq!(a.successful, expected.len() as i64, "every message counted once as successful: {a:?}");
    eprintln!(
        "{subject}: {} received, {missing} missing, {twice} twice, {} reported as possible repeats",
        counts.len(),
        a.possible_repeats
    );
    (missing, twice, a.possible_repeats)
}

fn opted_out() -> usize {
    (0..ENDPOINTS).map(endpoint).filter(|e| e.endpoint_status == EndpointStatus::Active as i32 && e.opt_out == OptOut::All as i32).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_then_restart_sends_everyone_exactly_once() {
    let sink = SmtpSink::start(&[]);
    let d = daemon(&sink);
    let app = d.create_app("sigterm").await.app_id;
    let segment = setup(&d, &app).await;
    let id = start_campaign(&d, &app, &segment, "rolling deploy").await;
    wait_for_sink(&sink, eligible().len() / 3, Duration::from_secs(60)).await;
    // restart() asserts the stopped daemon exited 0.
    let d = d.restart();
    wait_completed(&d, &app, &id, Duration::from_secs(120)).await;
    let (missing, twice, reported) = tally(&d, &sink, &app, &id, "rolling deploy").await;
    assert_eq!((missing, twice), (0, 0), "a graceful stop sends nobody twice and skips nobody");
    assert_eq!(reported, 0, "nothing was in doubt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_restart_misses_nobody_and_reports_its_repeats() {
    let sink = SmtpSink::start(&[]);
    let d = daemon(&sink);
    let app = d.create_app("kill").await.app_id;
    let segment = setup(&d, &app).await;
    let id = start_campaign(&d, &app, &segment, "crash").await;
    wait_for_sink(&sink, eligible().len() / 3, Duration::from_secs(60)).await;
    let d = d.crash_and_restart();
    wait_completed(&d, &app, &id, Duration::from_secs(120)).await;
    let (missing, twice, reported) = tally(&d, &sink, &app, &id, "crash").await;
    assert_eq!(missing, 0, "nobody skipped");
    assert!(twice <= MAX_REPEATS, "{twice} repeats");
    assert!(twice <= reported, "{twice} repeats, {reported} reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_run_pauses_the_run_and_loses_nothing() {
    let sink = SmtpSink::start(&[]);
    let mut d = daemon(&sink);
    let app = d.create_app("redis").await.app_id;
    let segment = setup(&d, &app).await;
    let health = tonic_health::pb::health_client::HealthClient::new(d.channel().await);
    for round in 0..3 {
        let subject = format!("outage {round}");
        let before = sink_count(&sink);
        let id = start_campaign(&d, &app, &segment, &subject).await;
        wait_for_sink(&sink, before + eligible().len() / 3, Duration::from_secs(60)).await;
        d.redis.as_mut().unwrap().kill();
        // While Redis is down: health says so, a transactional call is UNAVAILABLE with
        // retry info, and the daemon stays up.
        let mut h = health.clone();
        let start = Instant::now();
        loop {
            let status =
                h.check(tonic_health::pb::HealthCheckRequest { service: "herald.v1.Messages".into() }).await.unwrap().into_inner().status;
            if status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "health still SERVING with Redis down");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut addresses = HashMap::new();
        addresses.insert(
            "someone@example.com".to_string(),
            AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() },
        );
        let refused = MessagesClient::new(d.channel().await)
            .send_messages(d.req(SendMessagesRequest {
                app_id: app.clone(),
                addresses,
                message_configuration: Some(email_message("during the outage", "x")),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(tonic_types::StatusExt::get_error_details(&refused).retry_info().is_some(), "retry info");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(d.is_running(), "the daemon never exits over a store outage");
        d.redis.as_mut().unwrap().start_again();
        wait_completed(&d, &app, &id, Duration::from_secs(120)).await;
        assert!(d.is_running());
        let (missing, twice, _) = tally(&d, &sink, &app, &id, &subject).await;
        assert_eq!(missing, 0, "round {round}: nobody skipped");
        assert!(twice <= MAX_REPEATS, "round {round}: {twice} repeats");
        // Every message the sink received has its outcome recorded (none dropped in the outage).
        let mut recorded: HashSet<String> = HashSet::new();
        let mut token = String::new();
        let mut messages = MessagesClient::new(d.channel().await);
        loop {
            let page = messages
                .list_outcomes(d.req(ListOutcomesRequest {
                    app_id: app.clone(),
                    by: Some(list_outcomes_request::By::RequestId(format!("{id}:000000"))),
                    page_size: 1_000,
                    page_token: token.clone(),
                }))
                .await
                .unwrap()
                .into_inner();
            recorded
                .extend(page.outcomes.iter().filter(|o| o.delivery_status == DeliveryStatus::Successful as i32).map(|o| o.address.clone()));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let received: HashSet<String> = sink.received(&subject).into_iter().collect();
        let unrecorded = received.difference(&recorded).count();
        assert_eq!(unrecorded, 0, "round {round}: {unrecorded} messages received with no outcome recorded");
    }
    assert!(d.is_running());
}

/// Messages with this subject the sink received, per second of their arrival (file times).
fn arrivals_per_second(sink: &SmtpSink, subject: &str) -> std::collections::BTreeMap<i64, usize> {
    let want = format!("Subject: {subject}");
    let mut by_second = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(sink.dump.path()).unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        if !text.lines().any(|l| l.trim_end() == want) {
            continue;
        }
        let modified = entry.metadata().unwrap().modified().unwrap();
        let second = modified.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        *by_second.entry(second).or_insert(0) += 1;
    }
    by_second
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_channel_rate_pauses_through_a_redis_restart_and_never_exceeds_its_quota() {
    use herald::proto::v1::{AppSettings, ChannelQuota, UpdateAppSettingsRequest};
    const QUOTA: i32 = 2_000;
    let sink = SmtpSink::start(&[]);
    let mut d = daemon(&sink);
    let app = d.create_app("shared rate outage").await.app_id;
    let settings = AppSettings {
        channel_quotas: [("EMAIL".to_string(), ChannelQuota { messages_per_second: Some(QUOTA), ..Default::default() })].into(),
        ..Default::default()
    };
    d.apps().await.update_app_settings(d.req(UpdateAppSettingsRequest { app_id: app.clone(), settings: Some(settings) })).await.unwrap();
    let segment = setup(&d, &app).await;
    let subject = "shared rate outage";
    let id = common::start_email_campaign(&d, &app, &segment, subject, None).await;
    wait_for_sink(&sink, eligible().len() / 3, Duration::from_secs(60)).await;
    d.redis.as_mut().unwrap().kill();
    // With Redis down no token can be taken: the sink stops receiving (what was in flight
    // lands first).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let paused = sink_count(&sink);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink_count(&sink), paused, "nothing is sent while the shared rate cannot be counted");
    assert!(d.is_running(), "the daemon never exits over a store outage");
    d.redis.as_mut().unwrap().start_again();
    wait_completed(&d, &app, &id, Duration::from_secs(120)).await;
    let (missing, twice, _) = tally(&d, &sink, &app, &id, subject).await;
    assert_eq!(missing, 0, "nobody skipped");
    assert!(twice <= MAX_REPEATS, "{twice} repeats");
    // Every UTC second's tokens are counted in Redis, at most QUOTA, when the run admits its
    // messages; they reach the sink a moment later (through the engine's queues), never
    // earlier. So the seconds in which messages arrived, plus the first second's admissions
    // and one second of lag, bound what all of them can hold.
    let by_second = arrivals_per_second(&sink, subject);
    let total: usize = by_second.values().sum();
    let bound = QUOTA as usize * (by_second.len() + 2);
    assert!(total <= bound, "{total} messages arrived in {} seconds: more than the quota allows: {by_second:?}", by_second.len());
    let busiest = by_second.values().copied().max().unwrap_or(0);
    assert!(busiest as f64 >= f64::from(QUOTA) * 0.5, "the quota is used, not starved: {by_second:?}");
    let leased: f64 = d
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("herald_rate_tokens_leased_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(leased >= eligible().len() as f64, "every message took a shared token: {leased}");
}

/// Writes endpoints `ids` in batches of 100 with address version `v`, each batch retried
/// (as a client does) until it is taken; counts the batches taken.
async fn write_endpoints_retrying(
    d_channel: tonic::transport::Channel,
    req_key: String,
    app: String,
    ids: std::ops::Range<usize>,
    v: u32,
    taken: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use herald::proto::v1::{endpoints_client::EndpointsClient, UpdateEndpointsBatchRequest};
    let mut client = EndpointsClient::new(d_channel);
    let ids: Vec<usize> = ids.collect();
    for chunk in ids.chunks(100) {
        let endpoints: Vec<Endpoint> = chunk
            .iter()
            .map(|&i| Endpoint {
                address: format!("v{v}-user{i}@example.com"),
                user: Some(herald::proto::v1::EndpointUser { user_id: format!("u{}", i / 2), ..Default::default() }),
                ..endpoint(i)
            })
            .collect();
        loop {
            let mut req = tonic::Request::new(UpdateEndpointsBatchRequest { app_id: app.clone(), endpoints: endpoints.clone() });
            req.metadata_mut().insert("authorization", format!("Bearer {req_key}").parse().unwrap());
            match client.update_endpoints_batch(req).await {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The sum of the entry counts of an app's buckets of one table, read in Redis.
fn bucket_entries(redis: &RedisServer, app: &str, table: &str) -> i64 {
    let script = "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('HLEN', k) end return n";
    redis.cli(&["EVAL", script, "0", &format!("herald:{{{app}}}:{table}:*")])[0].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_writes_through_kill_9_and_a_redis_restart_leave_the_bucketed_tables_exact() {
    use std::sync::{atomic::AtomicUsize, atomic::Ordering, Arc};
    const N: usize = 6_000;
    let sink = SmtpSink::start(&[]);
    let d = daemon(&sink);
    let app = d.create_app("tables").await.app_id;
    // A writer killed under: kill -9 mid-write, a new daemon, the client writes everything again.
    let taken = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(write_endpoints_retrying(d.channel().await, API_KEY.to_string(), app.clone(), 0..N, 1, taken.clone()));
    while taken.load(Ordering::SeqCst) < 15 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut d = d.crash_and_restart();
    assert!(taken.load(Ordering::SeqCst) < N / 100, "killed mid-write");
    writer.abort();
    let _ = writer.await;
    write_endpoints_retrying(d.channel().await, API_KEY.to_string(), app.clone(), 0..N, 1, Arc::new(AtomicUsize::new(0))).await;
    // Redis killed mid-write and started again from its append-only file: every endpoint
    // moves to a new address; the client's failed batches are retried until taken.
    let taken = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(write_endpoints_retrying(d.channel().await, API_KEY.to_string(), app.clone(), 0..N, 2, taken.clone()));
    while taken.load(Ordering::SeqCst) < 15 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    d.redis.as_mut().unwrap().kill();
    assert!(taken.load(Ordering::SeqCst) < N / 100, "Redis killed mid-write");
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.redis.as_mut().unwrap().start_again();
    tokio::time::timeout(Duration::from_secs(120), writer).await.expect("the writes finish once Redis is back").unwrap();
    assert!(d.is_running(), "the daemon stays up through the outage");
    // Every table exact: one record per endpoint, one address entry per ACTIVE endpoint's
    // current address (none left for the old ones), one user entry per user, the count right.
    let mut client = d.endpoints().await;
    let redis = d.redis.as_ref().unwrap();
    let active = (0..N).filter(|&i| endpoint(i).endpoint_status == EndpointStatus::Active as i32).count() as i64;
    assert_eq!(bucket_entries(redis, &app, "epb"), N as i64);
    assert_eq!(bucket_entries(redis, &app, "adb"), active);
    assert_eq!(bucket_entries(redis, &app, "usb"), (N / 2) as i64);
    assert_eq!(redis.cli(&["HGET", &format!("herald:{{{app}}}:epix"), "n"]), [N.to_string()]);
    // The app's dictionary, made by its first batch, came back with Redis, and every record
    // (each written since) is packed with it.
    assert_eq!(redis.cli(&["HEXISTS", &format!("herald:{{{app}}}:epdict"), "d"]), ["1"]);
    let packed = "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do \
        for _, v in ipairs(redis.call('HVALS', k)) do if string.byte(v, 1) == 1 then n = n + 1 end end end return n";
    assert_eq!(redis.cli(&["EVAL", packed, "0", &format!("herald:{{{app}}}:epb:*")]), [N.to_string()]);
    for i in [0, 1, 17, N / 2, N - 1] {
        let e = client
            .get_endpoint(d.req(herald::proto::v1::GetEndpointRequest { app_id: app.clone(), endpoint_id: format!("ep{i:06}") }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(e.address, format!("v2-user{i}@example.com"));
    }
}
