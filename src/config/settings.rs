//! The typed settings with their defaults, and value validation.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A secret string: deserializes like a string, never prints.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself; call only where it is used, never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// All settings of a node.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `[server]`.
    pub server: ServerSettings,
    /// `[auth]`.
    pub auth: AuthSettings,
    /// `[cluster]`.
    pub cluster: ClusterSettings,
    /// `[admin]`.
    pub admin: AdminSettings,
    /// `[logging]`.
    pub logging: LoggingSettings,
    /// `[telemetry]`.
    pub telemetry: TelemetrySettings,
    /// `[turn]`: ICE servers handed to clients.
    pub turn: super::TurnSettings,
    /// `[firestore]` from the original README: accepted and ignored.
    #[serde(rename = "firestore")]
    pub legacy_firestore: Option<serde::de::IgnoredAny>,
}

/// `[server]`: the WebSocket listener and session limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// WebSocket listen address.
    pub host: String,
    /// WebSocket port.
    pub port: u16,
    /// Above this many open sockets, new ones get SERVER_BUSY.
    pub max_connections: usize,
    /// Seconds; sent to clients in CONNECT_ACK.
    pub heartbeat_interval: u64,
    /// Seconds a new socket has to send CONNECT.
    pub connect_timeout: u64,
    /// Seconds a SIGTERM drain may take.
    pub drain_timeout: u64,
    /// Sustained frames per second per client.
    pub rate_limit_per_second: u32,
    /// Burst above the sustained rate.
    pub rate_limit_burst: u32,
    /// Frames a session's outbound queue holds before SLOW_CONSUMER.
    pub outbound_queue_frames: usize,
    /// Bytes a session's outbound queue holds before SLOW_CONSUMER.
    pub outbound_queue_bytes: usize,
    /// Invalid frames in a row before DISCONNECT POLICY.
    pub max_invalid_frames: u32,
    /// Runtime worker threads; 0 = one per CPU core. One is cheaper per
    /// signal when a node shares a small machine with other processes.
    pub worker_threads: usize,
    /// Seconds a session that lost its socket stays resumable; 0 = off.
    pub resume_window: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            host: "127.0.0.1".into(),
            port: 8080,
            max_connections: 100_000,
            heartbeat_interval: 30,
            connect_timeout: 10,
            drain_timeout: 10,
            rate_limit_per_second: 50,
            rate_limit_burst: 200,
            outbound_queue_frames: 1024,
            outbound_queue_bytes: 1 << 20,
            max_invalid_frames: 100,
            worker_threads: 0,
            resume_window: 30,
        }
    }
}

impl ServerSettings {
    /// How long a session that lost its socket stays resumable.
    pub fn resume_window(&self) -> Duration {
        Duration::from_secs(self.resume_window)
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval)
    }
    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout)
    }
    /// The drain timeout.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout)
    }
}

/// `[auth]`: token verification and minting.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret.
    pub token_secret: Option<Secret>,
    /// PEM public key for RS256 / ES256.
    pub public_key_path: Option<PathBuf>,
    /// Required `iss` when set.
    pub issuer: Option<String>,
    /// Required `aud` when set.
    pub audience: Option<String>,
    /// Lifetime in seconds of tokens minted by the `token` subcommand.
    pub token_expiry: u64,
    /// Seconds of clock skew allowed on `exp`.
    pub leeway: u64,
    /// JWK Set URL; keys are chosen by the token's `kid`.
    pub jwks_url: Option<String>,
    /// Seconds between JWK Set fetches.
    pub jwks_refresh: u64,
    /// Name of the claim listing whom a token may signal.
    pub peers_claim: String,
    /// Refuse tokens without that claim.
    pub require_peers_claim: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            token_secret: None,
            public_key_path: None,
            issuer: None,
            audience: None,
            token_expiry: 3600,
            leeway: 0,
            jwks_url: None,
            jwks_refresh: 300,
            peers_claim: "peers".into(),
            require_peers_claim: false,
        }
    }
}

/// `[cluster]`: the backend that makes nodes one service.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Unset: single node, in-memory backend. Set: Redis cluster mode.
    pub redis_url: Option<Secret>,
    /// Unique per node; default hostname plus a random suffix.
    pub node_id: Option<String>,
    /// Namespace of every Redis key and channel.
    pub key_prefix: String,
    /// Seconds a presence record lives without refresh; default 3 × heartbeat.
    pub presence_ttl: Option<u64>,
    /// Pooled Redis connections for commands (pub/sub has its own).
    pub redis_pool_size: usize,
    /// How `redis_url` is read: one server, Sentinels, or Redis Cluster seeds.
    pub redis_mode: RedisMode,
    /// The master name the Sentinels monitor (`sentinel` mode).
    pub redis_sentinel_master: Option<String>,
    /// Password of the Sentinels themselves, when it differs from the data nodes'.
    pub redis_sentinel_password: Option<Secret>,
    /// PEM CA bundle that verifies Redis's certificate; unset: the system roots.
    pub redis_tls_ca_path: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `redis_tls_key_path`).
    pub redis_tls_cert_path: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub redis_tls_key_path: Option<PathBuf>,
    /// Accept any Redis certificate (warned at start-up).
    pub redis_tls_insecure: bool,
    /// Seconds within which a cross-node signal that no node confirmed is
    /// answered PEER_UNREACHABLE.
    pub delivery_timeout: u64,
}

/// `cluster.redis_mode`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One Redis server (or a managed endpoint that looks like one).
    #[default]
    Standalone,
    /// `redis_url` lists Sentinels; the master is found through them.
    Sentinel,
    /// `redis_url` lists Redis Cluster seed nodes; node channels are sharded.
    Cluster,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            redis_url: None,
            node_id: None,
            key_prefix: "sm".into(),
            presence_ttl: None,
            redis_pool_size: 16,
            redis_mode: RedisMode::Standalone,
            redis_sentinel_master: None,
            redis_sentinel_password: None,
            redis_tls_ca_path: None,
            redis_tls_cert_path: None,
            redis_tls_key_path: None,
            redis_tls_insecure: false,
            delivery_timeout: 2,
        }
    }
}

/// `[admin]`: the HTTP listener for health and metrics.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Listen address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Enables `/v1/clients/...` behind `Authorization: Bearer <token>`.
    pub api_token: Option<Secret>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            host: "127.0.0.1".into(),
            port: 9090,
            api_token: None,
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

/// `[logging]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingSettings {
    /// A level or a `RUST_LOG`-style filter.
    pub level: String,
    /// `json` or `pretty`.
    pub format: LogFormat,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings {
            level: "info".into(),
            format: LogFormat::Json,
        }
    }
}

/// `[telemetry]`: OpenTelemetry traces.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// OTLP/HTTP base URL; the node posts to `<base>/v1/traces`.
    pub otlp_endpoint: Option<String>,
    /// `service.name`.
    pub service_name: String,
    /// Parent-based sampling ratio in `0.0..=1.0`.
    pub sample_ratio: f64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: None,
            service_name: "signal-manager".into(),
            sample_ratio: 1.0,
        }
    }
}

impl Settings {
    /// Checks values that parse but cannot work; returns the offending key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let s = &self.server;
        let positive = [
            ("server.port", u64::from(s.port)),
            ("server.max_connections", s.max_connections as u64),
            ("server.heartbeat_interval", s.heartbeat_interval),
            ("server.connect_timeout", s.connect_timeout),
            (
                "server.rate_limit_per_second",
                u64::from(s.rate_limit_per_second),
            ),
            ("server.rate_limit_burst", u64::from(s.rate_limit_burst)),
            (
                "server.outbound_queue_frames",
                s.outbound_queue_frames as u64,
            ),
            ("server.max_invalid_frames", u64::from(s.max_invalid_frames)),
            ("admin.port", u64::from(self.admin.port)),
            (
                "cluster.redis_pool_size",
                self.cluster.redis_pool_size as u64,
            ),
            ("cluster.delivery_timeout", self.cluster.delivery_timeout),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err((key, "must be greater than 0".into()));
            }
        }
        if s.resume_window > 3600 {
            return Err((
                "server.resume_window",
                "must be at most 3600 seconds".into(),
            ));
        }
        if s.worker_threads > 1024 {
            return Err(("server.worker_threads", "must be at most 1024".into()));
        }
        if s.heartbeat_interval > 86_400 {
            return Err((
                "server.heartbeat_interval",
                "must be at most 86400 seconds".into(),
            ));
        }
        if s.outbound_queue_bytes < crate::protocol::MAX_FRAME_LEN {
            return Err((
                "server.outbound_queue_bytes",
                format!(
                    "must be at least {} (one largest frame)",
                    crate::protocol::MAX_FRAME_LEN
                ),
            ));
        }
        if s.host.parse::<IpAddr>().is_err() && s.host != "localhost" {
            return Err(("server.host", "must be an IP address or localhost".into()));
        }
        if self.admin.host.parse::<IpAddr>().is_err() && self.admin.host != "localhost" {
            return Err(("admin.host", "must be an IP address or localhost".into()));
        }
        if self.cluster.presence_ttl == Some(0) {
            return Err(("cluster.presence_ttl", "must be greater than 0".into()));
        }
        if self.cluster.key_prefix.is_empty() {
            return Err(("cluster.key_prefix", "must not be empty".into()));
        }
        if let Some(id) = &self.cluster.node_id {
            if !crate::protocol::is_valid_client_id(id) {
                return Err((
                    "cluster.node_id",
                    "must be 1 to 128 characters of [A-Za-z0-9._:@-]".into(),
                ));
            }
        }
        self.cluster.validate_redis()?;
        let ratio = self.telemetry.sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err((
                "telemetry.sample_ratio",
                "must be between 0.0 and 1.0".into(),
            ));
        }
        if self.auth.token_expiry == 0 {
            return Err(("auth.token_expiry", "must be greater than 0".into()));
        }
        self.validate_1_1()
    }

    /// The checks of the protocol 1.1 keys (`[turn]`, JWKS, peers claim, admin API).
    fn validate_1_1(&self) -> Result<(), (&'static str, String)> {
        let a = &self.auth;
        let sources = [
            ("auth.token_secret", a.token_secret.is_some()),
            ("auth.public_key_path", a.public_key_path.is_some()),
            ("auth.jwks_url", a.jwks_url.is_some()),
        ];
        let mut set = sources.iter().filter(|(_, on)| *on).map(|(k, _)| *k);
        if let (Some(first), Some(second)) = (set.next(), set.next()) {
            return Err((
                second,
                format!("{first} and {second} are both set; set only one of them"),
            ));
        }
        if let Some(url) = &a.jwks_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(("auth.jwks_url", "must be an http:// or https:// URL".into()));
            }
        }
        if a.jwks_refresh == 0 {
            return Err(("auth.jwks_refresh", "must be greater than 0".into()));
        }
        if a.peers_claim.is_empty() {
            return Err(("auth.peers_claim", "must not be empty".into()));
        }
        self.turn.validate()
    }

    /// How long an unconfirmed cross-node signal waits before its sender is
    /// answered PEER_UNREACHABLE.
    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_secs(self.cluster.delivery_timeout)
    }

    /// How long a presence record lives without refresh.
    pub fn presence_ttl(&self) -> Duration {
        Duration::from_secs(
            self.cluster
                .presence_ttl
                .unwrap_or(self.server.heartbeat_interval.saturating_mul(3)),
        )
    }

    /// Whether the WebSocket listener is bound to a loopback address.
    pub fn listens_on_loopback(&self) -> bool {
        self.server.host == "localhost"
            || self
                .server
                .host
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}
