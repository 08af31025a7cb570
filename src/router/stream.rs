//! A stream that has passed its first chunk: forwards the rest under an inter-chunk idle timeout,
//! the caller's deadline and the maximum stream duration, and books the outcome when it ends.
//! Dropping it (a cancelled caller) drops the upstream response, which closes the upstream request.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use super::{Deployment, DeploymentState, Lease, Outcome, RouteError, RouteInfo, RoutingTable, health};
use crate::{
    domain::{ChatChunk, ErrorClass, Usage},
    providers::{ChunkStream, ProviderError},
};

pub(super) struct Limits {
    /// Longest silence between two chunks.
    pub idle: Duration,
    /// The caller's deadline.
    pub deadline: Option<Instant>,
    /// `max_stream_duration`.
    pub end: Option<Instant>,
}

impl Limits {
    fn next_timeout(&self) -> Instant {
        let idle = Instant::now() + self.idle;
        [self.deadline, self.end]
            .into_iter()
            .flatten()
            .fold(idle, Instant::min)
    }
}

pub struct RoutedStream {
    first: Option<ChatChunk>,
    inner: ChunkStream,
    route: RouteInfo,
    limits: Limits,
    timer: Pin<Box<Sleep>>,
    started: Instant,
    state: Arc<dyn DeploymentState>,
    lease: Option<Lease>,
    /// Prompt tokens counted at admission, corrected when the usage chunk arrives.
    estimated_tokens: u64,
    /// The upstream's usage report, when one arrived.
    usage: Option<Usage>,
    /// Characters of answer text and tool-call arguments seen, for an estimate when no usage arrives.
    output_chars: u64,
    done: bool,
    /// Where it comes from: whose credentials to mask in error text, and what to cool down when
    /// the stream breaks.
    origin: Option<(Arc<Deployment>, Arc<RoutingTable>)>,
}

impl RoutedStream {
    pub(super) fn new(
        first: ChatChunk,
        inner: ChunkStream,
        route: RouteInfo,
        limits: Limits,
        lease: Lease,
        state: Arc<dyn DeploymentState>,
        estimated_tokens: u64,
    ) -> Self {
        let timer = Box::pin(tokio::time::sleep_until(limits.next_timeout()));
        let mut s = Self {
            first: None,
            inner,
            route,
            limits,
            timer,
            started: Instant::now(),
            state,
            lease: Some(lease),
            estimated_tokens,
            usage: None,
            output_chars: 0,
            done: false,
            origin: None,
        };
        s.observe(&first);
        s.first = Some(first);
        s
    }

    /// The deployment it comes from (under this routing table): its credentials are masked in
    /// the text of a mid-stream error, and it cools down when the stream breaks.
    pub(super) fn served_by(mut self, deployment: Arc<Deployment>, table: Arc<RoutingTable>) -> Self {
        self.origin = Some((deployment, table));
        self
    }

    pub fn route(&self) -> &RouteInfo {
        &self.route
    }

    /// What the stream consumed so far: the upstream's report, or (for upstreams that send none, and
    /// for streams cut short) an estimate of about four characters per token, never zero.
    pub fn usage(&self) -> Usage {
        self.usage.unwrap_or_else(|| {
            let prompt = u32::try_from(self.estimated_tokens).unwrap_or(u32::MAX);
            let completion = u32::try_from(self.output_chars.div_ceil(4)).unwrap_or(u32::MAX);
            Usage::new(prompt, completion.max(1))
        })
    }

    fn observe(&mut self, chunk: &ChatChunk) {
        for c in &chunk.choices {
            self.output_chars += c.delta.content.as_deref().map_or(0, |t| t.chars().count() as u64);
            for t in &c.delta.tool_calls {
                self.output_chars += t.arguments.as_ref().map_or(0, |a| a.len() as u64);
            }
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(*u);
            let actual = i64::from(u.total_tokens);
            self.state
                .adjust_tokens(&self.route.deployment, actual - self.estimated_tokens as i64);
        }
    }

    /// Books a stream that ended in an error; `upstream_at_fault` when the upstream broke it (an
    /// error, a cut, silence), not the caller's deadline or `max_stream_duration`.
    fn fail(&mut self, class: ErrorClass, upstream_at_fault: bool) {
        self.done = true;
        self.lease = None;
        let latency = self.started.elapsed();
        let counts = self
            .state
            .record(&self.route.deployment, Outcome::Failure { class, latency });
        if let (true, Some((d, table))) = (upstream_at_fault, &self.origin) {
            let group_size = table.groups.get(&d.group).map_or(1, |g| g.deployments.len());
            if health::should_cool_down_after_break(class, counts, group_size, &table.settings) {
                self.state.cool_down(&d.id, d.cooldown_time);
                metrics::counter!("switchboard_deployment_cooldowns_total", "deployment" => d.id.to_string())
                    .increment(1);
                tracing::warn!(
                    deployment = %d.id,
                    error = ?class,
                    cooldown_ms = d.cooldown_time.as_millis() as u64,
                    "deployment cooling down: a stream broke after its first chunk"
                );
            }
        }
    }
}

impl Stream for RoutedStream {
    type Item = Result<ChatChunk, RouteError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.observe(&chunk);
                let at = this.limits.next_timeout();
                this.timer.as_mut().reset(at);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(mut e))) => {
                if let Some((d, _)) = &this.origin {
                    crate::domain::redact(&mut e.message, &d.secrets);
                }
                this.fail(e.class, true);
                Poll::Ready(Some(Err(RouteError::StreamInterrupted(e))))
            }
            Poll::Ready(None) => {
                // Success was booked at the first chunk (time to first token).
                this.done = true;
                this.lease = None;
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    let now = Instant::now();
                    let idle = !(this.limits.deadline.is_some_and(|d| d <= now)
                        || this.limits.end.is_some_and(|e| e <= now));
                    let err = if this.limits.deadline.is_some_and(|d| d <= now) {
                        RouteError::DeadlineExceeded {
                            attempts: this.route.attempts.clone(),
                        }
                    } else if this.limits.end.is_some_and(|e| e <= now) {
                        RouteError::StreamInterrupted(ProviderError::new(
                            ErrorClass::Timeout,
                            "stream exceeded max_stream_duration",
                        ))
                    } else {
                        RouteError::StreamInterrupted(ProviderError::new(
                            ErrorClass::Timeout,
                            format!("no chunk for {} ms", this.limits.idle.as_millis()),
                        ))
                    };
                    this.fail(ErrorClass::Timeout, idle);
                    Poll::Ready(Some(Err(err)))
                }
            },
        }
    }
}
