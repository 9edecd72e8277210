//! Reading and merging the configuration sources, with errors that name the
//! key and the source it came from and never print a value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, FileFormat};

use super::keys::{is_known, split_env_name};
use super::Settings;

/// Prefix of the environment variables a node reads.
pub const ENV_PREFIX: &str = "SIGNAL_MANAGER_";

/// What to read: the inputs of [`load`], so tests need no global state.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// `--config PATH`: must exist when given.
    pub file: Option<PathBuf>,
    /// Read when `file` is `None` and it exists (normally `./config.toml`).
    pub default_file: Option<PathBuf>,
    /// Environment variables (all of them; only the prefixed ones are used).
    pub env: Vec<(String, String)>,
    /// Command-line flags as `(key, value, flag name)`.
    pub flags: Vec<(&'static str, String, &'static str)>,
}

impl Sources {
    /// The process's real environment and `./config.toml`.
    pub fn from_process(
        file: Option<PathBuf>,
        flags: Vec<(&'static str, String, &'static str)>,
    ) -> Sources {
        Sources {
            file,
            default_file: Some(PathBuf::from("config.toml")),
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            flags,
        }
    }
}

/// The merged, validated settings and the warnings found on the way (to log
/// once logging is set up).
#[derive(Debug)]
pub struct Loaded {
    /// The settings.
    pub settings: Settings,
    /// Non-fatal findings: obsolete sections, `null` values, unknown variables.
    pub warnings: Vec<String>,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("configuration file {path} is not valid TOML at line {line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// The parser's message (without the source line, which may hold a secret).
        reason: String,
    },
    /// A key no node understands.
    #[error("unknown configuration key `{key}` in {origin}")]
    UnknownKey {
        /// `section.key`.
        key: String,
        /// Where it came from.
        origin: String,
    },
    /// A value of the wrong type or out of range.
    #[error("invalid value for `{key}` from {origin}: {reason}")]
    Invalid {
        /// `section.key`.
        key: String,
        /// Where it came from.
        origin: String,
        /// What is expected.
        reason: String,
    },
}

/// Merges the sources per CONFIG.md and validates the result.
pub fn load(sources: &Sources) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    let mut origins: HashMap<String, String> = HashMap::new();
    let mut builder = Config::builder();

    let file = match (&sources.file, &sources.default_file) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(path)) if path.exists() => Some(path.clone()),
        _ => None,
    };
    if let Some(path) = &file {
        let text = read_file(path, &mut warnings)?;
        let origin = format!("file {}", path.display());
        let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            line: e.span().map_or(0, |s| line_of(&text, s.start)),
            reason: e.message().to_owned(),
        })?;
        check_file_keys(&table, &origin, &mut origins)?;
        builder = builder.add_source(config::File::from_str(&text, FileFormat::Toml));
    }

    let mut unknown_env = Vec::new();
    for (name, value) in &sources.env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        match split_env_name(rest) {
            Some((section, key)) => {
                let full = format!("{section}.{key}");
                origins.insert(full.clone(), format!("environment variable {name}"));
                builder = set(builder, &full, value)?;
            }
            None => unknown_env.push(name.clone()),
        }
    }
    if !unknown_env.is_empty() {
        unknown_env.sort();
        warnings.push(format!(
            "ignoring environment variables that match no configuration key: {}",
            unknown_env.join(", ")
        ));
    }

    for (key, value, flag) in &sources.flags {
        origins.insert((*key).to_owned(), format!("flag {flag}"));
        builder = set(builder, key, value)?;
    }

    let merged = builder.build().map_err(|e| invalid(e, &origins))?;
    let mut settings: Settings = merged.try_deserialize().map_err(|e| invalid(e, &origins))?;
    normalize(&mut settings);
    settings
        .validate()
        .map_err(|(key, reason)| ConfigError::Invalid {
            key: key.to_owned(),
            origin: origins
                .get(key)
                .cloned()
                .unwrap_or_else(|| "defaults".into()),
            reason,
        })?;
    if settings.legacy_firestore.is_some() {
        warnings.push("the [firestore] section is obsolete and ignored".into());
    }
    Ok(Loaded {
        settings,
        warnings,
        file,
    })
}

fn set(
    builder: config::ConfigBuilder<config::builder::DefaultState>,
    key: &str,
    value: &str,
) -> Result<config::ConfigBuilder<config::builder::DefaultState>, ConfigError> {
    builder
        .set_override(key, value)
        .map_err(|_| ConfigError::UnknownKey {
            key: key.to_owned(),
            origin: "overrides".into(),
        })
}

/// Reads the file and turns the original README's `key = null` lines into
/// "unset" (TOML has no null), with a warning each.
fn read_file(path: &Path, warnings: &mut Vec<String>) -> Result<String, ConfigError> {
    let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut section = String::new();
    let mut out = String::with_capacity(raw.len());
    for line in raw.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.split(']').next()) {
            section = name.trim().to_owned();
        }
        if let Some((key, value)) = trimmed.split_once('=') {
            let value = value.split('#').next().unwrap_or("").trim();
            if value == "null" {
                warnings.push(format!(
                    "`{section}.{}` = null in {} is not TOML; treating it as unset",
                    key.trim(),
                    path.display()
                ));
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

fn check_file_keys(
    table: &toml::Table,
    origin: &str,
    origins: &mut HashMap<String, String>,
) -> Result<(), ConfigError> {
    for (section, value) in table {
        if section == "firestore" {
            continue;
        }
        let Some(keys) = value.as_table() else {
            return Err(ConfigError::UnknownKey {
                key: section.clone(),
                origin: origin.to_owned(),
            });
        };
        for key in keys.keys() {
            if !is_known(section, key) {
                return Err(ConfigError::UnknownKey {
                    key: format!("{section}.{key}"),
                    origin: origin.to_owned(),
                });
            }
            origins.insert(format!("{section}.{key}"), origin.to_owned());
        }
    }
    Ok(())
}

fn normalize(settings: &mut Settings) {
    // An empty value means "unset" (CONFIG.md: empty redis_url = single node).
    fn clear<T>(field: &mut Option<T>, empty: impl Fn(&T) -> bool) {
        if field.as_ref().is_some_and(empty) {
            *field = None;
        }
    }
    clear(&mut settings.cluster.redis_url, |s| s.expose().is_empty());
    clear(&mut settings.auth.token_secret, |s| s.expose().is_empty());
    clear(&mut settings.cluster.node_id, String::is_empty);
    clear(&mut settings.auth.issuer, String::is_empty);
    clear(&mut settings.auth.audience, String::is_empty);
    clear(&mut settings.auth.public_key_path, |p| {
        p.as_os_str().is_empty()
    });
    clear(&mut settings.telemetry.otlp_endpoint, String::is_empty);
    clear(&mut settings.auth.jwks_url, String::is_empty);
    clear(&mut settings.admin.api_token, |s| s.expose().is_empty());
    clear(&mut settings.turn.secret, |s| s.expose().is_empty());
    clear(
        &mut settings.cluster.redis_sentinel_master,
        String::is_empty,
    );
    clear(&mut settings.cluster.redis_sentinel_password, |s| {
        s.expose().is_empty()
    });
    for path in [
        &mut settings.cluster.redis_tls_ca_path,
        &mut settings.cluster.redis_tls_cert_path,
        &mut settings.cluster.redis_tls_key_path,
    ] {
        clear(path, |p| p.as_os_str().is_empty());
    }
}

fn invalid(error: config::ConfigError, origins: &HashMap<String, String>) -> ConfigError {
    let (key, reason) = describe(&error);
    let origin = origins
        .get(&key)
        .cloned()
        .unwrap_or_else(|| "the configuration".into());
    ConfigError::Invalid {
        key,
        origin,
        reason,
    }
}

/// Extracts the key and an explanation that never includes the value.
fn describe(error: &config::ConfigError) -> (String, String) {
    match error {
        config::ConfigError::Type { key, expected, .. } => (
            key.clone().unwrap_or_default(),
            format!("expected {expected}"),
        ),
        config::ConfigError::At { error, key, .. } => {
            let (inner_key, reason) = describe(error);
            let key = match (key, inner_key.is_empty()) {
                (Some(k), true) => k.clone(),
                (Some(k), false) if !inner_key.starts_with(k.as_str()) => {
                    format!("{k}.{inner_key}")
                }
                _ => inner_key,
            };
            (key, reason)
        }
        config::ConfigError::Message(m) => (String::new(), strip_value(m)),
        other => (String::new(), strip_value(&other.to_string())),
    }
}

/// serde messages quote the offending value (`invalid value: string "x"`);
/// keep only the part after the value.
fn strip_value(message: &str) -> String {
    match message.find(", expected") {
        Some(i) => message[i + 2..].to_owned(),
        None if message.contains('"') || message.contains('`') => "invalid value".into(),
        None => message.to_owned(),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |t| t.matches('\n').count() + 1)
}
