//! proto <-> domain, at the border. Every proto `Option` and enum is resolved here, once, and every
//! invalid field becomes an error that names it (`messages[1].role`).

use prost_types::value::Kind;
use serde_json::Value;

use super::error::ApiError;
use crate::{
    domain::{self as d, ModelGroup},
    proto as pb,
    router::RouteInfo,
};

use super::validate::{self, invalid};

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// proto -> domain. Only proto-specific checks here (enum values, empty oneofs); the rest is
/// [`validate::chat`], shared with the HTTP surface.
pub fn chat_request(r: pb::ChatRequest) -> Result<d::ChatRequest, ApiError> {
    let messages = r
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let tools = r
        .tools
        .into_iter()
        .map(|t| d::Tool {
            name: t.name,
            description: non_empty(t.description),
            parameters: t.parameters.map(struct_to_json),
            strict: t.strict,
        })
        .collect();
    let tool_choice = match r.tool_choice.and_then(|c| c.choice) {
        None => None,
        Some(pb::tool_choice::Choice::Mode(m)) => match pb::ToolChoiceMode::try_from(m) {
            Ok(pb::ToolChoiceMode::Auto) => Some(d::ToolChoice::Auto),
            Ok(pb::ToolChoiceMode::None) => Some(d::ToolChoice::None),
            Ok(pb::ToolChoiceMode::Required) => Some(d::ToolChoice::Required),
            Ok(pb::ToolChoiceMode::Unspecified) => None,
            Err(_) => return Err(invalid("tool_choice.mode", format!("unknown value {m}"))),
        },
        Some(pb::tool_choice::Choice::FunctionName(name)) => Some(d::ToolChoice::Function(name)),
    };
    let response_format = match r.response_format {
        None => None,
        Some(f) => match pb::ResponseFormatType::try_from(f.r#type) {
            Ok(pb::ResponseFormatType::Unspecified) => None,
            Ok(pb::ResponseFormatType::Text) => Some(d::ResponseFormat::Text),
            Ok(pb::ResponseFormatType::JsonObject) => Some(d::ResponseFormat::JsonObject),
            Ok(pb::ResponseFormatType::JsonSchema) => {
                let s = f.json_schema.ok_or_else(|| {
                    invalid(
                        "response_format.json_schema",
                        "is required with RESPONSE_FORMAT_TYPE_JSON_SCHEMA",
                    )
                })?;
                Some(d::ResponseFormat::JsonSchema {
                    name: s.name,
                    description: non_empty(s.description),
                    schema: s.schema.map(struct_to_json),
                    strict: s.strict,
                })
            }
            Err(_) => {
                return Err(invalid(
                    "response_format.type",
                    format!("unknown value {}", f.r#type),
                ));
            }
        },
    };
    let req = d::ChatRequest {
        model: ModelGroup::new(r.model),
        messages,
        params: d::SamplingParams {
            temperature: r.temperature,
            top_p: r.top_p,
            max_tokens: r.max_tokens,
            stop: r.stop,
            seed: r.seed,
            n: r.n,
            presence_penalty: r.presence_penalty,
            frequency_penalty: r.frequency_penalty,
        },
        tools,
        tool_choice,
        response_format,
        user: non_empty(r.user),
        metadata: r.metadata.into_iter().collect(),
        routing: routing(r.routing),
        cache: cache_control(r.cache),
    };
    validate::chat(&req)?;
    Ok(req)
}

fn routing(r: Option<pb::RoutingOptions>) -> d::RoutingOptions {
    r.map(|r| d::RoutingOptions {
        tags: r.tags,
        fallbacks: r.fallbacks.into_iter().map(ModelGroup::new).collect(),
        disable_fallbacks: r.disable_fallbacks,
    })
    .unwrap_or_default()
}

fn cache_control(c: Option<pb::CacheControl>) -> d::CacheControl {
    let secs = |s: u32| std::time::Duration::from_secs(u64::from(s));
    c.map(|c| d::CacheControl {
        no_cache: c.no_cache,
        no_store: c.no_store,
        ttl: c.ttl_seconds.map(secs),
        s_maxage: c.s_maxage_seconds.map(secs),
        namespace: non_empty(c.namespace),
        use_cache: c.use_cache,
    })
    .unwrap_or_default()
}

fn message(i: usize, m: pb::Message) -> Result<d::Message, ApiError> {
    let role = match pb::Role::try_from(m.role) {
        Ok(pb::Role::System) => d::Role::System,
        Ok(pb::Role::User) => d::Role::User,
        Ok(pb::Role::Assistant) => d::Role::Assistant,
        Ok(pb::Role::Tool) => d::Role::Tool,
        Ok(pb::Role::Developer) => d::Role::Developer,
        Ok(pb::Role::Unspecified) => return Err(invalid(format!("messages[{i}].role"), "is required")),
        Err(_) => {
            return Err(invalid(
                format!("messages[{i}].role"),
                format!("unknown value {}", m.role),
            ));
        }
    };
    let content = if m.parts.is_empty() {
        d::Content::Text(m.content)
    } else {
        if !m.content.is_empty() {
            return Err(invalid(
                format!("messages[{i}].parts"),
                "set either content or parts, not both",
            ));
        }
        let parts = m
            .parts
            .into_iter()
            .enumerate()
            .map(|(j, p)| match p.part {
                Some(pb::content_part::Part::Text(t)) => Ok(d::ContentPart::Text(t)),
                Some(pb::content_part::Part::ImageUrl(img)) => {
                    let detail = match pb::ImageDetail::try_from(img.detail) {
                        Ok(pb::ImageDetail::Unspecified) => None,
                        Ok(pb::ImageDetail::Auto) => Some(d::ImageDetail::Auto),
                        Ok(pb::ImageDetail::Low) => Some(d::ImageDetail::Low),
                        Ok(pb::ImageDetail::High) => Some(d::ImageDetail::High),
                        Err(_) => {
                            return Err(invalid(
                                format!("messages[{i}].parts[{j}].image_url.detail"),
                                format!("unknown value {}", img.detail),
                            ));
                        }
                    };
                    Ok(d::ContentPart::Image { url: img.url, detail })
                }
                None => Err(invalid(format!("messages[{i}].parts[{j}]"), "is empty")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        d::Content::Parts(parts)
    };
    Ok(d::Message {
        role,
        content,
        name: non_empty(m.name),
        tool_calls: m
            .tool_calls
            .into_iter()
            .map(|c| d::ToolCall {
                id: c.id,
                name: c.name,
                arguments: c.arguments,
            })
            .collect(),
        tool_call_id: non_empty(m.tool_call_id),
    })
}

pub fn embed_request(r: pb::EmbedRequest) -> Result<d::EmbedRequest, ApiError> {
    let req = d::EmbedRequest {
        model: ModelGroup::new(r.model),
        input: r.input,
        dimensions: r.dimensions,
        user: non_empty(r.user),
        metadata: r.metadata.into_iter().collect(),
        routing: routing(r.routing),
        cache: cache_control(r.cache),
    };
    validate::embed(&req)?;
    Ok(req)
}

fn struct_to_json(s: prost_types::Struct) -> Value {
    Value::Object(s.fields.into_iter().map(|(k, v)| (k, value_to_json(v))).collect())
}

fn value_to_json(v: prost_types::Value) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        // Struct numbers are doubles; integral ones go back out as integers (JSON Schema `minimum: 1`).
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => Value::from(n as i64),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

// ---------------------------------------------------------------- domain -> proto

fn role(r: d::Role) -> i32 {
    (match r {
        d::Role::System => pb::Role::System,
        d::Role::User => pb::Role::User,
        d::Role::Assistant => pb::Role::Assistant,
        d::Role::Tool => pb::Role::Tool,
        d::Role::Developer => pb::Role::Developer,
    }) as i32
}

fn finish_reason(f: Option<d::FinishReason>) -> i32 {
    (match f {
        None => pb::FinishReason::Unspecified,
        Some(d::FinishReason::Stop) => pb::FinishReason::Stop,
        Some(d::FinishReason::Length) => pb::FinishReason::Length,
        Some(d::FinishReason::ToolCalls) => pb::FinishReason::ToolCalls,
        Some(d::FinishReason::ContentFilter) => pb::FinishReason::ContentFilter,
    }) as i32
}

pub fn error_class(c: d::ErrorClass) -> pb::ErrorClass {
    use d::ErrorClass as E;
    match c {
        E::RateLimited => pb::ErrorClass::RateLimited,
        E::Overloaded => pb::ErrorClass::Overloaded,
        E::ContextWindowExceeded => pb::ErrorClass::ContextWindowExceeded,
        E::ContentPolicy => pb::ErrorClass::ContentPolicy,
        E::Authentication => pb::ErrorClass::Authentication,
        E::BadRequest => pb::ErrorClass::BadRequest,
        E::NotFound => pb::ErrorClass::NotFound,
        E::Timeout => pb::ErrorClass::Timeout,
        E::ServerError => pb::ErrorClass::ServerError,
        E::Connection => pb::ErrorClass::Connection,
        E::MalformedResponse => pb::ErrorClass::MalformedResponse,
        E::Unsupported => pb::ErrorClass::Unsupported,
    }
}

pub fn usage(u: &d::Usage) -> pb::Usage {
    pb::Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
        cached_prompt_tokens: u.cached_prompt_tokens,
        cache_creation_prompt_tokens: u.cache_creation_prompt_tokens,
        reasoning_tokens: u.reasoning_tokens,
    }
}

pub fn route(r: &RouteInfo, cost: d::Cost) -> pb::Route {
    pb::Route {
        model_group: r.group.to_string(),
        deployment_id: r.deployment.to_string(),
        provider: r.provider.to_string(),
        upstream_model: r.upstream_model.clone(),
        attempts: r.attempts.len() as u32,
        attempt_log: r
            .attempts
            .iter()
            .map(|a| pb::Attempt {
                deployment_id: a.deployment.to_string(),
                error_class: a.error.map_or(pb::ErrorClass::Unspecified, error_class) as i32,
                duration_ms: u32::try_from(a.duration.as_millis()).unwrap_or(u32::MAX),
                hedged: a.hedged,
                cancelled: a.cancelled,
            })
            .collect(),
        cost_nano_usd: cost.nano_usd(),
        cost_usd: cost.usd(),
        cache_hit: r.cache_hit,
        fallbacks: r.fallbacks.iter().map(ToString::to_string).collect(),
    }
}

fn message_out(m: d::Message) -> pb::Message {
    let (content, parts) = match m.content {
        d::Content::Text(t) => (t, Vec::new()),
        d::Content::Parts(p) => (
            String::new(),
            p.into_iter()
                .map(|p| pb::ContentPart {
                    part: Some(match p {
                        d::ContentPart::Text(t) => pb::content_part::Part::Text(t),
                        d::ContentPart::Image { url, .. } => {
                            pb::content_part::Part::ImageUrl(pb::ImageUrl { url, detail: 0 })
                        }
                    }),
                })
                .collect(),
        ),
    };
    pb::Message {
        role: role(m.role),
        content,
        parts,
        name: m.name.unwrap_or_default(),
        tool_calls: m
            .tool_calls
            .into_iter()
            .map(|c| pb::ToolCall {
                id: c.id,
                name: c.name,
                arguments: c.arguments,
            })
            .collect(),
        tool_call_id: m.tool_call_id.unwrap_or_default(),
    }
}

pub fn chat_response(v: d::ChatResponse, routed: &RouteInfo, cost: d::Cost) -> pb::ChatResponse {
    pb::ChatResponse {
        id: v.id,
        model: v.model,
        created: v.created,
        usage: Some(usage(&v.usage)),
        route: Some(route(routed, cost)),
        choices: v
            .choices
            .into_iter()
            .map(|c| pb::Choice {
                index: c.index,
                finish_reason: finish_reason(c.finish_reason),
                message: Some(message_out(c.message)),
            })
            .collect(),
        system_fingerprint: v.system_fingerprint.unwrap_or_default(),
    }
}

pub fn chat_chunk(c: d::ChatChunk) -> pb::ChatChunk {
    pb::ChatChunk {
        id: c.id,
        model: c.model,
        created: c.created,
        usage: c.usage.as_ref().map(usage),
        route: None,
        choices: c
            .choices
            .into_iter()
            .map(|ch| pb::ChunkChoice {
                index: ch.index,
                finish_reason: finish_reason(ch.finish_reason),
                delta: Some(pb::Delta {
                    role: ch.delta.role.map_or(0, role),
                    content: ch.delta.content.unwrap_or_default(),
                    tool_calls: ch
                        .delta
                        .tool_calls
                        .into_iter()
                        .map(|t| pb::ToolCallDelta {
                            index: t.index,
                            id: t.id.unwrap_or_default(),
                            name: t.name.unwrap_or_default(),
                            arguments: t.arguments.unwrap_or_default(),
                        })
                        .collect(),
                }),
            })
            .collect(),
    }
}

pub fn embed_response(v: d::EmbedResponse, routed: &RouteInfo, cost: d::Cost) -> pb::EmbedResponse {
    pb::EmbedResponse {
        model: v.model,
        usage: Some(usage(&v.usage)),
        route: Some(route(routed, cost)),
        data: v
            .data
            .into_iter()
            .enumerate()
            .map(|(i, vector)| pb::Embedding {
                index: i as u32,
                vector,
            })
            .collect(),
    }
}

#[cfg(test)]
mod robustness {
    use prost::Message as _;

    use super::*;
    use crate::domain::arbitrary::Rng;

    /// Random bytes as a protobuf ChatRequest/EmbedRequest, and valid messages with bytes flipped:
    /// a decode error or a validation error, never a panic.
    #[test]
    fn random_protobuf_never_panics() {
        let mut rng = Rng(0xE703_7ED1_A0B4_28DB);
        let valid = pb::ChatRequest {
            model: "g".into(),
            messages: vec![pb::Message {
                role: pb::Role::User as i32,
                content: "hi".into(),
                ..Default::default()
            }],
            temperature: Some(0.5),
            max_tokens: Some(10),
            ..Default::default()
        }
        .encode_to_vec();
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect()
            } else {
                let mut b = valid.clone();
                let i = rng.below(b.len());
                b[i] = rng.next_u64() as u8;
                b
            };
            if let Ok(r) = pb::ChatRequest::decode(bytes.as_slice()) {
                let _ = chat_request(r);
            }
            if let Ok(r) = pb::EmbedRequest::decode(bytes.as_slice()) {
                let _ = embed_request(r);
            }
        }
    }
}
