//! Campaigns end to end: a daemon (or two) on Redis, endpoints, a segment, a campaign into a
//! real SMTP server (Postfix's smtp-sink). Exactly one message per eligible endpoint, holdout
//! and treatments by cohort, pause and resume, a daemon killed mid-run, two daemons firing a
//! run once.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Backend, Daemon, RedisServer, SmtpSink, API_KEY};
use herald::domain::endpoint::cohort_id;
use herald::proto::v1::{
    campaigns_client::CampaignsClient, segments_client::SegmentsClient, Campaign, CampaignLimits, CampaignState, ChannelType,
    CreateCampaignRequest, CreateSegmentRequest, DirectMessageConfiguration, EmailMessage, Endpoint, EndpointStatus, Frequency,
    GetCampaignActivitiesRequest, GetCampaignRequest, OptOut, Schedule, SegmentDimensions, Treatment, UpdateCampaignRequest,
};
use tonic::Code;

fn daemon(backend: Backend, sink: &SmtpSink) -> Daemon {
    let redis = (backend == Backend::Redis).then(RedisServer::start);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("smtp://127.0.0.1:{}?pool=8", sink.port);
    Daemon::spawn(redis, tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &["--smtp-url", &url])
}

/// `n` endpoints: every 10th opted out, every 15th INACTIVE, every 20th an SMS endpoint.
fn endpoint(i: usize) -> Endpoint {
    let sms = i % 20 == 7;
    Endpoint {
        id: format!("ep{i:06}"),
        channel_type: if sms { ChannelType::Sms as i32 } else { ChannelType::Email as i32 },
        address: if sms { format!("+1425555{i:04}") } else { format!("user{i}@example.com") },
        opt_out: if i % 10 == 3 { OptOut::All as i32 } else { OptOut::None as i32 },
        endpoint_status: if i % 15 == 4 { EndpointStatus::Inactive as i32 } else { EndpointStatus::Active as i32 },
        ..Default::default()
    }
}

/// Imports `n` generated endpoints and creates a segment of all of them; returns its id.
async fn setup(d: &Daemon, app: &str, n: usize) -> String {
    segment_of(d, app, (0..n).map(endpoint).collect()).await
}

/// Imports the endpoints and creates a segment of all of them; returns its id.
async fn segment_of(d: &Daemon, app: &str, endpoints: Vec<Endpoint>) -> String {
    // Imported with their status: the import made them ACTIVE unless they said INACTIVE.
    d.import_as_segment(app, endpoints).await
}

fn email_campaign(segment: &str, subject: &str) -> Campaign {
    Campaign {
        name: "launch".into(),
        segment_id: segment.into(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "news@shop.example".into(),
                subject: subject.into(),
                text_part: "Hello {{Id}}".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        schedule: Some(Schedule { start_time: "IMMEDIATE".into(), frequency: Frequency::Once as i32, ..Default::default() }),
        ..Default::default()
    }
}

/// Recipients of the dumped messages (one entry per message).
fn recipients(sink: &SmtpSink) -> Vec<String> {
    sink.messages()
        .iter()
        .filter_map(|m| m.lines().find_map(|l| l.strip_prefix("X-Rcpt-Args: <").map(|r| r.trim_end().trim_end_matches('>').to_string())))
        .collect()
}

async fn wait_for_state(
    c: &mut CampaignsClient<tonic::transport::Channel>,
    d: &Daemon,
    app: &str,
    id: &str,
    want: CampaignState,
    within: Duration,
) -> Campaign {
    let start = Instant::now();
    loop {
        let got = c
            .get_campaign(d.req(GetCampaignRequest { app_id: app.into(), campaign_id: id.into(), version: 0 }))
            .await
            .unwrap()
            .into_inner();
        if got.state == want as i32 {
            return got;
        }
        assert!(start.elapsed() < within, "campaign state {:?}, waiting for {want:?}", CampaignState::try_from(got.state));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_messages(sink: &SmtpSink, n: usize) -> Vec<String> {
    for _ in 0..100 {
        if recipients(sink).len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    recipients(sink)
}

/// Who must get a message: ACTIVE email endpoints, not opted out, not in the holdout.
fn eligible(n: usize, holdout: i32) -> Vec<String> {
    (0..n)
        .map(endpoint)
        .filter(|e| {
            e.channel_type == ChannelType::Email as i32
                && e.endpoint_status == EndpointStatus::Active as i32
                && e.opt_out == OptOut::None as i32
        })
        .filter(|e| cohort_id(&e.id) >= holdout)
        .map(|e| e.address)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_sends_once_to_each_eligible_endpoint_with_treatments_and_holdout() {
    let sink = SmtpSink::start(&[]);
    let d = daemon(Backend::Redis, &sink);
    let app = d.create_app("c").await.app_id;
    let n = 4_000;
    let segment = setup(&d, &app, n).await;
    let mut c = CampaignsClient::new(d.channel().await);
    let mut campaign = email_campaign(&segment, "A {{Id}}");
    campaign.holdout_percent = 10;
    campaign.additional_treatments = vec![Treatment {
        treatment_name: "B".into(),
        size_percent: 30,
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "news@shop.example".into(),
                subject: "B {{Id}}".into(),
                text_part: "b".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let created =
        c.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(campaign) })).await.unwrap().into_inner();
    assert_eq!(created.segment_version, 1, "the segment's version is pinned");
    wait_for_state(&mut c, &d, &app, &created.id, CampaignState::Completed, Duration::from_secs(60)).await;

    let expected = eligible(n, 10);
    let got = wait_for_messages(&sink, expected.len()).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in &got {
        *counts.entry(r.as_str()).or_insert(0) += 1;
    }
    assert_eq!(got.len(), expected.len(), "one message per eligible endpoint, none to the others");
    assert!(expected.iter().all(|a| counts.get(a.as_str()) == Some(&1)));

    // Treatment B is cohorts 10..40, the default 40..100 (the holdout 0..10).
    let subjects: Vec<String> =
        sink.messages().iter().filter_map(|m| m.lines().find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))).collect();
    let b = subjects.iter().filter(|s| s.starts_with("B ")).count();
    let in_b = (0..n).map(endpoint).filter(|e| (10..40).contains(&cohort_id(&e.id))).filter(|e| expected.contains(&e.address)).count();
    assert_eq!(b, in_b);
    let acts = c
        .get_campaign_activities(d.req(GetCampaignActivitiesRequest { app_id: app.clone(), campaign_id: created.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acts.activities.len(), 2);
    let (a0, a1) = (&acts.activities[0], &acts.activities[1]);
    assert_eq!((a0.treatment_id, a1.treatment_id, a1.treatment_name.as_str()), (0, 1, "B"));
    assert_eq!((a0.successful + a1.successful) as usize, expected.len());
    assert_eq!(a1.successful as usize, in_b);
    let holdout = (0..n)
        .map(endpoint)
        .filter(|e| {
            e.channel_type == ChannelType::Email as i32 && e.endpoint_status == EndpointStatus::Active as i32 && cohort_id(&e.id) < 10
        })
        .count();
    assert_eq!(a0.holdout as usize, holdout);
    let opted_out = a0.failed.get("OPT_OUT").copied().unwrap_or(0) + a1.failed.get("OPT_OUT").copied().unwrap_or(0);
    assert!(opted_out > 0);
    assert_eq!(a0.state, CampaignState::Completed as i32);
    // The metrics saw the same sends and the run.
    let text = d.metrics_text();
    let sent = format!(r#"herald_messages_total{{channel="EMAIL",status="SUCCESSFUL"}} {}"#, expected.len());
    assert!(text.contains(&sent), "{sent} in {text}");
    assert!(text.contains(r#"herald_campaign_runs_total{state="COMPLETED"} 1"#), "{text}");
    assert!(text.contains(r#"herald_queue_saturation{channel="EMAIL",shard="0"}"#), "{text}");
    assert!(text.contains("herald_send_duration_seconds_bucket"), "{text}");
    // Every metric family carries HELP text (promtool check metrics requires it).
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = line.split_whitespace().next().unwrap();
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP text");
    }
    // Having run its only occurrence, the campaign no longer holds its segment.
    SegmentsClient::new(d.channel().await)
        .delete_segment(d.req(herald::proto::v1::DeleteSegmentRequest { app_id: app.clone(), segment_id: segment.clone() }))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_validation() {
    let sink = SmtpSink::start(&[]);
    let d = daemon(Backend::Embedded, &sink);
    let app = d.create_app("p").await.app_id;
    let n = 1_500;
    let segment = setup(&d, &app, n).await;
    let mut c = CampaignsClient::new(d.channel().await);

    // An IMMEDIATE campaign cannot be paused.
    let created = c
        .create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(email_campaign(&segment, "now")) }))
        .await
        .unwrap()
        .into_inner();
    let mut paused = email_campaign(&segment, "now");
    paused.is_paused = true;
    let err = c
        .update_campaign(d.req(UpdateCampaignRequest { app_id: app.clone(), campaign_id: created.id.clone(), campaign: Some(paused) }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    wait_for_state(&mut c, &d, &app, &created.id, CampaignState::Completed, Duration::from_secs(60)).await;
    let first = wait_for_messages(&sink, eligible(n, 0).len()).await.len();
    assert_eq!(first, eligible(n, 0).len());

    // A scheduled campaign at 300 messages/s, paused mid-run and resumed.
    let mut slow = email_campaign(&segment, "slow");
    slow.schedule = Some(Schedule {
        start_time: herald::domain::timestamp(chrono::Utc::now()),
        frequency: Frequency::Once as i32,
        ..Default::default()
    });
    slow.limits = Some(CampaignLimits { messages_per_second: Some(300), ..Default::default() });
    let created =
        c.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(slow.clone()) })).await.unwrap().into_inner();
    wait_for_state(&mut c, &d, &app, &created.id, CampaignState::Executing, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut pause = slow.clone();
    pause.is_paused = true;
    c.update_campaign(d.req(UpdateCampaignRequest { app_id: app.clone(), campaign_id: created.id.clone(), campaign: Some(pause) }))
        .await
        .unwrap();
    wait_for_state(&mut c, &d, &app, &created.id, CampaignState::Paused, Duration::from_secs(20)).await;
    let at_pause = recipients(&sink).len() - first;
    assert!(at_pause > 0 && at_pause < eligible(n, 0).len(), "paused mid-run: {at_pause}");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(recipients(&sink).len() - first, at_pause, "nothing is sent while paused");
    c.update_campaign(d.req(UpdateCampaignRequest { app_id: app.clone(), campaign_id: created.id.clone(), campaign: Some(slow) }))
        .await
        .unwrap();
    wait_for_state(&mut c, &d, &app, &created.id, CampaignState::Completed, Duration::from_secs(60)).await;
    let total = wait_for_messages(&sink, first + eligible(n, 0).len()).await.len();
    assert_eq!(total - first, eligible(n, 0).len(), "resumed where it stopped: each endpoint once");

    // Its versions, newest first (Pinpoint's GetCampaignVersions): created, paused, resumed.
    let versions = |token: &str| {
        let mut c = c.clone();
        let req = d.req(herald::proto::v1::ListCampaignVersionsRequest {
            app_id: app.clone(),
            campaign_id: created.id.clone(),
            page_size: 2,
            page_token: token.into(),
        });
        async move { c.list_campaign_versions(req).await.unwrap().into_inner() }
    };
    let page = versions("").await;
    let seen: Vec<(i32, bool)> = page.campaigns.iter().map(|v| (v.version, v.is_paused)).collect();
    assert_eq!(seen, [(3, false), (2, true)]);
    let rest = versions(&page.next_page_token).await;
    assert_eq!(rest.campaigns.iter().map(|v| (v.version, v.is_paused)).collect::<Vec<_>>(), [(1, false)]);
    assert!(rest.next_page_token.is_empty());
    let err = c
        .list_campaign_versions(d.req(herald::proto::v1::ListCampaignVersionsRequest {
            app_id: app.clone(),
            campaign_id: "no-such-campaign".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Validation names the bad fields.
    let mut bad = email_campaign("no-such-segment", "x");
    bad.limits = Some(CampaignLimits { daily: Some(101), maximum_duration: Some(10), ..Default::default() });
    bad.schedule = Some(Schedule { start_time: "tomorrow".into(), frequency: Frequency::Daily as i32, ..Default::default() });
    let err = c.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(bad) })).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        tonic_types::StatusExt::get_details_bad_request(&err).unwrap().field_violations.into_iter().map(|v| v.field).collect();
    for f in [
        "campaign.limits.daily",
        "campaign.limits.maximum_duration",
        "campaign.schedule.start_time",
        "campaign.schedule.end_time",
        "campaign.segment_id",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_kill_9_and_two_daemons_fire_it_once() {
    let sink = SmtpSink::start(&[]);
    let d = daemon(Backend::Redis, &sink);
    let sibling = d.sibling();
    let app = d.create_app("k").await.app_id;
    let n = 3_000;
    let segment = setup(&d, &app, n).await;
    let mut c = CampaignsClient::new(d.channel().await);
    let mut campaign = email_campaign(&segment, "crash");
    campaign.schedule = Some(Schedule {
        start_time: herald::domain::timestamp(chrono::Utc::now()),
        frequency: Frequency::Once as i32,
        ..Default::default()
    });
    campaign.limits = Some(CampaignLimits { messages_per_second: Some(500), ..Default::default() });
    let created =
        c.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(campaign) })).await.unwrap().into_inner();
    wait_for_state(&mut c, &d, &app, &created.id, CampaignState::Executing, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Kill whichever daemon holds the run: both are killed and restarted, one after the other.
    let d = d.crash_and_restart();
    drop(sibling);
    let mut c = CampaignsClient::new(d.channel().await);
    let done = wait_for_state(&mut c, &d, &app, &created.id, CampaignState::Completed, Duration::from_secs(90)).await;
    assert_eq!(done.state, CampaignState::Completed as i32);
    let expected = eligible(n, 0);
    let got = wait_for_messages(&sink, expected.len()).await;
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for r in &got {
        *counts.entry(r.as_str()).or_insert(0) += 1;
    }
    assert!(expected.iter().all(|a| counts.contains_key(a.as_str())), "no eligible endpoint skipped");
    assert_eq!(counts.len(), expected.len(), "nobody else");
    let repeats: i64 = counts.values().map(|v| v - 1).sum();
    let acts = c
        .get_campaign_activities(d.req(GetCampaignActivitiesRequest { app_id: app.clone(), campaign_id: created.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acts.activities.len(), 1, "one run, fired once across two daemons");
    let reported = acts.activities[0].possible_repeats;
    assert!(repeats <= reported, "{repeats} repeats, {reported} reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_time_holds_messages_until_it_ends_in_each_endpoints_zone() {
    use herald::proto::v1::{EndpointDemographic, QuietTime};
    let sink = SmtpSink::start(&[]);
    let d = daemon(Backend::Redis, &sink);
    let app = d.create_app("q").await.app_id;
    // 30 endpoints in UTC (inside the quiet time set below), 30 in Tokyo (outside it), 30
    // without a time zone (quiet time does not apply).
    let zones = ["UTC", "Asia/Tokyo", ""];
    let endpoints: Vec<Endpoint> = (0..90)
        .map(|i| Endpoint {
            id: format!("q{i:03}"),
            channel_type: ChannelType::Email as i32,
            address: format!("q{i}@example.com"),
            demographic: Some(EndpointDemographic { timezone: zones[i % 3].into(), ..Default::default() }),
            ..Default::default()
        })
        .collect();
    let segment = segment_of(&d, &app, endpoints).await;
    // A quiet time around now in UTC, ending at the next minute.
    let now = chrono::Utc::now();
    let start = (now - chrono::Duration::minutes(1)).format("%H:%M").to_string();
    let end = (now + chrono::Duration::minutes(1)).format("%H:%M").to_string();
    let mut campaign = email_campaign(&segment, "quiet");
    campaign.schedule = Some(Schedule {
        start_time: herald::domain::timestamp(now),
        frequency: Frequency::Once as i32,
        quiet_time: Some(QuietTime { start, end }),
        ..Default::default()
    });
    let mut c = CampaignsClient::new(d.channel().await);
    let created =
        c.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(campaign) })).await.unwrap().into_inner();
    let get_acts = || GetCampaignActivitiesRequest { app_id: app.clone(), campaign_id: created.id.clone() };
    // The first pass sends the 60 outside quiet time and holds the 30 in it.
    let start_wait = Instant::now();
    loop {
        let acts = c.get_campaign_activities(d.req(get_acts())).await.unwrap().into_inner();
        if acts.activities.first().is_some_and(|a| a.successful == 60) {
            assert_eq!(acts.activities[0].held_by_quiet_time, 30);
            break;
        }
        assert!(start_wait.elapsed() < Duration::from_secs(20), "{acts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let early = wait_for_messages(&sink, 60).await;
    assert_eq!(early.len(), 60);
    assert!(
        early.iter().all(|r| r.trim_start_matches('q').trim_end_matches("@example.com").parse::<usize>().unwrap() % 3 != 0),
        "no UTC endpoint yet"
    );
    // When the quiet time ends they go, once each.
    wait_for_state(&mut c, &d, &app, &created.id, CampaignState::Completed, Duration::from_secs(150)).await;
    let all = wait_for_messages(&sink, 90).await;
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (90, 90));
    let acts = c.get_campaign_activities(d.req(get_acts())).await.unwrap().into_inner();
    assert_eq!((acts.activities[0].successful, acts.activities[0].total_endpoints), (90, 90));
}

/// The scheduler and runs in-process with the scheduler's clock given: an HOURLY campaign's
/// next occurrence fires without waiting an hour, and the per-endpoint daily limit holds
/// across the two runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_endpoint_limits_hold_across_recurring_runs() {
    use std::sync::Arc;

    use herald::api::campaigns::CampaignsService;
    use herald::api::segments::SegmentsService;
    use herald::campaigns::{run::Runner, runs, scheduler};
    use herald::channels::email::{SmtpPool, SmtpRelay};
    use herald::dispatch::engine::{Engine, EngineConfig};
    use herald::proto::v1::{campaigns_server::Campaigns, segments_server::Segments, App};
    use herald::render::{template::TemplateCache, Renderer};
    use herald::store::{embedded::EmbeddedStore, EndpointOp, Store};

    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    store.create_app(&App { app_id: "app".into(), name: "r".into(), ..Default::default() }).await.unwrap();
    let writes: Vec<Endpoint> = (0..200)
        .map(|i| Endpoint {
            id: format!("r{i:03}"),
            channel_type: ChannelType::Email as i32,
            address: format!("r{i}@example.com"),
            ..Default::default()
        })
        .collect();
    let now_text = herald::domain::timestamp(chrono::Utc::now());
    store.write_endpoints("app", EndpointOp::Upsert { writes, all_or_nothing: true, now: now_text, request_id: "r".into() }).await.unwrap();
    let segment = SegmentsService::new(store.clone())
        .create_segment(tonic::Request::new(CreateSegmentRequest {
            app_id: "app".into(),
            name: "all".into(),
            dimensions: Some(SegmentDimensions::default()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let cache = Arc::new(TemplateCache::new(Arc::new(Renderer::new()), 100));
    let config =
        EngineConfig { shards_per_channel: 2, queue_per_shard: 1_000, retry: Default::default(), outcome_ttl: Duration::from_secs(3_600) };
    let relay = Some(Arc::new(SmtpPool::new(SmtpRelay::new("127.0.0.1", sink.port))));
    let senders = herald::channels::senders::Senders::new(store.clone(), relay, None, None, Duration::from_secs(5));
    let engine = Engine::start(store.clone(), senders, config);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runner = Arc::new(Runner::new(store.clone(), engine, cache.clone(), "test".into(), stop_rx));
    let now = chrono::Utc::now();
    let mut campaign = email_campaign(&segment.id, "hourly");
    campaign.schedule = Some(Schedule {
        start_time: herald::domain::timestamp(now - chrono::Duration::hours(3)),
        end_time: herald::domain::timestamp(now + chrono::Duration::hours(5)),
        frequency: Frequency::Hourly as i32,
        ..Default::default()
    });
    campaign.limits = Some(CampaignLimits { daily: Some(1), total: Some(2), ..Default::default() });
    let service = CampaignsService::new(
        store.clone(),
        cache,
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(herald::secrets::Sealer::from_base64(&base64_key()).unwrap()),
    );
    let c = service
        .create_campaign(tonic::Request::new(CreateCampaignRequest { app_id: "app".into(), campaign: Some(campaign) }))
        .await
        .unwrap()
        .into_inner();

    let run_to_end = |at: chrono::DateTime<chrono::Utc>, n: usize| {
        let (runner, store, id) = (runner.clone(), store.clone(), c.id.clone());
        async move {
            scheduler::tick(&runner, at).await.unwrap();
            let start = Instant::now();
            loop {
                let done = runs(store.as_ref(), "app", &id).await.unwrap();
                if done.len() == n && done[n - 1].state == CampaignState::Completed as i32 {
                    return done;
                }
                assert!(start.elapsed() < Duration::from_secs(60), "{done:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // A campaign with runs to come holds its segment.
    let held = SegmentsService::new(store.clone())
        .delete_segment(tonic::Request::new(herald::proto::v1::DeleteSegmentRequest {
            app_id: "app".into(),
            segment_id: segment.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(held.code(), Code::FailedPrecondition);
    // The latest due occurrence (the third hour) fires once; the ones missed are not run late.
    let first = run_to_end(now, 1).await;
    assert_eq!(first[0].occurrence, 3);
    assert_eq!(first[0].activities[0].successful, 200);
    // An hour later: the next occurrence, and nobody gets a second message within 24 hours.
    let second = run_to_end(now + chrono::Duration::hours(1), 2).await;
    assert_eq!(second[1].occurrence, 4);
    let a = &second[1].activities[0];
    assert_eq!((a.total_endpoints, a.successful, a.capped), (200, 0, 200));
    assert_eq!(wait_for_messages(&sink, 200).await.len(), 200);
    // Past the end time no occurrence is left.
    scheduler::tick(&runner, now + chrono::Duration::hours(9)).await.unwrap();
    let after = runs(store.as_ref(), "app", &c.id).await.unwrap();
    assert_eq!(after.len(), 3, "the last occurrence before the end time fired once");
    assert_eq!(after[2].occurrence, 8, "start + 8 h is the end time itself");
}

/// A treatment with a schedule of its own sends at its own start: the default treatment goes
/// at once, treatment B's endpoints wait for B's start (the first minute boundary at least
/// five seconds away), then get their message, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_treatment_with_its_own_schedule_sends_at_its_start() {
    let sink = SmtpSink::start(&[]);
    let d = daemon(Backend::Redis, &sink);
    let app = d.create_app("t").await.app_id;
    let n = 400;
    let segment = setup(&d, &app, n).await;
    let now = chrono::Utc::now();
    let b_start = chrono::DateTime::from_timestamp((now.timestamp() + 5 + 59) / 60 * 60, 0).unwrap();
    let mut campaign = email_campaign(&segment, "A {{Id}}");
    campaign.schedule =
        Some(Schedule { start_time: herald::domain::timestamp(now), frequency: Frequency::Once as i32, ..Default::default() });
    campaign.additional_treatments = vec![Treatment {
        treatment_name: "B".into(),
        size_percent: 50,
        schedule: Some(Schedule {
            start_time: herald::domain::timestamp(b_start),
            frequency: Frequency::Once as i32,
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut c = CampaignsClient::new(d.channel().await);
    let created =
        c.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(campaign) })).await.unwrap().into_inner();
    let expected = eligible(n, 0);
    // B is cohorts 0..50.
    let in_b: Vec<String> =
        (0..n).map(endpoint).filter(|e| cohort_id(&e.id) < 50).map(|e| e.address).filter(|a| expected.contains(a)).collect();
    // Before B's start: exactly the default treatment's endpoints.
    let early = wait_for_messages(&sink, expected.len() - in_b.len()).await;
    assert!(chrono::Utc::now() < b_start, "the machine was too slow to see the default treatment alone");
    assert_eq!(early.len(), expected.len() - in_b.len());
    assert!(early.iter().all(|r| !in_b.contains(r)), "no B endpoint before B's start");
    wait_for_state(&mut c, &d, &app, &created.id, CampaignState::Completed, Duration::from_secs(120)).await;
    assert!(chrono::Utc::now() >= b_start);
    let all = wait_for_messages(&sink, expected.len()).await;
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (expected.len(), expected.len()));
    let acts = c
        .get_campaign_activities(d.req(GetCampaignActivitiesRequest { app_id: app.clone(), campaign_id: created.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acts.activities[1].scheduled_start, herald::domain::timestamp(b_start));
    assert_eq!(acts.activities[1].successful as usize, in_b.len());
}

/// 100,000 endpoints into a real smtp-sink: exactly one message to each eligible endpoint,
/// none to the opted-out, inactive or SMS ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_000_endpoint_campaign_delivers_exactly_once_to_each_eligible_endpoint() {
    let sink = SmtpSink::start(&[]);
    let d = daemon(Backend::Redis, &sink);
    let app = d.create_app("big").await.app_id;
    let n = 100_000;
    let segment = setup(&d, &app, n).await;
    let mut c = CampaignsClient::new(d.channel().await);
    let created = c
        .create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(email_campaign(&segment, "Hi {{Id}}")) }))
        .await
        .unwrap()
        .into_inner();
    wait_for_state(&mut c, &d, &app, &created.id, CampaignState::Completed, Duration::from_secs(600)).await;
    let expected = eligible(n, 0);
    let got = wait_for_messages(&sink, expected.len()).await;
    let mut counts: HashMap<&str, usize> = HashMap::with_capacity(got.len());
    for r in &got {
        *counts.entry(r.as_str()).or_insert(0) += 1;
    }
    assert_eq!(got.len(), expected.len(), "one message per eligible endpoint, none to the others");
    assert!(expected.iter().all(|a| counts.get(a.as_str()) == Some(&1)));
}

/// messages_per_second, measured at the sink from the arrival times of the messages past the
/// limiter's first burst: within 3 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_per_second_holds_at_the_sink() {
    let sink = SmtpSink::start(&[]);
    let d = daemon(Backend::Redis, &sink);
    let app = d.create_app("rate").await.app_id;
    let n = 3_600;
    let segment = setup(&d, &app, n).await;
    let mut campaign = email_campaign(&segment, "Paced");
    campaign.limits = Some(CampaignLimits { messages_per_second: Some(250), ..Default::default() });
    let mut c = CampaignsClient::new(d.channel().await);
    let created =
        c.create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(campaign) })).await.unwrap().into_inner();
    wait_for_state(&mut c, &d, &app, &created.id, CampaignState::Completed, Duration::from_secs(120)).await;
    let expected = eligible(n, 0).len();
    wait_for_messages(&sink, expected).await;
    let mut arrivals: Vec<std::time::SystemTime> =
        std::fs::read_dir(sink.dump.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().modified().unwrap()).collect();
    assert_eq!(arrivals.len(), expected);
    arrivals.sort();
    let from = 300;
    let span = arrivals.last().unwrap().duration_since(arrivals[from]).unwrap().as_secs_f64();
    let rate = (arrivals.len() - 1 - from) as f64 / span;
    assert!((rate - 250.0).abs() <= 250.0 * 0.03, "{rate:.1} messages/s at the sink for a limit of 250");
}

/// Pinpoint's defaults: a schedule of only `StartTime: IMMEDIATE` (no Frequency) runs once,
/// and the app's QuietTime holds a campaign that gives none of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_schedule_without_frequency_runs_once_under_the_apps_quiet_time() {
    use herald::proto::v1::{AppSettings, EndpointDemographic, QuietTime, UpdateAppSettingsRequest};
    let sink = SmtpSink::start(&[]);
    let d = daemon(Backend::Embedded, &sink);
    let app = d.create_app("defaults").await.app_id;
    // 10 endpoints in UTC (inside the app's quiet time), 10 in Tokyo (outside it).
    let endpoints: Vec<Endpoint> = (0..20)
        .map(|i| Endpoint {
            id: format!("d{i:03}"),
            channel_type: ChannelType::Email as i32,
            address: format!("d{i}@example.com"),
            demographic: Some(EndpointDemographic { timezone: ["UTC", "Asia/Tokyo"][i % 2].into(), ..Default::default() }),
            ..Default::default()
        })
        .collect();
    let segment = segment_of(&d, &app, endpoints).await;
    let now = chrono::Utc::now();
    let quiet = QuietTime {
        start: (now - chrono::Duration::minutes(30)).format("%H:%M").to_string(),
        end: (now + chrono::Duration::minutes(30)).format("%H:%M").to_string(),
    };
    let settings = AppSettings { quiet_time: Some(quiet), ..Default::default() };
    d.apps().await.update_app_settings(d.req(UpdateAppSettingsRequest { app_id: app.clone(), settings: Some(settings) })).await.unwrap();
    let mut campaign = email_campaign(&segment, "defaults");
    campaign.schedule = Some(Schedule { start_time: "IMMEDIATE".into(), ..Default::default() });
    let mut c = CampaignsClient::new(d.channel().await);
    let created = c
        .create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(campaign) }))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(created.schedule.as_ref().unwrap().frequency, Frequency::Once as i32, "stored as ONCE");
    let get_acts = || GetCampaignActivitiesRequest { app_id: app.clone(), campaign_id: created.id.clone() };
    let start_wait = Instant::now();
    let acts = loop {
        let acts = c.get_campaign_activities(d.req(get_acts())).await.unwrap().into_inner();
        if acts.activities.first().is_some_and(|a| a.successful == 10 && a.held_by_quiet_time == 10) {
            break acts;
        }
        assert!(start_wait.elapsed() < Duration::from_secs(20), "{acts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(acts.activities.len(), 1, "one run");
    let sent = wait_for_messages(&sink, 10).await;
    assert_eq!(sent.len(), 10, "{sent:?}");
    assert!(sent.iter().all(|r| r.trim_start_matches('d').trim_end_matches("@example.com").parse::<usize>().unwrap() % 2 == 1), "{sent:?}");
}

/// A sealing key for services built in the test.
fn base64_key() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}
