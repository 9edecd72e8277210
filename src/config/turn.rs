//! `[turn]`: the STUN and TURN servers a node hands to its clients in
//! CONNECT_ACK, and the shared secret for TURN REST API credentials. The
//! credentials themselves are made in `crate::turn`.

use serde::Deserialize;

use super::list::string_list;
use super::Secret;

/// `[turn]`: ICE servers for clients.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnSettings {
    /// TURN URLs handed out with time-limited credentials.
    #[serde(deserialize_with = "string_list")]
    pub urls: Vec<String>,
    /// STUN URLs handed out without credentials.
    #[serde(deserialize_with = "string_list")]
    pub stun_urls: Vec<String>,
    /// The TURN server's shared secret (coturn `static-auth-secret`).
    pub secret: Option<Secret>,
    /// Seconds the credentials stay valid.
    pub ttl: u64,
}

impl Default for TurnSettings {
    fn default() -> Self {
        TurnSettings {
            urls: Vec::new(),
            stun_urls: Vec::new(),
            secret: None,
            ttl: 86_400,
        }
    }
}

impl TurnSettings {
    /// Checks the section; returns the offending key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.ttl == 0 {
            return Err(("turn.ttl", "must be greater than 0".into()));
        }
        if !self.urls.is_empty() && self.secret.is_none() {
            return Err((
                "turn.secret",
                "must be set when turn.urls is (TURN credentials are derived from it)".into(),
            ));
        }
        let schemes = [
            ("turn.urls", &self.urls, &["turn:", "turns:"][..]),
            ("turn.stun_urls", &self.stun_urls, &["stun:", "stuns:"][..]),
        ];
        for (key, urls, allowed) in schemes {
            if let Some(bad) = urls
                .iter()
                .position(|u| !allowed.iter().any(|p| u.starts_with(p)))
            {
                return Err((
                    key,
                    format!("entry {} must start with {}", bad + 1, allowed.join(" or ")),
                ));
            }
        }
        Ok(())
    }
}
