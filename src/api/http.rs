//! Plain HTTP routes served on the gRPC port: liveness and readiness for load balancers and
//! orchestrators. (The OpenAI-compatible surface joins here.)

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde_json::json;

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

pub fn routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/health/liveliness", get(live))
        .route("/health/liveness", get(live))
        .route("/health/readiness", get(ready))
        .with_state(readiness)
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

async fn ready(State(r): State<Readiness>) -> (StatusCode, Json<serde_json::Value>) {
    if r.get() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready"})),
        )
    }
}
