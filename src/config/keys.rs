//! The one list of configuration keys, by section. Environment variables and
//! unknown-key detection are derived from it; a test checks it against the
//! typed settings.

/// Every `(section, key)` a node understands.
pub const KEYS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "host",
            "port",
            "max_connections",
            "heartbeat_interval",
            "connect_timeout",
            "drain_timeout",
            "rate_limit_per_second",
            "rate_limit_burst",
            "outbound_queue_frames",
            "outbound_queue_bytes",
            "max_invalid_frames",
            "worker_threads",
            "resume_window",
        ],
    ),
    (
        "auth",
        &[
            "token_secret",
            "public_key_path",
            "issuer",
            "audience",
            "token_expiry",
            "leeway",
            "jwks_url",
            "jwks_refresh",
            "peers_claim",
            "require_peers_claim",
        ],
    ),
    (
        "cluster",
        &[
            "redis_url",
            "node_id",
            "key_prefix",
            "presence_ttl",
            "redis_pool_size",
            "redis_mode",
            "redis_sentinel_master",
            "redis_sentinel_password",
            "redis_tls_ca_path",
            "redis_tls_cert_path",
            "redis_tls_key_path",
            "redis_tls_insecure",
            "delivery_timeout",
        ],
    ),
    ("admin", &["host", "port", "api_token"]),
    ("turn", &["urls", "stun_urls", "secret", "ttl"]),
    ("logging", &["level", "format"]),
    (
        "telemetry",
        &["otlp_endpoint", "service_name", "sample_ratio"],
    ),
];

/// Whether `section.key` is known.
pub fn is_known(section: &str, key: &str) -> bool {
    KEYS.iter()
        .any(|(s, keys)| *s == section && keys.contains(&key))
}

/// Maps `SERVER_MAX_CONNECTIONS` (the part after the prefix) to
/// `("server", "max_connections")`: the first word is the section.
pub fn split_env_name(rest: &str) -> Option<(String, String)> {
    let (section, key) = rest.split_once('_')?;
    let section = section.to_ascii_lowercase();
    let key = key.to_ascii_lowercase();
    is_known(&section, &key).then_some((section, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_split_at_the_first_word() {
        assert_eq!(
            split_env_name("SERVER_MAX_CONNECTIONS"),
            Some(("server".into(), "max_connections".into()))
        );
        assert_eq!(
            split_env_name("AUTH_TOKEN_SECRET"),
            Some(("auth".into(), "token_secret".into()))
        );
        assert_eq!(split_env_name("SERVICE_HOST"), None);
        assert_eq!(split_env_name("PORT"), None);
    }
}
