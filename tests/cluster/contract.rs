//! One contract suite per seam, run against the memory and the Redis
//! implementation alike.

use std::time::Duration;

use std::sync::Arc;

use signal_manager_service::bus::{BusError, EnvelopeSink, MemoryBus, MessageBus, RedisBus};
use signal_manager_service::ids::{ClientId, NodeId, SessionId};
use signal_manager_service::metrics::Metrics;
use signal_manager_service::presence::{Location, MemoryPresence, PresenceRegistry, RedisPresence};
use tokio::sync::oneshot;

use crate::support::redis_server::RedisServer;
use crate::support::{eventually, send_os_signal};
use crate::unique_prefix;

const TTL: Duration = Duration::from_secs(2);

fn at(node: &str) -> Location {
    Location {
        node_id: NodeId::new(node),
        session_id: SessionId::generate(),
    }
}

pub(crate) async fn presence_contract<P: PresenceRegistry>(p: &P) {
    let alice = ClientId::new("alice").unwrap();
    let (n1, n2) = (NodeId::new("n1"), NodeId::new("n2"));
    let first = at("n1");
    assert_eq!(p.register(&alice, &first).await.unwrap(), None);
    assert_eq!(
        p.locate("alice").await.unwrap(),
        None,
        "a dead node's records are offline"
    );
    p.keep_node_alive(&n1).await.unwrap();
    assert_eq!(p.locate("alice").await.unwrap(), Some(first.clone()));

    // A newer session elsewhere: register hands back the old location.
    let second = at("n2");
    p.keep_node_alive(&n2).await.unwrap();
    assert_eq!(
        p.register(&alice, &second).await.unwrap(),
        Some(first.clone())
    );
    // Compare-and-delete: the old node cannot erase the newer session.
    assert!(!p.unregister(&alice, &first).await.unwrap());
    assert_eq!(p.locate("alice").await.unwrap(), Some(second.clone()));
    // Refresh never overwrites another session's record...
    assert_eq!(
        p.refresh(&[(alice.clone(), first.clone())]).await.unwrap(),
        0
    );
    assert_eq!(p.locate("alice").await.unwrap(), Some(second.clone()));
    // ...but re-creates a missing one.
    assert!(p.unregister(&alice, &second).await.unwrap());
    assert_eq!(p.locate("alice").await.unwrap(), None);
    assert_eq!(
        p.refresh(&[(alice.clone(), second.clone())]).await.unwrap(),
        1
    );
    assert_eq!(p.locate("alice").await.unwrap(), Some(second.clone()));

    // Refreshed records outlive the TTL; unrefreshed ones expire.
    let bob = ClientId::new("bob").unwrap();
    let bobs = at("n2");
    p.register(&bob, &bobs).await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(TTL / 2).await;
        p.keep_node_alive(&n2).await.unwrap();
        p.refresh(&[(alice.clone(), second.clone())]).await.unwrap();
    }
    assert_eq!(p.locate("alice").await.unwrap(), Some(second.clone()));
    assert_eq!(
        p.locate("bob").await.unwrap(),
        None,
        "bob was not refreshed"
    );

    // A node record that is removed takes its clients offline.
    p.remove_node(&n2).await.unwrap();
    assert_eq!(p.locate("alice").await.unwrap(), None);
}

async fn wait_subscribed<B: MessageBus>(bus: &B, node: &NodeId) {
    eventually("subscription active", Duration::from_secs(5), || async {
        let (tx, rx) = oneshot::channel();
        bus.publish(
            node,
            bytes::Bytes::from_static(b"warm-up"),
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        );
        matches!(rx.await, Ok(Ok(1)))
    })
    .await;
}

pub(crate) async fn bus_contract<B: MessageBus>(bus: &B) {
    let (a, b) = (NodeId::new("node-a"), NodeId::new("node-b"));
    let (sink_a, mut inbox_a) = ChannelSink::pair();
    let (sink_b, mut inbox_b) = ChannelSink::pair();
    bus.subscribe(&a, sink_a.clone()).await.unwrap();
    bus.subscribe(&b, sink_b.clone()).await.unwrap();
    wait_subscribed(bus, &a).await;
    wait_subscribed(bus, &b).await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), inbox_a.recv()).await {
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), inbox_b.recv()).await {
    }

    // Order is kept and each publish reports one receiver.
    let (tx, mut counts) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..2000u32 {
        let tx = tx.clone();
        bus.publish(
            &a,
            bytes::Bytes::from(i.to_be_bytes().to_vec()),
            Some(Box::new(move |r| {
                let _ = tx.send(r.unwrap());
            })),
        );
    }
    for i in 0..2000u32 {
        let got = tokio::time::timeout(Duration::from_secs(5), inbox_a.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], &i.to_be_bytes(), "publish order kept");
        assert_eq!(counts.recv().await, Some(1));
    }
    // Only the addressed node receives: never a broadcast.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), inbox_b.recv())
            .await
            .is_err()
    );

    // Nobody subscribed: zero receivers, reported, not dropped silently.
    let (tx, rx) = oneshot::channel();
    bus.publish(
        &NodeId::new("node-gone"),
        bytes::Bytes::from_static(b"x"),
        Some(Box::new(move |r| {
            let _ = tx.send(r);
        })),
    );
    assert!(matches!(rx.await.unwrap(), Ok(0)));

    // Leaving loses nothing counted: every publish that reported a
    // receiver reached the sink; once left, publishes reach nobody.
    let (tx, mut counts) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..500u32 {
        let tx = tx.clone();
        bus.publish(
            &a,
            bytes::Bytes::from(i.to_be_bytes().to_vec()),
            Some(Box::new(move |r| {
                let _ = tx.send((i, r));
            })),
        );
    }
    drop(tx);
    bus.leave().await;
    let mut counted = Vec::new();
    while let Some((i, r)) = counts.recv().await {
        if matches!(r, Ok(n) if n > 0) {
            counted.push(i);
        }
    }
    let mut received = std::collections::HashSet::new();
    while let Ok(bytes) = inbox_a.try_recv() {
        received.insert(bytes);
    }
    for i in counted {
        assert!(
            received.contains(i.to_be_bytes().as_slice()),
            "publish {i} counted a receiver but never reached the sink"
        );
    }
    let (tx, rx) = oneshot::channel();
    bus.publish(
        &a,
        bytes::Bytes::from_static(b"after"),
        Some(Box::new(move |r| {
            let _ = tx.send(r);
        })),
    );
    assert!(matches!(rx.await.unwrap(), Ok(0)), "left: nobody receives");
    drop((sink_a, sink_b));
}

/// A sink that hands envelopes to the test.
struct ChannelSink(tokio::sync::mpsc::UnboundedSender<Vec<u8>>);

impl ChannelSink {
    fn pair() -> (
        Arc<dyn EnvelopeSink>,
        tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Arc::new(ChannelSink(tx)), rx)
    }
}

impl EnvelopeSink for ChannelSink {
    fn on_envelope(&self, bytes: &[u8]) {
        let _ = self.0.send(bytes.to_vec());
    }
}

#[tokio::test]
async fn memory_presence_meets_the_contract() {
    presence_contract(&MemoryPresence::new(TTL, TTL)).await;
}

#[tokio::test]
async fn redis_presence_meets_the_contract() {
    let redis = RedisServer::start().await;
    let p = RedisPresence::new(
        &redis.url(),
        &unique_prefix("presence"),
        TTL,
        4,
        Metrics::new().into(),
    )
    .unwrap();
    presence_contract(&p).await;
}

#[tokio::test]
async fn memory_bus_meets_the_contract() {
    bus_contract(&MemoryBus::default()).await;
}

#[tokio::test]
async fn redis_bus_meets_the_contract() {
    let redis = RedisServer::start().await;
    let bus = RedisBus::new(&redis.url(), &unique_prefix("bus"), Metrics::new().into()).unwrap();
    bus_contract(&bus).await;
}

/// A hung Redis (SIGSTOP) fails a publish within the connection's response
/// timeout instead of holding it, so the origin can answer the signal.
#[tokio::test]
async fn a_publish_to_a_hung_redis_fails_instead_of_waiting() {
    let redis = RedisServer::start().await;
    let bus = RedisBus::new(&redis.url(), &unique_prefix("hung"), Metrics::new().into()).unwrap();
    let node = NodeId::new("node-a");
    let (sink, _inbox) = ChannelSink::pair();
    // The bus holds the sink weakly: keep it alive for the whole test.
    bus.subscribe(&node, sink.clone()).await.unwrap();
    wait_subscribed(&bus, &node).await;
    send_os_signal(redis.pid(), "STOP");
    let (tx, rx) = oneshot::channel();
    bus.publish(
        &node,
        bytes::Bytes::from_static(b"held?"),
        Some(Box::new(move |r| {
            let _ = tx.send(r);
        })),
    );
    // Generous against the 500 ms response timeout; without one the
    // publish would wait for as long as Redis hangs.
    let outcome = tokio::time::timeout(Duration::from_secs(5), rx).await;
    send_os_signal(redis.pid(), "CONT");
    assert!(
        matches!(outcome, Ok(Ok(Err(BusError::Timeout)))),
        "a publish to a hung Redis must time out, got {outcome:?}"
    );
}

#[tokio::test]
async fn redis_presence_keys_carry_the_prefix_and_a_ttl() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("keys");
    let p = RedisPresence::new(
        &redis.url(),
        &prefix,
        Duration::from_secs(30),
        2,
        Metrics::new().into(),
    )
    .unwrap();
    p.register(&ClientId::new("alice").unwrap(), &at("n1"))
        .await
        .unwrap();
    p.keep_node_alive(&NodeId::new("n1")).await.unwrap();
    let keys = redis.command(&["KEYS", "*"]).await;
    assert!(keys.contains(&format!("{prefix}:client:alice")), "{keys}");
    assert!(keys.contains(&format!("{prefix}:node:n1")), "{keys}");
    for key in [
        format!("{prefix}:client:alice"),
        format!("{prefix}:node:n1"),
    ] {
        let ttl = redis.command(&["PTTL", &key]).await;
        let ms: i64 = ttl.trim_start_matches(':').trim().parse().unwrap();
        assert!(ms > 0 && ms <= 30_000, "{key} has TTL {ms}");
    }
}
