//! Criterion benches of the endpoint write path's CPU work: validation, merging, the write
//! planner over a 1,000-endpoint batch, cohort hashing and import-row parsing.

/// The daemon's allocator (see `src/main.rs`), so the figures are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use herald::domain::{endpoint, import};
use herald::proto::v1::{AttributeValues, ChannelType, Endpoint, EndpointDemographic, EndpointLocation, EndpointUser};
use herald::store::plan::{self, EndpointOp, Snapshot};

fn sample(i: u64) -> Endpoint {
    let one = |v: String| AttributeValues { values: vec![v] };
    Endpoint {
        id: format!("ep-{i:09}"),
        channel_type: ChannelType::Email as i32,
        address: format!("user{i}@example.com"),
        attributes: [("Plan".to_string(), one("Pro".into())), ("Source".to_string(), one("bench".into()))].into(),
        metrics: [("Sessions".to_string(), 3.0)].into(),
        location: Some(EndpointLocation { country: "US".into(), city: "Springfield".into(), ..Default::default() }),
        demographic: Some(EndpointDemographic { timezone: "America/New_York".into(), platform: "web".into(), ..Default::default() }),
        user: Some(EndpointUser {
            user_id: format!("user-{i}"),
            user_attributes: [("FirstName".to_string(), one(format!("Name{i}")))].into(),
        }),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let e = sample(42);
    c.bench_function("endpoint/validate_write", |b| b.iter(|| endpoint::validate_write(std::hint::black_box(&e))));
    c.bench_function("endpoint/merge_new", |b| {
        b.iter(|| endpoint::merge(None, std::hint::black_box(&e), "app", "2026-01-01T00:00:00.000Z", "r"))
    });
    c.bench_function("endpoint/cohort_id", |b| b.iter(|| endpoint::cohort_id(std::hint::black_box("ep-000000042"))));

    let mut group = c.benchmark_group("plan");
    group.throughput(Throughput::Elements(1000));
    let op = EndpointOp::Upsert {
        writes: (0..1000).map(sample).collect(),
        all_or_nothing: false,
        now: "2026-01-01T00:00:00.000Z".into(),
        request_id: "r".into(),
    };
    group.bench_function("upsert_1000_new", |b| {
        b.iter_batched(
            || {
                // The snapshot a backend loads for a batch of new endpoints: everything absent.
                let needs = plan::prefetch(&op);
                let mut snap = Snapshot::default();
                snap.absorb_endpoints(needs.endpoints.clone(), vec![None; needs.endpoints.len()]);
                snap.absorb_addresses(needs.addresses.clone(), vec![None; needs.addresses.len()]);
                snap.absorb_users(needs.users.clone(), vec![None; needs.users.len()]);
                snap
            },
            |snap| plan::plan("app", &op, &snap).expect("everything loaded"),
            BatchSize::LargeInput,
        )
    });
    group.finish();

    let mut csv = String::from("ChannelType,Address,Id,User.UserId,User.UserAttributes.FirstName,Attributes.Plan,Location.Country\n");
    for i in 0..1000 {
        csv.push_str(&format!("EMAIL,user{i}@example.com,ep-{i},u{i},Name{i},Pro,US\n"));
    }
    let mut group = c.benchmark_group("import");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("csv_1000_rows", |b| b.iter(|| import::csv_rows(csv.as_bytes()).unwrap().count()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
