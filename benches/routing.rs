//! Micro-benchmarks of the local route decision: a signal whose target is
//! on the same node is encoded in the target's codec and queued on its
//! outbox without touching the cluster backend; plus the hub lookup that
//! decides it. Built on the real node with in-memory backends.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use signal_manager_service::app::memory_node;
use signal_manager_service::bus::MemoryBus;
use signal_manager_service::config::Settings;
use signal_manager_service::ids::{ClientId, SessionId};
use signal_manager_service::node::router::Outgoing;
use signal_manager_service::node::{Node, OutboxLimits, SessionHandle};
use signal_manager_service::presence::MemoryPresence;
use signal_manager_service::protocol::{Codec, MessageType};
use uuid::Uuid;

/// Local sessions in the hub besides the two benchmarked ones.
const OTHER_SESSIONS: usize = 10_000;

fn node() -> Arc<Node> {
    let settings = Settings::default();
    let ttl = settings.presence_ttl();
    memory_node(
        settings,
        MemoryPresence::new(ttl, ttl),
        MemoryBus::default(),
    )
    .expect("a default memory node builds")
}

fn session(codec: Codec) -> Arc<SessionHandle> {
    Arc::new(SessionHandle::new(
        SessionId::generate(),
        codec,
        OutboxLimits {
            frames: 1 << 20,
            bytes: 1 << 30,
        },
    ))
}

fn local_route(c: &mut Criterion) {
    let node = node();
    for i in 0..OTHER_SESSIONS {
        let id = ClientId::new(&format!("client-{i}")).expect("valid id");
        node.hub.insert(id, session(Codec::Json));
    }
    let alice = ClientId::new("alice").expect("valid id");
    let sender = session(Codec::Json);
    node.hub.insert(alice.clone(), Arc::clone(&sender));
    let data = "x".repeat(200);
    let mut group = c.benchmark_group("route_local");
    for codec in Codec::ALL {
        let bob = session(codec);
        node.hub
            .insert(ClientId::new("bob").expect("valid id"), Arc::clone(&bob));
        let signal = Outgoing {
            kind: MessageType::SignalIceCandidate,
            message_id: Uuid::nil(),
            source: &alice,
            target: "bob",
            data: &data,
        };
        let mut drained = Vec::with_capacity(1024);
        group.bench_function(format!("to_{}", codec.as_str()), |b| {
            b.iter(|| {
                // A local route never awaits: it completes on the first poll.
                let routed = node.route(black_box(&signal), &sender).now_or_never();
                assert!(matches!(routed, Some(Ok(()))));
                if bob.take(&mut drained).is_some() {
                    panic!("the target's outbox closed");
                }
                drained.clear();
            })
        });
    }
    group.finish();
}

fn hub_lookup(c: &mut Criterion) {
    let node = node();
    for i in 0..OTHER_SESSIONS {
        let id = ClientId::new(&format!("client-{i}")).expect("valid id");
        node.hub.insert(id, session(Codec::Json));
    }
    c.bench_function("hub/get_hit", |b| {
        b.iter(|| node.hub.get(black_box("client-4242")))
    });
    c.bench_function("hub/get_miss", |b| {
        b.iter(|| node.hub.get(black_box("nobody-here")))
    });
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
    targets = local_route, hub_lookup
}
criterion_main!(benches);
