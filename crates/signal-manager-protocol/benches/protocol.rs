//! Micro-benchmarks of the wire protocol on a 200-byte signal (the size of
//! an ICE candidate): frame decode and encode, each codec's payload decode
//! and encode, and the translation a node does when sender and receiver use
//! different codecs. Regressions here show up before any load test.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use signal_manager_protocol::{
    encode_frame, encode_signal, Codec, Frame, Message, MessageType, WireSignal,
};
use uuid::Uuid;

fn signal() -> WireSignal {
    WireSignal {
        target_client_id: "peer-bob-0001".into(),
        source_client_id: String::new(),
        signal_data: format!(
            "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.0.0.5 rport 46154 generation 0 ufrag EsAw network-cost 999 {}",
            "x".repeat(200)
        )[..200]
            .to_owned(),
    }
}

fn frame_of(codec: Codec) -> Bytes {
    encode_frame(
        MessageType::SignalIceCandidate,
        Uuid::new_v4(),
        codec,
        &signal(),
    )
    .expect("a 200-byte signal fits in a frame")
}

fn frames(c: &mut Criterion) {
    let bytes = frame_of(Codec::Json);
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("decode", |b| {
        b.iter(|| Frame::decode(black_box(bytes.clone())))
    });
    let frame = Frame::decode(bytes.clone()).expect("valid frame");
    group.bench_function("encode", |b| b.iter(|| black_box(&frame).encode()));
    group.finish();
}

fn codecs(c: &mut Criterion) {
    let wire = signal();
    let mut group = c.benchmark_group("codec");
    for codec in Codec::ALL {
        let frame = Frame::decode(frame_of(codec)).expect("valid frame");
        let payload = frame.payload.clone();
        group.bench_function(format!("{}/decode", codec.as_str()), |b| {
            b.iter(|| codec.decode::<WireSignal>(black_box(&payload)))
        });
        // What a node reads from a client: borrowed where the codec allows.
        group.bench_function(format!("{}/decode_signal", codec.as_str()), |b| {
            b.iter(|| codec.decode_signal(black_box(&payload)).is_ok())
        });
        group.bench_function(format!("{}/encode", codec.as_str()), |b| {
            b.iter(|| {
                encode_frame(
                    MessageType::SignalIceCandidate,
                    Uuid::nil(),
                    codec,
                    black_box(&wire),
                )
            })
        });
        let bytes = frame.encode().expect("valid frame");
        group.bench_function(format!("{}/message_decode", codec.as_str()), |b| {
            b.iter(|| Message::decode(black_box(bytes.clone())))
        });
    }
    group.finish();
}

/// What a node does per signal: decode the sender's payload, then encode
/// the delivery (with the stamped source) in the receiver's codec.
fn translation(c: &mut Criterion) {
    let mut group = c.benchmark_group("translate");
    let pairs = [
        (Codec::Json, Codec::Json),
        (Codec::Json, Codec::Cbor),
        (Codec::Json, Codec::Protobuf),
        (Codec::Cbor, Codec::Protobuf),
        (Codec::Protobuf, Codec::Json),
    ];
    for (from, to) in pairs {
        let frame = Frame::decode(frame_of(from)).expect("valid frame");
        group.bench_function(format!("{}_to_{}", from.as_str(), to.as_str()), |b| {
            b.iter(|| {
                let wire: WireSignal = from.decode(&frame.payload).expect("valid payload");
                encode_signal(
                    to,
                    frame.message_type,
                    frame.message_id,
                    &wire.target_client_id,
                    "peer-alice-0001",
                    &wire.signal_data,
                )
            })
        });
    }
    group.finish();
}

/// What a receiving node does per signal from another node: encode the
/// delivery in its client's codec from the envelope's strings.
fn delivery(c: &mut Criterion) {
    let mut group = c.benchmark_group("deliver");
    let data = "x".repeat(200);
    for codec in [Codec::Json, Codec::Cbor, Codec::Protobuf] {
        group.bench_function(format!("encode_signal/{}", codec.as_str()), |b| {
            b.iter(|| {
                encode_signal(
                    black_box(codec),
                    MessageType::SignalOffer,
                    Uuid::nil(),
                    "peer-bob-0001",
                    "peer-alice-0001",
                    black_box(&data),
                )
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = frames, codecs, translation, delivery
}
criterion_main!(benches);
