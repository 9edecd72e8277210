//! Typed settings and where they come from.
//!
//! Precedence, lowest first: built-in defaults, the TOML file (`--config`,
//! else `./config.toml`), `SIGNAL_MANAGER_<SECTION>_<KEY>` environment
//! variables, command-line flags. [`load`] merges them with the `config`
//! crate, names the source of any bad key, and validates values. Secrets are
//! wrapped in [`Secret`] so no `Debug` or error ever prints them.

mod keys;
mod list;
mod redis;
mod settings;
mod sources;
mod turn;

pub use keys::KEYS;
pub use settings::{
    AdminSettings, AuthSettings, ClusterSettings, LogFormat, LoggingSettings, RedisMode, Secret,
    ServerSettings, Settings, TelemetrySettings,
};
pub use sources::{load, ConfigError, Loaded, Sources};
pub use turn::TurnSettings;

#[cfg(test)]
mod tests;
