//! Keys, teams, users and spend between proto and the auth/limits types.

use std::collections::BTreeMap;

use crate::{
    auth::{KeyRecord, Limits, TeamRecord, UserRecord, manage::Spec, manage::Update},
    limits::{ScopeSpend, SpendRecord, SpendRow},
    proto as pb,
};

pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn millis(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn put_limits(spec: &mut Spec, l: Option<pb::Limits>) {
    let l = l.unwrap_or_default();
    spec.max_budget = l.max_budget;
    spec.budget_duration = non_empty(l.budget_duration);
    spec.soft_budget = l.soft_budget;
    spec.rpm_limit = l.rpm_limit;
    spec.tpm_limit = l.tpm_limit;
    spec.max_parallel_requests = l.max_parallel_requests;
}

pub fn key_spec(p: pb::KeySpec) -> Spec {
    let mut s = Spec {
        alias: non_empty(p.key_alias),
        models: p.models,
        expires_ms: p.expires.as_ref().map(millis),
        metadata: p.metadata.into_iter().collect(),
        team_id: non_empty(p.team_id),
        user_id: non_empty(p.user_id),
        aliases: p.aliases.into_iter().collect(),
        ..Spec::default()
    };
    put_limits(&mut s, p.limits);
    s
}

pub fn team_spec(p: pb::TeamSpec) -> Spec {
    let mut s = Spec {
        id: non_empty(p.team_id),
        alias: non_empty(p.team_alias),
        models: p.models,
        members: p.members,
        metadata: p.metadata.into_iter().collect(),
        ..Spec::default()
    };
    put_limits(&mut s, p.limits);
    s
}

pub fn user_spec(p: pb::UserSpec) -> Spec {
    let mut s = Spec {
        id: non_empty(p.user_id),
        models: p.models,
        metadata: p.metadata.into_iter().collect(),
        ..Spec::default()
    };
    put_limits(&mut s, p.limits);
    s
}

/// A field mask's paths in the manager's names: `limits.max_budget` -> `max_budget`,
/// `key_alias`/`team_alias` -> `alias`.
pub fn update(spec: Spec, mask: Option<prost_types::FieldMask>) -> Update {
    let fields = mask
        .map(|m| m.paths)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let p = p.strip_prefix("limits.").unwrap_or(&p).to_string();
            match p.as_str() {
                "key_alias" | "team_alias" => "alias".to_string(),
                _ => p,
            }
        })
        .collect();
    Update { spec, fields }
}

fn limits(l: &Limits) -> pb::Limits {
    pb::Limits {
        max_budget: l.max_budget.map(|c| c.usd()),
        budget_duration: l.budget_duration.map(|w| w.as_text()).unwrap_or_default(),
        soft_budget: l.soft_budget.map(|c| c.usd()),
        rpm_limit: l.rpm_limit,
        tpm_limit: l.tpm_limit,
        max_parallel_requests: l.max_parallel_requests,
    }
}

fn map(m: &BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn spend(s: ScopeSpend, resets_at_ms: Option<i64>) -> pb::Spend {
    pb::Spend {
        spend_usd: s.spent.usd(),
        spend_nano_usd: s.spent.nano_usd(),
        reserved_nano_usd: s.reserved.nano_usd(),
        budget_reset_at: resets_at_ms.map(timestamp),
    }
}

pub fn key_info(k: &KeyRecord, spend: Option<pb::Spend>) -> pb::KeyInfo {
    pb::KeyInfo {
        key_id: k.id.clone(),
        key_preview: k.preview.clone(),
        spec: Some(pb::KeySpec {
            key_alias: k.key_alias.clone().unwrap_or_default(),
            models: k.models.clone(),
            limits: Some(limits(&k.limits)),
            expires: k.expires_ms.map(timestamp),
            metadata: map(&k.metadata),
            team_id: k.team_id.clone().unwrap_or_default(),
            user_id: k.user_id.clone().unwrap_or_default(),
            aliases: map(&k.aliases),
        }),
        blocked: k.blocked,
        created_at: Some(timestamp(k.created_ms)),
        updated_at: Some(timestamp(k.updated_ms)),
        spend,
    }
}

pub fn team_info(t: &TeamRecord, spend: Option<pb::Spend>) -> pb::TeamInfo {
    pb::TeamInfo {
        spec: Some(pb::TeamSpec {
            team_id: t.id.clone(),
            team_alias: t.team_alias.clone().unwrap_or_default(),
            models: t.models.clone(),
            limits: Some(limits(&t.limits)),
            members: t.members.clone(),
            metadata: map(&t.metadata),
        }),
        blocked: t.blocked,
        created_at: Some(timestamp(t.created_ms)),
        spend,
    }
}

pub fn user_info(u: &UserRecord, spend: Option<pb::Spend>) -> pb::UserInfo {
    pb::UserInfo {
        spec: Some(pb::UserSpec {
            user_id: u.id.clone(),
            models: u.models.clone(),
            limits: Some(limits(&u.limits)),
            metadata: map(&u.metadata),
        }),
        created_at: Some(timestamp(u.created_ms)),
        spend,
    }
}

pub fn spend_row(r: SpendRow) -> pb::SpendRow {
    pb::SpendRow {
        date: r.day,
        name: r.name,
        spend_usd: r.cost.usd(),
        spend_nano_usd: r.cost.nano_usd(),
        requests: r.requests,
        tokens: r.tokens,
    }
}

pub fn spend_log(r: SpendRecord) -> pb::SpendLog {
    pb::SpendLog {
        request_id: r.request_id,
        key_id: r.key_id.unwrap_or_default(),
        team_id: r.team_id.unwrap_or_default(),
        user_id: r.user_id.unwrap_or_default(),
        end_user: r.end_user.unwrap_or_default(),
        model_group: r.model_group,
        deployment_id: r.deployment.unwrap_or_default(),
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        spend_usd: r.cost.usd(),
        spend_nano_usd: r.cost.nano_usd(),
        latency_ms: r.latency_ms,
        status: r.status,
        created_at: Some(timestamp(r.at_ms)),
    }
}
