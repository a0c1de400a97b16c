//! The endpoint tables' bucket arithmetic, and the write script's creations against a real redis-server.

use super::*;

/// A real `redis-server` on a free loopback port, killed on drop.
struct Server {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Self { child, port, _dir: dir }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_creation_that_meets_an_entry_written_since_undoes_the_others_and_is_refused() {
    use crate::proto::v1::{App, EndpointUser};
    use crate::store::Store as _;
    let server = Server::start();
    let store = RedisStore::connect(&format!("redis://127.0.0.1:{}", server.port), 2).await.unwrap();
    store.create_app(&App { app_id: "a".into(), name: "a".into(), ..Default::default() }).await.unwrap();
    let user = |id: &str| Endpoint {
        id: id.into(),
        address: format!("{id}@example.com"),
        channel_type: crate::proto::v1::ChannelType::Email as i32,
        user: Some(EndpointUser { user_id: "u".into(), ..Default::default() }),
        ..Default::default()
    };
    let upsert = |e: Endpoint| super::super::EndpointOp::Upsert {
        writes: vec![e],
        all_or_nothing: true,
        now: "2026-01-01T00:00:00.000Z".into(),
        request_id: "r".into(),
    };
    assert!(store.write_endpoints("a", upsert(user("e1"))).await.unwrap().rejections.is_empty());
    // A writer that read n1 and user u as absent before e1's write made u: n1's record is
    // created, then u's creation finds u; n1's is taken back and nothing is applied.
    let keys = Keys::new("a");
    let record = codec::encode_endpoint("a", &user("n1"));
    let stale = EndpointChange {
        read: vec![(Table::Endpoints, "n1".into(), Vec::new()), (Table::Users, "u".into(), Vec::new())],
        sets: vec![(Table::Endpoints, "n1".into(), record.clone()), (Table::Users, "u".into(), b"n1".to_vec())],
        created: 1,
        ..Default::default()
    };
    let mut conn = store.pooled().await.unwrap();
    assert_eq!(store.commit_endpoints(&mut conn, &keys, &stale).await.unwrap(), 0);
    assert!(store.get_endpoint("a", "n1").await.unwrap().is_none(), "the creation made is undone");
    assert_eq!(store.user_endpoints("a", "u").await.unwrap().iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e1"]);
    let count: Option<u64> = redis::cmd("HGET").arg(keys.key("epix", "")).arg("n").query_async(&mut conn).await.unwrap();
    assert_eq!(count, Some(1));
    // Read again as it is, the same write goes in.
    let fresh = EndpointChange {
        read: vec![(Table::Endpoints, "n1".into(), Vec::new()), (Table::Users, "u".into(), b"e1".to_vec())],
        sets: vec![(Table::Endpoints, "n1".into(), record), (Table::Users, "u".into(), b"e1\nn1".to_vec())],
        created: 1,
        ..Default::default()
    };
    assert_eq!(store.commit_endpoints(&mut conn, &keys, &fresh).await.unwrap(), 1);
    assert_eq!(store.get_endpoint("a", "n1").await.unwrap().unwrap().address, "n1@example.com");
    assert_eq!(store.user_endpoints("a", "u").await.unwrap().len(), 2);
}

#[test]
fn a_bucket_holds_one_range_of_positions_and_a_split_cuts_it_in_two() {
    let ids: Vec<String> = (0..5_000).map(|i| format!("ep-{i:09}")).collect();
    for levels in [Levels { level: 0, split: 0 }, Levels { level: 3, split: 5 }, Levels { level: 7, split: 0 }] {
        let mut p = 0;
        let mut ranges = Vec::new();
        while p < END {
            let (b, end) = levels.at(p);
            assert!(end > p);
            ranges.push((p, end, b));
            p = end;
        }
        assert_eq!(ranges.len() as u64, (1 << levels.level) + levels.split, "every bucket once, in one range");
        for id in &ids {
            let (pos, b) = (position(id), levels.bucket_of(bucket_hash(id.as_bytes())));
            let r = ranges.iter().find(|r| r.0 <= pos && pos < r.1).unwrap();
            assert_eq!(r.2, b, "{id}'s bucket holds its position");
        }
    }
}

#[test]
fn the_hash_spreads_sequential_ids_over_the_buckets() {
    let levels = Levels { level: 10, split: 0 };
    let mut counts = vec![0u32; 1 << 10];
    for i in 0..100_000 {
        counts[levels.bucket_of(bucket_hash(format!("ep-{i:09}").as_bytes())) as usize] += 1;
    }
    let max = *counts.iter().max().unwrap();
    assert!(max < 140, "no bucket far over the mean of 98: {max}");
}

#[test]
fn cuts_fall_on_bucket_bounds() {
    let levels = Levels { level: 8, split: 17 };
    let cuts = levels.cuts(16);
    assert_eq!(cuts.len(), 15);
    for c in cuts {
        assert_eq!(levels.at(c - 1).1, c, "a cut ends a bucket's range");
    }
}
