//! Master discovery through Sentinels: ask each Sentinel in turn for the
//! address of the monitored master (`SENTINEL get-master-addr-by-name`),
//! then make sure the server there really is a master (`ROLE`), since a
//! Sentinel may still name the old master for a moment after a failover.
//!
//! Discovery runs for every new connection, so a connection that fails
//! after a failover is replaced by one to the promoted replica: that is how
//! commands, publishes and the subscription follow `+switch-master`.
//!
//! A Sentinel takes `cluster.redis_sentinel_password` when it is set, else
//! the URL's credentials (the data nodes'), else none: a Sentinel without a
//! password of its own refuses any, so when it refuses the URL's, the
//! Sentinel is asked again without them.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError};

use super::{RedisSetupError, TlsOptions};

/// How long one Sentinel may take to answer.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);

/// One Sentinel's clients.
#[derive(Clone)]
struct Sentinel {
    /// With the credentials it should take.
    client: redis::Client,
    /// Without credentials, when `client` carries the URL's (no
    /// `cluster.redis_sentinel_password`): for a Sentinel that has no
    /// password and so refuses any.
    anonymous: Option<redis::Client>,
    /// The anonymous client worked last: try it first.
    anonymous_works: Arc<AtomicBool>,
}

impl Sentinel {
    /// Runs `connect` with the client this Sentinel accepts. On a refusal
    /// of both, the first refusal is returned.
    async fn connect<T, F, Fut>(&self, connect: F) -> redis::RedisResult<T>
    where
        F: Fn(redis::Client) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(anonymous) = &self.anonymous else {
            return connect(self.client.clone()).await;
        };
        let anonymous_first = self.anonymous_works.load(Ordering::Relaxed);
        let (first, second) = if anonymous_first {
            (anonymous, &self.client)
        } else {
            (&self.client, anonymous)
        };
        match connect(first.clone()).await {
            Err(e) if is_refusal(&e) => {
                let answer = connect(second.clone()).await;
                if answer.is_ok() {
                    self.anonymous_works
                        .store(!anonymous_first, Ordering::Relaxed);
                }
                answer.map_err(|second_error| {
                    if is_refusal(&second_error) {
                        e
                    } else {
                        second_error
                    }
                })
            }
            other => other,
        }
    }
}

/// Whether the server refused our credentials (or wanted some).
pub(super) fn is_refusal(e: &RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
}

/// The Sentinels of one monitored master.
pub struct SentinelSet {
    sentinels: Vec<Sentinel>,
    /// Whether `cluster.redis_sentinel_password` is set (for error hints).
    own_password: bool,
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
    /// else with the URL's own credentials, or with none when a Sentinel
    /// refuses those.
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
        let build = |info: ConnectionInfo| {
            tls.client(info).map_err(|source| RedisSetupError::Client {
                context: "cannot build a Sentinel client",
                source,
            })
        };
        let mut sentinels = Vec::with_capacity(infos.len());
        for info in infos {
            let anonymous = redis::RedisConnectionInfo::default();
            let has_credentials = info.redis_settings().username().is_some()
                || info.redis_settings().password().is_some();
            let sentinel = match password {
                Some(password) => Sentinel {
                    client: build(info.set_redis_settings(anonymous.set_password(password)))?,
                    anonymous: None,
                    anonymous_works: Arc::default(),
                },
                None if has_credentials => Sentinel {
                    client: build(info.clone())?,
                    anonymous: Some(build(info.set_redis_settings(anonymous))?),
                    anonymous_works: Arc::default(),
                },
                None => Sentinel {
                    client: build(info)?,
                    anonymous: None,
                    anonymous_works: Arc::default(),
                },
            };
            sentinels.push(sentinel);
        }
        Ok(SentinelSet {
            sentinels,
            own_password: password.is_some(),
            master: master.to_owned(),
            data,
            tls: tls.clone(),
            preferred: AtomicUsize::new(0),
        })
    }

    /// A client for the current master.
    pub async fn master_client(&self) -> redis::RedisResult<redis::Client> {
        // Boxed: the nested futures of discovery are too deep a type for
        // every caller to embed (and discovery is rare).
        let (host, port) = Box::pin(self.master_address()).await?;
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
                Ok(Err(e)) if is_refusal(&e) => reasons.push(format!(
                    "sentinel {index}: {} ({e})",
                    if self.own_password {
                        "refused the password in cluster.redis_sentinel_password"
                    } else {
                        "wants a password: set cluster.redis_sentinel_password"
                    }
                )),
                Ok(Err(e)) => reasons.push(format!("sentinel {index}: {e}")),
                Err(_) => reasons.push(format!("sentinel {index}: timed out")),
            }
        }
        Err(failed(reasons.join("; ")))
    }

    async fn ask(&self, index: usize) -> redis::RedisResult<Option<(String, u16)>> {
        let master = self.master.as_str();
        // The command is inside: a Sentinel that wants a password accepts
        // the connection and refuses the command.
        self.sentinels[index]
            .connect(|client| async move {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master)
                    .query_async(&mut conn)
                    .await
            })
            .await
    }
}

/// Listens to the Sentinels' `+switch-master` channel (one Sentinel at a
/// time, the next one when it fails) and reports switches of our master.
pub struct SwitchWatcher {
    sentinels: Vec<Sentinel>,
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
            let sentinel = &self.sentinels[index % self.sentinels.len()];
            index += 1;
            let subscribe = sentinel.connect(|client| async move {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe("+switch-master").await?;
                Ok::<_, RedisError>(pubsub)
            });
            let subscribed = tokio::time::timeout(SENTINEL_TIMEOUT, subscribe).await;
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
