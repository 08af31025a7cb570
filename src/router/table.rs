//! The routing table: model groups and their deployments, built once per config and swapped whole.

use std::{collections::HashMap, sync::Arc, time::Duration};

use crate::{
    config::{Config, DeploymentConfig, RouterSettings},
    domain::{DeploymentId, ModelGroup},
    providers::{self, HttpClient, Provider},
};

/// One routable upstream deployment.
pub struct Deployment {
    pub id: DeploymentId,
    pub provider: Arc<dyn Provider>,
    /// Relative probability of being picked by simple-shuffle.
    pub pick_weight: f64,
    pub timeout: Duration,
    pub stream_timeout: Duration,
}

pub struct Group {
    pub name: ModelGroup,
    pub deployments: Vec<Arc<Deployment>>,
    /// The deployments' ids in the same order, for batched state reads.
    pub ids: Vec<DeploymentId>,
}

pub struct RoutingTable {
    pub groups: HashMap<ModelGroup, Group>,
    pub settings: RouterSettings,
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
        let settings = config.router.clone();
        let groups = order
            .into_iter()
            .map(|name| {
                let deps = &members[&name];
                let weights = pick_weights(deps);
                let deployments: Vec<Arc<Deployment>> = deps
                    .iter()
                    .zip(weights)
                    .map(|(d, w)| {
                        let timeout = d.timeout.unwrap_or(settings.timeout);
                        Arc::new(Deployment {
                            id: d.id.clone(),
                            provider: providers::build(d, http),
                            pick_weight: w,
                            timeout,
                            stream_timeout: d.stream_timeout.unwrap_or(timeout),
                        })
                    })
                    .collect();
                let ids = deployments.iter().map(|d| d.id.clone()).collect();
                let group = Group {
                    name: name.clone(),
                    deployments,
                    ids,
                };
                (name, group)
            })
            .collect();
        RoutingTable { groups, settings }
    }

    /// Group names in no particular order.
    pub fn group_names(&self) -> impl Iterator<Item = &ModelGroup> {
        self.groups.keys()
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
