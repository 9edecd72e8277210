//! Master discovery through Sentinels: ask each Sentinel in turn for the
//! address of the monitored master (`SENTINEL get-master-addr-by-name`),
//! then make sure the server there really is a master (`ROLE`), since a
//! Sentinel may still name the old master for a moment after a failover.
//!
//! Discovery runs for every new connection, so a connection that fails
//! after a failover is replaced by one to the promoted replica. A
//! `+switch-master` announcement (`switch.rs`) names the new master: it is
//! tried first, ROLE-checked like any other, and forgotten when it fails.
//!
//! A Sentinel takes `cluster.redis_sentinel_password` when it is set, else
//! the URL's credentials (the data nodes'), else none: a Sentinel without a
//! password of its own refuses any, so when it refuses the URL's, the
//! Sentinel is asked again without them.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError};

use super::switch::{MasterAddress, SwitchWatcher};
use super::{RedisSetupError, TlsOptions};

/// How long one Sentinel may take to answer.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);

/// One Sentinel's clients.
#[derive(Clone)]
pub(super) struct Sentinel {
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
    pub(super) async fn connect<T, F, Fut>(&self, connect: F) -> redis::RedisResult<T>
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
    /// What the `+switch-master` announcements said (boxed: the set sits
    /// in an enum beside a plain client, which it should not outgrow).
    announced: Box<Mutex<Announced>>,
}

/// The last announced master, and whether discovery may still try it first.
#[derive(Default)]
struct Announced {
    /// The address the last announcement named (repeats are no new switch).
    last: Option<MasterAddress>,
    /// Tried before any Sentinel: a Sentinel that has not heard of the
    /// switch yet still names the demoted master, which answers ROLE as a
    /// master until the leader reconfigures it. Dropped when it fails.
    hint: Option<MasterAddress>,
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
            announced: Box::default(),
        })
    }

    /// A client for the current master and a connection to it that ROLE
    /// proved to be a master's: at the announced address first, else where
    /// the Sentinels say.
    pub async fn master(&self) -> redis::RedisResult<(redis::Client, MultiplexedConnection)> {
        let hint = self.lock().hint.clone();
        if let Some(hint) = hint {
            match self.verified(&hint).await {
                Ok(found) => return Ok(found),
                Err(error) => {
                    tracing::debug!(%error, "the announced master failed; asking the Sentinels");
                    let mut announced = self.lock();
                    if announced.hint.as_ref() == Some(&hint) {
                        announced.hint = None;
                    }
                }
            }
        }
        // Boxed: the nested futures of discovery are too deep a type for
        // every caller to embed (and discovery is rare).
        let address = Box::pin(self.master_address()).await?;
        self.verified(&address).await
    }

    /// Records an announced switch to `address`; true when it names a
    /// master other than the last announcement did (a new switch).
    pub(super) fn announce(&self, address: MasterAddress) -> bool {
        let mut announced = self.lock();
        if announced.last.as_ref() == Some(&address) {
            return false;
        }
        announced.last = Some(address.clone());
        announced.hint = Some(address);
        true
    }

    async fn verified(
        &self,
        (host, port): &MasterAddress,
    ) -> redis::RedisResult<(redis::Client, MultiplexedConnection)> {
        let addr = match self.data.addr() {
            ConnectionAddr::TcpTls { .. } => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host.clone(), *port),
        };
        let client = self.tls.client(self.data.clone().set_addr(addr))?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&super::connection_config())
            .await?;
        check_master(&mut conn).await?;
        Ok((client, conn))
    }

    /// One watcher of `+switch-master` per Sentinel.
    pub fn switch_watchers(&self) -> Vec<SwitchWatcher> {
        self.sentinels
            .iter()
            .enumerate()
            .map(|(index, sentinel)| SwitchWatcher::new(sentinel.clone(), index, &self.master))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Announced> {
        // Two plain fields: a panic elsewhere cannot leave them inconsistent.
        self.announced.lock().unwrap_or_else(|e| e.into_inner())
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
                let mut conn = client
                    .get_multiplexed_async_connection_with_config(&super::connection_config())
                    .await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master)
                    .query_async(&mut conn)
                    .await
            })
            .await
    }
}

/// Checks that the server behind `conn` is a master.
async fn check_master(conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(conn).await?;
    match role.first() {
        Some(redis::Value::BulkString(r)) if r == b"master" => Ok(()),
        _ => Err(failed(
            "the server the Sentinels named is not a master (a failover is under way)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> SentinelSet {
        // Port 1: nothing listens, so no test ever talks to a real Sentinel.
        let urls = ["redis://127.0.0.1:1".to_owned()];
        SentinelSet::new(&urls, "mymaster", None, &TlsOptions::default()).unwrap()
    }

    #[test]
    fn a_switch_is_new_only_when_it_names_another_master() {
        let set = set();
        let (a, b) = (("10.0.0.1".to_owned(), 6379), ("10.0.0.2".to_owned(), 6379));
        assert!(set.announce(b.clone()), "the first announcement");
        assert!(!set.announce(b.clone()), "a later Sentinel repeating it");
        assert_eq!(set.lock().hint, Some(b.clone()));
        assert!(set.announce(a.clone()), "a failover back");
        assert_eq!(set.lock().hint, Some(a));
    }

    #[tokio::test]
    async fn a_hint_that_fails_is_dropped_for_the_sentinels() {
        let set = set();
        // Nothing listens on port 1: the hint fails, and so does the
        // (absent) Sentinel; the hint is gone either way.
        set.announce(("127.0.0.1".to_owned(), 1));
        assert!(set.master().await.is_err());
        assert_eq!(set.lock().hint, None);
        assert!(
            !set.announce(("127.0.0.1".to_owned(), 1)),
            "still the last announced: no second switch"
        );
    }
}
