//! A fake upstream for any provider: one catch-all HTTP server, with a [`Dialect`] per provider that
//! renders answers, streams, embeddings and errors in that provider's wire format (from its public API
//! reference) and knows what the gateway must have sent. The conformance suite runs the same cases
//! through every dialect.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Uri},
    response::{IntoResponse, Response},
};
use serde_json::Value;

/// What the fake "model" answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Text(String),
    /// A call of the forced tool with these JSON arguments.
    Tool {
        name: String,
        arguments: Value,
    },
}

/// How the fake misbehaves on a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    RateLimited,
    Overloaded,
    ContextWindow,
    ContentPolicy,
    Auth,
    BadRequest,
    NotFound,
    Server,
    /// Status 200 with the provider's error body.
    ErrorIn200,
    /// Status 200 with a body that is not the provider's format.
    Garbage,
    /// A stream cut after its first events.
    Truncated,
}

/// The text every dialect answers with, and the JSON it returns in JSON mode.
pub const TEXT: &str = "Hello from the fake";
pub const JSON_ANSWER: &str = r#"{"answer":42}"#;

pub trait Dialect: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn streaming(&self, uri: &Uri, body: &Value) -> bool;
    fn is_embed(&self, uri: &Uri) -> bool;
    /// The tool the request forces the model to call, if any.
    fn forced_tool(&self, body: &Value) -> Option<String>;
    /// Whether the request asks for JSON output.
    fn json_mode(&self, body: &Value) -> bool;
    fn reply(&self, body: &Value, answer: &Answer) -> Value;
    /// The whole stream, framed (SSE events or NDJSON lines), one item per network write.
    fn stream(&self, body: &Value, answer: &Answer) -> Vec<String>;
    fn embed(&self, body: &Value) -> Value;
    /// Status and body of an error of this kind.
    fn error(&self, fault: Fault) -> (u16, String);
    /// The stream as bytes on the wire (binary framings override this).
    fn stream_bytes(&self, body: &Value, answer: &Answer) -> Vec<Vec<u8>> {
        self.stream(body, answer)
            .into_iter()
            .map(String::into_bytes)
            .collect()
    }
    fn stream_content_type(&self) -> &'static str {
        "text/event-stream"
    }
    /// Extra headers on an error response (AWS's `x-amzn-ErrorType`).
    fn error_headers(&self, fault: Fault) -> Vec<(&'static str, String)> {
        let _ = fault;
        vec![]
    }
    /// Whether the provider has this kind of error at all (Ollama has no content policy).
    fn supports(&self, fault: Fault) -> bool {
        let _ = fault;
        true
    }
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Value,
}

type Script = Arc<dyn Fn(usize) -> Fault + Send + Sync>;

#[derive(Clone)]
struct Shared {
    dialect: Arc<dyn Dialect>,
    script: Arc<Mutex<Script>>,
    log: Arc<Mutex<Vec<Recorded>>>,
}

pub struct FakeProvider {
    pub addr: SocketAddr,
    shared: Shared,
}

impl FakeProvider {
    pub async fn start(dialect: impl Dialect) -> FakeProvider {
        let shared = Shared {
            dialect: Arc::new(dialect),
            script: Arc::new(Mutex::new(Arc::new(|_| Fault::None))),
            log: Arc::default(),
        };
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeProvider { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn dialect_supports(&self, fault: Fault) -> bool {
        self.shared.dialect.supports(fault)
    }

    pub fn fail_with(&self, fault: Fault) {
        *self.shared.script.lock().unwrap() = Arc::new(move |_| fault);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the fake received a request")
    }
}

async fn handle(State(s): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = {
        let mut log = s.log.lock().unwrap();
        log.push(Recorded {
            uri: uri.to_string(),
            headers,
            body: body.clone(),
        });
        log.len() - 1
    };
    let fault = (s.script.lock().unwrap())(n);
    let d = &s.dialect;
    let json = |status: u16, text: String, extra: Vec<(&'static str, String)>| {
        let mut r = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("retry-after", "3");
        for (k, v) in extra {
            r = r.header(k, v);
        }
        r.body(Body::from(text)).unwrap()
    };
    match fault {
        Fault::None | Fault::Truncated => {}
        Fault::Garbage => return json(200, "<html>definitely not the API</html>".into(), vec![]),
        Fault::ErrorIn200 => return json(200, d.error(Fault::Server).1, vec![]),
        f => {
            let (status, text) = d.error(f);
            return json(status, text, d.error_headers(f));
        }
    }
    if d.is_embed(&uri) {
        return axum::Json(d.embed(&body)).into_response();
    }
    let answer = match d.forced_tool(&body) {
        Some(name) => Answer::Tool {
            name,
            arguments: serde_json::json!({"city": "Paris"}),
        },
        None if d.json_mode(&body) => Answer::Text(JSON_ANSWER.into()),
        None => Answer::Text(TEXT.into()),
    };
    if !d.streaming(&uri, &body) {
        return axum::Json(d.reply(&body, &answer)).into_response();
    }
    let mut events = d.stream_bytes(&body, &answer);
    if fault == Fault::Truncated {
        events.truncate(3);
    }
    let stream = futures_util::stream::iter(
        events
            .into_iter()
            .map(|e| Ok::<_, std::convert::Infallible>(Bytes::from(e))),
    );
    Response::builder()
        .header("content-type", d.stream_content_type())
        .body(Body::from_stream(stream))
        .unwrap()
}

/// One SSE event.
pub fn sse(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(e) => format!("event: {e}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

/// Splits text into word pieces, as models stream them.
pub fn pieces(text: &str) -> Vec<&str> {
    text.split_inclusive(' ').collect()
}
