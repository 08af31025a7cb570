//! The routing table: model groups and their deployments, built once per config and swapped whole.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::AtomicU32},
    time::Duration,
};

use tokio::sync::{Notify, Semaphore};

use crate::{
    config::{Config, DeploymentConfig, Hedge, RouterSettings, RoutingStrategy},
    domain::{DeploymentId, ModelGroup, Price},
    providers::{self, HttpClient, Provider},
};

/// One routable upstream deployment.
pub struct Deployment {
    pub id: DeploymentId,
    pub group: ModelGroup,
    pub provider: Arc<dyn Provider>,
    /// Relative probability of being picked by simple-shuffle.
    pub pick_weight: f64,
    /// Priority tier: lower first.
    pub order: u32,
    pub tags: Vec<String>,
    /// Per-attempt timeout of unary calls.
    pub timeout: Duration,
    /// Time allowed to the first chunk of a stream.
    pub ttft_timeout: Duration,
    /// Longest gap between two chunks of a stream.
    pub idle_timeout: Duration,
    pub cooldown_time: Duration,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// `max_parallel_requests` on this replica.
    pub slots: Option<Arc<Semaphore>>,
    /// What its tokens cost, when known (cost accounting, budgets, cost-based routing).
    pub price: Option<Price>,
    /// Longest answer the model can give, when known (the worst case a budget reserves).
    pub max_output_tokens: Option<u32>,
    pub max_input_tokens: Option<u32>,
    /// How prompt tokens are counted for the context-window check.
    pub counter: super::fit::Counter,
    /// Upstream host, for `server.address` on attempt spans.
    pub server_address: Option<String>,
    /// Success-path metric handles, registered once (label keys are not rebuilt per request).
    pub metrics: AttemptMetrics,
    /// Prompt and completion text on attempt spans (opt-in, redacted).
    pub capture: Option<Arc<crate::telemetry::content::ContentCapture>>,
    /// Its credentials, masked in upstream error text ([`crate::domain::redact`]).
    pub secrets: Arc<[crate::domain::Secret]>,
}

/// Metric handles of one deployment's successful attempts.
pub struct AttemptMetrics {
    pub ok: metrics::Counter,
    pub duration_ok: metrics::Histogram,
    pub tokens_in: metrics::Histogram,
    pub tokens_out: metrics::Histogram,
}

impl AttemptMetrics {
    /// Handles for chat attempts (embeddings, rarer, build their labels per call).
    fn new(id: &DeploymentId, provider: &'static str, model: &str) -> Self {
        let operation = "chat";
        let (id, model) = (id.to_string(), model.to_string());
        let tokens = |kind: &'static str| {
            metrics::histogram!("gen_ai_client_token_usage", "gen_ai_token_type" => kind, "gen_ai_operation_name" => operation,
                "gen_ai_provider_name" => provider, "gen_ai_request_model" => model.clone())
        };
        Self {
            ok: metrics::counter!("switchboard_upstream_attempts_total", "deployment" => id, "provider" => provider, "outcome" => "ok"),
            duration_ok: metrics::histogram!("gen_ai_client_operation_duration_seconds", "gen_ai_operation_name" => operation,
                "gen_ai_provider_name" => provider, "gen_ai_request_model" => model.clone(), "error_type" => ""),
            tokens_in: tokens("input"),
            tokens_out: tokens("output"),
        }
    }
}

/// Metric handles of one group's successful requests, per surface.
pub struct RequestMetrics {
    pub count_ok: metrics::Counter,
    pub duration_ok: metrics::Histogram,
}

impl RequestMetrics {
    pub fn new(surface: &'static str, group: &ModelGroup) -> Self {
        let group = group.to_string();
        Self {
            count_ok: metrics::counter!("switchboard_requests_total", "surface" => surface, "model_group" => group.clone(), "status" => "ok"),
            duration_ok: metrics::histogram!("switchboard_request_duration_seconds", "surface" => surface, "model_group" => group, "status" => "ok"),
        }
    }
}

pub struct Group {
    pub name: ModelGroup,
    pub deployments: Vec<Arc<Deployment>>,
    /// The deployments' ids in the same order, for batched state reads.
    pub ids: Vec<DeploymentId>,
    pub strategy: RoutingStrategy,
    pub hedge: Option<Hedge>,
    pub num_retries: u32,
    /// Some deployment carries the `default` tag (it serves untagged requests).
    pub has_default_tag: bool,
    /// Woken when a deployment slot frees up (requests queued on `max_parallel_requests`).
    pub slot_freed: Arc<Notify>,
    /// Requests currently queued for a slot.
    pub queued: Arc<AtomicU32>,
    /// Success-path request metrics: `[grpc, http]`.
    pub metrics: [RequestMetrics; 2],
    /// The dearest price among its deployments: what a budget reserves for a request's worst case.
    pub worst_price: Option<Price>,
    /// The longest answer any deployment can give (a budget's worst case without `max_tokens`).
    pub max_output_tokens: u32,
}

/// Reserved output when neither the request nor the price table bounds it.
const DEFAULT_MAX_OUTPUT: u32 = 4096;

pub struct RoutingTable {
    pub groups: HashMap<ModelGroup, Group>,
    pub settings: RouterSettings,
    /// `model_info.access_groups`: a name a key's `models` may list -> the groups it covers.
    pub access_groups: HashMap<String, Vec<ModelGroup>>,
}

impl RoutingTable {
    pub fn build(config: &Config, http: &HttpClient) -> RoutingTable {
        let mut order: Vec<ModelGroup> = Vec::new();
        let mut members: HashMap<ModelGroup, Vec<&DeploymentConfig>> = HashMap::new();
        for d in &config.deployments {
            members
                .entry(d.group.clone())
                .or_insert_with(|| {
                    order.push(d.group.clone());
                    Vec::new()
                })
                .push(d);
        }
        let s = &config.router;
        let groups = order
            .into_iter()
            .map(|name| {
                let deps = &members[&name];
                let weights = pick_weights(deps);
                let deployments: Vec<Arc<Deployment>> = deps
                    .iter()
                    .zip(weights)
                    .map(|(d, w)| Arc::new(deployment(d, w, s, http)))
                    .collect();
                let group = Group {
                    worst_price: deployments.iter().filter_map(|d| d.price).reduce(Price::max),
                    max_output_tokens: deployments
                        .iter()
                        .filter_map(|d| d.max_output_tokens)
                        .max()
                        .unwrap_or(DEFAULT_MAX_OUTPUT),
                    ids: deployments.iter().map(|d| d.id.clone()).collect(),
                    has_default_tag: deployments.iter().any(|d| d.tags.iter().any(|t| t == "default")),
                    deployments,
                    strategy: s.strategy_for(&name),
                    hedge: s.hedge_for(&name),
                    num_retries: s.num_retries_for(&name),
                    slot_freed: Arc::new(Notify::new()),
                    queued: Arc::default(),
                    metrics: [
                        RequestMetrics::new("grpc", &name),
                        RequestMetrics::new("http", &name),
                    ],
                    name: name.clone(),
                };
                (name, group)
            })
            .collect();
        RoutingTable {
            groups,
            settings: s.clone(),
            access_groups: config.access_groups.clone(),
        }
    }
}

fn deployment(d: &DeploymentConfig, pick_weight: f64, s: &RouterSettings, http: &HttpClient) -> Deployment {
    let provider = providers::build(d, http);
    let timeout = d.timeout.unwrap_or(s.timeout);
    let ttft_timeout = d.stream_timeout.or(s.stream_timeout).unwrap_or(timeout);
    Deployment {
        id: d.id.clone(),
        group: d.group.clone(),
        provider: provider.clone(),
        pick_weight,
        order: d.order,
        tags: d.tags.clone(),
        timeout,
        ttft_timeout,
        idle_timeout: s.stream_idle_timeout.unwrap_or(ttft_timeout),
        cooldown_time: d.cooldown_time.unwrap_or(s.cooldown_time),
        rpm: d.rpm,
        tpm: d.tpm,
        slots: d
            .max_parallel_requests
            .map(|n| Arc::new(Semaphore::new(n as usize))),
        price: d.price,
        max_output_tokens: d.max_output_tokens,
        max_input_tokens: d.max_input_tokens,
        counter: super::fit::Counter::for_model(&d.model),
        server_address: provider.server_address().map(str::to_string),
        metrics: AttemptMetrics::new(&d.id, provider.name(), provider.upstream_model()),
        capture: s
            .trace_content
            .as_ref()
            .map(|terms| Arc::new(crate::telemetry::content::ContentCapture::new(terms.clone()))),
        secrets: [
            &d.api_key,
            &d.aws.secret_access_key,
            &d.aws.session_token,
            &d.vertex.credentials,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect(),
    }
}

/// LiteLLM's simple-shuffle weights: `weight` if any deployment of the group sets it, else `rpm`,
/// else `tpm`, else uniform. A deployment missing the chosen field gets the group's mean, so that
/// one unset field neither starves nor floods it.
fn pick_weights(deps: &[&DeploymentConfig]) -> Vec<f64> {
    let fields: [fn(&DeploymentConfig) -> Option<f64>; 3] = [
        |d| d.weight,
        |d| d.rpm.map(|v| v as f64),
        |d| d.tpm.map(|v| v as f64),
    ];
    for field in fields {
        let present: Vec<f64> = deps
            .iter()
            .filter_map(|d| field(d))
            .filter(|w| *w > 0.0)
            .collect();
        if !present.is_empty() {
            let mean = present.iter().sum::<f64>() / present.len() as f64;
            return deps
                .iter()
                .map(|d| field(d).filter(|w| *w > 0.0).unwrap_or(mean))
                .collect();
        }
    }
    vec![1.0; deps.len()]
}
