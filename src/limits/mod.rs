//! Budgets and rate limits per key, team, user, end user and the whole gateway, exact across the
//! fleet: a request is admitted only if its worst-case cost fits every budget that applies and every
//! rpm/tpm/parallel limit has room, all checked and reserved in one atomic step ([`Ledger::admit`]);
//! after the response the actual cost is charged and the rest of the reservation released
//! ([`Ledger::settle`]). Reservations are leases that expire, so a crashed replica leaks nothing.
//!
//! Two ledgers with the same rules: [`LocalLedger`] in memory (single node) and [`FleetLedger`] on
//! Redis (one Lua script per step, on Redis' clock).

mod checkpoint;
mod fleet;
mod local;
mod settle;

use std::sync::Arc;

pub use checkpoint::Checkpoint;
pub use fleet::FleetLedger;
pub use local::LocalLedger;
pub use settle::Settler;

use crate::domain::Cost;

/// Prefix of the scope that counts a virtual key's open streams (`streams:key:<id>`).
pub const STREAMS_SCOPE: &str = "streams:";

/// One party whose limits apply to a request: `key:<id>`, `team:<id>`, `user:<id>`,
/// `end_user:<id>` or `global`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub id: String,
    pub budget: Option<Budget>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub parallel: Option<u32>,
}

impl Scope {
    pub fn is_limited(&self) -> bool {
        self.budget.is_some() || self.rpm.is_some() || self.tpm.is_some() || self.parallel.is_some()
    }
    /// Whether a request holds a lease on this scope (for its budget reservation or parallel slot).
    pub fn leased(&self) -> bool {
        self.budget.is_some() || self.parallel.is_some()
    }
}

/// A budget and the window it currently counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// `None` with only a soft budget: spend is tracked and alerted on, never refused.
    pub max: Option<Cost>,
    pub soft: Option<Cost>,
    /// Unix ms; a lifetime budget has start 0 and end `i64::MAX`.
    pub window_start: i64,
    pub window_end: i64,
}

impl Budget {
    fn ttl_secs(&self, now_ms: i64) -> i64 {
        if self.window_end == i64::MAX {
            0
        } else {
            // Kept a day past the window so late settlements still land in it.
            (self.window_end - now_ms).max(0) / 1000 + 86_400
        }
    }
}

/// What one request asks of every scope.
#[derive(Debug, Clone)]
pub struct Demand {
    /// The admission's id in the ledger ([`SpendRecord::lease_id`]).
    pub request_id: String,
    /// Worst case: every prompt token and `max_tokens` of output at the group's dearest price.
    pub cost: Cost,
    /// Prompt token estimate, counted against tpm now and corrected at settlement.
    pub tokens: u64,
    /// How long the reservation holds if the request never settles (a crashed replica).
    pub lease_ms: u64,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "budget of {scope} exceeded: limit {limit}, spent {spent}, reserved by requests in flight {reserved}, this request needs up to {needed}"
    )]
    Budget {
        scope: String,
        limit: Cost,
        spent: Cost,
        reserved: Cost,
        needed: Cost,
        /// Unix ms when the window resets (`None`: a lifetime budget).
        resets_at_ms: Option<i64>,
    },
    #[error("rate limit of {scope} reached: {limit} requests per minute")]
    Rpm {
        scope: String,
        limit: u64,
        retry_after_ms: u64,
    },
    #[error("token rate limit of {scope} reached: {limit} tokens per minute ({used} used)")]
    Tpm {
        scope: String,
        limit: u64,
        used: u64,
        retry_after_ms: u64,
    },
    #[error("{scope} already has {limit} {what} in flight ({setting})",
        what = if scope.starts_with(STREAMS_SCOPE) { "streams" } else { "requests" },
        setting = if scope.starts_with(STREAMS_SCOPE) { "general_settings.max_streams_per_key" } else { "max_parallel_requests" })]
    Parallel { scope: String, limit: u32 },
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Budget { .. } => "BUDGET_EXCEEDED",
            Refusal::Rpm { .. } | Refusal::Tpm { .. } => "RATE_LIMITED",
            Refusal::Parallel { .. } => "PARALLEL_LIMIT",
        }
    }
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Refusal::Rpm { retry_after_ms, .. } | Refusal::Tpm { retry_after_ms, .. } => {
                Some(*retry_after_ms)
            }
            Refusal::Budget { resets_at_ms, .. } => resets_at_ms.map(|r| (r - now_ms()).max(0) as u64),
            Refusal::Parallel { .. } => Some(1000),
        }
    }
    pub fn scope(&self) -> &str {
        match self {
            Refusal::Budget { scope, .. }
            | Refusal::Rpm { scope, .. }
            | Refusal::Tpm { scope, .. }
            | Refusal::Parallel { scope, .. } => scope,
        }
    }
}

/// An admitted request: what is left, for the caller's `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Grant {
    pub rpm_remaining: Option<u64>,
    pub tpm_remaining: Option<u64>,
    /// The minute (unix ms / 60000, on the ledger's clock) whose tpm count holds this request's
    /// estimate, corrected at settlement.
    pub minute: i64,
}

/// What one request cost, for settlement and the spend log.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpendRecord {
    pub request_id: String,
    pub key_id: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub end_user: Option<String>,
    pub model_group: String,
    pub deployment: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: Cost,
    pub latency_ms: u64,
    /// `ok`, or the error reason.
    pub status: String,
    /// Unix ms.
    pub at_ms: i64,
    /// The prompt estimate counted against tpm at admission.
    #[serde(skip)]
    pub estimated_tokens: u64,
    #[serde(skip)]
    pub minute: i64,
    /// The ledger's id of the admission (its leases and done marker), unique per admission even
    /// when callers reuse a request id; empty: the request id.
    #[serde(skip)]
    pub lease_id: String,
}

impl SpendRecord {
    /// The id the ledger knows this request's reservation by.
    pub fn lease_id(&self) -> &str {
        if self.lease_id.is_empty() {
            &self.request_id
        } else {
            &self.lease_id
        }
    }
    fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
    /// The report dimensions this record counts under (`key:<id>`, `model:<group>`, ...).
    fn dimensions(&self) -> Vec<String> {
        let mut d = vec!["all".to_string(), format!("model:{}", self.model_group)];
        for (kind, v) in [
            ("key", &self.key_id),
            ("team", &self.team_id),
            ("user", &self.user_id),
            ("end_user", &self.end_user),
        ] {
            if let Some(v) = v {
                d.push(format!("{kind}:{v}"));
            }
        }
        d
    }
}

/// Spend of one scope in its current window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScopeSpend {
    pub spent: Cost,
    pub reserved: Cost,
}

/// One row of a spend report: spend of `name` (e.g. `key:key-abc`) on `day` (`YYYY-MM-DD`, UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct SpendRow {
    pub day: String,
    pub name: String,
    pub cost: Cost,
    pub requests: u64,
    pub tokens: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the budget ledger is unreachable: {0}")]
    Unavailable(String),
}

/// Budgets, rate limits and spend, atomically across every scope of a request.
#[tonic::async_trait]
pub trait Ledger: Send + Sync {
    /// Checks every scope and, only if all have room, reserves in all of them.
    async fn admit(&self, scopes: &[Scope], demand: &Demand) -> Result<Result<Grant, Refusal>, LedgerError>;
    /// Releases the reservation, charges the actual cost to every scope's budget window, corrects the
    /// tpm count and writes the spend record. Returns the scopes whose soft budget this crossed.
    async fn settle(&self, scopes: &[Scope], record: &SpendRecord) -> Result<Vec<String>, LedgerError>;
    /// Extends the request's leases by `lease_ms` from now (a request still running near its
    /// lease's end; a crashed replica stops renewing, so its leases still run out).
    /// Gives back what an admission whose outcome is unknown (the call timed out) may have
    /// reserved, and makes that admission, should it still arrive, reserve nothing. Idempotent.
    async fn release(&self, scopes: &[Scope], request_id: &str) -> Result<(), LedgerError>;
    async fn renew(&self, scopes: &[Scope], request_id: &str, lease_ms: u64) -> Result<(), LedgerError>;
    /// Current-window spend of a scope.
    async fn spend(&self, scope: &Scope) -> Result<ScopeSpend, LedgerError>;
    /// Spend per day for names starting with `prefix` (`key:`, `team:`, `model:`, ... or `all`),
    /// over `from..=to` (`YYYY-MM-DD`).
    async fn report(&self, prefix: &str, from: &str, to: &str) -> Result<Vec<SpendRow>, LedgerError>;
    /// The most recent spend records, newest first.
    async fn recent(&self, limit: usize) -> Result<Vec<SpendRecord>, LedgerError>;
}

pub type SharedLedger = Arc<dyn Ledger>;

pub use crate::domain::now_ms;

pub use crate::domain::day_of;
