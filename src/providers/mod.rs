//! Upstream providers behind one trait. Each wire format is a module of pure translate/parse
//! functions; HTTP I/O lives in [`client`] only, and the router never sees a wire type.

mod anthropic;
mod bedrock;
pub mod client;
mod cohere;
mod common;
mod gemini;
pub mod http;
mod mock;
mod ollama;
mod openai;
pub mod sse;
#[cfg(test)]
mod stream_tests;

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::{Stream, future::BoxFuture};

use crate::{
    config::{DeploymentConfig, WireFormat},
    domain::{ChatChunk, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, ErrorClass},
};
pub use client::HttpClient;

/// Chunks of one upstream stream. Dropping it cancels the upstream request.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, ProviderError>> + Send>>;

/// A failed upstream call, classified. `message` is our own short description for logs and spans;
/// it never carries a provider key and is not sent to callers verbatim.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{class}{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct ProviderError {
    pub class: ErrorClass,
    pub status: Option<u16>,
    pub message: String,
    /// From `Retry-After` / `retry-after-ms`, when the provider sent one.
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            status: None,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// One upstream deployment's API, in our canonical types.
pub trait Provider: Send + Sync {
    /// Provider name for routes and telemetry, e.g. `openai`.
    fn name(&self) -> &'static str;
    /// Model name sent upstream.
    fn upstream_model(&self) -> &str;
    /// The upstream host, where there is one.
    fn server_address(&self) -> Option<&str> {
        None
    }
    fn chat<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, ProviderError>>;
    /// Resolves once the upstream accepted the request (status and headers received).
    fn chat_stream<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChunkStream, ProviderError>>;
    fn embed<'a>(&'a self, req: &'a EmbedRequest) -> BoxFuture<'a, Result<EmbedResponse, ProviderError>>;
}

/// Azure OpenAI `api-version` when neither the deployment nor `AZURE_API_VERSION` sets one (GA).
pub const AZURE_API_VERSION: &str = "2024-10-21";

/// Pure translation and parsing entry points for the criterion benchmarks in `benches/` (the wire
/// modules stay private). Not part of the API.
#[doc(hidden)]
pub mod bench {
    use crate::domain::{ChatChunk, ChatRequest, ChatResponse};

    /// The OpenAI request body, serialised.
    pub fn openai_body(req: &ChatRequest) -> Vec<u8> {
        serde_json::to_vec(&super::openai::wire::chat_body(req, "gpt-4o", false)).unwrap_or_default()
    }

    pub fn openai_parse(body: &[u8]) -> Option<ChatResponse> {
        super::openai::wire::parse_chat(body).ok()
    }

    pub fn openai_chunk(data: &str) -> Option<ChatChunk> {
        super::openai::wire::parse_chunk(data).ok()
    }

    /// The Anthropic Messages request body, serialised.
    pub fn anthropic_body(req: &ChatRequest) -> Vec<u8> {
        super::anthropic::wire::request(req, "claude-sonnet-4-5", false, true)
            .map(|v| serde_json::to_vec(&v).unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn anthropic_parse(body: &[u8]) -> Option<ChatResponse> {
        super::anthropic::wire::parse_response(body, false).ok()
    }
}

/// Builds the provider for one configured deployment.
pub fn build(dep: &DeploymentConfig, http: &HttpClient) -> Arc<dyn Provider> {
    if let Some(text) = &dep.mock_response {
        return Arc::new(mock::Mock::new(dep.provider.name, &dep.model, text));
    }
    match dep.provider.wire {
        WireFormat::OpenAi => Arc::new(http::HttpProvider::new(openai::OpenAi::new(dep), http.clone())),
        WireFormat::Azure => {
            let version = dep.api_version.as_deref().unwrap_or(AZURE_API_VERSION);
            Arc::new(http::HttpProvider::new(
                openai::OpenAi::azure(dep, version),
                http.clone(),
            ))
        }
        WireFormat::Anthropic => Arc::new(http::HttpProvider::new(
            anthropic::Anthropic::new(dep),
            http.clone(),
        )),
        WireFormat::Gemini => Arc::new(http::HttpProvider::new(gemini::Gemini::new(dep), http.clone())),
        WireFormat::Ollama => Arc::new(http::HttpProvider::new(ollama::Ollama::new(dep), http.clone())),
        WireFormat::Cohere => Arc::new(http::HttpProvider::new(cohere::Cohere::new(dep), http.clone())),
        WireFormat::Bedrock => Arc::new(http::HttpProvider::new(bedrock::Bedrock::new(dep), http.clone())),
        WireFormat::Vertex => Arc::new(http::HttpProvider::new(gemini::Gemini::vertex(dep), http.clone())),
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;
    use crate::config::Config;

    /// The host each provider really calls: fixed, derived from region/location, or overridden.
    #[test]
    fn server_address_is_the_host_the_provider_calls() {
        let yaml = "model_list:
  - {model_name: a, litellm_params: {model: openai/gpt-4o}}
  - {model_name: b, litellm_params: {model: bedrock/anthropic.claude-3-haiku, aws_region_name: us-west-2}}
  - {model_name: c, litellm_params: {model: vertex_ai/gemini-1.5-pro, vertex_project: p, vertex_location: europe-west4, api_key: t}}
  - {model_name: d, litellm_params: {model: vertex_ai/gemini-1.5-pro, vertex_project: p, vertex_location: global, api_key: t}}
  - {model_name: e, litellm_params: {model: openai/llama3, api_base: 'http://vllm.internal:8000/v1'}}
";
        let config = Config::parse(yaml, &|_| None).unwrap();
        let http = HttpClient::new().unwrap();
        let hosts: Vec<Option<String>> = config
            .deployments
            .iter()
            .map(|d| build(d, &http).server_address().map(str::to_string))
            .collect();
        let want = [
            "api.openai.com",
            "bedrock-runtime.us-west-2.amazonaws.com",
            "europe-west4-aiplatform.googleapis.com",
            "aiplatform.googleapis.com",
            "vllm.internal",
        ];
        assert_eq!(hosts, want.map(|h| Some(h.to_string())));
    }
}
