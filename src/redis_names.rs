//! Every Redis key and channel name the node uses, built here and nowhere
//! else. All start with `cluster.key_prefix`, so several clusters (or test
//! runs) share one Redis; keys and channels live in different namespaces,
//! so a node's liveness key and its channel may share a name.

use std::sync::Arc;

/// The names under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct RedisNames {
    prefix: Arc<str>,
}

impl RedisNames {
    /// Names under `prefix`.
    pub(crate) fn new(prefix: &str) -> RedisNames {
        RedisNames {
            prefix: Arc::from(prefix),
        }
    }

    /// `<prefix>:client:<client_id>`: the client's presence record.
    pub(crate) fn client_key(&self, client: &str) -> String {
        format!("{}:client:{client}", self.prefix)
    }

    /// `<prefix>:node:<node_id>`: the node's liveness record.
    pub(crate) fn node_key(&self, node: &str) -> String {
        format!("{}{node}", self.node_key_prefix())
    }

    /// `<prefix>:node:`: what `node_key` puts before the node id (the
    /// locate script appends the id it reads from a record).
    pub(crate) fn node_key_prefix(&self) -> String {
        format!("{}:node:", self.prefix)
    }

    /// `<prefix>:node:<node_id>`: the node's pub/sub channel.
    pub(crate) fn node_channel(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_layout() {
        let names = RedisNames::new("sm");
        assert_eq!(names.client_key("alice"), "sm:client:alice");
        assert_eq!(names.node_key("n1"), "sm:node:n1");
        assert_eq!(names.node_key_prefix() + "n1", names.node_key("n1"));
        assert_eq!(names.node_channel("n1"), "sm:node:n1");
    }
}
