//! Master discovery through Sentinels: ask each Sentinel in turn for the
//! address of the monitored master (`SENTINEL get-master-addr-by-name`),
//! then make sure the server there really is a master (`ROLE`), since a
//! Sentinel may still name the old master for a moment after a failover.
//!
//! Discovery runs for every new connection, so a connection that fails
//! after a failover is replaced by one to the promoted replica: that is how
//! commands, publishes and the subscription follow `+switch-master`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;

use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError};

use super::{RedisSetupError, TlsOptions};

/// How long one Sentinel may take to answer.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);

/// The Sentinels of one monitored master.
pub struct SentinelSet {
    sentinels: Vec<redis::Client>,
    master: String,
    /// The data nodes' credentials and scheme (from the first URL).
    data: ConnectionInfo,
    tls: TlsOptions,
    /// The Sentinel that answered last: asked first next time.
    preferred: AtomicUsize,
}

fn failed(reason: String) -> RedisError {
    RedisError::from((ErrorKind::Io, "sentinel discovery failed", reason))
}

impl SentinelSet {
    /// Sentinels at `urls`; they authenticate with `password` when given,
    /// else with the URL's own credentials.
    pub fn new(
        urls: &[String],
        master: &str,
        password: Option<&str>,
        tls: &TlsOptions,
    ) -> Result<SentinelSet, RedisSetupError> {
        let mut infos = Vec::with_capacity(urls.len());
        for url in urls {
            let info =
                url.as_str()
                    .into_connection_info()
                    .map_err(|source| RedisSetupError::Client {
                        context: "cannot parse a Sentinel URL",
                        source,
                    })?;
            infos.push(info);
        }
        let data = infos.first().cloned().ok_or(RedisSetupError::Invalid {
            key: "cluster.redis_url",
            reason: "lists no Sentinel".into(),
        })?;
        let mut sentinels = Vec::with_capacity(infos.len());
        for info in infos {
            let info = match password {
                Some(password) => {
                    let settings = redis::RedisConnectionInfo::default().set_password(password);
                    info.set_redis_settings(settings)
                }
                None => info,
            };
            sentinels.push(tls.client(info).map_err(|source| RedisSetupError::Client {
                context: "cannot build a Sentinel client",
                source,
            })?);
        }
        Ok(SentinelSet {
            sentinels,
            master: master.to_owned(),
            data,
            tls: tls.clone(),
            preferred: AtomicUsize::new(0),
        })
    }

    /// A client for the current master.
    pub async fn master_client(&self) -> redis::RedisResult<redis::Client> {
        let (host, port) = self.master_address().await?;
        let addr = match self.data.addr() {
            ConnectionAddr::TcpTls { .. } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        self.tls.client(self.data.clone().set_addr(addr))
    }

    /// Checks that the server behind `conn` is a master.
    pub async fn check_master(
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> redis::RedisResult<()> {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(conn).await?;
        match role.first() {
            Some(redis::Value::BulkString(r)) if r == b"master" => Ok(()),
            _ => Err(failed(
                "the server the Sentinels named is not a master (a failover is under way)".into(),
            )),
        }
    }

    /// A watcher of this set's `+switch-master` announcements.
    pub fn switch_watcher(&self) -> SwitchWatcher {
        SwitchWatcher {
            sentinels: self.sentinels.clone(),
            master: self.master.clone(),
        }
    }

    async fn master_address(&self) -> redis::RedisResult<(String, u16)> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut reasons = Vec::new();
        for i in 0..self.sentinels.len() {
            let index = (first + i) % self.sentinels.len();
            match tokio::time::timeout(SENTINEL_TIMEOUT, self.ask(index)).await {
                Ok(Ok(Some(address))) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(address);
                }
                Ok(Ok(None)) => reasons.push(format!(
                    "sentinel {index} does not monitor master {}",
                    self.master
                )),
                Ok(Err(e)) => reasons.push(format!("sentinel {index}: {e}")),
                Err(_) => reasons.push(format!("sentinel {index}: timed out")),
            }
        }
        Err(failed(reasons.join("; ")))
    }

    async fn ask(&self, index: usize) -> redis::RedisResult<Option<(String, u16)>> {
        let mut conn = self.sentinels[index]
            .get_multiplexed_async_connection()
            .await?;
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .query_async(&mut conn)
            .await
    }
}

/// Listens to the Sentinels' `+switch-master` channel (one Sentinel at a
/// time, the next one when it fails) and reports switches of our master.
pub struct SwitchWatcher {
    sentinels: Vec<redis::Client>,
    master: String,
}

impl SwitchWatcher {
    /// Calls `switched` on each switch of our master; runs while `alive`.
    pub async fn run(
        self,
        alive: impl Fn() -> bool + Send + 'static,
        switched: impl Fn() + Send + 'static,
    ) {
        let mut index = 0;
        let mut backoff = Duration::from_millis(100);
        while alive() {
            let client = &self.sentinels[index % self.sentinels.len()];
            index += 1;
            let subscribed = tokio::time::timeout(SENTINEL_TIMEOUT, async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe("+switch-master").await?;
                Ok::<_, RedisError>(pubsub)
            })
            .await;
            if let Ok(Ok(pubsub)) = subscribed {
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                while alive() {
                    // Wake now and then to notice an owner that is gone.
                    let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
                    match next {
                        Err(_) => continue,
                        Ok(None) => break,
                        Ok(Some(message)) => {
                            // "<name> <old ip> <old port> <new ip> <new port>"
                            let text: String = message.get_payload().unwrap_or_default();
                            if text.split_whitespace().next() == Some(self.master.as_str()) {
                                switched();
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}
