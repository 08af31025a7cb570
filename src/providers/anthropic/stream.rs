//! Anthropic's stream events -> OpenAI-shaped chunks: `message_start` (role), text and tool-input
//! deltas, `message_delta` (finish reason, output tokens), `message_stop` (usage chunk, end).

use std::collections::HashMap;

use serde_json::Value;

use super::{JSON_TOOL, wire};
use crate::providers::common;
use crate::{
    domain::{ChatChunk, ChunkChoice, Delta, ErrorClass, FinishReason, Role, ToolCallDelta},
    providers::{
        ProviderError,
        http::{Decoded, Frame, StreamDecoder},
    },
};

enum Block {
    Text,
    /// A tool call, with its OpenAI tool-call index.
    Tool(u32),
    /// The structured-output tool: its input streams as content.
    Json,
    Other,
}

pub struct Decoder {
    json_mode: bool,
    id: String,
    model: String,
    created: i64,
    input: wire::WireUsage,
    output_tokens: u32,
    blocks: HashMap<u64, Block>,
    tools: u32,
    stopped: bool,
}

impl Decoder {
    pub fn new(json_mode: bool) -> Self {
        Self {
            json_mode,
            id: String::new(),
            model: String::new(),
            created: common::now(),
            input: wire::WireUsage::default(),
            output_tokens: 0,
            blocks: HashMap::new(),
            tools: 0,
            stopped: false,
        }
    }

    fn chunk(&self, delta: Delta, finish: Option<FinishReason>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            model: self.model.clone(),
            created: self.created,
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
            }],
            usage: None,
        }
    }
}

fn malformed(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(
        ErrorClass::MalformedResponse,
        format!("bad Anthropic stream event: {e}"),
    )
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, frame: Frame<'_>) -> Result<Decoded, ProviderError> {
        let v: Value = serde_json::from_str(frame.data).map_err(malformed)?;
        let kind = v["type"].as_str().unwrap_or(frame.event);
        let mut out = Decoded::default();
        match kind {
            "message_start" => {
                let m = &v["message"];
                self.id = m["id"].as_str().unwrap_or_default().to_string();
                self.model = m["model"].as_str().unwrap_or_default().to_string();
                self.input = serde_json::from_value(m["usage"].clone()).unwrap_or_default();
                out.chunks.push(self.chunk(
                    Delta {
                        role: Some(Role::Assistant),
                        ..Delta::default()
                    },
                    None,
                ));
            }
            "content_block_start" => {
                let index = v["index"]
                    .as_u64()
                    .ok_or_else(|| malformed("content_block_start without index"))?;
                let block = &v["content_block"];
                let b = match block["type"].as_str() {
                    Some("text") => {
                        let text = block["text"].as_str().unwrap_or_default();
                        if !text.is_empty() {
                            out.chunks.push(self.chunk(
                                Delta {
                                    content: Some(text.into()),
                                    ..Delta::default()
                                },
                                None,
                            ));
                        }
                        Block::Text
                    }
                    Some("tool_use") if self.json_mode && block["name"] == JSON_TOOL => Block::Json,
                    Some("tool_use") => {
                        let i = self.tools;
                        self.tools += 1;
                        let delta = ToolCallDelta {
                            index: i,
                            id: block["id"].as_str().map(str::to_string),
                            name: block["name"].as_str().map(str::to_string),
                            arguments: Some(String::new()),
                        };
                        out.chunks.push(self.chunk(
                            Delta {
                                tool_calls: vec![delta],
                                ..Delta::default()
                            },
                            None,
                        ));
                        Block::Tool(i)
                    }
                    _ => Block::Other,
                };
                self.blocks.insert(index, b);
            }
            "content_block_delta" => {
                let index = v["index"]
                    .as_u64()
                    .ok_or_else(|| malformed("content_block_delta without index"))?;
                let d = &v["delta"];
                let delta = match (self.blocks.get(&index), d["type"].as_str()) {
                    (Some(Block::Text), Some("text_delta")) => Some(Delta {
                        content: d["text"].as_str().map(str::to_string),
                        ..Delta::default()
                    }),
                    (Some(Block::Json), Some("input_json_delta")) => Some(Delta {
                        content: d["partial_json"].as_str().map(str::to_string),
                        ..Delta::default()
                    }),
                    (Some(Block::Tool(i)), Some("input_json_delta")) => Some(Delta {
                        tool_calls: vec![ToolCallDelta {
                            index: *i,
                            arguments: d["partial_json"].as_str().map(str::to_string),
                            ..ToolCallDelta::default()
                        }],
                        ..Delta::default()
                    }),
                    (None, _) => return Err(malformed(format!("delta for unknown block {index}"))),
                    _ => None, // thinking, signatures, citations
                };
                if let Some(delta) = delta {
                    out.chunks.push(self.chunk(delta, None));
                }
            }
            "message_delta" => {
                if let Some(n) = v["usage"]["output_tokens"].as_u64() {
                    self.output_tokens = u32::try_from(n).unwrap_or(u32::MAX);
                }
                if let Some(stop) = v["delta"]["stop_reason"].as_str() {
                    self.stopped = true;
                    let finish = wire::finish_reason(stop, self.json_mode);
                    out.chunks.push(self.chunk(Delta::default(), Some(finish)));
                }
            }
            "message_stop" => {
                let mut usage = self.chunk(Delta::default(), None);
                usage.choices.clear();
                usage.usage = Some(wire::usage(&self.input, self.output_tokens));
                out.chunks.push(usage);
                out.done = true;
            }
            "error" => {
                let e: wire::WireError = serde_json::from_value(v["error"].clone()).unwrap_or_default();
                return Err(wire::classify(None, e));
            }
            _ => {} // ping, content_block_stop, future events
        }
        Ok(out)
    }

    fn complete_at_eof(&self) -> bool {
        self.stopped
    }
}
