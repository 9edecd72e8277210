//! Newtype ids: a client, a node, a session. Each is validated once, where
//! it enters the process, and cheap to clone afterwards.

use std::borrow::Borrow;
use std::fmt;
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::is_valid_client_id;

/// An authenticated client id: 1 to 128 bytes of `[A-Za-z0-9._:@-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    /// Validates and wraps an id.
    pub fn new(id: &str) -> Option<ClientId> {
        is_valid_client_id(id).then(|| ClientId(Arc::from(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node's id, unique in the cluster; names its bus channel.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Wraps an id (validated by configuration).
    pub fn new(id: &str) -> NodeId {
        NodeId(Arc::from(id))
    }

    /// Validates an id that arrived from outside (an envelope, a presence
    /// record): the same alphabet and length as a client id.
    pub fn parse(id: &str) -> Option<NodeId> {
        is_valid_client_id(id).then(|| NodeId::new(id))
    }

    /// `hostname-xxxxxx`: the default when `cluster.node_id` is unset.
    pub fn generate() -> NodeId {
        let host = gethostname::gethostname();
        let host: String = host
            .to_string_lossy()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            .take(100)
            .collect();
        let suffix = &Uuid::new_v4().simple().to_string()[..8];
        let host = if host.is_empty() { "node" } else { &host };
        NodeId::new(&format!("{host}-{suffix}"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Node ids seen on the bus lately, so a receiving node validates and
/// allocates an origin's id once, not once per signal. Bounded: it starts
/// over once full.
#[derive(Default)]
pub(crate) struct KnownNodes {
    seen: Mutex<FxHashSet<NodeId>>,
}

/// More distinct node ids than a cluster has, so it starts over only when
/// something publishes made-up ones.
const MAX_KNOWN_NODES: usize = 1024;

impl KnownNodes {
    /// [`NodeId::parse`], answered from the ids seen before when it can.
    pub(crate) fn parse(&self, id: &str) -> Option<NodeId> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = seen.get(id) {
            return Some(known.clone());
        }
        let node = NodeId::parse(id)?;
        if seen.len() >= MAX_KNOWN_NODES {
            seen.clear();
        }
        seen.insert(node.clone());
        Some(node)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One session of a client on a node; survives token refreshes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionId(pub Uuid);

impl SessionId {
    /// A fresh random id.
    pub fn generate() -> SessionId {
        SessionId(Uuid::new_v4())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_nodes_validate_and_share_each_id() {
        let known = KnownNodes::default();
        let first = known.parse("node-a").expect("valid");
        let again = known.parse("node-a").expect("valid");
        assert!(Arc::ptr_eq(&first.0, &again.0), "parsed once, then shared");
        assert_eq!(known.parse("no spaces"), None);
        assert_eq!(known.parse(""), None);
    }

    #[test]
    fn known_nodes_stay_bounded() {
        let known = KnownNodes::default();
        for i in 0..3 * MAX_KNOWN_NODES {
            assert!(known.parse(&format!("node-{i}")).is_some());
        }
        let seen = known.seen.lock().unwrap().len();
        assert!(seen <= MAX_KNOWN_NODES, "{seen} kept");
    }
}
