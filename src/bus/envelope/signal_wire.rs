//! The hot path's codec for [`Envelope::Signal`](super::Envelope::Signal):
//! the bytes rmp-serde writes for it, read and written field by field with
//! rmp's primitives instead of through serde's visitors (about 1,450
//! instructions per decode under callgrind instead of 1,650; most of what
//! is left is the UTF-8 check of its strings, which any decoder needs).
//!
//! rmp-serde (compact form) writes the envelope as a one-entry map from the
//! variant's name to the struct, the struct as an array of its fields in
//! declaration order, integers in their shortest form and the message id as
//! 16 bytes of binary. [`decode`] accepts exactly that shape and nothing
//! else: anything it refuses goes to [`Envelope::decode`](super::Envelope::decode),
//! which accepts what rmp-serde accepts (a struct as a map, say) and says
//! why the rest is malformed. Tests hold both directions equal to
//! rmp-serde's.

use bytes::Bytes;
use rmp::{decode, encode};
use uuid::Uuid;

use super::SignalRef;

/// The variant's name, as rmp-serde writes it.
const VARIANT: &str = "Signal";
/// Fields of a [`SignalRef`].
const FIELDS: u32 = 10;

/// Decodes `bytes` when they hold an [`Envelope::Signal`](super::Envelope::Signal)
/// in the shape rmp-serde writes, borrowing its strings; `None` otherwise.
pub(super) fn decode(bytes: &[u8]) -> Option<SignalRef<'_>> {
    let mut rd = Reader(bytes);
    if rd.map_len()? != 1 || rd.str()? != VARIANT || rd.array_len()? != FIELDS {
        return None;
    }
    let signal = SignalRef {
        origin: rd.str()?,
        kind: u8::try_from(rd.uint()?).ok()?,
        message_id: rd.uuid()?,
        source: rd.str()?,
        target: rd.str()?,
        data: rd.str()?,
        sent_at_us: rd.uint()?,
        traceparent: rd.optional_str()?,
        forwarded: rd.bool()?,
        seq: rd.uint()?,
    };
    rd.0.is_empty().then_some(signal)
}

/// Encodes `signal` as an [`Envelope::Signal`](super::Envelope::Signal),
/// byte for byte as rmp-serde does.
pub(super) fn encode(signal: &SignalRef<'_>) -> Bytes {
    let strings = signal.origin.len()
        + signal.source.len()
        + signal.target.len()
        + signal.data.len()
        + signal.traceparent.map_or(0, str::len);
    // Markers, lengths, the id and three integers fit in 64 bytes.
    let mut buf = Vec::with_capacity(64 + strings);
    // Writing to a Vec cannot fail; a failure would leave a short envelope
    // that the receiver refuses as malformed, never a panic here.
    let _ = write(&mut buf, signal);
    Bytes::from(buf)
}

fn write(buf: &mut Vec<u8>, s: &SignalRef<'_>) -> Option<()> {
    encode::write_map_len(buf, 1).ok()?;
    encode::write_str(buf, VARIANT).ok()?;
    encode::write_array_len(buf, FIELDS).ok()?;
    encode::write_str(buf, s.origin).ok()?;
    encode::write_uint(buf, u64::from(s.kind)).ok()?;
    encode::write_bin(buf, s.message_id.as_bytes()).ok()?;
    encode::write_str(buf, s.source).ok()?;
    encode::write_str(buf, s.target).ok()?;
    encode::write_str(buf, s.data).ok()?;
    encode::write_uint(buf, s.sent_at_us).ok()?;
    match s.traceparent {
        Some(traceparent) => encode::write_str(buf, traceparent).ok()?,
        None => encode::write_nil(buf).ok()?,
    }
    encode::write_bool(buf, s.forwarded).ok()?;
    encode::write_uint(buf, s.seq).ok()?;
    Some(())
}

/// What is left of the envelope's bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn map_len(&mut self) -> Option<u32> {
        decode::read_map_len(&mut self.0).ok()
    }

    fn array_len(&mut self) -> Option<u32> {
        decode::read_array_len(&mut self.0).ok()
    }

    fn str(&mut self) -> Option<&'a str> {
        let (text, rest) = decode::read_str_from_slice(self.0).ok()?;
        self.0 = rest;
        Some(text)
    }

    fn optional_str(&mut self) -> Option<Option<&'a str>> {
        match self.0.first() {
            Some(&NIL) => {
                self.0 = &self.0[1..];
                Some(None)
            }
            _ => self.str().map(Some),
        }
    }

    /// Any integer marker, as rmp-serde reads an unsigned field.
    fn uint(&mut self) -> Option<u64> {
        decode::read_int(&mut self.0).ok()
    }

    fn bool(&mut self) -> Option<bool> {
        decode::read_bool(&mut self.0).ok()
    }

    /// The 16 bytes of binary the uuid crate serializes to.
    fn uuid(&mut self) -> Option<Uuid> {
        if decode::read_bin_len(&mut self.0).ok()? != 16 {
            return None;
        }
        let (id, rest) = self.0.split_first_chunk::<16>()?;
        self.0 = rest;
        Some(Uuid::from_bytes(*id))
    }
}

/// MessagePack's nil marker.
const NIL: u8 = 0xc0;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Envelope, SignalEnvelope};
    use proptest::prelude::*;

    fn envelope() -> impl Strategy<Value = SignalEnvelope> {
        (
            (
                ".{0,20}",
                any::<u8>(),
                any::<[u8; 16]>(),
                ".{0,20}",
                ".{0,20}",
            ),
            (".{0,300}", any::<u64>(), proptest::option::of(".{0,60}")),
            (any::<bool>(), any::<u64>()),
        )
            .prop_map(
                |(
                    (origin, kind, id, source, target),
                    (data, sent_at_us, traceparent),
                    (forwarded, seq),
                )| {
                    SignalEnvelope {
                        origin,
                        kind,
                        message_id: Uuid::from_bytes(id),
                        source,
                        target,
                        data,
                        sent_at_us,
                        traceparent,
                        forwarded,
                        seq,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn writes_what_rmp_serde_writes_and_reads_it_back(owned in envelope()) {
            let reference = rmp_serde::to_vec(&Envelope::Signal(owned.clone())).unwrap();
            let borrowed = SignalRef::from(&owned);
            prop_assert_eq!(&encode(&borrowed)[..], &reference[..]);
            prop_assert_eq!(decode(&reference), Some(borrowed));
        }

        /// Whatever the fast decoder accepts, rmp-serde decodes to the same
        /// envelope: a damaged or unusual envelope is never read differently.
        #[test]
        fn accepts_nothing_rmp_serde_reads_otherwise(
            owned in envelope(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = rmp_serde::to_vec(&Envelope::Signal(owned)).unwrap();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            bytes.truncate(bytes.len() - cut.index(3));
            if let Some(fast) = decode(&bytes) {
                let slow = Envelope::decode(&bytes);
                prop_assert_eq!(slow.ok(), Some(Envelope::Signal(fast.to_owned())));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Some(fast) = decode(&bytes) {
                prop_assert_eq!(Envelope::decode(&bytes).ok(), Some(Envelope::Signal(fast.to_owned())));
            }
        }
    }

    #[test]
    fn other_shapes_are_left_to_rmp_serde() {
        let owned = SignalEnvelope {
            origin: "n1".into(),
            kind: 0x10,
            message_id: Uuid::new_v4(),
            source: "a".into(),
            target: "b".into(),
            data: "sdp".into(),
            sent_at_us: 1,
            traceparent: None,
            forwarded: false,
            seq: 2,
        };
        // The struct as a map of named fields: rmp-serde reads it, the fast
        // path does not, so the node falls back to the full decode.
        let named = rmp_serde::to_vec_named(&Envelope::Signal(owned.clone())).unwrap();
        assert_eq!(decode(&named), None);
        assert_eq!(
            Envelope::decode(&named).unwrap(),
            Envelope::Signal(owned.clone())
        );
        let mut trailing = rmp_serde::to_vec(&Envelope::Signal(owned)).unwrap();
        trailing.push(0);
        assert_eq!(decode(&trailing), None);
    }
}
