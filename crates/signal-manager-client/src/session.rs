//! An authenticated client session run by a background task: heartbeats at
//! the server's interval, sends queued signals, turns frames into events,
//! and reconnects with jittered exponential backoff when asked to.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{ClientError, Connection, Incoming};
use signal_manager_protocol::{
    encode_frame, encode_raw, Codec, ConnectAckPayload, Message, MessageType, Payload, PayloadType,
    WireSignal,
};

/// Produces a fresh token for each reconnect.
pub type TokenSource = Arc<dyn Fn() -> String + Send + Sync>;

/// How to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    /// `ws://host:port`.
    pub url: String,
    /// The client id to authenticate as.
    pub client_id: String,
    /// The first token.
    pub token: String,
    /// The session codec.
    pub codec: Codec,
    /// When set, reconnect after an unexpected close with a token from here.
    pub reconnect: Option<TokenSource>,
    /// Upper bound of the reconnect backoff.
    pub max_backoff: Duration,
    /// Local address to connect from.
    pub local_addr: Option<IpAddr>,
}

impl ConnectOptions {
    /// JSON codec, no reconnect.
    pub fn new(
        url: impl Into<String>,
        client_id: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        ConnectOptions {
            url: url.into(),
            client_id: client_id.into(),
            token: token.into(),
            codec: Codec::Json,
            reconnect: None,
            max_backoff: Duration::from_secs(5),
            local_addr: None,
        }
    }

    /// Uses `codec` for the session.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Reconnects after unexpected closes, minting tokens with `tokens`.
    pub fn reconnect(mut self, tokens: TokenSource) -> Self {
        self.reconnect = Some(tokens);
        self
    }

    /// Connects from this local address.
    pub fn local_addr(mut self, ip: IpAddr) -> Self {
        self.local_addr = Some(ip);
        self
    }
}

/// A signal received from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingSignal {
    /// SIGNAL_OFFER, SIGNAL_ANSWER or SIGNAL_ICE_CANDIDATE.
    pub kind: MessageType,
    /// The id the sender chose.
    pub message_id: Uuid,
    /// The authenticated sender.
    pub source: String,
    /// The signal data.
    pub data: String,
}

/// Something that happened on the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A peer's signal.
    Signal(IncomingSignal),
    /// The server answered one of our frames with an ERROR.
    Error {
        /// The id of the frame it answers (nil when unknown).
        message_id: Uuid,
        /// The protocol code.
        code: String,
        /// The server's sentence.
        message: String,
    },
    /// A token refresh was accepted.
    Refreshed,
    /// The session ended (DISCONNECT reason when one was sent, close code).
    Disconnected {
        /// The DISCONNECT reason, if the server sent one.
        reason: Option<String>,
        /// The WebSocket close code.
        close_code: Option<u16>,
    },
    /// Reconnected after a disconnect: `resumed` in the CONNECT_ACK says
    /// whether the session was resumed (its held signals follow, same
    /// `session_id`) or a new one started.
    Reconnected(ConnectAckPayload),
}

enum Command {
    Send(Bytes),
    Close,
}

/// An authenticated session.
pub struct Client {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<Event>,
    ack: ConnectAckPayload,
    codec: Codec,
}

impl Client {
    /// Connects, authenticates and starts the session task.
    pub async fn connect(options: ConnectOptions) -> Result<Client, ClientError> {
        let mut connection = Connection::open_from(&options.url, options.local_addr).await?;
        let ack = connection
            .authenticate(&options.client_id, &options.token, options.codec)
            .await?;
        let (commands, command_rx) = mpsc::channel(1024);
        let (event_tx, events) = mpsc::channel(4096);
        let codec = options.codec;
        let task = Task {
            options,
            connection,
            heartbeat: heartbeat_of(&ack),
            resume_token: ack.resume_token.clone(),
            commands: command_rx,
            events: event_tx,
        };
        tokio::spawn(task.run());
        Ok(Client {
            commands,
            events,
            ack,
            codec,
        })
    }

    /// The CONNECT_ACK of the current session.
    pub fn session(&self) -> &ConnectAckPayload {
        &self.ack
    }

    /// Sends a signal; returns its message id.
    pub async fn signal(
        &self,
        kind: MessageType,
        target: &str,
        data: &str,
    ) -> Result<Uuid, ClientError> {
        let id = Uuid::new_v4();
        self.signal_with_id(kind, id, target, data).await?;
        Ok(id)
    }

    /// Sends a signal with a chosen message id.
    pub async fn signal_with_id(
        &self,
        kind: MessageType,
        id: Uuid,
        target: &str,
        data: &str,
    ) -> Result<(), ClientError> {
        let wire = WireSignal {
            target_client_id: target.to_owned(),
            source_client_id: String::new(),
            signal_data: data.to_owned(),
        };
        let frame = encode_frame(kind, id, self.codec, &wire)?;
        self.send_frame(frame).await
    }

    /// Sends an offer.
    pub async fn offer(&self, target: &str, sdp: &str) -> Result<Uuid, ClientError> {
        self.signal(MessageType::SignalOffer, target, sdp).await
    }

    /// Sends an answer.
    pub async fn answer(&self, target: &str, sdp: &str) -> Result<Uuid, ClientError> {
        self.signal(MessageType::SignalAnswer, target, sdp).await
    }

    /// Sends an ICE candidate.
    pub async fn ice_candidate(&self, target: &str, candidate: &str) -> Result<Uuid, ClientError> {
        self.signal(MessageType::SignalIceCandidate, target, candidate)
            .await
    }

    /// Sends a refresh CONNECT with a new token; [`Event::Refreshed`] follows.
    pub async fn refresh(&self, client_id: &str, token: &str) -> Result<Uuid, ClientError> {
        let msg = Message::new(
            MessageType::Connect,
            Payload::Connect(signal_manager_protocol::ConnectPayload {
                client_id: client_id.to_owned(),
                auth_token: token.to_owned(),
            }),
        );
        self.send_frame(msg.encode(self.codec)?).await?;
        Ok(msg.message_id)
    }

    /// Sends an already encoded frame.
    pub async fn send_frame(&self, frame: Bytes) -> Result<(), ClientError> {
        self.commands
            .send(Command::Send(frame))
            .await
            .map_err(|_| ClientError::Stopped)
    }

    /// The next event; `None` once the session is over for good.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Leaves with DISCONNECT and closes.
    pub async fn close(self) {
        let _ = self.commands.send(Command::Close).await;
    }
}

fn heartbeat_of(ack: &ConnectAckPayload) -> Duration {
    Duration::from_millis(u64::from(ack.heartbeat_interval_ms.max(100)))
}

struct Task {
    options: ConnectOptions,
    connection: Connection,
    heartbeat: Duration,
    /// The latest CONNECT_ACK's resume token (single-use; never logged).
    resume_token: Option<String>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
}

impl Task {
    async fn run(mut self) {
        loop {
            let (reason, close_code) = self.serve().await;
            let reason_code = reason.clone().unwrap_or_default();
            let _ = self
                .events
                .send(Event::Disconnected {
                    reason: reason.clone(),
                    close_code,
                })
                .await;
            let final_reasons = ["CLIENT_LEFT", "REPLACED", "POLICY", "LOCAL_CLOSE", "KICKED"];
            // These end the session for good: a reconnect starts a new one.
            let not_resumable = ["TOKEN_EXPIRED", "SLOW_CONSUMER"];
            if not_resumable.contains(&reason_code.as_str()) {
                self.resume_token = None;
            }
            let Some(tokens) = self.options.reconnect.clone() else {
                return;
            };
            if final_reasons.contains(&reason_code.as_str()) {
                return;
            }
            match self.reconnect(&tokens).await {
                Some(ack) => {
                    self.heartbeat = heartbeat_of(&ack);
                    let _ = self.events.send(Event::Reconnected(ack)).await;
                }
                None => return,
            }
        }
    }

    async fn reconnect(&mut self, tokens: &crate::TokenSource) -> Option<ConnectAckPayload> {
        let mut backoff = Duration::from_millis(100);
        for _ in 0..30 {
            // Full jitter: a random fraction of the current backoff.
            let jitter = (Uuid::new_v4().as_u128() % 1000) as u32;
            tokio::time::sleep(backoff * jitter / 1000).await;
            backoff = (backoff * 2).min(self.options.max_backoff);
            let Ok(mut connection) =
                Connection::open_from(&self.options.url, self.options.local_addr).await
            else {
                continue;
            };
            let token = tokens();
            // Offer the session's resume token: the node resumes the
            // session (held signals follow the ACK) or starts a new one.
            if let Ok(ack) = connection
                .authenticate_resuming(
                    &self.options.client_id,
                    &token,
                    self.resume_token.as_deref(),
                    self.options.codec,
                )
                .await
            {
                self.resume_token = ack.resume_token.clone();
                self.connection = connection;
                return Some(ack);
            }
        }
        None
    }

    /// Serves one connection; returns the DISCONNECT reason and close code.
    async fn serve(&mut self) -> (Option<String>, Option<u16>) {
        let mut reason = None;
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Send(frame)) => {
                        if self.connection.feed_bytes(frame).await.is_err() {
                            return (reason, None);
                        }
                        // Coalesce whatever else is queued into one flush.
                        while let Ok(Command::Send(frame)) = self.commands.try_recv() {
                            if self.connection.feed_bytes(frame).await.is_err() {
                                return (reason, None);
                            }
                        }
                        if self.connection.flush().await.is_err() {
                            return (reason, None);
                        }
                    }
                    Some(Command::Close) | None => {
                        let bye = encode_raw(MessageType::Disconnect, Uuid::new_v4(), PayloadType::Binary, &[]);
                        if let Ok(bye) = bye {
                            let _ = self.connection.send_bytes(bye).await;
                        }
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            while let Ok(Incoming::Message(_)) = self.connection.recv().await {}
                        }).await;
                        return (Some("LOCAL_CLOSE".into()), None);
                    }
                },
                incoming = self.connection.recv() => match incoming {
                    Ok(Incoming::Message(m)) => {
                        if let Some(r) = self.on_message(m).await {
                            reason = Some(r);
                        }
                    }
                    Ok(Incoming::Invalid(_)) => {}
                    Ok(Incoming::Closed(code, _)) => return (reason, code),
                    Err(_) => return (reason, None),
                },
                _ = heartbeat.tick() => {
                    let ping = encode_raw(MessageType::Heartbeat, Uuid::new_v4(), PayloadType::Binary, &[]);
                    if let Ok(ping) = ping {
                        if self.connection.send_bytes(ping).await.is_err() {
                            return (reason, None);
                        }
                    }
                }
            }
        }
    }

    /// Turns a message into an event; returns a DISCONNECT reason.
    async fn on_message(&mut self, message: Message) -> Option<String> {
        let event = match message.payload {
            Payload::SignalOffer(s) | Payload::SignalAnswer(s) | Payload::SignalIceCandidate(s) => {
                Event::Signal(IncomingSignal {
                    kind: message.message_type,
                    message_id: message.message_id,
                    source: message.source_client_id.unwrap_or_default(),
                    data: s.signal_data,
                })
            }
            Payload::Error(e) => Event::Error {
                message_id: message.message_id,
                code: e.code,
                message: e.message,
            },
            Payload::ConnectAck(ack) => {
                // A refresh's ACK carries a new resume token; the old one
                // stopped working.
                if ack.resume_token.is_some() {
                    self.resume_token = ack.resume_token;
                }
                Event::Refreshed
            }
            Payload::Disconnect(d) => return Some(d.reason),
            _ => return None,
        };
        let _ = self.events.send(event).await;
        None
    }
}
