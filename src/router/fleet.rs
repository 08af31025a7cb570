//! Deployment state shared by the fleet through Redis. Routing decisions read a local snapshot
//! (refreshed every [`SYNC_EVERY`] and pushed by pub/sub for health events), never Redis per
//! candidate. Writes that need no exactness (in-flight counts, outcomes, token corrections) are
//! batched; the two that do (rpm/tpm admission, the half-open probe) are one atomic script each, for
//! the chosen deployment only. Redis down: every call is bounded, decisions fall back to this
//! replica's own state, and the replica reports itself degraded until Redis answers again.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::{ArcSwap, ArcSwapOption};
use futures_util::{StreamExt, future::BoxFuture};
use tokio::time::Instant;

use super::state::{
    DeploymentState, DeploymentView, Health, InFlight, LocalState, MinuteCounts, Outcome, ReplicaInfo,
};
use crate::{
    cluster::redis::{self as r, Redis, RedisTarget},
    domain::DeploymentId,
};

/// How often the local snapshot is refreshed and local counts are published.
pub const SYNC_EVERY: Duration = Duration::from_millis(50);
/// A replica's in-flight counts stop counting this long after its last publication (it died).
const IN_FLIGHT_TTL: Duration = Duration::from_secs(3);
/// An unchanged deployment is republished this often, to keep our in-flight entry alive.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Bound on the admission and probe scripts: a slow Redis costs a request at most this much.
const DECISION_TIMEOUT: Duration = Duration::from_millis(100);
/// Replica heartbeat period, in sync ticks (one second).
const HEARTBEAT_EVERY_TICKS: u32 = 20;
/// How long a probe owner may take before another replica may probe.
const PROBE_LEASE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, Default)]
struct Fleet {
    /// Cooldown left when the snapshot was taken.
    cooldown: Duration,
    at: Option<Instant>,
    half_open: bool,
    probing: bool,
    in_flight: u32,
    rpm: u64,
    tpm: u64,
    ok: u32,
    fail: u32,
    /// Mean over the replicas that measured it.
    latency: Option<Duration>,
    ttft: Option<Duration>,
}

#[derive(Debug, Default)]
struct Pending {
    ok: u32,
    fail: u32,
    tokens: i64,
    /// Our in-flight count as last published (part of the fleet's total in the snapshot).
    published_in_flight: u32,
    /// Our latency and time-to-first-token (us) as last published, and when we last published.
    published_timing: (u64, u64),
    published_at: Option<Instant>,
}

pub struct FleetState {
    local: LocalState,
    replica: String,
    address: String,
    redis: ArcSwapOption<Redis>,
    snapshot: ArcSwap<HashMap<DeploymentId, Fleet>>,
    pending: Mutex<HashMap<DeploymentId, Pending>>,
    deployments: Mutex<Vec<DeploymentId>>,
    degraded: AtomicBool,
    /// Live replicas in the fleet as of the last heartbeat (0: not known yet). Without Redis, each
    /// replica admits only its share of a deployment's rpm/tpm cap, so that the fleet stays
    /// within the cap while it cannot coordinate.
    replicas: std::sync::atomic::AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FleetState {
    /// Starts the shared state: connects in the background (until then, and whenever Redis is
    /// unreachable, decisions are local) and keeps the snapshot in sync.
    pub fn start(
        target: RedisTarget,
        replica: String,
        address: String,
        deployments: Vec<DeploymentId>,
    ) -> Arc<FleetState> {
        let state = Arc::new(FleetState {
            local: LocalState::default(),
            replica,
            address,
            redis: ArcSwapOption::empty(),
            snapshot: ArcSwap::default(),
            pending: Mutex::default(),
            deployments: Mutex::new(deployments),
            degraded: AtomicBool::new(true),
            replicas: std::sync::atomic::AtomicU32::new(0),
        });
        tokio::spawn(run(Arc::downgrade(&state), target));
        state
    }

    /// Admits against this replica's share of the caps (the cap divided by the live replicas last
    /// seen, at least 1), by its own counts: used while Redis cannot decide.
    fn admit_share(&self, id: &DeploymentId, rpm: Option<u64>, tpm: Option<u64>, tokens: u64) -> bool {
        let n = u64::from(self.replicas.load(Ordering::Relaxed).max(1));
        let share = |cap: u64| (cap / n).max(1);
        self.local
            .try_admit_now(id, rpm.map(share), tpm.map(share), tokens)
    }

    /// False while Redis is unreachable (decisions are then this replica's alone).
    pub fn connected(&self) -> bool {
        !self.degraded.load(Ordering::Relaxed)
    }

    fn redis(&self) -> Option<Arc<Redis>> {
        if self.degraded.load(Ordering::Relaxed) {
            None
        } else {
            self.redis.load_full()
        }
    }

    fn mark(&self, up: bool) {
        let was_degraded = self.degraded.swap(!up, Ordering::Relaxed);
        if was_degraded == up {
            if up {
                tracing::info!("redis reachable: fleet state shared again");
            } else {
                tracing::warn!("redis unreachable: routing on this replica's own state until it returns");
            }
            metrics::gauge!("switchboard_redis_up").set(if up { 1.0 } else { 0.0 });
        }
    }

    fn fleet(&self, id: &DeploymentId) -> Option<Fleet> {
        if !self.connected() {
            return None;
        }
        self.snapshot.load().get(id).copied()
    }

    fn apply_event(&self, event: &str) {
        let mut parts = event.split(' ');
        let (kind, id) = (parts.next(), parts.next().map(DeploymentId::new));
        let Some(id) = id else { return };
        let mut map = (**self.snapshot.load()).clone();
        let f = map.entry(id).or_default();
        match kind {
            Some("cooldown") => {
                let ms: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                f.cooldown = Duration::from_millis(ms);
                f.at = Some(Instant::now());
                f.half_open = true;
            }
            Some("healthy") => {
                f.cooldown = Duration::ZERO;
                f.half_open = false;
                f.probing = false;
            }
            _ => return,
        }
        self.snapshot.store(Arc::new(map));
    }

    /// After a failed sync nothing we published is known to have landed: publish all on the next.
    fn republish_everything(&self) {
        for p in lock(&self.pending).values_mut() {
            p.published_at = None;
        }
    }

    /// Publishes our counts where they changed (or to keep them alive) and reads everyone's, for
    /// every deployment, in one pipelined burst.
    async fn sync(&self, redis: &Redis) -> redis::RedisResult<()> {
        let ids = lock(&self.deployments).clone();
        let mut views = Vec::with_capacity(ids.len());
        self.local.views(&ids, &mut views);
        let us = |d: Option<Duration>| d.map_or(0, |d| d.as_micros().max(1) as u64);
        let now = Instant::now();
        let updates: Vec<(DeploymentId, u32, Pending, u64, u64)> = {
            let mut pending = lock(&self.pending);
            ids.iter()
                .zip(&views)
                .filter_map(|(id, v)| {
                    let p = pending.entry(id.clone()).or_default();
                    let timing = (us(v.latency), us(v.ttft));
                    let changed = p.ok > 0
                        || p.fail > 0
                        || p.tokens != 0
                        || p.published_in_flight != v.in_flight
                        || p.published_timing != timing;
                    let stale = p.published_at.is_none_or(|at| now - at >= REFRESH_EVERY);
                    if !changed && !stale {
                        return None;
                    }
                    let taken = std::mem::take(p);
                    p.published_in_flight = v.in_flight;
                    p.published_timing = timing;
                    p.published_at = Some(now);
                    Some((id.clone(), v.in_flight, taken, timing.0, timing.1))
                })
                .collect()
        };
        let publishes = updates.iter().map(|(id, in_flight, p, latency, ttft)| {
            let mut conn = redis.conn();
            let mut inv = r::PUBLISH_LOCAL.key(r::deployment_base(id.as_str()));
            inv.arg(&self.replica)
                .arg(*in_flight)
                .arg(IN_FLIGHT_TTL.as_millis() as u64)
                .arg(p.ok)
                .arg(p.fail)
                .arg(p.tokens)
                .arg(*latency)
                .arg(*ttft);
            async move { inv.invoke_async::<i64>(&mut conn).await }
        });
        for result in futures_util::future::join_all(publishes).await {
            result?;
        }
        let reads = ids.iter().map(|id| {
            let mut conn = redis.conn();
            let inv = r::SNAPSHOT.key(r::deployment_base(id.as_str()));
            async move { inv.invoke_async::<Vec<i64>>(&mut conn).await }
        });
        let now = Instant::now();
        let mut map = HashMap::with_capacity(ids.len());
        for (id, v) in ids.iter().zip(futures_util::future::join_all(reads).await) {
            let v = v?;
            let get = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
            map.insert(
                id.clone(),
                Fleet {
                    cooldown: Duration::from_millis(get(0)),
                    at: Some(now),
                    half_open: get(1) == 1,
                    probing: get(2) == 1,
                    in_flight: get(3) as u32,
                    rpm: get(4),
                    tpm: get(5),
                    ok: get(6) as u32,
                    fail: get(7) as u32,
                    latency: (get(8) > 0).then(|| Duration::from_micros(get(8))),
                    ttft: (get(9) > 0).then(|| Duration::from_micros(get(9))),
                },
            );
        }
        self.snapshot.store(Arc::new(map));
        Ok(())
    }
}

/// Connects, subscribes and syncs until the state is dropped; reconnects whenever Redis comes back.
async fn run(state: Weak<FleetState>, target: RedisTarget) {
    loop {
        let Some(s) = state.upgrade() else { return };
        match Redis::connect(&target, Duration::from_secs(1), Duration::from_millis(250)).await {
            Ok(redis) => {
                let scripts = [
                    &r::ADMIT,
                    &r::CLAIM_PROBE,
                    &r::COOL_DOWN,
                    &r::RELEASE_PROBE,
                    &r::PUBLISH_LOCAL,
                    &r::SNAPSHOT,
                    &r::HEARTBEAT,
                ];
                let scripts: Vec<redis::Script> = scripts.into_iter().map(|s| (**s).clone()).collect();
                let _ = tokio::time::timeout(Duration::from_secs(1), redis.load_scripts(&scripts)).await;
                let redis = Arc::new(redis);
                s.redis.store(Some(redis.clone()));
                drop(s);
                serve(state.clone(), redis).await;
            }
            Err(e) => {
                s.mark(false);
                tracing::debug!(error = %e, "redis connect failed");
                drop(s);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One connected session: pub/sub events and periodic sync, until Redis fails or the state is gone.
async fn serve(state: Weak<FleetState>, redis: Arc<Redis>) {
    let mut events = match redis.pubsub().await {
        Ok(mut ps) => match ps.subscribe(r::events_channel()).await {
            Ok(()) => Some(ps.into_on_message()),
            Err(_) => None,
        },
        Err(_) => None,
    };
    let mut tick = tokio::time::interval(SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            msg = async { match &mut events { Some(e) => e.next().await, None => std::future::pending().await } } => {
                let Some(s) = state.upgrade() else { return };
                match msg.and_then(|m| m.get_payload::<String>().ok()) {
                    Some(payload) => s.apply_event(&payload),
                    None => events = None, // the subscription broke; periodic sync still converges
                }
            }
            _ = tick.tick() => {
                let Some(s) = state.upgrade() else { return };
                if ticks.is_multiple_of(HEARTBEAT_EVERY_TICKS) {
                    let mut conn = redis.conn();
                    let mut inv = r::HEARTBEAT.key(r::replicas_key());
                    inv.arg(&s.replica).arg(&s.address).arg(env!("CARGO_PKG_VERSION"));
                    if let Ok(Ok(live)) =
                        tokio::time::timeout(Duration::from_secs(1), inv.invoke_async::<u32>(&mut conn)).await
                    {
                        s.replicas.store(live, Ordering::Relaxed);
                    }
                }
                ticks = ticks.wrapping_add(1);
                match tokio::time::timeout(Duration::from_secs(1), s.sync(&redis)).await {
                    Ok(Ok(())) => {
                        s.mark(true);
                        if events.is_none() {
                            return; // reconnect to restore the subscription
                        }
                    }
                    _ => {
                        s.mark(false);
                        s.republish_everything();
                        return;
                    }
                }
            }
        }
    }
}

impl DeploymentState for FleetState {
    fn views(&self, ids: &[DeploymentId], out: &mut Vec<DeploymentView>) {
        let start = out.len();
        self.local.views(ids, out);
        if !self.connected() {
            return;
        }
        let snapshot = self.snapshot.load();
        let pending = lock(&self.pending);
        let now = Instant::now();
        for (id, v) in ids.iter().zip(&mut out[start..]) {
            let Some(f) = snapshot.get(id) else { continue };
            let ours = pending.get(id).map_or(0, |p| p.published_in_flight);
            v.in_flight += f.in_flight.saturating_sub(ours);
            v.rpm_used = v.rpm_used.max(f.rpm);
            // The fleet's merged measurements (ours included) where it has them.
            v.latency = f.latency.or(v.latency);
            v.ttft = f.ttft.or(v.ttft);
            v.tpm_used = v.tpm_used.max(f.tpm);
            let left = f
                .cooldown
                .saturating_sub(f.at.map_or(Duration::ZERO, |at| now - at));
            v.health = match v.health {
                local @ Health::CoolingDown { .. } => local,
                _ if !left.is_zero() => Health::CoolingDown { remaining: left },
                _ if f.half_open => Health::HalfOpen { probing: f.probing },
                _ => Health::Healthy,
            };
        }
    }

    fn begin(&self, id: &DeploymentId) -> InFlight {
        self.local.begin(id)
    }

    fn record(&self, id: &DeploymentId, outcome: Outcome) -> MinuteCounts {
        let local = self.local.record(id, outcome);
        let mut pending = lock(&self.pending);
        let p = pending.entry(id.clone()).or_default();
        match outcome {
            Outcome::Success { .. } => p.ok += 1,
            Outcome::Failure { .. } => p.fail += 1,
        }
        match self.fleet(id) {
            // The fleet's minute (as of the last sync) plus what this replica has not published yet.
            Some(f) => MinuteCounts {
                successes: f.ok + p.ok,
                failures: f.fail + p.fail,
                class_failures: local.class_failures,
            },
            None => local,
        }
    }

    fn cool_down(&self, id: &DeploymentId, duration: Duration) {
        self.local.cool_down(id, duration);
        if let Some(redis) = self.redis() {
            let mut conn = redis.conn();
            let mut inv = r::COOL_DOWN.key(r::deployment_base(id.as_str()));
            inv.arg(duration.as_millis() as u64)
                .arg(id.as_str())
                .arg(r::events_channel());
            tokio::spawn(async move {
                let _ = inv.invoke_async::<i64>(&mut conn).await;
            });
        }
    }

    fn claim_probe<'a>(&'a self, id: &'a DeploymentId) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(redis) = self.redis() else {
                return self.local.claim_probe_now(id);
            };
            let mut conn = redis.conn();
            let mut inv = r::CLAIM_PROBE.key(r::deployment_base(id.as_str()));
            inv.arg(PROBE_LEASE.as_millis() as u64).arg(&self.replica);
            match tokio::time::timeout(DECISION_TIMEOUT, inv.invoke_async::<i64>(&mut conn)).await {
                Ok(Ok(won)) => won == 1,
                _ => self.local.claim_probe_now(id),
            }
        })
    }

    fn release_probe(&self, id: &DeploymentId, healthy: bool) {
        self.local.release_probe(id, healthy);
        if let Some(redis) = self.redis() {
            let mut conn = redis.conn();
            let mut inv = r::RELEASE_PROBE.key(r::deployment_base(id.as_str()));
            inv.arg(if healthy { "1" } else { "0" })
                .arg(id.as_str())
                .arg(r::events_channel());
            tokio::spawn(async move {
                let _ = inv.invoke_async::<i64>(&mut conn).await;
            });
        }
    }

    fn try_admit<'a>(
        &'a self,
        id: &'a DeploymentId,
        rpm: Option<u64>,
        tpm: Option<u64>,
        tokens: u64,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let capped = rpm.is_some() || tpm.is_some();
            let redis = if capped { self.redis() } else { None };
            let Some(redis) = redis else {
                // No cap (usage only counts, published in batches), or Redis down: this replica's
                // share of the cap, locally exact.
                if !capped {
                    lock(&self.pending).entry(id.clone()).or_default().tokens += tokens as i64;
                }
                return self.admit_share(id, rpm, tpm, tokens);
            };
            let mut conn = redis.conn();
            let mut inv = r::ADMIT.key(r::deployment_base(id.as_str()));
            inv.arg(rpm.unwrap_or(0)).arg(tpm.unwrap_or(0)).arg(tokens);
            match tokio::time::timeout(DECISION_TIMEOUT, inv.invoke_async::<i64>(&mut conn)).await {
                Ok(Ok(admitted)) => {
                    if admitted == 1 {
                        self.local.try_admit_now(id, None, None, tokens); // keep the local view current
                    }
                    admitted == 1
                }
                // Too slow or failed: decide alone, within this replica's share.
                _ => self.admit_share(id, rpm, tpm, tokens),
            }
        })
    }

    fn adjust_tokens(&self, id: &DeploymentId, delta: i64) {
        self.local.adjust_tokens(id, delta);
        lock(&self.pending).entry(id.clone()).or_default().tokens += delta;
    }

    fn latency_p95(&self, ids: &[DeploymentId]) -> Option<Duration> {
        self.local.latency_p95(ids)
    }

    fn shared_state_ready(&self) -> bool {
        self.connected()
    }

    fn set_deployments(&self, ids: Vec<DeploymentId>) {
        *self.deployments.lock().unwrap_or_else(|p| p.into_inner()) = ids;
    }

    fn replicas(&self) -> BoxFuture<'_, Vec<ReplicaInfo>> {
        Box::pin(async move {
            let Some(redis) = self.redis() else {
                return Vec::new();
            };
            let mut conn = redis.conn();
            let inv = r::LIVE_REPLICAS.key(r::replicas_key());
            let Ok(Ok(flat)) =
                tokio::time::timeout(Duration::from_secs(1), inv.invoke_async::<Vec<String>>(&mut conn))
                    .await
            else {
                return Vec::new();
            };
            flat.chunks_exact(3)
                .map(|c| {
                    let (address, version) = c[1].split_once(' ').unwrap_or((&c[1], ""));
                    ReplicaInfo {
                        id: c[0].clone(),
                        address: address.to_string(),
                        version: version.to_string(),
                        last_heartbeat_ms: c[2].parse::<f64>().unwrap_or(0.0) as u64,
                    }
                })
                .collect()
        })
    }
}
