//! LiteLLM's key-management endpoints, as thin mappings onto the same operations as
//! `AdminService`, so that scripts written for the LiteLLM proxy keep working: `/key/generate`,
//! `/key/info`, `/key/update`, `/key/delete`, `/key/block`, `/key/unblock`, `/key/regenerate`,
//! `/team/new`, `/team/info`, `/team/update`, `/team/delete`, `/team/list`, `/spend/logs`.
//! Field names are LiteLLM's; money is USD as floats, as LiteLLM has it.

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    body::Body,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, header},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Http, read_body, wire};
use crate::{
    api::error::ApiError,
    auth::{
        KeyRecord, Kind, TeamRecord,
        manage::{self, Spec, Update},
    },
};

/// Admin bodies are small: a key, a team, a list of ids.
const ADMIN_MAX_BODY: usize = 1 << 20;

pub fn routes() -> Router<Http> {
    Router::new()
        .route("/key/generate", post(generate))
        .route("/key/info", get(key_info))
        .route("/key/update", post(key_update))
        .route("/key/delete", post(key_delete))
        .route("/key/block", post(key_block))
        .route("/key/unblock", post(key_unblock))
        .route("/key/regenerate", post(key_regenerate))
        .route("/team/new", post(team_new))
        .route("/team/info", get(team_info))
        .route("/team/update", post(team_update))
        .route("/team/delete", post(team_delete))
        .route("/team/list", get(team_list))
        .route("/spend/logs", get(spend_logs))
}

fn admin(s: &Http, headers: &HeaderMap) -> Result<(), ApiError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .or_else(|| headers.get("x-litellm-api-key"))
        .map(HeaderValue::as_bytes);
    s.gateway.require_admin(auth)
}

/// The fields of `/key/generate`, `/key/update` and `/team/new` (one struct: they share names).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Fields {
    /// `/key/update` and `/key/regenerate`: the key (plaintext `sk-...`, or our key id).
    key: Option<String>,
    key_alias: Option<String>,
    team_alias: Option<String>,
    team_id: Option<String>,
    user_id: Option<String>,
    models: Option<Vec<String>>,
    max_budget: Option<f64>,
    budget_duration: Option<String>,
    soft_budget: Option<f64>,
    rpm_limit: Option<u64>,
    tpm_limit: Option<u64>,
    max_parallel_requests: Option<u32>,
    /// Key lifetime: `30d`, `1h`, ...
    duration: Option<String>,
    metadata: Option<BTreeMap<String, Value>>,
    aliases: Option<BTreeMap<String, String>>,
    /// `/team/new`: `[{"user_id": ..., "role": ...}]`.
    members_with_roles: Option<Vec<Member>>,
    blocked: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Member {
    user_id: Option<String>,
}

impl Fields {
    /// The fields present in the body, as an update takes them (LiteLLM updates what is sent).
    fn update(self) -> Result<Update, ApiError> {
        let mut fields = Vec::new();
        let mut mark = |present: bool, name: &str| {
            if present {
                fields.push(name.to_string());
            }
        };
        mark(self.key_alias.is_some() || self.team_alias.is_some(), "alias");
        mark(self.models.is_some(), "models");
        mark(self.max_budget.is_some(), "max_budget");
        mark(self.budget_duration.is_some(), "budget_duration");
        mark(self.soft_budget.is_some(), "soft_budget");
        mark(self.rpm_limit.is_some(), "rpm_limit");
        mark(self.tpm_limit.is_some(), "tpm_limit");
        mark(self.max_parallel_requests.is_some(), "max_parallel_requests");
        mark(self.duration.is_some(), "expires");
        mark(self.metadata.is_some(), "metadata");
        mark(self.team_id.is_some(), "team_id");
        mark(self.user_id.is_some(), "user_id");
        mark(self.aliases.is_some(), "aliases");
        mark(self.members_with_roles.is_some(), "members");
        Ok(Update {
            spec: self.spec()?,
            fields,
        })
    }

    fn spec(self) -> Result<Spec, ApiError> {
        let expires_ms = match self.duration.as_deref() {
            None | Some("") => None,
            Some(d) => {
                let w = crate::domain::Window::parse(d).map_err(|m| ApiError::InvalidArgument {
                    field: "duration".into(),
                    message: m,
                })?;
                let now = manage::now_ms();
                Some(w.around(now, now).1)
            }
        };
        let metadata = self
            .metadata
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect();
        Ok(Spec {
            id: self.team_id.clone(),
            alias: self.key_alias.or(self.team_alias),
            models: self.models.unwrap_or_default(),
            max_budget: self.max_budget,
            budget_duration: self.budget_duration,
            soft_budget: self.soft_budget,
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            max_parallel_requests: self.max_parallel_requests,
            expires_ms,
            metadata,
            team_id: self.team_id,
            user_id: self.user_id,
            aliases: self.aliases.unwrap_or_default(),
            members: self
                .members_with_roles
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.user_id)
                .collect(),
        })
    }
}

async fn body(b: Body) -> Result<Fields, ApiError> {
    let bytes = read_body(b, ADMIN_MAX_BODY).await?;
    Ok(wire::parse::<Fields>(&bytes)?.0)
}

fn iso(ms: i64) -> Value {
    let day = crate::domain::day_of(ms);
    let secs = ms.rem_euclid(86_400_000) / 1000;
    json!(format!(
        "{day}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ))
}

/// A key id from what LiteLLM clients send: the plaintext key, or its id.
fn key_id(s: &Http, key: &str) -> Result<String, ApiError> {
    let snap = s.gateway.keys.directory.snapshot();
    if let Some(k) = snap.key_by_hash(&manage::hash_key(key.as_bytes())) {
        return Ok(k.id.clone());
    }
    if snap.keys.contains_key(key) {
        return Ok(key.to_string());
    }
    Err(ApiError::Manage(manage::ManageError::Store(
        crate::auth::StoreError::NotFound(
            "key",
            // Never echo a plaintext secret back.
            if key.starts_with("sk-") {
                "(the given key)".into()
            } else {
                key.to_string()
            },
        ),
    )))
}

async fn key_json(s: &Http, k: &KeyRecord) -> Value {
    let spend = s
        .gateway
        .quotas
        .current_spend(format!("key:{}", k.id), &k.limits, k.created_ms)
        .await;
    json!({
        "token": k.id,
        "key_name": k.preview,
        "key_alias": k.key_alias,
        "models": k.models,
        "spend": spend.map_or(0.0, |(s, _)| s.spent.usd()),
        "max_budget": k.limits.max_budget.map(|c| c.usd()),
        "budget_duration": k.limits.budget_duration.map(|w| w.as_text()),
        "budget_reset_at": spend.and_then(|(_, r)| r).map(iso),
        "soft_budget": k.limits.soft_budget.map(|c| c.usd()),
        "rpm_limit": k.limits.rpm_limit,
        "tpm_limit": k.limits.tpm_limit,
        "max_parallel_requests": k.limits.max_parallel_requests,
        "expires": k.expires_ms.map(iso),
        "metadata": k.metadata,
        "team_id": k.team_id,
        "user_id": k.user_id,
        "aliases": k.aliases,
        "blocked": k.blocked,
        "created_at": iso(k.created_ms),
    })
}

async fn generate(State(s): State<Http>, headers: HeaderMap, b: Body) -> Result<Json<Value>, ApiError> {
    admin(&s, &headers)?;
    let issued = s.gateway.keys.create_key(body(b).await?.spec()?).await?;
    let mut out = key_json(&s, &issued.record).await;
    out["key"] = json!(issued.plaintext.expose());
    Ok(Json(out))
}

#[derive(Deserialize)]
struct KeyQuery {
    key: Option<String>,
}

async fn key_info(
    State(s): State<Http>,
    headers: HeaderMap,
    Query(q): Query<KeyQuery>,
) -> Result<Json<Value>, ApiError> {
    admin(&s, &headers)?;
    let key = q.key.ok_or_else(|| ApiError::InvalidArgument {
        field: "key".into(),
        message: "is required (the key, or its token id)".into(),
    })?;
    let record = s.gateway.keys.key(&key_id(&s, &key)?)?;
    Ok(Json(
        json!({"key": record.id, "info": key_json(&s, &record).await}),
    ))
}

fn required_key(f: &Fields) -> Result<String, ApiError> {
    f.key.clone().ok_or_else(|| ApiError::InvalidArgument {
        field: "key".into(),
        message: "is required".into(),
    })
}

async fn key_update(State(s): State<Http>, headers: HeaderMap, b: Body) -> Result<Json<Value>, ApiError> {
    admin(&s, &headers)?;
    let f = body(b).await?;
    let id = key_id(&s, &required_key(&f)?)?;
    let blocked = f.blocked;
    let mut record = s.gateway.keys.update_key(&id, &f.update()?).await?;
    if let Some(b) = blocked {
        record = s.gateway.keys.block_key(&id, b).await?;
    }
    Ok(Json(key_json(&s, &record).await))
}

#[derive(Deserialize)]
struct Keys {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    key_aliases: Vec<String>,
}

async fn key_delete(State(s): State<Http>, headers: HeaderMap, b: Body) -> Result<Json<Value>, ApiError> {
    admin(&s, &headers)?;
    let bytes = read_body(b, ADMIN_MAX_BODY).await?;
    let (req, _) = wire::parse::<Keys>(&bytes)?;
    let mut ids = Vec::new();
    for k in &req.keys {
        ids.push(key_id(&s, k)?);
    }
    for alias in &req.key_aliases {
        let snap = s.gateway.keys.directory.snapshot();
        ids.extend(
            snap.keys
                .values()
                .filter(|k| k.key_alias.as_deref() == Some(alias.as_str()))
                .map(|k| k.id.clone()),
        );
    }
    for id in &ids {
        s.gateway.keys.delete(Kind::Key, id).await?;
    }
    Ok(Json(json!({"deleted_keys": ids})))
}

async fn set_blocked(s: &Http, headers: &HeaderMap, b: Body, blocked: bool) -> Result<Json<Value>, ApiError> {
    admin(s, headers)?;
    let f = body(b).await?;
    let id = key_id(s, &required_key(&f)?)?;
    let record = s.gateway.keys.block_key(&id, blocked).await?;
    Ok(Json(key_json(s, &record).await))
}

async fn key_block(State(s): State<Http>, headers: HeaderMap, b: Body) -> Result<Json<Value>, ApiError> {
    set_blocked(&s, &headers, b, true).await
}

async fn key_unblock(State(s): State<Http>, headers: HeaderMap, b: Body) -> Result<Json<Value>, ApiError> {
    set_blocked(&s, &headers, b, false).await
}

async fn key_regenerate(State(s): State<Http>, headers: HeaderMap, b: Body) -> Result<Json<Value>, ApiError> {
    admin(&s, &headers)?;
    let f = body(b).await?;
    let id = key_id(&s, &required_key(&f)?)?;
    let issued = s.gateway.keys.regenerate_key(&id).await?;
    let mut out = key_json(&s, &issued.record).await;
    out["key"] = json!(issued.plaintext.expose());
    Ok(Json(out))
}

async fn team_json(s: &Http, t: &TeamRecord) -> Value {
    let spend = s
        .gateway
        .quotas
        .current_spend(format!("team:{}", t.id), &t.limits, t.created_ms)
        .await;
    json!({
        "team_id": t.id,
        "team_alias": t.team_alias,
        "models": t.models,
        "spend": spend.map_or(0.0, |(s, _)| s.spent.usd()),
        "max_budget": t.limits.max_budget.map(|c| c.usd()),
        "budget_duration": t.limits.budget_duration.map(|w| w.as_text()),
        "budget_reset_at": spend.and_then(|(_, r)| r).map(iso),
        "rpm_limit": t.limits.rpm_limit,
        "tpm_limit": t.limits.tpm_limit,
        "max_parallel_requests": t.limits.max_parallel_requests,
        "members_with_roles": t.members.iter().map(|u| json!({"user_id": u, "role": "user"})).collect::<Vec<_>>(),
        "metadata": t.metadata,
        "blocked": t.blocked,
        "created_at": iso(t.created_ms),
    })
}

async fn team_new(State(s): State<Http>, headers: HeaderMap, b: Body) -> Result<Json<Value>, ApiError> {
    admin(&s, &headers)?;
    let team = s.gateway.keys.create_team(body(b).await?.spec()?).await?;
    Ok(Json(team_json(&s, &team).await))
}

#[derive(Deserialize)]
struct TeamQuery {
    team_id: Option<String>,
}

async fn team_info(
    State(s): State<Http>,
    headers: HeaderMap,
    Query(q): Query<TeamQuery>,
) -> Result<Json<Value>, ApiError> {
    admin(&s, &headers)?;
    let id = q.team_id.ok_or_else(|| ApiError::InvalidArgument {
        field: "team_id".into(),
        message: "is required".into(),
    })?;
    let team = s.gateway.keys.team(&id)?;
    let keys: Vec<_> = {
        let snap = s.gateway.keys.directory.snapshot();
        snap.keys
            .values()
            .filter(|k| k.team_id.as_deref() == Some(id.as_str()))
            .cloned()
            .collect()
    };
    let mut key_list = Vec::with_capacity(keys.len());
    for k in &keys {
        key_list.push(key_json(&s, k).await);
    }
    Ok(Json(json!({
        "team_id": id,
        "team_info": team_json(&s, &team).await,
        "keys": key_list,
    })))
}

async fn team_update(State(s): State<Http>, headers: HeaderMap, b: Body) -> Result<Json<Value>, ApiError> {
    admin(&s, &headers)?;
    let f = body(b).await?;
    let id = f.team_id.clone().ok_or_else(|| ApiError::InvalidArgument {
        field: "team_id".into(),
        message: "is required".into(),
    })?;
    let mut update = f.update()?;
    // The team id names the team; it is not a field to change.
    update.fields.retain(|f| f != "team_id");
    let team = s.gateway.keys.update_team(&id, &update).await?;
    Ok(Json(team_json(&s, &team).await))
}

#[derive(Deserialize)]
struct TeamIds {
    team_ids: Vec<String>,
}

async fn team_delete(State(s): State<Http>, headers: HeaderMap, b: Body) -> Result<Json<Value>, ApiError> {
    admin(&s, &headers)?;
    let bytes = read_body(b, ADMIN_MAX_BODY).await?;
    let (req, _) = wire::parse::<TeamIds>(&bytes)?;
    for id in &req.team_ids {
        s.gateway.keys.delete(Kind::Team, id).await?;
    }
    Ok(Json(json!({"deleted_teams": req.team_ids})))
}

async fn team_list(State(s): State<Http>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    admin(&s, &headers)?;
    let mut teams: Vec<_> = s
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
        out.push(team_json(&s, t).await);
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SpendQuery {
    /// The key (plaintext or token id).
    api_key: Option<String>,
    user_id: Option<String>,
    team_id: Option<String>,
    request_id: Option<String>,
    limit: Option<usize>,
}

async fn spend_logs(
    State(s): State<Http>,
    headers: HeaderMap,
    Query(q): Query<SpendQuery>,
) -> Result<Json<Value>, ApiError> {
    admin(&s, &headers)?;
    let key = q.api_key.as_deref().map(|k| key_id(&s, k)).transpose()?;
    let records = s
        .gateway
        .quotas
        .settler
        .ledger()
        .recent(q.limit.unwrap_or(1000).min(10_000))
        .await
        .map_err(|e| ApiError::LedgerDown(e.to_string()))?;
    let rows: Vec<Value> = records
        .into_iter()
        .filter(|r| key.as_ref().is_none_or(|k| r.key_id.as_ref() == Some(k)))
        .filter(|r| q.user_id.as_ref().is_none_or(|u| r.user_id.as_ref() == Some(u)))
        .filter(|r| q.team_id.as_ref().is_none_or(|t| r.team_id.as_ref() == Some(t)))
        .filter(|r| q.request_id.as_ref().is_none_or(|id| &r.request_id == id))
        .map(|r| {
            json!({
                "request_id": r.request_id,
                "api_key": r.key_id,
                "team_id": r.team_id,
                "user": r.user_id,
                "end_user": r.end_user,
                "model": r.model_group,
                "model_id": r.deployment,
                "spend": r.cost.usd(),
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "total_tokens": r.prompt_tokens + r.completion_tokens,
                "startTime": iso(r.at_ms),
                "endTime": iso(r.at_ms + r.latency_ms as i64),
                // LiteLLM's field is the string "True"/"False".
                "cache_hit": if r.status == "cache_hit" { "True" } else { "False" },
                "status": r.status,
            })
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}
