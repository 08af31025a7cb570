//! OpenAI Chat Completions and Embeddings, for OpenAI itself, Azure OpenAI and every compatible
//! server (vLLM, Ollama's /v1, Groq, Together, Mistral, ...).

pub(crate) mod wire;

use http::{HeaderMap, HeaderValue, Method, header};

use super::{
    ProviderError, common,
    common::encode,
    http::{Decoded, Frame, HttpCall, StreamDecoder, Wire},
};
use crate::{
    config::DeploymentConfig,
    domain::{ChatRequest, ChatResponse, EmbedRequest, EmbedResponse},
};

pub struct OpenAi {
    name: &'static str,
    model: String,
    chat_url: String,
    embed_url: String,
    /// Content type and credentials (marked sensitive, so they never print).
    headers: HeaderMap,
}

impl OpenAi {
    pub fn new(dep: &DeploymentConfig) -> Self {
        let base = common::base_url(dep);
        let headers = common::bearer_headers(dep);
        Self {
            name: dep.provider.name,
            model: dep.model.clone(),
            chat_url: format!("{base}/chat/completions"),
            embed_url: format!("{base}/embeddings"),
            headers,
        }
    }

    /// Azure OpenAI: the deployment is in the URL, the key in `api-key`, the version in the query.
    pub fn azure(dep: &DeploymentConfig, api_version: &str) -> Self {
        let base = dep.api_base.as_deref().unwrap_or_default().trim_end_matches('/');
        let mut headers = common::json_headers();
        if let Some(key) = &dep.api_key {
            common::insert_secret(
                &mut headers,
                http::HeaderName::from_static("api-key"),
                key.expose(),
            );
        }
        let root = format!("{base}/openai/deployments/{}", dep.model);
        Self {
            name: dep.provider.name,
            model: dep.model.clone(),
            chat_url: format!("{root}/chat/completions?api-version={api_version}"),
            embed_url: format!("{root}/embeddings?api-version={api_version}"),
            headers,
        }
    }

    fn call(&self, url: &str, body: &impl serde::Serialize, stream: bool) -> Result<HttpCall, ProviderError> {
        let mut headers = self.headers.clone();
        if stream {
            headers.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        Ok(HttpCall {
            method: Method::POST,
            url: url.to_string(),
            headers,
            body: encode(body)?,
        })
    }
}

impl Wire for OpenAi {
    fn name(&self) -> &'static str {
        self.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn endpoint(&self) -> &str {
        &self.chat_url
    }

    fn chat_call(&self, req: &ChatRequest, stream: bool) -> Result<HttpCall, ProviderError> {
        self.call(&self.chat_url, &wire::chat_body(req, &self.model, stream), stream)
    }

    fn parse_chat(&self, _req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        wire::parse_chat(body)
    }

    fn stream_decoder(&self, _req: &ChatRequest) -> Box<dyn StreamDecoder> {
        Box::new(Decoder { finished: false })
    }

    fn embed_call(&self, req: &EmbedRequest) -> Result<HttpCall, ProviderError> {
        self.call(&self.embed_url, &wire::embed_body(req, &self.model), false)
    }

    fn parse_embed(&self, req: &EmbedRequest, body: &[u8]) -> Result<EmbedResponse, ProviderError> {
        wire::parse_embeddings(body, req.input.len())
    }

    fn parse_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        wire::parse_error(status, headers, body)
    }
}

/// OpenAI's stream: `data:` chunks until `data: [DONE]`; an `error` event or an error object is an error.
struct Decoder {
    /// A choice reported its finish_reason: an EOF after it is complete even without `[DONE]`.
    finished: bool,
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, frame: Frame<'_>) -> Result<Decoded, ProviderError> {
        if frame.data == "[DONE]" {
            return Ok(Decoded {
                chunks: Vec::new(),
                done: true,
            });
        }
        if frame.event == "error" {
            return Err(wire::parse_error(500, &HeaderMap::new(), frame.data.as_bytes()));
        }
        let chunk = wire::parse_chunk(frame.data)?;
        self.finished |= chunk.choices.iter().any(|c| c.finish_reason.is_some());
        Ok(Decoded {
            chunks: vec![chunk],
            done: false,
        })
    }

    fn complete_at_eof(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests;
