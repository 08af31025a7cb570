//! The OpenAI-compatible HTTP surface, served on the gRPC port (and optionally on its own):
//! `/v1/chat/completions` (JSON and SSE), `/v1/embeddings`, `/v1/models`, health probes. Backed by
//! exactly the same pipeline as gRPC: authentication, validation, router, error mapping.

mod litellm;
mod wire;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures_util::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use super::{
    Gateway,
    error::ApiError,
    observe::{self, Scope},
    pipeline::Call,
};
use crate::{domain::Cost, limits::Grant, router::RouteInfo};

/// Readiness flips to false when shutdown begins, so load balancers drain the replica first.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct Http {
    gateway: Arc<Gateway>,
    readiness: Readiness,
}

pub fn routes(gateway: Arc<Gateway>, readiness: Readiness) -> Router {
    let state = Http { gateway, readiness };
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/health/liveliness", get(live))
        .route("/health/liveness", get(live))
        .route("/health/readiness", get(ready))
        .route("/metrics", get(metrics_page))
        .merge(litellm::routes())
        .with_state(state)
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

async fn ready(State(s): State<Http>) -> (StatusCode, Json<serde_json::Value>) {
    if !s.gateway.router.state().shared_state_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": "redis unreachable"})),
        );
    }
    if !s.gateway.keys.backend.loaded() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": "keys not loaded from etcd yet"})),
        );
    }
    if s.readiness.get() {
        // etcd down after the keys and config were loaded: still ready (the replica serves what it
        // has, and marking every replica unready would drain the whole fleet), but say so.
        if !s.gateway.keys.backend.reachable() {
            return (
                StatusCode::OK,
                Json(
                    json!({"status": "ready", "degraded": "etcd unreachable: serving the last config and keys"}),
                ),
            );
        }
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready"})),
        )
    }
}

/// Prometheus text format. Deployment gauges are read from the router's state at scrape time, so
/// they cost the request path nothing.
async fn metrics_page(State(s): State<Http>) -> Response {
    let Some(handle) = crate::telemetry::metrics() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder unavailable\n").into_response();
    };
    let table = s.gateway.router.table();
    let mut views = Vec::new();
    for group in table.groups.values() {
        views.clear();
        s.gateway.router.state().views(&group.ids, &mut views);
        for (id, v) in group.ids.iter().zip(&views) {
            let cooling = matches!(v.health, crate::router::Health::CoolingDown { .. });
            metrics::gauge!("switchboard_deployment_in_flight", "deployment" => id.to_string())
                .set(f64::from(v.in_flight));
            metrics::gauge!("switchboard_deployment_cooling_down", "deployment" => id.to_string())
                .set(if cooling { 1.0 } else { 0.0 });
        }
    }
    let mut resp = handle.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// What an unknown path gets: gRPC's UNIMPLEMENTED for gRPC requests (as tonic answers), else a
/// 404 in OpenAI's error shape naming the path.
pub async fn fallback(method: axum::http::Method, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/grpc")),
                (
                    header::HeaderName::from_static("grpc-status"),
                    HeaderValue::from_static("12"),
                ),
            ],
        )
            .into_response();
    }
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": {
            "message": format!("no route for {method} {}", uri.path()),
            "type": "invalid_request_error",
            "param": null,
            "code": "not_found",
        }})),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    let h = e.to_http();
    let mut resp = (
        StatusCode::from_u16(h.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(h.body),
    )
        .into_response();
    if let Some(after) = h.retry_after {
        let secs = after.as_secs_f64().ceil().max(1.0) as u64;
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        resp.headers_mut()
            .insert("retry-after-ms", HeaderValue::from(after.as_millis() as u64));
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(&self)
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some());
        if too_large {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::MalformedJson {
                line: 0,
                column: 0,
                message: format!("cannot read the body: {e}"),
            }
        }
    })
}

fn authenticate(s: &Http, headers: &HeaderMap) -> Result<crate::auth::Principal, ApiError> {
    s.gateway
        .authenticate(headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes))
}

/// LiteLLM's body `timeout` (seconds) becomes the deadline.
fn deadline(timeout: Option<f64>) -> Option<Instant> {
    timeout
        .and_then(|t| Duration::try_from_secs_f64(t).ok())
        .map(|t| Instant::now() + t)
}

/// `x-switchboard-*` headers: what happened, and the gateway's own share of the latency.
fn route_headers(headers: &mut HeaderMap, route: &RouteInfo, started: Instant, ignored: &[String]) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put("x-switchboard-model-group", route.group.to_string());
    put("x-switchboard-deployment", route.deployment.to_string());
    put("x-switchboard-attempts", route.attempts.len().to_string());
    put("x-switchboard-cache-hit", route.cache_hit.to_string());
    if !route.fallbacks.is_empty() {
        put(
            "x-switchboard-fallbacks",
            route
                .fallbacks
                .iter()
                .map(|g| g.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    let upstream: Duration = route
        .attempts
        .iter()
        .filter(|a| !a.cancelled)
        .map(|a| a.duration)
        .max()
        .unwrap_or_default();
    let overhead = started.elapsed().saturating_sub(upstream);
    put(
        "x-switchboard-overhead-ms",
        format!("{:.3}", overhead.as_secs_f64() * 1000.0),
    );
    if !ignored.is_empty() {
        let list: Vec<&str> = ignored.iter().take(16).map(String::as_str).collect();
        put("x-switchboard-ignored-params", list.join(","));
    }
}

async fn chat(State(s): State<Http>, headers: HeaderMap, body: Body) -> Response {
    let scope = Scope::http("/v1/chat/completions", &headers);
    let mut group = String::new();
    let result = scope
        .run(chat_inner(&s, &headers, body, &scope, &mut group))
        .await;
    finish(&s, &scope, &group, result)
}

/// Books the outcome of an HTTP call and renders it.
fn finish(s: &Http, scope: &Scope, group: &str, result: Result<(Response, RouteInfo), ApiError>) -> Response {
    match result {
        Ok((mut resp, route)) => {
            scope.ok(&route, &s.gateway.router.table());
            if let Ok(v) = HeaderValue::from_str(&scope.request_id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            resp
        }
        Err(e) => {
            scope.failed(group, &e);
            let mut resp = error_response(&e);
            if let Ok(v) = HeaderValue::from_str(&scope.request_id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            resp
        }
    }
}

async fn chat_inner(
    s: &Http,
    headers: &HeaderMap,
    body: Body,
    scope: &Scope,
    group: &mut String,
) -> Result<(Response, RouteInfo), ApiError> {
    let started = scope.clock();
    let principal = authenticate(s, headers)?;
    let bytes = read_body(body, s.gateway.limits.max_request_bytes).await?;
    let (req, ignored) = wire::parse::<wire::ChatCompletionRequest>(&bytes)?;
    group.clone_from(&req.model);
    let (stream, include_usage, deadline) = (req.stream, req.include_usage(), deadline(req.timeout));
    let mut req = req.into_domain()?;
    let call = Call {
        principal: &principal,
        request_id: &scope.request_id,
        deadline,
    };
    if !stream {
        let out = s.gateway.chat(call, &mut req).await?;
        let mut resp = (StatusCode::OK, wire::completion_json(&out.value)).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        route_headers(resp.headers_mut(), &out.route, started, &ignored);
        quota_headers(resp.headers_mut(), out.cost, &out.grant);
        return Ok((resp, out.route));
    }
    let (stream, grant) = s.gateway.chat_stream(call, &mut req).await?;
    let route = stream.route().clone();
    observe::first_chunk("http", &route, started.elapsed());
    let mut hdrs = HeaderMap::new();
    route_headers(&mut hdrs, &route, started, &ignored);
    quota_headers(&mut hdrs, Cost::ZERO, &grant);
    hdrs.remove("x-switchboard-cost-usd");
    // Chunks, then `[DONE]` on success; an error event ends the stream without
    // `[DONE]`, so clients can tell it failed. A live stream's ticket settles at the end, or when
    // the caller goes away, at the cost of what the stream consumed.
    let events = futures_util::stream::unfold(Some(stream), move |state| async move {
        let mut m = state?;
        loop {
            match m.next().await {
                Some(Ok(chunk)) => {
                    if let Some(event) = wire::chunk_event(&chunk, include_usage) {
                        return Some((Bytes::from(event), Some(m)));
                    }
                }
                Some(Err(e)) => {
                    let e = ApiError::from(e);
                    m.settle(e.reason());
                    return Some((stream_error(&e), None));
                }
                None => {
                    m.settle("ok");
                    return Some((Bytes::from_static(b"data: [DONE]\n\n"), None));
                }
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(events.map(Ok::<_, Infallible>)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.extend(hdrs);
    Ok((resp, route))
}

/// A failure after the stream started: an SSE `error` event in OpenAI's shape.
fn stream_error(e: &ApiError) -> Bytes {
    let body = e.to_http().body;
    Bytes::from(format!("data: {body}\n\n"))
}

/// The cost and what is left of the caller's rate limits.
fn quota_headers(headers: &mut HeaderMap, cost: Cost, grant: &Grant) {
    headers.insert("x-switchboard-cost-usd", HeaderValue::from(0));
    if let Ok(v) = HeaderValue::from_str(&format!("{:.9}", cost.usd())) {
        headers.insert("x-switchboard-cost-usd", v);
    }
    // OpenAI's names (SDKs read them) and ours.
    if let Some(n) = grant.rpm_remaining {
        headers.insert("x-ratelimit-remaining-requests", HeaderValue::from(n));
        headers.insert("x-switchboard-ratelimit-remaining-requests", HeaderValue::from(n));
    }
    if let Some(n) = grant.tpm_remaining {
        headers.insert("x-ratelimit-remaining-tokens", HeaderValue::from(n));
        headers.insert("x-switchboard-ratelimit-remaining-tokens", HeaderValue::from(n));
    }
}

async fn embeddings(State(s): State<Http>, headers: HeaderMap, body: Body) -> Response {
    let scope = Scope::http("/v1/embeddings", &headers);
    let mut group = String::new();
    let result = scope
        .run(embeddings_inner(&s, &headers, body, &scope, &mut group))
        .await;
    finish(&s, &scope, &group, result)
}

async fn embeddings_inner(
    s: &Http,
    headers: &HeaderMap,
    body: Body,
    scope: &Scope,
    group: &mut String,
) -> Result<(Response, RouteInfo), ApiError> {
    let started = scope.clock();
    let principal = authenticate(s, headers)?;
    let bytes = read_body(body, s.gateway.limits.max_request_bytes).await?;
    let (req, ignored) = wire::parse::<wire::EmbeddingsRequest>(&bytes)?;
    group.clone_from(&req.model);
    let (base64, deadline) = (req.base64()?, deadline(req.timeout));
    let mut req = req.into_domain()?;
    let call = Call {
        principal: &principal,
        request_id: &scope.request_id,
        deadline,
    };
    let out = s.gateway.embed(call, &mut req).await?;
    let mut resp = (StatusCode::OK, wire::embeddings_json(&out.value, base64)).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    route_headers(resp.headers_mut(), &out.route, started, &ignored);
    quota_headers(resp.headers_mut(), out.cost, &out.grant);
    Ok((resp, out.route))
}

async fn models(State(s): State<Http>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let principal = authenticate(&s, &headers)?;
    let table = s.gateway.router.table();
    // A key sees the models it may call.
    let mut names: Vec<&str> = table
        .groups
        .keys()
        .map(|g| g.as_str())
        .filter(|g| match &principal {
            crate::auth::Principal::Key(who) => who.allows(g, &table.access_groups),
            _ => true,
        })
        .collect();
    names.sort_unstable();
    let data: Vec<_> = names
        .iter()
        .map(|n| json!({"id": n, "object": "model", "created": 0, "owned_by": "switchboard"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}
