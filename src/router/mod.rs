//! Routing: resolve a model group, pick a deployment (strategy, health, tags, tiers, capacity,
//! usage caps), call it under a deadline, fail over across deployments and fallback groups, cool
//! failing deployments down, and report what happened.
//!
//! Providers are seen only through [`Provider`](crate::providers::Provider) and shared state only
//! through [`DeploymentState`], so the Redis-backed fleet state plugs in without touching the rules.

mod fit;
mod fleet;
mod health;
mod pick;
mod run;
mod state;
mod stream;
mod table;

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::{
    domain::{
        ChatRequest, ChatResponse, Cost, DeploymentId, EmbedRequest, EmbedResponse, ErrorClass, ModelGroup,
        Price, Usage,
    },
    providers::ProviderError,
};
pub use fleet::FleetState;
pub use run::Lease;
use run::{Answer, Call, Ctx, Done, GroupError, GroupRun};
pub use state::{
    DeploymentState, DeploymentView, Health, InFlight, LocalState, MinuteCounts, Outcome, ReplicaInfo,
};
pub use stream::RoutedStream;
pub use table::{Deployment, Group, RoutingTable};

/// Prompt tokens of a chat request before the provider counts them (about four characters per
/// token plus per-message overhead): what budgets and token limits reserve.
pub fn estimate_prompt_tokens(messages: &[crate::domain::Message]) -> u64 {
    fit::Prompt::estimate_messages(messages)
}

/// One upstream attempt, for the caller's `route` and for error messages.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub deployment: DeploymentId,
    /// `None` for the attempt that answered (or one cancelled by a hedge).
    pub error: Option<ErrorClass>,
    pub duration: Duration,
    /// Started while an earlier attempt was still running.
    pub hedged: bool,
    /// Cancelled because a concurrent attempt answered first.
    pub cancelled: bool,
}

/// What the router did to serve a request.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// The group that answered (the requested one, or a fallback).
    pub group: ModelGroup,
    pub deployment: DeploymentId,
    pub provider: &'static str,
    pub upstream_model: String,
    pub attempts: Vec<AttemptRecord>,
    /// Fallback groups entered, in order.
    pub fallbacks: Vec<ModelGroup>,
    /// The answering deployment's price (`None`: unknown, costed at $0).
    pub price: Option<Price>,
    /// The answer came from the response cache (no attempt was made).
    pub cache_hit: bool,
}

impl RouteInfo {
    /// What the answer cost.
    pub fn cost(&self, usage: &Usage) -> Cost {
        self.price.map_or(Cost::ZERO, |p| p.cost(usage))
    }
}

impl RouteError {
    /// A short name for spans (`error.type` of the routing span).
    pub fn kind(&self) -> &'static str {
        match self {
            RouteError::UnknownGroup(_) => "unknown_group",
            RouteError::UnknownFallback(_) => "unknown_fallback",
            RouteError::NoDeploymentForTags { .. } => "no_deployment_for_tags",
            RouteError::Rejected { .. } => "rejected",
            RouteError::Exhausted { .. } => "exhausted",
            RouteError::AllCoolingDown { .. } => "all_cooling_down",
            RouteError::RateCapped { .. } => "rate_capped",
            RouteError::AtCapacity { .. } => "at_capacity",
            RouteError::DeadlineExceeded { .. } => "deadline_exceeded",
            RouteError::StreamInterrupted(_) => "stream_interrupted",
        }
    }
}

/// A routed answer with its route.
#[derive(Debug)]
pub struct Routed<T> {
    pub value: T,
    pub route: RouteInfo,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("model group {0:?} does not exist")]
    UnknownGroup(ModelGroup),
    #[error("fallback model group {0:?} does not exist")]
    UnknownFallback(ModelGroup),
    #[error("no deployment of {group:?} carries any of the tags {tags:?}")]
    NoDeploymentForTags { group: ModelGroup, tags: Vec<String> },
    /// The upstream refused the request itself (bad request, context window, content policy):
    /// another deployment would refuse it too.
    #[error("upstream rejected the request: {error}")]
    Rejected {
        error: ProviderError,
        attempts: Vec<AttemptRecord>,
    },
    /// Every attempt failed with a deployment fault.
    #[error("all {} attempts failed; last: {last}", attempts.len())]
    Exhausted {
        last: ProviderError,
        attempts: Vec<AttemptRecord>,
    },
    /// Every deployment is cooling down; the first returns in `retry_in`.
    #[error("every deployment is cooling down")]
    AllCoolingDown {
        retry_in: Duration,
        attempts: Vec<AttemptRecord>,
    },
    /// Every deployment is at its `rpm`/`tpm` for this minute.
    #[error("every deployment is at its rpm/tpm limit")]
    RateCapped { attempts: Vec<AttemptRecord> },
    /// Every deployment is at `max_parallel_requests` and the queue is full or the wait expired.
    #[error("every deployment is at max_parallel_requests")]
    AtCapacity { attempts: Vec<AttemptRecord> },
    #[error("deadline exceeded after {} attempts", attempts.len())]
    DeadlineExceeded { attempts: Vec<AttemptRecord> },
    /// A stream failed after its first chunk had been forwarded; it cannot fail over any more.
    #[error("stream interrupted: {0}")]
    StreamInterrupted(ProviderError),
}

pub struct Router {
    table: ArcSwap<RoutingTable>,
    state: Arc<dyn DeploymentState>,
}

impl Router {
    pub fn new(table: RoutingTable, state: Arc<dyn DeploymentState>) -> Self {
        Self {
            table: ArcSwap::from_pointee(table),
            state,
        }
    }

    /// The current table. Requests keep the table they started with, even across a swap.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Replaces the routing table atomically (config reload).
    pub fn swap(&self, table: RoutingTable) {
        self.table.store(Arc::new(table));
    }

    pub fn state(&self) -> &Arc<dyn DeploymentState> {
        &self.state
    }

    /// One routing decision without I/O (the group's state snapshot and a pick among all of its
    /// deployments), for the criterion benchmarks in `benches/`. Not part of the API.
    #[doc(hidden)]
    pub fn bench_pick(&self, group: &ModelGroup, stream: bool) -> Option<DeploymentId> {
        let table = self.table();
        let g = table.groups.get(group)?;
        let mut views = Vec::with_capacity(g.ids.len());
        self.state.views(&g.ids, &mut views);
        let eligible: Vec<usize> = (0..g.deployments.len()).collect();
        let pick = pick::Pick {
            strategy: g.strategy,
            deployments: &g.deployments,
            views: &views,
            stream,
            lowest_latency_buffer: table.settings.lowest_latency_buffer,
        };
        pick.choose(&eligible).map(|i| g.deployments[i].id.clone())
    }

    pub async fn chat(
        &self,
        req: &ChatRequest,
        deadline: Option<Instant>,
    ) -> Result<Routed<ChatResponse>, RouteError> {
        let prompt = fit::Prompt::chat(req);
        let ctx = Ctx {
            routing: &req.routing,
            deadline,
            tokens: prompt.estimate(),
            prompt,
        };
        let (done, route) = self.route(&req.model, &ctx, Call::Chat(req)).await?;
        let Answer::Chat(value) = done.answer else {
            unreachable!("a chat call answers with a chat response")
        };
        self.correct_tokens(&done.deployment, ctx.tokens, u64::from(value.usage.total_tokens));
        Ok(Routed { value, route })
    }

    pub async fn embed(
        &self,
        req: &EmbedRequest,
        deadline: Option<Instant>,
    ) -> Result<Routed<EmbedResponse>, RouteError> {
        let ctx = Ctx {
            routing: &req.routing,
            deadline,
            tokens: req.estimated_prompt_tokens(),
            prompt: fit::Prompt::unchecked(),
        };
        let (done, route) = self.route(&req.model, &ctx, Call::Embed(req)).await?;
        let Answer::Embed(value) = done.answer else {
            unreachable!("an embed call answers with embeddings")
        };
        self.correct_tokens(&done.deployment, ctx.tokens, u64::from(value.usage.total_tokens));
        Ok(Routed { value, route })
    }

    /// Opens a stream, failing over until one deployment has produced its first chunk.
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        deadline: Option<Instant>,
    ) -> Result<RoutedStream, RouteError> {
        let prompt = fit::Prompt::chat(req);
        let ctx = Ctx {
            routing: &req.routing,
            deadline,
            tokens: prompt.estimate(),
            prompt,
        };
        let (done, route) = self.route(&req.model, &ctx, Call::Stream(req)).await?;
        let max_duration = self.table().settings.max_stream_duration;
        let Answer::Stream(first, rest) = done.answer else {
            unreachable!("a stream call answers with a stream")
        };
        let limits = stream::Limits {
            idle: done.deployment.idle_timeout,
            deadline,
            end: max_duration.map(|d| Instant::now() + d),
        };
        Ok(RoutedStream::new(
            first,
            rest,
            route,
            limits,
            done.lease,
            self.state.clone(),
            ctx.tokens,
        )
        .served_by(done.deployment.clone(), self.table()))
    }

    fn correct_tokens(&self, d: &Deployment, estimated: u64, actual: u64) {
        if actual > 0 {
            self.state.adjust_tokens(&d.id, actual as i64 - estimated as i64);
        }
    }

    /// The requested group, then its fallback groups, each with its own attempts.
    /// The routing decision as a span (the attempts are its children).
    async fn route(
        &self,
        group: &ModelGroup,
        ctx: &Ctx<'_>,
        call: Call<'_>,
    ) -> Result<(Done, RouteInfo), RouteError> {
        use tracing::Instrument as _;
        let span = tracing::info_span!(
            "route",
            otel.name = %format_args!("route {group}"),
            switchboard.model_group = group.as_str(),
            switchboard.deployment.id = tracing::field::Empty,
            switchboard.attempts = tracing::field::Empty,
            switchboard.fallbacks = tracing::field::Empty,
            switchboard.cooldown_triggered = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let result = self.route_inner(group, ctx, call).instrument(span.clone()).await;
        match &result {
            Ok((_, r)) => {
                span.record("switchboard.deployment.id", r.deployment.as_str());
                span.record("switchboard.attempts", r.attempts.len() as u64);
                if !r.fallbacks.is_empty() {
                    let list: Vec<&str> = r.fallbacks.iter().map(|g| g.as_str()).collect();
                    span.record("switchboard.fallbacks", list.join(",").as_str());
                }
            }
            Err(e) => {
                span.record("error.type", e.kind());
            }
        }
        result
    }

    async fn route_inner(
        &self,
        group: &ModelGroup,
        ctx: &Ctx<'_>,
        call: Call<'_>,
    ) -> Result<(Done, RouteInfo), RouteError> {
        let table = self.table();
        let primary = table
            .groups
            .get(group)
            .ok_or_else(|| RouteError::UnknownGroup(group.clone()))?;
        if let Some(unknown) = ctx
            .routing
            .fallbacks
            .iter()
            .find(|g| !table.groups.contains_key(*g))
        {
            return Err(RouteError::UnknownFallback(unknown.clone()));
        }
        let mut attempts = Vec::new();
        let mut taken = Vec::new();
        let mut run = GroupRun {
            table: &table,
            group: primary,
            state: &*self.state,
            ctx,
            attempts: &mut attempts,
        };
        let mut error = match run.run(&call).await {
            Ok(done) => return Ok(finish(done, &[], attempts)),
            Err(e) => e,
        };
        let s = &table.settings;
        let list: &[ModelGroup] = match &error {
            _ if ctx.routing.disable_fallbacks => &[],
            GroupError::Rejected(e) => match e.class {
                ErrorClass::ContextWindowExceeded => s.context_window_fallbacks.for_group(group),
                ErrorClass::ContentPolicy => s.content_policy_fallbacks.for_group(group),
                _ => &[],
            },
            GroupError::Deadline | GroupError::NoTags => &[],
            _ if !ctx.routing.fallbacks.is_empty() => &ctx.routing.fallbacks,
            _ => s.fallbacks.for_group(group),
        };
        for fallback in list.iter().filter(|g| *g != group).take(s.max_fallbacks as usize) {
            if ctx.deadline.is_some_and(|d| d <= Instant::now()) {
                break;
            }
            let Some(g) = table.groups.get(fallback) else {
                continue;
            };
            taken.push(fallback.clone());
            tracing::info!(from = %group, to = %fallback, "falling back to another model group");
            let mut run = GroupRun {
                table: &table,
                group: g,
                state: &*self.state,
                ctx,
                attempts: &mut attempts,
            };
            match run.run(&call).await {
                Ok(done) => return Ok(finish(done, &taken, attempts)),
                Err(e) => error = e,
            }
        }
        Err(match error {
            GroupError::Rejected(error) => RouteError::Rejected { error, attempts },
            GroupError::Exhausted(last) => RouteError::Exhausted { last, attempts },
            GroupError::CoolingDown(retry_in) => RouteError::AllCoolingDown { retry_in, attempts },
            GroupError::RateCapped => RouteError::RateCapped { attempts },
            GroupError::AtCapacity => RouteError::AtCapacity { attempts },
            GroupError::Deadline => RouteError::DeadlineExceeded { attempts },
            GroupError::NoTags => RouteError::NoDeploymentForTags {
                group: group.clone(),
                tags: ctx.routing.tags.clone(),
            },
        })
    }
}

fn finish(done: Done, fallbacks: &[ModelGroup], attempts: Vec<AttemptRecord>) -> (Done, RouteInfo) {
    let d = &done.deployment;
    let route = RouteInfo {
        group: d.group.clone(),
        deployment: d.id.clone(),
        provider: d.provider.name(),
        upstream_model: d.provider.upstream_model().to_string(),
        attempts,
        fallbacks: fallbacks.to_vec(),
        price: d.price,
        cache_hit: false,
    };
    (done, route)
}
