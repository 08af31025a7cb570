//! Spend checkpoints: the leader copies every budget window's spent amount from Redis into etcd
//! every few seconds, and puts them back when Redis comes back empty (a restart without
//! persistence, a failover to an empty replica), so that losing Redis cannot reset a budget to zero.
//! Restoring never lowers a counter that already moved on.

use serde::{Deserialize, Serialize};

use super::{FleetLedger, LedgerError, now_ms};

/// Set in Redis once its budget counters are known good (fresh, or restored); a Redis that lost
/// its data has none.
pub(super) const MARKER: &str = "sb:v1:{q}:restored";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    pub at_ms: i64,
    /// (redis key of a budget window, spent nano-USD, expires at unix ms or 0)
    pub budgets: Vec<(String, i64, i64)>,
}

/// KEYS: the marker. ARGV: now ms, then triples key, spent, expires-at ms (0: none).
const RESTORE: &str = r#"
local now = tonumber(ARGV[1])
for i = 2, #ARGV, 3 do
  local key, spent, at = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if at == 0 or at > now then
    local cur = tonumber(redis.call('HGET', key, 's') or '0')
    if cur < spent then redis.call('HSET', key, 's', spent) end
    if at > 0 then redis.call('PEXPIREAT', key, at) end
  end
end
redis.call('SET', KEYS[1], now)
return 1
"#;

fn unavailable(e: redis::RedisError) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

impl FleetLedger {
    /// Every budget window's spent amount. Refused while Redis has lost its data and is not
    /// restored (checked before and after reading): an emptied Redis read between a restart and
    /// its restore would otherwise overwrite the good checkpoint with nothing.
    pub async fn checkpoint(&self) -> Result<Checkpoint, LedgerError> {
        let lost = || {
            LedgerError::Unavailable("redis lost its data and is not restored yet: not checkpointed".into())
        };
        if self.needs_restore().await? {
            return Err(lost());
        }
        let mut conn = self.connection()?;
        let mut cursor: u64 = 0;
        let mut budgets = Vec::new();
        let now = now_ms();
        loop {
            // Every budget key shares the `{q}` hash tag: on a cluster, one node holds them all.
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg("sb:v1:{q}:s:*:b:*")
                .arg("COUNT")
                .arg(1000);
            let (next, keys): (u64, Vec<String>) = conn.query_at(MARKER, scan).await.map_err(unavailable)?;
            for key in keys {
                let (spent, pttl): (Option<i64>, i64) = redis::pipe()
                    .cmd("HGET")
                    .arg(&key)
                    .arg("s")
                    .cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                if let Some(s) = spent.filter(|s| *s > 0) {
                    budgets.push((key, s, if pttl > 0 { now + pttl } else { 0 }));
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if self.needs_restore().await? {
            return Err(lost());
        }
        Ok(Checkpoint { at_ms: now, budgets })
    }

    /// Whether Redis lost its data since the counters were last known good.
    pub async fn needs_restore(&self) -> Result<bool, LedgerError> {
        let mut conn = self.connection()?;
        let exists: bool = redis::cmd("EXISTS")
            .arg(MARKER)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(!exists)
    }

    /// Puts a checkpoint back (never lowering a counter) and marks Redis as restored.
    pub async fn restore(&self, checkpoint: &Checkpoint) -> Result<(), LedgerError> {
        let mut conn = self.connection()?;
        let script = redis::Script::new(RESTORE);
        let mut inv = script.key(MARKER);
        inv.arg(now_ms());
        for (key, spent, at) in &checkpoint.budgets {
            inv.arg(key).arg(spent).arg(at);
        }
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }
}
