//! In-process presence: a real registry, shared by every node built on the
//! same instance (one process, several nodes, as the cluster tests do).
//! Expiry is lazy on read plus a sweep on write, so memory stays bounded by
//! the live records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{Location, PresenceError, PresenceRegistry};
use crate::ids::{ClientId, NodeId};

#[derive(Default)]
struct State {
    clients: HashMap<ClientId, (Location, Instant)>,
    nodes: HashMap<NodeId, Instant>,
    writes: u64,
}

/// In-memory presence; clones share one registry.
#[derive(Clone)]
pub struct MemoryPresence {
    state: Arc<Mutex<State>>,
    ttl: Duration,
    node_ttl: Duration,
}

impl MemoryPresence {
    /// A registry whose records live `ttl` and node records `node_ttl`.
    pub fn new(ttl: Duration, node_ttl: Duration) -> MemoryPresence {
        MemoryPresence {
            state: Arc::new(Mutex::new(State::default())),
            ttl,
            node_ttl,
        }
    }

    /// Number of stored client records, expired ones included until swept.
    pub fn len(&self) -> usize {
        self.lock().clients.len()
    }

    /// Whether no client record is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Map operations cannot leave the state inconsistent on panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sweep(state: &mut State, now: Instant) {
        state.writes += 1;
        if state.writes % 1024 == 0 {
            state.clients.retain(|_, (_, exp)| *exp > now);
            state.nodes.retain(|_, exp| *exp > now);
        }
    }
}

impl PresenceRegistry for MemoryPresence {
    async fn register(
        &self,
        client: &ClientId,
        at: &Location,
    ) -> Result<Option<Location>, PresenceError> {
        let now = Instant::now();
        let mut s = self.lock();
        Self::sweep(&mut s, now);
        let old = s
            .clients
            .insert(client.clone(), (at.clone(), now + self.ttl))
            .filter(|(_, exp)| *exp > now)
            .map(|(loc, _)| loc);
        Ok(old)
    }

    async fn refresh(&self, entries: &[(ClientId, Location)]) -> Result<usize, PresenceError> {
        let now = Instant::now();
        let mut s = self.lock();
        let mut created = 0;
        for (client, at) in entries {
            match s.clients.get_mut(client) {
                Some((loc, exp)) if *exp > now => {
                    if loc == at {
                        *exp = now + self.ttl;
                    }
                }
                _ => {
                    s.clients
                        .insert(client.clone(), (at.clone(), now + self.ttl));
                    created += 1;
                }
            }
        }
        Ok(created)
    }

    async fn unregister(&self, client: &ClientId, at: &Location) -> Result<bool, PresenceError> {
        let mut s = self.lock();
        if s.clients.get(client).is_some_and(|(loc, _)| loc == at) {
            s.clients.remove(client);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn locate(&self, client: &str) -> Result<Option<Location>, PresenceError> {
        let now = Instant::now();
        let s = self.lock();
        let Some((loc, exp)) = s.clients.get(client) else {
            return Ok(None);
        };
        let node_alive = s.nodes.get(&loc.node_id).is_some_and(|e| *e > now);
        Ok((*exp > now && node_alive).then(|| loc.clone()))
    }

    async fn keep_node_alive(&self, node: &NodeId) -> Result<(), PresenceError> {
        let now = Instant::now();
        let mut s = self.lock();
        Self::sweep(&mut s, now);
        s.nodes.insert(node.clone(), now + self.node_ttl);
        Ok(())
    }

    async fn remove_node(&self, node: &NodeId) -> Result<(), PresenceError> {
        self.lock().nodes.remove(node);
        Ok(())
    }
}
