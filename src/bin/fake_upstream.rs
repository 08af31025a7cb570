//! `fake-upstream`: a fast OpenAI-compatible upstream for benchmarks and the compose stack (no
//! network needed). Chat completions as JSON or SSE (`--chunks`, `--chunk-delay-ms`), embeddings and
//! the model list; fixed latency (`--latency-ms`) and injected errors (`--error-rate`, 429 or 500 in
//! OpenAI's error shape).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{Value, json};

#[derive(Parser, Clone)]
#[command(
    name = "fake-upstream",
    about = "An OpenAI-compatible fake upstream for benchmarks and demos"
)]
struct Args {
    #[arg(long, env = "FAKE_UPSTREAM_LISTEN", default_value = "127.0.0.1:18080")]
    listen: SocketAddr,
    /// Delay before answering (before the first chunk of a stream).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// SSE chunks per streamed answer.
    #[arg(long, default_value_t = 20)]
    chunks: usize,
    /// Delay between chunks.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Fraction of requests answered with an error (half 429 with retry-after, half 500).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// The answer's text (streamed word by word, repeated to fill `--chunks`).
    #[arg(long, default_value = "Hello! How can I help you today?")]
    text: String,
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut r = (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": null, "code": null}})),
    )
        .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    r
}

async fn chat(State(a): State<Arc<Args>>, Json(req): Json<Value>) -> Response {
    if a.error_rate > 0.0 && fastrand::f64() < a.error_rate {
        return if fastrand::bool() {
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "Rate limit reached (injected)",
            )
        } else {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "Internal error (injected)",
            )
        };
    }
    if a.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(a.latency_ms)).await;
    }
    let model = req["model"].as_str().unwrap_or("fake-model").to_string();
    let prompt = req["messages"].to_string().len() as u64 / 4 + 1;
    if req["stream"].as_bool() != Some(true) {
        let words = a.text.split_whitespace().count() as u64;
        return Json(json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": a.text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": words, "total_tokens": prompt + words}
        }))
        .into_response();
    }
    let mut words: Vec<String> = a.text.split_whitespace().map(str::to_string).collect();
    if words.is_empty() {
        words.push(String::new());
    }
    let (n, delay) = (a.chunks.max(1), Duration::from_millis(a.chunk_delay_ms));
    let chunk = move |i: usize| {
        // Word i (cycling through the text), with a space unless it is the last chunk.
        let word = &words[i % words.len()];
        let content = if i + 1 < n {
            format!("{word} ")
        } else {
            word.clone()
        };
        let delta = if i == 0 {
            json!({"role": "assistant", "content": content})
        } else {
            json!({"content": content})
        };
        let finish = if i + 1 == n { json!("stop") } else { Value::Null };
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
                   "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let usage = format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
               "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n as u64}})
    );
    let events = futures_util::stream::iter(0..n)
        .then(move |i| {
            let c = chunk(i);
            async move {
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, std::convert::Infallible>(Bytes::from(c))
            }
        })
        .chain(futures_util::stream::once(async move { Ok(Bytes::from(usage)) }));
    let mut r = Response::new(Body::from_stream(events));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    r
}

async fn embeddings(Json(req): Json<Value>) -> Json<Value> {
    let inputs = match &req["input"] {
        Value::Array(items) => items.len(),
        _ => 1,
    };
    let data: Vec<Value> = (0..inputs)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}))
        .collect();
    Json(
        json!({"object": "list", "data": data, "model": req["model"], "usage": {"prompt_tokens": inputs, "total_tokens": inputs}}),
    )
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]}),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .with_state(args.clone());
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("fake-upstream listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
