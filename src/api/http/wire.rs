//! OpenAI's HTTP request and response bodies, as this gateway serves them: parse into the canonical
//! request, render canonical responses. Written from OpenAI's API reference.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    api::{error::ApiError, validate::invalid},
    domain::{self as d, ModelGroup},
};

fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::Unprocessable {
        field: field.into(),
        message: message.into(),
    }
}

/// Parses a JSON body into `T`: syntax errors name line and column, shape errors name the JSON path.
/// Returns the paths of fields the gateway does not use.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<(T, Vec<String>), ApiError> {
    let mut ignored = Vec::new();
    let mut json = serde_json::Deserializer::from_slice(body);
    let mut on_ignored = |path: serde_ignored::Path<'_>| ignored.push(crate::config::yaml_path(&path));
    let value =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(&mut json, &mut on_ignored));
    let malformed = |e: serde_json::Error| ApiError::MalformedJson {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    };
    match value {
        Ok(v) => {
            json.end().map_err(malformed)?;
            Ok((v, ignored))
        }
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Err(ApiError::MalformedJson {
                    line: inner.line(),
                    column: inner.column(),
                    message: inner.to_string(),
                })
            } else {
                let field = if path == "." || path.is_empty() {
                    "body".to_string()
                } else {
                    path
                };
                let msg = inner.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                Err(unprocessable(field, msg))
            }
        }
    }
}

// ---------------------------------------------------------------- chat request

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    messages: Vec<InMessage>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    stop: Option<OneOrMany>,
    seed: Option<i64>,
    n: Option<u32>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    user: Option<String>,
    response_format: Option<InResponseFormat>,
    tools: Option<Vec<InTool>>,
    tool_choice: Option<InToolChoice>,
    #[serde(default)]
    pub stream: bool,
    stream_options: Option<StreamOptions>,
    metadata: Option<serde_json::Map<String, Value>>,
    /// LiteLLM: routing tags (also accepted as `metadata.tags`).
    tags: Option<Vec<String>>,
    /// LiteLLM: per-request fallback groups.
    fallbacks: Option<Vec<String>>,
    disable_fallbacks: Option<bool>,
    /// LiteLLM: request timeout in seconds.
    pub timeout: Option<f64>,
    /// LiteLLM: per-request cache controls.
    cache: Option<InCache>,
}

/// LiteLLM's `cache` object.
#[derive(Deserialize, Default)]
struct InCache {
    #[serde(rename = "no-cache", alias = "no_cache", default)]
    no_cache: bool,
    #[serde(rename = "no-store", alias = "no_store", default)]
    no_store: bool,
    ttl: Option<f64>,
    #[serde(rename = "s-maxage", alias = "s_maxage")]
    s_maxage: Option<f64>,
    namespace: Option<String>,
    #[serde(rename = "use-cache", alias = "use_cache")]
    use_cache: Option<bool>,
}

impl InCache {
    fn into_domain(self) -> Result<d::CacheControl, ApiError> {
        let secs = |v: Option<f64>, field: &str| match v {
            None => Ok(None),
            Some(s) => std::time::Duration::try_from_secs_f64(s).map(Some).map_err(|_| {
                invalid(
                    field,
                    format!("must be a non-negative number of seconds, got {s}"),
                )
            }),
        };
        Ok(d::CacheControl {
            no_cache: self.no_cache,
            no_store: self.no_store,
            ttl: secs(self.ttl, "cache.ttl")?,
            s_maxage: secs(self.s_maxage, "cache.s-maxage")?,
            namespace: self.namespace.filter(|n| !n.is_empty()),
            use_cache: self.use_cache,
        })
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    content: Option<InContent>,
    name: Option<String>,
    tool_calls: Option<Vec<InToolCall>>,
    tool_call_id: Option<String>,
}

enum InContent {
    Text(String),
    Parts(Vec<InPart>),
}

impl<'de> Deserialize<'de> for InContent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = InContent;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<InContent, E> {
                Ok(InContent::Text(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<InContent, E> {
                Ok(InContent::Text(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<InContent, A::Error> {
                let mut parts = Vec::new();
                while let Some(p) = seq.next_element()? {
                    parts.push(p);
                }
                Ok(InContent::Parts(parts))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct InPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    image_url: Option<InImage>,
}

#[derive(Deserialize)]
struct InImage {
    url: String,
    detail: Option<String>,
}

#[derive(Deserialize)]
struct InToolCall {
    id: String,
    function: InFunctionCall,
}

#[derive(Deserialize)]
struct InFunctionCall {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct InTool {
    #[serde(rename = "type")]
    kind: String,
    function: InFunction,
}

#[derive(Deserialize)]
struct InFunction {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
    strict: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InToolChoice {
    Mode(String),
    Named { function: InNamedFunction },
}

#[derive(Deserialize)]
struct InNamedFunction {
    name: String,
}

#[derive(Deserialize)]
struct InResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    json_schema: Option<InJsonSchema>,
}

#[derive(Deserialize)]
struct InJsonSchema {
    name: String,
    description: Option<String>,
    schema: Option<Value>,
    strict: Option<bool>,
}

fn metadata(map: Option<serde_json::Map<String, Value>>, tags: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in map.unwrap_or_default() {
        match (k.as_str(), v) {
            ("tags", Value::Array(list)) => {
                tags.extend(list.into_iter().filter_map(|t| t.as_str().map(str::to_string)))
            }
            (_, Value::String(s)) => {
                out.insert(k, s);
            }
            (_, other) => {
                out.insert(k, other.to_string());
            }
        }
    }
    out
}

impl ChatCompletionRequest {
    /// Whether the caller asked for the usage chunk (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    pub fn into_domain(self) -> Result<d::ChatRequest, ApiError> {
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| message(i, m))
            .collect::<Result<Vec<_>, _>>()?;
        let tools = self
            .tools
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                if t.kind != "function" {
                    return Err(invalid(
                        format!("tools[{i}].type"),
                        format!("unsupported tool type {:?}", t.kind),
                    ));
                }
                Ok(d::Tool {
                    name: t.function.name,
                    description: t.function.description,
                    parameters: t.function.parameters,
                    strict: t.function.strict,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tool_choice = match self.tool_choice {
            None => None,
            Some(InToolChoice::Mode(m)) => Some(match m.as_str() {
                "auto" => d::ToolChoice::Auto,
                "none" => d::ToolChoice::None,
                "required" => d::ToolChoice::Required,
                other => return Err(invalid("tool_choice", format!("unknown value {other:?}"))),
            }),
            Some(InToolChoice::Named { function }) => Some(d::ToolChoice::Function(function.name)),
        };
        let response_format = match self.response_format {
            None => None,
            Some(f) => Some(match f.kind.as_str() {
                "text" => d::ResponseFormat::Text,
                "json_object" => d::ResponseFormat::JsonObject,
                "json_schema" => {
                    let s = f
                        .json_schema
                        .ok_or_else(|| invalid("response_format.json_schema", "is required"))?;
                    d::ResponseFormat::JsonSchema {
                        name: s.name,
                        description: s.description,
                        schema: s.schema,
                        strict: s.strict,
                    }
                }
                other => {
                    return Err(invalid(
                        "response_format.type",
                        format!("unknown value {other:?}"),
                    ));
                }
            }),
        };
        let mut tags = self.tags.unwrap_or_default();
        let metadata = metadata(self.metadata, &mut tags);
        let req = d::ChatRequest {
            model: ModelGroup::new(self.model),
            messages,
            params: d::SamplingParams {
                temperature: self.temperature,
                top_p: self.top_p,
                max_tokens: self.max_completion_tokens.or(self.max_tokens),
                stop: self.stop.map(OneOrMany::into_vec).unwrap_or_default(),
                seed: self.seed,
                n: self.n,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
            },
            tools,
            tool_choice,
            response_format,
            user: self.user.filter(|u| !u.is_empty()),
            metadata,
            routing: d::RoutingOptions {
                tags,
                fallbacks: self
                    .fallbacks
                    .unwrap_or_default()
                    .into_iter()
                    .map(ModelGroup::new)
                    .collect(),
                disable_fallbacks: self.disable_fallbacks.unwrap_or(false),
            },
            cache: self.cache.unwrap_or_default().into_domain()?,
        };
        crate::api::validate::chat(&req)?;
        Ok(req)
    }
}

fn message(i: usize, m: InMessage) -> Result<d::Message, ApiError> {
    let role = d::Role::parse(&m.role).ok_or_else(|| {
        invalid(
            format!("messages[{i}].role"),
            format!("unknown role {:?}", m.role),
        )
    })?;
    let content = match m.content {
        None => d::Content::Text(String::new()),
        Some(InContent::Text(t)) => d::Content::Text(t),
        Some(InContent::Parts(parts)) => d::Content::Parts(
            parts
                .into_iter()
                .enumerate()
                .map(|(j, p)| {
                    let at = format!("messages[{i}].content[{j}]");
                    match (p.kind.as_str(), p.text, p.image_url) {
                        ("text", Some(text), _) => Ok(d::ContentPart::Text(text)),
                        ("image_url", _, Some(img)) => {
                            let detail = match img.detail.as_deref() {
                                None => None,
                                Some("auto") => Some(d::ImageDetail::Auto),
                                Some("low") => Some(d::ImageDetail::Low),
                                Some("high") => Some(d::ImageDetail::High),
                                Some(other) => {
                                    return Err(invalid(
                                        format!("{at}.image_url.detail"),
                                        format!("unknown value {other:?}"),
                                    ));
                                }
                            };
                            Ok(d::ContentPart::Image { url: img.url, detail })
                        }
                        ("text" | "image_url", _, _) => Err(unprocessable(
                            at,
                            format!("a {} part needs its {} field", p.kind, p.kind),
                        )),
                        (other, _, _) => Err(invalid(
                            format!("{at}.type"),
                            format!("unsupported content part type {other:?}"),
                        )),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(d::Message {
        role,
        content,
        name: m.name,
        tool_calls: m
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|c| d::ToolCall {
                id: c.id,
                name: c.function.name,
                arguments: c.function.arguments,
            })
            .collect(),
        tool_call_id: m.tool_call_id,
    })
}

// ---------------------------------------------------------------- chat responses

#[derive(Serialize)]
struct OutUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
    prompt_tokens_details: OutPromptDetails,
    completion_tokens_details: OutCompletionDetails,
}

#[derive(Serialize)]
struct OutPromptDetails {
    cached_tokens: u32,
}

#[derive(Serialize)]
struct OutCompletionDetails {
    reasoning_tokens: u32,
}

fn usage(u: &d::Usage) -> OutUsage {
    OutUsage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
        prompt_tokens_details: OutPromptDetails {
            cached_tokens: u.cached_prompt_tokens,
        },
        completion_tokens_details: OutCompletionDetails {
            reasoning_tokens: u.reasoning_tokens,
        },
    }
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct OutChoice<'a> {
    index: u32,
    message: OutMessage<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct OutCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: Vec<OutChoice<'a>>,
    usage: OutUsage,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
}

pub fn completion_json(r: &d::ChatResponse) -> Vec<u8> {
    let out = OutCompletion {
        id: &r.id,
        object: "chat.completion",
        created: r.created,
        model: &r.model,
        choices: r
            .choices
            .iter()
            .map(|c| OutChoice {
                index: c.index,
                message: OutMessage {
                    role: "assistant",
                    content: {
                        let text = c.message.content.joined_text();
                        if text.is_empty() && !c.message.tool_calls.is_empty() {
                            None
                        } else {
                            Some(text)
                        }
                    },
                    tool_calls: c
                        .message
                        .tool_calls
                        .iter()
                        .map(|t| OutToolCall {
                            id: &t.id,
                            kind: "function",
                            function: OutFunction {
                                name: &t.name,
                                arguments: &t.arguments,
                            },
                        })
                        .collect(),
                    refusal: None,
                },
                logprobs: None,
                finish_reason: c.finish_reason.map(d::FinishReason::as_str),
            })
            .collect(),
        usage: usage(&r.usage),
        system_fingerprint: r.system_fingerprint.as_deref(),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

#[derive(Serialize)]
struct OutChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: Vec<OutChunkChoice<'a>>,
    /// `null` on every chunk but the last when the caller asked for usage; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<OutUsage>>,
}

#[derive(Serialize)]
struct OutChunkChoice<'a> {
    index: u32,
    delta: OutDelta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct OutDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCallDelta<'a>>,
}

#[derive(Serialize)]
struct OutToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: OutFunctionDelta<'a>,
}

#[derive(Serialize)]
struct OutFunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
}

/// One SSE event for a chunk, or `None` when the chunk has nothing to say to this caller (a usage
/// chunk the caller did not ask for).
pub fn chunk_event(c: &d::ChatChunk, include_usage: bool) -> Option<Vec<u8>> {
    if c.choices.is_empty() && !include_usage {
        return None;
    }
    let out = OutChunk {
        id: &c.id,
        object: "chat.completion.chunk",
        created: c.created,
        model: &c.model,
        choices: c
            .choices
            .iter()
            .map(|ch| OutChunkChoice {
                index: ch.index,
                delta: OutDelta {
                    role: ch.delta.role.map(d::Role::as_str),
                    content: ch.delta.content.as_deref(),
                    tool_calls: ch
                        .delta
                        .tool_calls
                        .iter()
                        .map(|t| OutToolCallDelta {
                            index: t.index,
                            id: t.id.as_deref(),
                            kind: t.id.as_ref().map(|_| "function"),
                            function: OutFunctionDelta {
                                name: t.name.as_deref(),
                                arguments: t.arguments.as_deref(),
                            },
                        })
                        .collect(),
                },
                logprobs: None,
                finish_reason: ch.finish_reason.map(d::FinishReason::as_str),
            })
            .collect(),
        usage: include_usage.then(|| c.usage.as_ref().map(usage)),
    };
    let mut event = b"data: ".to_vec();
    serde_json::to_writer(&mut event, &out).ok()?;
    event.extend_from_slice(b"\n\n");
    Some(event)
}

// ---------------------------------------------------------------- embeddings

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbedInput {
    One(String),
    Many(Vec<String>),
    /// Token ids (`[1, 2]` or `[[1, 2]]`): refused, we route text.
    Tokens(#[allow(dead_code)] Vec<serde::de::IgnoredAny>),
}

#[derive(Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    input: EmbedInput,
    encoding_format: Option<String>,
    dimensions: Option<u32>,
    user: Option<String>,
    metadata: Option<serde_json::Map<String, Value>>,
    tags: Option<Vec<String>>,
    fallbacks: Option<Vec<String>>,
    pub timeout: Option<f64>,
    cache: Option<InCache>,
}

impl EmbeddingsRequest {
    pub fn base64(&self) -> Result<bool, ApiError> {
        match self.encoding_format.as_deref() {
            None | Some("float") => Ok(false),
            Some("base64") => Ok(true),
            Some(other) => Err(invalid(
                "encoding_format",
                format!("expected \"float\" or \"base64\", got {other:?}"),
            )),
        }
    }

    pub fn into_domain(self) -> Result<d::EmbedRequest, ApiError> {
        let input = match self.input {
            EmbedInput::One(s) => vec![s],
            EmbedInput::Many(v) => v,
            EmbedInput::Tokens(_) => {
                return Err(invalid("input", "token-array input is not supported; send text"));
            }
        };
        let mut tags = self.tags.unwrap_or_default();
        let metadata = metadata(self.metadata, &mut tags);
        let req = d::EmbedRequest {
            model: ModelGroup::new(self.model),
            input,
            dimensions: self.dimensions,
            user: self.user.filter(|u| !u.is_empty()),
            metadata,
            routing: d::RoutingOptions {
                tags,
                fallbacks: self
                    .fallbacks
                    .unwrap_or_default()
                    .into_iter()
                    .map(ModelGroup::new)
                    .collect(),
                disable_fallbacks: false,
            },
            cache: self.cache.unwrap_or_default().into_domain()?,
        };
        crate::api::validate::embed(&req)?;
        Ok(req)
    }
}

pub fn embeddings_json(r: &d::EmbedResponse, base64: bool) -> Vec<u8> {
    let data: Vec<Value> = r
        .data
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::from(v.iter().map(|x| f64::from(*x)).collect::<Vec<f64>>())
            };
            serde_json::json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let body = serde_json::json!({
        "object": "list",
        "data": data,
        "model": r.model,
        "usage": {"prompt_tokens": r.usage.prompt_tokens, "total_tokens": r.usage.total_tokens},
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod robustness {
    use super::*;
    use crate::domain::arbitrary::{Rng, body};

    /// Random and corrupted bodies on the HTTP surface: a clear error or a valid request, no panic.
    #[test]
    fn random_bodies_never_panic() {
        let mut rng = Rng(0xA076_1D64_78BD_642F);
        for _ in 0..5000 {
            let b = body(&mut rng);
            if let Ok((req, _)) = parse::<ChatCompletionRequest>(&b) {
                let _ = req.include_usage();
                let _ = req.into_domain();
            }
            if let Ok((req, _)) = parse::<EmbeddingsRequest>(&b) {
                let _ = req.base64();
                let _ = req.into_domain();
            }
        }
    }
}
