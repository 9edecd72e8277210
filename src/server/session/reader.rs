//! The one frame reader of a session, before and after CONNECT: turns what
//! the WebSocket layer yields into a protocol frame's bytes, a refusal
//! (text or oversized message), something to ignore (pings, pongs, raw
//! frames), or the end of the socket.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::error::SessionError;
use super::link::{Link, Polled};

/// One inbound WebSocket message, classified.
pub(super) enum Inbound {
    /// A binary message: one protocol frame's bytes.
    Frame(Bytes),
    /// A message the protocol refuses outright (it ends the socket).
    Refused(SessionError),
    /// Pings and pongs (answered by the WebSocket layer; not activity),
    /// and a dormant link's wake-up before a whole message is in.
    Ignored,
    /// The peer closed or the socket failed.
    Closed,
}

/// Reads the next message. Cancel-safe: a partial frame stays in the
/// link.
pub(super) async fn next(link: &mut Link) -> Inbound {
    match link.next().await {
        Polled::Read(read) => classify(read),
        Polled::Woken => Inbound::Ignored,
    }
}

fn classify(message: Option<Result<WsMessage, WsError>>) -> Inbound {
    match message {
        None | Some(Ok(WsMessage::Close(_))) => Inbound::Closed,
        Some(Ok(WsMessage::Binary(bytes))) => Inbound::Frame(bytes),
        Some(Ok(WsMessage::Text(_))) => Inbound::Refused(SessionError::TextMessage),
        // Any capacity error is a message or frame above the limit.
        Some(Err(WsError::Capacity(_))) => Inbound::Refused(SessionError::TooBig),
        Some(Err(_)) => Inbound::Closed,
        Some(Ok(_)) => Inbound::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::error::CapacityError;

    #[test]
    fn messages_are_classified_once_for_both_phases() {
        assert!(matches!(
            classify(Some(Ok(WsMessage::Binary(Bytes::from_static(b"x"))))),
            Inbound::Frame(_)
        ));
        assert!(matches!(
            classify(Some(Ok(WsMessage::Text("hi".into())))),
            Inbound::Refused(SessionError::TextMessage)
        ));
        assert!(matches!(
            classify(Some(Err(WsError::Capacity(
                CapacityError::MessageTooLong {
                    size: 70_000,
                    max_size: 65_556
                }
            )))),
            Inbound::Refused(SessionError::TooBig)
        ));
        assert!(matches!(
            classify(Some(Ok(WsMessage::Ping(Bytes::new())))),
            Inbound::Ignored
        ));
        assert!(matches!(classify(None), Inbound::Closed));
        assert!(matches!(
            classify(Some(Err(WsError::ConnectionClosed))),
            Inbound::Closed
        ));
    }
}
