//! The pool of command connections (deadpool), made through a
//! [`Connector`] so that in Sentinel mode each new connection goes to the
//! current master. A pooled connection is checked with `PING` before reuse;
//! one that fails (its server died), or that was made before Sentinel
//! switched the master, is replaced.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::RedisError;

use super::{Connector, RedisSetupError};

/// Creates and recycles connections through a [`Connector`].
pub struct Manager {
    connector: Connector,
    ping: AtomicUsize,
}

/// A pooled connection with the master generation it was made under.
pub struct Tagged {
    conn: MultiplexedConnection,
    generation: u64,
}

impl managed::Manager for Manager {
    type Type = Tagged;
    type Error = RedisError;

    async fn create(&self) -> Result<Tagged, RedisError> {
        let generation = self.connector.generation();
        Ok(Tagged {
            conn: self.connector.multiplexed().await?,
            generation,
        })
    }

    async fn recycle(&self, tagged: &mut Tagged, _: &Metrics) -> RecycleResult<RedisError> {
        if tagged.generation != self.connector.generation() {
            // Made before Sentinel switched the master: it may be talking
            // to the demoted one.
            return Err(RecycleError::message("the master was switched"));
        }
        let token = self.ping.fetch_add(1, Ordering::Relaxed).to_string();
        let answer: String = redis::cmd("PING")
            .arg(&token)
            .query_async(&mut tagged.conn)
            .await?;
        if answer == token {
            Ok(())
        } else {
            Err(RecycleError::message("unexpected PING answer"))
        }
    }
}

/// The command pool.
pub type Pool = managed::Pool<Manager>;

/// A pooled connection; usable wherever a redis connection is.
pub struct Connection(managed::Object<Manager>);

impl From<managed::Object<Manager>> for Connection {
    fn from(object: managed::Object<Manager>) -> Self {
        Connection(object)
    }
}

impl Deref for Connection {
    type Target = MultiplexedConnection;
    fn deref(&self) -> &MultiplexedConnection {
        &self.0.conn
    }
}

impl DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut MultiplexedConnection {
        &mut self.0.conn
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.0.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.0.conn.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.conn.get_db()
    }
}

/// A pool of at most `size` connections: waiting for a free one up to
/// `wait`, creating or recycling one up to `timeout`.
pub fn pool(
    connector: Connector,
    size: usize,
    wait: Duration,
    timeout: Duration,
) -> Result<Pool, RedisSetupError> {
    let manager = Manager {
        connector,
        ping: AtomicUsize::new(0),
    };
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(wait))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(RedisSetupError::Pool)
}
