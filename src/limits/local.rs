//! The ledger of a single node: the same rules as the Redis scripts, under one mutex (held for
//! microseconds, never across an await).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Mutex,
};

use super::{Demand, Grant, Ledger, LedgerError, Refusal, Scope, ScopeSpend, SpendRecord, SpendRow, day_of};
use crate::domain::Cost;

/// Spend records kept for `recent` (the fleet ledger keeps more, in a Redis stream).
const RECENT: usize = 10_000;

#[derive(Default)]
struct ScopeState {
    /// request id -> (expiry ms, window start, reserved)
    leases: HashMap<String, (i64, i64, Cost)>,
    /// window start -> (spent, reserved)
    windows: HashMap<i64, (Cost, Cost)>,
    minute: i64,
    requests: u64,
    tokens: u64,
}

impl ScopeState {
    fn purge(&mut self, now: i64) {
        let windows = &mut self.windows;
        self.leases.retain(|_, (expiry, window, amount)| {
            if *expiry > now {
                return true;
            }
            if let Some(w) = windows.get_mut(window) {
                w.1 = w.1 - *amount;
            }
            false
        });
    }

    fn minute_counts(&self, minute: i64) -> (u64, u64) {
        if self.minute == minute {
            (self.requests, self.tokens)
        } else {
            (0, 0)
        }
    }
}

#[derive(Default)]
struct State {
    scopes: HashMap<String, ScopeState>,
    /// (day, name) -> (cost, requests, tokens)
    daily: BTreeMap<(String, String), (Cost, u64, u64)>,
    recent: VecDeque<SpendRecord>,
}

pub struct LocalLedger {
    state: Mutex<State>,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl Default for LocalLedger {
    fn default() -> Self {
        Self::with_clock(Box::new(super::now_ms))
    }
}

impl LocalLedger {
    /// A ledger on a given clock (unix ms), for tests of windows and leases.
    pub fn with_clock(clock: Box<dyn Fn() -> i64 + Send + Sync>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[tonic::async_trait]
impl Ledger for LocalLedger {
    async fn admit(&self, scopes: &[Scope], d: &Demand) -> Result<Result<Grant, Refusal>, LedgerError> {
        let now = (self.clock)();
        let minute = now.div_euclid(60_000);
        let mut st = self.lock();
        let mut grant = Grant {
            minute,
            ..Grant::default()
        };
        for s in scopes {
            let sc = st.scopes.entry(s.id.clone()).or_default();
            sc.purge(now);
            if let Some(limit) = s.parallel
                && sc.leases.len() as u64 >= u64::from(limit)
            {
                return Ok(Err(Refusal::Parallel {
                    scope: s.id.clone(),
                    limit,
                }));
            }
            if let Some(b) = &s.budget
                && let Some(max) = b.max
            {
                let (spent, reserved) = sc.windows.get(&b.window_start).copied().unwrap_or_default();
                if spent + reserved + d.cost > max {
                    return Ok(Err(Refusal::Budget {
                        scope: s.id.clone(),
                        limit: max,
                        spent,
                        reserved,
                        needed: d.cost,
                        resets_at_ms: (b.window_end != i64::MAX).then_some(b.window_end),
                    }));
                }
            }
            let (requests, tokens) = sc.minute_counts(minute);
            let retry_after_ms = (60_000 - now.rem_euclid(60_000)) as u64;
            if let Some(limit) = s.rpm {
                if requests + 1 > limit {
                    return Ok(Err(Refusal::Rpm {
                        scope: s.id.clone(),
                        limit,
                        retry_after_ms,
                    }));
                }
                grant.rpm_remaining = Some(grant.rpm_remaining.unwrap_or(u64::MAX).min(limit - requests - 1));
            }
            if let Some(limit) = s.tpm {
                if tokens > 0 && tokens + d.tokens > limit {
                    return Ok(Err(Refusal::Tpm {
                        scope: s.id.clone(),
                        limit,
                        used: tokens,
                        retry_after_ms,
                    }));
                }
                let left = limit.saturating_sub(tokens + d.tokens);
                grant.tpm_remaining = Some(grant.tpm_remaining.unwrap_or(u64::MAX).min(left));
            }
        }
        for s in scopes {
            let sc = st.scopes.entry(s.id.clone()).or_default();
            if s.leased() {
                let window = s.budget.map_or(0, |b| b.window_start);
                let amount = if s.budget.is_some() { d.cost } else { Cost::ZERO };
                sc.leases
                    .insert(d.request_id.clone(), (now + d.lease_ms as i64, window, amount));
                if s.budget.is_some() {
                    // Past windows are done once nothing is reserved in them (memory stays bounded).
                    sc.windows
                        .retain(|start, (_, reserved)| *start >= window || *reserved > Cost::ZERO);
                    let w = sc.windows.entry(window).or_default();
                    w.1 = w.1 + amount;
                }
            }
            if s.rpm.is_some() || s.tpm.is_some() {
                if sc.minute != minute {
                    (sc.minute, sc.requests, sc.tokens) = (minute, 0, 0);
                }
                sc.requests += 1;
                sc.tokens += d.tokens;
            }
        }
        Ok(Ok(grant))
    }

    async fn settle(&self, scopes: &[Scope], r: &SpendRecord) -> Result<Vec<String>, LedgerError> {
        let mut st = self.lock();
        let mut crossed = Vec::new();
        for s in scopes {
            let sc = st.scopes.entry(s.id.clone()).or_default();
            if let Some((_, window, amount)) = sc.leases.remove(r.lease_id())
                && let Some(w) = sc.windows.get_mut(&window)
            {
                w.1 = w.1 - amount;
            }
            if let Some(b) = &s.budget {
                let w = sc.windows.entry(b.window_start).or_default();
                let before = w.0;
                w.0 = w.0 + r.cost;
                if b.soft.is_some_and(|soft| before < soft && w.0 >= soft) {
                    crossed.push(s.id.clone());
                }
            }
            if s.tpm.is_some() && sc.minute == r.minute {
                sc.tokens = (sc.tokens + r.tokens()).saturating_sub(r.estimated_tokens);
            }
        }
        let day = day_of(r.at_ms);
        for name in r.dimensions() {
            let e = st.daily.entry((day.clone(), name)).or_default();
            e.0 = e.0 + r.cost;
            e.1 += 1;
            e.2 += r.tokens();
        }
        if st.recent.len() == RECENT {
            st.recent.pop_front();
        }
        st.recent.push_back(r.clone());
        Ok(crossed)
    }

    async fn release(&self, scopes: &[Scope], request_id: &str) -> Result<(), LedgerError> {
        let mut st = self.lock();
        for s in scopes {
            let sc = st.scopes.entry(s.id.clone()).or_default();
            if let Some((_, window, amount)) = sc.leases.remove(request_id)
                && let Some(w) = sc.windows.get_mut(&window)
            {
                w.1 = w.1 - amount;
            }
        }
        Ok(())
    }

    async fn renew(&self, scopes: &[Scope], request_id: &str, lease_ms: u64) -> Result<(), LedgerError> {
        let expiry = (self.clock)() + lease_ms as i64;
        let mut st = self.lock();
        for s in scopes {
            if let Some(lease) = st
                .scopes
                .get_mut(&s.id)
                .and_then(|sc| sc.leases.get_mut(request_id))
            {
                lease.0 = expiry;
            }
        }
        Ok(())
    }

    async fn spend(&self, scope: &Scope) -> Result<ScopeSpend, LedgerError> {
        let now = (self.clock)();
        let mut st = self.lock();
        let sc = st.scopes.entry(scope.id.clone()).or_default();
        sc.purge(now);
        let window = scope.budget.map_or(0, |b| b.window_start);
        let (spent, reserved) = sc.windows.get(&window).copied().unwrap_or_default();
        Ok(ScopeSpend { spent, reserved })
    }

    async fn report(&self, prefix: &str, from: &str, to: &str) -> Result<Vec<SpendRow>, LedgerError> {
        let st = self.lock();
        Ok(st
            .daily
            .iter()
            .filter(|((day, name), _)| day.as_str() >= from && day.as_str() <= to && name.starts_with(prefix))
            .map(|((day, name), (cost, requests, tokens))| SpendRow {
                day: day.clone(),
                name: name.clone(),
                cost: *cost,
                requests: *requests,
                tokens: *tokens,
            })
            .collect())
    }

    async fn recent(&self, limit: usize) -> Result<Vec<SpendRecord>, LedgerError> {
        Ok(self.lock().recent.iter().rev().take(limit).cloned().collect())
    }
}
