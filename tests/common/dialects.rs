//! Provider dialects for the fake upstream, each written from the provider's public API reference.

use axum::http::Uri;
use serde_json::{Value, json};

use super::fake_provider::{Answer, Dialect, Fault, pieces, sse};

/// OpenAI Chat Completions (also Azure OpenAI, which serves the same bodies).
pub struct OpenAi;

impl Dialect for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }
    fn streaming(&self, _: &Uri, body: &Value) -> bool {
        body["stream"] == true
    }
    fn is_embed(&self, uri: &Uri) -> bool {
        uri.path().ends_with("/embeddings")
    }
    fn forced_tool(&self, body: &Value) -> Option<String> {
        body["tool_choice"]["function"]["name"]
            .as_str()
            .map(str::to_string)
    }
    fn json_mode(&self, body: &Value) -> bool {
        body["response_format"]["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("json"))
    }
    fn reply(&self, body: &Value, answer: &Answer) -> Value {
        let (message, finish) = match answer {
            Answer::Text(t) => (json!({"role": "assistant", "content": t}), "stop"),
            Answer::Tool { name, arguments } => (
                json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments.to_string()}}]}),
                "tool_calls",
            ),
        };
        json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": body["model"],
               "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
               "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}})
    }
    fn stream(&self, body: &Value, answer: &Answer) -> Vec<String> {
        let chunk = |delta: Value, finish: Value| {
            sse(
                None,
                &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": body["model"], "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
            )
        };
        let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        let finish = match answer {
            Answer::Text(t) => {
                out.extend(
                    pieces(t)
                        .into_iter()
                        .map(|p| chunk(json!({"content": p}), Value::Null)),
                );
                "stop"
            }
            Answer::Tool { name, arguments } => {
                let args = arguments.to_string();
                let (a, b) = args.split_at(args.len() / 2);
                out.push(chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null));
                out.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}),
                    Value::Null,
                ));
                out.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": b}}]}),
                    Value::Null,
                ));
                "tool_calls"
            }
        };
        out.push(chunk(json!({}), json!(finish)));
        out.push(sse(None, &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": body["model"], "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}})));
        out.push("data: [DONE]\n\n".into());
        out
    }
    fn embed(&self, body: &Value) -> Value {
        let n = body["input"].as_array().map_or(1, Vec::len);
        let data: Vec<Value> = (0..n)
            .map(|i| json!({"object": "embedding", "index": i, "embedding": [i as f64, 0.5]}))
            .collect();
        json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 4, "total_tokens": 4}})
    }
    fn error(&self, fault: Fault) -> (u16, String) {
        let (status, kind, code, message) = match fault {
            Fault::RateLimited => (429, "requests", "rate_limit_exceeded", "Rate limit reached"),
            Fault::Overloaded => (503, "server_error", "", "The engine is currently overloaded"),
            Fault::ContextWindow => (
                400,
                "invalid_request_error",
                "context_length_exceeded",
                "This model's maximum context length is 8192 tokens",
            ),
            Fault::ContentPolicy => (
                400,
                "invalid_request_error",
                "content_policy_violation",
                "Your request was rejected by our safety system",
            ),
            Fault::Auth => (
                401,
                "invalid_request_error",
                "invalid_api_key",
                "Incorrect API key provided: sk-abc*****",
            ),
            Fault::BadRequest => (
                400,
                "invalid_request_error",
                "",
                "Invalid value for 'temperature'",
            ),
            Fault::NotFound => (
                404,
                "invalid_request_error",
                "model_not_found",
                "The model does not exist",
            ),
            _ => (
                500,
                "server_error",
                "",
                "The server had an error while processing your request",
            ),
        };
        (
            status,
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string(),
        )
    }
}

/// Anthropic Messages.
pub struct Anthropic;

impl Dialect for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }
    fn streaming(&self, _: &Uri, body: &Value) -> bool {
        body["stream"] == true
    }
    fn is_embed(&self, _: &Uri) -> bool {
        false
    }
    fn forced_tool(&self, body: &Value) -> Option<String> {
        let name = body["tool_choice"]["name"].as_str()?;
        (name != "json_output").then(|| name.to_string())
    }
    fn json_mode(&self, body: &Value) -> bool {
        body["tool_choice"]["name"] == "json_output"
    }
    fn reply(&self, body: &Value, answer: &Answer) -> Value {
        let (content, stop) = match answer {
            Answer::Text(t) if self.json_mode(body) => {
                let input: Value = serde_json::from_str(t).unwrap();
                (
                    json!([{"type": "tool_use", "id": "toolu_json", "name": "json_output", "input": input}]),
                    "tool_use",
                )
            }
            Answer::Text(t) => (json!([{"type": "text", "text": t}]), "end_turn"),
            Answer::Tool { name, arguments } => (
                json!([{"type": "tool_use", "id": "toolu_1", "name": name, "input": arguments}]),
                "tool_use",
            ),
        };
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"], "content": content,
               "stop_reason": stop, "stop_sequence": null,
               "usage": {"input_tokens": 12, "output_tokens": 5, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}})
    }
    fn stream(&self, body: &Value, answer: &Answer) -> Vec<String> {
        let mut out = vec![sse(
            Some("message_start"),
            &json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "content": [], "model": body["model"], "stop_reason": null,
            "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        )];
        out.push(sse(Some("ping"), &json!({"type": "ping"})));
        let block = |block: Value, deltas: Vec<Value>| {
            let mut v = vec![sse(
                Some("content_block_start"),
                &json!({"type": "content_block_start", "index": 0, "content_block": block}),
            )];
            v.extend(deltas.into_iter().map(|d| {
                sse(
                    Some("content_block_delta"),
                    &json!({"type": "content_block_delta", "index": 0, "delta": d}),
                )
            }));
            v.push(sse(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": 0}),
            ));
            v
        };
        let json_parts = |s: &str| {
            let (a, b) = s.split_at(s.len() / 2);
            vec![
                json!({"type": "input_json_delta", "partial_json": a}),
                json!({"type": "input_json_delta", "partial_json": b}),
            ]
        };
        let stop = match answer {
            Answer::Text(t) if self.json_mode(body) => {
                out.extend(block(
                    json!({"type": "tool_use", "id": "toolu_json", "name": "json_output", "input": {}}),
                    json_parts(t),
                ));
                "tool_use"
            }
            Answer::Text(t) => {
                let deltas = pieces(t)
                    .into_iter()
                    .map(|p| json!({"type": "text_delta", "text": p}))
                    .collect();
                out.extend(block(json!({"type": "text", "text": ""}), deltas));
                "end_turn"
            }
            Answer::Tool { name, arguments } => {
                out.extend(block(
                    json!({"type": "tool_use", "id": "toolu_1", "name": name, "input": {}}),
                    json_parts(&arguments.to_string()),
                ));
                "tool_use"
            }
        };
        out.push(sse(Some("message_delta"), &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 5}})));
        out.push(sse(Some("message_stop"), &json!({"type": "message_stop"})));
        out
    }
    fn embed(&self, _: &Value) -> Value {
        Value::Null
    }
    fn error(&self, fault: Fault) -> (u16, String) {
        let (status, kind, message) = match fault {
            Fault::RateLimited => (
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            ),
            Fault::Overloaded => (529, "overloaded_error", "Overloaded"),
            Fault::ContextWindow => (
                400,
                "invalid_request_error",
                "prompt is too long: 210000 tokens > 200000 maximum",
            ),
            Fault::ContentPolicy => (
                400,
                "invalid_request_error",
                "Output blocked by content filtering policy",
            ),
            Fault::Auth => (401, "authentication_error", "invalid x-api-key"),
            Fault::BadRequest => (400, "invalid_request_error", "temperature: range: 0..1"),
            Fault::NotFound => (404, "not_found_error", "model: claude-nope"),
            _ => (500, "api_error", "Internal server error"),
        };
        (
            status,
            json!({"type": "error", "error": {"type": kind, "message": message}}).to_string(),
        )
    }
}

/// Google Gemini (Generative Language API).
pub struct Gemini;

impl Dialect for Gemini {
    fn name(&self) -> &'static str {
        "gemini"
    }
    fn streaming(&self, uri: &Uri, _: &Value) -> bool {
        uri.path().ends_with(":streamGenerateContent")
    }
    fn is_embed(&self, uri: &Uri) -> bool {
        uri.path().ends_with(":batchEmbedContents")
    }
    fn forced_tool(&self, body: &Value) -> Option<String> {
        body["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"][0]
            .as_str()
            .map(str::to_string)
    }
    fn json_mode(&self, body: &Value) -> bool {
        body["generationConfig"]["responseMimeType"] == "application/json"
    }
    fn reply(&self, _: &Value, answer: &Answer) -> Value {
        let parts = match answer {
            Answer::Text(t) => json!([{"text": t}]),
            Answer::Tool { name, arguments } => json!([{"functionCall": {"name": name, "args": arguments}}]),
        };
        json!({"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
               "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17},
               "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"})
    }
    fn stream(&self, _: &Value, answer: &Answer) -> Vec<String> {
        let event = |parts: Value, finish: Option<&str>| {
            let mut c = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
            let mut r = json!({"modelVersion": "gemini-2.5-flash", "responseId": "resp-1"});
            if let Some(f) = finish {
                c["finishReason"] = f.into();
                r["usageMetadata"] =
                    json!({"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17});
            }
            r["candidates"] = json!([c]);
            sse(None, &r)
        };
        let mut out: Vec<String> = match answer {
            Answer::Text(t) => pieces(t)
                .into_iter()
                .map(|p| event(json!([{"text": p}]), None))
                .collect(),
            Answer::Tool { name, arguments } => vec![event(
                json!([{"functionCall": {"name": name, "args": arguments}}]),
                None,
            )],
        };
        out.push(event(json!([{"text": ""}]), Some("STOP")));
        out
    }
    fn embed(&self, body: &Value) -> Value {
        let n = body["requests"].as_array().map_or(0, Vec::len);
        json!({"embeddings": (0..n).map(|i| json!({"values": [i as f64, 0.5]})).collect::<Vec<_>>()})
    }
    fn error(&self, fault: Fault) -> (u16, String) {
        if fault == Fault::ContentPolicy {
            // Gemini blocks a prompt with a 200 and no candidates.
            return (200, json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 12}}).to_string());
        }
        let (code, status, message, details) = match fault {
            Fault::RateLimited => (
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
                json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}]),
            ),
            Fault::Overloaded => (
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
                json!([]),
            ),
            Fault::ContextWindow => (
                400,
                "INVALID_ARGUMENT",
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
                json!([]),
            ),
            Fault::Auth => (
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]),
            ),
            Fault::BadRequest => (
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'generation_config.temperature'",
                json!([]),
            ),
            Fault::NotFound => (
                404,
                "NOT_FOUND",
                "models/gemini-nope is not found for API version v1beta",
                json!([]),
            ),
            _ => (500, "INTERNAL", "An internal error has occurred.", json!([])),
        };
        (
            code,
            json!({"error": {"code": code, "message": message, "status": status, "details": details}})
                .to_string(),
        )
    }
}

/// Ollama's native API (NDJSON streams).
pub struct Ollama;

impl Dialect for Ollama {
    fn name(&self) -> &'static str {
        "ollama"
    }
    fn streaming(&self, _: &Uri, body: &Value) -> bool {
        body["stream"] != false
    }
    fn is_embed(&self, uri: &Uri) -> bool {
        uri.path() == "/api/embed"
    }
    fn forced_tool(&self, body: &Value) -> Option<String> {
        body["tools"][0]["function"]["name"].as_str().map(str::to_string)
    }
    fn json_mode(&self, body: &Value) -> bool {
        body.get("format").is_some()
    }
    fn reply(&self, body: &Value, answer: &Answer) -> Value {
        let message = match answer {
            Answer::Text(t) => json!({"role": "assistant", "content": t}),
            Answer::Tool { name, arguments } => {
                json!({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": name, "arguments": arguments}}]})
            }
        };
        json!({"model": body["model"], "created_at": "2026-11-22T00:00:00Z", "message": message, "done": true,
               "done_reason": "stop", "total_duration": 1000, "prompt_eval_count": 12, "eval_count": 5})
    }
    fn stream(&self, body: &Value, answer: &Answer) -> Vec<String> {
        let line = |v: Value| format!("{v}\n");
        let mut out: Vec<String> = match answer {
            Answer::Text(t) => pieces(t)
                .into_iter()
                .map(|p| {
                    line(
                        json!({"model": body["model"], "created_at": "2026-11-22T00:00:00Z",
                                     "message": {"role": "assistant", "content": p}, "done": false}),
                    )
                })
                .collect(),
            Answer::Tool { name, arguments } => vec![line(
                json!({"model": body["model"], "created_at": "2026-11-22T00:00:00Z",
                "message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": name, "arguments": arguments}}]},
                "done": false}),
            )],
        };
        out.push(line(
            json!({"model": body["model"], "created_at": "2026-11-22T00:00:00Z",
            "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop",
            "prompt_eval_count": 12, "eval_count": 5}),
        ));
        out
    }
    fn embed(&self, body: &Value) -> Value {
        let n = body["input"].as_array().map_or(1, Vec::len);
        json!({"model": body["model"], "embeddings": (0..n).map(|i| json!([i as f64, 0.5])).collect::<Vec<_>>(), "prompt_eval_count": 4})
    }
    fn error(&self, fault: Fault) -> (u16, String) {
        let (status, message) = match fault {
            Fault::RateLimited => (429, "too many requests"),
            Fault::Overloaded => (
                503,
                "server busy, please try again.  maximum pending requests exceeded",
            ),
            Fault::ContextWindow => (400, "the input length exceeds the context length"),
            Fault::Auth => (401, "unauthorized"),
            Fault::BadRequest => (400, "invalid options: temperature"),
            Fault::NotFound => (404, "model \"llama9\" not found, try pulling it first"),
            _ => (500, "llama runner process has terminated: exit status 2"),
        };
        (status, json!({"error": message}).to_string())
    }
    fn supports(&self, fault: Fault) -> bool {
        fault != Fault::ContentPolicy
    }
    fn stream_content_type(&self) -> &'static str {
        "application/x-ndjson"
    }
}

/// Cohere v2.
pub struct Cohere;

impl Dialect for Cohere {
    fn name(&self) -> &'static str {
        "cohere"
    }
    fn streaming(&self, _: &Uri, body: &Value) -> bool {
        body["stream"] == true
    }
    fn is_embed(&self, uri: &Uri) -> bool {
        uri.path() == "/v2/embed"
    }
    fn forced_tool(&self, body: &Value) -> Option<String> {
        (body["tool_choice"] == "REQUIRED")
            .then(|| body["tools"][0]["function"]["name"].as_str().map(str::to_string))
            .flatten()
    }
    fn json_mode(&self, body: &Value) -> bool {
        body["response_format"]["type"] == "json_object"
    }
    fn reply(&self, _: &Value, answer: &Answer) -> Value {
        let usage = json!({"billed_units": {"input_tokens": 12, "output_tokens": 5}, "tokens": {"input_tokens": 12, "output_tokens": 5}});
        match answer {
            Answer::Text(t) => json!({"id": "c-1", "finish_reason": "COMPLETE", "usage": usage,
                "message": {"role": "assistant", "content": [{"type": "text", "text": t}]}}),
            Answer::Tool { name, arguments } => {
                json!({"id": "c-1", "finish_reason": "TOOL_CALL", "usage": usage,
                "message": {"role": "assistant", "tool_plan": "I will look up the weather.",
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments.to_string()}}]}})
            }
        }
    }
    fn stream(&self, _: &Value, answer: &Answer) -> Vec<String> {
        let ev = |kind: &str, v: Value| sse(Some(kind), &v);
        let mut out = vec![ev(
            "message-start",
            json!({"id": "c-1", "type": "message-start",
            "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}),
        )];
        let finish = match answer {
            Answer::Text(t) => {
                out.push(ev("content-start", json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}})));
                for p in pieces(t) {
                    out.push(ev("content-delta", json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": p}}}})));
                }
                out.push(ev("content-end", json!({"type": "content-end", "index": 0})));
                "COMPLETE"
            }
            Answer::Tool { name, arguments } => {
                out.push(ev("tool-plan-delta", json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will look it up."}}})));
                out.push(ev(
                    "tool-call-start",
                    json!({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls":
                    {"id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}}}}),
                ));
                let args = arguments.to_string();
                let (a, b) = args.split_at(args.len() / 2);
                for piece in [a, b] {
                    out.push(ev(
                        "tool-call-delta",
                        json!({"type": "tool-call-delta", "index": 0,
                        "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}}}),
                    ));
                }
                out.push(ev("tool-call-end", json!({"type": "tool-call-end", "index": 0})));
                "TOOL_CALL"
            }
        };
        out.push(ev("message-end", json!({"type": "message-end", "delta": {"finish_reason": finish,
            "usage": {"billed_units": {"input_tokens": 12, "output_tokens": 5}, "tokens": {"input_tokens": 12, "output_tokens": 5}}}})));
        out
    }
    fn embed(&self, body: &Value) -> Value {
        let n = body["texts"].as_array().map_or(0, Vec::len);
        json!({"id": "e-1", "embeddings": {"float": (0..n).map(|i| json!([i as f64, 0.5])).collect::<Vec<_>>()},
               "texts": body["texts"], "meta": {"billed_units": {"input_tokens": 4}}})
    }
    fn error(&self, fault: Fault) -> (u16, String) {
        let (status, message) = match fault {
            Fault::RateLimited => (
                429,
                "You are using a Trial key, which is limited to 10 API calls / minute.",
            ),
            Fault::Overloaded => (503, "service unavailable"),
            Fault::ContextWindow => (400, "too many tokens: size limit exceeded by 1200 tokens."),
            Fault::Auth => (401, "invalid api token"),
            Fault::BadRequest => (400, "invalid request: temperature must be between 0 and 1"),
            Fault::NotFound => (404, "model 'command-nope' not found"),
            _ => (
                500,
                "internal server error, this has been reported to our developers",
            ),
        };
        (status, json!({"message": message}).to_string())
    }
    fn supports(&self, fault: Fault) -> bool {
        fault != Fault::ContentPolicy
    }
}

/// AWS Bedrock Converse / ConverseStream (binary AWS event-stream frames).
pub struct Bedrock;

impl Bedrock {
    fn frame(event: &str, payload: Value) -> Vec<u8> {
        use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
        let msg = Message::new(payload.to_string().into_bytes())
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String(event.to_string().into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ))
            .add_header(Header::new(":message-type", HeaderValue::String("event".into())));
        let mut out = Vec::new();
        aws_smithy_eventstream::frame::write_message_to(&msg, &mut out).unwrap();
        out
    }
}

impl Dialect for Bedrock {
    fn name(&self) -> &'static str {
        "bedrock"
    }
    fn streaming(&self, uri: &Uri, _: &Value) -> bool {
        uri.path().ends_with("/converse-stream")
    }
    fn is_embed(&self, uri: &Uri) -> bool {
        uri.path().ends_with("/invoke")
    }
    fn forced_tool(&self, body: &Value) -> Option<String> {
        let name = body["toolConfig"]["toolChoice"]["tool"]["name"].as_str()?;
        (name != "json_output").then(|| name.to_string())
    }
    fn json_mode(&self, body: &Value) -> bool {
        body["toolConfig"]["toolChoice"]["tool"]["name"] == "json_output"
    }
    fn reply(&self, body: &Value, answer: &Answer) -> Value {
        let (content, stop) = match answer {
            Answer::Text(t) if self.json_mode(body) => (
                json!([{"toolUse": {"toolUseId": "tooluse_json", "name": "json_output", "input": serde_json::from_str::<Value>(t).unwrap()}}]),
                "tool_use",
            ),
            Answer::Text(t) => (json!([{"text": t}]), "end_turn"),
            Answer::Tool { name, arguments } => (
                json!([{"toolUse": {"toolUseId": "tooluse_1", "name": name, "input": arguments}}]),
                "tool_use",
            ),
        };
        json!({"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
               "usage": {"inputTokens": 12, "outputTokens": 5, "totalTokens": 17}, "metrics": {"latencyMs": 120}})
    }
    fn stream(&self, _: &Value, _: &Answer) -> Vec<String> {
        unreachable!("bedrock streams binary frames")
    }
    fn stream_bytes(&self, body: &Value, answer: &Answer) -> Vec<Vec<u8>> {
        let f = Bedrock::frame;
        let mut out = vec![f("messageStart", json!({"role": "assistant"}))];
        let tool = |out: &mut Vec<Vec<u8>>, id: &str, name: &str, input: &str| {
            out.push(f(
                "contentBlockStart",
                json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": id, "name": name}}}),
            ));
            let (a, b) = input.split_at(input.len() / 2);
            for piece in [a, b] {
                out.push(f(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}}),
                ));
            }
            out.push(f("contentBlockStop", json!({"contentBlockIndex": 0})));
        };
        let stop = match answer {
            Answer::Text(t) if self.json_mode(body) => {
                tool(&mut out, "tooluse_json", "json_output", t);
                "tool_use"
            }
            Answer::Text(t) => {
                for p in pieces(t) {
                    out.push(f(
                        "contentBlockDelta",
                        json!({"contentBlockIndex": 0, "delta": {"text": p}}),
                    ));
                }
                out.push(f("contentBlockStop", json!({"contentBlockIndex": 0})));
                "end_turn"
            }
            Answer::Tool { name, arguments } => {
                tool(&mut out, "tooluse_1", name, &arguments.to_string());
                "tool_use"
            }
        };
        out.push(f("messageStop", json!({"stopReason": stop})));
        out.push(f("metadata", json!({"usage": {"inputTokens": 12, "outputTokens": 5, "totalTokens": 17}, "metrics": {"latencyMs": 99}})));
        out
    }
    fn stream_content_type(&self) -> &'static str {
        "application/vnd.amazon.eventstream"
    }
    fn embed(&self, _: &Value) -> Value {
        json!({"embedding": [0.25, 0.5], "inputTextTokenCount": 2})
    }
    fn error(&self, fault: Fault) -> (u16, String) {
        let (status, message) = match fault {
            Fault::RateLimited => (429, "Too many requests, please wait before trying again."),
            Fault::Overloaded => (503, "Bedrock is unable to process your request."),
            Fault::ContextWindow => (400, "Input is too long for requested model."),
            Fault::Auth => (403, "The security token included in the request is invalid."),
            Fault::BadRequest => (400, "Malformed input request: temperature must be <= 1"),
            Fault::NotFound => (404, "The requested model does not exist."),
            _ => (500, "The server encountered an internal error."),
        };
        (status, json!({"message": message}).to_string())
    }
    fn error_headers(&self, fault: Fault) -> Vec<(&'static str, String)> {
        let kind = match fault {
            Fault::RateLimited => "ThrottlingException",
            Fault::Overloaded => "ServiceUnavailableException",
            Fault::ContextWindow | Fault::BadRequest => "ValidationException",
            Fault::Auth => "UnrecognizedClientException",
            Fault::NotFound => "ResourceNotFoundException",
            _ => "InternalServerException",
        };
        vec![(
            "x-amzn-errortype",
            format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        )]
    }
    fn supports(&self, fault: Fault) -> bool {
        fault != Fault::ContentPolicy // guardrails end a response with stopReason, not an error
    }
}

/// Gemini on Vertex AI: Gemini's bodies, Vertex's paths, `:predict` embeddings.
pub struct Vertex;

impl Dialect for Vertex {
    fn name(&self) -> &'static str {
        "vertex_ai"
    }
    fn streaming(&self, uri: &Uri, body: &Value) -> bool {
        Gemini.streaming(uri, body)
    }
    fn is_embed(&self, uri: &Uri) -> bool {
        uri.path().ends_with(":predict")
    }
    fn forced_tool(&self, body: &Value) -> Option<String> {
        Gemini.forced_tool(body)
    }
    fn json_mode(&self, body: &Value) -> bool {
        Gemini.json_mode(body)
    }
    fn reply(&self, body: &Value, answer: &Answer) -> Value {
        Gemini.reply(body, answer)
    }
    fn stream(&self, body: &Value, answer: &Answer) -> Vec<String> {
        Gemini.stream(body, answer)
    }
    fn embed(&self, body: &Value) -> Value {
        let n = body["instances"].as_array().map_or(0, Vec::len);
        let predictions: Vec<Value> = (0..n)
            .map(|i| json!({"embeddings": {"values": [i as f64, 0.5], "statistics": {"token_count": 2, "truncated": false}}}))
            .collect();
        json!({"predictions": predictions})
    }
    fn error(&self, fault: Fault) -> (u16, String) {
        Gemini.error(fault)
    }
}
