//! Random inputs for robustness tests (test builds only): a tiny xorshift generator and random JSON
//! documents built from the field names that the wire formats, the config and the HTTP surface use,
//! so that decoders get past their first level and meet wrong types, missing fields and odd values
//! deep inside.

use serde_json::{Map, Value};

/// xorshift64: deterministic, so a failure reproduces from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

const KEYS: &[&str] = &[
    "id",
    "object",
    "model",
    "created",
    "choices",
    "index",
    "message",
    "delta",
    "role",
    "content",
    "text",
    "type",
    "finish_reason",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "data",
    "embedding",
    "error",
    "code",
    "param",
    "candidates",
    "parts",
    "finishReason",
    "usageMetadata",
    "promptTokenCount",
    "content_block",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "output",
    "stopReason",
    "toolUse",
    "input",
    "done",
    "done_reason",
    "eval_count",
    "embeddings",
    "values",
    "model_list",
    "model_name",
    "litellm_params",
    "api_base",
    "api_key",
    "router_settings",
    "litellm_settings",
    "general_settings",
    "routing_strategy",
    "fallbacks",
    "timeout",
    "rpm",
    "tpm",
    "order",
    "tags",
    "weight",
    "messages",
    "temperature",
    "max_tokens",
    "stream",
    "tools",
    "tool_choice",
    "response_format",
    "json_schema",
    "schema",
    "cache",
    "ttl",
    "no-cache",
    "metadata",
    "image_url",
    "url",
    "detail",
    "stop",
    "n",
    "seed",
    "user",
    "dimensions",
    "encoding_format",
];

const STRINGS: &[&str] = &[
    "",
    "assistant",
    "user",
    "system",
    "tool",
    "stop",
    "length",
    "tool_calls",
    "text",
    "image_url",
    "function",
    "openai/gpt-4o",
    "anthropic/claude",
    "json_schema",
    "auto",
    "none",
    "required",
    "STOP",
    "end_turn",
    "os.environ/MISSING",
    "http://",
    "data:image/png;base64,@@",
    "é\u{0}\u{ffff}",
    "NaN",
    "-1",
    "1e999",
    "simple-shuffle",
    "least-busy",
    "30d",
    "[DONE]",
];

/// A random JSON value at most `depth` levels deep.
pub fn json(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth == 0 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.next_u64().is_multiple_of(2)),
        2 => Value::from(rng.next_u64() as i64 % 2_000_000_000 - 1_000_000_000),
        3 => serde_json::Number::from_f64((rng.next_u64() % 10_000) as f64 / 7.0 - 700.0)
            .map_or(Value::Null, Value::Number),
        4 => Value::from(u64::MAX - rng.next_u64() % 3),
        5 => Value::String(STRINGS[rng.below(STRINGS.len())].to_string()),
        6 => Value::Array((0..rng.below(4)).map(|_| json(rng, depth - 1)).collect()),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(7) {
                m.insert(KEYS[rng.below(KEYS.len())].to_string(), json(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

/// Bytes that are often JSON, sometimes a truncated or corrupted document.
pub fn body(rng: &mut Rng) -> Vec<u8> {
    let mut b = serde_json::to_vec(&json(rng, 5)).unwrap_or_default();
    match rng.below(5) {
        0 => b.truncate(rng.below(b.len() + 1)),
        1 if !b.is_empty() => {
            let i = rng.below(b.len());
            b[i] = [b'"', b'{', b'}', b'\\', 0xff, b','][rng.below(6)];
        }
        _ => {}
    }
    b
}
