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

mod confirm;
mod delivery;
mod hub;
mod inbox;
mod kick;
mod locations;
mod outbox;
mod registration;
mod resend;
mod resume;
mod route_error;
mod router;
mod trim;
mod upkeep;

#[cfg(feature = "bench")]
pub(crate) mod bench;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use kick::KickOutcome;
pub(crate) use outbox::{OutboxLimits, Receipt, SessionHandle};
pub(crate) use registration::Registration;
pub(crate) use resume::new_token;
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
    /// Cross-node signals this node sent, waiting for confirmation.
    unconfirmed: confirm::Unconfirmed,
    /// Signals this node took, waiting to be confirmed to their origins.
    confirmations: confirm::Confirmations,
    /// Confirmation envelopes published lately, for origins that ask again.
    sent_confirmations: resend::SentBatches,
    /// Wakes the confirmation flusher.
    confirm_wake: tokio::sync::Notify,
    /// Wakes the unconfirmed-signal sweeper.
    sweep_wake: tokio::sync::Notify,
    /// The origin of [`Node::now_ms`].
    started: tokio::time::Instant,
    /// The bus subscription was established at least once.
    subscribed: AtomicBool,
    /// Resumable sessions, handovers in flight, clients that moved.
    resumes: resume::Resumes,
    /// Origins of the signals this node received lately.
    origins: crate::ids::KnownNodes,
}

/// Forwards of envelopes whose target moved that may run at once; beyond
/// this the origin is answered PEER_UNREACHABLE at once.
const MAX_FORWARDS: usize = 1024;

/// Cross-node signals that may wait for confirmation at once; beyond this
/// a signal is answered UNAVAILABLE before it is published.
const MAX_UNCONFIRMED: usize = 200_000;

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
        let delivery_timeout_ms = settings.delivery_timeout().as_millis() as u64;
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
            unconfirmed: confirm::Unconfirmed::new(
                MAX_UNCONFIRMED,
                confirm::Timing::for_timeout(delivery_timeout_ms),
            ),
            confirmations: confirm::Confirmations::default(),
            sent_confirmations: resend::SentBatches::new(confirm::Timing::keep_sent(
                delivery_timeout_ms,
            )),
            confirm_wake: tokio::sync::Notify::new(),
            sweep_wake: tokio::sync::Notify::new(),
            started: tokio::time::Instant::now(),
            subscribed: AtomicBool::new(false),
            resumes: resume::Resumes::default(),
            origins: crate::ids::KnownNodes::default(),
        }
    }

    /// Milliseconds of the node's monotonic clock (tokio's, so paused-time
    /// tests drive it).
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A reading of that clock, taken earlier, in its milliseconds.
    pub(crate) fn ms_at(&self, at: tokio::time::Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
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

    /// Marks the node draining (readiness turns 503) and wakes every
    /// local session, which then sees the drain and ends with
    /// SERVER_SHUTDOWN. A session registered after this snapshot of the
    /// hub checks the flag when its loop starts: the flag is set before the
    /// hub is read, so it cannot miss both.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.metrics.draining.set(1);
        for (_, handle) in self.hub.snapshot() {
            handle.nudge();
        }
    }

    /// Whether other nodes may exist (a cluster backend, not memory).
    pub(crate) fn is_clustered(&self) -> bool {
        matches!(self.bus, Bus::Redis(_))
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
            // A resumable session ends for good: its held signals are answered.
            self.end_parked(client, old.session_id).await;
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

    /// A session wrote these frames from other nodes to its socket: confirm
    /// them to their origins (batched by the flusher).
    pub(crate) fn confirm_written(&self, receipts: &[Receipt]) {
        let wake = self
            .confirmations
            .add(receipts.iter().map(|r| (&r.origin, r.seq)));
        if wake {
            self.confirm_wake.notify_one();
        }
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
