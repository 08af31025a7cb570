//! The response cache: exact-match answers in this process or in Redis, per-request controls
//! (`no-cache`, `no-store`, `ttl`, `s-maxage`, `namespace`), and single-flight: concurrent identical
//! requests make one upstream call and the others wait for its answer (across replicas through a
//! Redis lock when the cache is shared).
//!
//! The cache stores domain answers; the api layer decides when to look up (after authentication
//! and the model allow-list, before budgets: a hit costs nothing) and renders hits on its surface.

pub mod key;
mod store;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{sync::watch, time::Instant};

pub use key::{CacheKey, Partition};
use store::{Found, LocalStore, RedisStore};

use crate::{
    cluster::redis::RedisTarget,
    config::{CacheBackend, CacheSettings, Isolation},
    domain::{CacheControl, ChatChunk, ChatResponse, EmbedResponse, now_ms},
};

/// How often a replica waiting on another replica's fill looks for the answer.
const POLL: Duration = Duration::from_millis(20);

/// What is cached.
#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    Chat(ChatResponse),
    /// Every chunk of a completed stream, in order, for an identical replay.
    Stream(Vec<ChatChunk>),
    Embed(EmbedResponse),
}

/// Which deployment produced a cached answer (reported in the route of a hit).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Origin {
    pub group: String,
    pub deployment: String,
    pub provider: String,
    pub upstream_model: String,
}

impl Answer {
    /// About the size of the answer's text and vectors in bytes: the entry-size limit, checked
    /// without serialising the answer on the request path.
    pub fn approx_bytes(&self) -> usize {
        let message = |m: &crate::domain::Message| {
            m.content.joined_text().len()
                + m.tool_calls
                    .iter()
                    .map(|t| t.id.len() + t.name.len() + t.arguments.len() + 32)
                    .sum::<usize>()
                + 64
        };
        match self {
            Answer::Chat(r) => 256 + r.choices.iter().map(|c| message(&c.message)).sum::<usize>(),
            Answer::Stream(chunks) => chunks.iter().map(chunk_bytes).sum(),
            // Vectors are written as decimal text: about 12 bytes per number.
            Answer::Embed(r) => 128 + r.data.iter().map(|v| v.len() * 12 + 4).sum::<usize>(),
        }
    }
}

/// About the size of one stream chunk in bytes (see [`Answer::approx_bytes`]).
pub fn chunk_bytes(c: &ChatChunk) -> usize {
    128 + c
        .choices
        .iter()
        .map(|ch| {
            ch.delta.content.as_ref().map_or(0, String::len)
                + ch.delta
                    .tool_calls
                    .iter()
                    .map(|t| t.arguments.as_ref().map_or(0, String::len) + 32)
                    .sum::<usize>()
        })
        .sum::<usize>()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    pub answer: Answer,
    pub origin: Origin,
    /// Unix ms (ages of entries shared through Redis).
    pub stored_at_ms: i64,
}

/// The call types the cache serves, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    ChatStream,
    Embed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::ChatStream => "chat_stream",
            Kind::Embed => "embeddings",
        }
    }
}

/// The outcome of a lookup.
pub enum Lookup {
    /// A fresh answer, and how old it is.
    Hit { entry: Arc<Entry>, age: Duration },
    /// No usable answer: call upstream, then hand the answer to the [`Fill`].
    Miss(Fill),
}

enum Backend {
    Local(LocalStore),
    Redis(Arc<RedisStore>),
}

pub struct ResponseCache {
    settings: CacheSettings,
    backend: Backend,
    /// Keys being filled by a request of this replica: waiters subscribe instead of calling upstream.
    flights: Mutex<HashMap<CacheKey, watch::Receiver<bool>>>,
}

impl ResponseCache {
    /// A cache as configured (a Redis backend connects in the background).
    pub fn new(settings: CacheSettings) -> Arc<Self> {
        let backend = match &settings.backend {
            CacheBackend::Local { max_size } => Backend::Local(LocalStore::new(*max_size)),
            CacheBackend::Redis(address) => Backend::Redis(RedisStore::start(RedisTarget::from(address))),
        };
        Arc::new(Self {
            settings,
            backend,
            flights: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// Whether this call type and the request's controls use the cache at all.
    pub fn applies(&self, kind: Kind, ctl: &CacheControl) -> bool {
        let served = match kind {
            Kind::Chat | Kind::ChatStream => self.settings.chat,
            Kind::Embed => self.settings.embeddings,
        };
        served
            && if self.settings.default_off {
                ctl.use_cache == Some(true)
            } else {
                ctl.use_cache != Some(false)
            }
    }

    /// The partition of a request: configured and requested namespaces, and the caller's team or
    /// key when the cache is isolated (`team` and `key` are the caller's ids, if any).
    pub fn partition<'a>(
        &'a self,
        ctl: &'a CacheControl,
        key_scope: Option<&'a str>,
        team_scope: Option<&'a str>,
    ) -> Partition<'a> {
        let scope = match self.settings.isolation {
            Isolation::Shared => None,
            Isolation::Team => team_scope.or(key_scope).or(Some("master")),
            Isolation::Key => key_scope.or(Some("master")),
        };
        Partition {
            config_namespace: self.settings.namespace.as_deref(),
            request_namespace: ctl.namespace.as_deref(),
            scope,
        }
    }

    async fn get(&self, key: &CacheKey) -> Option<Found> {
        match &self.backend {
            Backend::Local(s) => s.get(key),
            Backend::Redis(s) => s.get(key).await,
        }
    }

    /// Looks `key` up. On a miss the caller becomes the one request that fills the key (others
    /// wait for it, bounded by `lock_wait`), unless the controls opt out of lookup or storage.
    pub async fn lookup(
        self: &Arc<Self>,
        kind: Kind,
        group: &str,
        key: CacheKey,
        ctl: &CacheControl,
    ) -> Lookup {
        let ttl = ctl.ttl.unwrap_or(self.settings.ttl);
        let fresh = |f: &Found| ctl.s_maxage.is_none_or(|max| f.age <= max);
        let count = |result: &'static str| {
            metrics::counter!("switchboard_cache_lookups_total", "kind" => kind.as_str(), "model_group" => group.to_string(), "result" => result)
                .increment(1);
        };
        let fill = |release: Option<Release>| Fill {
            cache: self.clone(),
            key,
            ttl,
            store: !ctl.no_store && !ttl.is_zero(),
            release,
        };
        if ctl.no_cache {
            count("skipped");
            return Lookup::Miss(fill(None));
        }
        if let Some(found) = self.get(&key).await.filter(&fresh) {
            count("hit");
            return Lookup::Hit {
                entry: found.entry,
                age: found.age,
            };
        }
        if ctl.no_store {
            count("miss");
            return Lookup::Miss(fill(None));
        }
        // Single-flight within this replica.
        let (tx, waiting) = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            match flights.get(&key) {
                Some(rx) => (None, Some(rx.clone())),
                None => {
                    let (tx, rx) = watch::channel(false);
                    flights.insert(key, rx);
                    (Some(tx), None)
                }
            }
        };
        if let Some(mut rx) = waiting {
            metrics::counter!("switchboard_cache_waits_total", "kind" => kind.as_str()).increment(1);
            let _ = tokio::time::timeout(self.settings.lock_wait, rx.wait_for(|done| *done)).await;
            if let Some(found) = self.get(&key).await.filter(&fresh) {
                count("hit");
                return Lookup::Hit {
                    entry: found.entry,
                    age: found.age,
                };
            }
            // The filler failed or did not store: call upstream without another round of waiting.
            count("miss");
            return Lookup::Miss(fill(None));
        }
        let mut release = Release {
            cache: self.clone(),
            key,
            flight: tx,
            redis_lock: false,
        };
        // Single-flight across replicas.
        if let Backend::Redis(r) = &self.backend {
            match r.lock(&key, self.settings.lock_wait).await {
                Some(true) => release.redis_lock = true,
                Some(false) => {
                    metrics::counter!("switchboard_cache_waits_total", "kind" => kind.as_str()).increment(1);
                    if let Some(found) = self.wait_for_peer(r, &key, &fresh).await {
                        count("hit");
                        // Dropping `release` wakes this replica's waiters, who find it too.
                        return Lookup::Hit {
                            entry: found.entry,
                            age: found.age,
                        };
                    }
                }
                None => {}
            }
        }
        count("miss");
        Lookup::Miss(fill(Some(release)))
    }

    /// Polls for the answer another replica is filling, until it appears, its lock goes or
    /// `lock_wait` passes.
    async fn wait_for_peer(
        &self,
        r: &RedisStore,
        key: &CacheKey,
        fresh: &impl Fn(&Found) -> bool,
    ) -> Option<Found> {
        let until = Instant::now() + self.settings.lock_wait;
        let mut polls = 0u32;
        while Instant::now() < until {
            tokio::time::sleep(POLL).await;
            if let Some(found) = r.get(key).await.filter(fresh) {
                return Some(found);
            }
            polls += 1;
            if polls.is_multiple_of(5) && r.locked(key).await != Some(true) {
                // The filler finished without storing (or died): stop waiting.
                return r.get(key).await.filter(fresh);
            }
        }
        None
    }

    fn finish_flight(&self, key: &CacheKey, tx: &watch::Sender<bool>) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights
            .get(key)
            .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
        {
            flights.remove(key);
        }
        drop(flights);
        let _ = tx.send(true);
    }
}

/// Ends a fill: wakes this replica's waiters and releases the Redis lock. Runs on drop, so a
/// failed or cancelled request releases too.
struct Release {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    flight: Option<watch::Sender<bool>>,
    redis_lock: bool,
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(tx) = self.flight.take() {
            self.cache.finish_flight(&self.key, &tx);
        }
        if self.redis_lock
            && let Backend::Redis(r) = &self.cache.backend
        {
            let (r, key) = (r.clone(), self.key);
            tokio::spawn(async move { r.unlock(&key).await });
        }
    }
}

/// The right (and duty) to store the answer of a missed key. Dropped without [`Fill::store`]
/// (an error, a cancelled call), it stores nothing and lets waiters go upstream themselves.
pub struct Fill {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    ttl: Duration,
    store: bool,
    release: Option<Release>,
}

impl Fill {
    pub fn key(&self) -> CacheKey {
        self.key
    }

    /// Stores the answer (unless the request said `no-store` or it is too large), then releases
    /// the waiters. Never blocks: Redis writes run in the background.
    pub fn store(mut self, answer: Answer, origin: Origin, kind: Kind) {
        if !self.store {
            return;
        }
        if answer.approx_bytes() > self.cache.settings.max_entry_bytes {
            metrics::counter!("switchboard_cache_too_large_total", "kind" => kind.as_str()).increment(1);
            return;
        }
        let entry = Entry {
            answer,
            origin,
            stored_at_ms: now_ms(),
        };
        metrics::counter!("switchboard_cache_stores_total", "kind" => kind.as_str()).increment(1);
        let release = self.release.take();
        match &self.cache.backend {
            Backend::Local(s) => {
                s.put(self.key, Arc::new(entry), self.ttl);
                drop(release);
            }
            Backend::Redis(r) => {
                let (r, key, ttl) = (r.clone(), self.key, self.ttl);
                // Encoded and written off the request path; waiters are woken once it is readable.
                tokio::spawn(async move {
                    match serde_json::to_vec(&entry) {
                        Ok(bytes) => {
                            r.put(&key, bytes, ttl).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "cache: cannot encode an answer"),
                    }
                    drop(release);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Usage;

    fn cache(ttl: Duration) -> Arc<ResponseCache> {
        ResponseCache::new(CacheSettings {
            backend: CacheBackend::Local { max_size: 100 },
            ttl,
            namespace: None,
            chat: true,
            embeddings: true,
            default_off: false,
            isolation: Isolation::Shared,
            lock_wait: Duration::from_secs(30),
            max_entry_bytes: 1 << 20,
        })
    }

    fn answer() -> Answer {
        Answer::Embed(EmbedResponse {
            model: "m".into(),
            data: vec![vec![1.0]],
            usage: Usage::default(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_fillers_answer_and_the_ttl_ends_it() {
        let c = cache(Duration::from_secs(60));
        let (k, ctl) = (CacheKey([7; 32]), CacheControl::default());
        let Lookup::Miss(fill) = c.lookup(Kind::Embed, "g", k, &ctl).await else {
            panic!("empty cache")
        };
        let waiter = tokio::spawn({
            let c = c.clone();
            async move {
                matches!(
                    c.lookup(Kind::Embed, "g", k, &CacheControl::default()).await,
                    Lookup::Hit { .. }
                )
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "the waiter waits for the filler");
        fill.store(answer(), Origin::default(), Kind::Embed);
        assert!(waiter.await.unwrap(), "and is served its answer");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            matches!(c.lookup(Kind::Embed, "g", k, &ctl).await, Lookup::Miss(_)),
            "expired"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_fill_releases_its_waiters_at_once() {
        let c = cache(Duration::from_secs(60));
        let k = CacheKey([8; 32]);
        let Lookup::Miss(fill) = c.lookup(Kind::Embed, "g", k, &CacheControl::default()).await else {
            panic!("empty cache")
        };
        let waiter = tokio::spawn({
            let c = c.clone();
            async move {
                let started = Instant::now();
                let miss = matches!(
                    c.lookup(Kind::Embed, "g", k, &CacheControl::default()).await,
                    Lookup::Miss(_)
                );
                (miss, started.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(fill);
        let (miss, waited) = waiter.await.unwrap();
        assert!(miss, "nothing was stored: the waiter goes upstream itself");
        assert_eq!(
            waited,
            Duration::from_millis(500),
            "released when the filler failed, not at lock_wait"
        );
        assert!(c.flights.lock().unwrap().is_empty(), "no flight left behind");
    }

    #[tokio::test(start_paused = true)]
    async fn no_store_and_oversized_answers_leave_nothing() {
        let c = cache(Duration::from_secs(60));
        let k = CacheKey([9; 32]);
        let no_store = CacheControl {
            no_store: true,
            ..CacheControl::default()
        };
        let Lookup::Miss(fill) = c.lookup(Kind::Embed, "g", k, &no_store).await else {
            panic!()
        };
        fill.store(answer(), Origin::default(), Kind::Embed);
        assert!(c.get(&k).await.is_none());
        let small = ResponseCache::new(CacheSettings {
            max_entry_bytes: 10,
            ..c.settings.clone()
        });
        let Lookup::Miss(fill) = small.lookup(Kind::Embed, "g", k, &CacheControl::default()).await else {
            panic!()
        };
        fill.store(answer(), Origin::default(), Kind::Embed);
        assert!(small.get(&k).await.is_none());
    }
}
