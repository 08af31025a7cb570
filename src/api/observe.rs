//! One server span and one set of request metrics per call, shared by the gRPC and HTTP surfaces.

use std::time::Duration;

use tokio::time::Instant;
use tracing::field::Empty;

use super::error::ApiError;
use crate::{
    router::{RouteError, RouteInfo, RoutingTable},
    telemetry::{logline, propagation},
};

/// A request in progress: its span, its clock, its surface.
pub struct Scope {
    pub span: tracing::Span,
    pub request_id: String,
    /// On every log line of the request (see [`logline`]).
    ids: logline::RequestIds,
    started: Instant,
    surface: &'static str,
}

/// The request's ids for its log lines: the trace id is ours when traces are exported, else the
/// caller's `traceparent`.
fn ids(span: &tracing::Span, request_id: &str, headers: &http::HeaderMap) -> logline::RequestIds {
    let ours = (!span.is_disabled())
        .then(|| propagation::trace_id(span))
        .flatten();
    let trace_id = ours.map(Into::into).or_else(|| {
        headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(logline::trace_id_of)
            .map(Into::into)
    });
    logline::RequestIds {
        request_id: request_id.into(),
        trace_id,
    }
}

fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| format!("{:032x}", fastrand::u128(..)), str::to_string)
}

impl Scope {
    /// A gRPC call: `rpc.*` attributes after the OpenTelemetry RPC conventions.
    pub fn grpc(service: &'static str, method: &'static str, headers: &http::HeaderMap) -> Self {
        let request_id = request_id(headers);
        let span = tracing::info_span!(
            "rpc",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
            request_id = %request_id,
            switchboard.model_group = Empty,
            switchboard.deployment.id = Empty,
            switchboard.attempts = Empty,
            switchboard.fallbacks = Empty,
            switchboard.key.id = Empty,
            switchboard.team.id = Empty,
            switchboard.cost_usd = Empty,
            switchboard.cache.hit = Empty,
            error.type = Empty,
        );
        propagation::adopt_parent(&span, headers);
        Self {
            ids: ids(&span, &request_id, headers),
            span,
            request_id,
            started: Instant::now(),
            surface: "grpc",
        }
    }

    /// An OpenAI-compatible HTTP call.
    pub fn http(route: &'static str, headers: &http::HeaderMap) -> Self {
        let request_id = request_id(headers);
        let span = tracing::info_span!(
            "http",
            otel.name = %format_args!("POST {route}"),
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = "POST",
            http.route = route,
            http.response.status_code = Empty,
            request_id = %request_id,
            switchboard.model_group = Empty,
            switchboard.deployment.id = Empty,
            switchboard.attempts = Empty,
            switchboard.fallbacks = Empty,
            switchboard.key.id = Empty,
            switchboard.team.id = Empty,
            switchboard.cost_usd = Empty,
            switchboard.cache.hit = Empty,
            error.type = Empty,
        );
        propagation::adopt_parent(&span, headers);
        Self {
            ids: ids(&span, &request_id, headers),
            span,
            request_id,
            started: Instant::now(),
            surface: "http",
        }
    }

    /// Runs the request's work in its span, with its ids on every log line.
    pub async fn run<F: std::future::Future>(&self, work: F) -> F::Output {
        use tracing::Instrument as _;
        logline::with_ids(self.ids.clone(), work.instrument(self.span.clone())).await
    }

    /// When the request started (for time-to-first-chunk).
    pub fn clock(&self) -> Instant {
        self.started
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Books a served request: span attributes and metrics.
    pub fn ok(&self, route: &RouteInfo, table: &RoutingTable) {
        let s = &self.span;
        s.record("switchboard.model_group", route.group.as_str());
        s.record("switchboard.deployment.id", route.deployment.as_str());
        s.record("switchboard.attempts", route.attempts.len() as u64);
        s.record("switchboard.cache.hit", route.cache_hit);
        if !route.fallbacks.is_empty() {
            let list: Vec<&str> = route.fallbacks.iter().map(|g| g.as_str()).collect();
            s.record("switchboard.fallbacks", list.join(",").as_str());
        }
        match self.surface {
            "grpc" => s.record("rpc.grpc.status_code", 0),
            _ => s.record("http.response.status_code", 200),
        };
        let total = self.elapsed();
        match table.groups.get(&route.group) {
            // Handles registered with the routing table: no label keys built per request.
            Some(g) => {
                let m = &g.metrics[usize::from(self.surface == "http")];
                m.count_ok.increment(1);
                m.duration_ok.record(total.as_secs_f64());
            }
            None => self.count(route.group.to_string(), "ok".to_string(), total),
        }
        metrics::histogram!("switchboard_overhead_seconds", "surface" => self.surface)
            .record(overhead(total, route).as_secs_f64());
    }

    /// Books a failed request. `group` labels metrics only when it names a real group.
    pub fn failed(&self, group: &str, e: &ApiError) {
        let status = e.to_status();
        let code = status.code();
        let reason = e.reason();
        let s = &self.span;
        s.record("otel.status_code", "ERROR");
        s.record("error.type", reason);
        match self.surface {
            "grpc" => s.record("rpc.grpc.status_code", code as i32),
            _ => s.record("http.response.status_code", u64::from(e.to_http().status)),
        };
        let known = !matches!(
            e,
            ApiError::Route(RouteError::UnknownGroup(_)) | ApiError::InvalidArgument { .. }
        );
        let group = if known && !group.is_empty() {
            group
        } else {
            "_unknown"
        };
        self.count(
            group.to_string(),
            format!("{code:?}").to_ascii_lowercase(),
            self.elapsed(),
        );
        let trace_id = self.ids.trace_id.as_deref().unwrap_or_default();
        tracing::info!(parent: &self.span, request_id = %self.request_id, trace_id, reason, code = ?code, "request failed");
    }
}

impl Scope {
    fn count(&self, group: String, status: String, total: Duration) {
        let surface = self.surface;
        metrics::counter!("switchboard_requests_total", "surface" => surface, "model_group" => group.clone(), "status" => status.clone())
            .increment(1);
        metrics::histogram!("switchboard_request_duration_seconds", "surface" => surface, "model_group" => group, "status" => status)
            .record(total.as_secs_f64());
    }
}

/// The gateway's own share of a request: total time minus the upstream attempt that answered
/// (attempts before it are the upstream's time too; their failures are not our overhead).
pub fn overhead(total: Duration, route: &RouteInfo) -> Duration {
    let upstream: Duration = route
        .attempts
        .iter()
        .filter(|a| !a.cancelled && !a.hedged)
        .map(|a| a.duration)
        .sum();
    let hedge = route
        .attempts
        .iter()
        .filter(|a| a.hedged)
        .map(|a| a.duration)
        .max()
        .unwrap_or_default();
    total.saturating_sub(upstream.max(hedge))
}

/// Time to the first chunk of a stream (the first chunk is in hand when routing returns).
pub fn first_chunk(surface: &'static str, route: &RouteInfo, ttft: Duration) {
    metrics::histogram!("switchboard_time_to_first_chunk_seconds", "surface" => surface, "model_group" => route.group.to_string())
        .record(ttft.as_secs_f64());
}
