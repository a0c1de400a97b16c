//! Email over SMTP into a real SMTP server (Postfix's smtp-sink), including its 4xx and 5xx
//! answers.

mod common;
#[path = "common/tls_relay.rs"]
mod tls_relay;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::SmtpSink;
use herald::channels::email::{SmtpPool, SmtpRelay, TlsMode};
use herald::channels::Delivery;
use herald::render::mime::Sender;
use tls_relay::{Front, TlsRelay};

fn pool(port: u16, size: usize) -> SmtpPool {
    let mut relay = SmtpRelay::new("127.0.0.1", port);
    relay.pool_size = size;
    SmtpPool::new(relay)
}

fn message(to: &str, subject: &str) -> Vec<u8> {
    Sender::new::<&str>("Shop <news@shop.example>", &[])
        .unwrap()
        .message(to, subject, Some("Hello there"), Some("<p>Hello there</p>"), None, None)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_the_relay_over_a_bounded_pool() {
    let sink = SmtpSink::start(&[]);
    let pool = Arc::new(pool(sink.port, 4));
    let mut tasks = Vec::new();
    for i in 0..60 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let to = format!("user{i}@example.com");
            pool.send("news@shop.example", &[to.as_str()], &message(&to, &format!("Message {i}"))).await
        }));
    }
    for t in tasks {
        let d = t.await.unwrap();
        assert!(d.is_delivered(), "{d:?}");
        assert_eq!(d.status_code(), 250);
    }
    assert!(pool.idle_connections() <= 4, "the pool never holds more than its size");
    // smtp-sink writes its dump files as transactions end.
    let mut found = 0;
    for _ in 0..50 {
        found = sink.messages().len();
        if found == 60 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(found, 60);
    let dumped = sink.messages();
    let seventh = dumped.iter().find(|m| m.contains("X-Rcpt-Args: <user7@example.com>")).expect("user7's message was dumped");
    assert!(seventh.contains("X-Mail-Args: <news@shop.example>"), "{seventh}");
    assert!(seventh.lines().any(|l| l.trim_end() == "Subject: Message 7"), "{seventh}");
    assert!(seventh.contains("multipart/alternative") && seventh.contains("<p>Hello there</p>"), "{seventh}");
    pool.close().await;
}

#[tokio::test]
async fn refusals_are_classified() {
    let hard = SmtpSink::start(&["-B", "550 5.1.1 No such user here", "-f", "RCPT"]);
    let d = pool(hard.port, 1).send("news@shop.example", &["ghost@example.com"], &message("ghost@example.com", "x")).await;
    assert!(matches!(d, Delivery::Permanent { status_code: 550, hard_bounce: true, .. }), "{d:?}");

    let rejected = SmtpSink::start(&["-f", "DATA"]);
    let d = pool(rejected.port, 1).send("news@shop.example", &["ana@example.com"], &message("ana@example.com", "x")).await;
    assert!(matches!(d, Delivery::Permanent { status_code: 500, hard_bounce: false, .. }), "{d:?}");

    let soft = SmtpSink::start(&["-r", "RCPT"]);
    let p = pool(soft.port, 1);
    let d = p.send("news@shop.example", &["ana@example.com"], &message("ana@example.com", "x")).await;
    assert!(matches!(d, Delivery::Retry { status_code: 450, .. }), "{d:?}");
    // The refused session was reset and stays usable.
    let again = p.send("news@shop.example", &["ana@example.com"], &message("ana@example.com", "x")).await;
    assert!(matches!(again, Delivery::Retry { status_code: 450, .. }), "{again:?}");

    let closed = common::free_port();
    let d = pool(closed, 1).send("news@shop.example", &["ana@example.com"], &message("ana@example.com", "x")).await;
    assert!(matches!(d, Delivery::Retry { status_code: 0, .. }), "{d:?}");

    let d = pool(closed, 1).send("not an address", &["ana@example.com"], b"x").await;
    assert!(matches!(d, Delivery::Permanent { status_code: 0, .. }), "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_pipeline_and_report_each_message() {
    for extra in [&[][..], &["-p"][..]] {
        // With PIPELINING, and with a relay that does not announce it (-p).
        let sink = SmtpSink::start(extra);
        let pool = pool(sink.port, 2);
        let addresses: Vec<String> =
            (0..40).map(|i| if i == 13 { "bad address".to_string() } else { format!("b{i}@example.com") }).collect();
        let messages: Vec<Vec<u8>> =
            addresses.iter().enumerate().map(|(i, a)| message(if i == 13 { "x@example.com" } else { a }, &format!("Batch {i}"))).collect();
        let items: Vec<(&str, &[u8])> = addresses.iter().zip(&messages).map(|(a, m)| (a.as_str(), m.as_slice())).collect();
        let results = pool.send_batch("news@shop.example", &items).await;
        assert_eq!(results.len(), 40);
        for (i, d) in results.iter().enumerate() {
            if i == 13 {
                assert!(matches!(d, Delivery::Permanent { status_code: 0, .. }), "{d:?}");
            } else {
                assert!(d.is_delivered(), "{extra:?} message {i}: {d:?}");
            }
        }
        let mut n = 0;
        for _ in 0..50 {
            n = sink.messages().len();
            if n == 39 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(n, 39, "{extra:?}");
        let dumped = sink.messages();
        let m20 = dumped.iter().find(|m| m.contains("X-Rcpt-Args: <b20@example.com>")).expect("b20 was delivered");
        assert!(m20.lines().any(|l| l.trim_end() == "Subject: Batch 20"), "{m20}");
    }

    // Every message refused: each is reported and the session carries on.
    let hard = SmtpSink::start(&["-B", "550 5.1.1 No such user here", "-f", "RCPT"]);
    let m = message("a@example.com", "x");
    let items: Vec<(&str, &[u8])> = vec![("a@example.com", &m[..]), ("b@example.com", &m[..]), ("c@example.com", &m[..])];
    let results = pool(hard.port, 1).send_batch("news@shop.example", &items).await;
    assert!(results.iter().all(|d| matches!(d, Delivery::Permanent { status_code: 550, hard_bounce: true, .. })), "{results:?}");
}

async fn wait_for_dumps(sink: &SmtpSink, n: usize) -> Vec<String> {
    for _ in 0..100 {
        if sink.messages().len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sink.messages()
}

fn tls_pool(port: u16, tls: TlsMode, ca: Option<&str>) -> SmtpPool {
    let mut relay = SmtpRelay::new("127.0.0.1", port);
    relay.tls = tls;
    relay.extra_ca_pem = ca.map(str::to_string);
    relay.pool_size = 2;
    SmtpPool::new(relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_and_starttls_relays_get_the_mail_over_tls() {
    for front in [Front::Implicit, Front::StartTls] {
        let sink = SmtpSink::start(&[]);
        let relay = TlsRelay::start(front, sink.port).await;
        let mode = if front == Front::Implicit { TlsMode::Tls } else { TlsMode::StartTls };
        let pool = tls_pool(relay.port, mode, Some(&relay.ca_pem));
        let d = pool.send("news@shop.example", &["ana@example.com"], &message("ana@example.com", "Over TLS")).await;
        assert!(d.is_delivered(), "{front:?}: {d:?}");
        // A pipelined batch on the same (reused) TLS session.
        let items: Vec<(String, Vec<u8>)> =
            (0..5).map(|i| (format!("u{i}@example.com"), message(&format!("u{i}@example.com"), &format!("Batch {i}")))).collect();
        let refs: Vec<(&str, &[u8])> = items.iter().map(|(t, m)| (t.as_str(), m.as_slice())).collect();
        let out = pool.send_batch("news@shop.example", &refs).await;
        assert!(out.iter().all(|d| d.is_delivered()), "{front:?}: {out:?}");
        assert_eq!(relay.handshakes.load(Ordering::SeqCst), 1, "{front:?}: one TLS session served both sends");
        let dumped = wait_for_dumps(&sink, 6).await;
        assert_eq!(dumped.len(), 6, "{front:?}");
        assert!(dumped.iter().any(|m| m.lines().any(|l| l.trim_end() == "Subject: Over TLS")), "{front:?}");
        pool.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_never_falls_back_to_plain_text_or_an_untrusted_certificate() {
    let sink = SmtpSink::start(&[]);
    // A relay that does not offer STARTTLS gets nothing, not the message in clear.
    let plain_only = TlsRelay::start(Front::NoStartTls, sink.port).await;
    let pool = tls_pool(plain_only.port, TlsMode::StartTls, Some(&plain_only.ca_pem));
    let d = pool.send("news@shop.example", &["ana@example.com"], &message("ana@example.com", "x")).await;
    assert!(matches!(&d, Delivery::Retry { message, .. } if message.contains("STARTTLS")), "{d:?}");

    // A certificate from a CA the pool does not trust fails the handshake.
    let relay = TlsRelay::start(Front::Implicit, sink.port).await;
    let untrusting = tls_pool(relay.port, TlsMode::Tls, None);
    let d = untrusting.send("news@shop.example", &["ana@example.com"], &message("ana@example.com", "x")).await;
    assert!(matches!(&d, Delivery::Retry { message, .. } if message.contains("TLS handshake")), "{d:?}");
    assert_eq!(relay.handshakes.load(Ordering::SeqCst), 0);
    // Nor does a trusted certificate for another name.
    let elsewhere = TlsRelay::with_names(Front::Implicit, sink.port, &["relay.elsewhere.test"]).await;
    let misnamed = tls_pool(elsewhere.port, TlsMode::Tls, Some(&elsewhere.ca_pem));
    let d = misnamed.send("news@shop.example", &["ana@example.com"], &message("ana@example.com", "x")).await;
    assert!(matches!(&d, Delivery::Retry { message, .. } if message.contains("TLS handshake")), "{d:?}");
    assert_eq!(elsewhere.handshakes.load(Ordering::SeqCst), 0);
    // The name on the certificate is accepted.
    let mut named = SmtpRelay::new("localhost", relay.port);
    named.tls = TlsMode::Tls;
    named.extra_ca_pem = Some(relay.ca_pem.clone());
    let d = SmtpPool::new(named).send("news@shop.example", &["ana@example.com"], &message("ana@example.com", "named")).await;
    assert!(d.is_delivered(), "{d:?}");
    assert_eq!(wait_for_dumps(&sink, 1).await.len(), 1, "only the verified session delivered");
}
