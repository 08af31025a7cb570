//! Ollama's native API: `POST /api/chat` (NDJSON streaming, `options.num_predict` ...) and
//! `POST /api/embed`. Pure translation; the I/O is `providers::http`.

use http::{HeaderMap, Method};
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

pub struct Ollama {
    model: String,
    base: String,
    headers: HeaderMap,
    drop_params: bool,
}

impl Ollama {
    pub fn new(dep: &DeploymentConfig) -> Self {
        let base = common::base_url(dep);
        let headers = common::bearer_headers(dep);
        Self {
            model: dep.model.clone(),
            base,
            headers,
            drop_params: dep.drop_params,
        }
    }

    fn call(&self, path: &str, body: &Value) -> Result<HttpCall, ProviderError> {
        Ok(HttpCall {
            method: Method::POST,
            url: format!("{}{path}", self.base),
            headers: self.headers.clone(),
            body: encode(body)?,
        })
    }
}

/// The `/api/chat` body.
pub fn request(
    req: &ChatRequest,
    model: &str,
    stream: bool,
    drop_params: bool,
) -> Result<Value, ProviderError> {
    let p = &req.params;
    if !drop_params && p.n.is_some_and(|n| n > 1) {
        return Err(unsupported("n", "ollama"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    let mut call_names = std::collections::HashMap::new();
    for (i, m) in req.messages.iter().enumerate() {
        let mut msg = Map::new();
        msg.insert("role".into(), m.role.as_str().into());
        let (text, images): (String, Vec<String>) = match &m.content {
            Content::Text(t) => (t.clone(), vec![]),
            Content::Parts(parts) => {
                let mut text = String::new();
                let mut images = Vec::new();
                for part in parts {
                    match part {
                        ContentPart::Text(t) => text.push_str(t),
                        ContentPart::Image { url, .. } => match data_url(url) {
                            Some((_, data)) => images.push(data.to_string()),
                            None if drop_params => {}
                            None => {
                                return Err(ProviderError::new(
                                    ErrorClass::Unsupported,
                                    format!(
                                        "ollama takes images inline only: messages[{i}] has an image URL"
                                    ),
                                ));
                            }
                        },
                    }
                }
                (text, images)
            }
        };
        msg.insert("content".into(), text.into());
        if !images.is_empty() {
            msg.insert("images".into(), images.into());
        }
        if !m.tool_calls.is_empty() {
            let calls = m
                .tool_calls
                .iter()
                .map(|c| {
                    call_names.insert(c.id.as_str(), c.name.as_str());
                    let args: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                    json!({"function": {"name": c.name, "arguments": args}})
                })
                .collect::<Vec<_>>();
            msg.insert("tool_calls".into(), calls.into());
        }
        if m.role == Role::Tool
            && let Some(name) = m.tool_call_id.as_deref().and_then(|id| call_names.get(id))
        {
            msg.insert("tool_name".into(), (*name).into());
        }
        messages.push(Value::Object(msg));
    }
    let mut options = Map::new();
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            options.insert(k.into(), v);
        }
    };
    set("temperature", p.temperature.map(Value::from));
    set("top_p", p.top_p.map(Value::from));
    set("num_predict", p.max_tokens.map(Value::from));
    set("stop", (!p.stop.is_empty()).then(|| Value::from(p.stop.clone())));
    set("seed", p.seed.map(Value::from));
    set("presence_penalty", p.presence_penalty.map(Value::from));
    set("frequency_penalty", p.frequency_penalty.map(Value::from));

    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert("messages".into(), messages.into());
    // Ollama streams unless told not to.
    body.insert("stream".into(), stream.into());
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            body.insert("format".into(), "json".into());
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            body.insert("format".into(), schema.clone().unwrap_or_else(|| "json".into()));
        }
        _ => {}
    }
    // Ollama has no tool_choice: "none" sends no tools, a named function is the only tool offered.
    let tools: Vec<Value> = match &req.tool_choice {
        Some(ToolChoice::None) => vec![],
        choice => req
            .tools
            .iter()
            .filter(|t| !matches!(choice, Some(ToolChoice::Function(n)) if *n != t.name))
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name,
                    "description": t.description.clone().unwrap_or_default(),
                    "parameters": t.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                }})
            })
            .collect(),
    };
    if !tools.is_empty() {
        body.insert("tools".into(), tools.into());
    }
    Ok(Value::Object(body))
}

fn malformed(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(ErrorClass::MalformedResponse, format!("bad Ollama response: {e}"))
}

fn usage(v: &Value) -> Usage {
    let n = |k: &str| u32::try_from(v[k].as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
    Usage::new(n("prompt_eval_count"), n("eval_count"))
}

fn finish(v: &Value, has_calls: bool) -> FinishReason {
    match v["done_reason"].as_str() {
        Some("length") => FinishReason::Length,
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn tool_calls(v: &Value, counter: &mut u32) -> Vec<ToolCall> {
    v["message"]["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| {
                    let id = format!("call_{counter}");
                    *counter += 1;
                    ToolCall {
                        id,
                        name: c["function"]["name"].as_str().unwrap_or_default().to_string(),
                        arguments: c["function"]["arguments"].to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn check_error(v: &Value) -> Result<(), ProviderError> {
    match v.get("error") {
        Some(e) => Err(classify(None, e.as_str().unwrap_or_default())),
        None => Ok(()),
    }
}

fn classify(status: Option<u16>, message: &str) -> ProviderError {
    let lower = message.to_ascii_lowercase();
    let class = if lower.contains("context length") || lower.contains("exceeds the context") {
        ErrorClass::ContextWindowExceeded
    } else if let Some(s @ (401 | 403 | 429)) = status {
        client::class_for_status(s)
    } else if lower.contains("not found") {
        ErrorClass::NotFound
    } else if lower.contains("server busy") {
        ErrorClass::Overloaded
    } else {
        status.map_or(ErrorClass::ServerError, client::class_for_status)
    };
    common::provider_error(class, status, message.to_string())
}

impl Wire for Ollama {
    fn name(&self) -> &'static str {
        "ollama"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn endpoint(&self) -> &str {
        &self.base
    }

    fn framing(&self) -> Framing {
        Framing::Ndjson
    }

    fn chat_call(&self, req: &ChatRequest, stream: bool) -> Result<HttpCall, ProviderError> {
        self.call("/api/chat", &request(req, &self.model, stream, self.drop_params)?)
    }

    fn parse_chat(&self, _req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        let v: Value = serde_json::from_slice(body).map_err(malformed)?;
        check_error(&v)?;
        if v["done"] != true || !v["message"].is_object() {
            return Err(malformed("no complete message"));
        }
        let calls = tool_calls(&v, &mut 0);
        let text = v["message"]["content"].as_str().unwrap_or_default();
        let finish_reason = finish(&v, !calls.is_empty());
        Ok(ChatResponse::single(
            String::new(),
            v["model"].as_str().unwrap_or(&self.model).to_string(),
            now(),
            Message::assistant(text, calls),
            finish_reason,
            usage(&v),
        ))
    }

    fn stream_decoder(&self, _req: &ChatRequest) -> Box<dyn StreamDecoder> {
        Box::new(Decoder {
            model: self.model.clone(),
            created: now(),
            started: false,
            calls: 0,
        })
    }

    fn embed_call(&self, req: &EmbedRequest) -> Result<HttpCall, ProviderError> {
        let mut body = json!({"model": self.model, "input": req.input});
        if let Some(d) = req.dimensions {
            body["dimensions"] = d.into();
        }
        self.call("/api/embed", &body)
    }

    fn parse_embed(&self, req: &EmbedRequest, body: &[u8]) -> Result<EmbedResponse, ProviderError> {
        let v: Value = serde_json::from_slice(body).map_err(malformed)?;
        check_error(&v)?;
        let data: Vec<Vec<f32>> = serde_json::from_value(v["embeddings"].clone()).map_err(malformed)?;
        if data.len() != req.input.len() {
            return Err(malformed(format!(
                "{} vectors for {} inputs",
                data.len(),
                req.input.len()
            )));
        }
        Ok(EmbedResponse {
            model: v["model"].as_str().unwrap_or(&self.model).to_string(),
            data,
            usage: usage(&v),
        })
    }

    fn parse_error(&self, status: u16, _headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        classify(
            Some(status),
            v["error"]
                .as_str()
                .unwrap_or("upstream error without an Ollama error body"),
        )
    }
}

/// One JSON object per line; the last has `"done": true`, the finish reason and the counts.
struct Decoder {
    model: String,
    created: i64,
    started: bool,
    calls: u32,
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, frame: Frame<'_>) -> Result<Decoded, ProviderError> {
        let v: Value = serde_json::from_str(frame.data).map_err(malformed)?;
        check_error(&v)?;
        let chunk = |choices, usage| ChatChunk {
            id: String::new(),
            model: self.model.clone(),
            created: self.created,
            choices,
            usage,
        };
        let base = self.calls;
        let calls = tool_calls(&v, &mut self.calls);
        let text = v["message"]["content"].as_str().unwrap_or_default();
        let done = v["done"] == true;
        let delta = Delta {
            role: (!self.started).then_some(Role::Assistant),
            content: (!text.is_empty()).then(|| text.to_string()),
            tool_calls: calls
                .into_iter()
                .enumerate()
                .map(|(i, c)| ToolCallDelta {
                    index: base + i as u32,
                    id: Some(c.id),
                    name: Some(c.name),
                    arguments: Some(c.arguments),
                })
                .collect(),
        };
        self.started = true;
        let mut out = Decoded {
            chunks: Vec::new(),
            done,
        };
        let finish_reason = done.then(|| finish(&v, self.calls > 0));
        out.chunks.push(chunk(
            vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
            }],
            None,
        ));
        if done {
            out.chunks.push(chunk(Vec::new(), Some(usage(&v))));
        }
        Ok(out)
    }
}
