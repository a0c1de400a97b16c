//! Herald: a self-hosted, high-throughput message dispatch daemon with Amazon Pinpoint's
//! engagement semantics, behind a gRPC control plane.
//!
//! # Layout
//!
//! - [`proto`]: the generated `herald.v1` types, clients and servers, and the descriptor set
//!   that server reflection serves.
//! - [`config`]: typed configuration, file < `HERALD_*` environment < flags, validation and
//!   masking of secrets.
//! - [`domain`]: pure rules with no I/O — endpoint validation and merging, cohorts, Pinpoint JSON, app
//!   settings, Pinpoint's import shapes.
//! - [`render`]: Pinpoint templates on handlebars with Pinpoint's helper set — CPU only.
//! - [`channels`]: one folder per provider (payloads, clients, answer classification) and the
//!   closed set of senders the engine hands batches to.
//! - [`pipeline`]: what every producer shares on the way to the engine: composing content
//!   into payloads.
//! - [`dispatch`]: the engine — shards, retries with backoff, channel quotas, stop and drain,
//!   outcome recording; no provider knowledge.
//! - [`outcomes`]: the one recorder of outcomes, counters, events, suppressions and dead
//!   push tokens, and Pinpoint's event names.
//! - [`store`]: the storage seam ([`store::Store`]) with its Redis and embedded (redb)
//!   backends, and the write planner both backends share.
//! - [`api`]: tonic services and the one error → `Status` mapping.
//! - [`rest`]: Pinpoint's REST API (routed and shaped by the vendored service model, SigV4)
//!   onto the same services as [`api`].
//! - [`access`]: API keys and scopes, the guard in front of every service, the audit log.
//! - [`tls`]: TLS for Herald's own listeners, with certificates reloaded from their files.
//! - [`app`]: wiring (store, services, servers) and the shutdown order.
//! - [`telemetry`]: tracing setup, the Prometheus exporter and every metric name.
//! - [`shutdown`]: signals and the drain grace period.
//! - [`cli`]: the `herald` command line, daemon and terminal client.
#![forbid(unsafe_code)]

pub mod access;
pub mod api;
pub mod app;
pub mod attributes;
pub mod campaigns;
pub mod channels;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod engagement;
pub mod events;
pub mod feedback;
pub mod journeys;
pub mod kpi;
pub mod outcomes;
pub mod pipeline;
pub mod proto;
pub mod render;
pub mod rest;
pub mod secrets;
pub mod segments;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tracking;
