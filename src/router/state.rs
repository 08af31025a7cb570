//! Deployment state the router reads and writes: in-flight counts, health (cooldown, half-open
//! probe), latency statistics and per-minute usage. Reads are batched per routing decision, so a
//! Redis-backed implementation can serve them from a local snapshot, not a round trip per candidate.
//! The *rules* (when to cool down, which deployment to pick) live in the router; state only counts.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::domain::{DeploymentId, ErrorClass};

/// Health of a deployment as routing sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Health {
    #[default]
    Healthy,
    /// Skipped until the cooldown ends.
    CoolingDown { remaining: Duration },
    /// The cooldown ended: one probe request decides whether it is back. `probing` = a probe is out.
    HalfOpen { probing: bool },
}

/// What a strategy knows about one deployment at decision time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DeploymentView {
    pub in_flight: u32,
    pub health: Health,
    /// Recent unary latency (moving average).
    pub latency: Option<Duration>,
    /// Recent time to first chunk of streams (moving average).
    pub ttft: Option<Duration>,
    pub rpm_used: u64,
    pub tpm_used: u64,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Success { latency: Duration, stream: bool },
    Failure { class: ErrorClass, latency: Duration },
}

/// A deployment's counts in the current minute, after recording an outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinuteCounts {
    pub successes: u32,
    pub failures: u32,
    /// Failures of the class just recorded.
    pub class_failures: u32,
}

/// Shared deployment state. Implementations must not block: they run on the request path.
pub trait DeploymentState: Send + Sync {
    /// Appends the views of `ids`, in order, to `out`.
    fn views(&self, ids: &[DeploymentId], out: &mut Vec<DeploymentView>);
    /// Marks one request in flight on `id` until the returned guard drops.
    fn begin(&self, id: &DeploymentId) -> InFlight;
    /// Records how an attempt ended; returns the deployment's counts for the current minute.
    fn record(&self, id: &DeploymentId, outcome: Outcome) -> MinuteCounts;
    /// Starts (or extends) a cooldown; when it ends the deployment turns half-open.
    fn cool_down(&self, id: &DeploymentId, duration: Duration);
    /// Claims the probe of a half-open deployment. Exactly one caller (fleet-wide, when shared) wins
    /// until it is released. Async: a shared implementation decides it with one atomic step.
    fn claim_probe<'a>(&'a self, id: &'a DeploymentId) -> BoxFuture<'a, bool>;
    /// Ends a probe: `healthy` closes the circuit; otherwise the caller has already cooled it down.
    fn release_probe(&self, id: &DeploymentId, healthy: bool);
    /// Counts one request against `rpm` and `tokens` against `tpm` for this minute, only if both fit.
    /// Called for the chosen deployment only (never per candidate); a shared implementation makes it
    /// one atomic check-and-increment.
    fn try_admit<'a>(
        &'a self,
        id: &'a DeploymentId,
        rpm: Option<u64>,
        tpm: Option<u64>,
        tokens: u64,
    ) -> BoxFuture<'a, bool>;
    /// Corrects this minute's token count once the real usage is known (`delta` may be negative).
    fn adjust_tokens(&self, id: &DeploymentId, delta: i64);
    /// p95 of recent unary latencies across `ids`, if enough samples exist.
    fn latency_p95(&self, ids: &[DeploymentId]) -> Option<Duration>;
    /// A new config names these deployments (shared state syncs them from now on).
    fn set_deployments(&self, _ids: Vec<DeploymentId>) {}
    /// False while shared state is configured but unreachable (readiness reports it).
    fn shared_state_ready(&self) -> bool {
        true
    }
    /// Live replicas of the fleet, from shared state; empty when state is not shared.
    fn replicas(&self) -> BoxFuture<'_, Vec<ReplicaInfo>> {
        Box::pin(std::future::ready(Vec::new()))
    }
}

/// One live replica as the fleet registry sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub id: String,
    pub address: String,
    pub version: String,
    /// Unix milliseconds (Redis server time).
    pub last_heartbeat_ms: u64,
}

/// Decrements the in-flight count when dropped (also when a request is cancelled mid-way).
pub struct InFlight(Option<Arc<AtomicU32>>);

impl InFlight {
    pub fn detached() -> Self {
        Self(None)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

const LATENCY_SAMPLES: usize = 64;
/// Weight of a new sample in the moving averages.
const EWMA_ALPHA: f64 = 0.3;

#[derive(Default)]
struct Inner {
    cooldown_until: Option<Instant>,
    /// Set when a cooldown starts; cleared by a successful probe.
    half_open: bool,
    probing: bool,
    minute: u64,
    successes: u32,
    failures: u32,
    class_failures: HashMap<ErrorClass, u32>,
    rpm_used: u64,
    tpm_used: u64,
    latency: Option<f64>,
    ttft: Option<f64>,
    samples: VecDeque<Duration>,
}

impl Inner {
    fn roll(&mut self, minute: u64) {
        if self.minute != minute {
            self.minute = minute;
            self.successes = 0;
            self.failures = 0;
            self.class_failures.clear();
            self.rpm_used = 0;
            self.tpm_used = 0;
        }
    }

    fn health(&self, now: Instant) -> Health {
        match self.cooldown_until {
            Some(until) if until > now => Health::CoolingDown {
                remaining: until - now,
            },
            _ if self.half_open => Health::HalfOpen {
                probing: self.probing,
            },
            _ => Health::Healthy,
        }
    }
}

#[derive(Default)]
struct Entry {
    in_flight: Arc<AtomicU32>,
    inner: Mutex<Inner>,
}

fn ewma(prev: Option<f64>, sample: Duration) -> Option<f64> {
    let s = sample.as_secs_f64();
    Some(prev.map_or(s, |p| p + EWMA_ALPHA * (s - p)))
}

/// Single-node state, in memory. Uses tokio's clock, so tests can pause time.
pub struct LocalState {
    entries: RwLock<HashMap<DeploymentId, Arc<Entry>>>,
    epoch: Instant,
}

impl Default for LocalState {
    fn default() -> Self {
        Self {
            entries: RwLock::default(),
            epoch: Instant::now(),
        }
    }
}

impl LocalState {
    /// [`DeploymentState::claim_probe`], decided in memory.
    pub fn claim_probe_now(&self, id: &DeploymentId) -> bool {
        self.with(id, |s, now, _| {
            if s.health(now) == (Health::HalfOpen { probing: false }) {
                s.probing = true;
                true
            } else {
                false
            }
        })
    }

    /// [`DeploymentState::try_admit`], decided in memory.
    pub fn try_admit_now(&self, id: &DeploymentId, rpm: Option<u64>, tpm: Option<u64>, tokens: u64) -> bool {
        self.with(id, |s, _, _| {
            if rpm.is_some_and(|cap| s.rpm_used >= cap) || tpm.is_some_and(|cap| s.tpm_used + tokens > cap) {
                return false;
            }
            s.rpm_used += 1;
            s.tpm_used += tokens;
            true
        })
    }

    fn entry(&self, id: &DeploymentId) -> Arc<Entry> {
        if let Some(e) = self.entries.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            return e.clone();
        }
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        map.entry(id.clone()).or_default().clone()
    }

    fn minute(&self, now: Instant) -> u64 {
        (now - self.epoch).as_secs() / 60
    }

    fn with<R>(&self, id: &DeploymentId, f: impl FnOnce(&mut Inner, Instant, u64) -> R) -> R {
        let entry = self.entry(id);
        let now = Instant::now();
        let minute = self.minute(now);
        let mut inner = entry.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.roll(minute);
        f(&mut inner, now, minute)
    }
}

impl DeploymentState for LocalState {
    fn views(&self, ids: &[DeploymentId], out: &mut Vec<DeploymentView>) {
        let now = Instant::now();
        let minute = self.minute(now);
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        out.extend(ids.iter().map(|id| match map.get(id) {
            None => DeploymentView::default(),
            Some(e) => {
                let inner = e.inner.lock().unwrap_or_else(|e| e.into_inner());
                let current = inner.minute == minute;
                DeploymentView {
                    in_flight: e.in_flight.load(Ordering::Relaxed),
                    health: inner.health(now),
                    latency: inner.latency.map(Duration::from_secs_f64),
                    ttft: inner.ttft.map(Duration::from_secs_f64),
                    rpm_used: if current { inner.rpm_used } else { 0 },
                    tpm_used: if current { inner.tpm_used } else { 0 },
                }
            }
        }));
    }

    fn begin(&self, id: &DeploymentId) -> InFlight {
        let c = self.entry(id).in_flight.clone();
        c.fetch_add(1, Ordering::Relaxed);
        InFlight(Some(c))
    }

    fn record(&self, id: &DeploymentId, outcome: Outcome) -> MinuteCounts {
        self.with(id, |s, _, _| match outcome {
            Outcome::Success { latency, stream } => {
                s.successes += 1;
                if stream {
                    s.ttft = ewma(s.ttft, latency);
                } else {
                    s.latency = ewma(s.latency, latency);
                    if s.samples.len() == LATENCY_SAMPLES {
                        s.samples.pop_front();
                    }
                    s.samples.push_back(latency);
                }
                MinuteCounts {
                    successes: s.successes,
                    failures: s.failures,
                    class_failures: 0,
                }
            }
            Outcome::Failure { class, latency } => {
                s.failures += 1;
                let n = s.class_failures.entry(class).or_default();
                *n += 1;
                // A timed-out deployment is at least as slow as the time we gave it.
                if class == ErrorClass::Timeout {
                    s.latency = ewma(s.latency, latency);
                    s.ttft = ewma(s.ttft, latency);
                }
                MinuteCounts {
                    successes: s.successes,
                    failures: s.failures,
                    class_failures: *n,
                }
            }
        })
    }

    fn cool_down(&self, id: &DeploymentId, duration: Duration) {
        self.with(id, |s, now, _| {
            let until = now + duration;
            s.cooldown_until = Some(s.cooldown_until.map_or(until, |u| u.max(until)));
            s.half_open = true;
        });
    }

    fn claim_probe<'a>(&'a self, id: &'a DeploymentId) -> BoxFuture<'a, bool> {
        let won = self.claim_probe_now(id);
        Box::pin(std::future::ready(won))
    }

    fn release_probe(&self, id: &DeploymentId, healthy: bool) {
        self.with(id, |s, _, _| {
            s.probing = false;
            if healthy {
                s.half_open = false;
                s.cooldown_until = None;
            }
        });
    }

    fn try_admit<'a>(
        &'a self,
        id: &'a DeploymentId,
        rpm: Option<u64>,
        tpm: Option<u64>,
        tokens: u64,
    ) -> BoxFuture<'a, bool> {
        let admitted = self.try_admit_now(id, rpm, tpm, tokens);
        Box::pin(std::future::ready(admitted))
    }

    fn adjust_tokens(&self, id: &DeploymentId, delta: i64) {
        self.with(id, |s, _, _| s.tpm_used = s.tpm_used.saturating_add_signed(delta));
    }

    fn latency_p95(&self, ids: &[DeploymentId]) -> Option<Duration> {
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Duration> = ids
            .iter()
            .filter_map(|id| map.get(id))
            .flat_map(|e| e.inner.lock().unwrap_or_else(|e| e.into_inner()).samples.clone())
            .collect();
        if all.len() < 20 {
            return None;
        }
        all.sort_unstable();
        Some(all[(all.len() * 95 / 100).min(all.len() - 1)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DeploymentId {
        DeploymentId::new(s)
    }

    fn view(s: &LocalState, d: &str) -> DeploymentView {
        let mut out = Vec::new();
        s.views(&[id(d)], &mut out);
        out[0]
    }

    #[tokio::test(start_paused = true)]
    async fn cooldown_then_exactly_one_probe_then_healthy() {
        let s = LocalState::default();
        s.cool_down(&id("a"), Duration::from_secs(5));
        assert!(matches!(view(&s, "a").health, Health::CoolingDown { .. }));
        assert!(!s.claim_probe_now(&id("a")), "no probe while cooling down");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(view(&s, "a").health, Health::HalfOpen { probing: false });
        assert!(s.claim_probe_now(&id("a")));
        assert!(!s.claim_probe_now(&id("a")), "only one probe at a time");
        assert_eq!(view(&s, "a").health, Health::HalfOpen { probing: true });
        s.release_probe(&id("a"), true);
        assert_eq!(view(&s, "a").health, Health::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_goes_back_to_cooldown() {
        let s = LocalState::default();
        s.cool_down(&id("a"), Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.claim_probe_now(&id("a")));
        s.cool_down(&id("a"), Duration::from_secs(1));
        s.release_probe(&id("a"), false);
        assert!(matches!(view(&s, "a").health, Health::CoolingDown { .. }));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.claim_probe_now(&id("a")), "a new probe after the new cooldown");
    }

    #[tokio::test(start_paused = true)]
    async fn rpm_cap_is_exact_and_resets_each_minute() {
        let s = LocalState::default();
        let admitted = (0..100)
            .filter(|_| s.try_admit_now(&id("a"), Some(60), None, 10))
            .count();
        assert_eq!(admitted, 60);
        assert_eq!(view(&s, "a").rpm_used, 60);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(view(&s, "a").rpm_used, 0);
        assert!(s.try_admit_now(&id("a"), Some(60), None, 10));
        assert!(
            !s.try_admit_now(&id("a"), None, Some(15), 10),
            "tpm: 10 used + 10 > 15"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn minute_counts_and_in_flight() {
        let s = LocalState::default();
        let g = s.begin(&id("a"));
        assert_eq!(view(&s, "a").in_flight, 1);
        drop(g);
        assert_eq!(view(&s, "a").in_flight, 0);
        s.record(
            &id("a"),
            Outcome::Success {
                latency: Duration::from_millis(10),
                stream: false,
            },
        );
        let c = s.record(
            &id("a"),
            Outcome::Failure {
                class: ErrorClass::ServerError,
                latency: Duration::ZERO,
            },
        );
        assert_eq!(
            c,
            MinuteCounts {
                successes: 1,
                failures: 1,
                class_failures: 1
            }
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        let c = s.record(
            &id("a"),
            Outcome::Failure {
                class: ErrorClass::ServerError,
                latency: Duration::ZERO,
            },
        );
        assert_eq!(
            c,
            MinuteCounts {
                successes: 0,
                failures: 1,
                class_failures: 1
            }
        );
    }
}
