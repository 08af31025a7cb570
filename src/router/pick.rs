//! Deployment choice among eligible candidates (already filtered for health, tags, tier, capacity and
//! usage caps). Pure functions of the candidates and their state views.

use std::sync::Arc;

use super::{Deployment, DeploymentView};
use crate::config::RoutingStrategy;

pub struct Pick<'a> {
    pub strategy: RoutingStrategy,
    pub deployments: &'a [Arc<Deployment>],
    /// Indexed like `deployments`.
    pub views: &'a [DeploymentView],
    /// Streams route on time to first chunk, unary calls on total latency.
    pub stream: bool,
    pub lowest_latency_buffer: f64,
}

impl Pick<'_> {
    /// Chooses one of `eligible` (indices into `deployments`); `None` when it is empty.
    pub fn choose(&self, eligible: &[usize]) -> Option<usize> {
        if eligible.len() <= 1 {
            return eligible.first().copied();
        }
        match self.strategy {
            RoutingStrategy::SimpleShuffle => self.weighted(eligible),
            RoutingStrategy::LeastBusy => self.lowest(eligible, |v, _| f64::from(v.in_flight)),
            RoutingStrategy::UsageBased => self.lowest(eligible, |v, _| v.tpm_used as f64),
            RoutingStrategy::CostBased => self.lowest(eligible, |_, d| {
                d.price.map_or(f64::INFINITY, |p| (p.input + p.output) as f64)
            }),
            RoutingStrategy::LatencyBased => self.fastest(eligible),
        }
    }

    fn weighted(&self, eligible: &[usize]) -> Option<usize> {
        let total: f64 = eligible.iter().map(|&i| self.deployments[i].pick_weight).sum();
        let mut x = fastrand::f64() * total;
        for &i in eligible {
            let w = self.deployments[i].pick_weight;
            if x < w {
                return Some(i);
            }
            x -= w;
        }
        eligible.last().copied() // float rounding at the very end of the range
    }

    /// Uniformly among the candidates with the lowest `key`.
    fn lowest(&self, eligible: &[usize], key: impl Fn(&DeploymentView, &Deployment) -> f64) -> Option<usize> {
        let keys: Vec<f64> = eligible
            .iter()
            .map(|&i| key(&self.views[i], &self.deployments[i]))
            .collect();
        let min = keys.iter().copied().fold(f64::INFINITY, f64::min);
        let best: Vec<usize> = eligible
            .iter()
            .zip(&keys)
            .filter(|(_, k)| **k <= min)
            .map(|(&i, _)| i)
            .collect();
        if best.is_empty() {
            eligible.first().copied()
        } else {
            Some(best[fastrand::usize(..best.len())])
        }
    }

    /// Lowest recent latency (TTFT for streams); deployments without data are tried first, so that
    /// every deployment gets measured. Ties within `lowest_latency_buffer` are broken at random.
    fn fastest(&self, eligible: &[usize]) -> Option<usize> {
        let latency = |i: usize| {
            let v = &self.views[i];
            let l = if self.stream {
                v.ttft.or(v.latency)
            } else {
                v.latency.or(v.ttft)
            };
            l.map_or(0.0, |d| d.as_secs_f64())
        };
        let min = eligible.iter().map(|&i| latency(i)).fold(f64::INFINITY, f64::min);
        let limit = min * (1.0 + self.lowest_latency_buffer);
        let best: Vec<usize> = eligible
            .iter()
            .copied()
            .filter(|&i| latency(i) <= limit)
            .collect();
        Some(best[fastrand::usize(..best.len())])
    }
}
