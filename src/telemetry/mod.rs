//! Logs, traces and metrics. Logs: structured JSON by default, text for humans. Traces: OTLP/gRPC
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, batched so requests never
//! wait on the collector, W3C trace context in and out. Metrics: a Prometheus scrape endpoint.

pub mod content;
pub mod logline;
pub mod propagation;
mod queue;

use std::{sync::OnceLock, time::Duration};

use opentelemetry_otlp::WithHttpConfig as _;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Where traces go; from the standard `OTEL_*` environment variables unless set explicitly.
#[derive(Debug, Clone, Default)]
pub struct TraceSettings {
    /// OTLP endpoint, e.g. `http://collector:4317` (gRPC) or `http://collector:4318/v1/traces`
    /// (HTTP). `None`: no trace export.
    pub endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`: `grpc` (default) or `http/protobuf`.
    pub http: bool,
    pub service_name: String,
    /// Identifies this replica in the resource (`service.instance.id`).
    pub replica_id: String,
    /// Finished spans waiting for export, at most (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048);
    /// beyond it spans are dropped and counted.
    pub max_queue: usize,
}

impl TraceSettings {
    pub fn from_env(replica_id: &str) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none");
        let http = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .is_some_and(|p| p == "http/protobuf");
        // Per the spec, the generic endpoint is a base URL to which HTTP adds the signal's path;
        // the traces endpoint is used as given.
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
            var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| {
                if http {
                    format!("{}/v1/traces", base.trim_end_matches('/'))
                } else {
                    base
                }
            })
        });
        Self {
            endpoint: if disabled { None } else { endpoint },
            http,
            max_queue: var("OTEL_BSP_MAX_QUEUE_SIZE")
                .and_then(|v| v.parse().ok())
                .unwrap_or(2048),
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| "switchboard".into()),
            replica_id: replica_id.to_string(),
        }
    }
}

/// The OTLP/HTTP exporter's client: reqwest, driven on the gateway's tokio runtime (the batch span
/// processor calls it from a thread of its own, where no runtime is current).
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[tonic::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))?;
        let client = self.client.clone();
        let (status, headers, body) = self
            .runtime
            .spawn(async move {
                let r = client.execute(request).await?;
                let (status, headers) = (r.status(), r.headers().clone());
                Ok::<_, reqwest::Error>((status, headers, r.bytes().await?))
            })
            .await??;
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// Keeps the trace pipeline alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered now (tests, and before a planned stop).
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }

    /// Flushes and stops the exporter, bounded in time, off the async threads.
    pub async fn shutdown(self) {
        if let Some(p) = self.provider {
            let _ =
                tokio::task::spawn_blocking(move || p.shutdown_with_timeout(Duration::from_secs(3))).await;
        }
    }
}

/// Installs the global subscriber (logs, and traces when an endpoint is set) and the W3C propagator.
/// Must run inside a tokio runtime when traces are exported.
pub fn init(format: LogFormat, traces: &TraceSettings) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = match &traces.endpoint {
        None => None,
        Some(endpoint) => {
            let exporter = if traces.http {
                // The batch processor exports from its own thread; the client's I/O runs on our runtime.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let client = OnRuntime {
                    client: reqwest::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .build()?,
                    runtime: tokio::runtime::Handle::current(),
                };
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(client)
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(endpoint.clone())
                    .with_timeout(Duration::from_secs(5))
                    .build()?
            } else {
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .with_timeout(Duration::from_secs(5))
                    .build()?
            };
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(traces.service_name.clone())
                .with_attributes([
                    opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                    opentelemetry::KeyValue::new("service.instance.id", traces.replica_id.clone()),
                ])
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_span_processor(queue::CountedQueue::new(exporter, traces.max_queue))
                    .with_resource(resource)
                    .build(),
            )
        }
    };
    // Spans go to the trace pipeline only. The log layer takes events (which carry the request id
    // themselves): formatting every request span's fields for logs doubled the CPU per request, and
    // with no trace export nothing is interested in spans, so tracing skips them at the callsite.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("switchboard"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let events_only = tracing_subscriber::filter::filter_fn(|meta| meta.is_event());
    let logs = match format {
        LogFormat::Json => fmt::layer().event_format(logline::JsonWithRequest).boxed(),
        LogFormat::Text => fmt::layer().compact().boxed(),
    };
    // Without trace export, spans are disabled globally, at their callsites: an absent (`None`)
    // layer counts as "interested in everything", which made the registry create and close every
    // span of every request (a fifth of a gRPC call's CPU in perf).
    let no_spans = provider
        .is_none()
        .then(|| tracing_subscriber::filter::filter_fn(|meta| meta.is_event()));
    let _ = tracing_subscriber::registry()
        .with(otel)
        .with(logs.with_filter(filter).with_filter(events_only))
        .with(no_spans)
        .try_init();
    Ok(Telemetry { provider })
}

/// Latency buckets (seconds) shared by every duration histogram: 100 us to 5 min.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0,
];
/// Token-count buckets for `gen_ai_client_token_usage` (the GenAI semconv's advice).
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
];

/// The process-wide Prometheus recorder, installed on first use (one per process, however many
/// gateways a test starts). `None` if another recorder was installed first.
pub fn metrics() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("gen_ai_client_token_usage".into()), TOKEN_BUCKETS)
                })
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "switchboard_requests_total",
        "Requests served, by surface, model group and status"
    );
    describe_histogram!(
        "switchboard_request_duration_seconds",
        Unit::Seconds,
        "Total time to answer a request"
    );
    describe_histogram!(
        "switchboard_overhead_seconds",
        Unit::Seconds,
        "Time spent in the gateway itself: total time minus the upstream attempt that answered"
    );
    describe_histogram!(
        "switchboard_time_to_first_chunk_seconds",
        Unit::Seconds,
        "Time to the first streamed chunk"
    );
    describe_counter!(
        "switchboard_upstream_attempts_total",
        "Upstream attempts, by deployment and outcome"
    );
    describe_counter!(
        "switchboard_deployment_cooldowns_total",
        "Deployments put into cooldown"
    );
    describe_gauge!(
        "switchboard_deployment_in_flight",
        "Requests in flight per deployment on this replica"
    );
    describe_histogram!(
        "gen_ai_client_operation_duration_seconds",
        Unit::Seconds,
        "GenAI operation duration (per attempt)"
    );
    describe_histogram!(
        "gen_ai_client_token_usage",
        "Tokens used per operation, by token type"
    );
}
