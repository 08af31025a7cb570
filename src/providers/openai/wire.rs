//! OpenAI Chat Completions and Embeddings wire format: request bodies built by borrowing from our
//! canonical request (no copy of the conversation), responses parsed into canonical types.
//! Private to the provider; nothing outside `providers::openai` sees these structs.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::domain::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, ContentPart, Delta, EmbedRequest,
    EmbedResponse, ErrorClass, FinishReason, Message, ResponseFormat, Role, ToolCall, ToolCallDelta,
    ToolChoice, Usage,
};
use crate::providers::ProviderError;

// ---------------------------------------------------------------- requests

#[derive(Serialize)]
pub struct ChatBody<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    /// `null` is valid (and expected) for an assistant message that only calls tools.
    content: Option<WireContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Parts(Vec<WirePart<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WirePart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: WireImage<'a> },
}

#[derive(Serialize)]
struct WireImage<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'static str>,
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// The request body for `POST {base}/chat/completions`, borrowing from `req`.
pub fn chat_body<'a>(req: &'a ChatRequest, model: &'a str, stream: bool) -> ChatBody<'a> {
    let p = &req.params;
    ChatBody {
        model,
        messages: req.messages.iter().map(message).collect(),
        temperature: p.temperature,
        top_p: p.top_p,
        max_tokens: p.max_tokens,
        stop: &p.stop,
        seed: p.seed,
        n: p.n,
        presence_penalty: p.presence_penalty,
        frequency_penalty: p.frequency_penalty,
        user: req.user.as_deref(),
        response_format: req.response_format.as_ref().map(response_format),
        tools: req
            .tools
            .iter()
            .map(|t| {
                let mut f = serde_json::Map::new();
                f.insert("name".into(), t.name.clone().into());
                if let Some(d) = &t.description {
                    f.insert("description".into(), d.clone().into());
                }
                if let Some(params) = &t.parameters {
                    f.insert("parameters".into(), params.clone());
                }
                if let Some(s) = t.strict {
                    f.insert("strict".into(), s.into());
                }
                serde_json::json!({"type": "function", "function": f})
            })
            .collect(),
        tool_choice: req.tool_choice.as_ref().map(|c| match c {
            ToolChoice::Auto => "auto".into(),
            ToolChoice::None => "none".into(),
            ToolChoice::Required => "required".into(),
            ToolChoice::Function(name) => serde_json::json!({"type": "function", "function": {"name": name}}),
        }),
        stream,
        // Usage is always reported, streams included.
        stream_options: stream.then_some(StreamOptions { include_usage: true }),
    }
}

fn message(m: &Message) -> WireMessage<'_> {
    let content = match &m.content {
        Content::Text(t) if t.is_empty() && !m.tool_calls.is_empty() => None,
        Content::Text(t) => Some(WireContent::Text(t)),
        Content::Parts(parts) => Some(WireContent::Parts(
            parts
                .iter()
                .map(|p| match p {
                    ContentPart::Text(text) => WirePart::Text { text },
                    ContentPart::Image { url, detail } => WirePart::ImageUrl {
                        image_url: WireImage {
                            url,
                            detail: detail.map(|d| d.as_str()),
                        },
                    },
                })
                .collect(),
        )),
    };
    WireMessage {
        role: m.role.as_str(),
        content,
        name: m.name.as_deref(),
        tool_calls: m
            .tool_calls
            .iter()
            .map(|c| WireToolCall {
                id: &c.id,
                kind: "function",
                function: WireFunctionCall {
                    name: &c.name,
                    arguments: &c.arguments,
                },
            })
            .collect(),
        tool_call_id: m.tool_call_id.as_deref(),
    }
}

fn response_format(f: &ResponseFormat) -> Value {
    match f {
        ResponseFormat::Text => serde_json::json!({"type": "text"}),
        ResponseFormat::JsonObject => serde_json::json!({"type": "json_object"}),
        ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        } => {
            let mut s = serde_json::Map::new();
            s.insert("name".into(), name.clone().into());
            if let Some(d) = description {
                s.insert("description".into(), d.clone().into());
            }
            if let Some(schema) = schema {
                s.insert("schema".into(), schema.clone());
            }
            if let Some(strict) = strict {
                s.insert("strict".into(), (*strict).into());
            }
            serde_json::json!({"type": "json_schema", "json_schema": s})
        }
    }
}

#[derive(Serialize)]
pub struct EmbedBody<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

pub fn embed_body<'a>(req: &'a EmbedRequest, model: &'a str) -> EmbedBody<'a> {
    EmbedBody {
        model,
        input: &req.input,
        encoding_format: "float",
        dimensions: req.dimensions,
        user: req.user.as_deref(),
    }
}

// ---------------------------------------------------------------- responses

/// `null` and a missing key both mean "empty" (vLLM sends `"choices": null` on usage chunks).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct WireCompletion {
    #[serde(default, deserialize_with = "null_default")]
    id: String,
    #[serde(default, deserialize_with = "null_default")]
    model: String,
    #[serde(default, deserialize_with = "null_default")]
    created: i64,
    #[serde(default, deserialize_with = "null_default")]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    system_fingerprint: Option<String>,
    /// Some servers answer 200 with an error object.
    #[serde(default)]
    error: Option<WireErrorObject>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    index: u32,
    message: WireRespMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireRespMessage {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    tool_calls: Vec<WireRespToolCall>,
}

#[derive(Deserialize)]
struct WireRespToolCall {
    #[serde(default, deserialize_with = "null_default")]
    id: String,
    function: WireRespFunction,
}

#[derive(Deserialize, Default)]
struct WireRespFunction {
    #[serde(default, deserialize_with = "null_default")]
    name: String,
    #[serde(default, deserialize_with = "null_default")]
    arguments: String,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default, deserialize_with = "null_default")]
    prompt_tokens: u32,
    #[serde(default, deserialize_with = "null_default")]
    completion_tokens: u32,
    #[serde(default)]
    total_tokens: Option<u32>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default, deserialize_with = "null_default")]
    cached_tokens: u32,
}

#[derive(Deserialize, Default)]
struct CompletionDetails {
    #[serde(default, deserialize_with = "null_default")]
    reasoning_tokens: u32,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Usage {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u
                .total_tokens
                .unwrap_or(u.prompt_tokens.saturating_add(u.completion_tokens)),
            cached_prompt_tokens: u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
            cache_creation_prompt_tokens: 0,
            reasoning_tokens: u.completion_tokens_details.map_or(0, |d| d.reasoning_tokens),
        }
    }
}

fn malformed(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(ErrorClass::MalformedResponse, format!("{what}: {e}"))
}

fn finish(s: Option<&str>) -> Option<FinishReason> {
    s.and_then(FinishReason::from_openai)
}

pub fn parse_chat(body: &[u8]) -> Result<ChatResponse, ProviderError> {
    let w: WireCompletion =
        serde_json::from_slice(body).map_err(|e| malformed("chat completion is not valid JSON", e))?;
    if let Some(err) = w.error {
        return Err(err.classify(None));
    }
    if w.choices.is_empty() {
        return Err(malformed("chat completion", "no choices"));
    }
    let choices = w
        .choices
        .into_iter()
        .map(|c| {
            let m = c.message;
            let content = m.content.or(m.refusal).unwrap_or_default();
            Choice {
                index: c.index,
                finish_reason: finish(c.finish_reason.as_deref()),
                message: Message {
                    role: m.role.as_deref().and_then(Role::parse).unwrap_or(Role::Assistant),
                    content: Content::Text(content),
                    name: None,
                    tool_calls: m
                        .tool_calls
                        .into_iter()
                        .map(|t| ToolCall {
                            id: t.id,
                            name: t.function.name,
                            arguments: t.function.arguments,
                        })
                        .collect(),
                    tool_call_id: None,
                },
            }
        })
        .collect();
    Ok(ChatResponse {
        id: w.id,
        model: w.model,
        created: w.created,
        choices,
        usage: w.usage.map(Usage::from).unwrap_or_default(),
        system_fingerprint: w.system_fingerprint,
    })
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default, deserialize_with = "null_default")]
    id: String,
    #[serde(default, deserialize_with = "null_default")]
    model: String,
    #[serde(default, deserialize_with = "null_default")]
    created: i64,
    #[serde(default, deserialize_with = "null_default")]
    choices: Vec<WireChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireErrorObject>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    index: u32,
    #[serde(default, deserialize_with = "null_default")]
    delta: WireDelta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireDelta {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    tool_calls: Vec<WireToolCallDelta>,
}

#[derive(Deserialize)]
struct WireToolCallDelta {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    function: WireFunctionDelta,
}

#[derive(Deserialize, Default)]
struct WireFunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// Parses one `data:` payload of a chat stream (not `[DONE]`).
pub fn parse_chunk(data: &str) -> Result<ChatChunk, ProviderError> {
    let w: WireChunk =
        serde_json::from_str(data).map_err(|e| malformed("stream chunk is not valid JSON", e))?;
    if let Some(err) = w.error {
        return Err(err.classify(None));
    }
    Ok(ChatChunk {
        id: w.id,
        model: w.model,
        created: w.created,
        choices: w
            .choices
            .into_iter()
            .map(|c| ChunkChoice {
                index: c.index,
                finish_reason: finish(c.finish_reason.as_deref()),
                delta: Delta {
                    role: c.delta.role.as_deref().and_then(Role::parse),
                    content: c.delta.content.or(c.delta.refusal),
                    tool_calls: c
                        .delta
                        .tool_calls
                        .into_iter()
                        .map(|t| ToolCallDelta {
                            index: t.index,
                            id: t.id,
                            name: t.function.name,
                            arguments: t.function.arguments,
                        })
                        .collect(),
                },
            })
            .collect(),
        usage: w.usage.map(Usage::from),
    })
}

#[derive(Deserialize)]
struct WireEmbeddings {
    #[serde(default, deserialize_with = "null_default")]
    data: Vec<WireEmbedding>,
    #[serde(default, deserialize_with = "null_default")]
    model: String,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireErrorObject>,
}

#[derive(Deserialize)]
struct WireEmbedding {
    #[serde(default)]
    index: usize,
    embedding: Vec<f32>,
}

pub fn parse_embeddings(body: &[u8], inputs: usize) -> Result<EmbedResponse, ProviderError> {
    let w: WireEmbeddings =
        serde_json::from_slice(body).map_err(|e| malformed("embeddings are not valid JSON", e))?;
    if let Some(err) = w.error {
        return Err(err.classify(None));
    }
    let mut data = vec![None; inputs];
    for e in w.data {
        let slot = data
            .get_mut(e.index)
            .ok_or_else(|| malformed("embeddings", format!("index {} out of range", e.index)))?;
        *slot = Some(e.embedding);
    }
    let data = data
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| malformed("embeddings", format!("no vector for input {i}"))))
        .collect::<Result<_, _>>()?;
    Ok(EmbedResponse {
        model: w.model,
        data,
        usage: w.usage.map(Usage::from).unwrap_or_default(),
    })
}

// ---------------------------------------------------------------- errors

#[derive(Deserialize)]
struct WireErrorEnvelope {
    error: WireErrorObject,
}

/// OpenAI's `{"error": {"message", "type", "param", "code"}}`; compatible servers vary the types.
#[derive(Deserialize, Default)]
struct WireErrorObject {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<Value>,
}

impl WireErrorObject {
    fn classify(self, status: Option<u16>) -> ProviderError {
        let code = match &self.code {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let kind = self.kind.unwrap_or_default();
        let message = self.message.unwrap_or_default();
        let lower = message.to_ascii_lowercase();
        let base = match status {
            Some(s) => crate::providers::client::class_for_status(s),
            None => match kind.as_str() {
                "rate_limit_error" | "rate_limit_exceeded" => ErrorClass::RateLimited,
                "invalid_request_error" => ErrorClass::BadRequest,
                "authentication_error" => ErrorClass::Authentication,
                _ => ErrorClass::ServerError,
            },
        };
        let class = if code == "context_length_exceeded"
            || lower.contains("maximum context length")
            || lower.contains("context window")
            || lower.contains("too many tokens")
        {
            ErrorClass::ContextWindowExceeded
        } else if code == "content_filter" || code == "content_policy_violation" || kind == "content_filter" {
            ErrorClass::ContentPolicy
        } else {
            base
        };
        // Authentication messages can echo part of the key: keep none of them.
        let detail = if class == ErrorClass::Authentication {
            String::from("upstream rejected the credentials")
        } else {
            let mut m = message;
            crate::providers::client::truncate(&mut m, 300);
            format!("{kind} {code} {m}").trim().to_string()
        };
        ProviderError {
            class,
            status,
            message: detail,
            retry_after: None,
        }
    }
}

/// Classifies a non-2xx response from its status, headers and body.
pub fn parse_error(status: u16, headers: &http::HeaderMap, body: &[u8]) -> ProviderError {
    let mut err = match serde_json::from_slice::<WireErrorEnvelope>(body) {
        Ok(env) => env.error.classify(Some(status)),
        Err(_) => ProviderError {
            class: crate::providers::client::class_for_status(status),
            status: Some(status),
            message: "upstream error without an OpenAI error body".into(),
            retry_after: None,
        },
    };
    err.retry_after = crate::providers::client::retry_after(headers);
    err
}
