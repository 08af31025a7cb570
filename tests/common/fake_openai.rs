//! A fake OpenAI-compatible upstream on port 0, speaking the wire format of OpenAI's API reference:
//! chat completions (JSON and SSE with `data: [DONE]`), embeddings, and error bodies. It records
//! every request and can misbehave on demand (errors, hangs, cut or stalled streams).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};

/// What the fake does with one request.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Answer with this text (a chat completion, or an SSE stream of words if the request streams).
    Reply(String),
    /// Like `Reply`, after a delay (for streams: before the first chunk).
    ReplyAfter(Duration, String),
    /// An error response: status, body, extra headers.
    Error {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Never answer (not even headers).
    Hang,
    /// Stream these SSE `data:` payloads, waiting `delay` before each, then end as `end` says.
    Stream {
        data: Vec<String>,
        delay: Duration,
        end: StreamEnd,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// `data: [DONE]`.
    Done,
    /// Close the connection without `[DONE]` (a truncated stream).
    Cut,
    /// Keep the connection open and send nothing more.
    Stall,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

type Script = Arc<dyn Fn(usize) -> Behavior + Send + Sync>;

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<Script>>,
    log: Arc<Mutex<Vec<Recorded>>>,
    /// Streams whose body was dropped before it ended: the client went away.
    abandoned_streams: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

/// Counts a request in flight while alive (unary handlers).
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(shared: &Shared) -> Busy {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Busy(shared.in_flight.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct FakeOpenAi {
    pub addr: SocketAddr,
    shared: Shared,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeOpenAi {
    /// Starts a fake whose behaviour for the n-th request (0-based) is `script(n)`.
    pub async fn start(script: impl Fn(usize) -> Behavior + Send + Sync + 'static) -> FakeOpenAi {
        let shared = Shared {
            script: Arc::new(Mutex::new(Arc::new(script))),
            log: Arc::default(),
            abandoned_streams: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeOpenAi {
            addr,
            shared,
            _server: server,
        }
    }

    pub async fn replying(text: &str) -> FakeOpenAi {
        let text = text.to_string();
        FakeOpenAi::start(move |_| Behavior::Reply(text.clone())).await
    }

    pub async fn failing(status: u16) -> FakeOpenAi {
        FakeOpenAi::start(move |_| Behavior::Error {
            status,
            body: error_body("upstream is unhappy", "server_error", None),
            headers: vec![],
        })
        .await
    }

    /// `api_base` for a config.
    pub fn base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn set(&self, script: impl Fn(usize) -> Behavior + Send + Sync + 'static) {
        *self.shared.script.lock().unwrap() = Arc::new(script);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }

    /// The most requests this fake was serving at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn abandoned_streams(&self) -> usize {
        self.shared.abandoned_streams.load(Ordering::SeqCst)
    }
}

/// OpenAI's error body.
pub fn error_body(message: &str, kind: &str, code: Option<&str>) -> String {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string()
}

fn record(shared: &Shared, path: &str, headers: HeaderMap, body: &Bytes) -> (usize, Value, Behavior) {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut log = shared.log.lock().unwrap();
    let n = log.len();
    log.push(Recorded {
        path: path.to_string(),
        headers,
        body: body.clone(),
    });
    drop(log);
    let script = shared.script.lock().unwrap().clone();
    (n, body, script(n))
}

fn usage(prompt: u32, completion: u32) -> Value {
    json!({
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

fn chunk(n: usize, model: &str, delta: Value, finish: Value) -> String {
    json!({
        "id": format!("chatcmpl-fake-{n}"), "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": model, "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        "usage": null
    })
    .to_string()
}

/// The function a request forces with `tool_choice: {"type": "function", "function": {"name": ...}}`.
fn forced_tool(req: &Value) -> Option<String> {
    req["tool_choice"]["function"]["name"]
        .as_str()
        .map(str::to_string)
}

/// Arguments the fake "model" passes to any forced tool.
pub const TOOL_ARGUMENTS: &str = r#"{"city": "Paris"}"#;

/// The SSE payloads OpenAI sends for a forced tool call: id and name first, then argument fragments.
pub fn tool_call_stream(n: usize, model: &str, tool: &str) -> Vec<String> {
    let (head, tail) = TOOL_ARGUMENTS.split_at(9);
    let mut data = vec![chunk(
        n,
        model,
        json!({"role": "assistant", "content": null}),
        Value::Null,
    )];
    data.push(chunk(
        n,
        model,
        json!({"tool_calls": [{"index": 0, "id": "call_fake_1", "type": "function", "function": {"name": tool, "arguments": ""}}]}),
        Value::Null,
    ));
    for piece in [head, tail] {
        data.push(chunk(
            n,
            model,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            Value::Null,
        ));
    }
    data.push(chunk(n, model, json!({}), json!("tool_calls")));
    data.push(
        json!({"id": format!("chatcmpl-fake-{n}"), "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": model, "choices": [], "usage": usage(30, 9)})
        .to_string(),
    );
    data
}

/// The SSE payloads OpenAI sends for `text` with `stream_options.include_usage`.
pub fn reply_stream(n: usize, model: &str, text: &str) -> Vec<String> {
    let mut data = vec![chunk(
        n,
        model,
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    for word in text.split_inclusive(' ') {
        data.push(chunk(n, model, json!({"content": word}), Value::Null));
    }
    data.push(chunk(n, model, json!({}), json!("stop")));
    data.push(
        json!({
            "id": format!("chatcmpl-fake-{n}"), "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "system_fingerprint": "fp_fake", "choices": [],
            "usage": usage(11, text.split_inclusive(' ').count() as u32)
        })
        .to_string(),
    );
    data
}

async fn respond(shared: &Shared, behavior: Behavior, body_json: impl FnOnce() -> Value) -> Response {
    match behavior {
        Behavior::Reply(_) => axum::Json(body_json()).into_response(),
        Behavior::ReplyAfter(delay, _) => {
            tokio::time::sleep(delay).await;
            axum::Json(body_json()).into_response()
        }
        Behavior::Error {
            status,
            body,
            headers,
        } => {
            let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
            resp.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            for (k, v) in headers {
                resp.headers_mut().insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            resp
        }
        Behavior::Hang => std::future::pending().await,
        Behavior::Stream { data, delay, end } => sse(shared, data, delay, end),
    }
}

/// Marks a stream abandoned when its body is dropped before it finished.
struct AbandonGuard {
    counter: Arc<AtomicUsize>,
    finished: bool,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.counter.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn sse(shared: &Shared, data: Vec<String>, delay: Duration, end: StreamEnd) -> Response {
    let guard = AbandonGuard {
        counter: shared.abandoned_streams.clone(),
        finished: false,
    };
    let state = (data.into_iter(), guard, false);
    let stream = futures_util::stream::unfold(state, move |(mut it, mut guard, ended)| async move {
        if ended {
            return None;
        }
        tokio::time::sleep(delay).await;
        match it.next() {
            Some(d) => Some((
                Ok::<_, Infallible>(Bytes::from(format!("data: {d}\n\n"))),
                (it, guard, false),
            )),
            None => match end {
                StreamEnd::Done => {
                    guard.finished = true;
                    Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), (it, guard, true)))
                }
                StreamEnd::Cut => {
                    guard.finished = true;
                    drop(guard); // a deliberate cut, not a client that went away
                    None
                }
                StreamEnd::Stall => std::future::pending().await,
            },
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn chat(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let _busy = Busy::new(&shared);
    let (n, req, behavior) = record(&shared, "/v1/chat/completions", headers, &body);
    let model = req["model"].as_str().unwrap_or("unknown").to_string();
    let streaming = req["stream"].as_bool().unwrap_or(false);
    if let (Some(tool), Behavior::Reply(_)) = (forced_tool(&req), &behavior) {
        if streaming {
            return sse(
                &shared,
                tool_call_stream(n, &model, &tool),
                Duration::ZERO,
                StreamEnd::Done,
            );
        }
        return axum::Json(json!({
            "id": format!("chatcmpl-fake-{n}"), "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "call_fake_1", "type": "function", "function": {"name": tool, "arguments": TOOL_ARGUMENTS}}]},
                "logprobs": null, "finish_reason": "tool_calls"}],
            "usage": usage(30, 9)
        }))
        .into_response();
    }
    match (streaming, &behavior) {
        (true, Behavior::Reply(text)) => {
            return sse(
                &shared,
                reply_stream(n, &model, text),
                Duration::ZERO,
                StreamEnd::Done,
            );
        }
        (true, Behavior::ReplyAfter(delay, text)) => {
            tokio::time::sleep(*delay).await;
            return sse(
                &shared,
                reply_stream(n, &model, text),
                Duration::ZERO,
                StreamEnd::Done,
            );
        }
        _ => {}
    }
    let text = match &behavior {
        Behavior::Reply(t) | Behavior::ReplyAfter(_, t) => t.clone(),
        _ => String::new(),
    };
    respond(&shared, behavior, || {
        json!({
            "id": format!("chatcmpl-fake-{n}"), "object": "chat.completion", "created": 1_700_000_000,
            "model": model, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": usage(11, text.split_inclusive(' ').count() as u32)
        })
    })
    .await
}

async fn embeddings(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (_, req, behavior) = record(&shared, "/v1/embeddings", headers, &body);
    let inputs: Vec<String> = match &req["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => vec![],
    };
    let model = req["model"].as_str().unwrap_or("unknown").to_string();
    respond(&shared, behavior, || {
        // Reverse order on purpose: clients must order by `index`, not by position.
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .rev()
            .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": [text.len() as f32, i as f32, 0.5]}))
            .collect();
        json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 4, "total_tokens": 4}})
    })
    .await
}
