//! The I/O half of every HTTP provider. A provider describes its wire format with [`Wire`] (pure
//! functions: build a request, parse a response, decode a stream event, classify an error) and
//! [`HttpProvider`] does the rest: send, check the status, read bounded bodies, frame and decode
//! streams, and refuse truncated ones.

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::{StreamExt, future::BoxFuture, stream::BoxStream};
use http::{HeaderMap, Method};

use super::{ChunkStream, HttpClient, Provider, ProviderError, client, sse};
use crate::domain::{ChatChunk, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, ErrorClass};

/// One upstream request, fully built.
pub struct HttpCall {
    pub method: Method,
    pub url: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// How a provider frames its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-Sent Events (OpenAI, Anthropic, Gemini, Cohere).
    Sse,
    /// One JSON object per line (Ollama).
    Ndjson,
    /// AWS event-stream binary frames (Bedrock ConverseStream); `event` is `:event-type`, or
    /// `exception:<type>` for an exception frame.
    AwsEventStream,
}

/// One framed stream message: an SSE event (`event` may be empty) or an NDJSON line (`event` empty).
pub struct Frame<'a> {
    pub event: &'a str,
    pub data: &'a str,
}

/// What a stream decoder made of one frame.
#[derive(Default)]
pub struct Decoded {
    pub chunks: Vec<ChatChunk>,
    /// The provider said the stream is complete (OpenAI's `[DONE]`, Anthropic's `message_stop` ...).
    pub done: bool,
}

/// Turns a provider's stream frames into canonical chunks. One per stream; it may keep state.
pub trait StreamDecoder: Send {
    fn decode(&mut self, frame: Frame<'_>) -> Result<Decoded, ProviderError>;
    /// At EOF without an explicit end: `true` if what was seen is a complete answer anyway.
    fn complete_at_eof(&self) -> bool {
        false
    }
}

/// A provider's wire format. Pure: no I/O, so each function is unit-testable on bytes.
pub trait Wire: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn model(&self) -> &str;
    /// A URL this wire calls; its host is the `server.address` of attempt spans.
    fn endpoint(&self) -> &str;
    fn chat_call(&self, req: &ChatRequest, stream: bool) -> Result<HttpCall, ProviderError>;
    fn parse_chat(&self, req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError>;
    fn framing(&self) -> Framing {
        Framing::Sse
    }
    fn stream_decoder(&self, req: &ChatRequest) -> Box<dyn StreamDecoder>;
    fn embed_call(&self, req: &EmbedRequest) -> Result<HttpCall, ProviderError> {
        let _ = req;
        Err(ProviderError::new(
            ErrorClass::Unsupported,
            format!("{} does not serve embeddings here", self.name()),
        ))
    }
    fn parse_embed(&self, req: &EmbedRequest, body: &[u8]) -> Result<EmbedResponse, ProviderError> {
        let _ = (req, body);
        Err(ProviderError::new(
            ErrorClass::Unsupported,
            format!("{} does not serve embeddings here", self.name()),
        ))
    }
    /// Classifies a non-2xx answer.
    fn parse_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError;
    /// Adds credentials that need I/O to obtain (an OAuth access token). Default: none needed.
    fn authorize<'a>(
        &'a self,
        call: &'a mut HttpCall,
        http: &'a HttpClient,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let _ = (call, http);
        Box::pin(async { Ok(()) })
    }
}

pub struct HttpProvider<W> {
    wire: W,
    http: HttpClient,
    server_address: Option<String>,
}

impl<W: Wire> HttpProvider<W> {
    pub fn new(wire: W, http: HttpClient) -> Self {
        let server_address = wire
            .endpoint()
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_string));
        Self {
            wire,
            http,
            server_address,
        }
    }

    async fn send(&self, mut call: HttpCall) -> Result<reqwest::Response, ProviderError> {
        self.wire.authorize(&mut call, &self.http).await?;
        crate::telemetry::propagation::inject_current(&mut call.headers);
        let req = self
            .http
            .request(call.method, &call.url)
            .headers(call.headers)
            .body(call.body);
        let resp = client::send(req).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let headers = resp.headers().clone();
        let body = client::read_body(resp).await.unwrap_or_default();
        let mut err = self.wire.parse_error(status.as_u16(), &headers, &body);
        // Every provider's Retry-After counts, whether or not its error body has its own delay.
        err.retry_after = err.retry_after.or_else(|| client::retry_after(&headers));
        Err(err)
    }
}

impl<W: Wire> Provider for HttpProvider<W> {
    fn name(&self) -> &'static str {
        self.wire.name()
    }

    fn upstream_model(&self) -> &str {
        self.wire.model()
    }

    fn server_address(&self) -> Option<&str> {
        self.server_address.as_deref()
    }

    fn chat<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            let resp = self.send(self.wire.chat_call(req, false)?).await?;
            let body = client::read_body(resp).await?;
            self.wire.parse_chat(req, &body)
        })
    }

    fn chat_stream<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChunkStream, ProviderError>> {
        Box::pin(async move {
            let resp = self.send(self.wire.chat_call(req, true)?).await?;
            Ok(decode_stream(
                resp.bytes_stream().boxed(),
                self.wire.framing(),
                self.wire.stream_decoder(req),
            ))
        })
    }

    fn embed<'a>(&'a self, req: &'a EmbedRequest) -> BoxFuture<'a, Result<EmbedResponse, ProviderError>> {
        Box::pin(async move {
            let resp = self.send(self.wire.embed_call(req)?).await?;
            let body = client::read_body(resp).await?;
            self.wire.parse_embed(req, &body)
        })
    }
}

/// Splits NDJSON into lines, across arbitrary chunk boundaries.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    const MAX_LINE: usize = 16 << 20;

    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, ProviderError> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line).trim().to_string();
            if !line.is_empty() {
                out.push(line);
            }
        }
        if self.buf.len() > Self::MAX_LINE {
            return Err(ProviderError::new(
                ErrorClass::MalformedResponse,
                "stream line longer than 16 MiB",
            ));
        }
        Ok(out)
    }

    fn rest(&mut self) -> Option<String> {
        let line = String::from_utf8_lossy(&std::mem::take(&mut self.buf))
            .trim()
            .to_string();
        (!line.is_empty()).then_some(line)
    }
}

enum Framer {
    Sse(sse::Decoder),
    Ndjson(Lines),
    Aws(AwsFrames),
}

/// AWS event-stream framing (length-prefixed, CRC-checked binary messages), decoded by smithy-rs.
#[derive(Default)]
struct AwsFrames {
    buf: bytes::BytesMut,
    decoder: aws_smithy_eventstream::frame::MessageFrameDecoder,
}

impl AwsFrames {
    const MAX_BUFFER: usize = 16 << 20;

    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<(String, String)>, ProviderError> {
        use aws_smithy_eventstream::frame::DecodedFrame;
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let bad = |e: &dyn std::fmt::Display| {
                ProviderError::new(
                    ErrorClass::MalformedResponse,
                    format!("bad event-stream frame: {e}"),
                )
            };
            match self.decoder.decode_frame(&mut self.buf).map_err(|e| bad(&e))? {
                DecodedFrame::Incomplete => break,
                DecodedFrame::Complete(msg) => {
                    let header = |name: &str| {
                        msg.headers()
                            .iter()
                            .find(|h| h.name().as_str() == name)
                            .and_then(|h| h.value().as_string().ok())
                            .map(|s| s.as_str().to_string())
                    };
                    let event = match header(":message-type").as_deref() {
                        Some("exception") => {
                            format!("exception:{}", header(":exception-type").unwrap_or_default())
                        }
                        Some("error") => format!("exception:{}", header(":error-code").unwrap_or_default()),
                        _ => header(":event-type").unwrap_or_default(),
                    };
                    out.push((event, String::from_utf8_lossy(msg.payload()).into_owned()));
                }
            }
        }
        if self.buf.len() > Self::MAX_BUFFER {
            return Err(ProviderError::new(
                ErrorClass::MalformedResponse,
                "event-stream frame larger than 16 MiB",
            ));
        }
        Ok(out)
    }
}

struct StreamState {
    body: BoxStream<'static, Result<Bytes, reqwest::Error>>,
    framer: Framer,
    decoder: Box<dyn StreamDecoder>,
    ready: VecDeque<ChatChunk>,
    /// Goes out after the chunks decoded before it.
    error: Option<ProviderError>,
    finished: bool,
}

impl StreamState {
    /// Decodes the frames in `bytes` (or the rest at EOF); `Ok(true)` when the provider ended the stream.
    fn take(&mut self, bytes: Option<&[u8]>) -> Result<bool, ProviderError> {
        let frames: Vec<(String, String)> = match (&mut self.framer, bytes) {
            (Framer::Sse(d), Some(b)) => {
                let evs = d
                    .feed(b)
                    .map_err(|e| ProviderError::new(ErrorClass::MalformedResponse, e.to_string()))?;
                evs.into_iter().map(|e| (e.event, e.data)).collect()
            }
            (Framer::Sse(_), None) => Vec::new(),
            (Framer::Ndjson(l), Some(b)) => l.feed(b)?.into_iter().map(|d| (String::new(), d)).collect(),
            (Framer::Ndjson(l), None) => l.rest().into_iter().map(|d| (String::new(), d)).collect(),
            (Framer::Aws(a), Some(b)) => a.feed(b)?,
            (Framer::Aws(_), None) => Vec::new(),
        };
        for (event, data) in frames {
            let d = self.decoder.decode(Frame {
                event: &event,
                data: &data,
            })?;
            self.ready.extend(d.chunks);
            if d.done {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Frames and decodes a streaming body. Ends when the provider says so; an EOF before that is an
/// error (a truncated stream) unless the decoder saw a complete answer; never a silent success.
pub fn decode_stream(
    body: BoxStream<'static, Result<Bytes, reqwest::Error>>,
    framing: Framing,
    decoder: Box<dyn StreamDecoder>,
) -> ChunkStream {
    let framer = match framing {
        Framing::Sse => Framer::Sse(sse::Decoder::default()),
        Framing::Ndjson => Framer::Ndjson(Lines::default()),
        Framing::AwsEventStream => Framer::Aws(AwsFrames::default()),
    };
    let state = StreamState {
        body,
        framer,
        decoder,
        ready: VecDeque::new(),
        error: None,
        finished: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(c) = st.ready.pop_front() {
                return Some((Ok(c), st));
            }
            if let Some(e) = st.error.take() {
                st.finished = true;
                return Some((Err(e), st));
            }
            if st.finished {
                return None;
            }
            let step = match st.body.next().await {
                Some(Ok(bytes)) => st.take(Some(&bytes)),
                Some(Err(e)) => Err(client::transport_error(e)),
                None => match st.take(None) {
                    Ok(false) if !st.decoder.complete_at_eof() => Err(ProviderError::new(
                        ErrorClass::Connection,
                        "upstream stream ended before it completed",
                    )),
                    Ok(_) => Ok(true),
                    Err(e) => Err(e),
                },
            };
            match step {
                Ok(done) => st.finished = done,
                Err(e) => st.error = Some(e),
            }
        }
    })
    .boxed()
}
