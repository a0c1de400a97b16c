//! Herald on a Redis Cluster: three masters on loopback, started by the harness for each test.
//! The conformance suite runs on it too (tests/store_conformance.rs, `redis_cluster`); here: an
//! app's keys stay on one node while the apps spread over all three, the client follows an
//! app's slot when it moves to another node (MOVED) in the middle of use, and a daemon pointed
//! at the cluster runs a campaign to a real SMTP server, each member once; three daemons on the
//! cluster share one run, each sending a share; a master killed mid-run fails over to its
//! replica and the run completes.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::{email_message, Daemon, RedisCluster, SmtpSink, API_KEY};
use herald::proto::v1::{App, ChannelType, Endpoint};
use herald::store::{redis::RedisStore, EndpointOp, Store};

fn app(id: &str) -> App {
    App { app_id: id.into(), name: id.into(), creation_date: "2026-01-01T00:00:00.000Z".into(), ..Default::default() }
}

fn endpoints(prefix: &str, n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint {
            id: format!("{prefix}{i:05}"),
            channel_type: ChannelType::Email as i32,
            address: format!("{prefix}{i}@example.com"),
            ..Default::default()
        })
        .collect()
}

fn upsert(writes: Vec<Endpoint>) -> EndpointOp {
    EndpointOp::Upsert { writes, all_or_nothing: true, now: "2026-01-01T00:00:00.000Z".into(), request_id: "req".into() }
}

/// A daemon's arguments for the cluster's nodes and the sink as its relay.
fn daemon_args(cluster: &RedisCluster, sink: &SmtpSink) -> Vec<String> {
    let mut args = vec!["--smtp-url".to_string(), format!("smtp://127.0.0.1:{}?pool=4", sink.port)];
    for url in cluster.urls() {
        args.extend(["--redis-cluster-url".to_string(), url]);
    }
    args
}

/// The node (index) that holds `key`'s slot, by asking each node for its keys.
fn holder(cluster: &RedisCluster, key: &str) -> usize {
    let holding: Vec<usize> = cluster.nodes.iter().enumerate().filter(|(_, n)| n.cli(&["exists", key]) == ["1"]).map(|(i, _)| i).collect();
    assert_eq!(holding.len(), 1, "{key} on nodes {holding:?}");
    holding[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apps_keys_share_a_node_and_apps_spread_over_every_node() {
    let cluster = RedisCluster::start();
    let store = RedisStore::connect_cluster(&cluster.urls()).await.unwrap();
    let mut nodes_used = HashSet::new();
    for a in 0..30 {
        let id = format!("app{a}");
        store.create_app(&app(&id)).await.unwrap();
        store.write_endpoints(&id, upsert(endpoints("e", 20))).await.unwrap();
        let node = holder(&cluster, &format!("herald:{{{id}}}:app"));
        let keys = cluster.nodes[node].cli(&["--scan", "--pattern", &format!("herald:{{{id}}}:*")]);
        assert!(keys.len() >= 4, "the app record, its endpoint and address buckets and their levels: {keys:?}");
        let elsewhere: usize = cluster
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != node)
            .map(|(_, n)| n.cli(&["--scan", "--pattern", &format!("herald:{{{id}}}:*")]).len())
            .sum();
        assert_eq!(elsewhere, 0, "every key of {id} is on node {node}");
        nodes_used.insert(node);
    }
    assert_eq!(nodes_used.len(), 3, "30 apps use all three masters");
    let listed: Vec<String> = store.list_apps(None, 100).await.unwrap().into_iter().map(|a| a.app_id).collect();
    assert_eq!(listed.len(), 30, "the app list (one global key) sees every app: {listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_slot_moved_to_another_node_is_followed_without_a_restart() {
    let cluster = RedisCluster::start();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect_cluster(&cluster.urls()).await.unwrap());
    store.create_app(&app("moving")).await.unwrap();
    store.write_endpoints("moving", upsert(endpoints("a", 200))).await.unwrap();
    let app_key = "herald:{moving}:app";
    let from = holder(&cluster, app_key);
    let to = (from + 1) % 3;
    let slot = cluster.nodes[from].cli(&["cluster", "keyslot", app_key])[0].clone();
    let id = |i: usize| cluster.nodes[i].cli(&["cluster", "myid"])[0].clone();
    let (from_id, to_id) = (id(from), id(to));
    // Redis's own slot migration, as `redis-cli --cluster reshard` does it.
    cluster.nodes[to].cli(&["cluster", "setslot", &slot, "importing", &from_id]);
    cluster.nodes[from].cli(&["cluster", "setslot", &slot, "migrating", &to_id]);
    let keys = cluster.nodes[from].cli(&["cluster", "getkeysinslot", &slot, "10000"]);
    assert!(keys.len() >= 10, "the app's buckets are in the slot: {keys:?}");
    let to_port = cluster.nodes[to].port.to_string();
    let mut migrate = vec!["migrate", "127.0.0.1", to_port.as_str(), "", "0", "5000", "KEYS"];
    migrate.extend(keys.iter().map(String::as_str));
    assert_eq!(cluster.nodes[from].cli(&migrate), ["OK"]);
    for n in &cluster.nodes {
        n.cli(&["cluster", "setslot", &slot, "node", &to_id]);
    }
    assert_eq!(holder(&cluster, app_key), to, "the app now lives on another node");
    // The same client, without reconnecting: redirected (MOVED), it reads and writes there.
    assert_eq!(store.get_endpoint("moving", "a00007").await.unwrap().unwrap().address, "a7@example.com");
    store.write_endpoints("moving", upsert(endpoints("b", 50))).await.unwrap();
    let (page, _) = store.scan_endpoints("moving", None, 1_000).await.unwrap();
    assert_eq!(page.len(), 250, "every endpoint, old and new");
    assert_eq!(cluster.nodes[from].cli(&["--scan", "--pattern", "herald:{moving}:*"]).len(), 0, "nothing written to the old node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_the_cluster_runs_a_campaign_once_per_member() {
    let cluster = RedisCluster::start();
    let sink = SmtpSink::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let args = daemon_args(&cluster, &sink);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::spawn(None, tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &args);
    assert!(
        std::fs::read_dir(&d.data_dir).map_or(true, |mut entries| entries.next().is_none()),
        "the daemon keeps its state in the cluster, not in an embedded store"
    );
    let app = d.create_app("on the cluster").await.app_id;
    let members = endpoints("m", 2_000);
    let expected: HashSet<String> = members.iter().map(|e| e.address.clone()).collect();
    let segment = d.import_as_segment(&app, members).await;
    let activities = common::run_campaign(&d, &app, &segment, email_message("cluster run", "Hi {{Id}}")).await;
    assert_eq!(activities.len(), 1);
    assert_eq!(activities[0].successful, 2_000, "{:?}", activities[0]);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in sink.received("cluster run") {
        *counts.entry(r).or_default() += 1;
    }
    assert_eq!(counts.keys().cloned().collect::<HashSet<_>>(), expected, "every member reached");
    assert!(counts.values().all(|&n| n == 1), "nobody twice");
    // The app's state is in the cluster, on the one node of its slot.
    let on_nodes: Vec<usize> =
        cluster.nodes.iter().map(|n| n.cli(&["--scan", "--pattern", &format!("herald:{{{app}}}:*")]).len()).collect();
    assert_eq!(on_nodes.iter().filter(|&&n| n > 0).count(), 1, "{on_nodes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_on_the_cluster_share_one_run() {
    let cluster = RedisCluster::start();
    let sink = SmtpSink::start(&[]);
    let args = daemon_args(&cluster, &sink);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ds: Vec<Daemon> = (0..3)
        .map(|_| {
            let tmp = tempfile::tempdir().unwrap();
            Daemon::spawn(None, tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &args)
        })
        .collect();
    let app = ds[0].create_app("shared on the cluster").await.app_id;
    let n = 20_000;
    let members = endpoints("s", n);
    let expected: HashSet<String> = members.iter().map(|e| e.address.clone()).collect();
    let segment = ds[0].import_as_segment(&app, members).await;
    let activities = common::run_campaign(&ds[0], &app, &segment, email_message("cluster share", "Hi {{Id}}")).await;
    assert_eq!(activities.len(), 1);
    assert_eq!(activities[0].successful, n as i64, "{:?}", activities[0]);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in sink.received("cluster share") {
        *counts.entry(r).or_default() += 1;
    }
    assert_eq!(counts.keys().cloned().collect::<HashSet<_>>(), expected, "every member reached");
    assert!(counts.values().all(|&c| c == 1), "nobody twice");
    let sent: Vec<f64> = ds
        .iter()
        .map(|d| {
            d.metrics_text()
                .lines()
                .filter(|l| l.starts_with(r#"herald_messages_total{channel="EMAIL",status="SUCCESSFUL"}"#))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                .sum()
        })
        .collect();
    assert_eq!(sent.iter().sum::<f64>(), n as f64, "{sent:?}");
    for (i, s) in sent.iter().enumerate() {
        assert!(*s >= n as f64 * 0.2, "daemon {i} sent {s} of {n}: {sent:?}");
    }
}

/// A master of the cluster killed in the middle of a campaign run: its replica takes over
/// (Redis Cluster's own failover, after `cluster-node-timeout`), the daemon follows the slot
/// to the new master without a restart, and the run completes with nobody missed. Replication
/// is asynchronous, so outcomes written in the last moment before the kill can be lost with
/// the master; the members they were for are sent again, within the same bound as a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_run_fails_over_to_its_replica_and_the_run_completes() {
    let mut cluster = RedisCluster::start_with_replicas(1);
    let sink = SmtpSink::start(&[]);
    let args = daemon_args(&cluster, &sink);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::spawn(None, tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &args);
    let app = d.create_app("failover").await.app_id;
    let n = 4_000;
    let members = endpoints("f", n);
    let expected: HashSet<String> = members.iter().map(|e| e.address.clone()).collect();
    let segment = d.import_as_segment(&app, members).await;
    let subject = "through a failover";
    let id = common::start_email_campaign(&d, &app, &segment, subject, Some(1_000)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sink.received(subject).len() < n / 4 {
        assert!(std::time::Instant::now() < deadline, "the run did not start");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let master = holder(&cluster, &format!("herald:{{{app}}}:app"));
    let master_port = cluster.nodes[master].port.to_string();
    let replica = (0..cluster.nodes.len())
        .find(|&j| {
            let role = cluster.nodes[j].cli(&["role"]);
            role.first().is_some_and(|r| r == "slave") && role.get(2) == Some(&master_port)
        })
        .expect("the app's master has a replica");
    cluster.nodes[master].kill();
    let at_kill = sink.received(subject).len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cluster.ok_with_master(replica, &[master]) {
        if std::time::Instant::now() > deadline {
            let states: Vec<(Vec<String>, Vec<String>)> = (0..cluster.nodes.len())
                .filter(|&j| j != master)
                .map(|j| (cluster.nodes[j].cli(&["role"]), cluster.nodes[j].cli(&["cluster", "info"])))
                .collect();
            panic!("replica {replica} of master {master} was not promoted: {states:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(at_kill < n, "the master was killed before the run ended ({at_kill} of {n} sent)");
    let activities = common::completed_campaign(&d, &app, &id).await;
    assert!(d.is_running(), "the daemon never exits over a failover");
    assert_eq!(activities.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in sink.received(subject) {
        *counts.entry(r).or_default() += 1;
    }
    assert_eq!(counts.keys().cloned().collect::<HashSet<_>>(), expected, "every member reached");
    let twice: usize = counts.values().map(|c| c - 1).sum();
    eprintln!("failover at {at_kill} of {n} sent: {twice} sent twice");
    assert!(twice <= 500, "{twice} sent twice");
    // The app's state lives on the promoted replica now, and keeps being written there.
    assert_eq!(holder_of_survivors(&cluster, &format!("herald:{{{app}}}:app"), master), replica);
    d.import_as_segment(&app, endpoints("g", 10)).await;
}

/// Like [`holder`], skipping a node that is down.
fn holder_of_survivors(cluster: &RedisCluster, key: &str, down: usize) -> usize {
    let holding: Vec<usize> =
        cluster.nodes.iter().enumerate().filter(|(i, n)| *i != down && n.cli(&["exists", key]) == ["1"]).map(|(i, _)| i).collect();
    assert_eq!(holding.len(), 1, "{key} on nodes {holding:?}");
    holding[0]
}
