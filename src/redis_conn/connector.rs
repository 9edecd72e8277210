//! Where a standalone-or-Sentinel connection goes: one fixed server, or the
//! master the Sentinels name at the moment of connecting. The pool, the
//! publisher and the subscriber all make their connections here, so each
//! reconnect after a failover finds the new master.
//!
//! The connector also watches its own outcomes: the first failure, and each
//! change of reason, is logged once (a certificate that does not verify, a
//! refused password); the recovery once. The reason never carries a secret:
//! the redis client's errors do not quote URLs.

use std::sync::{Arc, Mutex};

use redis::aio::{MultiplexedConnection, PubSub};
use redis::IntoConnectionInfo;
use tokio::sync::watch;

use super::sentinel::{is_refusal, SentinelSet};
use super::switch::MasterAddress;
use super::{RedisSetupError, TlsOptions};

/// Makes connections to the current Redis master. Cheap to clone.
#[derive(Clone)]
pub struct Connector(Arc<Inner>);

struct Inner {
    target: Target,
    last_failure: Mutex<Option<String>>,
    /// Bumped on every Sentinel `+switch-master` naming a new master: a
    /// connection made under an older generation may be talking to a
    /// demoted master, which still answers (reads, PUBLISH) but is no
    /// longer the one the cluster uses.
    generation: watch::Sender<u64>,
}

impl Inner {
    /// A Sentinel announced a switch to `address`: a new one (not a later
    /// Sentinel repeating it) makes every holder reconnect.
    fn switched(&self, address: MasterAddress) {
        let Target::Sentinel(set) = &self.target else {
            return;
        };
        if set.announce(address) {
            self.generation.send_modify(|g| *g += 1);
            tracing::warn!("Sentinel switched the master; reconnecting to the new one");
        }
    }
}

enum Target {
    Direct(redis::Client),
    Sentinel(SentinelSet),
}

impl Connector {
    /// A connector to the one server at `url`.
    pub fn standalone(url: &str, tls: &TlsOptions) -> Result<Connector, RedisSetupError> {
        let info = url
            .into_connection_info()
            .map_err(|source| RedisSetupError::Client {
                context: "cannot parse the URL",
                source,
            })?;
        let client = tls.client(info).map_err(|source| RedisSetupError::Client {
            context: "cannot build a client",
            source,
        })?;
        Ok(Connector::new(Target::Direct(client)))
    }

    /// A connector to the server `client` points at.
    pub fn direct(client: redis::Client) -> Connector {
        Connector::new(Target::Direct(client))
    }

    /// A connector to the master named `master` by the Sentinels at `urls`.
    pub fn sentinel(
        urls: &[String],
        master: &str,
        sentinel_password: Option<&str>,
        tls: &TlsOptions,
    ) -> Result<Connector, RedisSetupError> {
        let set = SentinelSet::new(urls, master, sentinel_password, tls)?;
        let watchers = set.switch_watchers();
        let connector = Connector::new(Target::Sentinel(set));
        // Outside a runtime (a unit test) there is nothing to watch with;
        // connections then follow a failover only when they fail.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for watcher in watchers {
                let (owner, inner) = (Arc::downgrade(&connector.0), Arc::downgrade(&connector.0));
                let alive = move || owner.strong_count() > 0;
                let switched = move |address| {
                    if let Some(inner) = inner.upgrade() {
                        inner.switched(address);
                    }
                };
                runtime.spawn(watcher.run(alive, switched));
            }
        }
        Ok(connector)
    }

    fn new(target: Target) -> Connector {
        Connector(Arc::new(Inner {
            target,
            last_failure: Mutex::new(None),
            generation: watch::Sender::new(0),
        }))
    }

    /// The current master generation (see [`Connector::switches`]).
    pub fn generation(&self) -> u64 {
        *self.0.generation.borrow()
    }

    /// Changes whenever the Sentinels switch the master: holders of a
    /// connection drop it and make a new one.
    pub fn switches(&self) -> watch::Receiver<u64> {
        self.0.generation.subscribe()
    }

    /// In Sentinel mode two servers take credentials: say which refused.
    fn name_refusal(&self, e: redis::RedisError) -> redis::RedisError {
        match self.0.target {
            Target::Sentinel(_) if is_refusal(&e) => redis::RedisError::from((
                redis::ErrorKind::AuthenticationFailed,
                "the master refused the credentials of cluster.redis_url",
                e.to_string(),
            )),
            _ => e,
        }
    }

    /// A new multiplexed connection for commands.
    pub async fn multiplexed(&self) -> redis::RedisResult<MultiplexedConnection> {
        let result = match &self.0.target {
            Target::Direct(client) => client
                .get_multiplexed_async_connection_with_config(&super::connection_config())
                .await
                .map_err(|e| self.name_refusal(e)),
            Target::Sentinel(set) => set
                .master()
                .await
                .map(|(_, conn)| conn)
                .map_err(|e| self.name_refusal(e)),
        };
        self.observe(&result);
        result
    }

    /// A new pub/sub connection. Under Sentinel the server is first proved
    /// a master (ROLE, on a short-lived connection of the same client): a
    /// subscription on a demoted master receives nothing other nodes send.
    pub async fn pubsub(&self) -> redis::RedisResult<PubSub> {
        let result = async {
            let client = match &self.0.target {
                Target::Direct(client) => client.clone(),
                Target::Sentinel(set) => set.master().await?.0,
            };
            client.get_async_pubsub().await
        }
        .await
        .map_err(|e| self.name_refusal(e));
        self.observe(&result);
        result
    }

    fn observe<T>(&self, result: &redis::RedisResult<T>) {
        let mut last = self
            .0
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(_) => {
                if last.take().is_some() {
                    tracing::info!("connected to Redis again");
                }
            }
            Err(e) => {
                let reason = describe(e);
                if last.as_deref() != Some(reason.as_str()) {
                    tracing::error!(%reason, "cannot connect to Redis");
                    *last = Some(reason);
                }
            }
        }
    }
}

/// A one-line reason, with certificate trouble called by its name.
fn describe(e: &redis::RedisError) -> String {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        format!("TLS: {text}")
    } else {
        text
    }
}
