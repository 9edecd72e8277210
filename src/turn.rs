//! The `ice_servers` of a CONNECT_ACK: the configured STUN URLs as they are,
//! and the TURN URLs with time-limited credentials in the TURN REST API
//! scheme coturn implements (`use-auth-secret` / `static-auth-secret`):
//! username `<expiry>:<client_id>`, credential base64(HMAC-SHA1(secret,
//! username)). This file owns that derivation; the settings live in
//! `config::TurnSettings`, the wire shape in the protocol crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::config::TurnSettings;
use crate::protocol::IceServer;

/// The ICE servers for `client_id` at `now`: a STUN entry when STUN URLs are
/// configured, a TURN entry when TURN URLs and the secret are. Empty without
/// configuration (the common case allocates nothing).
pub fn ice_servers(settings: &TurnSettings, client_id: &str, now: SystemTime) -> Vec<IceServer> {
    let mut servers = Vec::new();
    if !settings.stun_urls.is_empty() {
        servers.push(IceServer {
            urls: settings.stun_urls.clone(),
            username: String::new(),
            credential: String::new(),
        });
    }
    if let (false, Some(secret)) = (settings.urls.is_empty(), &settings.secret) {
        let expiry = now
            .checked_add(Duration::from_secs(settings.ttl))
            .unwrap_or(now)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let username = format!("{expiry}:{client_id}");
        let credential = credential(secret.expose().as_bytes(), &username);
        servers.push(IceServer {
            urls: settings.urls.clone(),
            username,
            credential,
        });
    }
    servers
}

/// base64 (standard alphabet, padded) of HMAC-SHA1 keyed with `secret` over
/// `username`.
pub fn credential(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn rfc_2202_test_vector() {
        // RFC 2202, test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            credential(b"Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    #[test]
    fn stun_only_turn_only_and_both() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut s = TurnSettings::default();
        assert!(ice_servers(&s, "alice", now).is_empty());
        s.stun_urls = vec!["stun:s:3478".into()];
        let stun = ice_servers(&s, "alice", now);
        assert_eq!(stun.len(), 1);
        assert!(stun[0].username.is_empty() && stun[0].credential.is_empty());
        s.urls = vec!["turn:t:3478".into()];
        assert_eq!(ice_servers(&s, "alice", now).len(), 1, "no secret, no TURN");
        s.secret = Some(Secret::new("k"));
        s.ttl = 60;
        let both = ice_servers(&s, "alice", now);
        assert_eq!(both.len(), 2);
        assert_eq!(both[1].urls, ["turn:t:3478"]);
        assert_eq!(both[1].username, "1060:alice");
        assert_eq!(both[1].credential, credential(b"k", "1060:alice"));
    }
}
