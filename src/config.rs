//! Typed configuration. Sources, later ones winning: built-in defaults < the TOML file
//! (`--config`) < `HERALD_*` environment variables < command-line flags.
//!
//! | key | flag | environment | default |
//! |---|---|---|---|
//! | `grpc_addr` | `--grpc-addr` | `HERALD_GRPC_ADDR` | `127.0.0.1:50051` |
//! | `metrics_addr` | `--metrics-addr` | `HERALD_METRICS_ADDR` | `127.0.0.1:9464` |
//! | `data_dir` | `--data-dir` | `HERALD_DATA_DIR` | `./herald-data` |
//! | `redis_url` | `--redis-url` | `HERALD_REDIS_URL` | none: the embedded store |
//! | `redis_cluster_urls` | `--redis-cluster-url` (repeatable) | `HERALD_REDIS_CLUSTER_URLS` (comma-separated) | none: a Redis Cluster, found from any of these nodes |
//! | `api_keys` | `--api-key` (repeatable) | `HERALD_API_KEYS` (comma-separated) | none |
//! | `log_format` | `--log-format` | `HERALD_LOG_FORMAT` | `text` |
//! | `shutdown_grace_secs` | `--shutdown-grace-secs` | `HERALD_SHUTDOWN_GRACE_SECS` | `30` |
//! | `redis_pool_size` | `--redis-pool-size` | `HERALD_REDIS_POOL_SIZE` | `16` |
//! | `template_cache_size` | `--template-cache-size` | `HERALD_TEMPLATE_CACHE_SIZE` | `10000` |
//! | `smtp_url` | `--smtp-url` | `HERALD_SMTP_URL` | none: email sends fail as unconfigured |
//! | `webhook_secret` | `--webhook-secret` | `HERALD_WEBHOOK_SECRET` | none |
//! | `shards_per_channel` | `--shards-per-channel` | `HERALD_SHARDS_PER_CHANNEL` | four per core |
//! | `queue_per_shard` | `--queue-per-shard` | `HERALD_QUEUE_PER_SHARD` | `10000` |
//! | `outcome_ttl_days` | `--outcome-ttl-days` | `HERALD_OUTCOME_TTL_DAYS` | `30` |
//! | `feedback_addr` | `--feedback-addr` | `HERALD_FEEDBACK_ADDR` | none: no feedback listener |
//! | `secret_key` | `--secret-key` | `HERALD_SECRET_KEY` | a key created in `data_dir/secret.key` |
//! | `event_retention_count` | `--event-retention-count` | `HERALD_EVENT_RETENTION_COUNT` | `1000000` (the most) |
//! | `event_retention_hours` | `--event-retention-hours` | `HERALD_EVENT_RETENTION_HOURS` | `168` |
//! | `public_url` | `--public-url` | `HERALD_PUBLIC_URL` | `http://{feedback_addr}` |
//! | `tracking_ttl_days` | `--tracking-ttl-days` | `HERALD_TRACKING_TTL_DAYS` | `365` |
//! | `event_webhook_backoff_ms` | `--event-webhook-backoff-ms` | `HERALD_EVENT_WEBHOOK_BACKOFF_MS` | `1000` |
//! | `keys` | (file only: `[[keys]]` tables) | | none |
//! | `audit_log` | `--audit-log` | `HERALD_AUDIT_LOG` | none: no audit log |
//! | `tls_cert_file`, `tls_key_file` | `--tls-cert-file`, `--tls-key-file` | `HERALD_TLS_CERT_FILE`, `HERALD_TLS_KEY_FILE` | none: plain gRPC |
//! | `tls_client_ca_file` | `--tls-client-ca-file` | `HERALD_TLS_CLIENT_CA_FILE` | none: no client certificates |
//! | `public_tls_cert_file`, `public_tls_key_file` | `--public-tls-cert-file`, `--public-tls-key-file` | `HERALD_PUBLIC_TLS_CERT_FILE`, `HERALD_PUBLIC_TLS_KEY_FILE` | none: plain HTTP |
//! | `metrics_tls` | `--metrics-tls` | `HERALD_METRICS_TLS` | `false` |
//! | `rest_addr` | `--rest-addr` | `HERALD_REST_ADDR` | none (off) |
//! | `sigv4_credentials` | `--sigv4-credential` | `HERALD_SIGV4_CREDENTIALS` | none |
//! | `s3_endpoint`, `s3_region` | `--s3-endpoint`, `--s3-region` | `HERALD_S3_ENDPOINT`, `HERALD_S3_REGION` | none, `us-east-1` |
//! | `s3_access_key_id`, `s3_secret_access_key` | `--s3-access-key-id`, `--s3-secret-access-key` | `HERALD_S3_ACCESS_KEY_ID`, `HERALD_S3_SECRET_ACCESS_KEY` | none |
//! | `s3_role_arn` | `--s3-role-arn` | `HERALD_S3_ROLE_ARN` | none: any |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the gRPC control plane listens.
    pub grpc_addr: SocketAddr,
    /// Where Prometheus scrapes `/metrics`.
    pub metrics_addr: SocketAddr,
    /// The embedded store's directory (used when no Redis URL is given).
    pub data_dir: PathBuf,
    /// `redis://[user:password@]host:port[/db]`: use Redis instead of the embedded store.
    pub redis_url: Option<String>,
    /// `redis://host:port` of some nodes of a Redis Cluster: use the cluster (instead of
    /// `redis_url`, not with it).
    pub redis_cluster_urls: Vec<String>,
    /// Keys accepted as `authorization: Bearer <key>`. None: loopback only, unauthenticated.
    pub api_keys: Vec<String>,
    pub log_format: LogFormat,
    /// How long in-flight calls may take to finish after SIGINT/SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Connections for Redis write transactions.
    pub redis_pool_size: usize,
    /// Compiled template versions kept in memory.
    pub template_cache_size: usize,
    /// The default SMTP relay: `smtp://[user:password@]host:port[?pool=N&per_connection=M]`.
    pub smtp_url: Option<String>,
    /// Signs custom-channel requests (HMAC-SHA256).
    pub webhook_secret: Option<String>,
    /// Worker shards per channel; 0 means the core count.
    pub shards_per_channel: usize,
    /// Messages each shard queues before producers wait (and transactional calls are shed).
    pub queue_per_shard: usize,
    /// How long message outcomes are kept.
    pub outcome_ttl_days: u64,
    /// Seals channel secrets at rest (base64 of 32 bytes); daemons sharing a store share it.
    pub secret_key: Option<String>,
    /// Where providers' delivery receipts, replies and bounce notifications arrive.
    pub feedback_addr: Option<SocketAddr>,
    /// Most events kept in each app's stream (StreamEvents, destinations, triggers read it).
    pub event_retention_count: u64,
    /// Oldest event kept, in hours.
    pub event_retention_hours: u64,
    /// First wait after a failed event webhook delivery (doubling up to 5 minutes, jittered).
    pub event_webhook_backoff_ms: u64,
    /// The base URL recipients reach the public listener (`feedback_addr`) at, written into
    /// emails for open and click tracking and one-click unsubscribe (behind a proxy: its URL).
    pub public_url: Option<String>,
    /// How long open and click URLs in sent emails stay valid (unsubscribe URLs always do).
    pub tracking_ttl_days: f64,
    /// Hashed API keys with scopes (`[[keys]]`).
    pub keys: Vec<crate::access::ConfiguredKey>,
    /// Where audit lines go: a file path, or `-` for stdout.
    pub audit_log: Option<String>,
    /// The gRPC listener's certificate chain and key (PEM): TLS when both are set.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// CAs (PEM) whose client certificates gRPC callers must present (mutual TLS).
    pub tls_client_ca_file: Option<PathBuf>,
    /// The public listener's certificate chain and key (PEM): HTTPS when both are set.
    pub public_tls_cert_file: Option<PathBuf>,
    pub public_tls_key_file: Option<PathBuf>,
    /// Serve `/metrics` over TLS with the gRPC certificate (no client certificate asked).
    pub metrics_tls: bool,
    /// Where Pinpoint's REST API listens (off when unset).
    pub rest_addr: Option<SocketAddr>,
    /// `ACCESS_KEY_ID:SECRET` pairs REST requests are signed with (SigV4). None: loopback
    /// only, unsigned requests accepted.
    pub sigv4_credentials: Vec<String>,
    /// The S3-compatible endpoint import jobs read from (`https://s3.us-east-1.amazonaws.com`,
    /// MinIO…), path-style.
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    /// When set, the only RoleArn an import job may name.
    pub s3_role_arn: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            data_dir: PathBuf::from("./herald-data"),
            redis_url: None,
            redis_cluster_urls: Vec::new(),
            api_keys: Vec::new(),
            log_format: LogFormat::Text,
            shutdown_grace_secs: 30,
            redis_pool_size: 16,
            template_cache_size: 10_000,
            smtp_url: None,
            webhook_secret: None,
            shards_per_channel: 0,
            queue_per_shard: 10_000,
            outcome_ttl_days: 30,
            secret_key: None,
            feedback_addr: None,
            event_retention_count: crate::store::MAX_EVENTS,
            event_retention_hours: 168,
            event_webhook_backoff_ms: 1_000,
            public_url: None,
            tracking_ttl_days: 365.0,
            keys: Vec::new(),
            audit_log: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            public_tls_cert_file: None,
            public_tls_key_file: None,
            metrics_tls: false,
            rest_addr: None,
            sigv4_credentials: Vec::new(),
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_role_arn: None,
        }
    }
}

/// Flags (and their `HERALD_*` environment variables) that override the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "HERALD_GRPC_ADDR", value_name = "ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    #[arg(long, env = "HERALD_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    #[arg(long, env = "HERALD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "HERALD_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,
    /// A node of the Redis Cluster to use (repeatable; the environment variable takes a
    /// comma-separated list).
    #[arg(
        long = "redis-cluster-url",
        env = "HERALD_REDIS_CLUSTER_URLS",
        value_name = "URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub redis_cluster_urls: Vec<String>,
    /// An accepted API key (repeatable; the environment variable takes a comma-separated list).
    #[arg(long = "api-key", env = "HERALD_API_KEYS", value_name = "KEY", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE_SECS", value_name = "SECS")]
    pub shutdown_grace_secs: Option<u64>,
    #[arg(long, env = "HERALD_REDIS_POOL_SIZE", value_name = "N")]
    pub redis_pool_size: Option<usize>,
    #[arg(long, env = "HERALD_TEMPLATE_CACHE_SIZE", value_name = "N")]
    pub template_cache_size: Option<usize>,
    #[arg(long, env = "HERALD_SMTP_URL", value_name = "URL")]
    pub smtp_url: Option<String>,
    #[arg(long, env = "HERALD_WEBHOOK_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    #[arg(long, env = "HERALD_SHARDS_PER_CHANNEL", value_name = "N")]
    pub shards_per_channel: Option<usize>,
    #[arg(long, env = "HERALD_QUEUE_PER_SHARD", value_name = "N")]
    pub queue_per_shard: Option<usize>,
    #[arg(long, env = "HERALD_OUTCOME_TTL_DAYS", value_name = "DAYS")]
    pub outcome_ttl_days: Option<u64>,
    /// Base64 of 32 random bytes (`openssl rand -base64 32`).
    #[arg(long, env = "HERALD_SECRET_KEY", value_name = "KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    #[arg(long, env = "HERALD_FEEDBACK_ADDR", value_name = "ADDR")]
    pub feedback_addr: Option<SocketAddr>,
    #[arg(long, env = "HERALD_EVENT_RETENTION_COUNT", value_name = "N")]
    pub event_retention_count: Option<u64>,
    #[arg(long, env = "HERALD_EVENT_RETENTION_HOURS", value_name = "HOURS")]
    pub event_retention_hours: Option<u64>,
    #[arg(long, env = "HERALD_EVENT_WEBHOOK_BACKOFF_MS", value_name = "MS")]
    pub event_webhook_backoff_ms: Option<u64>,
    #[arg(long, env = "HERALD_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Days (fractions allowed) that open and click URLs stay valid.
    #[arg(long, env = "HERALD_TRACKING_TTL_DAYS", value_name = "DAYS")]
    pub tracking_ttl_days: Option<f64>,
    /// A file for audit lines, or `-` for stdout.
    #[arg(long, env = "HERALD_AUDIT_LOG", value_name = "PATH")]
    pub audit_log: Option<String>,
    #[arg(long, env = "HERALD_TLS_CERT_FILE", value_name = "PEM")]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "HERALD_TLS_KEY_FILE", value_name = "PEM")]
    pub tls_key_file: Option<PathBuf>,
    #[arg(long, env = "HERALD_TLS_CLIENT_CA_FILE", value_name = "PEM")]
    pub tls_client_ca_file: Option<PathBuf>,
    #[arg(long, env = "HERALD_PUBLIC_TLS_CERT_FILE", value_name = "PEM")]
    pub public_tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "HERALD_PUBLIC_TLS_KEY_FILE", value_name = "PEM")]
    pub public_tls_key_file: Option<PathBuf>,
    #[arg(long, env = "HERALD_METRICS_TLS", value_name = "BOOL")]
    pub metrics_tls: Option<bool>,
    #[arg(long, env = "HERALD_REST_ADDR", value_name = "ADDR")]
    pub rest_addr: Option<SocketAddr>,
    /// An `ACCESS_KEY_ID:SECRET` pair for SigV4 (repeatable; the environment variable takes a
    /// comma-separated list).
    #[arg(
        long = "sigv4-credential",
        env = "HERALD_SIGV4_CREDENTIALS",
        value_name = "ID:SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub sigv4_credentials: Vec<String>,
    #[arg(long, env = "HERALD_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "HERALD_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    #[arg(long, env = "HERALD_S3_ACCESS_KEY_ID", value_name = "ID")]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "HERALD_S3_SECRET_ACCESS_KEY", value_name = "SECRET", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    #[arg(long, env = "HERALD_S3_ROLE_ARN", value_name = "ARN")]
    pub s3_role_arn: Option<String>,
}

impl Config {
    /// Parses a TOML file's text; unknown keys are an error naming the key.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.message().to_string() + &location(text, e.span()) })
    }

    /// Defaults < file < environment and flags (clap has already merged those two, flags first).
    pub fn load(args: &ConfigArgs) -> Result<Self, ConfigError> {
        let mut config = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                Self::from_toml(path, &text)?
            }
            None => Self::default(),
        };
        if let Some(v) = args.grpc_addr {
            config.grpc_addr = v;
        }
        if let Some(v) = args.metrics_addr {
            config.metrics_addr = v;
        }
        if let Some(v) = &args.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &args.redis_url {
            config.redis_url = Some(v.clone()).filter(|u| !u.is_empty());
        }
        if !args.redis_cluster_urls.is_empty() {
            config.redis_cluster_urls = args.redis_cluster_urls.iter().map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
        }
        if !args.api_keys.is_empty() {
            config.api_keys = args.api_keys.iter().map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect();
        }
        if let Some(v) = args.log_format {
            config.log_format = v;
        }
        if let Some(v) = args.shutdown_grace_secs {
            config.shutdown_grace_secs = v;
        }
        if let Some(v) = args.redis_pool_size {
            config.redis_pool_size = v;
        }
        if let Some(v) = args.template_cache_size {
            config.template_cache_size = v;
        }
        if let Some(v) = &args.smtp_url {
            config.smtp_url = Some(v.clone()).filter(|u| !u.is_empty());
        }
        if let Some(v) = &args.webhook_secret {
            config.webhook_secret = Some(v.clone()).filter(|u| !u.is_empty());
        }
        if let Some(v) = args.shards_per_channel {
            config.shards_per_channel = v;
        }
        if let Some(v) = args.queue_per_shard {
            config.queue_per_shard = v;
        }
        if let Some(v) = args.outcome_ttl_days {
            config.outcome_ttl_days = v;
        }
        if let Some(v) = args.feedback_addr {
            config.feedback_addr = Some(v);
        }
        if let Some(v) = args.event_retention_count {
            config.event_retention_count = v;
        }
        if let Some(v) = args.event_retention_hours {
            config.event_retention_hours = v;
        }
        if let Some(v) = args.event_webhook_backoff_ms {
            config.event_webhook_backoff_ms = v;
        }
        if let Some(v) = &args.secret_key {
            config.secret_key = Some(v.clone()).filter(|k| !k.is_empty());
        }
        if let Some(v) = &args.public_url {
            config.public_url = Some(v.clone()).filter(|u| !u.is_empty());
        }
        if let Some(v) = args.tracking_ttl_days {
            config.tracking_ttl_days = v;
        }
        if let Some(v) = &args.audit_log {
            config.audit_log = Some(v.clone()).filter(|p| !p.is_empty());
        }
        let path = |v: &Option<PathBuf>, into: &mut Option<PathBuf>| {
            if let Some(p) = v {
                *into = Some(p.clone()).filter(|p| !p.as_os_str().is_empty());
            }
        };
        path(&args.tls_cert_file, &mut config.tls_cert_file);
        path(&args.tls_key_file, &mut config.tls_key_file);
        path(&args.tls_client_ca_file, &mut config.tls_client_ca_file);
        path(&args.public_tls_cert_file, &mut config.public_tls_cert_file);
        path(&args.public_tls_key_file, &mut config.public_tls_key_file);
        if let Some(v) = args.metrics_tls {
            config.metrics_tls = v;
        }
        if let Some(v) = args.rest_addr {
            config.rest_addr = Some(v);
        }
        if !args.sigv4_credentials.is_empty() {
            config.sigv4_credentials = args.sigv4_credentials.clone();
        }
        if let Some(v) = &args.s3_endpoint {
            config.s3_endpoint = Some(v.clone()).filter(|u| !u.is_empty());
        }
        if let Some(v) = &args.s3_region {
            config.s3_region = v.clone();
        }
        if let Some(v) = &args.s3_access_key_id {
            config.s3_access_key_id = Some(v.clone());
        }
        if let Some(v) = &args.s3_secret_access_key {
            config.s3_secret_access_key = Some(v.clone());
        }
        if let Some(v) = &args.s3_role_arn {
            config.s3_role_arn = Some(v.clone()).filter(|u| !u.is_empty());
        }
        config.validate()?;
        Ok(config)
    }

    /// The base URL of tracking and unsubscribe links: `public_url`, else the public
    /// listener's own address; none without a listener.
    pub fn links_base(&self) -> Option<String> {
        self.public_url.clone().or_else(|| self.feedback_addr.map(|a| format!("http://{a}")))
    }

    /// The gRPC listener's TLS files, when it serves TLS.
    pub fn grpc_tls(&self) -> Option<crate::tls::TlsFiles> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                Some(crate::tls::TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: self.tls_client_ca_file.clone() })
            }
            _ => None,
        }
    }

    /// The public listener's TLS files, when it serves HTTPS.
    pub fn public_tls(&self) -> Option<crate::tls::TlsFiles> {
        match (&self.public_tls_cert_file, &self.public_tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: None }),
            _ => None,
        }
    }

    /// The S3 client import jobs use, when `s3_endpoint` is set (with both credentials).
    pub fn s3(&self) -> Result<Option<crate::rest::s3::S3>, ConfigError> {
        let Some(endpoint) = &self.s3_endpoint else { return Ok(None) };
        match (&self.s3_access_key_id, &self.s3_secret_access_key) {
            (Some(id), Some(secret)) => {
                crate::rest::s3::S3::new(endpoint, &self.s3_region, id, secret).map(Some).map_err(|e| ConfigError::Invalid(e.to_string()))
            }
            _ => Err(ConfigError::Invalid("s3_endpoint needs s3_access_key_id and s3_secret_access_key".into())),
        }
    }

    /// Checks the keys and TLS settings, loading the TLS files.
    fn validate_access(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            let at = format!("keys[{i}] ({})", k.name);
            if let Some((field, why)) = crate::access::check_key(&k.name, &k.scopes, &k.apps).into_iter().next() {
                return Err(ConfigError::Invalid(format!("{at}: {field}: {why}")));
            }
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::Invalid(format!(
                    "{at}: sha256 must be the 64 hex digits of the secret's SHA-256 (herald keys hash)"
                )));
            }
            if k.burst > 0 && k.rate_per_second == 0 {
                return Err(ConfigError::Invalid(format!("{at}: burst needs rate_per_second")));
            }
            if !names.insert(k.name.as_str()) {
                return Err(ConfigError::Invalid(format!("{at}: another key has this name")));
            }
        }
        let pair = |cert: &Option<PathBuf>, key: &Option<PathBuf>, what: &str| match (cert, key) {
            (Some(_), None) | (None, Some(_)) => {
                Err(ConfigError::Invalid(format!("{what}_cert_file and {what}_key_file go together: set both or neither")))
            }
            _ => Ok(()),
        };
        pair(&self.tls_cert_file, &self.tls_key_file, "tls")?;
        pair(&self.public_tls_cert_file, &self.public_tls_key_file, "public_tls")?;
        if self.tls_client_ca_file.is_some() && self.tls_cert_file.is_none() {
            return Err(ConfigError::Invalid("tls_client_ca_file needs tls_cert_file and tls_key_file".into()));
        }
        if self.metrics_tls && self.tls_cert_file.is_none() {
            return Err(ConfigError::Invalid("metrics_tls serves the gRPC certificate: it needs tls_cert_file and tls_key_file".into()));
        }
        if self.public_tls_cert_file.is_some() && self.feedback_addr.is_none() {
            return Err(ConfigError::Invalid("public_tls_cert_file needs feedback_addr (the public listener)".into()));
        }
        for (files, what) in [(self.grpc_tls(), "tls"), (self.public_tls(), "public_tls")] {
            if let Some(f) = files {
                crate::tls::server_config(&f, &[]).map_err(|e| ConfigError::Invalid(format!("{what}: {e:#}")))?;
            }
        }
        Ok(())
    }

    /// Checks what can be checked without touching the network (TLS files are read).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_access()?;
        if self.api_keys.is_empty() && self.keys.is_empty() && !self.grpc_addr.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {} without an API key: set --api-key or HERALD_API_KEYS, or bind a loopback address",
                self.grpc_addr
            )));
        }
        crate::rest::sigv4::Credentials::parse(&self.sigv4_credentials).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.s3()?;
        if let Some(addr) = self.rest_addr {
            if self.sigv4_credentials.is_empty() && !addr.ip().is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "refusing to serve the REST API on {addr} without SigV4 credentials: set sigv4_credentials (HERALD_SIGV4_CREDENTIALS), or bind a loopback address"
                )));
            }
        }
        if self.api_keys.iter().any(|k| k.len() < 16 || k.chars().any(|c| c.is_whitespace() || c.is_control())) {
            return Err(ConfigError::Invalid("API keys must be at least 16 characters, without whitespace".into()));
        }
        if self.redis_url.is_some() && !self.redis_cluster_urls.is_empty() {
            return Err(ConfigError::Invalid("redis_url and redis_cluster_urls name two stores: set one of them".into()));
        }
        for url in &self.redis_cluster_urls {
            let parsed = url::Url::parse(url).map_err(|e| ConfigError::Invalid(format!("redis_cluster_urls: {url}: {e}")))?;
            if !matches!(parsed.scheme(), "redis" | "rediss") {
                return Err(ConfigError::Invalid(format!("redis_cluster_urls: scheme '{}' is not redis or rediss", parsed.scheme())));
            }
        }
        if let Some(url) = &self.redis_url {
            let parsed = url::Url::parse(url).map_err(|e| ConfigError::Invalid(format!("redis_url: {e}")))?;
            if !matches!(parsed.scheme(), "redis" | "rediss" | "redis+unix" | "unix") {
                return Err(ConfigError::Invalid(format!("redis_url: scheme '{}' is not redis, rediss or unix", parsed.scheme())));
            }
        } else if self.redis_cluster_urls.is_empty() && self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid("data_dir must not be empty".into()));
        }
        if let Some(url) = &self.smtp_url {
            crate::channels::email::SmtpRelay::from_url(url).map_err(|e| ConfigError::Invalid(format!("smtp_url: {e}")))?;
        }
        if self.outcome_ttl_days == 0 {
            return Err(ConfigError::Invalid("outcome_ttl_days must be at least 1".into()));
        }
        if !(1..=crate::store::MAX_EVENTS).contains(&self.event_retention_count) {
            return Err(ConfigError::Invalid(format!("event_retention_count must be 1 to {}", crate::store::MAX_EVENTS)));
        }
        if self.event_retention_hours == 0 {
            return Err(ConfigError::Invalid("event_retention_hours must be at least 1".into()));
        }
        if !(10..=60_000).contains(&self.event_webhook_backoff_ms) {
            return Err(ConfigError::Invalid("event_webhook_backoff_ms must be 10 to 60000".into()));
        }
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url).map_err(|e| ConfigError::Invalid(format!("public_url: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() || parsed.fragment().is_some() {
                return Err(ConfigError::Invalid("public_url must be an http or https URL without query or fragment".into()));
            }
            if self.feedback_addr.is_none() {
                return Err(ConfigError::Invalid("public_url needs feedback_addr: the public listener serves its links".into()));
            }
        }
        if !(self.tracking_ttl_days.is_finite() && self.tracking_ttl_days > 0.0 && self.tracking_ttl_days <= 3650.0) {
            return Err(ConfigError::Invalid("tracking_ttl_days must be more than 0 and at most 3650".into()));
        }
        if self.template_cache_size == 0 {
            return Err(ConfigError::Invalid("template_cache_size must be at least 1".into()));
        }
        if self.redis_pool_size == 0 {
            return Err(ConfigError::Invalid("redis_pool_size must be at least 1".into()));
        }
        if self.queue_per_shard < crate::api::messages::MAX_RECIPIENTS {
            // A SendMessages call is queued whole or not at all: a shard must hold the largest.
            return Err(ConfigError::Invalid(format!(
                "queue_per_shard must be at least {} (the most recipients of one SendMessages call)",
                crate::api::messages::MAX_RECIPIENTS
            )));
        }
        Ok(())
    }

    /// The effective configuration as TOML, with secrets masked.
    pub fn masked_toml(&self) -> String {
        let mut shown = self.clone();
        shown.api_keys = shown.api_keys.iter().map(|_| "********".to_string()).collect();
        shown.redis_url = shown.redis_url.as_deref().map(mask_url);
        shown.redis_cluster_urls = shown.redis_cluster_urls.iter().map(|u| mask_url(u)).collect();
        shown.smtp_url = shown.smtp_url.as_deref().map(mask_url);
        shown.webhook_secret = shown.webhook_secret.as_ref().map(|_| "********".to_string());
        shown.secret_key = shown.secret_key.as_ref().map(|_| "********".to_string());
        shown.s3_secret_access_key = shown.s3_secret_access_key.as_ref().map(|_| "********".to_string());
        shown.sigv4_credentials = shown
            .sigv4_credentials
            .iter()
            .map(|pair| format!("{}:********", pair.split_once(':').map_or(pair.as_str(), |(id, _)| id)))
            .collect();
        toml::to_string_pretty(&shown).unwrap_or_default()
    }
}

/// `redis://user:secret@host` → `redis://user:********@host`.
pub fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("********"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "********".to_string(),
    }
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) => {
            let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_toml(Path::new("h.toml"), "grpc_addr = \"127.0.0.1:1\"\nmetrics_adr = \"x\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("metrics_adr") && msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn flags_beat_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(&path, "grpc_addr = \"127.0.0.1:7000\"\nmetrics_addr = \"127.0.0.1:7001\"\n").unwrap();
        let args = ConfigArgs { config: Some(path), grpc_addr: Some("127.0.0.1:8000".parse().unwrap()), ..Default::default() };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.grpc_addr.port(), 8000);
        assert_eq!(c.metrics_addr.port(), 7001);
    }

    #[test]
    fn public_binds_need_a_key_and_secrets_are_masked() {
        let mut c = Config { grpc_addr: "0.0.0.0:50051".parse().unwrap(), ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("without an API key"));
        c.api_keys = vec!["0123456789abcdef-secret".into()];
        c.redis_url = Some("redis://herald:hunter2hunter2@127.0.0.1:6379/0".into());
        c.secret_key = Some("c2VhbGluZy1rZXktc2VhbGluZy1rZXktMzItYnl0ZXM=".into());
        c.validate().unwrap();
        let shown = c.masked_toml();
        assert!(!shown.contains("0123456789abcdef-secret") && !shown.contains("hunter2") && !shown.contains("c2VhbGluZy1rZXkt"), "{shown}");
        assert!(shown.contains("redis://herald:********@127.0.0.1:6379/0"), "{shown}");
    }

    #[test]
    fn the_rest_door_needs_credentials_off_loopback_and_masks_them() {
        let mut c = Config { rest_addr: Some("0.0.0.0:8080".parse().unwrap()), ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("without SigV4 credentials"));
        c.sigv4_credentials = vec!["AKIDHERALD:sigv4-secret-0123456789".into()];
        c.s3_endpoint = Some("http://127.0.0.1:9000".into());
        assert!(c.validate().unwrap_err().to_string().contains("s3_access_key_id"));
        c.s3_access_key_id = Some("minio".into());
        c.s3_secret_access_key = Some("s3-secret-0123456789".into());
        c.validate().unwrap();
        let shown = c.masked_toml();
        assert!(!shown.contains("sigv4-secret") && !shown.contains("s3-secret"), "{shown}");
        assert!(shown.contains("AKIDHERALD:********"), "{shown}");
        c.sigv4_credentials = vec!["AKIDHERALD:short".into()];
        assert!(c.validate().unwrap_err().to_string().contains("at least 16"));
    }

    #[test]
    fn hashed_keys_are_read_and_checked() {
        let text = format!(
            "grpc_addr = \"0.0.0.0:50051\"\n[[keys]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"send\", \"read\"]\napps = [\"a1\"]\nrate_per_second = 5\n",
            crate::access::hash_secret("a-secret-of-some-length")
        );
        let c = Config::from_toml(Path::new("h.toml"), &text).unwrap();
        c.validate().expect("a hashed key lets gRPC bind beyond loopback");
        assert_eq!(c.keys[0].scopes, ["send", "read"]);
        let bad = |edit: &dyn Fn(&mut Config)| {
            let mut c = c.clone();
            edit(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(&|c| c.keys[0].sha256 = "abc".into()).contains("sha256"));
        assert!(bad(&|c| c.keys[0].scopes = vec!["root".into()]).contains("'root' is not a scope"));
        assert!(bad(&|c| c.keys.push(c.keys[0].clone())).contains("another key has this name"));
        assert!(bad(&|c| c.tls_cert_file = Some("x.pem".into())).contains("go together"));
        assert!(bad(&|c| c.metrics_tls = true).contains("metrics_tls"));
        let unknown = Config::from_toml(Path::new("h.toml"), "[[keys]]\nname = \"x\"\nsha256 = \"\"\nscopes = []\nsecret = \"y\"\n");
        assert!(unknown.unwrap_err().to_string().contains("secret"));
    }
}
