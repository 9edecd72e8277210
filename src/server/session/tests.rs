//! Session-task tests that need a hook inside the task: a panic must not
//! leave the session's hub entry or presence record behind.

use std::sync::Arc;
use std::time::Duration;

use signal_manager_client::{Connection, Incoming};

use crate::app;
use crate::config::Settings;
use crate::presence::PresenceRegistry;
use crate::protocol::{encode_raw, Codec, MessageType, PayloadType};
use crate::shutdown;

/// A heartbeat with exactly this payload makes the session task panic.
pub(super) const PANIC_HEARTBEAT: &[u8] = b"\x00test-hook: panic the session task\x00";

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn a_panicking_session_leaves_no_registration_behind() {
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.admin.port = 0;
    let node = app::build_node(settings).await.expect("node builds");
    let listeners = app::bind(node.settings()).await.expect("bind");
    let url = format!("ws://{}", listeners.websocket.local_addr().expect("addr"));
    let (trigger, shutdown) = shutdown::channel();
    let running = tokio::spawn(app::run_node(Arc::clone(&node), listeners, shutdown));

    let mut alice = Connection::open(&url).await.expect("open");
    alice
        .authenticate("test_client_1", "test_token_1", Codec::Json)
        .await
        .expect("first session");
    assert_eq!(node.session_count(), 1);
    assert!(node
        .presence
        .locate("test_client_1")
        .await
        .expect("locate")
        .is_some());

    let hook = encode_raw(
        MessageType::Heartbeat,
        uuid::Uuid::new_v4(),
        PayloadType::Binary,
        PANIC_HEARTBEAT,
    )
    .expect("heartbeat encodes");
    alice.send_bytes(hook).await.expect("send the hook");
    // The task died: the socket ends without a DISCONNECT.
    if let Ok(Incoming::Message(m)) = alice.recv_timeout(Duration::from_secs(5)).await {
        panic!("unexpected frame after the panic: {m:?}");
    }

    eventually("the hub entry is gone", || node.session_count() == 0).await;
    let mut gone = false;
    for _ in 0..500 {
        if node
            .presence
            .locate("test_client_1")
            .await
            .expect("locate")
            .is_none()
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "the presence record must be removed after a panic");

    let mut again = Connection::open(&url).await.expect("open again");
    again
        .authenticate("test_client_1", "test_token_1", Codec::Json)
        .await
        .expect("the client id connects again");
    assert_eq!(node.session_count(), 1);

    trigger.trigger();
    running.await.expect("node task").expect("node drains");
}
