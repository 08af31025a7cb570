//! AWS Bedrock Converse and ConverseStream (AWS event-stream framing), SigV4-signed with the
//! maintained `aws-sigv4` crate; embeddings through `InvokeModel` (Titan, Cohere on Bedrock).

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use serde_json::{Map, Value, json};

use super::{
    ProviderError, client,
    common::encode,
    common::{data_url, now, unsupported},
    http::{Decoded, Frame, Framing, HttpCall, StreamDecoder, Wire},
};
use crate::providers::common;
use crate::{
    config::DeploymentConfig,
    domain::{
        ChatChunk, ChatRequest, ChatResponse, ChunkChoice, Content, ContentPart, Delta, EmbedRequest,
        EmbedResponse, ErrorClass, FinishReason, Message, ResponseFormat, Role, ToolCall, ToolCallDelta,
        ToolChoice, Usage,
    },
};

/// Structured output rides on a forced tool, as with Anthropic.
const JSON_TOOL: &str = "json_output";

enum Auth {
    SigV4 {
        credentials: aws_credential_types::Credentials,
    },
    /// A Bedrock API key, sent as a bearer token.
    Bearer(HeaderValue),
    None,
}

pub struct Bedrock {
    model: String,
    base: String,
    region: String,
    auth: Auth,
    drop_params: bool,
}

impl Bedrock {
    pub fn new(dep: &DeploymentConfig) -> Self {
        let region = dep.aws.region.clone().unwrap_or_default();
        let base = dep
            .api_base
            .clone()
            .unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com"))
            .trim_end_matches('/')
            .to_string();
        let auth = match (&dep.aws.access_key_id, &dep.aws.secret_access_key, &dep.api_key) {
            (Some(id), Some(secret), _) => Auth::SigV4 {
                credentials: aws_credential_types::Credentials::new(
                    id.clone(),
                    secret.expose().to_string(),
                    dep.aws.session_token.as_ref().map(|t| t.expose().to_string()),
                    None,
                    "switchboard-config",
                ),
            },
            (_, _, Some(key)) => match HeaderValue::from_str(&format!("Bearer {}", key.expose())) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    Auth::Bearer(v)
                }
                Err(_) => Auth::None,
            },
            _ => Auth::None,
        };
        Self {
            model: dep.model.clone(),
            base,
            region,
            auth,
            drop_params: dep.drop_params,
        }
    }

    fn url(&self, action: &str) -> String {
        // The model id goes in the path; `:` (as in `...-v1:0`) must be percent-encoded.
        let id: String = self.model.replace(':', "%3A");
        format!("{}/model/{id}/{action}", self.base)
    }

    /// Signs exactly the bytes that will be sent.
    fn call(&self, url: String, body: Vec<u8>, accept: &'static str) -> Result<HttpCall, ProviderError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        match &self.auth {
            Auth::SigV4 { credentials } => {
                use aws_sigv4::{
                    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
                    sign::v4,
                };
                let identity = credentials.clone().into();
                let failed = |e: &dyn std::fmt::Display| {
                    ProviderError::new(
                        ErrorClass::Authentication,
                        format!("cannot sign the request: {e}"),
                    )
                };
                let params = v4::SigningParams::builder()
                    .identity(&identity)
                    .region(&self.region)
                    .name("bedrock")
                    .time(SystemTime::now())
                    .settings(SigningSettings::default())
                    .build()
                    .map_err(|e| failed(&e))?
                    .into();
                let pairs: Vec<(String, String)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                    .collect();
                let signable = SignableRequest::new(
                    "POST",
                    url.as_str(),
                    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    SignableBody::Bytes(&body),
                )
                .map_err(|e| failed(&e))?;
                let (instructions, _) = sign(signable, &params).map_err(|e| failed(&e))?.into_parts();
                for (name, value) in instructions.headers() {
                    if let (Ok(n), Ok(mut v)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
                        v.set_sensitive(true);
                        headers.insert(n, v);
                    }
                }
            }
            Auth::Bearer(v) => {
                headers.insert(header::AUTHORIZATION, v.clone());
            }
            Auth::None => {}
        }
        Ok(HttpCall {
            method: Method::POST,
            url,
            headers,
            body,
        })
    }
}

fn image_block(url: &str) -> Result<Value, ProviderError> {
    let (mime, data) = data_url(url).ok_or_else(|| {
        ProviderError::new(
            ErrorClass::Unsupported,
            "bedrock takes images inline only (data: URLs), not by URL",
        )
    })?;
    let format = mime.strip_prefix("image/").unwrap_or("png");
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

/// The Converse body for `req`.
pub fn request(req: &ChatRequest, drop_params: bool) -> Result<Value, ProviderError> {
    let p = &req.params;
    let checks = [
        ("seed", p.seed.is_some()),
        ("presence_penalty", p.presence_penalty.is_some()),
        ("frequency_penalty", p.frequency_penalty.is_some()),
        ("n", p.n.is_some_and(|n| n > 1)),
    ];
    if !drop_params && let Some((param, _)) = checks.iter().find(|(_, set)| *set) {
        return Err(unsupported(param, "bedrock"));
    }
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let mut blocks = Vec::new();
        let role = match m.role {
            Role::System | Role::Developer => {
                system.push(json!({"text": m.content.joined_text()}));
                continue;
            }
            Role::Tool => {
                blocks.push(
                    json!({"toolResult": {"toolUseId": m.tool_call_id.clone().unwrap_or_default(),
                    "content": [{"text": m.content.joined_text()}]}}),
                );
                "user"
            }
            r => {
                match &m.content {
                    Content::Text(t) if t.is_empty() => {}
                    Content::Text(t) => blocks.push(json!({"text": t})),
                    Content::Parts(parts) => {
                        for part in parts {
                            blocks.push(match part {
                                ContentPart::Text(t) => json!({"text": t}),
                                ContentPart::Image { url, .. } => image_block(url)?,
                            });
                        }
                    }
                }
                for (j, c) in m.tool_calls.iter().enumerate() {
                    let input: Value = serde_json::from_str(if c.arguments.trim().is_empty() {
                        "{}"
                    } else {
                        &c.arguments
                    })
                    .map_err(|e| {
                        ProviderError::new(
                            ErrorClass::BadRequest,
                            format!("messages[{i}].tool_calls[{j}].arguments is not JSON: {e}"),
                        )
                    })?;
                    blocks.push(json!({"toolUse": {"toolUseId": c.id, "name": c.name, "input": input}}));
                }
                if r == Role::Assistant { "assistant" } else { "user" }
            }
        };
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let mut body = Map::new();
    body.insert(
        "messages".into(),
        turns
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect::<Vec<_>>()
            .into(),
    );
    if !system.is_empty() {
        body.insert("system".into(), system.into());
    }
    let mut inference = Map::new();
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            inference.insert(k.into(), v);
        }
    };
    set("maxTokens", p.max_tokens.map(Value::from));
    set("temperature", p.temperature.map(Value::from));
    set("topP", p.top_p.map(Value::from));
    set(
        "stopSequences",
        (!p.stop.is_empty()).then(|| Value::from(p.stop.clone())),
    );
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    let mut tools: Vec<Value> = if matches!(req.tool_choice, Some(ToolChoice::None)) {
        vec![]
    } else {
        req.tools
            .iter()
            .map(|t| {
                let schema = t.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                json!({"toolSpec": {"name": t.name, "description": t.description.clone().unwrap_or_else(|| t.name.clone()), "inputSchema": {"json": schema}}})
            })
            .collect()
    };
    let mut choice = match &req.tool_choice {
        Some(ToolChoice::Required) => Some(json!({"any": {}})),
        Some(ToolChoice::Function(name)) => Some(json!({"tool": {"name": name}})),
        Some(ToolChoice::Auto) if !tools.is_empty() => Some(json!({"auto": {}})),
        _ => None,
    };
    let schema = match &req.response_format {
        Some(ResponseFormat::JsonObject) => Some(json!({"type": "object"})),
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            Some(schema.clone().unwrap_or_else(|| json!({"type": "object"})))
        }
        _ => None,
    };
    if let Some(schema) = schema {
        tools.push(json!({"toolSpec": {"name": JSON_TOOL, "description": "Respond with the answer as this tool's input.", "inputSchema": {"json": schema}}}));
        choice = Some(json!({"tool": {"name": JSON_TOOL}}));
    }
    if !tools.is_empty() {
        let mut config = json!({"tools": tools});
        if let Some(c) = choice {
            config["toolChoice"] = c;
        }
        body.insert("toolConfig".into(), config);
    }
    Ok(Value::Object(body))
}

fn usage(u: &Value) -> Usage {
    let n = |k: &str| u32::try_from(u[k].as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
    let (read, write) = (n("cacheReadInputTokens"), n("cacheWriteInputTokens"));
    let prompt = n("inputTokens") + read + write;
    Usage {
        prompt_tokens: prompt,
        completion_tokens: n("outputTokens"),
        total_tokens: prompt + n("outputTokens"),
        cached_prompt_tokens: read,
        cache_creation_prompt_tokens: write,
        reasoning_tokens: 0,
    }
}

fn finish(stop: &str, json_mode: bool) -> FinishReason {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" if !json_mode => FinishReason::ToolCalls,
        "content_filtered" | "guardrail_intervened" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn malformed(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(
        ErrorClass::MalformedResponse,
        format!("bad Bedrock response: {e}"),
    )
}

/// AWS error types (the `x-amzn-ErrorType` header or an exception frame) to error classes.
fn classify(kind: &str, status: Option<u16>, message: &str) -> ProviderError {
    let kind = kind.split(':').next().unwrap_or_default();
    let lower = message.to_ascii_lowercase();
    let class = match kind.trim_end_matches("Exception").to_ascii_lowercase().as_str() {
        _ if lower.contains("too long")
            || lower.contains("too many input tokens")
            || lower.contains("context window") =>
        {
            ErrorClass::ContextWindowExceeded
        }
        "throttling" | "servicequotaexceeded" => ErrorClass::RateLimited,
        "validation" => ErrorClass::BadRequest,
        "accessdenied" | "unrecognizedclient" | "expiredtoken" | "invalidsignature" => {
            ErrorClass::Authentication
        }
        "resourcenotfound" => ErrorClass::NotFound,
        "modeltimeout" => ErrorClass::Timeout,
        "serviceunavailable" | "modelnotready" => ErrorClass::Overloaded,
        "internalserver" | "modelerror" | "modelstreamerror" => ErrorClass::ServerError,
        _ => status.map_or(ErrorClass::ServerError, client::class_for_status),
    };
    common::provider_error(class, status, format!("{kind} {message}"))
}

impl Wire for Bedrock {
    fn name(&self) -> &'static str {
        "bedrock"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn endpoint(&self) -> &str {
        &self.base
    }

    fn framing(&self) -> Framing {
        Framing::AwsEventStream
    }

    fn chat_call(&self, req: &ChatRequest, stream: bool) -> Result<HttpCall, ProviderError> {
        let body = encode(&request(req, self.drop_params)?)?;
        if stream {
            self.call(
                self.url("converse-stream"),
                body,
                "application/vnd.amazon.eventstream",
            )
        } else {
            self.call(self.url("converse"), body, "application/json")
        }
    }

    fn parse_chat(&self, req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        let json_mode = req.response_format.is_some();
        let v: Value = serde_json::from_slice(body).map_err(malformed)?;
        let content =
            v["output"]["message"]["content"]
                .as_array()
                .ok_or_else(|| match v["message"].as_str() {
                    Some(m) => classify(v["__type"].as_str().unwrap_or_default(), None, m),
                    None => malformed("no output message"),
                })?;
        let mut text = String::new();
        let mut calls = Vec::new();
        for block in content {
            if let Some(t) = block["text"].as_str() {
                text.push_str(t);
            } else if let Some(u) = block.get("toolUse") {
                if json_mode && u["name"] == JSON_TOOL {
                    text.push_str(&u["input"].to_string());
                } else {
                    calls.push(ToolCall {
                        id: u["toolUseId"].as_str().unwrap_or_default().to_string(),
                        name: u["name"].as_str().unwrap_or_default().to_string(),
                        arguments: u["input"].to_string(),
                    });
                }
            }
        }
        Ok(ChatResponse::single(
            String::new(),
            self.model.clone(),
            now(),
            Message::assistant(text, calls),
            finish(v["stopReason"].as_str().unwrap_or("end_turn"), json_mode),
            usage(&v["usage"]),
        ))
    }

    fn stream_decoder(&self, req: &ChatRequest) -> Box<dyn StreamDecoder> {
        Box::new(Decoder {
            model: self.model.clone(),
            created: now(),
            json_mode: req.response_format.is_some(),
            blocks: Default::default(),
            tools: 0,
            stopped: false,
        })
    }

    fn embed_call(&self, req: &EmbedRequest) -> Result<HttpCall, ProviderError> {
        let body = if self.model.starts_with("cohere.") {
            json!({"texts": req.input, "input_type": "search_document"})
        } else {
            if req.input.len() != 1 {
                return Err(ProviderError::new(
                    ErrorClass::Unsupported,
                    format!("{} embeds one input per request", self.model),
                ));
            }
            let mut b = json!({"inputText": req.input[0]});
            if let Some(d) = req.dimensions {
                b["dimensions"] = d.into();
            }
            b
        };
        self.call(self.url("invoke"), encode(&body)?, "application/json")
    }

    fn parse_embed(&self, req: &EmbedRequest, body: &[u8]) -> Result<EmbedResponse, ProviderError> {
        let v: Value = serde_json::from_slice(body).map_err(malformed)?;
        let (data, tokens): (Vec<Vec<f32>>, u64) = if let Some(list) = v.get("embeddings") {
            (
                serde_json::from_value(list.clone()).map_err(malformed)?,
                req.estimated_prompt_tokens(),
            )
        } else {
            let one: Vec<f32> = serde_json::from_value(v["embedding"].clone()).map_err(malformed)?;
            (vec![one], v["inputTextTokenCount"].as_u64().unwrap_or(0))
        };
        if data.len() != req.input.len() {
            return Err(malformed(format!(
                "{} vectors for {} inputs",
                data.len(),
                req.input.len()
            )));
        }
        Ok(EmbedResponse {
            model: self.model.clone(),
            data,
            usage: Usage::new(u32::try_from(tokens).unwrap_or(u32::MAX), 0),
        })
    }

    fn parse_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let kind = headers
            .get("x-amzn-errortype")
            .and_then(|h| h.to_str().ok())
            .or_else(|| v["__type"].as_str())
            .unwrap_or_default()
            .to_string();
        let message = v["message"]
            .as_str()
            .or_else(|| v["Message"].as_str())
            .unwrap_or("upstream error without a Bedrock error body");
        classify(&kind, Some(status), message)
    }
}

enum Block {
    Text,
    Tool(u32),
    Json,
}

struct Decoder {
    model: String,
    created: i64,
    json_mode: bool,
    blocks: std::collections::HashMap<u64, Block>,
    tools: u32,
    stopped: bool,
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, frame: Frame<'_>) -> Result<Decoded, ProviderError> {
        if let Some(kind) = frame.event.strip_prefix("exception:") {
            let v: Value = serde_json::from_str(frame.data).unwrap_or(Value::Null);
            return Err(classify(
                kind,
                None,
                v["message"].as_str().unwrap_or("Bedrock stream exception"),
            ));
        }
        let v: Value = serde_json::from_str(frame.data).map_err(malformed)?;
        let chunk = |d: &Self, delta: Delta, finish_reason| ChatChunk {
            id: String::new(),
            model: d.model.clone(),
            created: d.created,
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
            }],
            usage: None,
        };
        let mut out = Decoded::default();
        match frame.event {
            "messageStart" => out.chunks.push(chunk(
                self,
                Delta {
                    role: Some(Role::Assistant),
                    ..Delta::default()
                },
                None,
            )),
            "contentBlockStart" => {
                let index = v["contentBlockIndex"].as_u64().unwrap_or(0);
                if let Some(u) = v["start"].get("toolUse") {
                    if self.json_mode && u["name"] == JSON_TOOL {
                        self.blocks.insert(index, Block::Json);
                    } else {
                        let i = self.tools;
                        self.tools += 1;
                        self.blocks.insert(index, Block::Tool(i));
                        let delta = ToolCallDelta {
                            index: i,
                            id: u["toolUseId"].as_str().map(str::to_string),
                            name: u["name"].as_str().map(str::to_string),
                            arguments: Some(String::new()),
                        };
                        out.chunks.push(chunk(
                            self,
                            Delta {
                                tool_calls: vec![delta],
                                ..Delta::default()
                            },
                            None,
                        ));
                    }
                }
            }
            "contentBlockDelta" => {
                let index = v["contentBlockIndex"].as_u64().unwrap_or(0);
                let d = &v["delta"];
                let delta = match (self.blocks.get(&index).unwrap_or(&Block::Text), d) {
                    (_, d) if d["text"].is_string() => Delta {
                        content: d["text"].as_str().map(str::to_string),
                        ..Delta::default()
                    },
                    (Block::Json, d) => Delta {
                        content: d["toolUse"]["input"].as_str().map(str::to_string),
                        ..Delta::default()
                    },
                    (Block::Tool(i), d) => Delta {
                        tool_calls: vec![ToolCallDelta {
                            index: *i,
                            arguments: d["toolUse"]["input"].as_str().map(str::to_string),
                            ..ToolCallDelta::default()
                        }],
                        ..Delta::default()
                    },
                    _ => return Ok(out), // reasoning content and the like
                };
                out.chunks.push(chunk(self, delta, None));
            }
            "messageStop" => {
                self.stopped = true;
                let f = finish(v["stopReason"].as_str().unwrap_or("end_turn"), self.json_mode);
                out.chunks.push(chunk(self, Delta::default(), Some(f)));
            }
            "metadata" => {
                let mut last = chunk(self, Delta::default(), None);
                last.choices.clear();
                last.usage = Some(usage(&v["usage"]));
                out.chunks.push(last);
                out.done = true;
            }
            _ => {} // contentBlockStop
        }
        Ok(out)
    }

    fn complete_at_eof(&self) -> bool {
        self.stopped
    }
}
