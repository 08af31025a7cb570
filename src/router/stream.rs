//! A stream that has passed its first chunk: forwards the rest under an inter-chunk idle timeout
//! and the caller's deadline, and records the outcome when it ends. Dropping it (a cancelled
//! caller) drops the upstream response, which closes the upstream request.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use super::{DeploymentState, InFlight, Outcome, RouteError, RouteInfo};
use crate::{
    domain::{ChatChunk, ErrorClass},
    providers::{ChunkStream, ProviderError},
};

pub(super) struct Limits {
    /// Longest silence between two chunks.
    pub idle: Duration,
    /// The caller's deadline caps the whole stream.
    pub deadline: Option<Instant>,
}

pub struct RoutedStream {
    first: Option<ChatChunk>,
    inner: ChunkStream,
    route: RouteInfo,
    limits: Limits,
    timer: Pin<Box<Sleep>>,
    started: Instant,
    state: Arc<dyn DeploymentState>,
    guard: Option<InFlight>,
    done: bool,
}

impl RoutedStream {
    pub(super) fn new(
        first: ChatChunk,
        inner: ChunkStream,
        route: RouteInfo,
        limits: Limits,
        guard: InFlight,
        state: Arc<dyn DeploymentState>,
    ) -> Self {
        let timer = Box::pin(tokio::time::sleep_until(next_timeout(&limits)));
        Self {
            first: Some(first),
            inner,
            route,
            limits,
            timer,
            started: Instant::now(),
            state,
            guard: Some(guard),
            done: false,
        }
    }

    pub fn route(&self) -> &RouteInfo {
        &self.route
    }

    fn finish(&mut self, outcome: Outcome) {
        self.done = true;
        self.guard = None;
        self.state.record(&self.route.deployment, outcome);
    }
}

fn next_timeout(l: &Limits) -> Instant {
    let idle = Instant::now() + l.idle;
    l.deadline.map_or(idle, |d| d.min(idle))
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
                let at = next_timeout(&this.limits);
                this.timer.as_mut().reset(at);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(Outcome::Failure { class: e.class });
                Poll::Ready(Some(Err(RouteError::StreamInterrupted(e))))
            }
            Poll::Ready(None) => {
                let latency = this.started.elapsed();
                this.finish(Outcome::Success { latency });
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    let deadline_passed = this.limits.deadline.is_some_and(|d| d <= Instant::now());
                    this.finish(Outcome::Failure {
                        class: ErrorClass::Timeout,
                    });
                    let err = if deadline_passed {
                        RouteError::DeadlineExceeded {
                            attempts: this.route.attempts.clone(),
                        }
                    } else {
                        RouteError::StreamInterrupted(ProviderError::new(
                            ErrorClass::Timeout,
                            format!("no chunk for {} ms", this.limits.idle.as_millis()),
                        ))
                    };
                    Poll::Ready(Some(Err(err)))
                }
            },
        }
    }
}
