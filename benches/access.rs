//! What the guard adds to every gRPC call: authenticating a configured key (a SHA-256 and a
//! comparison with each configured hash), a store key on the embedded store (one read), the
//! rate limiter's take, and reading the app and resource from a request's bytes.

use std::sync::Arc;

/// The daemon's allocator (see `src/main.rs`), so the figures are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
use herald::access::{methods::Methods, ConfiguredKey, Registry};
use herald::proto::v1::{Endpoint, UpdateEndpointRequest};
use herald::store::{embedded::EmbeddedStore, Store};
use prost::Message as _;

fn guard(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    // Ten configured keys, the caller's the last one compared.
    let keys: Vec<ConfiguredKey> = (0..10)
        .map(|i| ConfiguredKey {
            name: format!("k{i}"),
            sha256: herald::access::hash_secret(&format!("configured-secret-{i:04}")),
            scopes: vec!["send".into()],
            apps: Vec::new(),
            rate_per_second: 0,
            burst: 0,
        })
        .collect();
    let registry = Registry::new(&[], &keys, store);
    let stored = runtime.block_on(registry.create("bench", &["send".into()], &[], 1_000_000_000, 1_000_000_000, "bench")).unwrap().1;
    let mut g = c.benchmark_group("guard");
    g.bench_function("authenticate a configured key (10 configured)", |b| {
        b.iter(|| runtime.block_on(registry.authenticate(Some("configured-secret-0009"))).unwrap())
    });
    g.bench_function("authenticate a store key (embedded store)", |b| {
        b.iter(|| runtime.block_on(registry.authenticate(Some(&stored))).unwrap())
    });
    let caller = runtime.block_on(registry.authenticate(Some(&stored))).unwrap();
    g.bench_function("take a call from the key's rate", |b| b.iter(|| registry.admit(&caller).unwrap()));
    let methods = Methods::load();
    let method = methods.get("/herald.v1.Endpoints/UpdateEndpoint").unwrap();
    let body = UpdateEndpointRequest {
        app_id: "8d1f3c0a2b4e4f6a9c7d5e3b1a0f2c4d".into(),
        endpoint_id: "endpoint-42".into(),
        endpoint: Some(Endpoint { address: "ana@example.com".into(), channel_type: 1, ..Default::default() }),
    }
    .encode_to_vec();
    g.bench_function("read the app and resource of an UpdateEndpoint", |b| b.iter(|| method.read(std::hint::black_box(&body))));
    g.finish();
}

criterion_group!(benches, guard);
criterion_main!(benches);
