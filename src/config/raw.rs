//! The LiteLLM `config.yaml` shape as serde structs. Only the keys Switchboard implements are
//! fields; every other key is reported by `serde_ignored` as "not implemented yet".

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub model_list: Vec<RawModel>,
    pub router_settings: RawRouterSettings,
    pub litellm_settings: RawLitellmSettings,
    pub general_settings: RawGeneralSettings,
    /// Values that `os.environ/NAME` references resolve to before the process environment.
    pub environment_variables: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub struct RawModel {
    pub model_name: String,
    pub litellm_params: RawLitellmParams,
    #[serde(default)]
    pub model_info: RawModelInfo,
}

#[derive(Debug, Deserialize)]
pub struct RawLitellmParams {
    pub model: String,
    pub api_base: Option<String>,
    pub api_key: Option<String>,
    pub api_version: Option<String>,
    pub weight: Option<f64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Seconds.
    pub timeout: Option<f64>,
    /// Seconds.
    pub stream_timeout: Option<f64>,
    pub mock_response: Option<String>,
    /// Priority tier: lower first; higher tiers are automatic fallbacks.
    pub order: Option<u32>,
    pub tags: Option<Vec<String>>,
    /// Seconds.
    pub cooldown_time: Option<f64>,
    pub max_parallel_requests: Option<u32>,
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    pub max_input_tokens: Option<u32>,
    pub drop_params: Option<bool>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    pub aws_session_token: Option<String>,
    pub aws_region_name: Option<String>,
    pub vertex_project: Option<String>,
    pub vertex_location: Option<String>,
    /// A service-account JSON document, or the path of one.
    pub vertex_credentials: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawModelInfo {
    pub id: Option<String>,
    pub mode: Option<String>,
    /// The model whose price and context window apply (e.g. an Azure deployment's real model).
    pub base_model: Option<String>,
    /// Names a key's `models` may list to allow this deployment's group.
    pub access_groups: Vec<String>,
    pub max_input_tokens: Option<u32>,
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRouterSettings {
    pub routing_strategy: Option<String>,
    pub routing_strategy_args: RawStrategyArgs,
    pub num_retries: Option<u32>,
    /// Seconds.
    pub timeout: Option<f64>,
    /// Seconds: time to first chunk of a stream.
    pub stream_timeout: Option<f64>,
    /// Seconds: longest gap between two chunks (Switchboard; default: stream_timeout).
    pub stream_idle_timeout: Option<f64>,
    /// Seconds: longest total stream (Switchboard).
    pub max_stream_duration: Option<f64>,
    pub retry_policy: BTreeMap<String, u32>,
    pub allowed_fails: Option<u32>,
    pub allowed_fails_policy: BTreeMap<String, u32>,
    /// Seconds.
    pub cooldown_time: Option<f64>,
    pub disable_cooldowns: Option<bool>,
    pub fallbacks: Vec<BTreeMap<String, Vec<String>>>,
    pub default_fallbacks: Vec<String>,
    pub context_window_fallbacks: Vec<BTreeMap<String, Vec<String>>>,
    pub content_policy_fallbacks: Vec<BTreeMap<String, Vec<String>>>,
    pub max_fallbacks: Option<u32>,
    /// Switchboard: requests waiting for a deployment slot (`max_parallel_requests`) per group.
    pub max_queue: Option<u32>,
    /// Switchboard: per-group strategy, retries and hedging.
    pub model_group_settings: BTreeMap<String, RawGroupSettings>,
    /// Shared state for the fleet (`redis://`, `rediss://`), or LiteLLM's host/port/password.
    pub redis_url: Option<String>,
    pub redis_host: Option<String>,
    pub redis_port: Option<u16>,
    pub redis_password: Option<String>,
    /// LiteLLM's Redis Cluster seeds: `[{host, port}]`.
    pub redis_startup_nodes: Option<Vec<RawRedisNode>>,
    /// Switchboard: `redis_url` names a Redis Cluster (implied by several comma-separated URLs).
    pub redis_cluster: Option<bool>,
}

/// One Redis Cluster seed node, as LiteLLM writes it (the port as a number or a string).
#[derive(Debug, Deserialize)]
pub struct RawRedisNode {
    pub host: String,
    #[serde(deserialize_with = "port_number_or_string")]
    pub port: u16,
}

fn port_number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        N(u16),
        S(String),
    }
    match Port::deserialize(d)? {
        Port::N(n) => Ok(n),
        Port::S(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawStrategyArgs {
    pub lowest_latency_buffer: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawGroupSettings {
    pub routing_strategy: Option<String>,
    pub num_retries: Option<u32>,
    /// Milliseconds, or "p95" to hedge after the group's observed p95 latency.
    pub hedge_after_ms: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLitellmSettings {
    pub num_retries: Option<u32>,
    pub drop_params: Option<bool>,
    pub fallbacks: Vec<BTreeMap<String, Vec<String>>>,
    pub context_window_fallbacks: Vec<BTreeMap<String, Vec<String>>>,
    pub content_policy_fallbacks: Vec<BTreeMap<String, Vec<String>>>,
    /// Seconds.
    pub request_timeout: Option<f64>,
    /// USD: a budget for the whole gateway, per `budget_duration`.
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    /// USD: a budget for each end user (the `user` field of a request).
    pub max_end_user_budget: Option<f64>,
    /// Response cache on or off.
    pub cache: Option<bool>,
    pub cache_params: Option<RawCacheParams>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCacheParams {
    /// `local` (default) or `redis`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub password: Option<String>,
    #[serde(alias = "redis_url")]
    pub url: Option<String>,
    /// LiteLLM's Redis Cluster seeds: `[{host, port}]`.
    pub redis_startup_nodes: Option<Vec<RawRedisNode>>,
    /// Seconds.
    pub ttl: Option<f64>,
    pub default_in_memory_ttl: Option<f64>,
    pub default_in_redis_ttl: Option<f64>,
    pub namespace: Option<String>,
    pub supported_call_types: Option<Vec<String>>,
    /// Entries kept by the local cache.
    pub max_size: Option<usize>,
    pub max_size_in_memory: Option<usize>,
    /// `default_on` or `default_off`.
    pub mode: Option<String>,
    /// Switchboard: `shared` (default), `team` or `key`.
    pub isolation: Option<String>,
    /// Switchboard: seconds a request waits for an identical one in flight (default 30).
    pub lock_wait: Option<f64>,
    /// Switchboard: largest answer stored, in bytes (default 4 MiB).
    pub max_entry_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawGeneralSettings {
    pub master_key: Option<String>,
    /// Switchboard: a price file in LiteLLM's `model_prices_and_context_window.json` format.
    pub model_prices_path: Option<String>,
    /// Switchboard: `closed` (default: refuse requests when budgets cannot be checked) or `open`.
    pub budget_failure_mode: Option<String>,
    /// Switchboard: `open` (default: admit when rate limits cannot be checked) or `closed`.
    pub rate_limit_failure_mode: Option<String>,
    /// Switchboard: etcd endpoints (`host:port` or URLs, comma-separated) for the config leader and
    /// the key store; also `SWITCHBOARD_ETCD_ENDPOINTS`.
    pub etcd_endpoints: Option<String>,
    pub etcd_username: Option<String>,
    pub etcd_password: Option<String>,
    /// Key prefix in etcd (default `switchboard`), so several gateways can share one etcd.
    pub etcd_prefix: Option<String>,
    /// PEM files for etcd over TLS (`https://` endpoints): the CA to trust, and a client
    /// certificate and key for etcd's `--client-cert-auth`.
    pub etcd_ca_file: Option<String>,
    pub etcd_cert_file: Option<String>,
    pub etcd_key_file: Option<String>,
    /// Seconds (default 5): how long a dead config leader keeps its leadership.
    pub leader_lease_ttl: Option<f64>,
    /// Switchboard, seconds (default 10): how often the leader checkpoints spend into etcd.
    pub spend_checkpoint_interval: Option<f64>,
    /// Switchboard: prompt and completion text on spans (redacted), off by default.
    pub trace_content: Option<bool>,
    /// Switchboard: terms masked in captured content (besides keys, bearer tokens and e-mails).
    pub trace_content_redact: Vec<String>,
    /// Switchboard: soft-budget alerts are POSTed here as JSON.
    pub alert_webhook_url: Option<String>,
    /// Switchboard, seconds: how long a budget reservation outlives a replica that crashed
    /// before settling it (default 600).
    pub reservation_ttl: Option<f64>,
    /// Largest request body or gRPC message, in MB (LiteLLM's name; default 32).
    pub max_request_size_mb: Option<f64>,
    /// Switchboard: most messages in one chat request (default 10,000).
    pub max_messages: Option<usize>,
    /// Switchboard: streams one virtual key may have open at once across the fleet (no limit by
    /// default).
    pub max_streams_per_key: Option<u32>,
}
