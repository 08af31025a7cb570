//! Pure translation tests: the exact JSON we send, and the parse of OpenAI's documented shapes.

use std::collections::BTreeMap;

use serde_json::json;

use super::wire;
use crate::domain::*;

fn request() -> ChatRequest {
    ChatRequest {
        model: ModelGroup::new("smart"),
        messages: vec![
            Message::text(Role::System, "be brief"),
            Message {
                role: Role::User,
                content: Content::Parts(vec![
                    ContentPart::Text("what is this?".into()),
                    ContentPart::Image {
                        url: "data:image/png;base64,AAAA".into(),
                        detail: Some(ImageDetail::Low),
                    },
                ]),
                name: Some("ann".into()),
                tool_calls: vec![],
                tool_call_id: None,
            },
            Message {
                role: Role::Assistant,
                content: Content::Text(String::new()),
                name: None,
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "lookup".into(),
                    arguments: "{\"q\":1}".into(),
                }],
                tool_call_id: None,
            },
            Message {
                tool_call_id: Some("call_1".into()),
                ..Message::text(Role::Tool, "42")
            },
        ],
        params: SamplingParams {
            temperature: Some(0.5),
            max_tokens: Some(64),
            stop: vec!["END".into()],
            seed: Some(7),
            ..Default::default()
        },
        tools: vec![Tool {
            name: "lookup".into(),
            description: Some("find".into()),
            parameters: Some(json!({"type": "object"})),
            strict: None,
        }],
        tool_choice: Some(ToolChoice::Function("lookup".into())),
        response_format: Some(ResponseFormat::JsonObject),
        user: Some("end-user-1".into()),
        metadata: BTreeMap::from([("tag".into(), "never-sent".into())]),
        routing: RoutingOptions {
            tags: vec!["never-sent-either".into()],
            ..Default::default()
        },
        cache: CacheControl::default(),
    }
}

#[test]
fn chat_body_is_openai_json() {
    let body = serde_json::to_value(wire::chat_body(&request(), "gpt-4o", true)).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "name": "ann", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}}
                ]},
                {"role": "tool", "content": "42", "tool_call_id": "call_1"}
            ],
            "temperature": 0.5,
            "max_tokens": 64,
            "stop": ["END"],
            "seed": 7,
            "user": "end-user-1",
            "response_format": {"type": "json_object"},
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "find", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );
}

#[test]
fn parses_a_completion_with_tool_calls_and_cached_usage() {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
            "logprobs": null, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25,
                  "prompt_tokens_details": {"cached_tokens": 8}, "completion_tokens_details": {"reasoning_tokens": 0}},
        "system_fingerprint": "fp_1"
    });
    let r = wire::parse_chat(body.to_string().as_bytes()).unwrap();
    assert_eq!(r.model, "gpt-4o-2024-08-06");
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(r.choices[0].message.tool_calls[0].name, "lookup");
    assert_eq!(r.usage.cached_prompt_tokens, 8);
    assert_eq!(r.usage.total_tokens, 25);
}

#[test]
fn parses_stream_chunks_including_usage_only_chunks() {
    let c = wire::parse_chunk(r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}],"usage":null}"#).unwrap();
    assert_eq!(c.choices[0].delta.content.as_deref(), Some("Hi"));
    assert_eq!(c.choices[0].delta.role, Some(Role::Assistant));
    assert!(c.usage.is_none());
    let c = wire::parse_chunk(
        r#"{"id":"c","choices":null,"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
    )
    .unwrap();
    assert!(c.choices.is_empty());
    assert_eq!(c.usage.unwrap().total_tokens, 5);
    let c = wire::parse_chunk(r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a"}}]},"finish_reason":null}]}"#).unwrap();
    assert_eq!(
        c.choices[0].delta.tool_calls[0].arguments.as_deref(),
        Some("{\"a")
    );
}

#[test]
fn errors_are_classified_and_do_not_echo_keys() {
    let mut h = http::HeaderMap::new();
    h.insert("retry-after", "3".parse().unwrap());
    let e = wire::parse_error(
        429,
        &h,
        br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
    );
    assert_eq!(e.class, ErrorClass::RateLimited);
    assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(3)));

    let e = wire::parse_error(400, &Default::default(), br#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#);
    assert_eq!(e.class, ErrorClass::ContextWindowExceeded);

    let e = wire::parse_error(401, &Default::default(), br#"{"error":{"message":"Incorrect API key provided: sk-abc***wxyz","type":"invalid_request_error","code":"invalid_api_key"}}"#);
    assert_eq!(e.class, ErrorClass::Authentication);
    assert!(!e.to_string().contains("sk-abc"), "{e}");

    let e = wire::parse_error(503, &Default::default(), b"<html>bad gateway</html>");
    assert_eq!(e.class, ErrorClass::Overloaded);

    let e = wire::parse_chat(br#"{"error":{"message":"overloaded","type":"server_error"}}"#).unwrap_err();
    assert_eq!(
        e.class,
        ErrorClass::ServerError,
        "an error inside a 200 is an error"
    );
    assert_eq!(
        wire::parse_chat(b"garbage").unwrap_err().class,
        ErrorClass::MalformedResponse
    );
}
