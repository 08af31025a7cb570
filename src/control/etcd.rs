//! The fleet's control plane on etcd: leader election on a lease (campaign, keep-alive under a
//! timeout, step down on the first missed keep-alive), the config document that only the leader
//! writes (fenced: the transaction requires the leader's own election key, so a deposed leader's
//! write fails), its history, each replica's status, and the watch that applies every new version.
//!
//! Layout under `<prefix>/v1/`: `leader` (election), `config/doc` (the current [`Version`]),
//! `config/history/<version>`, `replicas/<id>` (on the replica's lease).

use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwapOption;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaderKey, PutOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::{Notify, watch};

use super::{ControlError, ControlPlane, Version, now_ms};
use crate::{cluster::etcd, config::EtcdSettings};

/// The current leader as the election reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaderInfo {
    pub id: String,
    pub address: String,
}

/// A replica as it reports itself in etcd.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaStatus {
    pub id: String,
    pub address: String,
    pub config_version: u64,
    pub leader: bool,
    pub at_ms: i64,
}

/// Config versions kept for ListConfigRevisions and RollbackConfig.
const HISTORY: u64 = 100;

pub struct Leadership {
    me: LeaderInfo,
    plane: Weak<ControlPlane>,
    etcd: etcd::Connection,
    /// Our election key while we lead: the fencing token of every leader-only write.
    leading: Mutex<Option<LeaderKey>>,
    /// The lease of the current campaign (replica status lives on it).
    lease: Mutex<Option<i64>>,
    /// The leader as last observed.
    leader: ArcSwapOption<LeaderInfo>,
    loaded: AtomicBool,
    loaded_notify: Notify,
    /// Set at shutdown: no more campaigns.
    resigned: AtomicBool,
    lease_ttl: i64,
    base: String,
}

fn decode(value: &[u8]) -> Option<Version> {
    serde_json::from_slice(value).ok()
}

impl Leadership {
    pub(super) fn start(
        settings: EtcdSettings,
        replica: String,
        address: String,
        plane: Weak<ControlPlane>,
    ) -> Arc<Self> {
        let l = Arc::new(Self {
            base: format!("{}/v1/", settings.prefix),
            lease_ttl: settings.leader_lease_ttl.as_secs().max(1) as i64,
            etcd: etcd::Connection::new(settings),
            me: LeaderInfo { id: replica, address },
            plane,
            leading: Mutex::new(None),
            lease: Mutex::new(None),
            leader: ArcSwapOption::empty(),
            loaded: AtomicBool::new(false),
            loaded_notify: Notify::new(),
            resigned: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&l);
        tokio::spawn(campaign_forever(weak.clone()));
        tokio::spawn(follow_forever(weak.clone()));
        tokio::spawn(observe_forever(weak));
        l
    }

    fn key(&self, what: &str) -> String {
        format!("{}{what}", self.base)
    }

    async fn client(&self) -> Result<Client, etcd_client::Error> {
        self.etcd.client().await
    }

    pub fn is_leader(&self) -> bool {
        self.leading.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// The leader as last observed (refreshed twice a second).
    pub fn leader(&self) -> Option<LeaderInfo> {
        self.leader.load_full().map(|l| LeaderInfo::clone(&l))
    }

    /// Shutdown: stop campaigning and give the leadership up at once (revoking the lease deletes the
    /// election key and this replica's status), so a successor is elected without waiting a TTL.
    pub async fn resign(&self) {
        self.resigned.store(true, Ordering::Release);
        let lease = self.lease.lock().unwrap_or_else(|p| p.into_inner()).take();
        let was_leader = self.is_leader();
        self.step_down("shutting down");
        if let (Some(lease), Ok(mut c)) = (lease, self.client().await) {
            let revoked = tokio::time::timeout(Duration::from_secs(2), c.lease_revoke(lease)).await;
            if was_leader && matches!(revoked, Ok(Ok(_))) {
                tracing::info!("resigned the config leadership");
            }
        }
    }

    /// Who leads according to etcd right now (`None`: nobody, or etcd unreachable).
    async fn fetch_leader(&self) -> Option<LeaderInfo> {
        let mut c = self.client().await.ok()?;
        let resp = tokio::time::timeout(Duration::from_secs(1), c.leader(self.key("leader")))
            .await
            .ok()?
            .ok()?;
        let info = serde_json::from_slice::<LeaderInfo>(resp.kv()?.value()).ok()?;
        self.leader.store(Some(Arc::new(info.clone())));
        Some(info)
    }

    pub(super) async fn wait_loaded(&self, timeout: Duration) {
        let wait = async {
            loop {
                let n = self.loaded_notify.notified();
                if self.loaded.load(Ordering::Acquire) {
                    return;
                }
                n.await;
            }
        };
        if tokio::time::timeout(timeout, wait).await.is_err() {
            tracing::warn!("etcd unreachable at start: serving the config file until it answers");
        }
    }

    fn set_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
        self.loaded_notify.notify_waiters();
    }

    /// Every replica's self-reported status.
    pub async fn replicas(&self) -> Result<Vec<ReplicaStatus>, ControlError> {
        let mut c = self.client().await.map_err(unavailable)?;
        let resp = c
            .get(self.key("replicas/"), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect())
    }

    /// Reports this replica (id, address, config version, leadership) on its lease.
    async fn report(&self) {
        let Some(lease) = *self.lease.lock().unwrap_or_else(|p| p.into_inner()) else {
            return;
        };
        let Some(plane) = self.plane.upgrade() else { return };
        let status = ReplicaStatus {
            id: self.me.id.clone(),
            address: self.me.address.clone(),
            config_version: plane.current().version,
            leader: self.is_leader(),
            at_ms: now_ms(),
        };
        let Ok(mut c) = self.client().await else { return };
        let value = serde_json::to_vec(&status).unwrap_or_default();
        let key = self.key(&format!("replicas/{}", self.me.id));
        if let Err(e) = c.put(key, value, Some(PutOptions::new().with_lease(lease))).await {
            tracing::debug!(error = %e, "replica status not reported");
        }
    }

    /// The leader-only write of a new config version, fenced on our election key.
    pub(super) async fn write(&self, yaml: String, author: String) -> Result<u64, ControlError> {
        let leading = self.leading.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(leader_key) = leading else {
            // Ask etcd who leads now (the cached view may be up to half a second old).
            let fresh = self.fetch_leader().await;
            return Err(ControlError::NotLeader {
                leader_address: fresh.or_else(|| self.leader()).map(|l| l.address),
            });
        };
        let mut c = self.client().await.map_err(unavailable)?;
        // A concurrent write (the seed racing an admin call) makes the compare fail: re-read and retry.
        let mut attempts = 0;
        let v = loop {
            attempts += 1;
            match self.try_write(&mut c, &leader_key, &yaml, &author).await? {
                Some(v) => break v,
                None if attempts < 5 => continue,
                None => {
                    return Err(ControlError::Unavailable(
                        "the config kept changing concurrently; retry".into(),
                    ));
                }
            }
        };
        metrics::counter!("switchboard_config_writes_total").increment(1);
        // Pruning: the history keeps the last HISTORY versions.
        if v.version > HISTORY {
            let _ = c
                .delete(
                    self.key(&format!("config/history/{:020}", v.version - HISTORY)),
                    None,
                )
                .await;
        }
        // Return once this replica serves it (its own watch applies it).
        if let Some(plane) = self.plane.upgrade() {
            for _ in 0..200 {
                if plane.current().version >= v.version {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(v.version)
    }

    /// A leader-only write of any document under our prefix, fenced like config writes.
    pub async fn put_fenced(&self, what: &str, value: Vec<u8>) -> Result<(), ControlError> {
        let leading = self.leading.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let leader_key = leading.ok_or(ControlError::NotLeader { leader_address: None })?;
        let mut c = self.client().await.map_err(unavailable)?;
        let txn = Txn::new()
            .when([Compare::create_revision(
                leader_key.key().to_vec(),
                CompareOp::Equal,
                leader_key.rev(),
            )])
            .and_then([TxnOp::put(self.key(what), value, None)]);
        let resp = tokio::time::timeout(etcd::REQUEST_TIMEOUT, c.txn(txn))
            .await
            .map_err(|_| ControlError::Unavailable("etcd did not answer within 2 s".into()))?
            .map_err(unavailable)?;
        if resp.succeeded() {
            Ok(())
        } else {
            self.step_down("a fenced write found the leadership gone");
            Err(ControlError::Unavailable(
                "this replica lost the leadership".into(),
            ))
        }
    }

    /// A document under our prefix.
    pub async fn get(&self, what: &str) -> Result<Option<Vec<u8>>, ControlError> {
        let mut c = self.client().await.map_err(unavailable)?;
        let resp = c.get(self.key(what), None).await.map_err(unavailable)?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// One fenced attempt: `Ok(None)` when the document changed under us (retry).
    async fn try_write(
        &self,
        c: &mut Client,
        leader_key: &LeaderKey,
        yaml: &str,
        author: &str,
    ) -> Result<Option<Version>, ControlError> {
        let doc_key = self.key("config/doc");
        let current = c.get(doc_key.as_str(), None).await.map_err(unavailable)?;
        let (version, doc_rev) = current.kvs().first().map_or((0, 0), |kv| {
            (decode(kv.value()).map_or(0, |v| v.version), kv.mod_revision())
        });
        let v = Version {
            version: version + 1,
            yaml: yaml.to_string(),
            author: author.to_string(),
            at_ms: now_ms(),
        };
        let value = serde_json::to_vec(&v).unwrap_or_default();
        let txn = Txn::new()
            .when([
                Compare::create_revision(leader_key.key().to_vec(), CompareOp::Equal, leader_key.rev()),
                Compare::mod_revision(doc_key.as_str(), CompareOp::Equal, doc_rev),
            ])
            .and_then([
                TxnOp::put(doc_key.as_str(), value.clone(), None),
                TxnOp::put(
                    self.key(&format!("config/history/{:020}", v.version)),
                    value,
                    None,
                ),
            ]);
        let resp = tokio::time::timeout(etcd::REQUEST_TIMEOUT, c.txn(txn))
            .await
            .map_err(|_| ControlError::Unavailable("etcd did not answer within 2 s".into()))?
            .map_err(unavailable)?;
        if !resp.succeeded() {
            // Either another write raced us, or our leadership is gone: find out which.
            let still = c
                .get(leader_key.key().to_vec(), None)
                .await
                .map_err(unavailable)?
                .kvs()
                .first()
                .is_some_and(|kv| kv.create_revision() == leader_key.rev());
            if !still {
                self.step_down("a fenced write found the leadership gone");
                return Err(ControlError::Unavailable(
                    "this replica lost the leadership; nothing was written".into(),
                ));
            }
            return Ok(None);
        }
        Ok(Some(v))
    }

    pub(super) async fn history(&self) -> Result<Vec<Version>, ControlError> {
        let mut c = self.client().await.map_err(unavailable)?;
        let resp = c
            .get(self.key("config/history/"), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        let mut out: Vec<Version> = resp.kvs().iter().filter_map(|kv| decode(kv.value())).collect();
        out.sort_by_key(|v| std::cmp::Reverse(v.version));
        Ok(out)
    }

    fn become_leader(&self, key: LeaderKey) {
        *self.leading.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
        self.leader.store(Some(Arc::new(self.me.clone())));
        tracing::info!(replica = %self.me.id, "elected config leader");
        metrics::gauge!("switchboard_is_leader").set(1.0);
        metrics::counter!("switchboard_leader_elections_won_total").increment(1);
    }

    fn step_down(&self, why: &str) {
        if self
            .leading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some()
        {
            tracing::warn!(replica = %self.me.id, why, "stepped down as config leader");
            metrics::gauge!("switchboard_is_leader").set(0.0);
        }
    }

    /// The first leader seeds etcd from the file; afterwards etcd wins and the file is only a seed.
    async fn seed(&self) {
        let Some(plane) = self.plane.upgrade() else { return };
        let Ok(mut c) = self.client().await else { return };
        let Some(leader_key) = self.leading.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            return;
        };
        let v = Version {
            version: 1,
            yaml: plane.current().yaml.clone(),
            author: format!("seed from the file by {}", self.me.id),
            at_ms: now_ms(),
        };
        let value = serde_json::to_vec(&v).unwrap_or_default();
        let doc_key = self.key("config/doc");
        // Only into an empty store, and only as the leader: never over a config someone put.
        let txn = Txn::new()
            .when([
                Compare::create_revision(leader_key.key().to_vec(), CompareOp::Equal, leader_key.rev()),
                Compare::create_revision(doc_key.as_str(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(doc_key.as_str(), value.clone(), None),
                TxnOp::put(self.key(&format!("config/history/{:020}", 1)), value, None),
            ]);
        match c.txn(txn).await {
            Ok(r) if r.succeeded() => {
                tracing::info!("etcd had no config: seeded it from the config file (version 1)");
            }
            Ok(_) => tracing::info!("config comes from etcd; the config file is only a seed"),
            Err(e) => tracing::warn!(error = %e, "could not seed the config into etcd"),
        }
    }
}

fn unavailable(e: etcd_client::Error) -> ControlError {
    ControlError::Unavailable(e.to_string())
}

/// Campaign, lead until the lease is lost, step down, campaign again; for as long as we live.
async fn campaign_forever(weak: Weak<Leadership>) {
    loop {
        let Some(me) = weak.upgrade() else { return };
        if me.resigned.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = campaign_once(&me).await {
            tracing::debug!(error = %e, "election round ended");
        }
        me.step_down("lease lost");
        *me.lease.lock().unwrap_or_else(|p| p.into_inner()) = None;
        drop(me);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn campaign_once(me: &Arc<Leadership>) -> Result<(), etcd_client::Error> {
    let mut c = match me.client().await {
        Ok(c) => c,
        Err(e) => {
            me.etcd.forget().await;
            return Err(e);
        }
    };
    let ttl = me.lease_ttl;
    let lease = c.lease_grant(ttl, None).await?.id();
    *me.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(lease);
    let (mut keeper, mut responses) = c.lease_keep_alive(lease).await?;
    // Keep-alive every ttl/3; the first one not answered within ttl/3 ends the round.
    let (lost_tx, mut lost) = watch::channel(false);
    let period = Duration::from_millis((ttl as u64 * 1000) / 3);
    let keepalive = tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let ok = keeper.keep_alive().await.is_ok()
                && matches!(
                    tokio::time::timeout(period, responses.message()).await,
                    Ok(Ok(Some(r))) if r.ttl() > 0
                );
            if !ok {
                let _ = lost_tx.send(true);
                return;
            }
        }
    });
    me.report().await;
    let value = serde_json::to_vec(&me.me).unwrap_or_default();
    let name = me.key("leader");
    let won = tokio::select! {
        r = c.campaign(name.as_str(), value, lease) => r.map(|mut r| r.take_leader()),
        _ = lost.wait_for(|l| *l) => Ok(None),
    };
    match won {
        Ok(Some(key)) => {
            me.become_leader(key);
            me.report().await;
            me.seed().await;
            let _ = lost.wait_for(|l| *l).await;
        }
        Ok(None) => {}
        Err(e) => {
            keepalive.abort();
            return Err(e);
        }
    }
    keepalive.abort();
    me.step_down("missed a lease keep-alive");
    let _ = tokio::time::timeout(Duration::from_secs(1), c.lease_revoke(lease)).await;
    Ok(())
}

/// Refreshes who leads, twice a second (the election's `leader` call; `observe` blocks while
/// there is none, which would stall this loop).
async fn observe_forever(weak: Weak<Leadership>) {
    loop {
        let Some(me) = weak.upgrade() else { return };
        if let Ok(mut c) = me.client().await {
            let name = me.key("leader");
            // No leader right now (etcd answers "no leader") or etcd unreachable: keep the last seen.
            if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(1), c.leader(name.as_str())).await
            {
                let info = resp
                    .kv()
                    .and_then(|kv| serde_json::from_slice::<LeaderInfo>(kv.value()).ok());
                if !me.is_leader() {
                    me.leader.store(info.map(Arc::new));
                }
            }
        }
        drop(me);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Applies every new config version this replica sees, for as long as it lives.
async fn follow_forever(weak: Weak<Leadership>) {
    let mut warned = false;
    loop {
        let Some(me) = weak.upgrade() else { return };
        match follow(&me).await {
            Ok(()) => warned = false,
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "config watch lost; serving the current config and retrying");
                    warned = true;
                }
                me.etcd.forget().await;
            }
        }
        drop(me);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn follow(me: &Arc<Leadership>) -> Result<(), etcd_client::Error> {
    let mut c = me.client().await?;
    let doc_key = me.key("config/doc");
    let resp = c.get(doc_key.as_str(), None).await?;
    let rev = resp.header().map_or(0, |h| h.revision());
    if let Some(v) = resp.kvs().first().and_then(|kv| decode(kv.value())) {
        adopt(me, v).await;
    }
    me.set_loaded();
    let mut stream = c
        .watch(
            doc_key.as_str(),
            Some(WatchOptions::new().with_start_revision(rev + 1)),
        )
        .await?;
    while let Some(msg) = stream.message().await? {
        if msg.canceled() || msg.compact_revision() > 0 {
            return Ok(());
        }
        for e in msg.events() {
            if e.event_type() == EventType::Put
                && let Some(v) = e.kv().and_then(|kv| decode(kv.value()))
            {
                adopt(me, v).await;
            }
        }
    }
    Ok(())
}

async fn adopt(me: &Arc<Leadership>, v: Version) {
    let Some(plane) = me.plane.upgrade() else { return };
    if plane.current().version == v.version && v.version != 0 {
        return;
    }
    // A rejected version leaves the current one serving (logged and counted by `adopt`).
    let _ = plane.adopt(v);
    me.report().await;
}
