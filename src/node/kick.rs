//! Ending a client's session from the outside (the admin API), wherever in
//! the cluster it is: presence says which node holds it; this node closes
//! its own session, or publishes an [`Envelope::Kick`] to the node that
//! does. The session then ends like a takeover does, with DISCONNECT KICKED
//! (close 1008). HTTP lives in `server/admin_api.rs`; this file only knows
//! nodes and sessions.

use tokio::sync::oneshot;
use uuid::Uuid;

use super::Node;
use crate::bus::{Envelope, MessageBus};
use crate::ids::ClientId;
use crate::presence::{Location, PresenceRegistry};
use crate::protocol::DisconnectReason;

/// What a kick found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KickOutcome {
    /// A session was online and is being ended.
    Disconnected,
    /// No session of that client is online.
    NotOnline,
}

/// Why a kick could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum KickError {
    /// Presence could not be asked, or the publish failed.
    #[error("cluster backend unavailable")]
    Unavailable,
}

impl Node {
    /// Where `client` is online, cluster-wide.
    pub async fn find_client(&self, client: &str) -> Result<Option<Location>, KickError> {
        self.presence
            .locate(client)
            .await
            .map_err(|_| KickError::Unavailable)
    }

    /// Ends `client`'s session wherever it is.
    pub async fn kick(&self, client: &str) -> Result<KickOutcome, KickError> {
        let Some(location) = self.find_client(client).await? else {
            return Ok(KickOutcome::NotOnline);
        };
        if location.node_id == self.id {
            let found = self.kick_local(client, Some(location.session_id.0)).await;
            return Ok(if found {
                KickOutcome::Disconnected
            } else {
                KickOutcome::NotOnline
            });
        }
        let notice = Envelope::Kick {
            client: client.to_owned(),
            session: location.session_id.0,
        };
        let (tx, rx) = oneshot::channel();
        self.bus.publish(
            &location.node_id,
            notice.encode(),
            Some(Box::new(move |result| {
                let _ = tx.send(result);
            })),
        );
        match rx.await {
            Ok(Ok(receivers)) if receivers > 0 => Ok(KickOutcome::Disconnected),
            // The owning node no longer listens: its sessions are gone.
            Ok(Ok(_)) => Ok(KickOutcome::NotOnline),
            Ok(Err(_)) | Err(_) => Err(KickError::Unavailable),
        }
    }

    /// Ends the local session of `client` (only `session`, when given) with
    /// KICKED; whether there was one. A session parked for resume (its
    /// socket is gone) ends for good: KICKED is never resumable.
    pub async fn kick_local(&self, client: &str, session: Option<Uuid>) -> bool {
        let Some(handle) = self.hub.get(client) else {
            return false;
        };
        if session.is_some_and(|s| s != handle.session_id.0) {
            return false;
        }
        handle.close(DisconnectReason::Kicked);
        if let Some(id) = ClientId::new(client) {
            // A no-op unless the session is parked.
            self.end_parked(&id, handle.session_id).await;
        }
        true
    }
}
