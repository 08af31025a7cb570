//! AdminService: operating the fleet. Every call needs the master key (when one is configured).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Gateway, error::ApiError};
use crate::{auth::Principal, proto as pb, router::Health};

pub struct AdminApi {
    pub gateway: Arc<Gateway>,
    pub replica_id: String,
    pub address: String,
}

impl AdminApi {
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let md = request.metadata();
        match self
            .gateway
            .auth
            .authenticate(md.get("authorization").map(|v| v.as_bytes()))
        {
            Ok(Principal::Master | Principal::Anonymous) => Ok(()),
            Err(e) => Err(ApiError::from(e).to_status()),
        }
    }
}

fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminApi {
    async fn get_cluster(
        &self,
        request: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::GetClusterResponse>, Status> {
        self.authorize(&request)?;
        let router = &self.gateway.router;
        let state = router.state();
        let table = router.table();
        let mut deployments = Vec::new();
        let mut views = Vec::new();
        let mut groups: Vec<_> = table.groups.values().collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        for group in groups {
            views.clear();
            state.views(&group.ids, &mut views);
            for (d, v) in group.deployments.iter().zip(&views) {
                let (health, remaining) = match v.health {
                    Health::Healthy => (pb::DeploymentHealth::Healthy, 0),
                    Health::CoolingDown { remaining } => (
                        pb::DeploymentHealth::CoolingDown,
                        u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX).max(1),
                    ),
                    Health::HalfOpen { .. } => (pb::DeploymentHealth::HalfOpen, 0),
                };
                let ms = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
                deployments.push(pb::DeploymentStatus {
                    deployment_id: d.id.to_string(),
                    model_group: group.name.to_string(),
                    provider: d.provider.name().to_string(),
                    health: health as i32,
                    cooldown_remaining_ms: remaining,
                    in_flight: v.in_flight,
                    latency_ms: ms(v.latency),
                    time_to_first_chunk_ms: ms(v.ttft),
                    rpm_used: v.rpm_used,
                    tpm_used: v.tpm_used,
                });
            }
        }
        let shared = table.settings.redis_url.is_some() && state.shared_state_ready();
        let mut replicas: Vec<pb::Replica> = state
            .replicas()
            .await
            .into_iter()
            .map(|r| pb::Replica {
                replica_id: r.id,
                address: r.address,
                version: r.version,
                last_heartbeat: Some(timestamp(r.last_heartbeat_ms)),
            })
            .collect();
        if replicas.is_empty() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            replicas.push(pb::Replica {
                replica_id: self.replica_id.clone(),
                address: self.address.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                last_heartbeat: Some(timestamp(now)),
            });
        }
        replicas.sort_by(|a, b| a.replica_id.cmp(&b.replica_id));
        Ok(Response::new(pb::GetClusterResponse {
            replica_id: self.replica_id.clone(),
            leader_id: String::new(),
            shared_state: shared,
            replicas,
            deployments,
        }))
    }
}
