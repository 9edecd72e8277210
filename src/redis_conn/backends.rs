//! Which presence and bus implementations a `cluster.redis_mode` gets:
//! standalone and Sentinel share [`RedisPresence`] and [`RedisBus`] (they
//! differ only in where a connection goes); Redis Cluster gets the sharded
//! siblings. Called once, from the composition root.

use std::sync::Arc;

use super::cluster::check_seed;
use super::{cluster_client, Connector, RedisSetupError, TlsOptions};
use crate::bus::{Bus, RedisBus, RedisClusterBus};
use crate::config::{RedisMode, Settings};
use crate::metrics::Metrics;
use crate::presence::{Presence, RedisClusterPresence, RedisPresence};

/// The Redis backends the settings ask for (`cluster.redis_url` is set).
pub async fn redis_backends(
    settings: &Settings,
    metrics: Arc<Metrics>,
) -> Result<(Presence, Bus), RedisSetupError> {
    let cluster = &settings.cluster;
    let urls = cluster.redis_urls();
    let tls = TlsOptions::from_settings(cluster)?;
    if tls.is_insecure() {
        tracing::warn!(
            "cluster.redis_tls_insecure is set: Redis certificates are not verified; anyone on the path can read and change cluster traffic"
        );
    }
    let prefix = &cluster.key_prefix;
    let ttl = settings.presence_ttl();
    let connector = match cluster.redis_mode {
        RedisMode::Standalone => {
            let url = urls.first().ok_or(RedisSetupError::Invalid {
                key: "cluster.redis_url",
                reason: "is empty".into(),
            })?;
            Connector::standalone(url, &tls)?
        }
        RedisMode::Sentinel => {
            let master =
                cluster
                    .redis_sentinel_master
                    .as_deref()
                    .ok_or(RedisSetupError::Invalid {
                        key: "cluster.redis_sentinel_master",
                        reason: "is required when cluster.redis_mode = \"sentinel\"".into(),
                    })?;
            let password = cluster.redis_sentinel_password.as_ref().map(|p| p.expose());
            Connector::sentinel(&urls, master, password, &tls)?
        }
        RedisMode::Cluster => {
            check_seed(&urls, &tls).await?;
            let presence = RedisClusterPresence::new(
                cluster_client(&urls, &tls, None)?,
                prefix,
                ttl,
                Arc::clone(&metrics),
            );
            let bus = RedisClusterBus::new(&urls, &tls, prefix, metrics)?;
            return Ok((
                Presence::RedisCluster(Box::new(presence)),
                Bus::RedisCluster(bus),
            ));
        }
    };
    let pool = RedisPresence::pool(connector.clone(), cluster.redis_pool_size)?;
    let presence = RedisPresence::from_pool(pool, prefix, ttl, Arc::clone(&metrics));
    let bus = RedisBus::with_connector(connector, prefix, metrics);
    Ok((Presence::Redis(presence), Bus::Redis(bus)))
}
