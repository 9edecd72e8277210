//! The JWK Set behind `auth.jwks_url`: fetched at start-up, every
//! `auth.jwks_refresh` seconds, and on demand when a token names an unknown
//! `kid` (at most once every [`ON_DEMAND_INTERVAL`]). A fetch is bounded in
//! time ([`FETCH_TIMEOUT`]) and size ([`MAX_BODY`]); a failed one keeps the
//! last good set. This file owns fetching, parsing and key lookup; token
//! validation itself stays in `auth/mod.rs`.
//!
//! Keys are parsed by `jsonwebtoken` (`Jwk`, `DecodingKey::from_jwk`). The
//! algorithm of each key follows from its type, never from a token: RSA →
//! RS256, EC P-256 → ES256, OKP Ed25519 → EdDSA. Symmetric (`oct`) keys,
//! encryption keys and other curves are skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::access_metrics::AccessMetrics;

/// Longest a fetch may take, connection to last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWK Set body accepted.
pub const MAX_BODY: usize = 256 * 1024;
/// Least time between two fetches caused by unknown `kid`s.
pub const ON_DEMAND_INTERVAL: Duration = Duration::from_secs(10);
/// Retry delay after a failed scheduled fetch (when shorter than the refresh).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// Why a fetch did not produce a usable set. Never carries the URL's
/// query or the body.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Connection, TLS or protocol failure.
    #[error("JWK Set request failed: {0}")]
    Http(String),
    /// The server answered with a non-success status.
    #[error("JWK Set request answered HTTP {0}")]
    Status(u16),
    /// The body exceeds [`MAX_BODY`].
    #[error("JWK Set body exceeds {MAX_BODY} bytes")]
    TooLarge,
    /// The fetch exceeded [`FETCH_TIMEOUT`].
    #[error("JWK Set fetch timed out")]
    Timeout,
    /// The body is not a JWK Set.
    #[error("JWK Set does not parse: {0}")]
    Parse(String),
    /// The set holds no key this node can use.
    #[error("JWK Set holds no usable RS256, ES256 or EdDSA signing key")]
    NoUsableKey,
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// One usable key.
#[derive(Clone)]
pub struct SetKey {
    /// The verification key.
    pub key: DecodingKey,
    /// The only algorithm it verifies.
    pub algorithm: Algorithm,
}

/// A parsed set: keys by `kid`, and the key of a set with exactly one key
/// (for tokens without `kid`).
#[derive(Clone, Default)]
pub struct KeySet {
    by_kid: HashMap<String, SetKey>,
    only: Option<SetKey>,
    len: usize,
}

/// The answer of a key lookup.
pub enum Lookup {
    /// The key to verify with.
    Found(SetKey),
    /// The token's `kid` is not in the set (a refetch may help).
    UnknownKid,
    /// No `kid` and the set does not hold exactly one key.
    Ambiguous,
}

impl KeySet {
    /// Parses a JWK Set body; keys that are not usable are skipped.
    pub fn parse(body: &[u8]) -> Result<KeySet, JwksError> {
        #[derive(serde::Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let raw: RawSet =
            serde_json::from_slice(body).map_err(|e| JwksError::Parse(e.to_string()))?;
        let mut set = KeySet::default();
        for value in raw.keys {
            // One key jsonwebtoken cannot read must not cost the others.
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            let Some(usable) = usable_key(&jwk) else {
                continue;
            };
            set.len += 1;
            set.only = (set.len == 1).then(|| usable.clone());
            if let Some(kid) = jwk.common.key_id {
                set.by_kid.insert(kid, usable);
            }
        }
        if set.len == 0 {
            return Err(JwksError::NoUsableKey);
        }
        Ok(set)
    }

    /// The key for a token's `kid`.
    pub fn lookup(&self, kid: Option<&str>) -> Lookup {
        match kid {
            Some(kid) => self
                .by_kid
                .get(kid)
                .cloned()
                .map_or(Lookup::UnknownKid, Lookup::Found),
            None => self.only.clone().map_or(Lookup::Ambiguous, Lookup::Found),
        }
    }

    /// Usable keys in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty (only before the first fetch).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The algorithm a JWK's type implies, if this node verifies it, and the
/// key; `None` for encryption keys, symmetric keys, other curves, and keys
/// whose `alg` disagrees with their type.
fn usable_key(jwk: &Jwk) -> Option<SetKey> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    if let Some(declared) = jwk.common.key_algorithm {
        if declared != KeyAlgorithm::from(algorithm) {
            return None;
        }
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(SetKey { key, algorithm })
}

/// The cache: the current set, its fetcher, and the on-demand limit.
pub struct JwksCache {
    url: String,
    refresh: Duration,
    client: reqwest::Client,
    set: RwLock<Arc<KeySet>>,
    loaded: AtomicBool,
    /// Serializes fetches; holds when the last on-demand fetch started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    metrics: OnceLock<AccessMetrics>,
}

impl JwksCache {
    /// A cache for `url`, empty until the first fetch.
    pub fn new(url: &str, refresh: Duration) -> Result<JwksCache, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("signal-manager/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| JwksError::Client(e.to_string()))?;
        Ok(JwksCache {
            url: url.to_owned(),
            refresh,
            client,
            set: RwLock::new(Arc::new(KeySet::default())),
            loaded: AtomicBool::new(false),
            fetching: tokio::sync::Mutex::new(None),
            metrics: OnceLock::new(),
        })
    }

    /// Whether a set has been fetched successfully at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The current set (empty before the first fetch). Never waits on a fetch.
    pub fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.set.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Starts the scheduled fetches (the first at once), counting into
    /// `metrics`; the task stops when the handle is aborted.
    pub fn spawn_refresh(self: &Arc<Self>, metrics: AccessMetrics) -> JoinHandle<()> {
        let _ = self.metrics.set(metrics);
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let ok = {
                    let _turn = cache.fetching.lock().await;
                    cache.fetch_and_store().await
                };
                let wait = if ok {
                    cache.refresh
                } else {
                    cache.refresh.min(RETRY_AFTER_FAILURE)
                };
                tokio::time::sleep(wait).await;
            }
        })
    }

    /// Fetches at once for a token whose `kid` is unknown, unless another
    /// on-demand fetch started less than [`ON_DEMAND_INTERVAL`] ago. While
    /// a fetch is already running, waits for it instead of starting one, so
    /// concurrent callers share it. Returns within about [`FETCH_TIMEOUT`].
    pub async fn refetch_for_unknown_kid(&self) {
        let deadline = Instant::now() + FETCH_TIMEOUT;
        let Ok(mut last) = self.fetching.try_lock() else {
            // Its result is what a fetch of ours would get.
            let _ = tokio::time::timeout_at(deadline, self.fetching.lock()).await;
            return;
        };
        if last.is_some_and(|at| at.elapsed() < ON_DEMAND_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        self.fetch_and_store().await;
    }

    async fn fetch_and_store(&self) -> bool {
        let result = tokio::time::timeout(FETCH_TIMEOUT, self.fetch())
            .await
            .unwrap_or(Err(JwksError::Timeout));
        let metrics = self.metrics.get();
        match result {
            Ok(set) => {
                let keys = set.len();
                *self.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
                self.loaded.store(true, Ordering::Release);
                if let Some(m) = metrics {
                    m.jwks_fetch_ok.inc();
                    m.jwks_keys.set(i64::try_from(keys).unwrap_or(i64::MAX));
                }
                tracing::debug!(keys, "JWK Set fetched");
                true
            }
            Err(error) => {
                if let Some(m) = metrics {
                    m.jwks_fetch_failed.inc();
                }
                tracing::warn!(%error, "JWK Set fetch failed; keeping the last good set");
                false
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, JwksError> {
        let http = |e: reqwest::Error| {
            if e.is_timeout() {
                JwksError::Timeout
            } else {
                // Without the URL: it may carry credentials in its query.
                JwksError::Http(e.without_url().to_string())
            }
        };
        let mut response = self
            .client
            .get(&self.url)
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(http)?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status().as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(JwksError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        KeySet::parse(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::EncodingKey;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .unwrap()
    }

    fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> serde_json::Value {
        let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        serde_json::to_value(jwk).unwrap()
    }

    #[test]
    fn parses_rsa_ec_and_ed25519_and_skips_the_rest() {
        let rsa = EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap();
        let ec = EncodingKey::from_ec_pem(&fixture("ec_private.pem")).unwrap();
        let ed = EncodingKey::from_ed_pem(&fixture("ed25519_private.pem")).unwrap();
        let body = serde_json::json!({"keys": [
            jwk(&rsa, Algorithm::RS256, "r"),
            jwk(&ec, Algorithm::ES256, "e"),
            jwk(&ed, Algorithm::EdDSA, "d"),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "weird", "kid": "w"},
        ]});
        let set = KeySet::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 3);
        for (kid, alg) in [
            ("r", Algorithm::RS256),
            ("e", Algorithm::ES256),
            ("d", Algorithm::EdDSA),
        ] {
            match set.lookup(Some(kid)) {
                Lookup::Found(k) => assert_eq!(k.algorithm, alg),
                _ => panic!("{kid} missing"),
            }
        }
        assert!(matches!(set.lookup(Some("hmac")), Lookup::UnknownKid));
        assert!(matches!(set.lookup(None), Lookup::Ambiguous));
    }

    #[test]
    fn a_single_key_serves_tokens_without_kid_and_empty_sets_fail() {
        let ec = EncodingKey::from_ec_pem(&fixture("ec_private.pem")).unwrap();
        let body = serde_json::json!({"keys": [jwk(&ec, Algorithm::ES256, "e")]});
        let set = KeySet::parse(body.to_string().as_bytes()).unwrap();
        assert!(matches!(set.lookup(None), Lookup::Found(_)));
        assert!(matches!(
            KeySet::parse(br#"{"keys":[]}"#),
            Err(JwksError::NoUsableKey)
        ));
        assert!(matches!(KeySet::parse(b"<html>"), Err(JwksError::Parse(_))));
    }
}
