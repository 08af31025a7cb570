//! The replica's view of every key, team and user: an immutable snapshot swapped whole on each
//! change, so authenticating a request is a hash and a map lookup, with no lock and no I/O.
//! Changes are written through a [`Backend`]: memory on a single node, etcd in a fleet (where each
//! replica's watch applies them to its own directory).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use super::records::{KeyRecord, TeamRecord, UserRecord};

/// One stored record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Key(KeyRecord),
    Team(TeamRecord),
    User(UserRecord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Key,
    Team,
    User,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::Team => "team",
            Kind::User => "user",
        }
    }
}

impl Record {
    pub fn kind(&self) -> Kind {
        match self {
            Record::Key(_) => Kind::Key,
            Record::Team(_) => Kind::Team,
            Record::User(_) => Kind::User,
        }
    }
    pub fn id(&self) -> &str {
        match self {
            Record::Key(k) => &k.id,
            Record::Team(t) => &t.id,
            Record::User(u) => &u.id,
        }
    }
}

/// A write, with the precondition the store checks atomically.
#[derive(Debug, Clone)]
pub enum Change {
    /// Fails with `AlreadyExists` if a record of that kind and id exists.
    Create(Record),
    /// Fails with `NotFound` unless it exists.
    Update(Record),
    /// Fails with `NotFound` unless it exists.
    Delete(Kind, String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("{0} {1:?} already exists")]
    AlreadyExists(&'static str, String),
    #[error("{0} {1:?} not found")]
    NotFound(&'static str, String),
    /// The durable store cannot be reached; nothing was written.
    #[error("the key store is unavailable: {0}")]
    Unavailable(String),
}

/// Where changes are made durable.
#[tonic::async_trait]
pub trait Backend: Send + Sync {
    /// Writes `change`; when it returns Ok, this replica's directory reflects it.
    async fn apply(&self, change: Change) -> Result<(), StoreError>;
    /// Whether the directory holds the store's records (readiness). A store that was loaded once
    /// stays ready while unreachable: the replica keeps serving the keys it has.
    fn loaded(&self) -> bool {
        true
    }
    /// Whether the store answers right now (readiness reports it; the replica serves either way).
    fn reachable(&self) -> bool {
        true
    }
}

/// Everything a replica knows, as of one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub keys: HashMap<String, Arc<KeyRecord>>,
    /// SHA-256 of the plaintext -> key id.
    by_hash: HashMap<String, String>,
    pub teams: HashMap<String, Arc<TeamRecord>>,
    pub users: HashMap<String, Arc<UserRecord>>,
}

impl Snapshot {
    pub fn key_by_hash(&self, hash: &str) -> Option<&Arc<KeyRecord>> {
        self.keys.get(self.by_hash.get(hash)?)
    }

    pub fn exists(&self, kind: Kind, id: &str) -> bool {
        match kind {
            Kind::Key => self.keys.contains_key(id),
            Kind::Team => self.teams.contains_key(id),
            Kind::User => self.users.contains_key(id),
        }
    }

    pub fn put(&mut self, record: Record) {
        match record {
            Record::Key(k) => {
                if let Some(old) = self.keys.get(&k.id) {
                    self.by_hash.remove(&old.hash);
                }
                self.by_hash.insert(k.hash.clone(), k.id.clone());
                self.keys.insert(k.id.clone(), Arc::new(k));
            }
            Record::Team(t) => {
                self.teams.insert(t.id.clone(), Arc::new(t));
            }
            Record::User(u) => {
                self.users.insert(u.id.clone(), Arc::new(u));
            }
        }
    }

    pub fn remove(&mut self, kind: Kind, id: &str) {
        match kind {
            Kind::Key => {
                if let Some(old) = self.keys.remove(id) {
                    self.by_hash.remove(&old.hash);
                }
            }
            Kind::Team => {
                self.teams.remove(id);
            }
            Kind::User => {
                self.users.remove(id);
            }
        }
    }
}

/// The current snapshot; readers never block writers.
#[derive(Default)]
pub struct Directory {
    current: ArcSwap<Snapshot>,
    /// The store revision the snapshot reflects (etcd's; unused in memory).
    revision: AtomicI64,
    advanced: Notify,
}

impl Directory {
    /// Records that the snapshot now reflects the store up to `revision`.
    pub fn set_revision(&self, revision: i64) {
        self.revision.fetch_max(revision, Ordering::AcqRel);
        self.advanced.notify_waiters();
    }

    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Waits until the snapshot reflects `revision` (a write this replica just made), at most
    /// `timeout`; false if it did not get there in time.
    pub async fn wait_for(&self, revision: i64, timeout: std::time::Duration) -> bool {
        let wait = async {
            loop {
                let advanced = self.advanced.notified();
                if self.revision() >= revision {
                    return;
                }
                advanced.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Replaces everything (a full load from the store).
    pub fn replace(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// Applies a batch of edits as one swap. Callers serialise their edits (one writer: the memory
    /// backend's mutex, or the store's watch task), so a read-copy-store loses nothing.
    pub fn edit(&self, f: impl FnOnce(&mut Snapshot)) {
        let mut next = Snapshot::clone(&self.current.load());
        f(&mut next);
        self.current.store(Arc::new(next));
    }
}

/// A single node's store: the directory itself, with writes serialised by a mutex so that the
/// create/update preconditions hold.
#[derive(Default)]
pub struct MemoryBackend {
    pub directory: Arc<Directory>,
    writes: tokio::sync::Mutex<()>,
}

impl MemoryBackend {
    pub fn new(directory: Arc<Directory>) -> Self {
        Self {
            directory,
            writes: tokio::sync::Mutex::new(()),
        }
    }
}

#[tonic::async_trait]
impl Backend for MemoryBackend {
    async fn apply(&self, change: Change) -> Result<(), StoreError> {
        let _serial = self.writes.lock().await;
        let snap = self.directory.snapshot();
        match &change {
            Change::Create(r) if snap.exists(r.kind(), r.id()) => {
                return Err(StoreError::AlreadyExists(r.kind().as_str(), r.id().to_string()));
            }
            Change::Update(r) if !snap.exists(r.kind(), r.id()) => {
                return Err(StoreError::NotFound(r.kind().as_str(), r.id().to_string()));
            }
            Change::Delete(kind, id) if !snap.exists(*kind, id) => {
                return Err(StoreError::NotFound(kind.as_str(), id.clone()));
            }
            _ => {}
        }
        drop(snap);
        self.directory.edit(|s| match change {
            Change::Create(r) | Change::Update(r) => s.put(r),
            Change::Delete(kind, id) => s.remove(kind, &id),
        });
        Ok(())
    }
}
