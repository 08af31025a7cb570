//! Validated `router_settings`: strategies, retries, cooldowns, fallbacks, deadlines, hedging.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use super::{ConfigError, raw, seconds};
use crate::domain::{ErrorClass, ModelGroup};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingStrategy {
    /// Weighted random by `weight`, else `rpm`, else `tpm`.
    SimpleShuffle,
    /// Fewest requests in flight.
    LeastBusy,
    /// Lowest recent latency (time to first chunk for streams), within `lowest_latency_buffer`.
    LatencyBased,
    /// Lowest tokens used this minute, never above a deployment's `rpm`/`tpm`.
    UsageBased,
    /// Cheapest by price per token.
    CostBased,
}

impl RoutingStrategy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "simple-shuffle" => Self::SimpleShuffle,
            "least-busy" => Self::LeastBusy,
            "latency-based-routing" => Self::LatencyBased,
            "usage-based-routing" | "usage-based-routing-v2" => Self::UsageBased,
            "cost-based-routing" => Self::CostBased,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SimpleShuffle => "simple-shuffle",
            Self::LeastBusy => "least-busy",
            Self::LatencyBased => "latency-based-routing",
            Self::UsageBased => "usage-based-routing-v2",
            Self::CostBased => "cost-based-routing",
        }
    }
}

/// When to send a second, hedged attempt to another deployment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hedge {
    After(Duration),
    /// After the group's observed p95 latency.
    P95,
}

#[derive(Debug, Clone, Default)]
pub struct GroupSettings {
    pub strategy: Option<RoutingStrategy>,
    pub num_retries: Option<u32>,
    pub hedge: Option<Hedge>,
}

/// A number per error class, from LiteLLM's `retry_policy` / `allowed_fails_policy` names.
#[derive(Debug, Clone, Default)]
pub struct ClassPolicy(HashMap<&'static str, u32>);

/// LiteLLM exception name -> the error classes it covers.
const POLICY_CLASSES: &[(&str, &[ErrorClass])] = &[
    (
        "BadRequestError",
        &[ErrorClass::BadRequest, ErrorClass::ContextWindowExceeded],
    ),
    ("AuthenticationError", &[ErrorClass::Authentication]),
    ("TimeoutError", &[ErrorClass::Timeout]),
    ("RateLimitError", &[ErrorClass::RateLimited]),
    ("ContentPolicyViolationError", &[ErrorClass::ContentPolicy]),
    (
        "InternalServerError",
        &[
            ErrorClass::ServerError,
            ErrorClass::Overloaded,
            ErrorClass::Connection,
            ErrorClass::MalformedResponse,
        ],
    ),
];

impl ClassPolicy {
    fn parse(raw: &BTreeMap<String, u32>, suffix: &str, path: &str) -> Result<Self, ConfigError> {
        let mut map = HashMap::new();
        for (key, value) in raw {
            let name = key
                .strip_suffix(suffix)
                .and_then(|n| POLICY_CLASSES.iter().find(|(p, _)| *p == n));
            let Some((name, _)) = name else {
                let known: Vec<String> = POLICY_CLASSES
                    .iter()
                    .map(|(n, _)| format!("{n}{suffix}"))
                    .collect();
                return Err(ConfigError::at(
                    format!("{path}.{key}"),
                    format!("unknown key (known: {})", known.join(", ")),
                ));
            };
            map.insert(*name, *value);
        }
        Ok(Self(map))
    }

    pub fn get(&self, class: ErrorClass) -> Option<u32> {
        POLICY_CLASSES
            .iter()
            .find(|(_, classes)| classes.contains(&class))
            .and_then(|(name, _)| self.0.get(name).copied())
    }
}

/// Fallback groups per group; `"*"` applies to every group without its own entry.
#[derive(Debug, Clone, Default)]
pub struct Fallbacks {
    by_group: HashMap<String, Vec<ModelGroup>>,
    default: Vec<ModelGroup>,
}

impl Fallbacks {
    pub fn for_group(&self, group: &ModelGroup) -> &[ModelGroup] {
        self.by_group
            .get(group.as_str())
            .or_else(|| self.by_group.get("*"))
            .map_or(&self.default, Vec::as_slice)
    }
}

#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// Prompt and completion text on spans (`general_settings.trace_content`), with the terms to
    /// redact (`trace_content_redact`); `None`: off.
    pub trace_content: Option<Vec<String>>,
    pub strategy: RoutingStrategy,
    /// latency-based-routing: pick among deployments within (1 + buffer) x the fastest.
    pub lowest_latency_buffer: f64,
    pub groups: HashMap<ModelGroup, GroupSettings>,
    /// Extra attempts after the first, per group.
    pub num_retries: u32,
    pub retry_policy: ClassPolicy,
    pub allowed_fails: Option<u32>,
    pub allowed_fails_policy: ClassPolicy,
    pub cooldown_time: Duration,
    pub disable_cooldowns: bool,
    /// Default per-attempt timeout for unary calls.
    pub timeout: Duration,
    /// Default time to first chunk of a stream.
    pub stream_timeout: Option<Duration>,
    /// Default longest gap between chunks.
    pub stream_idle_timeout: Option<Duration>,
    pub max_stream_duration: Option<Duration>,
    pub fallbacks: Fallbacks,
    pub context_window_fallbacks: Fallbacks,
    pub content_policy_fallbacks: Fallbacks,
    pub max_fallbacks: u32,
    /// Requests that may wait for a free deployment slot, per group.
    pub max_queue: u32,
    /// Redis for the fleet's shared state; `None`: this replica's state only.
    pub redis: Option<RedisAddress>,
}

/// Where a Redis is: one server, or a Redis Cluster whose seed nodes `url` lists comma-separated.
/// The URLs may carry passwords (`Secret` never prints them).
#[derive(Debug, Clone, PartialEq)]
pub struct RedisAddress {
    pub url: crate::domain::Secret,
    pub cluster: bool,
}

impl RouterSettings {
    pub fn strategy_for(&self, group: &ModelGroup) -> RoutingStrategy {
        self.groups
            .get(group)
            .and_then(|g| g.strategy)
            .unwrap_or(self.strategy)
    }

    pub fn num_retries_for(&self, group: &ModelGroup) -> u32 {
        self.groups
            .get(group)
            .and_then(|g| g.num_retries)
            .unwrap_or(self.num_retries)
    }

    pub fn hedge_for(&self, group: &ModelGroup) -> Option<Hedge> {
        self.groups.get(group).and_then(|g| g.hedge)
    }
}

fn parse_strategy(s: &str, path: &str) -> Result<RoutingStrategy, ConfigError> {
    RoutingStrategy::parse(s).ok_or_else(|| {
        ConfigError::at(
            path,
            format!(
                "unknown routing strategy {s:?} (expected simple-shuffle, least-busy, latency-based-routing, \
                 usage-based-routing-v2 or cost-based-routing)"
            ),
        )
    })
}

fn fallbacks(
    lists: &[BTreeMap<String, Vec<String>>],
    default: &[String],
    path: &str,
    groups: &HashSet<&str>,
) -> Result<Fallbacks, ConfigError> {
    let check = |g: &str, at: String| {
        if groups.contains(g) {
            Ok(ModelGroup::new(g))
        } else {
            Err(ConfigError::at(at, format!("unknown model group {g:?}")))
        }
    };
    let mut by_group = HashMap::new();
    for (i, map) in lists.iter().enumerate() {
        for (from, targets) in map {
            if from != "*" {
                check(from, format!("{path}[{i}].{from}"))?;
            }
            let targets = targets
                .iter()
                .enumerate()
                .map(|(j, t)| check(t, format!("{path}[{i}].{from}[{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            by_group.insert(from.clone(), targets);
        }
    }
    let default = default
        .iter()
        .enumerate()
        .map(|(j, t)| check(t, format!("router_settings.default_fallbacks[{j}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Fallbacks { by_group, default })
}

fn choose<'a, T>(router: &'a [T], litellm: &'a [T]) -> (&'a [T], &'static str) {
    if router.is_empty() && !litellm.is_empty() {
        (litellm, "litellm_settings")
    } else {
        (router, "router_settings")
    }
}

pub(super) fn validate(
    r: raw::RawRouterSettings,
    l: &raw::RawLitellmSettings,
    groups: &HashSet<&str>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<RouterSettings, ConfigError> {
    let strategy = match &r.routing_strategy {
        Some(s) => parse_strategy(s, "router_settings.routing_strategy")?,
        None => RoutingStrategy::SimpleShuffle,
    };
    let redis = redis_url(&r, lookup)?;
    let mut group_settings = HashMap::new();
    for (name, g) in &r.model_group_settings {
        let at = format!("router_settings.model_group_settings.{name}");
        if !groups.contains(name.as_str()) {
            return Err(ConfigError::at(at, format!("unknown model group {name:?}")));
        }
        let hedge = match &g.hedge_after_ms {
            None => None,
            Some(serde_json::Value::String(s)) if s == "p95" => Some(Hedge::P95),
            Some(serde_json::Value::Number(n)) if n.as_f64().is_some_and(|v| v > 0.0) => Some(Hedge::After(
                Duration::from_secs_f64(n.as_f64().unwrap_or(0.0) / 1000.0),
            )),
            Some(other) => {
                return Err(ConfigError::at(
                    format!("{at}.hedge_after_ms"),
                    format!("expected a positive number of milliseconds or \"p95\", got {other}"),
                ));
            }
        };
        let settings = GroupSettings {
            strategy: g
                .routing_strategy
                .as_deref()
                .map(|s| parse_strategy(s, &format!("{at}.routing_strategy")))
                .transpose()?,
            num_retries: g.num_retries,
            hedge,
        };
        group_settings.insert(ModelGroup::new(name.as_str()), settings);
    }
    let buffer = r.routing_strategy_args.lowest_latency_buffer.unwrap_or(0.0);
    if !(buffer.is_finite() && buffer >= 0.0) {
        return Err(ConfigError::at(
            "router_settings.routing_strategy_args.lowest_latency_buffer",
            "must be a number >= 0",
        ));
    }
    let secs = |v: Option<f64>, name: &str| {
        v.map(|t| seconds(t, &format!("router_settings.{name}")))
            .transpose()
    };
    let (fb, fb_at) = choose(&r.fallbacks, &l.fallbacks);
    let (cw, cw_at) = choose(&r.context_window_fallbacks, &l.context_window_fallbacks);
    let (cp, cp_at) = choose(&r.content_policy_fallbacks, &l.content_policy_fallbacks);
    Ok(RouterSettings {
        trace_content: None,
        strategy,
        lowest_latency_buffer: buffer,
        groups: group_settings,
        num_retries: r.num_retries.or(l.num_retries).unwrap_or(2),
        retry_policy: ClassPolicy::parse(&r.retry_policy, "Retries", "router_settings.retry_policy")?,
        allowed_fails: r.allowed_fails,
        allowed_fails_policy: ClassPolicy::parse(
            &r.allowed_fails_policy,
            "AllowedFails",
            "router_settings.allowed_fails_policy",
        )?,
        cooldown_time: secs(r.cooldown_time, "cooldown_time")?.unwrap_or(Duration::from_secs(5)),
        disable_cooldowns: r.disable_cooldowns.unwrap_or(false),
        timeout: match r.timeout.or(l.request_timeout) {
            Some(t) => seconds(t, "router_settings.timeout")?,
            None => Duration::from_secs(600),
        },
        stream_timeout: secs(r.stream_timeout, "stream_timeout")?,
        stream_idle_timeout: secs(r.stream_idle_timeout, "stream_idle_timeout")?,
        max_stream_duration: secs(r.max_stream_duration, "max_stream_duration")?,
        fallbacks: fallbacks(fb, &r.default_fallbacks, &format!("{fb_at}.fallbacks"), groups)?,
        context_window_fallbacks: fallbacks(cw, &[], &format!("{cw_at}.context_window_fallbacks"), groups)?,
        content_policy_fallbacks: fallbacks(cp, &[], &format!("{cp_at}.content_policy_fallbacks"), groups)?,
        max_fallbacks: r.max_fallbacks.unwrap_or(5),
        max_queue: r.max_queue.unwrap_or(1000),
        redis,
    })
}

/// Where a Redis is, from the ways a config can say it: a URL (several, comma-separated, for a
/// cluster), LiteLLM's host/port/password, or LiteLLM's cluster `redis_startup_nodes`; `at` names
/// the block for errors.
pub(super) struct RedisFields<'a> {
    pub at: &'a str,
    pub url: Option<&'a str>,
    pub host: Option<&'a str>,
    pub port: Option<u16>,
    pub password: Option<&'a str>,
    pub startup_nodes: Option<&'a [raw::RawRedisNode]>,
}

pub(super) fn redis_address(f: RedisFields<'_>) -> Result<Option<RedisAddress>, ConfigError> {
    let auth = f.password.map(|p| format!(":{p}@")).unwrap_or_default();
    let (spec, cluster) = match (f.url, f.startup_nodes, f.host) {
        (Some(url), _, _) => (url.to_string(), false),
        (None, Some(nodes), _) => {
            if nodes.is_empty() {
                return Err(ConfigError::at(
                    format!("{}.redis_startup_nodes", f.at),
                    "lists no node",
                ));
            }
            let urls: Vec<String> = nodes
                .iter()
                .map(|n| format!("redis://{auth}{}:{}", n.host, n.port))
                .collect();
            (urls.join(","), true)
        }
        (None, None, Some(host)) => (format!("redis://{auth}{host}:{}", f.port.unwrap_or(6379)), false),
        (None, None, None) => return Ok(None),
    };
    let urls: Vec<&str> = spec.split(',').map(str::trim).collect();
    for u in &urls {
        let scheme_ok = u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("unix://");
        if !scheme_ok {
            return Err(ConfigError::at(
                format!("{}.redis_url", f.at),
                "must be a redis://, rediss:// or unix:// URL (several, comma-separated, for a cluster)",
            ));
        }
        if urls.len() > 1 && u.starts_with("unix://") {
            return Err(ConfigError::at(
                format!("{}.redis_url", f.at),
                "a Redis Cluster is reached over TCP: unix:// cannot be a cluster node",
            ));
        }
    }
    let cluster = cluster || urls.len() > 1;
    Ok(Some(RedisAddress {
        url: crate::domain::Secret::new(spec),
        cluster,
    }))
}

/// `redis_url`, else LiteLLM's `redis_host`/`redis_port`/`redis_password` or
/// `redis_startup_nodes`, else `SWITCHBOARD_REDIS_URL` (and `SWITCHBOARD_REDIS_CLUSTER`).
fn redis_url(
    r: &raw::RawRouterSettings,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<RedisAddress>, ConfigError> {
    let from_env = lookup("SWITCHBOARD_REDIS_URL");
    let configured = r.redis_url.is_some() || r.redis_host.is_some() || r.redis_startup_nodes.is_some();
    let address = redis_address(RedisFields {
        at: "router_settings",
        url: r
            .redis_url
            .as_deref()
            .or(from_env.as_deref().filter(|_| !configured)),
        host: r.redis_host.as_deref(),
        port: r.redis_port,
        password: r.redis_password.as_deref(),
        startup_nodes: r.redis_startup_nodes.as_deref(),
    })?;
    let forced = match r.redis_cluster {
        Some(c) => c,
        None => {
            lookup("SWITCHBOARD_REDIS_CLUSTER").is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes"))
        }
    };
    Ok(address.map(|a| RedisAddress {
        cluster: a.cluster || forced,
        ..a
    }))
}
