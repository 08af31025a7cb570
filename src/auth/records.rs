//! Virtual keys, teams and users as stored records (JSON in etcd, or in memory on a single node).
//! Field names follow LiteLLM's `/key/generate` and `/team/new`. A key is stored only as its SHA-256.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::Cost;
pub use crate::domain::Window;

/// Budget and rate limits; the same fields on keys, teams and users.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    pub max_budget: Option<Cost>,
    /// The budget resets every window, counted from the record's creation; none: a lifetime budget.
    pub budget_duration: Option<Window>,
    /// Crossing it fires the soft-budget alert once per window; requests keep flowing.
    pub soft_budget: Option<Cost>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u32>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.max_budget.is_none()
            && self.soft_budget.is_none()
            && self.rpm_limit.is_none()
            && self.tpm_limit.is_none()
            && self.max_parallel_requests.is_none()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyRecord {
    /// Public id (`key_...`): how admins name the key. Never the secret.
    pub id: String,
    /// Hex SHA-256 of the plaintext key.
    pub hash: String,
    /// `sk-...abcd`: enough for a human to recognise the key, too little to use it.
    pub preview: String,
    pub key_alias: Option<String>,
    /// Model groups (or access groups) this key may call; empty: every model its team allows.
    pub models: Vec<String>,
    pub limits: Limits,
    /// Unix milliseconds after which the key is refused.
    pub expires_ms: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    /// Model names the caller may use for a group: `{"gpt-4": "smart"}`.
    pub aliases: BTreeMap<String, String>,
    pub blocked: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TeamRecord {
    pub id: String,
    pub team_alias: Option<String>,
    pub models: Vec<String>,
    pub limits: Limits,
    pub members: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub blocked: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserRecord {
    pub id: String,
    pub models: Vec<String>,
    pub limits: Limits,
    pub metadata: BTreeMap<String, String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}
