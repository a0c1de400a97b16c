//! Logs and metrics: tracing setup, the Prometheus recorder, and every metric name Herald
//! exports (`herald_*`, low-cardinality labels only — never endpoint or app ids).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Service calls by gRPC method and status code, from either door (gRPC or REST).
pub const GRPC_REQUESTS: &str = "herald_grpc_requests_total";
/// Service call latency in seconds, by gRPC method, from either door.
pub const GRPC_DURATION: &str = "herald_grpc_request_duration_seconds";
/// Endpoints written (created or updated).
pub const ENDPOINTS_WRITTEN: &str = "herald_endpoints_written_total";
/// Endpoint writes rejected by validation or the per-user cap.
pub const ENDPOINTS_REJECTED: &str = "herald_endpoints_rejected_total";
/// Store write transactions re-planned after a concurrent writer aborted them, by backend.
pub const STORE_RETRIES: &str = "herald_store_retries_total";
/// Store operation latency in seconds, by backend and operation.
pub const STORE_DURATION: &str = "herald_store_operation_duration_seconds";
/// Store operations that failed, by backend.
pub const STORE_ERRORS: &str = "herald_store_errors_total";
/// Template versions compiled (each version compiles once, then renders from the cache).
pub const TEMPLATE_COMPILATIONS: &str = "herald_template_compilations_total";
/// Messages by channel and final delivery status.
pub const MESSAGES: &str = "herald_messages_total";
/// How long a shard's provider call took for a batch of messages, in seconds, by channel.
pub const SEND_DURATION: &str = "herald_send_duration_seconds";
/// Messages waiting in a shard's queue, by channel and shard.
pub const QUEUE_DEPTH: &str = "herald_queue_depth";
/// A shard queue's fill, 0 to 1, by channel and shard.
pub const QUEUE_SATURATION: &str = "herald_queue_saturation";
/// Messages throttled or made to wait by a channel quota's rate, by channel.
pub const LIMITER_WAITS: &str = "herald_limiter_waits_total";
/// Tokens of shared messages-per-second quotas this daemon took from the store, by channel.
pub const RATE_TOKENS_LEASED: &str = "herald_rate_tokens_leased_total";
/// Delivery attempts scheduled again after a temporary failure, by channel.
pub const RETRIES: &str = "herald_retries_total";
/// Campaign runs that ended, by state (COMPLETED, PAUSED, DELETED, INVALID).
pub const CAMPAIGN_RUNS: &str = "herald_campaign_runs_total";
/// Campaign runs executing in this daemon.
pub const CAMPAIGN_RUNS_EXECUTING: &str = "herald_campaign_runs_executing";
pub const CAMPAIGN_UNITS: &str = "herald_campaign_units_total";
/// 1, labelled with the version and the store backend.
pub const BUILD_INFO: &str = "herald_build_info";
/// Counter: provider feedback received, by kind (sms_delivered, sms_failed, sms_optout,
/// email_hardbounce, email_softbounce, email_complaint).
pub const FEEDBACK: &str = "herald_feedback_total";
/// Counter: events PutEvents was given, by result (accepted, rejected).
pub const EVENTS_RECEIVED: &str = "herald_events_received_total";
/// Counter: event batches sent to event destinations, by result (delivered, failed).
pub const WEBHOOK_DELIVERIES: &str = "herald_event_webhook_deliveries_total";
/// Counter: events delivered to event destinations.
pub const WEBHOOK_EVENTS: &str = "herald_event_webhook_events_total";
/// Counter: EVENT campaign messages triggered, by result (queued, dropped_late).
pub const EVENT_TRIGGERS: &str = "herald_event_triggers_total";
/// Counter: opens, clicks and unsubscribes on the public listener, by result (recorded,
/// refused, lost, unsubscribed).
pub const ENGAGEMENT: &str = "herald_engagement_total";
/// Counter: campaign hook (FILTER) calls, by result (kept, failed).
pub const CAMPAIGN_HOOK_CALLS: &str = "herald_campaign_hook_calls_total";
/// Counter: calls refused before reaching their service, by reason (unauthenticated,
/// revoked, scope, app, rate).
pub const ACCESS_REFUSED: &str = "herald_access_refused_total";
/// Counter: audit log lines written, by outcome (gRPC code).
pub const AUDIT_LINES: &str = "herald_audit_lines_total";
/// Counter: TLS certificate reloads after their files changed, by listener and result.
pub const TLS_RELOADS: &str = "herald_tls_reloads_total";
/// Counter: Pinpoint REST calls, by operation and HTTP status.
pub const REST_REQUESTS: &str = "herald_rest_requests_total";
/// Histogram: Pinpoint REST call latency in seconds, by operation.
pub const REST_DURATION: &str = "herald_rest_request_duration_seconds";

/// Every metric name above, for documentation and tests.
pub const ALL: &[&str] = &[
    GRPC_REQUESTS,
    GRPC_DURATION,
    ENDPOINTS_WRITTEN,
    ENDPOINTS_REJECTED,
    STORE_RETRIES,
    STORE_DURATION,
    STORE_ERRORS,
    TEMPLATE_COMPILATIONS,
    MESSAGES,
    SEND_DURATION,
    QUEUE_DEPTH,
    QUEUE_SATURATION,
    LIMITER_WAITS,
    RATE_TOKENS_LEASED,
    RETRIES,
    CAMPAIGN_RUNS,
    CAMPAIGN_RUNS_EXECUTING,
    CAMPAIGN_UNITS,
    BUILD_INFO,
    FEEDBACK,
    EVENTS_RECEIVED,
    WEBHOOK_DELIVERIES,
    WEBHOOK_EVENTS,
    EVENT_TRIGGERS,
    ENGAGEMENT,
    CAMPAIGN_HOOK_CALLS,
    ACCESS_REFUSED,
    AUDIT_LINES,
    TLS_RELOADS,
    REST_REQUESTS,
    REST_DURATION,
];

const LATENCY_BUCKETS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Sets up logging: `RUST_LOG` filters (default `info`), text or JSON lines on stderr.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Installs the global Prometheus recorder once per process and returns its handle.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("latency buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // A recorder may already be installed (an embedding program); ours then stays unused.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(GRPC_REQUESTS, "Service calls by gRPC method and status code, from either door (gRPC or REST).");
    metrics::describe_histogram!(GRPC_DURATION, metrics::Unit::Seconds, "Service call latency by gRPC method, from either door.");
    metrics::describe_counter!(ENDPOINTS_WRITTEN, "Endpoints created or updated.");
    metrics::describe_counter!(ENDPOINTS_REJECTED, "Endpoint writes rejected by validation or the per-user cap.");
    metrics::describe_counter!(STORE_RETRIES, "Store transactions re-planned after concurrent writers aborted them.");
    metrics::describe_histogram!(STORE_DURATION, metrics::Unit::Seconds, "Store operation latency.");
    metrics::describe_counter!(STORE_ERRORS, "Store operations that failed.");
    metrics::describe_counter!(TEMPLATE_COMPILATIONS, "Template versions compiled.");
    metrics::describe_gauge!(BUILD_INFO, "Herald's version and store backend.");
    metrics::describe_counter!(MESSAGES, "Messages that reached a final delivery status, by channel and status.");
    metrics::describe_histogram!(SEND_DURATION, metrics::Unit::Seconds, "Time a shard spent sending one batch to its provider.");
    metrics::describe_gauge!(QUEUE_DEPTH, "Jobs waiting in a shard's queue.");
    metrics::describe_gauge!(QUEUE_SATURATION, "A shard's queue depth as a share of its capacity (0 to 1).");
    metrics::describe_counter!(LIMITER_WAITS, "Transactional messages throttled by an app channel's quota.");
    metrics::describe_counter!(
        RATE_TOKENS_LEASED,
        "Tokens of app channels' messages-per-second quotas this daemon took from the store (shared by every daemon on it)."
    );
    metrics::describe_counter!(RETRIES, "Deliveries scheduled for another attempt.");
    metrics::describe_counter!(CAMPAIGN_RUNS, "Campaign runs that ended, by final state.");
    metrics::describe_gauge!(CAMPAIGN_RUNS_EXECUTING, "Campaign runs executing in this daemon.");
    metrics::describe_counter!(CAMPAIGN_UNITS, "Work units of campaign runs (ranges of a segment) this daemon took and read to their end.");
    metrics::describe_counter!(FEEDBACK, "Provider feedback received, by kind.");
    metrics::describe_counter!(EVENTS_RECEIVED, "Events given to PutEvents, by result.");
    metrics::describe_counter!(WEBHOOK_DELIVERIES, "Event batches sent to event destinations, by result.");
    metrics::describe_counter!(CAMPAIGN_HOOK_CALLS, "Pages of campaign endpoints sent to a campaign hook (FILTER), by result.");
    metrics::describe_counter!(WEBHOOK_EVENTS, "Events delivered to event destinations.");
    metrics::describe_counter!(EVENT_TRIGGERS, "Endpoints an EVENT campaign was triggered for, by result.");
    metrics::describe_counter!(REST_REQUESTS, "Pinpoint REST API calls by operation and HTTP status.");
    metrics::describe_histogram!(REST_DURATION, metrics::Unit::Seconds, "Pinpoint REST API call latency by operation.");
    metrics::describe_counter!(ACCESS_REFUSED, "Calls refused for their API key before reaching a service, by reason.");
    metrics::describe_counter!(AUDIT_LINES, "Audit log lines written, by outcome.");
    metrics::describe_counter!(TLS_RELOADS, "TLS certificate and key reloads after their files changed, by listener and result.");
    metrics::describe_counter!(ENGAGEMENT, "Email opens, clicks and unsubscribes reaching the public listener, by result.");
}

pub fn store_retry(backend: &'static str) {
    metrics::counter!(STORE_RETRIES, "backend" => backend).increment(1);
}
