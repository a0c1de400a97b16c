//! Engagement scenarios: the public listener's open pixel and click redirect under HTTP/1.1
//! keep-alive load (with every request's event counted back from the event stream), and KPI
//! queries over a million recorded messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use super::*;
use herald::proto::v1::{
    events_client::EventsClient, kpis_client::KpisClient, GetApplicationDateRangeKpiRequest, MessageOutcome, MessageSource,
    StreamEventsRequest,
};

/// Quoted-printable decoded leniently (an `=` without two hex digits stays).
fn unqp(s: &str) -> String {
    let s = s.replace("=\r\n", "").replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
        if b[i] == b'=' {
            if let (Some(h), Some(l)) = (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first URL in `text` containing `marker`, as (host:port, path).
fn find_url(text: &str, marker: &str) -> Option<(String, String)> {
    let at = text.find(marker)?;
    let start = text[..at].rfind("http://")?;
    let url = text[start..].split(['"', '\'', '>', '\r', '\n']).next()?;
    let rest = url.strip_prefix("http://")?;
    let slash = rest.find('/')?;
    Some((rest[..slash].to_string(), rest[slash..].to_string()))
}

/// Opens and clicks: one tracked email is sent to a built-in SMTP receiver; its pixel and click
/// URLs are then fetched by `connections` keep-alive HTTP/1.1 connections for `duration`.
pub(crate) async fn tracking(
    channel: &Channel,
    key: &Option<String>,
    connections: usize,
    duration: Duration,
    json_out: bool,
    keep: bool,
) -> anyhow::Result<()> {
    let (port, seen) = super::events::start_smtp_receiver().await?;
    let app = create_app(channel, key, "loadtest-tracking").await?;
    super::scenarios::email_relay(channel, key, &app, port, 2).await?;
    let send = SendMessagesRequest {
        app_id: app.clone(),
        addresses: [(
            "user0@example.com".to_string(),
            AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() },
        )]
        .into(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                subject: "Tracked".into(),
                html_part: "<html><body><a href=\"https://shop.example/sale?id=1\">Sale</a></body></html>".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        engagement_tracking: true,
        ..Default::default()
    };
    MessagesClient::new(channel.clone()).send_messages(request(key, send)).await?;
    let waited = Instant::now();
    let text = loop {
        if let Some(t) = seen.first() {
            break unqp(&t);
        }
        if waited.elapsed() > Duration::from_secs(10) {
            bail!("no tracked message reached the receiver (is the daemon's feedback_addr set?)");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (host, open) = find_url(&text, "/o/").context("no open pixel in the message")?;
    let (_, click) = find_url(&text, "/c/").context("no tracked link in the message")?;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (host, paths, done, failed) = (host.clone(), [open.clone(), click.clone()], done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let stream = tokio::net::TcpStream::connect(&host).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut i = c;
            while started.elapsed() < duration {
                sender.ready().await?;
                let req = hyper::Request::get(paths[i % 2].as_str()).header("host", host.as_str()).body(Empty::<Bytes>::new())?;
                let t = Instant::now();
                let resp = sender.send_request(req).await?;
                let ok = matches!(resp.status().as_u16(), 200 | 302);
                resp.into_body().collect().await?;
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
                if ok { &done } else { &failed }.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok::<_, anyhow::Error>(hist)
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for t in tasks {
        hist.add(t.await??)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    // Every answered request's event, counted back from the stream (they are written before
    // the answer, or within its wait).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut s = EventsClient::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .stream_events(request(
            key,
            StreamEventsRequest {
                app_id: app.clone(),
                event_types: vec!["_email.open".into(), "_email.click".into()],
                stop_at_end: true,
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    let mut recorded = 0u64;
    while let Some(batch) = s.message().await? {
        recorded += batch.events.len() as u64;
    }
    let rate = n as f64 / secs;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    if json_out {
        println!(
            "{}",
            json!({"scenario": "tracking", "connections": connections, "requests": n, "failed": failed.load(Ordering::Relaxed), "seconds": secs, "requests_per_second": rate, "events_recorded": recorded, "p50_ms": ms(0.5), "p99_ms": ms(0.99)})
        );
    } else {
        println!(
            "tracking: {n} pixel and click requests over {connections} keep-alive connections in {secs:.1} s = {rate:.0} requests/s (p50 {:.2} ms, p99 {:.2} ms, {} failed); {recorded} events recorded",
            ms(0.5),
            ms(0.99),
            failed.load(Ordering::Relaxed)
        );
    }
    cleanup(channel, key, &app, keep).await
}

/// KPI queries over `messages` recorded messages: outcomes and their opens spread over the
/// last 31 days (ten campaigns of three runs, and transactional mail) are written into the
/// daemon's Redis as its recorder writes them (the store's `record_outcomes`, whose counters
/// the KPIs read), then each KPI is asked `queries` times through the daemon.
pub(crate) async fn kpi(
    channel: &Channel,
    key: &Option<String>,
    redis_url: &str,
    messages: u64,
    queries: u64,
    json_out: bool,
    keep: bool,
) -> anyhow::Result<()> {
    use herald::store::Store as _;
    let app = create_app(channel, key, "loadtest-kpi").await?;
    let store = herald::store::redis::RedisStore::connect(redis_url, 8).await?;
    let now = chrono::Utc::now();
    let written = Instant::now();
    let mut n = 0u64;
    while n < messages {
        let batch = 1_000.min(messages - n);
        let outcomes: Vec<MessageOutcome> = (n..n + batch)
            .map(|i| {
                let day = now - chrono::Duration::days((i % 31) as i64);
                let campaign = i % 11;
                MessageOutcome {
                    message_id: herald::domain::new_message_id(),
                    app_id: app.clone(),
                    source: if campaign == 10 { MessageSource::Transactional } else { MessageSource::Campaign } as i32,
                    campaign_id: if campaign == 10 { String::new() } else { format!("campaign{campaign}") },
                    request_id: if campaign == 10 { String::new() } else { format!("campaign{campaign}:{:06}", i % 3) },
                    endpoint_id: format!("ep-{:07}", i % 200_000),
                    address: format!("user{i}@example.com"),
                    channel: "EMAIL".into(),
                    delivery_status: if i % 50 == 0 { DeliveryStatus::PermanentFailure } else { DeliveryStatus::Successful } as i32,
                    attempts: 1,
                    updated_date: herald::domain::timestamp(day),
                    ..Default::default()
                }
            })
            .collect();
        let opens: Vec<herald::proto::v1::Event> = outcomes
            .iter()
            .filter(|o| o.message_id.ends_with(['0', '1', '2', '3']))
            .map(|o| herald::proto::v1::Event {
                event_type: "_email.open".into(),
                event_timestamp: o.updated_date.clone(),
                message_id: o.message_id.clone(),
                first_of_message: true,
                attributes: [
                    ("campaign_id".to_string(), o.campaign_id.clone()),
                    ("campaign_activity_id".to_string(), herald::campaigns::activity_id(&o.request_id, 0)),
                ]
                .into_iter()
                .filter(|(_, v)| !v.is_empty() && v != "-0")
                .collect(),
                ..Default::default()
            })
            .collect();
        store.record_outcomes(&app, &outcomes, &[], 86_400).await?;
        store.record_outcomes(&app, &[], &opens, 86_400).await?;
        n += batch;
    }
    let write_secs = written.elapsed().as_secs_f64();
    let mut kpis = KpisClient::new(channel.clone());
    let mut results = Vec::new();
    for name in ["successful-delivery-rate", "email-open-rate-grouped-by-campaign", "unique-deliveries", "txn-emails-sent-grouped-by-date"]
    {
        let mut hist = Histogram::<u64>::new(3)?;
        let mut rows = 0;
        for _ in 0..queries {
            let t = Instant::now();
            let r = kpis
                .get_application_date_range_kpi(request(
                    key,
                    GetApplicationDateRangeKpiRequest { app_id: app.clone(), kpi_name: name.into(), ..Default::default() },
                ))
                .await?
                .into_inner();
            hist.record(t.elapsed().as_micros().max(1) as u64)?;
            rows = r.kpi_result.map_or(0, |k| k.rows.len());
        }
        results.push((name.to_string(), rows, hist));
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    if json_out {
        let list: Vec<_> =
            results.iter().map(|(k, rows, h)| json!({"kpi": k, "rows": rows, "p50_ms": ms(h, 0.5), "p99_ms": ms(h, 0.99)})).collect();
        println!("{}", json!({"scenario": "kpi", "messages": messages, "write_seconds": write_secs, "queries": queries, "kpis": list}));
    } else {
        println!("kpi: {messages} messages over 31 days recorded in {write_secs:.1} s; {queries} queries per KPI, 31 days each:");
        for (k, rows, h) in &results {
            println!("  {k:<40} {rows:>3} rows  p50 {:.2} ms  p99 {:.2} ms", ms(h, 0.5), ms(h, 0.99));
        }
    }
    cleanup(channel, key, &app, keep).await
}
