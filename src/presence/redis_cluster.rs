//! Presence in a Redis Cluster. The same keys as [`super::RedisPresence`]
//! (`<prefix>:client:<client_id>`, `<prefix>:node:<node_id>`, named in
//! `crate::redis_names`), spread over
//! the shards by their hash slots; no command or script touches two keys,
//! so none is cross-slot:
//!
//! - register, keep-alive and removal are single-key commands;
//! - refresh runs the single-key create-or-extend script once per local
//!   session, all in flight together (the cluster connection pipelines
//!   the calls per shard);
//! - lookup is two round trips: `GET` the client key, then `EXISTS` the
//!   liveness key of the node it names (the standalone lookup script reads
//!   both keys in one call, which a cluster forbids).
//!
//! The cluster connection follows `MOVED`/`ASK` and failovers itself; every
//! call is bounded by [`COMMAND_TIMEOUT`], so an unreachable cluster yields
//! an error, never a hang.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::Script;

use super::redis::{decode_location, encode_location, REFRESH, UNREGISTER};
use super::{Location, PresenceError, PresenceRegistry};
use crate::ids::{ClientId, NodeId};
use crate::metrics::Metrics;
use crate::redis_conn::LazyCluster;
use crate::redis_names::RedisNames;

/// Bound on one call, retries through a shard failover included.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// Refresh scripts in flight at once.
const REFRESH_CONCURRENCY: usize = 512;

/// Presence in a Redis Cluster.
pub struct RedisClusterPresence {
    cluster: LazyCluster,
    names: RedisNames,
    ttl_ms: u64,
    metrics: Arc<Metrics>,
    refresh: Script,
    unregister: Script,
}

impl RedisClusterPresence {
    /// A registry on the cluster `client` with records living `ttl`.
    pub fn new(
        client: ClusterClient,
        prefix: &str,
        ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> RedisClusterPresence {
        RedisClusterPresence {
            cluster: LazyCluster::new(client),
            names: RedisNames::new(prefix),
            ttl_ms: ttl.as_millis().max(1) as u64,
            metrics,
            refresh: Script::new(REFRESH),
            unregister: Script::new(UNREGISTER),
        }
    }

    async fn connection(&self) -> Result<ClusterConnection, PresenceError> {
        tokio::time::timeout(COMMAND_TIMEOUT, self.cluster.get())
            .await
            .map_err(|_| PresenceError::Timeout("connect"))?
            .map_err(|source| PresenceError::Command {
                command: "connect",
                source,
            })
    }

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

/// Runs every command with many in flight at once; the first error wins.
async fn run_all(conn: &ClusterConnection, calls: &[redis::Cmd]) -> redis::RedisResult<Vec<i64>> {
    // Owned commands: a closure over borrowed ones is not `Send` enough
    // for the trait's future.
    stream::iter(calls.iter().cloned().map(|cmd| {
        let mut conn = conn.clone();
        async move { cmd.query_async::<i64>(&mut conn).await }
    }))
    .buffer_unordered(REFRESH_CONCURRENCY)
    .try_collect()
    .await
}

impl PresenceRegistry for RedisClusterPresence {
    async fn register(
        &self,
        client: &ClientId,
        at: &Location,
    ) -> Result<Option<Location>, PresenceError> {
        let mut conn = self.connection().await?;
        let old: Option<String> = self
            .timed(
                "SET",
                redis::cmd("SET")
                    .arg(self.names.client_key(client.as_str()))
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
        let conn = self.connection().await?;
        let calls: Vec<redis::Cmd> = entries
            .iter()
            .map(|(client, at)| {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(self.refresh.get_hash())
                    .arg(1)
                    .arg(self.names.client_key(client.as_str()))
                    .arg(encode_location(at))
                    .arg(self.ttl_ms);
                cmd
            })
            .collect();
        let mut result = self.timed("EVALSHA refresh", run_all(&conn, &calls)).await;
        if result.as_ref().is_err_and(PresenceError::is_no_script) {
            // A promoted replica or a restarted shard lacks the script:
            // load it on every primary, then retry once.
            let mut load = conn.clone();
            self.timed(
                "SCRIPT LOAD",
                self.refresh.prepare_invoke().load_async(&mut load),
            )
            .await?;
            result = self.timed("EVALSHA refresh", run_all(&conn, &calls)).await;
        }
        Ok(result?.into_iter().filter(|c| *c == 1).count())
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
        let value: Option<String> = self
            .timed(
                "GET",
                redis::cmd("GET")
                    .arg(self.names.client_key(client))
                    .query_async(&mut conn),
            )
            .await?;
        let Some(value) = value else { return Ok(None) };
        let at =
            decode_location(&value).ok_or_else(|| PresenceError::Malformed(client.to_owned()))?;
        let alive: bool = self
            .timed(
                "EXISTS",
                redis::cmd("EXISTS")
                    .arg(self.names.node_key(at.node_id.as_str()))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(alive.then_some(at))
    }

    async fn keep_node_alive(&self, node: &NodeId) -> Result<(), PresenceError> {
        let mut conn = self.connection().await?;
        self.timed(
            "SET",
            redis::cmd("SET")
                .arg(self.names.node_key(node.as_str()))
                .arg("1")
                .arg("PX")
                .arg(self.ttl_ms)
                .query_async::<()>(&mut conn),
        )
        .await
    }

    async fn remove_node(&self, node: &NodeId) -> Result<(), PresenceError> {
        let mut conn = self.connection().await?;
        self.timed(
            "DEL",
            redis::cmd("DEL")
                .arg(self.names.node_key(node.as_str()))
                .query_async::<()>(&mut conn),
        )
        .await
    }
}
