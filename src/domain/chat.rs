//! The canonical chat call: what every surface (gRPC, HTTP) decodes into and every provider translates from.

use std::collections::BTreeMap;

use super::{ModelGroup, Usage};

/// A validated chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: ModelGroup,
    pub messages: Vec<Message>,
    pub params: SamplingParams,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub response_format: Option<ResponseFormat>,
    /// End-user id (OpenAI's `user`).
    pub user: Option<String>,
    /// Caller metadata; routing and accounting read it, providers never send it.
    pub metadata: BTreeMap<String, String>,
    pub routing: RoutingOptions,
    /// Response-cache controls for this request.
    pub cache: CacheControl,
}

/// Per-request response-cache controls (LiteLLM's `cache` object: `no-cache`, `no-store`, `ttl`,
/// `s-maxage`, `namespace`, `use-cache`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// Do not look the answer up (it is still stored).
    pub no_cache: bool,
    /// Do not store the answer.
    pub no_store: bool,
    /// Keep the stored answer this long instead of the configured TTL.
    pub ttl: Option<std::time::Duration>,
    /// Accept only an answer stored at most this long ago.
    pub s_maxage: Option<std::time::Duration>,
    /// Share answers only with requests naming the same namespace.
    pub namespace: Option<String>,
    /// Opt in (`Some(true)`) under `mode: default_off`, or out (`Some(false)`).
    pub use_cache: Option<bool>,
}

/// Per-request routing controls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingOptions {
    /// Tag routing: only deployments sharing one of these tags serve the request.
    pub tags: Vec<String>,
    /// Replaces the configured fallback groups when non-empty.
    pub fallbacks: Vec<ModelGroup>,
    pub disable_fallbacks: bool,
}

/// Sampling and output parameters; `None` means "not sent upstream".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingParams {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub n: Option<u32>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
    Developer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Developer => "developer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            "developer" => Role::Developer,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Content,
    pub name: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub tool_call_id: Option<String>,
}

impl ChatRequest {
    /// A request with these messages and every optional parameter unset.
    pub fn new(model: ModelGroup, messages: Vec<Message>) -> Self {
        Self {
            model,
            messages,
            params: SamplingParams::default(),
            tools: Vec::new(),
            tool_choice: None,
            response_format: None,
            user: None,
            metadata: BTreeMap::new(),
            routing: RoutingOptions::default(),
            cache: CacheControl::default(),
        }
    }
}

impl Message {
    /// An assistant answer: its text and the tools it calls.
    pub fn assistant(text: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls,
            ..Self::text(Role::Assistant, text)
        }
    }

    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Content::Text(text.into()),
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl Content {
    /// All text of the content, parts joined; images are skipped.
    pub fn joined_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Content::Text(t) => t.as_str().into(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text(t) => Some(t.as_str()),
                    ContentPart::Image { .. } => None,
                })
                .collect::<Vec<_>>()
                .join("")
                .into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ContentPart {
    Text(String),
    /// An `http(s)` URL or a `data:<mime>;base64,<data>` URL.
    Image {
        url: String,
        detail: Option<ImageDetail>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ImageDetail {
    Auto,
    Low,
    High,
}

impl ImageDetail {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageDetail::Auto => "auto",
            ImageDetail::Low => "low",
            ImageDetail::High => "high",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text as the model produced it (not re-serialised: models emit what they emit).
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Option<serde_json::Value>,
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        description: Option<String>,
        schema: Option<serde_json::Value>,
        strict: Option<bool>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }

    /// OpenAI's names, plus the legacy `function_call`.
    pub fn from_openai(s: &str) -> Option<Self> {
        Some(match s {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            _ => return None,
        })
    }
}

/// A whole chat completion.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatResponse {
    pub id: String,
    /// The upstream model that answered.
    pub model: String,
    /// Unix seconds.
    pub created: i64,
    pub choices: Vec<Choice>,
    pub usage: Usage,
    pub system_fingerprint: Option<String>,
}

impl ChatResponse {
    /// An answer with one choice, as providers without `n` give it.
    pub fn single(
        id: String,
        model: String,
        created: i64,
        message: Message,
        finish_reason: FinishReason,
        usage: Usage,
    ) -> Self {
        Self {
            id,
            model,
            created,
            choices: vec![Choice {
                index: 0,
                message,
                finish_reason: Some(finish_reason),
            }],
            usage,
            system_fingerprint: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: Message,
    pub finish_reason: Option<FinishReason>,
}

/// One streamed chunk.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatChunk {
    pub id: String,
    pub model: String,
    pub created: i64,
    pub choices: Vec<ChunkChoice>,
    /// Present on the usage chunk at the end of a stream.
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<FinishReason>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Delta {
    pub role: Option<Role>,
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCallDelta>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
}
