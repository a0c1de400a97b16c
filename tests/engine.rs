//! The dispatch engine on its own: retries with backoff against a relay that soft-bounces and,
//! on a paused clock, against a webhook that fails, throttles or answers late,
//! and back-pressure from a relay that never answers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::SmtpSink;
use herald::channels::email::{SmtpPool, SmtpRelay};
use herald::channels::senders::Senders;
use herald::dispatch::engine::{Engine, EngineConfig, Job, Lane, Payload, Reply};
use herald::dispatch::retry::RetryPolicy;
use herald::proto::v1::{App, DeliveryStatus, MessageOutcome};
use herald::store::{embedded::EmbeddedStore, Store};
use tokio::sync::oneshot;

fn config(retry: RetryPolicy, queue: usize) -> EngineConfig {
    EngineConfig { shards_per_channel: 1, queue_per_shard: queue, retry, outcome_ttl: Duration::from_secs(3600) }
}

/// Senders with the daemon's relay (if any) and a webhook timeout.
fn senders(store: &Arc<dyn Store>, relay: Option<Arc<SmtpPool>>, webhook_timeout: Duration) -> Senders {
    Senders::new(store.clone(), relay, None, None, webhook_timeout)
}

fn job(i: usize, reply: Option<oneshot::Sender<MessageOutcome>>) -> Job {
    let outcome = MessageOutcome {
        message_id: herald::domain::new_message_id(),
        app_id: "app".into(),
        address: format!("r{i}@example.com"),
        channel: "EMAIL".into(),
        ..Default::default()
    };
    let mime = herald::render::mime::Sender::new::<&str>("news@shop.example", &[])
        .unwrap()
        .message(&outcome.address, "Hi", Some("x"), None, None, None)
        .unwrap();
    Job {
        outcome: Box::new(outcome),
        payload: Payload::Email { from: "news@shop.example".into(), mime },
        dry_run: false,
        first_attempt: None,
        reply: reply.map(Reply::Outcome),
        not_before: None,
        kept: false,
    }
}

async fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    store.create_app(&App { app_id: "app".into(), name: "a".into(), ..Default::default() }).await.unwrap();
    (store, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_bounces_are_retried_with_backoff_then_reported() {
    let sink = SmtpSink::start(&["-r", "RCPT"]);
    let (store, _dir) = store().await;
    let policy =
        RetryPolicy { base: Duration::from_millis(20), cap: Duration::from_millis(80), max_attempts: 4, deadline: Duration::from_secs(30) };
    let pool = Arc::new(SmtpPool::new(SmtpRelay::new("127.0.0.1", sink.port)));
    let engine = Engine::start(store.clone(), senders(&store, Some(pool), Duration::from_secs(1)), config(policy, 100));
    let (tx, rx) = oneshot::channel();
    let started = std::time::Instant::now();
    assert!(engine.submit(Lane::Email, job(0, Some(tx)), Duration::from_secs(1)).await.is_ok());
    let outcome = tokio::time::timeout(Duration::from_secs(10), rx).await.unwrap().unwrap();
    assert_eq!(outcome.delivery_status, DeliveryStatus::TemporaryFailure as i32);
    assert_eq!((outcome.attempts, outcome.status_code), (4, 450), "{outcome:?}");
    // Three backoffs, each at most the cap: the retries waited, but not longer than allowed.
    assert!(started.elapsed() < Duration::from_secs(5));
    let stored = store.get_outcome("app", &outcome.message_id).await.unwrap().expect("the final outcome is recorded");
    assert_eq!(stored.attempts, 4);
    let events = store.read_events("app", None, 10).await.unwrap();
    assert_eq!(events.len(), 1, "one event for the final outcome, not one per attempt");
    assert_eq!(events[0].event_type, "_email.softbounce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_relay_pushes_back_instead_of_queueing_without_bound() {
    // A relay that accepts connections and never says anything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let (store, _dir) = store().await;
    let mut relay = SmtpRelay::new("127.0.0.1", port);
    relay.pool_size = 1;
    let engine = Engine::start(
        store.clone(),
        senders(&store, Some(Arc::new(SmtpPool::new(relay))), Duration::from_secs(1)),
        config(RetryPolicy::default(), 8),
    );
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..200 {
        match engine.submit(Lane::Email, job(i, None), Duration::from_millis(5)).await {
            Ok(()) => accepted += 1,
            Err(returned) => {
                assert_eq!(returned.outcome.address, format!("r{i}@example.com"), "the job comes back to the caller");
                refused += 1;
            }
        }
    }
    // The shard holds one batch in flight plus its queue; everything else is handed back.
    assert!(accepted <= 8 + herald::dispatch::engine::BATCH, "{accepted} accepted");
    assert!(refused >= 200 - 8 - herald::dispatch::engine::BATCH, "{refused} refused");
}

/// A webhook receiver that answers from a script and notes when (on tokio's clock) each
/// request arrived.
async fn scripted_receiver(script: Vec<(u16, Option<u64>)>) -> (String, Arc<parking_lot::Mutex<Vec<tokio::time::Instant>>>) {
    use axum::http::{header, StatusCode};
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let log = seen.clone();
    let script = Arc::new(script);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let (log, script) = (log.clone(), script.clone());
            async move {
                let n = {
                    let mut log = log.lock();
                    log.push(tokio::time::Instant::now());
                    log.len() - 1
                };
                let (code, retry_after) = script[n.min(script.len() - 1)];
                let mut resp = axum::response::Response::new(axum::body::Body::empty());
                *resp.status_mut() = StatusCode::from_u16(code).unwrap();
                if let Some(secs) = retry_after {
                    resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
                }
                resp
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn custom_job(url: &str, reply: oneshot::Sender<MessageOutcome>) -> Job {
    let outcome = MessageOutcome {
        message_id: herald::domain::new_message_id(),
        app_id: "app".into(),
        address: url.to_string(),
        channel: "CUSTOM".into(),
        ..Default::default()
    };
    let body = herald::channels::webhook::Payload { application_id: "app".into(), data: "x".into(), ..Default::default() };
    Job {
        outcome: Box::new(outcome),
        payload: Payload::Custom { body },
        dry_run: false,
        first_attempt: None,
        reply: Some(Reply::Outcome(reply)),
        not_before: None,
        kept: false,
    }
}

/// Sends one custom-channel job through an engine and returns its final outcome and the
/// gaps between the attempts the receiver saw.
async fn run_on_paused_clock(policy: RetryPolicy, script: Vec<(u16, Option<u64>)>) -> (MessageOutcome, Vec<Duration>) {
    let (store, _dir) = store().await;
    let (url, seen) = scripted_receiver(script).await;
    // A webhook timeout far beyond any backoff here: the clock only ever jumps to the next retry.
    let engine = Engine::start(store.clone(), senders(&store, None, Duration::from_secs(24 * 3600)), config(policy, 10));
    let (tx, rx) = oneshot::channel();
    assert!(engine.submit(Lane::Custom, custom_job(&url, tx), Duration::from_secs(1)).await.is_ok());
    let outcome = rx.await.unwrap();
    let seen = seen.lock().clone();
    (outcome, seen.windows(2).map(|w| w[1] - w[0]).collect())
}

/// Retries on tokio's paused clock: backoffs of minutes pass at once, and each one lands
/// exactly where the policy allows — within its full-jitter ceiling, never before a
/// provider's Retry-After, and never past the deadline.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn backoff_follows_the_policy_on_a_paused_clock() {
    let policy =
        RetryPolicy { base: Duration::from_secs(10), cap: Duration::from_secs(40), max_attempts: 5, deadline: Duration::from_secs(3600) };
    // A provider that keeps failing: five attempts, gaps under 10 s, 20 s, 40 s and 40 s.
    let (outcome, gaps) = run_on_paused_clock(policy, vec![(503, None)]).await;
    assert_eq!(outcome.delivery_status, DeliveryStatus::TemporaryFailure as i32, "{outcome:?}");
    assert_eq!((outcome.attempts, outcome.status_code), (5, 503));
    assert_eq!(gaps.len(), 4);
    let ceilings = [10, 20, 40, 40].map(Duration::from_secs);
    for (gap, ceiling) in gaps.iter().zip(ceilings) {
        // The webhook's own round trip costs no time on a paused clock.
        assert!(*gap <= ceiling + Duration::from_millis(5), "{gaps:?}");
    }
    assert!(gaps.iter().any(|g| *g > Duration::from_millis(5)), "the retries waited: {gaps:?}");

    // Retry-After is a floor: two minutes asked, two minutes waited, then success.
    let (outcome, gaps) = run_on_paused_clock(policy, vec![(429, Some(120)), (200, None)]).await;
    assert_eq!(outcome.delivery_status, DeliveryStatus::Successful as i32, "{outcome:?}");
    assert_eq!(outcome.attempts, 2);
    assert_eq!(gaps.len(), 1);
    assert!(gaps[0] >= Duration::from_secs(120) && gaps[0] < Duration::from_secs(121), "{gaps:?}");

    // A Retry-After beyond the deadline ends the delivery with the status it had.
    let short = RetryPolicy { deadline: Duration::from_secs(100), ..policy };
    let (outcome, gaps) = run_on_paused_clock(short, vec![(429, Some(120)), (200, None)]).await;
    assert_eq!(outcome.delivery_status, DeliveryStatus::Throttled as i32, "{outcome:?}");
    assert_eq!((outcome.attempts, gaps.len()), (1, 0));
}

/// A producer that waits (a campaign run) is paced by the app channel's messages per second
/// instead of being THROTTLED, and stops exactly at the daily quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_producers_are_paced_and_stop_at_the_daily_quota() {
    use herald::proto::v1::{AppSettings, ChannelQuota};
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let quota = ChannelQuota { messages_per_second: Some(200), burst: Some(10), daily: Some(500), total: None };
    let settings = AppSettings { channel_quotas: [("EMAIL".to_string(), quota)].into(), ..Default::default() };
    store.create_app(&App { app_id: "app".into(), name: "a".into(), settings: Some(settings), ..Default::default() }).await.unwrap();
    let engine = Engine::start(store.clone(), senders(&store, None, Duration::from_secs(1)), config(RetryPolicy::default(), 1_000));

    let started = std::time::Instant::now();
    let (mut admitted, mut replies) = (0u64, Vec::new());
    loop {
        let granted = engine.admit("app", "EMAIL", 50).await.unwrap();
        for i in 0..granted {
            let (tx, rx) = oneshot::channel();
            let mut j = job((admitted + i) as usize, Some(tx));
            j.dry_run = true;
            assert!(engine.submit(Lane::Email, j, Duration::from_secs(10)).await.is_ok());
            replies.push(rx);
        }
        admitted += granted;
        if granted < 50 {
            break;
        }
    }
    assert_eq!(admitted, 500, "the daily quota, exactly");
    assert_eq!(engine.admit("app", "EMAIL", 1).await.unwrap(), 0, "nothing more today");
    // 500 tokens from a bucket of 10 refilled at 200/s cannot be had in less than 2.45 s.
    assert!(started.elapsed() >= Duration::from_millis(2_400), "{:?}", started.elapsed());
    for rx in replies {
        let o = rx.await.unwrap();
        assert_eq!(o.delivery_status, DeliveryStatus::Successful as i32, "admitted messages are not throttled again: {o:?}");
    }
}

/// A stop with jobs queued and retries pending: queued jobs are sent and recorded, a
/// transactional retry due after the deadline is kept in the store and its caller answered with
/// its status as it stands, a campaign job waiting for its retry goes back unsettled (no outcome: its run
/// sends it again), and nothing is taken after the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_sends_what_is_queued_and_records_every_job() {
    use herald::dispatch::reply::UNSETTLED;
    let sink = SmtpSink::start(&[]);
    let (store, _dir) = store().await;
    // The webhook asks to come back in 60 s: far beyond the stop's deadline.
    let (url, seen) = scripted_receiver(vec![(503, Some(60))]).await;
    let pool = Arc::new(SmtpPool::new(SmtpRelay::new("127.0.0.1", sink.port)));
    let policy =
        RetryPolicy { base: Duration::from_millis(50), cap: Duration::from_secs(120), max_attempts: 5, deadline: Duration::from_secs(600) };
    let engine = Engine::start(store.clone(), senders(&store, Some(pool), Duration::from_secs(1)), config(policy, 1_000));
    let transactional = {
        let (tx, rx) = oneshot::channel();
        assert!(engine.submit(Lane::Custom, custom_job(&url, tx), Duration::from_secs(1)).await.is_ok());
        rx
    };
    let tally = herald::dispatch::engine::Tally::new();
    let (tx, _unused) = oneshot::channel();
    let mut campaign_job = custom_job(&url, tx);
    campaign_job.reply = Some(Reply::Tally(tally.slot(0)));
    let campaign_id = campaign_job.outcome.message_id.clone();
    assert!(engine.submit(Lane::Custom, campaign_job, Duration::from_secs(1)).await.is_ok());
    // Both custom jobs were tried once and wait for their retry.
    for _ in 0..100 {
        if seen.lock().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.lock().len(), 2);
    let mut queued = Vec::new();
    for i in 0..500 {
        let (tx, rx) = oneshot::channel();
        assert!(engine.submit(Lane::Email, job(i, Some(tx)), Duration::from_secs(1)).await.is_ok());
        queued.push(rx);
    }
    let stopped = engine.stop(tokio::time::Instant::now() + Duration::from_secs(10)).await;
    assert!(stopped, "every shard finished within the deadline");
    for rx in queued {
        let o = rx.await.expect("every queued job has its outcome");
        assert_eq!(o.delivery_status, DeliveryStatus::Successful as i32);
        assert!(store.get_outcome("app", &o.message_id).await.unwrap().is_some(), "recorded");
    }
    let o = transactional.await.expect("the transactional retry ends with an outcome");
    assert_eq!(o.delivery_status, DeliveryStatus::TemporaryFailure as i32);
    assert!(o.status_message.contains("retry due after the daemon stopped: kept"), "{}", o.status_message);
    let kept = store.list_records("app", herald::dispatch::engine::parked::KIND, None, 10).await.unwrap();
    assert_eq!(kept.len(), 1, "the transactional retry is kept in the store, the campaign job is not");
    // Its outcome is recorded once, when it is final; meanwhile the kept record holds it.
    assert!(store.get_outcome("app", &o.message_id).await.unwrap().is_none(), "not recorded before it is final");
    assert_eq!(tally.wait(1).await, vec![(0, UNSETTLED)], "the campaign job went back unsettled");
    assert!(store.get_outcome("app", &campaign_id).await.unwrap().is_none(), "and has no outcome");
    assert_eq!(seen.lock().len(), 2, "no retry was made after the stop");
    assert!(engine.submit(Lane::Email, job(9, None), Duration::from_millis(100)).await.is_err(), "nothing is taken after a stop");
}

/// A transactional retry due after a stop is kept in the store; the next engine on that store
/// makes it when it is due, once, and then deletes the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_due_after_a_stop_is_kept_and_made_at_the_next_start() {
    use herald::dispatch::engine::parked;
    let (store, _dir) = store().await;
    // The first answer asks to come back in 2 s, after the stop's deadline; the next accepts.
    let (url, seen) = scripted_receiver(vec![(503, Some(2)), (200, None)]).await;
    let policy =
        RetryPolicy { base: Duration::from_millis(50), cap: Duration::from_secs(120), max_attempts: 5, deadline: Duration::from_secs(600) };
    let first = Engine::start(store.clone(), senders(&store, None, Duration::from_secs(1)), config(policy, 1_000));
    let (tx, rx) = oneshot::channel();
    assert!(first.submit(Lane::Custom, custom_job(&url, tx), Duration::from_secs(1)).await.is_ok());
    for _ in 0..100 {
        if !seen.lock().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(first.stop(tokio::time::Instant::now() + Duration::from_millis(300)).await);
    let o = rx.await.expect("an outcome as it stands at the stop");
    assert_eq!(o.delivery_status, DeliveryStatus::TemporaryFailure as i32);
    assert_eq!(seen.lock().len(), 1, "not retried before the stop");
    assert_eq!(store.list_records("app", parked::KIND, None, 10).await.unwrap().len(), 1);

    // The next start: the kept retry goes out when it is due, and its record goes.
    let second = Engine::start(store.clone(), senders(&store, None, Duration::from_secs(1)), config(policy, 1_000));
    assert_eq!(parked::resume(store.clone(), second.clone(), "daemon-2").await.unwrap(), 1);
    let mut done = None;
    for _ in 0..250 {
        let left = store.list_records("app", parked::KIND, None, 10).await.unwrap();
        let recorded = store.get_outcome("app", &o.message_id).await.unwrap();
        if left.is_empty() && recorded.as_ref().is_some_and(|r| r.delivery_status == DeliveryStatus::Successful as i32) {
            done = recorded;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recorded = done.expect("the kept retry was made, recorded and its record deleted");
    assert_eq!(recorded.attempts, 2);
    let times = seen.lock().clone();
    assert_eq!(times.len(), 2, "made once");
    assert!(times[1] - times[0] >= Duration::from_millis(1_800), "not before it was due: {:?}", times[1] - times[0]);
    // Nothing is left to resume.
    assert_eq!(parked::resume(store.clone(), second.clone(), "daemon-3").await.unwrap(), 0);
    assert!(second.stop(tokio::time::Instant::now() + Duration::from_secs(2)).await);
    assert_eq!(seen.lock().len(), 2);
}
