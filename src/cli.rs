//! The command line of the `signal-manager-service` binary: parse flags,
//! load configuration, then serve (default) or mint a token. `src/main.rs`
//! only calls [`main`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{self, Sources};
use crate::metrics::Metrics;
use crate::{app, auth, shutdown, telemetry};

/// Horizontally scalable WebRTC signaling: clients connect over WebSocket,
/// authenticate with a JWT and exchange offers, answers and ICE candidates
/// with peers on any node. Without configuration one node runs on
/// ws://127.0.0.1:8080 with an in-memory backend and development tokens.
///
/// Configuration, lowest precedence first: built-in defaults, the TOML file
/// (--config, else ./config.toml), SIGNAL_MANAGER_<SECTION>_<KEY>
/// environment variables, then these flags.
#[derive(Parser, Debug)]
#[command(name = "signal-manager-service", version, about, long_about)]
struct Cli {
    /// TOML configuration file (default: ./config.toml when it exists).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// WebSocket listen address (server.host).
    #[arg(long)]
    host: Option<String>,
    /// WebSocket port (server.port).
    #[arg(long)]
    port: Option<u16>,
    /// Admin HTTP listen address for /healthz, /readyz, /metrics (admin.host).
    #[arg(long)]
    admin_host: Option<String>,
    /// Admin HTTP port (admin.port).
    #[arg(long)]
    admin_port: Option<u16>,
    /// Redis URL: switches the node to cluster mode (cluster.redis_url).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// This node's unique id (cluster.node_id).
    #[arg(long)]
    node_id: Option<String>,
    /// Log level or RUST_LOG-style filter (logging.level).
    #[arg(long)]
    log_level: Option<String>,
    /// Log format: json or pretty (logging.format).
    #[arg(long)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print an HS256 token for a client id, signed with auth.token_secret
    /// (for development and tests).
    Token {
        /// The client id the token authenticates (its `sub` claim).
        #[arg(long)]
        client_id: String,
        /// Lifetime in seconds (default: auth.token_expiry).
        #[arg(long)]
        ttl: Option<u64>,
        /// Whom the token may signal (the auth.peers_claim claim): a client
        /// id, a prefix ending in `*`, or `*`. Repeatable; none = no claim.
        #[arg(long = "peer", value_name = "PATTERN")]
        peers: Vec<String>,
    },
}

impl Cli {
    fn flags(&self) -> Vec<(&'static str, String, &'static str)> {
        let mut flags = Vec::new();
        let mut add = |key, value: Option<String>, flag| {
            if let Some(v) = value {
                flags.push((key, v, flag));
            }
        };
        add("server.host", self.host.clone(), "--host");
        add("server.port", self.port.map(|p| p.to_string()), "--port");
        add("admin.host", self.admin_host.clone(), "--admin-host");
        add(
            "admin.port",
            self.admin_port.map(|p| p.to_string()),
            "--admin-port",
        );
        add("cluster.redis_url", self.redis_url.clone(), "--redis-url");
        add("cluster.node_id", self.node_id.clone(), "--node-id");
        add("logging.level", self.log_level.clone(), "--log-level");
        add("logging.format", self.log_format.clone(), "--log-format");
        flags
    }
}

/// Runs the binary: serve until SIGTERM, or mint a token.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match config::load(&Sources::from_process(cli.config.clone(), cli.flags())) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("signal-manager-service: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Token {
        client_id,
        ttl,
        peers,
    }) = &cli.command
    {
        let ttl = Duration::from_secs(ttl.unwrap_or(loaded.settings.auth.token_expiry));
        if crate::ids::ClientId::new(client_id).is_none() {
            eprintln!("signal-manager-service: invalid client id: 1 to 128 characters of [A-Za-z0-9._:@-]");
            return ExitCode::from(2);
        }
        let claim = serde_json::json!(peers);
        if !peers.is_empty() && auth::PeerPolicy::from_claim(&claim).is_err() {
            eprintln!("signal-manager-service: invalid --peer: a client id, a prefix ending in `*`, or `*`");
            return ExitCode::from(2);
        }
        return match auth::mint_with_peers(&loaded.settings.auth, client_id, ttl, peers) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("signal-manager-service: {error}");
                ExitCode::from(2)
            }
        };
    }
    let mut settings = loaded.settings;
    // Resolve the node id once: logs, traces and the cluster all use it.
    let node_id = app::node_id(&settings);
    settings.cluster.node_id = Some(node_id.as_str().to_owned());
    let metrics = Arc::new(Metrics::new());
    let telemetry = telemetry::init(
        &settings,
        node_id.as_str(),
        cli.log_level.as_deref(),
        &metrics,
    );
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let (workers, workers_from) =
        crate::runtime::worker_threads_here(settings.server.worker_threads);
    tracing::info!(
        workers,
        from = workers_from.as_str(),
        "runtime worker threads"
    );
    metrics.worker_threads.set(workers as i64);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers);
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("signal-manager-service: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        // Refuse bad settings (e.g. development tokens off loopback) before
        // opening any socket.
        let node = app::build_node_with(settings, metrics).await?;
        let listeners = app::bind(node.settings()).await?;
        let (trigger, shutdown) = shutdown::channel();
        tokio::spawn(async move {
            shutdown::os_signal().await;
            trigger.trigger();
        });
        app::run_node(node, listeners, shutdown).await
    });
    drop(runtime);
    // Flush the spans still queued (bounded by the exporter's timeout).
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "node stopped");
            eprintln!("signal-manager-service: {error}");
            ExitCode::FAILURE
        }
    }
}
