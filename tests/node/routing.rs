//! Local routing: stamping, ids, codec translation, ordering, backpressure.

use std::time::Duration;

use signal_manager_client::{Client, ConnectOptions, Event, Incoming};
use signal_manager_service::protocol::{Codec, MessageType, Payload};

use crate::support::*;
use crate::*;

#[tokio::test]
async fn signals_arrive_stamped_with_the_same_id_in_the_receivers_codec() {
    let node = TestNode::start(test_settings()).await;
    for from in Codec::ALL {
        for to in Codec::ALL {
            let mut alice = node.login(ALICE.0, ALICE.1, from).await;
            let mut bob = node.login(BOB.0, BOB.1, to).await;
            for kind in [
                MessageType::SignalOffer,
                MessageType::SignalAnswer,
                MessageType::SignalIceCandidate,
            ] {
                let mut m = signal(kind, BOB.0, "v=0 é \u{1F600}");
                // A forged source is ignored: the server stamps the sender.
                m.source_client_id = Some("mallory".into());
                alice.send(&m, from).await.unwrap();
                let got = recv_message(&mut bob).await;
                assert_eq!(got.message_type, kind);
                assert_eq!(got.message_id, m.message_id);
                assert_eq!(got.source_client_id.as_deref(), Some(ALICE.0));
                let (Payload::SignalOffer(p)
                | Payload::SignalAnswer(p)
                | Payload::SignalIceCandidate(p)) = &got.payload
                else {
                    panic!("not a signal: {got:?}")
                };
                assert_eq!(p.target_client_id, BOB.0);
                assert_eq!(p.signal_data, "v=0 é \u{1F600}");
                assert_eq!(
                    got.encode(to).unwrap()[18],
                    to.payload_type().as_u8(),
                    "{from:?} -> {to:?}"
                );
            }
            alice.close().await;
            bob.close().await;
        }
    }
}

#[tokio::test]
async fn a_client_may_signal_itself_with_empty_data() {
    let node = TestNode::start(test_settings()).await;
    let mut alice = node.login(ALICE.0, ALICE.1, JSON).await;
    let m = signal(MessageType::SignalIceCandidate, ALICE.0, "");
    alice.send(&m, JSON).await.unwrap();
    let got = recv_message(&mut alice).await;
    assert_eq!(got.message_id, m.message_id);
    assert_eq!(got.source_client_id.as_deref(), Some(ALICE.0));
}

#[tokio::test]
async fn ten_thousand_signals_arrive_in_order() {
    let mut settings = test_settings();
    settings.server.rate_limit_per_second = 1_000_000;
    settings.server.rate_limit_burst = 1_000_000;
    settings.server.outbound_queue_frames = 20_000;
    let node = TestNode::start(settings).await;
    let alice = Client::connect(ConnectOptions::new(&node.url, ALICE.0, ALICE.1))
        .await
        .unwrap();
    let mut bob = Client::connect(ConnectOptions::new(&node.url, BOB.0, BOB.1).codec(Codec::Cbor))
        .await
        .unwrap();
    const N: usize = 10_000;
    let sender = tokio::spawn(async move {
        for i in 0..N {
            alice.offer(BOB.0, &i.to_string()).await.unwrap();
        }
        alice
    });
    for expected in 0..N {
        match tokio::time::timeout(Duration::from_secs(20), bob.next_event())
            .await
            .unwrap()
        {
            Some(Event::Signal(s)) => assert_eq!(s.data, expected.to_string()),
            other => panic!("unexpected {other:?} at {expected}"),
        }
    }
    let _alice = sender.await.unwrap();
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected_as_slow_consumer() {
    let mut settings = test_settings();
    settings.server.rate_limit_per_second = 1_000_000;
    settings.server.rate_limit_burst = 1_000_000;
    let node = TestNode::start(settings).await;
    let mut slow = node.login(BOB.0, BOB.1, JSON).await;
    let mut flooder = node.login(ALICE.0, ALICE.1, JSON).await;
    let before = rss_kib();
    let data = "x".repeat(60_000);
    // 3000 × 60 KB = 180 MB offered to a client that reads nothing.
    let mut refused = None;
    for i in 0..3000 {
        let m = offer(BOB.0, &data);
        flooder.send(&m, JSON).await.unwrap();
        if i % 50 == 0 {
            if let Ok(Incoming::Message(e)) = flooder.recv_timeout(Duration::from_millis(1)).await {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = match refused {
        Some(e) => e,
        None => recv_message(&mut flooder).await,
    };
    match &refused.payload {
        Payload::Error(e) => assert!(
            e.code == "PEER_UNREACHABLE" || e.code == "PEER_NOT_FOUND",
            "the sender learns its signal was not taken: {e:?}"
        ),
        other => panic!("expected an ERROR, got {other:?}"),
    }
    let growth = rss_kib().saturating_sub(before);
    assert!(growth < 96 * 1024, "node memory grew by {growth} KiB");
    // Now read: the buffered frames, then DISCONNECT SLOW_CONSUMER and 1000.
    let mut saw_disconnect = false;
    loop {
        match slow.recv_timeout(Duration::from_secs(15)).await.unwrap() {
            Incoming::Message(m) if m.message_type == MessageType::Disconnect => {
                assert_disconnect(&m, "SLOW_CONSUMER");
                saw_disconnect = true;
            }
            Incoming::Message(_) => {}
            Incoming::Closed(code, _) => {
                assert_eq!(code, Some(1000));
                break;
            }
            Incoming::Invalid(e) => panic!("{e}"),
        }
    }
    assert!(saw_disconnect);
    assert!(node
        .get("/metrics")
        .await
        .1
        .contains("signal_manager_slow_consumer_disconnects_total 1"));
}
