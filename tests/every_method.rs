//! Every method the daemon serves, found by walking the descriptors it reflects (as a
//! reflection-driven client finds them), called with an empty request, with only the app, and
//! with every other scalar at an edge (control characters, -1, the largest values, NaN, an
//! undefined enum), then with bytes mutated from that: each answers OK or a clear client error
//! (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ALREADY_EXISTS) — or, for bytes that do
//! not parse, gRPC's own INTERNAL "failed to decode" — never another INTERNAL, UNKNOWN or
//! UNIMPLEMENTED, and the daemon stays up.

#[macro_use]
mod common;

use common::{Backend, Daemon};
use prost::Message as _;
use prost_types::field_descriptor_proto::Type;
use prost_types::FileDescriptorSet;
use tonic::{Code, Status};

struct Method {
    path: String,
    /// The request's scalar fields: number and type.
    scalars: Vec<(i32, Type)>,
    client_streaming: bool,
    server_streaming: bool,
    /// The request's field number of `app_id`, when it has one (a string).
    app_field: Option<i32>,
}

fn methods() -> Vec<Method> {
    let set = FileDescriptorSet::decode(herald::proto::FILE_DESCRIPTOR_SET).unwrap();
    let messages: std::collections::HashMap<String, &prost_types::DescriptorProto> =
        set.file.iter().flat_map(|f| f.message_type.iter().map(move |m| (format!(".{}.{}", f.package(), m.name()), m))).collect();
    let mut out = Vec::new();
    for f in &set.file {
        for s in &f.service {
            for m in &s.method {
                let input = messages.get(m.input_type());
                let app_field =
                    input.and_then(|i| i.field.iter().find(|x| x.name() == "app_id" && x.r#type() == Type::String).map(|x| x.number()));
                let scalars = input
                    .map(|i| {
                        i.field
                            .iter()
                            .filter(|x| x.label() != prost_types::field_descriptor_proto::Label::Repeated)
                            .map(|x| (x.number(), x.r#type()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Method {
                    scalars,
                    path: format!("/{}.{}/{}", f.package(), s.name(), m.name()),
                    client_streaming: m.client_streaming(),
                    server_streaming: m.server_streaming(),
                    app_field,
                });
            }
        }
    }
    out
}

/// Mutated bodies per method with an app.
/// Mutated bodies per method: 12 in the suite, a thousandth of `HERALD_FUZZ_CASES` in the
/// scheduled fuzz run (scripts/fuzz: 1,000 per method).
fn mutated_per_method() -> usize {
    std::env::var("HERALD_FUZZ_CASES").ok().and_then(|v| v.parse::<usize>().ok()).map_or(12, |n| (n / 1_000).max(12))
}

/// `seed` with a few bytes flipped, dropped or repeated (deterministic in `k`).
fn mutated(seed: &[u8], k: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ k.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut b = seed.to_vec();
    for _ in 0..1 + next() % 4 {
        if b.is_empty() {
            b.push(next() as u8);
            continue;
        }
        let at = (next() % b.len() as u64) as usize;
        match next() % 4 {
            0 => b[at] ^= 1 << (next() % 8),
            1 => {
                b.remove(at);
            }
            2 => {
                let piece = b[at..(at + 8).min(b.len())].to_vec();
                b.splice(at..at, piece);
            }
            _ => b.truncate(at),
        }
    }
    b
}

/// A message with only the string `value` in field `number`.
fn with_string(number: i32, value: &str) -> Vec<u8> {
    let mut b = Vec::new();
    prost::encoding::string::encode(number as u32, &value.to_string(), &mut b);
    b
}

async fn call(d: &Daemon, m: &Method, body: Vec<u8>) -> Result<(), Status> {
    common::raw::call(d.channel().await, d.req(()), &m.path, m.client_streaming, m.server_streaming, body).await
}

async fn every_method_answers_an_empty_request_with_a_client_error_or_ok(backend: Backend) {
    let mut d = Daemon::start(backend);
    let app = d.create_app("walk").await.app_id;
    let all = methods();
    assert!(all.len() > 80, "{} methods", all.len());
    let mut bad = Vec::new();
    let mut codes: std::collections::BTreeMap<String, usize> = Default::default();
    for m in &all {
        let mut bodies = vec![("empty", Vec::new())];
        if let Some(n) = m.app_field {
            bodies.push(("app only", with_string(n, &app)));
            // Each other scalar at an edge: control characters, -1, the largest values, an
            // enum number nobody defined.
            let mut edges = with_string(n, &app);
            for (number, t) in m.scalars.iter().filter(|(x, _)| *x != n) {
                let k = *number as u32;
                match t {
                    Type::String => prost::encoding::string::encode(k, &"\u{0}\u{7}x".repeat(3), &mut edges),
                    Type::Int32 | Type::Enum => prost::encoding::int32::encode(k, &-1, &mut edges),
                    Type::Int64 => prost::encoding::int64::encode(k, &i64::MAX, &mut edges),
                    Type::Uint32 => prost::encoding::uint32::encode(k, &u32::MAX, &mut edges),
                    Type::Uint64 => prost::encoding::uint64::encode(k, &u64::MAX, &mut edges),
                    Type::Double => prost::encoding::double::encode(k, &f64::NAN, &mut edges),
                    Type::Bool => prost::encoding::bool::encode(k, &true, &mut edges),
                    Type::Bytes => prost::encoding::bytes::encode(k, &vec![0u8; 3], &mut edges),
                    _ => {}
                }
            }
            bodies.push(("edges", edges.clone()));
            // Then bytes mutated from it: what decodes reaches the service's validation; what
            // does not is the gRPC library's own INTERNAL "failed to decode" (gRPC's code for
            // a request that does not parse).
            for k in 0..mutated_per_method() {
                bodies.push(("mutated", mutated(&edges, k as u64 + m.path.len() as u64)));
            }
        }
        for (what, body) in bodies {
            if m.path.ends_with("/DeleteApp") && what != "empty" {
                continue;
            }
            let answer = call(&d, m, body).await;
            *codes.entry(format!("{:?}", answer.as_ref().err().map_or(Code::Ok, |s| s.code()))).or_insert(0) += 1;
            if let Err(s) = answer {
                let undecodable =
                    what == "mutated" && s.code() == Code::Internal && s.message().starts_with("failed to decode Protobuf message");
                let fine = undecodable
                    || matches!(
                        s.code(),
                        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::AlreadyExists | Code::OutOfRange
                    );
                if !fine {
                    bad.push(format!("{} ({what}): {:?} {}", m.path, s.code(), s.message()));
                }
            }
        }
    }
    assert!(bad.is_empty(), "methods answering with a server error:\n{}", bad.join("\n"));
    // The walk reached the services' own checks, not only the transport.
    for code in ["Ok", "InvalidArgument", "NotFound"] {
        assert!(codes.get(code).is_some_and(|n| *n > 5), "{codes:?}");
    }
    assert!(d.is_running(), "the daemon is still up");
}

on_both_backends!(every_method_answers_an_empty_request_with_a_client_error_or_ok);
