//! LiteLLM-compatible YAML -> validated, immutable [`Config`].
//!
//! Pipeline: YAML text -> `serde_json::Value` -> `os.environ/` references resolved -> raw serde structs
//! (type errors carry their YAML path; unimplemented keys are collected, never silently dropped) ->
//! semantic validation (errors name the YAML path, e.g. `model_list[2].litellm_params.model`).

mod cache;
mod env;
pub mod prices;
pub mod providers;
mod raw;
mod router;

use std::{collections::HashMap, fmt::Write as _, path::Path, time::Duration};

use serde_json::Value;

use crate::domain::{DeploymentId, ModelGroup, Price, Secret};
pub use cache::{CacheBackend, CacheSettings, Isolation};
pub use prices::{ModelPrice, PriceTable};
pub use providers::{Endpoint, ProviderSpec, WireFormat};
pub use router::{
    ClassPolicy, Fallbacks, GroupSettings, Hedge, RedisAddress, RouterSettings, RoutingStrategy,
};

/// A config that passed validation. Cheap to share behind an `Arc`; replaced whole on reload.
#[derive(Debug, Clone)]
pub struct Config {
    /// The YAML text it was parsed from (the control plane stores and versions it). It may hold
    /// literal keys, so it is a [`Secret`]: never in logs or Debug output.
    pub yaml: Secret,
    /// In file order.
    pub deployments: Vec<DeploymentConfig>,
    pub router: RouterSettings,
    pub master_key: Option<Secret>,
    /// `model_info.access_groups`: access group -> the model groups it names.
    pub access_groups: HashMap<String, Vec<ModelGroup>>,
    pub quotas: QuotaSettings,
    /// Request size bounds (read at start-up).
    pub limits: RequestLimits,
    /// Where keys, teams and users live when the gateway runs as a fleet (None: in memory).
    pub etcd: Option<EtcdSettings>,
    /// The response cache (`litellm_settings.cache`), when on.
    pub cache: Option<CacheSettings>,
    /// YAML paths of keys Switchboard does not implement yet (logged once at start-up).
    pub ignored_keys: Vec<String>,
    /// Other non-fatal findings, e.g. a routing strategy that falls back to simple-shuffle.
    pub warnings: Vec<String>,
}

/// An etcd cluster: the durable store of keys, teams and users (and the config leader's).
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// `http://host:port` each.
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Every key Switchboard writes starts with `<prefix>/v1/`.
    pub prefix: String,
    /// The leader's lease: a dead leader is replaced after about this long.
    pub leader_lease_ttl: Duration,
    /// TLS: the CA (PEM) that signed etcd's certificate.
    pub ca_pem: Option<String>,
    /// TLS client certificate and key (PEM), for etcd's `--client-cert-auth`.
    pub client_pem: Option<(String, Secret)>,
}

impl EtcdSettings {
    /// From `host:port,host:port` (a scheme is optional).
    pub fn from_endpoints(list: &str) -> Result<EtcdSettings, String> {
        let endpoints: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.to_string()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        if endpoints.is_empty() {
            return Err("lists no endpoint".into());
        }
        for e in &endpoints {
            check_url(e)?;
        }
        Ok(EtcdSettings {
            endpoints,
            username: None,
            password: None,
            prefix: "switchboard".into(),
            leader_lease_ttl: Duration::from_secs(5),
            ca_pem: None,
            client_pem: None,
        })
    }
}

/// Gateway-wide budgets and how budgets and rate limits behave when the ledger is unreachable.
#[derive(Debug, Clone)]
pub struct QuotaSettings {
    /// USD for the whole gateway (`litellm_settings.max_budget`), per `budget_duration`.
    pub global_budget: Option<f64>,
    pub global_budget_duration: Option<String>,
    pub end_user_budget: Option<f64>,
    /// Admit when budgets cannot be checked (default: refuse).
    pub budgets_fail_open: bool,
    /// Admit when rate limits cannot be checked (default: admit).
    pub rate_limits_fail_open: bool,
    pub reservation_ttl: Duration,
    /// Soft-budget alerts are POSTed here.
    pub alert_webhook_url: Option<String>,
    /// How often the leader copies budget counters from Redis into etcd.
    pub spend_checkpoint_interval: Duration,
    /// Streams one virtual key may have open at once, fleet-wide
    /// (`general_settings.max_streams_per_key`; none by default).
    pub max_streams_per_key: Option<u32>,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            global_budget: None,
            global_budget_duration: None,
            end_user_budget: None,
            budgets_fail_open: false,
            rate_limits_fail_open: true,
            reservation_ttl: Duration::from_secs(600),
            alert_webhook_url: None,
            spend_checkpoint_interval: Duration::from_secs(10),
            max_streams_per_key: None,
        }
    }
}

/// Bounds on what one request may carry, whatever the surface.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestLimits {
    /// Largest request body or gRPC message (`general_settings.max_request_size_mb`, as in
    /// LiteLLM; default 32 MB).
    pub max_request_bytes: usize,
    /// Most messages in one chat request (`general_settings.max_messages`; default 10,000).
    pub max_messages: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 32 << 20,
            max_messages: 10_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeploymentConfig {
    pub id: DeploymentId,
    pub group: ModelGroup,
    pub provider: &'static ProviderSpec,
    /// Model name sent upstream (the part after the provider prefix).
    pub model: String,
    pub api_base: Option<String>,
    pub api_key: Option<Secret>,
    pub api_version: Option<String>,
    pub weight: Option<f64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Per-attempt timeout for unary calls.
    pub timeout: Option<Duration>,
    /// Per-attempt timeout for streams.
    pub stream_timeout: Option<Duration>,
    /// Answer every request with this text instead of calling upstream (LiteLLM's `mock_response`).
    pub mock_response: Option<String>,
    /// Priority tier: lower first (default 0); higher tiers serve only when lower ones cannot.
    pub order: u32,
    /// Tag routing: requests with tags go to deployments sharing one; `default` serves untagged ones.
    pub tags: Vec<String>,
    pub cooldown_time: Option<Duration>,
    /// Requests in flight on this deployment from this replica, at most.
    pub max_parallel_requests: Option<u32>,
    pub max_input_tokens: Option<u32>,
    /// What a token costs here: the deployment's own `*_cost_per_token`, else the price table's
    /// entry for its model (or `model_info.base_model`). `None`: unknown, so its requests cost $0.
    pub price: Option<Price>,
    /// Longest answer the model can give (from the price table), the worst case a budget reserves
    /// when a request sets no `max_tokens`.
    pub max_output_tokens: Option<u32>,
    /// Drop parameters the provider does not support instead of refusing the request.
    pub drop_params: bool,
    /// AWS credentials and region (Bedrock).
    pub aws: AwsParams,
    /// Project, location and credentials (Vertex AI).
    pub vertex: VertexParams,
}

/// `vertex_*` litellm_params, with Google's usual environment variables as fallbacks.
#[derive(Debug, Clone, Default)]
pub struct VertexParams {
    pub project: String,
    pub location: String,
    /// The service-account JSON document (it holds a private key).
    pub credentials: Option<Secret>,
}

/// `aws_*` litellm_params, with the usual `AWS_*` environment variables as fallbacks.
#[derive(Debug, Clone, Default)]
pub struct AwsParams {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub region: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("config is not valid YAML: {0}")]
    Yaml(String),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl ConfigError {
    fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        let path = path.into();
        ConfigError::Invalid {
            path: if path.is_empty() { "(root)".into() } else { path },
            message: message.into(),
        }
    }
}

impl Config {
    /// Reads and validates a config file, resolving `os.environ/` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates YAML text; `lookup` resolves environment variables.
    pub fn parse(yaml: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut doc: Value = if yaml.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            serde_saphyr::from_str(yaml).map_err(|e| ConfigError::Yaml(e.to_string()))?
        };
        if !doc.is_object() {
            return Err(ConfigError::at("", "the config must be a mapping"));
        }
        let overrides = match doc.get("environment_variables") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| ConfigError::at("environment_variables", e.to_string()))?,
            None => Default::default(),
        };
        env::resolve(&mut doc, &overrides, lookup)?;

        let mut ignored = Vec::new();
        let mut on_ignored = |path: serde_ignored::Path<'_>| ignored.push(yaml_path(&path));
        let de = serde_ignored::Deserializer::new(doc, &mut on_ignored);
        let raw: raw::RawConfig = serde_path_to_error::deserialize(de)
            .map_err(|e| ConfigError::at(e.path().to_string(), e.inner().to_string()))?;
        let mut config = validate(raw, ignored, lookup)?;
        config.yaml = Secret::new(yaml);
        Ok(config)
    }

    /// A human summary of the resolved groups. Never includes secrets.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let mut groups: Vec<&ModelGroup> = Vec::new();
        for d in &self.deployments {
            if !groups.contains(&&d.group) {
                groups.push(&d.group);
            }
        }
        for g in groups {
            let _ = writeln!(out, "{g}:");
            for d in self.deployments.iter().filter(|d| &d.group == g) {
                let target = match (&d.mock_response, &d.api_base, d.provider.endpoint) {
                    (Some(_), _, _) => "mock_response".to_string(),
                    (None, Some(base), _) => base.clone(),
                    (None, None, Endpoint::Fixed(base)) => base.to_string(),
                    (None, None, Endpoint::Derived) => "(from region/location)".to_string(),
                    (None, None, Endpoint::Required) => "(no api_base)".to_string(),
                };
                let _ = writeln!(
                    out,
                    "  {id}  provider={p} model={m} target={target} weight={w} api_key={k}",
                    id = d.id,
                    p = d.provider.name,
                    m = d.model,
                    w = d.weight.map_or("-".to_string(), |w| w.to_string()),
                    k = if d.api_key.is_some() { "set" } else { "unset" },
                );
            }
        }
        let _ = writeln!(
            out,
            "router: strategy={} num_retries={} timeout={}s master_key={}",
            self.router.strategy.as_str(),
            self.router.num_retries,
            self.router.timeout.as_secs_f64(),
            if self.master_key.is_some() {
                "set"
            } else {
                "unset (no auth)"
            }
        );
        out
    }
}

fn validate(
    raw: raw::RawConfig,
    ignored_keys: Vec<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    let master_key = match raw.general_settings.master_key.clone() {
        Some(k) if k.trim().is_empty() => {
            return Err(ConfigError::at(
                "general_settings.master_key",
                "must not be empty",
            ));
        }
        k => k.map(Secret::new),
    };

    let drop_params = raw.litellm_settings.drop_params;
    let quotas = quota_settings(&raw.litellm_settings, &raw.general_settings)?;
    let limits = request_limits(&raw.general_settings)?;
    let etcd = etcd_settings(&raw.general_settings, lookup)?;
    let prices = price_table(raw.general_settings.model_prices_path.as_deref(), lookup)?;
    let mut deployments = Vec::with_capacity(raw.model_list.len());
    let mut seen_ids: HashMap<String, usize> = HashMap::new();
    let mut access_groups: HashMap<String, Vec<ModelGroup>> = HashMap::new();
    for (i, m) in raw.model_list.into_iter().enumerate() {
        let at = |field: &str| format!("model_list[{i}].{field}");
        if m.model_name.trim().is_empty() {
            return Err(ConfigError::at(at("model_name"), "must not be empty"));
        }
        let p = m.litellm_params;
        let (provider, model) = providers::split_model(&p.model).map_err(|prefix| {
            ConfigError::at(
                at("litellm_params.model"),
                format!(
                    "unknown provider {prefix:?} (known: {})",
                    providers::PROVIDERS
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if model.is_empty() {
            return Err(ConfigError::at(
                at("litellm_params.model"),
                "names no model after the provider prefix",
            ));
        }
        let api_base = p
            .api_base
            .clone()
            .or_else(|| provider.base_env.iter().find_map(|name| lookup(name)));
        if let Some(base) = &api_base {
            check_url(base).map_err(|msg| ConfigError::at(at("litellm_params.api_base"), msg))?;
        } else if provider.endpoint == Endpoint::Required && p.mock_response.is_none() {
            return Err(ConfigError::at(
                at("litellm_params.api_base"),
                format!("is required for provider {:?}", provider.name),
            ));
        }
        if let Some(w) = p.weight
            && !(w.is_finite() && w > 0.0)
        {
            return Err(ConfigError::at(
                at("litellm_params.weight"),
                "must be a positive number",
            ));
        }
        let timeout = p
            .timeout
            .map(|t| seconds(t, &at("litellm_params.timeout")))
            .transpose()?;
        let stream_timeout = p
            .stream_timeout
            .map(|t| seconds(t, &at("litellm_params.stream_timeout")))
            .transpose()?;
        let api_key = p
            .api_key
            .clone()
            .or_else(|| provider.key_env.iter().find_map(|name| lookup(name)))
            .map(Secret::new);

        let aws = if provider.wire == WireFormat::Bedrock {
            let env = |names: &[&str]| names.iter().find_map(|n| lookup(n));
            let aws = AwsParams {
                access_key_id: p
                    .aws_access_key_id
                    .clone()
                    .or_else(|| env(&["AWS_ACCESS_KEY_ID"])),
                secret_access_key: p
                    .aws_secret_access_key
                    .clone()
                    .or_else(|| env(&["AWS_SECRET_ACCESS_KEY"]))
                    .map(Secret::new),
                session_token: p
                    .aws_session_token
                    .clone()
                    .or_else(|| env(&["AWS_SESSION_TOKEN"]))
                    .map(Secret::new),
                region: p
                    .aws_region_name
                    .clone()
                    .or_else(|| env(&["AWS_REGION", "AWS_DEFAULT_REGION"])),
            };
            if aws.region.is_none() && api_base.is_none() && p.mock_response.is_none() {
                return Err(ConfigError::at(
                    at("litellm_params.aws_region_name"),
                    "is required for bedrock (or set AWS_REGION)",
                ));
            }
            aws
        } else {
            AwsParams::default()
        };
        let vertex = if provider.wire == WireFormat::Vertex {
            vertex_params(&p, &at, lookup, api_key.is_some() || p.mock_response.is_some())?
        } else {
            VertexParams::default()
        };
        let id = match m.model_info.id.clone() {
            Some(id) if id.trim().is_empty() => {
                return Err(ConfigError::at(at("model_info.id"), "must not be empty"));
            }
            Some(id) => {
                if seen_ids.contains_key(&id) {
                    return Err(ConfigError::at(
                        at("model_info.id"),
                        format!("duplicate deployment id {id:?}"),
                    ));
                }
                seen_ids.insert(id.clone(), 1);
                id
            }
            None => {
                let base = format!("{}/{}", m.model_name, p.model);
                let n = seen_ids.entry(base.clone()).or_insert(0);
                *n += 1;
                if *n == 1 { base } else { format!("{base}#{n}") }
            }
        };
        if let Some(mode) = m.model_info.mode.as_deref()
            && !matches!(mode, "chat" | "completion" | "embedding")
        {
            warnings.push(format!(
                "{}: mode {mode:?} is not served; chat and embedding are",
                at("model_info.mode")
            ));
        }
        for a in &m.model_info.access_groups {
            let groups = access_groups.entry(a.clone()).or_default();
            if !groups.iter().any(|g| g.as_str() == m.model_name) {
                groups.push(ModelGroup::new(m.model_name.clone()));
            }
        }
        let priced_as = m.model_info.base_model.as_deref().unwrap_or(model);
        let listed = prices.lookup(provider.name, priced_as);
        let own = |v: Option<f64>| v.map(Price::pico_from_usd);
        let price = match (
            own(p.input_cost_per_token.or(m.model_info.input_cost_per_token)),
            own(p.output_cost_per_token.or(m.model_info.output_cost_per_token)),
        ) {
            (None, None) => listed.map(|l| l.price),
            (own_input, output) => {
                let base = listed.map(|l| l.price).unwrap_or_default();
                let input = own_input.unwrap_or(base.input);
                // Cache rates follow an overridden input price in the table's proportion.
                let scaled = |rate: i64| match (own_input, base.input) {
                    (None, _) => rate,
                    (Some(_), 0) => input,
                    (Some(_), b) => ((i128::from(rate) * i128::from(input)) / i128::from(b)) as i64,
                };
                Some(Price {
                    input,
                    output: output.unwrap_or(base.output),
                    cache_read: if listed.is_some() {
                        scaled(base.cache_read)
                    } else {
                        input
                    },
                    cache_write: if listed.is_some() {
                        scaled(base.cache_write)
                    } else {
                        input
                    },
                })
            }
        };
        if price.is_none() && p.mock_response.is_none() && !provider.self_hosted() {
            warnings.push(format!(
                "{}: no price known for {priced_as:?}; its requests cost $0 against budgets \
                 (set input_cost_per_token/output_cost_per_token or model_info.base_model)",
                at("litellm_params.model")
            ));
        }
        deployments.push(DeploymentConfig {
            id: DeploymentId::new(id),
            group: ModelGroup::new(m.model_name),
            provider,
            model: model.to_string(),
            api_base: api_base.map(|b| b.trim_end_matches('/').to_string()),
            api_key,
            api_version: p.api_version.or_else(|| {
                (provider.wire == WireFormat::Azure)
                    .then(|| lookup("AZURE_API_VERSION"))
                    .flatten()
            }),
            weight: p.weight,
            rpm: p.rpm,
            tpm: p.tpm,
            timeout,
            stream_timeout,
            mock_response: p.mock_response,
            order: p.order.unwrap_or(0),
            tags: p.tags.unwrap_or_default(),
            cooldown_time: p
                .cooldown_time
                .map(|t| seconds(t, &at("litellm_params.cooldown_time")))
                .transpose()?,
            max_parallel_requests: match p.max_parallel_requests {
                Some(0) => {
                    return Err(ConfigError::at(
                        at("litellm_params.max_parallel_requests"),
                        "must be at least 1",
                    ));
                }
                n => n,
            },
            max_input_tokens: p
                .max_input_tokens
                .or(m.model_info.max_input_tokens)
                .or(listed.and_then(|l| l.max_input_tokens)),
            price,
            max_output_tokens: listed.and_then(|l| l.max_output_tokens),
            drop_params: p.drop_params.or(drop_params).unwrap_or(false),
            aws,
            vertex,
        });
    }
    let group_names: std::collections::HashSet<&str> = deployments.iter().map(|d| d.group.as_str()).collect();
    let mut router = router::validate(raw.router_settings, &raw.litellm_settings, &group_names, lookup)?;
    let cache = cache::validate(
        raw.litellm_settings.cache,
        raw.litellm_settings.cache_params,
        router.redis.as_ref(),
    )?;
    if raw.general_settings.trace_content.unwrap_or(false) {
        router.trace_content = Some(raw.general_settings.trace_content_redact.clone());
    }
    Ok(Config {
        yaml: Secret::new(""),
        deployments,
        router,
        master_key,
        access_groups,
        quotas,
        limits,
        etcd,
        cache,
        ignored_keys,
        warnings,
    })
}

fn etcd_settings(
    g: &raw::RawGeneralSettings,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<EtcdSettings>, ConfigError> {
    let Some(list) = g
        .etcd_endpoints
        .clone()
        .or_else(|| lookup("SWITCHBOARD_ETCD_ENDPOINTS"))
    else {
        return Ok(None);
    };
    let mut s = EtcdSettings::from_endpoints(&list)
        .map_err(|m| ConfigError::at("general_settings.etcd_endpoints", m))?;
    s.username = g
        .etcd_username
        .clone()
        .or_else(|| lookup("SWITCHBOARD_ETCD_USERNAME"));
    s.password = g
        .etcd_password
        .clone()
        .or_else(|| lookup("SWITCHBOARD_ETCD_PASSWORD"))
        .map(Secret::new);
    if let Some(p) = &g.etcd_prefix {
        if p.is_empty() || p.contains(char::is_whitespace) {
            return Err(ConfigError::at(
                "general_settings.etcd_prefix",
                "must be a non-empty name without spaces",
            ));
        }
        s.prefix = p.trim_end_matches('/').to_string();
    }
    let pem = |field: &str, path: Option<String>, env: &str| -> Result<Option<String>, ConfigError> {
        let Some(path) = path.or_else(|| lookup(env)) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::at(
                format!("general_settings.{field}"),
                format!("cannot read {path}: {e}"),
            )
        })?;
        if !text.contains("-----BEGIN") {
            return Err(ConfigError::at(
                format!("general_settings.{field}"),
                format!("{path} is not PEM"),
            ));
        }
        Ok(Some(text))
    };
    s.ca_pem = pem("etcd_ca_file", g.etcd_ca_file.clone(), "SWITCHBOARD_ETCD_CA_FILE")?;
    let cert = pem(
        "etcd_cert_file",
        g.etcd_cert_file.clone(),
        "SWITCHBOARD_ETCD_CERT_FILE",
    )?;
    let key = pem(
        "etcd_key_file",
        g.etcd_key_file.clone(),
        "SWITCHBOARD_ETCD_KEY_FILE",
    )?;
    s.client_pem = match (cert, key) {
        (Some(c), Some(k)) => Some((c, Secret::new(k))),
        (None, None) => None,
        _ => {
            return Err(ConfigError::at(
                "general_settings.etcd_cert_file",
                "etcd_cert_file and etcd_key_file go together",
            ));
        }
    };
    if (s.ca_pem.is_some() || s.client_pem.is_some()) && s.endpoints.iter().any(|e| e.starts_with("http://"))
    {
        return Err(ConfigError::at(
            "general_settings.etcd_endpoints",
            "TLS files are set: use https:// endpoints",
        ));
    }
    if let Some(t) = g.leader_lease_ttl {
        s.leader_lease_ttl = seconds(t, "general_settings.leader_lease_ttl")?;
        if s.leader_lease_ttl < Duration::from_secs(1) {
            return Err(ConfigError::at(
                "general_settings.leader_lease_ttl",
                "must be at least 1 second",
            ));
        }
    }
    Ok(Some(s))
}

fn quota_settings(
    l: &raw::RawLitellmSettings,
    g: &raw::RawGeneralSettings,
) -> Result<QuotaSettings, ConfigError> {
    let usd = |v: Option<f64>, path: &str| match v {
        Some(x) if !(x.is_finite() && x >= 0.0) => {
            Err(ConfigError::at(path, "must be a non-negative number of USD"))
        }
        v => Ok(v),
    };
    let mode = |v: Option<&str>, path: &str, default_open: bool| match v {
        None => Ok(default_open),
        Some("open") => Ok(true),
        Some("closed") => Ok(false),
        Some(other) => Err(ConfigError::at(path, format!("{other:?}: use open or closed"))),
    };
    if let Some(d) = &l.budget_duration {
        crate::domain::Window::parse(d)
            .map_err(|m| ConfigError::at("litellm_settings.budget_duration", m))?;
    }
    Ok(QuotaSettings {
        global_budget: usd(l.max_budget, "litellm_settings.max_budget")?,
        global_budget_duration: l.budget_duration.clone(),
        end_user_budget: usd(l.max_end_user_budget, "litellm_settings.max_end_user_budget")?,
        budgets_fail_open: mode(
            g.budget_failure_mode.as_deref(),
            "general_settings.budget_failure_mode",
            false,
        )?,
        rate_limits_fail_open: mode(
            g.rate_limit_failure_mode.as_deref(),
            "general_settings.rate_limit_failure_mode",
            true,
        )?,
        reservation_ttl: match g.reservation_ttl {
            Some(t) => seconds(t, "general_settings.reservation_ttl")?,
            None => QuotaSettings::default().reservation_ttl,
        },
        spend_checkpoint_interval: match g.spend_checkpoint_interval {
            Some(t) => seconds(t, "general_settings.spend_checkpoint_interval")?,
            None => QuotaSettings::default().spend_checkpoint_interval,
        },
        max_streams_per_key: match g.max_streams_per_key {
            Some(0) => {
                return Err(ConfigError::at(
                    "general_settings.max_streams_per_key",
                    "must be at least 1 (leave it out for no limit)",
                ));
            }
            n => n,
        },
        alert_webhook_url: match &g.alert_webhook_url {
            Some(u) => {
                check_url(u).map_err(|m| ConfigError::at("general_settings.alert_webhook_url", m))?;
                Some(u.clone())
            }
            None => None,
        },
    })
}

fn request_limits(g: &raw::RawGeneralSettings) -> Result<RequestLimits, ConfigError> {
    let mut limits = RequestLimits::default();
    if let Some(mb) = g.max_request_size_mb {
        // Below 1 KB no chat request fits; above 1 GB a single request would be a memory hazard.
        if !(mb.is_finite() && (0.001..=1024.0).contains(&mb)) {
            return Err(ConfigError::at(
                "general_settings.max_request_size_mb",
                format!("must be between 0.001 and 1024, got {mb}"),
            ));
        }
        limits.max_request_bytes = (mb * 1024.0 * 1024.0) as usize;
    }
    if let Some(n) = g.max_messages {
        if n == 0 {
            return Err(ConfigError::at(
                "general_settings.max_messages",
                "must be at least 1",
            ));
        }
        limits.max_messages = n;
    }
    Ok(limits)
}

/// The built-in price table, extended by `general_settings.model_prices_path` (or
/// `SWITCHBOARD_MODEL_PRICES`): a file in LiteLLM's `model_prices_and_context_window.json` format.
fn price_table(
    path: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<PriceTable, ConfigError> {
    let mut table = PriceTable::built_in();
    let field = "general_settings.model_prices_path";
    if let Some(path) = path
        .map(str::to_string)
        .or_else(|| lookup("SWITCHBOARD_MODEL_PRICES"))
    {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::at(field, format!("cannot read {path}: {e}")))?;
        table
            .merge_json(&text)
            .map_err(|e| ConfigError::at(field, format!("{path} is not a LiteLLM price file: {e}")))?;
    }
    Ok(table)
}

/// Vertex AI: project (required), location (default us-central1), credentials (a service-account
/// JSON document or its path, or else `api_key` as an access token).
fn vertex_params(
    p: &raw::RawLitellmParams,
    at: &dyn Fn(&str) -> String,
    lookup: &dyn Fn(&str) -> Option<String>,
    has_token: bool,
) -> Result<VertexParams, ConfigError> {
    let env = |names: &[&str]| names.iter().find_map(|n| lookup(n));
    let project = p
        .vertex_project
        .clone()
        .or_else(|| env(&["VERTEXAI_PROJECT", "GOOGLE_CLOUD_PROJECT"]))
        .ok_or_else(|| {
            ConfigError::at(
                at("litellm_params.vertex_project"),
                "is required for vertex_ai (or set VERTEXAI_PROJECT)",
            )
        })?;
    let location = p
        .vertex_location
        .clone()
        .or_else(|| env(&["VERTEXAI_LOCATION", "GOOGLE_CLOUD_LOCATION"]))
        .unwrap_or_else(|| "us-central1".into());
    let source = p
        .vertex_credentials
        .clone()
        .or_else(|| env(&["GOOGLE_APPLICATION_CREDENTIALS"]));
    let credentials = match source {
        None if has_token => None,
        None => {
            return Err(ConfigError::at(
                at("litellm_params.vertex_credentials"),
                "vertex_ai needs a service account (vertex_credentials or GOOGLE_APPLICATION_CREDENTIALS) or an access token in api_key",
            ));
        }
        Some(s) => {
            let path = at("litellm_params.vertex_credentials");
            let text = if s.trim_start().starts_with('{') {
                s
            } else {
                std::fs::read_to_string(&s)
                    .map_err(|e| ConfigError::at(&path, format!("cannot read {s:?}: {e}")))?
            };
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ConfigError::at(&path, format!("is not service-account JSON: {e}")))?;
            for field in ["client_email", "private_key"] {
                if !v[field].is_string() {
                    return Err(ConfigError::at(
                        &path,
                        format!("the service account has no {field}"),
                    ));
                }
            }
            Some(Secret::new(text))
        }
    };
    Ok(VertexParams {
        project,
        location,
        credentials,
    })
}

fn seconds(value: f64, path: &str) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| ConfigError::at(path, format!("must be a positive number of seconds, got {value}")))
}

fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL ({e}): {url:?}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(()),
        _ => Err(format!("must be an http:// or https:// URL, got {url:?}")),
    }
}

/// `model_list[0].litellm_params.foo`, the same notation as `serde_path_to_error`.
pub fn yaml_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", yaml_path(parent)),
        Path::Map { parent, key } => {
            let p = yaml_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            yaml_path(parent)
        }
    }
}

#[cfg(test)]
mod tests;
