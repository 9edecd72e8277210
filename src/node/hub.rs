//! The local sessions of this node, by client id. At most one session per
//! client id: inserting a new one hands back the one it replaced.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::ids::{ClientId, SessionId};

use super::outbox::SessionHandle;

/// Local sessions by client id.
#[derive(Default)]
pub struct Hub {
    sessions: RwLock<HashMap<ClientId, Arc<SessionHandle>>>,
}

impl Hub {
    /// Makes `handle` the client's session; returns the session it replaced.
    pub fn insert(
        &self,
        client: ClientId,
        handle: Arc<SessionHandle>,
    ) -> Option<Arc<SessionHandle>> {
        self.write().insert(client, handle)
    }

    /// Removes the client's session only if it is still `session`.
    pub fn remove(&self, client: &str, session: SessionId) -> bool {
        let mut map = self.write();
        if map.get(client).is_some_and(|h| h.session_id == session) {
            map.remove(client);
            true
        } else {
            false
        }
    }

    /// The client's current session.
    pub fn get(&self, client: &str) -> Option<Arc<SessionHandle>> {
        self.read().get(client).cloned()
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// A snapshot of every session (for drain and presence re-registration).
    pub fn snapshot(&self) -> Vec<(ClientId, Arc<SessionHandle>)> {
        self.read()
            .iter()
            .map(|(c, h)| (c.clone(), Arc::clone(h)))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ClientId, Arc<SessionHandle>>> {
        // Poisoning means a panic while holding the lock; map operations
        // cannot leave the map inconsistent, so keep serving.
        self.sessions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ClientId, Arc<SessionHandle>>> {
        self.sessions.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::outbox::OutboxLimits;
    use crate::protocol::Codec;

    fn handle() -> Arc<SessionHandle> {
        Arc::new(SessionHandle::new(
            SessionId::generate(),
            Codec::Json,
            OutboxLimits {
                frames: 4,
                bytes: 1024,
            },
        ))
    }

    #[test]
    fn insert_replaces_and_remove_is_compare_and_delete() {
        let hub = Hub::default();
        let alice = ClientId::new("alice").unwrap();
        let first = handle();
        let second = handle();
        assert!(hub.insert(alice.clone(), Arc::clone(&first)).is_none());
        let old = hub.insert(alice.clone(), Arc::clone(&second)).unwrap();
        assert_eq!(old.session_id, first.session_id);
        assert!(
            !hub.remove("alice", first.session_id),
            "old session must not remove the new one"
        );
        assert_eq!(hub.get("alice").unwrap().session_id, second.session_id);
        assert!(hub.remove("alice", second.session_id));
        assert_eq!(hub.len(), 0);
    }
}
