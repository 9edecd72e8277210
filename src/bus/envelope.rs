//! The node-to-node envelope, MessagePack-encoded (rmp-serde, compact form).
//! Every field that names a client is validated again on receipt: anything
//! with access to the backend can publish bytes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A message on a node's channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Envelope {
    /// A signal for a client of the receiving node.
    Signal(SignalEnvelope),
    /// The receiving node's client `source` sent signal `message_id`, which
    /// could not be delivered: answer it with ERROR `code`.
    Undeliverable {
        /// The original sender (a client of the receiving node).
        source: String,
        /// The signal's message id.
        message_id: Uuid,
        /// PEER_NOT_FOUND or PEER_UNREACHABLE.
        code: String,
    },
    /// `client` connected elsewhere as `session`: end any other local session of it.
    Takeover {
        /// The client id.
        client: String,
        /// The new session (not to be closed).
        session: Uuid,
    },
    /// A health probe a node publishes to its own channel.
    Probe {
        /// Identifies the probe.
        nonce: u64,
    },
}

/// A routed signal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalEnvelope {
    /// The node that routed it (where failures go back to).
    pub origin: String,
    /// SIGNAL_OFFER, SIGNAL_ANSWER or SIGNAL_ICE_CANDIDATE as its wire byte.
    pub kind: u8,
    /// The sender's message id, kept end to end.
    pub message_id: Uuid,
    /// The authenticated sender.
    pub source: String,
    /// The receiver.
    pub target: String,
    /// The signal data.
    pub data: String,
    /// Microseconds since the Unix epoch when the origin routed it.
    pub sent_at_us: u64,
    /// W3C `traceparent` of the routing span, when traced.
    pub traceparent: Option<String>,
}

/// An envelope that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("malformed envelope: {0}")]
pub struct EnvelopeError(String);

impl Envelope {
    /// Encodes for the bus.
    pub fn encode(&self) -> Bytes {
        // Serializing this plain data to a Vec cannot fail.
        Bytes::from(rmp_serde::to_vec(self).unwrap_or_default())
    }

    /// Decodes bytes from the bus. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        rmp_serde::from_slice(bytes).map_err(|e| EnvelopeError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips() {
        let e = Envelope::Signal(SignalEnvelope {
            origin: "n1".into(),
            kind: 0x10,
            message_id: Uuid::new_v4(),
            source: "a".into(),
            target: "b".into(),
            data: "sdp".into(),
            sent_at_us: 42,
            traceparent: None,
        });
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        let t = Envelope::Takeover {
            client: "a".into(),
            session: Uuid::new_v4(),
        };
        assert_eq!(Envelope::decode(&t.encode()).unwrap(), t);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Envelope::decode(&bytes);
        }
    }
}
