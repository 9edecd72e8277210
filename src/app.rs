//! The composition root: chooses the backends once from the settings, builds
//! the node, runs the listeners, and drains on shutdown.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthSetupError, Authenticator};
use crate::bus::{Bus, BusError, MemoryBus};
use crate::config::Settings;
use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::presence::{MemoryPresence, Presence};
use crate::server::{serve_admin, serve_websockets};
use crate::shutdown::Shutdown;

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Token verification could not be set up.
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    /// Development tokens on a non-loopback address.
    #[error(
        "refusing to start: server.host {0} is not a loopback address and none of auth.token_secret, auth.public_key_path, auth.jwks_url is set"
    )]
    InsecureDevelopmentMode(String),
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bus subscription failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The cluster backend could not be set up.
    #[error("cluster backend: {0}")]
    Cluster(String),
}

/// The two listeners of a node.
pub struct Listeners {
    /// WebSocket clients.
    pub websocket: TcpListener,
    /// Admin HTTP.
    pub admin: TcpListener,
}

/// Pending connections the kernel may queue for the WebSocket listener
/// (capped by `net.core.somaxconn`): a reconnect storm after a node restart
/// must not overflow a short accept queue, or clients wait out SYN retries.
const ACCEPT_BACKLOG: u32 = 65_535;

/// Binds the WebSocket and admin listeners from the settings.
pub async fn bind(settings: &Settings) -> Result<Listeners, AppError> {
    let ws = format!("{}:{}", settings.server.host, settings.server.port);
    let admin = format!("{}:{}", settings.admin.host, settings.admin.port);
    Ok(Listeners {
        websocket: listen(ws, ACCEPT_BACKLOG).await?,
        admin: listen(admin, 128).await?,
    })
}

async fn listen(address: String, backlog: u32) -> Result<TcpListener, AppError> {
    let fail = |source| AppError::Bind {
        address: address.clone(),
        source,
    };
    let addr = tokio::net::lookup_host(&address)
        .await
        .map_err(fail)?
        .next()
        .ok_or_else(|| fail(std::io::Error::other("no address")))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(fail)?;
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(addr).map_err(fail)?;
    socket.listen(backlog).map_err(fail)
}

/// The verifier, refusing development mode off loopback.
pub fn authenticator(settings: &Settings) -> Result<Authenticator, AppError> {
    let auth = Authenticator::from_settings(&settings.auth)?;
    if auth.is_development() {
        if !settings.listens_on_loopback() {
            return Err(AppError::InsecureDevelopmentMode(
                settings.server.host.clone(),
            ));
        }
        tracing::warn!(
            "development mode: no auth.token_secret, auth.public_key_path or auth.jwks_url; accepting the static test tokens on loopback only"
        );
    }
    Ok(auth)
}

/// This node's id from the settings, or a generated one.
pub fn node_id(settings: &Settings) -> NodeId {
    settings
        .cluster
        .node_id
        .as_deref()
        .map_or_else(NodeId::generate, NodeId::new)
}

/// A node on in-memory backends (shared with other nodes when the same
/// `presence` and `bus` are passed to each).
pub fn memory_node(
    settings: Settings,
    presence: MemoryPresence,
    bus: MemoryBus,
) -> Result<Arc<Node>, AppError> {
    let auth = authenticator(&settings)?;
    let id = node_id(&settings);
    Ok(Arc::new(Node::new(
        id,
        settings,
        auth,
        Presence::Memory(presence),
        Bus::Memory(bus),
        Arc::new(Metrics::new()),
    )))
}

/// Builds the node the settings ask for: memory backends without
/// `cluster.redis_url`, Redis backends with it.
pub async fn build_node(settings: Settings) -> Result<Arc<Node>, AppError> {
    build_node_with(settings, Arc::new(Metrics::new())).await
}

/// Like [`build_node`], registering into `metrics` (created before the node
/// so telemetry can count into it too).
pub async fn build_node_with(
    settings: Settings,
    metrics: Arc<Metrics>,
) -> Result<Arc<Node>, AppError> {
    let ttl = settings.presence_ttl();
    let auth = authenticator(&settings)?;
    let id = node_id(&settings);
    if settings.cluster.redis_url.is_none() {
        return Ok(Arc::new(Node::new(
            id,
            settings,
            auth,
            Presence::Memory(MemoryPresence::new(ttl, ttl)),
            Bus::Memory(MemoryBus::default()),
            metrics,
        )));
    }
    let (presence, bus) = crate::redis_conn::redis_backends(&settings, Arc::clone(&metrics))
        .await
        .map_err(|e| AppError::Cluster(e.to_string()))?;
    tracing::info!(
        node_id = %id,
        prefix = %settings.cluster.key_prefix,
        mode = ?settings.cluster.redis_mode,
        "cluster mode: Redis presence and bus"
    );
    Ok(Arc::new(Node::new(
        id, settings, auth, presence, bus, metrics,
    )))
}

/// Runs a node until `shutdown` fires, then drains: readiness 503, no new
/// sockets, DISCONNECT SERVER_SHUTDOWN to every session, wait for every
/// connection task up to `server.drain_timeout`, remove the node's records.
pub async fn run_node(
    node: Arc<Node>,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), AppError> {
    let background = node.start().await?;
    let key_refresh = node.auth().start_key_refresh(node.metrics());
    let admin = tokio::spawn(serve_admin(listeners.admin, Arc::clone(&node)));
    tracing::info!(
        node_id = %node.id(),
        websocket = %listeners.websocket.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "node started"
    );
    let connections = TaskTracker::new();
    let mut wait = shutdown.clone();
    let accept = tokio::spawn(serve_websockets(
        listeners.websocket,
        Arc::clone(&node),
        shutdown,
        connections.clone(),
    ));
    wait.wait().await;
    node.start_draining();
    let _ = accept.await;
    tracing::info!(
        sessions = node.session_count(),
        connections = connections.len(),
        "draining"
    );
    connections.close();
    let deadline = tokio::time::Instant::now() + node.settings().server.drain_timeout();
    if tokio::time::timeout_at(deadline, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "drain deadline passed with connections still open"
        );
    }
    // In a cluster, resumable sessions stay until they resume on another
    // node (their held signals handed over) or the deadline; what is left
    // is answered. A single node has nowhere to hand them over.
    if node.is_clustered()
        && tokio::time::timeout_at(deadline, node.all_resumed())
            .await
            .is_err()
    {
        tracing::info!(
            sessions = node.parked_count(),
            "drain deadline: answering the signals held for sessions that did not resume"
        );
    }
    node.end_all_parked().await;
    // Sessions handed over are named here by presence until their new
    // nodes write their records; leaving earlier would make them look
    // offline for a moment.
    if tokio::time::timeout_at(deadline, node.all_adopted())
        .await
        .is_err()
    {
        tracing::info!("drain deadline: leaving before every handed-over session was taken");
    }
    node.leave_bus().await;
    node.flush_confirmations().await;
    node.leave_cluster().await;
    drop(background);
    if let Some(task) = key_refresh {
        task.abort();
    }
    admin.abort();
    tracing::info!("drained; exiting");
    Ok(())
}
