//! The attempt loop inside one model group: select a deployment (health, tags, tier, capacity,
//! usage caps, strategy), call it under its share of the deadline, settle the outcome (statistics,
//! cooldowns, half-open probes), optionally hedge, and decide whether to go on.

use std::{pin::pin, sync::Arc, time::Duration};

use futures_util::StreamExt;
use tokio::{
    sync::{Notify, OwnedSemaphorePermit},
    time::Instant,
};
use tracing::{Instrument as _, field::Empty};

use super::{
    AttemptRecord, Deployment, Group, RoutingTable,
    health::{cooldown_for, should_cool_down},
    pick::Pick,
    state::{DeploymentState, DeploymentView, Health, InFlight, Outcome},
};
use crate::{
    config::Hedge,
    domain::{ChatChunk, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, ErrorClass, RoutingOptions},
    providers::{ChunkStream, ProviderError},
};

/// Backoff before re-trying deployments that already failed: 0.5 s doubling, capped at 8 s.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(8);
/// Longest single wait for a free slot before selection is re-run (bounds any missed wake-up).
const SLOT_POLL: Duration = Duration::from_millis(50);

pub(super) enum Call<'a> {
    Chat(&'a ChatRequest),
    Stream(&'a ChatRequest),
    Embed(&'a EmbedRequest),
}

pub(super) enum Answer {
    Chat(ChatResponse),
    Stream(ChatChunk, ChunkStream),
    Embed(EmbedResponse),
}

/// What a request brings to every group it is routed through.
pub(super) struct Ctx<'a> {
    pub routing: &'a RoutingOptions,
    pub deadline: Option<Instant>,
    /// Prompt size estimate, counted against `tpm` at admission.
    pub tokens: u64,
    /// For the context-window check.
    pub prompt: super::fit::Prompt<'a>,
}

/// Holds an attempt's in-flight count and `max_parallel_requests` slot; dropping it frees both and
/// wakes one request queued for a slot.
pub struct Lease {
    _in_flight: InFlight,
    permit: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.permit.take().is_some() {
            self.freed.notify_one();
        }
    }
}

/// A successful attempt.
pub(super) struct Done {
    pub answer: Answer,
    pub deployment: Arc<Deployment>,
    pub lease: Lease,
}

/// Why a group produced no answer (attempts are collected separately, across groups).
pub(super) enum GroupError {
    Rejected(ProviderError),
    Exhausted(ProviderError),
    CoolingDown(Duration),
    RateCapped,
    AtCapacity,
    NoTags,
    Deadline,
}

enum Selection {
    Picked {
        index: usize,
        probe: bool,
        permit: Option<OwnedSemaphorePermit>,
    },
    /// Every eligible deployment was tried this round.
    AllTried,
    CoolingDown(Duration),
    RateCapped,
    /// Deployments are at `max_parallel_requests`: wait for a slot.
    Full,
}

pub(super) struct GroupRun<'a> {
    pub table: &'a RoutingTable,
    pub group: &'a Group,
    pub state: &'a dyn DeploymentState,
    pub ctx: &'a Ctx<'a>,
    pub attempts: &'a mut Vec<AttemptRecord>,
}

fn tag_match(deployment: &Deployment, tags: &[String], has_default: bool) -> bool {
    if tags.is_empty() {
        return !has_default || deployment.tags.iter().any(|t| t == "default");
    }
    deployment.tags.iter().any(|t| tags.contains(t))
}

/// Exponential backoff with jitter (0.5 to 1 x the step), never shorter than the provider's Retry-After.
pub(super) fn backoff(round: u32, retry_after: Option<Duration>) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << round.min(5)).min(BACKOFF_CAP);
    let jittered = exp.mul_f64(0.5 + fastrand::f64() * 0.5);
    retry_after.map_or(jittered, |r| r.max(jittered))
}

impl GroupRun<'_> {
    pub async fn run(&mut self, call: &Call<'_>) -> Result<Done, GroupError> {
        let group = self.group;
        let n = group.deployments.len();
        let stream = matches!(call, Call::Stream(_));
        let mut tags_ok: Vec<bool> = group
            .deployments
            .iter()
            .map(|d| tag_match(d, &self.ctx.routing.tags, group.has_default_tag))
            .collect();
        if !tags_ok.iter().any(|t| *t) {
            if self.ctx.routing.tags.is_empty() {
                tags_ok.fill(true); // only tagged deployments and no `default` pool: serve untagged anyway
            } else {
                return Err(GroupError::NoTags);
            }
        }
        // Deployments whose context window provably cannot hold the prompt are never called.
        let mut fits_any = false;
        for (i, d) in group.deployments.iter().enumerate() {
            if tags_ok[i] {
                tags_ok[i] = self.ctx.prompt.fits(d.counter, d.max_input_tokens).await;
                fits_any |= tags_ok[i];
            }
        }
        if !fits_any {
            return Err(GroupError::Rejected(ProviderError::new(
                ErrorClass::ContextWindowExceeded,
                format!(
                    "a prompt of about {} tokens exceeds max_input_tokens of every deployment of {}",
                    self.ctx.tokens, group.name
                ),
            )));
        }
        let mut tried = vec![false; n];
        let mut views = Vec::with_capacity(n);
        let mut made = 0u32;
        let mut last: Option<ProviderError> = None;
        let mut rounds = 0u32;
        loop {
            if let Some(e) = &last {
                let allowed =
                    self.table
                        .settings
                        .retry_policy
                        .get(e.class)
                        .unwrap_or(if e.class.is_request_fault() {
                            0
                        } else {
                            group.num_retries
                        });
                if made > allowed {
                    return Err(if e.class.is_request_fault() {
                        GroupError::Rejected(e.clone())
                    } else {
                        GroupError::Exhausted(e.clone())
                    });
                }
            }
            if self.ctx.deadline.is_some_and(|d| d <= Instant::now()) {
                return Err(GroupError::Deadline);
            }
            views.clear();
            self.state.views(&group.ids, &mut views);
            let (index, probe, permit) = match self.select(&views, &tried, &tags_ok, stream).await {
                Selection::Picked { index, probe, permit } => (index, probe, permit),
                Selection::AllTried => {
                    let Some(e) = &last else {
                        return Err(GroupError::Exhausted(no_deployment()));
                    };
                    if !e.class.is_transient() {
                        return Err(GroupError::Exhausted(e.clone()));
                    }
                    let wait = backoff(rounds, e.retry_after);
                    if self.ctx.deadline.is_some_and(|d| Instant::now() + wait >= d) {
                        // The caller's deadline ends the request: say so when it was time that ran out.
                        return Err(if e.class == ErrorClass::Timeout {
                            GroupError::Deadline
                        } else {
                            GroupError::Exhausted(e.clone())
                        });
                    }
                    tokio::time::sleep(wait).await;
                    rounds += 1;
                    tried.fill(false);
                    continue;
                }
                Selection::CoolingDown(remaining) => {
                    return Err(last.map_or(GroupError::CoolingDown(remaining), GroupError::Exhausted));
                }
                Selection::RateCapped => {
                    return Err(last.map_or(GroupError::RateCapped, GroupError::Exhausted));
                }
                Selection::Full => {
                    self.wait_for_slot().await?;
                    continue;
                }
            };
            tried[index] = true;
            made += 1;
            let attempts_left = (group.num_retries + 1).saturating_sub(made - 1);
            match self
                .attempt_hedged(call, index, probe, permit, attempts_left, &mut tried, &tags_ok)
                .await
            {
                Ok(done) => return Ok(done),
                Err(e) => {
                    if e.class.is_request_fault() && self.table.settings.retry_policy.get(e.class).is_none() {
                        return Err(GroupError::Rejected(e));
                    }
                    last = Some(e);
                }
            }
        }
    }

    async fn select(
        &self,
        views: &[DeploymentView],
        tried: &[bool],
        tags_ok: &[bool],
        stream: bool,
    ) -> Selection {
        let group = self.group;
        let mut eligible: Vec<usize> = Vec::with_capacity(group.deployments.len());
        let mut cooling: Option<Duration> = None;
        let (mut full, mut capped) = (false, false);
        for (i, d) in group.deployments.iter().enumerate() {
            if tried[i] || !tags_ok[i] {
                continue;
            }
            let v = &views[i];
            match v.health {
                Health::CoolingDown { remaining } => {
                    cooling = Some(cooling.map_or(remaining, |c| c.min(remaining)));
                    continue;
                }
                Health::HalfOpen { probing: true } => {
                    cooling = Some(cooling.map_or(d.cooldown_time, |c| c.min(d.cooldown_time)));
                    continue;
                }
                _ => {}
            }
            if d.slots.as_ref().is_some_and(|s| s.available_permits() == 0) {
                full = true;
                continue;
            }
            if d.rpm.is_some_and(|cap| v.rpm_used >= cap)
                || d.tpm.is_some_and(|cap| v.tpm_used + self.ctx.tokens > cap)
            {
                capped = true;
                continue;
            }
            eligible.push(i);
        }
        let pick = Pick {
            strategy: group.strategy,
            deployments: &group.deployments,
            views,
            stream,
            lowest_latency_buffer: self.table.settings.lowest_latency_buffer,
        };
        // Lowest `order` tier first; a higher tier serves only when the lower one cannot.
        while let Some(tier) = eligible.iter().map(|&i| group.deployments[i].order).min() {
            let mut in_tier: Vec<usize> = eligible
                .iter()
                .copied()
                .filter(|&i| group.deployments[i].order == tier)
                .collect();
            while let Some(i) = pick.choose(&in_tier) {
                let d = &group.deployments[i];
                in_tier.retain(|&j| j != i);
                eligible.retain(|&j| j != i);
                let probe = matches!(views[i].health, Health::HalfOpen { .. });
                if probe && !self.state.claim_probe(&d.id).await {
                    continue; // another request owns the probe
                }
                let permit = match &d.slots {
                    None => None,
                    Some(s) => match s.clone().try_acquire_owned() {
                        Ok(p) => Some(p),
                        Err(_) => {
                            if probe {
                                self.state.release_probe(&d.id, false);
                            }
                            full = true;
                            continue;
                        }
                    },
                };
                if !self.state.try_admit(&d.id, d.rpm, d.tpm, self.ctx.tokens).await {
                    if probe {
                        self.state.release_probe(&d.id, false);
                    }
                    capped = true;
                    continue;
                }
                return Selection::Picked {
                    index: i,
                    probe,
                    permit,
                };
            }
        }
        if full {
            Selection::Full
        } else if capped {
            Selection::RateCapped
        } else if let Some(c) = cooling {
            Selection::CoolingDown(c)
        } else {
            Selection::AllTried
        }
    }

    /// Waits in the group's bounded queue until a slot may be free, within the deadline.
    async fn wait_for_slot(&self) -> Result<(), GroupError> {
        let group = self.group;
        let queued = group.queued.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        struct Dequeue<'a>(&'a std::sync::atomic::AtomicU32);
        impl Drop for Dequeue<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
        }
        let _dequeue = Dequeue(&group.queued);
        if queued >= self.table.settings.max_queue {
            return Err(GroupError::AtCapacity);
        }
        let until = self
            .ctx
            .deadline
            .unwrap_or_else(|| Instant::now() + self.table.settings.timeout);
        let now = Instant::now();
        if now >= until {
            return Err(GroupError::AtCapacity);
        }
        let _ = tokio::time::timeout_at(until.min(now + SLOT_POLL), group.slot_freed.notified()).await;
        Ok(())
    }

    fn budget(&self, d: &Deployment, stream: bool, attempts_left: u32) -> Duration {
        let limit = if stream { d.ttft_timeout } else { d.timeout };
        match self.ctx.deadline {
            None => limit,
            Some(deadline) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                // Keep half of the remaining time for later attempts, so the last one still gets time.
                let share = if attempts_left > 1 {
                    remaining / 2
                } else {
                    remaining
                };
                limit.min(share)
            }
        }
    }

    fn lease(&self, d: &Deployment, permit: Option<OwnedSemaphorePermit>) -> Lease {
        Lease {
            _in_flight: self.state.begin(&d.id),
            permit,
            freed: self.group.slot_freed.clone(),
        }
    }

    /// One attempt, plus a hedged second one on another deployment if the group hedges and the
    /// first has not answered in time. The first answer wins; the other attempt is cancelled.
    #[allow(clippy::too_many_arguments)]
    async fn attempt_hedged(
        &mut self,
        call: &Call<'_>,
        index: usize,
        probe: bool,
        permit: Option<OwnedSemaphorePermit>,
        attempts_left: u32,
        tried: &mut [bool],
        tags_ok: &[bool],
    ) -> Result<Done, ProviderError> {
        let stream = matches!(call, Call::Stream(_));
        let d1 = self.group.deployments[index].clone();
        let lease1 = self.lease(&d1, permit);
        let started1 = Instant::now();
        let number = self.attempts.len() + 1;
        let mut first = pin!(attempt(
            &d1,
            call,
            self.budget(&d1, stream, attempts_left),
            number,
            false
        ));
        let delay = match self.group.hedge {
            Some(_) if attempts_left < 2 => None,
            Some(Hedge::After(d)) => Some(d),
            Some(Hedge::P95) => self.state.latency_p95(&self.group.ids),
            None => None,
        };
        let Some(delay) = delay else {
            let r = first.await;
            return self.settle(&d1, lease1, probe, r, started1, false);
        };
        tokio::select! {
            r = &mut first => return self.settle(&d1, lease1, probe, r, started1, false),
            _ = tokio::time::sleep(delay) => {}
        }
        let mut views = Vec::new();
        self.state.views(&self.group.ids, &mut views);
        let Selection::Picked {
            index: j,
            probe: probe2,
            permit: permit2,
        } = self.select(&views, tried, tags_ok, stream).await
        else {
            let r = first.await;
            return self.settle(&d1, lease1, probe, r, started1, false);
        };
        tried[j] = true;
        let d2 = self.group.deployments[j].clone();
        let lease2 = self.lease(&d2, permit2);
        let started2 = Instant::now();
        let mut second = pin!(attempt(
            &d2,
            call,
            self.budget(&d2, stream, attempts_left - 1),
            number + 1,
            true
        ));
        tracing::debug!(first = %d1.id, hedge = %d2.id, "hedging");
        tokio::select! {
            r = &mut first => match self.settle(&d1, lease1, probe, r, started1, false) {
                Ok(done) => {
                    self.cancelled(&d2, probe2, started2);
                    Ok(done)
                }
                Err(_) => {
                    let r = second.await;
                    self.settle(&d2, lease2, probe2, r, started2, true)
                }
            },
            r = &mut second => match self.settle(&d2, lease2, probe2, r, started2, true) {
                Ok(done) => {
                    self.cancelled(&d1, probe, started1);
                    Ok(done)
                }
                Err(_) => {
                    let r = first.await;
                    self.settle(&d1, lease1, probe, r, started1, false)
                }
            },
        }
    }

    fn cancelled(&mut self, d: &Deployment, probe: bool, started: Instant) {
        if probe {
            self.state.release_probe(&d.id, false);
        }
        self.attempts.push(AttemptRecord {
            deployment: d.id.clone(),
            error: None,
            duration: started.elapsed(),
            hedged: false,
            cancelled: true,
        });
    }

    /// Books an attempt's outcome: statistics, cooldown, probe result, attempt record.
    fn settle(
        &mut self,
        d: &Arc<Deployment>,
        lease: Lease,
        probe: bool,
        result: Result<Answer, ProviderError>,
        started: Instant,
        hedged: bool,
    ) -> Result<Done, ProviderError> {
        let duration = started.elapsed();
        let stream = matches!(result, Ok(Answer::Stream(..)));
        match result {
            Ok(answer) => {
                self.state.record(
                    &d.id,
                    Outcome::Success {
                        latency: duration,
                        stream,
                    },
                );
                if probe {
                    self.state.release_probe(&d.id, true);
                    tracing::info!(deployment = %d.id, "half-open probe succeeded; deployment is back");
                }
                self.attempts.push(AttemptRecord {
                    deployment: d.id.clone(),
                    error: None,
                    duration,
                    hedged,
                    cancelled: false,
                });
                Ok(Done {
                    answer,
                    deployment: d.clone(),
                    lease,
                })
            }
            Err(mut e) => {
                drop(lease);
                crate::domain::redact(&mut e.message, &d.secrets);
                let counts = self.state.record(
                    &d.id,
                    Outcome::Failure {
                        class: e.class,
                        latency: duration,
                    },
                );
                let n = self.group.deployments.len();
                let cool = if probe {
                    !e.class.is_request_fault() && e.class != ErrorClass::Unsupported
                } else {
                    should_cool_down(e.class, counts, n, &self.table.settings)
                };
                if cool {
                    let for_ = cooldown_for(e.class, d.cooldown_time, e.retry_after);
                    self.state.cool_down(&d.id, for_);
                    metrics::counter!("switchboard_deployment_cooldowns_total", "deployment" => d.id.to_string()).increment(1);
                    // On the routing span (the current one here).
                    tracing::Span::current().record("switchboard.cooldown_triggered", d.id.as_str());
                    tracing::warn!(deployment = %d.id, error = %e, cooldown_ms = for_.as_millis() as u64, "deployment cooling down");
                } else {
                    tracing::warn!(deployment = %d.id, error = %e, "upstream attempt failed");
                }
                if probe {
                    self.state.release_probe(&d.id, !cool);
                }
                self.attempts.push(AttemptRecord {
                    deployment: d.id.clone(),
                    error: Some(e.class),
                    duration,
                    hedged,
                    cancelled: false,
                });
                Err(e)
            }
        }
    }
}

fn no_deployment() -> ProviderError {
    ProviderError::new(ErrorClass::ServerError, "no deployment could take the request")
}

/// One upstream attempt, in a CLIENT span with the OpenTelemetry GenAI attributes, counted in metrics.
async fn attempt(
    dep: &Deployment,
    call: &Call<'_>,
    budget: Duration,
    number: usize,
    hedged: bool,
) -> Result<Answer, ProviderError> {
    let (operation, params) = match call {
        Call::Chat(r) | Call::Stream(r) => ("chat", Some(&r.params)),
        Call::Embed(_) => ("embeddings", None),
    };
    let model = dep.provider.upstream_model();
    let span = tracing::info_span!(
        "gen_ai",
        otel.name = %format_args!("{operation} {model}"),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = operation,
        gen_ai.provider.name = dep.provider.name(),
        gen_ai.request.model = model,
        gen_ai.request.max_tokens = Empty,
        gen_ai.request.temperature = Empty,
        gen_ai.request.top_p = Empty,
        gen_ai.response.model = Empty,
        gen_ai.response.id = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.usage.cache_read.input_tokens = Empty,
        gen_ai.input.messages = Empty,
        gen_ai.output.messages = Empty,
        server.address = dep.server_address.as_deref().unwrap_or_default(),
        error.type = Empty,
        switchboard.deployment.id = dep.id.as_str(),
        switchboard.attempt = number as u64,
        switchboard.hedged = hedged,
    );
    let capture = dep.capture.as_deref();
    if let (Some(c), Call::Chat(r) | Call::Stream(r)) = (capture, call) {
        let messages: Vec<serde_json::Value> = r
            .messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role.as_str(), "content": c.redact(&m.content.joined_text())}))
            .collect();
        span.record(
            "gen_ai.input.messages",
            serde_json::Value::Array(messages).to_string(),
        );
    }
    if let Some(p) = params {
        if let Some(v) = p.max_tokens {
            span.record("gen_ai.request.max_tokens", u64::from(v));
        }
        if let Some(v) = p.temperature {
            span.record("gen_ai.request.temperature", v);
        }
        if let Some(v) = p.top_p {
            span.record("gen_ai.request.top_p", v);
        }
    }
    let work = async {
        match call {
            Call::Chat(r) => dep.provider.chat(r).await.map(Answer::Chat),
            Call::Embed(r) => dep.provider.embed(r).await.map(Answer::Embed),
            Call::Stream(r) => {
                let mut s = dep.provider.chat_stream(r).await?;
                match s.next().await {
                    Some(Ok(first)) => Ok(Answer::Stream(first, s)),
                    Some(Err(e)) => Err(e),
                    None => Err(ProviderError::new(
                        ErrorClass::MalformedResponse,
                        "upstream stream ended without a chunk",
                    )),
                }
            }
        }
    };
    let started = Instant::now();
    let result = match tokio::time::timeout(budget, work).instrument(span.clone()).await {
        Ok(r) => r,
        Err(_) => Err(ProviderError::new(
            ErrorClass::Timeout,
            format!("no answer within {} ms", budget.as_millis()),
        )),
    };
    observe_attempt(&span, dep, operation, &result, started.elapsed());
    if let (Some(c), Ok(Answer::Chat(r))) = (capture, &result) {
        let choices: Vec<serde_json::Value> = r
            .choices
            .iter()
            .map(|ch| serde_json::json!({"role": "assistant", "content": c.redact(&ch.message.content.joined_text())}))
            .collect();
        span.record(
            "gen_ai.output.messages",
            serde_json::Value::Array(choices).to_string(),
        );
    }
    result
}

/// Attempt outcome onto its span and into metrics (low-cardinality labels only).
fn observe_attempt(
    span: &tracing::Span,
    dep: &Deployment,
    operation: &'static str,
    result: &Result<Answer, ProviderError>,
    took: Duration,
) {
    let provider = dep.provider.name();

    let usage = match result {
        Ok(Answer::Chat(r)) => {
            span.record("gen_ai.response.model", r.model.as_str());
            span.record("gen_ai.response.id", r.id.as_str());
            let reasons: Vec<&str> = r
                .choices
                .iter()
                .filter_map(|c| c.finish_reason.map(|f| f.as_str()))
                .collect();
            span.record("gen_ai.response.finish_reasons", reasons.join(",").as_str());
            Some(r.usage)
        }
        Ok(Answer::Embed(r)) => {
            span.record("gen_ai.response.model", r.model.as_str());
            Some(r.usage)
        }
        Ok(Answer::Stream(first, _)) => {
            span.record("gen_ai.response.model", first.model.as_str());
            span.record("gen_ai.response.id", first.id.as_str());
            None // usage arrives at the end of the stream
        }
        Err(e) => {
            span.record("error.type", e.class.as_str());
            span.record("otel.status_code", "ERROR");
            None
        }
    };
    if let Some(u) = usage {
        span.record("gen_ai.usage.input_tokens", u64::from(u.prompt_tokens));
        span.record("gen_ai.usage.output_tokens", u64::from(u.completion_tokens));
        span.record(
            "gen_ai.usage.cache_read.input_tokens",
            u64::from(u.cached_prompt_tokens),
        );
    }
    // The common case (a chat attempt that answered) uses handles registered with the table.
    if operation == "chat" && result.is_ok() {
        let m = &dep.metrics;
        m.ok.increment(1);
        m.duration_ok.record(took.as_secs_f64());
        if let Some(u) = usage {
            m.tokens_in.record(f64::from(u.prompt_tokens));
            m.tokens_out.record(f64::from(u.completion_tokens));
        }
        return;
    }
    let model = dep.provider.upstream_model().to_string();
    if let Some(u) = usage {
        for (kind, n) in [("input", u.prompt_tokens), ("output", u.completion_tokens)] {
            metrics::histogram!("gen_ai_client_token_usage", "gen_ai_token_type" => kind, "gen_ai_operation_name" => operation,
                "gen_ai_provider_name" => provider, "gen_ai_request_model" => model.clone())
            .record(f64::from(n));
        }
    }
    let outcome = result.as_ref().err().map_or("ok", |e| e.class.as_str());
    metrics::counter!("switchboard_upstream_attempts_total", "deployment" => dep.id.to_string(), "provider" => provider, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("gen_ai_client_operation_duration_seconds", "gen_ai_operation_name" => operation,
        "gen_ai_provider_name" => provider, "gen_ai_request_model" => model, "error_type" => if outcome == "ok" { "" } else { outcome })
    .record(took.as_secs_f64());
}
