//! The node-to-node envelope, MessagePack-encoded (rmp-serde, compact form).
//! Every field that names a client is validated again on receipt: anything
//! with access to the backend can publish bytes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod signal_wire;

/// A message on a node's channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Envelope {
    /// A signal for a client of the receiving node.
    Signal(SignalEnvelope),
    /// The receiving node's client `source` sent signal `message_id` (the
    /// origin's sequence number `seq`), which could not be delivered: answer
    /// it with ERROR `code`, unless the origin already answered it.
    Undeliverable {
        /// The original sender (a client of the receiving node).
        source: String,
        /// The signal's target (its cached location is stale).
        target: String,
        /// The signal's message id.
        message_id: Uuid,
        /// PEER_NOT_FOUND or PEER_UNREACHABLE.
        code: String,
        /// The origin's sequence number of the signal.
        seq: u64,
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
    /// The receiving node routed these signals (by its sequence numbers);
    /// the sender of this envelope took each of them: delivered it to a
    /// local session (or held it for a resumable one).
    Confirm {
        /// The origin's sequence numbers.
        seqs: Vec<u64>,
    },
    /// Hand over the resumable session `session` of `client` (parked on the
    /// receiving node) if `secret` is its resume token's; answer with a
    /// `Handover` to `reply_to`.
    ResumeRequest {
        /// The client id.
        client: String,
        /// The session to resume.
        session: Uuid,
        /// The resume token's secret.
        secret: Vec<u8>,
        /// The node the client resumes on.
        reply_to: String,
        /// Matches the answer to the request.
        request: Uuid,
    },
    /// The answer to a `ResumeRequest`: the held signals in order (the
    /// session is now the requester's), or `None` (no such resumable
    /// session: start a new one).
    Handover {
        /// The request answered.
        request: Uuid,
        /// The held signals, oldest first.
        signals: Option<Vec<HeldSignal>>,
    },
    /// Sent by a node that took over a session to the node it came from:
    /// answered with `FenceDone` once everything that node received before
    /// it has been forwarded.
    Fence {
        /// Matches the answer.
        request: Uuid,
        /// The node to answer.
        reply_to: String,
    },
    /// The answer to a `Fence`.
    FenceDone {
        /// The fence answered.
        request: Uuid,
    },
    /// A signal of the receiving node's client `source` was held for a
    /// session that ended for good: answer it PEER_NOT_FOUND.
    Unheld {
        /// The sender (a client of the receiving node).
        source: String,
        /// The signal's message id.
        message_id: Uuid,
    },
    /// A mark a node publishes to its own channel while it waits for
    /// confirmations: its echo proves that everything Redis processed
    /// before it has reached this node.
    Mark {
        /// When it was published, in ms of the node's monotonic clock.
        at_ms: u64,
    },
    /// An operator ended `client`'s session `session` through the admin API
    /// of another node: end it with DISCONNECT KICKED. Last variant, so
    /// the encoding of the others does not change.
    Kick {
        /// The client id.
        client: String,
        /// The session to end (a newer one of the same client is kept).
        session: Uuid,
    },
    /// `origin` subscribed to its channel again: confirmations it may have
    /// lost with its old subscription (counted by Redis, never read) are
    /// to be published to it once more. A node of an older version drops
    /// it as malformed (its origin then waits out the grace only).
    ConfirmAgain {
        /// The node asking (where the confirmations go).
        origin: String,
    },
}

/// A signal held for a resumable session, as a handover carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldSignal {
    /// SIGNAL_OFFER, SIGNAL_ANSWER or SIGNAL_ICE_CANDIDATE as its wire byte.
    pub kind: u8,
    /// The sender's message id.
    pub message_id: Uuid,
    /// The sender.
    pub source: String,
    /// The signal data.
    pub data: String,
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
    /// Set when a node that no longer held the target passed it on (at
    /// most one such hop).
    pub forwarded: bool,
    /// The origin's sequence number: what the taking node confirms.
    pub seq: u64,
}

/// Borrowed fields of a [`SignalEnvelope`], in the same order, for encoding
/// and decoding without copying the strings: the bytes are those of
/// [`Envelope::Signal`] (tests in `signal_wire` hold them equal).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SignalRef<'a> {
    /// See [`SignalEnvelope::origin`].
    pub origin: &'a str,
    /// See [`SignalEnvelope::kind`].
    pub kind: u8,
    /// See [`SignalEnvelope::message_id`].
    pub message_id: Uuid,
    /// See [`SignalEnvelope::source`].
    pub source: &'a str,
    /// See [`SignalEnvelope::target`].
    pub target: &'a str,
    /// See [`SignalEnvelope::data`].
    pub data: &'a str,
    /// See [`SignalEnvelope::sent_at_us`].
    pub sent_at_us: u64,
    /// See [`SignalEnvelope::traceparent`].
    pub traceparent: Option<&'a str>,
    /// See [`SignalEnvelope::forwarded`].
    pub forwarded: bool,
    /// See [`SignalEnvelope::seq`].
    pub seq: u64,
}

impl<'a> SignalRef<'a> {
    /// Decodes `bytes` when they are an [`Envelope::Signal`], borrowing its
    /// strings from them (the hot path of a receiving node: no copy, no
    /// allocation). `None` for any other envelope, and for bytes that do
    /// not decode ([`Envelope::decode`] then says why).
    pub fn decode(bytes: &'a [u8]) -> Option<SignalRef<'a>> {
        signal_wire::decode(bytes)
    }

    /// The owned envelope (for work that outlives the received bytes).
    pub fn to_owned(self) -> SignalEnvelope {
        SignalEnvelope {
            origin: self.origin.to_owned(),
            kind: self.kind,
            message_id: self.message_id,
            source: self.source.to_owned(),
            target: self.target.to_owned(),
            data: self.data.to_owned(),
            sent_at_us: self.sent_at_us,
            traceparent: self.traceparent.map(str::to_owned),
            forwarded: self.forwarded,
            seq: self.seq,
        }
    }

    /// Encodes as an [`Envelope::Signal`].
    pub fn encode(self) -> Bytes {
        signal_wire::encode(&self)
    }
}

impl<'a> From<&'a SignalEnvelope> for SignalRef<'a> {
    fn from(s: &'a SignalEnvelope) -> SignalRef<'a> {
        SignalRef {
            origin: &s.origin,
            kind: s.kind,
            message_id: s.message_id,
            source: &s.source,
            target: &s.target,
            data: &s.data,
            sent_at_us: s.sent_at_us,
            traceparent: s.traceparent.as_deref(),
            forwarded: s.forwarded,
            seq: s.seq,
        }
    }
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
            forwarded: false,
            seq: 7,
        });
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        let t = Envelope::Takeover {
            client: "a".into(),
            session: Uuid::new_v4(),
        };
        assert_eq!(Envelope::decode(&t.encode()).unwrap(), t);
        let c = Envelope::Confirm {
            seqs: vec![1, 2, u64::MAX],
        };
        assert_eq!(Envelope::decode(&c.encode()).unwrap(), c);
        let k = Envelope::Kick {
            client: "a".into(),
            session: Uuid::new_v4(),
        };
        assert_eq!(Envelope::decode(&k.encode()).unwrap(), k);
        let again = Envelope::ConfirmAgain {
            origin: "node-a".into(),
        };
        assert_eq!(Envelope::decode(&again.encode()).unwrap(), again);
    }

    #[test]
    fn borrowed_signal_encoding_is_byte_identical() {
        let owned = SignalEnvelope {
            origin: "n1".into(),
            kind: 0x12,
            message_id: Uuid::new_v4(),
            source: "alice".into(),
            target: "bob".into(),
            data: "candidate é".into(),
            sent_at_us: 123_456,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            forwarded: true,
            seq: 99,
        };
        let borrowed = SignalRef::from(&owned);
        let bytes = borrowed.encode();
        assert_eq!(bytes, Envelope::Signal(owned.clone()).encode());
        assert_eq!(SignalRef::decode(&bytes), Some(borrowed));
        assert_eq!(borrowed.to_owned(), owned);
        assert_eq!(Envelope::decode(&bytes).unwrap(), Envelope::Signal(owned));
    }

    #[test]
    fn only_signals_decode_borrowed() {
        let others = [
            Envelope::Confirm { seqs: vec![1, 2] },
            Envelope::Mark { at_ms: 5 },
            Envelope::ConfirmAgain {
                origin: "node-a".into(),
            },
        ];
        for envelope in others {
            assert_eq!(SignalRef::decode(&envelope.encode()), None);
        }
        assert_eq!(SignalRef::decode(b"\x81\x00"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Envelope::decode(&bytes);
            let _ = SignalRef::decode(&bytes);
        }
    }
}
