//! A node: the local sessions, the two cluster seams and the verifier, put
//! together once. Sessions and routing talk to [`Presence`] and [`Bus`]
//! without knowing which backend runs behind them.
//!
//! Layout: `outbox.rs` (a session's bounded queue), `hub.rs` (local sessions),
//! `router.rs` (where a signal goes), `inbox.rs` (envelopes from other nodes),
//! `upkeep.rs` (presence refresh, node liveness, bus probes, readiness).

mod hub;
mod inbox;
mod locations;
mod outbox;
pub mod router;
mod upkeep;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use hub::Hub;
pub use outbox::{DeliverError, OutboxLimits, SessionHandle};
pub use upkeep::Health;

use crate::auth::Authenticator;
use crate::bus::{Bus, Envelope, MessageBus};
use crate::config::Settings;
use crate::ids::{ClientId, NodeId, SessionId};
use crate::metrics::Metrics;
use crate::presence::{Location, Presence, PresenceRegistry};
use crate::protocol::{Codec, DisconnectReason, ErrorCode};

/// How long a remote peer's location is reused without a presence lookup.
const LOCATION_CACHE_TTL: Duration = Duration::from_secs(5);

/// One node of the service.
pub struct Node {
    /// This node's id.
    pub id: NodeId,
    /// The settings it was built from.
    pub settings: Settings,
    /// Local sessions.
    pub hub: Hub,
    /// Where clients are, cluster-wide.
    pub presence: Presence,
    /// Node-to-node delivery.
    pub bus: Bus,
    /// Token verification.
    pub auth: Authenticator,
    /// Exported metrics.
    pub metrics: Arc<Metrics>,
    /// Backend health, maintained by the upkeep task.
    pub health: Health,
    /// Open WebSocket connections (authenticated or not).
    pub connections: AtomicUsize,
    draining: AtomicBool,
    limits: OutboxLimits,
    /// Where remote peers were last seen.
    locations: locations::LocationCache,
}

impl Node {
    /// Assembles a node from its parts.
    pub fn new(
        id: NodeId,
        settings: Settings,
        auth: Authenticator,
        presence: Presence,
        bus: Bus,
        metrics: Arc<Metrics>,
    ) -> Node {
        let limits = OutboxLimits {
            frames: settings.server.outbound_queue_frames,
            bytes: settings.server.outbound_queue_bytes,
        };
        Node {
            id,
            settings,
            hub: Hub::default(),
            presence,
            bus,
            auth,
            metrics,
            health: Health::default(),
            connections: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            limits,
            locations: locations::LocationCache::new(LOCATION_CACHE_TTL),
        }
    }

    /// Whether the node should get new clients: not draining and its
    /// backend answers.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.health.is_healthy()
    }

    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the node draining (readiness turns 503).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.metrics.draining.set(1);
    }

    /// The heartbeat interval clients are told.
    pub fn heartbeat(&self) -> Duration {
        self.settings.server.heartbeat()
    }

    /// Makes a new session for `client` routable: local hub first (so signals
    /// queue behind the CONNECT_ACK), then presence. An older session of the
    /// client, here or on another node, is told to end with REPLACED.
    pub async fn establish(
        &self,
        client: &ClientId,
        codec: Codec,
    ) -> Result<Arc<SessionHandle>, ErrorCode> {
        let handle = Arc::new(SessionHandle::new(
            SessionId::generate(),
            codec,
            self.limits,
        ));
        if let Some(old) = self.hub.insert(client.clone(), Arc::clone(&handle)) {
            old.close(DisconnectReason::Replaced);
        }
        let here = Location {
            node_id: self.id.clone(),
            session_id: handle.session_id,
        };
        match self.presence.register(client, &here).await {
            Ok(Some(previous)) if previous.node_id != self.id => {
                let notice = Envelope::Takeover {
                    client: client.as_str().to_owned(),
                    session: handle.session_id.0,
                };
                self.bus.publish(&previous.node_id, notice.encode(), None);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "presence registration failed; refusing CONNECT");
                self.hub.remove(client.as_str(), handle.session_id);
                return Err(ErrorCode::Unavailable);
            }
        }
        self.metrics.sessions.inc();
        Ok(handle)
    }

    /// Ends a session: out of the hub, then out of presence (compare-and-
    /// delete, so a newer session elsewhere is untouched).
    pub async fn end_session(&self, client: &ClientId, handle: &SessionHandle) {
        self.hub.remove(client.as_str(), handle.session_id);
        self.metrics.sessions.dec();
        let here = Location {
            node_id: self.id.clone(),
            session_id: handle.session_id,
        };
        if let Err(error) = self.presence.unregister(client, &here).await {
            // The record expires on its own after the presence TTL.
            tracing::debug!(%error, "presence removal failed");
        }
    }
}
