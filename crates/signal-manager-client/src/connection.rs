//! One WebSocket to a node, frame by frame.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::ClientError;
use signal_manager_protocol::{
    encode_frame, Codec, ConnectAckPayload, ConnectPayload, DecodeError, Message, MessageType,
    Payload, WireConnect, MAX_FRAME_LEN,
};

/// Small buffers (a client holds one or a few sockets, but the load
/// generator holds thousands) and the protocol's largest frame as the limit.
fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(MAX_FRAME_LEN))
        .max_frame_size(Some(MAX_FRAME_LEN))
}

/// What the server sent.
#[derive(Debug)]
pub enum Incoming {
    /// A valid protocol message.
    Message(Message),
    /// A binary message that is not a valid protocol message.
    Invalid(DecodeError),
    /// The server closed the WebSocket (close code, reason).
    Closed(Option<u16>, String),
}

/// One WebSocket connection.
pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Connection {
    /// Opens a WebSocket to `url` (e.g. `ws://127.0.0.1:8080`).
    pub async fn open(url: &str) -> Result<Connection, ClientError> {
        Connection::open_from(url, None).await
    }

    /// Opens a WebSocket from a chosen local address (spreads source
    /// addresses over 127.0.0.x so ephemeral ports never run out).
    pub async fn open_from(url: &str, local: Option<IpAddr>) -> Result<Connection, ClientError> {
        let request = url.into_client_request()?;
        let host = request.uri().host().unwrap_or("127.0.0.1").to_owned();
        let port = request.uri().port_u16().unwrap_or(80);
        // An IP literal needs no resolver (which would run on a blocking thread).
        let literal = host.trim_matches(['[', ']']).parse::<IpAddr>().ok();
        let addr: SocketAddr = match literal {
            Some(ip) => SocketAddr::new(ip, port),
            None => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| ClientError::WebSocket(e.into()))?
                .next()
                .ok_or_else(|| ClientError::Protocol(format!("cannot resolve {host}")))?,
        };
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| ClientError::WebSocket(e.into()))?;
        if let Some(ip) = local {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| ClientError::WebSocket(e.into()))?;
        }
        let stream = socket
            .connect(addr)
            .await
            .map_err(|e| ClientError::WebSocket(e.into()))?;
        let _ = stream.set_nodelay(true);
        let config = websocket_config();
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            request,
            MaybeTlsStream::Plain(stream),
            Some(config),
        )
        .await?;
        Ok(Connection { ws })
    }

    /// Sends a message, structured payloads in `codec`.
    pub async fn send(&mut self, message: &Message, codec: Codec) -> Result<(), ClientError> {
        let bytes = message.encode(codec)?;
        self.send_bytes(bytes).await
    }

    /// Sends arbitrary bytes as one binary WebSocket message.
    pub async fn send_bytes(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        Ok(self.ws.send(WsMessage::Binary(bytes)).await?)
    }

    /// Queues bytes without flushing (for batched sends); see [`Connection::flush`].
    pub async fn feed_bytes(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        Ok(self.ws.feed(WsMessage::Binary(bytes)).await?)
    }

    /// Flushes fed messages.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        Ok(self.ws.flush().await?)
    }

    /// Sends a WebSocket text message (a protocol error, for tests).
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        Ok(self.ws.send(WsMessage::text(text)).await?)
    }

    /// Sends a WebSocket ping.
    pub async fn ping(&mut self, payload: &'static [u8]) -> Result<(), ClientError> {
        Ok(self
            .ws
            .send(WsMessage::Ping(Bytes::from_static(payload)))
            .await?)
    }

    /// Receives the next protocol message or the close. Pings and pongs are
    /// handled by the WebSocket layer and skipped.
    pub async fn recv(&mut self) -> Result<Incoming, ClientError> {
        loop {
            match self.ws.next().await {
                None => return Ok(Incoming::Closed(None, String::new())),
                Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => {
                    return Ok(Incoming::Closed(None, String::new()))
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(WsMessage::Binary(bytes))) => {
                    return Ok(match Message::decode(bytes) {
                        Ok(m) => Incoming::Message(m),
                        Err(e) => Incoming::Invalid(e),
                    })
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (Some(u16::from(f.code)), f.reason.to_string()))
                        .unwrap_or((None, String::new()));
                    return Ok(Incoming::Closed(code, reason));
                }
                Some(Ok(WsMessage::Text(text))) => {
                    return Err(ClientError::Protocol(format!(
                        "text message from server: {text}"
                    )))
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Like [`Connection::recv`], giving up after `limit`.
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<Incoming, ClientError> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Sends CONNECT and waits for CONNECT_ACK.
    pub async fn authenticate(
        &mut self,
        client_id: &str,
        token: &str,
        codec: Codec,
    ) -> Result<ConnectAckPayload, ClientError> {
        self.authenticate_resuming(client_id, token, None, codec)
            .await
    }

    /// Like [`Connection::authenticate`], offering the `resume_token` of
    /// an earlier session: the CONNECT_ACK's `resumed` says whether that
    /// session was taken over (its held signals follow), or a new one
    /// started.
    pub async fn authenticate_resuming(
        &mut self,
        client_id: &str,
        token: &str,
        resume_token: Option<&str>,
        codec: Codec,
    ) -> Result<ConnectAckPayload, ClientError> {
        let connect = Message::new(
            MessageType::Connect,
            Payload::Connect(ConnectPayload {
                client_id: client_id.to_owned(),
                auth_token: token.to_owned(),
            }),
        );
        let wire = WireConnect {
            client_id: client_id.to_owned(),
            auth_token: token.to_owned(),
            resume_token: resume_token.map(str::to_owned),
        };
        let frame = encode_frame(MessageType::Connect, connect.message_id, codec, &wire)?;
        self.send_bytes(frame).await?;
        loop {
            match self.recv_timeout(Duration::from_secs(10)).await? {
                Incoming::Message(Message {
                    payload: Payload::ConnectAck(ack),
                    message_id,
                    ..
                }) if message_id == connect.message_id => return Ok(ack),
                Incoming::Message(Message {
                    payload: Payload::Error(e),
                    ..
                }) => {
                    return Err(ClientError::Refused {
                        code: e.code,
                        message: e.message,
                    })
                }
                Incoming::Message(_) => continue,
                Incoming::Invalid(e) => return Err(ClientError::Protocol(e.to_string())),
                Incoming::Closed(code, _) => return Err(ClientError::Closed(code)),
            }
        }
    }

    /// Closes the WebSocket (no DISCONNECT frame).
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }
}
