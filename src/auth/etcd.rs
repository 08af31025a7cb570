//! Keys, teams and users in etcd, the fleet's durable source of truth. Writes are transactions that
//! check existence atomically; every replica (the writer included) applies them to its directory
//! from one watch, so a revoked key stops working everywhere within the watch's latency (milliseconds)
//! and authenticating never reads etcd. While etcd is unreachable the directory keeps serving what
//! it last saw, writes fail with `Unavailable`, and the watch reconnects on its own.

use std::{sync::Arc, time::Duration};

use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};

use super::{Backend, Change, Directory, Kind, Record, Snapshot, StoreError};
use crate::{cluster::etcd, config::EtcdSettings};

pub struct EtcdBackend {
    etcd: etcd::Connection,
    /// The watch is established (set when the records are loaded, cleared when it fails).
    up: std::sync::atomic::AtomicBool,
    directory: Arc<Directory>,
    dir: String,
}

fn kind_of(name: &str) -> Option<Kind> {
    match name {
        "key" => Some(Kind::Key),
        "team" => Some(Kind::Team),
        "user" => Some(Kind::User),
        _ => None,
    }
}

/// A stored record from its etcd key (`<dir><kind>/<id>`) and JSON value; unknown or malformed
/// entries are skipped (logged), never fatal.
fn decode(dir: &str, key: &[u8], value: &[u8]) -> Option<Record> {
    let key = std::str::from_utf8(key).ok()?.strip_prefix(dir)?;
    let (kind, _) = key.split_once('/')?;
    let parsed = match kind_of(kind)? {
        Kind::Key => serde_json::from_slice(value).map(Record::Key),
        Kind::Team => serde_json::from_slice(value).map(Record::Team),
        Kind::User => serde_json::from_slice(value).map(Record::User),
    };
    parsed
        .map_err(|e| tracing::warn!(key, error = %e, "skipping a malformed record in etcd"))
        .ok()
}

fn encode(r: &Record) -> Vec<u8> {
    match r {
        Record::Key(k) => serde_json::to_vec(k),
        Record::Team(t) => serde_json::to_vec(t),
        Record::User(u) => serde_json::to_vec(u),
    }
    .expect("records serialise")
}

fn b_up_clear(weak: &std::sync::Weak<EtcdBackend>) {
    if let Some(b) = weak.upgrade() {
        b.up.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl EtcdBackend {
    /// Starts the watch that keeps `directory` in step with etcd (until the backend is dropped).
    pub fn start(settings: EtcdSettings, directory: Arc<Directory>) -> Arc<Self> {
        let dir = etcd::dir(&settings, "records");
        let backend = Arc::new(Self {
            up: std::sync::atomic::AtomicBool::new(false),
            etcd: etcd::Connection::new(settings),
            directory,
            dir,
        });
        let weak = Arc::downgrade(&backend);
        tokio::spawn(async move {
            let mut logged = false;
            loop {
                let Some(b) = weak.upgrade() else { return };
                let result = b.follow().await;
                drop(b);
                if let Err(e) = result {
                    metrics::gauge!("switchboard_etcd_up").set(0.0);
                    b_up_clear(&weak);
                    if !logged {
                        tracing::warn!(error = %e, "key store: etcd watch lost; serving the last keys seen and retrying");
                        logged = true;
                    }
                } else {
                    logged = false;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        backend
    }

    async fn client(&self) -> Result<Client, etcd_client::Error> {
        self.etcd.client().await
    }

    async fn forget_client(&self) {
        self.etcd.forget().await;
    }

    /// Loads every record, then applies changes as they come until the watch fails.
    async fn follow(&self) -> Result<(), etcd_client::Error> {
        let mut client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                self.forget_client().await;
                return Err(e);
            }
        };
        let all = client
            .get(self.dir.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = all.header().map_or(0, |h| h.revision());
        let mut snap = Snapshot::default();
        for kv in all.kvs() {
            if let Some(r) = decode(&self.dir, kv.key(), kv.value()) {
                snap.put(r);
            }
        }
        tracing::debug!(keys = snap.keys.len(), revision, "key store loaded from etcd");
        metrics::gauge!("switchboard_etcd_up").set(1.0);
        self.up.store(true, std::sync::atomic::Ordering::Relaxed);
        self.directory.replace(snap);
        self.directory.set_revision(revision);
        let mut watch = client
            .watch(
                self.dir.as_str(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1)
                        .with_progress_notify(),
                ),
            )
            .await?;
        while let Some(resp) = watch.message().await? {
            if resp.canceled() || resp.compact_revision() > 0 {
                // Fell behind a compaction: reload everything.
                return Ok(());
            }
            let events = resp.events();
            if !events.is_empty() {
                self.directory.edit(|s| {
                    for e in events {
                        let Some(kv) = e.kv() else { continue };
                        match e.event_type() {
                            EventType::Put => {
                                if let Some(r) = decode(&self.dir, kv.key(), kv.value()) {
                                    s.put(r);
                                }
                            }
                            EventType::Delete => {
                                let key = String::from_utf8_lossy(kv.key());
                                if let Some((kind, id)) = key
                                    .strip_prefix(self.dir.as_str())
                                    .and_then(|k| k.split_once('/'))
                                    && let Some(kind) = kind_of(kind)
                                {
                                    s.remove(kind, id);
                                }
                            }
                        }
                    }
                });
            }
            if let Some(h) = resp.header() {
                self.directory.set_revision(h.revision());
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Backend for EtcdBackend {
    fn loaded(&self) -> bool {
        self.directory.revision() > 0
    }

    fn reachable(&self) -> bool {
        self.up.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn apply(&self, change: Change) -> Result<(), StoreError> {
        let unavailable = |e: String| StoreError::Unavailable(format!("etcd: {e}"));
        let (kind, id) = match &change {
            Change::Create(r) | Change::Update(r) => (r.kind(), r.id().to_string()),
            Change::Delete(kind, id) => (*kind, id.clone()),
        };
        let key = format!("{}{}/{id}", self.dir, kind.as_str());
        let exists = Compare::create_revision(key.clone(), CompareOp::Greater, 0);
        let txn = match &change {
            Change::Create(r) => Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), encode(r), None)]),
            Change::Update(r) => {
                Txn::new()
                    .when([exists])
                    .and_then([TxnOp::put(key.clone(), encode(r), None)])
            }
            Change::Delete(..) => Txn::new()
                .when([exists])
                .and_then([TxnOp::delete(key.clone(), None)]),
        };
        let mut client = self.client().await.map_err(|e| unavailable(e.to_string()))?;
        let resp = match tokio::time::timeout(etcd::REQUEST_TIMEOUT, client.txn(txn)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(unavailable(e.to_string())),
            Err(_) => return Err(unavailable("no answer within 2 s".into())),
        };
        if !resp.succeeded() {
            return Err(match change {
                Change::Create(_) => StoreError::AlreadyExists(kind.as_str(), id),
                _ => StoreError::NotFound(kind.as_str(), id),
            });
        }
        // Read-your-writes on this replica: return once our own watch has applied the change.
        let revision = resp.header().map_or(0, |h| h.revision());
        if !self.directory.wait_for(revision, Duration::from_secs(2)).await {
            tracing::warn!(
                revision,
                "key store: the write is durable but this replica's watch lags"
            );
        }
        Ok(())
    }
}
