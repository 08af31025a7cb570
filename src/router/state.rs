//! Deployment state the strategies read (in-flight counts today; cooldowns, latency and usage with
//! the router issue). Reads are batched per routing decision so that a Redis-backed implementation
//! can serve them from a local snapshot instead of a round trip per candidate.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use crate::domain::{DeploymentId, ErrorClass};

/// What a strategy knows about one deployment at decision time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeploymentView {
    pub in_flight: u32,
}

/// How an attempt ended, for health and statistics.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Success { latency: Duration },
    Failure { class: ErrorClass },
}

/// Shared deployment state. Implementations must not block: they are called on the request path.
pub trait DeploymentState: Send + Sync {
    /// Fills `out` with the views of `ids`, in order.
    fn views(&self, ids: &[DeploymentId], out: &mut Vec<DeploymentView>);
    /// Marks one request in flight on `id` until the returned guard drops.
    fn begin(&self, id: &DeploymentId) -> InFlight;
    /// Records how an attempt ended.
    fn record(&self, id: &DeploymentId, outcome: Outcome);
}

/// Decrements the in-flight count when dropped (also when a request is cancelled mid-way).
pub struct InFlight(Option<Arc<AtomicU32>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Single-node state: atomics per deployment, created on first use.
#[derive(Default)]
pub struct LocalState {
    in_flight: std::sync::RwLock<HashMap<DeploymentId, Arc<AtomicU32>>>,
}

impl LocalState {
    fn counter(&self, id: &DeploymentId) -> Arc<AtomicU32> {
        if let Some(c) = self.in_flight.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            return c.clone();
        }
        let mut map = self.in_flight.write().unwrap_or_else(|e| e.into_inner());
        map.entry(id.clone()).or_default().clone()
    }
}

impl DeploymentState for LocalState {
    fn views(&self, ids: &[DeploymentId], out: &mut Vec<DeploymentView>) {
        let map = self.in_flight.read().unwrap_or_else(|e| e.into_inner());
        out.extend(ids.iter().map(|id| DeploymentView {
            in_flight: map.get(id).map_or(0, |c| c.load(Ordering::Relaxed)),
        }));
    }

    fn begin(&self, id: &DeploymentId) -> InFlight {
        let c = self.counter(id);
        c.fetch_add(1, Ordering::Relaxed);
        InFlight(Some(c))
    }

    fn record(&self, _id: &DeploymentId, _outcome: Outcome) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_follow_guards() {
        let s = LocalState::default();
        let (a, b) = (DeploymentId::new("a"), DeploymentId::new("b"));
        let g1 = s.begin(&a);
        let g2 = s.begin(&a);
        let mut out = Vec::new();
        s.views(&[a.clone(), b.clone()], &mut out);
        assert_eq!(
            out,
            [DeploymentView { in_flight: 2 }, DeploymentView { in_flight: 0 }]
        );
        drop((g1, g2));
        out.clear();
        s.views(&[a], &mut out);
        assert_eq!(out[0].in_flight, 0);
    }
}
