//! Deployment choice. simple-shuffle today: weighted random among the candidates not yet tried.

use std::sync::Arc;

use super::{Deployment, DeploymentView};

/// Picks an index among deployments with `tried[i] == false`, with probability proportional to
/// `pick_weight`. `views` is indexed like `deployments` (unused by simple-shuffle, read by the
/// state-aware strategies).
pub fn weighted(deployments: &[Arc<Deployment>], tried: &[bool], _views: &[DeploymentView]) -> Option<usize> {
    let total: f64 = deployments
        .iter()
        .zip(tried)
        .filter(|(_, t)| !**t)
        .map(|(d, _)| d.pick_weight)
        .sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = fastrand::f64() * total;
    let mut last = None;
    for (i, d) in deployments.iter().enumerate() {
        if tried[i] {
            continue;
        }
        last = Some(i);
        if x < d.pick_weight {
            return Some(i);
        }
        x -= d.pick_weight;
    }
    last // float rounding at the very end of the range
}
