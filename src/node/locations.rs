//! A short-lived cache of where remote clients are, so a steady stream of
//! signals to one peer costs one pipelined PUBLISH each instead of a
//! presence lookup plus a publish.
//!
//! A cached location can go stale (the peer moved or left). That is safe:
//! the node it names forwards a signal for a client it no longer holds to
//! wherever presence says (or answers PEER_NOT_FOUND), and the origin drops
//! the entry when a publish reaches nobody, when a failure comes back for
//! that peer, or when a takeover notice names it. Entries also expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::presence::Location;

/// Entries kept before the cache starts over (bounds memory).
const MAX_ENTRIES: usize = 100_000;

/// Client id → location, with expiry.
pub struct LocationCache {
    entries: Mutex<HashMap<Box<str>, (Location, Instant)>>,
    ttl: Duration,
}

impl LocationCache {
    /// A cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> LocationCache {
        LocationCache {
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// The cached location of `client`, if still fresh at `now` (the
    /// caller's reading of the clock, taken for the frame it routes).
    pub fn get(&self, client: &str, now: Instant) -> Option<Location> {
        let entries = self.lock();
        let (location, expires) = entries.get(client)?;
        (*expires > now).then(|| location.clone())
    }

    /// Remembers where `client` is.
    pub fn insert(&self, client: &str, location: Location) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(Box::from(client), (location, Instant::now() + self.ttl));
    }

    /// Forgets `client`.
    pub fn evict(&self, client: &str) {
        self.lock().remove(client);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, (Location, Instant)>> {
        // Map operations cannot leave the map inconsistent on panic.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeId, SessionId};

    #[tokio::test(start_paused = true)]
    async fn entries_expire_and_can_be_evicted() {
        let cache = LocationCache::new(Duration::from_secs(5));
        let at = Location {
            node_id: NodeId::new("n1"),
            session_id: SessionId::generate(),
        };
        cache.insert("bob", at.clone());
        assert_eq!(cache.get("bob", Instant::now()), Some(at.clone()));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(cache.get("bob", Instant::now()), None);
        cache.insert("bob", at);
        cache.evict("bob");
        assert_eq!(cache.get("bob", Instant::now()), None);
    }
}
