//! Redis: one reconnecting connection with bounded timeouts (a dead Redis never hangs a request),
//! versioned key names built in one place, and the Lua scripts every read-modify-write goes through
//! (atomic, on the server's clock). All keys of one deployment share a hash tag, so each script
//! touches one slot and works on Redis Cluster too.

use std::time::Duration;

use redis::{
    AsyncCommands as _, Cmd, FromRedisValue, RedisFuture, Script, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
};

use crate::config::RedisAddress;

/// Key and channel prefix; bumped when the layout changes, so old and new code never share data.
pub const PREFIX: &str = "sb:v1";

/// Where Redis is: one server (`redis://`, `rediss://`, `unix://`), or a Redis Cluster given by
/// one or more seed nodes (the client discovers the rest and follows slot moves and failovers).
/// The URLs may carry passwords, so this type has no `Debug` and never prints them.
#[derive(Clone)]
pub struct RedisTarget {
    urls: Vec<String>,
    cluster: bool,
}

impl RedisTarget {
    /// `spec` is one URL or several separated by commas; several URLs always mean a cluster.
    pub fn new(spec: &str, cluster: bool) -> RedisTarget {
        let urls: Vec<String> = spec
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        let cluster = cluster || urls.len() > 1;
        RedisTarget { urls, cluster }
    }
}

impl From<&RedisAddress> for RedisTarget {
    fn from(a: &RedisAddress) -> RedisTarget {
        RedisTarget::new(a.url.expose(), a.cluster)
    }
}

/// A URL, or several comma-separated (a cluster's seeds).
impl From<String> for RedisTarget {
    fn from(spec: String) -> RedisTarget {
        RedisTarget::new(&spec, false)
    }
}

/// A command connection to one server or to a cluster. Both reconnect by themselves; commands with
/// keys go to the node that owns the key's slot (scripts by their first key).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Runs a keyless command (SCAN) on the node that owns `key`'s slot: on a cluster, that is
    /// where every key sharing `key`'s hash tag lives.
    pub async fn query_at<T: FromRedisValue>(&mut self, key: &str, cmd: Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => {
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                let value = c
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                Ok(redis::from_redis_value(value)?)
            }
        }
    }
}

/// A connected Redis.
#[derive(Clone)]
pub struct Redis {
    conn: Conn,
    /// Where subscriptions go: the server, or each seed of a cluster in turn (a cluster forwards
    /// every PUBLISH to all its nodes, so any one of them hears every event).
    subscribe_to: Vec<redis::Client>,
}

impl Redis {
    /// Connects, bounded by `timeout`. Commands time out after `response_timeout`.
    pub async fn connect(
        target: &RedisTarget,
        timeout: Duration,
        response_timeout: Duration,
    ) -> redis::RedisResult<Redis> {
        let timed_out = || redis::RedisError::from((redis::ErrorKind::Io, "connect timed out"));
        let subscribe_to = target
            .urls
            .iter()
            .map(|u| redis::Client::open(u.as_str()))
            .collect::<redis::RedisResult<Vec<_>>>()?;
        let Some(first) = subscribe_to.first().cloned() else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no redis url",
            )));
        };
        let conn = if target.cluster {
            let client = ClusterClient::builder(target.urls.iter().map(String::as_str))
                .connection_timeout(timeout)
                .response_timeout(response_timeout)
                .retries(2)
                .max_retry_wait(500)
                .build()?;
            let conn = tokio::time::timeout(timeout, client.get_async_connection())
                .await
                .map_err(|_| timed_out())??;
            Conn::Cluster(conn)
        } else {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(response_timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            let conn = tokio::time::timeout(timeout, ConnectionManager::new_with_config(first, config))
                .await
                .map_err(|_| timed_out())??;
            Conn::Single(conn)
        };
        Ok(Redis { conn, subscribe_to })
    }

    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// A dedicated pub/sub connection (subscriptions cannot share the multiplexed one): to the
    /// first node that answers.
    pub async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        let mut last = None;
        for client in &self.subscribe_to {
            match client.get_async_pubsub().await {
                Ok(ps) => return Ok(ps),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "no redis node"))))
    }

    /// Loads `scripts` on the server (on a cluster, on every primary) so that the first burst of
    /// calls does not meet NOSCRIPT all at once: each would then load the script itself and run it
    /// again, and under load some would outlast their timeouts. Best effort: NOSCRIPT stays handled.
    pub async fn load_scripts(&self, scripts: &[Script]) {
        let mut conn = self.conn.clone();
        for script in scripts {
            if let Err(e) = script.load_async(&mut conn).await {
                tracing::debug!(error = %e, "redis script not preloaded");
                return;
            }
        }
    }

    pub async fn ping(&self) -> bool {
        let mut c = self.conn.clone();
        c.ping::<String>().await.is_ok()
    }
}

/// A Redis connected in the background: empty until the first connection succeeds (retried every
/// half second for as long as the slot is alive); the connection reconnects by itself after that.
/// Users treat an empty slot as "Redis unavailable" and apply their failure rules.
pub fn connect_in_background(
    target: RedisTarget,
    response_timeout: Duration,
    who: &'static str,
    scripts: Vec<Script>,
) -> std::sync::Arc<arc_swap::ArcSwapOption<Redis>> {
    let redis = std::sync::Arc::new(arc_swap::ArcSwapOption::empty());
    let slot = std::sync::Arc::downgrade(&redis);
    tokio::spawn(async move {
        loop {
            let Some(slot) = slot.upgrade() else { return };
            if slot.load().is_none() {
                match Redis::connect(&target, Duration::from_secs(1), response_timeout).await {
                    Ok(r) => {
                        r.load_scripts(&scripts).await;
                        slot.store(Some(std::sync::Arc::new(r)));
                    }
                    Err(e) => tracing::debug!(error = %e, who, "redis connect failed"),
                }
            }
            drop(slot);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    redis
}

/// `sb:v1:{<deployment>}`: the base of every key of one deployment (one hash slot).
pub fn deployment_base(deployment: &str) -> String {
    format!("{PREFIX}:{{{deployment}}}")
}

/// The sorted set of replicas by last heartbeat (ms, server time); each replica's details are in
/// `<this>:<replica>`, in the same slot.
pub fn replicas_key() -> String {
    format!("{PREFIX}:{{replicas}}")
}

/// Registers a replica: heartbeat in the sorted set, address and version beside it.
/// ARGV = replica, address, version. Returns the number of live replicas (heartbeat in the last
/// 10 s, as [`LIVE_REPLICAS`] counts them), this one included.
pub static HEARTBEAT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('SET', KEYS[1] .. ':' .. ARGV[1], ARGV[2] .. ' ' .. ARGV[3], 'PX', 60000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 600000)
return redis.call('ZCOUNT', KEYS[1], now - 10000, '+inf')
",
    )
});

/// Live replicas: {id, 'address version', heartbeat ms, ...} for heartbeats in the last 10 s.
pub static LIVE_REPLICAS: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], now - 10000, '+inf', 'WITHSCORES')
local out = {}
for i = 1, #ids, 2 do
  table.insert(out, ids[i])
  table.insert(out, redis.call('GET', KEYS[1] .. ':' .. ids[i]) or '')
  table.insert(out, ids[i + 1])
end
return out
",
    )
});

/// The channel that carries health events (`cooldown <deployment> <until_ms>`, `healthy <deployment>`).
pub fn events_channel() -> String {
    format!("{PREFIX}:events")
}

/// Counts one request against rpm and `tokens` against tpm in the current minute (server time),
/// only if both fit. KEYS[1] = deployment base; ARGV = rpm cap (0: none), tpm cap (0: none), tokens.
pub static ADMIT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local minute = math.floor(tonumber(t[1]) / 60)
local rk = KEYS[1] .. ':rpm:' .. minute
local tk = KEYS[1] .. ':tpm:' .. minute
local rcap, tcap, tok = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rpm = tonumber(redis.call('GET', rk) or '0')
local tpm = tonumber(redis.call('GET', tk) or '0')
if (rcap > 0 and rpm >= rcap) or (tcap > 0 and tpm + tok > tcap) then return 0 end
redis.call('INCR', rk)
redis.call('PEXPIRE', rk, 120000)
redis.call('INCRBY', tk, tok)
redis.call('PEXPIRE', tk, 120000)
return 1
",
    )
});

/// Starts or extends a cooldown (never shortens one) and marks the deployment half-open for after
/// it; publishes the event. KEYS[1] = base; ARGV = duration ms, deployment id, channel.
pub static COOL_DOWN: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local ck = KEYS[1] .. ':cooldown'
local ms = tonumber(ARGV[1])
local left = redis.call('PTTL', ck)
if left < ms then redis.call('SET', ck, '1', 'PX', ms) else ms = left end
redis.call('SET', KEYS[1] .. ':halfopen', '1', 'PX', ms + 3600000)
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ms
redis.call('PUBLISH', ARGV[3], 'cooldown ' .. ARGV[2] .. ' ' .. ms)
return until_ms
",
    )
});

/// Claims the half-open probe: only after the cooldown ended, only while half-open, one holder.
/// KEYS[1] = base; ARGV = lease ms, holder id. Returns 1 when this caller won.
pub static CLAIM_PROBE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1] .. ':cooldown') == 1 then return 0 end
if redis.call('EXISTS', KEYS[1] .. ':halfopen') == 0 then return 0 end
if redis.call('SET', KEYS[1] .. ':probe', ARGV[2], 'NX', 'PX', tonumber(ARGV[1])) then return 1 end
return 0
",
    )
});

/// Ends a probe. ARGV = healthy (1/0), deployment id, channel.
pub static RELEASE_PROBE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
redis.call('DEL', KEYS[1] .. ':probe')
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[1] .. ':halfopen')
  redis.call('PUBLISH', ARGV[3], 'healthy ' .. ARGV[2])
end
return 1
",
    )
});

/// Publishes this replica's view of one deployment: its in-flight count (valid for `ttl` ms, so a
/// dead replica's contribution disappears), its outcomes this minute, its token corrections.
/// KEYS[1] = base; ARGV = replica, in_flight, ttl_ms, ok_delta, fail_delta, tokens_delta,
/// latency_us, ttft_us (0: not measured); latencies are kept per replica and averaged on read.
pub static PUBLISH_LOCAL: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = math.floor(tonumber(t[1]) / 60)
redis.call('HSET', KEYS[1] .. ':inflight', ARGV[1], ARGV[2] .. ':' .. (now + tonumber(ARGV[3])))
redis.call('PEXPIRE', KEYS[1] .. ':inflight', 3600000)
if tonumber(ARGV[7]) > 0 or tonumber(ARGV[8]) > 0 then
  redis.call('HSET', KEYS[1] .. ':latency', ARGV[1], ARGV[7] .. ':' .. ARGV[8] .. ':' .. (now + 300000))
  redis.call('PEXPIRE', KEYS[1] .. ':latency', 3600000)
end
local sk = KEYS[1] .. ':stats:' .. minute
if tonumber(ARGV[4]) > 0 then redis.call('HINCRBY', sk, 'ok', ARGV[4]) end
if tonumber(ARGV[5]) > 0 then redis.call('HINCRBY', sk, 'fail', ARGV[5]) end
redis.call('PEXPIRE', sk, 120000)
local d = tonumber(ARGV[6])
if d ~= 0 then
  local tk = KEYS[1] .. ':tpm:' .. minute
  redis.call('INCRBY', tk, d)
  redis.call('PEXPIRE', tk, 120000)
end
return 1
",
    )
});

/// The fleet's view of one deployment: {cooldown ms left, half-open, probing, in-flight (live
/// replicas, expired entries pruned), rpm, tpm, ok, fail} for the current minute, and the mean of the
/// replicas' latency and time-to-first-token (us, 0 when unmeasured).
pub static SNAPSHOT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = math.floor(tonumber(t[1]) / 60)
local b = KEYS[1]
local cool = redis.call('PTTL', b .. ':cooldown')
if cool < 0 then cool = 0 end
local inflight = 0
local entries = redis.call('HGETALL', b .. ':inflight')
for i = 1, #entries, 2 do
  local n, exp = string.match(entries[i + 1], '^(%-?%d+):(%d+)$')
  if n and tonumber(exp) > now then inflight = inflight + tonumber(n)
  else redis.call('HDEL', b .. ':inflight', entries[i]) end
end
local stats = redis.call('HMGET', b .. ':stats:' .. minute, 'ok', 'fail')
local lat, lat_n, ttft, ttft_n = 0, 0, 0, 0
local lats = redis.call('HGETALL', b .. ':latency')
for i = 1, #lats, 2 do
  local l, f, exp = string.match(lats[i + 1], '^(%d+):(%d+):(%d+)$')
  if l and tonumber(exp) > now then
    if tonumber(l) > 0 then lat = lat + tonumber(l); lat_n = lat_n + 1 end
    if tonumber(f) > 0 then ttft = ttft + tonumber(f); ttft_n = ttft_n + 1 end
  else redis.call('HDEL', b .. ':latency', lats[i]) end
end
if lat_n > 0 then lat = math.floor(lat / lat_n) end
if ttft_n > 0 then ttft = math.floor(ttft / ttft_n) end
return {
  cool,
  redis.call('EXISTS', b .. ':halfopen'),
  redis.call('EXISTS', b .. ':probe'),
  inflight,
  tonumber(redis.call('GET', b .. ':rpm:' .. minute) or '0'),
  tonumber(redis.call('GET', b .. ':tpm:' .. minute) or '0'),
  tonumber(stats[1] or '0'),
  tonumber(stats[2] or '0'),
  lat,
  ttft,
}
",
    )
});
