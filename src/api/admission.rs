//! Admission: the caller's key, team, user, end user and the gateway budget become ledger scopes;
//! the request's worst-case cost and token estimate are reserved in all of them at once, and the
//! [`Ticket`] settles the actual cost afterwards (off the request path). Requests whose caller has no
//! limits skip the ledger entirely; their spend record is still written.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::error::ApiError;
use crate::{
    auth::{Limits, Principal, Window},
    config::QuotaSettings,
    domain::{Cost, DeploymentId, Usage},
    limits::{
        Budget, Demand, Grant, LedgerError, Refusal, STREAMS_SCOPE, Scope, ScopeSpend, Settler, SpendRecord,
        now_ms,
    },
    router::Group,
};

/// Longest an answer waits for its spend to be on record (the ledger's own command timeout is
/// shorter; past this the settlement goes on in the background).
const SETTLE_WAIT: Duration = Duration::from_secs(1);

/// Longest a request waits for in-flight reservations to settle before a budget refuses it.
const BUDGET_WAIT: Duration = Duration::from_secs(5);

pub struct Quotas {
    pub settler: Settler,
    pub settings: QuotaSettings,
    global: Limits,
    end_user: Limits,
}

impl Quotas {
    pub fn new(settler: Settler, settings: QuotaSettings) -> Self {
        let global = Limits {
            max_budget: settings.global_budget.map(Cost::from_usd),
            budget_duration: settings
                .global_budget_duration
                .as_deref()
                .and_then(|d| Window::parse(d).ok()),
            ..Limits::default()
        };
        let end_user = Limits {
            max_budget: settings.end_user_budget.map(Cost::from_usd),
            ..Limits::default()
        };
        Self {
            settler,
            settings,
            global,
            end_user,
        }
    }

    /// Every scope with a limit that applies to this caller.
    fn scopes(&self, principal: &Principal, end_user: Option<&str>, stream: bool, now: i64) -> Vec<Scope> {
        let mut out = Vec::new();
        let mut add = |id: String, limits: &Limits, anchor: i64| {
            if limits.is_empty() {
                return;
            }
            let budget = (limits.max_budget.is_some() || limits.soft_budget.is_some()).then(|| {
                let (window_start, window_end) = limits
                    .budget_duration
                    .map_or((0, i64::MAX), |w| w.around(anchor, now));
                Budget {
                    max: limits.max_budget,
                    soft: limits.soft_budget,
                    window_start,
                    window_end,
                }
            });
            out.push(Scope {
                id,
                budget,
                rpm: limits.rpm_limit,
                tpm: limits.tpm_limit,
                parallel: limits.max_parallel_requests,
            });
        };
        if let Principal::Key(who) = principal {
            add(format!("key:{}", who.key.id), &who.key.limits, who.key.created_ms);
            if let Some(n) = self.settings.max_streams_per_key.filter(|_| stream) {
                // A lease per open stream, in its own scope so that it never counts against the
                // key's max_parallel_requests.
                add(
                    format!("{STREAMS_SCOPE}key:{}", who.key.id),
                    &Limits {
                        max_parallel_requests: Some(n),
                        ..Limits::default()
                    },
                    0,
                );
            }
            if let Some(t) = &who.team {
                add(format!("team:{}", t.id), &t.limits, t.created_ms);
            }
            if let Some(u) = &who.user {
                add(format!("user:{}", u.id), &u.limits, u.created_ms);
            }
        }
        if let Some(e) = end_user.filter(|e| !e.is_empty()) {
            add(format!("end_user:{e}"), &self.end_user, 0);
        }
        add("global".into(), &self.global, 0);
        out
    }

    /// Current-window spend of a key, team or user with a budget (`None` without a budget, or when
    /// the ledger is unreachable), and when the window ends (`None`: a lifetime budget).
    pub async fn current_spend(
        &self,
        scope_id: String,
        limits: &Limits,
        anchor_ms: i64,
    ) -> Option<(ScopeSpend, Option<i64>)> {
        if limits.max_budget.is_none() && limits.soft_budget.is_none() {
            return None;
        }
        let (window_start, window_end) = limits
            .budget_duration
            .map_or((0, i64::MAX), |w| w.around(anchor_ms, now_ms()));
        let scope = Scope {
            id: scope_id,
            budget: Some(Budget {
                max: limits.max_budget,
                soft: limits.soft_budget,
                window_start,
                window_end,
            }),
            rpm: None,
            tpm: None,
            parallel: None,
        };
        let spend = self.settler.ledger().spend(&scope).await.ok()?;
        Some((spend, (window_end != i64::MAX).then_some(window_end)))
    }

    /// Reserves the request's worst case in every scope, or refuses it.
    pub async fn admit(&self, req: Admission<'_>) -> Result<Ticket, ApiError> {
        let now = now_ms();
        let scopes = self.scopes(req.principal, req.end_user, req.stream, now);
        // Measured only when some limit needs it (the common unlimited request skips the scan).
        let prompt_tokens = if scopes.is_empty() {
            0
        } else {
            (req.prompt_tokens)()
        };
        let mut grant = Grant::default();
        let scopes: Arc<[Scope]> = scopes.into();
        // The ledger's id for this admission (leases, settlement, its done marker): unique even
        // when callers send the same x-request-id twice, e.g. on a retry.
        let lease_id = if scopes.is_empty() {
            String::new()
        } else {
            format!("{}#{:016x}", req.request_id, fastrand::u64(..))
        };
        let mut reserved = !scopes.is_empty();
        if !scopes.is_empty() {
            let max_output = req
                .max_tokens
                .unwrap_or(req.group.map_or(0, |g| g.max_output_tokens));
            let worst = req
                .group
                .and_then(|g| g.worst_price)
                .map_or(Cost::ZERO, |p| p.worst_case(prompt_tokens, u64::from(max_output)));
            let demand = Demand {
                request_id: lease_id.clone(),
                cost: worst,
                tokens: prompt_tokens,
                lease_ms: self.settings.reservation_ttl.as_millis() as u64,
            };
            let waiting_until = Instant::now() + BUDGET_WAIT;
            let outcome = loop {
                let outcome = self.settler.ledger().admit(&scopes, &demand).await;
                // Refused only because requests in flight hold reservations that their actual
                // cost will mostly give back: wait for them to settle rather than refuse money
                // that is not spent (bounded; never past the budget).
                if let Ok(Err(Refusal::Budget {
                    limit, spent, needed, ..
                })) = &outcome
                    && *spent + *needed <= *limit
                    && Instant::now() < waiting_until
                {
                    metrics::counter!("switchboard_budget_waits_total").increment(1);
                    tokio::time::sleep(Duration::from_millis(10 + fastrand::u64(..20))).await;
                    continue;
                }
                break outcome;
            };
            match outcome {
                Ok(Ok(g)) => grant = g,
                Ok(Err(refusal)) => {
                    metrics::counter!("switchboard_quota_refusals_total", "reason" => refusal.reason())
                        .increment(1);
                    return Err(ApiError::Quota(refusal));
                }
                Err(LedgerError::Unavailable(why)) => {
                    let budgets = scopes.iter().any(|s| s.budget.is_some_and(|b| b.max.is_some()));
                    let rates = scopes
                        .iter()
                        .any(|s| s.rpm.is_some() || s.tpm.is_some() || s.parallel.is_some());
                    metrics::counter!("switchboard_ledger_unavailable_total").increment(1);
                    if (budgets && !self.settings.budgets_fail_open)
                        || (rates && !self.settings.rate_limits_fail_open)
                    {
                        // The admission may have run all the same (a timeout after it was sent):
                        // what it reserved goes back, and should it arrive later it reserves
                        // nothing. (Admitted fail-open below, the settlement does both.)
                        if scopes.iter().any(Scope::leased) {
                            self.settler.release(scopes.clone(), lease_id.clone());
                        }
                        return Err(ApiError::LedgerDown(why));
                    }
                    tracing::warn!(error = %why, "ledger unreachable: admitting without limits (fail-open)");
                    // Nothing was reserved; settlement (retried until the ledger is back) still
                    // charges the actual cost to every budget.
                    reserved = false;
                }
            }
        }
        let renewer = (reserved && scopes.iter().any(Scope::leased)).then(|| {
            let (ledger, scopes) = (self.settler.ledger().clone(), scopes.clone());
            let (id, ttl) = (lease_id.clone(), self.settings.reservation_ttl);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    if let Err(e) = ledger.renew(&scopes, &id, ttl.as_millis() as u64).await {
                        tracing::debug!(error = %e, "lease renewal failed");
                    }
                }
            })
            .abort_handle()
        });
        Ok(Ticket {
            settler: self.settler.clone(),
            scopes,
            grant,
            renewer,
            started: Instant::now(),
            record: Some(SpendRecord {
                lease_id,
                ..spend_record(&req, now, prompt_tokens, grant.minute)
            }),
        })
    }

    /// A ticket that reserves nothing and charges nothing: what a cache hit settles, so it is
    /// still logged (status `cache_hit`) without touching any budget or limit.
    pub fn unmetered(&self, req: &Admission<'_>) -> Ticket {
        Ticket {
            settler: self.settler.clone(),
            scopes: Arc::from([]),
            grant: Grant::default(),
            renewer: None,
            started: Instant::now(),
            record: Some(spend_record(req, now_ms(), 0, 0)),
        }
    }
}

fn spend_record(req: &Admission<'_>, now: i64, estimated_tokens: u64, minute: i64) -> SpendRecord {
    let (key_id, team_id, user_id) = match req.principal {
        Principal::Key(who) => (
            Some(who.key.id.clone()),
            who.key.team_id.clone(),
            who.key.user_id.clone(),
        ),
        _ => (None, None, None),
    };
    SpendRecord {
        request_id: req.request_id.to_string(),
        key_id,
        team_id,
        user_id,
        end_user: req.end_user.filter(|e| !e.is_empty()).map(str::to_string),
        model_group: req.model.to_string(),
        deployment: None,
        prompt_tokens: 0,
        completion_tokens: 0,
        cost: Cost::ZERO,
        latency_ms: 0,
        status: String::new(),
        at_ms: now,
        estimated_tokens,
        minute,
        lease_id: String::new(),
    }
}

/// What admission needs to know about a request.
pub struct Admission<'a> {
    pub principal: &'a Principal,
    pub request_id: &'a str,
    pub model: &'a str,
    pub group: Option<&'a Group>,
    pub end_user: Option<&'a str>,
    /// The prompt's token estimate, computed only if a limit applies.
    pub prompt_tokens: &'a (dyn Fn() -> u64 + Sync),
    pub max_tokens: Option<u32>,
    /// A streamed call: counted against `general_settings.max_streams_per_key`.
    pub stream: bool,
}

/// An admitted request's reservation. [`Ticket::settle`] charges what it cost; dropped unsettled
/// (a cancelled call), it releases the reservation and records the request as cancelled.
pub struct Ticket {
    settler: Settler,
    scopes: Arc<[Scope]>,
    grant: Grant,
    /// Keeps the leases alive while the request runs longer than a third of their TTL.
    renewer: Option<tokio::task::AbortHandle>,
    started: Instant,
    record: Option<SpendRecord>,
}

impl Ticket {
    pub fn grant(&self) -> Grant {
        self.grant
    }

    pub fn settle(mut self, deployment: Option<&DeploymentId>, usage: &Usage, cost: Cost, status: &str) {
        let _ = self.finish(deployment, usage, cost, status);
    }

    /// Settles, and for a request under a budget or limit waits (bounded) for the spend to be on
    /// record before the caller gets its answer: a replica killed between answering and a
    /// background settlement would otherwise lose spend that was already served. At worst an
    /// answer lost in flight is charged and retried elsewhere: charged twice, never missed.
    async fn settle_before_answering(
        mut self,
        deployment: Option<&DeploymentId>,
        usage: &Usage,
        cost: Cost,
        status: &str,
    ) {
        let limited = !self.scopes.is_empty();
        if let Some(recorded) = self.finish(deployment, usage, cost, status)
            && limited
        {
            let _ = tokio::time::timeout(SETTLE_WAIT, recorded).await;
        }
    }

    fn finish(
        &mut self,
        deployment: Option<&DeploymentId>,
        usage: &Usage,
        cost: Cost,
        status: &str,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let mut r = self.record.take()?;
        if let Some(h) = self.renewer.take() {
            h.abort();
        }
        r.deployment = deployment.map(ToString::to_string);
        // On the request's span when settled inside it (unary calls).
        tracing::Span::current().record("switchboard.cost_usd", cost.usd());
        r.prompt_tokens = u64::from(usage.prompt_tokens);
        r.completion_tokens = u64::from(usage.completion_tokens);
        r.cost = cost;
        r.latency_ms = self.started.elapsed().as_millis() as u64;
        r.status = status.to_string();
        Some(self.settler.submit(self.scopes.clone(), r))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let _ = self.finish(None, &Usage::default(), Cost::ZERO, "cancelled");
    }
}

impl Ticket {
    /// Settles a unary call: the answer's cost (on record before the answer goes out, for a
    /// limited request), or nothing for a failure (whose error it returns).
    pub async fn settle_routed<T>(
        self,
        result: Result<crate::router::Routed<T>, crate::router::RouteError>,
        usage: impl Fn(&T) -> &Usage,
    ) -> Result<(crate::router::Routed<T>, Cost), ApiError> {
        match result {
            Ok(routed) => {
                let u = usage(&routed.value);
                let cost = routed.route.cost(u);
                self.settle_before_answering(Some(&routed.route.deployment), u, cost, "ok")
                    .await;
                Ok((routed, cost))
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Settles a request that failed before answering (nothing charged) and returns its error.
    pub fn failed(self, e: crate::router::RouteError) -> ApiError {
        let e = ApiError::from(e);
        self.settle(None, &Usage::default(), Cost::ZERO, e.reason());
        e
    }
}

/// A routed stream with the ticket it settles: when it ends, fails, or is dropped because the
/// caller went away, at the cost of what it consumed.
pub struct MeteredStream {
    pub inner: crate::router::RoutedStream,
    pub ticket: Option<Ticket>,
}

impl MeteredStream {
    pub fn settle(&mut self, status: &str) {
        if let Some(t) = self.ticket.take() {
            let usage = self.inner.usage();
            let route = self.inner.route();
            t.settle(Some(&route.deployment), &usage, route.cost(&usage), status);
        }
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        self.settle("cancelled");
    }
}
