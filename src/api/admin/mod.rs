//! AdminService: operating the fleet, and managing keys, teams, users and spend. Every call needs
//! the master key (when one is configured); a virtual key gets PERMISSION_DENIED.

mod records;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use self::records::{key_info, spend, team_info, update, user_info};
use super::{Gateway, error::ApiError};
use crate::{
    auth::{Kind, Limits},
    control::ControlError,
    proto as pb,
    router::Health,
};

pub struct AdminApi {
    pub gateway: Arc<Gateway>,
    pub replica_id: String,
    pub address: String,
}

impl AdminApi {
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let md = request.metadata();
        self.gateway
            .require_admin(md.get("authorization").map(|v| v.as_bytes()))
            .map_err(|e| e.to_status())
    }

    /// Current-window spend of a record with a budget (None without one, or when the ledger is down).
    async fn spend_of(&self, scope_id: String, limits: &Limits, anchor_ms: i64) -> Option<pb::Spend> {
        let (s, resets) = self
            .gateway
            .quotas
            .current_spend(scope_id, limits, anchor_ms)
            .await?;
        Some(spend(s, resets))
    }

    async fn key(&self, k: &crate::auth::KeyRecord) -> pb::KeyInfo {
        key_info(
            k,
            self.spend_of(format!("key:{}", k.id), &k.limits, k.created_ms)
                .await,
        )
    }

    async fn team(&self, t: &crate::auth::TeamRecord) -> pb::TeamInfo {
        team_info(
            t,
            self.spend_of(format!("team:{}", t.id), &t.limits, t.created_ms)
                .await,
        )
    }

    async fn user(&self, u: &crate::auth::UserRecord) -> pb::UserInfo {
        user_info(
            u,
            self.spend_of(format!("user:{}", u.id), &u.limits, u.created_ms)
                .await,
        )
    }
}

fn timestamp(ms: u64) -> prost_types::Timestamp {
    records::timestamp(ms as i64)
}

fn status(e: impl Into<ApiError>) -> Status {
    e.into().to_status()
}

/// A client for the config leader at `host:port` (writes are forwarded there).
async fn leader_client(
    addr: &str,
) -> Result<pb::admin_service_client::AdminServiceClient<tonic::transport::Channel>, Status> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::unavailable(format!("bad leader address {addr:?}: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("the config leader at {addr} is unreachable: {e}")))?;
    Ok(pb::admin_service_client::AdminServiceClient::new(channel))
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
        let shared = table.settings.redis.is_some() && state.shared_state_ready();
        let mut replicas: Vec<pb::Replica> = state
            .replicas()
            .await
            .into_iter()
            .map(|r| pb::Replica {
                replica_id: r.id,
                address: r.address,
                version: r.version,
                last_heartbeat: Some(timestamp(r.last_heartbeat_ms)),
                config_version: 0,
                leader: false,
            })
            .collect();
        let control = &self.gateway.control;
        let leader = control.leadership.as_ref().and_then(|l| l.leader());
        // With etcd, each replica's config version and leadership come from its own report.
        if let Some(l) = &control.leadership
            && let Ok(reports) = l.replicas().await
        {
            for s in reports {
                match replicas.iter_mut().find(|r| r.replica_id == s.id) {
                    Some(r) => r.config_version = s.config_version,
                    None => replicas.push(pb::Replica {
                        replica_id: s.id.clone(),
                        address: s.address.clone(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        last_heartbeat: Some(records::timestamp(s.at_ms)),
                        config_version: s.config_version,
                        leader: false,
                    }),
                }
            }
        }
        for r in &mut replicas {
            r.leader = leader.as_ref().is_some_and(|l| l.id == r.replica_id);
        }
        if replicas.is_empty() {
            let now = crate::domain::now_ms().max(0) as u64;
            replicas.push(pb::Replica {
                replica_id: self.replica_id.clone(),
                address: self.address.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                last_heartbeat: Some(timestamp(now)),
                config_version: control.current().version,
                leader: leader.is_some(),
            });
        }
        replicas.sort_by(|a, b| a.replica_id.cmp(&b.replica_id));
        Ok(Response::new(pb::GetClusterResponse {
            replica_id: self.replica_id.clone(),
            leader_id: leader.map(|l| l.id).unwrap_or_default(),
            shared_state: shared,
            replicas,
            deployments,
            config_version: control.current().version,
            config_rejection: control.status().last_rejection.unwrap_or_default(),
        }))
    }

    async fn get_config(
        &self,
        request: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::GetConfigResponse>, Status> {
        self.authorize(&request)?;
        let v = self.gateway.control.current();
        Ok(Response::new(pb::GetConfigResponse {
            version: v.version,
            yaml: crate::control::mask_secrets(&v.yaml),
            author: v.author.clone(),
            created_at: Some(records::timestamp(v.at_ms)),
        }))
    }

    async fn put_config(
        &self,
        request: Request<pb::PutConfigRequest>,
    ) -> Result<Response<pb::PutConfigResponse>, Status> {
        self.authorize(&request)?;
        let auth = request.metadata().get("authorization").cloned();
        let yaml = request.into_inner().yaml;
        let author = format!("admin via {}", self.replica_id);
        match self.gateway.control.put(yaml.clone(), author).await {
            Ok(version) => Ok(Response::new(pb::PutConfigResponse { version })),
            Err(ControlError::NotLeader {
                leader_address: Some(addr),
            }) if addr != self.address => {
                // Followers forward the write to the leader, with the caller's credentials.
                let mut client = leader_client(&addr).await?;
                let mut forwarded = Request::new(pb::PutConfigRequest { yaml });
                if let Some(a) = auth {
                    forwarded.metadata_mut().insert("authorization", a);
                }
                client.put_config(forwarded).await
            }
            Err(e) => Err(status(e)),
        }
    }

    async fn list_config_revisions(
        &self,
        request: Request<pb::ListConfigRevisionsRequest>,
    ) -> Result<Response<pb::ListConfigRevisionsResponse>, Status> {
        self.authorize(&request)?;
        let history = self.gateway.control.history().await.map_err(status)?;
        Ok(Response::new(pb::ListConfigRevisionsResponse {
            revisions: history
                .into_iter()
                .map(|v| pb::ConfigRevision {
                    version: v.version,
                    author: v.author,
                    created_at: Some(records::timestamp(v.at_ms)),
                    size_bytes: v.yaml.len() as u64,
                })
                .collect(),
        }))
    }

    async fn rollback_config(
        &self,
        request: Request<pb::RollbackConfigRequest>,
    ) -> Result<Response<pb::RollbackConfigResponse>, Status> {
        self.authorize(&request)?;
        let auth = request.metadata().get("authorization").cloned();
        let target = request.get_ref().version;
        let author = format!("admin via {}", self.replica_id);
        match self.gateway.control.rollback(target, author).await {
            Ok(version) => Ok(Response::new(pb::RollbackConfigResponse { version })),
            Err(ControlError::NotLeader {
                leader_address: Some(addr),
            }) if addr != self.address => {
                let mut client = leader_client(&addr).await?;
                let mut forwarded = Request::new(pb::RollbackConfigRequest { version: target });
                if let Some(a) = auth {
                    forwarded.metadata_mut().insert("authorization", a);
                }
                client.rollback_config(forwarded).await
            }
            Err(e) => Err(status(e)),
        }
    }

    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        self.authorize(&request)?;
        let spec = records::key_spec(request.into_inner().spec.unwrap_or_default());
        let issued = self.gateway.keys.create_key(spec).await.map_err(status)?;
        tracing::info!(key_id = %issued.record.id, "key created");
        Ok(Response::new(pb::CreateKeyResponse {
            key: issued.plaintext.expose().to_string(),
            info: Some(self.key(&issued.record).await),
        }))
    }

    async fn get_key(
        &self,
        request: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::GetKeyResponse>, Status> {
        self.authorize(&request)?;
        let k = self.gateway.keys.key(&request.get_ref().key_id).map_err(status)?;
        Ok(Response::new(pb::GetKeyResponse {
            info: Some(self.key(&k).await),
        }))
    }

    async fn update_key(
        &self,
        request: Request<pb::UpdateKeyRequest>,
    ) -> Result<Response<pb::UpdateKeyResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let u = update(records::key_spec(r.spec.unwrap_or_default()), r.update_mask);
        let k = self
            .gateway
            .keys
            .update_key(&r.key_id, &u)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::UpdateKeyResponse {
            info: Some(self.key(&k).await),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let mut keys: Vec<_> = {
            let snap = self.gateway.keys.directory.snapshot();
            snap.keys
                .values()
                .filter(|k| r.team_id.is_empty() || k.team_id.as_deref() == Some(r.team_id.as_str()))
                .filter(|k| r.user_id.is_empty() || k.user_id.as_deref() == Some(r.user_id.as_str()))
                .cloned()
                .collect()
        };
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        let mut out = Vec::with_capacity(keys.len());
        for k in &keys {
            out.push(self.key(k).await);
        }
        Ok(Response::new(pb::ListKeysResponse { keys: out }))
    }

    async fn delete_key(
        &self,
        request: Request<pb::DeleteKeyRequest>,
    ) -> Result<Response<pb::DeleteKeyResponse>, Status> {
        self.authorize(&request)?;
        self.gateway
            .keys
            .delete(Kind::Key, &request.get_ref().key_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteKeyResponse {}))
    }

    async fn regenerate_key(
        &self,
        request: Request<pb::RegenerateKeyRequest>,
    ) -> Result<Response<pb::RegenerateKeyResponse>, Status> {
        self.authorize(&request)?;
        let issued = self
            .gateway
            .keys
            .regenerate_key(&request.get_ref().key_id)
            .await
            .map_err(status)?;
        tracing::info!(key_id = %issued.record.id, "key regenerated");
        Ok(Response::new(pb::RegenerateKeyResponse {
            key: issued.plaintext.expose().to_string(),
            info: Some(self.key(&issued.record).await),
        }))
    }

    async fn block_key(
        &self,
        request: Request<pb::BlockKeyRequest>,
    ) -> Result<Response<pb::BlockKeyResponse>, Status> {
        self.authorize(&request)?;
        let r = request.get_ref();
        let k = self
            .gateway
            .keys
            .block_key(&r.key_id, r.blocked)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::BlockKeyResponse {
            info: Some(self.key(&k).await),
        }))
    }

    async fn create_team(
        &self,
        request: Request<pb::CreateTeamRequest>,
    ) -> Result<Response<pb::CreateTeamResponse>, Status> {
        self.authorize(&request)?;
        let spec = records::team_spec(request.into_inner().spec.unwrap_or_default());
        let t = self.gateway.keys.create_team(spec).await.map_err(status)?;
        Ok(Response::new(pb::CreateTeamResponse {
            info: Some(self.team(&t).await),
        }))
    }

    async fn get_team(
        &self,
        request: Request<pb::GetTeamRequest>,
    ) -> Result<Response<pb::GetTeamResponse>, Status> {
        self.authorize(&request)?;
        let t = self
            .gateway
            .keys
            .team(&request.get_ref().team_id)
            .map_err(status)?;
        Ok(Response::new(pb::GetTeamResponse {
            info: Some(self.team(&t).await),
        }))
    }

    async fn update_team(
        &self,
        request: Request<pb::UpdateTeamRequest>,
    ) -> Result<Response<pb::UpdateTeamResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let u = update(records::team_spec(r.spec.unwrap_or_default()), r.update_mask);
        let t = self
            .gateway
            .keys
            .update_team(&r.team_id, &u)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::UpdateTeamResponse {
            info: Some(self.team(&t).await),
        }))
    }

    async fn list_teams(
        &self,
        request: Request<pb::ListTeamsRequest>,
    ) -> Result<Response<pb::ListTeamsResponse>, Status> {
        self.authorize(&request)?;
        let mut teams: Vec<_> = self
            .gateway
            .keys
            .directory
            .snapshot()
            .teams
            .values()
            .cloned()
            .collect();
        teams.sort_by(|a, b| a.id.cmp(&b.id));
        let mut out = Vec::with_capacity(teams.len());
        for t in &teams {
            out.push(self.team(t).await);
        }
        Ok(Response::new(pb::ListTeamsResponse { teams: out }))
    }

    async fn delete_team(
        &self,
        request: Request<pb::DeleteTeamRequest>,
    ) -> Result<Response<pb::DeleteTeamResponse>, Status> {
        self.authorize(&request)?;
        self.gateway
            .keys
            .delete(Kind::Team, &request.get_ref().team_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteTeamResponse {}))
    }

    async fn block_team(
        &self,
        request: Request<pb::BlockTeamRequest>,
    ) -> Result<Response<pb::BlockTeamResponse>, Status> {
        self.authorize(&request)?;
        let r = request.get_ref();
        let t = self
            .gateway
            .keys
            .block_team(&r.team_id, r.blocked)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::BlockTeamResponse {
            info: Some(self.team(&t).await),
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        self.authorize(&request)?;
        let spec = records::user_spec(request.into_inner().spec.unwrap_or_default());
        let u = self.gateway.keys.create_user(spec).await.map_err(status)?;
        Ok(Response::new(pb::CreateUserResponse {
            info: Some(self.user(&u).await),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        self.authorize(&request)?;
        let u = self
            .gateway
            .keys
            .user(&request.get_ref().user_id)
            .map_err(status)?;
        Ok(Response::new(pb::GetUserResponse {
            info: Some(self.user(&u).await),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let u = update(records::user_spec(r.spec.unwrap_or_default()), r.update_mask);
        let u = self
            .gateway
            .keys
            .update_user(&r.user_id, &u)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::UpdateUserResponse {
            info: Some(self.user(&u).await),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.authorize(&request)?;
        let mut users: Vec<_> = self
            .gateway
            .keys
            .directory
            .snapshot()
            .users
            .values()
            .cloned()
            .collect();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        let mut out = Vec::with_capacity(users.len());
        for u in &users {
            out.push(self.user(u).await);
        }
        Ok(Response::new(pb::ListUsersResponse { users: out }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        self.authorize(&request)?;
        self.gateway
            .keys
            .delete(Kind::User, &request.get_ref().user_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn get_spend(
        &self,
        request: Request<pb::GetSpendRequest>,
    ) -> Result<Response<pb::GetSpendResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let prefix = match r.group_by.as_str() {
            "" | "all" => "all".to_string(),
            g @ ("key" | "team" | "user" | "end_user" | "model") => format!("{g}:"),
            other => {
                return Err(status(ApiError::InvalidArgument {
                    field: "group_by".into(),
                    message: format!("{other:?}: use key, team, user, end_user, model or all"),
                }));
            }
        };
        let date = |s: &str, field: &str| -> Result<String, Status> {
            let ok = s.len() == 10
                && s.as_bytes()[4] == b'-'
                && s.as_bytes()[7] == b'-'
                && s.chars()
                    .enumerate()
                    .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
            if ok {
                Ok(s.to_string())
            } else {
                Err(status(ApiError::InvalidArgument {
                    field: field.into(),
                    message: format!("{s:?} is not a YYYY-MM-DD date"),
                }))
            }
        };
        let today = crate::limits::day_of(crate::limits::now_ms());
        let from = if r.start_date.is_empty() {
            today
        } else {
            date(&r.start_date, "start_date")?
        };
        let to = if r.end_date.is_empty() {
            from.clone()
        } else {
            date(&r.end_date, "end_date")?
        };
        let rows = self
            .gateway
            .quotas
            .settler
            .ledger()
            .report(&prefix, &from, &to)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::GetSpendResponse {
            rows: rows.into_iter().map(records::spend_row).collect(),
        }))
    }

    async fn list_spend_logs(
        &self,
        request: Request<pb::ListSpendLogsRequest>,
    ) -> Result<Response<pb::ListSpendLogsResponse>, Status> {
        self.authorize(&request)?;
        let limit = match request.get_ref().limit {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let logs = self
            .gateway
            .quotas
            .settler
            .ledger()
            .recent(limit)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::ListSpendLogsResponse {
            logs: logs.into_iter().map(records::spend_log).collect(),
        }))
    }
}
