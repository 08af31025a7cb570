//! Google Gemini (Generative Language API): `generateContent`, `streamGenerateContent?alt=sse`,
//! `batchEmbedContents`. Pure translation; the I/O is `providers::http`.

mod vertex;
mod wire;

use http::{HeaderMap, Method, header};

use super::{
    ProviderError,
    common::encode,
    http::{Decoded, Frame, HttpCall, StreamDecoder, Wire},
};
use crate::providers::common;
use crate::{
    config::DeploymentConfig,
    domain::{ChatChunk, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse},
};

pub struct Gemini {
    name: &'static str,
    model: String,
    base: String,
    headers: HeaderMap,
    drop_params: bool,
    /// Vertex AI: an OAuth token instead of an API key, and Vertex's embeddings API.
    vertex: Option<std::sync::Arc<vertex::TokenSource>>,
}

impl Gemini {
    pub fn new(dep: &DeploymentConfig) -> Self {
        let base = common::base_url(dep);
        let mut headers = common::json_headers();
        if let Some(key) = &dep.api_key {
            common::insert_secret(
                &mut headers,
                http::HeaderName::from_static("x-goog-api-key"),
                key.expose(),
            );
        }
        let model = dep
            .model
            .strip_prefix("models/")
            .unwrap_or(&dep.model)
            .to_string();
        Self {
            name: "gemini",
            base: format!("{base}/v1beta/models/{model}"),
            model,
            headers,
            drop_params: dep.drop_params,
            vertex: None,
        }
    }

    /// Gemini on Vertex AI: `{host}/v1/projects/{p}/locations/{l}/publishers/google/models/{m}`.
    pub fn vertex(dep: &DeploymentConfig) -> Self {
        let v = &dep.vertex;
        let host = match &dep.api_base {
            Some(b) => b.trim_end_matches('/').to_string(),
            None if v.location == "global" => "https://aiplatform.googleapis.com".to_string(),
            None => format!("https://{}-aiplatform.googleapis.com", v.location),
        };
        let headers = common::json_headers();
        let source = match (&v.credentials, &dep.api_key) {
            (Some(json), _) => {
                let parsed: serde_json::Value = serde_json::from_str(json.expose()).unwrap_or_default();
                vertex::TokenSource::ServiceAccount(vertex::ServiceAccount::from_json(&parsed))
            }
            (None, Some(token)) => vertex::TokenSource::Static(token.clone()),
            (None, None) => vertex::TokenSource::Static(crate::domain::Secret::new("")),
        };
        Self {
            name: "vertex_ai",
            base: format!(
                "{host}/v1/projects/{}/locations/{}/publishers/google/models/{}",
                v.project, v.location, dep.model
            ),
            model: dep.model.clone(),
            headers,
            drop_params: dep.drop_params,
            vertex: Some(std::sync::Arc::new(source)),
        }
    }

    fn call(&self, url: String, body: &serde_json::Value) -> Result<HttpCall, ProviderError> {
        Ok(HttpCall {
            method: Method::POST,
            url,
            headers: self.headers.clone(),
            body: encode(body)?,
        })
    }
}

impl Wire for Gemini {
    fn name(&self) -> &'static str {
        self.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn endpoint(&self) -> &str {
        &self.base
    }

    fn chat_call(&self, req: &ChatRequest, stream: bool) -> Result<HttpCall, ProviderError> {
        let body = wire::request(req, self.drop_params)?;
        let url = if stream {
            format!("{}:streamGenerateContent?alt=sse", self.base)
        } else {
            format!("{}:generateContent", self.base)
        };
        self.call(url, &body)
    }

    fn parse_chat(&self, _req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        let r = wire::parse(body)?;
        let mut calls = 0;
        let (message, finish) = wire::candidate_message(&r, &mut calls)?;
        Ok(ChatResponse {
            id: r.response_id.clone().unwrap_or_default(),
            model: r.model_version.clone().unwrap_or_else(|| self.model.clone()),
            created: common::now(),
            choices: vec![crate::domain::Choice {
                index: 0,
                message,
                finish_reason: Some(finish),
            }],
            usage: r.usage(),
            system_fingerprint: None,
        })
    }

    fn stream_decoder(&self, _req: &ChatRequest) -> Box<dyn StreamDecoder> {
        Box::new(Decoder {
            model: self.model.clone(),
            started: false,
            finished: false,
            calls: 0,
        })
    }

    fn embed_call(&self, req: &EmbedRequest) -> Result<HttpCall, ProviderError> {
        if self.vertex.is_some() {
            return self.call(format!("{}:predict", self.base), &wire::vertex_embed_request(req));
        }
        self.call(
            format!("{}:batchEmbedContents", self.base),
            &wire::embed_request(req, &self.model),
        )
    }

    fn parse_embed(&self, req: &EmbedRequest, body: &[u8]) -> Result<EmbedResponse, ProviderError> {
        if self.vertex.is_some() {
            return wire::parse_vertex_embed(req, body, &self.model);
        }
        wire::parse_embed(req, body, &self.model)
    }

    fn authorize<'a>(
        &'a self,
        call: &'a mut HttpCall,
        http: &'a crate::providers::HttpClient,
    ) -> futures_util::future::BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            if let Some(source) = &self.vertex {
                call.headers
                    .insert(header::AUTHORIZATION, source.header(http).await?);
            }
            Ok(())
        })
    }

    fn parse_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        wire::parse_error(Some(status), headers, body)
    }
}

/// Each SSE event is a whole `GenerateContentResponse` carrying the next parts; the last one has
/// the finish reason and usage. There is no end marker: EOF after a finish reason is the end.
struct Decoder {
    model: String,
    started: bool,
    finished: bool,
    calls: u32,
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, frame: Frame<'_>) -> Result<Decoded, ProviderError> {
        let r = wire::parse(frame.data.as_bytes())?;
        let chunk = |choices, usage| ChatChunk {
            id: r.response_id.clone().unwrap_or_default(),
            model: r.model_version.clone().unwrap_or_else(|| self.model.clone()),
            created: common::now(),
            choices,
            usage,
        };
        let mut out = Decoded::default();
        let (delta, finish) = wire::candidate_delta(&r, &mut self.calls, !self.started)?;
        self.started = true;
        self.finished |= finish.is_some();
        out.chunks.push(chunk(
            vec![crate::domain::ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
            }],
            None,
        ));
        if finish.is_some() && r.usage_metadata.is_some() {
            out.chunks.push(chunk(Vec::new(), Some(r.usage())));
        }
        Ok(out)
    }

    fn complete_at_eof(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests;
