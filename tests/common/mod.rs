//! Test harness: a real `redis-server` on a free port, and the real `herald` daemon started
//! on free loopback ports against either backend.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use herald::proto::v1::{apps_client::AppsClient, endpoints_client::EndpointsClient, App, CreateAppRequest};
use tonic::transport::Channel;
use tonic::Request;

pub mod raw;

pub const API_KEY: &str = "test-key-0123456789abcdef";

/// Runs each listed `async fn case(backend)` as a test against the embedded store and against
/// a real Redis.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod embedded_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::Backend::Embedded).await; })*
        }
        mod redis_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::Backend::Redis).await; })*
        }
    };
}

/// A loopback port for a child process (a daemon, a Redis, an SMTP sink) to listen on, held
/// for this test process alone until it exits.
///
/// A port the kernel handed out for `bind(…:0)` is free only for a moment: once the probe
/// closes, any outbound connection of the concurrently running tests may take it as its local
/// port, and a daemon restarted on its old port finds it in use. So the ports come from below
/// the kernel's ephemeral range (which outbound connections never use), and each is claimed
/// with an exclusive lock on a file named after it, which the other test processes respect and
/// the kernel releases when this process exits.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let seed = RandomState::new();
    let high = ephemeral_low();
    for attempt in 0u64..10_000 {
        let port = PORTS_LOW + (seed.hash_one((std::process::id(), attempt)) % u64::from(high - PORTS_LOW)) as u16;
        if claim_port(port) {
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range");
}

/// The lowest port the tests take.
const PORTS_LOW: u16 = 10_000;

fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768)
        .max(PORTS_LOW + 12_000)
}

/// Claims `port` for this process: its lock file, held until the process exits, then a bind
/// that shows nobody else listens on it.
fn claim_port(port: u16) -> bool {
    use std::sync::Mutex;
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("herald-test-ports");
    std::fs::create_dir_all(&dir).expect("create the test ports' lock directory");
    let Ok(file) = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(port.to_string())) else {
        return false;
    };
    if file.try_lock().is_err() || TcpListener::bind(("127.0.0.1", port)).is_err() {
        return false;
    }
    HELD.lock().unwrap().push(file);
    true
}

pub fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on {port}: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on port {port} within 20 s");
}

/// A real `redis-server` on a free loopback port, stopped on drop. Fails loudly when Redis
/// cannot start: tests that need it never skip.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    durable: bool,
    /// A node of a cluster (started with cluster mode on).
    clustered: bool,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::launch(tempfile::tempdir().unwrap(), free_port(), false, false)
    }

    /// A Redis that keeps an append-only file, fsynced on every write, so a killed server
    /// comes back with everything it acknowledged.
    pub fn start_durable() -> Self {
        Self::launch(tempfile::tempdir().unwrap(), free_port(), true, false)
    }

    fn launch(dir: tempfile::TempDir, port: u16, durable: bool, clustered: bool) -> Self {
        let persistence: &[&str] = if durable { &["--appendonly", "yes", "--appendfsync", "always"] } else { &["--appendonly", "no"] };
        let cluster: &[&str] = if clustered {
            // A replica syncs at once rather than after Redis's default 5 s wait for others.
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--repl-diskless-sync-delay",
                "0",
            ]
        } else {
            &[]
        };
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--protected-mode", "yes"])
            .args(persistence)
            .args(cluster)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it): cannot spawn it");
        wait_for_port(port, "redis-server", &mut child);
        Self { child, port, _dir: dir, durable, clustered }
    }

    /// Kills the server outright (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and directory (a durable one reloads its
    /// append-only file).
    pub fn start_again(&mut self) {
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        let again = Self::launch(dir, self.port, self.durable, self.clustered);
        // The old value holds the dead process and an empty directory.
        drop(std::mem::replace(self, again));
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs a command with redis-cli and returns its output lines.
    pub fn cli(&self, args: &[&str]) -> Vec<String> {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().expect("redis-cli");
        assert!(out.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster of three masters (no replicas) on loopback, each a real `redis-server` in
/// cluster mode with its own directory, the slots spread by `redis-cli --cluster create`;
/// stopped on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// A free loopback port whose cluster bus port (10,000 above it) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port + 10_000 < ephemeral_low() && claim_port(port + 10_000) {
            return port;
        }
    }
}

impl RedisCluster {
    /// Three masters, no replicas.
    pub fn start() -> Self {
        Self::launch(0)
    }

    /// Three masters with `replicas` replicas each (nodes 0-2 the masters at the start).
    pub fn start_with_replicas(replicas: usize) -> Self {
        Self::launch(replicas)
    }

    fn launch(replicas: usize) -> Self {
        let nodes: Vec<RedisServer> =
            (0..3 * (1 + replicas)).map(|_| RedisServer::launch(tempfile::tempdir().unwrap(), free_cluster_port(), false, true)).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.nodes.iter().all(|n| n.cli(&["cluster", "info"]).iter().any(|l| l.trim() == "cluster_state:ok")) {
            assert!(Instant::now() < deadline, "the cluster did not reach cluster_state:ok within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        // A replica that has not finished its first sync cannot take over: wait for every one.
        let is_synced_replica = |n: &RedisServer| {
            let info = n.cli(&["info", "replication"]);
            info.iter().any(|l| l.trim() == "role:master") || info.iter().any(|l| l.trim() == "master_link_status:up")
        };
        while !cluster.nodes.iter().all(is_synced_replica) {
            assert!(Instant::now() < deadline, "the replicas did not sync within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// Whether every node still running reports `cluster_state:ok` and node `i` is a master.
    pub fn ok_with_master(&self, i: usize, down: &[usize]) -> bool {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| !down.contains(j))
            .all(|(_, n)| n.cli(&["cluster", "info"]).iter().any(|l| l.trim() == "cluster_state:ok"))
            && self.nodes[i].cli(&["role"]).first().is_some_and(|r| r == "master")
    }

    /// Every node's URL: the seeds a client finds the cluster from.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The keys matching `pattern` on every node.
    pub fn scan(&self, pattern: &str) -> Vec<String> {
        self.nodes.iter().flat_map(|n| n.cli(&["--scan", "--pattern", pattern])).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Redis,
}

/// The real `herald` binary, serving on free ports.
pub struct Daemon {
    child: Option<Child>,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    pub data_dir: PathBuf,
    pub api_key: Option<String>,
    pub redis: Option<RedisServer>,
    _tmp: Option<tempfile::TempDir>,
    extra: Vec<String>,
}

pub fn herald_bin() -> &'static str {
    env!("CARGO_BIN_EXE_herald")
}

impl Daemon {
    /// A daemon on `backend` that requires [`API_KEY`].
    pub fn start(backend: Backend) -> Self {
        let redis = (backend == Backend::Redis).then(RedisServer::start);
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        Self::spawn(redis, data_dir, Some(tmp), Some(API_KEY.to_string()), &[])
    }

    pub fn spawn(
        redis: Option<RedisServer>,
        data_dir: PathBuf,
        tmp: Option<tempfile::TempDir>,
        api_key: Option<String>,
        extra: &[&str],
    ) -> Self {
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = Command::new(herald_bin());
        cmd.arg("serve")
            .arg("--grpc-addr")
            .arg(grpc.to_string())
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .arg("--data-dir")
            .arg(&data_dir);
        if let Some(r) = &redis {
            cmd.arg("--redis-url").arg(r.url());
        }
        if let Some(k) = &api_key {
            cmd.arg("--api-key").arg(k);
        }
        cmd.args(extra)
            .env_remove("HERALD_API_KEYS")
            .env_remove("HERALD_REDIS_URL")
            .env_remove("HERALD_REDIS_CLUSTER_URLS")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn herald");
        wait_for_port(grpc.port(), "herald", &mut child);
        wait_for_port(metrics.port(), "herald metrics", &mut child);
        Self {
            child: Some(child),
            grpc,
            metrics,
            data_dir,
            api_key,
            redis,
            _tmp: tmp,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Stops this daemon (SIGTERM) and starts another on the same data directory and Redis.
    pub fn restart(mut self) -> Self {
        let status = self.terminate();
        assert!(status.success(), "herald exited with {status}");
        let (redis, tmp) = (self.redis.take(), self._tmp.take());
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        Self::spawn(redis, self.data_dir.clone(), tmp, self.api_key.clone(), &extra)
    }

    /// Kills this daemon outright (SIGKILL: nothing is flushed or drained) and starts another
    /// on the same data directory, Redis and options.
    pub fn crash_and_restart(mut self) -> Self {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
        let (redis, tmp) = (self.redis.take(), self._tmp.take());
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        Self::spawn(redis, self.data_dir.clone(), tmp, self.api_key.clone(), &extra)
    }

    /// Kills this daemon outright (SIGKILL) and starts another on the same data directory and
    /// Redis with other options.
    pub fn crash_and_restart_with(mut self, extra: &[&str]) -> Self {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
        let (redis, tmp) = (self.redis.take(), self._tmp.take());
        Self::spawn(redis, self.data_dir.clone(), tmp, self.api_key.clone(), extra)
    }

    /// Another daemon on this one's Redis (its own data directory and ports), same options.
    pub fn sibling(&self) -> Self {
        let redis = self.redis.as_ref().expect("a Redis daemon");
        let tmp = tempfile::tempdir().unwrap();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let url = redis.url();
        let mut args = vec!["--redis-url", url.as_str()];
        args.extend(extra);
        Self::spawn(None, tmp.path().join("data"), Some(tmp), self.api_key.clone(), &args)
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc)).unwrap().connect().await.expect("connect to herald")
    }

    pub async fn apps(&self) -> AppsClient<Channel> {
        AppsClient::new(self.channel().await)
    }

    pub async fn endpoints(&self) -> EndpointsClient<Channel> {
        EndpointsClient::new(self.channel().await)
    }

    /// A request carrying this daemon's API key.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(k) = &self.api_key {
            r.metadata_mut().insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        r
    }

    pub async fn create_app(&self, name: &str) -> App {
        self.apps()
            .await
            .create_app(self.req(CreateAppRequest { name: name.into(), tags: Default::default() }))
            .await
            .expect("create app")
            .into_inner()
    }

    /// Imports the endpoints (500 per message) and creates a segment of every endpoint of the
    /// app; returns the segment's id.
    pub async fn import_as_segment(&self, app: &str, endpoints: Vec<herald::proto::v1::Endpoint>) -> String {
        use herald::proto::v1::{segments_client::SegmentsClient, CreateSegmentRequest, ImportEndpointsRequest, SegmentDimensions};
        let n = endpoints.len();
        let msgs: Vec<ImportEndpointsRequest> = std::iter::once(ImportEndpointsRequest { app_id: app.into(), endpoints: vec![] })
            .chain(endpoints.chunks(500).map(|c| ImportEndpointsRequest { app_id: String::new(), endpoints: c.to_vec() }))
            .collect();
        let r = self.endpoints().await.import_endpoints(self.req(futures::stream::iter(msgs))).await.unwrap().into_inner();
        assert_eq!(r.written, n as u64);
        SegmentsClient::new(self.channel().await)
            .create_segment(self.req(CreateSegmentRequest {
                app_id: app.into(),
                name: "all".into(),
                dimensions: Some(SegmentDimensions::default()),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .id
    }

    /// GET /metrics.
    pub fn metrics_text(&self) -> String {
        let mut s = TcpStream::connect(self.metrics).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends SIGTERM and waits (at most 30 s) for the exit status.
    /// Kills this daemon outright (SIGKILL), leaving its Redis running.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let ok = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success();
        assert!(ok, "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("herald did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `herald` with arguments and environment; returns (exit code, stdout, stderr).
pub fn herald(args: &[&str], env: &[(&str, &str)], dir: &Path) -> (i32, String, String) {
    let mut cmd = Command::new(herald_bin());
    cmd.args(args).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("HERALD_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run herald");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Postfix's `smtp-sink` on a free loopback port, dumping each message into a directory;
/// stopped on drop. `extra` adds options such as `-f RCPT` (reject RCPT with a 5xx).
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    pub dump: tempfile::TempDir,
}

impl SmtpSink {
    pub fn start(extra: &[&str]) -> Self {
        let dump = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new("smtp-sink")
            .args(["-u", "root", "-d"])
            .arg(format!("{}/", dump.path().display()))
            .args(extra)
            .arg(format!("127.0.0.1:{port}"))
            .arg("256")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("smtp-sink must be installed (scripts/test installs postfix): cannot spawn it");
        wait_for_port(port, "smtp-sink", &mut child);
        Self { child, port, dump }
    }

    /// The recipient of each dumped message with this subject (one entry per message).
    pub fn received(&self, subject: &str) -> Vec<String> {
        let want = format!("Subject: {subject}");
        self.messages()
            .iter()
            .filter(|m| m.lines().any(|l| l.trim_end() == want))
            .filter_map(|m| {
                m.lines().find_map(|l| l.strip_prefix("X-Rcpt-Args: <").map(|r| r.trim_end().trim_end_matches('>').to_string()))
            })
            .collect()
    }

    /// Messages dumped so far, whole ones only. smtp-sink creates a message's file at MAIL
    /// FROM and writes it through a buffer: until the end of DATA the file is empty (or, for
    /// a large message, cut at a buffer boundary). At the end it appends an empty line, so a
    /// finished dump ends with "\n\n".
    pub fn messages(&self) -> Vec<String> {
        std::fs::read_dir(self.dump.path())
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .filter(|m| m.ends_with("\n\n"))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain email from news@shop.example with this subject and text.
pub fn email_message(subject: &str, text: &str) -> herald::proto::v1::DirectMessageConfiguration {
    herald::proto::v1::DirectMessageConfiguration {
        email_message: Some(herald::proto::v1::EmailMessage {
            from_address: "news@shop.example".into(),
            subject: subject.into(),
            text_part: text.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Python of the test venv that scripts/test makes (pinned clients: standardwebhooks...).
pub fn python() -> String {
    std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| format!("{}/target/test-venv/bin/python", env!("CARGO_MANIFEST_DIR")))
}

/// The fields an INVALID_ARGUMENT names in its BadRequest details, sorted.
pub fn violations(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let br = tonic_types::StatusExt::get_details_bad_request(status).unwrap_or_else(|| panic!("no BadRequest details in {status:?}"));
    let mut f: Vec<String> = br.field_violations.into_iter().map(|v| v.field).collect();
    f.sort();
    f
}

/// Waits (at most 60 s) for a campaign to be COMPLETED, asking again while the daemon answers
/// UNAVAILABLE (its store coming back); returns its activities.
pub async fn completed_campaign(d: &Daemon, app: &str, id: &str) -> Vec<herald::proto::v1::Activity> {
    use herald::proto::v1::{campaigns_client::CampaignsClient, CampaignState, GetCampaignActivitiesRequest, GetCampaignRequest};
    let mut c = CampaignsClient::new(d.channel().await);
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(60), "campaign {id} did not complete");
        match c.get_campaign(d.req(GetCampaignRequest { app_id: app.into(), campaign_id: id.into(), version: 0 })).await {
            Ok(got) if got.get_ref().state == CampaignState::Completed as i32 => break,
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::Unavailable => {}
            Err(s) => panic!("{s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.get_campaign_activities(d.req(GetCampaignActivitiesRequest { app_id: app.into(), campaign_id: id.into() }))
        .await
        .unwrap()
        .into_inner()
        .activities
}

/// Creates an IMMEDIATE campaign of `message` to `segment` and waits for it to complete;
/// returns its activities.
pub async fn run_campaign(
    d: &Daemon,
    app: &str,
    segment: &str,
    message: herald::proto::v1::DirectMessageConfiguration,
) -> Vec<herald::proto::v1::Activity> {
    use herald::proto::v1::{campaigns_client::CampaignsClient, Campaign, CreateCampaignRequest, Frequency, Schedule};
    let campaign = Campaign {
        name: "immediate".into(),
        segment_id: segment.into(),
        message_configuration: Some(message),
        schedule: Some(Schedule { start_time: "IMMEDIATE".into(), frequency: Frequency::Once as i32, ..Default::default() }),
        ..Default::default()
    };
    let created = CampaignsClient::new(d.channel().await)
        .create_campaign(d.req(CreateCampaignRequest { app_id: app.into(), campaign: Some(campaign) }))
        .await
        .unwrap()
        .into_inner();
    completed_campaign(d, app, &created.id).await
}

/// Creates an IMMEDIATE one-time email campaign of `segment` with this subject, sent at `rate`
/// messages per second (`None`: as fast as the channel lets it); returns its id.
pub async fn start_email_campaign(d: &Daemon, app: &str, segment: &str, subject: &str, rate: Option<i32>) -> String {
    use herald::proto::v1::{campaigns_client::CampaignsClient, Campaign, CampaignLimits, CreateCampaignRequest, Frequency, Schedule};
    let campaign = Campaign {
        name: subject.into(),
        segment_id: segment.into(),
        message_configuration: Some(email_message(subject, "Hello {{Id}}")),
        schedule: Some(Schedule { start_time: "IMMEDIATE".into(), frequency: Frequency::Once as i32, ..Default::default() }),
        limits: Some(CampaignLimits { messages_per_second: rate, ..Default::default() }),
        ..Default::default()
    };
    CampaignsClient::new(d.channel().await)
        .create_campaign(d.req(CreateCampaignRequest { app_id: app.into(), campaign: Some(campaign) }))
        .await
        .unwrap()
        .into_inner()
        .id
}
