//! Where cached answers live: this process (bounded LRU with TTLs on tokio's clock) or Redis
//! (shared by the fleet; TTL on the server; a lock per key for cross-replica single-flight).
//!
//! Redis is never allowed to slow a request down: every command has a short timeout, and after a
//! failure the cache is bypassed for a second before Redis is tried again.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwapOption;
use redis::Script;
use tokio::time::Instant;

use super::{CacheKey, Entry};
use crate::{
    cluster::redis::{Conn, Redis, RedisTarget},
    domain::now_ms,
};

/// Longest a cache command may take before the request goes on without the cache.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(100);
/// After a Redis failure, the cache is bypassed this long.
const BACKOFF_MS: i64 = 1000;

/// A hit: the entry and how long ago it was stored.
pub struct Found {
    pub entry: Arc<Entry>,
    pub age: Duration,
}

// ------------------------------------------------------------------------------------------ local

struct Slot {
    entry: Arc<Entry>,
    stored: Instant,
    expires: Instant,
    used: u64,
}

#[derive(Default)]
struct Lru {
    slots: HashMap<CacheKey, Slot>,
    /// Last use -> key: the front is the least recently used.
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
}

/// In-process entries: at most `max` of them, least recently used evicted first. Locked for
/// microseconds, never across an await.
pub struct LocalStore {
    lru: Mutex<Lru>,
    max: usize,
}

impl LocalStore {
    pub fn new(max: usize) -> Self {
        Self {
            lru: Mutex::new(Lru::default()),
            max: max.max(1),
        }
    }

    pub fn get(&self, key: &CacheKey) -> Option<Found> {
        let now = Instant::now();
        let mut lru = self.lru.lock().unwrap_or_else(|p| p.into_inner());
        let lru = &mut *lru;
        let slot = lru.slots.get_mut(key)?;
        if slot.expires <= now {
            lru.order.remove(&slot.used);
            lru.slots.remove(key);
            return None;
        }
        lru.tick += 1;
        lru.order.remove(&slot.used);
        slot.used = lru.tick;
        lru.order.insert(slot.used, *key);
        Some(Found {
            entry: slot.entry.clone(),
            age: now.saturating_duration_since(slot.stored),
        })
    }

    pub fn put(&self, key: CacheKey, entry: Arc<Entry>, ttl: Duration) {
        let now = Instant::now();
        let mut lru = self.lru.lock().unwrap_or_else(|p| p.into_inner());
        let lru = &mut *lru;
        lru.tick += 1;
        let slot = Slot {
            entry,
            stored: now,
            expires: now + ttl,
            used: lru.tick,
        };
        lru.order.insert(slot.used, key);
        if let Some(old) = lru.slots.insert(key, slot) {
            lru.order.remove(&old.used);
        }
        while lru.slots.len() > self.max {
            let Some((_, victim)) = lru.order.pop_first() else {
                break;
            };
            lru.slots.remove(&victim);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lru.lock().unwrap_or_else(|p| p.into_inner()).slots.len()
    }
}

// ------------------------------------------------------------------------------------------ redis

/// Deletes the lock only if it is still ours (a slow leader must not release a successor's lock).
/// KEYS[1] = lock; ARGV[1] = token.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Entries in Redis under `sb:v1:cache:{<key>}` (JSON), locks beside them (same hash slot).
pub struct RedisStore {
    redis: Arc<ArcSwapOption<Redis>>,
    /// Bypass the cache until this time (ms) after a failure.
    down_until: AtomicI64,
    unlock: Script,
    token: String,
}

fn entry_key(key: &CacheKey) -> String {
    format!("{}:cache:{{{key}}}", crate::cluster::redis::PREFIX)
}

fn lock_key(key: &CacheKey) -> String {
    format!("{}:cache:{{{key}}}:lock", crate::cluster::redis::PREFIX)
}

impl RedisStore {
    /// Connects in the background (retrying); until connected the cache is bypassed.
    pub fn start(target: RedisTarget) -> Arc<Self> {
        let unlock = Script::new(UNLOCK);
        Arc::new(Self {
            redis: crate::cluster::redis::connect_in_background(
                target,
                COMMAND_TIMEOUT,
                "cache",
                vec![unlock.clone()],
            ),
            down_until: AtomicI64::new(0),
            unlock,
            token: format!("{:032x}", fastrand::u128(..)),
        })
    }

    /// A connection, unless Redis is unconnected or failed within the last second.
    fn conn(&self) -> Option<Conn> {
        if now_ms() < self.down_until.load(Ordering::Relaxed) {
            return None;
        }
        self.redis.load().as_ref().map(|r| r.conn())
    }

    fn failed(&self, op: &'static str, e: &dyn std::fmt::Display) {
        metrics::counter!("switchboard_cache_errors_total", "op" => op).increment(1);
        let until = now_ms() + BACKOFF_MS;
        let previous = self.down_until.swap(until, Ordering::Relaxed);
        // Logged once per outage (failures keep re-arming the backoff), not once per request.
        if previous < now_ms() - 2 * BACKOFF_MS {
            tracing::warn!(op, error = %e, "cache: redis unavailable, bypassing the cache for a second");
        }
    }

    /// Runs one command under the cache's timeout; `None` when Redis failed or is bypassed.
    async fn run<T: redis::FromRedisValue>(&self, op: &'static str, cmd: redis::Cmd) -> Option<T> {
        let mut c = self.conn()?;
        match tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<T>(&mut c)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(op, &e);
                None
            }
            Err(_) => {
                self.failed(op, &"timed out");
                None
            }
        }
    }

    pub async fn get(&self, key: &CacheKey) -> Option<Found> {
        let bytes: Option<Vec<u8>> = self
            .run("get", redis::cmd("GET").arg(entry_key(key)).clone())
            .await?;
        let entry: Entry = match serde_json::from_slice(&bytes?) {
            Ok(e) => e,
            Err(e) => {
                // A foreign or corrupt value: a miss (and the next store overwrites it).
                tracing::debug!(error = %e, "cache: undecodable entry");
                return None;
            }
        };
        let age = Duration::from_millis(u64::try_from(now_ms() - entry.stored_at_ms).unwrap_or(0));
        Some(Found {
            entry: Arc::new(entry),
            age,
        })
    }

    pub async fn put(&self, key: &CacheKey, bytes: Vec<u8>, ttl: Duration) -> bool {
        let ms = (ttl.as_millis() as u64).max(1);
        let cmd = redis::cmd("SET")
            .arg(entry_key(key))
            .arg(bytes)
            .arg("PX")
            .arg(ms)
            .clone();
        self.run::<()>("put", cmd).await.is_some()
    }

    /// Takes the fill lock of `key` for `ttl`: `Some(true)` taken, `Some(false)` held by another
    /// replica, `None` Redis unavailable.
    pub async fn lock(&self, key: &CacheKey, ttl: Duration) -> Option<bool> {
        let ms = (ttl.as_millis() as u64).max(1);
        let cmd = redis::cmd("SET")
            .arg(lock_key(key))
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .clone();
        let reply: Option<String> = self.run("lock", cmd).await?;
        Some(reply.is_some())
    }

    /// Whether another replica still holds the fill lock of `key`.
    pub async fn locked(&self, key: &CacheKey) -> Option<bool> {
        self.run::<bool>("locked", redis::cmd("EXISTS").arg(lock_key(key)).clone())
            .await
    }

    pub async fn unlock(&self, key: &CacheKey) {
        let Some(mut c) = self.conn() else { return };
        let mut inv = self.unlock.key(lock_key(key));
        inv.arg(&self.token);
        if let Ok(Err(e)) = tokio::time::timeout(COMMAND_TIMEOUT, inv.invoke_async::<i64>(&mut c)).await {
            self.failed("unlock", &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Answer, Origin};
    use crate::domain::{EmbedResponse, Usage};

    fn entry(n: usize) -> Arc<Entry> {
        Arc::new(Entry {
            answer: Answer::Embed(EmbedResponse {
                model: format!("m{n}"),
                data: vec![],
                usage: Usage::default(),
            }),
            origin: Origin::default(),
            stored_at_ms: 0,
        })
    }

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_their_ttl_on_tokio_time() {
        let s = LocalStore::new(10);
        s.put(key(1), entry(1), Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(59)).await;
        let hit = s.get(&key(1)).expect("fresh at 59 s");
        assert_eq!(hit.age, Duration::from_secs(59));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.get(&key(1)).is_none(), "expired at 60 s");
        assert_eq!(s.len(), 0, "an expired entry is dropped when found");
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_recently_used_entry_goes_first() {
        let s = LocalStore::new(2);
        let ttl = Duration::from_secs(60);
        s.put(key(1), entry(1), ttl);
        s.put(key(2), entry(2), ttl);
        assert!(s.get(&key(1)).is_some(), "touch 1: 2 is now the oldest");
        s.put(key(3), entry(3), ttl);
        assert_eq!(s.len(), 2);
        assert!(s.get(&key(2)).is_none());
        assert!(s.get(&key(1)).is_some() && s.get(&key(3)).is_some());
        s.put(key(3), entry(33), ttl);
        assert_eq!(s.len(), 2, "replacing an entry does not grow the cache");
    }
}
