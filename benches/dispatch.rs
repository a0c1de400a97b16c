//! The dispatch hot path, piece by piece: shard routing, the rate gate, encoding a batch's
//! outcomes and events for the store, and evaluating a segment per endpoint.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use herald::dispatch::engine::shard_of;
use herald::dispatch::quota::RateGate;
use herald::outcomes::event_for;
use herald::proto::v1::{
    AttributeDimension, AttributeValues, ChannelType, ComparisonOperator, DeliveryStatus, Endpoint, EndpointLocation, MessageOutcome,
    MessageSource, MetricDimension, Segment, SegmentDimensions, SegmentLocation, SetDimension,
};
use prost::Message as _;

fn endpoint(i: u64) -> Endpoint {
    let one = |v: &str| AttributeValues { values: vec![v.to_string()] };
    Endpoint {
        id: format!("ep-{i:09}"),
        channel_type: ChannelType::Email as i32,
        address: format!("user{i}@example.com"),
        attributes: [("Plan".to_string(), one(["Free", "Pro", "Team"][(i % 3) as usize])), ("Source".to_string(), one("web"))].into(),
        metrics: [("Sessions".to_string(), (i % 50) as f64)].into(),
        location: Some(EndpointLocation { country: ["US", "DE", "FR", "JP"][(i % 4) as usize].into(), ..Default::default() }),
        effective_date: "2026-11-20T10:00:00.000Z".into(),
        creation_date: "2026-11-20T10:00:00.000Z".into(),
        application_id: "app".into(),
        request_id: "03690135e02840b88cf7272ab19085e2".into(),
        cohort_id: (i % 100) as i32,
        ..Default::default()
    }
}

fn routing(c: &mut Criterion) {
    let keys: Vec<String> = (0..1_000).map(|i| format!("ep-{i:09}")).collect();
    let mut g = c.benchmark_group("dispatch");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("shard routing, 1,000 endpoint ids over 8 shards", |b| b.iter(|| keys.iter().map(|k| shard_of(k, 8)).sum::<usize>()));
    let unlimited = RateGate::new(None, None);
    let limited = RateGate::new(Some(1_000_000), Some(1_000_000));
    g.bench_function("rate gate, 1,000 checks without a limit", |b| b.iter(|| (0..1_000).filter(|_| unlimited.try_take().is_ok()).count()));
    g.bench_function("rate gate, 1,000 checks at 1M/s", |b| b.iter(|| (0..1_000).filter(|_| limited.try_take().is_ok()).count()));
    g.finish();
}

fn outcomes(c: &mut Criterion) {
    let batch: Vec<MessageOutcome> = (0..64)
        .map(|i| MessageOutcome {
            message_id: herald::domain::new_message_id(),
            app_id: "0f3b6c2a9d8e4f5a8b7c6d5e4f3a2b1c".into(),
            source: MessageSource::Campaign as i32,
            request_id: "c1:000000".into(),
            campaign_id: "c1".into(),
            endpoint_id: format!("ep-{i:09}"),
            address: format!("user{i}@example.com"),
            channel: "EMAIL".into(),
            delivery_status: DeliveryStatus::Successful as i32,
            status_code: 250,
            status_message: "2.0.0 Ok: queued as 4F2A1C0B3D".into(),
            provider_message_id: "4F2A1C0B3D".into(),
            attempts: 1,
            created_date: "2026-11-22T10:00:00.000Z".into(),
            updated_date: "2026-11-22T10:00:00.012Z".into(),
            ..Default::default()
        })
        .collect();
    // A stream entry's events: each stored form alone, and the batch as one LZ4 block (what
    // the Redis store appends).
    let events: Vec<_> = batch.iter().map(|o| event_for(o, "_email.send".into())).collect();
    let app = "0f3b6c2a9d8e4f5a8b7c6d5e4f3a2b1c";
    let mut blocks = c.benchmark_group("event blocks");
    blocks.throughput(Throughput::Elements(64));
    blocks.bench_function("64 events, stored forms one by one", |b| {
        b.iter(|| events.iter().map(|e| herald::store::codec::encode_event(app, e).len()).sum::<usize>())
    });
    blocks.bench_function("64 events, one compressed block", |b| {
        b.iter(|| herald::store::codec::encode_event_block(app, &events).map_or(0, |b| b.len()))
    });
    blocks.finish();
    let mut g = c.benchmark_group("dispatch");
    g.throughput(Throughput::Elements(64));
    g.bench_function("outcome batch encoding, 64 outcomes and their events", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for o in &batch {
                bytes += o.encode_to_vec().len();
                bytes += event_for(o, "_email.send".into()).encode_to_vec().len();
            }
            bytes
        })
    });
    g.finish();
}

fn segments(c: &mut Criterion) {
    let dims = SegmentDimensions {
        attributes: [("Plan".to_string(), AttributeDimension { attribute_type: 0, values: vec!["Pro".into()] })].into(),
        location: Some(SegmentLocation {
            country: Some(SetDimension { dimension_type: 0, values: vec!["US".into(), "DE".into()] }),
            gps_point: None,
        }),
        metrics: [("Sessions".to_string(), MetricDimension { comparison_operator: ComparisonOperator::GreaterThan as i32, value: 10.0 })]
            .into(),
        ..Default::default()
    };
    let segment = Segment { id: "s".into(), version: 1, dimensions: Some(dims), ..Default::default() };
    let rule = herald::segments::rule::compile(&segment, &HashMap::new()).unwrap();
    let endpoints: Vec<Endpoint> = (0..1_000).map(endpoint).collect();
    // The stored form, as the stores keep it (store::codec).
    let encoded: Vec<Vec<u8>> = endpoints.iter().map(|e| herald::store::codec::encode_endpoint("app", e)).collect();
    let none: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    let now = chrono::Utc::now();
    let mut g = c.benchmark_group("segments");
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("three-dimension segment, 1,000 decoded endpoints", |b| {
        b.iter(|| endpoints.iter().filter(|e| rule.matches(e, now, &none)).count())
    });
    g.bench_function("three-dimension segment, 1,000 endpoints decoded from the store's bytes", |b| {
        b.iter_batched(
            || encoded.clone(),
            |raw| {
                raw.iter().map(|r| herald::store::codec::decode_endpoint("app", r).unwrap()).filter(|e| rule.matches(e, now, &none)).count()
            },
            BatchSize::LargeInput,
        )
    });
    // The same endpoints as plain protobuf (what the stores kept before store::codec).
    let plain: Vec<Vec<u8>> = endpoints.iter().map(|e| e.encode_to_vec()).collect();
    g.bench_function("three-dimension segment, 1,000 endpoints decoded from plain protobuf", |b| {
        b.iter_batched(
            || plain.clone(),
            |raw| raw.iter().map(|r| Endpoint::decode(r.as_slice()).unwrap()).filter(|e| rule.matches(e, now, &none)).count(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// DKIM-signing one ~1 KB message: RSA-2048 and Ed25519.
fn dkim(c: &mut Criterion) {
    use herald::channels::email::dkim::{DkimKey, DkimSigner};
    let mut message = String::from("From: Shop <news@shop.example>\r\nTo: ana@example.com\r\nSubject: Your order\r\n");
    message.push_str("Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@shop.example>\r\nMIME-Version: 1.0\r\n");
    message.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
    while message.len() < 1_024 {
        message.push_str("Thank you for your order; it ships tomorrow.\r\n");
    }
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap().serialize_pem();
    let mut g = c.benchmark_group("dkim_sign");
    g.throughput(Throughput::Elements(1));
    for (name, pem) in [("rsa2048", include_str!("../tests/fixtures/dkim-rsa.pem").to_string()), ("ed25519", ed25519)] {
        let signer = DkimSigner::new(vec![DkimKey::from_pem("shop.example", "s1", &pem).unwrap()]);
        g.bench_function(name, |b| b.iter(|| signer.sign("news@shop.example", message.as_bytes(), 1_700_000_000).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, routing, outcomes, segments, dkim);
criterion_main!(benches);
