//! Fuzzing on stable Rust: every parser that takes what a caller wrote — templates (compile
//! and render), CSV and JSON-lines imports, Pinpoint JSON for segments, campaigns and journeys,
//! the MIME builder, protobuf decoding of requests, SMTP replies and the answers of the SMS
//! provider, APNs and FCM —
//! gets inputs mutated from real seeds (bytes flipped, inserted, deleted, duplicated, spliced
//! between seeds, cut short). Each must return (an error is fine) without panicking; the
//! parsers of caller input must not hold more than a fixed multiple of their input (a
//! counting allocator measures each call).
//!
//! The suite runs a quick pass (2,000 cases per target); a scheduled run sets
//! `HERALD_FUZZ_CASES=1000000`. `HERALD_FUZZ_SEED` replays a run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use prost::Message as _;

#[path = "common/tls_relay.rs"]
mod tls_relay;

/// Counts the bytes this thread has allocated and still holds, and the peak since reset.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|l| {
            let now = l.get() + layout.size();
            l.set(now);
            let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
        });
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(layout.size())));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The most one call may hold at once beyond what was live before it: a multiple of the
/// input plus a fixed allowance (parsers' tables, the handlebars registry).
const PER_BYTE: usize = 512;
const FIXED: usize = 4 << 20;

/// xorshift64*: deterministic, seedable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Characters the grammars care about, inserted more often than random bytes.
const TOKENS: &[&[u8]] = &[
    b"{{",
    b"}}",
    b"{{#if ",
    b"{{/if}}",
    b"{{#each ",
    b"{{/each}}",
    b"{{else}}",
    b"\"",
    b"\\",
    b",",
    b"\n",
    b"\r\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"\t",
    b"\0",
    b"\xff",
    b"\xc3\xa9",
    b"'",
    b"=?utf-8?",
    b"@",
    b"<",
    b">",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(b.len() + 1);
        match rng.below(7) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                b.splice(at..at, t.iter().copied());
            }
            2 if !b.is_empty() => {
                let end = (at + rng.below(16)).min(b.len());
                b.drain(at.min(end)..end);
            }
            3 if !b.is_empty() => {
                let start = rng.below(b.len());
                let end = (start + rng.below(64)).min(b.len());
                let piece: Vec<u8> = b[start..end].to_vec();
                b.splice(at..at, piece);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
            5 => b.truncate(at),
            _ => b.insert(at, (rng.next() & 0xff) as u8),
        }
    }
    b
}

fn cases() -> usize {
    std::env::var("HERALD_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000)
}

/// Runs `target` over mutated seeds; fails on a panic or on holding too much.
fn fuzz(name: &str, seeds: &[&str], target: impl Fn(&[u8])) {
    let seed = std::env::var("HERALD_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x9e37_79b9_7f4a_7c15u64);
    let mut rng = Rng(seed ^ name.len() as u64);
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|s| s.as_bytes().to_vec()).collect();
    for case in 0..cases() {
        let input = mutate(&mut rng, &seeds);
        let before = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(before));
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
        let held = PEAK.with(Cell::get).saturating_sub(before);
        let shown = String::from_utf8_lossy(&input[..input.len().min(300)]).into_owned();
        assert!(run.is_ok(), "{name}: case {case} panicked on {shown:?}");
        let most = FIXED + PER_BYTE * input.len();
        assert!(held <= most, "{name}: case {case} held {held} bytes for {} input bytes: {shown:?}", input.len());
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn templates_compile_and_render() {
    let renderer = herald::render::Renderer::new();
    let context = serde_json::json!({
        "Attributes": {"Plan": ["Gold"], "Interests": ["a", "b"]},
        "User": {"UserAttributes": {"FirstName": ["Ana"]}},
        "Id": "e1", "Address": "ana@example.com", "Month": "March",
    });
    fuzz(
        "templates",
        &[
            "Hi {{User.UserAttributes.FirstName}}, your {{Month}} update",
            "{{#if Attributes.Plan}}Thanks for {{Attributes.Plan}}{{else}}Join{{/if}}",
            "{{#each Attributes.Interests}}<li>{{this}}</li>{{/each}}",
            "{{capitalize Address}} {{formatDate '2026-01-01' 'MMM'}} {{#eq Id \"e1\"}}yes{{/eq}}",
            "{{{Attributes.Plan}}} {{! comment }} {{now}}",
        ],
        |b| {
            if let Ok(c) = renderer.compile(&text(b)) {
                let _ = renderer.render(&c, &context);
            }
        },
    );
}

#[test]
fn imports_csv_and_json_lines() {
    fuzz(
        "csv",
        &[
            "ChannelType,Address,Id,Attributes.Plan,Location.Country,User.UserId\nEMAIL,ana@example.com,a1,Gold,US,u1\nSMS,+14255550100,a2,,DE,\n",
            "Id,Address,ChannelType,Demographic.Timezone,Metrics.visits\nx,\"quoted, address\"@example.com,EMAIL,Europe/Paris,3\n",
        ],
        |b| {
            if let Ok(rows) = herald::domain::import::csv_rows(b) {
                for _ in rows.take(1_000) {}
            }
        },
    );
    fuzz(
        "json lines",
        &[
            r#"{"ChannelType":"EMAIL","Address":"ana@example.com","Id":"a1","Attributes":{"Plan":["Gold"]},"User":{"UserId":"u1"}}"#,
            r#"{"ChannelType":"SMS","Address":"+14255550100","Id":"a2","Metrics":{"visits":3},"Location":{"Latitude":47.6}}"#,
        ],
        |b| {
            let _ = herald::domain::import::json_line(&text(b));
        },
    );
}

#[test]
fn pinpoint_json_for_segments_campaigns_and_journeys() {
    fuzz(
        "segments",
        &[
            r#"{"Name":"Gold","Dimensions":{"Attributes":{"Plan":{"AttributeType":"INCLUSIVE","Values":["Gold"]}},"Location":{"GPSPoint":{"Coordinates":{"Latitude":1,"Longitude":2},"RangeInKilometers":5}}}}"#,
            r#"{"Name":"g","SegmentGroups":{"Include":"ANY","Groups":[{"SourceSegments":[{"Id":"s1","Version":2}],"Type":"NONE"}]}}"#,
            r#"{"name":"api","dimensions":{"metrics":{"visits":{"comparison_operator":"GREATER_THAN","value":3}}}}"#,
        ],
        |b| {
            let _ = herald::segments::json::definition(&text(b));
        },
    );
    fuzz(
        "campaigns",
        &[
            r#"{"Name":"Spring","SegmentId":"s1","MessageConfiguration":{"EmailMessage":{"FromAddress":"a@b.example","Title":"Hi","Body":"x"}},"Schedule":{"StartTime":"IMMEDIATE"}}"#,
            "name: x\nsegment_id: s1\nschedule:\n  start_time: IMMEDIATE\n  frequency: ONCE\nlimits:\n  daily: 1\n",
            r#"{"Name":"ia","Schedule":{"StartTime":"IMMEDIATE","Frequency":"IN_APP_EVENT"},"MessageConfiguration":{"InAppMessage":{"Layout":"CAROUSEL","Content":[{"HeaderConfig":{"Header":"Hi"}}]}}}"#,
        ],
        |b| {
            let _ = herald::campaigns::json::campaign(&text(b));
        },
    );
    fuzz(
        "journeys",
        &[
            r#"{"Name":"Welcome","StartActivity":"w","Activities":{"w":{"EMAIL":{"TemplateName":"welcome"},"NextActivity":"wait"},"wait":{"Wait":{"WaitTime":{"WaitFor":"3d"},"NextActivity":"f"}},"f":{"EMAIL":{"TemplateName":"follow"}}},"StartCondition":{"SegmentStartCondition":{"SegmentId":"s1"}}}"#,
        ],
        |b| {
            if let Ok(v) = herald::campaigns::json::document(&text(b)) {
                let _ = herald::journeys::json::journey(&v);
            }
        },
    );
}

#[test]
fn mime_messages() {
    fuzz(
        "mime",
        &["Shop <news@shop.example>|ana@example.com|Hi =?é?|text part|<p>html</p>", "a@b.example|Ana Lima <ana@example.com>|s||<b>x</b>"],
        |b| {
            let s = text(b);
            let p: Vec<&str> = s.splitn(5, '|').collect();
            let get = |i: usize| p.get(i).copied().unwrap_or("");
            if let Ok(sender) = herald::render::mime::Sender::new::<&str>(get(0), &[]) {
                let _ = sender.message(get(1), get(2), Some(get(3)), Some(get(4)), None, Some("m1"));
            }
        },
    );
}

/// Every request type the API takes, decoded from each input (the daemon-level walk over
/// every method with mutated bytes is tests/every_method.rs).
macro_rules! decode_every_request {
    ($bytes:expr; $($t:ident),* $(,)?) => {{
        let mut decoded = 0usize;
        $(decoded += usize::from(herald::proto::v1::$t::decode($bytes).is_ok());)*
        decoded
    }};
}

#[test]
fn request_protobufs_decode() {
    use herald::proto::v1::*;
    let seeds: Vec<String> = [
        SendMessagesRequest { app_id: "a".into(), trace_id: "t".into(), ..Default::default() }.encode_to_vec(),
        CreateCampaignRequest { app_id: "a".into(), campaign: Some(Campaign { name: "c".into(), ..Default::default() }) }.encode_to_vec(),
        UpdateEndpointRequest { app_id: "a".into(), endpoint_id: "e".into(), endpoint: Some(Endpoint::default()) }.encode_to_vec(),
        CreateKeyRequest { name: "k".into(), scopes: vec!["read".into()], app_ids: vec!["a".into()], rate_per_second: 5, burst: 9 }
            .encode_to_vec(),
        TagResourceRequest {
            resource_arn: "arn:aws:mobiletargeting:r:1:apps/a/campaigns/c".into(),
            tags: [("k".into(), "v".into())].into(),
        }
        .encode_to_vec(),
    ]
    .into_iter()
    .map(|b| b.iter().map(|&x| x as char).collect())
    .collect();
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    // The guard reads each request's app and resource before any service decodes it.
    let methods = herald::access::methods::Methods::load();
    let mut all: Vec<_> = methods.all().map(|(p, m)| (p.to_string(), m.clone())).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    fuzz("protobuf", &seeds, |b| {
        let bytes: Vec<u8> = String::from_utf8_lossy(b).chars().map(|c| c as u32 as u8).collect();
        let _ = decode_every_request!(bytes.as_slice(); AddSuppressionsRequest, CheckSuppressionRequest, CreateAppRequest, CreateCampaignRequest, CreateEventDestinationRequest, CreateJourneyRequest, CreateKeyRequest, CreateSegmentRequest, CreateTemplateRequest, DeleteAppRequest, DeleteCampaignRequest, DeleteEndpointRequest, DeleteEventDestinationRequest, DeleteJourneyRequest, DeleteSegmentRequest, DeleteTemplateRequest, DeleteUserEndpointsRequest, ExportSegmentRequest, GetAppRequest, GetApplicationDateRangeKpiRequest, GetCampaignActivitiesRequest, GetCampaignDateRangeKpiRequest, GetCampaignRequest, GetChannelRequest, GetEndpointRequest, GetEventDestinationRequest, GetExportJobRequest, GetImportJobRequest, GetInAppMessagesRequest, GetJourneyDateRangeKpiRequest, GetJourneyExecutionActivityMetricsRequest, GetJourneyExecutionMetricsRequest, GetJourneyRequest, GetMessageOutcomeRequest, GetSegmentRequest, GetTemplateRequest, GetUserEndpointsRequest, ImportEndpointsRequest, ImportSegmentRequest, ListAppsRequest, ListCampaignVersionsRequest, ListCampaignsRequest, ListEventDestinationsRequest, ListJobsRequest, ListJourneysRequest, ListKeysRequest, ListOutcomesRequest, ListSegmentVersionsRequest, ListSegmentsRequest, ListSuppressionsRequest, ListTagsForResourceRequest, ListTemplateVersionsRequest, ListTemplatesRequest, PutEventsRequest, RemoveAttributesRequest, RemoveSuppressionRequest, RenderTemplateRequest, RevokeKeyRequest, SendMessagesRequest, SendUsersMessagesRequest, StreamEventsRequest, TagResourceRequest, UntagResourceRequest, UpdateApnsChannelRequest, UpdateAppSettingsRequest, UpdateCampaignRequest, UpdateCustomChannelRequest, UpdateEmailChannelRequest, UpdateEndpointRequest, UpdateEndpointsBatchRequest, UpdateEventDestinationRequest, UpdateGcmChannelRequest, UpdateJourneyRequest, UpdateJourneyStateRequest, UpdateSegmentRequest, UpdateSmsChannelRequest, UpdateTemplateActiveVersionRequest, UpdateTemplateRequest);
        let m = &all[bytes.len() % all.len()].1;
        let _ = std::hint::black_box(m.read(&bytes));
    });
}

/// The harness itself: a target that panics, or holds far more than its input, is caught.
#[test]
fn the_harness_catches_panics_and_blow_ups() {
    let panics = std::panic::catch_unwind(|| fuzz("panics", &["x"], |b| assert!(b.len() < 3, "too long")));
    assert!(panics.is_err(), "a panicking target fails the run");
    let hungry = std::panic::catch_unwind(|| {
        fuzz("hungry", &["x"], |b| {
            let v = vec![1u8; FIXED + PER_BYTE * (b.len() + 1) + 1];
            std::hint::black_box(&v);
        })
    });
    assert!(hungry.is_err(), "a target holding more than the bound fails the run");
}

/// Provider answers: an SMTP server answering each connection with mutated replies, and an
/// SMS provider answering mutated statuses and bodies. Every message gets a delivery (an
/// error is fine), nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_answers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Conversations over loopback: a hundredth of the parser cases (10,000 in the scheduled run).
    let n = (cases() / 100).max(100);
    let seed = std::env::var("HERALD_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x51_7cc1_b727_220au64);
    // SMTP: each connection gets one mutated conversation, then the server closes.
    let smtp_seeds: Vec<Vec<u8>> = [
        "220 sink ESMTP\r\n250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n",
        "220 x\r\n250 x\r\n550 5.1.1 no such user\r\n503 bad sequence\r\n",
        "421 busy\r\n",
        "220 x\r\n250-x\r\n250 SIZE 10\r\n452 4.5.3 too many\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server_seeds = smtp_seeds.clone();
    tokio::spawn(async move {
        let mut rng = Rng(seed);
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let reply = mutate(&mut rng, &server_seeds);
            tokio::spawn(async move {
                // The whole conversation at once, then the end of it; what the client says is
                // read until it goes.
                let _ = sock.write_all(&reply).await;
                let _ = sock.shutdown().await;
                let mut buf = [0u8; 4096];
                while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    let relay = herald::channels::email::SmtpRelay::from_url(&format!("smtp://127.0.0.1:{port}?pool=1")).unwrap();
    let message: &[u8] = b"From: a@b.example\r\nTo: c@d.example\r\nSubject: s\r\n\r\nbody\r\n";
    let mut kinds = std::collections::HashSet::new();
    for _ in 0..n {
        let pool = herald::channels::email::SmtpPool::new(relay.clone());
        let sent = pool.send_batch("a@b.example", &[("c@d.example", message), ("e@f.example", message)]).await;
        assert_eq!(sent.len(), 2, "a delivery for each message");
        kinds.extend(sent.iter().map(std::mem::discriminant));
    }
    assert!(kinds.len() >= 2, "the replies reached the parser: more than one kind of delivery");
    // SMS: a Twilio-shaped endpoint answering mutated statuses and JSON bodies.
    let sms_seeds: Vec<Vec<u8>> = [
        r#"201 {"sid":"SM1","status":"queued","to":"+15550001"}"#,
        r#"400 {"code":21211,"message":"The 'To' number is not valid","status":400}"#,
        r#"429 {"code":20429,"message":"Too Many Requests"}"#,
        "503 <html>down</html>",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let answers = std::sync::Arc::new(parking_lot::Mutex::new(Rng(seed ^ 1)));
    let app = axum::Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        axum::routing::post(move || {
            let answers = answers.clone();
            let seeds = sms_seeds.clone();
            async move {
                let raw = mutate(&mut answers.lock(), &seeds);
                let text = String::from_utf8_lossy(&raw).into_owned();
                let (code, body) = text.split_once(' ').unwrap_or(("200", text.as_str()));
                let status =
                    code.parse::<u16>().ok().and_then(|c| axum::http::StatusCode::from_u16(c).ok()).unwrap_or(axum::http::StatusCode::OK);
                (status, [("retry-after", "0")], body.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let channel = herald::proto::v1::SmsChannel {
        enabled: true,
        base_url: base,
        account_sid: "AC0123456789abcdef".into(),
        auth_token: "t".into(),
        origination_numbers: vec!["+14255550100".into()],
        ..Default::default()
    };
    herald::channels::install_crypto_provider();
    let sms = herald::channels::sms::SmsSender::new(&channel, reqwest::Client::new()).unwrap();
    let mut kinds = std::collections::HashSet::new();
    for i in 0..n {
        let text = herald::channels::sms::Text::new(&format!("+1555000{:04}", i % 10_000), "hi".into(), &Default::default());
        kinds.insert(std::mem::discriminant(&sms.send(&text).await));
    }
    assert!(kinds.len() >= 2, "the answers reached the parser: more than one kind of delivery");
}

/// A mutated provider answer "STATUS BODY" as a status code and body.
fn status_and_body(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (code, body) = text.split_once(' ').unwrap_or(("200", text.as_str()));
    let status = code.parse::<u16>().ok().filter(|c| (200..600).contains(c)).unwrap_or(200);
    (status, body.to_string())
}

/// Push provider answers: a local APNs (HTTP/2 over TLS) and a local FCM (with its OAuth
/// token endpoint) answering mutated statuses and bodies — Apple's `{"reason": …}` and
/// Google's error objects cut, flipped and spliced. Every message gets a delivery, nothing
/// panics, and more than one kind of delivery shows the answers reached the classifiers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_provider_answers() {
    use std::sync::Arc;
    let n = (cases() / 100).max(100);
    let seed = std::env::var("HERALD_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x0a9e_5f00_d15e_a5e5u64);
    herald::channels::install_crypto_provider();

    // APNs.
    let apns_seeds: Vec<Vec<u8>> = [
        "200 ",
        r#"400 {"reason":"BadDeviceToken"}"#,
        r#"410 {"reason":"Unregistered","timestamp":1700000000000}"#,
        r#"403 {"reason":"ExpiredProviderToken"}"#,
        r#"429 {"reason":"TooManyRequests"}"#,
        r#"503 {"reason":"ServiceUnavailable"}"#,
        "500 <html>oops</html>",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let (mut config, ca_pem) = tls_relay::test_server_config(&["localhost", "127.0.0.1"]);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answers = Arc::new(parking_lot::Mutex::new(Rng(seed)));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, answers, seeds) = (acceptor.clone(), answers.clone(), apns_seeds.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                    let raw = mutate(&mut answers.lock(), &seeds);
                    let (status, body) = status_and_body(&raw);
                    let mut answer = hyper::Response::builder().status(status);
                    if raw.len().is_multiple_of(3) {
                        answer = answer.header("retry-after", "0");
                    }
                    let answer = answer.body(http_body_util::Full::new(bytes::Bytes::from(body))).unwrap();
                    async move { Ok::<_, std::convert::Infallible>(answer) }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let apns = herald::channels::apns::ApnsSender::new(&herald::proto::v1::ApnsChannel {
        enabled: true,
        token_key: key.serialize_pem(),
        token_key_id: "ABC123DEFG".into(),
        team_id: "TEAM123456".into(),
        bundle_id: "com.example.app".into(),
        base_url: format!("https://127.0.0.1:{port}"),
        sandbox_base_url: format!("https://127.0.0.1:{port}"),
        ca_certificate: ca_pem,
        connections: 1,
        ..Default::default()
    })
    .unwrap();
    let mut kinds = std::collections::HashSet::new();
    for i in 0..n {
        let push = herald::channels::apns::Push {
            device_token: format!("{i:064x}"),
            sandbox: false,
            voip: false,
            push_type: "alert".into(),
            priority: None,
            expiration: None,
            collapse_id: None,
            body: br#"{"aps":{"alert":"hi"}}"#.to_vec(),
        };
        kinds.insert(std::mem::discriminant(&apns.send(&push, &format!("m{i}")).await));
    }
    assert!(kinds.len() >= 2, "the APNs answers reached the classifier: more than one kind of delivery");

    // FCM: the token endpoint answers well (then sometimes not), the send endpoint mutated.
    let fcm_seeds: Vec<Vec<u8>> = [
        r#"200 {"name":"projects/project-1/messages/0:1"}"#,
        r#"404 {"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#,
        r#"400 {"error":{"code":400,"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"}]}}"#,
        r#"401 {"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}"#,
        r#"429 {"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#,
        "503 Service Unavailable",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let token_seeds: Vec<Vec<u8>> =
        [r#"200 {"access_token":"ya29.t","expires_in":3599,"token_type":"Bearer"}"#, r#"400 {"error":"invalid_grant"}"#]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
    let answers = Arc::new(parking_lot::Mutex::new(Rng(seed ^ 7)));
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let answers = answers.clone();
        let (fcm, token) = (fcm_seeds.clone(), token_seeds.clone());
        async move {
            let mut rng = answers.lock();
            // The token endpoint answers as Google does most of the time, so sends happen.
            let raw = match (uri.path().ends_with("/token"), rng.below(4)) {
                (true, 0) => mutate(&mut rng, &token),
                (true, _) => token[0].clone(),
                (false, _) => mutate(&mut rng, &fcm),
            };
            let (status, body) = status_and_body(&raw);
            let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK);
            (status, [("retry-after", "0"), ("content-type", "application/json")], body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let account = serde_json::json!({
        "type": "service_account",
        "project_id": "project-1",
        "private_key_id": "k1",
        "private_key": include_str!("fixtures/fcm-test-key.pem"),
        "client_email": "herald-test@project-1.iam.gserviceaccount.com",
        "token_uri": format!("{base}/token"),
    });
    let fcm = herald::channels::fcm::FcmSender::new(
        &herald::proto::v1::GcmChannel { enabled: true, service_account_json: account.to_string(), base_url: base, ..Default::default() },
        reqwest::Client::new(),
    )
    .unwrap();
    let mut kinds = std::collections::HashSet::new();
    for i in 0..n {
        let m = herald::channels::fcm::Message { device_token: format!("tok-{i}"), fields: serde_json::Map::new() };
        kinds.insert(std::mem::discriminant(&fcm.send(&m).await));
    }
    assert!(kinds.len() >= 2, "the FCM answers reached the classifier: more than one kind of delivery");
}
