//! Opening many authenticated connections: client ids, HS256 tokens minted
//! locally, source addresses spread over 127.0.0.x, and holding an idle
//! connection alive with heartbeats.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use uuid::Uuid;

use super::Common;
use signal_manager_client::{ClientError, Connection, Incoming};
use signal_manager_protocol::{encode_raw, Codec, ConnectAckPayload, MessageType, PayloadType};

/// Tokens minted here live this long (longer than any bounded run).
const TOKEN_TTL: Duration = Duration::from_secs(4 * 3600);

/// The development pairs a node without a secret accepts on loopback
/// (PROTOCOL.md, "Authentication").
const DEV_TOKENS: [(&str, &str); 2] = [
    ("test_client_1", "test_token_1"),
    ("test_client_2", "test_token_2"),
];

/// The claims of a minted token: the node checks `sub` and `exp`.
#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    iat: u64,
}

/// An HS256 token for `client_id`, as the node's `token` subcommand mints.
fn mint(secret: &str, client_id: &str, ttl: Duration) -> Result<String, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        sub: client_id,
        exp: now.saturating_add(ttl.as_secs()),
        iat: now,
    };
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
        .map_err(|e| format!("cannot mint a token: {e}"))
}

/// How a fleet of clients authenticates.
pub struct Fleet {
    urls: Vec<String>,
    sources: Common,
    prefix: String,
    secret: Option<String>,
    /// The session codec of every client.
    pub codec: Codec,
}

/// Timings of one connection's set-up.
#[derive(Clone, Copy, Debug)]
pub struct Opened {
    /// TCP connect plus the WebSocket handshake.
    pub handshake: Duration,
    /// CONNECT sent until CONNECT_ACK received.
    pub connect_ack: Duration,
}

impl Fleet {
    /// A fleet for `clients` clients; without a secret only the two
    /// development ids exist, so more clients need one.
    pub fn new(common: &Common, clients: usize) -> Result<Fleet, String> {
        let secret = common.secret();
        if secret.is_none() && clients > DEV_TOKENS.len() {
            return Err(format!(
                "{clients} clients need --secret (or SIGNAL_MANAGER_AUTH_TOKEN_SECRET): without one only the {} development ids exist",
                DEV_TOKENS.len()
            ));
        }
        Ok(Fleet {
            urls: common.urls.clone(),
            sources: common.clone(),
            prefix: common.id_prefix(),
            secret,
            codec: common.codec.into(),
        })
    }

    /// The number of node URLs.
    pub fn nodes(&self) -> usize {
        self.urls.len()
    }

    /// The URL of node `n` (modulo the node count).
    pub fn url(&self, n: usize) -> &str {
        &self.urls[n % self.urls.len()]
    }

    /// Client `i`'s id.
    pub fn client_id(&self, i: usize) -> String {
        match self.secret {
            Some(_) => format!("{}{i}", self.prefix),
            None => DEV_TOKENS[i % DEV_TOKENS.len()].0.to_owned(),
        }
    }

    /// A token for client `i`.
    pub fn token(&self, i: usize) -> Result<String, String> {
        match &self.secret {
            Some(secret) => mint(secret, &self.client_id(i), TOKEN_TTL),
            None => Ok(DEV_TOKENS[i % DEV_TOKENS.len()].1.to_owned()),
        }
    }

    /// Tokens for clients `0..count`, minted before any measurement.
    pub fn tokens(&self, count: usize) -> Result<Vec<String>, String> {
        (0..count).map(|i| self.token(i)).collect()
    }

    /// Opens client `i` on node `node` with `token` and authenticates.
    pub async fn open(
        &self,
        i: usize,
        node: usize,
        token: &str,
    ) -> Result<(Connection, ConnectAckPayload, Opened), ClientError> {
        let started = Instant::now();
        let mut connection =
            Connection::open_from(self.url(node), Some(self.sources.source(i))).await?;
        let handshake = started.elapsed();
        let sent = Instant::now();
        let ack = connection
            .authenticate(&self.client_id(i), token, self.codec)
            .await?;
        let opened = Opened {
            handshake,
            connect_ack: sent.elapsed(),
        };
        Ok((connection, ack, opened))
    }
}

/// A HEARTBEAT frame with an empty binary payload.
pub fn heartbeat() -> Bytes {
    // An empty payload is far below the frame limit: encoding cannot fail.
    encode_raw(
        MessageType::Heartbeat,
        Uuid::new_v4(),
        PayloadType::Binary,
        &[],
    )
    .unwrap_or_default()
}

/// The server's heartbeat interval from a CONNECT_ACK (at least 100 ms).
pub fn heartbeat_interval(ack: &ConnectAckPayload) -> Duration {
    Duration::from_millis(u64::from(ack.heartbeat_interval_ms.max(100)))
}

/// Why a held connection stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldEnd {
    /// `stop` fired: the connection is handed back, still open.
    Stopped,
    /// The server closed it (DISCONNECT reason if one came, close code).
    Closed(Option<String>, Option<u16>),
    /// The socket broke.
    Broken(String),
}

/// Keeps a connection alive with heartbeats, reading (and dropping) what the
/// server sends, until `stop` turns true or the connection ends.
pub async fn hold(
    connection: &mut Connection,
    interval: Duration,
    stop: &mut watch::Receiver<bool>,
) -> HoldEnd {
    let mut reason = None;
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        if *stop.borrow() {
            return HoldEnd::Stopped;
        }
        // Cancel-safe: reading keeps partial frames in the stream, the
        // interval and the watch are level-triggered.
        tokio::select! {
            incoming = connection.recv() => match incoming {
                Ok(Incoming::Message(m)) => {
                    if let signal_manager_protocol::Payload::Disconnect(d) = m.payload {
                        reason = Some(d.reason);
                    }
                }
                Ok(Incoming::Invalid(_)) => {}
                Ok(Incoming::Closed(code, _)) => return HoldEnd::Closed(reason, code),
                Err(e) => return HoldEnd::Broken(error_kind(&e)),
            },
            _ = tick.tick() => {
                if let Err(e) = connection.send_bytes(heartbeat()).await {
                    return HoldEnd::Broken(error_kind(&e));
                }
            }
            _ = stop.changed() => {}
        }
    }
}

/// A short, bounded label for a client error (for error counts).
pub fn error_kind(error: &ClientError) -> String {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match error {
        ClientError::Refused { code, .. } => code.clone(),
        ClientError::Closed(code) => format!("closed_{}", code.unwrap_or(0)),
        ClientError::Timeout => "timeout".into(),
        ClientError::Stopped => "stopped".into(),
        ClientError::Protocol(_) => "protocol".into(),
        ClientError::Encode(_) => "encode".into(),
        ClientError::WebSocket(WsError::Io(io)) => format!("io_{:?}", io.kind()),
        ClientError::WebSocket(WsError::Http(r)) => format!("http_{}", r.status().as_u16()),
        ClientError::WebSocket(_) => "websocket".into(),
    }
}

/// Counts of error labels.
pub type ErrorCounts = BTreeMap<String, u64>;

/// Adds one occurrence of `kind`.
pub fn count(errors: &mut ErrorCounts, kind: impl Into<String>) {
    *errors.entry(kind.into()).or_default() += 1;
}

/// Merges `more` into `into`.
pub fn merge(into: &mut ErrorCounts, more: ErrorCounts) {
    for (k, v) in more {
        *into.entry(k).or_default() += v;
    }
}
