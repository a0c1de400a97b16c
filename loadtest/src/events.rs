//! Event scenarios: PutEvents throughput, StreamEvents to one consumer, event webhooks into
//! a local receiver that verifies every Standard Webhooks signature, and the latency of an
//! EVENT campaign from PutEvents to the message at an SMTP receiver.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;
use herald::proto::v1::{
    campaigns_client::CampaignsClient, events_client::EventsClient, Campaign, CreateCampaignRequest, CreateEventDestinationRequest,
    DestinationState, EventDestination, EventFilter, EventsBatch, FilterType, Frequency, GetEventDestinationRequest, PutEventsRequest,
    ReportedEvent, Schedule, StreamEventsRequest, UpdateEventDestinationRequest,
};

fn reported(i: u64) -> ReportedEvent {
    ReportedEvent {
        event_type: if i.is_multiple_of(2) { "feature_used" } else { "purchase" }.into(),
        timestamp: herald::domain::timestamp(chrono::Utc::now()),
        attributes: [("feature".to_string(), "search".to_string()), ("screen".to_string(), format!("s{}", i % 7))].into(),
        metrics: [("count".to_string(), (i % 10) as f64)].into(),
        ..Default::default()
    }
}

/// PutEvents calls of `per_call` events spread over `spread` endpoints (of `endpoints`
/// imported), `concurrency` at a time, until `events` are recorded; returns the seconds taken.
#[allow(clippy::too_many_arguments)]
async fn put_load(
    channel: &Channel,
    key: &Option<String>,
    app: &str,
    events: u64,
    per_call: u64,
    spread: u64,
    endpoints: u64,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let calls = events.div_ceil(per_call);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (ch, key, app, next) = (channel.clone(), key.clone(), app.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = EventsClient::new(ch);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= calls || start.elapsed() > MAX_DURATION {
                    return anyhow::Ok(());
                }
                let mut batch: HashMap<String, EventsBatch> = HashMap::new();
                for j in 0..per_call {
                    let ep = format!("ep-{:09}", (n * spread + j % spread) % endpoints);
                    batch.entry(ep).or_default().events.insert(format!("{n}-{j}"), reported(n * per_call + j));
                }
                let r = c.put_events(request(&key, PutEventsRequest { app_id: app.clone(), batch_item: batch })).await?.into_inner();
                let refused = r.results.values().flat_map(|i| i.events_item_response.values()).filter(|e| e.status_code != 202).count();
                anyhow::ensure!(refused == 0, "{refused} events refused");
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed().as_secs_f64())
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn put_events(
    channel: &Channel,
    key: &Option<String>,
    events: u64,
    per_call: u64,
    spread: u64,
    endpoints: u64,
    concurrency: usize,
    json_out: bool,
    keep: bool,
) -> anyhow::Result<()> {
    let app = create_app(channel, key, "loadtest-put-events").await?;
    import(channel, key, &app, endpoints, 2, 500).await?;
    let secs = put_load(channel, key, &app, events, per_call, spread, endpoints, concurrency).await?;
    let rate = events as f64 / secs;
    if json_out {
        println!(
            "{}",
            json!({"scenario": "put-events", "events": events, "per_call": per_call, "endpoints_per_call": spread, "seconds": secs, "events_per_second": rate})
        );
    } else {
        println!("put-events: {events} events in calls of {per_call} over {spread} endpoints each, {secs:.2} s = {rate:.0} events/s");
    }
    cleanup(channel, key, &app, keep).await
}

pub(crate) async fn stream_events(channel: &Channel, key: &Option<String>, events: u64, json_out: bool, keep: bool) -> anyhow::Result<()> {
    let app = create_app(channel, key, "loadtest-stream-events").await?;
    import(channel, key, &app, 1_000, 1, 500).await?;
    put_load(channel, key, &app, events, 100, 10, 1_000, 8).await?;
    let start = Instant::now();
    let mut s = EventsClient::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .stream_events(request(key, StreamEventsRequest { app_id: app.clone(), stop_at_end: true, ..Default::default() }))
        .await?
        .into_inner();
    let mut n = 0u64;
    while let Some(batch) = s.message().await? {
        n += batch.events.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(n == events, "streamed {n} of {events} events");
    let rate = n as f64 / secs;
    if json_out {
        println!("{}", json!({"scenario": "stream-events", "events": n, "seconds": secs, "events_per_second": rate}));
    } else {
        println!("stream-events: {n} events to one consumer in {secs:.2} s = {rate:.0} events/s");
    }
    cleanup(channel, key, &app, keep).await
}

/// A webhook receiver: verifies each request's Standard Webhooks signature (ring's HMAC, not
/// Herald's code) and counts the events of the verified ones.
async fn start_receiver(secret: &str) -> anyhow::Result<(u16, Arc<AtomicU64>, Arc<AtomicU64>)> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(secret.trim_start_matches("whsec_"))?;
    let key = Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw));
    let (events, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (e, b) = (events.clone(), bad.clone());
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
        let (key, e, b) = (key.clone(), e.clone(), b.clone());
        async move {
            let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let (id, ts, sig) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
            let mut signed = format!("{id}.{ts}.").into_bytes();
            signed.extend_from_slice(&body);
            let want = base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, &signed).as_ref());
            let ok = sig.split(' ').any(|s| s.strip_prefix("v1,") == Some(want.as_str()));
            if !ok {
                b.fetch_add(1, Ordering::Relaxed);
                return axum::http::StatusCode::UNAUTHORIZED;
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let n = v["data"]["events"].as_array().map_or(0, |a| a.len()) as u64;
            e.fetch_add(n, Ordering::Relaxed);
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((port, events, bad))
}

pub(crate) async fn event_webhook(
    channel: &Channel,
    key: &Option<String>,
    events: u64,
    batch: i32,
    json_out: bool,
    keep: bool,
) -> anyhow::Result<()> {
    let app = create_app(channel, key, "loadtest-event-webhook").await?;
    import(channel, key, &app, 1_000, 1, 500).await?;
    let secret = herald::events::destinations::new_secret();
    let (port, delivered, bad) = start_receiver(&secret).await?;
    let mut c = EventsClient::new(channel.clone());
    // Created disabled: the events are recorded first, then delivery alone is timed.
    let d = c
        .create_event_destination(request(
            key,
            CreateEventDestinationRequest {
                app_id: app.clone(),
                destination: Some(EventDestination {
                    url: format!("http://127.0.0.1:{port}/events"),
                    secret,
                    batch_size: batch,
                    state: DestinationState::Disabled as i32,
                    ..Default::default()
                }),
            },
        ))
        .await?
        .into_inner()
        .destination
        .unwrap_or_default();
    put_load(channel, key, &app, events, 100, 10, 1_000, 8).await?;
    let start = Instant::now();
    c.update_event_destination(request(
        key,
        UpdateEventDestinationRequest {
            app_id: app.clone(),
            destination_id: d.id.clone(),
            destination: Some(EventDestination { state: DestinationState::Enabled as i32, ..Default::default() }),
            replace_event_types: false,
            include_endpoint: None,
        },
    ))
    .await?;
    while delivered.load(Ordering::Relaxed) < events && start.elapsed() < MAX_DURATION {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = delivered.load(Ordering::Relaxed);
    let got = c.get_event_destination(request(key, GetEventDestinationRequest { app_id: app.clone(), destination_id: d.id })).await?;
    let got = got.into_inner();
    anyhow::ensure!(bad.load(Ordering::Relaxed) == 0, "signatures that did not verify");
    let rate = n as f64 / secs;
    if json_out {
        println!(
            "{}",
            json!({"scenario": "event-webhook", "events": n, "batch": batch, "seconds": secs, "events_per_second": rate, "backlog": got.backlog})
        );
    } else {
        println!(
            "event-webhook: {n} events delivered and verified in batches of {batch}, {secs:.2} s = {rate:.0} events/s (backlog now {})",
            got.backlog
        );
    }
    cleanup(channel, key, &app, keep).await
}

/// A minimal SMTP receiver that notes when each recipient's message was accepted (by the
/// number in `user{N}@example.com`) and keeps the first message's text.
pub(crate) async fn start_smtp_receiver() -> anyhow::Result<(u16, Arc<received::Seen>)> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let seen = Arc::new(received::Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                let _ = w.write_all(b"220 receiver ESMTP\r\n").await;
                let mut line = String::new();
                let mut rcpts: Vec<u64> = Vec::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250 receiver\r\n"
                    } else if upper.starts_with("RCPT") {
                        if let Some(n) = line.split("user").nth(1).and_then(|t| t.split('@').next()).and_then(|n| n.parse().ok()) {
                            rcpts.push(n);
                        }
                        b"250 ok\r\n"
                    } else if upper.starts_with("DATA") {
                        let _ = w.write_all(b"354 go\r\n").await;
                        let mut text = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == ".\r\n" || line == ".\n" {
                                break;
                            }
                            if text.len() < 1 << 20 {
                                text.push_str(&line);
                            }
                        }
                        s.keep_first(text);
                        let now = Instant::now();
                        for n in rcpts.drain(..) {
                            s.note(n, now);
                        }
                        b"250 queued\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((port, seen))
}

mod received {
    use std::sync::Mutex;
    use std::time::Instant;

    /// When each recipient number was accepted (the first time), and the first message.
    #[derive(Default)]
    pub struct Seen(Mutex<std::collections::HashMap<u64, Instant>>, Mutex<Option<String>>);

    impl Seen {
        pub fn note(&self, n: u64, at: Instant) {
            self.0.lock().expect("not poisoned").entry(n).or_insert(at);
        }
        pub fn keep_first(&self, text: String) {
            self.1.lock().expect("not poisoned").get_or_insert(text);
        }
        pub fn first(&self) -> Option<String> {
            self.1.lock().expect("not poisoned").clone()
        }
        pub fn get(&self, n: u64) -> Option<Instant> {
            self.0.lock().expect("not poisoned").get(&n).copied()
        }
        pub fn len(&self) -> usize {
            self.0.lock().expect("not poisoned").len()
        }
    }
}

pub(crate) async fn event_trigger(
    channel: &Channel,
    key: &Option<String>,
    rate: u64,
    duration: u64,
    json_out: bool,
    keep: bool,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs(duration).min(MAX_DURATION);
    let total = rate * duration.as_secs();
    let (port, seen) = start_smtp_receiver().await?;
    let app = create_app(channel, key, "loadtest-event-trigger").await?;
    import(channel, key, &app, total, 4, 500).await?;
    super::scenarios::email_relay(channel, key, &app, port, 16).await?;
    let segment = super::scenarios::everyone(channel, key, &app).await?;
    let now = chrono::Utc::now();
    let campaign = Campaign {
        name: "on purchase".into(),
        segment_id: segment,
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage { subject: "Thanks".into(), text_part: "Thanks, {{Id}}".into(), ..Default::default() }),
            ..Default::default()
        }),
        schedule: Some(Schedule {
            start_time: herald::domain::timestamp(now - chrono::Duration::minutes(1)),
            end_time: herald::domain::timestamp(now + chrono::Duration::hours(1)),
            frequency: Frequency::Event as i32,
            event_filter: Some(EventFilter {
                filter_type: FilterType::Endpoint as i32,
                event_types: vec!["purchase".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    CampaignsClient::new(channel.clone())
        .create_campaign(request(key, CreateCampaignRequest { app_id: app.clone(), campaign: Some(campaign) }))
        .await?;
    // The trigger reader takes its start position within a few seconds of the app's creation.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let origin = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until((origin + interval * i as u32).into()).await;
        let (ch, key, app, sent_at) = (channel.clone(), key.clone(), app.clone(), sent_at.clone());
        tasks.push(tokio::spawn(async move {
            let mut e = reported(1);
            e.event_type = "purchase".into();
            let batch = EventsBatch { endpoint: None, events: [("e".to_string(), e)].into() };
            sent_at[i as usize].store(origin.elapsed().as_micros() as u64 + 1, Ordering::Relaxed);
            EventsClient::new(ch)
                .put_events(request(&key, PutEventsRequest { app_id: app, batch_item: [(format!("ep-{i:09}"), batch)].into() }))
                .await
                .map(|_| ())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let wait = Instant::now();
    while (seen.len() as u64) < total && wait.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let mut missing = 0;
    for i in 0..total {
        let put = sent_at[i as usize].load(Ordering::Relaxed);
        // The endpoint numbers of the import are the recipients' numbers.
        match seen.get(i) {
            Some(at) if put > 0 => {
                let us = (at - origin).as_micros() as u64;
                hist.record(us.saturating_sub(put - 1).max(1))?;
            }
            _ => missing += 1,
        }
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    if json_out {
        println!(
            "{}",
            json!({"scenario": "event-trigger", "rate": rate, "events": total, "delivered": hist.len(), "missing": missing, "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "max_ms": hist.max() as f64 / 1000.0})
        );
    } else {
        println!(
            "event-trigger: {total} events at {rate}/s, {} messages at the receiver ({missing} missing); PutEvents to message p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            hist.len(), ms(0.5), ms(0.9), ms(0.99), hist.max() as f64 / 1000.0
        );
    }
    cleanup(channel, key, &app, keep).await
}
