//! Events in and out, end to end on the real daemon: PutEvents' limits and per-event results,
//! an endpoint created by PutEvents, recency segments from reported activity, EVENT campaigns
//! firing into a real SMTP server (and surviving a kill -9 between PutEvents and the send),
//! StreamEvents resumed after a disconnect, and event webhooks verified by the Standard
//! Webhooks specification's own Python library.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::{Backend, Daemon, RedisServer, SmtpSink, API_KEY};
use herald::proto::v1::{
    campaigns_client::CampaignsClient, events_client::EventsClient, segments_client::SegmentsClient, AttributeDimension, AttributeType,
    AttributeValues, Campaign, ChannelType, ComparisonOperator, CreateCampaignRequest, CreateEventDestinationRequest, CreateSegmentRequest,
    DestinationState, DirectMessageConfiguration, EmailMessage, Endpoint, EventDestination, EventFilter, EventOrigin, EventsBatch,
    FilterType, Frequency, GetCampaignActivitiesRequest, GetEndpointRequest, GetEventDestinationRequest, GetSegmentRequest,
    MetricDimension, PutEventsRequest, PutEventsResponse, RecencyDimension, RecencyDuration, RecencyType, ReportedEvent, Schedule,
    SegmentBehaviors, SegmentDimensions, StreamEventsRequest, UpdateEndpointsBatchRequest,
};
use tonic::Code;

fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    herald::domain::timestamp(t)
}

fn event(event_type: &str, at: chrono::DateTime<chrono::Utc>) -> ReportedEvent {
    ReportedEvent { event_type: event_type.into(), timestamp: stamp(at), ..Default::default() }
}

fn email(id: &str, address: &str) -> Endpoint {
    Endpoint { id: id.into(), channel_type: ChannelType::Email as i32, address: address.into(), ..Default::default() }
}

async fn events(d: &Daemon) -> EventsClient<tonic::transport::Channel> {
    EventsClient::new(d.channel().await)
}

/// One endpoint's part of a PutEvents call: its id, its block, its events by id.
type Item<'a> = (&'a str, Option<Endpoint>, Vec<(&'a str, ReportedEvent)>);

async fn put(d: &Daemon, app: &str, batch: Vec<Item<'_>>) -> PutEventsResponse {
    let batch_item = batch
        .into_iter()
        .map(|(id, endpoint, evs)| {
            (id.to_string(), EventsBatch { endpoint, events: evs.into_iter().map(|(k, e)| (k.to_string(), e)).collect() })
        })
        .collect();
    events(d).await.put_events(d.req(PutEventsRequest { app_id: app.into(), batch_item })).await.expect("put events").into_inner()
}

fn status(r: &PutEventsResponse, endpoint: &str) -> (i32, HashMap<String, (i32, String)>) {
    let item = &r.results[endpoint];
    let e = item.endpoint_item_response.as_ref().unwrap();
    (e.status_code, item.events_item_response.iter().map(|(k, v)| (k.clone(), (v.status_code, v.message.clone()))).collect())
}

/// Every event of the app recorded so far, oldest first.
async fn all_events(d: &Daemon, app: &str) -> Vec<herald::proto::v1::Event> {
    let mut s = events(d)
        .await
        .stream_events(d.req(StreamEventsRequest { app_id: app.into(), stop_at_end: true, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(batch) = s.message().await.unwrap() {
        out.extend(batch.events);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_events_checks_pinpoints_limits_answers_per_event_and_creates_endpoints() {
    let d = Daemon::start(Backend::Embedded);
    let app = d.create_app("events").await.app_id;
    let now = chrono::Utc::now();

    // A request over Pinpoint's limit of 100 events is refused whole.
    let many: Vec<(String, ReportedEvent)> = (0..101).map(|i| (format!("e{i}"), event("x", now))).collect();
    let batch_item = HashMap::from([(
        "ep1".to_string(),
        EventsBatch { endpoint: None, events: many.into_iter().collect::<HashMap<String, ReportedEvent>>() },
    )]);
    let err = events(&d).await.put_events(d.req(PutEventsRequest { app_id: app.clone(), batch_item })).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("100"), "{}", err.message());
    assert!(all_events(&d, &app).await.is_empty(), "a refused request records nothing");

    let mut no_time = event("x", now);
    no_time.timestamp.clear();
    let mut crowded = event("feature_used", now);
    for i in 0..41 {
        crowded.attributes.insert(format!("a{i}"), "v".into());
    }
    let mut good = event("feature_used", now - chrono::Duration::minutes(5));
    good.attributes.insert("feature".into(), "search".into());
    good.metrics.insert("count".into(), 3.0);
    let r = put(
        &d,
        &app,
        vec![
            ("ep1", Some(email("", "ana@example.com")), vec![("good", good), ("no-time", no_time), ("crowded", crowded)]),
            ("ep2", None, vec![("lonely", event("feature_used", now))]),
            ("ep3", Some(email("ep3", "not an address")), vec![("kept", event("feature_used", now))]),
        ],
    )
    .await;
    let (ep1, ev1) = status(&r, "ep1");
    assert_eq!(ep1, 202);
    assert_eq!(ev1["good"].0, 202);
    assert_eq!(ev1["no-time"].0, 400);
    assert!(ev1["no-time"].1.contains("Timestamp"), "{:?}", ev1["no-time"]);
    assert_eq!(ev1["crowded"].0, 400);
    assert!(ev1["crowded"].1.contains("40"), "{:?}", ev1["crowded"]);
    let (ep2, ev2) = status(&r, "ep2");
    assert_eq!((ep2, ev2["lonely"].0), (404, 202), "an unknown endpoint without a block: events recorded, no endpoint");
    let (ep3, ev3) = status(&r, "ep3");
    assert_eq!((ep3, ev3["kept"].0), (400, 202), "a bad Endpoint block fails the endpoint, not its events");

    // The Endpoint block created ep1, with the event's time as its last activity.
    let got = d
        .endpoints()
        .await
        .get_endpoint(d.req(GetEndpointRequest { app_id: app.clone(), endpoint_id: "ep1".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.address, "ana@example.com");
    assert_eq!(got.last_activity_date, stamp(now - chrono::Duration::minutes(5)));
    let missing = d.endpoints().await.get_endpoint(d.req(GetEndpointRequest { app_id: app.clone(), endpoint_id: "ep2".into() })).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);

    // What was accepted is in the stream, with Pinpoint's envelope.
    let recorded = all_events(&d, &app).await;
    let ids: BTreeSet<&str> = recorded.iter().map(|e| e.client_event_id.as_str()).collect();
    assert_eq!(ids, BTreeSet::from(["good", "lonely", "kept"]));
    let g = recorded.iter().find(|e| e.client_event_id == "good").unwrap();
    assert_eq!((g.event_type.as_str(), g.client_id.as_str(), g.origin), ("feature_used", "ep1", EventOrigin::PutEvents as i32));
    assert_eq!(g.attributes["feature"], "search");
    assert_eq!(g.metrics["count"], 3.0);
    assert!(recorded.windows(2).all(|w| w[0].event_id < w[1].event_id), "ids grow");
    assert!(g.endpoint.is_none(), "events do not carry their endpoint unless asked");
    // Asked, each event carries its endpoint as it stands (none for an unknown one).
    let mut s = events(&d)
        .await
        .stream_events(d.req(StreamEventsRequest { app_id: app.clone(), stop_at_end: true, include_endpoint: true, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    let mut with = Vec::new();
    while let Some(b) = s.message().await.unwrap() {
        with.extend(b.events);
    }
    let good = with.iter().find(|e| e.client_event_id == "good").unwrap();
    assert_eq!(good.endpoint.as_ref().map(|e| e.address.as_str()), Some("ana@example.com"));
    let envelope = herald::events::envelope(&app, good);
    assert_eq!(envelope["endpoint"]["Address"], "ana@example.com");
    assert!(with.iter().find(|e| e.client_event_id == "lonely").unwrap().endpoint.is_none());

    let err = events(&d)
        .await
        .put_events(d.req(PutEventsRequest {
            app_id: "nosuchapp".into(),
            batch_item: HashMap::from([(
                "ep".into(),
                EventsBatch { endpoint: None, events: HashMap::from([("e".into(), event("x", now))]) },
            )]),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

async fn segment_size(d: &Daemon, app: &str, dims: SegmentDimensions) -> u64 {
    let mut s = SegmentsClient::new(d.channel().await);
    let seg = s
        .create_segment(d.req(CreateSegmentRequest { app_id: app.into(), name: "r".into(), dimensions: Some(dims), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    s.get_segment_size(d.req(GetSegmentRequest { app_id: app.into(), segment_id: seg.id, version: 0 })).await.unwrap().into_inner().size
        as u64
}

fn recency(duration: RecencyDuration, kind: RecencyType) -> SegmentDimensions {
    SegmentDimensions {
        behavior: Some(SegmentBehaviors { recency: Some(RecencyDimension { duration: duration as i32, recency_type: kind as i32 }) }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recency_segments_follow_reported_activity() {
    let d = Daemon::start(Backend::Redis);
    let app = d.create_app("recency").await.app_id;
    let now = chrono::Utc::now();
    let mut old = email("c", "c@example.com");
    old.effective_date = stamp(now - chrono::Duration::days(40));
    d.endpoints()
        .await
        .update_endpoints_batch(d.req(UpdateEndpointsBatchRequest {
            app_id: app.clone(),
            endpoints: vec![email("a", "a@example.com"), email("b", "b@example.com"), old],
        }))
        .await
        .unwrap();
    // a: a session three days ago; b: one now; c: nothing since its update 40 days ago.
    let mut start = event("_session.start", now - chrono::Duration::days(3));
    start.session = Some(herald::proto::v1::EventSession {
        id: "s1".into(),
        start_timestamp: stamp(now - chrono::Duration::days(3)),
        ..Default::default()
    });
    let r = put(&d, &app, vec![("a", None, vec![("s1", start)]), ("b", None, vec![("s2", event("_session.stop", now))])]).await;
    assert_eq!(status(&r, "a").0, 202);
    let (day, week, month) = (RecencyDuration::Hr24, RecencyDuration::Day7, RecencyDuration::Day30);
    assert_eq!(segment_size(&d, &app, recency(day, RecencyType::Active)).await, 1, "only b was active in the last day");
    assert_eq!(segment_size(&d, &app, recency(week, RecencyType::Active)).await, 2, "a and b in the last week");
    assert_eq!(segment_size(&d, &app, recency(month, RecencyType::Inactive)).await, 1, "c has been inactive for a month");

    // An older event never moves activity back; a new one moves it forward.
    put(&d, &app, vec![("b", None, vec![("old", event("feature_used", now - chrono::Duration::days(10)))])]).await;
    put(&d, &app, vec![("a", None, vec![("new", event("feature_used", now))])]).await;
    assert_eq!(segment_size(&d, &app, recency(day, RecencyType::Active)).await, 2, "a and b now");
    assert_eq!(segment_size(&d, &app, recency(day, RecencyType::Inactive)).await, 1, "c");
}

/// A silent SMTP server: accepts connections and never greets, so a send hangs in flight.
fn silent_smtp() -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (port, handle)
}

fn member(id: &str, plan: &str) -> Endpoint {
    let mut e = email(id, &format!("{id}@example.com"));
    e.attributes.insert("Plan".into(), AttributeValues { values: vec![plan.into()] });
    e
}

/// Pro members (a dynamic segment) and an EVENT campaign on `purchase` events whose item is
/// a book and whose price is over 10.
async fn event_campaign(d: &Daemon, app: &str) -> String {
    d.endpoints()
        .await
        .update_endpoints_batch(d.req(UpdateEndpointsBatchRequest {
            app_id: app.into(),
            endpoints: vec![member("e1", "Pro"), member("e2", "Pro"), member("e3", "Free"), member("e4", "Pro")],
        }))
        .await
        .unwrap();
    let segment = SegmentsClient::new(d.channel().await)
        .create_segment(d.req(CreateSegmentRequest {
            app_id: app.into(),
            name: "pro".into(),
            dimensions: Some(SegmentDimensions {
                attributes: HashMap::from([(
                    "Plan".into(),
                    AttributeDimension { attribute_type: AttributeType::Inclusive as i32, values: vec!["Pro".into()] },
                )]),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let campaign = Campaign {
        name: "thanks".into(),
        segment_id: segment.id,
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "shop@shop.example".into(),
                subject: "Thanks for your purchase".into(),
                text_part: "Enjoy it, {{Id}}".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        schedule: Some(Schedule {
            start_time: stamp(chrono::Utc::now() - chrono::Duration::minutes(1)),
            end_time: stamp(chrono::Utc::now() + chrono::Duration::hours(1)),
            frequency: Frequency::Event as i32,
            event_filter: Some(EventFilter {
                filter_type: FilterType::Endpoint as i32,
                event_types: vec!["purchase".into()],
                attributes: HashMap::from([(
                    "item".into(),
                    AttributeDimension { attribute_type: AttributeType::Inclusive as i32, values: vec!["book".into()] },
                )]),
                metrics: HashMap::from([(
                    "price".into(),
                    MetricDimension { comparison_operator: ComparisonOperator::GreaterThan as i32, value: 10.0 },
                )]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    CampaignsClient::new(d.channel().await)
        .create_campaign(d.req(CreateCampaignRequest { app_id: app.into(), campaign: Some(campaign) }))
        .await
        .unwrap()
        .into_inner()
        .id
}

fn purchase(item: &str, price: f64) -> ReportedEvent {
    let mut e = event("purchase", chrono::Utc::now());
    e.attributes.insert("item".into(), item.into());
    e.metrics.insert("price".into(), price);
    e
}

async fn wait_for(sink: &SmtpSink, subject: &str, n: usize, within: Duration) -> Vec<String> {
    let start = Instant::now();
    while sink.received(subject).len() < n && start.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sink.received(subject)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_campaign_fires_on_matching_events_of_its_segment_only() {
    let sink = SmtpSink::start(&[]);
    let url = format!("smtp://127.0.0.1:{}", sink.port);
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(Some(redis), tmp.path().join("data"), Some(tmp), Some(API_KEY.into()), &["--smtp-url", &url]);
    let app = d.create_app("shop").await.app_id;
    let campaign = event_campaign(&d, &app).await;
    // Give the daemon's trigger reader its start position (events from now on).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut view = purchase("book", 20.0);
    view.event_type = "view".into();
    put(
        &d,
        &app,
        vec![
            ("e1", None, vec![("p1", purchase("book", 20.0))]),
            ("e2", None, vec![("p2", purchase("pen", 20.0))]),
            ("e3", None, vec![("p3", purchase("book", 20.0))]),
            ("e4", None, vec![("p4", view), ("p5", purchase("book", 5.0))]),
            ("e9", None, vec![("p9", purchase("book", 20.0))]),
        ],
    )
    .await;
    let got = wait_for(&sink, "Thanks for your purchase", 1, Duration::from_secs(15)).await;
    assert_eq!(got, ["e1@example.com"]);
    // Nothing else follows: not the wrong item, the Free member, the wrong type, the low price.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.received("Thanks for your purchase"), ["e1@example.com"]);
    // A second matching event of the same endpoint is a second message.
    put(&d, &app, vec![("e1", None, vec![("p6", purchase("book", 30.0))])]).await;
    let got = wait_for(&sink, "Thanks for your purchase", 2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2);
    // The day's activity counts both.
    let start = Instant::now();
    loop {
        let a = CampaignsClient::new(d.channel().await)
            .get_campaign_activities(d.req(GetCampaignActivitiesRequest { app_id: app.clone(), campaign_id: campaign.clone() }))
            .await
            .unwrap()
            .into_inner()
            .activities;
        let sent: i64 = a.iter().map(|a| a.successful).sum();
        if sent == 2 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "activities: {a:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_between_put_events_and_the_send_sends_after_restart() {
    let (silent, _held) = silent_smtp();
    let silent_url = format!("smtp://127.0.0.1:{silent}");
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(Some(redis), tmp.path().join("data"), Some(tmp), Some(API_KEY.into()), &["--smtp-url", &silent_url]);
    let app = d.create_app("shop").await.app_id;
    event_campaign(&d, &app).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    put(&d, &app, vec![("e1", None, vec![("p1", purchase("book", 20.0))])]).await;
    // The message is on its way to a relay that never answers: kill the daemon then.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let sink = SmtpSink::start(&[]);
    let url = format!("smtp://127.0.0.1:{}", sink.port);
    let _d = d.crash_and_restart_with(&["--smtp-url", &url]);
    let got = wait_for(&sink, "Thanks for your purchase", 1, Duration::from_secs(30)).await;
    assert_eq!(got, ["e1@example.com"], "the accepted event still sends, once");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.received("Thanks for your purchase"), ["e1@example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_consumer_resumes_from_its_last_id_missing_nothing_and_seeing_nothing_twice() {
    let d = Daemon::start(Backend::Redis);
    let app = d.create_app("stream").await.app_id;
    let now = chrono::Utc::now();
    let mut sent = Vec::new();
    let mut batch = |from: usize, n: usize| {
        let evs: Vec<(String, ReportedEvent)> =
            (from..from + n).map(|i| (format!("ev{i:04}"), event(if i % 2 == 0 { "even" } else { "odd" }, now))).collect();
        sent.extend(evs.iter().map(|(k, _)| k.clone()));
        evs
    };
    for from in [0, 100, 200] {
        let evs = batch(from, 100);
        let batch_item = HashMap::from([("ep".to_string(), EventsBatch { endpoint: None, events: evs.into_iter().collect() })]);
        events(&d).await.put_events(d.req(PutEventsRequest { app_id: app.clone(), batch_item })).await.unwrap();
    }
    // A consumer takes 120 events, then goes away.
    let mut s = events(&d)
        .await
        .stream_events(d.req(StreamEventsRequest { app_id: app.clone(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    let mut seen: Vec<herald::proto::v1::Event> = Vec::new();
    while seen.len() < 120 {
        seen.extend(s.message().await.unwrap().unwrap().events);
    }
    seen.truncate(120);
    drop(s);
    // Meanwhile more arrive.
    let evs = batch(300, 100);
    let batch_item = HashMap::from([("ep".to_string(), EventsBatch { endpoint: None, events: evs.into_iter().collect() })]);
    events(&d).await.put_events(d.req(PutEventsRequest { app_id: app.clone(), batch_item })).await.unwrap();
    // It comes back after the last id it processed.
    let last = seen.last().unwrap().event_id.clone();
    let mut s = events(&d)
        .await
        .stream_events(d.req(StreamEventsRequest { app_id: app.clone(), after_event_id: last, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    while seen.len() < 400 {
        let batch = tokio::time::timeout(Duration::from_secs(10), s.message()).await.expect("more events").unwrap().unwrap();
        seen.extend(batch.events);
    }
    assert_eq!(seen.len(), 400, "nothing twice");
    assert!(seen.windows(2).all(|w| w[0].event_id < w[1].event_id), "in id order");
    let got: BTreeSet<&str> = seen.iter().map(|e| e.client_event_id.as_str()).collect();
    assert_eq!(got, sent.iter().map(String::as_str).collect::<BTreeSet<_>>(), "nothing missed");

    // Filters and positions: only `odd` events; `latest` sees only what comes next.
    let mut odd = events(&d)
        .await
        .stream_events(d.req(StreamEventsRequest {
            app_id: app.clone(),
            event_types: vec!["odd".into()],
            stop_at_end: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(b) = odd.message().await.unwrap() {
        assert!(b.events.iter().all(|e| e.event_type == "odd"));
        n += b.events.len();
    }
    assert_eq!(n, 200);
    let mut latest = events(&d)
        .await
        .stream_events(d.req(StreamEventsRequest { app_id: app.clone(), latest: true, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    put(&d, &app, vec![("ep", None, vec![("fresh", event("even", now))])]).await;
    let b = tokio::time::timeout(Duration::from_secs(5), latest.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(b.events.iter().map(|e| e.client_event_id.as_str()).collect::<Vec<_>>(), ["fresh"]);
    let err = events(&d)
        .await
        .stream_events(d.req(StreamEventsRequest { app_id: app.clone(), after_event_id: "12".into(), ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// The Python receiver (standardwebhooks verifies each request); returns its port and log.
fn receiver(secret: &str, fail_first: i32, dir: &std::path::Path) -> (u16, std::path::PathBuf, std::process::Child) {
    let port_file = dir.join(format!("port-{fail_first}"));
    let log = dir.join(format!("log-{fail_first}"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/webhook_receiver.py");
    let child = std::process::Command::new(common::python())
        .args([script, secret, port_file.to_str().unwrap(), log.to_str().unwrap(), &fail_first.to_string(), "120"])
        .spawn()
        .expect("the test venv's python (scripts/test makes it)");
    let start = Instant::now();
    while !port_file.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "the webhook receiver did not start (is standardwebhooks installed?)");
        std::thread::sleep(Duration::from_millis(50));
    }
    (std::fs::read_to_string(&port_file).unwrap().trim().parse().unwrap(), log, child)
}

fn requests(log: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_disabled_after_repeated_failure() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(Some(redis), tmp.path().join("data"), Some(tmp), Some(API_KEY.into()), &["--event-webhook-backoff-ms", "50"]);
    let app = d.create_app("hooks").await.app_id;
    let secret = herald::events::destinations::new_secret();
    let (port, log, mut child) = receiver(&secret, 2, dir.path());
    let (bad_port, bad_log, mut bad_child) = receiver(&secret, -1, dir.path());
    let mut c = events(&d).await;
    let made = c
        .create_event_destination(d.req(CreateEventDestinationRequest {
            app_id: app.clone(),
            destination: Some(EventDestination {
                url: format!("http://127.0.0.1:{port}/hook"),
                event_types: vec!["a".into()],
                secret: secret.clone(),
                batch_size: 50,
                ..Default::default()
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(made.secret.is_empty(), "a secret the caller gave is not echoed");
    let dest = made.destination.unwrap();
    assert!(dest.secret.is_empty());
    let failing = c
        .create_event_destination(d.req(CreateEventDestinationRequest {
            app_id: app.clone(),
            destination: Some(EventDestination {
                url: format!("http://127.0.0.1:{bad_port}/hook"),
                secret: secret.clone(),
                failure_limit: 3,
                ..Default::default()
            }),
        }))
        .await
        .unwrap()
        .into_inner()
        .destination
        .unwrap();
    let refused = c
        .create_event_destination(d.req(CreateEventDestinationRequest {
            app_id: app.clone(),
            destination: Some(EventDestination { url: "http://hooks.example.com/".into(), ..Default::default() }),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let generated = c
        .create_event_destination(d.req(CreateEventDestinationRequest {
            app_id: app.clone(),
            destination: Some(EventDestination { url: "https://hooks.example.com/in".into(), ..Default::default() }),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(generated.secret.starts_with("whsec_"), "a secret Herald made is shown once");

    let now = chrono::Utc::now();
    let mut wanted = BTreeSet::new();
    for round in 0..2 {
        let evs: Vec<(String, ReportedEvent)> =
            (0..75).map(|i| (format!("r{round}-{i}"), event(if i % 3 == 0 { "b" } else { "a" }, now))).collect();
        let batch_item = HashMap::from([("ep".to_string(), EventsBatch { endpoint: None, events: evs.into_iter().collect() })]);
        c.put_events(d.req(PutEventsRequest { app_id: app.clone(), batch_item })).await.unwrap();
    }
    let recorded = all_events(&d, &app).await;
    for e in recorded.iter().filter(|e| e.event_type == "a") {
        wanted.insert(e.event_id.clone());
    }
    assert_eq!(wanted.len(), 100);
    // Every `a` event arrives verified, the first batch after two 500s (same webhook-id).
    let start = Instant::now();
    let delivered = loop {
        let reqs = requests(&log);
        let ok: BTreeSet<String> = reqs
            .iter()
            .filter(|r| r["status"] == 204)
            .flat_map(|r| r["events"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()))
            .collect();
        if ok.len() >= wanted.len() {
            break reqs;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "delivered {} of {}: {reqs:?}", ok.len(), wanted.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(delivered.iter().all(|r| r["verified"] == true), "every request verifies: {delivered:?}");
    assert!(delivered.iter().all(|r| r["types"] == serde_json::json!(["a"])), "only subscribed types");
    assert_eq!(delivered[0]["status"], 500);
    assert_eq!(delivered[1]["status"], 500);
    assert_eq!(delivered[0]["id"], delivered[1]["id"], "a retry is the same message");
    assert_eq!(delivered[1]["id"], delivered[2]["id"]);
    let ok: Vec<String> = delivered
        .iter()
        .filter(|r| r["status"] == 204)
        .flat_map(|r| r["events"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(ok.len(), 100, "each event accepted once");
    assert_eq!(ok.iter().cloned().collect::<BTreeSet<_>>(), wanted);
    // The position moves past the unsubscribed events after the last batch at the worker's
    // next look: the backlog empties within a moment.
    let start = Instant::now();
    let got = loop {
        let got = c
            .get_event_destination(d.req(GetEventDestinationRequest { app_id: app.clone(), destination_id: dest.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        if got.backlog == 0 || start.elapsed() > Duration::from_secs(10) {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got.state, DestinationState::Enabled as i32);
    assert_eq!(got.delivered, 100);
    assert_eq!(got.backlog, 0);
    assert!(!got.last_success.is_empty());
    assert!(got.last_error.contains("500"), "{}", got.last_error);
    assert!(got.secret.is_empty());

    // The receiver that always fails: disabled after three failures in a row.
    let start = Instant::now();
    let got = loop {
        let got = c
            .get_event_destination(d.req(GetEventDestinationRequest { app_id: app.clone(), destination_id: failing.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        if got.state == DestinationState::Disabled as i32 {
            break got;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "still {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got.consecutive_failures, 3);
    assert!(got.backlog >= 150, "its backlog is kept: {}", got.backlog);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(requests(&bad_log).len(), 3, "no delivery once disabled");
    let _ = child.kill();
    let _ = bad_child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_events_tails_the_stream_and_manages_destinations() {
    let d = Daemon::start(Backend::Embedded);
    let app = d.create_app("cli").await.app_id;
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("http://{}", d.grpc);
    let env = [("HERALD_ADDR", addr.as_str()), ("HERALD_API_KEY", API_KEY)];
    let (code, out, err) = common::herald(
        &["events", "put", "--app", &app, "--endpoint", "ep1", "--type", "feature_used", "--attr", "feature=search", "--metric", "n=2"],
        &env,
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("event cli: 202"), "{out}");
    let (code, out, err) = common::herald(&["events", "tail", "--app", &app, "--once"], &env, dir.path());
    assert_eq!(code, 0, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.lines().next().expect("one event")).unwrap();
    assert_eq!(line["event_type"], "feature_used");
    assert_eq!(line["attributes"]["feature"], "search");
    assert_eq!(line["metrics"]["n"], 2.0);
    assert_eq!(line["client"]["client_id"], "ep1");
    let (code, out, err) = common::herald(
        &["destinations", "create", "--app", &app, "--url", "https://hooks.example.com/in", "--type", "a"],
        &env,
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("signing secret (shown once): whsec_"), "{err}");
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["state"], "ENABLED");
    let (code, out, _) = common::herald(&["destinations", "disable", "--app", &app, &id], &env, dir.path());
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["state"], "DISABLED");
    let (code, _, _) = common::herald(&["destinations", "delete", "--app", &app, &id], &env, dir.path());
    assert_eq!(code, 0);
    let (code, _, err) = common::herald(&["destinations", "get", "--app", &app, &id], &env, dir.path());
    assert_ne!(code, 0);
    assert!(err.to_lowercase().contains("not found"), "{err}");
}

/// In-process, with the event's arrival given: a triggered message that cannot go out within
/// 5 minutes of its event is dropped and counted as timed out; one within them goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_message_later_than_five_minutes_after_its_event_is_dropped_and_counted() {
    use std::sync::Arc;

    use herald::api::campaigns::CampaignsService;
    use herald::campaigns::{run::Runner, runs, TRIGGER_KIND};
    use herald::channels::email::{SmtpPool, SmtpRelay};
    use herald::dispatch::engine::{Engine, EngineConfig};
    use herald::proto::v1::{campaigns_server::Campaigns, App, CampaignRun, CampaignState, EventTrigger};
    use herald::render::{template::TemplateCache, Renderer};
    use herald::store::{embedded::EmbeddedStore, EndpointOp, Store};
    use prost::Message as _;

    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    store.create_app(&App { app_id: "app".into(), name: "t".into(), ..Default::default() }).await.unwrap();
    let now_text = herald::domain::timestamp(chrono::Utc::now());
    let writes = vec![member("e1", "Pro"), member("e2", "Pro")];
    store.write_endpoints("app", EndpointOp::Upsert { writes, all_or_nothing: true, now: now_text, request_id: "r".into() }).await.unwrap();
    let segment = herald::api::segments::SegmentsService::new(store.clone());
    let segment = herald::proto::v1::segments_server::Segments::create_segment(
        &segment,
        tonic::Request::new(CreateSegmentRequest {
            app_id: "app".into(),
            name: "all".into(),
            dimensions: Some(SegmentDimensions::default()),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    let cache = Arc::new(TemplateCache::new(Arc::new(Renderer::new()), 100));
    let config =
        EngineConfig { shards_per_channel: 2, queue_per_shard: 10_000, retry: Default::default(), outcome_ttl: Duration::from_secs(3_600) };
    let relay = Some(Arc::new(SmtpPool::new(SmtpRelay::new("127.0.0.1", sink.port))));
    let senders = herald::channels::senders::Senders::new(store.clone(), relay, None, None, Duration::from_secs(5));
    let engine = Engine::start(store.clone(), senders, config);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runner = Arc::new(Runner::new(store.clone(), engine, cache.clone(), "test".into(), stop_rx));
    let now = chrono::Utc::now();
    let campaign = Campaign {
        name: "late".into(),
        segment_id: segment.id,
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "shop@shop.example".into(),
                subject: "Triggered".into(),
                text_part: "Hi {{Id}}".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        schedule: Some(Schedule {
            start_time: stamp(now - chrono::Duration::hours(1)),
            frequency: Frequency::Event as i32,
            event_filter: Some(EventFilter { event_types: vec!["purchase".into()], ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let c = CampaignsService::new(
        store.clone(),
        cache,
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(herald::secrets::Sealer::from_base64(&base64_key()).unwrap()),
    )
    .create_campaign(tonic::Request::new(CreateCampaignRequest { app_id: "app".into(), campaign: Some(campaign) }))
    .await
    .unwrap()
    .into_inner();
    // e1's event arrived 6 minutes ago (its message is late), e2's a moment ago.
    for (endpoint, ago, number) in [("e1", 6, 10u64), ("e2", 0, 11)] {
        let run = CampaignRun {
            campaign_id: c.id.clone(),
            campaign_version: c.version,
            state: CampaignState::Executing as i32,
            trigger: Some(EventTrigger {
                endpoint_ids: vec![endpoint.into()],
                arrival: stamp(now - chrono::Duration::minutes(ago)),
                event_id: herald::events::event_id(number),
            }),
            ..Default::default()
        };
        let key = herald::campaigns::run::key(&run);
        store.write_record("app", TRIGGER_KIND, &key, 0, 1, &run.encode_to_vec()).await.unwrap();
        runner.clone().execute("app".into(), run).await;
        let stored = CampaignRun::decode(store.get_record("app", TRIGGER_KIND, &key, None).await.unwrap().unwrap().as_slice()).unwrap();
        assert_eq!(stored.state, CampaignState::Completed as i32, "kept as finished");
    }
    let got = wait_for(&sink, "Triggered", 1, Duration::from_secs(10)).await;
    assert_eq!(got, ["e2@example.com"]);
    // One activity per day of the events' arrivals: one, unless midnight fell in the 6 minutes.
    let days = if (now - chrono::Duration::minutes(6)).date_naive() == now.date_naive() { 1 } else { 2 };
    let day = runs(store.as_ref(), "app", &c.id).await.unwrap();
    assert_eq!(day.len(), days, "one activity per day: {day:?}");
    let all = day.iter().flat_map(|r| &r.activities);
    let sums = all.fold((0, 0, 0), |(t, s, n), a| (t + a.timed_out, s + a.successful, n + a.total_endpoints));
    assert_eq!(sums, (1, 1, 2), "{day:?}");
}

/// Event webhooks through a SIGTERM restart and a Redis killed and started again from its
/// append-only file: every event is delivered, a repeat is at most one whole batch under its
/// own webhook-id (the SIGTERM causes none), and the daemon stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_go_on_after_a_restart_and_a_redis_outage_without_repeats() {
    let redis = RedisServer::start_durable();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::spawn(Some(redis), tmp.path().join("data"), Some(tmp), Some(API_KEY.into()), &["--event-webhook-backoff-ms", "50"]);
    let app = d.create_app("hooks").await.app_id;
    let secret = herald::events::destinations::new_secret();
    let (port, log, mut child) = receiver(&secret, 0, dir.path());
    events(&d)
        .await
        .create_event_destination(d.req(CreateEventDestinationRequest {
            app_id: app.clone(),
            destination: Some(EventDestination {
                url: format!("http://127.0.0.1:{port}/hook"),
                secret: secret.clone(),
                batch_size: 10,
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    async fn put_round(d: &Daemon, app: &str, round: usize) {
        let evs: HashMap<String, ReportedEvent> = (0..100).map(|i| (format!("r{round}-{i}"), event("a", chrono::Utc::now()))).collect();
        let req = d.req(PutEventsRequest {
            app_id: app.to_string(),
            batch_item: HashMap::from([("ep".to_string(), EventsBatch { endpoint: None, events: evs })]),
        });
        events(d).await.put_events(req).await.unwrap();
    }
    let accepted = |log: &std::path::Path| -> Vec<String> {
        requests(log)
            .iter()
            .filter(|r| r["status"] == 204 && r["verified"] == true)
            .flat_map(|r| r["events"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect::<Vec<_>>())
            .collect()
    };
    let wait_accepted = |n: usize| {
        let log = log.clone();
        async move {
            let start = Instant::now();
            while accepted(&log).len() < n {
                assert!(start.elapsed() < Duration::from_secs(60), "{} of {n} delivered", accepted(&log).len());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    put_round(&d, &app, 0).await;
    // SIGTERM while batches of ten are going out, then a new daemon.
    tokio::time::sleep(Duration::from_millis(30)).await;
    d = d.restart();
    put_round(&d, &app, 1).await;
    wait_accepted(200).await;
    // Redis killed while a round is being delivered, then started again from its file.
    put_round(&d, &app, 2).await;
    d.redis.as_mut().unwrap().kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    d.redis.as_mut().unwrap().start_again();
    wait_accepted(300).await;
    assert!(d.is_running(), "the daemon stays up through the outage");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = accepted(&log);
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), 300, "every event delivered");
    // At least once: the only repeat a fault may cause is the batch answered by the receiver
    // while Redis died before its position was written, sent again under the same webhook-id.
    let mut ids: Vec<String> =
        requests(&log).iter().filter(|r| r["status"] == 204).map(|r| r["id"].as_str().unwrap().to_string()).collect();
    let batches = ids.len();
    ids.sort();
    ids.dedup();
    assert!(batches - ids.len() <= 1, "{} batches sent again", batches - ids.len());
    assert_eq!(got.len() - distinct.len(), (batches - ids.len()) * 10, "repeats are whole batches, same ids");
    let _ = child.kill();
}

/// SendMessages' Context goes into the message's events (the recipient's over the request's),
/// as Pinpoint adds it to delivery receipt events; overrides Herald does not apply and TraceId
/// are refused, each naming its field, rather than ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_context_reaches_the_events_and_unapplied_overrides_are_refused() {
    use herald::proto::v1::{messages_client::MessagesClient, AddressConfiguration, SendMessagesRequest};
    let sink = SmtpSink::start(&[]);
    let url = format!("smtp://127.0.0.1:{}", sink.port);
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(None, tmp.path().join("data"), Some(tmp), Some(API_KEY.into()), &["--smtp-url", &url]);
    let app = d.create_app("ctx").await.app_id;
    let message = Some(DirectMessageConfiguration {
        email_message: Some(EmailMessage {
            from_address: "shop@shop.example".into(),
            subject: "Context".into(),
            text_part: "Hi".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let address = |ctx: &[(&str, &str)]| AddressConfiguration {
        channel_type: ChannelType::Email as i32,
        context: ctx.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    let mut m = MessagesClient::new(d.channel().await);
    m.send_messages(d.req(SendMessagesRequest {
        app_id: app.clone(),
        addresses: HashMap::from([
            ("ana@example.com".to_string(), address(&[("order", "A-1")])),
            ("bo@example.com".to_string(), address(&[])),
        ]),
        message_configuration: message.clone(),
        context: HashMap::from([("flow".to_string(), "reset".to_string()), ("order".to_string(), "none".to_string())]),
        trace_id: "t-1".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    wait_for(&sink, "Context", 2, Duration::from_secs(10)).await;
    let start = Instant::now();
    let sends = loop {
        let sends: Vec<_> = all_events(&d, &app).await.into_iter().filter(|e| e.event_type == "_email.send").collect();
        if sends.len() == 2 || start.elapsed() > Duration::from_secs(10) {
            break sends;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sends.len(), 2);
    let mut orders: Vec<(&str, &str)> = sends.iter().map(|e| (e.attributes["flow"].as_str(), e.attributes["order"].as_str())).collect();
    orders.sort();
    assert_eq!(orders, [("reset", "A-1"), ("reset", "none")]);
    assert!(sends.iter().all(|e| e.attributes["trace_id"] == "t-1"), "the TraceId is on every event");

    let mut bad = address(&[]);
    bad.body_override = "Other text".into();
    bad.title_override = "Other subject".into();
    let err = m
        .send_messages(d.req(SendMessagesRequest {
            app_id: app.clone(),
            addresses: HashMap::from([("ana@example.com".to_string(), bad)]),
            message_configuration: message,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_error_details(&err);
    let fields: Vec<String> = details.bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    // Overrides are for push and SMS; an email recipient's are refused, naming each.
    assert_eq!(fields, ["addresses[ana@example.com].body_override", "addresses[ana@example.com].title_override"]);
    assert_eq!(sink.received("Context").len(), 2, "a refused call sends nothing");
}

/// A sealing key for services built in the test.
fn base64_key() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

/// What a reported event says of its app, SDK and session reaches the envelopes a webhook
/// receives (with the endpoint, for a destination that asks); a stream can start at an
/// instant; destinations page, change in place and go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_carry_app_sdk_session_and_endpoint_and_destinations_change_in_place() {
    use herald::proto::v1::{DeleteEventDestinationRequest, EventSession, ListEventDestinationsRequest, UpdateEventDestinationRequest};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(None, tmp.path().join("data"), Some(tmp), Some(API_KEY.into()), &["--event-webhook-backoff-ms", "50"]);
    let app = d.create_app("envelopes").await.app_id;
    let secret = herald::events::destinations::new_secret();
    let (port, log, mut child) = receiver(&secret, 0, dir.path());
    let mut c = events(&d).await;
    let hook = c
        .create_event_destination(d.req(CreateEventDestinationRequest {
            app_id: app.clone(),
            destination: Some(EventDestination {
                url: format!("http://127.0.0.1:{port}/hook"),
                event_types: vec!["feature_used".into()],
                secret: secret.clone(),
                include_endpoint: true,
                ..Default::default()
            }),
        }))
        .await
        .unwrap()
        .into_inner()
        .destination
        .unwrap();
    let now = chrono::Utc::now();
    let used = ReportedEvent {
        app_package_name: "com.shop.app".into(),
        app_title: "Shop".into(),
        app_version_code: "421".into(),
        client_sdk_version: "6.1.0".into(),
        sdk_name: "aws-amplify-js".into(),
        session: Some(EventSession {
            id: "s-1".into(),
            start_timestamp: stamp(now - chrono::Duration::seconds(30)),
            stop_timestamp: stamp(now),
            ..Default::default()
        }),
        ..event("feature_used", now)
    };
    put(&d, &app, vec![("ep-1", Some(email("ep-1", "ana@example.com")), vec![("u1", used)])]).await;
    let start = Instant::now();
    let envelope = loop {
        if let Some(e) =
            requests(&log).iter().filter(|r| r["status"] == 204).flat_map(|r| r["envelopes"].as_array().cloned().unwrap_or_default()).next()
        {
            break e;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "nothing delivered: {:?}", requests(&log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let a = &envelope["application"];
    assert_eq!(
        (a["package_name"].as_str(), a["title"].as_str(), a["version_code"].as_str()),
        (Some("com.shop.app"), Some("Shop"), Some("421"))
    );
    assert_eq!((a["sdk"]["name"].as_str(), a["sdk"]["version"].as_str()), (Some("aws-amplify-js"), Some("6.1.0")));
    assert_eq!(envelope["session"]["stop_timestamp"], now.timestamp_millis(), "{envelope}");
    assert_eq!(envelope["endpoint"]["Address"], "ana@example.com", "the destination asked for endpoints: {envelope}");

    // A stream from an instant: only what arrived at or after it.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let from = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    put(&d, &app, vec![("ep-1", None, vec![("u2", event("later", chrono::Utc::now()))])]).await;
    let mut stream = c
        .stream_events(d.req(StreamEventsRequest { app_id: app.clone(), from_time: stamp(from), stop_at_end: true, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    let mut types = Vec::new();
    while let Some(b) = stream.message().await.unwrap() {
        types.extend(b.events.into_iter().map(|e| e.event_type));
    }
    assert_eq!(types, ["later"]);

    // Destinations page, change in place (no types: every type; no endpoints) and go.
    for i in 0..2 {
        c.create_event_destination(d.req(CreateEventDestinationRequest {
            app_id: app.clone(),
            destination: Some(EventDestination { url: format!("https://hooks.example.com/{i}"), ..Default::default() }),
        }))
        .await
        .unwrap();
    }
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_event_destinations(d.req(ListEventDestinationsRequest { app_id: app.clone(), page_size: 2, page_token: token.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.destinations.len() <= 2);
        listed.extend(page.destinations.into_iter().map(|x| x.id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(listed.len(), 3, "{listed:?}");
    let changed = c
        .update_event_destination(d.req(UpdateEventDestinationRequest {
            app_id: app.clone(),
            destination_id: hook.id.clone(),
            destination: Some(EventDestination { batch_size: 7, ..Default::default() }),
            replace_event_types: true,
            include_endpoint: Some(false),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((changed.event_types.len(), changed.include_endpoint, changed.batch_size), (0, false, 7), "{changed:?}");
    assert_eq!(changed.url, hook.url, "what was not given is kept");
    c.delete_event_destination(d.req(DeleteEventDestinationRequest { app_id: app.clone(), destination_id: hook.id.clone() }))
        .await
        .unwrap();
    let gone = c
        .get_event_destination(d.req(GetEventDestinationRequest { app_id: app.clone(), destination_id: hook.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let _ = child.kill();
}
