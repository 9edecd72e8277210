//! Redis presence. Data model (every key under `cluster.key_prefix`):
//!
//! - `<prefix>:client:<client_id>` → `"<node_id>|<session_uuid>"`, `PX` presence TTL.
//! - `<prefix>:node:<node_id>` → `"1"`, `PX` presence TTL: the node's liveness record.
//!
//! Registration is one `SET … PX … GET`; refresh is one pipeline of a
//! create-or-extend script for all local sessions; removal is a
//! compare-and-delete script; lookup is one script that also checks that the
//! named node is alive. Every command is bounded by the client's response
//! timeout, so a dead Redis yields an error, never a hang.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use tokio::time::Instant;
use uuid::Uuid;

use super::{Location, PresenceError, PresenceRegistry};
use crate::ids::{ClientId, NodeId, SessionId};
use crate::metrics::Metrics;
use crate::redis_conn::{self, Connection, Connector, Pool};
use crate::redis_names::RedisNames;

pub(super) const REFRESH: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0";

pub(super) const UNREGISTER: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

const LOCATE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local sep = string.find(v, '|', 1, true)
if not sep then return false end
if redis.call('EXISTS', ARGV[1] .. string.sub(v, 1, sep - 1)) == 0 then return false end
return v";

/// How long a command may take: connecting, recycling, the reply.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a command may wait for a free pooled connection. Longer than
/// the command timeout: in a reconnect storm every CONNECT registers at
/// once and should queue, not fail, while a dead Redis still fails fast
/// (connecting is bounded by the command timeout).
const POOL_WAIT: Duration = Duration::from_secs(5);

/// Presence in Redis.
pub struct RedisPresence {
    pool: Pool,
    names: RedisNames,
    ttl_ms: u64,
    metrics: Arc<Metrics>,
    refresh: Script,
    unregister: Script,
    locate: Script,
}

impl RedisPresence {
    /// A registry on `url` with records living `ttl`.
    pub fn new(
        url: &str,
        prefix: &str,
        ttl: Duration,
        pool_size: usize,
        metrics: Arc<Metrics>,
    ) -> Result<RedisPresence, PresenceError> {
        let client = redis::Client::open(url).map_err(|e| PresenceError::Setup(Box::new(e)))?;
        let pool = Self::pool(Connector::direct(client), pool_size)
            .map_err(|e| PresenceError::Setup(Box::new(e)))?;
        Ok(Self::from_pool(pool, prefix, ttl, metrics))
    }

    /// The command pool this registry wants, on `connector` (standalone
    /// or Sentinel; TLS and ACL users are the connector's business).
    pub fn pool(
        connector: Connector,
        pool_size: usize,
    ) -> Result<Pool, redis_conn::RedisSetupError> {
        redis_conn::pool(connector, pool_size, POOL_WAIT, COMMAND_TIMEOUT)
    }

    /// A registry on an already built pool.
    pub fn from_pool(pool: Pool, prefix: &str, ttl: Duration, metrics: Arc<Metrics>) -> Self {
        RedisPresence {
            pool,
            names: RedisNames::new(prefix),
            ttl_ms: ttl.as_millis().max(1) as u64,
            metrics,
            refresh: Script::new(REFRESH),
            unregister: Script::new(UNREGISTER),
            locate: Script::new(LOCATE),
        }
    }

    async fn connection(&self) -> Result<Connection, PresenceError> {
        self.pool
            .get()
            .await
            .map(Connection::from)
            .map_err(PresenceError::Pool)
    }

    /// Runs one round trip, timing it under `command`.
    async fn timed<T, F>(&self, command: &'static str, f: F) -> Result<T, PresenceError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = tokio::time::timeout(COMMAND_TIMEOUT, f)
            .await
            .map_err(|_| PresenceError::Timeout(command))?
            .map_err(|source| PresenceError::Command { command, source });
        self.metrics
            .redis_command(command, started.elapsed().as_secs_f64());
        result
    }
}

/// `"<node>|<session>"`: node ids cannot contain `|`.
pub(super) fn encode_location(at: &Location) -> String {
    format!("{}|{}", at.node_id, at.session_id)
}

pub(super) fn decode_location(value: &str) -> Option<Location> {
    let (node, session) = value.split_once('|')?;
    Some(Location {
        node_id: NodeId::parse(node)?,
        session_id: SessionId(Uuid::parse_str(session).ok()?),
    })
}

impl PresenceRegistry for RedisPresence {
    async fn register(
        &self,
        client: &ClientId,
        at: &Location,
    ) -> Result<Option<Location>, PresenceError> {
        let mut conn = self.connection().await?;
        let key = self.names.client_key(client.as_str());
        let old: Option<String> = self
            .timed(
                "SET",
                redis::cmd("SET")
                    .arg(&key)
                    .arg(encode_location(at))
                    .arg("PX")
                    .arg(self.ttl_ms)
                    .arg("GET")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(old.as_deref().and_then(decode_location))
    }

    async fn refresh(&self, entries: &[(ClientId, Location)]) -> Result<usize, PresenceError> {
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        for (client, at) in entries {
            pipe.cmd("EVALSHA")
                .arg(self.refresh.get_hash())
                .arg(1)
                .arg(self.names.client_key(client.as_str()))
                .arg(encode_location(at))
                .arg(self.ttl_ms);
        }
        let mut result: Result<Vec<i64>, PresenceError> = self
            .timed("EVALSHA refresh", pipe.query_async(&mut conn))
            .await;
        if result.as_ref().is_err_and(PresenceError::is_no_script) {
            // A restarted Redis has lost its script cache: load and retry once.
            let _: String = self
                .timed(
                    "SCRIPT LOAD",
                    redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(REFRESH)
                        .query_async(&mut conn),
                )
                .await?;
            result = self
                .timed("EVALSHA refresh", pipe.query_async(&mut conn))
                .await;
        }
        Ok(result?.into_iter().filter(|created| *created == 1).count())
    }

    async fn unregister(&self, client: &ClientId, at: &Location) -> Result<bool, PresenceError> {
        let mut conn = self.connection().await?;
        let mut invocation = self.unregister.key(self.names.client_key(client.as_str()));
        invocation.arg(encode_location(at));
        let removed: i64 = self
            .timed("EVALSHA unregister", invocation.invoke_async(&mut conn))
            .await?;
        Ok(removed == 1)
    }

    async fn locate(&self, client: &str) -> Result<Option<Location>, PresenceError> {
        let mut conn = self.connection().await?;
        let mut invocation = self.locate.key(self.names.client_key(client));
        invocation.arg(self.names.node_key_prefix());
        let value: Option<String> = self
            .timed("EVALSHA locate", invocation.invoke_async(&mut conn))
            .await?;
        match value {
            None => Ok(None),
            Some(v) => decode_location(&v)
                .map(Some)
                .ok_or_else(|| PresenceError::Malformed(client.to_owned())),
        }
    }

    async fn keep_node_alive(&self, node: &NodeId) -> Result<(), PresenceError> {
        let mut conn = self.connection().await?;
        let key = self.names.node_key(node.as_str());
        self.timed(
            "SET",
            redis::cmd("SET")
                .arg(&key)
                .arg("1")
                .arg("PX")
                .arg(self.ttl_ms)
                .query_async::<()>(&mut conn),
        )
        .await
    }

    async fn remove_node(&self, node: &NodeId) -> Result<(), PresenceError> {
        let mut conn = self.connection().await?;
        let key = self.names.node_key(node.as_str());
        self.timed(
            "DEL",
            redis::cmd("DEL").arg(&key).query_async::<()>(&mut conn),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_round_trip_and_garbage_is_rejected() {
        let at = Location {
            node_id: NodeId::new("node-1"),
            session_id: SessionId::generate(),
        };
        assert_eq!(decode_location(&encode_location(&at)), Some(at));
        assert_eq!(decode_location("no-separator"), None);
        assert_eq!(decode_location("n|not-a-uuid"), None);
    }
}
