//! The composition root: the only place that builds components and wires them together.
//! [`run`] takes its listener and shutdown signal from the caller, so tests start a whole gateway
//! in-process on port 0.

use std::{future::Future, sync::Arc};

use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;

use crate::{
    api::{self, AdminApi, ChatApi, EmbeddingsApi, Gateway, Quotas},
    auth::{Authenticator, Backend, Directory, EtcdBackend, MemoryBackend, manage::Manager},
    cluster::redis::RedisTarget,
    config::Config,
    control::{Applier, ControlPlane},
    limits::{Checkpoint, FleetLedger, LocalLedger, Settler, SharedLedger},
    proto::{
        self, admin_service_server::AdminServiceServer, chat_service_server::ChatServiceServer,
        embeddings_service_server::EmbeddingsServiceServer,
    },
    providers::HttpClient,
    router::{DeploymentState, FleetState, LocalState, Router, RoutingTable},
};

/// Serves the gateway on `listener` until `shutdown` resolves, then drains: readiness and gRPC health
/// turn NOT_SERVING first, and in-flight calls and streams finish.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with(
        Listeners {
            main: listener,
            http: None,
        },
        config,
        shutdown,
    )
    .await
}

/// Where to serve: gRPC and HTTP together on `main`, and optionally the HTTP surface alone on `http`.
pub struct Listeners {
    pub main: TcpListener,
    pub http: Option<TcpListener>,
}

/// [`run`] with an optional separate HTTP listener.
pub async fn run_with(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let options = Options {
        replica_id: format!("switchboard-{}-{:08x}", std::process::id(), fastrand::u32(..)),
        drain_timeout: std::time::Duration::from_secs(30),
        config_path: None,
        advertise: None,
        tls: None,
        data_plane_only: false,
    };
    run_as(listeners, config, options, shutdown).await
}

/// How a gateway process runs.
pub struct Options {
    /// Its identity in shared state, traces and metrics.
    pub replica_id: String,
    /// After the shutdown signal, how long in-flight calls and streams may take to finish before the
    /// remaining connections are closed.
    pub drain_timeout: std::time::Duration,
    /// The config file (single node: reloaded on SIGHUP or change; fleet: only the first seed).
    pub config_path: Option<std::path::PathBuf>,
    /// `host:port` other replicas reach this one at (default: the listen address, with the
    /// hostname for an unspecified IP).
    pub advertise: Option<String>,
    /// Serve TLS (and require client certificates, if it says so) on every listener.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Refuse the master key, and with it the admin API, on this replica.
    pub data_plane_only: bool,
}

/// Puts the etcd spend checkpoint back into a Redis that lost its data. Any replica may: restoring
/// only raises counters, so doing it twice is harmless.
async fn restore_spend(lead: &crate::control::Leadership, ledger: &FleetLedger) {
    if !matches!(ledger.needs_restore().await, Ok(true)) {
        return;
    }
    let checkpoint = match lead.get("spend/checkpoint").await {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Ok(None) => Checkpoint::default(),
        Err(_) => return,
    };
    match ledger.restore(&checkpoint).await {
        Ok(()) if checkpoint.budgets.is_empty() => {}
        Ok(()) => tracing::info!(
            budgets = checkpoint.budgets.len(),
            age_ms = crate::limits::now_ms() - checkpoint.at_ms,
            "spend counters restored into redis from the etcd checkpoint"
        ),
        Err(e) => tracing::warn!(error = %e, "spend checkpoint restore failed"),
    }
}

/// Every second: restore a Redis that lost its data; on the leader, every `every`, copy the
/// budget counters from Redis into etcd (fenced: only the leader's write lands).
async fn checkpoint_spend(
    lead: Arc<crate::control::Leadership>,
    ledger: Arc<FleetLedger>,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut last = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        restore_spend(&lead, &ledger).await;
        if lead.is_leader() && last.elapsed() >= every {
            last = tokio::time::Instant::now();
            match ledger.checkpoint().await {
                Ok(c) => {
                    let bytes = serde_json::to_vec(&c).unwrap_or_default();
                    if let Err(e) = lead.put_fenced("spend/checkpoint", bytes).await {
                        tracing::debug!(error = %e, "spend checkpoint not written");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "spend checkpoint not read"),
            }
        }
    }
}

/// Serves `app` on `listener` (through TLS when configured) until `stopped` resolves and the
/// connections drain.
async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        Some(config) => {
            let listener = api::tls::TlsListener::new(listener, config)?;
            axum::serve(listener, app).with_graceful_shutdown(stopped).await
        }
        None => {
            let listener = listener.tap_io(|s| {
                let _ = s.set_nodelay(true);
            });
            axum::serve(listener, app).with_graceful_shutdown(stopped).await
        }
    }
}

/// Where peers reach this replica.
fn advertised(listen: std::net::SocketAddr, advertise: Option<String>) -> String {
    advertise.unwrap_or_else(|| {
        if listen.ip().is_unspecified() {
            let host = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into());
            format!("{host}:{}", listen.port())
        } else {
            listen.to_string()
        }
    })
}

/// [`run_with`] with explicit [`Options`].
pub async fn run_as(
    listeners: Listeners,
    config: Config,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Options {
        replica_id,
        drain_timeout,
        config_path,
        advertise,
        tls,
        data_plane_only,
    } = options;
    let listener = listeners.main;
    let address = advertised(listener.local_addr()?, advertise);
    if !config.ignored_keys.is_empty() {
        tracing::warn!(
            keys = %config.ignored_keys.join(", "),
            "config keys that Switchboard does not implement yet are ignored"
        );
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let http = HttpClient::new()?;
    // Histograms are drained by upkeep (the exporter's own task is not compiled in).
    if let Some(handle) = crate::telemetry::metrics() {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let table = RoutingTable::build(&config, &http);
    let state: Arc<dyn DeploymentState> = match &config.router.redis {
        Some(redis) => {
            let ids = config.deployments.iter().map(|d| d.id.clone()).collect();
            tracing::info!(replica = %replica_id, "sharing deployment state through redis");
            FleetState::start(
                RedisTarget::from(redis),
                replica_id.clone(),
                listener.local_addr()?.to_string(),
                ids,
            )
        }
        None => Arc::new(LocalState::default()),
    };
    let router = Arc::new(Router::new(table, state));
    let fleet_ledger = config
        .router
        .redis
        .as_ref()
        .map(|redis| FleetLedger::start(RedisTarget::from(redis), config.etcd.is_some()));
    let ledger: SharedLedger = match &fleet_ledger {
        Some(l) => l.clone(),
        None => Arc::new(LocalLedger::default()),
    };
    let mut settler = Settler::new(ledger);
    if let Some(url) = &config.quotas.alert_webhook_url {
        settler = settler.with_webhook(http.reqwest().clone(), url.clone());
    }
    let directory = Arc::new(Directory::default());
    let backend: Arc<dyn Backend> = match &config.etcd {
        Some(etcd) => {
            let b = EtcdBackend::start(etcd.clone(), directory.clone());
            // Serve with the keys loaded, unless etcd is down at boot (then they arrive when it is back).
            if directory.wait_for(1, std::time::Duration::from_secs(5)).await {
                tracing::info!(
                    keys = directory.snapshot().keys.len(),
                    "key store loaded from etcd"
                );
            } else {
                tracing::warn!("etcd unreachable at start: virtual keys are refused until it answers");
            }
            b
        }
        None => Arc::new(MemoryBackend::new(directory.clone())),
    };
    let keys = Arc::new(Manager {
        backend,
        directory: directory.clone(),
    });
    let auth = Authenticator::new(config.master_key.clone(), directory);
    let auth = Arc::new(if data_plane_only {
        auth.data_plane_only()
    } else {
        auth
    });
    let apply: Applier = {
        let (router, auth, http) = (router.clone(), auth.clone(), http.clone());
        Box::new(move |c: &Config| {
            router.swap(RoutingTable::build(c, &http));
            router
                .state()
                .set_deployments(c.deployments.iter().map(|d| d.id.clone()).collect());
            auth.set_master_key(c.master_key.clone());
        })
    };
    let control = ControlPlane::start(
        config.yaml.expose().to_string(),
        config_path,
        config
            .etcd
            .clone()
            .map(|e| (e, replica_id.clone(), address.clone())),
        Arc::new(|name: &str| std::env::var(name).ok()),
        apply,
    )
    .await;
    control.watch_file();
    if let (Some(lead), Some(ledger)) = (control.leadership.clone(), fleet_ledger) {
        // Before serving: budgets must not start from a Redis that lost its data.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), async {
            for _ in 0..30 {
                restore_spend(&lead, &ledger).await;
                if matches!(ledger.needs_restore().await, Ok(false)) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
        .await;
        tokio::spawn(checkpoint_spend(
            lead,
            ledger,
            config.quotas.spend_checkpoint_interval,
        ));
    }
    let control_for_shutdown = control.clone();
    let gateway = Arc::new(Gateway {
        router,
        auth,
        keys,
        quotas: Arc::new(Quotas::new(settler.clone(), config.quotas.clone())),
        control,
        cache: config.cache.clone().map(|c| {
            tracing::info!(
                backend = match c.backend {
                    crate::config::CacheBackend::Local { .. } => "local",
                    crate::config::CacheBackend::Redis(_) => "redis",
                },
                ttl_s = c.ttl.as_secs_f64(),
                "response cache on"
            );
            crate::cache::ResponseCache::new(c)
        }),
        limits: config.limits,
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ChatServiceServer<ChatApi>>().await;
    health
        .set_serving::<EmbeddingsServiceServer<EmbeddingsApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let chat = ChatServiceServer::new(ChatApi(gateway.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(config.limits.max_request_bytes);
    let gateway_http = gateway.clone();
    let admin = AdminServiceServer::new(AdminApi {
        gateway: gateway.clone(),
        replica_id: replica_id.clone(),
        address: address.clone(),
    });
    let embeddings = EmbeddingsServiceServer::new(EmbeddingsApi(gateway))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(config.limits.max_request_bytes);
    let readiness = api::http::Readiness::default();
    readiness.set(true);
    let app = tonic::service::Routes::new(chat)
        .add_service(embeddings)
        .add_service(admin)
        .add_service(health_service)
        .add_service(reflection)
        .prepare()
        .into_axum_router()
        .merge(api::http::routes(gateway_http.clone(), readiness.clone()))
        .fallback(api::http::fallback);

    let addr = listener.local_addr()?;
    let groups = config
        .deployments
        .iter()
        .map(|d| d.group.as_str())
        .collect::<std::collections::BTreeSet<_>>();
    tracing::info!(%addr, deployments = config.deployments.len(), groups = ?groups, "switchboard listening");

    // One shutdown signal for every listener.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http_server = listeners.http.map(|http_listener| {
        let mut stop = stop_rx.clone();
        let routes = api::http::routes(gateway_http.clone(), readiness.clone()).fallback(api::http::fallback);
        let addr = http_listener.local_addr().ok();
        tracing::info!(addr = ?addr, "HTTP surface also listening");
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::spawn(serve(http_listener, tls.clone(), routes, stopped))
    });
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let drain = async move {
        shutdown.await;
        let _ = draining_tx.send(());
        let _ = stop_tx.send(true);
        tracing::info!("shutting down: draining in-flight requests");
        readiness.set(false);
        // A leader hands over at once instead of letting its lease run out.
        if let Some(l) = &control_for_shutdown.leadership {
            l.resign().await;
        }
        health.set_not_serving::<ChatServiceServer<ChatApi>>().await;
        health
            .set_not_serving::<EmbeddingsServiceServer<EmbeddingsApi>>()
            .await;
    };
    let server = serve(listener, tls, app, drain);
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r?,
        // Draining is bounded: a stream that never ends must not keep the process alive forever.
        () = async {
            if draining_rx.await.is_ok() {
                tokio::time::sleep(drain_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(timeout_s = drain_timeout.as_secs_f64(), "shutdown deadline passed: closing the remaining connections");
        }
    }
    if let Some(h) = http_server {
        h.await??;
    }
    // Spend of the last requests reaches the ledger before the process goes.
    if !settler.flush(std::time::Duration::from_secs(5)).await {
        tracing::warn!("shutdown: some spend records were not settled within 5 s");
    }
    Ok(())
}
