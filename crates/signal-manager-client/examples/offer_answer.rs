//! Two clients exchange an offer and an answer through a running node.
//!
//! Start a development node (`cargo run --release`), then:
//!
//! ```text
//! cargo run --example offer_answer [ws://127.0.0.1:8080]
//! ```
//!
//! It uses the development tokens, so it works against a node started
//! without configuration on a loopback address.

use signal_manager_client::protocol::Codec;
use signal_manager_client::{Client, ConnectOptions, Event};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8080".into());
    let alice = Client::connect(ConnectOptions::new(&url, "test_client_1", "test_token_1")).await?;
    let mut bob = Client::connect(
        ConnectOptions::new(&url, "test_client_2", "test_token_2").codec(Codec::Cbor),
    )
    .await?;
    println!("alice: session {}", alice.session().session_id);
    println!("bob:   session {}", bob.session().session_id);

    let offer_id = alice.offer("test_client_2", "v=0 (an SDP offer)").await?;
    println!("alice -> bob: SIGNAL_OFFER {offer_id}");
    while let Some(event) = bob.next_event().await {
        if let Event::Signal(signal) = event {
            println!(
                "bob got {:?} {} from {}: {}",
                signal.kind, signal.message_id, signal.source, signal.data
            );
            let answer_id = bob.answer(&signal.source, "v=0 (an SDP answer)").await?;
            println!("bob -> alice: SIGNAL_ANSWER {answer_id}");
            break;
        }
    }
    let mut alice = alice;
    while let Some(event) = alice.next_event().await {
        if let Event::Signal(signal) = event {
            println!(
                "alice got {:?} {} from {}",
                signal.kind, signal.message_id, signal.source
            );
            break;
        }
    }
    alice.close().await;
    bob.close().await;
    Ok(())
}
