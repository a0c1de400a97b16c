//! Journeys end to end against the real daemon: the welcome → wait → follow-up journey, and
//! welcome → wait → "did they open it?" → follow-up email or a custom message, with a real
//! request to the tracking pixel and a local webhook server; validation per field; DRAFT-only
//! updates; pause, resume and cancel; re-entry caps and the daily cap on an event-started
//! journey; quiet time holding and dropping; waits surviving a SIGTERM, a kill -9 and a Redis
//! restart with two daemons on one Redis, nobody stepped twice.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, Daemon, RedisServer, SmtpSink, API_KEY};
use herald::proto::v1::journey_activity::Kind;
use herald::proto::v1::{
    events_client::EventsClient, journeys_client::JourneysClient, templates_client::TemplatesClient, ChannelType, ConditionalSplitActivity,
    CreateJourneyRequest, CreateTemplateRequest, DimensionType, DirectMessageConfiguration, EmailMessage, EmailTemplate, Endpoint,
    EventCondition, EventDimensions, EventFilter, EventStartCondition, EventsBatch, GetJourneyExecutionActivityMetricsRequest,
    GetJourneyExecutionMetricsRequest, GetJourneyRequest, Journey, JourneyActivity, JourneyCondition, JourneyLimits, JourneyStartCondition,
    JourneyState, MessageActivity, PutEventsRequest, QuietTime, SegmentCondition, SetDimension, SimpleCondition, Template, TemplateType,
    UpdateJourneyRequest, UpdateJourneyStateRequest, WaitActivity, WaitTime,
};

fn email_inline(subject: &str, next: &str) -> JourneyActivity {
    JourneyActivity {
        kind: Some(Kind::Email(MessageActivity {
            message_configuration: Some(DirectMessageConfiguration {
                email_message: Some(EmailMessage {
                    from_address: "hello@shop.example".into(),
                    subject: subject.into(),
                    text_part: "Hi {{Id}}".into(),
                    html_part: "<html><body><p>Hi {{Id}}</p><a href=\"https://shop.example/\">Shop</a></body></html>".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            next_activity: next.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn email_template(name: &str, next: &str) -> JourneyActivity {
    JourneyActivity {
        kind: Some(Kind::Email(MessageActivity {
            template_name: name.into(),
            from_address: "hello@shop.example".into(),
            next_activity: next.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn wait(wait_for: &str, next: &str) -> JourneyActivity {
    JourneyActivity {
        kind: Some(Kind::Wait(WaitActivity {
            wait_time: Some(WaitTime { wait_for: wait_for.into(), ..Default::default() }),
            next_activity: next.into(),
        })),
        ..Default::default()
    }
}

fn segment_journey(name: &str, segment: &str, start: &str, acts: Vec<(&str, JourneyActivity)>) -> Journey {
    Journey {
        name: name.into(),
        start_condition: Some(JourneyStartCondition {
            segment_start_condition: Some(SegmentCondition { segment_id: segment.into() }),
            ..Default::default()
        }),
        activities: acts.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        start_activity: start.into(),
        state: JourneyState::Active as i32,
        ..Default::default()
    }
}

fn endpoints(n: usize, prefix: &str) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint {
            id: format!("{prefix}{i}"),
            channel_type: ChannelType::Email as i32,
            address: format!("{prefix}{i}@example.com"),
            ..Default::default()
        })
        .collect()
}

fn subject_of(m: &str) -> String {
    m.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or("").trim().to_string()
}

fn rcpt_of(m: &str) -> String {
    m.lines().find_map(|l| l.strip_prefix("X-Rcpt-Args: <")).unwrap_or("").trim().trim_end_matches('>').to_string()
}

/// (recipient, subject) of every message the sink holds, with when the test first saw it.
struct Seen {
    first: HashMap<(String, String), Instant>,
    count: HashMap<(String, String), usize>,
}

fn look(sink: &SmtpSink, seen: &mut Seen) {
    let mut count: HashMap<(String, String), usize> = HashMap::new();
    for m in sink.messages() {
        let k = (rcpt_of(&m), subject_of(&m));
        *count.entry(k.clone()).or_default() += 1;
        seen.first.entry(k).or_insert_with(Instant::now);
    }
    seen.count = count;
}

async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics(d: &Daemon, app: &str, journey: &str) -> HashMap<String, String> {
    JourneysClient::new(d.channel().await)
        .get_journey_execution_metrics(d.req(GetJourneyExecutionMetricsRequest { app_id: app.into(), journey_id: journey.into() }))
        .await
        .unwrap()
        .into_inner()
        .metrics
}

async fn activity_metrics(d: &Daemon, app: &str, journey: &str, activity: &str) -> HashMap<String, String> {
    JourneysClient::new(d.channel().await)
        .get_journey_execution_activity_metrics(d.req(GetJourneyExecutionActivityMetricsRequest {
            app_id: app.into(),
            journey_id: journey.into(),
            journey_activity_id: activity.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .metrics
}

/// Waits until `activity`'s messages to `n` participants are recorded as delivered.
async fn recorded(d: &Daemon, app: &str, journey: &str, activity: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = activity_metrics(d, app, journey, activity).await;
        if m.get("SUCCESS").and_then(|v| v.parse::<usize>().ok()) == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {activity}'s deliveries to be recorded: {m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A local HTTP server that records the custom messages posted to it.
async fn webhook_server() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let store = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)));
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_journeys_send_the_right_messages_at_the_right_times() {
    let sink = SmtpSink::start(&[]);
    let smtp = format!("smtp://127.0.0.1:{}?pool=4", sink.port);
    let public = format!("127.0.0.1:{}", free_port());
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--smtp-url", smtp.as_str(), "--feedback-addr", public.as_str()];
    let d = Daemon::spawn(Some(RedisServer::start()), tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &args);
    until("the public listener", 20, || std::net::TcpStream::connect(&public).is_ok()).await;
    let app = d.create_app("journeys").await.app_id;
    let segment = d.import_as_segment(&app, endpoints(3, "u")).await;
    TemplatesClient::new(d.channel().await)
        .create_template(d.req(CreateTemplateRequest {
            app_id: app.clone(),
            template: Some(Template {
                name: "Welcome".into(),
                template_type: TemplateType::Email as i32,
                content: Some(herald::proto::v1::template::Content::Email(EmailTemplate {
                    subject: "Welcome".into(),
                    text_part: "Welcome {{Id}}".into(),
                    html_part: "<html><body><p>Welcome {{Id}}</p></body></html>".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    let mut journeys = JourneysClient::new(d.channel().await);

    // Validation names each bad field, and nothing is created.
    let bad =
        segment_journey("bad", &segment, "welcome", vec![("welcome", email_template("Welcome", "nowhere")), ("lost", wait("xyz", ""))]);
    let err = journeys.create_journey(d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(bad) })).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_details_bad_request(&err).expect("field violations");
    let fields: Vec<String> = details.field_violations.iter().map(|f| f.field.clone()).collect();
    assert!(fields.contains(&r#"journey.activities["welcome"].email.next_activity"#.to_string()), "{fields:?}");
    assert!(fields.contains(&r#"journey.activities["lost"].wait.wait_time.wait_for"#.to_string()), "{fields:?}");

    // 1. Welcome (a stored template) → wait 2 s → follow-up.
    let started = Instant::now();
    let first = segment_journey(
        "welcome series",
        &segment,
        "welcome",
        vec![("welcome", email_template("Welcome", "wait")), ("wait", wait("2s", "follow")), ("follow", email_inline("Follow-up", ""))],
    );
    let first =
        journeys.create_journey(d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(first) })).await.unwrap().into_inner();
    let mut seen = Seen { first: HashMap::new(), count: HashMap::new() };
    until("3 welcome and 3 follow-up emails", 30, || {
        look(&sink, &mut seen);
        seen.count.len() == 6
    })
    .await;
    for i in 0..3 {
        let to = format!("u{i}@example.com");
        let welcome = seen.first[&(to.clone(), "Welcome".to_string())];
        let follow = seen.first[&(to.clone(), "Follow-up".to_string())];
        assert!(
            follow.duration_since(welcome) >= Duration::from_millis(1_500),
            "the follow-up waits: {:?}",
            follow.duration_since(welcome)
        );
        assert!(welcome.duration_since(started) < Duration::from_secs(10));
    }
    // A published journey cannot be changed.
    let err = journeys
        .update_journey(d.req(UpdateJourneyRequest { app_id: app.clone(), journey_id: first.id.clone(), journey: Some(first.clone()) }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    // Everyone left; the journey completes (a segment read once, nobody inside).
    let mut m = HashMap::new();
    for _ in 0..100 {
        m = metrics(&d, &app, &first.id).await;
        if m.get("ENDPOINT_LEFT").map(String::as_str) == Some("3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((m["ENDPOINT_ENTERED"].as_str(), m["ENDPOINT_LEFT"].as_str(), m["ENDPOINT_ACTIVE"].as_str()), ("3", "3", "0"), "{m:?}");
    let a = activity_metrics(&d, &app, &first.id, "welcome").await;
    assert_eq!(a["SUCCESS"], "3", "{a:?}");
    let mut state = JourneyState::Active;
    for _ in 0..100 {
        let j = journeys
            .get_journey(d.req(GetJourneyRequest { app_id: app.clone(), journey_id: first.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        state = JourneyState::try_from(j.state).unwrap();
        if state == JourneyState::Completed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, JourneyState::Completed);

    // 2. Welcome → wait → did they open it? → follow-up email, or a custom message.
    let (hook, posted) = webhook_server().await;
    let opened = JourneyActivity {
        kind: Some(Kind::ConditionalSplit(ConditionalSplitActivity {
            condition: Some(JourneyCondition {
                conditions: vec![SimpleCondition {
                    event_condition: Some(EventCondition {
                        dimensions: Some(EventDimensions {
                            event_type: Some(SetDimension {
                                dimension_type: DimensionType::Inclusive as i32,
                                values: vec!["_email.open".into()],
                            }),
                            ..Default::default()
                        }),
                        message_activity: "hello".into(),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            true_activity: "thanks".into(),
            false_activity: "nudge".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let nudge = JourneyActivity {
        kind: Some(Kind::Custom(MessageActivity {
            delivery_uri: hook.clone(),
            endpoint_types: vec!["EMAIL".into()],
            data: "{\"nudge\": \"{{Id}}\"}".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let second = segment_journey(
        "engagement",
        &segment,
        "hello",
        vec![
            ("hello", email_inline("Hello", "pause")),
            ("pause", wait("3s", "opened")),
            ("opened", opened),
            ("thanks", email_inline("Thanks for reading", "")),
            ("nudge", nudge),
        ],
    );
    let second =
        journeys.create_journey(d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(second) })).await.unwrap().into_inner();
    let mut hello = Vec::new();
    until("3 Hello emails", 20, || {
        hello = sink.messages().into_iter().filter(|m| subject_of(m) == "Hello").collect();
        hello.len() == 3
    })
    .await;
    // u1 opens it: a real request to its pixel.
    let m = hello.iter().find(|m| rcpt_of(m) == "u1@example.com").unwrap();
    let flat = m.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=");
    let pixel = flat
        .match_indices(&format!("http://{public}/o/"))
        .map(|(i, _)| flat[i..].split(['"', '>']).next().unwrap().to_string())
        .next()
        .expect("pixel");
    herald::channels::install_crypto_provider();
    let r = reqwest::get(&pixel).await.unwrap();
    assert_eq!(r.status(), 200);
    until("the thanks email and two custom messages", 30, || {
        let thanks = sink.messages().into_iter().filter(|m| subject_of(m) == "Thanks for reading").count();
        thanks == 1 && posted.lock().unwrap().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let thanks: Vec<String> = sink.messages().into_iter().filter(|m| subject_of(m) == "Thanks for reading").map(|m| rcpt_of(&m)).collect();
    assert_eq!(thanks, ["u1@example.com"], "only the one who opened it");
    let mut nudged: Vec<String> =
        posted.lock().unwrap().iter().map(|p| p["Endpoints"].as_object().unwrap().keys().next().unwrap().clone()).collect();
    nudged.sort();
    assert_eq!(nudged, ["u0", "u2"], "the others get the custom message, once each");
    let split = activity_metrics(&d, &app, &second.id, "opened").await;
    assert_eq!((split["TRUE_BRANCH"].as_str(), split["FALSE_BRANCH"].as_str()), ("1", "2"), "{split:?}");
    // The journey's messages carry its ids in their events.
    let store = herald::store::redis::RedisStore::connect(&d.redis.as_ref().unwrap().url(), 2).await.unwrap();
    let events = herald::store::Store::read_events(&store, &app, None, 10_000).await.unwrap();
    let open = events.iter().find(|e| e.event_type == "_email.open").expect("an open");
    assert_eq!((open.attributes["journey_id"].as_str(), open.attributes["journey_activity_id"].as_str()), (second.id.as_str(), "hello"));
    // The journey's KPIs: 1 of 3 opened the hello email; per activity, the hello activity.
    let mut kpis = herald::proto::v1::kpis_client::KpisClient::new(d.channel().await);
    let kpi = |name: &str| herald::proto::v1::GetJourneyDateRangeKpiRequest {
        app_id: app.clone(),
        journey_id: second.id.clone(),
        kpi_name: name.into(),
        ..Default::default()
    };
    let rows = |r: herald::proto::v1::DateRangeKpiResponse| r.kpi_result.unwrap().rows;
    let total = rows(kpis.get_journey_date_range_kpi(d.req(kpi("email-open-rate"))).await.unwrap().into_inner());
    assert_eq!(total[0].values[0].value, (1.0f64 / 4.0).to_string(), "1 open of 4 delivered emails (3 hello, 1 thanks)");
    let per =
        rows(kpis.get_journey_date_range_kpi(d.req(kpi("direct-email-opens-grouped-by-journey-activity"))).await.unwrap().into_inner());
    let per: Vec<(String, String)> = per.into_iter().map(|r| (r.grouped_bys[0].value.clone(), r.values[0].value.clone())).collect();
    let want: Vec<(String, String)> =
        [("hello", "1.0"), ("nudge", "0.0"), ("thanks", "0.0")].map(|(a, b)| (a.to_string(), b.to_string())).to_vec();
    assert_eq!(per, want, "every message activity, the opens under hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_cancel_reentry_daily_cap_and_quiet_time() {
    let sink = SmtpSink::start(&[]);
    let smtp = format!("smtp://127.0.0.1:{}?pool=2", sink.port);
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(None, tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &["--smtp-url", smtp.as_str()]);
    let app = d.create_app("states").await.app_id;
    let segment = d.import_as_segment(&app, endpoints(2, "p")).await;
    let mut journeys = JourneysClient::new(d.channel().await);
    let count = |subject: &str| sink.messages().into_iter().filter(|m| subject_of(m) == subject).count();

    // PAUSED holds everyone in place; ACTIVE again lets them go on.
    let j = segment_journey(
        "pausing",
        &segment,
        "a",
        vec![("a", email_inline("A", "w")), ("w", wait("2s", "b")), ("b", email_inline("B", ""))],
    );
    let j = journeys.create_journey(d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(j) })).await.unwrap().into_inner();
    until("the first emails", 20, || count("A") == 2).await;
    let state = |s: JourneyState| UpdateJourneyStateRequest { app_id: app.clone(), journey_id: j.id.clone(), state: s as i32 };
    journeys.update_journey_state(d.req(state(JourneyState::Paused))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(count("B"), 0, "nobody moves while PAUSED");
    journeys.update_journey_state(d.req(state(JourneyState::Active))).await.unwrap();
    until("the second emails after resuming", 20, || count("B") == 2).await;
    let err = journeys.update_journey_state(d.req(state(JourneyState::Draft))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // CANCELLED: participants leave, nothing more is sent.
    let c = segment_journey(
        "cancelled",
        &segment,
        "a",
        vec![("a", email_inline("C1", "w")), ("w", wait("3s", "b")), ("b", email_inline("C2", ""))],
    );
    let c = journeys.create_journey(d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(c) })).await.unwrap().into_inner();
    until("C1", 20, || count("C1") == 2).await;
    journeys
        .update_journey_state(d.req(UpdateJourneyStateRequest {
            app_id: app.clone(),
            journey_id: c.id.clone(),
            state: JourneyState::Cancelled as i32,
        }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(count("C2"), 0);
    let m = metrics(&d, &app, &c.id).await;
    assert_eq!((m["CANCELLED"].as_str(), m["ENDPOINT_ACTIVE"].as_str()), ("2", "0"), "{m:?}");

    // An event-started journey: each matching event lets its endpoint in, at most
    // EndpointReentryCap times; DailyCap 1 stops its second message.
    let e = Journey {
        name: "on purchase".into(),
        start_condition: Some(JourneyStartCondition {
            event_start_condition: Some(EventStartCondition {
                event_filter: Some(EventFilter { event_types: vec!["purchase".into()], ..Default::default() }),
                segment_id: String::new(),
            }),
            ..Default::default()
        }),
        activities: [("thanks".to_string(), email_inline("Thanks", "more")), ("more".to_string(), email_inline("More", ""))].into(),
        start_activity: "thanks".into(),
        limits: Some(JourneyLimits { daily_cap: Some(1), endpoint_reentry_cap: Some(2), ..Default::default() }),
        state: JourneyState::Active as i32,
        ..Default::default()
    };
    let e = journeys.create_journey(d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(e) })).await.unwrap().into_inner();
    let mut events = EventsClient::new(d.channel().await);
    let put = |n: usize| {
        let batch = EventsBatch {
            endpoint: None,
            events: (0..n)
                .map(|k| {
                    (
                        format!("ev{k}"),
                        herald::proto::v1::ReportedEvent {
                            event_type: "purchase".into(),
                            timestamp: herald::domain::timestamp(chrono::Utc::now()),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
        };
        PutEventsRequest { app_id: app.clone(), batch_item: [("p0".to_string(), batch)].into() }
    };
    for _ in 0..3 {
        events.put_events(d.req(put(1))).await.unwrap();
        // The next event comes after the endpoint left (two messages, no wait).
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    until("the thanks emails", 20, || count("Thanks") >= 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = metrics(&d, &app, &e.id).await;
    assert_eq!(m["ENDPOINT_ENTERED"], "2", "re-entry cap 2 of 3 events: {m:?}");
    assert_eq!(m["REENTRY_CAP_EXCEEDED"], "1", "{m:?}");
    assert_eq!(count("Thanks") + count("More"), 1, "DailyCap 1: one message a day to p0");
    let more = activity_metrics(&d, &app, &e.id, "more").await;
    let thanks = activity_metrics(&d, &app, &e.id, "thanks").await;
    assert_eq!(
        more["DAILY_CAP"].parse::<i64>().unwrap() + thanks.get("DAILY_CAP").map_or(0, |v| v.parse().unwrap()),
        3,
        "{more:?} {thanks:?}"
    );

    // Quiet time now, for endpoints in UTC (quiet time applies only to endpoints with a
    // time zone): dropped, or held.
    for id in ["p0", "p1"] {
        let e = Endpoint {
            demographic: Some(herald::proto::v1::EndpointDemographic { timezone: "Etc/UTC".into(), ..Default::default() }),
            ..Default::default()
        };
        d.endpoints()
            .await
            .update_endpoint(d.req(herald::proto::v1::UpdateEndpointRequest {
                app_id: app.clone(),
                endpoint_id: id.into(),
                endpoint: Some(e),
            }))
            .await
            .unwrap();
    }
    let now = chrono::Utc::now();
    let quiet = QuietTime {
        start: (now - chrono::Duration::hours(1)).format("%H:%M").to_string(),
        end: (now + chrono::Duration::hours(1)).format("%H:%M").to_string(),
    };
    for (hold, subject) in [(false, "Q-drop"), (true, "Q-hold")] {
        let mut q = segment_journey(
            "quiet",
            &segment,
            "a",
            vec![("a", email_inline(subject, "b")), ("b", email_inline(&format!("{subject}-after"), ""))],
        );
        q.quiet_time = Some(quiet.clone());
        q.wait_for_quiet_time = hold;
        let q = journeys.create_journey(d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(q) })).await.unwrap().into_inner();
        let mut a = HashMap::new();
        for _ in 0..100 {
            a = activity_metrics(&d, &app, &q.id, "a").await;
            if a.get(if hold { "QUIET_TIME_WAIT" } else { "QUIET_TIME" }).map(String::as_str) == Some("2") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(a.get(if hold { "QUIET_TIME_WAIT" } else { "QUIET_TIME" }).map(String::as_str), Some("2"), "{a:?}");
        assert_eq!(count(subject), 0, "nothing sent in quiet time");
        let m = metrics(&d, &app, &q.id).await;
        assert_eq!(m["ENDPOINT_ACTIVE"], if hold { "2" } else { "0" }, "held participants stay; dropped ones go on: {m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_survive_sigterm_kill_9_and_redis_restarts_and_two_daemons_never_step_a_participant_twice() {
    let sink = SmtpSink::start(&[]);
    let smtp = format!("smtp://127.0.0.1:{}?pool=4", sink.port);
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--smtp-url", smtp.as_str()];
    let mut a = Daemon::spawn(Some(RedisServer::start_durable()), tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &args);
    let b = a.sibling();
    let app = a.create_app("durable").await.app_id;
    let n = 200;
    let segment = a.import_as_segment(&app, endpoints(n, "d")).await;
    let j = segment_journey(
        "durable",
        &segment,
        "a",
        vec![
            ("a", email_inline("First", "w1")),
            ("w1", wait("4s", "b")),
            ("b", email_inline("Second", "w2")),
            ("w2", wait("4s", "c")),
            ("c", email_inline("Third", "")),
        ],
    );
    let j = JourneysClient::new(a.channel().await)
        .create_journey(a.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(j) }))
        .await
        .unwrap()
        .into_inner();
    let count = |subject: &str| sink.messages().into_iter().filter(|m| subject_of(m) == subject).count();
    // A rolling restart of one daemon while the first emails go out (SIGTERM: it settles
    // what it handed out, releases its lease, exits 0).
    until("the first emails to start", 30, || count("First") > 0).await;
    let b = b.restart();
    until("every first email", 60, || count("First") == n).await;
    // Everyone waits now (their first emails recorded, not only received: a kill -9 before
    // that may send a message again, within the bound it reports); a daemon dies outright
    // and another starts in its place. The waits are in Redis: the second emails still come,
    // once each.
    recorded(&a, &app, &j.id, "a", n).await;
    a = a.crash_and_restart();
    until("every second email", 60, || count("Second") == n).await;
    recorded(&a, &app, &j.id, "b", n).await;
    // Redis dies while everyone waits again and comes back from its append-only file.
    a.redis.as_mut().unwrap().kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.redis.as_mut().unwrap().start_again();
    until("every third email", 90, || count("Third") == n).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut per: HashMap<(String, String), usize> = HashMap::new();
    for m in sink.messages() {
        *per.entry((rcpt_of(&m), subject_of(&m))).or_default() += 1;
    }
    assert_eq!(per.len(), 3 * n);
    assert!(per.values().all(|c| *c == 1), "nobody got a message twice: {:?}", per.iter().filter(|(_, c)| **c > 1).collect::<Vec<_>>());
    assert!(a.is_running(), "the daemon rode out the Redis restart");
    let m = metrics(&b, &app, &j.id).await;
    assert_eq!((m["ENDPOINT_ENTERED"].as_str(), m["ENDPOINT_LEFT"].as_str()), ("200", "200"), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_pinpoint_files_and_the_seeds_habits() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(None, tmp.path().join("data"), None, Some(API_KEY.to_string()), &[]);
    let app = d.create_app("cli").await.app_id;
    let segment = d.import_as_segment(&app, endpoints(1, "c")).await;
    let dir = tmp.path();
    // The seeds' way: NextActivity beside the type, the wait as "3d".
    let file = serde_json::json!({
        "Name": "Welcome series",
        "StartCondition": {"SegmentStartCondition": {"SegmentId": segment}},
        "StartActivity": "welcome",
        "Activities": {
            "welcome": {"EMAIL": {"MessageConfig": {"FromAddress": "hi@shop.example"}, "TemplateName": "Missing"}, "NextActivity": "wait"},
            "wait": {"Wait": {"WaitTime": {"WaitFor": "3d"}}, "NextActivity": "follow"},
            "follow": {"EMAIL": {"TemplateName": "Missing"}}
        }
    });
    std::fs::write(dir.join("journey.json"), serde_json::to_string_pretty(&file).unwrap()).unwrap();
    let addr = d.grpc.to_string();
    let env = [("HERALD_ADDR", addr.as_str()), ("HERALD_API_KEY", API_KEY)];
    let (code, _, err) = common::herald(&["journeys", "create", "--app", &app, "journey.json"], &env, dir);
    assert_ne!(code, 0);
    assert!(err.contains("note: WriteJourneyRequest.Activities.welcome.NextActivity \"wait\" read as"), "{err}");
    assert!(err.contains("template") && err.contains("Missing"), "the missing template is named: {err}");
    // With inline content instead of the missing template it is created, as a DRAFT.
    let mut file = file;
    for a in ["welcome", "follow"] {
        file["Activities"][a]["EMAIL"] = serde_json::json!({"MessageConfig": {"FromAddress": "hi@shop.example"}});
    }
    std::fs::write(dir.join("journey.json"), serde_json::to_string_pretty(&file).unwrap()).unwrap();
    let (code, out, err) = common::herald(&["journeys", "create", "--app", &app, "journey.json"], &env, dir);
    assert_ne!(code, 0, "an EMAIL activity needs content: {out}");
    assert!(err.contains("template_name"), "{err}");
    let (code, out, err) = common::herald(&["journeys", "create", "--app", &app, "--activate", "bad-path.json"], &env, dir);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("bad-path.json"), "{err}");
    let unknown = serde_json::json!({"Name": "x", "Activites": {}});
    std::fs::write(dir.join("unknown.json"), unknown.to_string()).unwrap();
    let (code, _, err) = common::herald(&["journeys", "create", "--app", &app, "unknown.json"], &env, dir);
    assert_ne!(code, 0);
    assert!(err.contains("WriteJourneyRequest.Activites: unknown key"), "{err}");
    // YAML too, naming a stored template (Pinpoint's journey activities have no inline content).
    TemplatesClient::new(d.channel().await)
        .create_template(d.req(CreateTemplateRequest {
            app_id: app.clone(),
            template: Some(Template {
                name: "Hello".into(),
                template_type: TemplateType::Email as i32,
                content: Some(herald::proto::v1::template::Content::Email(EmailTemplate {
                    subject: "Hello".into(),
                    text_part: "Hi".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    let yaml = format!(
        "Name: Welcome series\nStartCondition:\n  SegmentStartCondition:\n    SegmentId: {segment}\nStartActivity: welcome\nActivities:\n  welcome:\n    EMAIL:\n      TemplateName: Hello\n      MessageConfig:\n        FromAddress: hi@shop.example\n    NextActivity: wait\n  wait:\n    Wait: 3d\n"
    );
    std::fs::write(dir.join("journey.yaml"), yaml).unwrap();
    let (code, out, err) = common::herald(&["journeys", "create", "--app", &app, "journey.yaml"], &env, dir);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("\"3d\" read as WaitTime.WaitFor"), "{err}");
    assert!(out.contains("DRAFT") && out.contains("Welcome series"), "{out}");
    let id = out.split_whitespace().next().unwrap().to_string();
    let (code, out, _) = common::herald(&["journeys", "list", "--app", &app], &env, dir);
    assert_eq!((code, out.contains(&id)), (0, true));
    let (code, out, err) = common::herald(&["journeys", "get", "--app", &app, &id], &env, dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("welcome (start)  MESSAGE") && out.contains("wait  WAIT"), "{out}");
    let (code, out, err) = common::herald(&["journeys", "state", "--app", &app, &id, "active"], &env, dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ACTIVE"), "{out}");
    let (code, out, err) = common::herald(&["journeys", "watch", "--app", &app, &id, "--timeout", "1", "--every", "0.2"], &env, dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ENDPOINT_ENTERED"), "{out}");
    let (code, _, err) = common::herald(&["journeys", "state", "--app", &app, &id, "draft"], &env, dir);
    assert_ne!(code, 0);
    assert!(err.contains("cannot go back to DRAFT"), "{err}");
    let (code, out, _) = common::herald(&["journeys", "state", "--app", &app, &id, "cancelled"], &env, dir);
    assert_eq!((code, out.contains("CANCELLED")), (0, true), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_condition_on_segments_and_dimensions_and_refresh_on_segment_update() {
    use herald::proto::v1::{
        segments_client::SegmentsClient, AttributeDimension, AttributeType, AttributeValues, CreateSegmentRequest, MultiConditionalBranch,
        MultiConditionalSplitActivity, SegmentDimensions, UpdateEndpointRequest, UpdateSegmentRequest,
    };
    let sink = SmtpSink::start(&[]);
    let smtp = format!("smtp://127.0.0.1:{}?pool=2", sink.port);
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(None, tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &["--smtp-url", smtp.as_str()]);
    let app = d.create_app("branches").await.app_id;
    let plan = |e: &mut Endpoint, p: &str| {
        e.attributes.insert("Plan".into(), AttributeValues { values: vec![p.into()] });
    };
    let mut eps = endpoints(3, "m");
    for (e, p) in eps.iter_mut().zip(["Pro", "Free", "Team"]) {
        plan(e, p);
    }
    let all = d.import_as_segment(&app, eps).await;
    let dims = |p: &str| SegmentDimensions {
        attributes: [("Plan".to_string(), AttributeDimension { attribute_type: AttributeType::Inclusive as i32, values: vec![p.into()] })]
            .into(),
        ..Default::default()
    };
    let mut segments = SegmentsClient::new(d.channel().await);
    let pros = segments
        .create_segment(d.req(CreateSegmentRequest {
            app_id: app.clone(),
            name: "pros".into(),
            dimensions: Some(dims("Pro")),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .id;
    let route = JourneyActivity {
        kind: Some(Kind::MultiCondition(MultiConditionalSplitActivity {
            branches: vec![
                MultiConditionalBranch {
                    condition: Some(SimpleCondition {
                        segment_condition: Some(SegmentCondition { segment_id: pros.clone() }),
                        ..Default::default()
                    }),
                    next_activity: "pro".into(),
                },
                MultiConditionalBranch {
                    condition: Some(SimpleCondition { segment_dimensions: Some(dims("Team")), ..Default::default() }),
                    next_activity: "team".into(),
                },
            ],
            default_activity: "others".into(),
            evaluation_wait_time: Some(WaitTime { wait_for: "1s".into(), ..Default::default() }),
        })),
        ..Default::default()
    };
    let mut j = segment_journey(
        "routing",
        &all,
        "route",
        vec![
            ("route", route),
            ("pro", email_inline("For Pro", "")),
            ("team", email_inline("For Team", "")),
            ("others", email_inline("For everyone", "")),
        ],
    );
    j.refresh_on_segment_update = true;
    let j = JourneysClient::new(d.channel().await)
        .create_journey(d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(j) }))
        .await
        .unwrap()
        .into_inner();
    let got = || {
        let mut v: Vec<(String, String)> = sink.messages().iter().map(|m| (rcpt_of(m), subject_of(m))).collect();
        v.sort();
        v
    };
    let created = Instant::now();
    until("three routed emails", 20, || got().len() == 3).await;
    assert!(created.elapsed() >= Duration::from_secs(1), "the split waited a second before it looked");
    let want = |pairs: &[(&str, &str)]| pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    assert_eq!(got(), want(&[("m0@example.com", "For Pro"), ("m1@example.com", "For everyone"), ("m2@example.com", "For Team")]));
    // The counters are written with the participants' new positions, after the messages'
    // outcomes are in: the emails can arrive a moment before them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut route = activity_metrics(&d, &app, &j.id, "route").await;
    while !["BRANCH_1", "BRANCH_2", "DEFAULT_BRANCH"].iter().all(|k| route.contains_key(*k)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        route = activity_metrics(&d, &app, &j.id, "route").await;
    }
    assert_eq!((route["BRANCH_1"].as_str(), route["BRANCH_2"].as_str(), route["DEFAULT_BRANCH"].as_str()), ("1", "1", "1"), "{route:?}");
    // A new member and a new version of the start segment: only the newcomer enters.
    let mut newcomer =
        Endpoint { id: "m3".into(), channel_type: ChannelType::Email as i32, address: "m3@example.com".into(), ..Default::default() };
    plan(&mut newcomer, "Free");
    d.endpoints()
        .await
        .update_endpoint(d.req(UpdateEndpointRequest { app_id: app.clone(), endpoint_id: "m3".into(), endpoint: Some(newcomer) }))
        .await
        .unwrap();
    segments
        .update_segment(d.req(UpdateSegmentRequest {
            app_id: app.clone(),
            segment_id: all.clone(),
            dimensions: Some(SegmentDimensions::default()),
            ..Default::default()
        }))
        .await
        .unwrap();
    until("the newcomer's email", 20, || got().len() == 4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(got().len(), 4, "the others do not enter again: {:?}", got());
    assert!(got().contains(&("m3@example.com".to_string(), "For everyone".to_string())));
    let m = metrics(&d, &app, &j.id).await;
    assert_eq!((m["ENDPOINT_ENTERED"].as_str(), m["ACTIVE_ENDPOINT_REJECTED"].as_str()), ("4", "0"), "{m:?}");
    assert_eq!(m["REENTRY_CAP_EXCEEDED"], "3", "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_time_starts_and_ends_the_journey_on_each_participants_clock() {
    let sink = SmtpSink::start(&[]);
    let smtp = format!("smtp://127.0.0.1:{}?pool=2", sink.port);
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(None, tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &["--smtp-url", smtp.as_str()]);
    let app = d.create_app("local").await.app_id;
    let mut eps = endpoints(3, "z");
    for (e, tz) in eps.iter_mut().zip(["Pacific/Kiritimati", "Pacific/Pago_Pago", ""]) {
        e.demographic = Some(herald::proto::v1::EndpointDemographic { timezone: tz.into(), ..Default::default() });
    }
    let segment = d.import_as_segment(&app, eps).await;
    let wall = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let now = chrono::Utc::now();
    let journeys = JourneysClient::new(d.channel().await);
    let run = |subject: &'static str, end_hours: i64| {
        let mut j = segment_journey(subject, &segment, "a", vec![("a", email_inline(subject, ""))]);
        j.local_time = true;
        j.schedule = Some(herald::proto::v1::JourneySchedule {
            start_time: wall(now),
            end_time: wall(now + chrono::Duration::hours(end_hours)),
            timezone: "UTC".into(),
        });
        let (d, app) = (&d, app.clone());
        let mut client = journeys.clone();
        async move { client.create_journey(d.req(CreateJourneyRequest { app_id: app, journey: Some(j) })).await.unwrap().into_inner() }
    };
    // Starts now on UTC's clock: it has started in Kiritimati (UTC+14) and for the endpoint
    // without a zone; in Pago Pago (UTC-11) it starts in 11 hours.
    let long = run("Long", 20).await;
    // Ends in an hour on each clock: in Kiritimati it ended 13 hours ago.
    let short = run("Short", 1).await;
    let to = |subject: &str| {
        let mut v: Vec<String> = sink.messages().iter().filter(|m| subject_of(m) == subject).map(|m| rcpt_of(m)).collect();
        v.sort();
        v
    };
    until("the long journey's two emails", 20, || to("Long").len() == 2).await;
    until("the short journey's email", 20, || !to("Short").is_empty()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(to("Long"), ["z0@example.com", "z2@example.com"]);
    assert_eq!(to("Short"), ["z2@example.com"]);
    let m = metrics(&d, &app, &long.id).await;
    assert_eq!((m["ENDPOINT_ENTERED"].as_str(), m["ENDPOINT_ACTIVE"].as_str()), ("3", "1"), "Pago Pago waits for its start: {m:?}");
    let m = metrics(&d, &app, &short.id).await;
    assert_eq!(m["ENDPOINT_TIMEZONE_MISMATCH"], "1", "{m:?}");
}

/// Pinpoint's application JourneyLimits: each limit a journey leaves unset is the app's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_journey_limits_hold_journeys_that_set_none() {
    use herald::proto::v1::{AppJourneyLimits, AppSettings, UpdateAppSettingsRequest};
    let sink = SmtpSink::start(&[]);
    let smtp = format!("smtp://127.0.0.1:{}?pool=2", sink.port);
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(None, tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &["--smtp-url", smtp.as_str()]);
    let app = d.create_app("app-limits").await.app_id;
    let mut apps = d.apps().await;
    let limits = |daily: i32| UpdateAppSettingsRequest {
        app_id: app.clone(),
        settings: Some(AppSettings {
            journey_limits: Some(AppJourneyLimits { daily_cap: Some(daily), ..Default::default() }),
            ..Default::default()
        }),
    };
    let err = apps.update_app_settings(d.req(limits(101))).await.unwrap_err();
    assert_eq!(common::violations(&err), ["settings.journey_limits.daily_cap"]);
    apps.update_app_settings(d.req(limits(1))).await.unwrap();
    let segment = d.import_as_segment(&app, endpoints(3, "q")).await;
    let mut journeys = JourneysClient::new(d.channel().await);
    let count = |subject: &str| sink.messages().into_iter().filter(|m| subject_of(m) == subject).count();
    // No limits of its own: the app's DailyCap 1 stops the second email.
    let j = segment_journey("capped by the app", &segment, "a", vec![("a", email_inline("L1", "b")), ("b", email_inline("L2", ""))]);
    let j = journeys.create_journey(d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(j) })).await.unwrap().into_inner();
    until("the first emails", 20, || count("L1") == 3).await;
    let start = Instant::now();
    while activity_metrics(&d, &app, &j.id, "b").await.get("DAILY_CAP").is_none_or(|v| v != "3") {
        assert!(start.elapsed() < Duration::from_secs(20), "the second step was not capped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count("L2"), 0, "DailyCap 1 from the app");
    // Its own DailyCap (0: none) wins over the app's.
    let mut own = segment_journey("its own limits", &segment, "a", vec![("a", email_inline("O1", "b")), ("b", email_inline("O2", ""))]);
    own.limits = Some(JourneyLimits { daily_cap: Some(0), ..Default::default() });
    journeys.create_journey(d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(own) })).await.unwrap();
    until("both emails of the journey with its own limits", 20, || count("O1") == 3 && count("O2") == 3).await;
}

/// Journey fields where their effect shows: the app's total cap and the journey's own, a
/// journey that turns tracking off, a refresh interval that keeps a journey open, a wait until
/// an instant, a split that waits before it looks and ORs its conditions, a pinned template
/// version, and descriptions and tags kept as given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_tracking_refresh_waits_splits_versions_and_descriptions_take_effect() {
    use herald::proto::v1::{
        apps_client::AppsClient, tags_client::TagsClient, template::Content as TemplateContent, AppJourneyLimits, AppSettings,
        ConditionOperator, ListTagsForResourceRequest, SegmentDimensions, UpdateAppSettingsRequest, UpdateTemplateRequest,
    };
    let sink = SmtpSink::start(&[]);
    let smtp = format!("smtp://127.0.0.1:{}?pool=2", sink.port);
    let public = format!("127.0.0.1:{}", free_port());
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--smtp-url", smtp.as_str(), "--feedback-addr", public.as_str()];
    let d = Daemon::spawn(None, tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &args);
    let app = d.create_app("fields").await.app_id;
    AppsClient::new(d.channel().await)
        .update_app_settings(d.req(UpdateAppSettingsRequest {
            app_id: app.clone(),
            settings: Some(AppSettings {
                journey_limits: Some(AppJourneyLimits { total_cap: Some(1), ..Default::default() }),
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    let segment = d.import_as_segment(&app, endpoints(1, "f")).await;
    let journeys = JourneysClient::new(d.channel().await);
    let create = |j: Journey| {
        let req = d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(j) });
        let mut c = journeys.clone();
        async move { c.create_journey(req).await.unwrap().into_inner() }
    };
    let count = |prefix: &str| sink.messages().iter().filter(|m| subject_of(m).starts_with(prefix)).count();

    // The app's total cap of 1 holds a journey that gives none; a journey's own cap of 2 wins
    // over it. The second journey turns tracking off and refreshes hourly.
    let three = |p: &str| {
        vec![
            ("a", email_inline(&format!("{p} 1"), "b")),
            ("b", email_inline(&format!("{p} 2"), "c")),
            ("c", email_inline(&format!("{p} 3"), "")),
        ]
    };
    let capped = create(segment_journey("app cap", &segment, "a", three("App"))).await;
    let mut own = segment_journey("own cap", &segment, "a", three("Own"));
    own.limits = Some(JourneyLimits { total_cap: Some(2), ..Default::default() });
    own.engagement_tracking = Some(false);
    own.refresh_frequency = "PT1H".into();
    own.tags = [("team".to_string(), "growth".to_string())].into();
    own.start_condition.as_mut().unwrap().description = "everyone, hourly".into();
    own.activities.get_mut("a").unwrap().description = "the first of three".into();
    let own = create(own).await;
    until("the capped emails", 20, || count("App") == 1 && count("Own") == 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((count("App"), count("Own")), (1, 2), "caps of 1 and 2 of three messages");
    let own_mail: Vec<String> = sink.messages().into_iter().filter(|m| subject_of(m).starts_with("Own")).collect();
    let tracked = |m: &String| {
        let m = m.replace("=\r\n", "");
        m.contains(&format!("http://{public}/o/")) || m.contains(&format!("http://{public}/c/"))
    };
    assert!(!own_mail.is_empty() && !own_mail.iter().any(tracked), "no tracking in the journey that turned it off");
    let app_mail = sink.messages().into_iter().find(|m| subject_of(m) == "App 1").unwrap().replace("=\r\n", "");
    assert!(app_mail.contains(&format!("http://{public}/o/")), "tracked by default: {app_mail}");
    let state = |id: String| {
        let mut c = journeys.clone();
        let req = d.req(GetJourneyRequest { app_id: app.clone(), journey_id: id });
        async move { c.get_journey(req).await.unwrap().into_inner() }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while state(capped.id.clone()).await.state != JourneyState::Completed as i32 {
        assert!(Instant::now() < deadline, "the journey without refresh completes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = state(own.id.clone()).await;
    assert_eq!(got.state, JourneyState::Active as i32, "a refreshing journey stays open for the next read");
    assert_eq!(got.start_condition.as_ref().unwrap().description, "everyone, hourly");
    assert_eq!(got.activities["a"].description, "the first of three");
    let tags = TagsClient::new(d.channel().await)
        .list_tags_for_resource(d.req(ListTagsForResourceRequest { resource_arn: format!("apps/{app}/journeys/{}", own.id) }))
        .await
        .unwrap()
        .into_inner()
        .tags;
    assert_eq!(tags, [("team".to_string(), "growth".to_string())].into());
    // Its KPI rows, one activity per page: the two activities that sent.
    let mut kpis = herald::proto::v1::kpis_client::KpisClient::new(d.channel().await);
    let (mut rows, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let r = kpis
            .get_journey_date_range_kpi(d.req(herald::proto::v1::GetJourneyDateRangeKpiRequest {
                app_id: app.clone(),
                journey_id: own.id.clone(),
                kpi_name: "successful-deliveries-grouped-by-journey-activity".into(),
                page_size: 1,
                next_token: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        rows.extend(r.kpi_result.unwrap_or_default().rows.into_iter().map(|row| row.grouped_bys[0].value.clone()));
        pages += 1;
        token = r.next_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!((rows, pages), (vec!["a".to_string(), "b".to_string()], 2));

    // A wait until an instant; a split that waits 2 s before it looks, with ANY of two
    // conditions (one holds); a template pinned at version 1 while version 2 is active.
    let other = d.create_app("timing").await.app_id;
    let segment = d.import_as_segment(&other, endpoints(1, "t")).await;
    let mut templates = TemplatesClient::new(d.channel().await);
    let version = |subject: &str| Template {
        name: "pinned".into(),
        content: Some(TemplateContent::Email(EmailTemplate { subject: subject.into(), text_part: "x".into(), ..Default::default() })),
        ..Default::default()
    };
    templates.create_template(d.req(CreateTemplateRequest { app_id: other.clone(), template: Some(version("Pinned v1")) })).await.unwrap();
    templates
        .update_template(d.req(UpdateTemplateRequest {
            app_id: other.clone(),
            template: Some(version("Pinned v2")),
            overwrite_latest: false,
        }))
        .await
        .unwrap();
    let until_at = chrono::Utc::now() + chrono::Duration::seconds(3);
    let wait_until = JourneyActivity {
        kind: Some(Kind::Wait(WaitActivity {
            wait_time: Some(WaitTime { wait_until: herald::domain::timestamp(until_at), ..Default::default() }),
            next_activity: "split".into(),
        })),
        ..Default::default()
    };
    let plan = |p: &str| SegmentDimensions {
        attributes: [("Plan".to_string(), herald::proto::v1::AttributeDimension { values: vec![p.into()], ..Default::default() })].into(),
        ..Default::default()
    };
    let split = JourneyActivity {
        kind: Some(Kind::ConditionalSplit(ConditionalSplitActivity {
            condition: Some(JourneyCondition {
                conditions: vec![
                    SimpleCondition { segment_dimensions: Some(plan("Gold")), ..Default::default() },
                    SimpleCondition { segment_condition: Some(SegmentCondition { segment_id: segment.clone() }), ..Default::default() },
                ],
                operator: ConditionOperator::Any as i32,
            }),
            evaluation_wait_time: Some(WaitTime { wait_for: "2s".into(), ..Default::default() }),
            true_activity: "pinned".into(),
            false_activity: "no".into(),
        })),
        ..Default::default()
    };
    let mut pinned = email_template("pinned", "");
    if let Some(Kind::Email(m)) = pinned.kind.as_mut() {
        m.template_version = "1".into();
    }
    let timed = segment_journey(
        "timing",
        &segment,
        "first",
        vec![
            ("first", email_inline("Timing 1", "until")),
            ("until", wait_until),
            ("split", split),
            ("pinned", pinned),
            ("no", email_inline("Neither", "")),
        ],
    );
    let mut c = JourneysClient::new(d.channel().await);
    c.create_journey(d.req(CreateJourneyRequest { app_id: other.clone(), journey: Some(timed) })).await.unwrap();
    until("the pinned version's email", 30, || count("Pinned") == 1).await;
    let arrived = chrono::Utc::now();
    assert!(arrived >= until_at + chrono::Duration::seconds(2), "after the wait's instant and the split's 2 s: {arrived} vs {until_at}");
    let subjects: Vec<String> =
        sink.messages().iter().map(|m| subject_of(m)).filter(|s| s.starts_with("Pinned") || s == "Neither").collect();
    assert_eq!(subjects, ["Pinned v1"], "ANY holds through the segment condition; version 1 as pinned");
}

/// An event-started journey with an EndpointReentryInterval: an event too soon after the
/// endpoint last entered lets nobody in; one after the interval does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reentry_interval_keeps_an_endpoint_out_until_it_has_passed() {
    let sink = SmtpSink::start(&[]);
    let smtp = format!("smtp://127.0.0.1:{}?pool=2", sink.port);
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::spawn(None, tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &["--smtp-url", smtp.as_str()]);
    let app = d.create_app("interval").await.app_id;
    d.import_as_segment(&app, endpoints(1, "r")).await;
    let j = Journey {
        name: "on visit".into(),
        start_condition: Some(JourneyStartCondition {
            event_start_condition: Some(EventStartCondition {
                event_filter: Some(EventFilter { event_types: vec!["visit".into()], ..Default::default() }),
                segment_id: String::new(),
            }),
            ..Default::default()
        }),
        activities: [("hello".to_string(), email_inline("Hello again", ""))].into(),
        start_activity: "hello".into(),
        limits: Some(JourneyLimits { endpoint_reentry_cap: Some(0), endpoint_reentry_interval: "4s".into(), ..Default::default() }),
        state: JourneyState::Active as i32,
        ..Default::default()
    };
    let j = JourneysClient::new(d.channel().await)
        .create_journey(d.req(CreateJourneyRequest { app_id: app.clone(), journey: Some(j) }))
        .await
        .unwrap()
        .into_inner();
    let mut events = EventsClient::new(d.channel().await);
    let visit = |k: usize| {
        let e = herald::proto::v1::ReportedEvent {
            event_type: "visit".into(),
            timestamp: herald::domain::timestamp(chrono::Utc::now()),
            ..Default::default()
        };
        let batch = EventsBatch { endpoint: None, events: [(format!("v{k}"), e)].into() };
        PutEventsRequest { app_id: app.clone(), batch_item: [("r0".to_string(), batch)].into() }
    };
    let count = || sink.messages().into_iter().filter(|m| subject_of(m) == "Hello again").count();
    events.put_events(d.req(visit(0))).await.unwrap();
    until("the first email", 20, || count() == 1).await;
    // Two seconds later: within the interval.
    tokio::time::sleep(Duration::from_secs(2)).await;
    events.put_events(d.req(visit(1))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(), 1, "too soon after the last entry");
    // After the interval: in again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    events.put_events(d.req(visit(2))).await.unwrap();
    until("the second email", 20, || count() == 2).await;
    // The counters are written just after the outcomes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut m = metrics(&d, &app, &j.id).await;
    while m.get("ENDPOINT_ENTERED").map(String::as_str) != Some("2") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        m = metrics(&d, &app, &j.id).await;
    }
    assert_eq!(m["ENDPOINT_ENTERED"], "2", "{m:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(), 2, "once per entry");
}
