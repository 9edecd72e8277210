//! The admin endpoints.

use signal_manager_service::protocol::Codec;

use crate::support::*;
use crate::*;

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let node = TestNode::start(test_settings()).await;
    assert_eq!(node.get("/healthz").await.0, 200);
    assert_eq!(node.get("/readyz").await.0, 200);
    assert_eq!(node.get("/nope").await.0, 404);

    let mut alice = node.login(ALICE.0, ALICE.1, JSON).await;
    let mut bob = node.login(BOB.0, BOB.1, Codec::Cbor).await;
    let before = node.get("/metrics").await.1;
    for _ in 0..5 {
        alice.send(&offer(BOB.0, "m"), JSON).await.unwrap();
        recv_message(&mut bob).await;
    }
    let bad = connect("x y", "t");
    let mut c = node.open().await;
    c.send(&bad, JSON).await.unwrap();
    recv_message(&mut c).await;
    let mut refused = node.open().await;
    refused.send(&connect(ALICE.0, "nope"), JSON).await.unwrap();
    recv_message(&mut refused).await;

    let after = node.get("/metrics").await.1;
    assert_eq!(metric(&after, "signal_manager_sessions "), 2.0);
    let routed = "signal_manager_signals_routed_total{route=\"local\",result=\"delivered\"}";
    assert_eq!(metric(&after, routed) - metric(&before, routed), 5.0);
    let frames = "signal_manager_frames_received_total{message_type=\"SIGNAL_OFFER\"}";
    assert_eq!(metric(&after, frames) - metric(&before, frames), 5.0);
    assert_eq!(
        metric(&after, "signal_manager_errors_total{code=\"BAD_PAYLOAD\"}"),
        1.0
    );
    assert!(
        metric(
            &after,
            "signal_manager_auth_failures_total{reason=\"unknown_development_token\"}"
        ) >= 1.0
    );
    assert!(metric(&after, "signal_manager_route_duration_seconds_count") >= 5.0);
    assert!(metric(&after, "signal_manager_connect_duration_seconds_count") >= 2.0);
    assert!(
        !after.contains(ALICE.0),
        "client ids never appear in labels"
    );
}
