//! Engagement end to end: a campaign's emails at a real SMTP server (smtp-sink) carry signed
//! click links, an open pixel and a one-click unsubscribe URL; real HTTP requests to them are
//! recorded with the right ids (and forged, altered or expired ones are not); a one-click POST
//! opts the endpoint out and the next campaign skips it; the KPIs and `herald kpi` report it.

mod common;

use std::time::Duration;

use common::{free_port, Daemon, RedisServer, SmtpSink, API_KEY};
use herald::proto::v1::{
    campaigns_client::CampaignsClient, kpis_client::KpisClient, messages_client::MessagesClient, AddressConfiguration, Campaign,
    ChannelType, CreateCampaignRequest, DirectMessageConfiguration, EmailMessage, Endpoint, Frequency, GetCampaignActivitiesRequest,
    GetCampaignDateRangeKpiRequest, GetEndpointRequest, OptOut, Schedule, SendMessagesRequest,
};
use herald::store::Store as _;

const HTML: &str = "<html><body><p>Hello {{Id}}</p>\
    <a href=\"https://shop.example/sale?x=1&amp;y=2\">Sale</a><a href='https://shop.example/new'>New</a>\
    <a ses:no-track href=\"https://shop.example/private\">Private</a>\
    <a href=\"mailto:help@shop.example\">Help</a>\
    <p><a href=\"{{Herald.UnsubscribeUrl}}\">Unsubscribe</a></p></body></html>";

/// Quoted-printable decoded leniently (an `=` not followed by two hex digits stays).
fn unqp(s: &str) -> String {
    let s = s.replace("=\r\n", "").replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'=' {
            if let (Some(h), Some(l)) = (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c))) {
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

/// Every URL in `text` starting with `prefix`, up to a quote or `>`.
fn urls(text: &str, prefix: &str) -> Vec<String> {
    text.match_indices(prefix).map(|(i, _)| text[i..].split(['"', '>', '\r', '\n']).next().unwrap().to_string()).collect()
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|l| l.strip_prefix(name).map(str::trim))
}

fn campaign(segment: &str, subject: &str) -> Campaign {
    Campaign {
        name: subject.into(),
        segment_id: segment.into(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "news@shop.example".into(),
                subject: subject.into(),
                text_part: "Hello {{Id}}".into(),
                html_part: HTML.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        schedule: Some(Schedule { start_time: "IMMEDIATE".into(), frequency: Frequency::Once as i32, ..Default::default() }),
        ..Default::default()
    }
}

async fn wait_for(sink: &SmtpSink, subject: &str, n: usize) -> Vec<String> {
    let want = format!("Subject: {subject}");
    for _ in 0..200 {
        let got: Vec<String> = sink.messages().into_iter().filter(|m| m.lines().any(|l| l.trim_end() == want)).collect();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} messages with subject {subject}");
}

fn address_of(message: &str) -> String {
    header(message, "X-Rcpt-Args: <").unwrap().trim_end_matches('>').to_string()
}

async fn events_of(store: &herald::store::redis::RedisStore, app: &str, kind: &str) -> Vec<herald::proto::v1::Event> {
    store.read_events(app, None, 10_000).await.unwrap().into_iter().filter(|e| e.event_type == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_clicks_and_one_click_unsubscribe_are_recorded_and_counted() {
    let sink = SmtpSink::start(&[]);
    let smtp = format!("smtp://127.0.0.1:{}?pool=4", sink.port);
    let public = format!("127.0.0.1:{}", free_port());
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--smtp-url", smtp.as_str(), "--feedback-addr", public.as_str()];
    let d = Daemon::spawn(Some(redis), tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &args);
    let app = d.create_app("engagement").await.app_id;
    let endpoints: Vec<Endpoint> = (0..3)
        .map(|i| Endpoint {
            id: format!("e{i}"),
            channel_type: ChannelType::Email as i32,
            address: format!("user{i}@example.com"),
            ..Default::default()
        })
        .collect();
    let segment = d.import_as_segment(&app, endpoints).await;
    let mut campaigns = CampaignsClient::new(d.channel().await);
    let first = campaigns
        .create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(campaign(&segment, "Spring")) }))
        .await
        .unwrap()
        .into_inner();
    let sent = wait_for(&sink, "Spring", 3).await;

    let base = format!("http://{public}");
    let mut by_endpoint = std::collections::HashMap::new();
    for raw in &sent {
        let m = unqp(raw);
        let endpoint = format!("e{}", address_of(&m).trim_start_matches("user").trim_end_matches("@example.com"));
        // Links: the sale and new links tracked; the no-track, mailto and unsubscribe links
        // left alone.
        let clicks: Vec<String> = urls(&m, &format!("{base}/c/")).into_iter().map(|u| u.trim_end_matches('\'').to_string()).collect();
        assert_eq!(clicks.len(), 2, "two tracked links in {m}");
        assert!(m.contains("href=\"https://shop.example/private\"") && m.contains("href=\"mailto:help@shop.example\""), "{m}");
        assert!(!m.contains("href=\"https://shop.example/sale"), "the sale link is rewritten: {m}");
        let pixel = urls(&m, &format!("{base}/o/"));
        assert_eq!(pixel.len(), 1, "one open pixel in {m}");
        // RFC 8058: List-Unsubscribe with Herald's URL, the same URL the template placed.
        let unsubscribe = header(&m, "List-Unsubscribe: <").expect("List-Unsubscribe").trim_end_matches('>').to_string();
        assert!(unsubscribe.starts_with(&format!("{base}/u/")), "{unsubscribe}");
        assert_eq!(header(&m, "List-Unsubscribe-Post:"), Some("List-Unsubscribe=One-Click"));
        assert!(m.contains(&format!("href=\"{unsubscribe}\"")), "Herald.UnsubscribeUrl in the HTML: {m}");
        let message_id = header(&m, "Message-ID: <").unwrap().split('@').next().unwrap().to_string();
        by_endpoint.insert(endpoint, (clicks.clone(), pixel[0].clone(), unsubscribe, message_id));
    }
    herald::channels::install_crypto_provider();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let (links, pixel, _, message_id) = by_endpoint["e0"].clone();
    let click = links[0].clone();

    // The pixel (twice) and the click, as a mail client and a browser would fetch them.
    for _ in 0..2 {
        let r = http.get(&pixel).header("user-agent", "MailClient/1.0").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/gif");
        assert_eq!(&r.bytes().await.unwrap()[..6], b"GIF89a");
    }
    let r = http.get(&click).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://shop.example/sale?x=1&y=2", "exactly the original link");
    assert_eq!(http.get(&links[1]).send().await.unwrap().headers()["location"], "https://shop.example/new");

    // Forged: a changed byte, and the sale link's context and signature with the other link.
    let token = click.strip_prefix(&format!("{base}/c/")).unwrap();
    let mut altered = token.as_bytes().to_vec();
    altered[5] = if altered[5] == b'A' { b'B' } else { b'A' };
    let altered = format!("{base}/c/{}", String::from_utf8(altered).unwrap());
    let other_link = links[1].rsplit('.').nth(1).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let spliced = format!("{base}/c/{}.{}.{}", parts[0], other_link, parts[2]);
    for forged in [altered, spliced, format!("{base}/o/not-a-token"), format!("{base}/c/{}", parts[0])] {
        assert_eq!(http.get(&forged).send().await.unwrap().status(), 404, "{forged}");
    }

    let store = herald::store::redis::RedisStore::connect(&redis_url, 2).await.unwrap();
    let opens = events_of(&store, &app, "_email.open").await;
    assert_eq!(opens.len(), 2, "{opens:?}");
    assert_eq!(opens.iter().map(|e| e.first_of_message).collect::<Vec<_>>(), [true, false]);
    let clicks = events_of(&store, &app, "_email.click").await;
    assert_eq!(clicks.len(), 2, "forged clicks are not recorded: {clicks:?}");
    assert_eq!(clicks.iter().map(|e| e.first_of_message).collect::<Vec<_>>(), [true, false], "a message's first click is unique");
    for e in opens.iter().chain(&clicks) {
        assert_eq!((e.message_id.as_str(), e.client_id.as_str()), (message_id.as_str(), "e0"));
        assert_eq!(e.attributes["campaign_id"], first.id);
        assert!(!e.attributes["campaign_activity_id"].is_empty());
    }
    assert_eq!(clicks[0].attributes["link"], "https://shop.example/sale?x=1&y=2");
    assert!(opens[0].facets_json.contains("MailClient/1.0"), "{}", opens[0].facets_json);

    // One-click unsubscribe: a GET shows the page and changes nothing; the POST opts out.
    let (_, _, unsubscribe, _) = by_endpoint["e1"].clone();
    let page = http.get(&unsubscribe).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("method=\"post\""));
    let opt_out = |id: &str| {
        let (d, app, id) = (&d, app.clone(), id.to_string());
        async move {
            let e =
                d.endpoints().await.get_endpoint(d.req(GetEndpointRequest { app_id: app, endpoint_id: id })).await.unwrap().into_inner();
            OptOut::try_from(e.opt_out).unwrap()
        }
    };
    assert_eq!(opt_out("e1").await, OptOut::None, "a GET never unsubscribes");
    let r = http
        .post(&unsubscribe)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(opt_out("e1").await, OptOut::All);
    assert_eq!(opt_out("e0").await, OptOut::None);
    let unsubscribed = events_of(&store, &app, "_email.unsubscribe").await;
    assert_eq!((unsubscribed.len(), unsubscribed[0].client_id.as_str()), (1, "e1"));

    // The next campaign skips e1 as opted out.
    let next = campaigns
        .create_campaign(d.req(CreateCampaignRequest { app_id: app.clone(), campaign: Some(campaign(&segment, "Summer")) }))
        .await
        .unwrap()
        .into_inner();
    let second = wait_for(&sink, "Summer", 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut to: Vec<String> = second.iter().map(|m| address_of(m)).collect();
    to.sort();
    assert_eq!(to, ["user0@example.com", "user2@example.com"]);
    let mut opted_out = 0;
    for _ in 0..100 {
        let a = campaigns
            .get_campaign_activities(d.req(GetCampaignActivitiesRequest { app_id: app.clone(), campaign_id: next.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        opted_out = a.activities.iter().map(|a| a.failed.get("OPT_OUT").copied().unwrap_or(0)).sum::<i64>();
        if opted_out > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(opted_out, 1, "e1 is counted as opted out");

    // KPIs of the first campaign: 3 delivered, 1 opened, 2 clicks, 3 endpoints.
    let mut kpis = KpisClient::new(d.channel().await);
    let kpi = |name: &str| GetCampaignDateRangeKpiRequest {
        app_id: app.clone(),
        campaign_id: first.id.clone(),
        kpi_name: name.into(),
        ..Default::default()
    };
    let value = |r: herald::proto::v1::DateRangeKpiResponse| r.kpi_result.unwrap().rows[0].values[0].value.clone();
    assert_eq!(
        value(kpis.get_campaign_date_range_kpi(d.req(kpi("email-open-rate"))).await.unwrap().into_inner()),
        (1.0f64 / 3.0).to_string()
    );
    assert_eq!(value(kpis.get_campaign_date_range_kpi(d.req(kpi("unique-deliveries"))).await.unwrap().into_inner()), "3.0");
    let bad = kpis.get_campaign_date_range_kpi(d.req(kpi("email-opn-rate"))).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    // The CLI prints the same as CSV.
    let grpc = d.grpc.to_string();
    let (code, out, err) = common::herald(
        &[
            "kpi",
            "--addr",
            &grpc,
            "--api-key",
            API_KEY,
            "--app",
            &app,
            "--campaign",
            &first.id,
            "clicks-grouped-by-campaign-activity",
            "--csv",
        ],
        &[],
        std::path::Path::new("."),
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "CampaignActivityId,Clicks");
    assert!(lines[1].ends_with(",2.0"), "{out}");

    // Transactional sends: untracked unless asked; open and click URLs expire.
    let d = d.crash_and_restart_with(&[&args[..], &["--tracking-ttl-days", "0.00003"]].concat());
    let send = |subject: &str, tracking: bool| SendMessagesRequest {
        app_id: app.clone(),
        addresses: [(
            "txn@example.com".to_string(),
            AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() },
        )]
        .into(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "news@shop.example".into(),
                subject: subject.into(),
                html_part: "<a href=\"https://shop.example/reset\">Reset</a>".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        engagement_tracking: tracking,
        ..Default::default()
    };
    let mut messages = MessagesClient::new(d.channel().await);
    messages.send_messages(d.req(send("Plain", false))).await.unwrap();
    messages.send_messages(d.req(send("Tracked", true))).await.unwrap();
    let plain = unqp(&wait_for(&sink, "Plain", 1).await[0]);
    assert!(plain.contains("href=\"https://shop.example/reset\"") && !plain.contains(&format!("{base}/o/")), "{plain}");
    assert!(header(&plain, "List-Unsubscribe:").is_none(), "transactional mail has no Herald unsubscribe");
    let tracked = unqp(&wait_for(&sink, "Tracked", 1).await[0]);
    let click = urls(&tracked, &format!("{base}/c/")).pop().expect("a tracked link");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(http.get(&click).send().await.unwrap().status(), 404, "expired");
    assert_eq!(events_of(&store, &app, "_email.click").await.len(), 2, "nothing recorded for the expired click");
}

/// Faults in the middle of engagement: with Redis down, the pixel and the click are still
/// answered and their events are recorded once Redis is back; links keep verifying across a
/// SIGTERM restart and a kill -9 (the key comes from the daemon's secret key, not memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_and_clicks_survive_a_redis_restart_and_daemon_restarts() {
    let sink = SmtpSink::start(&[]);
    let smtp = format!("smtp://127.0.0.1:{}", sink.port);
    let public = format!("127.0.0.1:{}", free_port());
    let redis = RedisServer::start_durable();
    let redis_url = redis.url();
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--smtp-url", smtp.as_str(), "--feedback-addr", public.as_str()];
    let mut d = Daemon::spawn(Some(redis), tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &args);
    let app = d.create_app("faults").await.app_id;
    let send = SendMessagesRequest {
        app_id: app.clone(),
        addresses: [(
            "txn@example.com".to_string(),
            AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() },
        )]
        .into(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "news@shop.example".into(),
                subject: "Receipt".into(),
                html_part: "<html><body><a href=\"https://shop.example/order/7\">Order</a></body></html>".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        engagement_tracking: true,
        ..Default::default()
    };
    MessagesClient::new(d.channel().await).send_messages(d.req(send)).await.unwrap();
    let m = unqp(&wait_for(&sink, "Receipt", 1).await[0]);
    let base = format!("http://{public}");
    let click = urls(&m, &format!("{base}/c/")).pop().expect("a tracked link");
    let pixel = urls(&m, &format!("{base}/o/")).pop().expect("a pixel");
    herald::channels::install_crypto_provider();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(10)).build().unwrap();

    // Redis down: both are answered (after at most the 2 s wait), nothing is lost.
    d.redis.as_mut().unwrap().kill();
    assert_eq!(http.get(&pixel).send().await.unwrap().status(), 200);
    let r = http.get(&click).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (302, "https://shop.example/order/7"));
    d.redis.as_mut().unwrap().start_again();
    let store = herald::store::redis::RedisStore::connect(&redis_url, 2).await.unwrap();
    let mut got = (0, 0);
    for _ in 0..150 {
        got = (events_of(&store, &app, "_email.open").await.len(), events_of(&store, &app, "_email.click").await.len());
        if got == (1, 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, (1, 1), "the held open and click are recorded once Redis is back");

    // SIGTERM, then kill -9: the same links still verify and record (once the new daemon's
    // public listener is up).
    let fetch = |url: String| {
        let http = http.clone();
        async move {
            for _ in 0..100 {
                if let Ok(r) = http.get(&url).send().await {
                    return r.status().as_u16();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the public listener did not come up");
        }
    };
    let d = d.restart();
    assert_eq!(fetch(click.clone()).await, 302);
    let d = d.crash_and_restart();
    assert_eq!(fetch(pixel.clone()).await, 200);
    for _ in 0..50 {
        got = (events_of(&store, &app, "_email.open").await.len(), events_of(&store, &app, "_email.click").await.len());
        if got == (2, 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, (2, 2));
    let opens = events_of(&store, &app, "_email.open").await;
    assert_eq!(opens.iter().filter(|e| e.first_of_message).count(), 1, "one first open across the restarts");
    drop(d);
}
