//! The fleet's ledger on Redis. Each step is one Lua script over every scope of the request, on
//! Redis' clock, so N replicas admit exactly as one would. All quota keys share the `{q}` hash tag:
//! one slot, so the multi-scope scripts also run on Redis Cluster.
//!
//! Per scope: `l` (zset: request id -> lease expiry), `r` (hash: request id -> "window:amount"),
//! `b:<window start>` (hash: `s` spent, `r` reserved, nano-USD), `q` (hash: `m` minute, `r` requests,
//! `t` tokens). Per day: `d:<YYYY-MM-DD>` (hash: name -> cost, `n|name` -> requests,
//! `t|name` -> tokens). The spend log: `log` (a capped stream).

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use redis::Script;

use super::{Demand, Grant, Ledger, LedgerError, Refusal, Scope, ScopeSpend, SpendRecord, SpendRow, now_ms};
use crate::{
    cluster::redis::{Conn, Redis, RedisTarget},
    domain::Cost,
};

const BASE: &str = "sb:v1:{q}";

/// How long a settled or released request's id is remembered: a repeat of its settlement (a retry
/// of a call that timed out but had run) or its admission arriving later than that would count
/// again. Memory: about 100 bytes per limited request in the window.
const DONE_TTL_MS: u64 = 300_000;

fn done_key(request_id: &str) -> String {
    format!("{BASE}:x:{request_id}")
}

/// KEYS: per scope l, r, b, q; then the restore marker and the request's done marker. ARGV: request
/// id, lease ms, amount, tokens, n, then per scope budget max (-1: none), window start, budget ttl s
/// (0: none), rpm, tpm, parallel (-1: none), leased; then guarded (1/0).
/// Returns {0, rpm_left, tpm_left, minute}, {1, scope index, kind, limit, used, extra}, {2}
/// (guarded and not restored yet) or {3} (the request was settled or released already).
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = math.floor(now / 60000)
local rid, lease, amount, tokens, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
-- Guarded ledgers (a leader checkpoints spend into etcd): a Redis that lost its data answers
-- nothing until the checkpoint is restored, so budgets cannot restart from zero.
if ARGV[6 + n * 7] == '1' and redis.call('EXISTS', KEYS[n * 4 + 1]) == 0 then return {2} end
-- Settled or released already (this admission arrived late, after its caller gave up on it).
if redis.call('EXISTS', KEYS[n * 4 + 2]) == 1 then return {3} end
local rpm_left, tpm_left = -1, -1
for i = 0, n - 1 do
  local L, R, B, Q = KEYS[i*4+1], KEYS[i*4+2], KEYS[i*4+3], KEYS[i*4+4]
  local a = 6 + i * 7
  local bmax, window, rpm, tpm, par = tonumber(ARGV[a]), ARGV[a+1], tonumber(ARGV[a+3]), tonumber(ARGV[a+4]), tonumber(ARGV[a+5])
  local dead = redis.call('ZRANGEBYSCORE', L, '-inf', now)
  for _, id in ipairs(dead) do
    local v = redis.call('HGET', R, id)
    if v then
      local sep = string.find(v, ':', 1, true)
      local amt = tonumber(string.sub(v, sep + 1))
      if amt > 0 and string.sub(v, 1, sep - 1) == window then
        redis.call('HINCRBY', B, 'r', -amt)
      end
      redis.call('HDEL', R, id)
    end
    redis.call('ZREM', L, id)
  end
  if par >= 0 then
    local busy = redis.call('ZCARD', L)
    if busy >= par then return {1, i, 'parallel', par, busy, 0} end
  end
  if bmax >= 0 then
    local spent = tonumber(redis.call('HGET', B, 's') or '0')
    local resv = tonumber(redis.call('HGET', B, 'r') or '0')
    if spent + resv + amount > bmax then return {1, i, 'budget', bmax, spent, resv} end
  end
  if rpm >= 0 or tpm >= 0 then
    local r, tk = 0, 0
    if tonumber(redis.call('HGET', Q, 'm') or '-1') == minute then
      r = tonumber(redis.call('HGET', Q, 'r') or '0')
      tk = tonumber(redis.call('HGET', Q, 't') or '0')
    end
    local wait = 60000 - now % 60000
    if rpm >= 0 then
      if r + 1 > rpm then return {1, i, 'rpm', rpm, r, wait} end
      if rpm_left < 0 or rpm - r - 1 < rpm_left then rpm_left = rpm - r - 1 end
    end
    if tpm >= 0 then
      if tk > 0 and tk + tokens > tpm then return {1, i, 'tpm', tpm, tk, wait} end
      local left = math.max(tpm - tk - tokens, 0)
      if tpm_left < 0 or left < tpm_left then tpm_left = left end
    end
  end
end
for i = 0, n - 1 do
  local L, R, B, Q = KEYS[i*4+1], KEYS[i*4+2], KEYS[i*4+3], KEYS[i*4+4]
  local a = 6 + i * 7
  local bmax, window, ttl, rpm, tpm, leased = tonumber(ARGV[a]), ARGV[a+1], tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), tonumber(ARGV[a+4]), ARGV[a+6]
  if leased == '1' then
    local amt = 0
    if bmax >= 0 then amt = amount end
    redis.call('ZADD', L, now + lease, rid)
    redis.call('HSET', R, rid, window .. ':' .. string.format('%d', amt))
    redis.call('PEXPIRE', L, lease + 60000)
    redis.call('PEXPIRE', R, lease + 60000)
    if amt > 0 then
      redis.call('HINCRBY', B, 'r', amt)
      if ttl > 0 then redis.call('EXPIRE', B, ttl) end
    end
  end
  if rpm >= 0 or tpm >= 0 then
    if tonumber(redis.call('HGET', Q, 'm') or '-1') ~= minute then
      redis.call('HSET', Q, 'm', minute, 'r', 0, 't', 0)
    end
    redis.call('HINCRBY', Q, 'r', 1)
    redis.call('HINCRBY', Q, 't', tokens)
    redis.call('EXPIRE', Q, 120)
  end
end
return {0, rpm_left, tpm_left, minute}
"#;

/// KEYS: per scope l, r, b, q; then the day hash, the log stream and the request's done marker.
/// ARGV: request id, cost, token delta, minute, n, record (1: a settlement, 0: a release that only
/// gives the reservation back), then per scope window start, budget ttl s (-1: no budget), soft
/// (-1), tpm (0/1); then the log record and the dimensions (tokens at ARGV[#]).
/// Idempotent: the done marker (kept `DONE_TTL_MS`) makes a repeat, e.g. a retry of a call that
/// timed out but ran, change nothing, and a late admission of the same request reserve nothing.
/// Returns the indexes of scopes whose soft budget this settlement crossed.
const SETTLE: &str = r#"
local rid, cost, delta, minute, n, record = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), ARGV[6]
if not redis.call('SET', KEYS[n*4+3], '1', 'NX', 'PX', DONE_TTL_MS) then return {} end
local crossed = {}
for i = 0, n - 1 do
  local L, R, B, Q = KEYS[i*4+1], KEYS[i*4+2], KEYS[i*4+3], KEYS[i*4+4]
  local a = 7 + i * 4
  local window, ttl, soft, tpm = ARGV[a], tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), ARGV[a+3]
  local v = redis.call('HGET', R, rid)
  if v then
    local sep = string.find(v, ':', 1, true)
    local amt = tonumber(string.sub(v, sep + 1))
    if amt > 0 and string.sub(v, 1, sep - 1) == window then
      redis.call('HINCRBY', B, 'r', -amt)
    end
    redis.call('HDEL', R, rid)
    redis.call('ZREM', L, rid)
  end
  if ttl >= 0 and record == '1' then
    local before = tonumber(redis.call('HGET', B, 's') or '0')
    local after = redis.call('HINCRBY', B, 's', cost)
    if ttl > 0 and redis.call('TTL', B) < 0 then redis.call('EXPIRE', B, ttl) end
    if soft >= 0 and before < soft and after >= soft then crossed[#crossed + 1] = i end
  end
  if tpm == '1' and record == '1' and redis.call('HGET', Q, 'm') == minute then
    local now = tonumber(redis.call('HGET', Q, 't') or '0')
    redis.call('HSET', Q, 't', math.max(now + delta, 0))
  end
end
if record ~= '1' then return crossed end
local D, X = KEYS[n*4+1], KEYS[n*4+2]
local a = 7 + n * 4
local tokens = tonumber(ARGV[a+1])
for j = a + 2, #ARGV do
  redis.call('HINCRBY', D, ARGV[j], cost)
  redis.call('HINCRBY', D, 'n|' .. ARGV[j], 1)
  redis.call('HINCRBY', D, 't|' .. ARGV[j], tokens)
end
redis.call('EXPIRE', D, 400 * 86400)
redis.call('XADD', X, 'MAXLEN', '~', '100000', '*', 'r', ARGV[a])
return crossed
"#;

/// KEYS: one scope's l, r, b. ARGV: window start. Purges expired leases (as ADMIT does), then
/// returns {spent, reserved}.
const SPEND: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local L, R, B, window = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
for _, id in ipairs(redis.call('ZRANGEBYSCORE', L, '-inf', now)) do
  local v = redis.call('HGET', R, id)
  if v then
    local sep = string.find(v, ':', 1, true)
    local amt = tonumber(string.sub(v, sep + 1))
    if amt > 0 and string.sub(v, 1, sep - 1) == window then
      redis.call('HINCRBY', B, 'r', -amt)
    end
    redis.call('HDEL', R, id)
  end
  redis.call('ZREM', L, id)
end
return {tonumber(redis.call('HGET', B, 's') or '0'), tonumber(redis.call('HGET', B, 'r') or '0')}
"#;

/// KEYS: each leased scope's l. ARGV: request id, lease ms. Extends live leases only (XX).
const RENEW: &str = r#"
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
for _, L in ipairs(KEYS) do
  redis.call('ZADD', L, 'XX', expiry, ARGV[1])
  redis.call('PEXPIRE', L, tonumber(ARGV[2]) + 60000)
end
return 0
"#;

fn scope_keys(id: &str, window: i64) -> [String; 4] {
    let s = format!("{BASE}:s:{id}");
    [
        format!("{s}:l"),
        format!("{s}:r"),
        format!("{s}:b:{window}"),
        format!("{s}:q"),
    ]
}

pub struct FleetLedger {
    guarded: bool,
    /// Unix ms until which calls fail at once: after a failed Redis call, one second without
    /// trying, so a dead or partitioned Redis costs a request the command timeout at most once a
    /// second per replica, not every time (budgets then fail closed, rate limits open, at once).
    down_until_ms: std::sync::atomic::AtomicI64,
    redis: Arc<ArcSwapOption<Redis>>,
    admit: Script,
    settle: Script,
    spend: Script,
    renew: Script,
}

impl FleetLedger {
    /// Connects in the background (and again whenever the connection is lost); until connected,
    /// every call fails with `Unavailable` and each rule applies its failure mode.
    /// `guarded`: a leader checkpoints spend (etcd is configured), so admissions wait for a Redis
    /// that lost its data to be restored first.
    pub fn start(target: impl Into<RedisTarget>, guarded: bool) -> Arc<Self> {
        let (admit, settle, spend, renew) = (
            Script::new(ADMIT),
            Script::new(&SETTLE.replace("DONE_TTL_MS", &DONE_TTL_MS.to_string())),
            Script::new(SPEND),
            Script::new(RENEW),
        );
        let scripts = vec![admit.clone(), settle.clone(), spend.clone(), renew.clone()];
        let redis = crate::cluster::redis::connect_in_background(
            target.into(),
            Duration::from_millis(500),
            "ledger",
            scripts,
        );
        Arc::new(Self {
            guarded,
            down_until_ms: std::sync::atomic::AtomicI64::new(0),
            redis,
            admit,
            settle,
            spend,
            renew,
        })
    }

    pub(super) fn connection(&self) -> Result<Conn, LedgerError> {
        self.conn()
    }

    fn conn(&self) -> Result<Conn, LedgerError> {
        if now_ms() < self.down_until_ms.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(LedgerError::Unavailable(
                "redis failed within the last second: not retried yet".into(),
            ));
        }
        self.redis
            .load()
            .as_ref()
            .map(|r| r.conn())
            .ok_or_else(|| LedgerError::Unavailable("not connected to redis".into()))
    }
}

fn unavailable(e: redis::RedisError) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

impl FleetLedger {
    /// One SETTLE call: the settlement of `record`, or (`None`) a release of `request_id` that
    /// only gives its reservation back and writes no spend.
    fn settle_invocation(
        &self,
        scopes: &[Scope],
        request_id: &str,
        record: Option<&SpendRecord>,
    ) -> redis::ScriptInvocation<'_> {
        let now = now_ms();
        let mut inv = self.settle.prepare_invoke();
        for s in scopes {
            for k in scope_keys(&s.id, s.budget.map_or(0, |b| b.window_start)) {
                inv.key(k);
            }
        }
        inv.key(format!(
            "{BASE}:d:{}",
            super::day_of(record.map_or(now, |r| r.at_ms))
        ));
        inv.key(format!("{BASE}:log"));
        inv.key(done_key(request_id));
        inv.arg(request_id);
        match record {
            Some(r) => inv
                .arg(r.cost.nano_usd())
                .arg(r.tokens() as i64 - r.estimated_tokens as i64)
                .arg(r.minute),
            None => inv.arg(0).arg(0).arg(0),
        };
        inv.arg(scopes.len())
            .arg(if record.is_some() { "1" } else { "0" });
        for s in scopes {
            let b = s.budget;
            let soft = record.and(b).and_then(|b| b.soft);
            inv.arg(b.map_or(0, |b| b.window_start))
                .arg(b.map_or(-1, |b| b.ttl_secs(now)))
                .arg(soft.map_or(-1, |c| c.nano_usd()))
                .arg(if record.is_some() && s.tpm.is_some() {
                    "1"
                } else {
                    "0"
                });
        }
        if let Some(r) = record {
            inv.arg(serde_json::to_string(r).unwrap_or_default())
                .arg(r.tokens());
            for d in r.dimensions() {
                inv.arg(d);
            }
        }
        inv
    }

    /// A failed Redis call: fail fast for a second.
    fn tripped(&self, e: redis::RedisError) -> LedgerError {
        if self
            .down_until_ms
            .swap(now_ms() + 1000, std::sync::atomic::Ordering::Relaxed)
            < now_ms()
        {
            tracing::warn!(error = %e, "ledger: redis call failed; failing fast for a second");
            metrics::counter!("switchboard_ledger_trips_total").increment(1);
        }
        unavailable(e)
    }
}

#[tonic::async_trait]
impl Ledger for FleetLedger {
    async fn admit(&self, scopes: &[Scope], d: &Demand) -> Result<Result<Grant, Refusal>, LedgerError> {
        let mut conn = self.conn()?;
        let now = now_ms();
        let mut inv = self.admit.prepare_invoke();
        for s in scopes {
            for k in scope_keys(&s.id, s.budget.map_or(0, |b| b.window_start)) {
                inv.key(k);
            }
        }
        inv.arg(&d.request_id)
            .arg(d.lease_ms)
            .arg(d.cost.nano_usd())
            .arg(d.tokens)
            .arg(scopes.len());
        let opt = |v: Option<u64>| v.map_or(-1, |v| v as i64);
        for s in scopes {
            let b = s.budget;
            // A soft-only budget (no max) reserves nothing and refuses nothing.
            inv.arg(b.and_then(|b| b.max).map_or(-1, |m| m.nano_usd()))
                .arg(b.map_or(0, |b| b.window_start))
                .arg(b.map_or(0, |b| b.ttl_secs(now)))
                .arg(opt(s.rpm))
                .arg(opt(s.tpm))
                .arg(opt(s.parallel.map(u64::from)))
                .arg(if s.leased() { "1" } else { "0" });
        }
        inv.key(super::checkpoint::MARKER)
            .key(done_key(&d.request_id))
            .arg(if self.guarded { "1" } else { "0" });
        let reply: Vec<redis::Value> = inv.invoke_async(&mut conn).await.map_err(|e| self.tripped(e))?;
        let int = |i: usize| match reply.get(i) {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        };
        if int(0) == 2 {
            return Err(LedgerError::Unavailable(
                "redis lost its data: waiting for the leader to restore the spend checkpoint".into(),
            ));
        }
        if int(0) == 3 {
            return Err(LedgerError::Unavailable(format!(
                "request {} was already settled or released",
                d.request_id
            )));
        }
        if int(0) == 0 {
            let left = |v: i64| (v >= 0).then_some(v as u64);
            return Ok(Ok(Grant {
                rpm_remaining: left(int(1)),
                tpm_remaining: left(int(2)),
                minute: int(3),
            }));
        }
        let scope = scopes
            .get(int(1) as usize)
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let kind = match reply.get(2) {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        let (limit, used, extra) = (int(3), int(4), int(5));
        Ok(Err(match kind.as_str() {
            "parallel" => Refusal::Parallel {
                scope,
                limit: limit as u32,
            },
            "budget" => {
                let b = scopes[int(1) as usize].budget;
                Refusal::Budget {
                    scope,
                    limit: Cost::from_nano_usd(limit),
                    spent: Cost::from_nano_usd(used),
                    reserved: Cost::from_nano_usd(extra),
                    needed: d.cost,
                    resets_at_ms: b.map(|b| b.window_end).filter(|e| *e != i64::MAX),
                }
            }
            "rpm" => Refusal::Rpm {
                scope,
                limit: limit as u64,
                retry_after_ms: extra as u64,
            },
            _ => Refusal::Tpm {
                scope,
                limit: limit as u64,
                used: used as u64,
                retry_after_ms: extra as u64,
            },
        }))
    }

    async fn settle(&self, scopes: &[Scope], r: &SpendRecord) -> Result<Vec<String>, LedgerError> {
        let mut conn = self.conn()?;
        let crossed: Vec<i64> = self
            .settle_invocation(scopes, r.lease_id(), Some(r))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.tripped(e))?;
        Ok(crossed
            .into_iter()
            .filter_map(|i| scopes.get(i as usize).map(|s| s.id.clone()))
            .collect())
    }

    async fn release(&self, scopes: &[Scope], request_id: &str) -> Result<(), LedgerError> {
        let mut conn = self.conn()?;
        let _: Vec<i64> = self
            .settle_invocation(scopes, request_id, None)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.tripped(e))?;
        Ok(())
    }

    async fn renew(&self, scopes: &[Scope], request_id: &str, lease_ms: u64) -> Result<(), LedgerError> {
        let mut conn = self.conn()?;
        let mut inv = self.renew.prepare_invoke();
        for s in scopes.iter().filter(|s| s.leased()) {
            let [l, ..] = scope_keys(&s.id, 0);
            inv.key(l);
        }
        inv.arg(request_id).arg(lease_ms);
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(|e| self.tripped(e))?;
        Ok(())
    }

    async fn spend(&self, scope: &Scope) -> Result<ScopeSpend, LedgerError> {
        let mut conn = self.conn()?;
        let window = scope.budget.map_or(0, |b| b.window_start);
        let [l, r, b, _] = scope_keys(&scope.id, window);
        let (s, r): (i64, i64) = self
            .spend
            .key(l)
            .key(r)
            .key(b)
            .arg(window)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.tripped(e))?;
        Ok(ScopeSpend {
            spent: Cost::from_nano_usd(s),
            reserved: Cost::from_nano_usd(r.max(0)),
        })
    }

    async fn report(&self, prefix: &str, from: &str, to: &str) -> Result<Vec<SpendRow>, LedgerError> {
        let mut conn = self.conn()?;
        let mut rows = Vec::new();
        for day in days_between(from, to) {
            let all: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
                .arg(format!("{BASE}:d:{day}"))
                .query_async(&mut conn)
                .await
                .map_err(|e| self.tripped(e))?;
            for (name, cost) in &all {
                if name.starts_with("n|") || name.starts_with("t|") || !name.starts_with(prefix) {
                    continue;
                }
                rows.push(SpendRow {
                    day: day.clone(),
                    name: name.clone(),
                    cost: Cost::from_nano_usd(*cost),
                    requests: all.get(&format!("n|{name}")).copied().unwrap_or(0) as u64,
                    tokens: all.get(&format!("t|{name}")).copied().unwrap_or(0) as u64,
                });
            }
        }
        rows.sort_by(|a, b| (&a.day, &a.name).cmp(&(&b.day, &b.name)));
        Ok(rows)
    }

    async fn recent(&self, limit: usize) -> Result<Vec<SpendRecord>, LedgerError> {
        let mut conn = self.conn()?;
        // [[id, [field, value, ...]], ...]
        let reply: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
            .arg(format!("{BASE}:log"))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.tripped(e))?;
        Ok(reply
            .iter()
            .filter_map(|(_, fields)| fields.get(1))
            .filter_map(|j| serde_json::from_str(j).ok())
            .collect())
    }
}

/// Every `YYYY-MM-DD` from `from` to `to`, at most 400 days.
fn days_between(from: &str, to: &str) -> Vec<String> {
    let parse = |s: &str| -> Option<i64> {
        let mut it = s.splitn(3, '-').map(|p| p.parse::<i64>().ok());
        let (y, m, d) = (it.next()??, it.next()??, it.next()??);
        Some(crate::domain::days_from_civil(y, m as u32, d as u32))
    };
    let (Some(a), Some(b)) = (parse(from), parse(to)) else {
        return Vec::new();
    };
    (a..=b.min(a + 400))
        .map(|d| super::day_of(d * 86_400_000))
        .collect()
}
