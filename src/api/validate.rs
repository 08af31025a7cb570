//! Request validation shared by every surface (gRPC and HTTP), on the canonical request, so that the
//! same bad input gets the same error naming the same field whichever way it arrived.

use super::error::ApiError;
use crate::domain::{ChatRequest, Content, ContentPart, EmbedRequest, ResponseFormat, Role, ToolChoice};

pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::InvalidArgument {
        field: field.into(),
        message: message.into(),
    }
}

fn in_range(field: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<(), ApiError> {
    match v {
        Some(x) if !(x.is_finite() && (lo..=hi).contains(&x)) => {
            Err(invalid(field, format!("must be between {lo} and {hi}, got {x}")))
        }
        _ => Ok(()),
    }
}

fn routing(tags: &[String], fallbacks: &[crate::domain::ModelGroup]) -> Result<(), ApiError> {
    if let Some(i) = tags.iter().position(|t| t.trim().is_empty()) {
        return Err(invalid(format!("routing.tags[{i}]"), "must not be empty"));
    }
    if let Some(i) = fallbacks.iter().position(|t| t.as_str().trim().is_empty()) {
        return Err(invalid(format!("routing.fallbacks[{i}]"), "must not be empty"));
    }
    Ok(())
}

pub fn chat(r: &ChatRequest) -> Result<(), ApiError> {
    if r.model.as_str().trim().is_empty() {
        return Err(invalid("model", "is required"));
    }
    if r.messages.is_empty() {
        return Err(invalid("messages", "must contain at least one message"));
    }
    for (i, m) in r.messages.iter().enumerate() {
        if let Content::Parts(parts) = &m.content {
            for (j, p) in parts.iter().enumerate() {
                if let ContentPart::Image { url, .. } = p
                    && url.is_empty()
                {
                    return Err(invalid(
                        format!("messages[{i}].parts[{j}].image_url.url"),
                        "is required",
                    ));
                }
            }
        }
        if m.role == Role::Tool && m.tool_call_id.is_none() {
            return Err(invalid(
                format!("messages[{i}].tool_call_id"),
                "is required for role tool",
            ));
        }
        if !m.tool_calls.is_empty() && m.role != Role::Assistant {
            return Err(invalid(
                format!("messages[{i}].tool_calls"),
                "only assistant messages carry tool calls",
            ));
        }
        for (j, c) in m.tool_calls.iter().enumerate() {
            if c.id.is_empty() || c.name.is_empty() {
                return Err(invalid(
                    format!("messages[{i}].tool_calls[{j}]"),
                    "id and name are required",
                ));
            }
        }
    }
    let p = &r.params;
    if let Some(n) = p.n
        && !(1..=128).contains(&n)
    {
        return Err(invalid("n", format!("must be between 1 and 128, got {n}")));
    }
    if p.max_tokens == Some(0) {
        return Err(invalid("max_tokens", "must be at least 1"));
    }
    if p.stop.len() > 4 {
        return Err(invalid(
            "stop",
            format!("at most 4 stop sequences, got {}", p.stop.len()),
        ));
    }
    in_range("temperature", p.temperature, 0.0, 2.0)?;
    in_range("top_p", p.top_p, 0.0, 1.0)?;
    in_range("presence_penalty", p.presence_penalty, -2.0, 2.0)?;
    in_range("frequency_penalty", p.frequency_penalty, -2.0, 2.0)?;
    for (i, t) in r.tools.iter().enumerate() {
        if t.name.is_empty() {
            return Err(invalid(format!("tools[{i}].name"), "is required"));
        }
    }
    match &r.tool_choice {
        Some(ToolChoice::Function(name)) if !r.tools.iter().any(|t| &t.name == name) => {
            return Err(invalid(
                "tool_choice.function_name",
                format!("names no tool in tools: {name:?}"),
            ));
        }
        Some(ToolChoice::Required) if r.tools.is_empty() => {
            return Err(invalid("tool_choice.mode", "required needs tools"));
        }
        _ => {}
    }
    if let Some(ResponseFormat::JsonSchema { name, .. }) = &r.response_format
        && name.is_empty()
    {
        return Err(invalid("response_format.json_schema.name", "is required"));
    }
    routing(&r.routing.tags, &r.routing.fallbacks)
}

pub fn embed(r: &EmbedRequest) -> Result<(), ApiError> {
    if r.model.as_str().trim().is_empty() {
        return Err(invalid("model", "is required"));
    }
    if r.input.is_empty() {
        return Err(invalid("input", "must contain at least one text"));
    }
    if let Some(i) = r.input.iter().position(String::is_empty) {
        return Err(invalid(format!("input[{i}]"), "must not be empty"));
    }
    if r.dimensions == Some(0) {
        return Err(invalid("dimensions", "must be at least 1"));
    }
    routing(&r.routing.tags, &r.routing.fallbacks)
}
