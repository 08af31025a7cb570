//! Routing: resolve a model group, pick a deployment, call it under a deadline, fail over to
//! another deployment on deployment faults, and report what happened.
//!
//! Providers are seen only through [`Provider`](crate::providers::Provider) and shared state only
//! through [`DeploymentState`], so cooldowns, strategies and the Redis-backed state plug in here.

mod pick;
mod state;
mod stream;
mod table;

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::{
    domain::{
        ChatChunk, ChatRequest, ChatResponse, DeploymentId, EmbedRequest, EmbedResponse, ErrorClass,
        ModelGroup,
    },
    providers::{ChunkStream, ProviderError},
};
pub use state::{DeploymentState, DeploymentView, InFlight, LocalState, Outcome};
pub use stream::RoutedStream;
pub use table::{Deployment, Group, RoutingTable};

/// Backoff before re-trying deployments that already failed: 0.5 s doubling, capped at 8 s.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(8);

/// One upstream attempt, for the caller's `route` and for error messages.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub deployment: DeploymentId,
    /// `None` for the attempt that succeeded.
    pub error: Option<ErrorClass>,
    pub duration: Duration,
}

/// What the router did to serve a request.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub group: ModelGroup,
    pub deployment: DeploymentId,
    pub provider: &'static str,
    pub upstream_model: String,
    pub attempts: Vec<AttemptRecord>,
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
    #[error("deadline exceeded after {} attempts", attempts.len())]
    DeadlineExceeded { attempts: Vec<AttemptRecord> },
    /// A stream failed after its first chunk had been forwarded; it cannot fail over any more.
    #[error("stream interrupted: {0}")]
    StreamInterrupted(ProviderError),
}

enum Call<'a> {
    Chat(&'a ChatRequest),
    Stream(&'a ChatRequest),
    Embed(&'a EmbedRequest),
}

enum Answer {
    Chat(ChatResponse),
    Stream(ChatChunk, ChunkStream),
    Embed(EmbedResponse),
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

    pub async fn chat(
        &self,
        req: &ChatRequest,
        deadline: Option<Instant>,
    ) -> Result<Routed<ChatResponse>, RouteError> {
        let (answer, route, _guard, _) = self.run(&req.model, deadline, Call::Chat(req)).await?;
        match answer {
            Answer::Chat(value) => Ok(Routed { value, route }),
            _ => unreachable!("a chat call answers with a chat response"),
        }
    }

    pub async fn embed(
        &self,
        req: &EmbedRequest,
        deadline: Option<Instant>,
    ) -> Result<Routed<EmbedResponse>, RouteError> {
        let (answer, route, _guard, _) = self.run(&req.model, deadline, Call::Embed(req)).await?;
        match answer {
            Answer::Embed(value) => Ok(Routed { value, route }),
            _ => unreachable!("an embed call answers with embeddings"),
        }
    }

    /// Opens a stream, failing over until one deployment has produced its first chunk.
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        deadline: Option<Instant>,
    ) -> Result<RoutedStream, RouteError> {
        let (answer, route, guard, dep) = self.run(&req.model, deadline, Call::Stream(req)).await?;
        let idle = dep.stream_timeout;
        match answer {
            Answer::Stream(first, rest) => Ok(RoutedStream::new(
                first,
                rest,
                route,
                stream::Limits { idle, deadline },
                guard,
                self.state.clone(),
            )),
            _ => unreachable!("a stream call answers with a stream"),
        }
    }

    /// The attempt loop: untried deployments first (no sleep while one is left), then backoff and
    /// another round, until an answer, a request fault, the attempt limit or the deadline.
    async fn run(
        &self,
        group_name: &ModelGroup,
        deadline: Option<Instant>,
        call: Call<'_>,
    ) -> Result<(Answer, RouteInfo, InFlight, Arc<Deployment>), RouteError> {
        let table = self.table();
        let group = table
            .groups
            .get(group_name)
            .ok_or_else(|| RouteError::UnknownGroup(group_name.clone()))?;
        let max_attempts = table.settings.num_retries as usize + 1;
        let mut tried = vec![false; group.deployments.len()];
        let mut attempts: Vec<AttemptRecord> = Vec::new();
        let mut last_error: Option<ProviderError> = None;
        let mut rounds = 0u32;
        let mut views = Vec::with_capacity(group.deployments.len());

        while attempts.len() < max_attempts {
            if tried.iter().all(|t| *t) {
                // Everyone failed once: wait before trying again, if the error is worth waiting for.
                let last = last_error.as_ref().expect("a failed attempt left its error");
                if !last.class.is_transient() {
                    break;
                }
                let wait = backoff(rounds, last.retry_after);
                if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                    break;
                }
                tokio::time::sleep(wait).await;
                rounds += 1;
                tried.iter_mut().for_each(|t| *t = false);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                return Err(RouteError::DeadlineExceeded { attempts });
            }
            views.clear();
            self.state.views(&group.ids, &mut views);
            let Some(i) = pick::weighted(&group.deployments, &tried, &views) else {
                break;
            };
            tried[i] = true;
            let dep = &group.deployments[i];
            let limit = match call {
                Call::Stream(_) => dep.stream_timeout,
                _ => dep.timeout,
            };
            let budget = deadline.map_or(limit, |d| limit.min(d - now));
            let guard = self.state.begin(&dep.id);
            let started = Instant::now();
            let result = attempt(dep, &call, budget).await;
            let duration = started.elapsed();
            match result {
                Ok(answer) => {
                    self.state.record(&dep.id, Outcome::Success { latency: duration });
                    attempts.push(AttemptRecord {
                        deployment: dep.id.clone(),
                        error: None,
                        duration,
                    });
                    let route = RouteInfo {
                        group: group.name.clone(),
                        deployment: dep.id.clone(),
                        provider: dep.provider.name(),
                        upstream_model: dep.provider.upstream_model().to_string(),
                        attempts,
                    };
                    return Ok((answer, route, guard, dep.clone()));
                }
                Err(error) => {
                    drop(guard);
                    self.state
                        .record(&dep.id, Outcome::Failure { class: error.class });
                    tracing::warn!(deployment = %dep.id, error = %error, "upstream attempt failed");
                    attempts.push(AttemptRecord {
                        deployment: dep.id.clone(),
                        error: Some(error.class),
                        duration,
                    });
                    if error.class.is_request_fault() {
                        return Err(RouteError::Rejected { error, attempts });
                    }
                    last_error = Some(error);
                }
            }
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(RouteError::DeadlineExceeded { attempts });
        }
        Err(RouteError::Exhausted {
            last: last_error.expect("the loop ran at least one attempt"),
            attempts,
        })
    }
}

async fn attempt(dep: &Deployment, call: &Call<'_>, budget: Duration) -> Result<Answer, ProviderError> {
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
    match tokio::time::timeout(budget, work).await {
        Ok(r) => r,
        Err(_) => Err(ProviderError::new(
            ErrorClass::Timeout,
            format!("no answer within {} ms", budget.as_millis()),
        )),
    }
}

/// Exponential backoff with full jitter, never shorter than the provider's Retry-After.
fn backoff(round: u32, retry_after: Option<Duration>) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << round.min(5)).min(BACKOFF_CAP);
    let jittered = exp.mul_f64(0.5 + fastrand::f64() * 0.5);
    retry_after.map_or(jittered, |r| r.max(jittered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        for round in 0..10 {
            let b = backoff(round, None);
            let exp = BACKOFF_BASE.saturating_mul(1 << round.min(5)).min(BACKOFF_CAP);
            assert!(b >= exp / 2 && b <= exp, "round {round}: {b:?}");
        }
        assert!(backoff(0, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }
}
