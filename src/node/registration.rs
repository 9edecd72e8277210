//! A session's registration: its hub entry and its presence record. The
//! guard removes both exactly once, whatever ends the session task: the
//! normal exit awaits [`Registration::end`]; an error, a panic or a
//! cancelled task drops the guard, and `Drop` does the same work (the
//! presence removal on a task of its own, since `Drop` cannot await).
//! Without it a panicking session would leave a hub entry whose presence
//! record upkeep refreshes forever.

use std::sync::Arc;

use super::{location, Node, SessionHandle};
use crate::ids::ClientId;
use crate::presence::{Location, PresenceRegistry};
use crate::protocol::DisconnectReason;
use crate::telemetry::ErrorChain;

/// Owns a session's hub entry and presence record.
pub(crate) struct Registration {
    node: Arc<Node>,
    client: ClientId,
    handle: Arc<SessionHandle>,
    /// Counted in the sessions gauge (set once presence recorded it).
    counted: bool,
    /// Cleanup already done by [`Registration::end`].
    ended: bool,
}

impl Registration {
    /// Takes over a session that is already in the hub.
    pub(super) fn new(node: Arc<Node>, client: ClientId, handle: Arc<SessionHandle>) -> Self {
        Registration {
            node,
            client,
            handle,
            counted: false,
            ended: false,
        }
    }

    /// Presence recorded the session: it counts as established.
    pub(super) fn established(&mut self) {
        self.node.metrics.sessions.inc();
        self.counted = true;
    }

    /// The session's outbound side.
    pub(crate) fn handle(&self) -> &Arc<SessionHandle> {
        &self.handle
    }

    /// The authenticated client.
    pub(crate) fn client(&self) -> &ClientId {
        &self.client
    }

    /// This session's presence record.
    pub(super) fn location(&self) -> Location {
        location(&self.node.id, self.handle.session_id)
    }

    /// Ends the session: out of the hub, then out of presence
    /// (compare-and-delete, so a newer session elsewhere is untouched).
    pub(crate) async fn end(mut self) {
        self.ended = true;
        self.leave_hub();
        let here = self.location();
        if let Err(error) = self.node.presence.unregister(&self.client, &here).await {
            // The record expires on its own after the presence TTL.
            tracing::debug!(error = %ErrorChain(&error), "presence removal failed");
        }
    }

    /// Leaves the hub but keeps the presence record: the session moved to
    /// another node, which overwrites the record with the same session.
    pub(crate) fn release(mut self) {
        self.ended = true;
        self.leave_hub();
    }

    fn leave_hub(&self) {
        // A late delivery gets an ERROR instead of sitting in a queue
        // nobody writes; the first close reason set stays.
        self.handle.close(DisconnectReason::ClientLeft);
        self.node
            .hub
            .remove(self.client.as_str(), self.handle.session_id);
        if self.counted {
            self.node.metrics.sessions.dec();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.leave_hub();
        let node = Arc::clone(&self.node);
        let client = self.client.clone();
        let here = self.location();
        // Inside a runtime (always, for a session task); outside one the
        // record simply expires after the presence TTL.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = node.presence.unregister(&client, &here).await;
            });
        }
    }
}
