//! Logging: a `tracing` subscriber writing JSON or pretty lines, filtered by
//! `RUST_LOG` when set, else `logging.level`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingSettings};

/// Installs the global subscriber; a second call (tests) is a no-op.
///
/// `RUST_LOG` is an environment variable like `SIGNAL_MANAGER_LOGGING_LEVEL`
/// and takes the same place in the precedence: it beats the file, and a
/// `--log-level` flag (`flag_level`) beats it.
pub fn init_logging(settings: &LoggingSettings, flag_level: Option<&str>) {
    let from_env = || {
        std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.is_empty())
            .and_then(|v| EnvFilter::try_new(v).ok())
    };
    let filter = flag_level
        .and_then(|l| EnvFilter::try_new(l).ok())
        .or_else(from_env)
        .or_else(|| EnvFilter::try_new(&settings.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
