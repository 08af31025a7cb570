//! `litellm_settings.cache` and `cache_params`: the response cache, as LiteLLM configures it.

use std::time::Duration;

use super::{ConfigError, RedisAddress, raw::RawCacheParams};

/// A validated response-cache configuration (`None` in [`Config`](super::Config): no cache).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub backend: CacheBackend,
    /// How long an answer stays (`cache_params.ttl`, default 10 minutes).
    pub ttl: Duration,
    /// Prefix of every entry, so several gateways (or config generations) can share one Redis.
    pub namespace: Option<String>,
    /// `supported_call_types` includes chat completions.
    pub chat: bool,
    /// `supported_call_types` includes embeddings.
    pub embeddings: bool,
    /// `mode: default_off`: only requests that opt in (`cache: {use-cache: true}`) use the cache.
    pub default_off: bool,
    /// Who may share an answer (Switchboard's `cache_params.isolation`).
    pub isolation: Isolation,
    /// Longest a request waits for an identical one in flight before calling upstream itself.
    pub lock_wait: Duration,
    /// Answers larger than this (serialised) are not stored.
    pub max_entry_bytes: usize,
}

#[derive(Debug, Clone)]
pub enum CacheBackend {
    /// In this process: at most `max_size` entries, least recently used evicted first.
    Local { max_size: usize },
    /// Shared by every replica.
    Redis(RedisAddress),
}

/// Which callers share cached answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Every caller (LiteLLM's behaviour).
    Shared,
    /// Callers of the same team (keys without a team: the same key).
    Team,
    /// Callers with the same virtual key.
    Key,
}

const AT: &str = "litellm_settings.cache_params";

pub(super) fn validate(
    enabled: Option<bool>,
    params: Option<RawCacheParams>,
    router_redis: Option<&RedisAddress>,
) -> Result<Option<CacheSettings>, ConfigError> {
    if !enabled.unwrap_or(false) {
        return Ok(None);
    }
    let p = params.unwrap_or_default();
    let at = |field: &str| format!("{AT}.{field}");
    let secs = |v: Option<f64>, field: &str| -> Result<Option<Duration>, ConfigError> {
        v.map(|s| super::seconds(s, &at(field))).transpose()
    };
    let backend = match p.kind.as_deref().unwrap_or("local") {
        "local" | "memory" | "in-memory" => CacheBackend::Local {
            max_size: match p.max_size.or(p.max_size_in_memory) {
                Some(0) => return Err(ConfigError::at(at("max_size"), "must be at least 1")),
                Some(n) => n,
                None => 10_000,
            },
        },
        "redis" => {
            let own = super::router::redis_address(super::router::RedisFields {
                at: AT,
                url: p.url.as_deref(),
                host: p.host.as_deref(),
                port: p.port,
                password: p.password.as_deref(),
                startup_nodes: p.redis_startup_nodes.as_deref(),
            })?;
            let address = match (own, router_redis) {
                (Some(own), _) => own,
                (None, Some(router)) => router.clone(),
                (None, None) => {
                    return Err(ConfigError::at(
                        at("type"),
                        "redis needs cache_params.host (or url, or redis_startup_nodes), or router_settings.redis_url",
                    ));
                }
            };
            CacheBackend::Redis(address)
        }
        other @ ("redis-semantic" | "valkey-semantic" | "qdrant-semantic" | "s3" | "gcs" | "disk") => {
            return Err(ConfigError::at(
                at("type"),
                format!("{other:?} is not supported; use \"local\" or \"redis\""),
            ));
        }
        other => {
            return Err(ConfigError::at(
                at("type"),
                format!("unknown cache type {other:?}; use \"local\" or \"redis\""),
            ));
        }
    };
    let ttl_field = match backend {
        CacheBackend::Local { .. } => p.default_in_memory_ttl,
        CacheBackend::Redis(_) => p.default_in_redis_ttl,
    };
    let ttl = match (secs(p.ttl, "ttl")?, secs(ttl_field, "default_ttl")?) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => Duration::from_secs(600),
    };
    let (mut chat, mut embeddings) = (true, true);
    if let Some(types) = &p.supported_call_types {
        (chat, embeddings) = (false, false);
        for (i, t) in types.iter().enumerate() {
            match t.as_str() {
                "completion" | "acompletion" => chat = true,
                "embedding" | "aembedding" => embeddings = true,
                // Call types Switchboard does not serve: accepted (LiteLLM configs list them), inert.
                "text_completion" | "atext_completion" | "transcription" | "atranscription" | "responses"
                | "aresponses" | "rerank" | "arerank" => {}
                other => {
                    return Err(ConfigError::at(
                        format!("{AT}.supported_call_types[{i}]"),
                        format!("unknown call type {other:?}"),
                    ));
                }
            }
        }
    }
    let default_off = match p.mode.as_deref() {
        None | Some("default_on") => false,
        Some("default_off") => true,
        Some(other) => {
            return Err(ConfigError::at(
                at("mode"),
                format!("{other:?}: use default_on or default_off"),
            ));
        }
    };
    let isolation = match p.isolation.as_deref() {
        None | Some("shared") => Isolation::Shared,
        Some("team") => Isolation::Team,
        Some("key") => Isolation::Key,
        Some(other) => {
            return Err(ConfigError::at(
                at("isolation"),
                format!("{other:?}: use shared, team or key"),
            ));
        }
    };
    Ok(Some(CacheSettings {
        backend,
        ttl,
        namespace: p.namespace.filter(|n| !n.is_empty()),
        chat,
        embeddings,
        default_off,
        isolation,
        lock_wait: secs(p.lock_wait, "lock_wait")?.unwrap_or(Duration::from_secs(30)),
        max_entry_bytes: p.max_entry_bytes.unwrap_or(4 << 20),
    }))
}
