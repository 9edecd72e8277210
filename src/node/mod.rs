//! A node: the local sessions, the two cluster seams and the verifier, put
//! together once. Sessions and routing talk to [`Presence`] and [`Bus`]
//! without knowing which backend runs behind them.
//!
//! Layout: `outbox.rs` (a session's bounded queue), `hub.rs` (local sessions),
//! `registration.rs` (a session's hub entry and presence record, removed
//! exactly once whatever ends the session), `router.rs` (where a signal goes)
//! with `route_error.rs` (its failures and their answers), `inbox.rs`
//! (envelopes from other nodes), `upkeep.rs` (presence refresh, node
//! liveness, bus probes, readiness).

mod hub;
mod inbox;
mod locations;
mod outbox;
mod registration;
mod route_error;
mod router;
mod upkeep;

#[cfg(feature = "bench")]
pub(crate) mod bench;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use outbox::{OutboxLimits, SessionHandle};
pub(crate) use registration::Registration;
pub(crate) use route_error::RouteError;
pub(crate) use router::Outgoing;
pub(crate) use upkeep::Background;

use crate::auth::Authenticator;
use crate::bus::{Bus, BusError, Envelope, MessageBus};
use crate::config::Settings;
use crate::ids::{ClientId, NodeId, SessionId};
use crate::metrics::Metrics;
use crate::presence::{Location, Presence, PresenceError, PresenceRegistry};
use crate::protocol::{Codec, DisconnectReason};
use hub::Hub;
use upkeep::Health;

/// How long a remote peer's location is reused without a presence lookup.
const LOCATION_CACHE_TTL: Duration = Duration::from_secs(5);

/// One node of the service: built by [`crate::app`], run by
/// [`crate::app::run_node`].
pub struct Node {
    id: NodeId,
    settings: Settings,
    hub: Hub,
    pub(crate) presence: Presence,
    bus: Bus,
    auth: Authenticator,
    metrics: Arc<Metrics>,
    health: Health,
    draining: AtomicBool,
    limits: OutboxLimits,
    /// Where remote peers were last seen.
    locations: locations::LocationCache,
    /// Stale-location forwards in flight (bounded).
    forwards: Arc<tokio::sync::Semaphore>,
}

/// Forwards of envelopes whose target moved that may run at once; beyond
/// this the origin is answered PEER_UNREACHABLE at once.
const MAX_FORWARDS: usize = 1024;

impl Node {
    /// Assembles a node from its parts.
    pub(crate) fn new(
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
            draining: AtomicBool::new(false),
            limits,
            locations: locations::LocationCache::new(LOCATION_CACHE_TTL),
            forwards: Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS)),
        }
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The settings the node was built from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Local sessions right now.
    pub fn session_count(&self) -> usize {
        self.hub.len()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn auth(&self) -> &Authenticator {
        &self.auth
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
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.metrics.draining.set(1);
    }

    /// The heartbeat interval clients are told.
    pub(crate) fn heartbeat(&self) -> Duration {
        self.settings.server.heartbeat()
    }

    /// Makes a new session for `client` routable: local hub first (so signals
    /// queue behind the CONNECT_ACK), then presence. An older session of the
    /// client, here or on another node, is told to end with REPLACED. The
    /// returned guard undoes both when dropped, whatever ends the session.
    pub(crate) async fn establish(
        self: &Arc<Self>,
        client: &ClientId,
        codec: Codec,
    ) -> Result<Registration, PresenceError> {
        let handle = Arc::new(SessionHandle::new(
            SessionId::generate(),
            codec,
            self.limits,
        ));
        if let Some(old) = self.hub.insert(client.clone(), Arc::clone(&handle)) {
            old.close(DisconnectReason::Replaced);
        }
        // From here on the guard owns the hub entry (and the record): a
        // failure below, or a cancelled CONNECT, drops it.
        let mut registration = Registration::new(Arc::clone(self), client.clone(), handle);
        let here = registration.location();
        match self.presence.register(client, &here).await {
            Ok(Some(previous)) if previous.node_id != self.id => {
                let notice = Envelope::Takeover {
                    client: client.as_str().to_owned(),
                    session: here.session_id.0,
                };
                self.bus.publish(&previous.node_id, notice.encode(), None);
            }
            Ok(_) => {}
            Err(error) => return Err(error),
        }
        registration.established();
        Ok(registration)
    }

    /// Subscribes to the node's channel and starts the upkeep tasks.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<Background, BusError> {
        upkeep::start(self).await
    }
}

/// This node's location record for a session.
fn location(node: &NodeId, session: SessionId) -> Location {
    Location {
        node_id: node.clone(),
        session_id: session,
    }
}
