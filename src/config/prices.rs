//! The price table: USD per token and context windows per model, in the format of LiteLLM's
//! `model_prices_and_context_window.json`, so that its file (or any extract of it) can be loaded as is.
//! A built-in table covers the common models of every supported provider; a file adds to or
//! overrides it; a deployment's own `input_cost_per_token`/`output_cost_per_token` win over both.

use std::collections::HashMap;

use serde::Deserialize;

use crate::domain::Price;

/// What the table knows about one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelPrice {
    pub price: Price,
    pub max_input_tokens: Option<u32>,
    pub max_output_tokens: Option<u32>,
}

/// One entry of LiteLLM's file. Unknown fields (`supports_vision`, `mode`, ...) are ignored; so are
/// entries without an input price (the file's `sample_spec` and image/audio-only models).
#[derive(Debug, Deserialize)]
struct Entry {
    input_cost_per_token: Option<f64>,
    output_cost_per_token: Option<f64>,
    cache_read_input_token_cost: Option<f64>,
    cache_creation_input_token_cost: Option<f64>,
    max_input_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    /// Older entries give only `max_tokens`, meaning the output limit.
    max_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
}

const BUILT_IN: &str = include_str!("prices.json");

impl PriceTable {
    pub fn built_in() -> Self {
        let mut t = PriceTable::default();
        t.merge_json(BUILT_IN).expect("the built-in price table is valid");
        t
    }

    /// Adds (or replaces) entries from a document in LiteLLM's format; returns how many were taken.
    pub fn merge_json(&mut self, json: &str) -> Result<usize, String> {
        let doc: HashMap<String, serde_json::Value> =
            serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut taken = 0;
        for (name, value) in doc {
            // Entries of shapes we do not use (e.g. `sample_spec` with strings in number fields) are skipped.
            let Ok(e) = serde_json::from_value::<Entry>(value) else {
                continue;
            };
            let Some(input) = e.input_cost_per_token else {
                continue;
            };
            let input = Price::pico_from_usd(input);
            let cap = |v: Option<u64>| v.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
            self.models.insert(
                name,
                ModelPrice {
                    price: Price {
                        input,
                        output: Price::pico_from_usd(e.output_cost_per_token.unwrap_or(0.0)),
                        cache_read: e.cache_read_input_token_cost.map_or(input, Price::pico_from_usd),
                        cache_write: e
                            .cache_creation_input_token_cost
                            .map_or(input, Price::pico_from_usd),
                    },
                    max_input_tokens: cap(e.max_input_tokens),
                    max_output_tokens: cap(e.max_output_tokens.or(e.max_tokens)),
                },
            );
            taken += 1;
        }
        Ok(taken)
    }

    /// The entry for `model` at `provider` (a config prefix such as `openai`, `anthropic`, `bedrock`).
    /// LiteLLM's file keys some models with a provider prefix (`gemini/gemini-2.5-pro`, `azure/gpt-4o`)
    /// and most without; Bedrock's cross-region profiles (`us.anthropic...`) price as their model.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<ModelPrice> {
        let prefixed = format!("{provider}/{model}");
        if let Some(p) = self.models.get(&prefixed) {
            return Some(*p);
        }
        if let Some(p) = self.models.get(model) {
            return Some(*p);
        }
        // Routers such as OpenRouter name models `<vendor>/<model>`: price them as the vendor's.
        if let Some((vendor, rest)) = model.split_once('/')
            && let Some(p) = self
                .models
                .get(rest)
                .or_else(|| self.models.get(&format!("{vendor}/{rest}")))
        {
            return Some(*p);
        }
        let regional = model
            .split_once('.')
            .filter(|(region, _)| matches!(*region, "us" | "eu" | "apac" | "global"))
            .map(|(_, rest)| rest)?;
        self.models.get(regional).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_table_prices_the_common_models_of_every_provider() {
        let t = PriceTable::built_in();
        for (provider, model) in [
            ("openai", "gpt-4o"),
            ("azure", "gpt-4o-mini"),
            ("anthropic", "claude-sonnet-4-20250514"),
            ("gemini", "gemini-2.5-flash"),
            ("vertex_ai", "gemini-2.5-pro"),
            ("bedrock", "us.anthropic.claude-3-5-sonnet-20241022-v2:0"),
            ("cohere", "command-r-plus-08-2024"),
            ("openai", "text-embedding-3-small"),
            ("groq", "llama-3.3-70b-versatile"),
            ("mistral", "mistral-large-latest"),
            ("deepseek", "deepseek-chat"),
            ("xai", "grok-3"),
            ("together_ai", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
            (
                "fireworks_ai",
                "accounts/fireworks/models/llama-v3p1-70b-instruct",
            ),
            ("perplexity", "sonar"),
            ("openrouter", "anthropic/claude-sonnet-4-20250514"),
        ] {
            let p = t
                .lookup(provider, model)
                .unwrap_or_else(|| panic!("{provider}/{model}"));
            assert!(p.price.input > 0, "{provider}/{model}");
        }
        let g = t.lookup("openai", "gpt-4o").unwrap();
        assert_eq!(
            (g.price.input, g.price.output, g.price.cache_read),
            (2_500_000, 10_000_000, 1_250_000)
        );
        assert_eq!(g.max_input_tokens, Some(128_000));
        assert_eq!(t.lookup("ollama", "llama3"), None);
    }

    #[test]
    fn a_litellm_file_extends_and_overrides_the_table() {
        let mut t = PriceTable::built_in();
        let n = t
            .merge_json(
                r#"{"sample_spec": {"input_cost_per_token": "0.0", "max_tokens": "LEGACY"},
                    "gpt-4o": {"input_cost_per_token": 5e-06, "output_cost_per_token": 1.5e-05, "max_tokens": 4096},
                    "my-model": {"input_cost_per_token": 1e-07, "litellm_provider": "openai", "mode": "chat"},
                    "dall-e-3": {"output_cost_per_image": 0.04}}"#,
            )
            .unwrap();
        assert_eq!(n, 2);
        let g = t.lookup("openai", "gpt-4o").unwrap();
        assert_eq!(
            (g.price.input, g.price.cache_read, g.max_output_tokens),
            (5_000_000, 5_000_000, Some(4096))
        );
        assert_eq!(t.lookup("hosted_vllm", "my-model").unwrap().price.output, 0);
        assert!(t.merge_json("[1, 2]").is_err());
    }
}
