//! Wiring: opens the store, builds the gRPC services (with health, reflection and auth) and
//! the metrics endpoint, serves until shutdown, then drains within the grace period and closes
//! the store.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::api::channels::ChannelsService;
use crate::api::{
    apps::AppsService, campaigns::CampaignsService, endpoints::EndpointsService, events::EventsService, journeys::JourneysService,
    kpis::KpisService, messages::MessagesService, segments::SegmentsService, suppressions::SuppressionsService,
    templates::TemplatesService,
};
use crate::channels::email::{SmtpPool, SmtpRelay};
use crate::config::Config;
use crate::dispatch::engine::{Engine, EngineConfig};
use crate::proto::v1::{
    apps_server::AppsServer, campaigns_server::CampaignsServer, channels_server::ChannelsServer, endpoints_server::EndpointsServer,
    events_server::EventsServer, journeys_server::JourneysServer, keys_server::KeysServer, kpis_server::KpisServer,
    messages_server::MessagesServer, segments_server::SegmentsServer, suppressions_server::SuppressionsServer, tags_server::TagsServer,
    templates_server::TemplatesServer,
};
use crate::render::{template::TemplateCache, Renderer};
use crate::store::{self, Store};
use crate::{proto, shutdown, telemetry};

/// Largest request Herald decodes (an UpdateEndpointsBatch of 10,000 endpoints fits).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Binds the configured addresses and serves until SIGINT/SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Handlers first: a signal during start-up must not kill the daemon uncleanly.
    let shutdown = shutdown::signal();
    let grpc = TcpListener::bind(config.grpc_addr).await.with_context(|| format!("cannot listen on {} (grpc_addr)", config.grpc_addr))?;
    let metrics =
        TcpListener::bind(config.metrics_addr).await.with_context(|| format!("cannot listen on {} (metrics_addr)", config.metrics_addr))?;
    serve(config, grpc, metrics, shutdown).await
}

/// Serves on the given listeners until `shutdown` resolves, then drains.
pub async fn serve(config: Config, grpc: TcpListener, metrics: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let prometheus = telemetry::recorder();
    let store = store::open(&config).await.context("cannot open the store")?;
    store.ping().await.context("the store does not answer")?;
    metrics::gauge!(telemetry::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "backend" => store.backend()).set(1.0);

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, true).await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let keys = Arc::new(crate::access::Registry::new(&config.api_keys, &config.keys, store.clone()));
    if !keys.enforcing() {
        tracing::warn!(addr = %config.grpc_addr, "No API key configured: calls are not authenticated, so only loopback is served.");
    } else if !config.api_keys.is_empty() {
        tracing::info!("api_keys are admin keys kept in the clear; [[keys]] entries keep only hashes and carry scopes.");
    }
    let audit = match &config.audit_log {
        Some(target) => Some(Arc::new(
            crate::access::audit::Audit::open(&crate::access::audit::Target::parse(target))
                .with_context(|| format!("cannot open the audit log {target}"))?,
        )),
        None => None,
    };
    let sealer = Arc::new(crate::secrets::Sealer::load(config.secret_key.as_deref(), &config.data_dir)?);
    let apps_impl = Arc::new(AppsService::new(store.clone(), sealer.clone()));
    let apps = AppsServer::from_arc(apps_impl.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let endpoints_impl = Arc::new(EndpointsService::new(store.clone()));
    let endpoints = EndpointsServer::from_arc(endpoints_impl.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let suppressions = SuppressionsServer::new(SuppressionsService::new(store.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let templates_cache = Arc::new(TemplateCache::new(Arc::new(Renderer::new()), config.template_cache_size));
    crate::channels::install_crypto_provider();
    let smtp = match &config.smtp_url {
        Some(url) => Some(Arc::new(SmtpPool::new(SmtpRelay::from_url(url)?))),
        None => None,
    };
    let shards = if config.shards_per_channel == 0 {
        // Shards wait on providers more than they compute: four per core keep the cores busy.
        4 * std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        config.shards_per_channel
    };
    let outcome_ttl = Duration::from_secs(config.outcome_ttl_days * 86_400);
    let senders = crate::channels::senders::Senders::new(
        store.clone(),
        smtp.clone(),
        Some(sealer.clone()),
        config.webhook_secret.clone(),
        Duration::from_secs(10),
    );
    let engine = Engine::start(
        store.clone(),
        senders,
        EngineConfig { shards_per_channel: shards, queue_per_shard: config.queue_per_shard, retry: Default::default(), outcome_ttl },
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let owner = crate::domain::new_id();
    // Retries kept at the last stop go back to the engine (retried while the store is down).
    {
        let (store, engine, owner, mut stop) = (store.clone(), engine.clone(), owner.clone(), stop_rx.clone());
        tokio::spawn(async move {
            loop {
                match crate::dispatch::engine::parked::resume(store.clone(), engine.clone(), &owner).await {
                    Ok(_) => return,
                    Err(e) => tracing::warn!(error = %e, "Kept retries cannot be read yet; trying again."),
                }
                if tokio::time::timeout(Duration::from_secs(2), stop.wait_for(|s| *s)).await.is_ok() {
                    return;
                }
            }
        });
    }
    // Signed tracking and unsubscribe links, when the public listener serves them.
    let links = config.links_base().map(|base| {
        let ttl = (config.tracking_ttl_days * 86_400.0) as u64;
        Arc::new(crate::tracking::Links::new(&sealer.derive("herald tracking links v1"), &base, ttl.max(1)))
    });
    let runner = Arc::new(
        crate::campaigns::run::Runner::new(store.clone(), engine.clone(), templates_cache.clone(), owner.clone(), stop_rx.clone())
            .with_links(links.clone())
            .with_sealer(sealer.clone()),
    );
    let journey_wake = Arc::new(tokio::sync::Notify::new());
    let journeys = Arc::new(crate::journeys::exec::JourneyRunner::new(
        store.clone(),
        engine.clone(),
        templates_cache.clone(),
        owner,
        stop_rx.clone(),
        links.clone(),
        journey_wake.clone(),
    ));
    let journeys_impl = Arc::new(JourneysService::new(store.clone(), templates_cache.clone(), journey_wake));
    let journeys_service = JourneysServer::from_arc(journeys_impl.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let wake = Arc::new(tokio::sync::Notify::new());
    let campaigns_impl = Arc::new(CampaignsService::new(store.clone(), templates_cache.clone(), wake.clone(), sealer.clone()));
    let campaigns_service = CampaignsServer::from_arc(campaigns_impl.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let messages_impl =
        Arc::new(MessagesService::new(store.clone(), templates_cache.clone(), engine.clone(), outcome_ttl).with_links(links.clone()));
    let messages = MessagesServer::from_arc(messages_impl.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let templates_impl = Arc::new(TemplatesService::new(store.clone(), templates_cache));
    let templates = TemplatesServer::from_arc(templates_impl.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);

    let events_impl = Arc::new(EventsService::new(store.clone(), sealer.clone()));
    let events = EventsServer::from_arc(events_impl.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let segments_impl = Arc::new(SegmentsService::new(store.clone()));
    let kpis_impl = Arc::new(KpisService::new(store.clone()));
    let tags_impl = Arc::new(crate::api::tags::TagsService::new(store.clone()));
    let channels_impl = Arc::new(ChannelsService::new(store.clone(), sealer.clone()));
    let event_workers = tokio::spawn(crate::events::worker::run(Arc::new(crate::events::worker::Workers {
        runner: runner.clone(),
        sealer: sealer.clone(),
        retention: crate::events::worker::Retention {
            count: config.event_retention_count,
            age: Duration::from_secs(config.event_retention_hours * 3_600),
        },
        webhook_backoff: Duration::from_millis(config.event_webhook_backoff_ms),
        stop: stop_rx.clone(),
    })));

    let grpc_addr = grpc.local_addr()?;
    let metrics_addr = metrics.local_addr()?;
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let router = tonic::transport::Server::builder()
        .layer(crate::access::guard::GuardLayer::new(keys.clone(), audit.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(apps)
        .add_service(endpoints)
        .add_service(templates)
        .add_service(suppressions)
        .add_service(messages)
        .add_service(SegmentsServer::from_arc(segments_impl.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(campaigns_service)
        .add_service(journeys_service)
        .add_service(events)
        .add_service(KpisServer::from_arc(kpis_impl.clone()))
        .add_service(TagsServer::from_arc(tags_impl.clone()))
        .add_service(ChannelsServer::from_arc(channels_impl.clone()))
        .add_service(KeysServer::new(crate::api::keys::KeysService::new(keys.clone())));
    let grpc_tls = match config.grpc_tls() {
        Some(files) => Some(crate::tls::Reloading::start("grpc", files, &[b"h2"])?),
        None => None,
    };
    let grpc_task = match &grpc_tls {
        Some(tls) => tokio::spawn(
            router.serve_with_incoming_shutdown(crate::tls::TlsListener::new(grpc, tls.clone())?.into_stream(), stopped(stop_rx.clone())),
        ),
        None => {
            tokio::spawn(router.serve_with_incoming_shutdown(TcpIncoming::from(grpc).with_nodelay(Some(true)), stopped(stop_rx.clone())))
        }
    };
    let feedback_task = match config.feedback_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (feedback_addr)"))?;
            tracing::info!(%addr, "Provider feedback listener is up.");
            let feedback =
                Arc::new(crate::feedback::Feedback { store: store.clone(), sealer: sealer.clone(), keys: keys.clone(), outcome_ttl });
            let mut router = feedback.router();
            if let Some(l) = &links {
                router = router.merge(crate::engagement::Engagement::start(l.clone(), store.clone(), outcome_ttl).router());
                tracing::info!(public_url = l.base(), "Open and click tracking and one-click unsubscribe are served.");
            }
            let tls = config.public_tls().map(|files| crate::tls::Reloading::start("public", files, &[b"http/1.1"])).transpose()?;
            Some(serve_http(listener, router, tls, stop_rx.clone())?)
        }
        None => None,
    };
    // Pinpoint's REST API: the same services behind a second door.
    let rest_task = match config.rest_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (rest_addr)"))?;
            let credentials = crate::rest::sigv4::Credentials::parse(&config.sigv4_credentials)?;
            if credentials.is_empty() {
                tracing::warn!(%addr, "No SigV4 credentials configured: REST calls are not authenticated, so only loopback is served.");
            }
            let services = crate::rest::Services {
                apps: apps_impl.clone(),
                endpoints: endpoints_impl.clone(),
                segments: segments_impl.clone(),
                templates: templates_impl.clone(),
                campaigns: campaigns_impl.clone(),
                journeys: journeys_impl.clone(),
                messages: messages_impl.clone(),
                events: events_impl.clone(),
                kpis: kpis_impl.clone(),
                tags: tags_impl.clone(),
                channels: channels_impl.clone(),
            };
            let s3 = config.s3()?;
            let router = Arc::new(
                crate::rest::Rest::new(services, store.clone(), credentials)?
                    .with_s3(s3, config.s3_role_arn.clone())
                    .with_audit(audit.clone()),
            )
            .router();
            tracing::info!(%addr, "Pinpoint REST API is up.");
            // SigV4 authenticates REST callers: no client certificate is asked.
            let files = config.grpc_tls().map(|f| crate::tls::TlsFiles { client_ca: None, ..f });
            let tls = files.map(|f| crate::tls::Reloading::start("rest", f, &[b"http/1.1"])).transpose()?;
            Some(serve_http(listener, router, tls, stop_rx.clone())?)
        }
        None => None,
    };
    let router = axum::Router::new().route("/metrics", axum::routing::get(move || std::future::ready(prometheus.render())));
    let scheduler = tokio::spawn(crate::campaigns::scheduler::run(runner.clone(), wake, stop_rx.clone()));
    let journey_scheduler = tokio::spawn(journeys.clone().run());
    // Prometheus presents no client certificate: the metrics listener asks for none.
    let files = config.grpc_tls().filter(|_| config.metrics_tls).map(|f| crate::tls::TlsFiles { client_ca: None, ..f });
    let tls = files.map(|f| crate::tls::Reloading::start("metrics", f, &[b"http/1.1"])).transpose()?;
    let metrics_task = serve_http(metrics, router, tls, stop_rx.clone())?;
    let purger = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3_600)).await;
                match store.purge_expired().await {
                    Ok(n) if n > 0 => tracing::info!(records = n, "Purged expired records."),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "Cannot purge expired records."),
                }
            }
        })
    };
    let upkeep = tokio::spawn(async {
        let handle = telemetry::recorder();
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            handle.run_upkeep();
        }
    });
    let monitor = tokio::spawn(monitor_store(store.clone(), health.clone()));
    tracing::info!(%grpc_addr, %metrics_addr, backend = store.backend(), tls = grpc_tls.is_some(), "Herald is serving.");

    shutdown.await;
    monitor.abort();
    set_health(&health, false).await;
    // Stop order: nothing new is accepted or fired; runs stop taking members and wait for what
    // they handed out, calls in flight finish; then the engine sends what it still holds and
    // records every outcome; then the store closes. All within the grace period.
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let deadline = tokio::time::Instant::now() + grace;
    // The event workers stop first (they start trigger runs), recording their positions.
    let _ = tokio::time::timeout_at(deadline, event_workers).await;
    let (runs, steps, calls) = tokio::join!(
        tokio::time::timeout_at(deadline, runner.wait()),
        tokio::time::timeout_at(deadline, journeys.wait()),
        tokio::time::timeout_at(deadline, grpc_task)
    );
    match steps {
        Ok(()) => tracing::info!("Journeys stopped between steps."),
        Err(_) => tracing::warn!(grace_secs = config.shutdown_grace_secs, "Journey steps still settling after the grace period."),
    }
    match runs {
        Ok(()) => tracing::info!("Campaign runs stopped at a recorded position."),
        Err(_) => tracing::warn!(grace_secs = config.shutdown_grace_secs, "Campaign runs still settling after the grace period."),
    }
    match calls {
        Ok(Ok(Ok(()))) => tracing::info!("In-flight calls drained."),
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "gRPC server failed."),
        Ok(Err(e)) => tracing::error!(error = %e, "gRPC server task failed."),
        Err(_) => tracing::warn!(grace_secs = config.shutdown_grace_secs, "Calls still in flight after the grace period; closing anyway."),
    }
    // REST calls in flight finish too (axum's graceful shutdown waits for them).
    if let Some(t) = rest_task {
        match tokio::time::timeout_at(deadline, t).await {
            Ok(_) => {}
            Err(_) => tracing::warn!(grace_secs = config.shutdown_grace_secs, "REST calls still in flight after the grace period."),
        }
    }
    if engine.stop(deadline).await {
        tracing::info!("Dispatch engine drained; every outcome recorded.");
    } else {
        tracing::warn!(grace_secs = config.shutdown_grace_secs, "Dispatch engine still busy after the grace period.");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), metrics_task).await;
    if let Some(t) = feedback_task {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
    upkeep.abort();
    purger.abort();
    scheduler.abort();
    journey_scheduler.abort();
    if let Some(pool) = smtp {
        pool.close().await;
    }
    if let Some(a) = &audit {
        a.close();
    }
    close(store).await;
    Ok(())
}

/// Serves an HTTP/1.1 router (over TLS when given) until `stop`, finishing calls in flight.
fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<crate::tls::Reloading>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    Ok(match tls {
        Some(tls) => {
            let server = axum::serve(crate::tls::TlsListener::new(listener, tls)?, router).with_graceful_shutdown(stopped);
            tokio::spawn(async move { server.await })
        }
        None => {
            let server = axum::serve(listener, router).with_graceful_shutdown(stopped);
            tokio::spawn(async move { server.await })
        }
    })
}

/// Sets every Herald service's health.
async fn set_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    macro_rules! each {
        ($($s:ty),*) => {
            $(if serving { health.set_serving::<$s>().await } else { health.set_not_serving::<$s>().await })*
        };
    }
    each!(
        AppsServer<AppsService>,
        EndpointsServer<EndpointsService>,
        TemplatesServer<TemplatesService>,
        SegmentsServer<SegmentsService>,
        CampaignsServer<CampaignsService>,
        JourneysServer<JourneysService>,
        SuppressionsServer<SuppressionsService>,
        MessagesServer<MessagesService>,
        ChannelsServer<ChannelsService>,
        EventsServer<EventsService>,
        TagsServer<crate::api::tags::TagsService>,
        KeysServer<crate::api::keys::KeysService>
    );
    let overall = if serving { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
    health.set_service_status("", overall).await;
}

/// Pings the store every second: health says NOT_SERVING while it does not answer, and
/// SERVING again once it does. The daemon never exits over it.
async fn monitor_store(store: Arc<dyn Store>, health: tonic_health::server::HealthReporter) {
    let mut up = true;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now_up = matches!(tokio::time::timeout(Duration::from_secs(2), store.ping()).await, Ok(Ok(())));
        if now_up != up {
            if now_up {
                tracing::info!(backend = store.backend(), "Store answers again; serving.");
            } else {
                tracing::warn!(backend = store.backend(), "Store does not answer; health is NOT_SERVING until it does.");
            }
            set_health(&health, now_up).await;
            up = now_up;
        }
    }
}

async fn close(store: Arc<dyn Store>) {
    match store.close().await {
        Ok(()) => tracing::info!(backend = store.backend(), "Store closed."),
        Err(e) => tracing::error!(error = %e, "Store did not close cleanly."),
    }
}
