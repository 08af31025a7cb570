//! Canonical types every layer speaks. No I/O here, and no tonic, reqwest or redis types.

#[cfg(test)]
pub mod arbitrary;
mod chat;
mod embed;
mod error;
mod ids;
mod money;
mod secret;
mod time;

pub use chat::*;
pub use embed::*;
pub use error::ErrorClass;
pub use ids::{DeploymentId, ModelGroup};
pub use money::{Cost, Price};
pub use secret::{Secret, redact};
pub use time::{Window, civil_from_days, day_of, days_from_civil, now_ms};

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub cached_prompt_tokens: u32,
    pub cache_creation_prompt_tokens: u32,
    pub reasoning_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            ..Self::default()
        }
    }
}
