//! The Rust client: the one implementation of the protocol's client side,
//! used by the integration tests and the load generator.
//!
//! Two layers:
//! - [`Connection`]: one WebSocket, frame by frame (send any bytes, receive
//!   decoded messages and the close code). For tests and tools.
//! - [`Client`]: an authenticated session with automatic heartbeats,
//!   typed signal sending, a stream of [`Event`]s and optional reconnect
//!   with jittered exponential backoff.
//!
//! ```no_run
//! use signal_manager_client::{Client, ConnectOptions, Event};
//! use signal_manager_client::protocol::Codec;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut alice = Client::connect(ConnectOptions::new("ws://127.0.0.1:8080", "test_client_1", "test_token_1")).await?;
//! let id = alice.offer("test_client_2", "v=0 ...").await?;
//! while let Some(event) = alice.next_event().await {
//!     match event {
//!         Event::Signal(s) => println!("{:?} from {}", s.kind, s.source),
//!         Event::Error { message_id, code, .. } if message_id == id => eprintln!("offer failed: {code}"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

mod connection;
mod session;

/// The wire protocol this client speaks (re-exported for convenience).
pub use signal_manager_protocol as protocol;

pub use connection::{Connection, Incoming};
pub use session::{Client, ConnectOptions, Event, IncomingSignal, TokenSource};

/// A client-side failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket could not be opened or broke.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// A message could not be encoded.
    #[error(transparent)]
    Encode(#[from] signal_manager_protocol::EncodeError),
    /// The server refused CONNECT.
    #[error("connect refused: {code}: {message}")]
    Refused {
        /// The ERROR code.
        code: String,
        /// The ERROR message.
        message: String,
    },
    /// The server closed the connection.
    #[error("connection closed (code {0:?})")]
    Closed(Option<u16>),
    /// The server sent something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The client task has stopped.
    #[error("client stopped")]
    Stopped,
}
