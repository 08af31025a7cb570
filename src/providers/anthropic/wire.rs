//! Anthropic's request and response bodies (from the Messages API reference).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{DEFAULT_MAX_TOKENS, JSON_TOOL};
use crate::providers::common;
use crate::{
    domain::{
        ChatRequest, ChatResponse, Content, ContentPart, ErrorClass, FinishReason, Message, ResponseFormat,
        Role, ToolCall, ToolChoice, Usage,
    },
    providers::{
        ProviderError, client,
        common::{data_url, now, unsupported},
    },
};

fn image_block(url: &str) -> Value {
    match data_url(url) {
        Some((mime, data)) => {
            json!({"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}})
        }
        None => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

fn blocks(m: &Message) -> Vec<Value> {
    match &m.content {
        Content::Text(t) if t.is_empty() => vec![],
        Content::Text(t) => vec![json!({"type": "text", "text": t})],
        Content::Parts(parts) => parts
            .iter()
            .map(|p| match p {
                ContentPart::Text(t) => json!({"type": "text", "text": t}),
                ContentPart::Image { url, .. } => image_block(url),
            })
            .collect(),
    }
}

/// The Messages API body for `req`.
pub fn request(
    req: &ChatRequest,
    model: &str,
    stream: bool,
    drop_params: bool,
) -> Result<Value, ProviderError> {
    let p = &req.params;
    let checks: [(&str, bool); 4] = [
        ("seed", p.seed.is_some()),
        ("presence_penalty", p.presence_penalty.is_some()),
        ("frequency_penalty", p.frequency_penalty.is_some()),
        ("n", p.n.is_some_and(|n| n > 1)),
    ];
    if !drop_params && let Some((param, _)) = checks.iter().find(|(_, set)| *set) {
        return Err(unsupported(param, "anthropic"));
    }
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, content) = match m.role {
            Role::System | Role::Developer => {
                system.push(m.content.joined_text().into_owned());
                continue;
            }
            Role::User => ("user", blocks(m)),
            Role::Assistant => {
                let mut content = blocks(m);
                for (j, c) in m.tool_calls.iter().enumerate() {
                    let input: Value = if c.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&c.arguments).map_err(|e| {
                            ProviderError::new(
                                ErrorClass::BadRequest,
                                format!("messages[{i}].tool_calls[{j}].arguments is not JSON: {e}"),
                            )
                        })?
                    };
                    content.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                }
                ("assistant", content)
            }
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                    "content": m.content.joined_text(),
                })],
            ),
        };
        // Consecutive turns of one role merge (tool results become one user turn).
        match turns.last_mut() {
            Some((r, c)) if *r == role => c.extend(content),
            _ => turns.push((role, content)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();

    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert(
        "max_tokens".into(),
        p.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).into(),
    );
    body.insert("messages".into(), messages.into());
    if !system.is_empty() {
        body.insert("system".into(), system.join("\n\n").into());
    }
    if let Some(t) = p.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(t) = p.top_p {
        body.insert("top_p".into(), t.into());
    }
    if !p.stop.is_empty() {
        body.insert("stop_sequences".into(), p.stop.clone().into());
    }
    if let Some(u) = &req.user {
        body.insert("metadata".into(), json!({"user_id": u}));
    }
    let mut tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            let mut tool = Map::new();
            tool.insert("name".into(), t.name.clone().into());
            if let Some(d) = &t.description {
                tool.insert("description".into(), d.clone().into());
            }
            let schema = t
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            tool.insert("input_schema".into(), schema);
            Value::Object(tool)
        })
        .collect();
    let mut tool_choice = req.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Function(name) => json!({"type": "tool", "name": name}),
    });
    // Structured output: a forced tool whose input is the JSON answer.
    let schema = match &req.response_format {
        Some(ResponseFormat::JsonObject) => Some(json!({"type": "object"})),
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            Some(schema.clone().unwrap_or_else(|| json!({"type": "object"})))
        }
        _ => None,
    };
    if let Some(schema) = schema {
        tools.push(json!({"name": JSON_TOOL, "description": "Respond with the answer as this tool's input.", "input_schema": schema}));
        tool_choice = Some(json!({"type": "tool", "name": JSON_TOOL}));
    }
    if !tools.is_empty() {
        body.insert("tools".into(), tools.into());
    }
    if let Some(c) = tool_choice {
        body.insert("tool_choice".into(), c);
    }
    if stream {
        body.insert("stream".into(), true.into());
    }
    Ok(Value::Object(body))
}

#[derive(Deserialize, Default)]
pub struct WireUsage {
    #[serde(default)]
    pub input_tokens: u32,
    #[serde(default)]
    pub output_tokens: u32,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u32>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u32>,
}

/// Anthropic reports input tokens without the cached ones; OpenAI's prompt_tokens includes them.
pub fn usage(input: &WireUsage, output_tokens: u32) -> Usage {
    let read = input.cache_read_input_tokens.unwrap_or(0);
    let created = input.cache_creation_input_tokens.unwrap_or(0);
    let prompt = input.input_tokens + read + created;
    Usage {
        prompt_tokens: prompt,
        completion_tokens: output_tokens,
        total_tokens: prompt + output_tokens,
        cached_prompt_tokens: read,
        cache_creation_prompt_tokens: created,
        reasoning_tokens: 0,
    }
}

pub fn finish_reason(stop: &str, json_mode: bool) -> FinishReason {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" if !json_mode => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<Value>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
    #[serde(default)]
    error: Option<WireError>,
}

pub fn parse_response(body: &[u8], json_mode: bool) -> Result<ChatResponse, ProviderError> {
    let m: WireMessage = serde_json::from_slice(body).map_err(|e| {
        ProviderError::new(
            ErrorClass::MalformedResponse,
            format!("message is not valid JSON: {e}"),
        )
    })?;
    if m.kind == "error" || m.error.is_some() {
        return Err(classify(None, m.error.unwrap_or_default()));
    }
    if m.kind != "message" {
        return Err(ProviderError::new(
            ErrorClass::MalformedResponse,
            format!("unexpected response type {:?}", m.kind),
        ));
    }
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in &m.content {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") if json_mode && block["name"] == JSON_TOOL => {
                text.push_str(&block["input"].to_string())
            }
            Some("tool_use") => tool_calls.push(ToolCall {
                id: block["id"].as_str().unwrap_or_default().to_string(),
                name: block["name"].as_str().unwrap_or_default().to_string(),
                arguments: block["input"].to_string(),
            }),
            _ => {} // thinking and other blocks are not part of the OpenAI answer
        }
    }
    let stop = m.stop_reason.as_deref().unwrap_or("end_turn");
    Ok(ChatResponse::single(
        m.id,
        m.model,
        now(),
        Message::assistant(text, tool_calls),
        finish_reason(stop, json_mode),
        usage(&m.usage, m.usage.output_tokens),
    ))
}

#[derive(Deserialize, Default)]
pub struct WireError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct WireErrorEnvelope {
    error: WireError,
}

pub fn classify(status: Option<u16>, e: WireError) -> ProviderError {
    let lower = e.message.to_ascii_lowercase();
    let class = if lower.contains("prompt is too long")
        || lower.contains("context window")
        || lower.contains("too many tokens")
    {
        ErrorClass::ContextWindowExceeded
    } else if lower.contains("content filtering") || lower.contains("content policy") {
        ErrorClass::ContentPolicy
    } else {
        match e.kind.as_str() {
            "overloaded_error" => ErrorClass::Overloaded,
            "rate_limit_error" => ErrorClass::RateLimited,
            "authentication_error" | "permission_error" => ErrorClass::Authentication,
            "not_found_error" => ErrorClass::NotFound,
            "invalid_request_error" | "request_too_large" => ErrorClass::BadRequest,
            "timeout_error" => ErrorClass::Timeout,
            "api_error" => ErrorClass::ServerError,
            _ => status.map_or(ErrorClass::ServerError, client::class_for_status),
        }
    };
    common::provider_error(class, status, format!("{} {}", e.kind, e.message))
}

pub fn parse_error(status: Option<u16>, headers: &http::HeaderMap, body: &[u8]) -> ProviderError {
    let mut err = match serde_json::from_slice::<WireErrorEnvelope>(body) {
        Ok(env) => classify(status, env.error),
        Err(_) => ProviderError {
            class: status.map_or(ErrorClass::MalformedResponse, client::class_for_status),
            status,
            message: "upstream error without an Anthropic error body".into(),
            retry_after: None,
        },
    };
    err.retry_after = client::retry_after(headers);
    err
}
