//! Which `litellm_params.model` prefixes Switchboard understands. The OpenAI-compatible vendors are a
//! data table (default base URL and key variable), not code per vendor.

/// The wire format a deployment speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// OpenAI Chat Completions / Embeddings and the many servers that copy it.
    OpenAi,
    /// OpenAI's API behind Azure's URL scheme, `api-key` header and `api-version`.
    Azure,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini (Generative Language API).
    Gemini,
    /// Ollama's native `/api/chat` and `/api/embed`.
    Ollama,
    /// Cohere v2 chat and embed.
    Cohere,
    /// AWS Bedrock Converse (SigV4).
    Bedrock,
    /// Gemini on Google Vertex AI (OAuth).
    Vertex,
}

/// Where a provider's requests go when a deployment sets no `api_base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// A public service at a fixed URL.
    Fixed(&'static str),
    /// The provider builds it from other parameters (Bedrock's region, Vertex AI's location).
    Derived,
    /// Self-hosted or per-tenant (Azure, vLLM): the deployment must say.
    Required,
}

impl ProviderSpec {
    /// The URL used when the deployment sets no `api_base`, where there is a fixed one.
    pub fn default_base(&self) -> Option<&'static str> {
        match self.endpoint {
            Endpoint::Fixed(url) => Some(url),
            Endpoint::Derived | Endpoint::Required => None,
        }
    }
}

impl ProviderSpec {
    /// Models served on the operator's own hardware: no per-token price is expected.
    pub fn self_hosted(&self) -> bool {
        matches!(self.name, "hosted_vllm" | "lm_studio" | "ollama" | "ollama_chat")
    }
}

/// One provider prefix: `openai/`, `groq/`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderSpec {
    /// The prefix as written in config, also reported as the `provider` of a route.
    pub name: &'static str,
    pub wire: WireFormat,
    /// Where requests go when the deployment sets no `api_base`.
    pub endpoint: Endpoint,
    /// Environment variables tried, in order, when the deployment sets no `api_key`.
    pub key_env: &'static [&'static str],
    /// Environment variables tried, in order, when the deployment sets no `api_base`.
    pub base_env: &'static [&'static str],
}

const fn openai_compatible(
    name: &'static str,
    base: Option<&'static str>,
    key_env: &'static [&'static str],
) -> ProviderSpec {
    ProviderSpec {
        name,
        wire: WireFormat::OpenAi,
        endpoint: match base {
            Some(url) => Endpoint::Fixed(url),
            None => Endpoint::Required,
        },
        key_env,
        base_env: &[],
    }
}

/// Every provider prefix we accept.
pub const PROVIDERS: &[ProviderSpec] = &[
    openai_compatible("openai", Some("https://api.openai.com/v1"), &["OPENAI_API_KEY"]),
    openai_compatible("groq", Some("https://api.groq.com/openai/v1"), &["GROQ_API_KEY"]),
    openai_compatible("mistral", Some("https://api.mistral.ai/v1"), &["MISTRAL_API_KEY"]),
    openai_compatible(
        "deepseek",
        Some("https://api.deepseek.com/v1"),
        &["DEEPSEEK_API_KEY"],
    ),
    openai_compatible("xai", Some("https://api.x.ai/v1"), &["XAI_API_KEY"]),
    openai_compatible(
        "together_ai",
        Some("https://api.together.xyz/v1"),
        &["TOGETHERAI_API_KEY", "TOGETHER_API_KEY"],
    ),
    openai_compatible(
        "fireworks_ai",
        Some("https://api.fireworks.ai/inference/v1"),
        &["FIREWORKS_AI_API_KEY", "FIREWORKS_API_KEY"],
    ),
    openai_compatible(
        "openrouter",
        Some("https://openrouter.ai/api/v1"),
        &["OPENROUTER_API_KEY"],
    ),
    openai_compatible(
        "perplexity",
        Some("https://api.perplexity.ai"),
        &["PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"],
    ),
    openai_compatible("hosted_vllm", None, &["HOSTED_VLLM_API_KEY"]),
    openai_compatible(
        "lm_studio",
        Some("http://localhost:1234/v1"),
        &["LM_STUDIO_API_KEY"],
    ),
    ProviderSpec {
        name: "azure",
        wire: WireFormat::Azure,
        endpoint: Endpoint::Required,
        key_env: &["AZURE_API_KEY", "AZURE_OPENAI_API_KEY"],
        base_env: &["AZURE_API_BASE", "AZURE_OPENAI_ENDPOINT"],
    },
    ProviderSpec {
        name: "anthropic",
        wire: WireFormat::Anthropic,
        endpoint: Endpoint::Fixed("https://api.anthropic.com"),
        key_env: &["ANTHROPIC_API_KEY"],
        base_env: &[],
    },
    ProviderSpec {
        name: "gemini",
        wire: WireFormat::Gemini,
        endpoint: Endpoint::Fixed("https://generativelanguage.googleapis.com"),
        key_env: &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        base_env: &[],
    },
    ProviderSpec {
        name: "ollama",
        wire: WireFormat::Ollama,
        endpoint: Endpoint::Fixed("http://localhost:11434"),
        key_env: &[],
        base_env: &["OLLAMA_API_BASE"],
    },
    ProviderSpec {
        name: "ollama_chat",
        wire: WireFormat::Ollama,
        endpoint: Endpoint::Fixed("http://localhost:11434"),
        key_env: &[],
        base_env: &["OLLAMA_API_BASE"],
    },
    ProviderSpec {
        name: "cohere",
        wire: WireFormat::Cohere,
        endpoint: Endpoint::Fixed("https://api.cohere.com"),
        key_env: &["COHERE_API_KEY", "CO_API_KEY"],
        base_env: &[],
    },
    ProviderSpec {
        name: "bedrock",
        wire: WireFormat::Bedrock,
        endpoint: Endpoint::Derived,
        key_env: &["AWS_BEARER_TOKEN_BEDROCK"],
        base_env: &[],
    },
    ProviderSpec {
        name: "vertex_ai",
        wire: WireFormat::Vertex,
        endpoint: Endpoint::Derived,
        key_env: &["VERTEX_ACCESS_TOKEN"],
        base_env: &[],
    },
];

/// Splits `groq/llama3-8b` into its provider and the upstream model name. A model with no prefix is
/// OpenAI's, as in LiteLLM (`gpt-4o`). `Err` carries the unknown prefix.
pub fn split_model(model: &str) -> Result<(&'static ProviderSpec, &str), &str> {
    match model.split_once('/') {
        Some((prefix, rest)) => PROVIDERS
            .iter()
            .find(|p| p.name == prefix)
            .map(|p| (p, rest))
            .ok_or(prefix),
        None => Ok((&PROVIDERS[0], model)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_known_prefixes_and_defaults_to_openai() {
        let (p, m) = split_model("groq/llama3-8b-8192").unwrap();
        assert_eq!((p.name, m), ("groq", "llama3-8b-8192"));
        let (p, m) = split_model("hosted_vllm/meta-llama/Llama-3-8B").unwrap();
        assert_eq!((p.name, m), ("hosted_vllm", "meta-llama/Llama-3-8B"));
        let (p, m) = split_model("gpt-4o").unwrap();
        assert_eq!((p.name, m), ("openai", "gpt-4o"));
        assert_eq!(split_model("opnai/gpt-4o").unwrap_err(), "opnai");
    }
}
