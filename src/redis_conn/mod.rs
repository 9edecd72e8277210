//! Connections to Redis in every `cluster.redis_mode`: one server, a master
//! found through Sentinels, or a Redis Cluster; each over `redis://` or
//! `rediss://` (rustls), with or without an ACL user.
//!
//! This module owns how a connection is made and re-made (TLS material,
//! master discovery, the command pool, cluster clients) and which backend
//! pair a mode gets ([`redis_backends`]). It knows nothing of keys,
//! channels or scripts: those belong to the presence and bus
//! implementations that use it.

mod backends;
mod cluster;
mod connector;
mod pool;
mod sentinel;
mod switch;
mod tls;

pub use backends::redis_backends;
pub use cluster::{cluster_client, LazyCluster};
pub use connector::Connector;
pub use pool::{pool, Connection, Pool};
pub use tls::TlsOptions;

use std::time::Duration;

/// How long a command (or a pipeline) on a multiplexed connection may wait
/// for its reply, its queueing included, before it fails with a timeout:
/// a hung Redis fails commands instead of holding them. The bus's
/// publisher relies on it and sets no timer of its own.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long opening a connection may take.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// The settings of every multiplexed connection made here.
fn connection_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
}

/// Why a Redis backend cannot be set up. Messages name the configuration
/// key at fault and never quote a URL (it may carry a password).
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// A key's value cannot work.
    #[error("{key}: {reason}")]
    Invalid {
        /// The configuration key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// A TLS file could not be read or parsed.
    #[error("{key}: cannot use {path}: {reason}")]
    TlsFile {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The redis client refused the settings.
    #[error("cluster.redis_url: {context}")]
    Client {
        /// What was being built.
        context: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// The command pool could not be built.
    #[error("cannot build the Redis connection pool")]
    Pool(#[source] deadpool::managed::BuildError),
}
