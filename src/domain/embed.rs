//! The canonical embeddings call.

use std::collections::BTreeMap;

use super::{CacheControl, ModelGroup, RoutingOptions, Usage};

#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    pub model: ModelGroup,
    /// One text or a batch; never empty.
    pub input: Vec<String>,
    pub dimensions: Option<u32>,
    pub user: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub routing: RoutingOptions,
    pub cache: CacheControl,
}

impl EmbedRequest {
    pub fn estimated_prompt_tokens(&self) -> u64 {
        Self::estimate_input_tokens(&self.input)
    }

    /// About four characters per token.
    pub fn estimate_input_tokens(input: &[String]) -> u64 {
        input.iter().map(|t| t.chars().count().div_ceil(4) as u64).sum()
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EmbedResponse {
    /// The upstream model that answered.
    pub model: String,
    /// One vector per input, in input order.
    pub data: Vec<Vec<f32>>,
    pub usage: Usage,
}
