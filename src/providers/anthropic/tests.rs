//! Anthropic translation tests: the exact body sent, responses, streams at every split point, errors.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;

use super::{stream::Decoder, wire};
use crate::{
    domain::*,
    providers::http::{Framing, decode_stream},
};

fn request() -> ChatRequest {
    ChatRequest {
        model: ModelGroup::new("g"),
        messages: vec![
            Message::text(Role::System, "be brief"),
            Message::text(Role::Developer, "use metric units"),
            Message {
                content: Content::Parts(vec![
                    ContentPart::Text("what is this?".into()),
                    ContentPart::Image {
                        url: "data:image/png;base64,iVBOR".into(),
                        detail: None,
                    },
                ]),
                ..Message::text(Role::User, "")
            },
            Message {
                tool_calls: vec![
                    ToolCall {
                        id: "t1".into(),
                        name: "weather".into(),
                        arguments: r#"{"city":"Oslo"}"#.into(),
                    },
                    ToolCall {
                        id: "t2".into(),
                        name: "weather".into(),
                        arguments: r#"{"city":"Rome"}"#.into(),
                    },
                ],
                ..Message::text(Role::Assistant, "checking")
            },
            Message {
                tool_call_id: Some("t1".into()),
                ..Message::text(Role::Tool, "5C")
            },
            Message {
                tool_call_id: Some("t2".into()),
                ..Message::text(Role::Tool, "20C")
            },
        ],
        params: SamplingParams {
            temperature: Some(0.3),
            stop: vec!["END".into()],
            ..Default::default()
        },
        tools: vec![Tool {
            name: "weather".into(),
            description: Some("Weather for a city".into()),
            parameters: Some(json!({"type": "object", "properties": {"city": {"type": "string"}}})),
            strict: None,
        }],
        tool_choice: Some(ToolChoice::Required),
        response_format: None,
        user: Some("u-1".into()),
        metadata: BTreeMap::new(),
        routing: RoutingOptions::default(),
        cache: CacheControl::default(),
    }
}

#[test]
fn request_body_follows_the_messages_api() {
    let body = wire::request(&request(), "claude-sonnet-4-5", true, false).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 4096,
            "system": "be brief\n\nuse metric units",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "checking"},
                    {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Oslo"}},
                    {"type": "tool_use", "id": "t2", "name": "weather", "input": {"city": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "5C"},
                    {"type": "tool_result", "tool_use_id": "t2", "content": "20C"}
                ]}
            ],
            "temperature": 0.3,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"},
            "tools": [{"name": "weather", "description": "Weather for a city",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any"},
            "stream": true
        })
    );
}

#[test]
fn unsupported_parameters_are_named_unless_dropped() {
    let mut r = request();
    r.params.seed = Some(7);
    let e = wire::request(&r, "m", false, false).unwrap_err();
    assert_eq!(e.class, ErrorClass::Unsupported);
    assert!(
        e.message.contains("anthropic") && e.message.contains("`seed`"),
        "{}",
        e.message
    );
    let body = wire::request(&r, "m", false, true).unwrap();
    assert!(body.get("seed").is_none());
}

#[test]
fn json_mode_is_a_forced_tool_and_comes_back_as_text() {
    let mut r = request();
    r.tools.clear();
    r.tool_choice = None;
    r.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        description: None,
        schema: Some(json!({"type": "object", "properties": {"n": {"type": "integer"}}})),
        strict: None,
    });
    let body = wire::request(&r, "m", false, false).unwrap();
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "json_output"})
    );
    assert_eq!(
        body["tools"][0]["input_schema"]["properties"]["n"]["type"],
        "integer"
    );
    let resp = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "json_output", "input": {"n": 3}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5}});
    let r = wire::parse_response(resp.to_string().as_bytes(), true).unwrap();
    assert_eq!(r.choices[0].message.content, Content::Text(r#"{"n":3}"#.into()));
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
    assert!(r.choices[0].message.tool_calls.is_empty());
}

#[test]
fn parses_text_tool_calls_and_cache_usage() {
    let resp = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": "x"},
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}});
    let r = wire::parse_response(resp.to_string().as_bytes(), false).unwrap();
    let m = &r.choices[0].message;
    assert_eq!(m.content, Content::Text("Let me check.".into()));
    assert_eq!(m.tool_calls[0].arguments, r#"{"city":"Oslo"}"#);
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        r.usage,
        Usage {
            prompt_tokens: 115,
            completion_tokens: 20,
            total_tokens: 135,
            cached_prompt_tokens: 100,
            cache_creation_prompt_tokens: 5,
            reasoning_tokens: 0
        }
    );
}

#[test]
fn errors_are_classified() {
    let h = http::HeaderMap::new();
    let e = |status, kind: &str, msg: &str| {
        wire::parse_error(
            Some(status),
            &h,
            json!({"type": "error", "error": {"type": kind, "message": msg}})
                .to_string()
                .as_bytes(),
        )
    };
    assert_eq!(
        e(529, "overloaded_error", "Overloaded").class,
        ErrorClass::Overloaded
    );
    assert_eq!(
        e(429, "rate_limit_error", "slow down").class,
        ErrorClass::RateLimited
    );
    assert_eq!(
        e(
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum"
        )
        .class,
        ErrorClass::ContextWindowExceeded
    );
    assert_eq!(
        e(400, "invalid_request_error", "max_tokens: field required").class,
        ErrorClass::BadRequest
    );
    assert_eq!(
        e(401, "authentication_error", "invalid x-api-key sk-ant-123").class,
        ErrorClass::Authentication
    );
    assert!(
        !e(401, "authentication_error", "invalid x-api-key sk-ant-123")
            .message
            .contains("sk-ant")
    );
    assert_eq!(
        e(404, "not_found_error", "model: claude-9").class,
        ErrorClass::NotFound
    );
    assert_eq!(
        wire::parse_error(Some(502), &h, b"<html>").class,
        ErrorClass::ServerError
    );
}

pub const STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":0}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Oslo\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

async fn decode(parts: Vec<&'static [u8]>) -> Vec<Result<ChatChunk, crate::providers::ProviderError>> {
    let body = futures_util::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p)))).boxed();
    decode_stream(body, Framing::Sse, Box::new(Decoder::new(false)))
        .collect()
        .await
}

/// What a stream means: text, tool calls (id, name, joined arguments), finish reason, usage.
type Summary = (
    String,
    Vec<(String, String, String)>,
    Option<FinishReason>,
    Option<Usage>,
);

fn summary(items: &[Result<ChatChunk, crate::providers::ProviderError>]) -> Summary {
    let (mut text, mut calls, mut finish, mut usage) =
        (String::new(), Vec::<(String, String, String)>::new(), None, None);
    for c in items.iter().map(|i| i.as_ref().unwrap()) {
        for ch in &c.choices {
            text.push_str(ch.delta.content.as_deref().unwrap_or_default());
            for t in &ch.delta.tool_calls {
                let i = t.index as usize;
                if calls.len() <= i {
                    calls.push(Default::default());
                }
                calls[i].0.push_str(t.id.as_deref().unwrap_or_default());
                calls[i].1.push_str(t.name.as_deref().unwrap_or_default());
                calls[i].2.push_str(t.arguments.as_deref().unwrap_or_default());
            }
            finish = ch.finish_reason.or(finish);
        }
        usage = c.usage.or(usage);
    }
    (text, calls, finish, usage)
}

#[tokio::test]
async fn stream_decodes_identically_at_every_split_point() {
    let bytes = STREAM.as_bytes();
    let whole = decode(vec![bytes]).await;
    let expected = summary(&whole);
    assert_eq!(expected.0, "Hello");
    assert_eq!(
        expected.1,
        vec![(
            "toolu_1".to_string(),
            "weather".to_string(),
            r#"{"city": "Oslo"}"#.to_string()
        )]
    );
    assert_eq!(expected.2, Some(FinishReason::ToolCalls));
    assert_eq!(expected.3.unwrap().total_tokens, 40);
    for split in 1..bytes.len() {
        let got = decode(vec![&bytes[..split], &bytes[split..]]).await;
        assert_eq!(summary(&got), expected, "split at {split}");
    }
}

#[tokio::test]
async fn truncated_and_error_streams_are_errors() {
    let cut = &STREAM.as_bytes()[..STREAM.find("event: message_delta").unwrap()];
    let items = decode(vec![cut]).await;
    assert_eq!(
        items.last().unwrap().as_ref().unwrap_err().class,
        ErrorClass::Connection,
        "truncated"
    );
    let err = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let items = decode(vec![
        &STREAM.as_bytes()[..STREAM.find("event: ping").unwrap()],
        err,
    ])
    .await;
    assert_eq!(
        items.last().unwrap().as_ref().unwrap_err().class,
        ErrorClass::Overloaded
    );
    let items = decode(vec![b"data: {not json\n\n"]).await;
    assert_eq!(
        items[0].as_ref().unwrap_err().class,
        ErrorClass::MalformedResponse
    );
}
