//! Cohere v2: `POST /v2/chat` (SSE events `content-delta`, `tool-call-*`, `message-end`) and
//! `POST /v2/embed`. Pure translation; the I/O is `providers::http`.

use http::{HeaderMap, HeaderValue, Method, header};
use serde_json::{Map, Value, json};

use super::{
    ProviderError, client,
    common::encode,
    common::{now, unsupported},
    http::{Decoded, Frame, HttpCall, StreamDecoder, Wire},
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

pub struct Cohere {
    model: String,
    base: String,
    headers: HeaderMap,
    drop_params: bool,
}

impl Cohere {
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

    fn call(&self, path: &str, body: &Value, stream: bool) -> Result<HttpCall, ProviderError> {
        let mut headers = self.headers.clone();
        if stream {
            headers.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        Ok(HttpCall {
            method: Method::POST,
            url: format!("{}{path}", self.base),
            headers,
            body: encode(body)?,
        })
    }
}

/// The `/v2/chat` body.
pub fn request(
    req: &ChatRequest,
    model: &str,
    stream: bool,
    drop_params: bool,
) -> Result<Value, ProviderError> {
    let p = &req.params;
    if !drop_params && p.n.is_some_and(|n| n > 1) {
        return Err(unsupported("n", "cohere"));
    }
    let messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::Developer => "system",
                r => r.as_str(),
            };
            let content: Value = match &m.content {
                Content::Text(t) => t.clone().into(),
                Content::Parts(parts) => parts
                    .iter()
                    .map(|p| match p {
                        ContentPart::Text(t) => json!({"type": "text", "text": t}),
                        ContentPart::Image { url, .. } => json!({"type": "image_url", "image_url": {"url": url}}),
                    })
                    .collect::<Vec<_>>()
                    .into(),
            };
            let mut msg = json!({"role": role, "content": content});
            if !m.tool_calls.is_empty() {
                msg["tool_calls"] = m
                    .tool_calls
                    .iter()
                    .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                    .collect::<Vec<_>>()
                    .into();
            }
            if let Some(id) = &m.tool_call_id {
                msg["tool_call_id"] = id.clone().into();
            }
            msg
        })
        .collect();
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert("messages".into(), messages.into());
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    };
    set("temperature", p.temperature.map(Value::from));
    set("p", p.top_p.map(Value::from));
    set("max_tokens", p.max_tokens.map(Value::from));
    set(
        "stop_sequences",
        (!p.stop.is_empty()).then(|| Value::from(p.stop.clone())),
    );
    set("seed", p.seed.map(Value::from));
    set("presence_penalty", p.presence_penalty.map(Value::from));
    set("frequency_penalty", p.frequency_penalty.map(Value::from));
    set(
        "response_format",
        match &req.response_format {
            Some(ResponseFormat::JsonObject) => Some(json!({"type": "json_object"})),
            Some(ResponseFormat::JsonSchema { schema: Some(s), .. }) => {
                Some(json!({"type": "json_object", "json_schema": s}))
            }
            Some(ResponseFormat::JsonSchema { schema: None, .. }) => Some(json!({"type": "json_object"})),
            _ => None,
        },
    );
    // Cohere's tool_choice is REQUIRED or NONE; a named function is the only tool offered, required.
    let forced = match &req.tool_choice {
        Some(ToolChoice::Function(n)) => Some(n.as_str()),
        _ => None,
    };
    let tools: Vec<Value> = req
        .tools
        .iter()
        .filter(|t| forced.is_none_or(|n| n == t.name))
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t.name,
                "description": t.description.clone().unwrap_or_default(),
                "parameters": t.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            }})
        })
        .collect();
    set("tools", (!tools.is_empty()).then(|| tools.into()));
    set(
        "tool_choice",
        match &req.tool_choice {
            Some(ToolChoice::Required | ToolChoice::Function(_)) => Some("REQUIRED".into()),
            Some(ToolChoice::None) => Some("NONE".into()),
            _ => None,
        },
    );
    if stream {
        body.insert("stream".into(), true.into());
    }
    Ok(Value::Object(body))
}

fn malformed(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(ErrorClass::MalformedResponse, format!("bad Cohere response: {e}"))
}

fn finish(reason: &str) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "TOOL_CALL" => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn usage(u: &Value) -> Usage {
    // `tokens` counts what the model saw; `billed_units` what was charged. Prefer the model's view.
    let t = if u["tokens"].is_object() {
        &u["tokens"]
    } else {
        &u["billed_units"]
    };
    let n = |k: &str| u32::try_from(t[k].as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
    Usage::new(n("input_tokens"), n("output_tokens"))
}

fn classify(status: Option<u16>, message: &str) -> ProviderError {
    let lower = message.to_ascii_lowercase();
    let class = if lower.contains("too many tokens")
        || lower.contains("context length")
        || lower.contains("maximum context")
    {
        ErrorClass::ContextWindowExceeded
    } else {
        status.map_or(ErrorClass::ServerError, client::class_for_status)
    };
    common::provider_error(class, status, message.to_string())
}

impl Wire for Cohere {
    fn name(&self) -> &'static str {
        "cohere"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn endpoint(&self) -> &str {
        &self.base
    }

    fn chat_call(&self, req: &ChatRequest, stream: bool) -> Result<HttpCall, ProviderError> {
        self.call(
            "/v2/chat",
            &request(req, &self.model, stream, self.drop_params)?,
            stream,
        )
    }

    fn parse_chat(&self, _req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        let v: Value = serde_json::from_slice(body).map_err(malformed)?;
        if v["finish_reason"] == "ERROR"
            || (v.get("message").is_some_and(Value::is_string) && v.get("id").is_none())
        {
            return Err(classify(
                None,
                v["message"].as_str().unwrap_or("Cohere reported an error"),
            ));
        }
        let m = v
            .get("message")
            .filter(|m| m.is_object())
            .ok_or_else(|| malformed("no message"))?;
        let text: String = m["content"]
            .as_array()
            .map(|parts| {
                parts
                    .iter()
                    .filter(|p| p["type"] == "text")
                    .filter_map(|p| p["text"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let calls: Vec<ToolCall> = m["tool_calls"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| ToolCall {
                        id: c["id"].as_str().unwrap_or_default().to_string(),
                        name: c["function"]["name"].as_str().unwrap_or_default().to_string(),
                        arguments: c["function"]["arguments"].as_str().unwrap_or("{}").to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(ChatResponse::single(
            v["id"].as_str().unwrap_or_default().to_string(),
            self.model.clone(),
            now(),
            Message::assistant(text, calls),
            finish(v["finish_reason"].as_str().unwrap_or("COMPLETE")),
            usage(&v["usage"]),
        ))
    }

    fn stream_decoder(&self, _req: &ChatRequest) -> Box<dyn StreamDecoder> {
        Box::new(Decoder {
            id: String::new(),
            model: self.model.clone(),
            created: now(),
            tools: 0,
        })
    }

    fn embed_call(&self, req: &EmbedRequest) -> Result<HttpCall, ProviderError> {
        let mut body = json!({"model": self.model, "texts": req.input, "input_type": "search_document", "embedding_types": ["float"]});
        if let Some(d) = req.dimensions {
            body["output_dimension"] = d.into();
        }
        self.call("/v2/embed", &body, false)
    }

    fn parse_embed(&self, req: &EmbedRequest, body: &[u8]) -> Result<EmbedResponse, ProviderError> {
        let v: Value = serde_json::from_slice(body).map_err(malformed)?;
        let data: Vec<Vec<f32>> =
            serde_json::from_value(v["embeddings"]["float"].clone()).map_err(malformed)?;
        if data.len() != req.input.len() {
            return Err(malformed(format!(
                "{} vectors for {} inputs",
                data.len(),
                req.input.len()
            )));
        }
        let tokens = v["meta"]["billed_units"]["input_tokens"].as_u64().unwrap_or(0);
        Ok(EmbedResponse {
            model: self.model.clone(),
            data,
            usage: Usage::new(u32::try_from(tokens).unwrap_or(u32::MAX), 0),
        })
    }

    fn parse_error(&self, status: u16, _headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        classify(
            Some(status),
            v["message"]
                .as_str()
                .unwrap_or("upstream error without a Cohere error body"),
        )
    }
}

struct Decoder {
    id: String,
    model: String,
    created: i64,
    tools: u32,
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, frame: Frame<'_>) -> Result<Decoded, ProviderError> {
        let v: Value = serde_json::from_str(frame.data).map_err(malformed)?;
        let msg = &v["delta"]["message"];
        let chunk = |d: &Self, delta: Delta, finish_reason: Option<FinishReason>| ChatChunk {
            id: d.id.clone(),
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
        match v["type"].as_str().unwrap_or(frame.event) {
            "message-start" => {
                self.id = v["id"].as_str().unwrap_or_default().to_string();
                out.chunks.push(chunk(
                    self,
                    Delta {
                        role: Some(Role::Assistant),
                        ..Delta::default()
                    },
                    None,
                ));
            }
            "content-delta" => {
                let text = msg["content"]["text"].as_str().unwrap_or_default();
                out.chunks.push(chunk(
                    self,
                    Delta {
                        content: Some(text.to_string()),
                        ..Delta::default()
                    },
                    None,
                ));
            }
            "tool-call-start" => {
                let c = &msg["tool_calls"];
                let delta = ToolCallDelta {
                    index: self.tools,
                    id: c["id"].as_str().map(str::to_string),
                    name: c["function"]["name"].as_str().map(str::to_string),
                    arguments: Some(
                        c["function"]["arguments"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    ),
                };
                self.tools += 1;
                out.chunks.push(chunk(
                    self,
                    Delta {
                        tool_calls: vec![delta],
                        ..Delta::default()
                    },
                    None,
                ));
            }
            "tool-call-delta" => {
                let delta = ToolCallDelta {
                    index: self.tools.saturating_sub(1),
                    arguments: msg["tool_calls"]["function"]["arguments"]
                        .as_str()
                        .map(str::to_string),
                    ..ToolCallDelta::default()
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
            "message-end" => {
                let d = &v["delta"];
                let reason = d["finish_reason"].as_str().unwrap_or("COMPLETE");
                if reason == "ERROR" {
                    return Err(classify(
                        None,
                        d["error"].as_str().unwrap_or("Cohere stream failed"),
                    ));
                }
                out.chunks
                    .push(chunk(self, Delta::default(), Some(finish(reason))));
                let mut last = chunk(self, Delta::default(), None);
                last.choices.clear();
                last.usage = Some(usage(&d["usage"]));
                out.chunks.push(last);
                out.done = true;
            }
            _ => {} // content-start/-end, tool-plan-delta, tool-call-end, citations
        }
        Ok(out)
    }
}
