//! Gemini translation tests beyond the conformance suite: multi-turn tool results, RetryInfo.

use serde_json::json;

use super::wire;
use crate::domain::*;

fn req(messages: Vec<Message>) -> ChatRequest {
    ChatRequest::new(ModelGroup::new("g"), messages)
}

#[test]
fn tool_results_become_named_function_responses() {
    let r = req(vec![
        Message::text(Role::User, "weather in Oslo?"),
        Message {
            tool_calls: vec![ToolCall {
                id: "call_0".into(),
                name: "weather".into(),
                arguments: r#"{"city":"Oslo"}"#.into(),
            }],
            ..Message::text(Role::Assistant, "")
        },
        Message {
            tool_call_id: Some("call_0".into()),
            ..Message::text(Role::Tool, r#"{"celsius": 5}"#)
        },
        Message {
            tool_call_id: Some("call_0".into()),
            ..Message::text(Role::Tool, "plain text result")
        },
    ]);
    let body = wire::request(&r, false).unwrap();
    assert_eq!(
        body["contents"][1],
        json!({"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}]})
    );
    assert_eq!(
        body["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "weather", "response": {"celsius": 5}}},
            {"functionResponse": {"name": "weather", "response": {"content": "plain text result"}}}
        ]}),
        "JSON results pass as objects, text is wrapped; consecutive results share one turn"
    );
    let orphan = req(vec![Message {
        tool_call_id: Some("nope".into()),
        ..Message::text(Role::Tool, "x")
    }]);
    let e = wire::request(&orphan, false).unwrap_err();
    assert_eq!(e.class, ErrorClass::BadRequest);
    assert!(e.message.contains("messages[0].tool_call_id"), "{}", e.message);
}

#[test]
fn rate_limits_carry_google_retry_info() {
    let body = json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "32s"}]}});
    let e = wire::parse_error(Some(429), &Default::default(), body.to_string().as_bytes());
    assert_eq!(e.class, ErrorClass::RateLimited);
    assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(32)));
    // The streaming endpoint wraps errors in an array.
    let wrapped = format!("[{body}]");
    assert_eq!(
        wire::parse_error(Some(429), &Default::default(), wrapped.as_bytes()).class,
        ErrorClass::RateLimited
    );
}
