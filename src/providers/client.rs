//! The one place that does upstream HTTP: a shared, pooled reqwest client, and helpers that turn
//! transport failures and bodies into classified results.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::ProviderError;
use crate::domain::ErrorClass;

/// Largest upstream body we buffer (a unary response or an error body).
const MAX_BODY: usize = 32 << 20;

/// Shared upstream client: connection pooling, HTTP/1.1 keep-alive and HTTP/2, TCP_NODELAY.
/// Per-attempt deadlines are applied by the router around each call, so dropping a call cancels it.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
}

impl HttpClient {
    pub fn new() -> Result<Self, reqwest::Error> {
        // reqwest is built without a bundled crypto provider; ring is ours. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let inner = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .http2_adaptive_window(true)
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { inner })
    }

    pub fn request(&self, method: http::Method, url: &str) -> reqwest::RequestBuilder {
        self.inner.request(method, url)
    }

    /// The shared client itself, for the gateway's own outbound calls (alert webhooks).
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.inner
    }
}

/// Sends a request; transport failures become `Connection` / `Timeout` errors.
pub async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, ProviderError> {
    req.send().await.map_err(transport_error)
}

pub fn transport_error(e: reqwest::Error) -> ProviderError {
    let class = if e.is_timeout() {
        ErrorClass::Timeout
    } else if e.is_decode() || e.is_body() {
        ErrorClass::MalformedResponse
    } else {
        ErrorClass::Connection
    };
    // reqwest's Display includes the URL, never headers, so no key can leak through it.
    ProviderError::new(class, format!("upstream transport error: {}", error_chain(&e)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Reads a whole body, refusing bodies larger than [`MAX_BODY`].
pub async fn read_body(mut resp: reqwest::Response) -> Result<Bytes, ProviderError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
        if buf.len() + chunk.len() > MAX_BODY {
            return Err(ProviderError::new(
                ErrorClass::MalformedResponse,
                format!("upstream body larger than {MAX_BODY} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// `Retry-After` (seconds or an HTTP date is not supported: seconds only, as providers send) or
/// OpenAI's `retry-after-ms`.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    if let Some(ms) = get("retry-after-ms") {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    get("retry-after").and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// The error class an HTTP status implies, before looking at the body.
pub fn class_for_status(status: u16) -> ErrorClass {
    match status {
        400 | 413 | 422 => ErrorClass::BadRequest,
        401 | 403 => ErrorClass::Authentication,
        404 => ErrorClass::NotFound,
        408 | 504 => ErrorClass::Timeout,
        429 => ErrorClass::RateLimited,
        503 | 529 => ErrorClass::Overloaded,
        _ => ErrorClass::ServerError,
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
}
