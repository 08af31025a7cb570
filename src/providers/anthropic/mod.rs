//! Anthropic Messages API (`POST /v1/messages`): request translation, response and stream parsing,
//! error classification. Pure; the I/O is `providers::http`.

mod stream;
pub(crate) mod wire;

use http::{HeaderMap, HeaderValue, Method, header};

use super::{
    ProviderError,
    common::encode,
    http::{HttpCall, StreamDecoder, Wire},
};
use crate::providers::common;
use crate::{
    config::DeploymentConfig,
    domain::{ChatRequest, ChatResponse},
};

/// `anthropic-version` header value: the stable Messages API version.
const API_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when the request sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;
/// The tool that carries structured output when a request asks for JSON (`response_format`).
pub const JSON_TOOL: &str = "json_output";

pub struct Anthropic {
    model: String,
    url: String,
    headers: HeaderMap,
    drop_params: bool,
}

impl Anthropic {
    pub fn new(dep: &DeploymentConfig) -> Self {
        let base = common::base_url(dep);
        let base = base.strip_suffix("/v1").unwrap_or(&base);
        let mut headers = common::json_headers();
        headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        if let Some(key) = &dep.api_key {
            common::insert_secret(
                &mut headers,
                http::HeaderName::from_static("x-api-key"),
                key.expose(),
            );
        }
        Self {
            model: dep.model.clone(),
            url: format!("{base}/v1/messages"),
            headers,
            drop_params: dep.drop_params,
        }
    }
}

impl Wire for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn endpoint(&self) -> &str {
        &self.url
    }

    fn chat_call(&self, req: &ChatRequest, stream: bool) -> Result<HttpCall, ProviderError> {
        let body = wire::request(req, &self.model, stream, self.drop_params)?;
        let mut headers = self.headers.clone();
        if stream {
            headers.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        Ok(HttpCall {
            method: Method::POST,
            url: self.url.clone(),
            headers,
            body: encode(&body)?,
        })
    }

    fn parse_chat(&self, req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        wire::parse_response(body, req.response_format.is_some())
    }

    fn stream_decoder(&self, req: &ChatRequest) -> Box<dyn StreamDecoder> {
        Box::new(stream::Decoder::new(req.response_format.is_some()))
    }

    fn parse_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        wire::parse_error(Some(status), headers, body)
    }
}

#[cfg(test)]
mod tests;
