//! OpenAI Chat Completions and Embeddings, for OpenAI itself and every compatible server
//! (vLLM, Ollama's /v1, Groq, Together, Mistral, ...).

mod wire;

use std::collections::VecDeque;

use futures_util::{StreamExt, future::BoxFuture};
use http::{HeaderMap, HeaderValue, header};

use super::{ChunkStream, HttpClient, Provider, ProviderError, client, sse};
use crate::{
    config::DeploymentConfig,
    domain::{ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, ErrorClass},
};

pub struct OpenAi {
    name: &'static str,
    model: String,
    chat_url: String,
    embed_url: String,
    /// Content type and, when a key is configured, `Authorization` (marked sensitive).
    headers: HeaderMap,
    http: HttpClient,
}

impl OpenAi {
    pub fn new(dep: &DeploymentConfig, http: HttpClient) -> Self {
        let base = dep
            .api_base
            .as_deref()
            .or(dep.provider.default_api_base)
            .unwrap_or_default()
            .trim_end_matches('/');
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = &dep.api_key
            && let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
        {
            v.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, v);
        }
        Self {
            name: dep.provider.name,
            model: dep.model.clone(),
            chat_url: format!("{base}/chat/completions"),
            embed_url: format!("{base}/embeddings"),
            headers,
            http,
        }
    }

    async fn post(&self, url: &str, body: Vec<u8>, stream: bool) -> Result<reqwest::Response, ProviderError> {
        let mut req = self.http.post(url).headers(self.headers.clone()).body(body);
        if stream {
            req = req.header(header::ACCEPT, "text/event-stream");
        }
        let resp = client::send(req).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let headers = resp.headers().clone();
        let body = client::read_body(resp).await.unwrap_or_default();
        Err(wire::parse_error(status.as_u16(), &headers, &body))
    }
}

fn encode(body: &impl serde::Serialize) -> Result<Vec<u8>, ProviderError> {
    serde_json::to_vec(body)
        .map_err(|e| ProviderError::new(ErrorClass::BadRequest, format!("cannot encode request: {e}")))
}

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        self.name
    }

    fn upstream_model(&self) -> &str {
        &self.model
    }

    fn chat<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            let body = encode(&wire::chat_body(req, &self.model, false))?;
            let resp = self.post(&self.chat_url, body, false).await?;
            let bytes = client::read_body(resp).await?;
            wire::parse_chat(&bytes)
        })
    }

    fn chat_stream<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChunkStream, ProviderError>> {
        Box::pin(async move {
            let body = encode(&wire::chat_body(req, &self.model, true))?;
            let resp = self.post(&self.chat_url, body, true).await?;
            Ok(chunk_stream(resp))
        })
    }

    fn embed<'a>(&'a self, req: &'a EmbedRequest) -> BoxFuture<'a, Result<EmbedResponse, ProviderError>> {
        Box::pin(async move {
            let body = encode(&wire::embed_body(req, &self.model))?;
            let resp = self.post(&self.embed_url, body, false).await?;
            let bytes = client::read_body(resp).await?;
            wire::parse_embeddings(&bytes, req.input.len())
        })
    }
}

struct StreamState {
    body: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, reqwest::Error>>,
    decoder: sse::Decoder,
    events: VecDeque<sse::Event>,
    /// A choice reported its finish_reason: an EOF after it is a complete stream even without `[DONE]`.
    finished: bool,
    done: bool,
}

/// Turns an SSE response body into chunks. Ends at `data: [DONE]`; an EOF before any choice finished is
/// an error (a truncated stream), never a silent success.
fn chunk_stream(resp: reqwest::Response) -> ChunkStream {
    let state = StreamState {
        body: resp.bytes_stream().boxed(),
        decoder: sse::Decoder::default(),
        events: VecDeque::new(),
        finished: false,
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(ev) = st.events.pop_front() {
                if ev.data == "[DONE]" {
                    return None;
                }
                if ev.event == "error" {
                    st.done = true;
                    let err = wire::parse_error(500, &HeaderMap::new(), ev.data.as_bytes());
                    return Some((Err(err), st));
                }
                let item = wire::parse_chunk(&ev.data);
                match &item {
                    Ok(c) => st.finished |= c.choices.iter().any(|c| c.finish_reason.is_some()),
                    Err(_) => st.done = true,
                }
                return Some((item, st));
            }
            match st.body.next().await {
                Some(Ok(bytes)) => match st.decoder.feed(&bytes) {
                    Ok(evs) => st.events.extend(evs),
                    Err(e) => {
                        st.done = true;
                        return Some((
                            Err(ProviderError::new(ErrorClass::MalformedResponse, e.to_string())),
                            st,
                        ));
                    }
                },
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(client::transport_error(e)), st));
                }
                None => {
                    st.done = true;
                    if st.finished {
                        return None;
                    }
                    let err = ProviderError::new(
                        ErrorClass::Connection,
                        "upstream stream ended before it completed",
                    );
                    return Some((Err(err), st));
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests;
