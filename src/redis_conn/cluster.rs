//! Redis Cluster clients: seed nodes, TLS, timeouts and, for the
//! subscriber, RESP3 with a push sender (sharded pub/sub arrives as push
//! messages). The cluster connection follows `MOVED`/`ASK`, refreshes the
//! slot map on topology changes and re-issues `SSUBSCRIBE` on the shard
//! that owns a channel after a failover.
//!
//! [`LazyCluster`] connects on first use and again after a failure, so a
//! node can start while the cluster is unreachable (it stays unready).

use std::time::Duration;

use redis::aio::AsyncPushSender;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{IntoConnectionInfo, ProtocolVersion, TlsMode};
use tokio::sync::Mutex;

use super::{RedisSetupError, TlsOptions};

/// Bound on connecting to one cluster node and on one reply.
const NODE_TIMEOUT: Duration = Duration::from_secs(1);

/// A client of the cluster seeded by `urls`; with `push`, on RESP3 and
/// handing push messages (sharded messages among them) to it.
pub fn cluster_client(
    urls: &[String],
    tls: &TlsOptions,
    push: Option<Box<dyn AsyncPushSender>>,
) -> Result<ClusterClient, RedisSetupError> {
    let mut seeds = Vec::with_capacity(urls.len());
    let mut uses_tls = false;
    for url in urls {
        let info =
            url.as_str()
                .into_connection_info()
                .map_err(|source| RedisSetupError::Client {
                    context: "cannot parse a cluster seed URL",
                    source,
                })?;
        uses_tls |= matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        seeds.push(tls.apply(info));
    }
    let mut builder = ClusterClientBuilder::new(seeds)
        .connection_timeout(NODE_TIMEOUT)
        .response_timeout(NODE_TIMEOUT)
        // A failover takes about cluster-node-timeout: keep retrying
        // through it rather than failing every command at once.
        .retries(6)
        .min_retry_wait(50)
        .max_retry_wait(500);
    if uses_tls {
        builder = builder.tls(if tls.is_insecure() {
            TlsMode::Insecure
        } else {
            TlsMode::Secure
        });
        if let Some(certificates) = tls.certificates() {
            builder = builder.certs(certificates.clone());
        }
    }
    if let Some(push) = push {
        builder = builder
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(PushBox(push));
    }
    builder.build().map_err(|source| RedisSetupError::Client {
        context: "cannot build the cluster client",
        source,
    })
}

struct PushBox(Box<dyn AsyncPushSender>);

impl AsyncPushSender for PushBox {
    fn send(&self, info: redis::PushInfo) -> Result<(), redis::aio::SendError> {
        self.0.send(info)
    }
}

/// One shared cluster connection, made on first use and re-made after
/// [`LazyCluster::reset`].
pub struct LazyCluster {
    client: ClusterClient,
    connection: Mutex<Option<ClusterConnection>>,
}

impl LazyCluster {
    /// Wraps `client`; nothing connects yet.
    pub fn new(client: ClusterClient) -> LazyCluster {
        LazyCluster {
            client,
            connection: Mutex::new(None),
        }
    }

    /// The connection, connecting first when there is none.
    pub async fn get(&self) -> redis::RedisResult<ClusterConnection> {
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.client.get_async_connection().await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the connection; the next [`get`](Self::get) connects afresh.
    pub async fn reset(&self) {
        self.connection.lock().await.take();
    }
}

/// Refuses a single seed that answers but is not a cluster node (a
/// standalone server given by mistake). A seed that does not answer is let
/// through: the node starts unready and keeps trying.
pub async fn check_seed(urls: &[String], tls: &TlsOptions) -> Result<(), RedisSetupError> {
    let [url] = urls else { return Ok(()) };
    let info = url
        .as_str()
        .into_connection_info()
        .map_err(|source| RedisSetupError::Client {
            context: "cannot parse a cluster seed URL",
            source,
        })?;
    let client = tls.client(info).map_err(|source| RedisSetupError::Client {
        context: "cannot build a client",
        source,
    })?;
    let answer = tokio::time::timeout(NODE_TIMEOUT * 2, async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&super::connection_config())
            .await?;
        redis::cmd("INFO")
            .arg("cluster")
            .query_async::<String>(&mut conn)
            .await
    })
    .await;
    match answer {
        Ok(Ok(info)) if !info.contains("cluster_enabled:1") => Err(RedisSetupError::Invalid {
            key: "cluster.redis_url",
            reason: "the seed is not a Redis Cluster node (cluster_enabled is 0) but cluster.redis_mode is \"cluster\"".into(),
        }),
        _ => Ok(()),
    }
}
