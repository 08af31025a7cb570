//! Gemini request and response bodies (from the Generative Language API reference).

use std::{collections::HashMap, time::Duration};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::providers::common;
use crate::{
    domain::{
        ChatRequest, Content, ContentPart, Delta, EmbedRequest, EmbedResponse, ErrorClass, FinishReason,
        Message, ResponseFormat, Role, ToolCall, ToolCallDelta, ToolChoice, Usage,
    },
    providers::{ProviderError, client, common::data_url},
};

fn part(p: &ContentPart) -> Value {
    match p {
        ContentPart::Text(t) => json!({"text": t}),
        ContentPart::Image { url, .. } => match data_url(url) {
            Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
            None => json!({"fileData": {"mimeType": mime_of(url), "fileUri": url}}),
        },
    }
}

fn mime_of(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".webp") {
        "image/webp"
    } else if lower.ends_with(".gif") {
        "image/gif"
    } else {
        "image/jpeg"
    }
}

fn parts(m: &Message) -> Vec<Value> {
    match &m.content {
        Content::Text(t) if t.is_empty() => vec![],
        Content::Text(t) => vec![json!({"text": t})],
        Content::Parts(ps) => ps.iter().map(part).collect(),
    }
}

fn bad(message: String) -> ProviderError {
    ProviderError::new(ErrorClass::BadRequest, message)
}

/// The `generateContent` body for `req`.
pub fn request(req: &ChatRequest, drop_params: bool) -> Result<Value, ProviderError> {
    let mut system = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Function responses name their function; OpenAI-style tool messages carry only the call id.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, ps) = match m.role {
            Role::System | Role::Developer => {
                system.push(json!({"text": m.content.joined_text()}));
                continue;
            }
            Role::User => ("user", parts(m)),
            Role::Assistant => {
                let mut ps = parts(m);
                for (j, c) in m.tool_calls.iter().enumerate() {
                    call_names.insert(&c.id, &c.name);
                    let args: Value = if c.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&c.arguments).map_err(|e| {
                            bad(format!(
                                "messages[{i}].tool_calls[{j}].arguments is not JSON: {e}"
                            ))
                        })?
                    };
                    ps.push(json!({"functionCall": {"name": c.name, "args": args}}));
                }
                ("model", ps)
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let name = call_names.get(id).ok_or_else(|| {
                    bad(format!(
                        "messages[{i}].tool_call_id {id:?} answers no earlier tool call"
                    ))
                })?;
                let text = m.content.joined_text();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(o)) => Value::Object(o),
                    _ => json!({"content": text}),
                };
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
        };
        match contents.last_mut() {
            Some((r, c)) if *r == role => c.extend(ps),
            _ => contents.push((role, ps)),
        }
    }
    let mut body = Map::new();
    body.insert(
        "contents".into(),
        contents
            .into_iter()
            .map(|(role, parts)| json!({"role": role, "parts": parts}))
            .collect::<Vec<_>>()
            .into(),
    );
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let p = &req.params;
    let mut config = Map::new();
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            config.insert(k.into(), v);
        }
    };
    set("temperature", p.temperature.map(Value::from));
    set("topP", p.top_p.map(Value::from));
    set("maxOutputTokens", p.max_tokens.map(Value::from));
    set(
        "stopSequences",
        (!p.stop.is_empty()).then(|| Value::from(p.stop.clone())),
    );
    set("candidateCount", p.n.map(Value::from));
    set("seed", p.seed.map(Value::from));
    set("presencePenalty", p.presence_penalty.map(Value::from));
    set("frequencyPenalty", p.frequency_penalty.map(Value::from));
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => set("responseMimeType", Some("application/json".into())),
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            set("responseMimeType", Some("application/json".into()));
            set("responseJsonSchema", schema.clone());
        }
        _ => {}
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = Map::new();
                d.insert("name".into(), t.name.clone().into());
                if let Some(desc) = &t.description {
                    d.insert("description".into(), desc.clone().into());
                }
                if let Some(params) = &t.parameters {
                    d.insert("parametersJsonSchema".into(), params.clone());
                }
                Value::Object(d)
            })
            .collect();
        body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    if let Some(choice) = &req.tool_choice {
        let config = match choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Function(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        body.insert("toolConfig".into(), json!({"functionCallingConfig": config}));
    }
    let _ = drop_params; // every OpenAI parameter we carry has a Gemini equivalent; `user` has no effect on output
    Ok(Value::Object(body))
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u32,
    #[serde(default)]
    candidates_token_count: u32,
    #[serde(default)]
    cached_content_token_count: u32,
    #[serde(default)]
    thoughts_token_count: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    pub model_version: Option<String>,
    #[serde(default)]
    pub response_id: Option<String>,
    #[serde(default)]
    prompt_feedback: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<Value>,
}

impl GenerateResponse {
    pub fn usage(&self) -> Usage {
        let u = self.usage_metadata.clone().unwrap_or_default();
        let completion = u.candidates_token_count + u.thoughts_token_count;
        Usage {
            prompt_tokens: u.prompt_token_count,
            completion_tokens: completion,
            total_tokens: u.prompt_token_count + completion,
            cached_prompt_tokens: u.cached_content_token_count,
            cache_creation_prompt_tokens: 0,
            reasoning_tokens: u.thoughts_token_count,
        }
    }
}

pub fn parse(body: &[u8]) -> Result<GenerateResponse, ProviderError> {
    let r: GenerateResponse = serde_json::from_slice(body).map_err(|e| {
        ProviderError::new(
            ErrorClass::MalformedResponse,
            format!("Gemini response is not valid JSON: {e}"),
        )
    })?;
    if let Some(e) = &r.error {
        return Err(classify(None, e));
    }
    if r.candidates.is_empty()
        && let Some(reason) = r.prompt_feedback.as_ref().and_then(|f| f["blockReason"].as_str())
    {
        return Err(ProviderError::new(
            ErrorClass::ContentPolicy,
            format!("prompt blocked: {reason}"),
        ));
    }
    Ok(r)
}

fn finish(reason: &str, has_calls: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Text and function calls of the first candidate. Calls get ids (`call_N`) unless Gemini sent one.
fn read_parts(r: &GenerateResponse, calls: &mut u32) -> (String, Vec<ToolCall>, Option<String>) {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let Some(c) = r.candidates.first() else {
        return (text, tool_calls, None);
    };
    for p in c.content.iter().flat_map(|c| &c.parts) {
        if p["thought"] == true {
            continue;
        }
        if let Some(t) = p["text"].as_str() {
            text.push_str(t);
        } else if let Some(f) = p.get("functionCall") {
            let id = f["id"]
                .as_str()
                .map_or_else(|| format!("call_{calls}"), str::to_string);
            *calls += 1;
            tool_calls.push(ToolCall {
                id,
                name: f["name"].as_str().unwrap_or_default().to_string(),
                arguments: f.get("args").cloned().unwrap_or_else(|| json!({})).to_string(),
            });
        }
    }
    (text, tool_calls, c.finish_reason.clone())
}

pub fn candidate_message(
    r: &GenerateResponse,
    calls: &mut u32,
) -> Result<(Message, FinishReason), ProviderError> {
    if r.candidates.is_empty() {
        return Err(ProviderError::new(
            ErrorClass::MalformedResponse,
            "Gemini returned no candidate",
        ));
    }
    let (text, tool_calls, reason) = read_parts(r, calls);
    let f = finish(reason.as_deref().unwrap_or("STOP"), !tool_calls.is_empty());
    Ok((Message::assistant(text, tool_calls), f))
}

pub fn candidate_delta(
    r: &GenerateResponse,
    calls: &mut u32,
    first: bool,
) -> Result<(Delta, Option<FinishReason>), ProviderError> {
    let base = *calls;
    let (text, tool_calls, reason) = read_parts(r, calls);
    let delta = Delta {
        role: first.then_some(Role::Assistant),
        content: (!text.is_empty()).then_some(text),
        tool_calls: tool_calls
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
    let f = reason.map(|r| finish(&r, *calls > 0));
    Ok((delta, f))
}

pub fn embed_request(req: &EmbedRequest, model: &str) -> Value {
    let requests: Vec<Value> = req
        .input
        .iter()
        .map(|t| {
            let mut r = json!({"model": format!("models/{model}"), "content": {"parts": [{"text": t}]}});
            if let Some(d) = req.dimensions {
                r["outputDimensionality"] = d.into();
            }
            r
        })
        .collect();
    json!({"requests": requests})
}

pub fn parse_embed(req: &EmbedRequest, body: &[u8], model: &str) -> Result<EmbedResponse, ProviderError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ProviderError::new(
            ErrorClass::MalformedResponse,
            format!("embeddings are not valid JSON: {e}"),
        )
    })?;
    if let Some(e) = v.get("error") {
        return Err(classify(None, e));
    }
    let data: Vec<Vec<f32>> = v["embeddings"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    e["values"]
                        .as_array()
                        .map(|xs| xs.iter().filter_map(Value::as_f64).map(|x| x as f32).collect())
                })
                .collect::<Option<Vec<_>>>()
        })
        .unwrap_or_default()
        .ok_or_else(|| ProviderError::new(ErrorClass::MalformedResponse, "embedding without values"))?;
    if data.len() != req.input.len() {
        return Err(ProviderError::new(
            ErrorClass::MalformedResponse,
            format!("{} vectors for {} inputs", data.len(), req.input.len()),
        ));
    }
    let tokens = req.estimated_prompt_tokens() as u32; // Gemini does not report embedding usage
    Ok(EmbedResponse {
        model: model.to_string(),
        data,
        usage: Usage::new(tokens, 0),
    })
}

/// Vertex AI's text-embedding `:predict` body.
pub fn vertex_embed_request(req: &EmbedRequest) -> Value {
    let instances: Vec<Value> = req.input.iter().map(|t| json!({"content": t})).collect();
    let mut body = json!({"instances": instances});
    if let Some(d) = req.dimensions {
        body["parameters"] = json!({"outputDimensionality": d});
    }
    body
}

pub fn parse_vertex_embed(
    req: &EmbedRequest,
    body: &[u8],
    model: &str,
) -> Result<EmbedResponse, ProviderError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ProviderError::new(
            ErrorClass::MalformedResponse,
            format!("embeddings are not valid JSON: {e}"),
        )
    })?;
    if let Some(e) = v.get("error") {
        return Err(classify(None, e));
    }
    let predictions = v["predictions"].as_array().cloned().unwrap_or_default();
    let mut tokens = 0u64;
    let mut data = Vec::with_capacity(predictions.len());
    for p in &predictions {
        let values: Vec<f32> = serde_json::from_value(p["embeddings"]["values"].clone()).map_err(|e| {
            ProviderError::new(
                ErrorClass::MalformedResponse,
                format!("embedding without values: {e}"),
            )
        })?;
        tokens += p["embeddings"]["statistics"]["token_count"].as_u64().unwrap_or(0);
        data.push(values);
    }
    if data.len() != req.input.len() {
        return Err(ProviderError::new(
            ErrorClass::MalformedResponse,
            format!("{} vectors for {} inputs", data.len(), req.input.len()),
        ));
    }
    Ok(EmbedResponse {
        model: model.to_string(),
        data,
        usage: Usage::new(u32::try_from(tokens).unwrap_or(u32::MAX), 0),
    })
}

/// `"32s"` / `"1.5s"` (protobuf Duration JSON).
fn duration(s: &str) -> Option<Duration> {
    Duration::try_from_secs_f64(s.strip_suffix('s')?.parse().ok()?).ok()
}

/// Google's error object: `{"code", "message", "status", "details"}`.
pub fn classify(status: Option<u16>, e: &Value) -> ProviderError {
    let message = e["message"].as_str().unwrap_or_default();
    let lower = message.to_ascii_lowercase();
    let reason_is = |r: &str| {
        e["details"]
            .as_array()
            .is_some_and(|ds| ds.iter().any(|d| d["reason"].as_str() == Some(r)))
    };
    let class =
        if lower.contains("exceeds the maximum number of tokens") || lower.contains("input token count") {
            ErrorClass::ContextWindowExceeded
        } else if reason_is("API_KEY_INVALID") || lower.contains("api key not valid") {
            ErrorClass::Authentication
        } else {
            match e["status"].as_str().unwrap_or_default() {
                "RESOURCE_EXHAUSTED" => ErrorClass::RateLimited,
                "UNAVAILABLE" => ErrorClass::Overloaded,
                "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => ErrorClass::BadRequest,
                "PERMISSION_DENIED" | "UNAUTHENTICATED" => ErrorClass::Authentication,
                "NOT_FOUND" => ErrorClass::NotFound,
                "DEADLINE_EXCEEDED" => ErrorClass::Timeout,
                "INTERNAL" | "UNKNOWN" => ErrorClass::ServerError,
                _ => status
                    .or_else(|| e["code"].as_u64().and_then(|c| u16::try_from(c).ok()))
                    .map_or(ErrorClass::ServerError, client::class_for_status),
            }
        };
    let retry_after = e["details"].as_array().and_then(|ds| {
        ds.iter()
            .find(|d| {
                d["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
            })
            .and_then(|d| d["retryDelay"].as_str())
            .and_then(duration)
    });
    ProviderError {
        retry_after,
        ..common::provider_error(
            class,
            status,
            format!("{} {message}", e["status"].as_str().unwrap_or_default()),
        )
    }
}

pub fn parse_error(status: Option<u16>, headers: &http::HeaderMap, body: &[u8]) -> ProviderError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // The streaming endpoint wraps the error object in an array.
    let e = v.get("error").or_else(|| v.get(0).and_then(|x| x.get("error")));
    let mut err = match e {
        Some(e) => classify(status, e),
        None => ProviderError {
            class: status.map_or(ErrorClass::MalformedResponse, client::class_for_status),
            status,
            message: "upstream error without a Google error body".into(),
            retry_after: None,
        },
    };
    err.retry_after = err.retry_after.or_else(|| client::retry_after(headers));
    err
}
