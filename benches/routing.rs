//! Micro-benchmarks of the local route decision: a signal whose target is
//! on the same node is encoded in the target's codec and queued on its
//! outbox without touching the cluster backend; plus the hub lookup that
//! decides it, and the envelope a cross-node signal travels in. Built on
//! the real node with in-memory backends; needs
//! `cargo bench --features bench`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use signal_manager_service::app::memory_node;
use signal_manager_service::bench::{LocalRoute, UnconfirmedSteady};
use signal_manager_service::bus::{Envelope, MemoryBus, SignalEnvelope, SignalRef};
use signal_manager_service::config::Settings;
use signal_manager_service::presence::MemoryPresence;
use signal_manager_service::protocol::Codec;
use uuid::Uuid;

/// Local sessions in the hub besides the benchmarked ones.
const OTHER_SESSIONS: usize = 10_000;

fn route() -> LocalRoute {
    let settings = Settings::default();
    let ttl = settings.presence_ttl();
    let node = memory_node(
        settings,
        MemoryPresence::new(ttl, ttl),
        MemoryBus::default(),
    )
    .expect("a default memory node builds");
    LocalRoute::new(node, OTHER_SESSIONS, "alice").expect("valid id")
}

fn local_route(c: &mut Criterion) {
    let route = route();
    let data = "x".repeat(200);
    let mut group = c.benchmark_group("route_local");
    for codec in Codec::ALL {
        let mut bob = route.target("bob", codec);
        group.bench_function(format!("to_{}", codec.as_str()), |b| {
            b.iter(|| {
                // A local route never awaits: it completes on the first poll.
                assert!(route.route(black_box("bob"), &data));
                assert!(bob.drain(), "the target's outbox closed");
            })
        });
    }
    group.finish();
}

fn hub_lookup(c: &mut Criterion) {
    let route = route();
    c.bench_function("hub/get_hit", |b| {
        b.iter(|| route.lookup(black_box("client-4242")))
    });
    c.bench_function("hub/get_miss", |b| {
        b.iter(|| route.lookup(black_box("nobody-here")))
    });
}

/// The sending node's bookkeeping per cross-node signal: track it, settle
/// it when its confirmation comes. 3,000 waiting is a saturated node's
/// steady state here; 50,000 one whose confirmations lag.
fn unconfirmed(c: &mut Criterion) {
    let mut group = c.benchmark_group("unconfirmed");
    for outstanding in [3_000, 50_000] {
        let mut set = UnconfirmedSteady::new(outstanding);
        group.bench_function(format!("track_and_confirm/{outstanding}"), |b| {
            b.iter(|| assert!(set.step(), "a confirmation settled nothing"))
        });
    }
    group.finish();
}

/// A cross-node signal's envelope, written by the sending node and read by
/// the receiving one on the hot path; beside it, rmp-serde's full decode,
/// which every other envelope (and any unusual shape of this one) takes.
fn envelope(c: &mut Criterion) {
    let owned = SignalEnvelope {
        origin: "node-1".into(),
        kind: 0x12,
        message_id: Uuid::new_v4(),
        source: "peer-alice-0001".into(),
        target: "peer-bob-0001".into(),
        data: "x".repeat(200),
        sent_at_us: 1_764_000_000_000_000,
        traceparent: None,
        forwarded: false,
        seq: 123_456,
    };
    let bytes = SignalRef::from(&owned).encode();
    let mut group = c.benchmark_group("envelope");
    group.bench_function("signal/encode", |b| {
        b.iter(|| SignalRef::from(black_box(&owned)).encode())
    });
    group.bench_function("signal/decode", |b| {
        b.iter(|| SignalRef::decode(black_box(&bytes)).is_some())
    });
    group.bench_function("signal/decode_rmp_serde", |b| {
        b.iter(|| Envelope::decode(black_box(&bytes)).is_ok())
    });
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
    targets = local_route, hub_lookup, unconfirmed, envelope
}
criterion_main!(benches);
