//! LiteLLM's `mock_response`: a deployment that answers locally with fixed text. It makes the example
//! config work offline and gives benchmarks a zero-cost upstream.

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, future::BoxFuture};

use super::{ChunkStream, Provider, ProviderError};
use crate::domain::*;

pub struct Mock {
    name: &'static str,
    model: String,
    text: String,
}

impl Mock {
    pub fn new(name: &'static str, model: &str, text: &str) -> Self {
        Self {
            name,
            model: model.to_string(),
            text: text.to_string(),
        }
    }
}

/// About four characters per token: the usual estimate when no tokenizer applies.
fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count().div_ceil(4))
        .unwrap_or(u32::MAX)
        .max(1)
}

fn prompt_tokens(req: &ChatRequest) -> u32 {
    req.messages
        .iter()
        .map(|m| estimate_tokens(&m.content.joined_text()) + 3)
        .sum()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Provider for Mock {
    fn name(&self) -> &'static str {
        self.name
    }

    fn upstream_model(&self) -> &str {
        &self.model
    }

    fn chat<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            Ok(ChatResponse::single(
                "chatcmpl-mock".into(),
                self.model.clone(),
                now(),
                Message::text(Role::Assistant, self.text.clone()),
                FinishReason::Stop,
                Usage::new(prompt_tokens(req), estimate_tokens(&self.text)),
            ))
        })
    }

    fn chat_stream<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChunkStream, ProviderError>> {
        Box::pin(async move {
            let (model, created) = (self.model.clone(), now());
            let chunk = move |delta: Delta, finish: Option<FinishReason>, usage: Option<Usage>| ChatChunk {
                id: "chatcmpl-mock".into(),
                model: model.clone(),
                created,
                choices: if usage.is_some() {
                    vec![]
                } else {
                    vec![ChunkChoice {
                        index: 0,
                        delta,
                        finish_reason: finish,
                    }]
                },
                usage,
            };
            let mut chunks = vec![chunk(
                Delta {
                    role: Some(Role::Assistant),
                    ..Delta::default()
                },
                None,
                None,
            )];
            for word in self.text.split_inclusive(' ') {
                chunks.push(chunk(
                    Delta {
                        content: Some(word.to_string()),
                        ..Delta::default()
                    },
                    None,
                    None,
                ));
            }
            chunks.push(chunk(Delta::default(), Some(FinishReason::Stop), None));
            let usage = Usage::new(prompt_tokens(req), estimate_tokens(&self.text));
            chunks.push(chunk(Delta::default(), None, Some(usage)));
            Ok(futures_util::stream::iter(chunks.into_iter().map(Ok)).boxed())
        })
    }

    fn embed<'a>(&'a self, req: &'a EmbedRequest) -> BoxFuture<'a, Result<EmbedResponse, ProviderError>> {
        Box::pin(async move {
            let dims = req.dimensions.unwrap_or(16).clamp(1, 4096) as usize;
            let data = req.input.iter().map(|t| pseudo_embedding(t, dims)).collect();
            let tokens = req.input.iter().map(|t| estimate_tokens(t)).sum();
            Ok(EmbedResponse {
                model: self.model.clone(),
                data,
                usage: Usage::new(tokens, 0),
            })
        })
    }
}

/// A deterministic unit vector derived from the text (FNV-1a seeded xorshift).
fn pseudo_embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}
