//! Settlement off the request path: the caller has its answer; the ledger write follows, retried
//! with backoff while the ledger is unreachable (the reservation keeps the budget safe meanwhile).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

use super::{Scope, SharedLedger, SpendRecord};

/// Waits `ms` before a retry; the first attempt (0) does not touch the timer, whose 1 ms tick would
/// delay every settlement, and so every answer that waits for one.
async fn pause(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Backoff between attempts; after the last a record is given up (logged and counted).
const BACKOFF_MS: &[u64] = &[50, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000, 120_000];

#[derive(Clone)]
pub struct Settler {
    ledger: SharedLedger,
    pending: Arc<AtomicUsize>,
    idle: Arc<Notify>,
    /// Where soft-budget alerts are POSTed (`general_settings.alert_webhook_url`).
    webhook: Option<(reqwest::Client, Arc<str>)>,
}

impl Settler {
    pub fn new(ledger: SharedLedger) -> Self {
        Self {
            ledger,
            pending: Arc::new(AtomicUsize::new(0)),
            idle: Arc::new(Notify::new()),
            webhook: None,
        }
    }

    /// Soft-budget alerts also go to `url` as JSON (`{"type": "soft_budget_crossed", ...}`).
    pub fn with_webhook(mut self, client: reqwest::Client, url: String) -> Self {
        self.webhook = Some((client, url.into()));
        self
    }

    fn alert(&self, scope: &Scope, record: &SpendRecord) {
        let soft = scope.budget.and_then(|b| b.soft).unwrap_or_default();
        tracing::warn!(scope = %scope.id, soft_budget = %soft, "soft budget crossed");
        metrics::counter!("switchboard_soft_budget_alerts_total").increment(1);
        let Some((client, url)) = self.webhook.clone() else {
            return;
        };
        let body = serde_json::json!({
            "type": "soft_budget_crossed",
            "scope": scope.id,
            "soft_budget_usd": soft.usd(),
            "max_budget_usd": scope.budget.and_then(|b| b.max).map(|m| m.usd()),
            "window_end_ms": scope.budget.map(|b| b.window_end).filter(|e| *e != i64::MAX),
            "request_id": record.request_id,
        });
        tokio::spawn(async move {
            let sent = client
                .post(&*url)
                .json(&body)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .and_then(|r| r.error_for_status());
            if let Err(e) = sent {
                tracing::warn!(error = %e, "soft budget alert: webhook failed");
            }
        });
    }

    pub fn ledger(&self) -> &SharedLedger {
        &self.ledger
    }

    /// Settles in the background; never blocks the caller. The receiver hears when the first
    /// attempt is over (landed or failed; retries go on in the background), for a caller that
    /// wants its spend on record before it answers.
    pub fn submit(&self, scopes: Arc<[Scope]>, record: SpendRecord) -> tokio::sync::oneshot::Receiver<()> {
        let (first, attempted) = tokio::sync::oneshot::channel();
        self.pending.fetch_add(1, Ordering::AcqRel);
        let this = self.clone();
        tokio::spawn(async move {
            this.settle(&scopes, &record, first).await;
            if this.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                this.idle.notify_waiters();
            }
        });
        attempted
    }

    /// Releases in the background (retried like a settlement) what an admission that failed with
    /// an unknown outcome may have reserved ([`super::Ledger::release`]).
    pub fn release(&self, scopes: Arc<[Scope]>, request_id: String) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        let this = self.clone();
        tokio::spawn(async move {
            for wait in std::iter::once(&0).chain(BACKOFF_MS) {
                pause(*wait).await;
                match this.ledger.release(&scopes, &request_id).await {
                    Ok(()) => break,
                    Err(e) => tracing::debug!(error = %e, %request_id, "release failed; retrying"),
                }
            }
            if this.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                this.idle.notify_waiters();
            }
        });
    }

    async fn settle(&self, scopes: &[Scope], record: &SpendRecord, first: tokio::sync::oneshot::Sender<()>) {
        let mut first = Some(first);
        for (attempt, wait) in std::iter::once(&0).chain(BACKOFF_MS).enumerate() {
            pause(*wait).await;
            let outcome = self.ledger.settle(scopes, record).await;
            if let Some(f) = first.take() {
                let _ = f.send(());
            }
            match outcome {
                Ok(crossed) => {
                    for id in crossed {
                        if let Some(scope) = scopes.iter().find(|s| s.id == id) {
                            self.alert(scope, record);
                        }
                    }
                    // By model group and team (keys stay out of labels: too many; GetSpend has them).
                    let team = record.team_id.clone().unwrap_or_default();
                    let group = record.model_group.clone();
                    metrics::counter!("switchboard_spend_nano_usd_total", "model_group" => group.clone(), "team" => team.clone())
                        .increment(record.cost.nano_usd().max(0) as u64);
                    metrics::counter!("switchboard_tokens_total", "model_group" => group.clone(), "team" => team.clone(), "type" => "input")
                        .increment(record.prompt_tokens);
                    metrics::counter!("switchboard_tokens_total", "model_group" => group, "team" => team, "type" => "output")
                        .increment(record.completion_tokens);
                    return;
                }
                Err(e) => {
                    tracing::debug!(attempt, error = %e, request_id = %record.request_id, "settlement failed; retrying");
                }
            }
        }
        tracing::error!(request_id = %record.request_id, cost = %record.cost, "spend record lost: the ledger stayed unreachable");
        metrics::counter!("switchboard_spend_records_lost_total").increment(1);
    }

    /// Waits until every submitted settlement is done, at most `timeout` (shutdown).
    pub async fn flush(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.pending.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}
