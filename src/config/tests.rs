use std::io::Write;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

const ORIGINAL_README_TOML: &str = r#"
[server]
host = "127.0.0.1"
port = 8080
max_connections = 10000
heartbeat_interval = 30

[firestore]
project_id = "your-project-id"
credentials_path = null

[auth]
token_secret = "your-secret-key"
token_expiry = 3600

[logging]
level = "info"
format = "json"
"#;

#[test]
fn defaults_need_no_source() {
    let loaded = load(&Sources::default()).unwrap();
    let s = loaded.settings;
    assert_eq!(s.server.port, 8080);
    assert_eq!(s.server.host, "127.0.0.1");
    assert_eq!(s.admin.port, 9090);
    assert!(s.cluster.redis_url.is_none());
    assert_eq!(s.presence_ttl().as_secs(), 90);
    assert!(loaded.warnings.is_empty());
}

#[test]
fn original_readme_toml_loads_with_warnings() {
    let f = file(ORIGINAL_README_TOML);
    let loaded = load(&Sources {
        file: Some(f.path().to_owned()),
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(loaded.settings.server.max_connections, 10000);
    assert_eq!(
        loaded.settings.auth.token_secret.as_ref().unwrap().expose(),
        "your-secret-key"
    );
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert!(loaded.warnings.iter().any(|w| w.contains("[firestore]")));
    assert!(loaded.warnings.iter().any(|w| w.contains("null")));
}

#[test]
fn precedence_is_defaults_file_env_flags() {
    let f = file("[server]\nport = 7000\nmax_connections = 5\nheartbeat_interval = 7\n");
    let sources = Sources {
        file: Some(f.path().to_owned()),
        env: env(&[
            ("SIGNAL_MANAGER_SERVER_MAX_CONNECTIONS", "6"),
            ("SIGNAL_MANAGER_SERVER_PORT", "7001"),
            ("SIGNAL_MANAGER_AUTH_TOKEN_SECRET", "s3cret"),
        ]),
        flags: vec![("server.port", "7002".into(), "--port")],
        ..Sources::default()
    };
    let s = load(&sources).unwrap().settings;
    assert_eq!(s.server.heartbeat_interval, 7, "file over default");
    assert_eq!(s.server.max_connections, 6, "env over file");
    assert_eq!(s.server.port, 7002, "flag over env");
    assert_eq!(s.auth.token_secret.unwrap().expose(), "s3cret");
}

#[test]
fn unknown_env_vars_warn_once_by_name_only() {
    let sources = Sources {
        env: env(&[
            ("SIGNAL_MANAGER_SERVICE_HOST", "10.0.0.1"),
            ("SIGNAL_MANAGER_PORT", "tcp://10.0.0.1:8080"),
            ("SIGNAL_MANAGER_AUTH_TOKEN_SECRTE", "hunter2"),
            ("OTHER", "x"),
        ]),
        ..Sources::default()
    };
    let loaded = load(&sources).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    let w = &loaded.warnings[0];
    assert!(w.contains("SIGNAL_MANAGER_SERVICE_HOST") && w.contains("SIGNAL_MANAGER_PORT"));
    assert!(!w.contains("hunter2") && !w.contains("10.0.0.1"));
}

#[test]
fn unknown_file_key_names_key_and_file() {
    let f = file("[server]\nprot = 8080\n");
    let err = load(&Sources {
        file: Some(f.path().to_owned()),
        ..Sources::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("server.prot"), "{err}");
    assert!(err.contains(&f.path().display().to_string()), "{err}");
}

#[test]
fn wrong_type_names_key_and_source_without_value() {
    let err = load(&Sources {
        env: env(&[("SIGNAL_MANAGER_SERVER_PORT", "eighty")]),
        ..Sources::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("server.port"), "{err}");
    assert!(err.contains("SIGNAL_MANAGER_SERVER_PORT"), "{err}");
    assert!(!err.contains("eighty"), "{err}");

    let f = file("[auth]\ntoken_secret = 12345\n[server]\nport = \"x\"\n");
    let err = load(&Sources {
        file: Some(f.path().to_owned()),
        ..Sources::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("server.port"), "{err}");
    assert!(!err.contains("12345"), "{err}");
}

#[test]
fn impossible_values_are_refused() {
    for (var, key) in [
        ("SIGNAL_MANAGER_SERVER_PORT", "server.port"),
        (
            "SIGNAL_MANAGER_SERVER_HEARTBEAT_INTERVAL",
            "server.heartbeat_interval",
        ),
        (
            "SIGNAL_MANAGER_SERVER_MAX_CONNECTIONS",
            "server.max_connections",
        ),
    ] {
        let err = load(&Sources {
            env: env(&[(var, "0")]),
            ..Sources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(key) && err.contains(var), "{err}");
    }
    let err = load(&Sources {
        flags: vec![("telemetry.sample_ratio", "1.5".into(), "--sample-ratio")],
        ..Sources::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("telemetry.sample_ratio"), "{err}");
}

#[test]
fn parse_errors_never_echo_the_line() {
    let f = file("[auth]\ntoken_secret = \"topsecret\n");
    let err = load(&Sources {
        file: Some(f.path().to_owned()),
        ..Sources::default()
    })
    .unwrap_err()
    .to_string();
    assert!(!err.contains("topsecret"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn missing_explicit_file_is_an_error() {
    let err = load(&Sources {
        file: Some("/nonexistent/sm.toml".into()),
        ..Sources::default()
    });
    assert!(matches!(err, Err(ConfigError::Read { .. })));
}

#[test]
fn every_listed_key_is_accepted_from_the_environment() {
    for (section, keys) in KEYS {
        for key in *keys {
            let value = match (*section, *key) {
                ("server", "host") | ("admin", "host") => "127.0.0.1",
                ("logging", "format") => "pretty",
                ("logging", "level") => "debug",
                ("server", "outbound_queue_bytes") => "1048576",
                ("telemetry", "sample_ratio") => "0.5",
                ("cluster", "node_id") | ("cluster", "key_prefix") => "n1",
                ("auth", "token_expiry" | "leeway" | "jwks_refresh")
                | ("cluster", "presence_ttl") => "3",
                ("auth", "require_peers_claim") => "true",
                ("auth", "jwks_url") => "https://issuer.example/.well-known/jwks.json",
                ("turn", "urls") => "",
                ("turn", "stun_urls") => "stun:stun.example:3478",
                ("turn", "secret") | ("admin", "api_token") => "x",
                ("cluster", "redis_url") => "redis://x",
                ("cluster", "redis_mode") => "standalone",
                ("cluster", "redis_tls_insecure") => "true",
                ("cluster", "redis_tls_ca_path" | "redis_tls_cert_path" | "redis_tls_key_path") => {
                    "Cargo.toml"
                }
                ("auth", _) | ("telemetry", _) => "x",
                _ => "3",
            };
            let var = format!(
                "SIGNAL_MANAGER_{}_{}",
                section.to_uppercase(),
                key.to_uppercase()
            );
            // The client certificate and its key only come as a pair.
            let mut vars = vec![(var.as_str(), value)];
            match *key {
                "redis_tls_cert_path" => {
                    vars.push(("SIGNAL_MANAGER_CLUSTER_REDIS_TLS_KEY_PATH", value));
                }
                "redis_tls_key_path" => {
                    vars.push(("SIGNAL_MANAGER_CLUSTER_REDIS_TLS_CERT_PATH", value));
                }
                _ => {}
            }
            let loaded = load(&Sources {
                env: env(&vars),
                ..Sources::default()
            });
            let loaded = loaded.unwrap_or_else(|e| panic!("{var}: {e}"));
            assert!(loaded.warnings.is_empty(), "{var}: {:?}", loaded.warnings);
        }
    }
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let s = load(&Sources {
        env: env(&[
            ("SIGNAL_MANAGER_AUTH_TOKEN_SECRET", "hunter2"),
            (
                "SIGNAL_MANAGER_CLUSTER_REDIS_URL",
                "redis://:pw123@host:6379",
            ),
        ]),
        ..Sources::default()
    })
    .unwrap()
    .settings;
    let debug = format!("{s:?}");
    assert!(!debug.contains("hunter2") && !debug.contains("pw123"));
}

#[test]
fn lists_come_from_toml_arrays_and_comma_separated_variables() {
    let f = file("[turn]\nurls = [\"turn:a:3478\", \"turns:b:5349\"]\nsecret = \"s3cr3t-turn\"\n");
    let from_file = load(&Sources {
        file: Some(f.path().to_owned()),
        ..Sources::default()
    })
    .unwrap()
    .settings;
    let from_env = load(&Sources {
        env: env(&[
            ("SIGNAL_MANAGER_TURN_URLS", "turn:a:3478,turns:b:5349"),
            ("SIGNAL_MANAGER_TURN_SECRET", "s3cr3t-turn"),
            ("SIGNAL_MANAGER_TURN_STUN_URLS", "stun:a:3478"),
        ]),
        ..Sources::default()
    })
    .unwrap()
    .settings;
    assert_eq!(from_file.turn.urls, ["turn:a:3478", "turns:b:5349"]);
    assert_eq!(from_env.turn.urls, from_file.turn.urls);
    assert_eq!(from_env.turn.stun_urls, ["stun:a:3478"]);
    assert_eq!(from_env.turn.ttl, 86_400);
    let debug = format!("{from_env:?}");
    assert!(!debug.contains("s3cr3t-turn"), "{debug}");
}

#[test]
fn version_1_1_keys_are_validated() {
    let err = |pairs: &[(&str, &str)]| {
        load(&Sources {
            env: env(pairs),
            ..Sources::default()
        })
        .unwrap_err()
        .to_string()
    };
    let both = err(&[
        ("SIGNAL_MANAGER_AUTH_TOKEN_SECRET", "hunter2"),
        ("SIGNAL_MANAGER_AUTH_JWKS_URL", "https://x/jwks.json"),
    ]);
    assert!(
        both.contains("auth.token_secret") && both.contains("auth.jwks_url"),
        "{both}"
    );
    assert!(!both.contains("hunter2"));
    let no_secret = err(&[("SIGNAL_MANAGER_TURN_URLS", "turn:a:3478")]);
    assert!(no_secret.contains("turn.secret"), "{no_secret}");
    let scheme = err(&[
        ("SIGNAL_MANAGER_TURN_URLS", "http://a"),
        ("SIGNAL_MANAGER_TURN_SECRET", "s"),
    ]);
    assert!(scheme.contains("turn.urls"), "{scheme}");
    assert!(err(&[("SIGNAL_MANAGER_TURN_TTL", "0")]).contains("turn.ttl"));
    assert!(err(&[("SIGNAL_MANAGER_AUTH_JWKS_REFRESH", "0")]).contains("auth.jwks_refresh"));
    let defaults = load(&Sources::default()).unwrap().settings;
    assert_eq!(defaults.auth.peers_claim, "peers");
    assert!(!defaults.auth.require_peers_claim);
    assert_eq!(defaults.auth.jwks_refresh, 300);
    assert!(defaults.admin.api_token.is_none());
}
