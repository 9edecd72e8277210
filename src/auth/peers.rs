//! Who a token may signal: the claim named by `auth.peers_claim`, an array
//! of patterns, each an exact client id, a prefix ending in `*`
//! (`room-42:*`), or `*` alone. This file parses the claim once per CONNECT
//! (and refresh) into a [`PeerPolicy`]; the per-signal check is a few string
//! comparisons and never allocates.

use std::sync::Arc;

/// What a token allows as signal targets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PeerPolicy {
    /// No claim (or a `*` in it): any target.
    #[default]
    Any,
    /// Only targets matching one of these.
    Only(Arc<[PeerPattern]>),
}

/// One pattern of the claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerPattern {
    /// Exactly this client id.
    Exact(Box<str>),
    /// Any client id starting with this (the pattern without its `*`).
    Prefix(Box<str>),
}

/// Why a peers claim is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeersClaimError {
    /// Not an array of strings.
    #[error("the peers claim must be an array of strings")]
    NotAnArray,
    /// An entry is empty or has a `*` anywhere but at its end.
    #[error("a peers claim entry must be a client id, a prefix ending in `*`, or `*`")]
    BadPattern,
}

impl PeerPolicy {
    /// Parses the claim's JSON value. An empty array allows no target.
    pub fn from_claim(value: &serde_json::Value) -> Result<PeerPolicy, PeersClaimError> {
        let items = value.as_array().ok_or(PeersClaimError::NotAnArray)?;
        let mut patterns = Vec::with_capacity(items.len());
        for item in items {
            let text = item.as_str().ok_or(PeersClaimError::NotAnArray)?;
            match text.find('*') {
                _ if text == "*" => return Ok(PeerPolicy::Any),
                None if !text.is_empty() => patterns.push(PeerPattern::Exact(text.into())),
                Some(i) if i + 1 == text.len() => {
                    patterns.push(PeerPattern::Prefix(text[..i].into()));
                }
                _ => return Err(PeersClaimError::BadPattern),
            }
        }
        Ok(PeerPolicy::Only(patterns.into()))
    }

    /// Whether a signal to `target` is allowed.
    pub fn allows(&self, target: &str) -> bool {
        match self {
            PeerPolicy::Any => true,
            PeerPolicy::Only(patterns) => patterns.iter().any(|p| match p {
                PeerPattern::Exact(id) => **id == *target,
                PeerPattern::Prefix(prefix) => target.starts_with(&**prefix),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(v: serde_json::Value) -> PeerPolicy {
        PeerPolicy::from_claim(&v).unwrap()
    }

    #[test]
    fn exact_prefix_and_wildcard() {
        let p = policy(json!(["bob", "room-42:*"]));
        assert!(p.allows("bob"));
        assert!(!p.allows("bobby"));
        assert!(p.allows("room-42:carol"));
        assert!(p.allows("room-42:"));
        assert!(!p.allows("room-43:carol"));
        assert_eq!(policy(json!(["bob", "*"])), PeerPolicy::Any);
        assert!(!policy(json!([])).allows("bob"));
        assert!(policy(json!(["a*"])).allows("a"));
    }

    #[test]
    fn malformed_claims_are_errors() {
        for bad in [json!("bob"), json!([1]), json!({"a": 1}), json!(null)] {
            assert_eq!(
                PeerPolicy::from_claim(&bad),
                Err(PeersClaimError::NotAnArray),
                "{bad}"
            );
        }
        for bad in [json!([""]), json!(["a*b"]), json!(["**"])] {
            assert_eq!(
                PeerPolicy::from_claim(&bad),
                Err(PeersClaimError::BadPattern),
                "{bad}"
            );
        }
    }
}
